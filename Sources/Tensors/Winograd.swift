// Winograd convolution for stride-1, padding-1, 3×3 ungrouped layers (Lavin & Gray, 2016), in two tile sizes.
// F(2×2, 3×3): each 2×2 output tile comes from a 4×4 input tile d:  Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A, so a tile
// costs 16 multiplications per (Ci, Co) pair instead of 36: 2.25× fewer. Over a chunk of T tiles the elementwise
// product becomes 16 sgemms  M_ξ [T × Co] = V_ξ [T × Ci] · U_ξ [Ci × Co]  (ξ = 4·i + j indexes the 4×4 positions).
//   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]   G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]   Aᵀ = [1 1 1 0; 0 1 −1 −1]
// F(4×4, 3×3): 4×4 output tiles from 6×6 input tiles, 36 sgemms, 36 multiplications per 16 outputs (4× fewer than
// direct) and 2.25 transformed values per output instead of 4 (less memory traffic), for a slightly larger rounding
// error (interpolation points 0, ±1, ±2, ∞):
//   Bᵀ = [4 0 −5 0 1 0; 0 −4 −4 1 1 0; 0 4 −4 −1 1 0; 0 −2 −1 2 1 0; 0 2 −1 −2 1 0; 0 4 0 −5 0 1]
//   G = [¼ 0 0; −⅙ −⅙ −⅙; −⅙ ⅙ −⅙; 1/24 1/12 ⅙; 1/24 −1/12 ⅙; 0 0 1]
//   Aᵀ = [1 1 1 1 1 0; 0 1 −1 2 −2 0; 0 1 1 4 4 0; 0 1 −1 8 −8 1]
// `winogradTile(_:)` picks the tile for a layer. Transforms run on channels-last vectors of 8 channels (Ci and Co
// must be multiples of 8). The data gradient of such a layer is again such a layer (flipped, transposed kernel),
// so backward reuses this.

import CBLAS

/// How a layer's tiles are cut into chunks of whole images, and the per-worker scratch they need.
struct WinogradPlan {
    /// Output tile side m (2 or 4); the input tile is m + 2 and there are (m + 2)² transformed positions ξ.
    let m: Int, points: Int
    let th: Int, tw: Int, tilesPerImage: Int, imagesPerChunk: Int, chunks: Int, workers: Int
    /// Floats per scratch slot: `points` padded [tiles × channels] matrices (or `atLeast`, if larger).
    let slotFloats: Int

    init(_ g: ConvGeometry, atLeast: Int = 0) {
        m = winogradTile(g); points = (m + 2) * (m + 2)
        th = (g.oh + m - 1) / m; tw = (g.ow + m - 1) / m; tilesPerImage = th * tw
        // Chunks hold about the same number of output pixels whatever the tile.
        imagesPerChunk = Tensors.imagesPerChunk(n: g.n, pixels: tilesPerImage, target: winogradChunkTiles * 4 / (m * m))
        chunks = (g.n + imagesPerChunk - 1) / imagesPerChunk
        workers = min(Threads.count, chunks)
        slotFloats = max(points * (imagesPerChunk * tilesPerImage * max(g.ci, g.co) + winogradPad), atLeast)
    }

    /// Calls body(worker, images, tiles) for every chunk, chunks split across workers.
    @inline(__always)
    func forEachChunk(_ n: Int, _ body: (Int, Range<Int>, Int) -> Void) {
        parallelRanges(chunks) { worker, chunkRange in
            for chunk in chunkRange {
                let images = (chunk * imagesPerChunk)..<min(n, (chunk + 1) * imagesPerChunk)
                body(worker, images, images.count * tilesPerImage)
            }
        }
    }
}

/// Whether the Winograd kernel handles this geometry.
public nonisolated(unsafe) var winogradEnabled = true

/// Target tiles per chunk, counted in 2×2 output tiles (a chunk of 4×4 tiles holds a quarter as many).
public nonisolated(unsafe) var winogradChunkTiles = 512

/// The output tile side for every Winograd layer, 2 or 4; nil: `winogradTile(_:)` chooses per layer.
public nonisolated(unsafe) var winogradTileOverride: Int?

/// The output tile side for a layer: 4×4 tiles where the map is at least 8×8, 2×2 on smaller maps (a 4×4 tile
/// on a 4×4 map would pad most of its 6×6 input window).
public func winogradTile(_ g: ConvGeometry) -> Int {
    if let t = winogradTileOverride { return t }
    return g.oh >= 8 && g.ow >= 8 ? 4 : 2
}

/// Floats between consecutive V_ξ / M_ξ matrices beyond their size, so the 16 streams do not alias in cache.
public nonisolated(unsafe) var winogradPad = 48

public func winogradApplies(_ g: ConvGeometry) -> Bool {
    winogradEnabled && g.kh == 3 && g.kw == 3 && g.stride == 1 && g.padding == 1 && g.groups == 1
        && g.ci % 8 == 0 && g.co % 8 == 0
}

/// Calls body(c, o) for every input channel c and every block of 8 output channels o..<o + 8, input channels split
/// across kernel threads: the loop of the vectorised weight transforms and of their adjoint.
@inline(__always)
func forEachWeightBlock(ci: Int, co: Int, _ body: (Int, Int) -> Void) {
    parallelRanges(ci, minPerWorker: max(1, 2048 / co)) { _, inputs in
        for c in inputs {
            var o = 0
            while o < co { body(c, o); o += 8 }
        }
    }
}

