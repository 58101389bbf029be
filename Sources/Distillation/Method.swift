// The contract between the trainer and a distillation method.
//
// One objective: a step's objective is the sum of every peer's loss. Each rank builds its share — the loss terms
// of the peers it hosts, plus 1/R of every term that all ranks compute identically (an ensemble's CE, a fused
// classifier's CE) — and runs backward on it. The differentiable collectives carry gradients between ranks, and
// the trainer sums the gradients of replicated parameters (a shared stem, the method's own modules) across
// ranks, so R ranks compute what one process hosting every peer computes.
import Collectives
import Foundation
import Layers
import Models
import Tensors

/// The peers one rank hosts and how they are placed over the peer communicator.
public final class Cohort {
    public let placement: PeerPlacement
    /// The peer communicator (as many ranks as the placement).
    public let comm: Communicator
    /// The local peers' models, in `placement.localPeers` order.
    public let models: [Classifier]
    /// The stem the peers share, or nil when each runs its own.
    public let stem: SharedStem?
    /// With one model trained data-parallel, the ranks that share each batch (this rank holds one shard of it);
    /// nil otherwise. A term that compares samples across the batch reads the other shards through it.
    public let replicaComm: Communicator?

    public init(placement: PeerPlacement, comm: Communicator, models: [Classifier], stem: SharedStem?, replicaComm: Communicator? = nil) {
        precondition(models.count == placement.localPeers.count, "Cohort: \(models.count) models for \(placement.localPeers.count) local peers")
        self.placement = placement; self.comm = comm; self.models = models; self.stem = stem; self.replicaComm = replicaComm
    }

    public var peers: Int { placement.peers }
    /// The weight of a term every rank computes identically, so the ranks' shares add up to it once.
    public var sharedScale: Float { 1 / Float(placement.ranks) }

    /// Each local peer's final feature map, for one input per local peer (through the shared stem, if any).
    public func features(_ inputs: [Tensor]) -> [Tensor] {
        precondition(inputs.count == models.count, "Cohort.features: \(inputs.count) inputs for \(models.count) peers")
        guard let stem else { return zip(models, inputs).map { $0.features($1) } }
        return zip(models, stem(inputs)).map { $0.branch($1) }
    }

    /// Each local peer's logits for one shared input.
    public func logits(_ x: Tensor) -> [Tensor] {
        zip(models, features(Array(repeating: x, count: models.count))).map { $0.head($1) }
    }

    /// The shared stem's output for `x` and each local peer's final feature map from it.
    public func sharedStemFeatures(_ x: Tensor) -> (stem: Tensor, features: [Tensor]) {
        guard let stem else { preconditionFailure("Cohort.sharedStemFeatures: the peers do not share a stem") }
        let h = stem([x])[0]
        return (h, models.map { $0.branch(h) })
    }

    /// Every peer's tensor in peer order from the local ones, on the tape (gradients reach the hosts).
    public func gather(_ local: [Tensor]) throws -> [Tensor] { try placement.gatherPeers(local, on: comm) }

    /// Every peer's tensor in peer order, detached: for targets only.
    public func gatherDetached(_ local: [Tensor]) throws -> [Tensor] {
        try withoutGradients { try placement.gatherPeers(local.map { $0.detached() }, on: comm) }
    }
}

/// One optimisation step's data, as the method sees it.
public struct StepInput {
    /// One batch per local peer. Methods whose peers see the same view get the same tensor for every peer.
    public let images: [Tensor]
    /// Labels, or nil for label-free batches.
    public let labels: [Int]?
    /// Whole epochs completed before this step (for ramp-up weights).
    public let epoch: Int
    /// Optimisation steps taken before this one.
    public let step: Int
    /// The batch's items: positions in the training set (`MethodContext.trainLabels`), the same on every rank.
    public let indices: [Int]
    /// Each sample's position in the global batch (data-parallel replicas hold slices of it): what streams keyed
    /// by position use, so that the split does not change them. Empty: 0..<batch size.
    public let positions: [Int]

