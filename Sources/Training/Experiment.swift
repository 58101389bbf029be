// An experiment in memory: the data, the peers this rank hosts, the method, the optimiser and the schedule built
// from a config on a communicator. Training (Trainer.swift), evaluation and `distill bench step` share it; it owns
// no files (checkpoints: Checkpoints.swift, paths: RunDirectory.swift).
import Collectives
import Datasets
import Distillation
import Foundation
import Layers
import Models
import Tensors

/// A parameter a rank updates: its optimiser name, its role, and its name within its peer, module, stem or method.
struct RankParameter {
    let name: String, parameter: Parameter, role: ParameterRole, local: String
}

/// One optimiser phase of a step on this rank: its name, its optimiser, and the replicated parameters it updates
/// (whose gradients are summed across the peer ranks).
struct PhaseOptimizer {
    let phase: String, optimizer: Optimizer, replicated: [Tensor]
    init(_ phase: String, _ optimizer: Optimizer, replicatedNames: Set<String>) {
        self.phase = phase; self.optimizer = optimizer
        replicated = optimizer.parameters.filter { replicatedNames.contains($0.0) }.map { $0.1.value }
    }
}

public final class Experiment {
    public let config: TrainConfig
    /// Every rank of the job.
    let world: Communicator
    /// The ranks the peers are placed over: the world, or (with replicas) this replica's ranks.
    let peerComm: Communicator
    let placement: PeerPlacement
    /// Data-parallel replicas: each peer trained on `replicas` ranks, each taking its shard of every batch.
    let replica: Int, replicas: Int
    /// The ranks holding the same peers as this one (one per replica), when there are replicas.
    let replicaComm: Communicator?
    public let train: Dataset, test: Dataset
    /// The held-out part of the training set (`dataset.validation` images), nil without one.
    public let validation: Dataset?
    /// Images without labels mixed into every batch (label-free methods).
    public let unlabeled: Dataset?
    let augmentation: Augmentation
    public let method: DistillationMethod
    public let cohort: Cohort
    /// The peers this rank hosts.
    public var models: [Classifier] { cohort.models }
    /// Every peer's model name (the configured one, or the one the method derives from it).
    public let peerModels: [String]
    /// Every parameter this rank updates, named "peerP.<name>" for a peer's network, "peerP.module.<name>" for a
    /// method's per-peer module, "stem.<name>" for a shared stem, "method.<name>" for the method's modules.
    let parameters: [RankParameter]
    /// The main optimiser (`optimizer.*`, scheduled), then one per phase the method declares, in phase order.
    let optimizers: [PhaseOptimizer]
    /// The main optimiser.
    var optimizer: Optimizer { optimizers[0].optimizer }
    /// Main-optimiser parameters that join it after the first epoch (`GroupSettings.fromEpoch`), with their lr multiplier.
    let lateParameters: [(name: String, lrScale: Float, fromEpoch: Int)]
    /// One line per optimiser: its phase, kind, and parameter groups with their lr multipliers and weight decays.
    public let optimizerSummary: [String]
    /// Parameters every rank of the peer communicator holds a replica of (gradients summed across ranks).
    let replicated: [(String, Parameter)]
    /// The method's replicated modules under one parent, saved as one state dict.
    let methodState: ModuleGroup
    let schedule: LRSchedule

