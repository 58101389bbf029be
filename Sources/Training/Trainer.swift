// The training loop: builds the data, the peers this rank hosts and their optimisers from a config, trains,
// evaluates, and writes config.yaml, metrics.jsonl and per-peer safetensors checkpoints to the output directory.
import Collectives
import Datasets
import Distillation
import Foundation
import Models

/// Per-epoch figures, one JSON line in metrics.jsonl.
public struct EpochMetrics {
    public var epoch = 0
    public var lr: Float = 0
    /// Mean training loss of each peer (its own terms).
    public var loss: [Float] = []
    /// Mean of each loss term of the cohort's objective over the epoch's steps.
    public var terms: [(String, Float)] = []
    public var trainTop1: [Float] = [], trainTop5: [Float] = []
    /// Test accuracy of each peer (nil when not evaluated this epoch).
    public var testTop1: [Float]?, testTop5: [Float]?
    /// The method's teacher: its name and training / test accuracy.
    public var teacher: String?
    public var teacherTrainTop1: Float?, teacherTestTop1: Float?, teacherTestTop5: Float?
    public var imagesPerSecond = 0.0
    public var communicationSeconds = 0.0

    var json: String {
        func num(_ x: Float) -> String { String(format: "%.6g", x) }
        func list(_ v: [Float]) -> String { "[" + v.map(num).joined(separator: ", ") + "]" }
        var parts = ["\"epoch\": \(epoch)", "\"lr\": \(num(lr))", "\"loss\": \(list(loss))"]
        parts.append("\"terms\": {" + terms.map { "\"\($0.0)\": \(num($0.1))" }.joined(separator: ", ") + "}")
        parts.append("\"train_top1\": \(list(trainTop1))")
        parts.append("\"train_top5\": \(list(trainTop5))")
        if let t = testTop1 { parts.append("\"test_top1\": \(list(t))") }
        if let t = testTop5 { parts.append("\"test_top5\": \(list(t))") }
        if let name = teacher {
            parts.append("\"teacher\": \"\(name)\"")
            if let t = teacherTrainTop1 { parts.append("\"teacher_train_top1\": \(num(t))") }
            if let t = teacherTestTop1 { parts.append("\"teacher_test_top1\": \(num(t))") }
            if let t = teacherTestTop5 { parts.append("\"teacher_test_top5\": \(num(t))") }
        }
        parts.append(String(format: "\"images_per_second\": %.1f", imagesPerSecond))
        parts.append(String(format: "\"communication_seconds\": %.3f", communicationSeconds))
        return "{" + parts.joined(separator: ", ") + "}"
    }
}

/// How many of the first `labels.count` rows rank their label first, and within the first five (ties count for
/// the label). Rows past the labels (unlabeled images mixed into a batch) are not counted.
func topCounts(_ logits: Tensor, _ labels: [Int]) -> (top1: Double, top5: Double) {
    let c = logits.shape[1]
    var a = 0.0, b = 0.0
    for (r, label) in labels.enumerated() {
        let row = logits.data + r * c
        var higher = 0
        for j in 0..<c where row[j] > row[label] { higher += 1 }
        if higher == 0 { a += 1 }
        if higher < 5 { b += 1 }
    }
    return (a, b)
}

/// Test accuracy of every peer and of the teacher.
public struct Evaluation {
    public var top1: [Float], top5: [Float]
    public var teacherTop1: Float?, teacherTop5: Float?
}

public final class Trainer {
    public let config: TrainConfig
    /// Every rank of the job.
    let world: Communicator
    /// The ranks the peers are placed over: the world, or (data-parallel) this rank alone.
    let peerComm: Communicator
    let placement: PeerPlacement
    /// Data-parallel replicas: one model trained on `replicas` ranks, each taking its shard of every batch.
    let replica: Int, replicas: Int
    let train: Dataset, test: Dataset
    /// ssld: extra images without labels mixed into every batch.
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
    let methodState: ModuleGroup
    let schedule: LRSchedule
    /// Called with every progress line (rank 0 only).
    public var report: (String) -> Void = { print($0) }

