// Kim, Hyun, Lee & Kwak, 2019, "Feature Fusion for Online Mutual Knowledge Distillation" (FFL).
//
// Peers — possibly different architectures whose final feature maps have the same spatial size — are fused: a
// fusion module takes the concatenation of their final feature maps F = [F_1, …, F_P] and classifies it,
//   fused logits z_f = fc(AvgPool(ReLU(BN_2(PW(ReLU(BN_1(DW(F))))))))
// with DW a depthwise 3×3 convolution (one filter per channel), PW a pointwise 1×1 convolution to C_f channels.
// Mutual teaching, every target detached, T = 3, w(t) the sigmoid ramp-up:
//   L = Σ_i CE(y, z_i) + CE(y, z_f) + w(t) · [ Σ_i T²·KL(p_f ‖ p_i) + T²·KL(p_ens ‖ p_f) ],   z_ens = mean_i z_i
// (Jangho-Kim/FFL-pytorch: `train_fusion.py`; the official CIFAR code also shares conv1/layer1/layer2 between
// two sub-networks; here peers are whole networks, the paper's setting for fusing different architectures.)
// Distributed without shipping feature maps: DW and BN_1 act channel by channel and PW is a sum over input
// channels, so each rank applies its peers' slices (DW, BN_1 and PW columns, saved with the peer) and one
// differentiable allreduce of the [N, H, W, C_f] partial sums completes PW; BN_2 and fc are replicated on every
// rank and the fused terms are weighted 1/R there. Teacher reported in metrics: the fused classifier.
import Collectives
import Layers
import Models
import Tensors

/// One peer's slice of the fusion module: its channels' depthwise filters and batch norm, and their columns of
/// the pointwise convolution.
public final class FusionSlice: Module {
    public let dw: Conv2d, bn: BatchNorm2d, pw: Conv2d
    public var isTraining = true
    public init(channels: Int, fusedChannels: Int, generator g: inout Generator) {
        dw = Conv2d(channels, channels, kernelSize: 3, padding: 1, groups: channels, generator: &g)
        bn = BatchNorm2d(channels)
        pw = Conv2d(channels, fusedChannels, kernelSize: 1, generator: &g)
    }
    public var children: [(String, Module)] { [("dw", dw), ("bn", bn), ("pw", pw)] }
    /// This peer's contribution to the pointwise convolution's output.
    public func callAsFunction(_ f: Tensor) -> Tensor { pw(bn.forward(dw(f), relu: true)) }
}

public final class FFL: DistillationMethod {
    public static let spec = MethodSpec(
        name: "ffl", summary: "Kim et al. 2019: peers of any architecture, a fusion module over their feature maps teaches and is taught",
        keys: [.temperature(3), .rampUp]) { c, g in
            let channels = try (0..<c.peers).map { try c.channels(ofPeer: $0).features }
            return FFL(localPeers: c.placement.localPeers, channels: channels, fusedChannels: channels[0], classes: c.classes, seed: c.seed,
                       temperature: c.options.number("temperature"), rampUpEpochs: c.options.int("rampup_epochs"), generator: &g)
        }

    public let name = "ffl"
    public let temperature: Float, rampUpEpochs: Int
    /// The local peers' slices, in local order.
    let slices: [FusionSlice]
    let fusedBN: BatchNorm2d, fc: Linear

    /// `channels[p]` is peer p's final feature channels; `seed` fixes each slice's initial weights by peer, so they
    /// do not depend on placement; `g` initialises the replicated part.
    public init(localPeers: [Int], channels: [Int], fusedChannels: Int, classes: Int, seed: UInt64,
                temperature: Float = 3, rampUpEpochs: Int = 80, generator g: inout Generator) {
        self.temperature = temperature; self.rampUpEpochs = rampUpEpochs
        slices = localPeers.map { p in
            var pg = Generator(seed: seed, stream: [0x6675_7365, UInt64(p)])  // "fuse"
            return FusionSlice(channels: channels[p], fusedChannels: fusedChannels, generator: &pg)
        }
        fusedBN = BatchNorm2d(fusedChannels)
        fc = Linear(fusedChannels, classes, generator: &g)
    }

    public var modules: [(String, Module)] { [("fusion_bn", fusedBN), ("fusion_fc", fc)] }
    public var teacherName: String? { "fused" }
    public var termNames: [String] { ["ce", "ce_fused", "kl_fused_to_peers", "kl_ensemble_to_fused"] }
    public func peerModule(_ k: Int) -> Module? { slices[k] }

    /// Local logits and the fused logits (identical on every rank) for one input per local peer.
    func forward(_ images: [Tensor], cohort: Cohort) throws -> (logits: [Tensor], fused: Tensor) {
        let features = cohort.features(images)
        let logits = zip(cohort.models, features).map { $0.head($1) }
        let shape = features[0].shape
        for f in features where Array(f.shape.prefix(3)) != Array(shape.prefix(3)) {
            throw MethodError("ffl fuses feature maps of equal size; the peers give \(shape) and \(f.shape)")
        }
        var partial = slices[0](features[0])
        for k in 1..<slices.count { partial = partial + slices[k](features[k]) }
        let summed = cohort.placement.ranks == 1 ? partial : try allReduceSum(partial, on: cohort.comm)
        return (logits, fc(globalAvgPool(fusedBN.forward(summed, relu: true))))
    }

    public func step(_ input: StepInput, cohort: Cohort) throws -> StepResult {
        guard let labels = input.labels else { throw MethodError("ffl needs labels") }
        let (logits, fused) = try forward(input.images, cohort: cohort)
        let ensemble = meanLogits(try cohort.gatherDetached(logits))
        let target = fused.detached()
        let w = rampUpWeight(epoch: input.epoch, length: rampUpEpochs)
        let ceF = crossEntropy(fused, labels: labels)
        let klF = klDivergence(student: fused, teacher: ensemble, temperature: temperature)
        let p = addPeerTerms(to: (ceF + klF * w) * cohort.sharedScale, logits: logits, labels: labels, target: target,
                             temperature: temperature, weight: w)
        return StepResult(objective: p.objective, peerLogits: logits, peerLoss: p.losses,
                          terms: ["ce": p.ce, "ce_fused": ceF.item * cohort.sharedScale, "kl_fused_to_peers": p.kl,
                                  "kl_ensemble_to_fused": klF.item * cohort.sharedScale], teacherLogits: target)
    }

    public func evaluate(_ x: Tensor, cohort: Cohort) throws -> Predictions {
        let (logits, fused) = try forward(Array(repeating: x, count: cohort.models.count), cohort: cohort)
        return Predictions(peers: logits, teacher: fused)
    }
}
