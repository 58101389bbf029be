import TestSupport
import Tensors
import XCTest

final class ConvolutionTests: XCTestCase {
    struct Case { let n, h, w, ci, co, k, stride, pad, groups: Int }
    let cases = [
        Case(n: 2, h: 7, w: 5, ci: 3, co: 4, k: 3, stride: 1, pad: 1, groups: 1),
        Case(n: 3, h: 9, w: 8, ci: 4, co: 6, k: 3, stride: 2, pad: 1, groups: 1),
        Case(n: 2, h: 6, w: 7, ci: 5, co: 3, k: 3, stride: 2, pad: 0, groups: 1),
        Case(n: 2, h: 5, w: 5, ci: 6, co: 4, k: 3, stride: 1, pad: 1, groups: 2),
        Case(n: 2, h: 6, w: 6, ci: 4, co: 4, k: 3, stride: 1, pad: 1, groups: 4),  // depthwise, direct kernel
        Case(n: 3, h: 7, w: 6, ci: 19, co: 19, k: 3, stride: 2, pad: 1, groups: 19),  // depthwise stride 2
        Case(n: 2, h: 5, w: 5, ci: 5, co: 5, k: 5, stride: 1, pad: 1, groups: 5),  // depthwise 5×5, partial windows
        Case(n: 2, h: 4, w: 4, ci: 3, co: 6, k: 3, stride: 1, pad: 1, groups: 3),  // channel multiplier 2: im2col
        Case(n: 2, h: 5, w: 4, ci: 3, co: 6, k: 1, stride: 1, pad: 0, groups: 3),  // grouped pointwise, no im2col
        Case(n: 3, h: 4, w: 5, ci: 12, co: 9, k: 1, stride: 1, pad: 0, groups: 3),
        Case(n: 3, h: 5, w: 6, ci: 4, co: 5, k: 1, stride: 1, pad: 0, groups: 1),  // pointwise fast path
        Case(n: 2, h: 7, w: 7, ci: 4, co: 8, k: 1, stride: 2, pad: 0, groups: 1),  // projection shortcut
        Case(n: 1, h: 6, w: 5, ci: 2, co: 3, k: 5, stride: 3, pad: 2, groups: 1),
        // Winograd F(2×2, 3×3): stride 1, padding 1, channels multiples of 8; odd sizes leave partial tiles.
        Case(n: 3, h: 7, w: 5, ci: 8, co: 16, k: 3, stride: 1, pad: 1, groups: 1),
        Case(n: 2, h: 8, w: 8, ci: 16, co: 8, k: 3, stride: 1, pad: 1, groups: 1),
        Case(n: 5, h: 3, w: 4, ci: 16, co: 16, k: 3, stride: 1, pad: 1, groups: 1),
    ]

    /// Fast kernel vs the direct reference, forward and both backward products, with small chunks and
    /// several threads so chunk boundaries and per-worker accumulation are exercised.
    func testMatchesDirectConvolution() {
        let savedThreads = Threads.count, savedChunk = convChunkPixels, savedTiles = winogradChunkTiles
        defer { Threads.set(savedThreads); convChunkPixels = savedChunk; winogradChunkTiles = savedTiles }
        for (ci, c) in cases.enumerated() {
            for (threads, chunk) in [(1, 1024), (2, 20), (3, 1)] {
                Threads.set(threads)
                convChunkPixels = chunk
                winogradChunkTiles = chunk
                let x = randomTensor([c.n, c.h, c.w, c.ci], seed: UInt64(ci))
                let w = randomTensor([c.co, c.ci / c.groups, c.k, c.k], seed: UInt64(100 + ci))
                let b = randomTensor([c.co], seed: UInt64(200 + ci))
                x.requiresGrad = true; w.requiresGrad = true; b.requiresGrad = true
                let y = conv2d(x, weight: w, bias: b, stride: c.stride, padding: c.pad, groups: c.groups)
                let dy = randomTensor(y.shape, seed: UInt64(300 + ci))
                y.backward(gradient: dy)
                let ref = conv2dReference(x: x.array, xShape: x.shape, weight: w.array, wShape: w.shape,
                                          bias: b.array, stride: c.stride, padding: c.pad, groups: c.groups,
                                          dy: dy.array)
                let tag = "case \(ci) threads \(threads) chunk \(chunk)"
                assertClose(y.array, ref.y, rtol: 1e-4, atol: 1e-4, "\(tag) y")
                assertClose(x.grad!.array, ref.dx, rtol: 1e-4, atol: 1e-4, "\(tag) dx")
                assertClose(w.grad!.array, ref.dw, rtol: 1e-4, atol: 1e-4, "\(tag) dW")
                assertClose(b.grad!.array, ref.db, rtol: 1e-4, atol: 1e-4, "\(tag) db")
            }
        }
    }

