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
    /// Mean training loss of each peer.
    public var loss: [Float] = []
    public var trainTop1: [Float] = []
    /// Test accuracy of each peer (nil when not evaluated this epoch).
    public var testTop1: [Float]?, testTop5: [Float]?
    public var imagesPerSecond = 0.0
    public var communicationSeconds = 0.0

    var json: String {
        func list(_ v: [Float]) -> String { "[" + v.map { String(format: "%.6g", $0) }.joined(separator: ", ") + "]" }
        var parts = ["\"epoch\": \(epoch)", "\"lr\": \(String(format: "%.6g", lr))", "\"loss\": \(list(loss))",
                     "\"train_top1\": \(list(trainTop1))"]
        if let t = testTop1 { parts.append("\"test_top1\": \(list(t))") }
        if let t = testTop5 { parts.append("\"test_top5\": \(list(t))") }
        parts.append(String(format: "\"images_per_second\": %.1f", imagesPerSecond))
        parts.append(String(format: "\"communication_seconds\": %.3f", communicationSeconds))
        return "{" + parts.joined(separator: ", ") + "}"
    }
}

public final class Trainer {
    public let config: TrainConfig
    let comm: Communicator
    let placement: PeerPlacement
    let train: Dataset, test: Dataset
    let augmentation: Augmentation
    /// The peers this rank hosts, their models and optimisers.
    public private(set) var models: [Classifier] = []
    var optimizers: [SGD] = []
    let schedule: LRSchedule
    /// kd: the frozen teacher and the loss.
    let teacher: FrozenTeacher?
    let kd: HintonKD
    /// Called with every progress line (rank 0 only).
    public var report: (String) -> Void = { print($0) }

    public init(config: TrainConfig, comm: Communicator) throws {
        self.config = config
        self.comm = comm
        guard config.models.count >= comm.size else {
            throw ConfigError("\(comm.size) ranks for \(config.models.count) peer(s): data-parallel training of one model over several ranks is not available in this version; run with at most \(config.models.count) rank(s)")
        }
        placement = try PeerPlacement(peers: config.models.count, ranks: comm.size, rank: comm.rank)
        if let t = config.threads { Threads.set(t) }
        var trainSet = try DatasetCatalog.load(config.dataset, path: config.datasetPath, split: .train)
        var testSet = try DatasetCatalog.load(config.dataset, path: config.datasetPath, split: .test)
        if config.trainSubset > 0 { trainSet = try trainSet.subset(count: config.trainSubset) }
        if config.testSubset > 0 { testSet = try testSet.subset(count: config.testSubset) }
        train = trainSet; test = testSet
        augmentation = config.augmentation ?? .standard(for: config.dataset)
        let base: LRSchedule = config.schedule == "cosine"
            ? CosineLR(base: config.lr, totalEpochs: config.epochs)
            : MultiStepLR(base: config.lr, milestones: config.milestones, gamma: config.gamma)
        schedule = config.warmupEpochs > 0 ? WarmupLR(base, warmupEpochs: config.warmupEpochs) : base
        kd = HintonKD(temperature: config.temperature, alpha: config.alpha)
        if config.method == "kd", let name = config.teacherModel, let path = config.teacherCheckpoint {
            var g = Generator(seed: 0)
            let t = try ModelZoo.make(name, classes: trainSet.classes, inChannels: trainSet.channels, generator: &g)
            do { try t.loadSafeTensors(from: path) } catch {
                throw ConfigError("method.teacher_checkpoint: \(error)")
            }
            teacher = FrozenTeacher(model: t)
        } else {
            teacher = nil
        }
        for peer in placement.localPeers {
            // Each peer's initial weights depend only on (seed, peer), not on where it runs.
            var g = Generator(seed: config.seed, stream: [0x696E_6974, UInt64(peer)])  // "init"
            let m = try ModelZoo.make(config.models[peer], classes: train.classes, inChannels: train.channels, generator: &g)
            models.append(m)
            optimizers.append(SGD(parameters: m.namedParameters(), lr: config.lr, momentum: config.momentum,
                                  weightDecay: config.weightDecay, nesterov: config.nesterov && config.momentum > 0))
        }
    }