/// The kernels w [Co][Ci][3][3] as [Ci][9][Co] (one OpenBLAS transpose), so the weight transforms read and write
/// 8 output channels at a time.
func kernelsByInput(_ w: UnsafePointer<Float>, ci: Int, co: Int) -> Tensor {
    let t = Tensor(uninitialized: [ci, 9, co])
    cblas_somatcopy(CblasRowMajor, CblasTrans, Int32(co), Int32(ci * 9), 1, w, Int32(ci * 9), t.data, Int32(co))
    return t
}

/// U_ξ[ci][co] = (G·w[co][ci]·Gᵀ)[i][j], stored [16][Ci][Co]; 8 output channels per vector, input channels split
/// across kernel threads. `winogradWeightsReference` is the same map one weight at a time.
func winogradWeights(_ w: UnsafePointer<Float>, ci: Int, co: Int, _ u: UnsafeMutablePointer<Float>) {
    precondition(co % 8 == 0, "winogradWeights: Co \(co) is not a multiple of 8")
    // (a, b, d) ↦ (a, (a + b + d)/2, (a − b + d)/2, d): G applied to a column of three.
    @inline(__always) func g4(_ a: V8, _ b: V8, _ d: V8) -> (V8, V8, V8, V8) {
        let half = V8(repeating: 0.5)
        return (a, half * (a + b + d), half * (a - b + d), d)
    }
    let kt = kernelsByInput(w, ci: ci, co: co)
    let k = kt.data, step = ci * co
    forEachWeightBlock(ci: ci, co: co) { c, o in
        @inline(__always) func ld(_ j: Int) -> V8 { load8(k + (c * 9 + j) * co + o) }
        // Columns of G·k (4×3), then each row of that through G again.
        let c0 = g4(ld(0), ld(3), ld(6)), c1 = g4(ld(1), ld(4), ld(7)), c2 = g4(ld(2), ld(5), ld(8))
        @inline(__always) func row(_ i: Int, _ a: V8, _ b: V8, _ d: V8) {
            let r = g4(a, b, d), base = u + (i * 4 * ci + c) * co + o
            store8(r.0, base); store8(r.1, base + step); store8(r.2, base + 2 * step); store8(r.3, base + 3 * step)
        }
        row(0, c0.0, c1.0, c2.0); row(1, c0.1, c1.1, c2.1); row(2, c0.2, c1.2, c2.2); row(3, c0.3, c1.3, c2.3)
    }
}

/// The transformed weights U [(m + 2)², Ci, Co] of kernels `w` [Co, Ci, 3, 3] for output tile m (2 or 4), by the
/// vectorised transform or, with `reference`, its plain one-weight-at-a-time reference (a test holds them equal).
public func winogradWeightTransform(_ w: Tensor, tile m: Int, reference: Bool = false) -> Tensor {
    precondition(w.rank == 4 && w.shape[2] == 3 && w.shape[3] == 3 && w.shape[0] % 8 == 0 && (m == 2 || m == 4),
                 "winogradWeightTransform: needs [Co, Ci, 3, 3] kernels with Co a multiple of 8 and tile 2 or 4, got \(w.shape), \(m)")
    let co = w.shape[0], ci = w.shape[1]
    let u = Tensor(uninitialized: [(m + 2) * (m + 2), ci, co])
    switch (m, reference) {
    case (2, false): winogradWeights(w.data, ci: ci, co: co, u.data)
    case (2, true): winogradWeightsReference(w.data, ci: ci, co: co, u.data)
    case (_, false): winogradWeights4(w.data, ci: ci, co: co, u.data)
    default: winogradWeights4Reference(w.data, ci: ci, co: co, u.data)
    }
    return u
}

/// dW += the adjoint of the weight transform applied to dU [(m + 2)², Ci, Co] (what the weight gradient ends with), by
/// the vectorised kernel or, with `reference`, its plain reference (a test holds them equal).
public func winogradWeightAdjoint(_ du: Tensor, tile m: Int, addingTo dw: Tensor, reference: Bool = false) {
    let co = dw.shape[0], ci = dw.shape[1]
    precondition(dw.rank == 4 && dw.shape[2] == 3 && dw.shape[3] == 3 && co % 8 == 0 && (m == 2 || m == 4)
                 && du.shape == [(m + 2) * (m + 2), ci, co],
                 "winogradWeightAdjoint: needs dU [(m+2)², Ci, Co] and dW [Co, Ci, 3, 3] with Co a multiple of 8, got \(du.shape), \(dw.shape), tile \(m)")
    if reference { winogradWeightAdjointReference(du.data, tile: m, ci: ci, co: co, dw.data) }
    else { winogradWeightAdjointAdd(du.data, tile: m, ci: ci, co: co, dw.data) }
}

/// `winogradWeights` one weight at a time: the plain reference its test holds it to.
func winogradWeightsReference(_ w: UnsafePointer<Float>, ci: Int, co: Int, _ u: UnsafeMutablePointer<Float>) {
    @inline(__always) func g4(_ a: Float, _ b: Float, _ d: Float) -> (Float, Float, Float, Float) {
        (a, 0.5 * (a + b + d), 0.5 * (a - b + d), d)
    }
    for o in 0..<co {
        for c in 0..<ci {
            let k = w + (o * ci + c) * 9
            let c0 = g4(k[0], k[3], k[6]), c1 = g4(k[1], k[4], k[7]), c2 = g4(k[2], k[5], k[8])
            @inline(__always) func row(_ i: Int, _ a: Float, _ b: Float, _ d: Float) {
                let r = g4(a, b, d), base = u + (i * 4 * ci + c) * co + o
                base[0] = r.0; base[ci * co] = r.1; base[2 * ci * co] = r.2; base[3 * ci * co] = r.3
            }
            row(0, c0.0, c1.0, c2.0); row(1, c0.1, c1.1, c2.1); row(2, c0.2, c1.2, c2.2); row(3, c0.3, c1.3, c2.3)
        }
    }
}

