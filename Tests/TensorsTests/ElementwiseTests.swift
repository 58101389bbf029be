import TestSupport
import Tensors
import XCTest

final class ElementwiseTests: XCTestCase {
    func testBroadcastValues() {
        let a = Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        let b = Tensor(shape: [3], values: [10, 20, 30])
        XCTAssertEqual((a + b).array, [11, 22, 33, 14, 25, 36])
        let c = Tensor(shape: [2, 1], values: [2, 3])
        XCTAssertEqual((a * c).array, [2, 4, 6, 12, 15, 18])
        XCTAssertEqual(broadcastShape([2, 1, 4], [3, 1]), [2, 3, 4])
    }

    func testBinaryGradientsSameShape() {
        let a = randomTensor([3, 4], seed: 1), b = randomTensor([3, 4], seed: 2).affine(scale: 0.2, shift: 2)
        gradCheck([a, b], "add") { $0[0] + $0[1] }
        gradCheck([a, b], "sub") { $0[0] - $0[1] }
        gradCheck([a, b], "mul") { $0[0] * $0[1] }
        gradCheck([a, b], eps: 1e-3, "div") { $0[0] / $0[1] }
    }

    func testBinaryGradientsBroadcastOverBatchAndChannels() {
        let x = randomTensor([2, 3, 3, 4], seed: 3)
        let channel = randomTensor([4], seed: 4).affine(scale: 0.1, shift: 1.5)
        let batch = randomTensor([2, 1, 1, 1], seed: 5).affine(scale: 0.1, shift: 2)
        let mid = randomTensor([3, 1], seed: 6)
        gradCheck([x, channel], "add channel") { $0[0] + $0[1] }
        gradCheck([x, channel], "sub channel") { $0[0] - $0[1] }
        gradCheck([x, channel], "mul channel") { $0[0] * $0[1] }
        gradCheck([x, channel], eps: 1e-3, "div channel") { $0[0] / $0[1] }
        gradCheck([x, batch], "mul batch") { $0[0] * $0[1] }
        gradCheck([batch, x], eps: 1e-3, "div batch (broadcast on the left)") { $0[0] / ($0[1] * $0[1] + 1) }
        gradCheck([x, mid], "add middle") { $0[0] + $0[1] }
    }

    func testScalarOps() {
        let x = Tensor(shape: [3], values: [1, 2, 4])
        XCTAssertEqual((x + 1).array, [2, 3, 5])
        XCTAssertEqual((1 - x).array, [0, -1, -3])
        XCTAssertEqual((x * 2).array, [2, 4, 8])
        XCTAssertEqual((x / 2).array, [0.5, 1, 2])
        XCTAssertEqual((-x).array, [-1, -2, -4])
        gradCheck([randomTensor([5], seed: 8)], "affine") { 3 - $0[0] * 2 / 4 + 1 }
    }

    func testPointwiseFunctions() {
        let x = randomTensor([4, 5], seed: 9)
        let positive = x.affine(scale: 0.3, shift: 2).detached()
        gradCheck([x], eps: 1e-3, "exp") { $0[0].exp() }
        gradCheck([positive], eps: 1e-3, "log") { $0[0].log() }
        gradCheck([positive], eps: 1e-3, "sqrt") { $0[0].sqrt() }
        gradCheck([positive], eps: 1e-3, "pow") { $0[0].pow(2.5) }
        gradCheck([x], eps: 1e-3, "square") { $0[0].square() }
        assertClose(Tensor(shape: [2], values: [4, 9]).sqrt(), Tensor(shape: [2], values: [2, 3]))
        assertClose(Tensor(shape: [1], values: [2]).pow(3), Tensor(shape: [1], values: [8]))
    }
}