    /// Both Winograd tiles, F(2×2, 3×3) and F(4×4, 3×3), against the direct reference on every Winograd case
    /// (partial tiles at the borders, several chunks and threads), forward and both gradients.
    func testWinogradTilesMatchDirectConvolution() {
        let savedThreads = Threads.count, savedTiles = winogradChunkTiles
        defer { Threads.set(savedThreads); winogradChunkTiles = savedTiles; winogradTileOverride = nil }
        let shapes = cases.filter { c in
            winogradApplies(ConvGeometry(input: [c.n, c.h, c.w, c.ci], weight: [c.co, c.ci / c.groups, c.k, c.k], stride: c.stride,
                                         padding: c.pad, groups: c.groups))
        } + [Case(n: 3, h: 13, w: 10, ci: 16, co: 24, k: 3, stride: 1, pad: 1, groups: 1)]
        XCTAssertEqual(shapes.count, 4)
        for tile in [2, 4] {
            winogradTileOverride = tile
            for (i, c) in shapes.enumerated() {
                for (threads, chunk) in [(1, 512), (3, 1)] {
                    Threads.set(threads)
                    winogradChunkTiles = chunk
                    let x = randomTensor([c.n, c.h, c.w, c.ci], seed: UInt64(40 + i))
                    let w = randomTensor([c.co, c.ci, 3, 3], seed: UInt64(50 + i), std: 0.3)
                    x.requiresGrad = true; w.requiresGrad = true
                    let y = conv2d(x, weight: w, padding: 1)
                    let dy = randomTensor(y.shape, seed: UInt64(60 + i))
                    y.backward(gradient: dy)
                    let ref = conv2dReference(x: x.array, xShape: x.shape, weight: w.array, wShape: w.shape, bias: nil,
                                              stride: 1, padding: 1, groups: 1, dy: dy.array)
                    let tag = "F(\(tile)×\(tile), 3×3) case \(i) threads \(threads) chunk \(chunk)"
                    assertClose(y.array, ref.y, rtol: 1e-4, atol: 1e-4, "\(tag) y")
                    assertClose(x.grad!.array, ref.dx, rtol: 1e-4, atol: 1e-4, "\(tag) dx")
                    assertClose(w.grad!.array, ref.dw, rtol: 1e-4, atol: 1e-4, "\(tag) dW")
                }
            }
        }
    }

    /// The Winograd path and the im2col path each agree with the direct reference, forward and backward, on a
    /// ResNet-like layer (each path to the reference, not to each other: their float rounding adds).
    /// The vectorised Winograd weight transforms and their adjoints (8 output channels per vector, input channels
    /// across threads) equal their one-weight-at-a-time references bit for bit, for both tiles, at 1 and 3 threads.
    func testWinogradWeightTransformsEqualTheirReferences() {
        let saved = Threads.count
        defer { Threads.set(saved) }
        for threads in [1, 3] {
            Threads.set(threads)
            for (co, ci) in [(8, 1), (16, 3), (24, 40), (64, 16)] {
                let w = randomTensor([co, ci, 3, 3], seed: UInt64(co * 100 + ci))
                for tile in [2, 4] {
                    XCTAssertEqual(winogradWeightTransform(w, tile: tile).array,
                                   winogradWeightTransform(w, tile: tile, reference: true).array, "Co \(co), Ci \(ci), tile \(tile)")
                    // The adjoint, added onto the same starting gradient.
                    let du = randomTensor([(tile + 2) * (tile + 2), ci, co], seed: UInt64(co + ci + tile))
                    let fast = randomTensor([co, ci, 3, 3], seed: 9), plain = fast.copy()
                    winogradWeightAdjoint(du, tile: tile, addingTo: fast)
                    winogradWeightAdjoint(du, tile: tile, addingTo: plain, reference: true)
                    XCTAssertEqual(fast.array, plain.array, "adjoint: Co \(co), Ci \(ci), tile \(tile)")
                }
            }
        }
    }

