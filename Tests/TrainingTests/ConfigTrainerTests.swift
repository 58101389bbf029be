import Collectives
import Datasets
import Distillation
import Foundation
import Layers
import Models
import TensorFiles
import Tensors
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
        XCTAssertFalse(d.dropLast, "the last partial batch is kept by default, as the official loaders do")
        let r = try TrainConfig.parse("drop_last: true\ndataset:\n  augmentation: {crop_padding: 4, pad_mode: reflect, horizontal_flip: true}\n", source: "x.yaml")
        XCTAssertEqual(r.augmentation, Augmentation(cropPadding: 4, padMode: .reflect, horizontalFlip: true))
        XCTAssertTrue(r.dropLast)
        XCTAssertEqual(try TrainConfig.parse(r.yaml, source: "resolved"), r)
    }

    func testUnknownKeysAndWrongTypesNameThePath() {
        // (config text, a part of the error message)
        let cases: [(String, String)] = [
            ("epochs: 3\nepoch: 4\n", "x.yaml: unknown key 'epoch'"),
            ("optimizer:\n  lr: 0.1\n  moment: 0.9\n", "unknown key 'optimizer.moment'"),
            ("optimizer:\n  lr: 0.1\n  moment: 0.9\n", "optimizer.momentum"),
            ("epochs: three\n", "x.yaml: epochs: expected an integer, got 'three'"),
            ("optimizer:\n  nesterov: 3\n", "optimizer.nesterov: expected true or false"),
            ("batch_size: 0\n", "batch_size: expected an integer ≥ 1, got 0"),
            ("schedule:\n  name: linear\n", "schedule.name: expected cosine or multistep"),
            ("optimizer:\n  name: rmsprop\n", "optimizer.name: expected sgd or adam or adamw, got 'rmsprop'"),
            ("- 1\n- 2\n", "top level must be a mapping"),
            ("dataset:\n  augmentation:\n    pad_mode: mirror\n", "dataset.augmentation.pad_mode: expected zeros or reflect, got 'mirror'"),
            ("drop_last: sometimes\n", "drop_last: expected true or false"),
        ]
        for (text, expected) in cases {
            let m = message { _ = try TrainConfig.parse(text, source: "x.yaml") }
            XCTAssertTrue(m.contains(expected), "\(text): \(m)")
        }
        XCTAssertTrue(message { _ = try TrainConfig.load("/nonexistent.yaml") }.contains("no such config file"))
    }

    func testKDConfig() throws {
        let c = try TrainConfig.load(packageRoot + "/configs/kd.yaml")
        XCTAssertEqual(c.method, "kd")
        XCTAssertEqual(c.methodOptions.string("teacher_model"), "resnet32")
        XCTAssertEqual(c.methodOptions.number("temperature"), 4)
        XCTAssertEqual(c.methodOptions.number("alpha"), 0.9, accuracy: 1e-7)
        XCTAssertEqual(try TrainConfig.parse(c.yaml, source: "resolved"), c)
        let m = message { _ = try TrainConfig.parse("method:\n  name: kd\n", source: "x.yaml") }
        XCTAssertTrue(m.contains("x.yaml: method kd needs method.teacher_model"), m)
        let a = message { _ = try TrainConfig.parse("method:\n  name: kd\n  alpha: 2\n", source: "x.yaml") }
        XCTAssertTrue(a.contains("method.alpha: expected a number in [0, 1]"), a)
        let n = message { _ = try TrainConfig.parse("method:\n  name: dml2\n", source: "x.yaml") }
        XCTAssertTrue(n.contains("method.name: expected one of \(MethodRegistry.names.joined(separator: ", ")), got 'dml2'"), n)
        let u = message { _ = try TrainConfig.parse("method:\n  name: kd\n  teacher_model: resnet8\n  teacher_checkpoint: t\ndataset:\n  unlabeled:\n    name: mnist\n    per_batch: 8\n", source: "x.yaml") }
        XCTAssertTrue(u.contains("dataset.unlabeled: method kd learns from labels; only ssld train on unlabeled images"), u)
        let k = message { _ = try TrainConfig.parse("method:\n  name: dml\n  rampup_epochs: 3\n", source: "x.yaml") }
        XCTAssertTrue(k.contains("x.yaml: unknown key 'method.rampup_epochs' for method dml; expected one of: name, temperature"), k)
        let v = message { _ = try TrainConfig.parse("method:\n  name: one\n  rampup_epochs: -1\n", source: "x.yaml") }
        XCTAssertTrue(v.contains("x.yaml: method.rampup_epochs: expected an integer ≥ 0, got -1"), v)
        let s = try TrainConfig.load(packageRoot + "/configs/ssld.yaml")
        XCTAssertEqual(s.unlabeledDataset, "fashion-mnist")
        XCTAssertEqual(s.unlabeledPerBatch, 64)
        XCTAssertEqual(try TrainConfig.parse(s.yaml, source: "resolved"), s)
    }

    /// Every method's declared defaults fill its keys; the temperature defaults live in the method specs only.
    func testMethodDefaultsComeFromTheRegistry() throws {
        for spec in MethodRegistry.all {
            var text = "method:\n  name: \(spec.name)\n"
            if spec.key("teacher_model") != nil { text += "  teacher_model: resnet8\n  teacher_checkpoint: t.safetensors\n" }
            let c = try TrainConfig.parse(text, source: "x.yaml")
            for k in spec.keys { XCTAssertEqual(c.methodOptions.values[k.name], k.defaultValue ?? c.methodOptions.values[k.name], "\(spec.name).\(k.name)") }
            XCTAssertEqual(try TrainConfig.parse(c.yaml, source: "resolved"), c, spec.name)
        }
        XCTAssertEqual(try TrainConfig.parse("method:\n  name: dml\n", source: "x").methodOptions.number("temperature"), 1)
        XCTAssertEqual(try TrainConfig.parse("method:\n  name: one\n", source: "x").methodOptions.number("temperature"), 3)
    }

    /// Values YAML would misread if written unquoted survive the round trip through config.yaml.
    func testResolvedYAMLRoundTripsValuesThatNeedQuoting() throws {
        for output in ["on", "1e5", "runs/a: b", "null", "#x", "12"] {
            var c = try TrainConfig.parse("optimizer:\n  weight_decay: 1e-5\n  lr: 0.1\n", source: "x")
            c.output = output
            let back = try TrainConfig.parse(c.yaml, source: "resolved")
            XCTAssertEqual(back, c, "output '\(output)' in:\n\(c.yaml)")
            XCTAssertEqual(back.output, output)
        }
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
        // A text key given a whole number (YAML reads `1` as one) takes its text; `dataset.pad_to` is a key.
        let m = try TrainConfig.parse("method:\n  name: msdcrd\n  teacher_model: resnet8\n  teacher_checkpoint: t.safetensors\n", source: "x.yaml",
                                      overrides: ["method.scales=1", "dataset.pad_to=32"])
        XCTAssertEqual(m.methodOptions.string("scales"), "1")
        XCTAssertEqual(m.padTo, 32)
        XCTAssertEqual(try TrainConfig.parse(m.yaml, source: "resolved"), m)
        XCTAssertTrue(message { _ = try TrainConfig.parse("method:\n  name: msdcrd\n  scales: 0.5\n", source: "x.yaml") }.contains("method.scales"))
    }
}

