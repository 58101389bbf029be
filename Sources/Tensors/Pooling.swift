// Pooling on channels-last tensors [N, H, W, C] -> [N, OH, OW, C].
// Max pool keeps the index of each window's maximum for the backward scatter. Average pool counts padded
// zeros in the divisor (PyTorch's count_include_pad=True default).

struct PoolGeometry {
    let n, h, w, c, k, stride, padding, oh, ow: Int
    init(_ shape: [Int], kernel: Int, stride: Int, padding: Int, _ op: String) {
        precondition(shape.count == 4, "\(op): input must be [N, H, W, C], got \(shape)")
        precondition(kernel >= 1 && stride >= 1 && padding >= 0 && padding * 2 <= kernel,
                     "\(op): kernel \(kernel), stride \(stride), padding \(padding) invalid (padding at most half the kernel)")
        n = shape[0]; h = shape[1]; w = shape[2]; c = shape[3]
        k = kernel; self.stride = stride; self.padding = padding
        oh = (h + 2 * padding - kernel) / stride + 1
        ow = (w + 2 * padding - kernel) / stride + 1
        precondition(oh > 0 && ow > 0, "\(op): kernel \(kernel) does not fit input \(h)×\(w)")
    }
}

/// Max pooling with a square window.
public func maxPool2d(_ x: Tensor, kernel: Int, stride: Int? = nil, padding: Int = 0) -> Tensor {
    let g = PoolGeometry(x.shape, kernel: kernel, stride: stride ?? kernel, padding: padding, "maxPool2d")
    let out = Tensor(uninitialized: [g.n, g.oh, g.ow, g.c])
    let total = out.count
    let xp = x.data, y = out.data
    /// Calls body(o, i) for every output pixel o of image n and each input pixel i of its window, in window order.
    @inline(__always) func forEachWindow(_ n: Int, _ body: (Int, Int) -> Void) {
        for oy in 0..<g.oh {
            for ox in 0..<g.ow {
                let o = ((n * g.oh + oy) * g.ow + ox) * g.c
                for ky in 0..<g.k {
                    let iy = oy * g.stride - g.padding + ky
                    guard iy >= 0 && iy < g.h else { continue }
                    for kx in 0..<g.k {
                        let ix = ox * g.stride - g.padding + kx
                        guard ix >= 0 && ix < g.w else { continue }
                        body(o, ((n * g.h + iy) * g.w + ix) * g.c)
                    }
                }
            }
        }
    }
    guard GradMode.isEnabled && x.requiresGrad else {
        // No backward: the maximum only, 8 channels at a time, images split across kernel threads.
        Profiler.measure(.elementwise) {
            parallelRanges(g.n) { _, images in
                for n in images {
                    let start = n * g.oh * g.ow * g.c
                    (y + start).update(repeating: -.infinity, count: g.oh * g.ow * g.c)
                    forEachWindow(n) { o, i in
                        var c = 0
                        while c + 8 <= g.c { store8(pointwiseMax8(load8(y + o + c), load8(xp + i + c)), y + o + c); c += 8 }
                        while c < g.c { y[o + c] = max(y[o + c], xp[i + c]); c += 1 }
                    }
                }
            }
        }
        return out
    }
    let argmax = UnsafeMutablePointer<Int32>.allocate(capacity: max(total, 1))
    parallelRanges(g.n) { _, images in
        for n in images {
            let start = n * g.oh * g.ow * g.c
            (y + start).update(repeating: -.infinity, count: g.oh * g.ow * g.c)
            (argmax + start).update(repeating: -1, count: g.oh * g.ow * g.c)
            forEachWindow(n) { o, i in
                for c in 0..<g.c where xp[i + c] > y[o + c] || argmax[o + c] < 0 {
                    y[o + c] = xp[i + c]; argmax[o + c] = Int32(i + c)
                }
            }
        }
    }
    let keeper = IndexBuffer(argmax)
    out.record(inputs: [x]) { out in
        let gy = out.grad!.data, gx = x.gradBuffer(), idx = keeper.pointer
        // Each image's outputs point into that image only, so images split across threads write disjoint parts.
        let perImage = g.oh * g.ow * g.c
        parallelRanges(g.n) { _, images in
            for o in (images.lowerBound * perImage)..<(images.upperBound * perImage) where idx[o] >= 0 { gx[Int(idx[o])] += gy[o] }
        }
    }
    return out
}

/// Frees an index buffer when the tape releases the closure holding it.
final class IndexBuffer {
    let pointer: UnsafeMutablePointer<Int32>
    init(_ p: UnsafeMutablePointer<Int32>) { pointer = p }
    deinit { pointer.deallocate() }
}

/// Average pooling with a square window.
public func avgPool2d(_ x: Tensor, kernel: Int, stride: Int? = nil, padding: Int = 0) -> Tensor {
    let g = PoolGeometry(x.shape, kernel: kernel, stride: stride ?? kernel, padding: padding, "avgPool2d")
    let out = Tensor(zeros: [g.n, g.oh, g.ow, g.c])
    let scale = 1 / Float(g.k * g.k)
    // Visits every (output pixel, input pixel) pair of the windows of `images`.
    func forEachWindow(_ images: Range<Int>, _ body: (Int, Int) -> Void) {
        for n in images {
            for oy in 0..<g.oh {
                for ox in 0..<g.ow {
                    let o = ((n * g.oh + oy) * g.ow + ox) * g.c
                    for ky in 0..<g.k {
                        let iy = oy * g.stride - g.padding + ky
                        guard iy >= 0 && iy < g.h else { continue }
                        for kx in 0..<g.k {
                            let ix = ox * g.stride - g.padding + kx
                            guard ix >= 0 && ix < g.w else { continue }
                            body(o, ((n * g.h + iy) * g.w + ix) * g.c)
                        }
                    }
                }
            }
        }
    }
    // Images in parallel (each output and each input gradient belongs to one image), channels 8 at a time.
    let xp = x.data, y = out.data, C = g.c
    parallelRanges(g.n) { _, images in forEachWindow(images) { o, i in vScaledAccumulate(y + o, xp + i, scale, C) } }
    out.record(inputs: [x]) { out in
        let gy = out.grad!.data, gx = x.gradBuffer()
        parallelRanges(g.n) { _, images in forEachWindow(images) { o, i in vScaledAccumulate(gx + i, gy + o, scale, C) } }
    }
    return out
}

/// Mean over the spatial axes: [N, H, W, C] -> [N, C].
public func globalAvgPool(_ x: Tensor) -> Tensor {
    precondition(x.rank == 4, "globalAvgPool: input must be [N, H, W, C], got \(x.shape)")
    let n = x.shape[0], hw = x.shape[1] * x.shape[2], c = x.shape[3]
    let out = Tensor(zeros: [n, c])
    let xp = x.data, y = out.data, scale = 1 / Float(hw)
    parallelRanges(n) { _, images in
        for i in images {
            let yi = y + i * c
            for p in 0..<hw { vAccumulate(yi, xp + (i * hw + p) * c, c) }
            for j in 0..<c { yi[j] *= scale }
        }
    }
    out.record(inputs: [x]) { out in
        let gy = out.grad!.data, gx = x.gradBuffer()
        parallelRanges(n) { _, images in
            for i in images {
                for p in 0..<hw { vScaledAccumulate(gx + (i * hw + p) * c, gy + i * c, scale, c) }
            }
        }
    }
    return out
}
