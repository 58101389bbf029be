// Experiment configuration: one YAML file per experiment. Every key is declared once, in `TrainConfig.fields`
// (its path, what it expects, how it is read and written); a method's own `method.*` keys are declared by the
// method (`MethodSpec.keys` in Distillation). Unknown keys and wrong types are errors that name the file, the key
// path and what was expected. The resolved config is written back as YAML through Yams, so it reads back equal.
import Datasets
import Distillation
import Foundation
import Yams

public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public struct TrainConfig: Equatable {
    public var seed: UInt64 = 0
    public var epochs = 10
    public var batchSize = 128
    /// Drop the last partial training batch (false keeps it, as the official loaders' drop_last=False, unless it is
    /// too small for batch statistics: `EpochSampler.minLastBatch`).
    public var dropLast = false
    public var output = "runs/experiment"
    public var dataset = "fashion-mnist"
    public var datasetPath: String?
    public var trainSubset = 0, testSubset = 0
    /// Images held out of the (subset) training set and evaluated beside the test set each evaluated epoch, for
    /// choosing settings without reading the test set; the same images whatever the run's seed.
    public var validation = 0
    /// Side every image is zero-padded to, centred, before augmentation (0: as stored); 28-pixel Fashion-MNIST
    /// padded to 32 gives the CIFAR models their CIFAR map sizes.
    public var padTo = 0
    /// nil: the dataset's standard augmentation.
    public var augmentation: Augmentation?
    /// Per-channel normalisation (pixels in [0, 1]); nil: the catalog's statistics of the dataset. Recipes give the
    /// constants their official code uses.
    public var normalizationMean: [Float]?, normalizationStd: [Float]?
    /// Images without labels that join every batch (label-free methods only).
    public var unlabeledDataset: String?, unlabeledPath: String?, unlabeledSplit = "train"
    public var unlabeledSubset = 0, unlabeledPerBatch = 0
    /// Model name per peer.
    public var models = ["resnet20"]
    /// `method.name` and the method's resolved keys (defaults filled in).
    public var method = "independent"
    public var methodOptions = MethodOptions()
    /// The main optimiser: "sgd", "adam" or "adamw" (torch.optim's definitions, Layers/Optimizers.swift).
    public var optimizer = "sgd"
    public var lr: Float = 0.1, momentum: Float = 0.9, weightDecay: Float = 5e-4, nesterov = true
    public var beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8
    public var schedule = "cosine", milestones: [Int] = [], gamma: Float = 0.1, warmupEpochs: Float = 0
    public var schedulePerStep = false
    /// Warm-up shape: "linear" (per step from 0.1·lr) or "step" (lr·(e + 1)/W held through epoch e).
    public var warmup = "linear"
    public var evalEvery = 1, checkpointEvery = 1
    public var threads: Int?
    /// TensorBoard event files in the run directory's tensorboard/ (rank 0).
    public var tensorboard = true

    public init() {}

    /// The registry entry of `method`.
    public var methodSpec: MethodSpec {
        guard let s = MethodRegistry.spec(method) else { preconditionFailure("TrainConfig: unknown method '\(method)' (parse checks it)") }
        return s
    }

    // MARK: - Keys

    /// One config key: its dotted path, what it expects, how it is read into and written from a config.
    struct Field {
        let path: String
        let expected: String
        let read: (inout TrainConfig, Any, Reader) throws -> Void
        let write: (TrainConfig) -> Any?
    }

    /// Mappings that hold keys (`method` holds the method's own, checked against its spec).
    static let sections = ["dataset", "dataset.unlabeled", "method", "optimizer", "schedule"]

    /// Every key but the method's own, in the order config.yaml lists them.
    static let fields: [Field] = [
        .int("seed", min: 0, read: { c, v in c.seed = UInt64(v) }, write: { Int($0.seed) }),
        .int("epochs", \.epochs, min: 1),
        .int("batch_size", \.batchSize, min: 1),
        .bool("drop_last", \.dropLast),
        .string("output", \.output, "a directory path"),
        .int("eval_every", \.evalEvery, min: 1),
        .int("checkpoint_every", \.checkpointEvery, min: 1),
        .optionalInt("threads", \.threads, min: 1),
        .bool("tensorboard", \.tensorboard),
        .string("dataset.name", \.dataset, "a dataset name (\(DatasetCatalog.names.joined(separator: ", ")))"),
        .optionalString("dataset.path", \.datasetPath, "a directory path"),
        .int("dataset.train_subset", \.trainSubset, min: 0),
        .int("dataset.test_subset", \.testSubset, min: 0),
        .int("dataset.validation", \.validation, min: 0),
        .int("dataset.pad_to", \.padTo, min: 0),
        augmentationField,
        numberList("dataset.mean", \.normalizationMean),
        numberList("dataset.std", \.normalizationStd),
        .optionalString("dataset.unlabeled.name", \.unlabeledDataset, "a dataset name"),
        .optionalString("dataset.unlabeled.path", \.unlabeledPath, "a directory path"),
        .choice("dataset.unlabeled.split", \.unlabeledSplit, ["train", "test"]),
        .int("dataset.unlabeled.subset", \.unlabeledSubset, min: 0),
        .int("dataset.unlabeled.per_batch", \.unlabeledPerBatch, min: 0),
        modelsField,
        .choice("optimizer.name", \.optimizer, ["sgd", "adam", "adamw"]),
        .number("optimizer.lr", \.lr, min: 0, openMin: true),
        .number("optimizer.momentum", \.momentum, min: 0, below: 1),
        .number("optimizer.weight_decay", \.weightDecay, min: 0),
        .bool("optimizer.nesterov", \.nesterov),
        .number("optimizer.beta1", \.beta1, min: 0, below: 1),
        .number("optimizer.beta2", \.beta2, min: 0, below: 1),
        .number("optimizer.eps", \.eps, min: 0),
        .choice("schedule.name", \.schedule, ["cosine", "multistep"]),
        Field(path: "schedule.milestones", expected: "a list of epochs",
              read: { c, v, r in
                  guard let list = v as? [Any] else { throw r.fail("schedule.milestones", "a list of epochs", v) }
                  c.milestones = try list.enumerated().map { try r.int($0.element, "schedule.milestones[\($0.offset)]", min: 0) }
              }, write: { $0.milestones }),
        .number("schedule.gamma", \.gamma, min: 0),
        .number("schedule.warmup_epochs", \.warmupEpochs, min: 0),
        .choice("schedule.warmup", \.warmup, ["linear", "step"]),
        .bool("schedule.per_step", \.schedulePerStep),
    ]

    static let augmentationField = Field(
        path: "dataset.augmentation", expected: "standard, none, or {crop_padding, pad_mode, horizontal_flip, cutout}",
        read: { c, v, r in
            if let s = v as? String {
                switch s {
                case "standard": c.augmentation = nil
                case "none": c.augmentation = Augmentation.none
                default: throw r.fail("dataset.augmentation", "standard, none, or a mapping", v)
                }
                return
            }
            let m = try r.mapping(v, "dataset.augmentation")
            try r.checkKeys(m, at: "dataset.augmentation", known: ["crop_padding", "pad_mode", "horizontal_flip", "cutout"])
            var a = Augmentation()
            if let x = m["crop_padding"] { a.cropPadding = try r.int(x, "dataset.augmentation.crop_padding", min: 0) }
            if let x = m["pad_mode"] {
                guard let s = x as? String, let mode = PadMode(rawValue: s) else {
                    throw r.fail("dataset.augmentation.pad_mode", PadMode.allCases.map(\.rawValue).joined(separator: " or "), x)
                }
                a.padMode = mode
            }
            if let x = m["horizontal_flip"] { a.horizontalFlip = try r.bool(x, "dataset.augmentation.horizontal_flip") }
            if let x = m["cutout"] { a.cutout = try r.int(x, "dataset.augmentation.cutout", min: 0) }
            c.augmentation = a
        },
        write: { c in
            guard let a = c.augmentation else { return "standard" }
            return ["crop_padding": a.cropPadding, "pad_mode": a.padMode.rawValue, "horizontal_flip": a.horizontalFlip, "cutout": a.cutout] as [String: Any]
        })

    /// An optional list of numbers (one per image channel).
    static func numberList(_ path: String, _ kp: WritableKeyPath<TrainConfig, [Float]?>) -> Field {
        Field(path: path, expected: "a list of numbers, one per channel",
              read: { c, v, r in
                  guard let list = v as? [Any], !list.isEmpty else { throw r.fail(path, "a list of numbers, one per channel", v) }
                  c[keyPath: kp] = try list.enumerated().map { try r.number($0.element, "\(path)[\($0.offset)]", min: 0) }
              },
              write: { $0[keyPath: kp] })
    }

    /// `models: [a, b]`, or `model: a` for one.
    static let modelsField = Field(
        path: "models", expected: "a non-empty list of model names",
        read: { c, v, r in
            guard let list = v as? [Any], !list.isEmpty else { throw r.fail("models", "a non-empty list of model names", v) }
            c.models = try list.enumerated().map { try r.string($0.element, "models[\($0.offset)]") }
        },
        write: { $0.models })

    // MARK: - Parsing

    /// Parses YAML text; `source` names the file in errors. `overrides` are `key.path=value` pairs applied first.
    public static func parse(_ text: String, source: String, overrides: [String] = []) throws -> TrainConfig {
        let loaded = try checkShape(text, source: source)?.any
        guard var root = (loaded ?? [String: Any]()) as? [String: Any] else {
            throw ConfigError("\(source): the top level must be a mapping of keys to values")
        }
        if root.isEmpty && overrides.isEmpty {
            throw ConfigError("\(source): the config has no keys; give at least models and method.name (configs/ has documented examples)")
        }
        for o in overrides { try applyOverride(o, to: &root) }
        let r = Reader(source: source)
        if let m = root["model"] {
            guard root["models"] == nil else { throw ConfigError("\(source): give either model or models, not both") }
            root["models"] = [m]
            root["model"] = nil
        }
        try r.checkKeys(root, at: "", known: knownKeys(under: ""))
        var c = TrainConfig()
        for f in fields { if let v = lookup(root, f.path) { try f.read(&c, v, r) } }

        let given = (root["method"] as? [String: Any]) ?? [:]
        if let v = given["name"] { c.method = try r.string(v, "method.name") }
        guard let spec = MethodRegistry.spec(c.method) else {
            throw ConfigError("\(source): method.name: expected one of \(MethodRegistry.names.joined(separator: ", ")), got '\(c.method)'")
        }
        var options: [String: OptionValue] = [:]
        for key in given.keys.sorted() where key != "name" {
            guard let k = spec.key(key) else {
                let known = ["name"] + spec.keys.map(\.name)
                throw ConfigError("\(source): unknown key 'method.\(key)' for method \(c.method); expected one of: \(known.joined(separator: ", "))")
            }
            options[key] = try r.option(given[key]!, k, "method.\(key)")
        }
        do { c.methodOptions = try spec.resolve(options) } catch let e as MethodError { throw ConfigError("\(source): \(e.message)") }

        if c.unlabeledDataset != nil && !spec.labelFree {
            throw ConfigError("\(source): dataset.unlabeled: method \(c.method) learns from labels; only \(MethodRegistry.all.filter(\.labelFree).map(\.name).joined(separator: ", ")) train on unlabeled images")
        }
        if c.unlabeledDataset != nil && c.unlabeledPerBatch == 0 {
            throw ConfigError("\(source): dataset.unlabeled.per_batch: give how many unlabeled images join each batch (> 0)")
        }
        return c
    }

    /// Limits a config must keep before it is parsed, so that a hostile file ends with an error, in bounded time
    /// and memory: its size, the nesting of brackets and indentation, and the number of values once YAML aliases
    /// are expanded (a "billion laughs" file).
    static let maxBytes = 1 << 20, maxFlowDepth = 64, maxIndent = 512, maxNodes = 100_000

    /// The config's YAML, composed once its size, nesting and expanded size are within the limits.
    static func checkShape(_ text: String, source: String) throws -> Node? {
        let bytes = Array(text.utf8)
        guard bytes.count <= maxBytes else {
            throw ConfigError("\(source): \(bytes.count) bytes; a config is at most \(maxBytes) bytes")
        }
        // Flow nesting ([ and { outside quotes and comments) and indentation, line by line: an upper bound on the
        // YAML reader's recursion, which has no limit of its own. Where this scan and YAML could disagree, the scan
        // errs toward counting more: a quote opens a quoted scalar only where YAML's can (at a line's start or after
        // "[", "{", ",", or ": ", "- ", "? "), a double-quoted scalar's escapes are skipped, and block indicators
        // at a line's start ("- - - x") count as indentation, as YAML nests them.
        var depth = 0, quote: UInt8?, escaped = false, comment = false, atLineStart = true, indent = 0, line = 1
        var previous: UInt8 = 10, lastToken: UInt8?  // the byte before; the line's last byte outside spaces
        func isBlank(_ c: UInt8) -> Bool { c == 32 || c == 9 }
        for (i, b) in bytes.enumerated() {
            defer { previous = b }
            if b == 10 { comment = false; atLineStart = true; indent = 0; line += 1; lastToken = nil; continue }
            if atLineStart {
                let next = i + 1 < bytes.count ? bytes[i + 1] : 10
                let indicator = quote == nil && (b == 45 || b == 63 || b == 58) && (isBlank(next) || next == 10)  // - ? :
                if b == 32 || indicator {
                    indent += 1
                    guard indent <= maxIndent else { throw ConfigError("\(source) line \(line): indented more than \(maxIndent) spaces") }
                    continue
                }
                atLineStart = false
            }
            if comment { continue }
            if let q = quote {
                if q == 34 && escaped { escaped = false } else if q == 34 && b == 92 { escaped = true } else if b == q { quote = nil; lastToken = b }
                continue
            }
            if b == 34 || b == 39 {
                let opens: Bool
                if let t = lastToken { opens = t == 91 || t == 123 || t == 44 || ((t == 58 || t == 45 || t == 63) && isBlank(previous)) } else { opens = true }
                if opens { quote = b; escaped = false; continue }
            } else if b == 35 && (isBlank(previous) || previous == 10 || lastToken == nil) {
                comment = true; continue
            } else if b == 91 || b == 123 {
                depth += 1
                guard depth <= maxFlowDepth else { throw ConfigError("\(source) line \(line): brackets nested more than \(maxFlowDepth) deep") }
            } else if b == 93 || b == 125 {
                depth = max(0, depth - 1)
            }
            if !isBlank(b) { lastToken = b }
        }
        // Values counted with every alias expanded, stopping at the limit.
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch { throw ConfigError("\(source): not valid YAML: \(error)") }
        var stack = node.map { [$0] } ?? [], count = 0
        while let n = stack.popLast() {
            count += 1
            guard count <= maxNodes else {
                throw ConfigError("\(source): more than \(maxNodes) values once its aliases are expanded; a config is far smaller")
            }
            switch n {
            case let .scalar(scalar):
                // YAML 1.1's base-60 numbers ("1:30") overflow the YAML reader's integers (found by launch/fuzz);
                // no config value is one.
                let text = scalar.string
                if scalar.style == .plain, text.contains(":"), let first = text.first, first.isNumber || first == "-" || first == "+",
                   text.allSatisfy({ $0.isASCII && ($0.isNumber || "_:+-.".contains($0)) }) {
                    throw ConfigError("\(source)\(n.mark.map { " line \($0.line)" } ?? ""): '\(text.prefix(40))' reads as a base-60 number; quote it if it is text")
                }
            case let .sequence(s): stack.append(contentsOf: s)
            case let .mapping(m):
                for (k, v) in m {
                    // A key that is itself a list or a mapping ("? a: b") names nothing here (and YAML readers
                    // that expect text keys trap on it).
                    switch k {
                    case .scalar: break
                    case .mapping, .sequence:
                        let kind: String
                        if case .mapping = k { kind = "mapping" } else { kind = "list" }
                        throw ConfigError("\(source)\(k.mark.map { " line \($0.line)" } ?? ""): a key must be a name, not a \(kind)")
                    }
                    stack.append(k); stack.append(v)
                }
            }
        }
        return node
    }

    /// Reads and parses a config file.
    public static func load(_ path: String, overrides: [String] = []) throws -> TrainConfig {
        if let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int, size > maxBytes {
            throw ConfigError("\(path): \(size) bytes; a config is at most \(maxBytes) bytes")
        }
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8) else {
            throw ConfigError(FileManager.default.fileExists(atPath: path) ? "\(path): cannot read the file as UTF-8 text" : "\(path): no such config file")
        }
        return try parse(text, source: path, overrides: overrides)
    }

    /// Applies `key.path=value` (the value read as YAML) to the loaded mapping.
    static func applyOverride(_ o: String, to root: inout [String: Any]) throws {
        guard let eq = o.firstIndex(of: "="), eq != o.startIndex else { throw ConfigError("--set \(o): expected key.path=value") }
        let path = String(o[..<eq]), raw = String(o[o.index(after: eq)...])
        let known = path == "model" || sections.contains(path) || fields.contains { $0.path == path }
            || (path.hasPrefix("method.") && path.split(separator: ".").count == 2)
            || path.hasPrefix("dataset.augmentation.")
        guard known else {
            throw ConfigError("--set \(path): unknown key; known keys: \((["model"] + fields.map(\.path)).joined(separator: ", ")), method.<key of the method>")
        }
        let value = (try? Yams.load(yaml: raw)) ?? raw
        // `model` and `models` are two spellings of one setting: an override of either replaces both.
        if path == "model" { root["models"] = nil }
        if path == "models" { root["model"] = nil }
        set(&root, path.split(separator: ".").map(String.init), value)
    }

    /// The keys directly under `prefix` ("" for the top level).
    static func knownKeys(under prefix: String) -> [String] {
        let paths = sections + fields.map(\.path)
        let start = prefix.isEmpty ? "" : prefix + "."
        return Array(Set(paths.compactMap { p -> String? in
            guard p.hasPrefix(start), p != prefix else { return nil }
            return p.dropFirst(start.count).split(separator: ".").first.map(String.init)
        })).sorted()
    }

    static func lookup(_ m: [String: Any], _ path: String) -> Any? {
        var node: Any = m
        for part in path.split(separator: ".") {
            guard let map = node as? [String: Any], let next = map[String(part)] else { return nil }
            node = next
        }
        return node
    }

    static func set(_ m: inout [String: Any], _ path: [String], _ value: Any) {
        if path.count == 1 { m[path[0]] = value; return }
        var child = m[path[0]] as? [String: Any] ?? [:]
        set(&child, Array(path.dropFirst()), value)
        m[path[0]] = child
    }

    // MARK: - Writing

    /// The resolved configuration as YAML (written to the run directory; `parse` reads it back equal).
    /// Every config key outside `method` with its value as text, in declaration order (what sets two runs apart).
    public var fieldValues: [(path: String, value: String)] {
        TrainConfig.fields.compactMap { f in f.write(self).map { (f.path, "\($0)") } }
    }

    public var yaml: String {
        var root: [String: Any] = [:]
        for f in TrainConfig.fields { if let v = f.write(self) { TrainConfig.set(&root, f.path.split(separator: ".").map(String.init), v) } }
        var m: [String: Any] = ["name": method]
        for (k, v) in methodOptions.values {
            switch v {
            case let .int(i): m[k] = i
            case let .number(x): m[k] = x
            case let .string(s): m[k] = s
            case let .bool(b): m[k] = b
            }
        }
        root["method"] = m
        do { return try Yams.dump(object: root, sortKeys: true) } catch {
            preconditionFailure("TrainConfig.yaml: Yams cannot write the config: \(error)")
        }
    }
}