    public init(images: [Tensor], labels: [Int]?, epoch: Int, step: Int, indices: [Int] = [], positions: [Int] = []) {
        self.images = images; self.labels = labels; self.epoch = epoch; self.step = step; self.indices = indices
        self.positions = positions
    }
}

/// What a method returns for one step on one rank.
public struct StepResult {
    /// This rank's share of the cohort's objective.
    public var objective: Tensor
    /// The local peers' logits on their batches (for training accuracy).
    public var peerLogits: [Tensor]
    /// Each local peer's own loss (its terms, without shared ones).
    public var peerLoss: [Float]
    /// This rank's share of each named loss term; summed over ranks it is the cohort's term.
    public var terms: [String: Float]
    /// The teacher's logits on the first local peer's batch (nil when the method has none); the trainer counts
    /// the teacher's training accuracy from rank 0's.
    public var teacherLogits: Tensor?

    public init(objective: Tensor, peerLogits: [Tensor], peerLoss: [Float], terms: [String: Float], teacherLogits: Tensor? = nil) {
        self.objective = objective; self.peerLogits = peerLogits; self.peerLoss = peerLoss
        self.terms = terms; self.teacherLogits = teacherLogits
    }
}

/// What a method predicts for an evaluation batch on one rank.
public struct Predictions {
    /// The local peers' logits, in local order.
    public var peers: [Tensor]
    /// The teacher's logits (identical on every rank), or nil when the method has none.
    public var teacher: Tensor?
    /// Further named predictions hosted on this rank (names from `extraNames`), such as CSS's single branches.
    public var extra: [String: Tensor]

    public init(peers: [Tensor], teacher: Tensor? = nil, extra: [String: Tensor] = [:]) {
        self.peers = peers; self.teacher = teacher; self.extra = extra
    }
}

/// Where a parameter a rank updates belongs: a peer's network, a method's per-peer module, the shared stem, or the
/// method's replicated modules.
public enum ParameterRole: String, CaseIterable {
    case network, peerModule, stem, method
}

/// Settings of a subset of the main optimiser's parameters (FFL's fusion module at its own weight decay; OEC's
/// adapters at half the learning rate from the second epoch).
public struct GroupSettings: Equatable {
    /// Multiplies the scheduled learning rate.
    public var lrScale: Float
    /// nil: `optimizer.weight_decay`.
    public var weightDecay: Float?
    /// The epoch (0-based) the parameters join the optimiser: before it their learning rate is 0, and at its start
    /// their optimiser state starts afresh.
    public var fromEpoch: Int
    public init(lrScale: Float = 1, weightDecay: Float? = nil, fromEpoch: Int = 0) {
        self.lrScale = lrScale; self.weightDecay = weightDecay; self.fromEpoch = fromEpoch
    }
}

/// An optimiser phase that runs after the main one in every step, on the same batch, with its own objective and
/// optimiser (AFD's discriminator and adversarial updates). Its learning rate is constant.
public struct OptimizerPhase {
    public enum Kind: Equatable {
        case sgd(momentum: Float, nesterov: Bool)
        /// torch.optim.Adam (L2 weight decay) or, `decoupled`, AdamW.
        case adam(beta1: Float, beta2: Float, eps: Float, decoupled: Bool)
        public var name: String {
            switch self {
            case .sgd: return "sgd"
            case let .adam(_, _, _, decoupled): return decoupled ? "adamw" : "adam"
            }
        }
    }
    /// Names the phase in checkpoints ("<phase>/<parameter>/<state>") and messages.
    public let name: String
    public let kind: Kind
    public let lr: Float, weightDecay: Float
    /// Whether the phase updates a parameter, by role and by its name within the peer, module, stem or method.
    public let updates: (ParameterRole, String) -> Bool

    public init(name: String, kind: Kind, lr: Float, weightDecay: Float = 0, updates: @escaping (ParameterRole, String) -> Bool) {
        self.name = name; self.kind = kind; self.lr = lr; self.weightDecay = weightDecay; self.updates = updates
    }
}

/// A further phase's objective on one rank.
public struct PhaseResult {
    /// This rank's share of the phase's objective.
    public var objective: Tensor
    /// This rank's share of each named term (names among the method's `termNames`).
    public var terms: [String: Float]
    public init(objective: Tensor, terms: [String: Float]) { self.objective = objective; self.terms = terms }
}

