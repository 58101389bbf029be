// Explicit SIMD loops for the memory-bound kernels the auto-vectoriser leaves scalar (conditional updates,
// possibly aliasing pointers). Each takes raw pointers and a count; tails run scalar.

typealias V8 = SIMD8<Float>

@inline(__always) func load8(_ p: UnsafePointer<Float>) -> V8 { UnsafeRawPointer(p).loadUnaligned(as: V8.self) }
@inline(__always) func store8(_ v: V8, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: V8.self)
}

/// Elements below which elementwise kernels stay on the calling thread.
let parallelElementThreshold = 1 << 16

/// Runs body(range) over 0..<n split across kernel threads when n is large, in ranges aligned to 8.
@inline(__always)
func elementwiseParallel(_ n: Int, _ body: (Range<Int>) -> Void) {
    Profiler.measure(.elementwise) {
        if n < parallelElementThreshold || Threads.count == 1 { body(0..<n); return }
        let blocks = (n + 7) / 8
        parallelRanges(blocks, minPerWorker: parallelElementThreshold / 8) { _, r in
            body((r.lowerBound * 8)..<min(n, r.upperBound * 8))
        }
    }
}

/// dst[i] += src[i]
@inline(__always)
func vAccumulate(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ n: Int) {
    var i = 0
    while i + 8 <= n { store8(load8(dst + i) + load8(src + i), dst + i); i += 8 }
    while i < n { dst[i] += src[i]; i += 1 }
}

/// dst[i] += scale · src[i]
@inline(__always)
func vScaledAccumulate(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ scale: Float, _ n: Int) {
    let s = V8(repeating: scale)
    var i = 0
    while i + 8 <= n { store8(load8(dst + i) + s * load8(src + i), dst + i); i += 8 }
    while i < n { dst[i] += scale * src[i]; i += 1 }
}

/// y[i] = max(0, a[i] (+ b[i]))
@inline(__always)
func vRelu(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>?, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    var i = 0
    if let b = b {
        while i + 8 <= n { store8(relu8(load8(a + i) + load8(b + i)), y + i); i += 8 }
        while i < n { y[i] = max(0, a[i] + b[i]); i += 1 }
    } else {
        while i + 8 <= n { store8(relu8(load8(a + i)), y + i); i += 8 }
        while i < n { y[i] = max(0, a[i]); i += 1 }
    }
}

/// dst[i] += mask[i] > 0 ? g[i] : 0
@inline(__always)
func vMaskedAccumulate(_ dst: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, mask: UnsafePointer<Float>,
                       _ n: Int) {
    var i = 0
    let zero = V8(repeating: 0)
    while i + 8 <= n {
        let pass = load8(g + i).replacing(with: zero, where: load8(mask + i) .<= zero)
        store8(load8(dst + i) + pass, dst + i)
        i += 8
    }
    while i < n { if mask[i] > 0 { dst[i] += g[i] }; i += 1 }
}

/// max(0, v) lane-wise (a select; the generic pointwiseMax is not specialised here).
@inline(__always) func relu8(_ v: V8) -> V8 { v.replacing(with: 0, where: v .< 0) }

/// max(a, b) lane-wise (a select: b where b > a).
@inline(__always) func pointwiseMax8(_ a: V8, _ b: V8) -> V8 { a.replacing(with: b, where: b .> a) }
