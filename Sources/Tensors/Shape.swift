// Shape ops: reshape (shares storage), permute/transpose, concat, split, slice.

extension Tensor {
    /// Same values under another shape; one dimension may be -1 (inferred). Shares storage.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var s = newShape
        if let j = s.firstIndex(of: -1) {
            let known = s.enumerated().filter { $0.offset != j }.reduce(1) { $0 * $1.element }
            precondition(known > 0 && count % known == 0, "reshape: cannot infer -1 in \(newShape) for \(count) elements")
            s[j] = count / known
        }
        precondition(elementCount(s) == count, "reshape: shape \(newShape) holds \(elementCount(s)) elements, tensor \(shape) has \(count)")
        let out = Tensor(shape: s, storage: storage)
        let n = count
        out.record(inputs: [self]) { out in accumulate(self.gradBuffer(), out.grad!.data, n) }
        return out
    }

    /// Flattens every dimension after the first: [N, ...] -> [N, rest].
    public func flattened() -> Tensor { reshaped([shape.first ?? 1, -1]) }

    /// Reorders dimensions: output dimension i is input dimension `order[i]`.
    public func permuted(_ order: [Int]) -> Tensor {
        precondition(order.count == rank && Set(order) == Set(0..<rank),
                     "permute: \(order) is not a permutation of 0..<\(rank)")
        let outShape = order.map { shape[$0] }
        var inStrides = [Int](repeating: 1, count: rank)
        for i in stride(from: rank - 2, through: 0, by: -1) { inStrides[i] = inStrides[i + 1] * shape[i + 1] }
        let srcStrides = order.map { inStrides[$0] }
        let zeros = [Int](repeating: 0, count: rank)
        let out = Tensor(uninitialized: outShape)
        let x = data, y = out.data
        // Walk the output in order; the "a" index of forEachBroadcast follows the permuted input strides.
        forEachBroadcast(outShape, srcStrides, zeros) { i, ia, _ in y[i] = x[ia] }
        out.record(inputs: [self]) { out in
            let g = out.grad!.data, gx = self.gradBuffer()
            forEachBroadcast(outShape, srcStrides, zeros) { i, ia, _ in gx[ia] += g[i] }
        }
        return out
    }

    /// Swaps two dimensions.
    public func transposed(_ a: Int = -2, _ b: Int = -1) -> Tensor {
        var order = Array(0..<rank)
        order.swapAt(normalizeAxis(a, rank: rank, "transpose"), normalizeAxis(b, rank: rank, "transpose"))
        return permuted(order)
    }

    /// Elements `range` along `axis`.
    public func slice(axis: Int, _ range: Range<Int>) -> Tensor {
        let ax = normalizeAxis(axis, rank: rank, "slice")
        precondition(range.lowerBound >= 0 && range.upperBound <= shape[ax],
                     "slice: range \(range) outside 0..<\(shape[ax]) on axis \(ax) of shape \(shape)")
        let (outer, n, inner) = splitAround(shape, axis: ax)
        var outShape = shape
        outShape[ax] = range.count
        let len = range.count * inner, off = range.lowerBound * inner
        let out = Tensor(uninitialized: outShape)
        let x = data, y = out.data
        copyRows(outer, len, from: x + off, stride: n * inner, to: y, stride: len, add: false)
        out.record(inputs: [self]) { out in
            copyRows(outer, len, from: out.grad!.data, stride: len, to: self.gradBuffer() + off, stride: n * inner, add: true)
        }
        return out
    }

    /// Splits `axis` into consecutive pieces of the given sizes.
    public func split(sizes: [Int], axis: Int) -> [Tensor] {
        let ax = normalizeAxis(axis, rank: rank, "split")
        precondition(sizes.reduce(0, +) == shape[ax], "split: sizes \(sizes) do not add up to \(shape[ax]) on axis \(ax)")
        var start = 0
        return sizes.map { s in
            defer { start += s }
            return slice(axis: ax, start..<(start + s))
        }
    }
}

/// Joins tensors along `axis`; all other dimensions must match.
public func concat(_ tensors: [Tensor], axis: Int) -> Tensor {
    precondition(!tensors.isEmpty, "concat: needs at least one tensor")
    let first = tensors[0]
    let ax = normalizeAxis(axis, rank: first.rank, "concat")
    for t in tensors {
        var a = t.shape, b = first.shape
        precondition(a.count == b.count, "concat: ranks differ (\(a) vs \(b))")
        a[ax] = 0; b[ax] = 0
        precondition(a == b, "concat: shapes \(t.shape) and \(first.shape) differ outside axis \(ax)")
    }
    var outShape = first.shape
    outShape[ax] = tensors.reduce(0) { $0 + $1.shape[ax] }
    let (outer, total, inner) = splitAround(outShape, axis: ax)
    let out = Tensor(uninitialized: outShape)
    let y = out.data
    var offset = 0
    var offsets: [Int] = []
    for t in tensors {
        offsets.append(offset)
        let len = t.shape[ax] * inner
        copyRows(outer, len, from: t.data, stride: len, to: y + offset, stride: total * inner, add: false)
        offset += len
    }
    out.record(inputs: tensors) { out in
        let g = out.grad!.data
        for (t, off) in zip(tensors, offsets) where t.requiresGrad {
            let len = t.shape[ax] * inner
            copyRows(outer, len, from: g + off, stride: total * inner, to: t.gradBuffer(), stride: len, add: true)
        }
    }
    return out
}

