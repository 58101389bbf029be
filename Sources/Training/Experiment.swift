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

public final class Experiment {
    public let config: TrainConfig
    /// Every rank of the job.
    let world: Communicator
    /// The ranks the peers are placed over: the world, or (data-parallel) this rank alone.
    let peerComm: Communicator
    let placement: PeerPlacement
    /// Data-parallel replicas: one model trained on `replicas` ranks, each taking its shard of every batch.
    let replica: Int, replicas: Int
    let train: Dataset, test: Dataset
    /// Images without labels mixed into every batch (label-free methods).
    let unlabeled: Dataset?
    let augmentation: Augmentation
    public let method: DistillationMethod
    public let cohort: Cohort
    /// The peers this rank hosts.
    public var models: [Classifier] { cohort.models }
    /// One optimiser over every parameter this rank updates: "peerP.<name>" for the peers' own parameters,
    /// "stem.<name>" for a shared stem, "method.<name>" for the method's modules.
    let optimizer: SGD
    /// Parameters every rank of the peer communicator holds a replica of (gradients summed across ranks).
    let replicated: [(String, Parameter)]
    /// The method's replicated modules under one parent, saved as one state dict.
    let methodState: ModuleGroup
    let schedule: LRSchedule

    public init(config: TrainConfig, comm: Communicator) throws {
        self.config = config
        world = comm
        let P = config.models.count, spec = config.methodSpec
        if P == 1 && comm.size > 1 {
            guard spec.dataParallel else {
                throw ConfigError("\(config.method) with one peer on \(comm.size) ranks: data-parallel training is available for \(MethodRegistry.all.filter(\.dataParallel).map(\.name).joined(separator: ", ")); give method \(config.method) at least \(comm.size) peers")
            }
            peerComm = try comm.split(color: comm.rank, key: 0)
            replica = comm.rank; replicas = comm.size
        } else {
            guard P >= comm.size else {
                throw ConfigError("\(comm.size) ranks for \(P) peers: every rank hosts at least one peer, so run with 1 to \(P) ranks (or give one peer to train it data-parallel)")
            }
            peerComm = comm
            replica = 0; replicas = 1
        }
        placement = try PeerPlacement(peers: P, ranks: peerComm.size, rank: peerComm.rank)
        if let t = config.threads { Threads.set(t) }
        var trainSet = try DatasetCatalog.load(config.dataset, path: config.datasetPath, split: .train)
        var testSet = try DatasetCatalog.load(config.dataset, path: config.datasetPath, split: .test)
        if config.trainSubset > 0 { trainSet = try trainSet.subset(count: config.trainSubset) }
        if config.testSubset > 0 { testSet = try testSet.subset(count: config.testSubset) }
        train = trainSet; test = testSet
        if let name = config.unlabeledDataset {
            var u = try DatasetCatalog.load(name, path: config.unlabeledPath, split: config.unlabeledSplit == "test" ? .test : .train)
            if config.unlabeledSubset > 0 { u = try u.subset(count: config.unlabeledSubset) }
            guard u.height == trainSet.height, u.width == trainSet.width, u.channels == trainSet.channels else {
                throw ConfigError("dataset.unlabeled.name: \(name) images are \(u.height)×\(u.width)×\(u.channels), the training set's \(trainSet.height)×\(trainSet.width)×\(trainSet.channels)")
            }
            unlabeled = u.unlabeled()
        } else {
            unlabeled = nil
        }
        augmentation = config.augmentation ?? .standard(for: config.dataset)
        let base: LRSchedule = config.schedule == "cosine"
            ? CosineLR(base: config.lr, totalEpochs: config.epochs, perStep: config.schedulePerStep)
            : MultiStepLR(base: config.lr, milestones: config.milestones, gamma: config.gamma)
        schedule = config.warmupEpochs > 0 ? WarmupLR(base, warmupEpochs: Double(config.warmupEpochs), stepwise: config.warmup == "step") : base

        let context = MethodContext(models: config.models, placement: placement, classes: trainSet.classes,
                                    inChannels: trainSet.channels, seed: config.seed, options: config.methodOptions)
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
            guard Set(config.models).count == 1 else {
                throw ConfigError("models: \(config.method) shares one stem between the peers, so they must be the same model; got \(config.models.joined(separator: ", "))")
            }
            stem = SharedStem(models: models, comm: peerComm, perPeerViews: method.augmentsPerPeer,
                              peer0: placement.localPeers[0] == 0 ? nil : try build(0))
        }
        cohort = Cohort(placement: placement, comm: peerComm, models: models, stem: stem)
        method.start(cohort: cohort)
        methodState = ModuleGroup(method.modules)
        var own: [(String, Parameter)] = []
        for (k, p) in placement.localPeers.enumerated() {
            own += models[k].namedParameters().filter { !(stem?.owns($0.0) ?? false) }.map { ("peer\(p)." + $0.0, $0.1) }
            if let m = method.peerModule(k) { own += m.namedParameters().map { ("peer\(p).module." + $0.0, $0.1) } }
        }
        replicated = (stem?.parameters ?? []) + methodState.namedParameters().map { ("method." + $0.0, $0.1) }
        optimizer = SGD(parameters: own + replicated, lr: config.lr, momentum: config.momentum,
                        weightDecay: config.weightDecay, nesterov: config.nesterov && config.momentum > 0)
    }

    var isLeader: Bool { world.rank == 0 }
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

    /// Top-1 and top-5 accuracy of every peer and of the teacher on the test split (eval mode, no tape).
    public func evaluate() throws -> Evaluation {
        let sampler = EpochSampler(count: test.count, batchSize: 256, seed: 0, shuffle: false, dropLast: false)
        var top1 = [Double](repeating: 0, count: models.count), top5 = top1
        var teacher = [0.0, 0.0]
        let extraNames = method.extraNames(peers: placement.peers)
        var extra = [Double](repeating: 0, count: extraNames.count)
        setTraining(false)
        defer { setTraining(true) }
        try withoutGradients {
            for batch in BatchLoader(data: test, sampler: sampler, epoch: 0, augmentation: .none, peers: [0],
                                     replica: replica, replicas: replicas) {
                let labels = batch.labels!
                if labels.isEmpty { continue }  // a replica's empty share of a small last batch (data-parallel only)
                let predictions = try method.evaluate(batch.images[0], cohort: cohort)
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
        let n = Double(max(test.count, 1))
        // The teacher's counts (rank 0's) and every extra prediction's (its host's), summed over ranks.
        var sums = (teacher + extra).map { $0 / n }
        try world.allReduce(&sums, op: .sum)
        let hasTeacher = method.teacherName != nil
        return Evaluation(top1: try gatherPeerValues(top1.map { $0 / n }).map(Float.init),
                          top5: try gatherPeerValues(top5.map { $0 / n }).map(Float.init),
                          teacherTop1: hasTeacher ? Float(sums[0]) : nil,
                          teacherTop5: hasTeacher ? Float(sums[1]) : nil,
                          extraTop1: Dictionary(uniqueKeysWithValues: zip(extraNames, sums.dropFirst(2).map(Float.init))))
    }

    /// "test top-1 peer 0 (resnet20) 91.20%, …, gated ensemble 92.10%".
    public func summary(_ e: Evaluation) -> String {
        var parts = zip(config.models, e.top1).enumerated().map { "peer \($0.offset) (\($0.element.0)) \(String(format: "%.2f%%", 100 * $0.element.1))" }
        if let name = method.teacherName, let t = e.teacherTop1 { parts.append("\(name) \(String(format: "%.2f%%", 100 * t))") }
        parts += e.extraTop1.keys.sorted().map { "\($0) \(String(format: "%.2f%%", 100 * e.extraTop1[$0]!))" }
        return "test top-1 " + parts.joined(separator: ", ")
    }
}
