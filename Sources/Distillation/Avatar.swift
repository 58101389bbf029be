// Zhang, Chen, Xu, Zhou, Liu & Wen, ACM MM 2023, "Avatar Knowledge Distillation: Self-ensemble Teacher Paradigm
// with Uncertainty" (Avatar KD).
//
// Each step perturbs the frozen teacher's final map into K avatars (K = 1 as in the official code), inverted
// dropout p = 0.1:  A_k = F_t ⊙ m_k / (1 − p),  m_k ~ Bernoulli(1 − p) per element. The student's map S passes a
// trainable 1×1 alignment convolution (with bias, present even at equal channels, as the official configs'
// align_module). "Uncertainty" U standardises a map per channel without affine terms, with the batch's statistics
// over N·H·W (BatchNorm2d(affine=False) in training mode, ε = 1e-5). Base loss per avatar, `base`:
//   cwd: channel-wise distillation, τ = 1, on U(S) and the raw avatar (the official code computes U(A) and
//        discards it):  ℓ_k = τ²/(N·C)·Σ_{n,c} KL(softmax_hw(A_k/τ) ‖ softmax_hw(U(S)/τ));  β = 7.5;
//   mgd: masked generative distillation on U(S) and U(A_k): a mask M, 0 with probability λ, a generator
//        G = conv3×3 → ReLU → conv3×3 (C → C, with biases, trained),  ℓ_k = Σ (G(U(S) ⊙ M) − U(A_k))² / N.
//        MGD's classification recipe (yzd-v/MGD@2c9da0b `cls/mmcls/distillation/losses/mgd.py`, res34→res18 config):
//        M per (n, c), λ = 0.15, β = 7e-5; `mgd_mask: pixel` is AvatarKD's detection mask per (n, h, w).
// With K > 1 the avatars are weighted by inverse variance of A_k − F_t, normalised to mean 1 (ours: the paper
// gives no formula and the code has none; w = 1 for one avatar).
//   L = w_ce·CE(y, z_s) + w_kd·T²·KL + β·Σ_k w_k·ℓ_k / K.
// Followed: Gumpest/AvatarKD@f8f8f35 (detection only) `mmrazor/models/losses/akd_cwd.py`, `akd_mgd.py` and the
// configs under `configs/distill/akd/`. Ours: classification on the final map (the last tap); `standardize_target`
// (CWD on U(A), the paper's description); final maps whose sides differ by a whole factor meet at the smaller size.
// Distributed (data-parallel): dropout and MGD masks come from streams keyed by (seed, step, item, avatar), so the
// global batch gets the same masks at any number of ranks; U's statistics are the global batch's (a differentiable
// allreduce of Σx and Σx² per channel), and σ²_k an allreduce: the one-process gradient exactly.
import Collectives
import Foundation
import Layers
import Models
import Tensors

/// (x − μ_c)/√(σ²_c + ε) for x [N, H, W, C], μ and the biased σ² per channel over every sample and position of
/// the global batch (summed over `comm`'s ranks when given, differentiably).
public func channelStandardize(_ x: Tensor, comm: Communicator?, eps: Float = 1e-5) throws -> Tensor {
    let c = x.shape[3]
    var moments = concat([x.sum(axes: [0, 1, 2]), x.square().sum(axes: [0, 1, 2])], axis: 0)
    var count = [Double(x.count / c)]
    if let comm {
        moments = try allReduceSum(moments, on: comm)
        try comm.allReduce(&count, op: .sum)
    }
    let m = 1 / Float(count[0])
    let mean = moments.slice(axis: 0, 0..<c) * m, square = moments.slice(axis: 0, c..<(2 * c)) * m
    let inv = (square - mean.square() + eps).pow(-0.5)
    return (x - mean) * inv
}

/// A mask [N, H, W, C] (or [N, H, W, 1] with `perPixel`) of 0 with probability p, else `keep`: sample n's part from
/// the stream (seed, tag, step, items[n], k).
func keyedMask(shape: [Int], items: [Int], seed: UInt64, tag: UInt64, step: Int, k: Int, p: Float, keep: Float) -> Tensor {
    let out = Tensor(uninitialized: shape), per = shape.dropFirst().reduce(1, *)
    for (n, t) in items.enumerated() {
        var g = Generator(seed: seed, stream: [tag, UInt64(step), UInt64(t), UInt64(k)])
        let row = out.data + n * per
        for i in 0..<per { row[i] = g.uniform() < p ? 0 : keep }
    }
    return out
}