/// For `rows` rows of `len` floats: dst row r = (or, with `add`, +=) src row r, rows `srcStride` / `dstStride`
/// floats apart; rows split across kernel threads, one profiled elementwise pass (slice, split and concat on the
/// channel axis of channels-last maps move a few dozen channels per pixel: a per-row parallel dispatch would cost
/// more than the copy).
func copyRows(_ rows: Int, _ len: Int, from src: UnsafePointer<Float>, stride srcStride: Int,
              to dst: UnsafeMutablePointer<Float>, stride dstStride: Int, add: Bool) {
    guard rows > 0, len > 0 else { return }
    Profiler.measure(.elementwise) {
        parallelRanges(rows, minPerWorker: max(1, parallelElementThreshold / len)) { _, r in
            for o in r {
                if add { vAccumulate(dst + o * dstStride, src + o * srcStride, len) }
                else { (dst + o * dstStride).update(from: src + o * srcStride, count: len) }
            }
        }
    }
}

/// Stacks equal-shaped tensors along a new leading axis.
public func stack(_ tensors: [Tensor]) -> Tensor {
    concat(tensors.map { $0.reshaped([1] + $0.shape) }, axis: 0)
}

extension Tensor {
    /// ShuffleNet's channel shuffle on channels-last [N, H, W, C]: the channels, seen as `groups` rows of C/groups,
    /// are read column by column (PyTorch's view(N, g, C/g, H, W).transpose(1, 2) on NCHW):
    ///   y[…, i·g + j] = x[…, j·(C/g) + i]   for j < g, i < C/g.
    /// Backward scatters the same permutation in reverse.
    public func channelShuffled(groups g: Int) -> Tensor {
        precondition(rank == 4 && g >= 1 && shape[3] % g == 0,
                     "channelShuffle: needs [N, H, W, C] with C divisible by groups \(g), got \(shape)")
        let C = shape[3], per = C / g, pixels = count / C
        let out = Tensor(uninitialized: shape)
        let x = data, y = out.data
        Profiler.measure(.elementwise) {
            parallelRanges(pixels, minPerWorker: 256) { _, r in
                for p in r {
                    let xr = x + p * C, yr = y + p * C
                    shuffleRow(xr, into: yr, groups: g, per: per)
                }
            }
        }
        out.record(inputs: [self]) { out in
            let gy = out.grad!.data, gx = self.gradBuffer()
            Profiler.measure(.elementwise) {
                parallelRanges(pixels, minPerWorker: 256) { _, r in
                    for p in r {
                        let xr = gx + p * C, yr = gy + p * C
                        for j in 0..<g { for i in 0..<per { xr[j * per + i] += yr[i * g + j] } }
                    }
                }
            }
        }
        return out
    }
}

/// One pixel's channels shuffled in `groups` groups of `per`: dst[i·groups + j] = src[j·per + i], the permutation
/// of `channelShuffled` (also applied by a fused convolution's epilogue, ConvEpilogue).
@inline(__always)
func shuffleRow(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, groups: Int, per: Int) {
    for j in 0..<groups { for i in 0..<per { dst[i * groups + j] = src[j * per + i] } }
}

/// ShuffleNet V2's join in one pass: channelShuffled(concat([a[…, channels], b], axis: 3), groups: 2), reading
/// the channels of `a` in place (the half a unit passes through unchanged is never copied out):
///   y[…, 2i] = a[…, channels.lowerBound + i],   y[…, 2i + 1] = b[…, i]   for i < P, P = b's channels.
/// Backward adds y's even channels to a's and its odd ones to b's.
public func interleaveChannels(_ a: Tensor, channels: Range<Int>, _ b: Tensor) -> Tensor {
    precondition(a.rank == 4 && b.rank == 4 && Array(a.shape[0..<3]) == Array(b.shape[0..<3]),
                 "interleaveChannels: needs [N, H, W, C] maps of one size, got \(a.shape) and \(b.shape)")
    let P = b.shape[3], Ca = a.shape[3], first = channels.lowerBound
    precondition(channels.count == P && first >= 0 && channels.upperBound <= Ca,
                 "interleaveChannels: channels \(channels) of \(a.shape) do not pair with \(b.shape)")
    let pixels = b.count / P
    let out = Tensor(uninitialized: [a.shape[0], a.shape[1], a.shape[2], 2 * P])
    let xa = a.data, xb = b.data, y = out.data
    Profiler.measure(.elementwise) {
        parallelRanges(pixels, minPerWorker: 256) { _, r in
            for p in r {
                let ar = xa + p * Ca + first, br = xb + p * P, yr = y + p * 2 * P
                for i in 0..<P { yr[2 * i] = ar[i]; yr[2 * i + 1] = br[i] }
            }
        }
    }
    out.record(inputs: [a, b]) { out in
        let gy = out.grad!.data
        let ga = a.requiresGrad ? a.gradBuffer() : nil, gb = b.requiresGrad ? b.gradBuffer() : nil
        Profiler.measure(.elementwise) {
            parallelRanges(pixels, minPerWorker: 256) { _, r in
                for p in r {
                    let yr = gy + p * 2 * P
                    if let ga { let ar = ga + p * Ca + first; for i in 0..<P { ar[i] += yr[2 * i] } }
                    if let gb { let br = gb + p * P; for i in 0..<P { br[i] += yr[2 * i + 1] } }
                }
            }
        }
    }
    return out
}
