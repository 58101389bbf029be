// Experiment configuration: one YAML file per experiment. Every field is documented here and in configs/;
// unknown keys and wrong types are errors that name the key path and what was expected.
import Datasets
import Foundation
import Yams

public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public struct TrainConfig: Equatable {
    /// Seed of weight initialisation, data order and augmentation.
    public var seed: UInt64 = 0
    /// Passes over the training set.
    public var epochs = 10
    /// Images per optimisation step (the global batch).
    public var batchSize = 128
    /// Directory for config.yaml, metrics.jsonl and checkpoints.
    public var output = "runs/experiment"
    /// Dataset name: cifar10, cifar100, fashion-mnist, mnist.
    public var dataset = "fashion-mnist"
    /// Directory of the dataset files (fashion-mnist defaults to Debian's package location).
    public var datasetPath: String?
    /// Use only the first N training / test images (0 = all).
    public var trainSubset = 0, testSubset = 0
    /// Training augmentation: "standard" for the dataset, "none", or explicit settings.
    public var augmentation: Augmentation?
    /// Model name per peer (one entry for a single model).
    public var models = ["resnet20"]
    /// Distillation method, one of `TrainConfig.methods`.
    public var method = "independent"
    /// kd, ssld: the teacher's model name and checkpoint (a safetensors file with matching names).
    public var teacherModel: String?, teacherCheckpoint: String?
    /// Softmax temperature of the KD terms (nil: the method's default — kd 4, dml 1, one/okddip/pcl/ffl 3);
    /// kd's weight α of the soft term.
    public var temperature: Float?, alpha: Float = 0.9
    /// Online methods: epochs of the sigmoid ramp-up of the KD weight (0: full weight from the start).
    public var rampUpEpochs = 80
    /// ssld: a dataset whose images join every batch without their labels, its split, subset and images per batch.
    public var unlabeledDataset: String?, unlabeledPath: String?, unlabeledSplit = "train"
    public var unlabeledSubset = 0, unlabeledPerBatch = 0
    /// SGD: learning rate, momentum, weight decay, Nesterov.
    public var lr: Float = 0.1, momentum: Float = 0.9, weightDecay: Float = 5e-4, nesterov = true
    /// Schedule: "cosine" or "multistep" (with milestones and gamma), optional linear warm-up epochs.
    public var schedule = "cosine", milestones: [Int] = [], gamma: Float = 0.1, warmupEpochs = 0.0
    /// cosine: follow every step (reaching zero at the end) instead of holding each epoch's value.
    public var schedulePerStep = false
    /// Evaluate on the test split every N epochs (and after the last).
    public var evalEvery = 1
    /// Write a checkpoint every N epochs (and after the last).
    public var checkpointEvery = 1
    /// Kernel threads per rank (default: OPENBLAS_NUM_THREADS, else the core count).
    public var threads: Int?

    public init() {}

    /// Every method `method.name` may give.
    public static let methods = ["independent", "kd", "ssld", "dml", "one", "okddip", "pcl", "ffl"]
    /// Methods that learn from a frozen teacher checkpoint.
    static let offline = ["kd", "ssld"]

    /// Every key a config file may hold, as dotted paths, with the expected type.
    public static let schema: [String: String] = [
        "dataset": "a mapping", "method": "a mapping", "optimizer": "a mapping", "schedule": "a mapping",
        "seed": "a non-negative integer", "epochs": "a positive integer", "batch_size": "a positive integer",
        "output": "a directory path", "threads": "a positive integer",
        "dataset.name": "a dataset name", "dataset.path": "a directory path", "dataset.train_subset": "an integer ≥ 0",
        "dataset.test_subset": "an integer ≥ 0", "dataset.augmentation": "standard, none, or a mapping",
        "dataset.augmentation.crop_padding": "an integer ≥ 0", "dataset.augmentation.horizontal_flip": "true or false",
        "dataset.augmentation.cutout": "an integer ≥ 0",
        "model": "a model name", "models": "a list of model names",
        "method.name": "a method name", "method.teacher_model": "a model name",
        "method.teacher_checkpoint": "a .safetensors path", "method.temperature": "a number > 0",
        "method.alpha": "a number in [0, 1]", "method.rampup_epochs": "an integer ≥ 0",
        "method.unlabeled_dataset": "a dataset name", "method.unlabeled_path": "a directory path",
        "method.unlabeled_split": "train or test", "method.unlabeled_subset": "an integer ≥ 0",
        "method.unlabeled_per_batch": "an integer ≥ 0",
        "optimizer.lr": "a positive number", "optimizer.momentum": "a number in [0, 1)",
        "optimizer.weight_decay": "a number ≥ 0", "optimizer.nesterov": "true or false",
        "schedule.name": "cosine or multistep", "schedule.milestones": "a list of epochs", "schedule.gamma": "a number",
        "schedule.warmup_epochs": "a number ≥ 0", "schedule.per_step": "true or false",
        "eval_every": "a positive integer", "checkpoint_every": "a positive integer",
    ]

    /// Parses YAML text; `source` names the file in errors. `overrides` are `key.path=value` pairs applied first.
    public static func parse(_ text: String, source: String, overrides: [String] = []) throws -> TrainConfig {
        let loaded: Any?
        do { loaded = try Yams.load(yaml: text) } catch { throw ConfigError("\(source): not valid YAML: \(error)") }
        guard var root = (loaded ?? [String: Any]()) as? [String: Any] else {
            throw ConfigError("\(source): the top level must be a mapping of keys to values")
        }
        for o in overrides {
            guard let eq = o.firstIndex(of: "="), eq != o.startIndex else {
                throw ConfigError("--set \(o): expected key.path=value")
            }
            let path = String(o[..<eq]), raw = String(o[o.index(after: eq)...])
            guard schema[path] != nil else { throw ConfigError("--set \(path): unknown key; known keys: \(schema.keys.sorted().joined(separator: ", "))") }
            let value = (try? Yams.load(yaml: raw)) ?? raw
            // `model` and `models` are two spellings of one setting: an override of either replaces both.
            if path == "model" { root["models"] = nil }
            if path == "models" { root["model"] = nil }
            set(&root, path.split(separator: ".").map(String.init), value)
        }
        var c = TrainConfig()
        let r = Reader(source: source)
        try r.checkKeys(root, prefix: "")
        if let v = root["seed"] { c.seed = UInt64(try r.int(v, "seed", min: 0)) }
        if let v = root["epochs"] { c.epochs = try r.int(v, "epochs", min: 1) }
        if let v = root["batch_size"] { c.batchSize = try r.int(v, "batch_size", min: 1) }
        if let v = root["output"] { c.output = try r.string(v, "output") }
        if let v = root["threads"] { c.threads = try r.int(v, "threads", min: 1) }
        if let v = root["eval_every"] { c.evalEvery = try r.int(v, "eval_every", min: 1) }
        if let v = root["checkpoint_every"] { c.checkpointEvery = try r.int(v, "checkpoint_every", min: 1) }
        if let d = root["dataset"] {
            let m = try r.mapping(d, "dataset")
            if let v = m["name"] { c.dataset = try r.string(v, "dataset.name") }
            if let v = m["path"] { c.datasetPath = try r.string(v, "dataset.path") }
            if let v = m["train_subset"] { c.trainSubset = try r.int(v, "dataset.train_subset", min: 0) }
            if let v = m["test_subset"] { c.testSubset = try r.int(v, "dataset.test_subset", min: 0) }
            if let v = m["augmentation"] {
                if let s = v as? String {
                    switch s {
                    case "standard": c.augmentation = nil
                    case "none": c.augmentation = Augmentation.none
                    default: throw ConfigError("\(source): dataset.augmentation: expected standard, none, or a mapping, got '\(s)'")
                    }
                } else {
                    let a = try r.mapping(v, "dataset.augmentation")
                    var aug = Augmentation()
                    if let p = a["crop_padding"] { aug.cropPadding = try r.int(p, "dataset.augmentation.crop_padding", min: 0) }
                    if let f = a["horizontal_flip"] { aug.horizontalFlip = try r.bool(f, "dataset.augmentation.horizontal_flip") }
                    if let k = a["cutout"] { aug.cutout = try r.int(k, "dataset.augmentation.cutout", min: 0) }
                    c.augmentation = aug
                }
            }
        }
        if root["model"] != nil && root["models"] != nil { throw ConfigError("\(source): give either model or models, not both") }
        if let v = root["model"] { c.models = [try r.string(v, "model")] }
        if let v = root["models"] {
            guard let list = v as? [Any], !list.isEmpty else { throw ConfigError("\(source): models: expected a non-empty list of model names") }
            c.models = try list.enumerated().map { try r.string($0.element, "models[\($0.offset)]") }
        }
        if let mv = root["method"] {
            let m = try r.mapping(mv, "method")
            if let v = m["name"] { c.method = try r.string(v, "method.name") }
            if let v = m["teacher_model"] { c.teacherModel = try r.string(v, "method.teacher_model") }
            if let v = m["teacher_checkpoint"] { c.teacherCheckpoint = try r.string(v, "method.teacher_checkpoint") }
            if let v = m["temperature"] { c.temperature = try r.number(v, "method.temperature", min: 0, exclusive: true) }
            if let v = m["alpha"] { c.alpha = try r.number(v, "method.alpha", min: 0) }
            if let v = m["rampup_epochs"] { c.rampUpEpochs = try r.int(v, "method.rampup_epochs", min: 0) }
            if let v = m["unlabeled_dataset"] { c.unlabeledDataset = try r.string(v, "method.unlabeled_dataset") }
            if let v = m["unlabeled_path"] { c.unlabeledPath = try r.string(v, "method.unlabeled_path") }
            if let v = m["unlabeled_split"] {
                c.unlabeledSplit = try r.string(v, "method.unlabeled_split")
                guard ["train", "test"].contains(c.unlabeledSplit) else {
                    throw ConfigError("\(source): method.unlabeled_split: expected train or test, got '\(c.unlabeledSplit)'")
                }
            }
            if let v = m["unlabeled_subset"] { c.unlabeledSubset = try r.int(v, "method.unlabeled_subset", min: 0) }
            if let v = m["unlabeled_per_batch"] { c.unlabeledPerBatch = try r.int(v, "method.unlabeled_per_batch", min: 0) }
        }
        guard methods.contains(c.method) else {
            throw ConfigError("\(source): method.name: expected one of \(methods.joined(separator: ", ")), got '\(c.method)'")
        }
        if c.alpha > 1 { throw ConfigError("\(source): method.alpha: expected a number in [0, 1], got \(c.alpha)") }
        if offline.contains(c.method) && (c.teacherModel == nil || c.teacherCheckpoint == nil) {
            throw ConfigError("\(source): method \(c.method) needs method.teacher_model and method.teacher_checkpoint")
        }
        if c.unlabeledDataset != nil && c.method != "ssld" {
            throw ConfigError("\(source): method.unlabeled_dataset: only ssld trains on unlabeled images, the method is \(c.method)")
        }
        if c.unlabeledDataset != nil && c.unlabeledPerBatch == 0 {
            throw ConfigError("\(source): method.unlabeled_per_batch: give how many unlabeled images join each batch (> 0)")
        }
        if let o = root["optimizer"] {
            let m = try r.mapping(o, "optimizer")
            if let v = m["lr"] { c.lr = try r.number(v, "optimizer.lr", min: 0, exclusive: true) }
            if let v = m["momentum"] { c.momentum = try r.number(v, "optimizer.momentum", min: 0) }
            if let v = m["weight_decay"] { c.weightDecay = try r.number(v, "optimizer.weight_decay", min: 0) }
            if let v = m["nesterov"] { c.nesterov = try r.bool(v, "optimizer.nesterov") }
        }
        if let s = root["schedule"] {
            let m = try r.mapping(s, "schedule")
            if let v = m["name"] {
                c.schedule = try r.string(v, "schedule.name")
                guard ["cosine", "multistep"].contains(c.schedule) else {
                    throw ConfigError("\(source): schedule.name: expected cosine or multistep, got '\(c.schedule)'")
                }
            }
            if let v = m["milestones"] {
                guard let list = v as? [Any] else { throw ConfigError("\(source): schedule.milestones: expected a list of epochs") }
                c.milestones = try list.enumerated().map { try r.int($0.element, "schedule.milestones[\($0.offset)]", min: 0) }
            }
            if let v = m["gamma"] { c.gamma = try r.number(v, "schedule.gamma", min: 0) }
            if let v = m["warmup_epochs"] { c.warmupEpochs = Double(try r.number(v, "schedule.warmup_epochs", min: 0)) }
            if let v = m["per_step"] { c.schedulePerStep = try r.bool(v, "schedule.per_step") }
        }
        if c.momentum >= 1 { throw ConfigError("\(source): optimizer.momentum: expected a number in [0, 1), got \(c.momentum)") }
        return c
    }

    /// Reads and parses a config file.
    public static func load(_ path: String, overrides: [String] = []) throws -> TrainConfig {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(FileManager.default.fileExists(atPath: path) ? "\(path): cannot read the file as UTF-8 text" : "\(path): no such config file")
        }
        return try parse(text, source: path, overrides: overrides)
    }

    static func set(_ m: inout [String: Any], _ path: [String], _ value: Any) {
        if path.count == 1 { m[path[0]] = value; return }
        var child = m[path[0]] as? [String: Any] ?? [:]
        set(&child, Array(path.dropFirst()), value)
        m[path[0]] = child
    }

    /// The resolved configuration as YAML (written to the run directory).
    public var yaml: String {
        var lines = [
            "seed: \(seed)", "epochs: \(epochs)", "batch_size: \(batchSize)", "output: \(output)",
            "dataset:", "  name: \(dataset)",
        ]
        if let p = datasetPath { lines.append("  path: \(p)") }
        lines.append("  train_subset: \(trainSubset)")
        lines.append("  test_subset: \(testSubset)")
        if let a = augmentation {
            lines += ["  augmentation:", "    crop_padding: \(a.cropPadding)", "    horizontal_flip: \(a.horizontalFlip)", "    cutout: \(a.cutout)"]
        } else {
            lines.append("  augmentation: standard")
        }
        lines.append("models: [\(models.joined(separator: ", "))]")
        lines += ["method:", "  name: \(method)"]
        if let t = teacherModel { lines.append("  teacher_model: \(t)") }
        if let t = teacherCheckpoint { lines.append("  teacher_checkpoint: \(t)") }
        if let t = temperature { lines.append("  temperature: \(t)") }
        lines += ["  alpha: \(alpha)", "  rampup_epochs: \(rampUpEpochs)"]
        if let u = unlabeledDataset {
            lines.append("  unlabeled_dataset: \(u)")
            if let p = unlabeledPath { lines.append("  unlabeled_path: \(p)") }
            lines += ["  unlabeled_split: \(unlabeledSplit)", "  unlabeled_subset: \(unlabeledSubset)",
                      "  unlabeled_per_batch: \(unlabeledPerBatch)"]
        }
        lines += ["optimizer:", "  lr: \(lr)", "  momentum: \(momentum)",
                  "  weight_decay: \(weightDecay)", "  nesterov: \(nesterov)", "schedule:", "  name: \(schedule)",
                  "  milestones: [\(milestones.map(String.init).joined(separator: ", "))]", "  gamma: \(gamma)",
                  "  warmup_epochs: \(warmupEpochs)", "  per_step: \(schedulePerStep)", "eval_every: \(evalEvery)", "checkpoint_every: \(checkpointEvery)"]
        if let t = threads { lines.append("threads: \(t)") }
        return lines.joined(separator: "\n") + "\n"
    }
}

