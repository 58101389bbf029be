// Batch normalisation over the last (channel) axis of channels-last tensors, optionally fused with ReLU.
// Legend: x viewed as [M × C] (M = N·H·W), μ/σ² per channel (biased σ² to normalise, unbiased for the
// running estimate, as PyTorch), x̂ = (x − μ)·istd with istd = 1/√(σ² + ε), y = γ·x̂ + β.
// Backward (training): dx = istd/M · (M·dx̂ − Σdx̂ − x̂·Σ(dx̂·x̂)), dx̂ = dy·γ; dγ = Σ dy·x̂, dβ = Σ dy.
// Backward (eval): dx = dy·γ·istd_running.
// Synchronised (data-parallel replicas, `BatchStatistics.allReduce` set): every Σ above runs over the whole batch,
// each replica's partial sums added across replicas (M too), as PyTorch's SyncBatchNorm; dγ and dβ stay the local
// sums (the gradient mean across replicas completes them).
import Foundation

/// The data-parallel context of training-mode batch norm: when a model's batch is split over replicas, the
/// trainer sets `allReduce` to sum a vector of Doubles across them, and batch norm then normalises with the
/// whole batch's statistics (forward and backward; its backward is pinned on the tape, so every replica runs it).
/// nil (the default): each process's batch is the whole batch.
public enum BatchStatistics {
    public nonisolated(unsafe) static var allReduce: ((inout [Double]) -> Void)?
}

