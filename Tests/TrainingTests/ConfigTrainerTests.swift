import Collectives
import Datasets
import Foundation
import Models
import TestSupport
import Training
import XCTest

final class ConfigTests: XCTestCase {
    func message(_ body: () throws -> Void) -> String {
        do { try body() } catch { return "\(error)" }
        return "no error"
    }

    func testShippedConfigsParse() throws {
        let c = try TrainConfig.load(packageRoot + "/configs/independent.yaml")
        XCTAssertEqual(c.models, ["resnet20"])
        XCTAssertEqual(c.weightDecay, 5e-4, accuracy: 1e-9)
        XCTAssertEqual(c.epochs, 15)
        XCTAssertNil(c.augmentation, "standard augmentation")
        let d = try TrainConfig.load(packageRoot + "/configs/demo.yaml")
        XCTAssertEqual(d.models, ["resnet8"])
        XCTAssertEqual(d.trainSubset, 20_000)
        // The resolved YAML reads back to the same config.
        XCTAssertEqual(try TrainConfig.parse(d.yaml, source: "resolved"), d)
    }

    func testUnknownKeysAndWrongTypesNameThePath() {
        XCTAssertTrue(message { _ = try TrainConfig.parse("epochs: 3\nepoch: 4\n", source: "x.yaml") }
            .contains("x.yaml: unknown key 'epoch'"))
        let m = message { _ = try TrainConfig.parse("optimizer:\n  lr: 0.1\n  moment: 0.9\n", source: "x.yaml") }
        XCTAssertTrue(m.contains("unknown key 'optimizer.moment'") && m.contains("optimizer.momentum"), m)
        let t = message { _ = try TrainConfig.parse("epochs: three\n", source: "x.yaml") }
        XCTAssertTrue(t.contains("x.yaml: epochs: expected an integer, got 'three'"), t)
        let b = message { _ = try TrainConfig.parse("optimizer:\n  nesterov: 3\n", source: "x.yaml") }
        XCTAssertTrue(b.contains("optimizer.nesterov: expected true or false"), b)
        let r = message { _ = try TrainConfig.parse("batch_size: 0\n", source: "x.yaml") }
        XCTAssertTrue(r.contains("batch_size: expected an integer ≥ 1, got 0"), r)
        let s = message { _ = try TrainConfig.parse("schedule:\n  name: linear\n", source: "x.yaml") }
        XCTAssertTrue(s.contains("schedule.name: expected cosine or multistep"), s)
        XCTAssertTrue(message { _ = try TrainConfig.parse("- 1\n- 2\n", source: "x.yaml") }.contains("top level must be a mapping"))
        XCTAssertTrue(message { _ = try TrainConfig.load("/nonexistent.yaml") }.contains("no such config file"))
    }

    func testKDConfig() throws {
        let c = try TrainConfig.load(packageRoot + "/configs/kd.yaml")
        XCTAssertEqual(c.method, "kd")
        XCTAssertEqual(c.teacherModel, "resnet32")
        XCTAssertEqual(c.temperature, 4)
        XCTAssertEqual(c.alpha, 0.9, accuracy: 1e-7)
        XCTAssertEqual(try TrainConfig.parse(c.yaml, source: "resolved"), c)
        let m = message { _ = try TrainConfig.parse("method:\n  name: kd\n", source: "x.yaml") }
        XCTAssertTrue(m.contains("method kd needs method.teacher_model and method.teacher_checkpoint"), m)
        let a = message { _ = try TrainConfig.parse("method:\n  name: kd\n  alpha: 2\n", source: "x.yaml") }
        XCTAssertTrue(a.contains("method.alpha: expected a number in [0, 1]"), a)
        let n = message { _ = try TrainConfig.parse("method:\n  name: dml2\n", source: "x.yaml") }
        XCTAssertTrue(n.contains("method.name: expected one of \(TrainConfig.methods.joined(separator: ", ")), got 'dml2'"), n)
        let u = message { _ = try TrainConfig.parse("method:\n  name: kd\n  teacher_model: resnet8\n  teacher_checkpoint: t\n  unlabeled_dataset: mnist\n  unlabeled_per_batch: 8\n", source: "x.yaml") }
        XCTAssertTrue(u.contains("only ssld trains on unlabeled images"), u)
        let s = try TrainConfig.load(packageRoot + "/configs/ssld.yaml")
        XCTAssertEqual(s.unlabeledDataset, "fashion-mnist")
        XCTAssertEqual(s.unlabeledPerBatch, 64)
        XCTAssertEqual(try TrainConfig.parse(s.yaml, source: "resolved"), s)
    }

