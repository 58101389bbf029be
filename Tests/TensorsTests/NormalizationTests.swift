import TestSupport
import Tensors
import XCTest

final class NormalizationTests: XCTestCase {
    func testTrainingStatisticsAndRunningUpdate() {
        // Two channels, four rows: channel 0 = 1, 2, 3, 4; channel 1 = 10, 10, 10, 14.
        let x = Tensor(shape: [1, 2, 2, 2], values: [1, 10, 2, 10, 3, 10, 4, 14])
        let rm = Tensor(zeros: [2]), rv = Tensor(shape: [2], repeating: 1)
        let w = Tensor(shape: [2], values: [2, 1]), b = Tensor(shape: [2], values: [0, 1])
        let y = batchNorm(x, weight: w, bias: b, runningMean: rm, runningVar: rv, training: true)
        // channel 0: mean 2.5, biased var 1.25; channel 1: mean 11, biased var 3
        let e: Float = 1e-5
        let expected0 = [1, 2, 3, 4].map { 2 * ($0 - 2.5) / (1.25 + e).squareRoot() }
        let expected1 = [10, 10, 10, 14].map { ($0 - 11) / (3 + e).squareRoot() + 1 }
        assertClose(y.array, [expected0[0], expected1[0], expected0[1], expected1[1],
                              expected0[2], expected1[2], expected0[3], expected1[3]], rtol: 1e-5)
        // running: (1 − 0.1)·old + 0.1·batch, with the unbiased variance (5/3 and 4)
        assertClose(rm.array, [0.25, 1.1], rtol: 1e-6)
        assertClose(rv.array, [0.9 + 0.1 * 5 / 3, 0.9 + 0.4], rtol: 1e-6)
        // eval uses the running statistics
        let z = batchNorm(x, weight: w, bias: b, runningMean: rm, runningVar: rv, training: false)
        XCTAssertEqual(z.data[0], 2 * (1 - 0.25) / (rv.data[0] + e).squareRoot(), accuracy: 1e-5)
        assertClose(rm.array, [0.25, 1.1], rtol: 1e-6, "eval leaves running stats alone")
    }

    func testGradientsTrainEvalAndFusedReLU() {
        let x = randomTensor([3, 4, 3, 5], seed: 1)
        let w = randomTensor([5], seed: 2).affine(scale: 0.5, shift: 1), b = randomTensor([5], seed: 3)
        let rm = Tensor(zeros: [5]), rv = Tensor(shape: [5], repeating: 1)
        gradCheck([x, w, b], eps: 1e-2, rtol: 2e-2, "batch norm train") {
            batchNorm($0[0], weight: $0[1], bias: $0[2], runningMean: rm, runningVar: rv, training: true)
        }
        gradCheck([x, w, b], eps: 1e-2, "batch norm eval") {
            batchNorm($0[0], weight: $0[1], bias: $0[2], runningMean: rm, runningVar: rv, training: false)
        }
        // Fused ReLU equals BN followed by ReLU, value and gradient.
        let fused = batchNorm(x, weight: w, bias: b, runningMean: rm, runningVar: rv, training: false, fuseReLU: true)
        let plain = batchNorm(x, weight: w, bias: b, runningMean: rm, runningVar: rv, training: false).relu()
        assertClose(fused, plain)
        // Training mode: the fused backward equals the unfused composite's backward (both analytic; finite
        // differences through a ReLU kink after a batch-coupled op are unreliable).
        var grads: [[[Float]]] = []
        for fuse in [true, false] {
            for t in [x, w, b] { t.requiresGrad = true; t.zeroGrad() }
            let y = fuse
                ? batchNorm(x, weight: w, bias: b, runningMean: rm, runningVar: rv, training: true, fuseReLU: true)
                : batchNorm(x, weight: w, bias: b, runningMean: rm, runningVar: rv, training: true).relu()
            (y * randomTensor(y.shape, seed: 9)).sum().backward()
            grads.append([x.grad!.array, w.grad!.array, b.grad!.array])
        }
        for k in 0..<3 { assertClose(grads[0][k], grads[1][k], rtol: 1e-4, atol: 1e-5, "fused input \(k)") }
    }