    public init(config: TrainConfig, comm: Communicator) throws {
        self.config = config
        world = comm
        let P = config.models.count, spec = config.methodSpec
        peerModels = (0..<P).map { spec.peerModelName(config.models, $0) }
        if comm.size > P {
            // P peer ranks × D data-parallel replicas, peer-major (rank = peer rank · D + replica): each peer's
            // replicas are neighbours (their gradient mean, the larger exchange, stays within a node when D divides
            // a node's slots); logits and features travel within a replica's P ranks.
            guard comm.size % P == 0 else {
                throw ConfigError("\(comm.size) ranks for \(P) peers: with more ranks than peers every peer trains data-parallel on the same number of ranks, so run a multiple of \(P) ranks (or at most \(P))")
            }
            guard spec.dataParallel else {
                throw ConfigError("\(config.method) with \(P) peer\(P == 1 ? "" : "s") on \(comm.size) ranks: data-parallel replicas are available for \(MethodRegistry.all.filter(\.dataParallel).map(\.name).joined(separator: ", ")); run \(config.method) on at most \(P) ranks")
            }
            replicas = comm.size / P
            replica = comm.rank % replicas
            peerComm = try comm.split(color: replica, key: comm.rank / replicas)
            replicaComm = try comm.split(color: comm.rank / replicas, key: replica)
        } else {
            peerComm = comm
            replica = 0; replicas = 1
            replicaComm = nil
        }
        // Training-mode batch norm over the whole batch when it is split (synchronised across a peer's replicas).
        let statistics = replicaComm
        BatchStatistics.allReduce = statistics.map { c in
            { values in
                do { try c.allReduce(&values, op: .sum) } catch { c.abort("batch-norm statistics across replicas: \(error)", code: 1) }
            }
        }
        placement = try PeerPlacement(peers: P, ranks: peerComm.size, rank: peerComm.rank)
        if let t = config.threads { Threads.set(t) }
        var trainSet = try DatasetCatalog.load(config.dataset, path: config.datasetPath, split: .train)
        var testSet = try DatasetCatalog.load(config.dataset, path: config.datasetPath, split: .test)
        if config.normalizationMean != nil || config.normalizationStd != nil {
            guard let mean = config.normalizationMean, let std = config.normalizationStd else {
                throw ConfigError("dataset.mean and dataset.std come together (one value per channel each)")
            }
            do {
                trainSet = try trainSet.normalized(mean: mean, std: std); testSet = try testSet.normalized(mean: mean, std: std)
            } catch { throw ConfigError("dataset.mean / dataset.std: \(error)") }
        }
        if config.trainSubset > 0 { trainSet = try trainSet.subset(count: config.trainSubset) }
        if config.testSubset > 0 { testSet = try testSet.subset(count: config.testSubset) }
        if config.padTo > 0 {
            do {
                trainSet = try trainSet.padded(to: config.padTo); testSet = try testSet.padded(to: config.padTo)
            } catch { throw ConfigError("dataset.pad_to: \(error)") }
        }
        if config.validation > 0 {
            guard config.validation < trainSet.count else {
                throw ConfigError("dataset.validation: \(config.validation) held-out images leave none of the \(trainSet.count) training images to train on")
            }
            let split = try trainSet.splitValidation(count: config.validation, seed: 0)
            trainSet = split.train; validation = split.validation
        } else {
            validation = nil
        }
        train = trainSet; test = testSet
        if let name = config.unlabeledDataset {
            var u = try DatasetCatalog.load(name, path: config.unlabeledPath, split: config.unlabeledSplit == "test" ? .test : .train)
            // The held-out images stay out of training, labelled or not. The training view is a prefix of its
            // files (padding keeps the order), so its indices, and the validation split's, are file positions.
            if let held = validation, name == config.dataset, config.unlabeledPath == config.datasetPath, config.unlabeledSplit == "train" {
                u = u.excluding(indices: Set(held.indices))
            }
            if let mean = config.normalizationMean, let std = config.normalizationStd {
                do { u = try u.normalized(mean: mean, std: std) } catch { throw ConfigError("dataset.mean / dataset.std: \(error)") }
            }
            if config.unlabeledSubset > 0 { u = try u.subset(count: config.unlabeledSubset) }
            if config.padTo > 0 {
                do { u = try u.padded(to: config.padTo) } catch { throw ConfigError("dataset.pad_to: \(error)") }
            }
            guard u.height == trainSet.height, u.width == trainSet.width, u.channels == trainSet.channels else {
                throw ConfigError("dataset.unlabeled.name: \(name) images are \(u.height)×\(u.width)×\(u.channels), the training set's \(trainSet.height)×\(trainSet.width)×\(trainSet.channels)")
            }
            unlabeled = u.unlabeled()
        } else {
            unlabeled = nil
        }
        augmentation = config.augmentation ?? .standard(for: config.dataset)
        if augmentation.padMode == .reflect && augmentation.cropPadding >= min(trainSet.height, trainSet.width) {
            throw ConfigError("dataset.augmentation: pad_mode reflect needs crop_padding below the image side (\(trainSet.height)×\(trainSet.width)), got \(augmentation.cropPadding)")
        }
        let base: LRSchedule = config.schedule == "cosine"
            ? CosineLR(base: config.lr, totalEpochs: config.epochs, perStep: config.schedulePerStep)
            : MultiStepLR(base: config.lr, milestones: config.milestones, gamma: config.gamma)
        schedule = config.warmupEpochs > 0 ? WarmupLR(base, warmupEpochs: Double(config.warmupEpochs), stepwise: config.warmup == "step") : base

        let trainLabels = trainSet.isLabeled ? (0..<trainSet.count).map { trainSet.label($0)! } : []
        let context = MethodContext(models: config.models, placement: placement, classes: trainSet.classes,
                                    inChannels: trainSet.channels, seed: config.seed, options: config.methodOptions,
                                    trainLabels: trainLabels, imageSize: (trainSet.height, trainSet.width))
        func build(_ peer: Int) throws -> Classifier {
            // Each peer's initial weights depend only on (seed, peer), not on where it runs.
            var g = Generator(seed: config.seed, stream: [0x696E_6974, UInt64(peer)])  // "init"
            if let make = spec.makePeer {
                do { return try make(context, peer, &g) } catch let e as MethodError { throw ConfigError("method \(config.method): \(e.message)") }
            }
            return try ModelZoo.make(config.models[peer], classes: trainSet.classes, inChannels: trainSet.channels, generator: &g)
        }
        let models = try placement.localPeers.map(build)
        var g = Generator(seed: config.seed, stream: [0x6D65_7468])  // "meth": the method's modules
        do { method = try spec.make(context, &g) } catch let e as MethodError { throw ConfigError("method \(config.method): \(e.message)") }
        var stem: SharedStem?
        if method.sharesStem {
            // Every peer's stem must have peer 0's tensors (names and shapes): checked on every rank over every
            // peer, so all ranks agree.
            let stemEnd = method.stemEnd, localPeers = placement.localPeers, name = config.method
            func moved(_ m: Classifier) throws -> Classifier {
                if let end = stemEnd {
                    do { try m.setStemEnd(end) } catch { throw ConfigError("method \(name): \(error)") }
                }
                return m
            }
            var all: [Classifier] = []
            for p in 0..<P { all.append(try moved(localPeers.firstIndex(of: p).map { models[$0] } ?? build(p))) }
            let layout = { (m: Classifier) in m.stemState().map { "\($0.0)\($0.1.value.shape)" } }
            for p in 1..<P where layout(all[p]) != layout(all[0]) {
                throw ConfigError("models: \(config.method) shares one stem between the peers, so every peer's stem must be peer 0's; peer \(p) (\(peerModels[p])) differs from peer 0 (\(peerModels[0]))")
            }
            stem = SharedStem(models: models, comm: peerComm, perPeerViews: method.augmentsPerPeer,
                              peer0: localPeers[0] == 0 ? nil : all[0])
        }
        cohort = Cohort(placement: placement, comm: peerComm, models: models, stem: stem, replicaComm: replicaComm)
        method.start(cohort: cohort)
        methodState = ModuleGroup(method.modules)
        var all: [RankParameter] = []
        for (k, p) in placement.localPeers.enumerated() {
            all += models[k].namedParameters().filter { !(stem?.owns($0.0) ?? false) }
                .map { RankParameter(name: "peer\(p)." + $0.0, parameter: $0.1, role: .network, local: $0.0) }
            if let m = method.peerModule(k) {
                all += m.namedParameters().map { RankParameter(name: "peer\(p).module." + $0.0, parameter: $0.1, role: .peerModule, local: $0.0) }
            }
        }
        all += (stem?.parameters ?? []).map { RankParameter(name: $0.0, parameter: $0.1, role: .stem, local: String($0.0.dropFirst("stem.".count))) }
        all += methodState.namedParameters().map { RankParameter(name: "method." + $0.0, parameter: $0.1, role: .method, local: $0.0) }
        let trainable = all.filter { $0.parameter.isTrainable }
        parameters = trainable
        replicated = trainable.filter { $0.role == .stem || $0.role == .method }.map { ($0.name, $0.parameter) }
        let main = Experiment.mainOptimizer(config, method: method, parameters: trainable)
        lateParameters = zip(main.groups, main.settings).filter { $0.1.fromEpoch > 0 }
            .flatMap { g, s in g.parameters.map { (name: $0.0, lrScale: s.lrScale, fromEpoch: s.fromEpoch) } }
        let replicatedNames = Set(replicated.map(\.0))
        optimizers = [PhaseOptimizer("main", main.optimizer, replicatedNames: replicatedNames)]
            + method.phases.map { PhaseOptimizer($0.name, Experiment.phaseOptimizer($0, parameters: trainable), replicatedNames: replicatedNames) }
        let scalars = { (list: [(String, Parameter)]) in list.reduce(0) { $0 + $1.1.value.count } }
        optimizerSummary = ["optimizer main (\(config.optimizer), lr \(config.lr) scheduled): "
            + zip(main.groups, main.settings).map { g, s in
                let from = s.fromEpoch > 0 ? ", from epoch \(s.fromEpoch + 1)" : ""
                return "\(scalars(g.parameters)) weights at lr×\(s.lrScale), weight decay \(g.weightDecay ?? config.weightDecay)\(from)"
            }.joined(separator: "; ")]
            + zip(method.phases, optimizers.dropFirst()).map { phase, o in
                "optimizer \(phase.name) (\(phase.kind.name), lr \(phase.lr) constant): \(scalars(o.optimizer.parameters)) weights, weight decay \(phase.weightDecay)"
            }
    }