/// A float as the shortest decimal that reads back as the same float (so YAML shows 0.1, not 0.10000000149).
func decimal(_ x: Float) -> Double { Double("\(x)") ?? Double(x) }

extension TrainConfig.Field {
    typealias Config = TrainConfig
    static func int(_ path: String, min: Int, read: @escaping (inout Config, Int) -> Void, write: @escaping (Config) -> Any?) -> Self {
        Self(path: path, expected: "an integer ≥ \(min)", read: { c, v, r in read(&c, try r.int(v, path, min: min)) }, write: write)
    }
    static func int(_ path: String, _ kp: WritableKeyPath<Config, Int>, min: Int) -> Self {
        int(path, min: min, read: { $0[keyPath: kp] = $1 }, write: { $0[keyPath: kp] })
    }
    static func optionalInt(_ path: String, _ kp: WritableKeyPath<Config, Int?>, min: Int) -> Self {
        int(path, min: min, read: { $0[keyPath: kp] = $1 }, write: { $0[keyPath: kp] })
    }
    static func number(_ path: String, _ kp: WritableKeyPath<Config, Float>, min: Float, openMin: Bool = false, below: Float? = nil) -> Self {
        let expected = below.map { "a number in [\(min), \($0))" } ?? "a number \(openMin ? ">" : "≥") \(min)"
        return Self(path: path, expected: expected, read: { c, v, r in
            let x = try r.number(v, path, min: min, exclusive: openMin)
            if let b = below, x >= b { throw ConfigError("\(r.source): \(path): expected \(expected), got \(x)") }
            c[keyPath: kp] = x
        }, write: { decimal($0[keyPath: kp]) })
    }
    static func string(_ path: String, _ kp: WritableKeyPath<Config, String>, _ expected: String) -> Self {
        Self(path: path, expected: expected, read: { c, v, r in c[keyPath: kp] = try r.string(v, path) }, write: { $0[keyPath: kp] })
    }
    static func optionalString(_ path: String, _ kp: WritableKeyPath<Config, String?>, _ expected: String) -> Self {
        Self(path: path, expected: expected, read: { c, v, r in c[keyPath: kp] = try r.string(v, path) }, write: { $0[keyPath: kp] })
    }
    static func choice(_ path: String, _ kp: WritableKeyPath<Config, String>, _ options: [String]) -> Self {
        let expected = options.joined(separator: " or ")
        return Self(path: path, expected: expected, read: { c, v, r in
            let s = try r.string(v, path)
            guard options.contains(s) else { throw r.fail(path, expected, v) }
            c[keyPath: kp] = s
        }, write: { $0[keyPath: kp] })
    }
    static func bool(_ path: String, _ kp: WritableKeyPath<Config, Bool>) -> Self {
        Self(path: path, expected: "true or false", read: { c, v, r in c[keyPath: kp] = try r.bool(v, path) }, write: { $0[keyPath: kp] })
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

    /// Rejects keys of `m` (at `path`) not in `known`, naming the first by its full path; recurses into sections.
    func checkKeys(_ m: [String: Any], at path: String, known: [String]) throws {
        for key in m.keys.sorted() {
            let full = path.isEmpty ? key : path + "." + key
            guard known.contains(key) else {
                let paths = known.map { path.isEmpty ? $0 : path + "." + $0 }
                throw ConfigError("\(source): unknown key '\(full)'; expected one of: \(paths.joined(separator: ", "))")
            }
            guard TrainConfig.sections.contains(full) else { continue }
            let child = try mapping(m[key]!, full)
            if full != "method" { try checkKeys(child, at: full, known: TrainConfig.knownKeys(under: full)) }
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

    func double(_ v: Any, _ path: String) throws -> Double {
        if let d = v as? Double { return d }
        if let i = v as? Int, !(v is Bool) { return Double(i) }
        if let s = v as? String, let d = Double(s) { return d }  // YAML 1.1 reads 5e-4 as a string
        throw fail(path, "a number", v)
    }

    func number(_ v: Any, _ path: String, min: Float, exclusive: Bool = false) throws -> Float {
        let x = Float(try double(v, path))
        guard x.isFinite, exclusive ? x > min : x >= min else {
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

    /// A method key's value, checked against its declared kind.
    func option(_ v: Any, _ key: OptionKey, _ path: String) throws -> OptionValue {
        switch key.kind {
        case let .int(min):
            return .int(try int(v, path, min: min))
        case let .number(min, max, openMin):
            let x = try double(v, path)
            guard x.isFinite, openMin ? x > min : x >= min, x <= (max ?? .infinity) else {
                throw ConfigError("\(source): \(path): expected \(key.expected), got \(x)")
            }
            return .number(x)
        case .string:
            // YAML reads `scales: 1` (or `--set method.scales=1`) as a number; a whole number is its own text.
            if let i = v as? Int { return .string(String(i)) }
            return .string(try string(v, path))
        case .bool: return .bool(try bool(v, path))
        }
    }
}
