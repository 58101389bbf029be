import TestSupport
import Tensors
import XCTest

final class AutogradTests: XCTestCase {
    func testGradientsAccumulateAcrossUsesAndCalls() {
        let x = Tensor(shape: [3], values: [1, 2, 3], requiresGrad: true)
        // y = Σ (x·x + x) → dy/dx = 2x + 1, and x is used three times.
        ((x * x) + x).sum().backward()
        XCTAssertEqual(x.grad!.array, [3, 5, 7])
        ((x * x) + x).sum().backward()
        XCTAssertEqual(x.grad!.array, [6, 10, 14], "a second backward accumulates")
        x.zeroGrad()
        XCTAssertNil(x.grad)
    }

    func testNoGradientScopeAndDetach() {
        let x = Tensor(shape: [2], values: [1, 2], requiresGrad: true)
        let y = withoutGradients { x * 3 }
        XCTAssertFalse(y.requiresGrad)
        let d = x.detached()
        XCTAssertFalse(d.requiresGrad)
        let z = (x * d).sum()  // d is a constant: dz/dx = d
        z.backward()
        XCTAssertEqual(x.grad!.array, [1, 2])
    }

    func testBackwardFreesTheTape() {
        let x = Tensor(shape: [2], values: [1, 2], requiresGrad: true)
        let h = x * 2
        let loss = h.sum()
        loss.backward()
        XCTAssertTrue(h.isLeaf, "intermediate nodes drop their backward closure after use")
        XCTAssertNil(h.grad, "intermediate gradients are freed")
        XCTAssertEqual(x.grad!.array, [2, 2])
    }

    func testDeepChainDoesNotRecurse() {
        let x = Tensor(shape: [1], values: [1], requiresGrad: true)
        var h = x
        for _ in 0..<20_000 { h = h * 1 }
        h.sum().backward()
        XCTAssertEqual(x.grad!.item, 1)
    }

    func testGeneratorIsDeterministicAndStreamsDiffer() {
        var a = Generator(seed: 42), b = Generator(seed: 42)
        XCTAssertEqual((0..<5).map { _ in a.next() }, (0..<5).map { _ in b.next() })
        var s1 = Generator(seed: 1, stream: [0, 3, 1]), s2 = Generator(seed: 1, stream: [0, 3, 2])
        XCTAssertNotEqual(s1.next(), s2.next())
        var n = Generator(seed: 3)
        let samples = (0..<20_000).map { _ in Double(n.normal()) }
        let mean = samples.reduce(0, +) / 20_000
        let variance = samples.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 20_000
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(variance, 1, accuracy: 0.05)
    }

    /// A batch view reads the images it names from the same memory and keeps that memory alive on its own.
    func testBatchViewSharesMemoryAndOutlivesItsTensor() {
        var view: Tensor?
        do {
            let x = Tensor(shape: [4, 1, 2, 1], values: [0, 1, 2, 3, 4, 5, 6, 7])
            view = withoutGradients { x.batchView(1..<3) }
            XCTAssertEqual(view!.shape, [2, 1, 2, 1])
            XCTAssertTrue(view!.data == x.data + 2)
        }
        let other = Tensor(shape: [8], repeating: -1)   // may reuse a freed buffer of 8 floats: must not be x's
        XCTAssertEqual(view!.array, [2, 3, 4, 5])
        XCTAssertEqual(other.array, [Float](repeating: -1, count: 8))
        XCTAssertEqual(withoutGradients { view!.batchView(1..<2).array }, [4, 5])
    }
}
