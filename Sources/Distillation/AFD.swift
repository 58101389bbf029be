// Chung, Park, Kim & Kwak, ICML 2020, "Feature-map-level Online Adversarial Knowledge Distillation" (AFD).
//
// K networks in a cycle 1 → 2 → … → K → 1. Network k owns a discriminator D_k that calls the predecessor's last
// feature map F_{k−1} (before global pooling) real and its own F_k fake; the networks learn both from logits and
// from fooling their discriminators. Per mini-batch, three updates in turn:
//   1. logits (main optimiser, `optimizer.*`, SGD in the recipe), per network k, targets detached, T = 3:
//        L_k = CE(y, z_k) + 1/(K − 1) · Σ_{j ≠ k} T²·KL(softmax(z_j/T) ‖ softmax(z_k/T))
//   2. discriminators (Adam), on a fresh forward F_k of the updated networks, least squares:
//        L_D,k = mean_n (1 − D_k(F_{k−1}))² + mean_n D_k(A_k(F_k))²        (both maps detached)
//   3. networks (Adam), the same forward, D_k frozen after its update:
//        L_G,k = λ · mean_n (1 − D_k(A_k(F_k)))²
// A_k is the identity when F_k and F_{k−1} have the same channels, else a 1×1 convolution C_k → C_{k−1} on the fake
// side, trained with network k in step 3.
// No official code was found: every choice below is ours (the paper's description, ../shared/METHODS.md "AFD").
//   • D_k: Conv2d(C→C, 2×2, stride 1, bias) → BatchNorm → LeakyReLU(0.2) → Conv2d(C→1, 2×2, stride 2, bias) →
//     sigmoid → mean over positions: one score per sample in (0, 1).
//   • For K > 2 the logit term averages the KL over every other network: DML's objective (DML.swift), which the
//     logit update runs as it is (the paper's K = 2 has one peer).
//   • Steps 2 and 3 use one forward after step 1 (the discriminator update does not change the networks), so a
//     step costs two forwards and two backwards of a network; batch-norm running statistics see both forwards.
//   • Adam lr 2e-5 (`adversarial_lr`), torch's betas (0.9, 0.999), no weight decay, constant (not scheduled); λ = 1
//     (`adversarial_weight`).
// Distributed, one network and its D_k per rank: logits travel through a plain allgather (targets only); the
// feature maps through the ring exchange (Collectives/Ring.swift): each rank receives only its predecessor's map,
// detached, so the traffic per rank does not grow with K. Nothing is replicated.
// Teacher reported in metrics: the ensemble, the mean of the networks' logits (AFD deploys each network alone).
import Collectives
import Layers
import Models
import Tensors

/// D_k: a small convolutional discriminator giving one score in (0, 1) per sample of a feature map [N, H, W, C].
public final class FeatureDiscriminator: Module {
    public let conv1: Conv2d, bn: BatchNorm2d, conv2: Conv2d
    public var isTraining = true
    public init(channels: Int, generator g: inout Generator) {
        conv1 = Conv2d(channels, channels, kernelSize: 2, bias: true, generator: &g)
        bn = BatchNorm2d(channels)
        conv2 = Conv2d(channels, 1, kernelSize: 2, stride: 2, bias: true, generator: &g)
    }
    public var children: [(String, Module)] { [("conv1", conv1), ("bn", bn), ("conv2", conv2)] }
    /// Scores [N] of a feature map at least 3×3.
    public func callAsFunction(_ f: Tensor) -> Tensor {
        let s = conv2(bn.forward(conv1(f), relu: false).leakyRelu(slope: 0.2)).sigmoid()  // [N, h, w, 1]
        return s.mean(axes: [1, 2, 3])
    }
}

