// Epoch iteration with the next batch prepared on a background thread while the current one trains.
import Dispatch
import Foundation
import Tensors

public final class BatchLoader: Sequence, IteratorProtocol {
    public let data: Dataset
    public let sampler: EpochSampler
    public let epoch: Int
    public let augmentation: Augmentation
    public let peers: [Int]
    public let replica: Int, replicas: Int
    private let batches: [[Int]]
    private var step = 0
    private var pending: (step: Int, semaphore: DispatchSemaphore, box: BatchBox)?
    private let queue = DispatchQueue(label: "swift-distill.loader")

    final class BatchBox: @unchecked Sendable { var batch: Batch? }

    /// Iterates `epoch` of `sampler` over `data`, yielding this replica's share of each global batch with one
    /// augmented view per peer in `peers`.
    public init(data: Dataset, sampler: EpochSampler, epoch: Int, augmentation: Augmentation, peers: [Int] = [0],
                replica: Int = 0, replicas: Int = 1, startStep: Int = 0) {
        precondition(sampler.count == data.count, "BatchLoader: sampler covers \(sampler.count) items, dataset has \(data.count)")
        self.data = data; self.sampler = sampler; self.epoch = epoch; self.augmentation = augmentation
        self.peers = peers; self.replica = replica; self.replicas = replicas
        batches = sampler.batches(epoch: epoch)
        step = startStep
        prefetch(step)
    }

    public var stepsPerEpoch: Int { batches.count }

    func build(_ s: Int) -> Batch {
        let global = batches[s]
        let share = EpochSampler.shard(size: global.count, replica: replica, of: replicas)
        return makeBatch(data, items: Array(global[share]), positions: Array(share), globalCount: global.count, augmentation: augmentation,
                         seed: sampler.seed, epoch: epoch, step: s, peers: peers)
    }

    private func prefetch(_ s: Int) {
        guard s < batches.count else { pending = nil; return }
        let semaphore = DispatchSemaphore(value: 0), box = BatchBox()
        queue.async { [self] in
            box.batch = build(s)
            semaphore.signal()
        }
        pending = (s, semaphore, box)
    }

    public func next() -> Batch? {
        guard let p = pending else { return nil }
        p.semaphore.wait()
        step = p.step + 1
        prefetch(step)
        return p.box.batch
    }
}
