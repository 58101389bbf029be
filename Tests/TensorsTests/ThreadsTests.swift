// Tests for the worker pool behind parallelRanges: every item runs exactly once in its worker's range whatever the
// thread count, nested and concurrent calls (which find the pool busy) neither deadlock nor change the split, and the
// pool and DispatchQueue.concurrentPerform give bit-identical kernel results.
import Foundation
import Synchronization
import XCTest
import TestSupport
import Tensors

final class ThreadsTests: XCTestCase {
    override func tearDown() { Threads.set(1); Threads.usesPool = true }

    /// Records which worker ran each item of a parallelRanges call.
    func owners(_ n: Int, minPerWorker: Int = 1) -> [Int] {
        let out = UnsafeMutableBufferPointer<Int>.allocate(capacity: n)
        defer { out.deallocate() }
        out.initialize(repeating: -1)
        parallelRanges(n, minPerWorker: minPerWorker) { w, r in for i in r { out[i] = out[i] == -1 ? w : -2 } }
        return Array(out)
    }

    func expected(_ n: Int, workers: Int) -> [Int] {
        (0..<n).map { i in (0..<workers).first { w in i >= n * w / workers && i < n * (w + 1) / workers }! }
    }

    func testEveryItemRunsOnceInItsWorkersRange() {
        for t in [1, 2, 3, 5] {
            Threads.set(t)
            for n in [0, 1, 2, 3, 7, 64, 1001] {
                for _ in 0..<50 {   // repeated calls: a worker must not miss or repeat a generation
                    XCTAssertEqual(owners(n), expected(n, workers: min(t, max(1, n))), "threads \(t), n \(n)")
                }
                XCTAssertEqual(owners(n, minPerWorker: 100), expected(n, workers: min(t, max(1, n / 100))))
            }
        }
    }

    func testNestedCallsRunTheSameRangesWithoutDeadlock() {
        Threads.set(3)
        let n = 12, m = 10
        let out = UnsafeMutableBufferPointer<Int>.allocate(capacity: n * m)
        defer { out.deallocate() }
        out.initialize(repeating: 0)
        parallelRanges(n) { _, rows in
            for i in rows {
                parallelRanges(m) { w, cols in for j in cols { out[i * m + j] += 1 + w } }
            }
        }
        // The inner calls find the pool busy and run their 3 ranges in turn; worker indices are those of the split.
        let inner = expected(m, workers: 3)
        for i in 0..<n { XCTAssertEqual(Array(out[(i * m)..<((i + 1) * m)]), inner.map { 1 + $0 }) }
    }

    func testCallsFromTwoThreadsAtOnce() {
        Threads.set(2)
        let total = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<200 {
                parallelRanges(1000) { _, r in total.add(r.count, ordering: .relaxed) }
            }
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 4 * 200 * 1000)
    }

    func testPoolAndDispatchGiveIdenticalKernels() {
        Threads.set(3)
        func run() -> [[Float]] {
            let x = randomTensor([6, 9, 9, 8], seed: 1), w = randomTensor([16, 8, 3, 3], seed: 2, std: 0.3)
            let gamma = randomTensor([16], seed: 3), beta = randomTensor([16], seed: 4)
            let mean = Tensor(zeros: [16]), variance = Tensor(shape: [16], values: [Float](repeating: 1, count: 16))
            x.requiresGrad = true; w.requiresGrad = true; gamma.requiresGrad = true
            let y = batchNorm(conv2d(x, weight: w, padding: 1), weight: gamma, bias: beta, runningMean: mean,
                              runningVar: variance, training: true, fuseReLU: true)
            (y * y).sum().backward()
            return [y.array, x.grad!.array, w.grad!.array, gamma.grad!.array, mean.array, variance.array]
        }
        let pool = run()
        Threads.usesPool = false
        XCTAssertEqual(pool, run())
    }
}