/// MGD's generator ("generation.0", "generation.2"): conv3×3 → ReLU → conv3×3, C → C, with biases.
public final class MGDGenerator: Module {
    public let conv1: Conv2d, conv2: Conv2d
    public var isTraining = true
    public init(_ c: Int, generator g: inout Generator) {
        conv1 = Conv2d(c, c, kernelSize: 3, padding: 1, bias: true, generator: &g)
        conv2 = Conv2d(c, c, kernelSize: 3, padding: 1, bias: true, generator: &g)
    }
    public var children: [(String, Module)] { [("generation.0", conv1), ("generation.2", conv2)] }
    public func callAsFunction(_ x: Tensor) -> Tensor { conv2(conv1(x).relu()) }
}

/// A student's Avatar modules: the 1×1 alignment and the MGD generator (base mgd).
public final class AvatarModules: Module {
    public let align: Conv2d, generator: MGDGenerator?
    public var isTraining = true
    public init(student: Int, teacher: Int, mgd: Bool, generator g: inout Generator) {
        align = Conv2d(student, teacher, kernelSize: 1, bias: true, generator: &g)
        generator = mgd ? MGDGenerator(teacher, generator: &g) : nil
    }
    public var children: [(String, Module)] { [("align", align as Module)] + (generator.map { [("mgd", $0 as Module)] } ?? []) }
}

/// Avatar KD's base feature loss.
public enum AvatarBase: String, CaseIterable { case cwd, mgd }
/// What MGD's random mask drops: whole channels of a sample (MGD's classification code) or positions (AvatarKD's).
public enum MGDMask: String, CaseIterable { case channel, pixel }

/// The settings of Avatar KD's feature term.
public struct AvatarSettings {
    public var avatars: Int, dropout: Float, base: AvatarBase, tau: Float, lambda: Float, mask: MGDMask
    public var standardizeTarget: Bool, seed: UInt64
    public init(avatars: Int = 1, dropout: Float = 0.1, base: AvatarBase = .cwd, tau: Float = 1, lambda: Float = 0.15,
                mask: MGDMask = .channel, standardizeTarget: Bool = false, seed: UInt64 = 0) {
        self.avatars = avatars; self.dropout = dropout; self.base = base; self.tau = tau; self.lambda = lambda; self.mask = mask
        self.standardizeTarget = standardizeTarget; self.seed = seed
    }
}

/// Σ_k w_k·ℓ_k / K for the student's aligned map `s` (on the tape) and the teacher's map `t` [n, H, W, C] of the
/// samples `items` (training positions) at global step `step`; statistics over `comm`'s global batch.
public func avatarLoss(student s: Tensor, teacher t: Tensor, items: [Int], step: Int, settings o: AvatarSettings,
                       generator gen: MGDGenerator?, comm: Communicator?) throws -> Tensor {
    let n = s.shape[0], h = s.shape[1], w = s.shape[2], c = s.shape[3]
    let us = try channelStandardize(s, comm: comm)
    var losses: [Tensor] = [], precision: [Double] = []
    for k in 0..<o.avatars {
        let mask = keyedMask(shape: t.shape, items: items, seed: o.seed, tag: 0x6176_6174, step: step, k: k, p: o.dropout, keep: 1 / (1 - o.dropout))  // "avat"
        // The target: U(A_k) for MGD (and CWD with standardizeTarget), the raw avatar for CWD.
        let standardize = o.base == .mgd || o.standardizeTarget
        let (target, variance) = try withoutGradients { () -> (Tensor, Double) in
            let a = t * mask
            var v = [(0..<a.count).reduce(0.0) { let d = Double(a.data[$1] - t.data[$1]); return $0 + d * d }, Double(a.count)]
            try comm?.allReduce(&v, op: .sum)
            return (standardize ? try channelStandardize(a, comm: comm) : a, v[0] / v[1])
        }
        precision.append(1 / max(variance, 1e-12))
        switch o.base {
        case .mgd:
            let shape = o.mask == .channel ? [n, 1, 1, c] : [n, h, w, 1]
            let m = keyedMask(shape: shape, items: items, seed: o.seed, tag: 0x6D67_646D, step: step, k: k, p: o.lambda, keep: 1)  // "mgdm"
            let d = gen!(us * m) - target
            losses.append(d.square().sum() * (1 / Float(n)))
        case .cwd:
            let rows = { (x: Tensor) in x.reshaped([n, h * w, c]).permuted([0, 2, 1]).reshaped([n * c, h * w]) }
            losses.append(klDivergence(student: rows(us), teacher: rows(target), temperature: o.tau))
        }
    }
    let total = precision.reduce(0, +), K = Float(o.avatars)
    let weighted = zip(losses, precision).map { $0 * (K * Float($1 / total)) }
    return weighted.dropFirst().reduce(weighted[0], +) * (1 / K)
}

