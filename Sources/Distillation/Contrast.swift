// Pieces of memory-bank contrastive learning shared by MCL-OKD (MCL.swift) and CRD (CRD.swift): a bank with one
// unit row per training image updated by momentum, an L2-normalised linear embedding head, negatives drawn from
// other classes (RepDistiller's 'exact' CIFAR100InstanceSample), and the NCE loss over a bank's scores.
import Foundation
import Layers
import Tensors

/// One branch's memory bank: a unit row per training image ("memory", a buffer saved with the branch).
public final class MemoryBank: Module {
    public let memory: Parameter
    public var isTraining = true
    public init(rows: Int, dim: Int, generator g: inout Generator) {
        let s = 1 / (Float(dim) / 3).squareRoot()
        memory = Parameter(Tensor.uniform([rows, dim], low: -s, high: s, generator: &g), trainable: false)
    }
    public var ownTensors: [(String, Parameter)] { [("memory", memory)] }

    /// Rows `idx` [N·(K+1)] as a constant [N, K+1, D] tensor.
    func rows(_ idx: [Int], samples n: Int) -> Tensor {
        let d = memory.value.shape[1], out = Tensor(uninitialized: [n, idx.count / n, d])
        for (r, i) in idx.enumerated() { (out.data + r * d).update(from: memory.value.data + i * d, count: d) }
        return out
    }

    /// M[t] ← normalize(m·M[t] + (1 − m)·e) for each item t and its embedding row.
    func update(items: [Int], embeddings e: Tensor, momentum m: Float) {
        let d = memory.value.shape[1]
        for (b, t) in items.enumerated() {
            let row = memory.value.data + t * d, src = e.data + b * d
            var norm: Float = 0
            for c in 0..<d { row[c] = m * row[c] + (1 - m) * src[c]; norm += row[c] * row[c] }
            let inv = 1 / norm.squareRoot()
            for c in 0..<d { row[c] *= inv }
        }
    }
}

/// The embedding head: a linear map of the pooled final features, L2-normalised (state-dict name "linear").
public final class EmbeddingHead: Module {
    public let linear: Linear
    public var isTraining = true
    public init(_ inFeatures: Int, _ dim: Int, generator g: inout Generator) { linear = Linear(inFeatures, dim, generator: &g) }
    public var children: [(String, Module)] { [("linear", linear)] }
    public func callAsFunction(_ pooled: Tensor) -> Tensor { linear(pooled).l2Normalized(axis: 1) }
}

/// The NCE contrastive term of scores s = ⟨M[idx], e⟩/τ [N, K+1] (column 0 the positive) for a training set of
/// `dataCount` images: P = exp(s)/Z,
///   ℓ = −(1/N) Σ_b [ log(P_b0 / (P_b0 + K/n + ε)) + Σ_{k≥1} log((K/n) / (P_bk + K/n + ε)) ],  ε = 1e-7.
/// Z is `z` when given (CRD fixes it at the first step), else recomputed from these scores, mean(exp s)·n,
/// detached (MCL-OKD recomputes it for every term).
public func memoryContrastLoss(_ scores: Tensor, dataCount: Int, z: Float? = nil) -> Tensor {
    let n = scores.shape[0], k = scores.shape[1] - 1
    let s = scores.exp()
    let p = z.map { s * (1 / $0) } ?? s / (s.mean().detached() * Float(dataCount))
    let c = Float(k) / Float(dataCount)
    let pos = p.slice(axis: 1, 0..<1), neg = p.slice(axis: 1, 1..<(k + 1))
    let logD1 = (pos / (pos + (c + 1e-7))).log()
    let logD0 = ((neg + (c + 1e-7)).log() * -1) + Foundation.log(c)
    return (logD1.sum() + logD0.sum()) * (-1 / Float(n))
}

/// Training positions grouped by class, for drawing negatives of other classes than a sample's.
public struct ClassNegatives {
    /// `byClass[classStart[c]..<classStart[c + 1]]` are class c's positions.
    let byClass: [Int], classStart: [Int]
    public let count: Int

    public init(trainLabels: [Int], classes: Int) {
        var counts = [Int](repeating: 0, count: classes + 1)
        for y in trainLabels { counts[y + 1] += 1 }
        for c in 0..<classes { counts[c + 1] += counts[c] }
        classStart = counts
        var fill = counts, order = [Int](repeating: 0, count: trainLabels.count)
        for (t, y) in trainLabels.enumerated() { order[fill[y]] = t; fill[y] += 1 }
        byClass = order; count = trainLabels.count
    }

    /// Appends `k` positions of classes other than `y`: without replacement unless `k` exceeds them.
    public func draw(_ k: Int, otherThan y: Int, into idx: inout [Int], generator g: inout Generator) {
        let own = classStart[y + 1] - classStart[y], pool = count - own
        precondition(pool > 0, "negatives: every training image has class \(y), so there are none")
        func one() -> Int { let r = g.int(below: pool); return byClass[r < classStart[y] ? r : r + own] }
        if k > pool {
            for _ in 0..<k { idx.append(one()) }
        } else {
            var seen = Set<Int>()
            while seen.count < k { let item = one(); if seen.insert(item).inserted { idx.append(item) } }
        }
    }
}
