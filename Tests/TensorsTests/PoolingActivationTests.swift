import TestSupport
import Tensors
import XCTest

final class PoolingActivationTests: XCTestCase {
    /// Max pooling without the tape (the maximum only, vectorised) gives the values of the path that keeps each
    /// window's argmax, for windows that overlap, pad and leave a channel tail beyond a multiple of 8.
    func testMaxPoolWithoutTapeEqualsRecordedPath() {
        for (k, s, p, c) in [(2, 2, 0, 64), (3, 2, 1, 13), (3, 1, 1, 8)] {
            let x = randomTensor([3, 7, 6, c], seed: UInt64(k * 100 + c))
            x.requiresGrad = true
            let recorded = maxPool2d(x, kernel: k, stride: s, padding: p)
            let plain = withoutGradients { maxPool2d(x, kernel: k, stride: s, padding: p) }
            XCTAssertEqual(plain.array, recorded.array, "kernel \(k) stride \(s) padding \(p) channels \(c)")
        }
    }

    /// Average pooling (images across threads, channels 8 at a time) equals a plain loop over every window, values
    /// and gradients, at 1 and 3 threads, with a channel tail beyond a multiple of 8.
    func testAveragePoolsEqualPlainLoops() {
        let saved = Threads.count
        defer { Threads.set(saved) }
        let (n, h, w, c) = (5, 7, 6, 13)
        let x = randomTensor([n, h, w, c], seed: 21)
        let xs = x.array
        // avgPool2d(kernel 3, stride 2, padding 1), zeros counted, summed window by window in the kernel's order.
        let (oh, ow) = ((h + 2 - 3) / 2 + 1, (w + 2 - 3) / 2 + 1)
        var pooled = [Float](repeating: 0, count: n * oh * ow * c), global = [Float](repeating: 0, count: n * c)
        for i in 0..<n {
            for oy in 0..<oh { for ox in 0..<ow { for ky in 0..<3 { for kx in 0..<3 {
                let iy = 2 * oy - 1 + ky, ix = 2 * ox - 1 + kx
                guard iy >= 0, iy < h, ix >= 0, ix < w else { continue }
                for ch in 0..<c { pooled[((i * oh + oy) * ow + ox) * c + ch] += xs[((i * h + iy) * w + ix) * c + ch] / 9 }
            } } } }
            for p in 0..<(h * w) { for ch in 0..<c { global[i * c + ch] += xs[(i * h * w + p) * c + ch] } }
            for ch in 0..<c { global[i * c + ch] *= 1 / Float(h * w) }
        }
        let gp = randomTensor([n, oh, ow, c], seed: 22), gg = randomTensor([n, c], seed: 23)
        var grads: [[Float]] = []
        for threads in [1, 3] {
            Threads.set(threads)
            x.requiresGrad = true; x.zeroGrad()
            let a = avgPool2d(x, kernel: 3, stride: 2, padding: 1), b = globalAvgPool(x)
            assertClose(a.array, pooled, rtol: 1e-6, atol: 1e-6, "avgPool2d, \(threads) threads")
            XCTAssertEqual(b.array, global, "globalAvgPool, \(threads) threads")
            ((a * gp).sum() + (b * gg).sum()).backward()
            grads.append(x.grad!.array)
        }
        XCTAssertEqual(grads[0], grads[1])
        // The input gradient is the output gradients spread back over each window (and over the whole map).
        var expected = [Float](repeating: 0, count: xs.count)
        let gps = gp.array, ggs = gg.array
        for i in 0..<n {
            for oy in 0..<oh { for ox in 0..<ow { for ky in 0..<3 { for kx in 0..<3 {
                let iy = 2 * oy - 1 + ky, ix = 2 * ox - 1 + kx
                guard iy >= 0, iy < h, ix >= 0, ix < w else { continue }
                for ch in 0..<c { expected[((i * h + iy) * w + ix) * c + ch] += gps[((i * oh + oy) * ow + ox) * c + ch] / 9 }
            } } } }
            for p in 0..<(h * w) { for ch in 0..<c { expected[(i * h * w + p) * c + ch] += ggs[i * c + ch] / Float(h * w) } }
        }
        assertClose(grads[0], expected, rtol: 1e-5, atol: 1e-6, "gradient")
    }

    func testPoolingValues() {
        // one image 4×4, one channel, values 0..15
        let x = Tensor(shape: [1, 4, 4, 1], values: (0..<16).map(Float.init))
        XCTAssertEqual(maxPool2d(x, kernel: 2).array, [5, 7, 13, 15])
        XCTAssertEqual(avgPool2d(x, kernel: 2).array, [2.5, 4.5, 10.5, 12.5])
        XCTAssertEqual(maxPool2d(x, kernel: 3, stride: 2, padding: 1).array, [5, 7, 13, 15])
        XCTAssertEqual(globalAvgPool(x).array, [7.5])
    }

