// Winograd F(2×2, 3×3) convolution for stride-1, padding-1, 3×3 ungrouped layers (Lavin & Gray, 2016).
// Each 2×2 output tile comes from a 4×4 input tile d:  Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A, so a tile costs 16
// multiplications per (Ci, Co) pair instead of 36: 2.25× fewer. Over a chunk of T tiles the elementwise product
// becomes 16 sgemms  M_ξ [T × Co] = V_ξ [T × Ci] · U_ξ [Ci × Co]  (ξ = 4·i + j indexes the 4×4 positions).
//   Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1]   G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1]   Aᵀ = [1 1 1 0; 0 1 −1 −1]
// Transforms run on channels-last vectors of 8 channels (Ci and Co must be multiples of 8).
// The data gradient of such a layer is again such a layer (flipped, transposed kernel), so backward reuses this.

/// Whether the Winograd kernel handles this geometry.
public nonisolated(unsafe) var winogradEnabled = true

/// Target tiles per chunk (each tile is 2×2 output pixels).
public nonisolated(unsafe) var winogradChunkTiles = 512

/// Floats between consecutive V_ξ / M_ξ matrices beyond their size, so the 16 streams do not alias in cache.
public nonisolated(unsafe) var winogradPad = 48

public func winogradApplies(_ g: ConvGeometry) -> Bool {
    winogradEnabled && g.kh == 3 && g.kw == 3 && g.stride == 1 && g.padding == 1 && g.groups == 1
        && g.ci % 8 == 0 && g.co % 8 == 0
}

/// U_ξ[ci][co] = (G·w[co][ci]·Gᵀ)[i][j], stored [16][Ci][Co].
func winogradWeights(_ w: UnsafePointer<Float>, ci: Int, co: Int, _ u: UnsafeMutablePointer<Float>) {
    for o in 0..<co {
        for c in 0..<ci {
            let k = w + (o * ci + c) * 9
            var gg = [Float](repeating: 0, count: 12)  // G·k, 4×3
            for j in 0..<3 {
                let a = k[j], b = k[3 + j], d = k[6 + j]
                gg[j] = a; gg[3 + j] = 0.5 * (a + b + d); gg[6 + j] = 0.5 * (a - b + d); gg[9 + j] = d
            }
            for i in 0..<4 {
                let a = gg[3 * i], b = gg[3 * i + 1], d = gg[3 * i + 2]
                let row = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d]
                for j in 0..<4 { u[((i * 4 + j) * ci + c) * co + o] = row[j] }
            }
        }
    }
}

/// y = beta·y + conv3×3(x, w) with stride 1, padding 1.
func winogradForward(_ x: UnsafePointer<Float>, _ g: ConvGeometry, weight w: UnsafePointer<Float>,
                     y: UnsafeMutablePointer<Float>, beta: Float) {
    let ci = g.ci, co = g.co
    let u = Tensor(uninitialized: [16, ci, co])
    winogradWeights(w, ci: ci, co: co, u.data)
    let th = (g.oh + 1) / 2, tw = (g.ow + 1) / 2, tilesPerImage = th * tw
    let imagesPerChunk = max(1, winogradChunkTiles / tilesPerImage)
    let chunks = (g.n + imagesPerChunk - 1) / imagesPerChunk
    let maxTiles = imagesPerChunk * tilesPerImage
    let workers = min(Threads.count, chunks)
    let scratch = Scratch.shared.reserve(workers: workers, slots: 2, count: 16 * (maxTiles * max(ci, co) + winogradPad))
    let up = u.data
    parallelRanges(chunks) { worker, chunkRange in
        let v = scratch[worker][0], m = scratch[worker][1]
        for chunk in chunkRange {
            let images = (chunk * imagesPerChunk)..<min(g.n, (chunk + 1) * imagesPerChunk)
            let T = images.count * tilesPerImage
            winogradInputTransform(x, g, images: images, th: th, tw: tw, v: v, tiles: T)
            for xi in 0..<16 {
                gemm(transA: false, transB: false, m: T, n: co, k: ci, a: v + xi * (T * ci + winogradPad), lda: ci,
                     b: up + xi * ci * co, ldb: co, beta: 0, c: m + xi * (T * co + winogradPad), ldc: co,
                     parallel: false)
            }
            winogradOutputTransform(m, g, images: images, th: th, tw: tw, tiles: T, y: y, beta: beta)
        }
    }
}

