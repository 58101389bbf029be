// Kim, Hyun, Lee & Kwak, 2019, "Feature Fusion for Online Mutual Knowledge Distillation" (FFL).
//
// Peers — possibly different architectures whose final feature maps have the same spatial size — are fused: a
// fusion module takes the concatenation of their final feature maps F = [F_1, …, F_P] and classifies it,
//   fused logits z_f = fc(AvgPool(ReLU(BN_2(PW(ReLU(BN_1(DW(F))))))))
// with DW a depthwise 3×3 convolution (one filter per channel), PW a pointwise 1×1 convolution to C_f channels.
// Mutual teaching, every target detached and its softmax shifted by 1e-7 (the official KLLoss), T = 3, w(t) the
// sigmoid ramp-up:
//   L = Σ_i CE(y, z_i) + CE(y, z_f) + w(t) · [ Σ_i T²·KL(p_f ‖ p_i) + T²·KL(p_ens ‖ p_f) ],   z_ens = mean_i z_i
// Following Jangho-Kim/FFL-pytorch@8ebdf9b `train_FFL.py` and `our_network.py`:
//   • the fusion module trains at its own weight decay, 1e-5 (`fusion_weight_decay`; the official code gives it its
//     own SGD, here a parameter group of the one optimiser: the same update);
//   • the depthwise filters start from N(0, 2/(9·ΣC)), the official init over all fused channels ΣC;
//   • `shared_stem: true` is the official CIFAR form, "FFL-S": the sub-networks share conv1..layer2 and each keeps
//     its layer3 and fc (peers must then be the same model). The default fuses whole networks, the paper's setting
//     for fusing different architectures.
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
    /// `fusedInputs` is ΣC over every peer: the official depthwise init is N(0, 2/(9·ΣC)).
    public init(channels: Int, fusedInputs: Int, fusedChannels: Int, generator g: inout Generator) {
        dw = Conv2d(channels, channels, kernelSize: 3, padding: 1, groups: channels, generator: &g)
        let w = dw.weight.value, f = (Float(channels) / Float(fusedInputs)).squareRoot()
        for i in 0..<w.count { w.data[i] *= f }
        bn = BatchNorm2d(channels)
        pw = Conv2d(channels, fusedChannels, kernelSize: 1, generator: &g)
    }
    public var children: [(String, Module)] { [("dw", dw), ("bn", bn), ("pw", pw)] }
    /// This peer's contribution to the pointwise convolution's output.
    public func callAsFunction(_ f: Tensor) -> Tensor { pw(bn.forward(dw(f), relu: true)) }
}

public final class FFL: DistillationMethod {
    public static let spec = MethodSpec(
        name: "ffl", officialEvaluation: "no best epoch: the sub-networks and the fused classifier after the last epoch (train_FFL.py)", summary: "Kim et al. 2019: peers of any architecture, a fusion module over their feature maps teaches and is taught",
        keys: [.temperature(3), .rampUp,
               OptionKey("fusion_weight_decay", .number(min: 0, max: nil, openMin: false), default: .number(1e-5),
                         help: "weight decay of the fusion module (the official 1e-5; the networks use optimizer.weight_decay)"),
               OptionKey("shared_stem", .bool, default: .bool(false),
                         help: "FFL-S, the official CIFAR form: the peers (one model) share conv1..layer2; false fuses whole networks")], dataParallel: true) { c, g in
            let channels = try (0..<c.peers).map { try c.channels(ofPeer: $0).features }
            return FFL(localPeers: c.placement.localPeers, channels: channels, fusedChannels: channels[0], classes: c.classes, seed: c.seed,
                       temperature: c.options.number("temperature"), rampUpEpochs: c.options.int("rampup_epochs"),
                       fusionWeightDecay: c.options.number("fusion_weight_decay"), sharedStem: c.options.bool("shared_stem"), generator: &g)
        }

    public let name = "ffl"
    public let temperature: Float, rampUpEpochs: Int, fusionWeightDecay: Float, sharedStem: Bool
    /// The local peers' slices, in local order.
    let slices: [FusionSlice]
    let fusedBN: BatchNorm2d, fc: Linear

    /// `channels[p]` is peer p's final feature channels; `seed` fixes each slice's initial weights by peer, so they
    /// do not depend on placement; `g` initialises the replicated part.
    public init(localPeers: [Int], channels: [Int], fusedChannels: Int, classes: Int, seed: UInt64,
                temperature: Float = 3, rampUpEpochs: Int = 80, fusionWeightDecay: Float = 1e-5, sharedStem: Bool = false,
                generator g: inout Generator) {
        self.temperature = temperature; self.rampUpEpochs = rampUpEpochs
        self.fusionWeightDecay = fusionWeightDecay; self.sharedStem = sharedStem
        let fusedInputs = channels.reduce(0, +)
        slices = localPeers.map { p in
            var pg = Generator(seed: seed, stream: [0x6675_7365, UInt64(p)])  // "fuse"
            return FusionSlice(channels: channels[p], fusedInputs: fusedInputs, fusedChannels: fusedChannels, generator: &pg)
        }
        fusedBN = BatchNorm2d(fusedChannels)
        fc = Linear(fusedChannels, classes, generator: &g)
    }

    public var modules: [(String, Module)] { [("fusion_bn", fusedBN), ("fusion_fc", fc)] }
    public var teacherName: String? { "fused" }
    public var sharesStem: Bool { sharedStem }
    public func groupSettings(_ role: ParameterRole, _ name: String) -> GroupSettings? {
        role == .peerModule || role == .method ? GroupSettings(weightDecay: fusionWeightDecay) : nil
    }
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
        let klF = klDivergence(student: fused, teacher: ensemble, temperature: temperature, targetEpsilon: 1e-7)
        let p = addPeerTerms(to: (ceF + klF * w) * cohort.sharedScale, logits: logits, labels: labels, target: target,
                             temperature: temperature, weight: w, targetEpsilon: 1e-7)
        return StepResult(objective: p.objective, peerLogits: logits, peerLoss: p.losses,
                          terms: ["ce": p.ce, "ce_fused": ceF.item * cohort.sharedScale, "kl_fused_to_peers": p.kl,
                                  "kl_ensemble_to_fused": klF.item * cohort.sharedScale], teacherLogits: target)
    }

    public func evaluate(_ x: Tensor, cohort: Cohort) throws -> Predictions {
        let (logits, fused) = try forward(Array(repeating: x, count: cohort.models.count), cohort: cohort)
        return Predictions(peers: logits, teacher: fused)
    }
}