    func testWinogradMatchesIm2col() {
        defer { winogradEnabled = true }
        let x = randomTensor([4, 10, 9, 16], seed: 21), w = randomTensor([24, 16, 3, 3], seed: 22, std: 0.2)
        let dy = randomTensor([4, 10, 9, 24], seed: 23)
        let ref = conv2dReference(x: x.array, xShape: x.shape, weight: w.array, wShape: w.shape, bias: nil,
                                  stride: 1, padding: 1, groups: 1, dy: dy.array)
        for enabled in [true, false] {
            winogradEnabled = enabled
            x.requiresGrad = true; w.requiresGrad = true; x.zeroGrad(); w.zeroGrad()
            let y = conv2d(x, weight: w, padding: 1)
            y.backward(gradient: dy)
            let path = enabled ? "Winograd" : "im2col"
            // Float sums err relative to their terms' size, not to each result's: the tolerance is scaled by the
            // largest reference value (the weight gradient sums 360 products of unit-variance values: about 50).
            for (name, got, want) in [("y", y.array, ref.y), ("dx", x.grad!.array, ref.dx), ("dW", w.grad!.array, ref.dw)] {
                let scale = want.map(abs).max() ?? 1
                assertClose(got, want, rtol: 1e-4, atol: 1e-5 * scale, "\(path) \(name) (largest |value| \(scale))")
            }
        }
        winogradEnabled = true
        let g = ConvGeometry(input: [1, 8, 8, 16], weight: [16, 16, 3, 3], stride: 1, padding: 1, groups: 1)
        XCTAssertTrue(winogradApplies(g), "the ResNet 3×3 layer shape takes the Winograd path")
    }

    /// The direct depthwise kernel and the per-group im2col path it replaces agree (bench engine compares them).
    func testDepthwiseDirectMatchesPerGroupProducts() {
        defer { depthwiseDirectEnabled = true }
        // 24 channels: the forward kernel's 16- and 8-wide steps; strides 2 and 1, 3×3 and 5×5 windows.
        for (stride, k) in [(2, 3), (1, 3), (1, 5)] {
            let x = randomTensor([4, 9, 8, 24], seed: 31), w = randomTensor([24, 1, k, k], seed: 32, std: 0.3)
            var results: [[[Float]]] = []
            for enabled in [true, false] {
                depthwiseDirectEnabled = enabled
                x.requiresGrad = true; w.requiresGrad = true; x.zeroGrad(); w.zeroGrad()
                let y = conv2d(x, weight: w, stride: stride, padding: 1, groups: 24)
                y.backward(gradient: randomTensor(y.shape, seed: 33))
                results.append([y.array, x.grad!.array, w.grad!.array])
            }
            for part in 0..<3 { assertClose(results[0][part], results[1][part], rtol: 1e-4, atol: 1e-5, "stride \(stride), \(k)×\(k), part \(part)") }
        }
        depthwiseDirectEnabled = true
        let g = ConvGeometry(input: [1, 8, 8, 24], weight: [24, 1, 3, 3], stride: 1, padding: 1, groups: 24)
        XCTAssertTrue(depthwiseApplies(g), "MobileNetV2's depthwise layer takes the direct kernel")
    }

    /// The register-blocked depthwise forward (16, 8 and single channels per step) equals its plain loop bit for
    /// bit: channel counts that leave each remainder, strides 1 and 2, 3×3 and 5×5 windows cut by the padding,
    /// with a bias or not, at 1 and 3 threads.
    func testDepthwiseForwardEqualsItsReference() {
        let savedThreads = Threads.count
        defer { Threads.set(savedThreads) }
        var seed: UInt64 = 900
        for threads in [1, 3] {
            Threads.set(threads)
            for (c, k, stride, pad) in [(16, 3, 1, 1), (27, 3, 2, 1), (40, 5, 1, 2), (3, 3, 1, 0), (57, 5, 2, 1)] {
                seed += 3
                let x = randomTensor([3, 9, 7, c], seed: seed), w = randomTensor([c, 1, k, k], seed: seed + 1)
                for bias in [nil, randomTensor([c], seed: seed + 2)] as [Tensor?] {
                    let fast = withoutGradients { conv2d(x, weight: w, bias: bias, stride: stride, padding: pad, groups: c) }
                    let plain = depthwiseForwardReference(x, weight: w, stride: stride, padding: pad, bias: bias)
                    XCTAssertEqual(fast.shape, plain.shape)
                    XCTAssertEqual(fast.array, plain.array, "C \(c), \(k)×\(k), stride \(stride), padding \(pad), bias \(bias != nil), \(threads) threads")
                }
            }
        }
    }

