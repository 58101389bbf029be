// 2-D convolution on channels-last activations.
//
// Legend: N batch, H×W input, OH×OW output, Ci/Co channels in/out, G groups (Cig = Ci/G, Cog = Co/G),
// KH×KW kernel, K = KH·KW·Ci (one im2col row), Kg = KH·KW·Cig, M = N·OH·OW output pixels.
// x [N, H, W, Ci], weight [Co, Cig, KH, KW] (PyTorch's layout, so checkpoints need no conversion), y [N, OH, OW, Co].
//
// The weight is permuted once per call to Wp [Co, KH, KW, Cig] (tiny). The batch is cut into chunks of whole
// images of about 1,024 output pixels; per chunk, im2col writes cols [rows × K] (row layout [g][ky][kx][cig]) into
// a cache-resident scratch buffer and one sgemm per group computes
//   forward   y[rows × Cog] = cols_g · Wp_gᵀ
//   backward  dWp_g += dy_gᵀ · cols_g        dcols_g = dy_g · Wp_g, then col2im into dx.
// Chunks are whole images, so workers write disjoint parts of dx; each worker sums dW in its own buffer.
// 1×1 stride-1 unpadded layers (grouped too) skip im2col: x itself is cols, one sgemm per group over every pixel.
// Depthwise layers (groups = Ci = Co) take a direct kernel instead (Depthwise.swift).
// Inference (`conv2dFused`, no tape) hands every path an epilogue that each chunk applies to its own output rows
// while they are still in cache: batch norm's affine map, a residual, a ReLU (see ConvEpilogue).
import CBLAS
import Foundation

/// Shapes of one convolution.
public struct ConvGeometry: Equatable {
    public let n, h, w, ci, co, kh, kw, stride, padding, groups, oh, ow: Int
    public var cig: Int { ci / groups }
    public var cog: Int { co / groups }
    public var kg: Int { kh * kw * cig }
    public var k: Int { kh * kw * ci }
    /// 1×1, stride 1, unpadded: x itself is the im2col matrix (group g reads columns g·Cig ..< (g+1)·Cig).
    public var isPointwise: Bool { kh == 1 && kw == 1 && stride == 1 && padding == 0 }

    public init(input: [Int], weight: [Int], stride: Int, padding: Int, groups: Int) {
        precondition(input.count == 4, "conv2d: input must be [N, H, W, C] (channels-last), got \(input)")
        precondition(weight.count == 4, "conv2d: weight must be [Cout, Cin/groups, KH, KW], got \(weight)")
        precondition(stride >= 1 && padding >= 0 && groups >= 1, "conv2d: stride \(stride) must be ≥ 1, padding \(padding) ≥ 0, groups \(groups) ≥ 1")
        n = input[0]; h = input[1]; w = input[2]; ci = input[3]
        co = weight[0]; kh = weight[2]; kw = weight[3]
        self.stride = stride; self.padding = padding; self.groups = groups
        precondition(ci % groups == 0 && co % groups == 0,
                     "conv2d: channels in \(ci) and out \(co) must both be divisible by groups \(groups)")
        precondition(weight[1] == ci / groups,
                     "conv2d: weight \(weight) expects \(weight[1] * groups) input channels but the input [N, H, W, C] = \(input) has \(ci)")
        oh = (h + 2 * padding - kh) / stride + 1
        ow = (w + 2 * padding - kw) / stride + 1
        precondition(oh > 0 && ow > 0, "conv2d: kernel \(kh)×\(kw) does not fit input \(h)×\(w) with padding \(padding)")
    }

    /// Floating-point operations of the forward product (2 per multiply-add).
    public var forwardFlops: Double { 2.0 * Double(n * oh * ow) * Double(co) * Double(kg) }
}

