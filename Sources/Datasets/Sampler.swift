// Seeded sampling: the order of epoch e depends only on (seed, e), so every rank of a peer group draws the
// same batches; data-parallel replicas take disjoint contiguous shares of each global batch.
import Tensors

public struct EpochSampler: Equatable {
    public let count: Int, batchSize: Int, seed: UInt64
    public let shuffle: Bool, dropLast: Bool
    /// Without `dropLast`, the fewest items a last partial batch may have to be kept (training batch norm needs two
    /// samples, and every data-parallel replica one); a smaller remainder is dropped.
    public let minLastBatch: Int

    public init(count: Int, batchSize: Int, seed: UInt64, shuffle: Bool = true, dropLast: Bool = true, minLastBatch: Int = 1) {
        precondition(batchSize > 0 && minLastBatch > 0, "EpochSampler: batch size and minLastBatch must be positive")
        self.count = count; self.batchSize = batchSize; self.seed = seed
        self.shuffle = shuffle; self.dropLast = dropLast; self.minLastBatch = minLastBatch
    }

    /// Global batches per epoch.
    public var stepsPerEpoch: Int {
        let whole = count / batchSize, rest = count % batchSize
        return whole + (!dropLast && rest > 0 && rest >= minLastBatch ? 1 : 0)
    }
    /// Items of the last partial batch that no batch carries (0 unless it is dropped).
    public var droppedPerEpoch: Int { count - min(count, stepsPerEpoch * batchSize) }

    /// The item order of `epoch` (a permutation of 0..<count, or the identity without shuffling).
    public func order(epoch: Int) -> [Int] {
        var order = Array(0..<count)
        guard shuffle else { return order }
        var g = Generator(seed: seed, stream: [0x6570_6F63, UInt64(epoch)])  // "epoc"
        for i in stride(from: count - 1, to: 0, by: -1) { order.swapAt(i, g.int(below: i + 1)) }
        return order
    }

    /// The global batches of `epoch`, each a list of item indices.
    public func batches(epoch: Int) -> [[Int]] {
        let o = order(epoch: epoch)
        return (0..<stepsPerEpoch).map { s in Array(o[(s * batchSize)..<min(count, (s + 1) * batchSize)]) }
    }

    /// Replica r's contiguous share of a batch of `size` positions: the positions it prepares.
    public static func shard(size: Int, replica r: Int, of replicas: Int) -> Range<Int> {
        precondition(replicas > 0 && r >= 0 && r < replicas, "EpochSampler.shard: replica \(r) of \(replicas)")
        return (size * r / replicas)..<(size * (r + 1) / replicas)
    }
}
