// Tensor: a shape over a reference-counted float32 buffer, with a tape for reverse-mode autograd.
//
// Ops never write into their inputs (except where the name says so, e.g. `addInPlace`). An op whose inputs
// require gradients records a backward closure and its parents on the output, and takes the next number of the
// tape. `backward()` runs the closures in reverse recording order, a topological order that does not depend on
// the shape of the graph; each closure *accumulates* into its parents' `.grad`.
// Pinned nodes (the differentiable collectives) run their backward in every `backward()` after they were
// recorded, with a zero gradient where the objective does not reach them: their backward is itself a collective
// that every rank must join, in the same order (the rule is written out in Collectives/Differentiable.swift).
// Activations of images are channels-last: [N, H, W, C].
import Foundation

/// A reference-counted, 64-byte aligned float32 buffer. Freed buffers go back to `BufferPool`, so a training
/// step that allocates the same shapes as the previous one reuses memory instead of faulting in fresh pages.
public final class Storage {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int
    /// For a view: the storage whose memory it reads (kept alive by the view, which frees nothing).
    private let base: Storage?

    /// Allocates `count` floats, zero-filled unless `zeroed` is false (then the caller must write every element).
    public init(count: Int, zeroed: Bool = true) {
        precondition(count >= 0, "Storage: negative element count \(count)")
        self.count = count
        pointer = BufferPool.shared.take(count)
        base = nil
        if zeroed { pointer.update(repeating: 0, count: max(count, 1)) }
    }

    /// A view of `count` floats of `base` from `offset` on: no copy; `base` lives as long as the view.
    public init(viewOf base: Storage, offset: Int, count: Int) {
        precondition(offset >= 0 && count >= 0 && offset + count <= base.count,
                     "Storage: view \(offset)..<\(offset + count) outside a storage of \(base.count) elements")
        self.base = base
        self.count = count
        pointer = base.pointer + offset
    }

    deinit { if base == nil { BufferPool.shared.give(pointer, count) } }
}

/// Caches freed float buffers by exact element count, up to `limitBytes` in total.
public final class BufferPool {
    public static let shared = BufferPool()
    /// Most bytes kept cached (not in use) at once; buffers freed beyond it go back to the system.
    public nonisolated(unsafe) static var limitBytes = 2 << 30
    private var free: [Int: [UnsafeMutablePointer<Float>]] = [:]
    private var cachedBytes = 0
    private let lock = NSLock()

    func take(_ count: Int) -> UnsafeMutablePointer<Float> {
        let n = max(count, 1)
        lock.lock()
        if let p = free[n]?.popLast() {
            cachedBytes -= n * 4
            lock.unlock()
            return p
        }
        lock.unlock()
        let raw = UnsafeMutableRawPointer.allocate(byteCount: n * 4, alignment: 64)
        return raw.bindMemory(to: Float.self, capacity: n)
    }

    func give(_ p: UnsafeMutablePointer<Float>, _ count: Int) {
        let n = max(count, 1)
        lock.lock()
        if cachedBytes + n * 4 <= BufferPool.limitBytes {
            free[n, default: []].append(p)
            cachedBytes += n * 4
            lock.unlock()
        } else {
            lock.unlock()
            p.deallocate()
        }
    }

    /// Returns every cached buffer to the system.
    public func drain() {
        lock.lock()
        for (_, list) in free { for p in list { p.deallocate() } }
        free = [:]
        cachedBytes = 0
        lock.unlock()
    }
}

/// Global switch for recording operations on the tape.
public enum GradMode {
    /// True while operations record backward closures.
    public nonisolated(unsafe) static var isEnabled = true
}

/// The tape's bookkeeping: the recording counter and the pinned nodes not yet run backward.
public enum Tape {
    nonisolated(unsafe) static var counter = 0
    nonisolated(unsafe) static var pinned: [Tensor] = []

    /// Pinned nodes recorded since the last `backward()` (they run in the next one).
    public static var pendingPinned: Int { pinned.count }

    /// Forgets pinned nodes recorded since the last `backward()` without running them (a forward pass on the tape
    /// that is not differentiated). Every rank must make the same call.
    public static func discardPinned() { pinned = [] }
}

/// Runs `body` without recording any operation on the tape.
@discardableResult
public func withoutGradients<T>(_ body: () throws -> T) rethrows -> T {
    let previous = GradMode.isEnabled
    GradMode.isEnabled = false
    defer { GradMode.isEnabled = previous }
    return try body()
}

public final class Tensor {
    /// Dimensions, outermost first.
    public let shape: [Int]
    /// The values, row-major over `shape`.
    public let storage: Storage
    /// Whether gradients flow to this tensor. Leaves with `requiresGrad` collect `.grad`.
    public var requiresGrad: Bool
    /// Accumulated gradient, same shape; nil until a backward pass reaches this tensor.
    public var grad: Tensor?

