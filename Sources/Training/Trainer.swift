// The training loop: epochs of steps over an experiment, progress lines, one metrics line per epoch, evaluation
// and checkpoints in a run directory, and exact resume. A step: the method's objective, a check that every loss
// is finite, backward (collective-safe: Collectives/Differentiable.swift), gradient synchronisation of replicated
// parameters, the update, the shared stem's statistics, the method's after-step work.
import Collectives
import Datasets
import Distillation
import Foundation
import Tensors

public final class Trainer {
    public let experiment: Experiment
    /// Called with every progress line (rank 0 only).
    public var report: (String) -> Void = { print($0); fflush(stdout) }

    public init(config: TrainConfig, comm: Communicator) throws {
        experiment = try Experiment(config: config, comm: comm)
    }

    /// Rank 0's TensorBoard files (config `tensorboard`), open while `run` runs.
    var log: TensorBoardLog?
    /// Wall time and count of the whole epochs (training, evaluation, checkpoint) this process has run, for the
    /// run's ETA: their mean counts evaluation epochs in their share and evens out a shared machine's noise.
    var epochSeconds = 0.0, epochsTimed = 0

    var config: TrainConfig { experiment.config }
    /// Data-parallel replicas of each peer (1: none).
    public var replicas: Int { experiment.replicas }
    var method: DistillationMethod { experiment.method }

    /// Trains for the configured epochs into `config.output`; returns the metrics of the epochs run. With `resume`,
    /// continues from the run directory's last complete checkpoint and ends with the same weights, bit for bit, as
    /// an uninterrupted run (same ranks and threads).
    @discardableResult
    public func run(resume: Bool = false) throws -> [EpochMetrics] {
        let x = experiment, run = RunDirectory(config.output)
        var firstEpoch = 0
        if resume {
            firstEpoch = try x.restore(from: run)
            if x.isLeader {
                try run.truncateMetrics(toEpochs: firstEpoch)  // lines of epochs after the checkpoint (written before a kill)
                report("resuming after epoch \(firstEpoch) from \(run.checkpoint(epoch: firstEpoch).path)")
            }
        } else if x.isLeader {
            try run.create(config: config)
        }
        if x.isLeader { x.optimizerSummary.forEach(report) }
        try x.world.barrier()
        let sampler = trainSampler
        guard sampler.batchSize >= x.replicas else {
            throw ConfigError("batch_size \(config.batchSize) is smaller than the \(x.replicas) data-parallel ranks")
        }
        let steps = sampler.stepsPerEpoch
        if x.isLeader && config.tensorboard {
            log = try TensorBoardLog(run: run, resumingAtStep: resume ? firstEpoch * steps : nil)
        }
        var history: [EpochMetrics] = []
        for epoch in firstEpoch..<config.epochs {
            let epochStart = Date()
            var metrics = try trainEpoch(epoch, sampler: sampler)
            if (epoch + 1) % config.evalEvery == 0 || epoch + 1 == config.epochs {
                let e = try x.evaluate()
                metrics.testTop1 = e.top1; metrics.testTop5 = e.top5
                metrics.teacherTestTop1 = e.teacherTop1; metrics.teacherTestTop5 = e.teacherTop5
                metrics.extraTestTop1 = e.extraTop1.isEmpty ? nil : e.extraTop1
                if x.isLeader { report("epoch \(epoch + 1): " + x.summary(e)) }
                if let data = x.validation {
                    let v = try x.evaluate(on: data)
                    metrics.valTop1 = v.top1; metrics.teacherValTop1 = v.teacherTop1
                    metrics.extraValTop1 = v.extraTop1.isEmpty ? nil : v.extraTop1
                    if x.isLeader { report("epoch \(epoch + 1): " + x.summary(v, split: "validation")) }
                }
            }
            // The metrics line goes first, the checkpoint after: a run killed in between resumes from the
            // previous checkpoint and drops the line of the epoch it repeats.
            metrics.time = timestamp()
            if x.isLeader { try run.appendMetrics(try jsonLine(metrics)) }
            try log?.addEpoch(metrics, step: (epoch + 1) * steps)
            if (epoch + 1) % config.checkpointEvery == 0 || epoch + 1 == config.epochs {
                try x.save(epoch: epoch + 1, to: run)
            }
            epochSeconds += Date().timeIntervalSince(epochStart); epochsTimed += 1
            history.append(metrics)
        }
        return history
    }