public final class Avatar: FeatureDistillation {
    public static let spec = MethodSpec(
        name: "avatar", summary: "Zhang et al. 2023: dropout avatars of the teacher's map, per-channel standardisation, uncertainty-weighted CWD or MGD",
        keys: FeatureDistillation.commonKeys + [
            OptionKey("feat_weight", .number(min: 0, max: nil, openMin: false), help: "weight β of the avatar terms (default: AvatarKD's 7.5 for cwd, MGD's classification 7e-5 for mgd)"),
            OptionKey("base", .string, default: .string("cwd"), help: "the base feature loss: cwd (channel-wise distillation) or mgd (masked generative distillation)"),
            OptionKey("mgd_mask", .string, default: .string("channel"), help: "what MGD's mask drops: channel (per sample and channel, MGD's classification code) or pixel (per position, AvatarKD's detection code)"),
            OptionKey("standardize_target", .bool, default: .bool(false), help: "cwd: standardise the avatar too (ours, the paper's description; the official code uses the raw avatar)"),
            OptionKey("avatars", .int(min: 1), default: .int(1), help: "avatars per step (the official code: 1)"),
            OptionKey("dropout", .number(min: 0, max: 1, openMin: false), default: .number(0.1), help: "dropout probability that makes an avatar"),
            OptionKey("tau", .number(min: 0, max: nil, openMin: true), default: .number(1), help: "CWD's spatial softmax temperature"),
            OptionKey("mgd_lambda", .number(min: 0, max: 1, openMin: false), default: .number(0.15), help: "MGD's masked fraction (MGD's classification recipe: 0.15; AvatarKD's detection: 0.65)")],
        dataParallel: true) { c, _ in
            guard let base = AvatarBase(rawValue: c.options.string("base")!) else {
                throw MethodError("method.base: '\(c.options.string("base")!)' is not one of \(AvatarBase.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard let mask = MGDMask(rawValue: c.options.string("mgd_mask")!) else {
                throw MethodError("method.mgd_mask: '\(c.options.string("mgd_mask")!)' is not one of \(MGDMask.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            guard c.options.number("dropout") < 1 else { throw MethodError("method.dropout: must be below 1") }
            let teacher = try c.frozenTeacher()
            var modules: [Module?] = []
            for p in c.placement.localPeers {
                let (s, t) = try c.finalMapShapes(teacher: teacher.model, peer: p, method: "avatar")
                var g = c.adapterGenerator(0x6176_7472, peer: p)  // "avtr"
                modules.append(AvatarModules(student: s[2], teacher: t[2], mgd: base == .mgd, generator: &g))
            }
            return Avatar(context: c, teacher: teacher, modules: modules, settings: AvatarSettings(
                avatars: c.options.int("avatars"), dropout: c.options.number("dropout"), base: base, tau: c.options.number("tau"),
                lambda: c.options.number("mgd_lambda"), mask: mask, standardizeTarget: c.options.bool("standardize_target"), seed: c.seed))
        }

    public let weight: Float, settings: AvatarSettings
    init(context c: MethodContext, teacher: FrozenTeacher, modules: [Module?], settings: AvatarSettings) {
        weight = c.options.values["feat_weight"] == nil ? (settings.base == .mgd ? 7e-5 : 7.5) : c.options.number("feat_weight")
        self.settings = settings
        super.init(name: "avatar", context: c, teacher: teacher, adapters: modules)
    }

    public override var featureTermNames: [String] { ["avatar"] }
    public override func terms(_ s: FeatureStep) throws -> [Tensor] {
        guard s.input.indices.count == s.labels.count else { throw MethodError("avatar needs the batch's training positions (its masks are keyed by them)") }
        let m = adapters[s.peer] as! AvatarModules
        let (st, te) = matchSpatial(m.align(s.student.last!), s.teacher.taps.last!)
        return [try avatarLoss(student: st, teacher: te, items: s.input.indices, step: s.input.step,
                               settings: settings, generator: m.generator, comm: s.replicas) * weight]
    }
}