/// Reusable per-worker scratch buffers (grown on demand, never shrunk), one set per calling thread: a kernel
/// reserves buffers for the workers it splits into on the thread that calls it, so kernels called at once from
/// two threads (inference run in image chunks, `inferenceInImageChunks`) never share a buffer.
final class Scratch {
    /// The calling thread's scratch.
    static var shared: Scratch {
        if let p = pthread_getspecific(key) { return Unmanaged<Scratch>.fromOpaque(p).takeUnretainedValue() }
        let s = Scratch()
        pthread_setspecific(key, Unmanaged.passRetained(s).toOpaque())
        return s
    }
    /// The thread-specific slot; a thread's Scratch is freed with the thread.
    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        let rc = pthread_key_create(&k) { p in if let p { Unmanaged<Scratch>.fromOpaque(p).release() } }
        precondition(rc == 0, "Scratch: pthread_key_create failed (\(rc))")
        return k
    }()
    deinit { for list in buffers { for p in list { p.deallocate() } } }

    private var buffers: [[UnsafeMutablePointer<Float>]] = []
    private var sizes: [[Int]] = []

    /// Ensures `slots` buffers of `count` floats for each of `workers` workers; returns them [worker][slot].
    func reserve(workers: Int, slots: Int, count: Int) -> [[UnsafeMutablePointer<Float>]] {
        while buffers.count < workers { buffers.append([]); sizes.append([]) }
        for w in 0..<workers {
            while buffers[w].count < slots {
                buffers[w].append(UnsafeMutablePointer<Float>.allocate(capacity: 1)); sizes[w].append(1)
            }
            for s in 0..<slots where sizes[w][s] < count {
                buffers[w][s].deallocate()
                buffers[w][s] = UnsafeMutablePointer<Float>.allocate(capacity: count)
                sizes[w][s] = count
            }
        }
        return Array(buffers.prefix(workers).map { Array($0.prefix(slots)) })
    }
}

/// What an inference convolution applies to its output rows [M × Co] as each chunk finishes them:
///   y = y·scale + shift (per channel), then y + residual (same layout as y) when given, then max(0, y) when `relu`:
/// the operations, in the order, of batchNorm (evaluation), `+` and addRelu, so the result is bit-identical to
/// running them one after another, without their three extra passes over the activation. With `shuffleGroups`
/// g > 1, each row's channels are then shuffled as `channelShuffled(groups: g)` does, y[i·g + j] = y[j·C/g + i].
struct ConvEpilogue {
    let scale: UnsafePointer<Float>, shift: UnsafePointer<Float>
    let residual: UnsafePointer<Float>?
    let relu: Bool
    var shuffleGroups = 1

    /// Applies the epilogue to rows `rows` of y [M × C] (batch norm's row kernel, in place).
    @inline(__always)
    func apply(_ y: UnsafeMutablePointer<Float>, rows: Range<Int>, C: Int) {
        guard shuffleGroups > 1 else {
            for m in rows { bnRowForward(y + m * C, scale, shift, residual.map { $0 + m * C }, y + m * C, C, relu: relu) }
            return
        }
        let g = shuffleGroups, per = C / g
        withUnsafeTemporaryAllocation(of: Float.self, capacity: C) { t in
            let t = t.baseAddress!
            for m in rows {
                let yr = y + m * C
                bnRowForward(yr, scale, shift, residual.map { $0 + m * C }, t, C, relu: relu)
                shuffleRow(t, into: yr, groups: g, per: per)
            }
        }
    }

    /// Applies the epilogue to the output rows of whole images `images` of y [N·OH·OW × Co].
    @inline(__always)
    func apply(_ y: UnsafeMutablePointer<Float>, images: Range<Int>, _ g: ConvGeometry) {
        apply(y, rows: (images.lowerBound * g.oh * g.ow)..<(images.upperBound * g.oh * g.ow), C: g.co)
    }
}

/// Target output pixels per chunk (measured best for resnet20 shapes on one core).
public nonisolated(unsafe) var convChunkPixels = 1024

/// The fewest chunks a batch is cut into when it has that many images: a layer with small maps (VGG's 2×2 and 4×4
/// with 512 channels) would otherwise be one chunk of the whole batch, and one thread's work.
public nonisolated(unsafe) var convMinChunks = 4

