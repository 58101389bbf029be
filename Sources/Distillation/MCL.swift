// Yang, Zhou, Xu & An 2021, "Multi-View Contrastive Learning for Online Knowledge Distillation" (MCL-OKD).
//
// P branches share conv1·bn1·layer1 (the stem ends after stage 1); each keeps layer2, layer3 and its classifier.
// Branch i has an embedding head e_i = normalize(W_i · pool(f_i) + b_i) ∈ ℝ¹²⁸ and a memory bank M_i with one
// unit row per training image, M_i[t] ← normalize(½·M_i[t] + ½·e_i) after every step (momentum 0.5).
// For a batch with items t and, per sample, K negatives n_1..n_K drawn from other classes, idx = [t, n_1..n_K]:
//   s_ij = exp(⟨M_i[idx], e_j⟩ / τ) ∈ ℝ^{N×(K+1)},  P_ij = s_ij / Z_ij,  Z_ij = mean(s_ij)·n_data (detached),
//   ℓ_ij = −(1/N) Σ_b [ log(P_b0 / (P_b0 + K/n_data + ε)) + Σ_{k≥1} log((K/n_data) / (P_bk + K/n_data + ε)) ],
//   L = Σ_i CE(y, z_i) + T²·KL(softmax(z̄/T) ‖ softmax(z_{P−1}/T)) + 0.025·Σ_{i≠j} ℓ_ij,
// with z̄ the detached mean of every branch's logits, T = 3, τ = 0.1, ε = 1e-7, and only the last branch learning
// from z̄. Inference: each branch and the mean-logit ensemble. Followed: winycg/MCL-OKD@c15a0fd
// `main_cifar_mcl_okd.py`, `mcl/criterion.py` (ContrastLoss, Embed), `mcl/memory.py` (ContrastMemory; its Z is
// recomputed for every term) and `dataset/cifar100.py` (CIFAR100InstanceSample, 'exact' negatives).
// Ours: the negatives come from a stream keyed by (seed, epoch, step, position in the batch), so every rank and
// every placement draws the same ones; K defaults to 256 (the README's CIFAR commands; the code default is 16384).
// Distributed: one branch per rank. The stem is replicated (gradients summed); [z_j ‖ e_j] travel in one
// differentiable allgather; host(i) owns M_i and computes every ℓ_ij that reads it (Σ_{j≠i} ℓ_ij), so each ordered
// pair is computed once and its gradient reaches e_j through the allgather's backward; bank updates are local.
// With data-parallel replicas (each branch on D ranks, each taking a slice of the batch): the negatives are keyed
// by the sample's position in the whole batch, every Z_ij is the whole batch's mean (one allreduce of its sum),
// and every replica updates its banks with the whole batch's embeddings (gathered), so the replicas compute what
// one rank per branch computes.
import Collectives
import Foundation
import Layers
import Models
import Tensors

