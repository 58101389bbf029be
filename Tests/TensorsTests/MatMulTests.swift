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