    /// The config's optimiser over the parameters the method's main phase updates, in groups by their settings
    /// (each group's settings beside it). A group that joins after the first epoch starts at lr 0
    /// (`prepareMainOptimizer` lifts it when its epoch comes).
    static func mainOptimizer(_ c: TrainConfig, method: DistillationMethod, parameters: [RankParameter])
        -> (optimizer: Optimizer, groups: [ParameterGroup], settings: [GroupSettings]) {
        var groups: [ParameterGroup] = [], settings: [GroupSettings] = []
        for p in parameters where method.mainPhaseUpdates(p.role, p.local) {
            let s = method.groupSettings(p.role, p.local) ?? GroupSettings()
            if let i = settings.firstIndex(of: s) { groups[i].parameters.append((p.name, p.parameter)) }
            else {
                settings.append(s)
                groups.append(ParameterGroup([(p.name, p.parameter)], lrScale: s.fromEpoch > 0 ? 0 : s.lrScale, weightDecay: s.weightDecay))
            }
        }
        switch c.optimizer {
        case "adam", "adamw":
            return (Adam(groups: groups, lr: c.lr, betas: (c.beta1, c.beta2), eps: c.eps, weightDecay: c.weightDecay, decoupled: c.optimizer == "adamw"), groups, settings)
        default:
            return (SGD(groups: groups, lr: c.lr, momentum: c.momentum, weightDecay: c.weightDecay, nesterov: c.nesterov && c.momentum > 0), groups, settings)
        }
    }

