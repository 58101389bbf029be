// Reductions: sum and mean over all elements or over axes; argmax.
// A tensor is viewed around a reduced axis as [outer, n, inner]; y[o, i] = Σ_k x[o, k, i].

extension Tensor {
    /// Sum of all elements (a 0-d tensor). Accumulates in Double.
    public func sum() -> Tensor {
        let n = count, x = data
        var s = 0.0
        for i in 0..<n { s += Double(x[i]) }
        let out = Tensor(scalar: Float(s))
        out.record(inputs: [self]) { out in
            let g = out.grad!.data[0], gx = self.gradBuffer()
            for i in 0..<n { gx[i] += g }
        }
        return out
    }

    /// Mean of all elements (a 0-d tensor).
    public func mean() -> Tensor { sum() * (1 / Float(max(count, 1))) }

    /// Sum over one axis.
    public func sum(axis: Int, keepDims: Bool = false) -> Tensor {
        let ax = normalizeAxis(axis, rank: rank, "sum")
        let (outer, n, inner) = splitAround(shape, axis: ax)
        var outShape = shape
        if keepDims { outShape[ax] = 1 } else { outShape.remove(at: ax) }
        let out = Tensor(zeros: outShape)
        let x = data, y = out.data
        for o in 0..<outer {
            let yo = y + o * inner
            for k in 0..<n {
                let xk = x + (o * n + k) * inner
                for i in 0..<inner { yo[i] += xk[i] }
            }
        }
        out.record(inputs: [self]) { out in
            let g = out.grad!.data, gx = self.gradBuffer()
            for o in 0..<outer {
                let go = g + o * inner
                for k in 0..<n {
                    let gk = gx + (o * n + k) * inner
                    for i in 0..<inner { gk[i] += go[i] }
                }
            }
        }
        return out
    }

    /// Sum over several axes.
    public func sum(axes: [Int], keepDims: Bool = false) -> Tensor {
        let sorted = Set(axes.map { normalizeAxis($0, rank: rank, "sum") }).sorted(by: >)
        var t = self
        for a in sorted { t = t.sum(axis: a, keepDims: keepDims) }
        return t
    }

    /// Mean over one axis.
    public func mean(axis: Int, keepDims: Bool = false) -> Tensor {
        let ax = normalizeAxis(axis, rank: rank, "mean")
        return sum(axis: ax, keepDims: keepDims) * (1 / Float(max(shape[ax], 1)))
    }

    /// Mean over several axes.
    public func mean(axes: [Int], keepDims: Bool = false) -> Tensor {
        let set = Set(axes.map { normalizeAxis($0, rank: rank, "mean") })
        let n = set.reduce(1) { $0 * shape[$1] }
        return sum(axes: Array(set), keepDims: keepDims) * (1 / Float(max(n, 1)))
    }

    /// Index of the largest value along the last axis, for each row (not differentiable).
    public func argmaxLastAxis() -> [Int] {
        precondition(rank >= 1, "argmaxLastAxis: needs at least one dimension")
        let c = shape[rank - 1], rows = c == 0 ? 0 : count / c
        var result = [Int](repeating: 0, count: rows)
        for r in 0..<rows {
            let row = data + r * c
            var best = 0
            for j in 1..<max(c, 1) where row[j] > row[best] { best = j }
            result[r] = best
        }
        return result
    }
}