/// Whole images per chunk for `n` images of `pixels` outputs each, about `target` output pixels per chunk and at
/// least `convMinChunks` chunks (a fixed count, so the cut does not depend on the number of threads).
func imagesPerChunk(n: Int, pixels: Int, target: Int) -> Int {
    max(1, min(target / max(pixels, 1), (n + convMinChunks - 1) / convMinChunks))
}

// MARK: - im2col / col2im

/// cols[(i·OH·OW + p) × K] for images n0..<n1, row layout [g][ky][kx][cig]; zero where the window leaves the input.
@inline(__always)
func im2col(_ x: UnsafePointer<Float>, _ g: ConvGeometry, images: Range<Int>, _ cols: UnsafeMutablePointer<Float>) {
    let K = g.k, cig = g.cig
    var row = cols
    for img in images {
        let xi = x + img * g.h * g.w * g.ci
        for oy in 0..<g.oh {
            for ox in 0..<g.ow {
                var dst = row
                for grp in 0..<g.groups {
                    for ky in 0..<g.kh {
                        let iy = oy * g.stride - g.padding + ky
                        let ix0 = ox * g.stride - g.padding
                        if iy < 0 || iy >= g.h {
                            dst.update(repeating: 0, count: g.kw * cig)
                            dst += g.kw * cig
                        } else if g.groups == 1 && ix0 >= 0 && ix0 + g.kw <= g.w {
                            // The whole kernel row lies inside: kw·Ci contiguous values.
                            dst.update(from: xi + (iy * g.w + ix0) * g.ci, count: g.kw * cig)
                            dst += g.kw * cig
                        } else {
                            for kx in 0..<g.kw {
                                let ix = ix0 + kx
                                if ix >= 0 && ix < g.w {
                                    dst.update(from: xi + (iy * g.w + ix) * g.ci + grp * cig, count: cig)
                                } else {
                                    dst.update(repeating: 0, count: cig)
                                }
                                dst += cig
                            }
                        }
                    }
                }
                row += K
            }
        }
    }
}

/// dx += col2im(dcols) for images n0..<n1 (inverse scatter of im2col).
@inline(__always)
func col2imAdd(_ dcols: UnsafePointer<Float>, _ g: ConvGeometry, images: Range<Int>, _ dx: UnsafeMutablePointer<Float>) {
    let K = g.k, cig = g.cig
    var row = dcols
    for img in images {
        let dxi = dx + img * g.h * g.w * g.ci
        for oy in 0..<g.oh {
            for ox in 0..<g.ow {
                var src = row
                for grp in 0..<g.groups {
                    for ky in 0..<g.kh {
                        let iy = oy * g.stride - g.padding + ky
                        let ix0 = ox * g.stride - g.padding
                        if iy < 0 || iy >= g.h {
                            src += g.kw * cig
                        } else if g.groups == 1 && ix0 >= 0 && ix0 + g.kw <= g.w {
                            let d = dxi + (iy * g.w + ix0) * g.ci
                            for c in 0..<(g.kw * cig) { d[c] += src[c] }
                            src += g.kw * cig
                        } else {
                            for kx in 0..<g.kw {
                                let ix = ix0 + kx
                                if ix >= 0 && ix < g.w {
                                    let d = dxi + (iy * g.w + ix) * g.ci + grp * cig
                                    for c in 0..<cig { d[c] += src[c] }
                                }
                                src += cig
                            }
                        }
                    }
                }
                row += K
            }
        }
    }
}

/// Wp[co][ky][kx][c] = W[co][c][ky][kx].
func permuteWeightToRows(_ w: UnsafePointer<Float>, _ g: ConvGeometry, _ wp: UnsafeMutablePointer<Float>) {
    let area = g.kh * g.kw
    for o in 0..<g.co {
        for c in 0..<g.cig {
            for a in 0..<area { wp[(o * area + a) * g.cig + c] = w[(o * g.cig + c) * area + a] }
        }
    }
}

