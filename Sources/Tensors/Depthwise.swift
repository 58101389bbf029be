// Depthwise convolution (groups = Ci = Co, one KH×KW filter per channel), computed directly on channels-last
// activations: every output pixel is a sum over the window's KH·KW input pixels, each a contiguous vector of C
// channels multiplied elementwise by that tap's filter vector, so the inner loop runs over C with unit stride and
// vectorises. No im2col, no per-group products (a depthwise layer through im2col would be C sgemms of one column).
// The weight is permuted once per call from PyTorch's [C, 1, KH, KW] to taps Wt [KH·KW, C].
//   forward   y[n, oy, ox, :]  (+)= Σ_(ky,kx) x[n, oy·s − p + ky, ox·s − p + kx, :] ⊙ Wt[ky·KW + kx, :]
//   backward  dx[n, iy, ix, :] += dy[n, oy, ox, :] ⊙ Wt[ky·KW + kx, :]   (scatter per image; images are disjoint)
//             dWt[ky·KW + kx, :] += dy[n, oy, ox, :] ⊙ x[n, iy, ix, :]  (a buffer per worker, summed at the end)
// Work splits over whole images. The reference is conv2dReference (Convolution.swift); ConvolutionTests holds
// them together.

/// Whether the direct depthwise kernel handles this geometry (off: the im2col path, one product per group).
public nonisolated(unsafe) var depthwiseDirectEnabled = true

public func depthwiseApplies(_ g: ConvGeometry) -> Bool {
    depthwiseDirectEnabled && g.groups > 1 && g.cig == 1 && g.cog == 1
}

/// Wt[a][c] = W[c][0][a] for a = ky·KW + kx.
func depthwiseTaps(_ w: UnsafePointer<Float>, _ g: ConvGeometry) -> Tensor {
    let area = g.kh * g.kw, c = g.ci
    let t = Tensor(uninitialized: [area, c])
    for ch in 0..<c { for a in 0..<area { t.data[a * c + ch] = w[ch * area + a] } }
    return t
}

/// Calls body(o, a, i) for every output pixel o = oy·OW + ox of an image and every tap a = ky·KW + kx whose input
/// pixel i = iy·W + ix lies inside.
@inline(__always)
func forEachDepthwiseTap(_ g: ConvGeometry, _ body: (Int, Int, Int) -> Void) {
    for oy in 0..<g.oh {
        for ky in 0..<g.kh {
            let iy = oy * g.stride - g.padding + ky
            if iy < 0 || iy >= g.h { continue }
            for ox in 0..<g.ow {
                for kx in 0..<g.kw {
                    let ix = ox * g.stride - g.padding + kx
                    if ix < 0 || ix >= g.w { continue }
                    body(oy * g.ow + ox, ky * g.kw + kx, iy * g.w + ix)
                }
            }
        }
    }
}

/// y [N·OH·OW × C] = beta·y + depthwise(x, w), w in PyTorch layout; then `epilogue` on each output row's pixels.
/// Each output pixel's channels are summed in registers, 16 (then 8, then 1) at a time, over the taps in the order
/// ky, kx: the sums of the plain loop `depthwiseForwardReference`, bit for bit, with one store per value.
func depthwiseForward(_ x: UnsafePointer<Float>, _ g: ConvGeometry, weight w: UnsafePointer<Float>,
                      y: UnsafeMutablePointer<Float>, beta: Float, epilogue: ConvEpilogue? = nil) {
    let taps = depthwiseTaps(w, g), wt = UnsafePointer(taps.data)
    let C = g.ci, inImage = g.h * g.w * C, outImage = g.oh * g.ow * C
    parallelRanges(g.n) { _, images in
        for img in images {
            let xi = x + img * inImage, yi = y + img * outImage
            for oy in 0..<g.oh {
                let iy0 = oy * g.stride - g.padding
                let ky0 = max(0, -iy0), ky1 = min(g.kh, g.h - iy0)
                for ox in 0..<g.ow {
                    let ix0 = ox * g.stride - g.padding
                    let kx0 = max(0, -ix0), kx1 = min(g.kw, g.w - ix0)
                    let yr = yi + (oy * g.ow + ox) * C
                    @inline(__always)
                    func sum<V: SIMD>(_ c: Int, _: V.Type) -> V where V.Scalar == Float {
                        var acc = beta == 0 ? V() : UnsafeRawPointer(yr + c).loadUnaligned(as: V.self)
                        for ky in ky0..<max(ky0, ky1) {
                            let xrow = xi + ((iy0 + ky) * g.w + ix0) * C + c, wrow = wt + ky * g.kw * C + c
                            for kx in kx0..<max(kx0, kx1) {
                                acc += UnsafeRawPointer(xrow + kx * C).loadUnaligned(as: V.self)
                                     * UnsafeRawPointer(wrow + kx * C).loadUnaligned(as: V.self)
                            }
                        }
                        return acc
                    }
                    var c = 0
                    while c + 16 <= C { UnsafeMutableRawPointer(yr + c).storeBytes(of: sum(c, SIMD16<Float>.self), as: SIMD16<Float>.self); c += 16 }
                    while c + 8 <= C { UnsafeMutableRawPointer(yr + c).storeBytes(of: sum(c, SIMD8<Float>.self), as: SIMD8<Float>.self); c += 8 }
                    while c < C {
                        var acc: Float = beta == 0 ? 0 : yr[c]
                        for ky in ky0..<max(ky0, ky1) {
                            for kx in kx0..<max(kx0, kx1) { acc += xi[((iy0 + ky) * g.w + ix0 + kx) * C + c] * wt[(ky * g.kw + kx) * C + c] }
                        }
                        yr[c] = acc
                        c += 1
                    }
                }
                let row0 = (img * g.oh + oy) * g.ow
                epilogue?.apply(y, rows: row0..<(row0 + g.ow), C: C)
            }
        }
    }
}