    /// The kernels run 8 channels at a time with a scalar tail: 27 channels exercise both, against a plain
    /// per-element reference in Double (forward, running statistics, and the three gradients), plain and fused.
    /// Batch norm with the residual sum (and ReLU) in its pass gives the values, gradients and running statistics
    /// of the ops in turn, addRelu(BN(x), r) or r + BN(x), bit for bit, in training and evaluation mode.
    func testResidualInThePassEqualsOpsInTurn() {
        for training in [true, false] {
            for relu in [false, true] {
                var results: [[[Float]]] = []
                for fused in [true, false] {
                    let x = randomTensor([4, 5, 3, 12], seed: 41), r = randomTensor([4, 5, 3, 12], seed: 42)
                    let w = randomTensor([12], seed: 43), b = randomTensor([12], seed: 44)
                    for t in [x, r, w, b] { t.requiresGrad = true }
                    let rm = randomTensor([12], seed: 45), rv = Tensor(shape: [12], values: (0..<12).map { 0.5 + Float($0) * 0.1 })
                    let z: Tensor
                    if fused {
                        z = batchNorm(x, weight: w, bias: b, runningMean: rm, runningVar: rv, training: training, fuseReLU: relu, residual: r)
                    } else {
                        let y = batchNorm(x, weight: w, bias: b, runningMean: rm, runningVar: rv, training: training)
                        z = relu ? addRelu(y, r) : r + y
                    }
                    z.backward(gradient: randomTensor(z.shape, seed: 46))
                    results.append([z.array, x.grad!.array, r.grad!.array, w.grad!.array, b.grad!.array, rm.array, rv.array])
                }
                for k in 0..<results[0].count {
                    XCTAssertEqual(results[0][k], results[1][k], "training \(training), relu \(relu), part \(k)")
                }
            }
        }
    }

    func testWideChannelsAgainstScalarReference() {
        let (N, H, W, C) = (3, 5, 7, 27)
        let M = N * H * W, eps = 1e-5
        let x = randomTensor([N, H, W, C], seed: 11, std: 2), dy = randomTensor([N, H, W, C], seed: 12)
        let w = randomTensor([C], seed: 13).affine(scale: 0.5, shift: 1), b = randomTensor([C], seed: 14)
        for fuse in [false, true] {
            let rm = Tensor(zeros: [C]), rv = Tensor(shape: [C], repeating: 1)
            for t in [x, w, b] { t.requiresGrad = true; t.zeroGrad() }
            let y = batchNorm(x, weight: w, bias: b, runningMean: rm, runningVar: rv, training: true, fuseReLU: fuse)
            (y * dy).sum().backward()
            var wantY = [Float](repeating: 0, count: M * C), wantDX = wantY
            var wantDW = [Float](repeating: 0, count: C), wantDB = wantDW, wantRM = wantDW, wantRV = wantDW
            for c in 0..<C {
                var mean = 0.0, v = 0.0
                for r in 0..<M { mean += Double(x.data[r * C + c]) }
                mean /= Double(M)
                for r in 0..<M { let d = Double(x.data[r * C + c]) - mean; v += d * d }
                let biased = v / Double(M), inv = 1 / (biased + eps).squareRoot()
                wantRM[c] = Float(0.1 * mean)
                wantRV[c] = Float(0.9 + 0.1 * v / Double(M - 1))
                var g = [Double](repeating: 0, count: M), sumG = 0.0, sumGX = 0.0
                for r in 0..<M {
                    let xhat = (Double(x.data[r * C + c]) - mean) * inv
                    let out = Double(w.data[c]) * xhat + Double(b.data[c])
                    wantY[r * C + c] = Float(fuse ? max(out, 0) : out)
                    g[r] = fuse && out <= 0 ? 0 : Double(dy.data[r * C + c])
                    sumG += g[r]; sumGX += g[r] * xhat
                }
                wantDB[c] = Float(sumG); wantDW[c] = Float(sumGX)
                for r in 0..<M {
                    let xhat = (Double(x.data[r * C + c]) - mean) * inv
                    wantDX[r * C + c] = Float(Double(w.data[c]) * inv * (g[r] - sumG / Double(M) - xhat * sumGX / Double(M)))
                }
            }
            let tag = fuse ? "fused" : "plain"
            assertClose(y.array, wantY, rtol: 1e-4, atol: 1e-5, "\(tag) output")
            assertClose(rm.array, wantRM, rtol: 1e-5, atol: 1e-6, "\(tag) running mean")
            assertClose(rv.array, wantRV, rtol: 1e-5, atol: 1e-6, "\(tag) running variance")
            assertClose(x.grad!.array, wantDX, rtol: 1e-3, atol: 1e-5, "\(tag) input gradient")
            assertClose(w.grad!.array, wantDW, rtol: 1e-4, atol: 1e-4, "\(tag) weight gradient")
            assertClose(b.grad!.array, wantDB, rtol: 1e-4, atol: 1e-4, "\(tag) bias gradient")
        }
    }
}
