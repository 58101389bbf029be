// Gradient synchronisation for replicated parameters (shared stems, data-parallel replicas) and checks that
// replicas have not drifted apart.
import Tensors

public enum GradientSyncMode { case sum, mean }

/// Floats per allreduce bucket (4 MiB).
public nonisolated(unsafe) var gradientBucketFloats = 1 << 20

/// Sums (or averages) the gradients of `tensors` (trainable leaves) across `comm`, packing many small tensors
/// into a few bucketed allreduces. A tensor without a gradient contributes zeros (and receives the others' sum),
/// so every rank issues the same calls.
public func syncGradients(_ tensors: [Tensor], on comm: Communicator, mode: GradientSyncMode = .sum) throws {
    let params = tensors
    guard comm.size > 1, !params.isEmpty else { return }
    let scale: Float = mode == .mean ? 1 / Float(comm.size) : 1
    var start = 0
    while start < params.count {
        var end = start, total = 0
        while end < params.count && (end == start || total + params[end].count <= gradientBucketFloats) {
            total += params[end].count
            end += 1
        }
        let bucket = Tensor(uninitialized: [total])
        var offset = 0
        for p in params[start..<end] {
            let n = p.count
            if let g = p.grad { (bucket.data + offset).update(from: g.data, count: n) }
            else { (bucket.data + offset).update(repeating: 0, count: n) }
            offset += n
        }
        try comm.allReduce(bucket.data, count: total, op: .sum)
        offset = 0
        for p in params[start..<end] {
            let n = p.count, g = p.gradBuffer()
            for i in 0..<n { g[i] = bucket.data[offset + i] * scale }
            offset += n
        }
        start = end
    }
}

/// Copies `root`'s values of every tensor to all ranks (initial weights and buffers of replicated layers).
public func broadcastValues(_ tensors: [Tensor], on comm: Communicator, root: Int = 0) throws {
    guard comm.size > 1 else { return }
    let total = tensors.reduce(0) { $0 + $1.count }
    let flat = Tensor(uninitialized: [total])
    var offset = 0
    for t in tensors { (flat.data + offset).update(from: t.data, count: t.count); offset += t.count }
    try comm.broadcast(flat.data, count: total, root: root)
    offset = 0
    for t in tensors { t.data.update(from: flat.data + offset, count: t.count); offset += t.count }
}

/// Names of the tensors whose values differ across ranks (checksums compared with max/min allreduces).
public func checkReplicasAgree(_ tensors: [(String, Tensor)], on comm: Communicator) throws -> [String] {
    var sums = tensors.map { (_, t) -> Double in
        // Position-weighted checksum: catches permutations as well as changed values.
        var s = 0.0
        for i in 0..<t.count { s += Double(t.data[i]) * (1 + Double(i % 7919) * 1e-3) }
        return s
    }
    var low = sums
    try comm.allReduce(&sums, op: .max)
    try comm.allReduce(&low, op: .min)
    return zip(tensors, zip(sums, low)).filter { $0.1.0 != $0.1.1 }.map { $0.0.0 }
}
