// Losses, each fused with its own backward.
// Legend: z logits [N, C], y integer labels, p = softmax(z), ε label smoothing, T temperature.
import Foundation

/// Row-wise log-softmax of `z` [N, C] into `out` (plain buffers, no tape).
@inline(__always)
func logSoftmaxRows(_ z: UnsafePointer<Float>, rows: Int, cols: Int, scale: Float, _ out: UnsafeMutablePointer<Float>) {
    for r in 0..<rows {
        let zr = z + r * cols, o = out + r * cols
        var m = -Float.infinity
        for c in 0..<cols { m = max(m, zr[c] * scale) }
        var s: Float = 0
        for c in 0..<cols { s += Foundation.exp(zr[c] * scale - m) }
        let lse = m + Foundation.log(s)
        for c in 0..<cols { o[c] = zr[c] * scale - lse }
    }
}

/// Mean cross-entropy of logits [N, C] against integer labels, with optional label smoothing ε
/// (target (1−ε)·onehot + ε/C, as torch.nn.functional.cross_entropy).
public func crossEntropy(_ logits: Tensor, labels: [Int], labelSmoothing eps: Float = 0) -> Tensor {
    precondition(logits.rank == 2, "crossEntropy: logits must be [N, C], got \(logits.shape)")
    let n = logits.shape[0], c = logits.shape[1]
    precondition(labels.count == n, "crossEntropy: \(labels.count) labels for \(n) rows of logits")
    precondition(labels.allSatisfy { $0 >= 0 && $0 < c }, "crossEntropy: labels must be in 0..<\(c)")
    precondition(eps >= 0 && eps <= 1, "crossEntropy: label smoothing must be in [0, 1], got \(eps)")
    let logp = Tensor(uninitialized: [n, c])
    logSoftmaxRows(logits.data, rows: n, cols: c, scale: 1, logp.data)
    var total = 0.0
    for r in 0..<n {
        let lr = logp.data + r * c
        var smooth: Float = 0
        if eps > 0 { for j in 0..<c { smooth -= lr[j] }; smooth /= Float(c) }
        total += Double((1 - eps) * -lr[labels[r]] + eps * smooth)
    }
    let out = Tensor(scalar: Float(total / Double(max(n, 1))))
    out.record(inputs: [logits]) { out in
        let g = out.grad!.data[0] / Float(max(n, 1)), gz = logits.gradBuffer()
        for r in 0..<n {
            let lr = logp.data + r * c, gr = gz + r * c
            for j in 0..<c {
                let target = (j == labels[r] ? 1 - eps : 0) + eps / Float(c)
                gr[j] += g * (Foundation.exp(lr[j]) - target)
            }
        }
    }
    return out
}

/// Hinton's distillation term T²·KL(softmax(t/T) ‖ softmax(s/T)), summed over classes and divided by N
/// (`batchmean`). Gradients flow to the student, and to the teacher too unless it is detached. With
/// `targetEpsilon` ε > 0 the target is p_t + ε (not renormalised), T²·Σ (p_t + ε)(log(p_t + ε) − log p_s)/N, as
/// ONE's and OKDDip's official KL losses compute it.
public func klDivergence(student: Tensor, teacher: Tensor, temperature T: Float = 1, targetEpsilon: Float = 0) -> Tensor {
    if targetEpsilon > 0 { return klDivergenceShiftedTarget(student: student, teacher: teacher, temperature: T, epsilon: targetEpsilon) }
    let (n, c, ls, lt) = temperedLogSoftmax(student, teacher, T)
    var rowKL = [Float](repeating: 0, count: n)
    var total = 0.0
    for r in 0..<n {
        var s: Double = 0
        for j in 0..<c {
            let a = lt.data[r * c + j]
            s += Double(Foundation.exp(a) * (a - ls.data[r * c + j]))
        }
        rowKL[r] = Float(s)
        total += s
    }
    let factor = T * T / Float(max(n, 1))
    let out = Tensor(scalar: Float(total) * factor)
    out.record(inputs: [student, teacher]) { out in
        let g = out.grad!.data[0] * factor / T
        if student.requiresGrad {
            // ∂/∂s_j = (p_s,j − p_t,j)/T per row
            let gs = student.gradBuffer()
            for i in 0..<(n * c) { gs[i] += g * (Foundation.exp(ls.data[i]) - Foundation.exp(lt.data[i])) }
        }
        if teacher.requiresGrad {
            // ∂/∂t_j = p_t,j·((log p_t,j − log p_s,j) − KL_row)/T
            let gt = teacher.gradBuffer()
            for r in 0..<n {
                for j in 0..<c {
                    let i = r * c + j
                    gt[i] += g * Foundation.exp(lt.data[i]) * ((lt.data[i] - ls.data[i]) - rowKL[r])
                }
            }
        }
    }
    return out
}

