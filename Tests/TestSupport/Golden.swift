// Golden reference files (Tests/Golden/*.safetensors, written by tools/golden/generate.py from PyTorch twins of
// the official code) and the weight rule both sides draw initial states from, so no weights are stored:
// a tensor NAME takes u_i = splitmix64(fnv1a64(NAME) + (i + 1)·0x9E3779B97F4A7C15) >> 40, / 2²⁴, and by its role
// (computed in Double, rounded to Float) (2u − 1)·√(6/fan_in) for rank ≥ 2, 0.75 + 0.5u for a rank-1 weight,
// 0.2·(u − 0.5) for a bias or running mean, 0.5 + u for a running variance, 0 for num_batches_tracked, −1 for a
// name ending in ".z" (CRD's constants, unset) (tools/golden/golden_weights.py is the same rule).
import Foundation
import Layers
import TensorFiles
import Tensors
import XCTest

public enum GoldenWeights {
    static func fnv1a64(_ s: String) -> UInt64 {
        var h: UInt64 = 0xCBF2_9CE4_8422_2325
        for b in s.utf8 { h ^= UInt64(b); h = h &* 0x100_0000_01B3 }
        return h
    }

    /// The rule's uniforms for a tensor name.
    public static func uniforms(_ name: String, _ n: Int) -> [Double] {
        let key = fnv1a64(name)
        return (0..<n).map { i in
            var z = key &+ UInt64(i + 1) &* 0x9E37_79B9_7F4A_7C15
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            z ^= z >> 31
            return Double(z >> 40) / Double(1 << 24)
        }
    }

    /// The values of tensor `name` of `shape` (PyTorch's layout).
    public static func values(_ name: String, shape: [Int]) -> [Float] {
        let n = shape.reduce(1, *)
        if name.hasSuffix("num_batches_tracked") { return [Float](repeating: 0, count: n) }
        if name.hasSuffix(".z") { return [Float](repeating: -1, count: n) }
        let u = uniforms(name, n)
        if name.hasSuffix("running_mean") { return u.map { Float(0.2 * ($0 - 0.5)) } }
        if name.hasSuffix("running_var") { return u.map { Float(0.5 + $0) } }
        if shape.count >= 2 {
            let bound = (6.0 / Double(shape.dropFirst().reduce(1, *))).squareRoot()
            return u.map { Float((2 * $0 - 1) * bound) }
        }
        if name.hasSuffix("weight") { return u.map { Float(0.75 + 0.5 * $0) } }
        return u.map { Float(0.2 * ($0 - 0.5)) }
    }

    /// Sets every tensor of `state` (state-dict names) from the rule, under `prefix` + its name.
    public static func fill(_ state: [(String, Parameter)], prefix: String = "") {
        for (name, p) in state {
            let v = values(prefix + name, shape: p.value.shape)
            v.withUnsafeBufferPointer { p.value.data.update(from: $0.baseAddress!, count: v.count) }
        }
    }
}

/// One golden reference file.
public struct GoldenFile {
    public let name: String
    public let tensors: [String: SafeTensor]
    public let metadata: [String: String]

    /// Reads Tests/Golden/<name>.safetensors.
    public init(_ name: String) throws {
        self.name = name
        let (list, meta) = try SafeTensors.read(packageRoot + "/Tests/Golden/\(name).safetensors")
        tensors = Dictionary(uniqueKeysWithValues: list)
        metadata = meta
    }

    public func tensor(_ key: String) throws -> Tensor {
        guard let t = tensors[key] else { throw GoldenError("\(name): no tensor '\(key)' (regenerate with tools/golden/generate.py)") }
        return Tensor(shape: t.shape, values: t.values)
    }

    public func number(_ key: String) throws -> Double {
        guard let s = metadata[key], let v = Double(s) else { throw GoldenError("\(name): no number '\(key)' in the metadata") }
        return v
    }

    /// Asserts |got − ref| ≤ factor·noise + floor·max|ref| + absolute elementwise, where noise is the twin's float32
    /// distance from its float64 result for `key` (the stored `noise_<key>`).
    public func assertMatches(_ got: Tensor, _ key: String, factor: Double = 20, floor: Double = 1e-6, absolute: Double = 0,
                              file: StaticString = #filePath, line: UInt = #line) throws {
        let ref = try tensor(key), noise = try number("noise_" + key)
        XCTAssertEqual(got.count, ref.count, "\(name) \(key): shape \(got.shape) against \(ref.shape)", file: file, line: line)
        XCTAssertTrue(got.shape == ref.shape || got.count == 1, "\(name) \(key): shape \(got.shape) against \(ref.shape)", file: file, line: line)
        guard got.count == ref.count else { return }
        let scale = ref.array.map { Double(abs($0)) }.max() ?? 0
        let bound = factor * noise + floor * scale + absolute
        var worst = 0.0, at = 0
        for i in 0..<ref.count {
            let d = Double(abs(got.data[i] - ref.data[i]))
            if d > worst { worst = d; at = i }
        }
        if ProcessInfo.processInfo.environment["GOLDEN_REPORT"] != nil {  // one line per comparison, for notes and tables
            print("golden \(name) \(key) max_abs_diff \(worst) max_abs_ref \(scale) bound \(bound)")
        }
        XCTAssertLessThanOrEqual(worst, bound, "\(name) \(key): max |Δ| \(worst) at \(at) (\(got.data[at]) vs \(ref.data[at])), bound \(bound) = \(factor)·float32 noise \(noise) + \(floor)·\(scale) + \(absolute)",
                                 file: file, line: line)
    }
}

public struct GoldenError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
