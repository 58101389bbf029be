// The ring exchange: in a cycle of peers 0 → 1 → … → P−1 → 0, each peer receives its predecessor's tensor. With
// peer p on rank p mod R, peer p's successor lives on the next rank (peer P−1's, peer 0, on rank 0), so a rank
// sends at most two messages and receives at most two, whatever P: the cost per rank stays flat as the cohort
// grows (an allgather would ship every peer's tensor to every rank). Values only: nothing is recorded on the tape.
import Tensors

extension PeerPlacement {
    /// For each local peer k (in `localPeers` order), peer (k − 1 mod P)'s tensor. `local` holds the local peers'
    /// tensors; `shapes[p]` is peer p's shape, known to every rank. Every rank of `comm` calls it.
    public func ringPredecessors(_ local: [Tensor], shapes: [[Int]], on comm: Communicator) throws -> [Tensor] {
        precondition(local.count == localPeers.count && shapes.count == peers,
                     "ringPredecessors: \(local.count) tensors for \(localPeers.count) local peers, \(shapes.count) shapes for \(peers) peers")
        for (k, p) in localPeers.enumerated() where local[k].shape != shapes[p] {
            preconditionFailure("ringPredecessors: peer \(p)'s tensor is \(local[k].shape), its declared shape \(shapes[p])")
        }
        let mine = Dictionary(uniqueKeysWithValues: zip(localPeers, local.map { $0.detached() }))
        func predecessor(_ p: Int) -> Int { (p + peers - 1) % peers }
        // What this rank sends: each local peer's tensor to its successor's host, grouped by host in successor order
        // (the order the receiver lists its own peers in).
        var outgoing: [Int: [Int]] = [:]
        for p in localPeers { outgoing[host(of: (p + 1) % peers), default: []].append(p) }
        var incoming: [Int: [Int]] = [:]  // host → the predecessors it sends, in our local order
        for k in localPeers { incoming[host(of: predecessor(k)), default: []].append(predecessor(k)) }
        var received: [Int: Tensor] = [:]
        for q in incoming[rank] ?? [] { received[q] = mine[q]!.copy() }
        var packed: [(rank: Int, tensor: Tensor)] = [], buffers: [(rank: Int, tensor: Tensor, peers: [Int])] = []
        for (dest, list) in outgoing.sorted(by: { $0.key < $1.key }) where dest != rank {
            let ordered = list.sorted { ($0 + 1) % peers < ($1 + 1) % peers }
            packed.append((dest, concat(ordered.map { mine[$0]!.reshaped([mine[$0]!.count]) }, axis: 0)))
        }
        for (src, list) in incoming.sorted(by: { $0.key < $1.key }) where src != rank {
            let n = list.reduce(0) { $0 + shapes[$1].reduce(1, *) }
            buffers.append((src, Tensor(uninitialized: [n]), list))
        }
        let total = shapes.reduce(0) { $0 + $1.reduce(1, *) }
        if ranks > 1 {
            try comm.exchange(sends: packed.map { ($0.rank, UnsafePointer($0.tensor.data), $0.tensor.count) },
                              receives: buffers.map { ($0.rank, $0.tensor.data, $0.tensor.count) }, agreed: total)
        }
        for b in buffers {
            var offset = 0
            for q in b.peers {
                let n = shapes[q].reduce(1, *)
                received[q] = b.tensor.slice(axis: 0, offset..<(offset + n)).reshaped(shapes[q])
                offset += n
            }
        }
        return localPeers.map { received[predecessor($0)]! }
    }
}