/// Typed access to decoded YAML values with errors that name the file and key path.
struct Reader {
    let source: String

    func fail(_ path: String, _ expected: String, _ got: Any) -> ConfigError {
        ConfigError("\(source): \(path): expected \(expected), got \(describe(got))")
    }

    func describe(_ v: Any) -> String {
        if let s = v as? String { return "'\(s)'" }
        if v is [Any] { return "a list" }
        if v is [String: Any] { return "a mapping" }
        return "\(v)"
    }

    /// Rejects keys the schema does not know, naming the first by its full path.
    func checkKeys(_ m: [String: Any], prefix: String) throws {
        for key in m.keys.sorted() {
            let path = prefix.isEmpty ? key : prefix + "." + key
            guard TrainConfig.schema[path] != nil else {
                let known = TrainConfig.schema.keys.filter { prefix.isEmpty ? !$0.contains(".") : $0.hasPrefix(prefix + ".") && !$0.dropFirst(prefix.count + 1).contains(".") }
                throw ConfigError("\(source): unknown key '\(path)'; expected one of: \(known.sorted().joined(separator: ", "))")
            }
            if let child = m[key] as? [String: Any] { try checkKeys(child, prefix: path) }
        }
    }

    func mapping(_ v: Any, _ path: String) throws -> [String: Any] {
        guard let m = v as? [String: Any] else { throw fail(path, "a mapping", v) }
        return m
    }

    func int(_ v: Any, _ path: String, min: Int) throws -> Int {
        guard let i = v as? Int, !(v is Bool) else { throw fail(path, "an integer", v) }
        guard i >= min else { throw ConfigError("\(source): \(path): expected an integer ≥ \(min), got \(i)") }
        return i
    }

    func number(_ v: Any, _ path: String, min: Float, exclusive: Bool = false) throws -> Float {
        let x: Float
        if let d = v as? Double { x = Float(d) } else if let i = v as? Int, !(v is Bool) { x = Float(i) }
        else if let s = v as? String, let d = Double(s) { x = Float(d) }  // YAML 1.1 reads 5e-4 as a string
        else { throw fail(path, "a number", v) }
        guard exclusive ? x > min : x >= min else {
            throw ConfigError("\(source): \(path): expected a number \(exclusive ? ">" : "≥") \(min), got \(x)")
        }
        return x
    }

    func bool(_ v: Any, _ path: String) throws -> Bool {
        guard let b = v as? Bool else { throw fail(path, "true or false", v) }
        return b
    }

    func string(_ v: Any, _ path: String) throws -> String {
        guard let s = v as? String, !s.isEmpty else { throw fail(path, "a non-empty string", v) }
        return s
    }
}