/// A distillation method: how a cohort's loss is built from one batch, and what its teacher predicts.
public protocol DistillationMethod: AnyObject {
    /// The config name (`method.name`).
    var name: String { get }
    /// Modules the method owns, replicated on every rank (their gradients are summed across ranks).
    var modules: [(String, Module)] { get }
    /// Whether the peers share a stem.
    var sharesStem: Bool { get }
    /// Where the shared stem ends (`Classifier.setStemEnd`: after stage 0, 1 or 2); nil: the models' default.
    var stemEnd: Int? { get }
    /// Whether each peer gets its own random augmentation of the batch (otherwise all see peer 0's view).
    var augmentsPerPeer: Bool { get }
    /// The teacher reported in metrics ("ensemble", "fused", ...), or nil.
    var teacherName: String? { get }
    /// The names of the loss terms `step` reports, the same on every rank.
    var termNames: [String] { get }
    /// Builds this rank's share of the objective for a batch (training mode, on the tape).
    func step(_ input: StepInput, cohort: Cohort) throws -> StepResult
    /// Evaluation-mode logits of the local peers and of the teacher (identical on every rank) for a batch.
    func evaluate(_ x: Tensor, cohort: Cohort) throws -> Predictions
    /// Whether the teacher is fixed for the whole run (offline distillation from a checkpoint): its accuracy on a
    /// split is then measured at the first evaluation and reused, and later evaluations call `evaluatePeers`.
    var teacherIsFrozen: Bool { get }
    /// The local peers' evaluation-mode logits without the teacher's (for a method whose teacher is frozen).
    func evaluatePeers(_ x: Tensor, cohort: Cohort) throws -> Predictions
    /// Names of the further predictions `evaluate` reports for a cohort of `peers`, the same on every rank.
    func extraNames(peers: Int) -> [String]
    /// Runs once the cohort is in place (a shared stem set), before training or restoring.
    func start(cohort: Cohort)
    /// Runs after each optimiser step (temporal means); `step` counts the steps taken.
    func afterStep(cohort: Cohort, step: Int)
    /// A trainable module of local peer k's own (its slice of FFL's fusion module), trained and saved with it.
    func peerModule(_ k: Int) -> Module?
    /// Untrained state of local peer k saved beside its weights (PCL's mean teacher), or nil.
    func peerExtraState(_ k: Int) -> Module?
    /// Whether the main optimiser (the config's `optimizer.*`) updates a parameter; default: every one.
    func mainPhaseUpdates(_ role: ParameterRole, _ name: String) -> Bool
    /// The main optimiser's settings for a parameter when they differ from the config's; default nil.
    func groupSettings(_ role: ParameterRole, _ name: String) -> GroupSettings?
    /// Whether the main optimiser's state (momenta, moments, step counts) starts afresh at the start of `epoch`
    /// (0-based), as an official code that rebuilds its optimiser then; default false.
    func restartsMainOptimizer(atEpoch epoch: Int) -> Bool
    /// Phases that run after the main update in every step, in order; default none.
    var phases: [OptimizerPhase] { get }
    /// Phase `phase`'s objective for the step's batch, after the main update and the earlier phases' (training
    /// mode, on the tape). The trainer runs backward on it and applies the phase's optimiser.
    func phaseStep(_ phase: Int, _ input: StepInput, cohort: Cohort) throws -> PhaseResult
}