    /// Tensors this one was computed from (empty for leaves and for outputs made without gradients).
    var parents: [Tensor] = []
    /// Accumulates this tensor's gradient into its parents' gradients.
    var backwardFn: ((Tensor) -> Void)?
    /// Position in recording order (parents always have smaller numbers).
    var tapeIndex = 0
    /// Runs backward even when the objective does not reach it (see `recordPinned`).
    var isPinned = false

    /// Number of elements.
    public var count: Int { storage.count }
    /// Number of dimensions.
    public var rank: Int { shape.count }
    /// Mutable pointer to the values (ops use this only on fresh outputs or for documented in-place updates).
    @inlinable public var data: UnsafeMutablePointer<Float> { storage.pointer }
    /// True when gradients reach this tensor but it was not computed by a recorded op.
    public var isLeaf: Bool { backwardFn == nil }

    /// A zero-filled tensor.
    public init(zeros shape: [Int], requiresGrad: Bool = false) {
        Tensor.checkShape(shape)
        self.shape = shape
        self.storage = Storage(count: shape.reduce(1, *))
        self.requiresGrad = requiresGrad
    }

    /// A tensor whose values are not initialised: for op outputs that write every element.
    public init(uninitialized shape: [Int]) {
        Tensor.checkShape(shape)
        self.shape = shape
        self.storage = Storage(count: shape.reduce(1, *), zeroed: false)
        self.requiresGrad = false
    }

    /// A tensor over an existing storage (a view with another shape, same element count).
    public init(shape: [Int], storage: Storage, requiresGrad: Bool = false) {
        Tensor.checkShape(shape)
        precondition(shape.reduce(1, *) == storage.count,
                     "Tensor: shape \(shape) holds \(shape.reduce(1, *)) elements but the storage has \(storage.count)")
        self.shape = shape
        self.storage = storage
        self.requiresGrad = requiresGrad
    }

    /// A tensor holding `values`, row-major over `shape`.
    public convenience init(shape: [Int], values: [Float], requiresGrad: Bool = false) {
        self.init(zeros: shape, requiresGrad: requiresGrad)
        precondition(values.count == count,
                     "Tensor: shape \(shape) needs \(count) values, got \(values.count)")
        values.withUnsafeBufferPointer { src in
            if let base = src.baseAddress { data.update(from: base, count: count) }
        }
    }

    /// A tensor of `shape` filled with `value`.
    public convenience init(shape: [Int], repeating value: Float, requiresGrad: Bool = false) {
        self.init(zeros: shape, requiresGrad: requiresGrad)
        data.update(repeating: value, count: count)
    }

    /// A 0-dimensional tensor.
    public convenience init(scalar: Float, requiresGrad: Bool = false) {
        self.init(shape: [], values: [scalar], requiresGrad: requiresGrad)
    }