public final class MCL: DistillationMethod {
    public static let spec = MethodSpec(
        name: "mcl", officialEvaluation: "the best of the branches and the ensemble, at the best epoch (test() returns the maximum)", summary: "Yang et al. 2021: branches on a conv1..layer1 stem, contrastive learning between every pair of branches' embeddings and memory banks",
        keys: [.temperature(3),
               OptionKey("nce_k", .int(min: 1), default: .int(256), help: "negatives per sample, drawn from other classes"),
               OptionKey("nce_t", .number(min: 0, max: nil, openMin: true), default: .number(0.1), help: "temperature τ of the contrastive scores"),
               OptionKey("nce_momentum", .number(min: 0, max: 1, openMin: false), default: .number(0.5), help: "memory bank momentum"),
               OptionKey("embedding_dim", .int(min: 1), default: .int(128), help: "dimension of the embedding heads and banks"),
               OptionKey("contrast_weight", .number(min: 0, max: nil, openMin: false), default: .number(0.025), help: "weight β of Σ ℓ_ij"),
               OptionKey("kd_weight", .number(min: 0, max: nil, openMin: false), default: .number(1), help: "weight α of the last branch's KL to the mean logits")], dataParallel: true) { c, _ in
            guard c.peers >= 2 else { throw MethodError("mcl needs at least 2 branches (models), got \(c.peers)") }
            guard Set(c.trainLabels).count >= 2 else {
                throw MethodError("mcl needs a labelled training set of at least two classes (its negatives are drawn from other classes)")
            }
            let features = try c.channels(ofPeer: 0).features, dim = c.options.int("embedding_dim")
            var heads: [EmbeddingHead] = [], banks: [MemoryBank] = []
            for p in c.placement.localPeers {
                var g = Generator(seed: c.seed, stream: [0x6D63_6C00, UInt64(p)])  // "mcl": placement-free init
                heads.append(EmbeddingHead(features, dim, generator: &g))
                banks.append(MemoryBank(rows: c.trainLabels.count, dim: dim, generator: &g))
            }
            return MCL(trainLabels: c.trainLabels, classes: c.classes,
                       heads: heads, banks: banks, seed: c.seed, temperature: c.options.number("temperature"),
                       negatives: c.options.int("nce_k"), tau: c.options.number("nce_t"), momentum: c.options.number("nce_momentum"),
                       contrastWeight: c.options.number("contrast_weight"), kdWeight: c.options.number("kd_weight"))
        }

    public let name = "mcl"
    public let temperature: Float, negatives: Int, tau: Float, momentum: Float, contrastWeight: Float, kdWeight: Float
    let heads: [EmbeddingHead], banks: [MemoryBank]
    let seed: UInt64, dataCount: Int
    let negativesPool: ClassNegatives
    /// The last step's items and local embeddings, for the bank update after the optimiser step.
    private var pending: (items: [Int], embeddings: [Tensor])?

    /// `heads[k]` and `banks[k]`: local peer k's.
    public init(trainLabels: [Int], classes: Int, heads: [EmbeddingHead], banks: [MemoryBank],
                seed: UInt64, temperature: Float = 3, negatives: Int = 256, tau: Float = 0.1, momentum: Float = 0.5,
                contrastWeight: Float = 0.025, kdWeight: Float = 1) {
        self.heads = heads; self.banks = banks; self.seed = seed
        self.temperature = temperature; self.negatives = negatives; self.tau = tau; self.momentum = momentum
        self.contrastWeight = contrastWeight; self.kdWeight = kdWeight
        dataCount = trainLabels.count
        negativesPool = ClassNegatives(trainLabels: trainLabels, classes: classes)
    }

    public var sharesStem: Bool { true }
    public var stemEnd: Int? { 1 }
    public var teacherName: String? { "ensemble" }
    public var termNames: [String] { ["ce", "kl", "contrast"] }
    /// Branch k's embedding head trains with it; its memory bank is saved beside it.
    public func peerModule(_ k: Int) -> Module? { heads[k] }
    public func peerExtraState(_ k: Int) -> Module? { banks[k] }

    /// idx [N·(K+1)]: for each sample its item, then K items of other classes, without replacement unless K
    /// exceeds them; the same on every rank (a stream per (seed, epoch, step, position in the whole batch);
    /// `positions` empty: 0..<N).
    public func contrastIndices(items: [Int], labels: [Int], epoch: Int, step: Int, positions: [Int] = []) -> [Int] {
        var idx: [Int] = []
        idx.reserveCapacity(items.count * (negatives + 1))
        for (b, (t, y)) in zip(items, labels).enumerated() {
            let position = positions.isEmpty ? b : positions[b]
            var g = Generator(seed: seed, stream: [0x6E65_6773, UInt64(epoch), UInt64(step), UInt64(position)])  // "negs"
            idx.append(t)
            negativesPool.draw(negatives, otherThan: y, into: &idx, generator: &g)
        }
        return idx
    }