extension DistillationMethod {
    public var modules: [(String, Module)] { [] }
    public var sharesStem: Bool { false }
    public var stemEnd: Int? { nil }
    public var augmentsPerPeer: Bool { false }
    public var teacherName: String? { nil }
    public var teacherIsFrozen: Bool { false }
    public func evaluatePeers(_ x: Tensor, cohort: Cohort) throws -> Predictions {
        var p = try evaluate(x, cohort: cohort)
        p.teacher = nil
        return p
    }
    public func extraNames(peers: Int) -> [String] { [] }
    public func start(cohort: Cohort) {}
    public func afterStep(cohort: Cohort, step: Int) {}
    public func peerModule(_ k: Int) -> Module? { nil }
    public func peerExtraState(_ k: Int) -> Module? { nil }
    public func mainPhaseUpdates(_ role: ParameterRole, _ name: String) -> Bool { true }
    public func groupSettings(_ role: ParameterRole, _ name: String) -> GroupSettings? { nil }
    public func restartsMainOptimizer(atEpoch epoch: Int) -> Bool { false }
    public var phases: [OptimizerPhase] { [] }
    public func phaseStep(_ phase: Int, _ input: StepInput, cohort: Cohort) throws -> PhaseResult {
        preconditionFailure("\(name) declares no optimiser phase \(phase)")
    }
}

/// The sigmoid ramp-up of online KD weights, exp(−5·(1 − t/L)²) for whole epochs t < L, then 1 (L = 0: always 1).
public func rampUpWeight(epoch: Int, length: Int) -> Float {
    guard length > 0 else { return 1 }
    let t = 1 - Float(min(epoch, length)) / Float(length)
    return Foundation.exp(-5 * t * t)
}

/// Adds each local peer's CE(y, z_k) + w·T²·KL(softmax(target/T) ‖ softmax(z_k/T)) to `shared` (the rank's share
/// of the shared terms); returns the objective, each peer's loss, and the CE and KL terms summed over the peers.
/// `target` must be detached.
public func addPeerTerms(to shared: Tensor, logits: [Tensor], labels: [Int], target: Tensor, temperature: Float,
                         weight w: Float, targetEpsilon: Float = 0) -> (objective: Tensor, losses: [Float], ce: Float, kl: Float) {
    var total = shared, losses: [Float] = [], ce: Float = 0, kl: Float = 0
    for z in logits {
        let c = crossEntropy(z, labels: labels)
        let d = klDivergence(student: z, teacher: target, temperature: temperature, targetEpsilon: targetEpsilon)
        let loss = c + d * w
        total = total + loss
        ce += c.item; kl += d.item; losses.append(loss.item)
    }
    return (total, losses, ce, kl)
}

/// The mean of the peers' logits.
public func meanLogits(_ logits: [Tensor]) -> Tensor {
    logits.dropFirst().reduce(logits[0]) { $0 + $1 } * (1 / Float(logits.count))
}

/// `independent`: each peer trains alone with cross-entropy; no teacher.
public final class Independent: DistillationMethod {
    public static let spec = MethodSpec(
        name: "independent", summary: "no distillation: each peer trains alone with cross-entropy (the baseline)",
        keys: [OptionKey("label_smoothing", .number(min: 0, max: 1, openMin: false), default: .number(0), help: "label smoothing of the cross-entropy")],
        dataParallel: true) { c, _ in Independent(labelSmoothing: c.options.number("label_smoothing")) }

    public let name = "independent"
    public let labelSmoothing: Float
    public init(labelSmoothing: Float = 0) { self.labelSmoothing = labelSmoothing }
    public var augmentsPerPeer: Bool { true }
    public var termNames: [String] { ["ce"] }

    public func step(_ input: StepInput, cohort: Cohort) throws -> StepResult {
        guard let labels = input.labels else { throw MethodError("independent training needs labels") }
        let logits = zip(cohort.models, input.images).map { $0($1) }
        let losses = logits.map { crossEntropy($0, labels: labels, labelSmoothing: labelSmoothing) }
        let total = losses.dropFirst().reduce(losses[0], +)
        let values = losses.map(\.item)
        return StepResult(objective: total, peerLogits: logits, peerLoss: values, terms: ["ce": values.reduce(0, +)])
    }

    public func evaluate(_ x: Tensor, cohort: Cohort) throws -> Predictions {
        Predictions(peers: cohort.logits(x))
    }
}

/// A method that cannot run as configured.
public struct MethodError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Named modules under one parent, so a method's modules save and load as one state dict.
public final class ModuleGroup: Module {
    public let children: [(String, Module)]
    public var isTraining = true
    public init(_ children: [(String, Module)]) { self.children = children }
}
