// Chen, Mei, Wang, Feng & Chen, AAAI 2020, "Online Knowledge Distillation with Diverse Peers" (OKDDip).
//
// Branches on a shared stem: peers 0 … P−2 and a group leader, the last peer (the deployed model). Two levels:
//   1. Each peer i learns from an attention-weighted aggregate of the peers' logits. From each peer's pooled
//      final feature f_j, shared projections (no bias, features → features/8) give q_j = W_q f_j, k_j = W_k f_j;
//      a_ij = softmax_j(q_i · k_j) over the peers (itself included), and the target is t_i = Σ_j a_ij · z_j.
//   2. The leader learns from the peers' ensemble, the mean of their logits.
//   L = Σ_{i<P−1} CE(y, z_i) + CE(y, z_L) + α · w(t) · [ Σ_{i<P−1} T²·KL(softmax(t_i/T) ‖ softmax(z_i/T))
//                                                         + T²·KL(softmax(mean_j z_j / T) ‖ softmax(z_L/T)) ]
// with α = 1, T = 3 and w(t) the sigmoid ramp-up, each target's softmax shifted by 1e-7 (not renormalised) as the
// official KL_Loss. As in the official code (DefangChen/OKDDip@c6a05de `train_GL.py`, `utils.py` KL_Loss,
// `models/model_cifar/resnet_GL.py`) no target is detached: the KL terms train the projections and reach every
// peer through its logits and features. Distributed: logits and pooled features travel through the
// differentiable allgather; each term is computed once, on the rank hosting the peer it belongs to.
// Teacher reported in metrics: the peers' ensemble (mean of their logits; the leader is reported as a peer).
import Layers
import Models
import Tensors

public final class OKDDip: DistillationMethod {
    public static let spec = MethodSpec(
        name: "okddip", officialEvaluation: "the group leader's top-1 at its best epoch (train_GL.py)", summary: "Chen et al. 2020: peers learn from attention-weighted peer ensembles, the last peer (group leader) from their mean",
        keys: [.temperature(3), .rampUp, OptionKey("alpha", .number(min: 0, max: nil, openMin: false), default: .number(1), help: "weight α of the distillation terms")], dataParallel: true) { c, g in
            OKDDip(featureChannels: try c.channels(ofPeer: 0).features, temperature: c.options.number("temperature"),
                   alpha: c.options.number("alpha"), rampUpEpochs: c.options.int("rampup_epochs"), generator: &g)
        }

    public let name = "okddip"
    public let temperature: Float, alpha: Float, rampUpEpochs: Int
    let query: Linear, key: Linear

    public init(featureChannels: Int, temperature: Float = 3, alpha: Float = 1, rampUpEpochs: Int = 80, factor: Int = 8,
                generator g: inout Generator) {
        self.temperature = temperature; self.alpha = alpha; self.rampUpEpochs = rampUpEpochs
        query = Linear(featureChannels, max(1, featureChannels / factor), bias: false, generator: &g)
        key = Linear(featureChannels, max(1, featureChannels / factor), bias: false, generator: &g)
    }

    public var modules: [(String, Module)] { [("query_weight", query), ("key_weight", key)] }
    public var sharesStem: Bool { true }
    public var teacherName: String? { "peer ensemble" }
    public var termNames: [String] { ["ce", "kl_peers", "kl_leader"] }

    /// Each local peer's logits and pooled feature.
    func forward(_ x: Tensor, cohort: Cohort) -> (logits: [Tensor], pooled: [Tensor]) {
        let (_, features) = cohort.sharedStemFeatures(x)
        return (zip(cohort.models, features).map { $0.head($1) }, features.map { globalAvgPool($0) })
    }

    public func step(_ input: StepInput, cohort: Cohort) throws -> StepResult {
        guard let labels = input.labels else { throw MethodError("okddip needs labels") }
        let P = cohort.peers
        guard P >= 3 else { throw MethodError("okddip needs at least 2 peers and a leader (models: 3 or more entries), got \(P)") }
        let (logits, pooled) = forward(input.images[0], cohort: cohort)
        let allLogits = try cohort.gather(logits), allPooled = try cohort.gather(pooled)
        let peers = Array(0..<(P - 1)), n = logits[0].shape[0]
        let keys = peers.map { key(allPooled[$0]) }
        let ensemble = meanLogits(peers.map { allLogits[$0] })
        let w = rampUpWeight(epoch: input.epoch, length: rampUpEpochs) * alpha
        var total: Tensor?, losses: [Float] = [], ce: Float = 0, klPeers: Float = 0, klLeader: Float = 0
        for (k, p) in cohort.placement.localPeers.enumerated() {
            let c = crossEntropy(logits[k], labels: labels)
            let kl: Tensor
            if p == P - 1 {
                kl = klDivergence(student: logits[k], teacher: ensemble, temperature: temperature, targetEpsilon: 1e-7)
                klLeader += kl.item
            } else {
                let q = query(pooled[k])
                let energy = concat(keys.map { (q * $0).sum(axis: 1).reshaped([n, 1]) }, axis: 1)  // [N, P−1]
                let a = energy.softmax()
                var target = a.slice(axis: 1, 0..<1) * allLogits[0]
                for j in peers.dropFirst() { target = target + a.slice(axis: 1, j..<(j + 1)) * allLogits[j] }
                kl = klDivergence(student: logits[k], teacher: target, temperature: temperature, targetEpsilon: 1e-7)
                klPeers += kl.item
            }
            let loss = c + kl * w
            total = total.map { $0 + loss } ?? loss
            ce += c.item; losses.append(loss.item)
        }
        return StepResult(objective: total!, peerLogits: logits, peerLoss: losses,
                          terms: ["ce": ce, "kl_peers": klPeers, "kl_leader": klLeader], teacherLogits: ensemble.detached())
    }

    public func evaluate(_ x: Tensor, cohort: Cohort) throws -> Predictions {
        let (logits, _) = forward(x, cohort: cohort)
        let all = try cohort.gatherDetached(logits)
        return Predictions(peers: logits, teacher: meanLogits(Array(all.dropLast())))
    }
}