    /// ℓ_ij for bank i (local branch k) against embedding e_j [N, D]; with replicas, Z from the whole batch.
    func pairTerm(bankRows: Tensor, _ e: Tensor, replicas: Communicator?) throws -> Tensor {
        let scores = batchedMatVec(bankRows, e) * (1 / tau)
        guard let comm = replicas else { return memoryContrastLoss(scores, dataCount: dataCount) }
        let s = scores.detached().exp()
        var sum = [s.sum().array.reduce(0) { $0 + Double($1) }, Double(s.count)]
        try comm.allReduce(&sum, op: .sum)
        return memoryContrastLoss(scores, dataCount: dataCount, z: Float(sum[0] / sum[1]) * Float(dataCount))
    }

    public func step(_ input: StepInput, cohort: Cohort) throws -> StepResult {
        guard let labels = input.labels else { throw MethodError("mcl needs labels") }
        guard input.indices.count == labels.count else { throw MethodError("mcl needs the batch's training positions") }
        let (_, features) = cohort.sharedStemFeatures(input.images[0])
        let logits = zip(cohort.models, features).map { $0.head($1) }
        let embeddings = zip(heads, features).map { $0(globalAvgPool($1)) }
        let c = logits[0].shape[1], d = embeddings[0].shape[1], n = labels.count
        let joined = try cohort.gather(zip(logits, embeddings).map { concat([$0, $1], axis: 1) })
        let allLogits = joined.map { $0.slice(axis: 1, 0..<c) }, allEmbeddings = joined.map { $0.slice(axis: 1, c..<(c + d)) }
        let mean = meanLogits(allLogits).detached()
        let idx = contrastIndices(items: input.indices, labels: labels, epoch: input.epoch, step: input.step, positions: input.positions)
        var total: Tensor?, losses: [Float] = [], ce: Float = 0, kl: Float = 0, contrast: Float = 0
        let peers = cohort.peers
        for (k, p) in cohort.placement.localPeers.enumerated() {
            let cek = crossEntropy(logits[k], labels: labels)
            var loss = cek
            ce += cek.item
            if p == peers - 1 {
                let d = klDivergence(student: logits[k], teacher: mean, temperature: temperature)
                loss = loss + d * kdWeight
                kl += d.item
            }
            let rows = banks[k].rows(idx, samples: n)
            for j in 0..<peers where j != p {
                let l = try pairTerm(bankRows: rows, allEmbeddings[j], replicas: cohort.replicaComm)
                loss = loss + l * contrastWeight
                contrast += l.item
            }
            losses.append(loss.item)
            total = total.map { $0 + loss } ?? loss
        }
        var items = input.indices, taken = embeddings.map { $0.detached() }
        if let comm = cohort.replicaComm {
            // The whole batch updates every replica's banks, so they stay the same on every replica.
            let counts = try gatherCounts(items.count, on: comm)
            taken = try withoutGradients { try taken.map { try allGather($0, counts: counts, on: comm) } }
            items = try allGatherInts(items, counts: counts, on: comm)
        }
        pending = (items, taken)
        return StepResult(objective: total!, peerLogits: logits, peerLoss: losses,
                          terms: ["ce": ce, "kl": kl * kdWeight, "contrast": contrast * contrastWeight], teacherLogits: mean)
    }

    /// The banks take the step's embeddings (computed before the update, as the official code does).
    public func afterStep(cohort: Cohort, step: Int) {
        guard let p = pending else { return }
        for (k, e) in p.embeddings.enumerated() { banks[k].update(items: p.items, embeddings: e, momentum: momentum) }
        pending = nil
    }

    public func evaluate(_ x: Tensor, cohort: Cohort) throws -> Predictions {
        let (_, features) = cohort.sharedStemFeatures(x)
        let logits = zip(cohort.models, features).map { $0.head($1) }
        return Predictions(peers: logits, teacher: meanLogits(try cohort.gatherDetached(logits)))
    }
}
