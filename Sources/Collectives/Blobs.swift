// Whole byte strings (files) between ranks, over the float collectives: gathered to one rank, sent from one
// rank to each, or broadcast, whatever their lengths. Used where only one rank's disk holds the files: a run's
// checkpoint lives on rank 0's node, whether or not the nodes share a file system.
import Foundation

extension Communicator {
    /// Each rank's bytes in rank order on `root`, [] on the other ranks. Every rank calls it.
    public func gather(bytes: Data, root: Int = 0) throws -> [Data] {
        var slots = [Int64](repeating: 0, count: size)
        slots[rank] = Int64(bytes.count)
        try allReduce(&slots, op: .sum)
        let lengths = slots.map { Int($0) }
        let buffers = (0..<size).map { FloatBlob(length: lengths[$0]) }
        defer { buffers.forEach { $0.free() } }
        if rank != root { buffers[rank].fill(from: bytes) }
        try inRounds(root: root, lengths: lengths) { peers, agreed in
            if rank == root {
                try exchange(sends: [], receives: peers.map { ($0, buffers[$0].pointer, buffers[$0].floats) }, agreed: agreed)
            } else {
                let mine = peers.contains(rank) ? [(root, UnsafePointer(buffers[rank].pointer), buffers[rank].floats)] : []
                try exchange(sends: mine, receives: [], agreed: agreed)
            }
        }
        guard rank == root else { return [] }
        return (0..<size).map { $0 == root ? bytes : buffers[$0].data }
    }

    /// Root's `parts[r]` on each rank r (only root's `parts` is read: one entry per rank). Every rank calls it.
    public func scatter(_ parts: [Data], root: Int = 0) throws -> Data {
        precondition(rank != root || parts.count == size, "scatter: root gives one part per rank (\(size)), got \(parts.count)")
        var slots = [Int64](repeating: 0, count: size)
        if rank == root { for r in 0..<size { slots[r] = Int64(parts[r].count) } }
        try allReduce(&slots, op: .sum)
        let lengths = slots.map { Int($0) }
        let buffers = (0..<size).map { r in FloatBlob(length: rank == root || r == rank ? lengths[r] : 0) }
        defer { buffers.forEach { $0.free() } }
        if rank == root { for r in 0..<size where r != root { buffers[r].fill(from: parts[r]) } }
        try inRounds(root: root, lengths: lengths) { peers, agreed in
            if rank == root {
                try exchange(sends: peers.map { ($0, UnsafePointer(buffers[$0].pointer), buffers[$0].floats) }, receives: [], agreed: agreed)
            } else {
                let mine = peers.contains(rank) ? [(root, buffers[rank].pointer, buffers[rank].floats)] : []
                try exchange(sends: [], receives: mine, agreed: agreed)
            }
        }
        return rank == root ? parts[root] : buffers[rank].data
    }

    /// Root's bytes on every rank, of any length (only root's `data` is read). Every rank calls it.
    public func broadcast(data: Data, root: Int = 0) throws -> Data {
        var length = [Int64(rank == root ? data.count : 0)]
        try allReduce(&length, op: .sum)
        var raw = rank == root ? [UInt8](data) : [UInt8](repeating: 0, count: Int(length[0]))
        if length[0] > 0 { try broadcast(bytes: &raw, root: root) }
        return Data(raw)
    }

    /// Runs `body` once per round of at most 64 of the ranks other than root with a non-empty part (exchange's
    /// limit), with those ranks and the round's float count; every rank runs every round.
    private func inRounds(root: Int, lengths: [Int], _ body: ([Int], Int) throws -> Void) throws {
        let others = (0..<size).filter { $0 != root && lengths[$0] > 0 }
        for start in stride(from: 0, to: others.count, by: 64) {
            let peers = Array(others[start..<min(start + 64, others.count)])
            try body(peers, peers.reduce(0) { $0 + FloatBlob.floats(lengths[$1]) })
        }
    }
}

/// Bytes in a float buffer (the collectives move floats), zero-padded to a whole float.
private struct FloatBlob {
    let length: Int, pointer: UnsafeMutablePointer<Float>
    var floats: Int { FloatBlob.floats(length) }
    static func floats(_ bytes: Int) -> Int { (bytes + 3) / 4 }

    init(length: Int) {
        self.length = length
        pointer = .allocate(capacity: max(1, FloatBlob.floats(length)))
        pointer.initialize(repeating: 0, count: max(1, FloatBlob.floats(length)))
    }
    func fill(from data: Data) {
        precondition(data.count == length)
        data.withUnsafeBytes { src in if length > 0 { UnsafeMutableRawPointer(pointer).copyMemory(from: src.baseAddress!, byteCount: length) } }
    }
    var data: Data { Data(bytes: UnsafeRawPointer(pointer), count: length) }
    func free() { pointer.deallocate() }
}
