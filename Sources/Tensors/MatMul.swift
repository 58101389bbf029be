// Matrix products through OpenBLAS: matmul with optional transposes, and linear (x·Wᵀ + b).
// Legend: A [m×k] (or [k×m] when transposed), B [k×n] (or [n×k]), C [m×n]; row-major throughout.
import CBLAS

/// C = alpha·op(A)·op(B) + beta·C (row-major), rows of C split across kernel threads when large.
@inline(__always)
public func gemm(transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
                 a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                 beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int, parallel: Bool = true) {
    if m == 0 || n == 0 { return }
    if beta == 0 {
        // OpenBLAS applies beta ≠ 1 in a separate, slow pass over C; zeroing C ourselves and passing beta = 1
        // measured faster on the small products convolutions issue.
        if ldc == n { c.update(repeating: 0, count: m * n) } else { for r in 0..<m { (c + r * ldc).update(repeating: 0, count: n) } }
        gemm(transA: transA, transB: transB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda, b: b, ldb: ldb,
             beta: 1, c: c, ldc: ldc, parallel: parallel)
        return
    }
    let ta = transA ? CblasTrans : CblasNoTrans, tb = transB ? CblasTrans : CblasNoTrans
    let rowsPerWorker = 64
    if !parallel || Threads.count == 1 || m < 2 * rowsPerWorker || m * n * k < 1 << 20 {
        cblas_sgemm(CblasRowMajor, ta, tb, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb),
                    beta, c, Int32(ldc))
        return
    }
    parallelRanges(m, minPerWorker: rowsPerWorker) { _, r in
        // Row r of op(A) starts at a + r*lda (no transpose) or at column r (transpose).
        let aOff = transA ? r.lowerBound : r.lowerBound * lda
        cblas_sgemm(CblasRowMajor, ta, tb, Int32(r.count), Int32(n), Int32(k), alpha, a + aOff, Int32(lda),
                    b, Int32(ldb), beta, c + r.lowerBound * ldc, Int32(ldc))
    }
}

/// op(a)·op(b) for 2-D tensors; `transA` reads a as [k×m], `transB` reads b as [n×k].
public func matmul(_ a: Tensor, _ b: Tensor, transA: Bool = false, transB: Bool = false) -> Tensor {
    precondition(a.rank == 2 && b.rank == 2, "matmul: needs 2-D tensors, got \(a.shape) and \(b.shape)")
    let m = transA ? a.shape[1] : a.shape[0], k = transA ? a.shape[0] : a.shape[1]
    let kb = transB ? b.shape[1] : b.shape[0], n = transB ? b.shape[0] : b.shape[1]
    precondition(k == kb, "matmul: inner dimensions differ: \(a.shape)\(transA ? "ᵀ" : "") · \(b.shape)\(transB ? "ᵀ" : "")")
    let lda = a.shape[1], ldb = b.shape[1]
    let out = Tensor(uninitialized: [m, n])
    gemm(transA: transA, transB: transB, m: m, n: n, k: k, a: a.data, lda: lda, b: b.data, ldb: ldb,
         beta: 0, c: out.data, ldc: n)
    out.record(inputs: [a, b]) { out in
        let g = out.grad!.data
        if a.requiresGrad {
            let ga = a.gradBuffer()
            if !transA {  // dA[m×k] += dC·op(B)ᵀ
                gemm(transA: false, transB: !transB, m: m, n: k, k: n, a: g, lda: n, b: b.data, ldb: ldb,
                     beta: 1, c: ga, ldc: lda)
            } else {      // dA[k×m] += op(B)·dCᵀ
                gemm(transA: transB, transB: true, m: k, n: m, k: n, a: b.data, lda: ldb, b: g, ldb: n,
                     beta: 1, c: ga, ldc: lda)
            }
        }
        if b.requiresGrad {
            let gb = b.gradBuffer()
            if !transB {  // dB[k×n] += op(A)ᵀ·dC
                gemm(transA: !transA, transB: false, m: k, n: n, k: m, a: a.data, lda: lda, b: g, ldb: n,
                     beta: 1, c: gb, ldc: ldb)
            } else {      // dB[n×k] += dCᵀ·op(A)
                gemm(transA: true, transB: transA, m: n, n: k, k: m, a: g, lda: n, b: a.data, ldb: lda,
                     beta: 1, c: gb, ldc: ldb)
            }
        }
    }
    return out
}

/// y = x·Wᵀ + b for x [N, in], W [out, in], b [out] (PyTorch's nn.Linear).
public func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
    precondition(x.rank == 2 && weight.rank == 2 && x.shape[1] == weight.shape[1],
                 "linear: input \(x.shape) does not match weight \(weight.shape) (expected [N, \(weight.rank == 2 ? weight.shape[1] : -1)])")
    let nRows = x.shape[0], fin = x.shape[1], fout = weight.shape[0]
    if let b = bias { precondition(b.shape == [fout], "linear: bias shape \(b.shape), expected [\(fout)]") }
    let out = Tensor(uninitialized: [nRows, fout])
    let y = out.data
    if let b = bias {
        for r in 0..<nRows { (y + r * fout).update(from: b.data, count: fout) }
    }
    gemm(transA: false, transB: true, m: nRows, n: fout, k: fin, a: x.data, lda: fin, b: weight.data, ldb: fin,
         beta: bias == nil ? 0 : 1, c: y, ldc: fout)
    out.record(inputs: bias.map { [x, weight, $0] } ?? [x, weight]) { out in
        let g = out.grad!.data
        if x.requiresGrad {
            gemm(transA: false, transB: false, m: nRows, n: fin, k: fout, a: g, lda: fout, b: weight.data,
                 ldb: fin, beta: 1, c: x.gradBuffer(), ldc: fin)
        }
        if weight.requiresGrad {
            gemm(transA: true, transB: false, m: fout, n: fin, k: nRows, a: g, lda: fout, b: x.data, ldb: fin,
                 beta: 1, c: weight.gradBuffer(), ldc: fin)
        }
        if let b = bias, b.requiresGrad {
            let gb = b.gradBuffer()
            for r in 0..<nRows { accumulate(gb, g + r * fout, fout) }
        }
    }
    return out
}