/// Batch norm of `x` (channels last) with affine `weight`/`bias` [C]. In training mode, normalises with the
/// batch statistics and updates `runningMean`/`runningVar` in place with `momentum`; in eval mode, uses them.
/// With `residual` (x's shape), returns BN(x) + residual; with `fuseReLU`, max(0, ·) of that, all in the same pass:
/// the values and gradients of `addRelu(BN(x), residual)` (or `residual + BN(x)`) without keeping BN(x), which
/// nothing's backward needs.
public func batchNorm(_ x: Tensor, weight: Tensor?, bias: Tensor?, runningMean: Tensor, runningVar: Tensor,
                      training: Bool, momentum: Float = 0.1, eps: Float = 1e-5, fuseReLU: Bool = false,
                      residual: Tensor? = nil) -> Tensor {
    Profiler.measure(.batchNorm) {
        let C = x.shape.last ?? 0
        precondition(x.rank >= 2, "batchNorm: input \(x.shape) needs a channel axis last")
        precondition(runningMean.count == C && runningVar.count == C, "batchNorm: running statistics must have \(C) entries")
        if let w = weight { precondition(w.count == C, "batchNorm: weight has \(w.count) entries, expected \(C)") }
        if let b = bias { precondition(b.count == C, "batchNorm: bias has \(b.count) entries, expected \(C)") }
        if let r = residual { precondition(r.shape == x.shape, "batchNorm: residual \(r.shape), expected \(x.shape)") }
        let M = C == 0 ? 0 : x.count / C
        let sync = training ? BatchStatistics.allReduce : nil
        precondition(!training || M > 1 || sync != nil, "batchNorm: training needs more than one value per channel, got input \(x.shape)")
        var total = Double(M)  // values per channel over the whole batch (every replica's, when synchronised)
        let xp = x.data
        let mean = Tensor(zeros: [C]), istd = Tensor(zeros: [C])
        let mu = mean.data, inv = istd.data
        if training {
            // Two passes per channel: the mean, then the centred second moment (float within 64-row blocks,
            // Double across blocks; fixed blocks, so the result does not depend on the thread count).
            var s = rowBlockReduce(rows: M, width: C) { r, acc in
                blockedRowSums(r, width: C, into: acc) { row, t in
                    let xr = xp + row * C
                    for c in 0..<C { t[c] += xr[c] }
                }
            }
            if let sync {
                s.append(Double(M))
                sync(&s)
                total = s.removeLast()
                precondition(total > 1, "batchNorm: training needs more than one value per channel over the replicas' batch")
            }
            for c in 0..<C { mu[c] = Float(s[c] / total) }
            var q = rowBlockReduce(rows: M, width: C) { r, acc in
                blockedRowSums(r, width: C, into: acc) { row, t in
                    let xr = xp + row * C
                    for c in 0..<C { let d = xr[c] - mu[c]; t[c] += d * d }
                }
            }
            sync?(&q)
            let rm = runningMean.data, rv = runningVar.data
            for c in 0..<C {
                let v = q[c] / total
                inv[c] = Float(1 / (v + Double(eps)).squareRoot())
                rm[c] = (1 - momentum) * rm[c] + momentum * mu[c]
                rv[c] = (1 - momentum) * rv[c] + momentum * Float(q[c] / (total - 1))
            }
        } else {
            runningInverseStd(runningMean: runningMean, runningVar: runningVar, eps: eps, mean: mu, istd: inv)
        }
        let (a, b) = batchNormAffine(weight: weight, bias: bias, mean: mu, istd: inv, C)
        let out = Tensor(uninitialized: x.shape)
        let y = out.data, rp = residual.map { UnsafePointer($0.data) }
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                let a = a.baseAddress!, b = b.baseAddress!
                parallelRanges(M, minPerWorker: 4096) { _, r in
                    for m in r { bnRowForward(xp + m * C, a, b, rp.map { $0 + m * C }, y + m * C, C, relu: fuseReLU) }
                }
            }
        }
        var inputs = [x]
        if let w = weight { inputs.append(w) }
        if let b = bias { inputs.append(b) }
        if let r = residual { inputs.append(r) }
        let backward = { (out: Tensor) in Profiler.measure(.batchNorm) {
            let mu = mean.data, inv = istd.data  // re-read from the captured tensors, which own the memory
            let dy = out.grad!.data
            // With fused ReLU the upstream gradient passes only where the output is positive.
            let mask: UnsafeMutablePointer<Float>? = fuseReLU ? out.data : nil
            // The residual's gradient is the (masked) upstream gradient, as addRelu's or a sum's.
            if let r = residual, r.requiresGrad {
                let gr = r.gradBuffer(), n = out.count
                elementwiseParallel(n) { s in
                    if let mask { vMaskedAccumulate(gr + s.lowerBound, dy + s.lowerBound, mask: mask + s.lowerBound, s.count) }
                    else { vAccumulate(gr + s.lowerBound, dy + s.lowerBound, s.count) }
                }
            }
            // Σ dy and Σ dy·(x − μ) per channel (then ·istd), in float blocks of 64 rows added into Double totals.
            var sums = rowBlockReduce(rows: M, width: 2 * C) { r, acc in
                blockedRowSums(r, width: 2 * C, into: acc) { row, t in
                    bnRowStats(xp + row * C, dy + row * C, mask.map { $0 + row * C }, mu, t, t + C, C)
                }
            }
            // dγ and dβ from this batch's rows; dx from the whole batch's sums when synchronised.
            if let w = weight, w.requiresGrad {
                let gw = w.gradBuffer()
                for c in 0..<C { gw[c] += Float(sums[C + c] * Double(inv[c])) }
            }
            if let b = bias, b.requiresGrad {
                let gb = b.gradBuffer()
                for c in 0..<C { gb[c] += Float(sums[c]) }
            }
            sync?(&sums)
            let sdy = Array(sums[0..<C]), sdyx = (0..<C).map { sums[C + $0] * Double(inv[$0]) }
            var k = [Float](repeating: 0, count: 3 * C)
            guard x.requiresGrad else { return }
            let gx = x.gradBuffer()
            // training: dx = γ·istd·(dy − mean(dy) − x̂·mean(dy·x̂));  eval: dx = γ·istd·dy
            // written as dx = a·dy + b·(x − μ) + c per channel.
            for c in 0..<C {
                let scale = (weight?.data[c] ?? 1) * inv[c]
                if training {
                    let m1 = Float(sdy[c] / total), m2 = Float(sdyx[c] / total)
                    k[c] = scale
                    k[C + c] = -scale * m2 * inv[c]
                    k[2 * C + c] = -scale * m1
                } else {
                    k[c] = scale; k[C + c] = 0; k[2 * C + c] = 0
                }
            }
            k.withUnsafeBufferPointer { kb in
                let ka = kb.baseAddress!, kx = ka + C, kc = kx + C
                parallelRanges(M, minPerWorker: 4096) { _, r in
                    for m in r { bnRowBackward(xp + m * C, dy + m * C, mask.map { $0 + m * C }, mu, ka, kx, kc, gx + m * C, C) }
                }
            }
        } }
        // Synchronised, the backward is a collective: pinned, so every replica runs it, reached or not.
        if sync != nil { out.recordPinned(inputs: inputs, backward: backward) } else { out.record(inputs: inputs, backward: backward) }
        return out

    }
}