    /// A method phase's optimiser over the parameters it updates.
    static func phaseOptimizer(_ phase: OptimizerPhase, parameters: [RankParameter]) -> Optimizer {
        let group = ParameterGroup(parameters.filter { phase.updates($0.role, $0.local) }.map { ($0.name, $0.parameter) })
        switch phase.kind {
        case let .sgd(momentum, nesterov):
            return SGD(groups: [group], lr: phase.lr, momentum: momentum, weightDecay: phase.weightDecay, nesterov: nesterov)
        case let .adam(beta1, beta2, eps, decoupled):
            return Adam(groups: [group], lr: phase.lr, betas: (beta1, beta2), eps: eps, weightDecay: phase.weightDecay, decoupled: decoupled)
        }
    }

    var isLeader: Bool { world.rank == 0 }

    /// The main optimiser as epoch `epoch` starts: parameters that have not joined it yet held at lr 0, those that
    /// join now with fresh state, and all of its state afresh where the method restarts it. Returns whether it
    /// restarted. The rule depends on the epoch alone, so a resumed run applies it as an uninterrupted one.
    func prepareMainOptimizer(epoch: Int) throws -> Bool {
        for p in lateParameters {
            optimizer.setLRScale(epoch < p.fromEpoch ? 0 : p.lrScale, of: p.name)
            if epoch == p.fromEpoch { try optimizer.setState(of: p.name, []) }
        }
        guard method.restartsMainOptimizer(atEpoch: epoch) else { return false }
        for (name, _) in optimizer.parameters { try optimizer.setState(of: name, []) }
        return true
    }

    /// Every communicator this rank's collectives run on: the world, and the peer and replica groups it is split
    /// into when peers have replicas.
    var communicators: [Communicator] { [world] + (peerComm !== world ? [peerComm] : []) + (replicaComm.map { [$0] } ?? []) }
    /// Seconds this rank has spent in collectives, over every communicator.
    var communicationSeconds: Double { communicators.reduce(0) { $0 + $1.communicationSeconds } }
    /// Payload this rank has handed to and taken from collectives, over every communicator.
    var payloadBytes: (sent: Int, received: Int) {
        communicators.reduce((0, 0)) { ($0.0 + $1.payloadBytes.sent, $0.1 + $1.payloadBytes.received) }
    }
    /// Whether this rank writes its peers' checkpoint files (one replica does).
    var writesPeers: Bool { replica == 0 }

