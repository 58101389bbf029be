// Activations and normalisers: ReLU, leaky ReLU, sigmoid, tanh, dropout, softmax, log-softmax, L2-normalise.
// softmax-like ops work along one axis, viewing the tensor as [outer, n, inner].
import Foundation

extension Tensor {
    /// max(0, x).
    public func relu() -> Tensor {
        let n = count, x = data
        let out = Tensor(uninitialized: shape)
        let y = out.data
        elementwiseParallel(n) { r in vRelu(x + r.lowerBound, nil, y + r.lowerBound, r.count) }
        out.record(inputs: [self]) { out in
            let gx = self.gradBuffer(), g = out.grad!.data
            elementwiseParallel(n) { r in
                vMaskedAccumulate(gx + r.lowerBound, g + r.lowerBound, mask: x + r.lowerBound, r.count)
            }
        }
        return out
    }

    /// x for x > 0, slope·x otherwise.
    public func leakyRelu(slope: Float = 0.01) -> Tensor {
        pointwise({ $0 > 0 ? $0 : slope * $0 }, { x, _ in x > 0 ? 1 : slope })
    }

    /// 1 / (1 + e^−x).
    public func sigmoid() -> Tensor { pointwise({ 1 / (1 + Foundation.exp(-$0)) }, { _, y in y * (1 - y) }) }

    /// Hyperbolic tangent.
    public func tanh() -> Tensor { pointwise({ Foundation.tanh($0) }, { _, y in 1 - y * y }) }

    /// Zeroes each element with probability p and scales the rest by 1/(1−p); identity when not training.
    public func dropout(p: Float, training: Bool, generator: inout Generator) -> Tensor {
        precondition(p >= 0 && p < 1, "dropout: p must be in [0, 1), got \(p)")
        guard training && p > 0 else { return self }
        let n = count
        let mask = Tensor(uninitialized: shape)
        let scale = 1 / (1 - p)
        for i in 0..<n { mask.data[i] = generator.uniform() < p ? 0 : scale }
        return self * mask
    }

    /// Softmax along `axis`.
    public func softmax(axis: Int = -1) -> Tensor {
        let ax = normalizeAxis(axis, rank: rank, "softmax")
        let (outer, n, inner) = splitAround(shape, axis: ax)
        let out = Tensor(uninitialized: shape)
        let x = data, y = out.data
        forEachLine(outer, n, inner) { base, stride in
            var m = -Float.infinity
            for k in 0..<n { m = max(m, x[base + k * stride]) }
            var s: Float = 0
            for k in 0..<n { let e = Foundation.exp(x[base + k * stride] - m); y[base + k * stride] = e; s += e }
            let inv = 1 / s
            for k in 0..<n { y[base + k * stride] *= inv }
        }
        out.record(inputs: [self]) { out in
            let g = out.grad!.data, gx = self.gradBuffer(), y = out.data
            forEachLine(outer, n, inner) { base, stride in
                var dot: Float = 0
                for k in 0..<n { dot += g[base + k * stride] * y[base + k * stride] }
                for k in 0..<n { let i = base + k * stride; gx[i] += y[i] * (g[i] - dot) }
            }
        }
        return out
    }

    /// log(softmax(x)) along `axis`, computed stably.
    public func logSoftmax(axis: Int = -1) -> Tensor {
        let ax = normalizeAxis(axis, rank: rank, "logSoftmax")
        let (outer, n, inner) = splitAround(shape, axis: ax)
        let out = Tensor(uninitialized: shape)
        let x = data, y = out.data
        forEachLine(outer, n, inner) { base, stride in
            var m = -Float.infinity
            for k in 0..<n { m = max(m, x[base + k * stride]) }
            var s: Float = 0
            for k in 0..<n { s += Foundation.exp(x[base + k * stride] - m) }
            let lse = m + Foundation.log(s)
            for k in 0..<n { y[base + k * stride] = x[base + k * stride] - lse }
        }
        out.record(inputs: [self]) { out in
            let g = out.grad!.data, gx = self.gradBuffer(), y = out.data
            forEachLine(outer, n, inner) { base, stride in
                var s: Float = 0
                for k in 0..<n { s += g[base + k * stride] }
                for k in 0..<n { let i = base + k * stride; gx[i] += g[i] - Foundation.exp(y[i]) * s }
            }
        }
        return out
    }

    /// x / max(‖x‖₂, eps) along `axis` (PyTorch's F.normalize).
    public func l2Normalized(axis: Int = -1, eps: Float = 1e-12) -> Tensor {
        let ax = normalizeAxis(axis, rank: rank, "l2Normalized")
        let (outer, n, inner) = splitAround(shape, axis: ax)
        let out = Tensor(zeros: shape)
        let norms = Tensor(zeros: [outer * inner])
        let x = data, y = out.data, nr = norms.data
        var line = 0
        forEachLine(outer, n, inner) { base, stride in
            var s: Float = 0
            for k in 0..<n { s += x[base + k * stride] * x[base + k * stride] }
            let norm = max(s.squareRoot(), eps)
            nr[line] = s.squareRoot(); line += 1
            for k in 0..<n { y[base + k * stride] = x[base + k * stride] / norm }
        }
        out.record(inputs: [self]) { out in
            let g = out.grad!.data, gx = self.gradBuffer(), y = out.data, nr = norms.data
            var line = 0
            forEachLine(outer, n, inner) { base, stride in
                let norm = nr[line]; line += 1
                if norm > eps {
                    // dx = (g − y·⟨g, y⟩) / ‖x‖
                    var dot: Float = 0
                    for k in 0..<n { dot += g[base + k * stride] * y[base + k * stride] }
                    for k in 0..<n { let i = base + k * stride; gx[i] += (g[i] - y[i] * dot) / norm }
                } else {
                    for k in 0..<n { let i = base + k * stride; gx[i] += g[i] / eps }
                }
            }
        }
        return out
    }
}

/// Calls body(firstIndex, stride) for each of the outer·inner lines of length n in an [outer, n, inner] view.
@inline(__always)
func forEachLine(_ outer: Int, _ n: Int, _ inner: Int, _ body: (Int, Int) -> Void) {
    for o in 0..<outer {
        for i in 0..<inner { body(o * n * inner + i, inner) }
    }
}

/// max(0, a + b) for equal shapes in one pass (the residual join of a ResNet block).
public func addRelu(_ a: Tensor, _ b: Tensor) -> Tensor {
    precondition(a.shape == b.shape, "addRelu: shapes \(a.shape) and \(b.shape) differ")
    let n = a.count, pa = a.data, pb = b.data
    let out = Tensor(uninitialized: a.shape)
    let y = out.data
    elementwiseParallel(n) { r in vRelu(pa + r.lowerBound, pb + r.lowerBound, y + r.lowerBound, r.count) }
    out.record(inputs: [a, b]) { out in
        let g = out.grad!.data, y = out.data
        for t in [a, b] where t.requiresGrad {
            let gt = t.gradBuffer()
            elementwiseParallel(n) { r in
                vMaskedAccumulate(gt + r.lowerBound, g + r.lowerBound, mask: y + r.lowerBound, r.count)
            }
        }
    }
    return out
}