/// y = beta·y + conv3×3(x, w) with stride 1, padding 1; each chunk then applies `epilogue` to its images' rows.
func winogradForward(_ x: UnsafePointer<Float>, _ g: ConvGeometry, weight w: UnsafePointer<Float>,
                     y: UnsafeMutablePointer<Float>, beta: Float, epilogue: ConvEpilogue? = nil) {
    let ci = g.ci, co = g.co
    let plan = WinogradPlan(g)
    let u = Tensor(uninitialized: [plan.points, ci, co])
    if plan.m == 4 { winogradWeights4(w, ci: ci, co: co, u.data) } else { winogradWeights(w, ci: ci, co: co, u.data) }
    let scratch = Scratch.shared.reserve(workers: plan.workers, slots: 2, count: plan.slotFloats)
    let up = u.data
    plan.forEachChunk(g.n) { worker, images, T in
        let v = scratch[worker][0], m = scratch[worker][1]
        if plan.m == 4 {
            winogradInputTransform4(x, g, images: images, th: plan.th, tw: plan.tw, v: v, tiles: T)
        } else {
            winogradInputTransform(x, g, images: images, th: plan.th, tw: plan.tw, v: v, tiles: T)
        }
        for xi in 0..<plan.points {
            gemm(transA: false, transB: false, m: T, n: co, k: ci, a: v + xi * (T * ci + winogradPad), lda: ci,
                 b: up + xi * ci * co, ldb: co, beta: 0, c: m + xi * (T * co + winogradPad), ldc: co,
                 parallel: false)
        }
        if plan.m == 4 {
            winogradOutputTransform4(m, g, images: images, th: plan.th, tw: plan.tw, tiles: T, y: y, beta: beta)
        } else {
            winogradOutputTransform(m, g, images: images, th: plan.th, tw: plan.tw, tiles: T, y: y, beta: beta)
        }
        epilogue?.apply(y, images: images, g)
    }
}

/// Calls body(t, image, ty, tx) for the tiles of `images` in order, t counting from 0.
@inline(__always)
func forEachTile(_ images: Range<Int>, th: Int, tw: Int, _ body: (Int, Int, Int, Int) -> Void) {
    var t = 0
    for img in images {
        for ty in 0..<th {
            for tx in 0..<tw {
                body(t, img, ty, tx)
                t += 1
            }
        }
    }
}

/// Channels c..<c+8 of pixel (iy, ix) of a channels-last image of h×w×C, or zeros outside it; `inside` promises
/// the pixel is in the image (a tile away from every border), skipping the test.
@inline(__always)
func loadPixel8(_ image: UnsafePointer<Float>, h: Int, w: Int, C: Int, _ iy: Int, _ ix: Int, _ c: Int, inside: Bool) -> V8 {
    if inside || (iy >= 0 && iy < h && ix >= 0 && ix < w) { return load8(image + (iy * w + ix) * C + c) }
    return V8(repeating: 0)
}

/// Writes (or, with `accumulate`, adds) channels c..<c+8 of output pixel (oy, ox) of a channels-last image of
/// h×w×C, skipping pixels outside it (a partial tile's); `inside` promises the pixel is in the image.
@inline(__always)
func storePixel8(_ val: V8, _ image: UnsafeMutablePointer<Float>, h: Int, w: Int, C: Int, _ oy: Int, _ ox: Int, _ c: Int,
                 inside: Bool, accumulate: Bool) {
    guard inside || (oy < h && ox < w) else { return }
    let p = image + (oy * w + ox) * C + c
    store8(accumulate ? load8(p) + val : val, p)
}