/// μ and istd = 1/√(σ² + ε) from the running statistics (evaluation mode).
func runningInverseStd(runningMean: Tensor, runningVar: Tensor, eps: Float, mean mu: UnsafeMutablePointer<Float>,
                       istd inv: UnsafeMutablePointer<Float>) {
    for c in 0..<runningMean.count {
        mu[c] = runningMean.data[c]
        inv[c] = 1 / (runningVar.data[c] + eps).squareRoot()
    }
}

/// Batch norm as y = x·a + b per channel: a = γ·istd, b = β − μ·a.
func batchNormAffine(weight: Tensor?, bias: Tensor?, mean mu: UnsafePointer<Float>, istd inv: UnsafePointer<Float>,
                     _ C: Int) -> ([Float], [Float]) {
    var a = [Float](repeating: 0, count: C), b = [Float](repeating: 0, count: C)
    for c in 0..<C {
        a[c] = (weight?.data[c] ?? 1) * inv[c]
        b[c] = (bias?.data[c] ?? 0) - mu[c] * a[c]
    }
    return (a, b)
}

/// Evaluation-mode batch norm's per-channel map y = x·scale + shift, exactly as `batchNorm` computes it (for a
/// convolution to apply as it writes its output: `conv2dFused`).
public func batchNormEvalAffine(weight: Tensor?, bias: Tensor?, runningMean: Tensor, runningVar: Tensor,
                                eps: Float = 1e-5) -> (scale: Tensor, shift: Tensor) {
    let C = runningMean.count
    precondition(runningVar.count == C, "batchNormEvalAffine: running statistics of \(C) and \(runningVar.count) entries")
    let mean = Tensor(zeros: [C]), istd = Tensor(zeros: [C])
    runningInverseStd(runningMean: runningMean, runningVar: runningVar, eps: eps, mean: mean.data, istd: istd.data)
    let (a, b) = batchNormAffine(weight: weight, bias: bias, mean: mean.data, istd: istd.data, C)
    return (Tensor(shape: [C], values: a), Tensor(shape: [C], values: b))
}

/// Rows per block of `rowBlockReduce`.
let reduceBlockRows = 2048

/// Σ over row blocks of body(block, partial): each fixed block of rows fills its own zeroed `width`-Double
/// partial (blocks run across kernel threads); partials are added in block order, so the result is the same
/// for any number of threads.
func rowBlockReduce(rows: Int, width: Int, _ body: (Range<Int>, UnsafeMutablePointer<Double>) -> Void) -> [Double] {
    let blocks = (rows + reduceBlockRows - 1) / reduceBlockRows
    var partial = [Double](repeating: 0, count: max(blocks, 1) * width)
    partial.withUnsafeMutableBufferPointer { pb in
        let p = pb.baseAddress!
        parallelRanges(blocks) { _, range in
            for b in range {
                body((b * reduceBlockRows)..<min(rows, (b + 1) * reduceBlockRows), p + b * width)
            }
        }
    }
    var total = [Double](repeating: 0, count: width)
    for b in 0..<blocks { for i in 0..<width { total[i] += partial[b * width + i] } }
    return total
}