/// Rows, columns and the log-softmax of s/T and t/T for a KL term's [N, C] student and teacher logits.
func temperedLogSoftmax(_ student: Tensor, _ teacher: Tensor, _ T: Float) -> (Int, Int, Tensor, Tensor) {
    precondition(student.shape == teacher.shape && student.rank == 2,
                 "klDivergence: student \(student.shape) and teacher \(teacher.shape) must both be [N, C]")
    precondition(T > 0, "klDivergence: temperature must be positive, got \(T)")
    let n = student.shape[0], c = student.shape[1]
    let ls = Tensor(uninitialized: [n, c]), lt = Tensor(uninitialized: [n, c])
    logSoftmaxRows(student.data, rows: n, cols: c, scale: 1 / T, ls.data)
    logSoftmaxRows(teacher.data, rows: n, cols: c, scale: 1 / T, lt.data)
    return (n, c, ls, lt)
}

/// T²·Σ (p_t + ε)(log(p_t + ε) − log p_s)/N, q = p_t + ε:  ∂/∂s_j = T·(Σ_k q_k·p_s,j − q_j)/N and, when the
/// teacher is on the tape, ∂/∂t_j = T·p_t,j·((log q_j − log p_s,j) − Σ_k p_t,k·(log q_k − log p_s,k))/N.
func klDivergenceShiftedTarget(student: Tensor, teacher: Tensor, temperature T: Float, epsilon: Float) -> Tensor {
    let (n, c, ls, lt) = temperedLogSoftmax(student, teacher, T)
    var mass = [Float](repeating: 0, count: n), mean = [Float](repeating: 0, count: n)
    var total = 0.0
    for r in 0..<n {
        var s = 0.0, m = 0.0, e = 0.0
        for j in 0..<c {
            let p = Double(Foundation.exp(lt.data[r * c + j])), q = p + Double(epsilon)
            let d = Foundation.log(q) - Double(ls.data[r * c + j])
            s += q * d; m += q; e += p * d
        }
        mass[r] = Float(m); mean[r] = Float(e)
        total += s
    }
    let factor = T * T / Float(max(n, 1))
    let out = Tensor(scalar: Float(total) * factor)
    out.record(inputs: [student, teacher]) { out in
        let g = out.grad!.data[0] * factor / T
        if student.requiresGrad {
            let gs = student.gradBuffer()
            for r in 0..<n {
                for j in 0..<c {
                    let i = r * c + j
                    gs[i] += g * (mass[r] * Foundation.exp(ls.data[i]) - (Foundation.exp(lt.data[i]) + epsilon))
                }
            }
        }
        if teacher.requiresGrad {
            let gt = teacher.gradBuffer()
            for r in 0..<n {
                for j in 0..<c {
                    let i = r * c + j, p = Foundation.exp(lt.data[i])
                    gt[i] += g * p * ((Foundation.log(p + epsilon) - ls.data[i]) - mean[r])
                }
            }
        }
    }
    return out
}

/// Mean squared error over all elements.
public func mseLoss(_ a: Tensor, _ b: Tensor) -> Tensor {
    precondition(a.shape == b.shape, "mseLoss: shapes \(a.shape) and \(b.shape) differ")
    let n = a.count
    var s = 0.0
    for i in 0..<n { let d = Double(a.data[i] - b.data[i]); s += d * d }
    let out = Tensor(scalar: Float(s / Double(max(n, 1))))
    out.record(inputs: [a, b]) { out in
        let g = out.grad!.data[0] * 2 / Float(max(n, 1))
        if a.requiresGrad { let ga = a.gradBuffer(); for i in 0..<n { ga[i] += g * (a.data[i] - b.data[i]) } }
        if b.requiresGrad { let gb = b.gradBuffer(); for i in 0..<n { gb[i] -= g * (a.data[i] - b.data[i]) } }
    }
    return out
}
