import Foundation
import TestSupport
import Tensors
import XCTest

final class LossTests: XCTestCase {
    func testCrossEntropyValues() {
        let z = Tensor(shape: [2, 3], values: [1, 2, 3, 0, 0, 0])
        let logp0 = [1, 2, 3].map { Float($0) - log(exp(1) + exp(2) + exp(3)) }
        let logp1 = Float(log(1.0 / 3.0))
        let plain = crossEntropy(z, labels: [2, 0])
        XCTAssertEqual(plain.item, (-logp0[2] - logp1) / 2, accuracy: 1e-6)
        // smoothing ε: (1 − ε)·NLL + ε·mean_c(−log p_c)
        let eps: Float = 0.1
        let smooth = crossEntropy(z, labels: [2, 0], labelSmoothing: eps)
        let row0 = (1 - eps) * -logp0[2] + eps * -logp0.reduce(0, +) / 3
        let row1 = (1 - eps) * -logp1 + eps * -logp1
        XCTAssertEqual(smooth.item, (row0 + row1) / 2, accuracy: 1e-6)
        let r = randomTensor([4, 5], seed: 1)
        gradCheck([r], eps: 1e-3, "cross entropy") { crossEntropy($0[0], labels: [0, 4, 2, 2]) }
        gradCheck([r], eps: 1e-3, "cross entropy smoothed") { crossEntropy($0[0], labels: [1, 3, 0, 2], labelSmoothing: 0.2) }
    }

    func testKLDivergenceWithTemperature() {
        let s = randomTensor([3, 4], seed: 2), t = randomTensor([3, 4], seed: 3)
        let T: Float = 4
        // reference: T² · Σ p_t (log p_t − log p_s) / N
        let ls = (s / T).logSoftmax().array, lt = (t / T).logSoftmax().array
        var ref: Float = 0
        for i in 0..<12 { ref += exp(lt[i]) * (lt[i] - ls[i]) }
        ref = ref * T * T / 3
        XCTAssertEqual(klDivergence(student: s, teacher: t, temperature: T).item, ref, accuracy: 1e-5)
        XCTAssertEqual(klDivergence(student: s, teacher: s, temperature: T).item, 0, accuracy: 1e-6)
        gradCheck([s, t], eps: 1e-2, "kl both sides") { klDivergence(student: $0[0], teacher: $0[1], temperature: T) }
        gradCheck([s, t], eps: 1e-3, "kl T=1") { klDivergence(student: $0[0], teacher: $0[1]) }
        // Matches the composite: T²·mean_rows Σ softmax(t/T)·(logsoftmax(t/T) − logsoftmax(s/T))
        let composite = (((t / T).softmax() * ((t / T).logSoftmax() - (s / T).logSoftmax())).sum() * (T * T / 3))
        XCTAssertEqual(composite.item, ref, accuracy: 1e-5)
    }

    /// ONE's and OKDDip's KL: the target shifted by ε (not renormalised), T²·Σ (p_t + ε)(log(p_t + ε) − log p_s)/N;
    /// gradients to the student, and to the teacher when it is on the tape (OKDDip's targets are).
    func testKLDivergenceWithShiftedTarget() {
        let s = randomTensor([3, 5], seed: 7), t = randomTensor([3, 5], seed: 8).detached(), T: Float = 3, eps: Float = 1e-3
        let p = (t / T).softmax().array, ls = (s / T).logSoftmax().array
        var ref = 0.0
        for i in 0..<15 { let q = Double(p[i] + eps); ref += q * (Foundation.log(q) - Double(ls[i])) }
        XCTAssertEqual(Double(klDivergence(student: s, teacher: t, temperature: T, targetEpsilon: eps).item), ref * 9 / 3, accuracy: 1e-5)
        gradCheck([s], eps: 1e-2, "kl shifted target") { klDivergence(student: $0[0], teacher: t, temperature: T, targetEpsilon: eps) }
        let live = randomTensor([3, 5], seed: 8)
        gradCheck([s, live], eps: 1e-2, "kl shifted target, both sides") { klDivergence(student: $0[0], teacher: $0[1], temperature: T, targetEpsilon: eps) }
    }

    func testMSE() {
        let a = Tensor(shape: [2, 2], values: [1, 2, 3, 4]), b = Tensor(shape: [2, 2], values: [0, 2, 5, 4])
        XCTAssertEqual(mseLoss(a, b).item, 5.0 / 4.0, accuracy: 1e-6)
        gradCheck([randomTensor([3, 3], seed: 4), randomTensor([3, 3], seed: 5)], "mse") { mseLoss($0[0], $0[1]) }
    }
}