/// The plain loop `depthwiseForward` must equal: y (zeroed unless beta = 1) += x ⊙ w tap by tap, in the order
/// oy, ky, ox, kx (a test holds them together, bit for bit).
public func depthwiseForwardReference(_ x: Tensor, weight w: Tensor, stride: Int, padding: Int, bias: Tensor? = nil) -> Tensor {
    let g = ConvGeometry(input: x.shape, weight: w.shape, stride: stride, padding: padding, groups: x.shape[3])
    precondition(g.cog == 1, "depthwiseForwardReference: one filter per channel, got weight \(w.shape)")
    let taps = depthwiseTaps(w.data, g), wt = taps.data, C = g.ci
    let out = Tensor(zeros: [g.n, g.oh, g.ow, C])
    for img in 0..<g.n {
        let xi = x.data + img * g.h * g.w * C, yi = out.data + img * g.oh * g.ow * C
        if let b = bias { for o in 0..<(g.oh * g.ow) { for c in 0..<C { yi[o * C + c] = b.data[c] } } }
        forEachDepthwiseTap(g) { o, a, i in
            for c in 0..<C { yi[o * C + c] += xi[i * C + c] * wt[a * C + c] }
        }
    }
    return out
}

/// dx += ∂/∂x and dw += ∂/∂w of depthwise(x, w) for upstream `dy` (either may be nil).
func depthwiseBackward(_ x: UnsafePointer<Float>, _ g: ConvGeometry, weight w: UnsafePointer<Float>,
                       dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>?, dw: UnsafeMutablePointer<Float>?) {
    let taps = depthwiseTaps(w, g), wt = UnsafePointer(taps.data)
    let C = g.ci, area = g.kh * g.kw, inImage = g.h * g.w * C, outImage = g.oh * g.ow * C
    let workers = min(Threads.count, g.n)
    let partial = dw == nil ? [] : Scratch.shared.reserve(workers: workers, slots: 1, count: area * C)
    var used = [Bool](repeating: false, count: workers)
    used.withUnsafeMutableBufferPointer { usedFlags in
        parallelRanges(g.n) { worker, images in
            usedFlags[worker] = true
            let dwt = dw == nil ? nil : partial[worker][0]
            dwt?.update(repeating: 0, count: area * C)
            for img in images {
                let xi = x + img * inImage, dyi = dy + img * outImage
                let dxi = dx.map { $0 + img * inImage }
                forEachDepthwiseTap(g) { o, a, i in
                    let dyr = dyi + o * C
                    if let dxi {
                        let dxr = dxi + i * C, wr = wt + a * C
                        for c in 0..<C { dxr[c] += dyr[c] * wr[c] }
                    }
                    if let dwt {
                        let dwr = dwt + a * C, xr = xi + i * C
                        for c in 0..<C { dwr[c] += dyr[c] * xr[c] }
                    }
                }
            }
        }
    }
    guard let dw else { return }
    let total = partial[0][0]
    for k in 1..<workers where used[k] { accumulate(total, partial[k][0], area * C) }
    for ch in 0..<C { for a in 0..<area { dw[ch * area + a] += total[a * C + ch] } }
}
