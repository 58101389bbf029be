// Romero et al., ICLR 2015, "FitNets: Hints for Thin Deep Nets".
//
// A regressor r maps the student's hint tap to the teacher's and the student learns to match it:
//   L = w_ce·CE(y, z_s) + β·mean((r(F_s) − F_t)²),   β = 100,
// mean over every element of the teacher's map (F.mse_loss). r is mdistiller's ConvReg: a convolution with bias,
// 3×3 stride 2 when the student's map is twice the teacher's size, else (1 + H_s − H_t)×(1 + W_s − W_t) stride 1,
// then BatchNorm and ReLU; it trains with the student. The hint is tap 2 (layer2's output in a CIFAR ResNet), the
// teacher's and the student's alike. Followed: megvii-research/mdistiller@e8c5bb3 `mdistiller/distillers/FitNet.py`,
// `_common.py` (ConvReg), `engine/cfg.py` (HINT_LAYER 2, FEAT_WEIGHT 100, CE_WEIGHT 1). mdistiller trains the
// hint in one stage with CE (RepDistiller's default too), not the paper's two-stage schedule; so do we.
// A student map half the teacher's size needs ConvReg's transposed convolution, which we do not have: an error.
import Layers
import Models
import Tensors

/// mdistiller's ConvReg: conv (with bias) → BN → ReLU from the student's tap shape to the teacher's.
public final class ConvRegressor: Module {
    public let conv: Conv2d, bn: BatchNorm2d
    public var isTraining = true
    public init(student s: [Int], teacher t: [Int], generator g: inout Generator) throws {
        let (hs, ws, cs) = (s[0], s[1], s[2]), (ht, wt, ct) = (t[0], t[1], t[2])
        if hs == 2 * ht {
            conv = Conv2d(cs, ct, kernelSize: 3, stride: 2, padding: 1, bias: true, generator: &g)
        } else if hs >= ht && hs - ht == ws - wt {
            conv = Conv2d(cs, ct, kernelSize: 1 + hs - ht, bias: true, generator: &g)
        } else {
            throw MethodError("a regressor from a \(hs)×\(ws) student map to a \(ht)×\(wt) teacher map needs a transposed convolution (not available): choose hint taps of equal size, or a student map twice the teacher's")
        }
        bn = BatchNorm2d(ct)
    }
    public var children: [(String, Module)] { [("conv", conv), ("bn", bn)] }
    public func callAsFunction(_ x: Tensor) -> Tensor { bn.forward(conv(x), relu: true) }
}

public final class FitNets: FeatureDistillation {
    public static let spec = MethodSpec(
        name: "fitnets", officialEvaluation: "the student's best epoch (mdistiller)", summary: "Romero et al. 2015: a regressor from the student's hint tap to the teacher's, β·MSE (mdistiller's FitNet)",
        keys: FeatureDistillation.commonKeys + [
            OptionKey("hint_layer", .int(min: 0), default: .int(2), help: "the tap both networks are matched at (2: layer2's output in a CIFAR ResNet)"),
            OptionKey("feat_weight", .number(min: 0, max: nil, openMin: false), default: .number(100), help: "weight β of the hint's mean squared error")],
        dataParallel: true) { c, _ in
            let teacher = try c.frozenTeacher(), hint = c.options.int("hint_layer")
            var regressors: [Module?] = []
            for p in c.placement.localPeers {
                let shapes = try c.tapShapes(teacher: teacher.model, peer: p)
                try checkTap(hint, key: "hint_layer", model: c.options.string("teacher_model")!, taps: shapes.teacher.count)
                try checkTap(hint, key: "hint_layer", model: c.models[p], taps: shapes.student.count)
                var g = c.adapterGenerator(0x6669_746E, peer: p)  // "fitn"
                regressors.append(try ConvRegressor(student: shapes.student[hint], teacher: shapes.teacher[hint], generator: &g))
            }
            return FitNets(context: c, teacher: teacher, regressors: regressors, hint: hint, weight: c.options.number("feat_weight"))
        }

    public let hint: Int, weight: Float
    init(context: MethodContext, teacher: FrozenTeacher, regressors: [Module?], hint: Int, weight: Float) {
        self.hint = hint; self.weight = weight
        super.init(name: "fitnets", context: context, teacher: teacher, adapters: regressors)
    }

    public override var featureTermNames: [String] { ["hint"] }
    public override func terms(_ s: FeatureStep) throws -> [Tensor] {
        let r = adapters[s.peer] as! ConvRegressor
        return [mseLoss(r(s.student[hint]), s.teacher.taps[hint]) * weight]
    }
}
