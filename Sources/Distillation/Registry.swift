// The method registry: every method `method.name` may give, with its documented keys and defaults.
//
// Adding a method: write its file (paper, loss written out, a `DistillationMethod` class) with a
// `static let spec = MethodSpec(...)` that names it, declares its `method.*` keys with their defaults, and builds it
// from a `MethodContext`; then add `.spec` to `MethodRegistry.all`. The config parser, the trainer, checkpoints,
// evaluation and the command line take everything else from the spec and the protocol.
import Collectives
import Layers
import Models
import TensorFiles
import Tensors

/// A value of a method key, as read from the config.
public enum OptionValue: Equatable, CustomStringConvertible {
    case int(Int), number(Double), string(String), bool(Bool)

    public var description: String {
        switch self {
        case let .int(i): return "\(i)"
        case let .number(x): return "\(x)"
        case let .string(s): return s
        case let .bool(b): return "\(b)"
        }
    }
}

/// One `method.<name>` key: its type and bounds, default, and one line of documentation.
public struct OptionKey {
    public enum Kind: Equatable {
        /// An integer ≥ min.
        case int(min: Int)
        /// A number in [min, max] (min excluded when `openMin`).
        case number(min: Double, max: Double?, openMin: Bool)
        /// A non-empty string.
        case string
        case bool
    }
    public let name: String
    public let kind: Kind
    /// nil: the key must be given (`required`) or has no value unless given.
    public let defaultValue: OptionValue?
    public let required: Bool
    public let help: String

    public init(_ name: String, _ kind: Kind, default value: OptionValue? = nil, required: Bool = false, help: String) {
        self.name = name; self.kind = kind; self.defaultValue = value; self.required = required; self.help = help
    }

