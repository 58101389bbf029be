// Peer placement: P peers over the R ranks of a peer communicator, rank r hosting the peers p with p mod R == r.
// R = 1 hosts every peer in one process; R = P puts one peer on each rank. Methods are written against this,
// never against "rank == peer".
import Tensors

public struct PeerPlacement: Equatable {
    public let peers: Int, ranks: Int, rank: Int

    public init(peers: Int, ranks: Int, rank: Int) throws {
        guard peers > 0 else { throw CollectiveError.placement("a cohort needs at least one peer, got \(peers)") }
        guard ranks > 0, rank >= 0, rank < ranks else { throw CollectiveError.placement("rank \(rank) of \(ranks) is invalid") }
        guard ranks <= peers else {
            throw CollectiveError.placement("\(peers) peers cannot be placed on \(ranks) ranks: every rank hosts at least one peer, so run with 1 to \(peers) ranks")
        }
        self.peers = peers; self.ranks = ranks; self.rank = rank
    }

    /// Peers this rank hosts, in increasing order.
    public var localPeers: [Int] { Array(stride(from: rank, to: peers, by: ranks)) }
    /// How many peers rank r hosts (they differ by at most one when R does not divide P).
    public func peerCount(onRank r: Int) -> Int { (peers - 1 - r) / ranks + 1 }
    /// The rank hosting peer p.
    public func host(of peer: Int) -> Int { peer % ranks }
    /// Position of peer p among its host's local peers.
    public func localIndex(of peer: Int) -> Int { peer / ranks }

    /// Every peer's tensor in peer order, from this rank's local ones (one per local peer, in `localPeers`
    /// order, all the same shape). On the tape: gradients flow back to the hosting ranks.
    public func gatherPeers(_ local: [Tensor], on comm: Communicator) throws -> [Tensor] {
        precondition(local.count == localPeers.count, "gatherPeers: \(local.count) tensors for \(localPeers.count) local peers")
        precondition(comm.size == ranks, "gatherPeers: communicator has \(comm.size) ranks, placement \(ranks)")
        let stacked = stack(local)  // [L, ...]
        let counts = (0..<ranks).map(peerCount(onRank:))
        let all = ranks == 1 ? stacked : try allGather(stacked, counts: counts, on: comm)  // [P in rank order, ...]
        var start = [Int](repeating: 0, count: ranks)
        for r in 1..<max(ranks, 1) { start[r] = start[r - 1] + counts[r - 1] }
        let shape = Array(local[0].shape)
        return (0..<peers).map { p in
            let row = start[host(of: p)] + localIndex(of: p)
            return all.slice(axis: 0, row..<(row + 1)).reshaped(shape)
        }
    }
}
