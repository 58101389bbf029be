// Collectives on the tape: a loss that reads other ranks' tensors backpropagates into them exactly as if all
// peers lived in one process.
//   allGather:    y = [x_0; …; x_{R−1}]   backward: dx_r = (Σ_ranks dy)[r]   (a reduce-scatter: each rank
//                                                                           receives only its own block)
//   allReduceSum: y = Σ_r x_r             backward: dx = Σ_ranks dy           (allreduce)
//
// The collective rule. The backward of a differentiable collective is itself a collective, so every rank must run
// it, and in the same order. Each rank's objective may reach the collectives through a graph of its own shape (a
// rank hosting only OKDDip's group leader never reads the gathered features; heterogeneous peers make different
// graphs), so neither reachability nor graph order may decide it. Therefore:
//   • every differentiable collective recorded in a step runs its backward on every rank, reached or not (with a
//     zero gradient where the local objective does not reach it: the other ranks' gradients still arrive);
//   • the tape runs nodes in reverse recording order, so the collectives' backwards run in the reverse of their
//     forward order on every rank.
// Both are the tape's `recordPinned` (Tensors/Tensor.swift). A differentiable collective is recorded whenever
// gradients are on, even if its input needs no gradient on this rank, so every rank records the same list.
// Forward passes that are not differentiated run under `withoutGradients` (or call `Tape.discardPinned()` on every
// rank).
import Tensors

/// Stacks every rank's `x` (same shape everywhere) along a new leading axis: [R, ...x.shape].
public func allGather(_ x: Tensor, on comm: Communicator) throws -> Tensor {
    let n = x.count
    let rows = try allGather(x.reshaped([1, n]), counts: [Int](repeating: 1, count: comm.size), on: comm)
    return rows.reshaped([comm.size] + x.shape)
}

/// Concatenates every rank's `x` along the leading axis; rank r's `x` has `counts[r]` rows (the other dimensions
/// agree): [Σ counts, ...x.shape.dropFirst()].
public func allGather(_ x: Tensor, counts: [Int], on comm: Communicator) throws -> Tensor {
    precondition(x.rank >= 1 && counts.count == comm.size && counts[comm.rank] == x.shape[0],
                 "allGather: rank \(comm.rank) has \(x.shape.first ?? 0) rows, counts \(counts) for \(comm.size) ranks")
    let row = x.count / max(x.shape[0], 1), total = counts.reduce(0, +)
    let out = Tensor(uninitialized: [total] + x.shape.dropFirst())
    if counts.allSatisfy({ $0 == counts[0] }) {
        try comm.allGather(x.data, count: x.count, into: out.data)
    } else {
        try comm.allGather(x.data, count: x.count, counts: counts.map { $0 * row }, into: out.data)
    }
    let n = x.count
    let blocks = counts.map { $0 * row }
    out.recordPinned(inputs: [x]) { out in
        // Each rank's dy holds gradients for every rank's rows: their sum over ranks, of our own rows only (a
        // reduce-scatter: each rank receives its block, not the whole gathered gradient).
        let mine = Tensor(zeros: [n])
        do { try comm.reduceScatter(out.grad!.data, counts: blocks, into: mine.data, op: .sum) } catch {
            comm.abort("allGather backward: \(error)", code: 1)
        }
        guard x.requiresGrad else { return }
        let gx = x.gradBuffer(), m = mine.data
        for i in 0..<n { gx[i] += m[i] }
    }
    return out
}

/// The elementwise sum of every rank's `x`.
public func allReduceSum(_ x: Tensor, on comm: Communicator) throws -> Tensor {
    let out = x.copy()
    try comm.allReduce(out.data, count: out.count, op: .sum)
    let n = x.count
    out.recordPinned(inputs: [x]) { out in
        let g = out.grad!.copy()
        do { try comm.allReduce(g.data, count: n, op: .sum) } catch {
            comm.abort("allReduceSum backward: \(error)", code: 1)
        }
        guard x.requiresGrad else { return }
        let gx = x.gradBuffer()
        for i in 0..<n { gx[i] += g.data[i] }
    }
    return out
}