/// dW[co][c][ky][kx] += dWp[co][ky][kx][c].
func addRowsToWeightGrad(_ dwp: UnsafePointer<Float>, _ g: ConvGeometry, _ dw: UnsafeMutablePointer<Float>) {
    let area = g.kh * g.kw
    for o in 0..<g.co {
        for c in 0..<g.cig {
            for a in 0..<area { dw[(o * g.cig + c) * area + a] += dwp[(o * area + a) * g.cig + c] }
        }
    }
}

/// y [M × Co] = beta·y + conv(x, w) for a weight in PyTorch layout: Winograd F(2×2, 3×3) where it applies,
/// otherwise im2col + sgemm.
/// With an epilogue, each chunk applies it to the rows it wrote.
func convForwardKernel(_ x: UnsafePointer<Float>, _ g: ConvGeometry, weight w: UnsafePointer<Float>,
                       y: UnsafeMutablePointer<Float>, beta: Float, epilogue: ConvEpilogue? = nil) {
    if winogradApplies(g) {
        winogradForward(x, g, weight: w, y: y, beta: beta, epilogue: epilogue)
        return
    }
    if depthwiseApplies(g) {
        depthwiseForward(x, g, weight: w, y: y, beta: beta, epilogue: epilogue)
        return
    }
    if g.kh * g.kw == 1 {   // [Co, Cig, 1, 1] is already the row layout
        im2colForward(x, g, wp: w, y: y, beta: beta, epilogue: epilogue)
        return
    }
    let wp = Tensor(uninitialized: [g.co, g.kg])
    permuteWeightToRows(w, g, wp.data)
    im2colForward(x, g, wp: wp.data, y: y, beta: beta, epilogue: epilogue)
}

/// For a grouped product into y with beta = 0: zeroes the `count` floats of y it covers in one pass and returns 1,
/// so each group's gemm adds (gemm would otherwise zero its Cog columns row by row, one tiny memset per row).
/// Otherwise returns beta unchanged. Same values either way.
@inline(__always)
func zeroForGroups(_ y: UnsafeMutablePointer<Float>, _ count: Int, _ beta: Float, _ g: ConvGeometry) -> Float {
    guard beta == 0, g.groups > 1 else { return beta }
    y.update(repeating: 0, count: count)
    return 1
}