    func testOverrides() throws {
        let c = try TrainConfig.parse("epochs: 3\n", source: "x.yaml",
                                      overrides: ["epochs=5", "optimizer.lr=0.05", "models=[resnet8, resnet14]", "dataset.name=mnist"])
        XCTAssertEqual(c.epochs, 5)
        XCTAssertEqual(c.lr, 0.05, accuracy: 1e-7)
        XCTAssertEqual(c.models, ["resnet8", "resnet14"])
        XCTAssertEqual(c.dataset, "mnist")
        XCTAssertTrue(message { _ = try TrainConfig.parse("", source: "x", overrides: ["optimizer.rate=1"]) }.contains("--set optimizer.rate: unknown key"))
        XCTAssertTrue(message { _ = try TrainConfig.parse("", source: "x", overrides: ["epochs"]) }.contains("expected key.path=value"))
    }
}

final class TrainerTests: XCTestCase {
    func testShortRunWritesMetricsAndLoadableCheckpoints() throws {
        guard FileManager.default.fileExists(atPath: DatasetCatalog.fashionMNISTDefaultPath) else {
            throw XCTSkip("dataset-fashion-mnist is not installed")
        }
        let out = NSTemporaryDirectory() + "distill-train-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: out) }
        var c = try TrainConfig.parse("", source: "test", overrides: [
            "epochs=2", "batch_size=64", "dataset.train_subset=512", "dataset.test_subset=256",
            "models=[resnet8, resnet8]", "optimizer.lr=0.05"])
        c.output = out
        let trainer = try Trainer(config: c, comm: try MPICommunicator.world())
        trainer.report = { _ in }
        let history = try trainer.run()
        XCTAssertEqual(history.count, 2)
        XCTAssertEqual(history[1].testTop1?.count, 2)
        XCTAssertLessThan(history[1].loss[0], history[0].loss[0], "the loss falls")
        XCTAssertNotEqual(trainer.models[0].namedParameters()[0].1.value.array, trainer.models[1].namedParameters()[0].1.value.array,
                          "peers start from their own (seed, peer) initialisation")
        let lines = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 2)
        for key in ["\"epoch\": 2", "\"lr\"", "\"loss\"", "\"terms\": {\"ce\"", "\"train_top1\"", "\"train_top5\"", "\"test_top1\"", "\"test_top5\"", "\"images_per_second\"",
                    "\"communication_seconds\""] {
            XCTAssertTrue(lines[1].contains(key), "\(key) in \(lines[1])")
        }
        XCTAssertEqual(try TrainConfig.load(out + "/config.yaml"), c, "config.yaml holds the resolved config")
        var g = Generator(seed: 9)
        let reloaded = try ModelZoo.make("resnet8", classes: 10, inChannels: 1, generator: &g)
        try reloaded.loadSafeTensors(from: out + "/checkpoints/epoch-2/peer1.safetensors")
        XCTAssertEqual(reloaded.namedState().map { $0.1.value.array }, trainer.models[1].namedState().map { $0.1.value.array })
    }

    func testCommandLineExitCodes() throws {
        guard FileManager.default.isExecutableFile(atPath: distillBinary) else { throw XCTSkip("binary not built") }
        let missing = runProcess(distillBinary, ["train", "/nonexistent.yaml"])
        XCTAssertEqual(missing.status, 2)
        XCTAssertTrue(missing.output.contains("no such config file"), missing.output)
        let dir = NSTemporaryDirectory() + "distill-cli-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = FileManager.default.createFile(atPath: dir + "/bad.yaml", contents: Data("epochs: 1\nlearning_rate: 3\n".utf8))
        let bad = runProcess(distillBinary, ["train", dir + "/bad.yaml"])
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.output.contains("unknown key 'learning_rate'"), bad.output)
        let method = runProcess(distillBinary, ["train", dir + "/bad.yaml", "--set", "learning_rate=1"])
        XCTAssertEqual(method.status, 2)
        let usage = runProcess(distillBinary, ["train"])
        XCTAssertNotEqual(usage.status, 0)
    }
}
