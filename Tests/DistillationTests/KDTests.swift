import Collectives
import Distillation
import Layers
import Models
import Tensors
import TestSupport
import XCTest

final class KDTests: XCTestCase {
    func testLossIsTheWeightedSumOfSoftAndHardTerms() {
        let s = randomTensor([4, 6], seed: 1), t = randomTensor([4, 6], seed: 2)
        let labels = [0, 5, 2, 2]
        let kd = HintonKD(temperature: 4, alpha: 0.9)
        let (total, soft, hard) = kd.loss(student: s, teacher: t, labels: labels)
        XCTAssertEqual(soft, klDivergence(student: s, teacher: t, temperature: 4).item, accuracy: 1e-6)
        XCTAssertEqual(hard, crossEntropy(s, labels: labels).item, accuracy: 1e-6)
        XCTAssertEqual(total.item, 0.9 * soft + 0.1 * hard, accuracy: 1e-5)
        // α = 0 is plain cross-entropy; α = 1 uses no labels.
        XCTAssertEqual(HintonKD(alpha: 0).loss(student: s, teacher: t, labels: labels).total.item, hard, accuracy: 1e-6)
        XCTAssertEqual(HintonKD(alpha: 1).loss(student: s, teacher: t, labels: [1, 1, 1, 1]).total.item,
                       HintonKD(alpha: 1).loss(student: s, teacher: t, labels: labels).total.item)
    }

    func testGradientsReachTheStudentOnly() {
        let s = randomTensor([3, 5], seed: 3), t = randomTensor([3, 5], seed: 4)
        t.requiresGrad = true
        gradCheck([s], eps: 1e-3, "kd student") { HintonKD(temperature: 3, alpha: 0.7).loss(student: $0[0], teacher: t, labels: [1, 0, 4]).total }
        s.requiresGrad = true; t.zeroGrad()
        HintonKD().loss(student: s, teacher: t, labels: [1, 0, 4]).total.backward()
        XCTAssertNil(t.grad, "the teacher is detached")
    }

    func testFrozenTeacherIsInEvalModeWithoutGradients() throws {
        var g = Generator(seed: 5)
        let m = try ModelZoo.make("resnet8", classes: 10, generator: &g)
        let teacher = FrozenTeacher(model: m)
        let x = randomTensor([2, 8, 8, 3], seed: 6)
        let a = teacher.logits(x), b = teacher.logits(x)
        XCTAssertEqual(a.array, b.array, "eval mode: deterministic, running statistics unchanged")
        XCTAssertFalse(a.requiresGrad)
        XCTAssertTrue(m.namedParameters().allSatisfy { !$0.1.value.requiresGrad })
    }
}
