// `distill bench step`: the training step of an experiment config, timed.
import ArgumentParser
import Collectives
import Foundation
import Tensors
import Training

struct BenchStep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "step",
        abstract: "Times the training step of a config: step time, images/s, share of the step spent communicating, peak memory per rank.",
        discussion: """
        Examples:
          distill bench step --config configs/independent.yaml --set model=resnet20
          launch/run -np 2 -- bench step --config configs/dml.yaml --json
        Runs --warmup steps, then times --steps steps of the config's method on its training data (nothing is
        written). Step time is the wall time of one optimisation step of the whole cohort, from a barrier to a
        barrier; images/s is the global batch divided by it; the communication share is the time this rank spent
        in collectives within the step over the step time (the largest over ranks is printed); payload is what a
        rank hands to and takes from its collectives per step (the largest over ranks; wire traffic depends on
        MPI's algorithms); peak memory is each rank's maximum resident set size. Rank 0 prints.
        """)

    @Option(help: "The experiment config (YAML).")
    var config: String

    @OptionGroup var overrides: ConfigOverrides

    @Option(help: "Untimed steps first.")
    var warmup = 3

    @Option(help: "Timed steps.")
    var steps = 20

    @OptionGroup var format: OutputFormat

    /// The `--json` output.
    struct JSONOutput: Encodable {
        let config: String, method: String, models: [String]
        let ranks: Int, replicas: Int, threads: Int, batch: Int, steps: Int
        let stepMsMean: Double, stepMsMedian: Double, imagesPerSecond: Double, communicationShare: Double
        let payloadSentKibPerStep: Double, payloadReceivedKibPerStep: Double
        let peakRssMib: [Double]
        enum CodingKeys: String, CodingKey {
            case config, method, models, ranks, replicas, threads, batch, steps
            case stepMsMean = "step_ms_mean", stepMsMedian = "step_ms_median", imagesPerSecond = "images_per_second"
            case communicationShare = "communication_share", peakRssMib = "peak_rss_mib"
            case payloadSentKibPerStep = "payload_sent_kib_per_step", payloadReceivedKibPerStep = "payload_received_kib_per_step"
        }
    }

    func run() throws {
        let cfg = try overrides.load(config)
        guard steps > 0, warmup >= 0 else {
            printError("error: --steps must be > 0 and --warmup ≥ 0")
            throw ExitCode(2)
        }
        try runOnWorld { comm in
            let trainer = try Trainer(config: cfg, comm: comm)
            let (times, commSeconds, bytes, batch) = try trainer.benchmarkSteps(warmup: warmup, steps: steps)
            let total = times.reduce(0, +)
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            var memory = [Double](repeating: 0, count: comm.size)
            memory[comm.rank] = (Double(usage.ru_maxrss) / 1024).rounded()  // KiB → MiB
            try comm.allReduce(&memory, op: .sum)
            var share = [commSeconds / max(total, 1e-12), Double(bytes.sent) / 1024 / Double(steps), Double(bytes.received) / 1024 / Double(steps)]
            try comm.allReduce(&share, op: .max)
            let sorted = times.sorted()
            let mean = total / Double(times.count), median = sorted[sorted.count / 2]
            guard comm.rank == 0 else { return }
            let ips = Double(batch) / mean, replicas = trainer.replicas
            if format.json {
                let r = JSONOutput(config: config, method: cfg.method, models: cfg.models, ranks: comm.size, replicas: replicas, threads: Threads.count,
                               batch: batch, steps: steps, stepMsMean: 1000 * mean, stepMsMedian: 1000 * median,
                               imagesPerSecond: ips, communicationShare: share[0],
                               payloadSentKibPerStep: share[1], payloadReceivedKibPerStep: share[2], peakRssMib: memory)
                try printJSON(r)
                return
            }
            print("\(config): method \(cfg.method), peers \(cfg.models.joined(separator: ", ")), \(comm.size) rank(s)"
                + (replicas > 1 ? " (\(replicas) data-parallel replicas of each peer)" : "") + " × \(Threads.count) thread(s), batch \(batch)")
            print(String(format: "  step time      %.2f ms mean, %.2f ms median over %d steps", 1000 * mean, 1000 * median, steps))
            print(String(format: "  images/s       %.1f", ips))
            print(String(format: "  communication  %.2f%% of the step (slowest rank)", 100 * share[0]))
            print(String(format: "  payload        %.1f KiB sent, %.1f KiB received per step (largest over ranks)", share[1], share[2]))
            print("  peak memory    " + memory.enumerated().map { "rank \($0.offset) \(String(format: "%.0f", $0.element)) MiB" }.joined(separator: ", "))
        }
    }
}
