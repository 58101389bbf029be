// Cui, Guo, Chen, Yang, Chen, Zhang & Ma, 2021, "Beyond Self-Supervision: A Simple Yet Effective Network
// Distillation Alternative to Improve Backbones" (SSLD).
//
// The student learns from a frozen teacher's predictions alone — no ground-truth term — so unlabeled images can
// be mixed into every batch. The loss is the one PaddleClas trains SSLD with (`ppcls/loss/dmlloss.py`, DMLLoss
// on softmax outputs, T = 1): the symmetric KL divergence
//   L = ½ · [ KL(p_t ‖ p_s) + KL(p_s ‖ p_t) ],   p = softmax(z),
// each KL summed over classes and averaged over the batch (PaddleClas multiplies the elementwise cost by the
// class count and takes the mean over all elements, which is the same). The teacher is frozen and detached;
// both halves send gradients to the student. PaddleClas adds 1e-12 inside its logarithms; here the log-softmax
// is computed directly, which needs no guard.
// Ours by choice: the teacher runs in evaluation mode (its running statistics); PaddleClas freezes its parameters
// but leaves it in training mode, so its batch norms use each batch's statistics.
import Models
import Tensors

public struct SSLDLoss: Equatable {
    public init() {}
    /// ½[KL(p_t ‖ p_s) + KL(p_s ‖ p_t)] for student logits and (detached) teacher logits, both [N, C].
    public func callAsFunction(student: Tensor, teacher: Tensor) -> Tensor {
        let t = teacher.detached()
        return (klDivergence(student: student, teacher: t) + klDivergence(student: t, teacher: student)) * 0.5
    }
}

/// `ssld`: each local peer matches the frozen teacher's predictions on labeled and unlabeled images alike.
public final class SSLDMethod: DistillationMethod {
    public static let spec = MethodSpec(
        name: "ssld", summary: "Cui et al. 2021: ½[KL(p_t ‖ p_s) + KL(p_s ‖ p_t)] to a frozen teacher, no labels (unlabeled images may join)",
        keys: [.teacherModel, .teacherCheckpoint], dataParallel: true, labelFree: true) { c, _ in
            SSLDMethod(teacher: try c.frozenTeacher())
        }

    public let name = "ssld"
    public let teacher: FrozenTeacher
    let loss = SSLDLoss()
    public init(teacher: FrozenTeacher) { self.teacher = teacher }
    public var augmentsPerPeer: Bool { true }
    public var teacherName: String? { "teacher" }
    public var termNames: [String] { ["sym_kl"] }

    public func step(_ input: StepInput, cohort: Cohort) throws -> StepResult {
        var total: Tensor?, logits: [Tensor] = [], losses: [Float] = []
        var teacherLogits: Tensor?
        for (m, x) in zip(cohort.models, input.images) {
            let z = m(x), t = teacher.logits(x)
            let l = loss(student: z, teacher: t)
            total = total.map { $0 + l } ?? l
            logits.append(z); losses.append(l.item)
            teacherLogits = teacherLogits ?? t
        }
        return StepResult(objective: total!, peerLogits: logits, peerLoss: losses, terms: ["sym_kl": losses.reduce(0, +)],
                          teacherLogits: teacherLogits)
    }

    public func evaluate(_ x: Tensor, cohort: Cohort) throws -> Predictions {
        Predictions(peers: cohort.logits(x), teacher: teacher.logits(x))
    }

    public var teacherIsFrozen: Bool { true }
    public func evaluatePeers(_ x: Tensor, cohort: Cohort) throws -> Predictions { Predictions(peers: cohort.logits(x)) }
}