    /// One pass over the training set; the metrics of every peer, term and the teacher, summed over ranks.
    func trainEpoch(_ epoch: Int, sampler: EpochSampler) throws -> EpochMetrics {
        let x = experiment, steps = sampler.stepsPerEpoch, termNames = method.termNames
        // A live progress line only on a real terminal: under mpirun, ranks' output is forwarded line by line,
        // so plain lines are printed instead.
        let interactive = isatty(STDOUT_FILENO) != 0 && ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] == nil
        var metrics = EpochMetrics()
        metrics.epoch = epoch + 1
        metrics.teacher = method.teacherName
        var lossSum = [Double](repeating: 0, count: x.models.count), correct = lossSum, correct5 = lossSum
        var termSums = [Double](repeating: 0, count: termNames.count)
        var teacherCorrect = 0.0, seen = 0
        // Each step's peer losses and terms, one row per step, summed over ranks once at the epoch's end.
        let width = x.placement.peers + termNames.count
        var stepRows = [Double](repeating: 0, count: config.tensorboard ? steps * width : 0), stepLRs: [Float] = []
        if try x.prepareMainOptimizer(epoch: epoch), x.isLeader {
            report("epoch \(epoch + 1): the main optimiser's state starts afresh (\(config.method))")
        }
        let commStart = x.communicationSeconds, start = Date()
        x.setTraining(true)
        for (step, batch) in trainLoader(sampler, epoch: epoch).enumerated() {
            let lr = x.schedule.lr(epoch: Double(epoch) + Double(step) / Double(steps))
            metrics.lr = lr
            let labels = batch.labels!
            let result = try trainStep(batch, epoch: epoch, step: step, globalStep: epoch * steps + step, lr: lr)
            for k in x.models.indices {
                lossSum[k] += Double(result.peerLoss[k]) * Double(labels.count)
                let (a, b) = topCounts(result.peerLogits[k], labels)
                correct[k] += a; correct5[k] += b
            }
            for (i, name) in termNames.enumerated() { termSums[i] += Double(result.terms[name] ?? 0) }
            if config.tensorboard {
                for (k, p) in x.placement.localPeers.enumerated() { stepRows[step * width + p] = Double(result.peerLoss[k]) }
                for (i, name) in termNames.enumerated() { stepRows[step * width + x.placement.peers + i] = Double(result.terms[name] ?? 0) }
                stepLRs.append(lr)
            }
            if x.placement.rank == 0, let t = result.teacherLogits { teacherCorrect += topCounts(t, labels).top1 }
            seen += labels.count
            if x.isLeader && (interactive || (step + 1) % max(1, steps / 5) == 0 || step + 1 == steps) {
                let elapsed = Date().timeIntervalSince(start)
                let ips = Double(seen * x.replicas) / max(elapsed, 1e-9)
                let eta = Double(steps - step - 1) * elapsed / Double(step + 1)
                let perEpoch = epochsTimed > 0 ? epochSeconds / Double(epochsTimed) : elapsed * Double(steps) / Double(step + 1)
                let runEta = eta + Double(config.epochs - epoch - 1) * perEpoch
                let losses = lossSum.map { String(format: "%.4f", $0 / Double(max(seen, 1))) }.joined(separator: " ")
                let line = String(format: "epoch %d/%d  step %d/%d  loss %@  %.0f images/s  ETA epoch %@, run %@",
                                  epoch + 1, config.epochs, step + 1, steps, losses, ips, duration(eta), duration(runEta))
                if interactive { print("\r" + line, terminator: step + 1 == steps ? "\n" : ""); fflush(stdout) } else { report(line) }
            }
        }
        let total = Double(max(seen * x.replicas, 1))
        let seconds = Date().timeIntervalSince(start)
        metrics.seconds = seconds
        metrics.imagesPerSecond = Double(seen * x.replicas) / seconds
        if config.tensorboard {
            try x.world.allReduce(&stepRows, op: .sum)
            let r = Double(x.replicas)
            for (i, lr) in stepLRs.enumerated() {
                let row = stepRows[(i * width)..<((i + 1) * width)].map { $0 / r }
                log?.addStep(epoch * steps + i + 1, peerLoss: Array(row.prefix(x.placement.peers)),
                             terms: Array(zip(termNames, row.dropFirst(x.placement.peers))), lr: lr)
            }
        }
        metrics.loss = try x.gatherPeerValues(lossSum.map { $0 / total }).map(Float.init)
        metrics.trainTop1 = try x.gatherPeerValues(correct.map { $0 / total }).map(Float.init)
        metrics.trainTop5 = try x.gatherPeerValues(correct5.map { $0 / total }).map(Float.init)
        var sums = termSums.map { $0 / Double(max(steps * x.replicas, 1)) } + [teacherCorrect / total]
        try x.world.allReduce(&sums, op: .sum)
        metrics.terms = Dictionary(uniqueKeysWithValues: zip(termNames, sums.map(Float.init)))
        if method.teacherName != nil { metrics.teacherTrainTop1 = Float(sums.last!) }
        if let replicas = x.replicaComm {
            // Batch norm is synchronised across replicas, so their running statistics agree but for float
            // summation order; replica 0's are kept, as DDP's buffer broadcast does.
            let buffers = x.models.flatMap { $0.namedBuffers() } + x.methodState.namedBuffers()
            try broadcastValues(buffers.map { $0.1.value }, on: replicas, root: 0)
        }
        metrics.communicationSeconds = x.communicationSeconds - commStart
        return metrics
    }

    /// The peers whose augmented views a batch carries: each local peer's, or peer 0's shared by all.
    var viewPeers: [Int] { method.augmentsPerPeer ? experiment.placement.localPeers : [0] }

    /// The order of the training set's global batches.
    var trainSampler: EpochSampler {
        EpochSampler(count: experiment.train.count, batchSize: min(config.batchSize, experiment.train.count), seed: config.seed,
                     dropLast: config.dropLast, minLastBatch: max(2, experiment.replicas))
    }

    /// This rank's share of each batch of `epoch`, with the views its peers train on.
    func trainLoader(_ sampler: EpochSampler, epoch: Int) -> BatchLoader {
        BatchLoader(data: experiment.train, sampler: sampler, epoch: epoch, augmentation: experiment.augmentation, peers: viewPeers,
                    replica: experiment.replica, replicas: experiment.replicas)
    }

    /// This step's unlabeled images, one view per entry of `viewPeers`: the global step's slot of an endless pass.
    func unlabeledImages(globalStep: Int) -> [Tensor]? {
        let x = experiment
        guard let u = x.unlabeled, config.unlabeledPerBatch > 0 else { return nil }
        let sampler = EpochSampler(count: u.count, batchSize: min(config.unlabeledPerBatch, u.count), seed: config.seed &+ 0x756E_6C61)
        let steps = sampler.stepsPerEpoch, epoch = globalStep / steps, step = globalStep % steps
        let items = sampler.batches(epoch: epoch)[step][EpochSampler.shard(size: sampler.batchSize, replica: x.replica, of: x.replicas)]
        return makeBatch(u, items: Array(items), augmentation: x.augmentation, seed: sampler.seed, epoch: epoch, step: step, peers: viewPeers).images
    }

    /// One optimisation step on a batch: the method's objective, backward, gradient synchronisation, the update;
    /// then each further phase the method declares (its objective on the same batch, backward, its optimiser).
    func trainStep(_ batch: Batch, epoch: Int, step: Int, globalStep: Int, lr: Float) throws -> StepResult {
        let x = experiment
        var views = batch.images
        if let extra = unlabeledImages(globalStep: globalStep) { views = zip(views, extra).map { concat([$0, $1], axis: 0) } }
        let images = method.augmentsPerPeer ? views : Array(repeating: views[0], count: x.models.count)
        let input = StepInput(images: images, labels: batch.labels, epoch: epoch, step: globalStep, indices: batch.indices,
                              positions: batch.positions)
        x.optimizer.lr = lr
        // Replicas' objectives are means over their slices; weighted by slice size they add up to the mean over the
        // global batch when the slices differ (a last partial batch), so the gradient mean is one process's.
        let weight = Float(batch.indices.count * x.replicas) / Float(max(batch.globalCount, 1))
        var result = try method.step(input, cohort: x.cohort)
        try update(phase: 0, result.objective, weight: weight, terms: result.terms, peerLoss: result.peerLoss, epoch: epoch, step: step)
        for i in x.optimizers.indices.dropFirst() {  // the method's further phases
            let r = try method.phaseStep(i - 1, input, cohort: x.cohort)
            try update(phase: i, r.objective, weight: weight, terms: r.terms, peerLoss: [], epoch: epoch, step: step)
            result.terms.merge(r.terms) { $0 + $1 }
        }
        method.afterStep(cohort: x.cohort, step: globalStep + 1)
        return result
    }

    /// Applies phase `i`'s objective (0: the main one) times `weight` (a replica's share of the global batch): the
    /// non-finite check, backward into freshly zeroed gradients, the sum of the replicated parameters' gradients across the peer ranks and the mean of every
    /// gradient across data-parallel replicas, the phase's optimiser, the shared stem's statistics.
    func update(phase i: Int, _ objective: Tensor, weight: Float = 1, terms: [String: Float], peerLoss: [Float], epoch: Int, step: Int) throws {
        let x = experiment, phase = x.optimizers[i]
        try checkFinite(objective, terms: terms, peerLoss: peerLoss, epoch: epoch, step: step, phase: i == 0 ? nil : phase.phase)
        phase.optimizer.zeroGrad()
        (weight == 1 ? objective : objective * weight).backward()
        if x.peerComm.size > 1 { try syncGradients(phase.replicated, on: x.peerComm, mode: .sum) }
        if let replicas = x.replicaComm { try syncGradients(phase.optimizer.parameters.map { $0.1.value }, on: replicas, mode: .mean) }
        phase.optimizer.step()
        try x.cohort.stem?.synchronizeStatistics()
    }

    /// Stops the run at the first non-finite loss, naming the epoch, step, peer and term (before the update that
    /// would use it, so the last checkpoint is the state to go back to).
    func checkFinite(_ objective: Tensor, terms: [String: Float], peerLoss: [Float], epoch: Int, step: Int, phase: String?) throws {
        let badPeers = zip(experiment.placement.localPeers, peerLoss).filter { !$0.1.isFinite }
        let badTerms = terms.filter { !$0.value.isFinite }.keys.sorted()
        guard !badPeers.isEmpty || !badTerms.isEmpty || !objective.item.isFinite else { return }
        let peers = badPeers.map { "peer \($0.0) (\(experiment.peerModels[$0.0])) loss \($0.1)" }
        let terms = badTerms.map { "\($0) = \(terms[$0]!)" }
        let what = (peers + terms).isEmpty ? ["the objective is \(objective.item)"] : peers + terms
        throw TrainingError.nonFiniteLoss("non-finite loss at epoch \(epoch + 1), step \(step + 1)\(phase.map { " (phase \($0))" } ?? ""): "
            + what.joined(separator: ", ")
            + "; stopped before the update (the last checkpoint in \(config.output) is intact; try a lower optimizer.lr)")
    }

    /// Step timings for `distill bench step`: runs `warmup` then `steps` training steps (no files written); the
    /// seconds and payload bytes this rank spent in collectives over the timed steps.
    public func benchmarkSteps(warmup: Int, steps: Int) throws -> (stepSeconds: [Double], communicationSeconds: Double, payloadBytes: (sent: Int, received: Int), imagesPerStep: Int) {
        let x = experiment, sampler = trainSampler
        x.setTraining(true)
        var times: [Double] = [], comm = 0.0, bytes = (sent: 0, received: 0), epoch = 0, global = 0
        while times.count < steps {
            for (step, batch) in trainLoader(sampler, epoch: epoch).enumerated() {
                try x.world.barrier()
                let c0 = x.communicationSeconds, b0 = x.payloadBytes, t0 = Date()
                _ = try trainStep(batch, epoch: epoch, step: step, globalStep: global, lr: config.lr)
                let c1 = x.communicationSeconds, b1 = x.payloadBytes
                try x.world.barrier()
                if global >= warmup {
                    times.append(Date().timeIntervalSince(t0))
                    comm += c1 - c0
                    bytes.sent += b1.sent - b0.sent; bytes.received += b1.received - b0.received
                }
                global += 1
                if times.count == steps { break }
            }
            epoch += 1
        }
        return (times, comm, bytes, sampler.batchSize)
    }
}

/// Seconds as "42s", "3m07s" or "1h02m".
func duration(_ seconds: Double) -> String {
    let s = Int(max(seconds, 0).rounded())
    if s < 60 { return "\(s)s" }
    if s < 3600 { return String(format: "%dm%02ds", s / 60, s % 60) }
    return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60)
}

/// A run that cannot go on.
public enum TrainingError: Error, CustomStringConvertible {
    case nonFiniteLoss(String)
    public var description: String {
        switch self { case let .nonFiniteLoss(m): return m }
    }
}
