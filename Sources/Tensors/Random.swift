// Deterministic random numbers: xoshiro256** seeded through SplitMix64, so a seed fixes every draw
// on every platform (Swift's SystemRandomNumberGenerator is not seedable).
import Foundation

/// A seedable generator (xoshiro256**); value type, so copying it forks the stream.
public struct Generator: RandomNumberGenerator, Codable, Equatable {
    public var s0: UInt64, s1: UInt64, s2: UInt64, s3: UInt64

    /// A generator whose stream depends only on `seed`.
    public init(seed: UInt64) {
        var s = seed
        func splitmix() -> UInt64 {
            s &+= 0x9E37_79B9_7F4A_7C15
            var z = s
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitmix(); s1 = splitmix(); s2 = splitmix(); s3 = splitmix()
    }

    /// A generator for a sub-stream identified by several integers (e.g. seed, epoch, step, peer).
    public init(seed: UInt64, stream: [UInt64]) {
        var h = seed ^ 0x6A09_E667_F3BC_C909
        for v in stream {
            var g = Generator(seed: h ^ (v &* 0x9E37_79B9_7F4A_7C15))
            h = g.next()
        }
        self.init(seed: h)
    }

    @inline(__always)
    public mutating func next() -> UInt64 {
        let m = s1 &* 5
        let result = ((m << 7) | (m >> 57)) &* 9
        let t = s1 << 17
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        s3 = (s3 << 45) | (s3 >> 19)
        return result
    }

    /// Uniform in [0, 1) with 24 bits of precision.
    @inline(__always)
    public mutating func uniform() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }

    /// Uniform in [0, 1) with 53 bits of precision.
    @inline(__always)
    public mutating func uniformDouble() -> Double { Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0) }

    /// Standard normal (Box-Muller).
    public mutating func normal() -> Float {
        let u1 = max(uniformDouble(), 1e-300)
        let u2 = uniformDouble()
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }

    /// Uniform integer in 0..<n.
    public mutating func int(below n: Int) -> Int {
        precondition(n > 0, "Generator.int(below:) needs n > 0")
        return Int(next() % UInt64(n))
    }
}

extension Tensor {
    /// Normal(mean, std) entries.
    public static func randn(_ shape: [Int], mean: Float = 0, std: Float = 1,
                             generator g: inout Generator, requiresGrad: Bool = false) -> Tensor {
        let t = Tensor(zeros: shape, requiresGrad: requiresGrad)
        for i in 0..<t.count { t.data[i] = mean + std * g.normal() }
        return t
    }

    /// Uniform(low, high) entries.
    public static func uniform(_ shape: [Int], low: Float = 0, high: Float = 1,
                               generator g: inout Generator, requiresGrad: Bool = false) -> Tensor {
        let t = Tensor(zeros: shape, requiresGrad: requiresGrad)
        for i in 0..<t.count { t.data[i] = low + (high - low) * g.uniform() }
        return t
    }
}
