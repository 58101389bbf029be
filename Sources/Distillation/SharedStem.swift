// The shared stem: the layers the peers of a multi-branch method (ONE, OKDDip, PCL) share, replicated on every
// rank that hosts a branch. This type is its one owner:
//   • which model runs it (the first local peer's) and its names ("stem." + the state-dict name);
//   • its initial weights: peer 0's on every rank;
//   • batch-norm running statistics: when peers see views of their own, the stem runs once per distinct view
//     from the same starting statistics, and the result is the mean of the updates over every view of the
//     cohort, within a rank and across ranks (so it does not depend on placement);
//   • the copies into each local peer, so every peer's checkpoint is a complete model;
//   • the check that the replicas have not drifted apart.
// Its gradients are summed across ranks with the other replicated parameters (Distillation/Method.swift).
import Collectives
import Layers
import Models
import Tensors

public final class SharedStem {
    /// The local peers' models; the stem of the first one runs.
    let models: [Classifier]
    let comm: Communicator
    /// Whether every peer runs it on a view of its own (statistics are then averaged over views).
    public let perPeerViews: Bool
    /// Distinct views the last forward pass ran on this rank.
    private var localViews = 1

    /// `peer0` is a model built as peer 0 when this rank does not host it (its stem is the starting point).
    public init(models: [Classifier], comm: Communicator, perPeerViews: Bool, peer0: Classifier?) {
        self.models = models; self.comm = comm; self.perPeerViews = perPeerViews
        if let p = peer0 { models[0].copyStem(from: p) }
    }

    /// The model whose stem runs.
    public var runner: Classifier { models[0] }
    /// Parameters and buffers under their checkpoint-independent names, "stem.<state-dict name>".
    public var state: [(String, Parameter)] { runner.stemState().map { ("stem." + $0.0, $0.1) } }
    public var parameters: [(String, Parameter)] { state.filter { $0.1.isTrainable } }
    /// Batch-norm running statistics.
    var buffers: [Tensor] { runner.stemState().filter { !$0.1.isTrainable }.map { $0.1.value } }

    /// Whether a peer model's state-dict name belongs to the shared stem.
    public func owns(_ name: String) -> Bool { runner.isStem(name) }

    /// The stem's output for each input; runs once per distinct input tensor. With several, the running
    /// statistics become the mean of the updates each makes from the same starting point.
    public func callAsFunction(_ inputs: [Tensor]) -> [Tensor] {
        var distinct: [ObjectIdentifier] = []
        for x in inputs where !distinct.contains(ObjectIdentifier(x)) { distinct.append(ObjectIdentifier(x)) }
        localViews = distinct.count
        let buffers = self.buffers
        let start = distinct.count > 1 ? buffers.map { $0.copy() } : []
        let sums = distinct.count > 1 ? buffers.map { Tensor(zeros: $0.shape) } : []
        var outputs: [ObjectIdentifier: Tensor] = [:]
        let result = inputs.map { x -> Tensor in
            if let h = outputs[ObjectIdentifier(x)] { return h }
            for (b, s) in zip(buffers, start) { b.data.update(from: s.data, count: b.count) }
            let h = runner.stem(x)
            for (sum, b) in zip(sums, buffers) { accumulate(sum, b) }
            outputs[ObjectIdentifier(x)] = h
            return h
        }
        for (b, sum) in zip(buffers, sums) { scale(b, from: sum, by: 1 / Float(distinct.count)) }
        return result
    }

    /// After a training step with per-peer views on several ranks: the mean of the statistics over every view of
    /// the cohort (each rank's mean weighted by its number of views). Every rank must call it.
    public func synchronizeStatistics() throws {
        guard perPeerViews && comm.size > 1 else { return }
        let buffers = self.buffers, total = buffers.reduce(0) { $0 + $1.count }
        let flat = Tensor(uninitialized: [total + 1])
        var offset = 0
        for b in buffers { scale(flat, at: offset, from: b, by: Float(localViews)); offset += b.count }
        flat.data[total] = Float(localViews)
        try comm.allReduce(flat.data, count: total + 1, op: .sum)
        let views = flat.data[total]
        offset = 0
        for b in buffers { for i in 0..<b.count { b.data[i] = flat.data[offset + i] / views }; offset += b.count }
    }

    /// Copies the stem into every local model, so each peer's weights form a complete model.
    public func copyIntoPeers() { for m in models.dropFirst() { m.copyStem(from: runner) } }

    /// Names of the stem tensors, and of `others`, whose values differ across ranks.
    public func driftedReplicas(_ others: [(String, Parameter)]) throws -> [String] {
        guard comm.size > 1 else { return [] }
        return try checkReplicasAgree((state + others).map { ($0.0, $0.1.value) }, on: comm)
    }

    private func accumulate(_ sum: Tensor, _ b: Tensor) { for i in 0..<b.count { sum.data[i] += b.data[i] } }
    private func scale(_ dst: Tensor, at offset: Int = 0, from src: Tensor, by s: Float) {
        for i in 0..<src.count { dst.data[offset + i] = src.data[i] * s }
    }
}
