// Shared test helpers: closeness assertions and finite-difference gradient checks.
import Tensors
import XCTest

/// Asserts |a − b| ≤ atol + rtol·|b| elementwise, naming the first offending index.
public func assertClose(_ a: [Float], _ b: [Float], rtol: Float = 1e-4, atol: Float = 1e-5,
                        _ message: String = "", file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, "length differs \(message)", file: file, line: line)
    for i in 0..<min(a.count, b.count) {
        let ok = abs(a[i] - b[i]) <= atol + rtol * abs(b[i])
        if !ok || a[i].isNaN != b[i].isNaN {
            XCTFail("\(message) index \(i): \(a[i]) vs \(b[i]) (rtol \(rtol), atol \(atol))", file: file, line: line)
            return
        }
    }
}

public func assertClose(_ a: Tensor, _ b: Tensor, rtol: Float = 1e-4, atol: Float = 1e-5, _ message: String = "",
                        file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.shape, b.shape, "shape differs \(message)", file: file, line: line)
    assertClose(a.array, b.array, rtol: rtol, atol: atol, message, file: file, line: line)
}

/// Central-difference gradient check of `f` at `inputs`: compares the analytic gradient of
/// L = Σ f(x)·r (r fixed random) with (L(x + h) − L(x − h)) / 2h, L evaluated in Double, on up to
/// `maxCoordinates` sampled coordinates of each input. Returns the largest relative error seen.
@discardableResult
public func gradCheck(_ inputs: [Tensor], eps: Float = 1e-2, rtol: Float = 1e-2, atol: Float = 1e-3,
                      maxCoordinates: Int = 40, seed: UInt64 = 7, _ message: String = "",
                      file: StaticString = #filePath, line: UInt = #line,
                      _ f: ([Tensor]) -> Tensor) -> Float {
    var g = Generator(seed: seed)
    for x in inputs { x.requiresGrad = true; x.zeroGrad() }
    let y = f(inputs)
    let r = Tensor.randn(y.shape, generator: &g)
    (y * r).sum().backward()
    func loss() -> Double {
        withoutGradients {
            let out = f(inputs)
            var s = 0.0
            for i in 0..<out.count { s += Double(out.data[i]) * Double(r.data[i]) }
            return s
        }
    }
    var worst: Float = 0
    for (k, x) in inputs.enumerated() {
        let analytic = x.grad?.array ?? [Float](repeating: 0, count: x.count)
        let coords = x.count <= maxCoordinates ? Array(0..<x.count)
            : (0..<maxCoordinates).map { _ in g.int(below: x.count) }
        for i in coords {
            let saved = x.data[i]
            x.data[i] = saved + eps
            let up = loss()
            x.data[i] = saved - eps
            let down = loss()
            x.data[i] = saved
            let numeric = Float((up - down) / Double(2 * eps))
            let err = abs(numeric - analytic[i])
            worst = max(worst, err / max(abs(numeric), 1e-3))
            if err > atol + rtol * abs(numeric) {
                XCTFail("\(message) input \(k) coordinate \(i): analytic \(analytic[i]) vs numeric \(numeric)",
                        file: file, line: line)
                return worst
            }
        }
    }
    return worst
}

/// A random tensor of `shape` from a fixed seed.
public func randomTensor(_ shape: [Int], seed: UInt64, std: Float = 1) -> Tensor {
    var g = Generator(seed: seed)
    return Tensor.randn(shape, std: std, generator: &g)
}