/// acc[i] += Σ over `rows` of the `width` floats `body(row, t)` adds into t: float sums within blocks of 64 rows
/// (so the inner loops vectorise), Double across blocks.
@inline(__always)
func blockedRowSums(_ rows: Range<Int>, width: Int, into acc: UnsafeMutablePointer<Double>,
                    _ body: (Int, UnsafeMutablePointer<Float>) -> Void) {
    var tmp = [Float](repeating: 0, count: width)
    tmp.withUnsafeMutableBufferPointer { tb in
        let t = tb.baseAddress!
        var m = rows.lowerBound
        while m < rows.upperBound {
            let end = min(rows.upperBound, m + 64)
            for i in 0..<width { t[i] = 0 }
            for r in m..<end { body(r, t) }
            for i in 0..<width { acc[i] += Double(t[i]) }
            m = end
        }
    }
}

// MARK: - Row kernels over the channel vector (SIMD over channels, scalar tail)

/// y = x·a + b per channel, then + r (when given), then max(0, ·) when `relu`; y may be x.
@inline(__always)
func bnRowForward(_ x: UnsafePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                  _ r: UnsafePointer<Float>?, _ y: UnsafeMutablePointer<Float>, _ C: Int, relu: Bool) {
    var c = 0
    while c + 8 <= C {
        var v = load8(x + c) * load8(a + c) + load8(b + c)
        if let r { v = v + load8(r + c) }
        store8(relu ? relu8(v) : v, y + c)
        c += 8
    }
    while c < C {
        var v = x[c] * a[c] + b[c]
        if let r { v = v + r[c] }
        y[c] = relu ? max(0, v) : v
        c += 1
    }
}

/// t1 += d, t2 += d·(x − μ), with d = dy masked by y > 0 when `mask` is given.
@inline(__always)
func bnRowStats(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ mask: UnsafePointer<Float>?,
                _ mu: UnsafePointer<Float>, _ t1: UnsafeMutablePointer<Float>, _ t2: UnsafeMutablePointer<Float>, _ C: Int) {
    var c = 0
    let zero = V8(repeating: 0)
    while c + 8 <= C {
        var d = load8(dy + c)
        if let m = mask { d.replace(with: zero, where: load8(m + c) .<= zero) }
        store8(load8(t1 + c) + d, t1 + c)
        store8(load8(t2 + c) + d * (load8(x + c) - load8(mu + c)), t2 + c)
        c += 8
    }
    while c < C {
        let d = mask.map { $0[c] > 0 ? dy[c] : 0 } ?? dy[c]
        t1[c] += d; t2[c] += d * (x[c] - mu[c])
        c += 1
    }
}

/// g += ka·d + kx·(x − μ) + kc, with d = dy masked by y > 0 when `mask` is given.
@inline(__always)
func bnRowBackward(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ mask: UnsafePointer<Float>?,
                   _ mu: UnsafePointer<Float>, _ ka: UnsafePointer<Float>, _ kx: UnsafePointer<Float>,
                   _ kc: UnsafePointer<Float>, _ g: UnsafeMutablePointer<Float>, _ C: Int) {
    var c = 0
    let zero = V8(repeating: 0)
    while c + 8 <= C {
        var d = load8(dy + c)
        if let m = mask { d.replace(with: zero, where: load8(m + c) .<= zero) }
        let v = load8(ka + c) * d + load8(kx + c) * (load8(x + c) - load8(mu + c)) + load8(kc + c)
        store8(load8(g + c) + v, g + c)
        c += 8
    }
    while c < C {
        let d = mask.map { $0[c] > 0 ? dy[c] : 0 } ?? dy[c]
        g[c] += ka[c] * d + kx[c] * (x[c] - mu[c]) + kc[c]
        c += 1
    }
}
