// Threading: kernels split work over `Threads.count` workers with DispatchQueue.concurrentPerform and keep
// OpenBLAS single-threaded inside each worker (small products do not split well inside BLAS).
import CBLAS
import Dispatch
import Foundation

public enum Threads {
    nonisolated(unsafe) private static var configured = false
    nonisolated(unsafe) private static var _count = 1

    /// Worker threads for kernels: set by `Threads.set`, else `OPENBLAS_NUM_THREADS`, else the core count.
    public static var count: Int {
        if !configured { set(defaultCount()) }
        return _count
    }

    /// Sets the number of kernel threads (at least 1). OpenBLAS itself stays single-threaded.
    public static func set(_ n: Int) {
        _count = max(1, n)
        configured = true
        openblas_set_num_threads(1)
    }

    static func defaultCount() -> Int {
        if let v = ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"], let n = Int(v), n > 0 { return n }
        return ProcessInfo.processInfo.activeProcessorCount
    }
}

/// Sets OpenBLAS's own thread count (kernels keep it at 1 and split work themselves).
public func setBLASThreads(_ n: Int) { openblas_set_num_threads(Int32(max(1, n))) }

/// Runs body(worker, range) over `n` items split into contiguous ranges, one per worker.
@inline(__always)
public func parallelRanges(_ n: Int, minPerWorker: Int = 1, _ body: (Int, Range<Int>) -> Void) {
    let workers = min(Threads.count, max(1, n / max(minPerWorker, 1)))
    if workers <= 1 || n <= 1 {
        if n > 0 { body(0, 0..<n) }
        return
    }
    DispatchQueue.concurrentPerform(iterations: workers) { w in
        let lo = n * w / workers, hi = n * (w + 1) / workers
        if hi > lo { body(w, lo..<hi) }
    }
}
