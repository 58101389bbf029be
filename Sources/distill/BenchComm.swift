// `distill bench comm`: collective latency and bandwidth, run under mpirun (launch/run).
import ArgumentParser
import Collectives
import Foundation
import Training
import Tensors

struct BenchComm: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "comm",
        abstract: "Measures allreduce latency and bandwidth and the allgather of a logit matrix (run under mpirun).",
        discussion: """
        Example: launch/run -np 2 -- bench comm --json
        Latency is the mean time of one 4-byte float allreduce. Bandwidth is the buffer size divided by the mean
        allreduce time (algorithm bandwidth, GB/s = 1e9 bytes/s). The allgather moves a 128×100 float logit
        matrix from every rank. Each figure is the slowest rank's mean over the iterations. Rank 0 prints.
        """)

    @Option(help: "Iterations for small messages (large ones use fewer).")
    var iterations = 2000

    @OptionGroup var format: OutputFormat

    func run() throws {
        let comm = try MPICommunicator.world()
        func timed(_ iters: Int, _ body: () throws -> Void) throws -> Double {
            try body()  // warm-up
            try comm.barrier()
            let t0 = Profiler.now()
            for _ in 0..<iters { try body() }
            var elapsed = [(Profiler.now() - t0) / Double(iters)]
            try comm.allReduce(&elapsed, op: .max)
            return elapsed[0]
        }
        var results: [(String, Double, String)] = []
        let small = Tensor(zeros: [1])
        let lat = try timed(iterations) { try comm.allReduce(small) }
        results.append(("allreduce_4b_us", lat * 1e6, "allreduce 4 B latency, µs"))
        for (key, label, bytes) in [("allreduce_64kib_gbps", "64 KiB", 64 << 10), ("allreduce_1mib_gbps", "1 MiB", 1 << 20),
                                    ("allreduce_16mib_gbps", "16 MiB", 16 << 20)] {
            let t = Tensor(shape: [bytes / 4], repeating: 1)
            let iters = max(5, min(iterations, (256 << 20) / bytes))
            let s = try timed(iters) { try comm.allReduce(t) }
            results.append((key, Double(bytes) / s / 1e9, "allreduce \(label) bandwidth, GB/s"))
        }
        let logits = Tensor(shape: [128, 100], repeating: 1)
        let out = Tensor(zeros: [comm.size, 128, 100])
        let ag = try timed(iterations / 2) { try comm.allGather(logits.data, count: logits.count, into: out.data) }
        results.append(("allgather_logits_us", ag * 1e6, "allgather 128×100 logits, µs"))
        if comm.rank == 0 {
            if format.json {
                try printJSON(Dictionary(uniqueKeysWithValues: results.map { ($0.0, $0.1) }).merging(["ranks": Double(comm.size)]) { $1 })
            } else {
                print("\(comm.size) ranks")
                for (_, v, label) in results { print(label.padding(toLength: 40, withPad: " ", startingAt: 0) + String(format: "%12.3f", v)) }
            }
        }
        MPICommunicator.finalize()
    }
}