/// y[b] = A[b]·x[b] for A [B, M, K] and x [B, K]: a matrix-vector product per batch row ([B, M]), one sgemv
/// each, without the [B, M, K] temporaries of the elementwise form (`batchedMatVecReference`). Backward:
/// dx[b] += A[b]ᵀ·dy[b] (sgemv), dA[b] += dy[b]⊗x[b] (sger).
public func batchedMatVec(_ a: Tensor, _ x: Tensor) -> Tensor {
    precondition(a.rank == 3 && x.rank == 2 && a.shape[0] == x.shape[0] && a.shape[2] == x.shape[1],
                 "batchedMatVec: needs A [B, M, K] and x [B, K], got \(a.shape) and \(x.shape)")
    let (nb, m, k) = (a.shape[0], a.shape[1], a.shape[2])
    let out = Tensor(uninitialized: [nb, m])
    let ap = a.data, xp = x.data, yp = out.data
    parallelRanges(nb, minPerWorker: 16) { _, r in
        for b in r {
            cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(m), Int32(k), 1, ap + b * m * k, Int32(k), xp + b * k, 1, 0, yp + b * m, 1)
        }
    }
    out.record(inputs: [a, x]) { out in
        let g = out.grad!.data
        if x.requiresGrad {
            let gx = x.gradBuffer()
            parallelRanges(nb, minPerWorker: 16) { _, r in
                for b in r {
                    cblas_sgemv(CblasRowMajor, CblasTrans, Int32(m), Int32(k), 1, ap + b * m * k, Int32(k), g + b * m, 1, 1, gx + b * k, 1)
                }
            }
        }
        if a.requiresGrad {
            let ga = a.gradBuffer()
            parallelRanges(nb, minPerWorker: 16) { _, r in
                for b in r { cblas_sger(CblasRowMajor, Int32(m), Int32(k), 1, g + b * m, 1, xp + b * k, 1, ga + b * m * k, Int32(k)) }
            }
        }
    }
    return out
}

/// `batchedMatVec` written with elementwise ops: the reference the fast one is tested against.
public func batchedMatVecReference(_ a: Tensor, _ x: Tensor) -> Tensor {
    (a * x.reshaped([x.shape[0], 1, x.shape[1]])).sum(axis: 2)
}

/// y[b, j] = ⟨table[rows[b·K + j]], x[b]⟩ for a constant table [T, D], K = rows.count / B row indices per batch
/// row and x [B, D]: the scores of a memory bank's rows without gathering them into a [B, K, D] tensor (CRD reads
/// 16,385 rows per sample). Backward (x only; the table is a buffer): dx[b] += Σ_j dy[b, j]·table[rows[b·K + j]].
public func indexedMatVec(table: Tensor, rows: [Int], _ x: Tensor) -> Tensor {
    precondition(table.rank == 2 && x.rank == 2 && table.shape[1] == x.shape[1] && x.shape[0] > 0 && rows.count % x.shape[0] == 0,
                 "indexedMatVec: needs table [T, D], x [B, D] and B·K row indices, got \(table.shape), \(x.shape), \(rows.count)")
    let nb = x.shape[0], d = x.shape[1], k = rows.count / nb, t = table.shape[0]
    precondition(rows.allSatisfy { $0 >= 0 && $0 < t }, "indexedMatVec: a row index is outside the table's \(t) rows")
    let out = Tensor(uninitialized: [nb, k])
    let tp = table.data, xp = x.data, yp = out.data
    rows.withUnsafeBufferPointer { idx in
        let ip = idx.baseAddress!
        parallelRanges(nb, minPerWorker: 4) { _, r in
            for b in r {
                let xb = xp + b * d, yb = yp + b * k, ib = ip + b * k
                for j in 0..<k { yb[j] = cblas_sdot(Int32(d), tp + ib[j] * d, 1, xb, 1) }
            }
        }
    }
    out.record(inputs: [x]) { out in
        guard x.requiresGrad else { return }
        let g = out.grad!.data, gx = x.gradBuffer()
        rows.withUnsafeBufferPointer { idx in
            let ip = idx.baseAddress!
            parallelRanges(nb, minPerWorker: 4) { _, r in
                for b in r {
                    let gb = g + b * k, ib = ip + b * k, gxb = gx + b * d
                    for j in 0..<k { cblas_saxpy(Int32(d), gb[j], tp + ib[j] * d, 1, gxb, 1) }
                }
            }
        }
    }
    return out
}

/// `indexedMatVec` written with a gather and `batchedMatVecReference`: the reference the fast one is tested against.
public func indexedMatVecReference(table: Tensor, rows: [Int], _ x: Tensor) -> Tensor {
    let nb = x.shape[0], d = x.shape[1], k = rows.count / nb
    let gathered = Tensor(uninitialized: [nb, k, d])
    for (r, i) in rows.enumerated() { (gathered.data + r * d).update(from: table.data + i * d, count: d) }
    return batchedMatVecReference(gathered, x)
}