    static func checkShape(_ shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "Tensor: negative dimension in shape \(shape)")
    }

    /// The values as an array (copies).
    public var array: [Float] { Array(UnsafeBufferPointer(start: data, count: count)) }

    /// The single value of a one-element tensor.
    public var item: Float {
        precondition(count == 1, "item: tensor of shape \(shape) has \(count) elements, expected 1")
        return data[0]
    }

    /// Images `range` of a batch (axis 0) as a tensor sharing this one's memory, off the tape: for inference
    /// that runs a batch in pieces (`withoutGradients`). Ops never write into their inputs, so the view is read.
    public func batchView(_ range: Range<Int>) -> Tensor {
        precondition(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0],
                     "batchView: images \(range) outside a batch of shape \(shape)")
        precondition(!GradMode.isEnabled, "batchView: inference only, inside withoutGradients (the view is not on the tape)")
        let per = shape.dropFirst().reduce(1, *)
        return Tensor(shape: [range.count] + shape.dropFirst(),
                      storage: Storage(viewOf: storage, offset: range.lowerBound * per, count: range.count * per))
    }

    /// The same values, cut from the tape (shares storage).
    public func detached() -> Tensor {
        if let observe = Tensor.detachObserver { return observe(self) }
        return Tensor(shape: shape, storage: storage)
    }

    /// When set, `detached()` returns what it returns. A finite-difference check of an objective with detached
    /// targets sets it to record the targets at the base point and to hand the same values back while it moves the
    /// inputs, so the numeric gradient, like the analytic one, holds the targets fixed.
    public nonisolated(unsafe) static var detachObserver: ((Tensor) -> Tensor)?

    /// An independent copy of the values (not on the tape).
    public func copy() -> Tensor {
        let out = Tensor(zeros: shape)
        out.data.update(from: data, count: count)
        return out
    }

    /// The gradient buffer, allocated (zeroed) on first use.
    public func gradBuffer() -> UnsafeMutablePointer<Float> {
        if let g = grad { return g.data }
        let g = Tensor(zeros: shape)
        grad = g
        return g.data
    }

    /// Drops the accumulated gradient.
    public func zeroGrad() { grad = nil }

    /// Makes the output of an op: records `backward` when gradients are on and an input requires them.
    /// `backward` receives the output (whose `.grad` is set) and must accumulate into the inputs' grads
    /// (checking each input's `requiresGrad`).
    @inlinable
    public static func result(shape: [Int], inputs: [Tensor], backward: @escaping (Tensor) -> Void) -> Tensor {
        let out = Tensor(zeros: shape)
        out.record(inputs: inputs, backward: backward)
        return out
    }

    /// Attaches a backward closure to an already-computed output.
    public func record(inputs: [Tensor], backward: @escaping (Tensor) -> Void) {
        guard GradMode.isEnabled, inputs.contains(where: { $0.requiresGrad }) else { return }
        attach(inputs, backward)
    }

    /// Records a node whose backward must run in the next `backward()` whatever it reaches: with the gradient the
    /// objective sends it, or zeros. Recorded whenever gradients are on, even if no input here requires them (on
    /// another rank one may). `backward` must check each input's `requiresGrad` before accumulating into it.
    public func recordPinned(inputs: [Tensor], backward: @escaping (Tensor) -> Void) {
        guard GradMode.isEnabled else { return }
        attach(inputs, backward)
        isPinned = true
        Tape.pinned.append(self)
    }

    private func attach(_ inputs: [Tensor], _ backward: @escaping (Tensor) -> Void) {
        requiresGrad = true
        parents = inputs
        backwardFn = backward
        Tape.counter += 1
        tapeIndex = Tape.counter
    }

    /// Reverse-mode differentiation from this tensor. A non-scalar output needs `gradient` (same shape);
    /// a scalar gets 1. Gradients accumulate into `.grad` of every leaf that requires them; the tape is freed.
    public func backward(gradient: Tensor? = nil) {
        precondition(requiresGrad, "backward: this tensor does not require gradients (no input required them, or it was made inside withoutGradients)")
        if let g = gradient {
            precondition(g.shape == shape, "backward: gradient shape \(g.shape) does not match tensor shape \(shape)")
            let dst = gradBuffer()
            for i in 0..<count { dst[i] += g.data[i] }
        } else {
            precondition(count == 1, "backward: output of shape \(shape) is not a scalar; pass `gradient:`")
            gradBuffer()[0] += 1
        }
        // Every recorded node reachable from this output or from a pending pinned node, run in reverse recording
        // order: children before parents whatever the graph's shape, and pinned nodes in the reverse of the order
        // they were recorded in (the same on every rank).
        let roots = [self] + Tape.pinned
        Tape.pinned = []
        var nodes: [Tensor] = []
        var visited = Set<ObjectIdentifier>()
        var stack: [Tensor] = []
        for r in roots where r.backwardFn != nil && visited.insert(ObjectIdentifier(r)).inserted { stack.append(r) }
        while let node = stack.popLast() {
            nodes.append(node)
            for p in node.parents where p.backwardFn != nil && visited.insert(ObjectIdentifier(p)).inserted {
                stack.append(p)
            }
        }
        nodes.sort { $0.tapeIndex > $1.tapeIndex }
        for node in nodes {
            guard let fn = node.backwardFn else { continue }
            if node.grad == nil && node.isPinned { node.grad = Tensor(zeros: node.shape) }
            if node.grad != nil { fn(node) }
            // Free the tape and the intermediate gradient as soon as it has been propagated.
            node.backwardFn = nil
            node.parents = []
            node.grad = nil
        }
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let shown = array.prefix(8).map { String($0) }.joined(separator: ", ")
        return "Tensor(shape: \(shape), values: [\(shown)\(count > 8 ? ", ..." : "")])"
    }
}

/// Product of dimensions.
@inlinable func elementCount(_ shape: [Int]) -> Int { shape.reduce(1, *) }

/// Normalises a possibly negative axis for a tensor of `rank` dimensions.
@inlinable func normalizeAxis(_ axis: Int, rank: Int, _ op: String) -> Int {
    let a = axis < 0 ? axis + rank : axis
    precondition(a >= 0 && a < rank, "\(op): axis \(axis) out of range for a tensor of rank \(rank)")
    return a
}

/// Views `shape` around `axis` as [outer, n, inner].
@inlinable func splitAround(_ shape: [Int], axis: Int) -> (outer: Int, n: Int, inner: Int) {
    (shape[..<axis].reduce(1, *), shape[axis], shape[(axis + 1)...].reduce(1, *))
}

/// dst[i] += src[i]
@inline(__always) func accumulate(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ n: Int) {
    elementwiseParallel(n) { r in vAccumulate(dst + r.lowerBound, src + r.lowerBound, r.count) }
}
