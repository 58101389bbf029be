// Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention: Improving the Performance of
// Convolutional Neural Networks via Attention Transfer" (AT).
//
// A map's spatial attention is the channel mean of its squares, flattened and L2-normalised per sample:
//   a(F) = normalize(mean_c F², over the H·W positions),
//   L = w_ce·CE(y, z_s) + β·Σ_l mean_{n,hw}((a(F_s^l) − a(F_t^l))²),   β = 1000,
// over the taps 1… of both networks (every stage's output) paired in order until either runs out; a larger map is
// average-pooled down to the other's size first. No parameters. Followed: megvii-research/mdistiller@e8c5bb3
// `mdistiller/distillers/AT.py` (p = 2, FEAT_WEIGHT 1000, CE_WEIGHT 1, feats[1:]).
import Models
import Tensors

/// a(F) for F [N, H, W, C]: [N, H·W], each row of unit length.
public func attentionMap(_ f: Tensor) -> Tensor {
    f.square().mean(axis: 3).reshaped([f.shape[0], f.shape[1] * f.shape[2]]).l2Normalized(axis: 1)
}

/// Σ over paired maps of mean((a(s) − a(t))²), larger maps pooled to the smaller's size.
public func attentionTransferLoss(student: [Tensor], teacher: [Tensor]) -> Tensor {
    let pairs = zip(student, teacher).map { s, t -> Tensor in
        let (a, b) = matchSpatial(s, t)
        return (attentionMap(a) - attentionMap(b)).square().mean()
    }
    return pairs.dropFirst().reduce(pairs[0], +)
}

public final class AT: FeatureDistillation {
    public static let spec = MethodSpec(
        name: "at", officialEvaluation: "the student's best epoch (mdistiller)", summary: "Zagoruyko & Komodakis 2017: match each stage's spatial attention map, β·Σ MSE (mdistiller's AT)",
        keys: FeatureDistillation.commonKeys + [
            OptionKey("feat_weight", .number(min: 0, max: nil, openMin: false), default: .number(1000), help: "weight β of the attention terms")],
        dataParallel: true) { c, _ in
            let teacher = try c.frozenTeacher()
            for p in c.placement.localPeers {
                let shapes = try c.tapShapes(teacher: teacher.model, peer: p)
                for (s, t) in zip(shapes.student.dropFirst(), shapes.teacher.dropFirst()) {
                    let (a, b) = (max(s[0], t[0]), min(s[0], t[0]))
                    guard a % b == 0 && s[0] * t[1] == s[1] * t[0] else {
                        throw MethodError("at pairs \(c.models[p])'s \(s[0])×\(s[1]) map with the teacher's \(t[0])×\(t[1]); one side must be a whole multiple of the other")
                    }
                }
            }
            return AT(context: c, teacher: teacher, weight: c.options.number("feat_weight"))
        }

    public let weight: Float
    init(context: MethodContext, teacher: FrozenTeacher, weight: Float) {
        self.weight = weight
        super.init(name: "at", context: context, teacher: teacher, adapters: context.placement.localPeers.map { _ in nil })
    }

    public override var featureTermNames: [String] { ["attention"] }
    public override func terms(_ s: FeatureStep) throws -> [Tensor] {
        [attentionTransferLoss(student: Array(s.student.dropFirst()), teacher: Array(s.teacher.taps.dropFirst())) * weight]
    }
}