final class TrainerTests: XCTestCase {
    func testShortRunWritesMetricsAndLoadableCheckpoints() throws {
        try requirePrerequisites(.fashionMNIST)
        let out = NSTemporaryDirectory() + "distill-train-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: out) }
        let trainer = try quietTrainer(out: out, [
            "epochs=2", "batch_size=64", "dataset.train_subset=576", "dataset.validation=64", "dataset.test_subset=256",
            "models=[resnet8, resnet8]", "optimizer.lr=0.05"])
        let c = trainer.experiment.config
        let history = try trainer.run()
        XCTAssertEqual(history.count, 2)
        XCTAssertEqual(history[1].testTop1?.count, 2)
        XCTAssertLessThan(history[1].loss[0], history[0].loss[0], "the loss falls")
        let models = trainer.experiment.models
        XCTAssertNotEqual(models[0].namedParameters()[0].1.value.array, models[1].namedParameters()[0].1.value.array,
                          "peers start from their own (seed, peer) initialisation")
        let lines = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 2)
        let last = try JSONDecoder().decode(EpochMetrics.self, from: Data(lines[1].utf8))
        XCTAssertEqual(last.epoch, 2)
        XCTAssertEqual(last.loss.count, 2)
        XCTAssertNotNil(last.terms["ce"])
        XCTAssertEqual(last.trainTop5.count, 2)
        XCTAssertEqual(last.testTop1, history[1].testTop1)
        XCTAssertEqual(last.valTop1?.count, 2, "the held-out images are evaluated beside the test set")
        XCTAssertTrue(lines[1].contains("\"val_top1\""))
        XCTAssertThrowsError(try quietTrainer(out: out + "-bad", ["dataset.train_subset=64", "dataset.validation=64"])) {
            XCTAssertTrue("\($0)".contains("dataset.validation: 64 held-out images leave none of the 64 training images"), "\($0)")
        }
        XCTAssertNotNil(ISO8601DateFormatter().date(from: last.time), "a wall-clock timestamp: \(last.time)")
        XCTAssertGreaterThan(last.imagesPerSecond, 0)
        XCTAssertEqual(try TrainConfig.load(out + "/config.yaml"), c, "config.yaml holds the resolved config")
        var g = Generator(seed: 9)
        let reloaded = try ModelZoo.make("resnet8", classes: 10, inChannels: 1, generator: &g)
        try reloaded.loadSafeTensors(from: out + "/checkpoints/epoch-2/peer1.safetensors")
        XCTAssertEqual(reloaded.namedState().map { $0.1.value.array }, models[1].namedState().map { $0.1.value.array })
    }

    /// A trainer for the default config with `overrides`, writing to `out`, printing nothing.
    /// A frozen teacher is evaluated once per split: later evaluations reuse its accuracy and run only the peers,
    /// whose figures are those of a full evaluation.
    func testFrozenTeacherIsEvaluatedOncePerSplit() throws {
        try requirePrerequisites(.fashionMNIST)
        let root = NSTemporaryDirectory() + "distill-frozen-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: root) }
        let teacher = try trainTeacher(in: root).filter { $0 != "--set" }
        let trainer = try quietTrainer(out: root + "/kd", ["epochs=2", "batch_size=64", "dataset.train_subset=320", "dataset.validation=64",
                                                           "dataset.test_subset=128", "method.name=kd", "threads=1"] + teacher)
        let history = try trainer.run()
        let x = trainer.experiment
        let cached = x.frozenTeacherAccuracy
        XCTAssertEqual(Set(cached.keys), ["test", "validation"])
        XCTAssertEqual(history.map(\.teacherTestTop1), [Float(cached["test"]![0]), Float(cached["test"]![0])])
        XCTAssertEqual(history.map(\.teacherValTop1), [Float(cached["validation"]![0]), Float(cached["validation"]![0])])
        let reused = try x.evaluate()
        x.frozenTeacherAccuracy = [:]
        let full = try x.evaluate()
        XCTAssertEqual(reused.top1, full.top1)
        XCTAssertEqual(reused.top5, full.top5)
        XCTAssertEqual(reused.teacherTop1, full.teacherTop1)
        XCTAssertEqual(reused.teacherTop5, full.teacherTop5)
        x.frozenTeacherAccuracy["test"] = [0.5, 0.75]
        XCTAssertEqual(try x.evaluate().teacherTop1, 0.5, "the stored accuracy is used, the teacher not run again")
    }

    /// The held-out validation images stay out of the unlabeled pool when it is the training set's own split, and
    /// are the images of the training set's files that the training view leaves out.
    func testValidationImagesStayOutOfTheUnlabeledPool() throws {
        try requirePrerequisites(.fashionMNIST)
        let root = NSTemporaryDirectory() + "distill-heldout-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: root) }
        let teacher = try trainTeacher(in: root).filter { $0 != "--set" }
        let base = ["dataset.train_subset=320", "dataset.validation=64", "method.name=ssld", "dataset.unlabeled.name=fashion-mnist",
                    "dataset.unlabeled.per_batch=16"] + teacher
        for pad in [[], ["dataset.pad_to=32"]] {
            let x = try quietTrainer(out: root + "/ssld", base + pad).experiment
            let held = Set(x.validation!.indices), unlabeled = x.unlabeled!
            XCTAssertEqual(held.count, 64)
            XCTAssertTrue(held.isDisjoint(with: x.train.indices) && held.isSubset(of: 0..<320), "\(pad)")
            // Padding renumbers a view's images, so the pool is compared by index only unpadded.
            if pad.isEmpty { XCTAssertTrue(held.isDisjoint(with: unlabeled.indices)) }
            XCTAssertEqual(unlabeled.count, 60000 - 64, "every other training image is in the pool \(pad)")
        }
        let test = try quietTrainer(out: root + "/ssld-test", base + ["dataset.unlabeled.split=test"]).experiment
        XCTAssertEqual(test.unlabeled!.count, 10000, "another split keeps every image")
    }

    func quietTrainer(out: String, _ overrides: [String]) throws -> Trainer {
        var c = try TrainConfig.parse("", source: "test", overrides: overrides)
        c.output = out
        let t = try Trainer(config: c, comm: try MPICommunicator.world())
        t.report = { _ in }
        return t
    }

    /// AdamW as the main optimiser (`optimizer.name`): a run resumed after its first epoch ends bit-identical to an
    /// uninterrupted one, its moments and step counts included.
    func testAdamWMainOptimiserResumesExactly() throws {
        try requirePrerequisites(.fashionMNIST)
        let root = NSTemporaryDirectory() + "distill-adamw-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: root) }
        func run(_ out: String, epochs: Int, resume: Bool) throws {
            try quietTrainer(out: out, [
                "epochs=\(epochs)", "batch_size=64", "dataset.train_subset=256", "dataset.test_subset=64", "threads=1",
                "models=[resnet8]", "optimizer.name=adamw", "optimizer.lr=0.002", "optimizer.weight_decay=0.01"]).run(resume: resume)
        }
        try run(root + "/straight", epochs: 2, resume: false)
        try run(root + "/resumed", epochs: 1, resume: false)
        try run(root + "/resumed", epochs: 2, resume: true)
        for f in ["peer0.safetensors", "peer0.optimizer.safetensors"] {
            let a = FileManager.default.contents(atPath: root + "/straight/checkpoints/epoch-2/" + f)
            XCTAssertNotNil(a)
            XCTAssertEqual(a, FileManager.default.contents(atPath: root + "/resumed/checkpoints/epoch-2/" + f), f)
        }
        let (state, _) = try SafeTensors.read(root + "/straight/checkpoints/epoch-2/peer0.optimizer.safetensors")
        XCTAssertEqual(state.first { $0.0 == "main/fc.weight/step" }?.1.values, [8], "4 steps per epoch, 2 epochs")
    }

    /// A loss that turns non-finite stops the run at that step, naming it; the last checkpoint stays intact.
    func testNonFiniteLossStopsTheRunAndKeepsTheCheckpoint() throws {
        try requirePrerequisites(.fashionMNIST)
        let out = NSTemporaryDirectory() + "distill-nan-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: out) }
        // Epoch 1 trains normally; from epoch 2 the learning rate is 1e11 and the loss overflows within steps.
        let trainer = try quietTrainer(out: out, [
            "epochs=2", "batch_size=64", "dataset.train_subset=640", "dataset.test_subset=64", "model=resnet8",
            "schedule.name=multistep", "schedule.milestones=[1]", "schedule.gamma=1e12", "optimizer.lr=0.1"])
        var message = ""
        do { try trainer.run() } catch { message = "\(error)" }
        XCTAssertTrue(message.contains("non-finite loss at epoch 2, step "), message)
        XCTAssertTrue(message.contains("peer 0 (resnet8) loss") || message.contains("ce = "), message)
        let state = try RunDirectory(out).readState()
        XCTAssertEqual(state.epoch, 1, "the epoch-1 checkpoint is still the committed one")
        XCTAssertTrue(FileManager.default.fileExists(atPath: RunDirectory(out).checkpoint(epoch: 1).peer(0)))
        let lines = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 1)
    }

    /// Metrics lines are valid JSON whatever the values.
    func testMetricsLinesAreValidJSONForNonFiniteValues() throws {
        var m = EpochMetrics()
        m.loss = [.nan, .infinity]
        m.terms = ["k\"l\n": -.infinity]
        m.teacher = "a \"quoted\" name"
        let line = try jsonLine(m)
        let object = try JSONSerialization.jsonObject(with: line) as? [String: Any]
        XCTAssertEqual(object?["loss"] as? [String], ["nan", "inf"], String(decoding: line, as: UTF8.self))
        XCTAssertEqual(object?["teacher"] as? String, "a \"quoted\" name")
    }

    /// Hostile configs end with an error naming the file, in bounded time and memory.
    func testHostileConfigsAreRefused() throws {
        func refusal(_ text: String) -> String {
            do { _ = try TrainConfig.parse(text, source: "hostile.yaml"); return "accepted" } catch { return "\(error)" }
        }
        // A "billion laughs": 10⁹ values once the aliases are expanded.
        var laughs = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].enumerated() {
            let prev = i == 0 ? "a" : ["b", "c", "d", "e", "f", "g", "h"][i - 1]
            laughs += "\(name): &\(name) [" + Array(repeating: "*\(prev)", count: 10).joined(separator: ", ") + "]\n"
        }
        let start = Date()
        XCTAssertTrue(refusal(laughs).contains("hostile.yaml: more than 100000 values once its aliases are expanded"), refusal(laughs))
        XCTAssertLessThan(Date().timeIntervalSince(start), 30, "bounded time")
        XCTAssertTrue(refusal("models: " + String(repeating: "[", count: 100_000)).contains("hostile.yaml line 1: brackets nested more than 64 deep"))
        let stairs = (0..<600).map { String(repeating: " ", count: $0) + "k\($0):" }.joined(separator: "\n")
        XCTAssertTrue(refusal(stairs).contains("indented more than 512 spaces"), refusal(stairs))
        XCTAssertTrue(refusal("# " + String(repeating: "x", count: 1 << 20)).contains("a config is at most 1048576 bytes"))
        XCTAssertTrue(refusal("").contains("hostile.yaml: the config has no keys"))
        XCTAssertTrue(refusal("# only a comment\n").contains("the config has no keys"))
        // Keys that are mappings or lists (found by launch/fuzz: the YAML reader trapped on them).
        XCTAssertTrue(refusal("method:\n? teacher_model: resnet32\n").contains("hostile.yaml line 2: a key must be a name, not a mapping"), refusal("method:\n? teacher_model: resnet32\n"))
        XCTAssertTrue(refusal("[a, b]: 1\n").contains("a key must be a name, not a list"), refusal("[a, b]: 1\n"))
        XCTAssertTrue(refusal("-4333333333333333330:4\n").contains("hostile.yaml line 1: '-4333333333333333330:4' reads as a base-60 number"),
                      refusal("-4333333333333333330:4\n"))
        XCTAssertTrue(refusal("seed: 1:30\n").contains("reads as a base-60 number"), refusal("seed: 1:30\n"))
        // Nesting the bracket count must not lose (found by launch/fuzz: an apostrophe inside a word hid 3,000
        // brackets on later lines, and "- - - …" nests without brackets; the YAML reader overflowed its stack).
        let brackets = String(repeating: "[", count: 3000)
        for text in ["output: the paper's recipe\nmodels: \(brackets)\n", "output: \"a\\\\\"\nmodels: \(brackets)\n",
                     "models: [it's, \(brackets)\n"] {
            XCTAssertTrue(refusal(text).contains("brackets nested more than 64 deep"), "\(text.prefix(40)): \(refusal(text))")
        }
        let dashes = "models:\n  " + String(repeating: "- ", count: 20_000) + "resnet8\n"
        XCTAssertTrue(refusal(dashes).contains("hostile.yaml line 2: indented more than 512 spaces"), refusal(dashes))
        XCTAssertEqual(try TrainConfig.parse("models: ['a''b', \"c\\\"d\", it's]\nmethod: {name: dml}\n# a [ comment\n", source: "x").models,
                       ["a'b", "c\"d", "it's"], "quotes, escapes and apostrophes read as YAML reads them")
        // A checkpoint's state.json: too large, or not the expected object.
        let run = RunDirectory(NSTemporaryDirectory() + "distill-state-" + UUID().uuidString)
        defer { try? FileManager.default.removeItem(atPath: run.path) }
        try FileManager.default.createDirectory(atPath: run.checkpoints, withIntermediateDirectories: true)
        for (content, needle) in [(String(repeating: " ", count: 5000), "has 5000 bytes"), ("{\"epoch\": [", "missing or unreadable")] {
            try Data(content.utf8).write(to: URL(fileURLWithPath: run.state))
            XCTAssertThrowsError(try run.readState()) { XCTAssertTrue("\($0)".contains(run.state) && "\($0)".contains(needle), "\($0)") }
        }
        // Brackets and '#' inside quotes and comments do not count.
        XCTAssertEqual(refusal("output: \"runs/[[[[#x\"   # ]]]] [[[\nepochs: 2\n"), "accepted")
    }

    func testCommandLineExitCodes() throws {
        try requirePrerequisites(.binary)
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
        _ = FileManager.default.createFile(atPath: dir + "/empty.yaml", contents: Data())
        let empty = runProcess(distillBinary, ["train", dir + "/empty.yaml"])
        XCTAssertEqual(empty.status, 2)
        XCTAssertTrue(empty.output.contains("empty.yaml: the config has no keys"), empty.output)
        let usage = runProcess(distillBinary, ["train"])
        XCTAssertNotEqual(usage.status, 0)
    }
}
