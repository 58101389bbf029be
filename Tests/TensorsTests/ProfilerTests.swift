// The profiler's split of a step: each part is counted once (a kernel inside another part's region counts toward
// the outer one), the parts a ResNet block's step runs are all seen, and nothing is counted when it is off.
import Foundation
import Tensors
import XCTest

final class ProfilerTests: XCTestCase {
    /// conv (stride 2, im2col path for both gradients) → batch norm with ReLU → conv (stride 1: transposed
    /// convolution and Winograd) → residual sum with ReLU, forward and backward.
    func blockStep(_ g: inout Generator) {
        let x = Tensor.randn([4, 12, 12, 8], generator: &g)
        let w1 = Tensor.randn([16, 8, 3, 3], generator: &g), w2 = Tensor.randn([16, 16, 3, 3], generator: &g)
        let gamma = Tensor(shape: [16], repeating: 1), beta = Tensor(zeros: [16])
        for t in [x, w1, w2, gamma, beta] { t.requiresGrad = true }
        let mean = Tensor(zeros: [16]), variance = Tensor(shape: [16], repeating: 1)
        let h = batchNorm(conv2d(x, weight: w1, stride: 2, padding: 1), weight: gamma, bias: beta,
                          runningMean: mean, runningVar: variance, training: true, fuseReLU: true)
        let y = addRelu(conv2d(h, weight: w2, padding: 1), h)
        y.sum().backward()
    }

    func testPartsAreCountedOnceAndAllSeen() {
        var g = Generator(seed: 3)
        Profiler.reset()
        blockStep(&g)
        XCTAssertEqual(Profiler.seconds.reduce(0, +), 0, "nothing is counted while the profiler is off")
        Profiler.isEnabled = true
        defer { Profiler.isEnabled = false; Profiler.reset() }
        let t0 = Profiler.now()
        for _ in 0..<3 { blockStep(&g) }
        let elapsed = Profiler.now() - t0
        let parts: [Profiler.Part] = [.convolutionForward, .convolutionDataGradient, .convolutionWeightGradient, .batchNorm, .elementwise]
        for p in parts { XCTAssertGreaterThan(Profiler.seconds[p.rawValue], 0, "\(p.label) is seen") }
        XCTAssertEqual(Profiler.seconds[Profiler.Part.optimizer.rawValue], 0)
        XCTAssertLessThanOrEqual(Profiler.seconds.reduce(0, +), elapsed, "the parts never overlap: \(Profiler.seconds) in \(elapsed) s")
    }

    /// A lap shared among parts hands out exactly the time since the previous lap.
    func testLapsShareTheirTime() {
        Profiler.reset()
        Profiler.isEnabled = true
        defer { Profiler.isEnabled = false; Profiler.reset() }
        let t0 = Profiler.now()
        Profiler.laps { laps in
            while Profiler.now() - t0 < 0.01 {}
            laps.lap([(.batchNorm, 3), (.elementwise, 1), (.optimizer, 0)])
            // A kernel inside the region counts toward it, not toward its own part.
            Profiler.measure(.convolutionForward) { while Profiler.now() - t0 < 0.02 {} }
            laps.lap(.convolutionWeightGradient)
        }
        let elapsed = Profiler.now() - t0
        let s = Profiler.seconds
        XCTAssertEqual(s[Profiler.Part.batchNorm.rawValue], 3 * s[Profiler.Part.elementwise.rawValue], accuracy: 1e-12)
        XCTAssertEqual(s[Profiler.Part.optimizer.rawValue], 0)
        XCTAssertEqual(s[Profiler.Part.convolutionForward.rawValue], 0)
        XCTAssertGreaterThanOrEqual(s[Profiler.Part.convolutionWeightGradient.rawValue], 0.005)
        XCTAssertLessThanOrEqual(s.reduce(0, +), elapsed)
        XCTAssertGreaterThanOrEqual(s.reduce(0, +), 0.019, "the region ran at least 20 ms after t0, less the few microseconds before it opened")
    }
}
