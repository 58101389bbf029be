// Elementwise ops: arithmetic with broadcasting, scalar arithmetic, exp/log/sqrt/pow.
// Legend: a, b inputs; y output; g = dL/dy; ga, gb gradients accumulated into the inputs.
import Foundation

// MARK: - Broadcasting

/// NumPy broadcasting: align trailing dimensions; a dimension of 1 stretches.
public func broadcastShape(_ a: [Int], _ b: [Int]) -> [Int] {
    let r = max(a.count, b.count)
    var out = [Int](repeating: 1, count: r)
    for i in 0..<r {
        let da = i < r - a.count ? 1 : a[i - (r - a.count)]
        let db = i < r - b.count ? 1 : b[i - (r - b.count)]
        precondition(da == db || da == 1 || db == 1,
                     "broadcast: shapes \(a) and \(b) do not broadcast (dimension \(i): \(da) vs \(db)); reshape one so trailing dimensions match or are 1")
        out[i] = da == 1 ? db : da
    }
    return out
}

/// Element strides of `shape` read as if expanded to `out` (0 along broadcast dimensions).
func broadcastStrides(_ shape: [Int], to out: [Int]) -> [Int] {
    let r = out.count
    var strides = [Int](repeating: 0, count: r)
    var s = 1
    for i in stride(from: r - 1, through: 0, by: -1) {
        let j = i - (r - shape.count)
        if j >= 0 {
            strides[i] = shape[j] == 1 ? 0 : s
            s *= shape[j]
        }
    }
    return strides
}

/// Calls body(outIndex, aIndex, bIndex) for every element of `out`, innermost dimension fastest.
@inline(__always)
func forEachBroadcast(_ out: [Int], _ sa: [Int], _ sb: [Int], _ body: (Int, Int, Int) -> Void) {
    let total = elementCount(out)
    if total == 0 { return }
    let r = out.count
    if r == 0 { body(0, 0, 0); return }
    let inner = out[r - 1], ia1 = sa[r - 1], ib1 = sb[r - 1]
    var idx = [Int](repeating: 0, count: r)
    var oa = 0, ob = 0, o = 0
    while o < total {
        for k in 0..<inner { body(o + k, oa + k * ia1, ob + k * ib1) }
        o += inner
        // Advance the outer multi-index.
        var d = r - 2
        while d >= 0 {
            idx[d] += 1
            oa += sa[d]; ob += sb[d]
            if idx[d] < out[d] { break }
            oa -= sa[d] * out[d]; ob -= sb[d] * out[d]
            idx[d] = 0
            d -= 1
        }
    }
}

enum BinaryKind { case add, sub, mul, div }

func binary(_ a: Tensor, _ b: Tensor, _ kind: BinaryKind) -> Tensor {
    if a.shape == b.shape { return binarySameShape(a, b, kind) }
    let shape = broadcastShape(a.shape, b.shape)
    let sa = broadcastStrides(a.shape, to: shape), sb = broadcastStrides(b.shape, to: shape)
    let out = Tensor(uninitialized: shape)
    let pa = a.data, pb = b.data, y = out.data
    switch kind {
    case .add: forEachBroadcast(shape, sa, sb) { i, ia, ib in y[i] = pa[ia] + pb[ib] }
    case .sub: forEachBroadcast(shape, sa, sb) { i, ia, ib in y[i] = pa[ia] - pb[ib] }
    case .mul: forEachBroadcast(shape, sa, sb) { i, ia, ib in y[i] = pa[ia] * pb[ib] }
    case .div: forEachBroadcast(shape, sa, sb) { i, ia, ib in y[i] = pa[ia] / pb[ib] }
    }
    out.record(inputs: [a, b]) { out in
        let g = out.grad!.data
        if a.requiresGrad {
            let ga = a.gradBuffer()
            switch kind {
            case .add, .sub: forEachBroadcast(shape, sa, sb) { i, ia, _ in ga[ia] += g[i] }
            case .mul: forEachBroadcast(shape, sa, sb) { i, ia, ib in ga[ia] += g[i] * pb[ib] }
            case .div: forEachBroadcast(shape, sa, sb) { i, ia, ib in ga[ia] += g[i] / pb[ib] }
            }
        }
        if b.requiresGrad {
            let gb = b.gradBuffer()
            switch kind {
            case .add: forEachBroadcast(shape, sa, sb) { i, _, ib in gb[ib] += g[i] }
            case .sub: forEachBroadcast(shape, sa, sb) { i, _, ib in gb[ib] -= g[i] }
            case .mul: forEachBroadcast(shape, sa, sb) { i, ia, ib in gb[ib] += g[i] * pa[ia] }
            case .div: forEachBroadcast(shape, sa, sb) { i, ia, ib in gb[ib] -= g[i] * pa[ia] / (pb[ib] * pb[ib]) }
            }
        }
    }
    return out
}

