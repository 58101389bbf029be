// Every model family against its PyTorch twin (tools/golden/twins/models.py, written from the official definitions
// it names): the same state-dict names and shapes, the same parameter count, and on the golden weights and batch
// the same logits in evaluation and training mode, pooled feature, taps (per-channel means) and running
// statistics after one training forward, within 20× the twin's own float32-against-float64 distance.
import Foundation
import Layers
import Models
import Tensors
import TestSupport
import XCTest

final class GoldenModelTests: XCTestCase {
    func check(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let g = try GoldenFile("model-" + name)
        XCTAssertEqual(g.metadata["model"], name, file: file, line: line)
        var gen = Generator(seed: 0)
        let m = try ModelZoo.make(name, classes: Int(try g.number("classes")), inChannels: 3, generator: &gen)
        let twin = try JSONDecoder().decode([String: [Int]].self, from: Data((g.metadata["state"] ?? "{}").utf8))
        let ours = Dictionary(uniqueKeysWithValues: m.namedState().map { ($0.0, $0.1.value.shape) })
        XCTAssertEqual(Set(ours.keys).symmetricDifference(twin.keys).sorted(), [], "\(name): state-dict names", file: file, line: line)
        for (k, shape) in twin where ours[k] != nil { XCTAssertEqual(ours[k], shape, "\(name) \(k)", file: file, line: line) }
        let count = m.namedState().filter { $0.1.isTrainable }.reduce(0) { $0 + $1.1.value.count }
        XCTAssertEqual(Double(count), try g.number("parameters"), "\(name): parameter count", file: file, line: line)
        GoldenWeights.fill(m.namedState())
        let x = try g.tensor("input")
        m.eval()
        try g.assertMatches(withoutGradients { m(x) }, "logits_eval", file: file, line: line)
        m.train()
        let f = withoutGradients { m.tapForward(x) }
        try g.assertMatches(f.logits, "logits_train", file: file, line: line)
        try g.assertMatches(f.pooled, "pooled_train", file: file, line: line)
        for (k, t) in f.taps.enumerated() {
            let mean = t.sum(axes: [0, 1, 2]) * (1 / Float(t.count / t.shape[3]))
            try g.assertMatches(mean, "tap\(k)_mean", file: file, line: line)
        }
        let buffers = m.namedState().filter { !$0.1.isTrainable }
        let sums = ["running_mean", "running_var"].map { suffix in
            buffers.filter { $0.0.hasSuffix(suffix) }.reduce(0.0) { $0 + $1.1.value.array.reduce(0.0) { $0 + Double($1) } }
        }
        try g.assertMatches(Tensor(shape: [2], values: sums.map(Float.init)), "running_sums", file: file, line: line)
    }

    func testResNetBasic() throws { try check("resnet8") }
    func testResNetBottleneck() throws { try check("resnet20b") }
    func testWideResNet() throws { try check("wrn16_2") }
    func testVGG() throws { try check("vgg8") }
    func testMobileNetV2() throws { try check("mobilenetv2") }
    func testShuffleNetV1() throws { try check("shufflenetv1") }
    func testShuffleNetV2() throws { try check("shufflenetv2") }
}