/// y [M × Co] = beta·y + im2col(x)·Wpᵀ, chunked over whole images and split across workers.
func im2colForward(_ x: UnsafePointer<Float>, _ g: ConvGeometry, wp: UnsafePointer<Float>,
                   y: UnsafeMutablePointer<Float>, beta: Float, epilogue: ConvEpilogue? = nil) {
    if g.isPointwise, let epilogue {
        // Row chunks of about convChunkPixels, each multiplied and finished while in cache.
        let M = g.n * g.oh * g.ow, chunks = (M + convChunkPixels - 1) / convChunkPixels
        parallelRanges(chunks) { _, chunkRange in
            for c in chunkRange {
                let rows = (c * convChunkPixels)..<min(M, (c + 1) * convChunkPixels)
                let beta = zeroForGroups(y + rows.lowerBound * g.co, rows.count * g.co, beta, g)
                for grp in 0..<g.groups {
                    gemm(transA: false, transB: true, m: rows.count, n: g.cog, k: g.cig,
                         a: x + rows.lowerBound * g.ci + grp * g.cig, lda: g.ci, b: wp + grp * g.cog * g.cig, ldb: g.cig,
                         beta: beta, c: y + rows.lowerBound * g.co + grp * g.cog, ldc: g.co, parallel: false)
                }
                epilogue.apply(y, rows: rows, C: g.co)
            }
        }
        return
    }
    if g.isPointwise {
        let beta = zeroForGroups(y, g.n * g.oh * g.ow * g.co, beta, g)
        for grp in 0..<g.groups {
            gemm(transA: false, transB: true, m: g.n * g.oh * g.ow, n: g.cog, k: g.cig, a: x + grp * g.cig, lda: g.ci,
                 b: wp + grp * g.cog * g.cig, ldb: g.cig, beta: beta, c: y + grp * g.cog, ldc: g.co)
        }
        return
    }
    let imagesPerChunk = imagesPerChunk(n: g.n, pixels: g.oh * g.ow, target: convChunkPixels)
    let chunks = (g.n + imagesPerChunk - 1) / imagesPerChunk
    let workers = min(Threads.count, chunks)
    let scratch = Scratch.shared.reserve(workers: workers, slots: 1, count: imagesPerChunk * g.oh * g.ow * g.k)
    parallelRanges(chunks) { worker, chunkRange in
        let cols = scratch[worker][0]
        for c in chunkRange {
            let images = (c * imagesPerChunk)..<min(g.n, (c + 1) * imagesPerChunk)
            let rows = images.count * g.oh * g.ow
            let y0 = y + images.lowerBound * g.oh * g.ow * g.co
            im2col(x, g, images: images, cols)
            let beta = zeroForGroups(y0, rows * g.co, beta, g)
            for grp in 0..<g.groups {
                gemm(transA: false, transB: true, m: rows, n: g.cog, k: g.kg, a: cols + grp * g.kg, lda: g.k,
                     b: wp + grp * g.cog * g.kg, ldb: g.kg, beta: beta, c: y0 + grp * g.cog, ldc: g.co,
                     parallel: false)
            }
            epilogue?.apply(y, images: images, g)
        }
    }
}

/// For stride 1, the data gradient is itself a convolution: dx = conv(dy, W′) with W′ the kernel flipped in
/// space and transposed in channels (per group) and padding k − 1 − p. Returns the geometry of that convolution
/// and W′ in PyTorch layout [Ci, Cog, KH, KW], or nil when the shortcut does not apply.
func transposedConvolution(_ w: UnsafePointer<Float>, _ g: ConvGeometry) -> (ConvGeometry, Tensor)? {
    guard g.stride == 1, g.padding <= g.kh - 1, g.padding <= g.kw - 1, g.kh == g.kw, !g.isPointwise else { return nil }
    let gt = ConvGeometry(input: [g.n, g.oh, g.ow, g.co], weight: [g.ci, g.cog, g.kh, g.kw], stride: 1,
                          padding: g.kh - 1 - g.padding, groups: g.groups)
    precondition(gt.oh == g.h && gt.ow == g.w, "conv2d: internal geometry mismatch in the transposed convolution")
    let wt = Tensor(uninitialized: [g.ci, g.cog, g.kh, g.kw])
    let p = wt.data, area = g.kh * g.kw
    for grp in 0..<g.groups {
        for cl in 0..<g.cig {
            for ol in 0..<g.cog {
                let src = w + ((grp * g.cog + ol) * g.cig + cl) * area
                let dst = p + ((grp * g.cig + cl) * g.cog + ol) * area
                for a in 0..<area { dst[a] = src[area - 1 - a] }
            }
        }
    }
    return (gt, wt)
}

// MARK: - Forward and backward

/// 2-D convolution (cross-correlation, as PyTorch) of channels-last `x` [N, H, W, Ci] with `weight`
/// [Co, Ci/groups, KH, KW] and optional `bias` [Co]; returns [N, OH, OW, Co].
public func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0,
                   groups: Int = 1) -> Tensor {
    let g = ConvGeometry(input: x.shape, weight: weight.shape, stride: stride, padding: padding, groups: groups)
    if let b = bias { precondition(b.shape == [g.co], "conv2d: bias shape \(b.shape), expected [\(g.co)]") }
    let out = convForwardOutput(x, weight: weight, bias: bias, g, epilogue: nil)
    let imagesPerChunk = imagesPerChunk(n: g.n, pixels: g.oh * g.ow, target: convChunkPixels)
    let chunks = (g.n + imagesPerChunk - 1) / imagesPerChunk

    out.record(inputs: bias.map { [x, weight, $0] } ?? [x, weight]) { out in
        conv2dBackward(x: x, weight: weight, bias: bias, dy: out.grad!.data, g,
                       imagesPerChunk: imagesPerChunk, chunks: chunks)
    }
    return out
}

