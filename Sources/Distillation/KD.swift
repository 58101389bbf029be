// Hinton, Vinyals & Dean, 2015, "Distilling the Knowledge in a Neural Network".
//
// A frozen teacher's softened predictions teach the student:
//   L = α · T² · KL(softmax(z_t / T) ‖ softmax(z_s / T)) + (1 − α) · CE(y, softmax(z_s))
// KL is summed over classes and averaged over the batch (`batchmean`); the T² factor keeps the soft term's
// gradient scale independent of T. Defaults T = 4, α = 0.9. The teacher's logits are computed without the tape
// (detached): only the student learns.
import Layers
import Models
import Tensors

public struct HintonKD: Equatable {
    public var temperature: Float
    public var alpha: Float

    public init(temperature: Float = 4, alpha: Float = 0.9) {
        precondition(temperature > 0 && alpha >= 0 && alpha <= 1, "HintonKD: temperature must be > 0 and alpha in [0, 1]")
        self.temperature = temperature; self.alpha = alpha
    }

    /// The total loss and its two terms (soft = T²·KL, hard = CE), for student logits and detached teacher logits.
    public func loss(student: Tensor, teacher: Tensor, labels: [Int]) -> (total: Tensor, soft: Float, hard: Float) {
        let soft = klDivergence(student: student, teacher: teacher.detached(), temperature: temperature)
        let hard = crossEntropy(student, labels: labels)
        return (soft * alpha + hard * (1 - alpha), soft.item, hard.item)
    }
}

/// A frozen teacher: a model loaded from a checkpoint, kept in evaluation mode, run without the tape.
public final class FrozenTeacher {
    public let model: Classifier

    public init(model: Classifier) {
        self.model = model
        model.eval()
        for (_, p) in model.namedParameters() { p.value.requiresGrad = false }
    }

    public func logits(_ x: Tensor) -> Tensor { withoutGradients { model(x) } }
}

/// `kd`: each local peer is a student of the frozen teacher.
public final class KDMethod: DistillationMethod {
    public static let spec = MethodSpec(
        name: "kd", officialEvaluation: "the student's best epoch (mdistiller, RepDistiller)", summary: "Hinton et al. 2015: each peer a student of a frozen teacher, α·T²·KL(p_t ‖ p_s) + (1−α)·CE",
        keys: [.temperature(4), OptionKey("alpha", .number(min: 0, max: 1, openMin: false), default: .number(0.9), help: "weight α of the soft term"),
               .teacherModel, .teacherCheckpoint],
        dataParallel: true) { c, _ in
            KDMethod(teacher: try c.frozenTeacher(), kd: HintonKD(temperature: c.options.number("temperature"), alpha: c.options.number("alpha")))
        }

    public let name = "kd"
    public let teacher: FrozenTeacher
    public let kd: HintonKD
    public init(teacher: FrozenTeacher, kd: HintonKD) { self.teacher = teacher; self.kd = kd }
    public var augmentsPerPeer: Bool { true }
    public var teacherName: String? { "teacher" }
    public var termNames: [String] { ["ce", "kl"] }

    public func step(_ input: StepInput, cohort: Cohort) throws -> StepResult {
        guard let labels = input.labels else { throw MethodError("kd needs labels (its loss has a cross-entropy term)") }
        var total: Tensor?, logits: [Tensor] = [], losses: [Float] = [], ce: Float = 0, kl: Float = 0
        var teacherLogits: Tensor?
        for (m, x) in zip(cohort.models, input.images) {
            let z = m(x), t = teacher.logits(x)
            let l = kd.loss(student: z, teacher: t, labels: labels)
            total = total.map { $0 + l.total } ?? l.total
            logits.append(z); losses.append(l.total.item); ce += l.hard; kl += l.soft
            teacherLogits = teacherLogits ?? t
        }
        return StepResult(objective: total!, peerLogits: logits, peerLoss: losses, terms: ["ce": ce, "kl": kl],
                          teacherLogits: teacherLogits)
    }

    public func evaluate(_ x: Tensor, cohort: Cohort) throws -> Predictions {
        Predictions(peers: cohort.logits(x), teacher: teacher.logits(x))
    }

    public var teacherIsFrozen: Bool { true }
    public func evaluatePeers(_ x: Tensor, cohort: Cohort) throws -> Predictions { Predictions(peers: cohort.logits(x)) }
}
