// Peer placement: P peers over the R ranks of a peer communicator, rank r hosting the peers p with p mod R == r.
// R = 1 hosts every peer in one process; R = P puts one peer on each rank. Methods are written against this,
// never against "rank == peer".
import Tensors

public struct PeerPlacement: Equatable {
    public let peers: Int, ranks: Int, rank: Int

    public init(peers: Int, ranks: Int, rank: Int) throws {
        guard peers > 0 else { throw CollectiveError.placement("a cohort needs at least one peer, got \(peers)") }
        guard ranks > 0, rank >= 0, rank < ranks else { throw CollectiveError.placement("rank \(rank) of \(ranks) is invalid") }
        guard peers % ranks == 0 else {
            throw CollectiveError.placement("\(peers) peers cannot be placed on \(ranks) ranks: the number of ranks must divide the number of peers (use 1 rank, or \(peers), or another divisor: \((1...peers).filter { peers % $0 == 0 }.map(String.init).joined(separator: ", ")))")
        }
        self.peers = peers; self.ranks = ranks; self.rank = rank
    }

    /// Peers this rank hosts, in increasing order.
    public var localPeers: [Int] { Array(stride(from: rank, to: peers, by: ranks)) }
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
        let all = ranks == 1 ? stacked.reshaped([1] + stacked.shape) : try allGather(stacked, on: comm)  // [R, L, ...]
        let shape = Array(local[0].shape)
        return (0..<peers).map { p in
            all.slice(axis: 0, host(of: p)..<(host(of: p) + 1)).slice(axis: 1, localIndex(of: p)..<(localIndex(of: p) + 1))
                .reshaped(shape)
        }
    }
}