    /// Sums a per-peer vector over every rank (each rank fills its local peers' entries).
    func gatherPeerValues(_ local: [Double]) throws -> [Double] {
        var all = [Double](repeating: 0, count: placement.peers)
        for (k, p) in placement.localPeers.enumerated() { all[p] = local[k] }
        try world.allReduce(&all, op: .sum)
        return all
    }

    func setTraining(_ on: Bool) {
        for m in models { on ? m.train() : m.eval() }
        for k in models.indices {
            if let m = method.peerModule(k) { on ? m.train() : m.eval() }
            if let m = method.peerExtraState(k) { on ? m.train() : m.eval() }
        }
        on ? methodState.train() : methodState.eval()
    }

    /// A frozen teacher's summed top-1 and top-5 fractions on the test split ("test") and on the validation split,
    /// measured at the first evaluation of each (empty it to measure again).
    public var frozenTeacherAccuracy: [String: [Double]] = [:]

    /// Top-1 and top-5 accuracy of every peer and of the teacher on the test split, or on `split` (the validation
    /// split), in eval mode without a tape. A frozen teacher (`teacherIsFrozen`) is evaluated once per split.
    public func evaluate(on split: Dataset? = nil) throws -> Evaluation {
        let data = split ?? test, splitName = split == nil ? "test" : "validation"
        let knownTeacher = method.teacherIsFrozen ? frozenTeacherAccuracy[splitName] : nil
        let sampler = EpochSampler(count: data.count, batchSize: 256, seed: 0, shuffle: false, dropLast: false)
        var top1 = [Double](repeating: 0, count: models.count), top5 = top1
        var teacher = [0.0, 0.0]
        let extraNames = method.extraNames(peers: placement.peers)
        var extra = [Double](repeating: 0, count: extraNames.count)
        setTraining(false)
        defer { setTraining(true) }
        try withoutGradients {
            for batch in BatchLoader(data: data, sampler: sampler, epoch: 0, augmentation: .none, peers: [0],
                                     replica: replica, replicas: replicas) {
                let labels = batch.labels!
                if labels.isEmpty { continue }  // a replica's empty share of a small last batch (data-parallel only)
                let predictions = knownTeacher == nil ? try method.evaluate(batch.images[0], cohort: cohort)
                                                      : try method.evaluatePeers(batch.images[0], cohort: cohort)
                for (i, name) in extraNames.enumerated() {
                    if let logits = predictions.extra[name] { extra[i] += topCounts(logits, labels).top1 }
                }
                for (k, logits) in predictions.peers.enumerated() {
                    let (a, b) = topCounts(logits, labels)
                    top1[k] += a; top5[k] += b
                }
                if let t = predictions.teacher, placement.rank == 0 {
                    let (a, b) = topCounts(t, labels)
                    teacher[0] += a; teacher[1] += b
                }
            }
        }
        let n = Double(max(data.count, 1))
        // The teacher's counts (rank 0's) and every extra prediction's (its host's), summed over ranks.
        var sums = (teacher + extra).map { $0 / n }
        try world.allReduce(&sums, op: .sum)
        if let known = knownTeacher {
            sums.replaceSubrange(0..<2, with: known)
        } else if method.teacherIsFrozen {
            frozenTeacherAccuracy[splitName] = Array(sums.prefix(2))
        }
        let hasTeacher = method.teacherName != nil
        return Evaluation(top1: try gatherPeerValues(top1.map { $0 / n }).map(Float.init),
                          top5: try gatherPeerValues(top5.map { $0 / n }).map(Float.init),
                          teacherTop1: hasTeacher ? Float(sums[0]) : nil,
                          teacherTop5: hasTeacher ? Float(sums[1]) : nil,
                          extraTop1: Dictionary(uniqueKeysWithValues: zip(extraNames, sums.dropFirst(2).map(Float.init))))
    }

    /// "test top-1 peer 0 (resnet20) 91.20%, …, gated ensemble 92.10%".
    public func summary(_ e: Evaluation, split: String = "test") -> String {
        var parts = zip(peerModels, e.top1).enumerated().map { "peer \($0.offset) (\($0.element.0)) \(String(format: "%.2f%%", 100 * $0.element.1))" }
        if let name = method.teacherName, let t = e.teacherTop1 { parts.append("\(name) \(String(format: "%.2f%%", 100 * t))") }
        parts += e.extraTop1.keys.sorted().map { "\($0) \(String(format: "%.2f%%", 100 * e.extraTop1[$0]!))" }
        return split + " top-1 " + parts.joined(separator: ", ")
    }
}
