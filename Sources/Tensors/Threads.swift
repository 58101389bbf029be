// Threading: kernels split work over `Threads.count` workers (`parallelRanges`) on a pool of persistent threads
// that wait for work spinning briefly and then sleeping, and keep OpenBLAS single-threaded inside each worker
// (small products do not split well inside BLAS).
import CBLAS
import Foundation
import Synchronization

public enum Threads {
    nonisolated(unsafe) private static var configured = false
    nonisolated(unsafe) private static var _count = 1

    /// Worker threads for kernels: set by `Threads.set`, else `OPENBLAS_NUM_THREADS`, else the core count.
    public static var count: Int {
        if !configured { set(defaultCount()) }
        return _count
    }

    /// False: kernels split through DispatchQueue.concurrentPerform instead of the worker pool (the baseline that
    /// `distill bench engine --compare-dispatch` measures). Results are the same either way.
    nonisolated(unsafe) public static var usesPool = true

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

/// Runs body(worker, range) over `n` items split into contiguous ranges, one per worker: worker w gets
/// n·w/W ..< n·(w+1)/W of W = min(Threads.count, n / minPerWorker) workers. The caller runs range 0 itself. When the
/// pool is already busy (a call from inside a worker, or from a second thread) the same ranges run one after another
/// on the calling thread, so results never depend on who ran them.
@inline(__always)
public func parallelRanges(_ n: Int, minPerWorker: Int = 1, _ body: (Int, Range<Int>) -> Void) {
    let workers = min(Threads.count, max(1, n / max(minPerWorker, 1)), WorkerPool.maxWorkers)
    if workers <= 1 || n <= 1 {
        if n > 0 { body(0, 0..<n) }
        return
    }
    func chunk(_ w: Int) {
        let lo = n * w / workers, hi = n * (w + 1) / workers
        if hi > lo { body(w, lo..<hi) }
    }
    if !Threads.usesPool {
        DispatchQueue.concurrentPerform(iterations: workers) { chunk($0) }
        return
    }
    if !WorkerPool.shared.run(workers, chunk) {
        for w in 0..<workers { chunk(w) }
    }
}

/// Persistent worker threads for `parallelRanges`. A call publishes its body and bumps `state` (generation·256 +
/// worker count); workers spin on `state` for about `spinNanoseconds` after their last job, then sleep on a
/// condition variable. Measured on a 2-core machine (a call splitting ~160 µs of work in two): about 85 µs per call
/// against 125-140 µs with DispatchQueue.concurrentPerform, whose idle worker takes tens of microseconds to wake.
final class WorkerPool: @unchecked Sendable {
    static let shared = WorkerPool()
    static let maxWorkers = 255
    /// How long an idle worker spins before it sleeps: the gaps between a step's parallel kernels are shorter.
    static let spinNanoseconds: UInt64 = 200_000

    private let state = Atomic<Int>(0)        // generation << 8 | workers of the current call
    private let pending = Atomic<Int>(0)      // pool threads still running the current call
    private let sleepers = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    private nonisolated(unsafe) var job: UnsafeRawPointer?   // the current call's (Int) -> Void, valid while pending > 0
    private nonisolated(unsafe) var threads = 0
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    private init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
    }

    /// Runs body(0..<workers) with the caller as worker 0; false (nothing run) when the pool is busy.
    func run(_ workers: Int, _ body: (Int) -> Void) -> Bool {
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        defer { busy.store(false, ordering: .releasing) }
        while threads < workers - 1 { startThread(index: threads + 1); threads += 1 }
        withoutActuallyEscaping(body) { body in
            var f = body
            withUnsafePointer(to: &f) { p in
                job = UnsafeRawPointer(p)
                pending.store(workers - 1, ordering: .relaxed)
                let s = state.load(ordering: .relaxed)
                state.store(((s >> 8) + 1) << 8 | workers, ordering: .sequentiallyConsistent)
                if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
                    pthread_mutex_lock(mutex); pthread_cond_broadcast(wake); pthread_mutex_unlock(mutex)
                }
                body(0)
                var spins = 0
                while pending.load(ordering: .acquiring) > 0 {
                    spins += 1
                    if spins & 1023 == 0 { sched_yield() }   // a descheduled worker needs this core
                }
                job = nil
            }
        }
        return true
    }

    private func startThread(index w: Int) {
        let current = state.load(ordering: .relaxed)   // before the call that needs the thread bumps it
        let t = Thread { [unowned self] in self.serve(index: w, seen: current) }
        t.name = "distill-worker-\(w)"
        t.start()
    }

    private func serve(index w: Int, seen start: Int) {
        var seen = start
        while true {
            var s = state.load(ordering: .acquiring)
            if s == seen {
                let start = DispatchTime.now().uptimeNanoseconds
                var spins = 0
                while s == seen {
                    spins += 1
                    if spins & 255 == 0 && DispatchTime.now().uptimeNanoseconds - start > Self.spinNanoseconds { break }
                    s = state.load(ordering: .acquiring)
                }
            }
            if s == seen {
                pthread_mutex_lock(mutex)
                sleepers.add(1, ordering: .sequentiallyConsistent)
                while state.load(ordering: .sequentiallyConsistent) == seen { pthread_cond_wait(wake, mutex) }
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
                pthread_mutex_unlock(mutex)
                s = state.load(ordering: .acquiring)
            }
            seen = s
            if w < s & 255 {
                job!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(w)
                pending.subtract(1, ordering: .releasing)
            }
        }
    }
}