/// Inference only (inside `withoutGradients`): conv2d followed, in the same pass over each chunk of its output, by
/// y·scale + shift per channel (a batch norm in evaluation mode: `batchNormEvalAffine`), + `residual`, a ReLU, and
/// a channel shuffle in `shuffleGroups` groups (ConvEpilogue), bit-identical to running those ops separately.
public func conv2dFused(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, stride: Int = 1, padding: Int = 0,
                        groups: Int = 1, scale: Tensor, shift: Tensor, residual: Tensor? = nil, relu: Bool,
                        shuffleGroups: Int = 1) -> Tensor {
    precondition(!GradMode.isEnabled, "conv2dFused: inference only, inside withoutGradients (it records no backward)")
    let g = ConvGeometry(input: x.shape, weight: weight.shape, stride: stride, padding: padding, groups: groups)
    if let b = bias { precondition(b.shape == [g.co], "conv2dFused: bias shape \(b.shape), expected [\(g.co)]") }
    precondition(scale.shape == [g.co] && shift.shape == [g.co],
                 "conv2dFused: scale \(scale.shape) and shift \(shift.shape) must both be [\(g.co)]")
    if let r = residual {
        precondition(r.shape == [g.n, g.oh, g.ow, g.co], "conv2dFused: residual \(r.shape), expected \([g.n, g.oh, g.ow, g.co])")
    }
    precondition(shuffleGroups >= 1 && g.co % shuffleGroups == 0,
                 "conv2dFused: \(g.co) output channels cannot be shuffled in \(shuffleGroups) groups")
    let epilogue = ConvEpilogue(scale: scale.data, shift: shift.data, residual: residual.map { UnsafePointer($0.data) },
                                relu: relu, shuffleGroups: shuffleGroups)
    return convForwardOutput(x, weight: weight, bias: bias, g, epilogue: epilogue)
}

/// The forward output of conv2d and conv2dFused (profiled as convolution forward): the bias in every row, then the
/// kernel adding the convolution (and applying `epilogue` chunk by chunk).
func convForwardOutput(_ x: Tensor, weight: Tensor, bias: Tensor?, _ g: ConvGeometry, epilogue: ConvEpilogue?) -> Tensor {
    let out = Tensor(uninitialized: [g.n, g.oh, g.ow, g.co])
    let y = out.data
    Profiler.measure(.convolutionForward) {
        if let b = bias { for r in 0..<(g.n * g.oh * g.ow) { (y + r * g.co).update(from: b.data, count: g.co) } }
        convForwardKernel(x.data, g, weight: weight.data, y: y, beta: bias == nil ? 0 : 1, epilogue: epilogue)
    }
    return out
}

/// The gradients of `conv2d`, each path's time handed to the profiler's data- and weight-gradient parts.
func conv2dBackward(x: Tensor, weight: Tensor, bias: Tensor?, dy: UnsafeMutablePointer<Float>,
                    _ g: ConvGeometry, imagesPerChunk: Int, chunks: Int) {
    Profiler.laps { laps in
        conv2dBackward(x: x, weight: weight, bias: bias, dy: dy, g, imagesPerChunk: imagesPerChunk, chunks: chunks, laps: &laps)
    }
}

