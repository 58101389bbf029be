import Collectives
import Distillation
import Layers
import Models
import Tensors
import TestSupport
import XCTest

/// CSS's networks (masks, joint-label scores, official state-dict names) and its whole objective by finite
/// differences at full weight: nothing is detached, so the ratio CE_X/CE_Y and the KL targets are differentiated too.
final class CSSTests: XCTestCase {
    func network(_ base: String, seed: UInt64, branches: Int = 3, classes: Int = 5) throws -> CSSNetwork {
        var g = Generator(seed: seed)
        return try CSSNetwork(base: base, branches: branches, classes: classes, inChannels: 1, generator: &g)
    }

    func testMasksZeroEachBranchsCorner() {
        // H = W = 14 (Fashion-MNIST after layer2): L = 3.
        let zeros = (0..<4).map { i in CSSNetwork.mask(branch: i, height: 14, width: 14).array.enumerated().filter { $0.element == 0 }.map { $0.offset } }
        XCTAssertEqual(zeros[0], [0, 1, 2, 14, 15, 16, 28, 29, 30], "top-left")
        XCTAssertEqual(zeros[1].first, 11 * 14 + 11, "bottom-right")
        XCTAssertEqual(zeros[2].first, 11 * 14, "bottom-left")
        XCTAssertEqual(zeros[3].first, 11, "top-right")
        XCTAssertTrue(zeros.allSatisfy { $0.count == 9 })
    }

    func testScoresAverageEachBranchsOwnJointLogitsAndNamesAreOfficial() throws {
        let net = try network("resnet8", seed: 1)
        // z_i[c·n + i] is class c for branch i.
        let joint = (0..<3).map { i in Tensor(shape: [1, 15], values: (0..<15).map { Float($0 * 10 + i) }) }
        XCTAssertEqual(net.branchScore(joint[1], 1).array, [11, 41, 71, 101, 131])
        var want = [Float](repeating: 0, count: 5)
        for c in 0..<5 { for i in 0..<3 { want[c] += Float((c * 3 + i) * 10 + i) / 3 } }
        assertClose(net.score(joint).array, want)
        let names = net.namedState().map { $0.0 }
        for n in ["conv1.weight", "layer2.0.conv1.weight", "layer3_0.0.conv1.weight", "classifier3_0.weight", "layer3_2.0.bn2.bias", "classifier3_2.bias"] {
            XCTAssertTrue(names.contains(n), n)
        }
        XCTAssertFalse(names.contains { $0.hasPrefix("fc.") || $0.hasPrefix("layer3.") }, "the bases' unused heads and stages are not part of the network")
        XCTAssertEqual(net.namedState().first { $0.0 == "classifier3_1.weight" }?.1.shape, [15, 64])
        // The classifier view gives the class scores.
        let x = randomTensor([2, 28, 28, 1], seed: 3)
        assertClose(withoutGradients { net(x) }, withoutGradients { net.score(net.joint(net.stem(x))) }, rtol: 1e-5, atol: 1e-6)
    }

    func testObjectiveGradientsAtFullWeight() throws {
        let comm = try MPICommunicator.world()
        let a = try network("resnet8", seed: 2), b = try network("resnet14", seed: 3)
        let cohort = Cohort(placement: try PeerPlacement(peers: 2, ranks: 1, rank: 0), comm: comm, models: [a, b], stem: nil)
        // Peaked predictions (classifier weights ×8) and T = 1, so KD_X is large and every path, the ratio's
        // gradient through CE_Y included, is well above the tolerance.
        for net in [a, b] {
            for (name, p) in net.namedParameters() where name.hasPrefix("classifier3_") { for i in 0..<p.value.count { p.value.data[i] *= 8 } }
        }
        let css = CSS(branches: 3, temperature: 1)
        let x = randomTensor([6, 16, 16, 1], seed: 4), labels = [0, 1, 2, 3, 4, 1]
        let input = StepInput(images: [x, x], labels: labels, epoch: 0, step: 0)
        func param(_ m: Module, _ name: String) -> Tensor { m.namedParameters().first { $0.0 == name }!.1.value }
        for (name, t) in [("A classifier3_1.weight", param(a, "classifier3_1.weight")), ("B classifier3_0.bias", param(b, "classifier3_0.bias")),
                          ("A bn1.weight", param(a, "bn1.weight")), ("B layer3_2.0.bn1.bias", param(b, "layer3_2.0.bn1.bias"))] {
            // eps 3e-3: at 1e-2 the stem's bn1.weight moves activations across a ReLU kink.
            gradCheck([t], eps: 3e-3, rtol: 3e-2, atol: 2e-3, maxCoordinates: 10, "css \(name)") { _ in
                (try? css.step(input, cohort: cohort).objective) ?? Tensor(scalar: .nan)
            }
        }
        // The objective is the two networks' losses.
        let r = try css.step(input, cohort: cohort)
        XCTAssertEqual(r.peerLoss.count, 2)
        XCTAssertEqual(r.objective.item, r.peerLoss.reduce(0, +), accuracy: 1e-4)
    }
}
