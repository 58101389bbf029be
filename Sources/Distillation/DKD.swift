// Zhao, Cui, Song, Qiu & Liang, CVPR 2022, "Decoupled Knowledge Distillation" (DKD).
//
// With p = softmax(z/T), g the true class: the binary target/non-target split b = [p_g, 1 − p_g] and the
// distribution over the non-target classes p̂ = softmax((z − 1000·1_g)/T) (the true class masked out):
//   TCKD = T²·KL(b_t ‖ b_s),   NCKD = T²·KL(p̂_t ‖ p̂_s),   both summed over classes and averaged over the batch,
//   L = w_ce·CE(y, z_s) + min((epoch + 1)/warm-up, 1)·(α·TCKD + β·NCKD),   α = 1, β = 8, T = 4, warm-up 20 epochs
// (epoch counted from 1, as mdistiller's trainer does). Logits only: no taps, no parameters. Followed:
// megvii-research/mdistiller@e8c5bb3 `mdistiller/distillers/DKD.py` and `engine/cfg.py` (CE 1, ALPHA 1, BETA 8,
// T 4, WARMUP 20).
import Foundation
import Models
import Tensors

/// α·TCKD + β·NCKD for student and (detached) teacher logits [N, C].
public func decoupledKDLoss(student zs: Tensor, teacher zt: Tensor, labels: [Int], alpha: Float, beta: Float, temperature T: Float) -> (tckd: Tensor, nckd: Tensor) {
    let n = zs.shape[0], c = zs.shape[1]
    let gt = Tensor(zeros: [n, c])
    for (i, y) in labels.enumerated() { gt.data[i * c + y] = 1 }
    let other = 1 - gt
    func binary(_ z: Tensor) -> Tensor {
        let p = (z * (1 / T)).softmax(axis: 1)
        return concat([(p * gt).sum(axis: 1, keepDims: true), (p * other).sum(axis: 1, keepDims: true)], axis: 1)
    }
    let bt = binary(zt.detached()), bs = binary(zs)
    // KL(b_t ‖ b_s) = Σ b_t·log b_t − Σ b_t·log b_s, with 0·log 0 = 0 (torch's kl_div) in the constant part.
    var entropy: Float = 0
    for i in 0..<bt.count where bt.data[i] > 0 { entropy += bt.data[i] * Foundation.log(bt.data[i]) }
    let tckd = (entropy - (bt * bs.log()).sum()) * (T * T / Float(n))
    let masked = gt * (-1000 * T)  // z/T − 1000·1_g, written as (z − 1000·T·1_g)/T
    let nckd = klDivergence(student: zs + masked, teacher: zt.detached() + masked, temperature: T)
    return (tckd * alpha, nckd * beta)
}

public final class DKD: FeatureDistillation {
    public static let spec = MethodSpec(
        name: "dkd", officialEvaluation: "the student's best epoch (mdistiller)", summary: "Zhao et al. 2022: KD decoupled into target-class and non-target-class terms, α·TCKD + β·NCKD (mdistiller's DKD)",
        keys: [.teacherModel, .teacherCheckpoint,
               OptionKey("ce_weight", .number(min: 0, max: nil, openMin: false), default: .number(1), help: "weight of the student's cross-entropy"),
               OptionKey("kd_weight", .number(min: 0, max: nil, openMin: false), default: .number(0), help: "weight of Hinton's T²·KL(p_t ‖ p_s) beside DKD (0: off)"),
               .temperature(4),
               OptionKey("alpha", .number(min: 0, max: nil, openMin: false), default: .number(1), help: "weight α of TCKD"),
               OptionKey("beta", .number(min: 0, max: nil, openMin: false), default: .number(8), help: "weight β of NCKD"),
               OptionKey("warmup_epochs", .int(min: 0), default: .int(20), help: "the DKD terms' weight grows as min(epoch/warm-up, 1), epochs from 1 (0: full weight at once)")],
        dataParallel: true) { c, _ in
            DKD(context: c, teacher: try c.frozenTeacher(), alpha: c.options.number("alpha"), beta: c.options.number("beta"),
                warmup: c.options.int("warmup_epochs"))
        }

    public let alpha: Float, beta: Float, warmup: Int
    init(context: MethodContext, teacher: FrozenTeacher, alpha: Float, beta: Float, warmup: Int) {
        self.alpha = alpha; self.beta = beta; self.warmup = warmup
        super.init(name: "dkd", context: context, teacher: teacher, adapters: context.placement.localPeers.map { _ in nil })
    }

    public override var featureTermNames: [String] { ["tckd", "nckd"] }
    public override func terms(_ s: FeatureStep) throws -> [Tensor] {
        let w = warmup == 0 ? 1 : min(Float(s.input.epoch + 1) / Float(warmup), 1)
        let (t, n) = decoupledKDLoss(student: s.studentLogits, teacher: s.teacher.logits, labels: s.labels, alpha: alpha, beta: beta, temperature: temperature)
        return [t * w, n * w]
    }
}
