// configs/recipes/: every paper recipe parses, reads back equal, builds its models and method, and trains two
// steps (one epoch of two batches of its own size, then an evaluation) on generated CIFAR-100-format files, with a
// teacher of its teacher_model written beside them for the offline ones.
import Collectives
import Distillation
import Foundation
import Layers
import Models
import Tensors
import TestSupport
import Training
import XCTest

final class RecipeTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "distill-recipes-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { if !dir.isEmpty { try? FileManager.default.removeItem(atPath: dir) } }

    /// CIFAR-100 binary records of random pixels and labels.
    func writeCIFAR100(_ path: String, images n: Int, seed: UInt64) throws {
        var g = Generator(seed: seed), bytes: [UInt8] = []
        for _ in 0..<n {
            bytes += [0, UInt8(g.int(below: 100))]
            for _ in 0..<3072 { bytes.append(UInt8(g.int(below: 256))) }
        }
        try Data(bytes).write(to: URL(fileURLWithPath: path))
    }

    func testEveryRecipeTrainsTwoSteps() throws {
        try requirePrerequisites(.binary)
        let root = packageRoot + "/configs/recipes"
        let names = try FileManager.default.contentsOfDirectory(atPath: root).filter { $0.hasSuffix(".yaml") }.sorted()
        XCTAssertGreaterThanOrEqual(names.count, 30, "the offline pairs and the online ResNet-32 and ResNet-110 rows")
        var teachers: [String: String] = [:]
        for name in names {
            let base = try TrainConfig.load(root + "/" + name)
            XCTAssertEqual(base.dataset, "cifar100", name)
            XCTAssertEqual(base.evalEvery, 1, "\(name): the official codes evaluate every epoch")
            XCTAssertFalse(base.dropLast, "\(name): the official loaders keep the last partial batch")
            XCTAssertEqual(try TrainConfig.parse(base.yaml, source: "resolved \(name)"), base, name)
            let data = dir + "/data-\(base.batchSize)"
            if !FileManager.default.fileExists(atPath: data) {
                try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
                try writeCIFAR100(data + "/train.bin", images: 2 * base.batchSize, seed: 1)
                try writeCIFAR100(data + "/test.bin", images: 16, seed: 2)
            }
            var overrides = ["dataset.path=\(data)", "epochs=1", "output=\(dir)/run-\(name)", "tensorboard=false", "threads=1"]
            if let teacher = base.methodOptions.string("teacher_model") {
                if teachers[teacher] == nil {
                    var g = Generator(seed: 3)
                    let t = try ModelZoo.make(teacher, classes: 100, inChannels: 3, generator: &g)
                    teachers[teacher] = dir + "/\(teacher).safetensors"
                    try t.saveSafeTensors(to: teachers[teacher]!)
                }
                overrides.append("method.teacher_checkpoint=\(teachers[teacher]!)")
            }
            // Each recipe in its own process (as a user runs it), so its models' memory goes with it.
            let r = runProcess(distillBinary, ["train", root + "/" + name] + overrides.flatMap { ["--set", $0] }, timeout: 600)
            XCTAssertEqual(r.status, 0, "\(name): \(r.output.suffix(1500))")
            XCTAssertTrue(r.output.contains("step 2/2"), "\(name): two steps: \(r.output.suffix(600))")
            XCTAssertTrue(r.output.contains("epoch 1: test top-1"), "\(name): evaluated: \(r.output.suffix(600))")
            let metrics = try String(contentsOfFile: dir + "/run-\(name)/metrics.jsonl", encoding: .utf8)
            XCTAssertEqual(metrics.split(separator: "\n").count, 1, name)
            XCTAssertFalse(metrics.contains("nan"), "\(name): \(metrics)")
        }
    }
}