    public init(config: TrainConfig, comm: Communicator) throws {
        self.config = config
        world = comm
        let P = config.models.count
        if P == 1 && comm.size > 1 {
            guard ["independent", "kd", "ssld"].contains(config.method) else {
                throw ConfigError("\(config.method) with one peer on \(comm.size) ranks: data-parallel training is available for independent, kd and ssld; give method \(config.method) at least \(comm.size) peers")
            }
            peerComm = try comm.split(color: comm.rank, key: 0)
            replica = comm.rank; replicas = comm.size
        } else {
            guard P >= comm.size else {
                throw ConfigError("\(comm.size) ranks for \(P) peers: run with a number of ranks that divides \(P), or with one peer (data-parallel)")
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
                throw ConfigError("method.unlabeled_dataset: \(name) images are \(u.height)×\(u.width)×\(u.channels), the training set's \(trainSet.height)×\(trainSet.width)×\(trainSet.channels)")
            }
            unlabeled = u.unlabeled()
        } else {
            unlabeled = nil
        }
        augmentation = config.augmentation ?? .standard(for: config.dataset)
        let base: LRSchedule = config.schedule == "cosine"
            ? CosineLR(base: config.lr, totalEpochs: config.epochs, perStep: config.schedulePerStep)
            : MultiStepLR(base: config.lr, milestones: config.milestones, gamma: config.gamma)
        schedule = config.warmupEpochs > 0 ? WarmupLR(base, warmupEpochs: config.warmupEpochs) : base

        func build(_ peer: Int) throws -> Classifier {
            // Each peer's initial weights depend only on (seed, peer), not on where it runs.
            var g = Generator(seed: config.seed, stream: [0x696E_6974, UInt64(peer)])  // "init"
            return try ModelZoo.make(config.models[peer], classes: trainSet.classes, inChannels: trainSet.channels, generator: &g)
        }
        let models = try placement.localPeers.map(build)
        var g = Generator(seed: config.seed, stream: [0x6D65_7468])  // "meth": the method's modules
        method = try makeMethod(config, peers: P, reference: models[0], localPeers: placement.localPeers, classes: trainSet.classes, inChannels: trainSet.channels, generator: &g)
        if method.sharesStem {
            // The stem starts as peer 0's on every rank; the other models' stems are never run.
            let names = Set(config.models)
            guard names.count == 1 else {
                throw ConfigError("models: \(config.method) shares one stem between the peers, so they must be the same model; got \(config.models.joined(separator: ", "))")
            }
            if placement.localPeers[0] != 0 { models[0].copyStem(from: try build(0)) }
        }
        cohort = Cohort(placement: placement, comm: peerComm, models: models, sharesStem: method.sharesStem)
        method.start(cohort: cohort)
        methodState = ModuleGroup(method.modules)
        var named: [(String, Parameter)] = [], shared: [(String, Parameter)] = []
        for (k, p) in placement.localPeers.enumerated() {
            for (name, param) in models[k].namedParameters() {
                if method.sharesStem && models[k].isStem(name) {
                    if k == 0 { shared.append(("stem." + name, param)) }
                } else {
                    named.append(("peer\(p)." + name, param))
                }
            }
            if let m = method.peerModule(k) { named += m.namedParameters().map { ("peer\(p).module." + $0.0, $0.1) } }
        }
        shared += methodState.namedParameters().map { ("method." + $0.0, $0.1) }
        replicated = shared
        optimizer = SGD(parameters: named + shared, lr: config.lr, momentum: config.momentum,
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

    /// Sums values over every rank.
    func sumOverRanks(_ local: [Double]) throws -> [Double] {
        var v = local
        try world.allReduce(&v, op: .sum)
        return v
    }

    /// The model every local peer trains with after this step's gradients: sums replicated gradients over the
    /// peer communicator, averages everything over data-parallel replicas.
    func synchronizeGradients() throws {
        if peerComm.size > 1 { try syncGradients(replicated, on: peerComm, mode: .sum) }
        if replicas > 1 { try syncGradients(optimizer.parameters, on: world, mode: .mean) }
    }

    /// Data-parallel replicas keep replica 0's batch-norm statistics, as DDP's buffer broadcast does.
    func synchronizeBuffers() throws {
        guard replicas > 1 else { return }
        try broadcastParameters(models.flatMap { $0.namedBuffers() } + methodState.namedBuffers(), on: world, root: 0)
    }

    func setTraining(_ on: Bool) {
        for m in models { on ? m.train() : m.eval() }
        for k in models.indices {
            if let m = method.peerModule(k) { on ? m.train() : m.eval() }
            if let m = method.peerExtraState(k) { on ? m.train() : m.eval() }
        }
        on ? methodState.train() : methodState.eval()
    }

    /// This step's batch of unlabeled images (ssld), the global step's slot of an endless pass over them.
    func unlabeledImages(globalStep: Int) -> [Tensor]? {
        guard let u = unlabeled, config.unlabeledPerBatch > 0 else { return nil }
        let sampler = EpochSampler(count: u.count, batchSize: min(config.unlabeledPerBatch, u.count), seed: config.seed &+ 0x756E_6C61)
        let steps = sampler.stepsPerEpoch
        let batch = makeBatch(u, items: Array(sampler.batches(epoch: globalStep / steps)[globalStep % steps][EpochSampler.shard(size: sampler.batchSize, replica: replica, of: replicas)]),
                              augmentation: augmentation, seed: sampler.seed, epoch: globalStep / steps, step: globalStep % steps, peers: viewPeers)
        return batch.images
    }

    /// Trains for the configured epochs; returns the metrics of the epochs run. With `resume`, continues from the
    /// last complete checkpoint of the output directory and ends with the same weights, bit for bit, as an
    /// uninterrupted run (same ranks and threads).
    @discardableResult
    public func run(resume: Bool = false) throws -> [EpochMetrics] {
        let out = config.output
        var firstEpoch = 0
        if resume {
            firstEpoch = try restore()
        } else if isLeader {
            try FileManager.default.createDirectory(atPath: out + "/checkpoints", withIntermediateDirectories: true)
            try writeAtomically(Data(config.yaml.utf8), to: out + "/config.yaml")
            _ = FileManager.default.createFile(atPath: out + "/metrics.jsonl", contents: Data())
        }
        try world.barrier()
        let sampler = trainSampler
        let steps = sampler.stepsPerEpoch
        guard sampler.batchSize >= replicas else {
            throw ConfigError("batch_size \(config.batchSize) is smaller than the \(replicas) data-parallel ranks")
        }
        // A live progress line only on a real terminal: under mpirun, ranks' output goes through a pty but is
        // forwarded line by line, so plain lines are printed instead.
        let interactive = isatty(STDOUT_FILENO) != 0 && ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] == nil
        let termNames = method.termNames
        var history: [EpochMetrics] = []
        for epoch in firstEpoch..<config.epochs {
            var metrics = EpochMetrics()
            metrics.epoch = epoch + 1
            metrics.teacher = method.teacherName
            var lossSum = [Double](repeating: 0, count: models.count), correct = lossSum, correct5 = lossSum
            var termSums = [Double](repeating: 0, count: termNames.count)
            var teacherCorrect = 0.0
            var seen = 0
            let commStart = world.communicationSeconds
            let start = Date()
            setTraining(true)
            for (step, batch) in trainLoader(sampler, epoch: epoch).enumerated() {
                let globalStep = epoch * steps + step
                let lr = schedule.lr(epoch: Double(epoch) + Double(step) / Double(steps))
                metrics.lr = lr
                let labels = batch.labels!
                let result = try trainStep(batch, epoch: epoch, globalStep: globalStep, lr: lr)
                for k in 0..<models.count {
                    lossSum[k] += Double(result.peerLoss[k]) * Double(labels.count)
                    let (a, b) = topCounts(result.peerLogits[k], labels)
                    correct[k] += a; correct5[k] += b
                }
                for (i, name) in termNames.enumerated() { termSums[i] += Double(result.terms[name] ?? 0) }
                if placement.rank == 0, let t = result.teacherLogits { teacherCorrect += topCounts(t, labels).top1 }
                seen += labels.count
                if isLeader && (interactive || (step + 1) % max(1, steps / 5) == 0 || step + 1 == steps) {
                    let elapsed = Date().timeIntervalSince(start)
                    let ips = Double(seen * replicas) / max(elapsed, 1e-9)
                    let eta = Double(steps - step - 1) * elapsed / Double(step + 1)
                    let line = String(format: "epoch %d/%d  step %d/%d  loss %.4f  %.0f images/s  ETA %.0fs",
                                      epoch + 1, config.epochs, step + 1, steps, lossSum[0] / Double(max(seen, 1)), ips, eta)
                    if interactive { print("\r" + line, terminator: step + 1 == steps ? "\n" : ""); fflush(stdout) } else { report(line) }
                }
            }
            let total = Double(max(seen * replicas, 1))
            metrics.imagesPerSecond = Double(seen * replicas) / Date().timeIntervalSince(start)
            metrics.loss = try gatherPeerValues(lossSum.map { $0 / total }).map(Float.init)
            metrics.trainTop1 = try gatherPeerValues(correct.map { $0 / total }).map(Float.init)
            metrics.trainTop5 = try gatherPeerValues(correct5.map { $0 / total }).map(Float.init)
            let sums = try sumOverRanks(termSums.map { $0 / Double(max(steps * replicas, 1)) } + [teacherCorrect / total])
            metrics.terms = zip(termNames, sums).map { ($0, Float($1)) }
            if method.teacherName != nil { metrics.teacherTrainTop1 = Float(sums.last!) }
            try synchronizeBuffers()
            if (epoch + 1) % config.evalEvery == 0 || epoch + 1 == config.epochs {
                let e = try evaluate()
                metrics.testTop1 = e.top1; metrics.testTop5 = e.top5
                metrics.teacherTestTop1 = e.teacherTop1; metrics.teacherTestTop5 = e.teacherTop5
                if isLeader { report("epoch \(epoch + 1): " + summary(e)) }
            }
            metrics.communicationSeconds = world.communicationSeconds - commStart
            // The metrics line goes first, the checkpoint after: a run killed in between resumes from the
            // previous checkpoint and drops the line of the epoch it repeats.
            if isLeader {
                let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: out + "/metrics.jsonl"))
                handle.seekToEndOfFile()
                handle.write(Data((metrics.json + "\n").utf8))
                try handle.synchronize()
                handle.closeFile()
            }
            if (epoch + 1) % config.checkpointEvery == 0 || epoch + 1 == config.epochs {
                try saveCheckpoint(epoch: epoch + 1)
            }
            history.append(metrics)
        }
        return history
    }

    /// The peers whose augmented views a batch carries: each local peer's, or peer 0's shared by all.
    var viewPeers: [Int] { method.augmentsPerPeer ? placement.localPeers : [0] }

    /// The order of the training set's global batches.
    var trainSampler: EpochSampler { EpochSampler(count: train.count, batchSize: min(config.batchSize, train.count), seed: config.seed) }

    /// This rank's share of each batch of `epoch`, with the views its peers train on.
    func trainLoader(_ sampler: EpochSampler, epoch: Int) -> BatchLoader {
        BatchLoader(data: train, sampler: sampler, epoch: epoch, augmentation: augmentation, peers: viewPeers,
                    replica: replica, replicas: replicas)
    }

    /// One optimisation step on a batch: the method's objective, backward, gradient synchronisation, the update.
    func trainStep(_ batch: Batch, epoch: Int, globalStep: Int, lr: Float) throws -> StepResult {
        var views = batch.images
        if let extra = unlabeledImages(globalStep: globalStep) {
            views = zip(views, extra).map { concat([$0, $1], axis: 0) }
        }
        let images = method.augmentsPerPeer ? views : Array(repeating: views[0], count: models.count)
        optimizer.lr = lr
        optimizer.zeroGrad()
        let result = try method.step(StepInput(images: images, labels: batch.labels, epoch: epoch, step: globalStep), cohort: cohort)
        result.objective.backward()
        try synchronizeGradients()
        optimizer.step()
        if method.sharesStem && method.augmentsPerPeer && peerComm.size > 1 {
            // Each rank's stem saw its own peers' views: keep the mean of their statistics everywhere.
            for b in cohort.stemBuffers {
                try peerComm.allReduce(b.data, count: b.count, op: .sum)
                for i in 0..<b.count { b.data[i] /= Float(peerComm.size) }
            }
        }
        method.afterStep(cohort: cohort, step: globalStep + 1)
        return result
    }

    /// Step timings for `distill bench step`: runs `warmup` then `steps` training steps (no files written).
    public func benchmarkSteps(warmup: Int, steps: Int) throws -> (stepSeconds: [Double], communicationSeconds: Double, imagesPerStep: Int) {
        let sampler = trainSampler
        setTraining(true)
        var times: [Double] = [], comm = 0.0, epoch = 0, global = 0
        while times.count < steps {
            for batch in trainLoader(sampler, epoch: epoch) {
                try world.barrier()
                let c0 = world.communicationSeconds, t0 = Date()
                _ = try trainStep(batch, epoch: epoch, globalStep: global, lr: config.lr)
                let c1 = world.communicationSeconds
                try world.barrier()
                if global >= warmup {
                    times.append(Date().timeIntervalSince(t0))
                    comm += c1 - c0
                }
                global += 1
                if times.count == steps { break }
            }
            epoch += 1
        }
        return (times, comm, sampler.batchSize)
    }

    /// "test top-1 peer 0 (resnet20) 91.20%, …, gated ensemble 92.10%".
    public func summary(_ e: Evaluation) -> String {
        var parts = zip(config.models, e.top1).enumerated().map { "peer \($0.offset) (\($0.element.0)) \(String(format: "%.2f%%", 100 * $0.element.1))" }
        if let name = method.teacherName, let t = e.teacherTop1 { parts.append("\(name) \(String(format: "%.2f%%", 100 * t))") }
        return "test top-1 " + parts.joined(separator: ", ")
    }

    // MARK: - Checkpoints
    //   checkpoints/epoch-E/peerP.safetensors            weights and buffers (PyTorch state-dict names; a shared
    //                                                    stem is written into every peer's file)
    //   checkpoints/epoch-E/peerP.optimizer.safetensors  SGD momentum buffers under the parameter names
    //   checkpoints/epoch-E/peerP.module.safetensors     a method's trainable per-peer module (FFL's fusion slice)
    //   checkpoints/epoch-E/peerP.extra.safetensors      a method's untrained per-peer state (PCL's mean teacher)
    //   checkpoints/epoch-E/method.safetensors           the method's modules (gate, fusion, ...)
    //   checkpoints/epoch-E/shared.optimizer.safetensors momentum of replicated parameters ("stem.*", "method.*")
    //   checkpoints/state.json                           {"epoch": E, ...}: written last, the commit point
    // Every file is written to a temporary name, fsynced and renamed; the previous epoch's directory is removed
    // only after state.json names the new one, so a run killed at any moment keeps a complete checkpoint.

    func checkpointDirectory(_ epoch: Int) -> String { config.output + "/checkpoints/epoch-\(epoch)" }

    /// Momentum buffers whose optimiser names start with `prefix`, with the prefix removed (or kept).
    func momentum(prefix: String, strip: Bool) -> [(String, Tensor)] {
        optimizer.parameters.compactMap { name, _ in
            guard name.hasPrefix(prefix), let b = optimizer.momentumBuffers[name] else { return nil }
            return (strip ? String(name.dropFirst(prefix.count)) : name, b)
        }
    }

    func writeTensors(_ tensors: [(String, Tensor)], metadata: [String: String], to path: String) throws {
        try withBuffers(tensors.map { $0.1 }) { b in
            try SafeTensors.write(zip(tensors, b).map { ($0.0, $0.1.shape, $1, .F32) }, metadata: metadata, to: path)
        }
    }

    /// Copies the shared stem into every local model, so each peer's file is a complete model.
    func copySharedStem() {
        guard method.sharesStem else { return }
        for m in models.dropFirst() { m.copyStem(from: models[0]) }
    }

    func saveCheckpoint(epoch: Int) throws {
        let dir = checkpointDirectory(epoch)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        if peerComm.size > 1 && !replicated.isEmpty {
            // A periodic check that the replicated stem and modules have not drifted apart.
            let state = (method.sharesStem ? models[0].stemState() : []) + methodState.namedState()
            let drifted = try checkReplicasAgree(state, on: peerComm)
            guard drifted.isEmpty else {
                throw MethodError("replicated parameters differ across ranks at epoch \(epoch): \(drifted.prefix(5).joined(separator: ", "))")
            }
        }
        copySharedStem()
        if writesPeers {
            for (k, p) in placement.localPeers.enumerated() {
                try models[k].saveSafeTensors(to: dir + "/peer\(p).safetensors",
                                              metadata: ["model": config.models[p], "epoch": "\(epoch)", "peer": "\(p)"])
                try writeTensors(momentum(prefix: "peer\(p).", strip: true), metadata: ["epoch": "\(epoch)"],
                                 to: dir + "/peer\(p).optimizer.safetensors")
                if let module = method.peerModule(k) {
                    try module.saveSafeTensors(to: dir + "/peer\(p).module.safetensors", metadata: ["method": method.name, "epoch": "\(epoch)", "peer": "\(p)"])
                }
                if let extra = method.peerExtraState(k) {
                    try extra.saveSafeTensors(to: dir + "/peer\(p).extra.safetensors", metadata: ["epoch": "\(epoch)", "peer": "\(p)"])
                }
            }
        }
        if isLeader {
            if !method.modules.isEmpty {
                try methodState.saveSafeTensors(to: dir + "/method.safetensors", metadata: ["method": method.name, "epoch": "\(epoch)"])
            }
            if !replicated.isEmpty {
                try writeTensors(momentum(prefix: "stem.", strip: false) + momentum(prefix: "method.", strip: false),
                                 metadata: ["epoch": "\(epoch)"], to: dir + "/shared.optimizer.safetensors")
            }
        }
        try world.barrier()  // every rank's files are in place before the state names them
        if isLeader {
            let previous = try? checkpointState()
            let state = "{\"epoch\": \(epoch), \"peers\": \(placement.peers), \"ranks\": \(world.size), \"threads\": \(Threads.count)}\n"
            try writeAtomically(Data(state.utf8), to: config.output + "/checkpoints/state.json")
            if let old = previous, old != epoch { try? FileManager.default.removeItem(atPath: checkpointDirectory(old)) }
        }
        try world.barrier()
    }

    /// The epoch of the last complete checkpoint.
    func checkpointState() throws -> Int {
        let path = config.output + "/checkpoints/state.json"
        guard let data = FileManager.default.contents(atPath: path),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any], let epoch = obj["epoch"] as? Int else {
            throw ConfigError("cannot resume: \(path) is missing or unreadable (no complete checkpoint in \(config.output))")
        }
        if let peers = obj["peers"] as? Int, peers != placement.peers {
            throw ConfigError("cannot resume: the checkpoint has \(peers) peers, the config \(placement.peers)")
        }
        return epoch
    }

    /// Loads momentum buffers from a file into the optimiser under `prefix` + name, checking every shape.
    func loadMomentum(from path: String, prefix: String) throws {
        let (tensors, _) = try SafeTensors.read(path)
        let shapes = Dictionary(uniqueKeysWithValues: optimizer.parameters.map { ($0.0, $0.1.value.shape) })
        for (name, t) in tensors {
            guard let shape = shapes[prefix + name], shape == t.shape else {
                throw ConfigError("cannot resume: \(path) has '\(name)' \(t.shape), the model does not")
            }
            optimizer.momentumBuffers[prefix + name] = Tensor(shape: shape, values: t.values)
        }
    }

    /// Loads the weights of a checkpoint directory into the local peers and the method's modules.
    public func loadWeights(from dir: String) throws {
        for (k, p) in placement.localPeers.enumerated() {
            try models[k].loadSafeTensors(from: dir + "/peer\(p).safetensors")
            if let module = method.peerModule(k) { try module.loadSafeTensors(from: dir + "/peer\(p).module.safetensors") }
            if let extra = method.peerExtraState(k) { try extra.loadSafeTensors(from: dir + "/peer\(p).extra.safetensors") }
        }
        if !method.modules.isEmpty { try methodState.loadSafeTensors(from: dir + "/method.safetensors") }
    }

    /// Loads the last checkpoint into the local peers and optimisers; returns the epoch to continue from.
    func restore() throws -> Int {
        let saved = try String(contentsOfFile: config.output + "/config.yaml", encoding: .utf8)
        var savedConfig = try TrainConfig.parse(saved, source: config.output + "/config.yaml")
        savedConfig.epochs = config.epochs
        guard savedConfig == config else {
            throw ConfigError("cannot resume: the config differs from the run's \(config.output)/config.yaml (only epochs may change)")
        }
        let epoch = try checkpointState()
        let dir = checkpointDirectory(epoch)
        try loadWeights(from: dir)
        optimizer.momentumBuffers = [:]
        for p in placement.localPeers { try loadMomentum(from: dir + "/peer\(p).optimizer.safetensors", prefix: "peer\(p).") }
        if !replicated.isEmpty { try loadMomentum(from: dir + "/shared.optimizer.safetensors", prefix: "") }
        if isLeader {
            // Drop metrics of epochs after the checkpoint (written before a kill).
            let path = config.output + "/metrics.jsonl"
            let lines = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n")
            let kept = lines.prefix(epoch).map { $0 + "\n" }.joined()
            try writeAtomically(Data(kept.utf8), to: path)
            report("resuming after epoch \(epoch) from \(dir)")
        }
        return epoch
    }

    /// Top-1 and top-5 accuracy of every peer and of the teacher on the test split (eval mode, no tape).
    public func evaluate() throws -> Evaluation {
        let sampler = EpochSampler(count: test.count, batchSize: 256, seed: 0, shuffle: false, dropLast: false)
        var top1 = [Double](repeating: 0, count: models.count), top5 = top1
        var teacher = [0.0, 0.0]
        setTraining(false)
        try withoutGradients {
            for batch in BatchLoader(data: test, sampler: sampler, epoch: 0, augmentation: .none, peers: [0],
                                     replica: replica, replicas: replicas) {
                let labels = batch.labels!
                if labels.isEmpty { continue }  // a replica's empty share of a small last batch (data-parallel only)
                let (peers, t) = try method.evaluate(batch.images[0], cohort: cohort)
                for (k, logits) in peers.enumerated() {
                    let (a, b) = topCounts(logits, labels)
                    top1[k] += a; top5[k] += b
                }
                if let t, placement.rank == 0 {
                    let (a, b) = topCounts(t, labels)
                    teacher[0] += a; teacher[1] += b
                }
            }
        }
        setTraining(true)
        let n = Double(max(test.count, 1))
        let teacherSums = try sumOverRanks(teacher.map { $0 / n })
        let hasTeacher = method.teacherName != nil
        return Evaluation(top1: try gatherPeerValues(top1.map { $0 / n }).map(Float.init),
                          top5: try gatherPeerValues(top5.map { $0 / n }).map(Float.init),
                          teacherTop1: hasTeacher ? Float(teacherSums[0]) : nil,
                          teacherTop5: hasTeacher ? Float(teacherSums[1]) : nil)
    }
}
