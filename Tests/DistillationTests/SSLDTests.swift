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

    /// PaddleClas's ε = 1e-12 inside the logarithms: where the teacher's probabilities fall far below it (logits
    /// spread over ±40) the guarded loss, not the exact KL, is what the official code computes; the gradient there
    /// by finite differences.
    func testGuardedLogarithmsOfAConfidentTeacher() {
        let s = randomTensor([3, 6], seed: 21), t = randomTensor([3, 6], seed: 22) * 40
        var want = 0.0
        for r in 0..<3 {
            let zs = s.array[(r * 6)..<((r + 1) * 6)].map(Double.init), zt = t.array[(r * 6)..<((r + 1) * 6)].map(Double.init)
            let ms = zs.max()!, mt = zt.max()!
            let es = zs.map { Foundation.exp($0 - ms) }, et = zt.map { Foundation.exp($0 - mt) }
            let ps = es.map { $0 / es.reduce(0, +) }, pt = et.map { $0 / et.reduce(0, +) }
            for j in 0..<6 {
                let a = Foundation.log(ps[j] + 1e-12), b = Foundation.log(pt[j] + 1e-12)
                want += 0.5 * (pt[j] * (b - a) + ps[j] * (a - b))
            }
        }
        XCTAssertEqual(Double(SSLDLoss()(student: s, teacher: t).item), want / 3, accuracy: 1e-5 * want)
        let exact = (klDivergence(student: s, teacher: t) + klDivergence(student: t, teacher: s)).item * 0.5
        XCTAssertGreaterThan(abs(Double(exact) - want / 3), 0.1, "the guard changes the value here")
        gradCheck([s], eps: 1e-3, "ssld confident teacher") { SSLDLoss()(student: $0[0], teacher: t) }
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
