// Batch normalisation over the last (channel) axis of channels-last tensors, optionally fused with ReLU.
// Legend: x viewed as [M × C] (M = N·H·W), μ/σ² per channel (biased σ² to normalise, unbiased for the
// running estimate, as PyTorch), x̂ = (x − μ)·istd with istd = 1/√(σ² + ε), y = γ·x̂ + β.
// Backward (training): dx = istd/M · (M·dx̂ − Σdx̂ − x̂·Σ(dx̂·x̂)), dx̂ = dy·γ; dγ = Σ dy·x̂, dβ = Σ dy.
// Backward (eval): dx = dy·γ·istd_running.
import Foundation

/// Batch norm of `x` (channels last) with affine `weight`/`bias` [C]. In training mode, normalises with the
/// batch statistics and updates `runningMean`/`runningVar` in place with `momentum`; in eval mode, uses them.
/// With `fuseReLU`, returns max(0, BN(x)) in the same pass.
public func batchNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, runningMean: Tensor, runningVar: Tensor,
                      training: Bool, momentum: Float = 0.1, eps: Float = 1e-5, fuseReLU: Bool = false) -> Tensor {
    let C = x.shape.last ?? 0
    precondition(x.rank >= 2, "batchNorm: input \(x.shape) needs a channel axis last")
    precondition(runningMean.count == C && runningVar.count == C, "batchNorm: running statistics must have \(C) entries")
    if let w = weight { precondition(w.count == C, "batchNorm: weight has \(w.count) entries, expected \(C)") }
    if let b = bias { precondition(b.count == C, "batchNorm: bias has \(b.count) entries, expected \(C)") }
    let M = C == 0 ? 0 : x.count / C
    precondition(!training || M > 1, "batchNorm: training needs more than one value per channel, got input \(x.shape)")
    let xp = x.data
    let mean = Tensor(zeros: [C]), istd = Tensor(zeros: [C])
    let mu = mean.data, inv = istd.data
    if training {
        // Two passes in Double per channel: the mean, then the centred second moment.
        var s = [Double](repeating: 0, count: C), q = [Double](repeating: 0, count: C)
        s.withUnsafeMutableBufferPointer { s in
            q.withUnsafeMutableBufferPointer { q in
                columnSums(xp, rows: M, cols: C, into: s.baseAddress!)
                for c in 0..<C { mu[c] = Float(s[c] / Double(M)) }
                centredSquareSums(xp, mu, rows: M, cols: C, into: q.baseAddress!)
                let rm = runningMean.data, rv = runningVar.data
                for c in 0..<C {
                    let v = q[c] / Double(M)
                    inv[c] = Float(1 / (v + Double(eps)).squareRoot())
                    rm[c] = (1 - momentum) * rm[c] + momentum * mu[c]
                    rv[c] = (1 - momentum) * rv[c] + momentum * Float(q[c] / Double(M - 1))
                }
            }
        }
    } else {
        for c in 0..<C {
            mu[c] = runningMean.data[c]
            inv[c] = 1 / (runningVar.data[c] + eps).squareRoot()
        }
    }
    // y = x·a + b per channel, a = γ·istd, b = β − μ·a.
    var a = [Float](repeating: 0, count: C), b = [Float](repeating: 0, count: C)
    for c in 0..<C {
        a[c] = (weight?.data[c] ?? 1) * inv[c]
        b[c] = (bias?.data[c] ?? 0) - mu[c] * a[c]
    }
    let out = Tensor(zeros: x.shape)
    let y = out.data
    a.withUnsafeBufferPointer { a in
        b.withUnsafeBufferPointer { b in
            let a = a.baseAddress!, b = b.baseAddress!
            parallelRanges(M, minPerWorker: 4096) { _, r in
                for m in r {
                    let xr = xp + m * C, yr = y + m * C
                    if fuseReLU {
                        for c in 0..<C { yr[c] = max(0, xr[c] * a[c] + b[c]) }
                    } else {
                        for c in 0..<C { yr[c] = xr[c] * a[c] + b[c] }
                    }
                }
            }
        }
    }
    var inputs = [x]
    if let w = weight { inputs.append(w) }
    if let b = bias { inputs.append(b) }
    out.record(inputs: inputs) { out in
        let mu = mean.data, inv = istd.data  // re-read from the captured tensors, which own the memory
        let dyRaw = out.grad!.data
        // With fused ReLU, the upstream gradient passes only where the output is positive.
        let dy: UnsafeMutablePointer<Float>
        let masked: Tensor?
        if fuseReLU {
            let t = Tensor(zeros: x.shape)
            let yv = out.data
            for i in 0..<x.count { t.data[i] = yv[i] > 0 ? dyRaw[i] : 0 }
            dy = t.data; masked = t
        } else { dy = dyRaw; masked = nil }
        withExtendedLifetime(masked) {
            // Σ dy and Σ dy·x̂ per channel.
            var sdy = [Double](repeating: 0, count: C), sdyx = [Double](repeating: 0, count: C)
            for m in 0..<M {
                let xr = xp + m * C, dr = dy + m * C
                for c in 0..<C {
                    let d = Double(dr[c])
                    sdy[c] += d
                    sdyx[c] += d * Double((xr[c] - mu[c]) * inv[c])
                }
            }
            if let w = weight, w.requiresGrad {
                let gw = w.gradBuffer()
                for c in 0..<C { gw[c] += Float(sdyx[c]) }
            }
            if let b = bias, b.requiresGrad {
                let gb = b.gradBuffer()
                for c in 0..<C { gb[c] += Float(sdy[c]) }
            }
            guard x.requiresGrad else { return }
            let gx = x.gradBuffer()
            if training {
                // dx = γ·istd · (dy − mean(dy) − x̂·mean(dy·x̂))
                var k = [Float](repeating: 0, count: C), m1 = [Float](repeating: 0, count: C)
                var m2 = [Float](repeating: 0, count: C)
                for c in 0..<C {
                    k[c] = (weight?.data[c] ?? 1) * inv[c]
                    m1[c] = Float(sdy[c] / Double(M))
                    m2[c] = Float(sdyx[c] / Double(M))
                }
                k.withUnsafeBufferPointer { k in m1.withUnsafeBufferPointer { m1 in m2.withUnsafeBufferPointer { m2 in
                    let k = k.baseAddress!, m1 = m1.baseAddress!, m2 = m2.baseAddress!
                    parallelRanges(M, minPerWorker: 4096) { _, r in
                        for m in r {
                            let xr = xp + m * C, dr = dy + m * C, gr = gx + m * C
                            for c in 0..<C {
                                let xh = (xr[c] - mu[c]) * inv[c]
                                gr[c] += k[c] * (dr[c] - m1[c] - xh * m2[c])
                            }
                        }
                    }
                }}}
            } else {
                for m in 0..<M {
                    let dr = dy + m * C, gr = gx + m * C
                    for c in 0..<C { gr[c] += dr[c] * (weight?.data[c] ?? 1) * inv[c] }
                }
            }
        }
    }
    return out
}