func conv2dBackward(x: Tensor, weight: Tensor, bias: Tensor?, dy: UnsafeMutablePointer<Float>,
                    _ g: ConvGeometry, imagesPerChunk: Int, chunks: Int, laps: inout Profiler.Laps) {
    let M = g.n * g.oh * g.ow
    var needX = x.requiresGrad
    var needW = weight.requiresGrad
    if let b = bias, b.requiresGrad {
        let gb = b.gradBuffer()
        for r in 0..<M { accumulate(gb, dy + r * g.co, g.co) }
        laps.lap(.convolutionWeightGradient)
    }
    if !needX && !needW { return }
    if depthwiseApplies(g) {
        depthwiseBackward(x.data, g, weight: weight.data, dy: dy, dx: needX ? x.gradBuffer() : nil,
                          dw: needW ? weight.gradBuffer() : nil)
        // One fused pass over the same taps: its time is split evenly between the gradients it computes.
        laps.lap([(.convolutionDataGradient, needX ? 1 : 0), (.convolutionWeightGradient, needW ? 1 : 0)])
        return
    }
    let wElems = g.co * g.kg
    let wp = Tensor(uninitialized: [g.co, g.kg])
    permuteWeightToRows(weight.data, g, wp.data)

    if g.isPointwise {
        if needX {
            let dx = x.gradBuffer()
            for grp in 0..<g.groups {
                gemm(transA: false, transB: false, m: M, n: g.cig, k: g.cog, a: dy + grp * g.cog, lda: g.co,
                     b: wp.data + grp * g.cog * g.cig, ldb: g.cig, beta: 1, c: dx + grp * g.cig, ldc: g.ci)
            }
            laps.lap(.convolutionDataGradient)
        }
        if needW {
            let dwp = Tensor(zeros: [wElems])
            let partial = Scratch.shared.reserve(workers: Threads.count, slots: 1, count: wElems)
            parallelRanges(M, minPerWorker: 256) { worker, r in
                for grp in 0..<g.groups {
                    gemm(transA: true, transB: false, m: g.cog, n: g.cig, k: r.count,
                         a: dy + r.lowerBound * g.co + grp * g.cog, lda: g.co,
                         b: x.data + r.lowerBound * g.ci + grp * g.cig, ldb: g.ci, beta: 0,
                         c: partial[worker][0] + grp * g.cog * g.cig, ldc: g.cig, parallel: false)
                }
            }
            let used = min(Threads.count, max(1, M / 256))
            for w in 0..<used { accumulate(dwp.data, partial[w][0], wElems) }
            addRowsToWeightGrad(dwp.data, g, weight.gradBuffer())
            laps.lap(.convolutionWeightGradient)
        }
        return
    }

    // Stride 1: dx accumulates a forward-style convolution of dy (no col2im scatter, no dcols buffer).
    if needX, let (gt, wt) = transposedConvolution(weight.data, g) {
        convForwardKernel(dy, gt, weight: wt.data, y: x.gradBuffer(), beta: 1)
        laps.lap(.convolutionDataGradient)
        needX = false
        if !needW { return }
    }
    if needW && winogradApplies(g) {
        winogradWeightGradient(x.data, g, dy: dy, dw: weight.gradBuffer())
        laps.lap(.convolutionWeightGradient)
        needW = false
        if !needX { return }
    }
    let rowsMax = imagesPerChunk * g.oh * g.ow
    let workers = min(Threads.count, chunks)
    // Slots per worker: 0 cols, 1 dcols, 2 partial dWp.
    let scratch = Scratch.shared.reserve(workers: workers, slots: 3, count: max(rowsMax * g.k, wElems))
    let dx = needX ? x.gradBuffer() : nil
    var used = [Bool](repeating: false, count: workers)
    // Seconds each worker spent on [weight gradient, data gradient], to share the region's time between them.
    var workerSeconds = [Double](repeating: 0, count: 2 * workers)
    let timed = Profiler.isEnabled
    used.withUnsafeMutableBufferPointer { usedFlags in workerSeconds.withUnsafeMutableBufferPointer { spent in
        parallelRanges(chunks) { worker, chunkRange in
            usedFlags[worker] = true
            let cols = scratch[worker][0], dcols = scratch[worker][1], dwp = scratch[worker][2]
            if needW { dwp.update(repeating: 0, count: wElems) }
            for c in chunkRange {
                let images = (c * imagesPerChunk)..<min(g.n, (c + 1) * imagesPerChunk)
                let rows = images.count * g.oh * g.ow
                let dy0 = dy + images.lowerBound * g.oh * g.ow * g.co
                let t0 = timed ? Profiler.now() : 0
                if needW {
                    im2col(x.data, g, images: images, cols)
                    for grp in 0..<g.groups {
                        gemm(transA: true, transB: false, m: g.cog, n: g.kg, k: rows, a: dy0 + grp * g.cog,
                             lda: g.co, b: cols + grp * g.kg, ldb: g.k, beta: 1, c: dwp + grp * g.cog * g.kg,
                             ldc: g.kg, parallel: false)
                    }
                }
                let t1 = timed ? Profiler.now() : 0
                if let dx = dx {
                    for grp in 0..<g.groups {
                        gemm(transA: false, transB: false, m: rows, n: g.kg, k: g.cog, a: dy0 + grp * g.cog,
                             lda: g.co, b: wp.data + grp * g.cog * g.kg, ldb: g.kg, beta: 0,
                             c: dcols + grp * g.kg, ldc: g.k, parallel: false)
                    }
                    col2imAdd(dcols, g, images: images, dx)
                }
                if timed { spent[2 * worker] += t1 - t0; spent[2 * worker + 1] += Profiler.now() - t1 }
            }
        }
    } }
    let shares = stride(from: 0, to: workerSeconds.count, by: 2).reduce((0.0, 0.0)) { ($0.0 + workerSeconds[$1], $0.1 + workerSeconds[$1 + 1]) }
    if needW {
        let total = scratch[0][2]
        for w in 1..<workers where used[w] { accumulate(total, scratch[w][2], wElems) }
        addRowsToWeightGrad(total, g, weight.gradBuffer())
    }
    laps.lap([(.convolutionWeightGradient, shares.0), (.convolutionDataGradient, shares.1)])
}

