import Collectives
import Distillation
import Foundation
import Layers
import Models
import Tensors
import TestSupport
import XCTest

final class SSLDTests: XCTestCase {
    /// ½[KL(p_t ‖ p_s) + KL(p_s ‖ p_t)] summed over classes, averaged over rows, written out by hand.
    func reference(_ s: [Float], _ t: [Float], rows: Int, cols: Int) -> Double {
        var total = 0.0
        for r in 0..<rows {
            func softmax(_ z: ArraySlice<Float>) -> [Double] {
                let m = Double(z.max()!), e = z.map { Foundation.exp(Double($0) - m) }, sum = e.reduce(0, +)
                return e.map { $0 / sum }
            }
            let ps = softmax(s[(r * cols)..<((r + 1) * cols)]), pt = softmax(t[(r * cols)..<((r + 1) * cols)])
            for j in 0..<cols { total += 0.5 * (pt[j] * Foundation.log(pt[j] / ps[j]) + ps[j] * Foundation.log(ps[j] / pt[j])) }
        }
        return total / Double(rows)
    }

    func testLossIsTheSymmetricKLAtTemperatureOne() {
        let s = randomTensor([5, 7], seed: 11), t = randomTensor([5, 7], seed: 12)
        let loss = SSLDLoss()(student: s, teacher: t).item
        XCTAssertEqual(Double(loss), reference(s.array, t.array, rows: 5, cols: 7), accuracy: 1e-5)
        XCTAssertEqual(SSLDLoss()(student: s, teacher: s).item, 0, accuracy: 1e-6, "zero when the predictions agree")
    }

    func testGradientsReachTheStudentOnly() {
        let s = randomTensor([4, 6], seed: 13), t = randomTensor([4, 6], seed: 14)
        t.requiresGrad = true
        gradCheck([s], eps: 1e-3, "ssld student") { SSLDLoss()(student: $0[0], teacher: t) }
        s.requiresGrad = true; t.zeroGrad()
        SSLDLoss()(student: s, teacher: t).backward()
        XCTAssertNil(t.grad, "the teacher is detached")
    }

    func testRampUpWeight() {
        XCTAssertEqual(rampUpWeight(epoch: 0, length: 80), Foundation.exp(-5), accuracy: 1e-7)
        XCTAssertEqual(rampUpWeight(epoch: 40, length: 80), Foundation.exp(-1.25), accuracy: 1e-6)
        XCTAssertEqual(rampUpWeight(epoch: 80, length: 80), 1)
        XCTAssertEqual(rampUpWeight(epoch: 200, length: 80), 1)
        XCTAssertEqual(rampUpWeight(epoch: 0, length: 0), 1)
    }
}