/// V_ξ[t][c] = (Bᵀ d_t B)[i][j] for every tile t of the chunk, d_t the zero-padded 4×4 input window.
@inline(__always)
func winogradInputTransform(_ x: UnsafePointer<Float>, _ g: ConvGeometry, images: Range<Int>, th: Int, tw: Int,
                            v: UnsafeMutablePointer<Float>, tiles T: Int) {
    let C = g.ci, stride = T * C + winogradPad
    forEachTile(images, th: th, tw: tw) { t, img, ty, tx in
        let xi = x + img * g.h * g.w * C
        let y0 = 2 * ty - 1, x0 = 2 * tx - 1
        let interior = y0 >= 0 && x0 >= 0 && y0 + 4 <= g.h && x0 + 4 <= g.w
        var c = 0
        while c < C {
            @inline(__always) func ld(_ r: Int, _ s: Int) -> V8 {
                loadPixel8(xi, h: g.h, w: g.w, C: C, y0 + r, x0 + s, c, inside: interior)
            }
            let base = v + t * C + c
            // Column s of Bᵀ d, for each s; then row r of (Bᵀ d) B.
            @inline(__always) func column(_ s: Int) -> (V8, V8, V8, V8) {
                let d0 = ld(0, s), d1 = ld(1, s), d2 = ld(2, s), d3 = ld(3, s)
                return (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
            }
            let c0 = column(0), c1 = column(1), c2 = column(2), c3 = column(3)
            @inline(__always) func row(_ r: Int, _ b0: V8, _ b1: V8, _ b2: V8, _ b3: V8) {
                store8(b0 - b2, base + (4 * r + 0) * stride)
                store8(b1 + b2, base + (4 * r + 1) * stride)
                store8(b2 - b1, base + (4 * r + 2) * stride)
                store8(b1 - b3, base + (4 * r + 3) * stride)
            }
            row(0, c0.0, c1.0, c2.0, c3.0)
            row(1, c0.1, c1.1, c2.1, c3.1)
            row(2, c0.2, c1.2, c2.2, c3.2)
            row(3, c0.3, c1.3, c2.3, c3.3)
            c += 8
        }
    }
}

/// y tile = beta·y + Aᵀ M_t A, writing only the outputs inside the image.
@inline(__always)
func winogradOutputTransform(_ m: UnsafePointer<Float>, _ g: ConvGeometry, images: Range<Int>, th: Int, tw: Int,
                             tiles T: Int, y: UnsafeMutablePointer<Float>, beta: Float) {
    let C = g.co, stride = T * C + winogradPad
    forEachTile(images, th: th, tw: tw) { t, img, ty, tx in
        let yi = y + img * g.oh * g.ow * C
        let full = 2 * ty + 2 <= g.oh && 2 * tx + 2 <= g.ow
        var c = 0
        while c < C {
            let base = m + t * C + c
            // Aᵀ M, column j: (m0 + m1 + m2, m1 − m2 − m3).
            @inline(__always) func column(_ j: Int) -> (V8, V8) {
                let m0 = load8(base + j * stride), m1 = load8(base + (4 + j) * stride)
                let m2 = load8(base + (8 + j) * stride), m3 = load8(base + (12 + j) * stride)
                return (m0 + m1 + m2, m1 - m2 - m3)
            }
            let a0 = column(0), a1 = column(1), a2 = column(2), a3 = column(3)
            let o00 = a0.0 + a1.0 + a2.0, o01 = a1.0 - a2.0 - a3.0
            let o10 = a0.1 + a1.1 + a2.1, o11 = a1.1 - a2.1 - a3.1
            @inline(__always) func put(_ r: Int, _ s: Int, _ val: V8) {
                storePixel8(val, yi, h: g.oh, w: g.ow, C: C, 2 * ty + r, 2 * tx + s, c, inside: full, accumulate: beta != 0)
            }
            put(0, 0, o00); put(0, 1, o01); put(1, 0, o10); put(1, 1, o11)
            c += 8
        }
    }
}

// MARK: - Weight gradient

/// dW += ∂L/∂W for y = conv3×3(x, W): per chunk, V from x as in the forward pass and
/// dM_ξ = (A·dY_t·Aᵀ)[i][j] (the adjoint of the output transform), then dU_ξ += V_ξᵀ·dM_ξ (16 sgemms), and
/// finally dW = Gᵀ·dU·G (the adjoint of the weight transform). Workers keep their own dU.
func winogradWeightGradient(_ x: UnsafePointer<Float>, _ g: ConvGeometry, dy: UnsafePointer<Float>,
                            dw: UnsafeMutablePointer<Float>) {
    let ci = g.ci, co = g.co
    let probe = WinogradPlan(g)
    let uCount = probe.points * ci * co
    let plan = WinogradPlan(g, atLeast: uCount)
    let scratch = Scratch.shared.reserve(workers: plan.workers, slots: 3, count: plan.slotFloats)
    var used = [Bool](repeating: false, count: plan.workers)
    used.withUnsafeMutableBufferPointer { usedFlags in
        for w in 0..<plan.workers { scratch[w][2].update(repeating: 0, count: uCount) }
        plan.forEachChunk(g.n) { worker, images, T in
            usedFlags[worker] = true
            let v = scratch[worker][0], dm = scratch[worker][1], du = scratch[worker][2]
            if plan.m == 4 {
                winogradInputTransform4(x, g, images: images, th: plan.th, tw: plan.tw, v: v, tiles: T)
                winogradOutputAdjoint4(dy, g, images: images, th: plan.th, tw: plan.tw, tiles: T, dm: dm)
            } else {
                winogradInputTransform(x, g, images: images, th: plan.th, tw: plan.tw, v: v, tiles: T)
                winogradOutputAdjoint(dy, g, images: images, th: plan.th, tw: plan.tw, tiles: T, dm: dm)
            }
            for xi in 0..<plan.points {
                gemm(transA: true, transB: false, m: ci, n: co, k: T, a: v + xi * (T * ci + winogradPad), lda: ci,
                     b: dm + xi * (T * co + winogradPad), ldb: co, beta: 1, c: du + xi * ci * co, ldc: co,
                     parallel: false)
            }
        }
    }
    let total = scratch[0][2]
    for w in 1..<plan.workers where used[w] { accumulate(total, scratch[w][2], uCount) }
    winogradWeightAdjointAdd(total, tile: plan.m, ci: ci, co: co, dw)
}

/// dW[o][c] += Gᵀ·dU·G for the transformed-weight gradient dU [(m + 2)², Ci, Co] (the adjoint of the weight
/// transform): 8 output channels per vector, input channels across threads, into [Ci][9][Co]; then one OpenBLAS
/// transpose back to [Co][Ci][3][3] and one addition per weight. `winogradWeightAdjointReference` is the same map one
/// weight at a time.
func winogradWeightAdjointAdd(_ du: UnsafePointer<Float>, tile m: Int, ci: Int, co: Int, _ dw: UnsafeMutablePointer<Float>) {
    precondition(co % 8 == 0, "winogradWeightAdjointAdd: Co \(co) is not a multiple of 8")
    let byInput = Tensor(uninitialized: [ci, 9, co]), byOutput = Tensor(uninitialized: [co, ci * 9])
    let out = byInput.data, step = ci * co
    // Gᵀ applied to four values (F(2×2)) and to six (F(4×4)), as in the reference.
    @inline(__always) func gt3(_ u0: V8, _ u1: V8, _ u2: V8, _ u3: V8) -> (V8, V8, V8) {
        let half = V8(repeating: 0.5)
        return (u0 + half * (u1 + u2), half * (u1 - u2), half * (u1 + u2) + u3)
    }
    @inline(__always) func gt6(_ u0: V8, _ u1: V8, _ u2: V8, _ u3: V8, _ u4: V8, _ u5: V8) -> (V8, V8, V8) {
        let four = V8(repeating: 4), six = V8(repeating: 6), twelve = V8(repeating: 12), t24 = V8(repeating: 24)
        return (u0 / four - (u1 + u2) / six + (u3 + u4) / t24, (u2 - u1) / six + (u3 - u4) / twelve, (u3 + u4 - u1 - u2) / six + u5)
    }
    forEachWeightBlock(ci: ci, co: co) { c, o in
        let p = du + c * co + o, k = out + c * 9 * co + o
        @inline(__always) func put(_ a: Int, _ r: (V8, V8, V8)) {
            store8(r.0, k + 3 * a * co); store8(r.1, k + (3 * a + 1) * co); store8(r.2, k + (3 * a + 2) * co)
        }
        // Column j of Gᵀ·dU from dU's column j; then each of its three rows through Gᵀ.
        if m == 2 {
            @inline(__always) func column(_ j: Int) -> (V8, V8, V8) {
                gt3(load8(p + j * step), load8(p + (4 + j) * step), load8(p + (8 + j) * step), load8(p + (12 + j) * step))
            }
            let h0 = column(0), h1 = column(1), h2 = column(2), h3 = column(3)
            put(0, gt3(h0.0, h1.0, h2.0, h3.0)); put(1, gt3(h0.1, h1.1, h2.1, h3.1)); put(2, gt3(h0.2, h1.2, h2.2, h3.2))
        } else {
            @inline(__always) func column(_ j: Int) -> (V8, V8, V8) {
                gt6(load8(p + j * step), load8(p + (6 + j) * step), load8(p + (12 + j) * step),
                    load8(p + (18 + j) * step), load8(p + (24 + j) * step), load8(p + (30 + j) * step))
            }
            let h0 = column(0), h1 = column(1), h2 = column(2), h3 = column(3), h4 = column(4), h5 = column(5)
            put(0, gt6(h0.0, h1.0, h2.0, h3.0, h4.0, h5.0)); put(1, gt6(h0.1, h1.1, h2.1, h3.1, h4.1, h5.1))
            put(2, gt6(h0.2, h1.2, h2.2, h3.2, h4.2, h5.2))
        }
    }
    cblas_somatcopy(CblasRowMajor, CblasTrans, Int32(ci * 9), Int32(co), 1, out, Int32(co), byOutput.data, Int32(ci * 9))
    accumulate(dw, byOutput.data, co * ci * 9)
}

/// `winogradWeightAdjointAdd` one weight at a time: the plain reference its test holds it to.
func winogradWeightAdjointReference(_ total: UnsafePointer<Float>, tile m: Int, ci: Int, co: Int, _ dw: UnsafeMutablePointer<Float>) {
    if m == 4 {
        winogradWeightAdjoint4(total, ci: ci, co: co, dw)
        return
    }
    // dW[o][c] += Gᵀ·dU·G, with dU[i][j] = total[(4i + j)·Ci·Co + c·Co + o]. Gᵀ applied to four values:
    // (u0, u1, u2, u3) ↦ (u0 + (u1 + u2)/2, (u1 − u2)/2, (u1 + u2)/2 + u3).
    @inline(__always) func gt3(_ u0: Float, _ u1: Float, _ u2: Float, _ u3: Float) -> (Float, Float, Float) {
        (u0 + 0.5 * (u1 + u2), 0.5 * (u1 - u2), 0.5 * (u1 + u2) + u3)
    }
    for o in 0..<co { for c in 0..<ci {
        @inline(__always) func du(_ i: Int, _ j: Int) -> Float { total[((4 * i + j) * ci + c) * co + o] }
        // H = Gᵀ·dU (3×4), column by column; then dW row a = Gᵀ applied to row a of H.
        let h0 = gt3(du(0, 0), du(1, 0), du(2, 0), du(3, 0)), h1 = gt3(du(0, 1), du(1, 1), du(2, 1), du(3, 1))
        let h2 = gt3(du(0, 2), du(1, 2), du(2, 2), du(3, 2)), h3 = gt3(du(0, 3), du(1, 3), du(2, 3), du(3, 3))
        let r0 = gt3(h0.0, h1.0, h2.0, h3.0), r1 = gt3(h0.1, h1.1, h2.1, h3.1), r2 = gt3(h0.2, h1.2, h2.2, h3.2)
        let k = dw + (o * ci + c) * 9
        k[0] += r0.0; k[1] += r0.1; k[2] += r0.2
        k[3] += r1.0; k[4] += r1.1; k[5] += r1.2
        k[6] += r2.0; k[7] += r2.1; k[8] += r2.2
    } }
}

/// dM_ξ[t][c] = (A·dY_t·Aᵀ)[i][j], dY_t the 2×2 output-gradient tile (zero outside the image).
@inline(__always)
func winogradOutputAdjoint(_ dy: UnsafePointer<Float>, _ g: ConvGeometry, images: Range<Int>, th: Int, tw: Int,
                           tiles T: Int, dm: UnsafeMutablePointer<Float>) {
    let C = g.co, stride = T * C + winogradPad
    forEachTile(images, th: th, tw: tw) { t, img, ty, tx in
        let di = dy + img * g.oh * g.ow * C
        let full = 2 * ty + 2 <= g.oh && 2 * tx + 2 <= g.ow
        var c = 0
        while c < C {
            @inline(__always) func ld(_ r: Int, _ s: Int) -> V8 {
                loadPixel8(di, h: g.oh, w: g.ow, C: C, 2 * ty + r, 2 * tx + s, c, inside: full)
            }
            let y00 = ld(0, 0), y01 = ld(0, 1), y10 = ld(1, 0), y11 = ld(1, 1)
            // e_r = dY_r·Aᵀ = (y_r0, y_r0 + y_r1, y_r0 − y_r1, −y_r1); dM = (e0, e0 + e1, e0 − e1, −e1)
            let e0 = (y00, y00 + y01, y00 - y01, -y01), e1 = (y10, y10 + y11, y10 - y11, -y11)
            let base = dm + t * C + c
            @inline(__always) func row(_ i: Int, _ r: (V8, V8, V8, V8)) {
                store8(r.0, base + (4 * i) * stride); store8(r.1, base + (4 * i + 1) * stride)
                store8(r.2, base + (4 * i + 2) * stride); store8(r.3, base + (4 * i + 3) * stride)
            }
            row(0, e0)
            row(1, (e0.0 + e1.0, e0.1 + e1.1, e0.2 + e1.2, e0.3 + e1.3))
            row(2, (e0.0 - e1.0, e0.1 - e1.1, e0.2 - e1.2, e0.3 - e1.3))
            row(3, (-e1.0, -e1.1, -e1.2, -e1.3))
            c += 8
        }
    }
}

// MARK: - F(4×4, 3×3) transforms

/// Bᵀ applied to six values (a column or row of a 6×6 input tile).
@inline(__always)
func winogradB4(_ d0: V8, _ d1: V8, _ d2: V8, _ d3: V8, _ d4: V8, _ d5: V8) -> (V8, V8, V8, V8, V8, V8) {
    let four = V8(repeating: 4), five = V8(repeating: 5), two = V8(repeating: 2)
    return (four * d0 - five * d2 + d4,
            d3 + d4 - four * (d1 + d2),
            four * (d1 - d2) - d3 + d4,
            two * (d3 - d1) - d2 + d4,
            two * (d1 - d3) - d2 + d4,
            four * d1 - five * d3 + d5)
}

/// V_ξ[t][c] = (Bᵀ d_t B)[i][j], ξ = 6·i + j, for every tile t of the chunk, d_t the zero-padded 6×6 input
/// window at (4·ty − 1, 4·tx − 1).
@inline(__always)
func winogradInputTransform4(_ x: UnsafePointer<Float>, _ g: ConvGeometry, images: Range<Int>, th: Int, tw: Int,
                             v: UnsafeMutablePointer<Float>, tiles T: Int) {
    let C = g.ci, stride = T * C + winogradPad
    forEachTile(images, th: th, tw: tw) { t, img, ty, tx in
        let xi = x + img * g.h * g.w * C
        let y0 = 4 * ty - 1, x0 = 4 * tx - 1
        let interior = y0 >= 0 && x0 >= 0 && y0 + 6 <= g.h && x0 + 6 <= g.w
        var c = 0
        while c < C {
            @inline(__always) func ld(_ r: Int, _ s: Int) -> V8 {
                loadPixel8(xi, h: g.h, w: g.w, C: C, y0 + r, x0 + s, c, inside: interior)
            }
            // Column s of Bᵀ d, for each s; then row i of (Bᵀ d) B is Bᵀ applied to row i of Bᵀ d.
            @inline(__always) func column(_ s: Int) -> (V8, V8, V8, V8, V8, V8) {
                winogradB4(ld(0, s), ld(1, s), ld(2, s), ld(3, s), ld(4, s), ld(5, s))
            }
            let k0 = column(0), k1 = column(1), k2 = column(2), k3 = column(3), k4 = column(4), k5 = column(5)
            let base = v + t * C + c
            @inline(__always) func row(_ i: Int, _ r: (V8, V8, V8, V8, V8, V8)) {
                let o = winogradB4(r.0, r.1, r.2, r.3, r.4, r.5)
                store8(o.0, base + (6 * i + 0) * stride); store8(o.1, base + (6 * i + 1) * stride)
                store8(o.2, base + (6 * i + 2) * stride); store8(o.3, base + (6 * i + 3) * stride)
                store8(o.4, base + (6 * i + 4) * stride); store8(o.5, base + (6 * i + 5) * stride)
            }
            row(0, (k0.0, k1.0, k2.0, k3.0, k4.0, k5.0))
            row(1, (k0.1, k1.1, k2.1, k3.1, k4.1, k5.1))
            row(2, (k0.2, k1.2, k2.2, k3.2, k4.2, k5.2))
            row(3, (k0.3, k1.3, k2.3, k3.3, k4.3, k5.3))
            row(4, (k0.4, k1.4, k2.4, k3.4, k4.4, k5.4))
            row(5, (k0.5, k1.5, k2.5, k3.5, k4.5, k5.5))
            c += 8
        }
    }
}

/// Aᵀ applied to six values.
@inline(__always)
func winogradA4(_ m0: V8, _ m1: V8, _ m2: V8, _ m3: V8, _ m4: V8, _ m5: V8) -> (V8, V8, V8, V8) {
    let p = m1 + m2, q = m1 - m2, r = m3 + m4, s = m3 - m4
    return (m0 + p + r, q + V8(repeating: 2) * s, p + V8(repeating: 4) * r, q + V8(repeating: 8) * s + m5)
}

/// y tile = beta·y + Aᵀ M_t A (4×4 outputs), writing only the outputs inside the image.
@inline(__always)
func winogradOutputTransform4(_ m: UnsafePointer<Float>, _ g: ConvGeometry, images: Range<Int>, th: Int, tw: Int,
                              tiles T: Int, y: UnsafeMutablePointer<Float>, beta: Float) {
    let C = g.co, stride = T * C + winogradPad
    forEachTile(images, th: th, tw: tw) { t, img, ty, tx in
        let yi = y + img * g.oh * g.ow * C
        let full = 4 * ty + 4 <= g.oh && 4 * tx + 4 <= g.ow
        var c = 0
        while c < C {
            let base = m + t * C + c
            // Aᵀ M, column j, then each of its four rows through Aᵀ again.
            @inline(__always) func column(_ j: Int) -> (V8, V8, V8, V8) {
                winogradA4(load8(base + j * stride), load8(base + (6 + j) * stride), load8(base + (12 + j) * stride),
                           load8(base + (18 + j) * stride), load8(base + (24 + j) * stride), load8(base + (30 + j) * stride))
            }
            let a0 = column(0), a1 = column(1), a2 = column(2), a3 = column(3), a4 = column(4), a5 = column(5)
            @inline(__always) func put(_ r: Int, _ o: (V8, V8, V8, V8)) {
                @inline(__always) func one(_ s: Int, _ val: V8) {
                    storePixel8(val, yi, h: g.oh, w: g.ow, C: C, 4 * ty + r, 4 * tx + s, c, inside: full, accumulate: beta != 0)
                }
                one(0, o.0); one(1, o.1); one(2, o.2); one(3, o.3)
            }
            put(0, winogradA4(a0.0, a1.0, a2.0, a3.0, a4.0, a5.0))
            put(1, winogradA4(a0.1, a1.1, a2.1, a3.1, a4.1, a5.1))
            put(2, winogradA4(a0.2, a1.2, a2.2, a3.2, a4.2, a5.2))
            put(3, winogradA4(a0.3, a1.3, a2.3, a3.3, a4.3, a5.3))
            c += 8
        }
    }
}

typealias Six = (Float, Float, Float, Float, Float, Float)

/// G applied to three values.
@inline(__always)
func winogradG4(_ a: Float, _ b: Float, _ d: Float) -> Six {
    (a / 4, -(a + b + d) / 6, -(a - b + d) / 6, a / 24 + b / 12 + d / 6, a / 24 - b / 12 + d / 6, d)
}

/// U_ξ[ci][co] = (G·w[co][ci]·Gᵀ)[i][j], ξ = 6·i + j, stored [36][Ci][Co]; 8 output channels per vector, input
/// channels split across kernel threads. `winogradWeights4Reference` is the same map one weight at a time.
func winogradWeights4(_ w: UnsafePointer<Float>, ci: Int, co: Int, _ u: UnsafeMutablePointer<Float>) {
    precondition(co % 8 == 0, "winogradWeights4: Co \(co) is not a multiple of 8")
    // winogradG4 on 8 lanes, the same operations in the same order.
    @inline(__always) func g6(_ a: V8, _ b: V8, _ d: V8) -> (V8, V8, V8, V8, V8, V8) {
        let four = V8(repeating: 4), six = V8(repeating: 6), twelve = V8(repeating: 12), t24 = V8(repeating: 24)
        return (a / four, -(a + b + d) / six, -(a - b + d) / six, a / t24 + b / twelve + d / six, a / t24 - b / twelve + d / six, d)
    }
    let kt = kernelsByInput(w, ci: ci, co: co)
    let k = kt.data, step = ci * co
    forEachWeightBlock(ci: ci, co: co) { c, o in
        @inline(__always) func ld(_ j: Int) -> V8 { load8(k + (c * 9 + j) * co + o) }
        // Columns of G·k (6×3), then each row of that through G again.
        let c0 = g6(ld(0), ld(3), ld(6)), c1 = g6(ld(1), ld(4), ld(7)), c2 = g6(ld(2), ld(5), ld(8))
        @inline(__always) func row(_ i: Int, _ a: V8, _ b: V8, _ d: V8) {
            let r = g6(a, b, d), p = u + (6 * i * ci + c) * co + o
            store8(r.0, p); store8(r.1, p + step); store8(r.2, p + 2 * step)
            store8(r.3, p + 3 * step); store8(r.4, p + 4 * step); store8(r.5, p + 5 * step)
        }
        row(0, c0.0, c1.0, c2.0); row(1, c0.1, c1.1, c2.1); row(2, c0.2, c1.2, c2.2)
        row(3, c0.3, c1.3, c2.3); row(4, c0.4, c1.4, c2.4); row(5, c0.5, c1.5, c2.5)
    }
}

/// `winogradWeights4` one weight at a time: the plain reference its test holds it to.
func winogradWeights4Reference(_ w: UnsafePointer<Float>, ci: Int, co: Int, _ u: UnsafeMutablePointer<Float>) {
    for o in 0..<co {
        for c in 0..<ci {
            let k = w + (o * ci + c) * 9
            let c0 = winogradG4(k[0], k[3], k[6]), c1 = winogradG4(k[1], k[4], k[7]), c2 = winogradG4(k[2], k[5], k[8])
            @inline(__always) func row(_ i: Int, _ a: Float, _ b: Float, _ d: Float) {
                let r = winogradG4(a, b, d), p = u + (6 * i * ci + c) * co + o, step = ci * co
                p[0] = r.0; p[step] = r.1; p[2 * step] = r.2; p[3 * step] = r.3; p[4 * step] = r.4; p[5 * step] = r.5
            }
            row(0, c0.0, c1.0, c2.0); row(1, c0.1, c1.1, c2.1); row(2, c0.2, c1.2, c2.2)
            row(3, c0.3, c1.3, c2.3); row(4, c0.4, c1.4, c2.4); row(5, c0.5, c1.5, c2.5)
        }
    }
}

/// dM_ξ[t][c] = (A·dY_t·Aᵀ)[i][j], ξ = 6·i + j, dY_t the 4×4 output-gradient tile (zero outside the image).
@inline(__always)
func winogradOutputAdjoint4(_ dy: UnsafePointer<Float>, _ g: ConvGeometry, images: Range<Int>, th: Int, tw: Int,
                            tiles T: Int, dm: UnsafeMutablePointer<Float>) {
    let C = g.co, stride = T * C + winogradPad
    // A applied to four values: (y0, y0 + y1 + y2 + y3, y0 − y1 + y2 − y3, y0 + 2y1 + 4y2 + 8y3, y0 − 2y1 + 4y2 − 8y3, y3).
    @inline(__always) func a6(_ y0: V8, _ y1: V8, _ y2: V8, _ y3: V8) -> (V8, V8, V8, V8, V8, V8) {
        let e = y0 + y2, o = y1 + y3, e4 = y0 + V8(repeating: 4) * y2, o8 = V8(repeating: 2) * y1 + V8(repeating: 8) * y3
        return (y0, e + o, e - o, e4 + o8, e4 - o8, y3)
    }
    forEachTile(images, th: th, tw: tw) { t, img, ty, tx in
        let di = dy + img * g.oh * g.ow * C
        let full = 4 * ty + 4 <= g.oh && 4 * tx + 4 <= g.ow
        var c = 0
        while c < C {
            @inline(__always) func ld(_ r: Int, _ s: Int) -> V8 {
                loadPixel8(di, h: g.oh, w: g.ow, C: C, 4 * ty + r, 4 * tx + s, c, inside: full)
            }
            // Each row of dY through A (dY·Aᵀ), then each of the six columns through A.
            let r0 = a6(ld(0, 0), ld(0, 1), ld(0, 2), ld(0, 3)), r1 = a6(ld(1, 0), ld(1, 1), ld(1, 2), ld(1, 3))
            let r2 = a6(ld(2, 0), ld(2, 1), ld(2, 2), ld(2, 3)), r3 = a6(ld(3, 0), ld(3, 1), ld(3, 2), ld(3, 3))
            let base = dm + t * C + c
            @inline(__always) func column(_ j: Int, _ y0: V8, _ y1: V8, _ y2: V8, _ y3: V8) {
                let e = a6(y0, y1, y2, y3)
                store8(e.0, base + j * stride); store8(e.1, base + (6 + j) * stride)
                store8(e.2, base + (12 + j) * stride); store8(e.3, base + (18 + j) * stride)
                store8(e.4, base + (24 + j) * stride); store8(e.5, base + (30 + j) * stride)
            }
            column(0, r0.0, r1.0, r2.0, r3.0); column(1, r0.1, r1.1, r2.1, r3.1)
            column(2, r0.2, r1.2, r2.2, r3.2); column(3, r0.3, r1.3, r2.3, r3.3)
            column(4, r0.4, r1.4, r2.4, r3.4); column(5, r0.5, r1.5, r2.5, r3.5)
            c += 8
        }
    }
}

/// dW[o][c] += Gᵀ·dU·G for dU[i][j] = du[((6i + j)·Ci + c)·Co + o] (the adjoint of `winogradWeights4`), one weight
/// at a time: the F(4×4) half of `winogradWeightAdjointReference`.
func winogradWeightAdjoint4(_ du: UnsafePointer<Float>, ci: Int, co: Int, _ dw: UnsafeMutablePointer<Float>) {
    // Gᵀ applied to six values.
    @inline(__always) func gt(_ u: Six) -> (Float, Float, Float) {
        (u.0 / 4 - (u.1 + u.2) / 6 + (u.3 + u.4) / 24, (u.2 - u.1) / 6 + (u.3 - u.4) / 12, (u.3 + u.4 - u.1 - u.2) / 6 + u.5)
    }
    let step = ci * co
    for o in 0..<co { for c in 0..<ci {
        let p = du + c * co + o
        // Column j of Gᵀ·dU (3 values), from dU's column j.
        @inline(__always) func column(_ j: Int) -> (Float, Float, Float) {
            gt((p[j * step], p[(6 + j) * step], p[(12 + j) * step], p[(18 + j) * step], p[(24 + j) * step], p[(30 + j) * step]))
        }
        let h0 = column(0), h1 = column(1), h2 = column(2), h3 = column(3), h4 = column(4), h5 = column(5)
        let r0 = gt((h0.0, h1.0, h2.0, h3.0, h4.0, h5.0)), r1 = gt((h0.1, h1.1, h2.1, h3.1, h4.1, h5.1))
        let r2 = gt((h0.2, h1.2, h2.2, h3.2, h4.2, h5.2))
        let k = dw + (o * ci + c) * 9
        k[0] += r0.0; k[1] += r0.1; k[2] += r0.2
        k[3] += r1.0; k[4] += r1.1; k[5] += r1.2
        k[6] += r2.0; k[7] += r2.1; k[8] += r2.2
    } }
}