/// s[c] += Σ_m x[m, c] (Double accumulation, blocked so the inner loop vectorises over channels).
func columnSums(_ x: UnsafePointer<Float>, rows: Int, cols: Int, into s: UnsafeMutablePointer<Double>) {
    let block = 64
    var tmp = [Float](repeating: 0, count: cols)
    tmp.withUnsafeMutableBufferPointer { t in
        let t = t.baseAddress!
        var m = 0
        while m < rows {
            let end = min(rows, m + block)
            for c in 0..<cols { t[c] = 0 }
            for r in m..<end {
                let xr = x + r * cols
                for c in 0..<cols { t[c] += xr[c] }
            }
            for c in 0..<cols { s[c] += Double(t[c]) }
            m = end
        }
    }
}

/// q[c] += Σ_m (x[m, c] − μ[c])².
func centredSquareSums(_ x: UnsafePointer<Float>, _ mu: UnsafePointer<Float>, rows: Int, cols: Int,
                       into q: UnsafeMutablePointer<Double>) {
    let block = 64
    var tmp = [Float](repeating: 0, count: cols)
    tmp.withUnsafeMutableBufferPointer { t in
        let t = t.baseAddress!
        var m = 0
        while m < rows {
            let end = min(rows, m + block)
            for c in 0..<cols { t[c] = 0 }
            for r in m..<end {
                let xr = x + r * cols
                for c in 0..<cols { let d = xr[c] - mu[c]; t[c] += d * d }
            }
            for c in 0..<cols { q[c] += Double(t[c]) }
            m = end
        }
    }
}
