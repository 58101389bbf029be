// Cheap wall-clock accounting for benchmarks: kernels add their elapsed time to the counter of their part of a
// training step (`distill bench engine` prints the split) when enabled. Kernels are entered from one thread (they
// split work across workers inside); only the main thread's regions count, so the counters need no locks.
import Foundation

public enum Profiler {
    /// The parts of a step the counters separate.
    public enum Part: Int, CaseIterable {
        case convolutionForward, convolutionDataGradient, convolutionWeightGradient, batchNorm, elementwise, optimizer
        /// Inference blocks run whole on pieces of the batch (`inferenceInImageChunks`): their kernels run on
        /// several threads at once, so their time is not split further.
        case chunkedBlocks

        public var label: String {
            switch self {
            case .convolutionForward: "convolution forward"
            case .convolutionDataGradient: "convolution data gradient"
            case .convolutionWeightGradient: "convolution weight (and bias) gradient"
            case .batchNorm: "batch norm, forward and backward"
            case .elementwise: "elementwise passes, both ways"
            case .optimizer: "optimiser step"
            case .chunkedBlocks: "blocks run whole per piece of the batch"
            }
        }
        public var key: String {
            switch self {
            case .convolutionForward: "conv_forward"
            case .convolutionDataGradient: "conv_data_grad"
            case .convolutionWeightGradient: "conv_weight_grad"
            case .batchNorm: "batch_norm"
            case .elementwise: "elementwise"
            case .optimizer: "optimizer"
            case .chunkedBlocks: "chunked_blocks"
            }
        }
    }

    /// When false (the default), kernels skip the clock entirely.
    public nonisolated(unsafe) static var isEnabled = false
    /// Seconds spent in each part since the last `reset`, indexed by `Part.rawValue`.
    public nonisolated(unsafe) static var seconds = [Double](repeating: 0, count: Part.allCases.count)
    public static func reset() { seconds = [Double](repeating: 0, count: Part.allCases.count) }

    /// Whether a measured region is open: a kernel called inside another part's region (an elementwise pass
    /// inside batch norm, a forward convolution computing a data gradient) counts toward the outer part.
    nonisolated(unsafe) static var inside = false

    /// Runs `body`, adding its time to `part` unless it runs inside another measured region.
    @inline(__always)
    public static func measure<T>(_ part: Part, _ body: () throws -> T) rethrows -> T {
        guard isEnabled, !inside, Thread.isMainThread else { return try body() }
        inside = true
        let t0 = now()
        defer { seconds[part.rawValue] += now() - t0; inside = false }
        return try body()
    }

    /// Runs `body` as one measured region whose time it hands out itself, lap by lap (`Laps.lap`), for a kernel
    /// that does several parts' work in turn.
    @inline(__always)
    public static func laps<T>(_ body: (inout Laps) throws -> T) rethrows -> T {
        guard isEnabled, !inside, Thread.isMainThread else { var none = Laps(last: nil); return try body(&none) }
        inside = true
        defer { inside = false }
        var laps = Laps(last: now())
        return try body(&laps)
    }

    /// The running clock of a `laps` region (inert when profiling is off or the region is nested).
    public struct Laps {
        var last: Double?
        /// Adds the time since the previous lap to `part`.
        @inline(__always)
        public mutating func lap(_ part: Part) { lap([(part, 1)]) }
        /// Shares the time since the previous lap among parts in proportion to `weights` (work done together in
        /// one pass, or by workers that timed their own shares).
        public mutating func lap(_ weights: [(Part, Double)]) {
            guard let t0 = last else { return }
            let t = Profiler.now(), total = weights.reduce(0) { $0 + $1.1 }
            if total > 0 { for (p, w) in weights { Profiler.seconds[p.rawValue] += (t - t0) * w / total } }
            last = t
        }
    }

    /// Monotonic time in seconds.
    @inline(__always)
    public static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }
}

/// Measures OpenBLAS sgemm throughput (GFLOP/s) on an n×n×n product with `threads` BLAS threads,
/// best of `repeats`; restores single-threaded BLAS afterwards.
public func measureSgemmGFLOPS(threads: Int, n: Int = 1024, repeats: Int = 5) -> Double {
    let a = Tensor(shape: [n, n], repeating: 0.5), b = Tensor(shape: [n, n], repeating: 0.25)
    let c = Tensor(zeros: [n, n])
    setBLASThreads(threads)
    defer { setBLASThreads(1) }
    var best = Double.infinity
    for _ in 0..<(repeats + 1) {
        let t0 = Profiler.now()
        gemm(transA: false, transB: false, m: n, n: n, k: n, a: a.data, lda: n, b: b.data, ldb: n, beta: 0,
             c: c.data, ldc: n, parallel: false)
        best = min(best, Profiler.now() - t0)
    }
    return 2 * Double(n) * Double(n) * Double(n) / best / 1e9
}
