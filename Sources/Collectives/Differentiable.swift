// Collectives on the tape: a loss that reads other ranks' tensors backpropagates into them exactly as if all
// peers lived in one process. Every rank must run backward over graphs of the same shape, so the mirror
// collectives of the backward pass meet in the same order.
//   allGather:    y = [x_0; …; x_{R−1}]   backward: dx_r = (Σ_ranks dy)[r]   (reduce-scatter)
//   allReduceSum: y = Σ_r x_r             backward: dx = Σ_ranks dy           (allreduce)
import Tensors

/// Stacks every rank's `x` (same shape everywhere) along a new leading axis: [R, ...x.shape].
public func allGather(_ x: Tensor, on comm: Communicator) throws -> Tensor {
    let n = x.count, R = comm.size
    let out = Tensor(uninitialized: [R] + x.shape)
    try comm.allGather(x.data, count: n, into: out.data)
    out.record(inputs: [x]) { out in
        // Each rank's dy holds gradients for every rank's slice; sum them, keep our own slice.
        let g = out.grad!.copy()
        do { try comm.allReduce(g.data, count: g.count, op: .sum) } catch {
            comm.abort("allGather backward: \(error)", code: 1)
        }
        let gx = x.gradBuffer(), mine = g.data + comm.rank * n
        for i in 0..<n { gx[i] += mine[i] }
    }
    return out
}

/// The elementwise sum of every rank's `x`.
public func allReduceSum(_ x: Tensor, on comm: Communicator) throws -> Tensor {
    let out = x.copy()
    try comm.allReduce(out.data, count: out.count, op: .sum)
    let n = x.count
    out.record(inputs: [x]) { out in
        let g = out.grad!.copy()
        do { try comm.allReduce(g.data, count: n, op: .sum) } catch {
            comm.abort("allReduceSum backward: \(error)", code: 1)
        }
        let gx = x.gradBuffer()
        for i in 0..<n { gx[i] += g.data[i] }
    }
    return out
}