func binarySameShape(_ a: Tensor, _ b: Tensor, _ kind: BinaryKind) -> Tensor {
    let n = a.count
    let out = Tensor(uninitialized: a.shape)
    let pa = a.data, pb = b.data, y = out.data
    switch kind {
    case .add: for i in 0..<n { y[i] = pa[i] + pb[i] }
    case .sub: for i in 0..<n { y[i] = pa[i] - pb[i] }
    case .mul: for i in 0..<n { y[i] = pa[i] * pb[i] }
    case .div: for i in 0..<n { y[i] = pa[i] / pb[i] }
    }
    out.record(inputs: [a, b]) { out in
        let g = out.grad!.data
        if a.requiresGrad {
            let ga = a.gradBuffer()
            switch kind {
            case .add, .sub: accumulate(ga, g, n)
            case .mul: for i in 0..<n { ga[i] += g[i] * pb[i] }
            case .div: for i in 0..<n { ga[i] += g[i] / pb[i] }
            }
        }
        if b.requiresGrad {
            let gb = b.gradBuffer()
            switch kind {
            case .add: accumulate(gb, g, n)
            case .sub: for i in 0..<n { gb[i] -= g[i] }
            case .mul: for i in 0..<n { gb[i] += g[i] * pa[i] }
            case .div: for i in 0..<n { gb[i] -= g[i] * pa[i] / (pb[i] * pb[i]) }
            }
        }
    }
    return out
}

public func + (a: Tensor, b: Tensor) -> Tensor { binary(a, b, .add) }
public func - (a: Tensor, b: Tensor) -> Tensor { binary(a, b, .sub) }
public func * (a: Tensor, b: Tensor) -> Tensor { binary(a, b, .mul) }
public func / (a: Tensor, b: Tensor) -> Tensor { binary(a, b, .div) }

// MARK: - Scalar arithmetic

extension Tensor {
    /// y = scale * x + shift.
    public func affine(scale: Float, shift: Float) -> Tensor {
        let n = count, x = data
        let out = Tensor(uninitialized: shape)
        let y = out.data
        for i in 0..<n { y[i] = scale * x[i] + shift }
        out.record(inputs: [self]) { out in
            let g = out.grad!.data, gx = self.gradBuffer()
            for i in 0..<n { gx[i] += scale * g[i] }
        }
        return out
    }
}

public func + (a: Tensor, s: Float) -> Tensor { a.affine(scale: 1, shift: s) }
public func + (s: Float, a: Tensor) -> Tensor { a.affine(scale: 1, shift: s) }
public func - (a: Tensor, s: Float) -> Tensor { a.affine(scale: 1, shift: -s) }
public func - (s: Float, a: Tensor) -> Tensor { a.affine(scale: -1, shift: s) }
public func * (a: Tensor, s: Float) -> Tensor { a.affine(scale: s, shift: 0) }
public func * (s: Float, a: Tensor) -> Tensor { a.affine(scale: s, shift: 0) }
public func / (a: Tensor, s: Float) -> Tensor { a.affine(scale: 1 / s, shift: 0) }
public prefix func - (a: Tensor) -> Tensor { a.affine(scale: -1, shift: 0) }

// MARK: - Pointwise functions

extension Tensor {
    /// Applies `f` elementwise; `df(x, y)` is the derivative given the input and output values.
    @inline(__always)
    func pointwise(_ f: (Float) -> Float, _ df: @escaping (Float, Float) -> Float) -> Tensor {
        let n = count, x = data
        let out = Tensor(uninitialized: shape)
        let y = out.data
        for i in 0..<n { y[i] = f(x[i]) }
        out.record(inputs: [self]) { out in
            let g = out.grad!.data, gx = self.gradBuffer(), y = out.data
            for i in 0..<n { gx[i] += g[i] * df(x[i], y[i]) }
        }
        return out
    }

    /// e^x.
    public func exp() -> Tensor { pointwise({ Foundation.exp($0) }, { _, y in y }) }
    /// Natural logarithm.
    public func log() -> Tensor { pointwise({ Foundation.log($0) }, { x, _ in 1 / x }) }
    /// Square root.
    public func sqrt() -> Tensor { pointwise({ $0.squareRoot() }, { _, y in 0.5 / y }) }
    /// x^p for a constant exponent.
    public func pow(_ p: Float) -> Tensor {
        pointwise({ Foundation.pow($0, p) }, { x, _ in p * Foundation.pow(x, p - 1) })
    }
    /// Elementwise square.
    public func square() -> Tensor { pointwise({ $0 * $0 }, { x, _ in 2 * x }) }
}