/// V_ξ[t][c] = (Bᵀ d_t B)[i][j] for every tile t of the chunk, d_t the zero-padded 4×4 input window.
@inline(__always)
func winogradInputTransform(_ x: UnsafePointer<Float>, _ g: ConvGeometry, images: Range<Int>, th: Int, tw: Int,
                            v: UnsafeMutablePointer<Float>, tiles T: Int) {
    let C = g.ci, stride = T * C + winogradPad
    var t = 0
    for img in images {
        let xi = x + img * g.h * g.w * C
        for ty in 0..<th {
            for tx in 0..<tw {
                let y0 = 2 * ty - 1, x0 = 2 * tx - 1
                let interior = y0 >= 0 && x0 >= 0 && y0 + 4 <= g.h && x0 + 4 <= g.w
                var c = 0
                while c < C {
                    @inline(__always) func ld(_ r: Int, _ s: Int) -> V8 {
                        let iy = y0 + r, ix = x0 + s
                        if interior || (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) {
                            return load8(xi + (iy * g.w + ix) * C + c)
                        }
                        return V8(repeating: 0)
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
                t += 1
            }
        }
    }
}

/// y tile = beta·y + Aᵀ M_t A, writing only the outputs inside the image.
@inline(__always)
func winogradOutputTransform(_ m: UnsafePointer<Float>, _ g: ConvGeometry, images: Range<Int>, th: Int, tw: Int,
                             tiles T: Int, y: UnsafeMutablePointer<Float>, beta: Float) {
    let C = g.co, stride = T * C + winogradPad
    var t = 0
    for img in images {
        let yi = y + img * g.oh * g.ow * C
        for ty in 0..<th {
            for tx in 0..<tw {
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
                        let oy = 2 * ty + r, ox = 2 * tx + s
                        guard full || (oy < g.oh && ox < g.ow) else { return }
                        let p = yi + (oy * g.ow + ox) * C + c
                        store8(beta == 0 ? val : load8(p) + val, p)
                    }
                    put(0, 0, o00); put(0, 1, o01); put(1, 0, o10); put(1, 1, o11)
                    c += 8
                }
                t += 1
            }
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
    let th = (g.oh + 1) / 2, tw = (g.ow + 1) / 2, tilesPerImage = th * tw
    let imagesPerChunk = max(1, winogradChunkTiles / tilesPerImage)
    let chunks = (g.n + imagesPerChunk - 1) / imagesPerChunk
    let maxTiles = imagesPerChunk * tilesPerImage
    let workers = min(Threads.count, chunks)
    let uCount = 16 * ci * co
    let scratch = Scratch.shared.reserve(workers: workers, slots: 3,
                                         count: max(16 * (maxTiles * max(ci, co) + winogradPad), uCount))
    var used = [Bool](repeating: false, count: workers)
    used.withUnsafeMutableBufferPointer { usedFlags in
        parallelRanges(chunks) { worker, chunkRange in
            usedFlags[worker] = true
            let v = scratch[worker][0], dm = scratch[worker][1], du = scratch[worker][2]
            du.update(repeating: 0, count: uCount)
            for chunk in chunkRange {
                let images = (chunk * imagesPerChunk)..<min(g.n, (chunk + 1) * imagesPerChunk)
                let T = images.count * tilesPerImage
                winogradInputTransform(x, g, images: images, th: th, tw: tw, v: v, tiles: T)
                winogradOutputAdjoint(dy, g, images: images, th: th, tw: tw, tiles: T, dm: dm)
                for xi in 0..<16 {
                    gemm(transA: true, transB: false, m: ci, n: co, k: T, a: v + xi * (T * ci + winogradPad), lda: ci,
                         b: dm + xi * (T * co + winogradPad), ldb: co, beta: 1, c: du + xi * ci * co, ldc: co,
                         parallel: false)
                }
            }
        }
    }
    let total = scratch[0][2]
    for w in 1..<workers where used[w] { accumulate(total, scratch[w][2], uCount) }
    // dW[o][c] += Gᵀ·dU·G, with dU[i][j] = total[(4i + j)·Ci·Co + c·Co + o].
    for o in 0..<co {
        for c in 0..<ci {
            @inline(__always) func du(_ i: Int, _ j: Int) -> Float { total[((4 * i + j) * ci + c) * co + o] }
            let k = dw + (o * ci + c) * 9
            for j in 0..<4 {
                // H = Gᵀ·dU (3×4), column j
                let u0 = du(0, j), u1 = du(1, j), u2 = du(2, j), u3 = du(3, j)
                let h0 = u0 + 0.5 * (u1 + u2), h1 = 0.5 * (u1 - u2), h2 = 0.5 * (u1 + u2) + u3
                // dW[a][b] += Σ_j H[a][j]·G[j][b]
                let gj: (Float, Float, Float) = j == 0 ? (1, 0, 0) : j == 1 ? (0.5, 0.5, 0.5)
                    : j == 2 ? (0.5, -0.5, 0.5) : (0, 0, 1)
                for (a, h) in [(0, h0), (1, h1), (2, h2)] {
                    k[3 * a] += h * gj.0; k[3 * a + 1] += h * gj.1; k[3 * a + 2] += h * gj.2
                }
            }
        }
    }
}

/// dM_ξ[t][c] = (A·dY_t·Aᵀ)[i][j], dY_t the 2×2 output-gradient tile (zero outside the image).
@inline(__always)
func winogradOutputAdjoint(_ dy: UnsafePointer<Float>, _ g: ConvGeometry, images: Range<Int>, th: Int, tw: Int,
                           tiles T: Int, dm: UnsafeMutablePointer<Float>) {
    let C = g.co, stride = T * C + winogradPad
    var t = 0
    for img in images {
        let di = dy + img * g.oh * g.ow * C
        for ty in 0..<th {
            for tx in 0..<tw {
                let full = 2 * ty + 2 <= g.oh && 2 * tx + 2 <= g.ow
                var c = 0
                while c < C {
                    @inline(__always) func ld(_ r: Int, _ s: Int) -> V8 {
                        let oy = 2 * ty + r, ox = 2 * tx + s
                        if full || (oy < g.oh && ox < g.ow) { return load8(di + (oy * g.ow + ox) * C + c) }
                        return V8(repeating: 0)
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
                t += 1
            }
        }
    }
}