    /// conv2dFused (inference: batch norm's affine map, a residual and a ReLU applied by each chunk as it writes)
    /// equals the separate ops bit for bit on every kernel path (Winograd's two tiles, im2col, pointwise with its
    /// row chunks, depthwise), with a bias or not, with a channel shuffle after or not, at 1 and 3 threads with
    /// small chunks.
    func testFusedEpilogueEqualsSeparateOps() {
        let savedThreads = Threads.count, savedChunk = convChunkPixels, savedTiles = winogradChunkTiles
        defer { Threads.set(savedThreads); convChunkPixels = savedChunk; winogradChunkTiles = savedTiles; winogradTileOverride = nil }
        convChunkPixels = 20; winogradChunkTiles = 8
        var seed: UInt64 = 200
        func next() -> UInt64 { seed += 1; return seed }
        withoutGradients {
            for threads in [1, 3] {
                Threads.set(threads)
                for (tile, c) in [(4, cases[cases.count - 3]), (2, cases[cases.count - 2])] + cases.map({ (nil, $0) }) {
                    winogradTileOverride = tile
                    let x = randomTensor([c.n, c.h, c.w, c.ci], seed: next())
                    let w = randomTensor([c.co, c.ci / c.groups, c.k, c.k], seed: next(), std: 0.3)
                    for bias in [nil, randomTensor([c.co], seed: next())] as [Tensor?] {
                        let gamma = randomTensor([c.co], seed: next()), beta = randomTensor([c.co], seed: next())
                        let mean = randomTensor([c.co], seed: next())
                        let variance = Tensor(shape: [c.co], values: randomTensor([c.co], seed: next()).array.map { 0.5 + $0 * $0 })
                        let plain = conv2d(x, weight: w, bias: bias, stride: c.stride, padding: c.pad, groups: c.groups)
                        let bn = batchNorm(plain, weight: gamma, bias: beta, runningMean: mean, runningVar: variance, training: false)
                        let residual = randomTensor(plain.shape, seed: next())
                        let (scale, shift) = batchNormEvalAffine(weight: gamma, bias: beta, runningMean: mean, runningVar: variance)
                        for (r, relu) in [(nil, false), (nil, true), (residual, false), (residual, true)] as [(Tensor?, Bool)] {
                            let fused = conv2dFused(x, weight: w, bias: bias, stride: c.stride, padding: c.pad, groups: c.groups,
                                                    scale: scale, shift: shift, residual: r, relu: relu)
                            let expected: Tensor
                            switch (r, relu) {
                            case (nil, false): expected = bn
                            case (nil, true): expected = bn.relu()
                            case (let r?, false): expected = r + bn
                            case (let r?, true): expected = addRelu(bn, r)
                            }
                            XCTAssertEqual(fused.array, expected.array, "\(c), tile \(tile.map(String.init) ?? "auto"), bias \(bias != nil), residual \(r != nil), relu \(relu), \(threads) threads")
                        }
                        for groups in [2, 3] where c.co % groups == 0 {   // ShuffleNet V1's conv1 · bn1 · ReLU · shuffle
                            let fused = conv2dFused(x, weight: w, bias: bias, stride: c.stride, padding: c.pad, groups: c.groups,
                                                    scale: scale, shift: shift, residual: residual, relu: true, shuffleGroups: groups)
                            XCTAssertEqual(fused.array, addRelu(bn, residual).channelShuffled(groups: groups).array,
                                           "\(c), tile \(tile.map(String.init) ?? "auto"), bias \(bias != nil), shuffled in \(groups) groups, \(threads) threads")
                        }
                    }
                }
            }
        }
    }

    func testOutputShapeAndFiniteDifferences() {
        let x = randomTensor([2, 6, 5, 3], seed: 1), w = randomTensor([4, 3, 3, 3], seed: 2, std: 0.5)
        let b = randomTensor([4], seed: 3)
        XCTAssertEqual(conv2d(x, weight: w, stride: 2, padding: 1).shape, [2, 3, 3, 4])
        gradCheck([x, w, b], eps: 1e-2, "conv stride 2") {
            conv2d($0[0], weight: $0[1], bias: $0[2], stride: 2, padding: 1)
        }
        let wg = randomTensor([6, 1, 3, 3], seed: 4, std: 0.5)
        let xg = randomTensor([2, 5, 5, 6], seed: 5)
        gradCheck([xg, wg], eps: 1e-2, "depthwise") { conv2d($0[0], weight: $0[1], padding: 1, groups: 6) }
        let xw = randomTensor([2, 5, 6, 8], seed: 7), ww = randomTensor([8, 8, 3, 3], seed: 8, std: 0.3)
        gradCheck([xw, ww], eps: 1e-2, "winograd") { conv2d($0[0], weight: $0[1], padding: 1) }
        let w1 = randomTensor([5, 3, 1, 1], seed: 6)
        gradCheck([x, w1], eps: 1e-2, "pointwise") { conv2d($0[0], weight: $0[1]) }
    }
}