    var isLeader: Bool { comm.rank == 0 }

    /// Sums a per-peer vector over ranks (each rank fills its local peers' entries).
    func gatherPeerValues(_ local: [Double]) throws -> [Double] {
        var all = [Double](repeating: 0, count: placement.peers)
        for (k, p) in placement.localPeers.enumerated() { all[p] = local[k] }
        try comm.allReduce(&all, op: .sum)
        return all
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
        try comm.barrier()
        let sampler = EpochSampler(count: train.count, batchSize: min(config.batchSize, train.count), seed: config.seed)
        let steps = sampler.stepsPerEpoch
        // A live progress line only on a real terminal: under mpirun, ranks' output goes through a pty but is
        // forwarded line by line, so plain lines are printed instead.
        let interactive = isatty(STDOUT_FILENO) != 0 && ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] == nil
        var history: [EpochMetrics] = []
        for epoch in firstEpoch..<config.epochs {
            var metrics = EpochMetrics()
            metrics.epoch = epoch + 1
            var lossSum = [Double](repeating: 0, count: models.count), correct = lossSum
            var seen = 0
            let commStart = comm.communicationSeconds
            let start = Date()
            for m in models { m.train() }
            let loader = BatchLoader(data: train, sampler: sampler, epoch: epoch, augmentation: augmentation,
                                     peers: placement.localPeers)
            for (step, batch) in loader.enumerated() {
                let lr = schedule.lr(epoch: Double(epoch) + Double(step) / Double(steps))
                metrics.lr = lr
                let labels = batch.labels!
                for (k, model) in models.enumerated() {
                    optimizers[k].lr = lr
                    optimizers[k].zeroGrad()
                    let logits = model(batch.images[k])
                    let loss = teacher.map { kd.loss(student: logits, teacher: $0.logits(batch.images[k]), labels: labels).total }
                        ?? crossEntropy(logits, labels: labels)
                    loss.backward()
                    optimizers[k].step()
                    lossSum[k] += Double(loss.item) * Double(labels.count)
                    correct[k] += Double(zip(logits.argmaxLastAxis(), labels).filter { $0 == $1 }.count)
                }
                seen += labels.count
                if isLeader && (interactive || (step + 1) % max(1, steps / 5) == 0 || step + 1 == steps) {
                    let elapsed = Date().timeIntervalSince(start)
                    let ips = Double(seen) / max(elapsed, 1e-9)
                    let eta = Double(steps - step - 1) * elapsed / Double(step + 1)
                    let line = String(format: "epoch %d/%d  step %d/%d  loss %.4f  %.0f images/s  ETA %.0fs",
                                      epoch + 1, config.epochs, step + 1, steps, lossSum[0] / Double(max(seen, 1)), ips, eta)
                    if interactive { print("\r" + line, terminator: step + 1 == steps ? "\n" : ""); fflush(stdout) } else { report(line) }
                }
            }
            metrics.imagesPerSecond = Double(seen) / Date().timeIntervalSince(start)
            metrics.loss = try gatherPeerValues(lossSum.map { $0 / Double(max(seen, 1)) }).map(Float.init)
            metrics.trainTop1 = try gatherPeerValues(correct.map { $0 / Double(max(seen, 1)) }).map(Float.init)
            if (epoch + 1) % config.evalEvery == 0 || epoch + 1 == config.epochs {
                let (top1, top5) = try evaluate()
                metrics.testTop1 = top1; metrics.testTop5 = top5
                if isLeader {
                    report("epoch \(epoch + 1): test top-1 " + zip(config.models, top1).enumerated()
                        .map { "peer \($0.offset) (\($0.element.0)) \(String(format: "%.2f%%", 100 * $0.element.1))" }.joined(separator: ", "))
                }
            }
            metrics.communicationSeconds = comm.communicationSeconds - commStart
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

    // MARK: - Checkpoints
    //   checkpoints/epoch-E/peerP.safetensors            weights and buffers (PyTorch state-dict names)
    //   checkpoints/epoch-E/peerP.optimizer.safetensors  SGD momentum buffers under the parameter names
    //   checkpoints/state.json                           {"epoch": E, ...}: written last, the commit point
    // Every file is written to a temporary name, fsynced and renamed; the previous epoch's directory is removed
    // only after state.json names the new one, so a run killed at any moment keeps a complete checkpoint.

    func checkpointDirectory(_ epoch: Int) -> String { config.output + "/checkpoints/epoch-\(epoch)" }

    func saveCheckpoint(epoch: Int) throws {
        let dir = checkpointDirectory(epoch)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        for (k, p) in placement.localPeers.enumerated() {
            try models[k].saveSafeTensors(to: dir + "/peer\(p).safetensors",
                                          metadata: ["model": config.models[p], "epoch": "\(epoch)", "peer": "\(p)"])
            let buffers = optimizers[k].parameters.compactMap { name, _ in optimizers[k].momentumBuffers[name].map { (name, $0) } }
            try withBuffers(buffers.map { $0.1 }) { b in
                try SafeTensors.write(zip(buffers, b).map { ($0.0, $0.1.shape, $1, .F32) }, metadata: ["epoch": "\(epoch)"],
                                      to: dir + "/peer\(p).optimizer.safetensors")
            }
        }
        try comm.barrier()  // every rank's files are in place before the state names them
        if isLeader {
            let previous = try? checkpointState()
            let state = "{\"epoch\": \(epoch), \"peers\": \(placement.peers), \"ranks\": \(comm.size), \"threads\": \(Threads.count)}\n"
            try writeAtomically(Data(state.utf8), to: config.output + "/checkpoints/state.json")
            if let old = previous, old != epoch { try? FileManager.default.removeItem(atPath: checkpointDirectory(old)) }
        }
        try comm.barrier()
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
        for (k, p) in placement.localPeers.enumerated() {
            try models[k].loadSafeTensors(from: dir + "/peer\(p).safetensors")
            let (tensors, _) = try SafeTensors.read(dir + "/peer\(p).optimizer.safetensors")
            let shapes = Dictionary(uniqueKeysWithValues: optimizers[k].parameters.map { ($0.0, $0.1.value.shape) })
            optimizers[k].momentumBuffers = [:]
            for (name, t) in tensors {
                guard let shape = shapes[name], shape == t.shape else {
                    throw ConfigError("cannot resume: \(dir)/peer\(p).optimizer.safetensors has '\(name)' \(t.shape), the model does not")
                }
                optimizers[k].momentumBuffers[name] = Tensor(shape: shape, values: t.values)
            }
        }
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

    /// Top-1 and top-5 accuracy of every peer on the test split (eval mode, no tape).
    public func evaluate() throws -> (top1: [Float], top5: [Float]) {
        let sampler = EpochSampler(count: test.count, batchSize: 256, seed: 0, shuffle: false, dropLast: false)
        var top1 = [Double](repeating: 0, count: models.count), top5 = top1
        for m in models { m.eval() }
        withoutGradients {
            for batch in BatchLoader(data: test, sampler: sampler, epoch: 0, augmentation: .none, peers: [0]) {
                for (k, m) in models.enumerated() {
                    let logits = m(batch.images[0])
                    let c = logits.shape[1]
                    for (r, label) in batch.labels!.enumerated() {
                        let row = logits.data + r * c
                        let higher = (0..<c).filter { row[$0] > row[label] }.count
                        if higher == 0 { top1[k] += 1 }
                        if higher < 5 { top5[k] += 1 }
                    }
                }
            }
        }
        for m in models { m.train() }
        let n = Double(max(test.count, 1))
        return (try gatherPeerValues(top1.map { $0 / n }).map(Float.init), try gatherPeerValues(top5.map { $0 / n }).map(Float.init))
    }
}
