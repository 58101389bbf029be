// Cui, Guo, Chen, Yang, Chen, Zhang & Ma, 2021, "Beyond Self-Supervision: A Simple Yet Effective Network
// Distillation Alternative to Improve Backbones" (SSLD).
//
// The student learns from a frozen teacher's predictions alone — no ground-truth term — so unlabeled images can
// be mixed into every batch. The loss is the one PaddleClas trains SSLD with (`ppcls/loss/dmlloss.py`, DMLLoss
// on softmax outputs, T = 1, ε = 1e-12): the symmetric KL divergence with ε inside the logarithms,
//   L = (1/N) Σ_n Σ_c ½·[p_t·log((p_t + ε)/(p_s + ε)) + p_s·log((p_s + ε)/(p_t + ε))],   p = softmax(z),
// (PaddleClas multiplies the elementwise cost by the class count and takes the mean over all elements, which is
// the same). ε matters: a confident teacher's probabilities fall below 1e-12 (the golden batch's reach 1e-29), and
// there the guarded logarithm is what the official loss computes. The teacher is frozen and detached; both halves
// send gradients to the student.
// Ours by choice: the teacher runs in evaluation mode (its running statistics); PaddleClas freezes its parameters
// but leaves it in training mode, so its batch norms use each batch's statistics.
import Foundation
import Models
import Tensors

public struct SSLDLoss: Equatable {
    /// PaddleClas's guard inside the logarithms.
    public let epsilon: Float = 1e-12
    public init() {}

    /// The guarded ½[KL(p_t ‖ p_s) + KL(p_s ‖ p_t)] for student logits and (detached) teacher logits, both [N, C].
    /// With g_c = ∂L/∂p_s,c = (log(p_s,c + ε) − log(p_t,c + ε) + p_s,c/(p_s,c + ε) − p_t,c/(p_s,c + ε))/(2N), the
    /// gradient through the softmax is ∂L/∂z_j = p_s,j·(g_j − Σ_c p_s,c·g_c).
    public func callAsFunction(student: Tensor, teacher: Tensor) -> Tensor {
        precondition(student.shape == teacher.shape && student.rank == 2, "SSLDLoss: student \(student.shape) and teacher \(teacher.shape) must be [N, C]")
        let n = student.shape[0], c = student.shape[1], eps = Double(epsilon)
        let ps = student.detached().softmax(), pt = teacher.detached().softmax()
        var total = 0.0
        let g = Tensor(zeros: [n, c])
        for r in 0..<n {
            for j in 0..<c {
                let i = r * c + j, s = Double(ps.data[i]), t = Double(pt.data[i])
                let ls = Foundation.log(s + eps), lt = Foundation.log(t + eps)
                total += 0.5 * (t * (lt - ls) + s * (ls - lt))
                g.data[i] = Float(0.5 * (ls - lt + s / (s + eps) - t / (s + eps)) / Double(n))
            }
        }
        let out = Tensor(scalar: Float(total / Double(n)))
        out.record(inputs: [student]) { out in
            guard student.requiresGrad else { return }
            let scale = out.grad!.data[0], gz = student.gradBuffer()
            for r in 0..<n {
                var dot: Float = 0
                for j in 0..<c { dot += ps.data[r * c + j] * g.data[r * c + j] }
                for j in 0..<c { let i = r * c + j; gz[i] += scale * ps.data[i] * (g.data[i] - dot) }
            }
        }
        return out
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
