import TestSupport
import Tensors
import XCTest

final class MatMulTests: XCTestCase {
    func naive(_ a: [Float], _ b: [Float], m: Int, n: Int, k: Int) -> [Float] {
        var c = [Float](repeating: 0, count: m * n)
        for i in 0..<m { for j in 0..<n { for p in 0..<k { c[i * n + j] += a[i * k + p] * b[p * n + j] } } }
        return c
    }

    func testMatmulAllTransposes() {
        let m = 5, k = 7, n = 3
        let a = randomTensor([m, k], seed: 1), b = randomTensor([k, n], seed: 2)
        let expected = naive(a.array, b.array, m: m, n: n, k: k)
        assertClose(matmul(a, b).array, expected)
        let at = a.transposed().copy(), bt = b.transposed().copy()
        assertClose(matmul(at, b, transA: true).array, expected)
        assertClose(matmul(a, bt, transB: true).array, expected)
        assertClose(matmul(at, bt, transA: true, transB: true).array, expected)
        gradCheck([a, b], eps: 1e-3, "A·B") { matmul($0[0], $0[1]) }
        gradCheck([at, b], eps: 1e-3, "Aᵀ·B") { matmul($0[0], $0[1], transA: true) }
        gradCheck([a, bt], eps: 1e-3, "A·Bᵀ") { matmul($0[0], $0[1], transB: true) }
        gradCheck([at, bt], eps: 1e-3, "Aᵀ·Bᵀ") { matmul($0[0], $0[1], transA: true, transB: true) }
    }

    /// The sgemv kernel against its elementwise reference, values and both gradients, on 1 and 3 threads.
    func testBatchedMatVecMatchesReference() {
        let saved = Threads.count
        defer { Threads.set(saved) }
        for threads in [1, 3] {
            Threads.set(threads)
            let a = randomTensor([37, 5, 7], seed: 11), x = randomTensor([37, 7], seed: 12), w = randomTensor([37, 5], seed: 13)
            func run(_ f: (Tensor, Tensor) -> Tensor) -> (Tensor, Tensor, Tensor) {
                let a2 = a.copy(), x2 = x.copy()
                a2.requiresGrad = true; x2.requiresGrad = true
                let y = f(a2, x2)
                (y * w).sum().backward()
                return (y, a2.grad!, x2.grad!)
            }
            let fast = run(batchedMatVec), slow = run(batchedMatVecReference)
            assertClose(fast.0, slow.0, rtol: 1e-5, atol: 1e-6, "values, \(threads) threads")
            assertClose(fast.1, slow.1, rtol: 1e-5, atol: 1e-6, "dA, \(threads) threads")
            assertClose(fast.2, slow.2, rtol: 1e-5, atol: 1e-6, "dx, \(threads) threads")
        }
        gradCheck([randomTensor([3, 4, 5], seed: 14), randomTensor([3, 5], seed: 15)], eps: 1e-3, "A[b]·x[b]") { batchedMatVec($0[0], $0[1]) }
    }

    /// Scores against indexed rows of a constant table agree with gathering the rows first, on 1 and 3 threads.
    func testIndexedMatVecMatchesGatherThenMatVec() {
        let saved = Threads.count
        defer { Threads.set(saved) }
        let table = randomTensor([11, 6], seed: 21)
        var g = Generator(seed: 22)
        let rows = (0..<(5 * 4)).map { _ in g.int(below: 11) }
        for threads in [1, 3] {
            Threads.set(threads)
            func run(_ f: (Tensor, [Int], Tensor) -> Tensor) -> (Tensor, Tensor) {
                let x = randomTensor([5, 6], seed: 23)
                x.requiresGrad = true
                let y = f(table, rows, x)
                (y * randomTensor([5, 4], seed: 24)).sum().backward()
                return (y, x.grad!)
            }
            let fast = run { indexedMatVec(table: $0, rows: $1, $2) }, slow = run { indexedMatVecReference(table: $0, rows: $1, $2) }
            assertClose(fast.0, slow.0, rtol: 1e-5, atol: 1e-6, "values, \(threads) threads")
            assertClose(fast.1, slow.1, rtol: 1e-5, atol: 1e-6, "dx, \(threads) threads")
        }
        gradCheck([randomTensor([5, 6], seed: 25)], eps: 1e-3, "⟨table[rows], x⟩") { indexedMatVec(table: table, rows: rows, $0[0]) }
    }

    func testLargeMatmulSplitsRowsAcrossThreads() {
        let saved = Threads.count
        defer { Threads.set(saved) }
        let a = randomTensor([300, 64], seed: 3), b = randomTensor([64, 80], seed: 4)
        Threads.set(1)
        let one = matmul(a, b)
        Threads.set(3)
        let three = matmul(a, b)
        assertClose(three, one, rtol: 1e-5, atol: 1e-5)
    }

    func testLinear() {
        let x = randomTensor([4, 6], seed: 5), w = randomTensor([3, 6], seed: 6), b = randomTensor([3], seed: 7)
        let ref = matmul(x, w, transB: true) + b
        assertClose(linear(x, weight: w, bias: b), ref)
        gradCheck([x, w, b], eps: 1e-3, "linear") { linear($0[0], weight: $0[1], bias: $0[2]) }
        gradCheck([x, w], eps: 1e-3, "linear without bias") { linear($0[0], weight: $0[1], bias: nil) }
    }
}
