// Wu & Gong, AAAI 2021, "Peer Collaborative Learning for Online Knowledge Distillation" (PCL).
//
// P peers are branches on a shared stem, and each peer sees its own random augmentation of the batch.
//   • Peer ensemble teacher: a classifier over the concatenated pooled features of all peers,
//     z_e = W_e [f_1; …; f_P] + b_e, trained with CE (its gradient reaches the peers' features).
//   • Peer mean teachers: for each peer, a temporal mean of that peer's network (stem and branch),
//     θ'_j ← α·θ'_j + (1 − α)·θ_j after every step, α = min(1 − 1/(s + 1), 0.999) at step s; it runs in training
//     mode on peer j's view, and its logits z'_j are targets.
//   L = CE(y, z_e) + Σ_i [ CE(y, z_i) + w(t)·T²·KL(p_e ‖ p_i) + w(t)·mean_{j≠i} T²·KL(p'_j ‖ p_i) ],  T = 3,
// targets detached, w(t) the sigmoid ramp-up (over 80 epochs in the paper's recipe). There is no official
// code; this follows the reproduction shaoeric/Peer-Collaborative-Learning-for-Online-Knowledge-Distillation
// (`src/controller.py`, `src/losses/loss_wrapper.py`), with its ramp-up length fixed (ours: it divides by 1, not 80,
// so its weight stays near 0 from epoch 2 to 80; its published runs had that). Inference uses the mean
// teachers: a peer's test accuracy is its mean teacher's; the teacher reported is the peer ensemble.
// Distributed: pooled features through the differentiable allgather (CE(z_e), weighted 1/R on each rank, trains
// every peer); each mean teacher lives on its peer's rank and its logits are exchanged detached.
import Layers
import Models
import Tensors

public final class PCL: DistillationMethod {
    public static let spec = MethodSpec(
        name: "pcl", officialEvaluation: "the best peer mean teacher at its best epoch (the reproduction)", summary: "Wu & Gong 2021: per-peer views through a shared stem, a peer-ensemble teacher and temporal-mean peer teachers",
        keys: [.temperature(3), .rampUp,
               OptionKey("mean_teacher_decay", .number(min: 0, max: 1, openMin: false), default: .number(0.999), help: "largest EMA decay of the peer mean teachers")], dataParallel: true) { c, g in
            PCL(peers: c.peers, featureChannels: try c.channels(ofPeer: 0).features, classes: c.classes,
                meanTeachers: try c.placement.localPeers.map { try c.model(c.models[$0]) }, temperature: c.options.number("temperature"),
                rampUpEpochs: c.options.int("rampup_epochs"), maxDecay: c.options.number("mean_teacher_decay"), generator: &g)
        }

    public let name = "pcl"
    public let temperature: Float, rampUpEpochs: Int, maxDecay: Float
    let ensembleFC: Linear
    /// The local peers' mean teachers.
    let meanTeachers: [Classifier]

    public init(peers: Int, featureChannels: Int, classes: Int, meanTeachers: [Classifier], temperature: Float = 3,
                rampUpEpochs: Int = 80, maxDecay: Float = 0.999, generator g: inout Generator) {
        self.temperature = temperature; self.rampUpEpochs = rampUpEpochs; self.maxDecay = maxDecay
        ensembleFC = Linear(peers * featureChannels, classes, generator: &g)
        self.meanTeachers = meanTeachers
        for m in meanTeachers { for (_, p) in m.namedParameters() { p.value.requiresGrad = false } }
    }

    public var modules: [(String, Module)] { [("ensemble_fc", ensembleFC)] }
    public var sharesStem: Bool { true }
    public var augmentsPerPeer: Bool { true }
    public var teacherName: String? { "peer ensemble" }
    public var termNames: [String] { ["ce", "ce_ensemble", "kl_ensemble", "kl_mean_teachers"] }
    public func peerExtraState(_ k: Int) -> Module? { meanTeachers[k] }

    /// Each local peer's state as the cohort trains it (the shared stem's tensors from the model that runs it), in
    /// the order of its mean teacher's state; built once, as the tensors never change identity.
    private var sources: [[(String, Parameter)]] = []

    /// The mean teachers start as copies of their peers (weights and buffers).
    public func start(cohort: Cohort) {
        let stem = cohort.stem.map { Dictionary(uniqueKeysWithValues: $0.runner.stemState()) } ?? [:]
        sources = cohort.models.map { m in m.namedState().map { name, p in (name, m.isStem(name) ? stem[name] ?? p : p) } }
        for (k, src) in sources.enumerated() {
            for ((_, s), (_, dst)) in zip(src, meanTeachers[k].namedState()) { dst.value.data.update(from: s.value.data, count: s.value.count) }
        }
    }

    public func afterStep(cohort: Cohort, step: Int) {
        let decay = min(1 - 1 / Float(step), maxDecay)  // step counts the steps taken: s + 1
        for k in cohort.models.indices {
            for ((_, src), (_, dst)) in zip(sources[k], meanTeachers[k].namedState()) where dst.isTrainable {
                let n = src.value.count, a = src.value.data, b = dst.value.data
                for i in 0..<n { b[i] = decay * b[i] + (1 - decay) * a[i] }
            }
        }
    }

    public func step(_ input: StepInput, cohort: Cohort) throws -> StepResult {
        guard let labels = input.labels else { throw MethodError("pcl needs labels") }
        let P = cohort.peers
        guard P >= 2 else { throw MethodError("pcl needs at least 2 peers, got \(P)") }
        let features = cohort.features(input.images)
        let logits = zip(cohort.models, features).map { $0.head($1) }
        let pooled = try cohort.gather(features.map { globalAvgPool($0) })
        let ze = ensembleFC(concat(pooled, axis: 1))
        let target = ze.detached()
        let means = try cohort.gatherDetached(withoutGradients { zip(meanTeachers, input.images).map { $0($1) } })
        let w = rampUpWeight(epoch: input.epoch, length: rampUpEpochs)
        let ceE = crossEntropy(ze, labels: labels)
        var total = ceE * cohort.sharedScale
        var losses: [Float] = [], ce: Float = 0, klE: Float = 0, klM: Float = 0
        for (k, p) in cohort.placement.localPeers.enumerated() {
            let c = crossEntropy(logits[k], labels: labels)
            let e = klDivergence(student: logits[k], teacher: target, temperature: temperature)
            var m: Tensor?
            for j in 0..<P where j != p {
                let d = klDivergence(student: logits[k], teacher: means[j], temperature: temperature)
                m = m.map { $0 + d } ?? d
            }
            let mean = m! * (1 / Float(P - 1))
            let loss = c + (e + mean) * w
            total = total + loss
            ce += c.item; klE += e.item; klM += mean.item; losses.append(loss.item)
        }
        return StepResult(objective: total, peerLogits: logits, peerLoss: losses,
                          terms: ["ce": ce, "ce_ensemble": ceE.item * cohort.sharedScale, "kl_ensemble": klE, "kl_mean_teachers": klM],
                          teacherLogits: target)
    }

    public func evaluate(_ x: Tensor, cohort: Cohort) throws -> Predictions {
        let features = cohort.features(Array(repeating: x, count: cohort.models.count))
        let pooled = try cohort.gatherDetached(features.map { globalAvgPool($0) })
        return Predictions(peers: meanTeachers.map { $0(x) }, teacher: ensembleFC(concat(pooled, axis: 1)))
    }
}
