// Lan, Zhu & Gong, NeurIPS 2018, "Knowledge Distillation by On-the-Fly Native Ensemble" (ONE).
//
// The peers are branches on a shared stem (conv1, layer1, layer2 of the CIFAR ResNet); each keeps its own last
// stage and classifier. A gate reads the stem's output and weights the branch logits into the ensemble teacher:
//   g = softmax(ReLU(BN1d(W · AvgPool(stem(x)))))        (W: stem channels → P, named control_v1 / bn_v1)
//   z_e = Σ_i g_i · z_i
//   L = Σ_i CE(y, z_i) + CE(y, z_e) + w(t) · Σ_i T² · KL(softmax(z_e / T) ‖ softmax(z_i / T)),   T = 3,
// with z_e detached in the KL terms and its softmax shifted by 1e-7 (not renormalised) as the official KLLoss
// does, and w(t) = exp(−5(1 − t/L)²) the sigmoid ramp-up over L epochs (80). Followed:
// Lan1991Xu/ONE_NeurIPS2018@54afde3 `cifar_one.py`, `models/cifar/resnet.py` (ONE_ResNet), `loss/kl_loss.py`.
// Distributed: the branch logits are gathered with the differentiable allgather, so CE(z_e) — computed on
// every rank and weighted 1/R there — trains the gate, the stem and every branch exactly as in one process.
import Foundation
import Layers
import Models
import Tensors

public final class ONE: DistillationMethod {
    public static let spec = MethodSpec(
        name: "one", officialEvaluation: "branch 1's top-1 at its best epoch (cifar_one.py)", summary: "Lan et al. 2018: branches on a shared stem, a gated ensemble teaches every branch",
        keys: [.temperature(3), .rampUp], dataParallel: true) { c, g in
            ONE(peers: c.peers, stemChannels: try c.channels(ofPeer: 0).stem, temperature: c.options.number("temperature"),
                rampUpEpochs: c.options.int("rampup_epochs"), generator: &g)
        }

    public let name = "one"
    public let temperature: Float, rampUpEpochs: Int
    let gateFC: Linear, gateBN: BatchNorm2d

    public init(peers: Int, stemChannels: Int, temperature: Float = 3, rampUpEpochs: Int = 80, generator g: inout Generator) {
        self.temperature = temperature; self.rampUpEpochs = rampUpEpochs
        gateFC = Linear(stemChannels, peers, generator: &g)
        gateBN = BatchNorm2d(peers)
    }

    public var modules: [(String, Module)] { [("control_v1", gateFC), ("bn_v1", gateBN)] }
    public var sharesStem: Bool { true }
    public var teacherName: String? { "gated ensemble" }
    public var termNames: [String] { ["ce", "ce_ensemble", "kl"] }

    /// The gate's weights [N, P] for a stem output.
    func gate(_ h: Tensor) -> Tensor {
        let n = h.shape[0], p = gateFC.weight.shape[0]
        let a = gateFC(globalAvgPool(h)).reshaped([n, 1, 1, p])
        return gateBN.forward(a, relu: true).reshaped([n, p]).softmax()
    }

    /// z_e = Σ_i g_i z_i for gate weights [N, P] and every peer's logits.
    func ensemble(_ g: Tensor, _ all: [Tensor]) -> Tensor {
        var e = g.slice(axis: 1, 0..<1) * all[0]
        for i in 1..<all.count { e = e + g.slice(axis: 1, i..<(i + 1)) * all[i] }
        return e
    }

    public func step(_ input: StepInput, cohort: Cohort) throws -> StepResult {
        guard let labels = input.labels else { throw MethodError("one needs labels") }
        let (h, features) = cohort.sharedStemFeatures(input.images[0])
        let logits = zip(cohort.models, features).map { $0.head($1) }
        let all = try cohort.gather(logits)
        let ze = ensemble(gate(h), all)
        let target = ze.detached()
        let ceE = crossEntropy(ze, labels: labels)
        let w = rampUpWeight(epoch: input.epoch, length: rampUpEpochs)
        let p = addPeerTerms(to: ceE * cohort.sharedScale, logits: logits, labels: labels, target: target,
                             temperature: temperature, weight: w, targetEpsilon: 1e-7)
        return StepResult(objective: p.objective, peerLogits: logits, peerLoss: p.losses,
                          terms: ["ce": p.ce, "ce_ensemble": ceE.item * cohort.sharedScale, "kl": p.kl], teacherLogits: target)
    }

    public func evaluate(_ x: Tensor, cohort: Cohort) throws -> Predictions {
        let (h, features) = cohort.sharedStemFeatures(x)
        let logits = zip(cohort.models, features).map { $0.head($1) }
        return Predictions(peers: logits, teacher: ensemble(gate(h), try cohort.gatherDetached(logits)))
    }
}