// MARK: - Naive reference

/// Direct convolution, the reference the fast kernel is tested against. Returns (y, dx, dW, db) where the
/// gradients are for upstream gradient `dy` (pass nil to skip them).
public func conv2dReference(x: [Float], xShape: [Int], weight: [Float], wShape: [Int], bias: [Float]?,
                            stride: Int, padding: Int, groups: Int, dy: [Float]?)
    -> (y: [Float], dx: [Float], dw: [Float], db: [Float]) {
    let g = ConvGeometry(input: xShape, weight: wShape, stride: stride, padding: padding, groups: groups)
    var y = [Float](repeating: 0, count: g.n * g.oh * g.ow * g.co)
    var dx = [Float](repeating: 0, count: x.count), dw = [Float](repeating: 0, count: weight.count)
    var db = [Float](repeating: 0, count: g.co)
    for n in 0..<g.n {
        for oy in 0..<g.oh {
            for ox in 0..<g.ow {
                for o in 0..<g.co {
                    let grp = o / g.cog
                    let yi = ((n * g.oh + oy) * g.ow + ox) * g.co + o
                    var s = Double(bias?[o] ?? 0)
                    let up = dy?[yi] ?? 0
                    db[o] += up
                    for c in 0..<g.cig {
                        for ky in 0..<g.kh {
                            for kx in 0..<g.kw {
                                let iy = oy * stride - padding + ky, ix = ox * stride - padding + kx
                                guard iy >= 0 && iy < g.h && ix >= 0 && ix < g.w else { continue }
                                let xi = ((n * g.h + iy) * g.w + ix) * g.ci + grp * g.cig + c
                                let wi = ((o * g.cig + c) * g.kh + ky) * g.kw + kx
                                s += Double(x[xi]) * Double(weight[wi])
                                dx[xi] += up * weight[wi]
                                dw[wi] += up * x[xi]
                            }
                        }
                    }
                    y[yi] = Float(s)
                }
            }
        }
    }
    return (y, dx, dw, db)
}