/// Network k's adversarial modules, trained and saved with it: its discriminator and, for maps whose channels
/// differ from the predecessor's, the 1×1 adapter on the fake side.
public final class AFDPeerModules: Module {
    public let discriminator: FeatureDiscriminator
    public let adapter: Conv2d?
    public var isTraining = true
    public init(channels: Int, predecessorChannels: Int, generator g: inout Generator) {
        discriminator = FeatureDiscriminator(channels: predecessorChannels, generator: &g)
        adapter = channels == predecessorChannels ? nil : Conv2d(channels, predecessorChannels, kernelSize: 1, generator: &g)
    }
    public var children: [(String, Module)] {
        [("discriminator", discriminator as Module)] + (adapter.map { [("adapter", $0 as Module)] } ?? [])
    }
    /// The fake input of D_k for network k's map.
    public func fake(_ f: Tensor) -> Tensor { adapter.map { $0(f) } ?? f }
}

/// L_D = mean (1 − D(real))² + mean D(fake)², least squares, scores [N].
public func lsganDiscriminatorLoss(real: Tensor, fake: Tensor) -> Tensor {
    (1 - real).square().mean() + fake.square().mean()
}

/// L_G = mean (1 − D(fake))², least squares, scores [N].
public func lsganGeneratorLoss(fake: Tensor) -> Tensor { (1 - fake).square().mean() }

public final class AFD: DistillationMethod {
    public static let spec = MethodSpec(
        name: "afd", summary: "Chung et al. 2020: mutual logit KD plus least-squares discriminators on the ring of feature maps (our choices: no official code)",
        keys: [.temperature(3),
               OptionKey("adversarial_lr", .number(min: 0, max: nil, openMin: true), default: .number(2e-5),
                         help: "Adam learning rate of the discriminators and of the networks' adversarial update (constant)"),
               OptionKey("adversarial_weight", .number(min: 0, max: nil, openMin: false), default: .number(1),
                         help: "λ, the weight of the networks' adversarial loss")], dataParallel: true) { c, _ in
            guard c.peers >= 2 else { throw MethodError("afd needs at least 2 networks in its cycle, got \(c.peers)") }
            let channels = try (0..<c.peers).map { try c.channels(ofPeer: $0).features }
            return AFD(localPeers: c.placement.localPeers, channels: channels, seed: c.seed,
                       temperature: c.options.number("temperature"), adversarialLR: c.options.number("adversarial_lr"),
                       adversarialWeight: c.options.number("adversarial_weight"))
        }

    public let name = "afd"
    public let adversarialLR: Float, adversarialWeight: Float
    public var temperature: Float { mutual.temperature }
    /// Final feature channels of every network.
    let channels: [Int]
    /// The logit terms: DML's mutual KL at `temperature`.
    let mutual: DML
    /// The local networks' discriminators and adapters, in local order.
    let adversaries: [AFDPeerModules]
    /// The step's feature maps after the logit update, through the adapters (on the tape), kept from the
    /// discriminator phase for the networks' adversarial phase.
    var pendingFakes: [Tensor] = []
    /// Whether the feature maps' spatial sizes were checked to agree across the cycle.
    var checkedShapes = false

    /// `seed` fixes each network's discriminator and adapter by peer, so they do not depend on placement.
    public init(localPeers: [Int], channels: [Int], seed: UInt64, temperature: Float = 3, adversarialLR: Float = 2e-5,
                adversarialWeight: Float = 1) {
        self.adversarialLR = adversarialLR; self.adversarialWeight = adversarialWeight
        self.channels = channels
        mutual = DML(temperature: temperature)
        let K = channels.count
        adversaries = localPeers.map { p in
            var g = Generator(seed: seed, stream: [0x6166_6400, UInt64(p)])  // "afd"
            return AFDPeerModules(channels: channels[p], predecessorChannels: channels[(p + K - 1) % K], generator: &g)
        }
    }

    public var teacherName: String? { "ensemble" }
    public var termNames: [String] { ["ce", "kl", "discriminator", "adversarial"] }
    public func peerModule(_ k: Int) -> Module? { adversaries[k] }
    public func mainPhaseUpdates(_ role: ParameterRole, _ name: String) -> Bool { role == .network }

