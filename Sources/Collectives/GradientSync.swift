// Gradient synchronisation for replicated parameters (shared stems, data-parallel replicas) and checks that
// replicas have not drifted apart.
import Layers
import Tensors

public enum GradientSyncMode { case sum, mean }

/// Floats per allreduce bucket (4 MiB).
public nonisolated(unsafe) var gradientBucketFloats = 1 << 20

/// Sums (or averages) the gradients of `parameters` across `comm`, packing many small tensors into a few
/// bucketed allreduces. A parameter without a gradient contributes zeros (and receives the others' sum), so
/// every rank issues the same calls.
public func syncGradients(_ parameters: [(String, Parameter)], on comm: Communicator, mode: GradientSyncMode = .sum) throws {
    let params = parameters.map { $0.1 }.filter { $0.isTrainable }
    guard comm.size > 1, !params.isEmpty else { return }
    let scale: Float = mode == .mean ? 1 / Float(comm.size) : 1
    var start = 0
    while start < params.count {
        var end = start, total = 0
        while end < params.count && (end == start || total + params[end].value.count <= gradientBucketFloats) {
            total += params[end].value.count
            end += 1
        }
        let bucket = Tensor(uninitialized: [total])
        var offset = 0
        for p in params[start..<end] {
            let n = p.value.count
            if let g = p.value.grad { (bucket.data + offset).update(from: g.data, count: n) }
            else { (bucket.data + offset).update(repeating: 0, count: n) }
            offset += n
        }
        try comm.allReduce(bucket.data, count: total, op: .sum)
        offset = 0
        for p in params[start..<end] {
            let n = p.value.count, g = p.value.gradBuffer()
            for i in 0..<n { g[i] = bucket.data[offset + i] * scale }
            offset += n
        }
        start = end
    }
}

/// Copies `root`'s values of every parameter and buffer to all ranks (initial weights of replicated layers).
public func broadcastParameters(_ parameters: [(String, Parameter)], on comm: Communicator, root: Int = 0) throws {
    guard comm.size > 1 else { return }
    let total = parameters.reduce(0) { $0 + $1.1.value.count }
    let flat = Tensor(uninitialized: [total])
    var offset = 0
    for (_, p) in parameters { (flat.data + offset).update(from: p.value.data, count: p.value.count); offset += p.value.count }
    try comm.broadcast(flat.data, count: total, root: root)
    offset = 0
    for (_, p) in parameters { p.value.data.update(from: flat.data + offset, count: p.value.count); offset += p.value.count }
}

/// Names of the parameters whose values differ across ranks (checksums compared with max/min allreduces).
public func checkReplicasAgree(_ parameters: [(String, Parameter)], on comm: Communicator) throws -> [String] {
    var sums = parameters.map { (_, p) -> Double in
        // Position-weighted checksum: catches permutations as well as changed values.
        var s = 0.0
        for i in 0..<p.value.count { s += Double(p.value.data[i]) * (1 + Double(i % 7919) * 1e-3) }
        return s
    }
    var low = sums
    try comm.allReduce(&sums, op: .max)
    try comm.allReduce(&low, op: .min)
    return zip(parameters, zip(sums, low)).filter { $0.1.0 != $0.1.1 }.map { $0.0.0 }
}