    /// What a value of this key must be, for error messages.
    public var expected: String {
        func show(_ x: Double) -> String { x == x.rounded() && abs(x) < 1e15 ? String(Int(x)) : "\(x)" }
        switch kind {
        case let .int(min): return "an integer ≥ \(min)"
        case let .number(min, max, openMin):
            if let max { return "a number in \(openMin ? "(" : "[")\(show(min)), \(show(max))]" }
            return "a number \(openMin ? ">" : "≥") \(show(min))"
        case .string: return "a non-empty string"
        case .bool: return "true or false"
        }
    }

    /// The softmax temperature of a method's KD terms.
    public static func temperature(_ value: Double) -> OptionKey {
        OptionKey("temperature", .number(min: 0, max: nil, openMin: true), default: .number(value), help: "softmax temperature of the KD terms")
    }
    /// The length of the sigmoid ramp-up of an online method's distillation weight.
    public static let rampUp = OptionKey("rampup_epochs", .int(min: 0), default: .int(80),
                                         help: "epochs of the sigmoid ramp-up exp(−5(1 − t/L)²) of the distillation weight (0: full weight from the start)")
    /// A frozen teacher's model name and checkpoint.
    public static let teacherModel = OptionKey("teacher_model", .string, required: true, help: "the frozen teacher's model name")
    public static let teacherCheckpoint = OptionKey("teacher_checkpoint", .string, required: true, help: "the teacher's weights (a .safetensors file with PyTorch names)")
}

/// A method's resolved keys (defaults filled in), read with the types the spec declared.
public struct MethodOptions: Equatable {
    public var values: [String: OptionValue]
    public init(_ values: [String: OptionValue] = [:]) { self.values = values }

    public func number(_ key: String) -> Float {
        switch values[key] {
        case let .number(x)?: return Float(x)
        case let .int(i)?: return Float(i)
        default: preconditionFailure("method option '\(key)' is not a number: declare it in the method's spec")
        }
    }
    public func int(_ key: String) -> Int {
        guard case let .int(i)? = values[key] else { preconditionFailure("method option '\(key)' is not an integer: declare it in the method's spec") }
        return i
    }
    public func bool(_ key: String) -> Bool {
        guard case let .bool(b)? = values[key] else { preconditionFailure("method option '\(key)' is not a bool: declare it in the method's spec") }
        return b
    }
    public func string(_ key: String) -> String? {
        guard case let .string(s)? = values[key] else { return nil }
        return s
    }
}

/// What a method's factory is given.
public struct MethodContext {
    /// The model name of every peer.
    public let models: [String]
    /// Where the peers run; `placement.localPeers` are this rank's.
    public let placement: PeerPlacement
    public let classes: Int, inChannels: Int
    /// The experiment's seed (for per-peer modules whose initial weights must not depend on placement).
    public let seed: UInt64
    public let options: MethodOptions
    /// The label of every training image, by position (what `StepInput.indices` index); empty when unlabeled.
    public let trainLabels: [Int]
    /// The training images' height and width (for the shapes of feature taps).
    public let imageSize: (height: Int, width: Int)

    public init(models: [String], placement: PeerPlacement, classes: Int, inChannels: Int, seed: UInt64, options: MethodOptions,
                trainLabels: [Int] = [], imageSize: (height: Int, width: Int) = (32, 32)) {
        self.models = models; self.placement = placement; self.classes = classes; self.inChannels = inChannels
        self.seed = seed; self.options = options; self.trainLabels = trainLabels; self.imageSize = imageSize
    }

    public var peers: Int { models.count }

    /// A fresh model of `name` for this data (weights from a fixed seed: for shapes, teachers and mean teachers).
    public func model(_ name: String) throws -> Classifier {
        var g = Generator(seed: 0)
        return try ModelZoo.make(name, classes: classes, inChannels: inChannels, generator: &g)
    }

    /// Channels of peer p's final feature map and of its shared stem's output.
    public func channels(ofPeer p: Int) throws -> (features: Int, stem: Int) {
        let m = try model(models[p])
        return (m.featureChannels, m.stemChannels)
    }

    /// The frozen teacher named by the `teacher_model` and `teacher_checkpoint` keys.
    public func frozenTeacher() throws -> FrozenTeacher {
        guard let name = options.string("teacher_model"), let path = options.string("teacher_checkpoint") else {
            throw MethodError("method.teacher_model and method.teacher_checkpoint are required")
        }
        let t = try model(name)
        do { try t.loadSafeTensors(from: path) } catch {
            throw MethodError("method.teacher_checkpoint: \(error)")
        }
        return FrozenTeacher(model: t)
    }
}

/// A method as the registry knows it.
public struct MethodSpec {
    public let name: String
    /// One line: the paper and what the method does.
    public let summary: String
    /// Its `method.*` keys (besides `name`).
    public let keys: [OptionKey]
    /// With more ranks than peers, trains every peer data-parallel on R / P replicas, each taking a slice of the
    /// batch, computing what P ranks compute on the whole batch (batch norm synchronised across replicas). A method
    /// opts in once every term of its objective splits that way (a term over the whole batch, such as CSS's ratio
    /// of batch losses or MCL's normaliser, reduced across `Cohort.replicaComm`); the default refuses replicas.
    public let dataParallel: Bool
    /// Trains on images without labels: unlabeled images (`dataset.unlabeled`) may join every batch.
    public let labelFree: Bool
    /// Builds the method; `generator` initialises its replicated modules (the same on every rank).
    public let make: (MethodContext, inout Generator) throws -> DistillationMethod
    /// Builds peer p's network when the method has networks of its own (CSS's multi-branch networks); nil: the
    /// model zoo's `models[p]`. `generator` is seeded by (seed, peer), so the weights do not depend on placement.
    public let makePeer: ((MethodContext, Int, inout Generator) throws -> Classifier)?
    /// The model name peer p's network goes by when the method derives it from the configured `models` (OEC's
    /// width-scaled students); nil: `models[p]`.
    public let peerModel: (([String], Int) -> String)?
    /// How the paper's official code evaluates (which head, best or last epoch), for `distill report`; nil: not
    /// known here.
    public let officialEvaluation: String?

    public init(name: String, officialEvaluation: String? = nil, summary: String, keys: [OptionKey] = [], dataParallel: Bool = false,
                labelFree: Bool = false, makePeer: ((MethodContext, Int, inout Generator) throws -> Classifier)? = nil,
                peerModel: (([String], Int) -> String)? = nil,
                make: @escaping (MethodContext, inout Generator) throws -> DistillationMethod) {
        self.name = name; self.summary = summary; self.keys = keys; self.dataParallel = dataParallel
        self.labelFree = labelFree; self.officialEvaluation = officialEvaluation
        self.makePeer = makePeer; self.peerModel = peerModel; self.make = make
    }

    /// The model name of peer p of a cohort configured with `models`.
    public func peerModelName(_ models: [String], _ p: Int) -> String { peerModel?(models, p) ?? models[p] }

    /// The key named `name`, if the method has one.
    public func key(_ name: String) -> OptionKey? { keys.first { $0.name == name } }

    /// Every key's value: the given ones, defaults for the rest; an error names a missing required key.
    public func resolve(_ given: [String: OptionValue]) throws -> MethodOptions {
        var values: [String: OptionValue] = [:]
        for k in keys {
            if let v = given[k.name] ?? k.defaultValue { values[k.name] = v }
            else if k.required { throw MethodError("method \(name) needs method.\(k.name) (\(k.help))") }
        }
        return MethodOptions(values)
    }
}

/// Every method, in the order the documentation lists them.
public enum MethodRegistry {
    public static let all: [MethodSpec] = [
        Independent.spec,
        KDMethod.spec,
        SSLDMethod.spec,
        DML.spec,
        ONE.spec,
        OKDDip.spec,
        PCL.spec,
        FFL.spec,
        CSS.spec,
        AFD.spec,
        MCL.spec,
        OEC.spec,
        OKDHP.spec,
        FitNets.spec,
        AT.spec,
        CRD.spec,
        DKD.spec,
        MSDCRD.spec,
        Avatar.spec,
    ]

    public static var names: [String] { all.map(\.name) }

    public static func spec(_ name: String) -> MethodSpec? { all.first { $0.name == name } }
}