    public var phases: [OptimizerPhase] {
        let adam = OptimizerPhase.Kind.adam(beta1: 0.9, beta2: 0.999, eps: 1e-8, decoupled: false)
        return [
            OptimizerPhase(name: "discriminator", kind: adam, lr: adversarialLR) { role, name in
                role == .peerModule && name.hasPrefix("discriminator.")
            },
            OptimizerPhase(name: "adversarial", kind: adam, lr: adversarialLR) { role, name in
                role == .network || (role == .peerModule && name.hasPrefix("adapter."))
            },
        ]
    }

    /// The logit update is DML's objective at this temperature.
    public func step(_ input: StepInput, cohort: Cohort) throws -> StepResult {
        guard input.labels != nil else { throw MethodError("afd needs labels") }
        return try mutual.step(input, cohort: cohort)
    }

    public func phaseStep(_ phase: Int, _ input: StepInput, cohort: Cohort) throws -> PhaseResult {
        switch phase {
        case 0:
            // A fresh forward of the updated networks; the predecessors' maps arrive through the ring.
            let features = cohort.features(Array(repeating: input.images[0], count: cohort.models.count))
            try checkShapes(features, cohort: cohort)
            let n = features[0].shape[0], h = features[0].shape[1], w = features[0].shape[2]
            let real = try cohort.placement.ringPredecessors(features, shapes: channels.map { [n, h, w, $0] }, on: cohort.comm)
            pendingFakes = zip(adversaries, features).map { $0.fake($1) }
            var total: Tensor?
            for (k, a) in adversaries.enumerated() {
                let loss = lsganDiscriminatorLoss(real: a.discriminator(real[k]), fake: a.discriminator(pendingFakes[k].detached()))
                total = total.map { $0 + loss } ?? loss
            }
            return PhaseResult(objective: total!, terms: ["discriminator": total!.item])
        case 1:
            precondition(pendingFakes.count == adversaries.count, "afd: the adversarial phase runs after the discriminator phase")
            var total: Tensor?
            for (k, a) in adversaries.enumerated() {
                let loss = lsganGeneratorLoss(fake: a.discriminator(pendingFakes[k])) * adversarialWeight
                total = total.map { $0 + loss } ?? loss
            }
            pendingFakes = []
            return PhaseResult(objective: total!, terms: ["adversarial": total!.item])
        default:
            preconditionFailure("afd has two phases, not \(phase + 1)")
        }
    }

    /// Once, before the first exchange: every network's map must have the same spatial size (the adapters fix
    /// channels only), and the discriminator needs at least 3×3. Every rank reaches the same verdict.
    func checkShapes(_ features: [Tensor], cohort: Cohort) throws {
        guard !checkedShapes else { return }
        let hs = features.map { Double($0.shape[1]) }, ws = features.map { Double($0.shape[2]) }
        var sizes = [hs.max()!, ws.max()!, -hs.min()!, -ws.min()!]  // maxima, and minima as negated maxima
        try cohort.comm.allReduce(&sizes, op: .max)
        guard sizes[0] == -sizes[2], sizes[1] == -sizes[3] else {
            throw MethodError("afd: the networks' last feature maps must have the same height and width (the 1×1 adapter matches channels only); they range over \(Int(-sizes[2]))–\(Int(sizes[0])) × \(Int(-sizes[3]))–\(Int(sizes[1]))")
        }
        guard sizes[0] >= 3, sizes[1] >= 3 else {
            throw MethodError("afd: the discriminator needs feature maps of at least 3×3, got \(Int(sizes[0]))×\(Int(sizes[1]))")
        }
        checkedShapes = true
    }

    public func evaluate(_ x: Tensor, cohort: Cohort) throws -> Predictions { try mutual.evaluate(x, cohort: cohort) }
}