    func testPoolingGradients() {
        // Distinct values keep max pooling away from ties.
        var g = Generator(seed: 1)
        var values = (0..<(2 * 6 * 6 * 3)).map { Float($0) * 0.1 }
        values.shuffle(using: &g)
        let x = Tensor(shape: [2, 6, 6, 3], values: values)
        gradCheck([x], eps: 1e-3, "max pool") { maxPool2d($0[0], kernel: 2) }
        gradCheck([x], eps: 1e-3, "max pool padded") { maxPool2d($0[0], kernel: 3, stride: 2, padding: 1) }
        gradCheck([x], "avg pool") { avgPool2d($0[0], kernel: 3, stride: 2, padding: 1) }
        gradCheck([x], "global avg pool") { globalAvgPool($0[0]) }
    }

    func testActivations() {
        let x = Tensor(shape: [4], values: [-2, -0.5, 0.5, 2])
        XCTAssertEqual(x.relu().array, [0, 0, 0.5, 2])
        XCTAssertEqual(x.leakyRelu(slope: 0.1).array, [-0.2, -0.05, 0.5, 2])
        // values away from 0 so the kinks are not crossed
        let y = randomTensor([3, 5], seed: 2).affine(scale: 1, shift: 0)
        for i in 0..<y.count where abs(y.data[i]) < 0.05 { y.data[i] = 0.3 }
        gradCheck([y], eps: 1e-3, "relu") { $0[0].relu() }
        gradCheck([y], eps: 1e-3, "leaky relu") { $0[0].leakyRelu(slope: 0.2) }
        gradCheck([y], eps: 1e-3, "sigmoid") { $0[0].sigmoid() }
        gradCheck([y], eps: 1e-3, "tanh") { $0[0].tanh() }
    }

    func testSoftmaxFamily() {
        let x = Tensor(shape: [1, 3], values: [1, 2, 3])
        let s = x.softmax()
        let e = [1, 2, 3].map { Float(M_E).pow($0) }
        assertClose(s.array, e.map { $0 / e.reduce(0, +) })
        assertClose(x.logSoftmax().array, s.array.map { log($0) })
        let z = randomTensor([2, 4, 3], seed: 3)
        gradCheck([z], eps: 1e-3, "softmax last") { $0[0].softmax() }
        gradCheck([z], eps: 1e-3, "softmax axis 1") { $0[0].softmax(axis: 1) }
        gradCheck([z], eps: 1e-3, "log softmax last") { $0[0].logSoftmax() }
        gradCheck([z], eps: 1e-3, "log softmax axis 0") { $0[0].logSoftmax(axis: 0) }
        let n = Tensor(shape: [1, 2], values: [3, 4]).l2Normalized()
        assertClose(n.array, [0.6, 0.8])
        gradCheck([z], eps: 1e-3, "l2 normalise") { $0[0].l2Normalized() }
        gradCheck([z], eps: 1e-3, "l2 normalise axis 1") { $0[0].l2Normalized(axis: 1) }
    }

    func testDropout() {
        var g = Generator(seed: 4)
        let x = Tensor(shape: [10_000], repeating: 1, requiresGrad: true)
        let y = x.dropout(p: 0.25, training: true, generator: &g)
        let kept = y.array.filter { $0 != 0 }
        XCTAssertEqual(Double(kept.count) / 10_000, 0.75, accuracy: 0.02)
        XCTAssertTrue(kept.allSatisfy { abs($0 - 1 / 0.75) < 1e-6 })
        y.sum().backward()
        XCTAssertEqual(x.grad!.array, y.array, "gradient is the scaled mask")
        XCTAssertTrue(x.dropout(p: 0.5, training: false, generator: &g) === x)
    }
}

private extension Float {
    func pow(_ p: Float) -> Float { Foundation.pow(self, p) }
}

final class FusedActivationTests: XCTestCase {
    func testAddReluMatchesComposite() {
        let a = randomTensor([2, 3, 4], seed: 1), b = randomTensor([2, 3, 4], seed: 2)
        for i in 0..<a.count where abs(a.data[i] + b.data[i]) < 0.05 { a.data[i] += 0.2 }
        assertClose(addRelu(a, b), (a + b).relu())
        gradCheck([a, b], eps: 1e-3, "addRelu") { addRelu($0[0], $0[1]) }
    }
}
