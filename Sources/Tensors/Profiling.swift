// Cheap wall-clock accounting for benchmarks: kernels add their elapsed time to named counters when enabled.
import Foundation

public enum Profiler {
    /// When false (the default), kernels skip the clock entirely.
    public nonisolated(unsafe) static var isEnabled = false
    /// Seconds spent in convolution kernels (im2col, sgemm, col2im), forward and backward.
    public nonisolated(unsafe) static var convolutionSeconds = 0.0

    public static func reset() { convolutionSeconds = 0 }

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
