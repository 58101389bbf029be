// Tian, Krishnan & Isola, ICLR 2020, "Contrastive Representation Distillation" (CRD).
//
// The pooled final features of student and teacher are embedded, v_s = normalize(W_s·f_s + b_s),
// v_t = normalize(W_t·f_t + b_t) ∈ ℝ¹²⁸ (both embeddings train with the student; the teacher's features are
// detached), and contrasted with two memory banks of one row per training image, M_s (student side) and M_t:
// for item i of the batch, idx_i = [i, K items of other classes] (K = 16,384, drawn with replacement when fewer),
//   out_t = exp(⟨M_s[idx], v_t⟩/τ)/Z_t,   out_s = exp(⟨M_t[idx], v_s⟩/τ)/Z_s,   τ = 0.07,
// Z fixed at the first step to mean(exp(·/τ))·n_data, and the NCE loss of each (`memoryContrastLoss`, P_n = 1/n_data)
//   L = w_ce·CE(y, z_s) + β·(ℓ(out_s) + ℓ(out_t)),   β = 0.8;
// after the step M_s[i] ← normalize(½·M_s[i] + ½·v_s), M_t[i] ← normalize(½·M_t[i] + ½·v_t). Banks start uniform in
// ±1/√(128/3). Followed: megvii-research/mdistiller@e8c5bb3 `mdistiller/distillers/CRD.py` (CRD, Embed,
// ContrastMemory, ContrastLoss) and `engine/cfg.py` (DIM 128, K 16384, T 0.07, MOMENTUM 0.5, FEAT_WEIGHT 0.8);
// negatives as RepDistiller's 'exact' CIFAR100InstanceSample (other classes).
// Ours: negatives come from a stream keyed by (seed, epoch, item), so any number of data-parallel ranks draws the
// same ones; Z is set from the whole global batch (an allreduce); the banks take the whole global batch's
// embeddings (a plain allgather), so every rank keeps identical banks. Scores are read row by row from the banks
// (`indexedMatVec`), never gathered into an [N, K+1, 128] tensor. f is `Classifier.pool`'s output, mdistiller's
// pooled_feat: after the head convolution where there is one (MobileNetV2: 1280 channels, ShuffleNet V2: 1024).
import Collectives
import Foundation
import Layers
import Models
import Tensors

/// A student's two embeddings ("embed_s", "embed_t"), trained with it.
public final class CRDEmbeddings: Module {
    public let embedS: EmbeddingHead, embedT: EmbeddingHead
    public var isTraining = true
    public init(student: Int, teacher: Int, dim: Int, generator g: inout Generator) {
        embedS = EmbeddingHead(student, dim, generator: &g)
        embedT = EmbeddingHead(teacher, dim, generator: &g)
    }
    public var children: [(String, Module)] { [("embed_s", embedS), ("embed_t", embedT)] }
}

/// A student's memory banks and normalisation constants (saved beside it, not trained).
public final class CRDMemory: Module {
    /// M_s: the student side's bank ("memory_v1" in the official code), M_t ("memory_v2").
    public let student: MemoryBank, teacher: MemoryBank
    /// [Z_s, Z_t]; −1 until the first step sets them.
    public let z: Parameter
    public var isTraining = true
    public init(rows: Int, dim: Int, generator g: inout Generator) {
        student = MemoryBank(rows: rows, dim: dim, generator: &g)
        teacher = MemoryBank(rows: rows, dim: dim, generator: &g)
        z = Parameter(Tensor(shape: [2], values: [-1, -1]), trainable: false)
    }
    public var ownTensors: [(String, Parameter)] { [("z", z)] }
    public var children: [(String, Module)] { [("memory_s", student), ("memory_t", teacher)] }
}

public final class CRD: FeatureDistillation {
    public static let spec = MethodSpec(
        name: "crd", officialEvaluation: "the student's best epoch (mdistiller, RepDistiller)", summary: "Tian et al. 2020: contrast student and teacher embeddings against memory banks of the training set (mdistiller's CRD)",
        keys: FeatureDistillation.commonKeys + [
            OptionKey("feat_weight", .number(min: 0, max: nil, openMin: false), default: .number(0.8), help: "weight β of the two contrastive terms"),
            OptionKey("embedding_dim", .int(min: 1), default: .int(128), help: "dimension of the embeddings and banks"),
            OptionKey("nce_k", .int(min: 1), default: .int(16384), help: "negatives per sample, from other classes"),
            OptionKey("nce_t", .number(min: 0, max: nil, openMin: true), default: .number(0.07), help: "temperature τ of the scores"),
            OptionKey("nce_momentum", .number(min: 0, max: 1, openMin: false), default: .number(0.5), help: "memory bank momentum")],
        dataParallel: true) { c, _ in
            guard Set(c.trainLabels).count >= 2 else { throw MethodError("crd needs a labelled training set of at least two classes (its negatives are other classes' images)") }
            let teacher = try c.frozenTeacher(), dim = c.options.int("embedding_dim")
            var embeddings: [Module?] = [], memories: [CRDMemory] = []
            for p in c.placement.localPeers {
                let student = try c.model(c.models[p]).pooledChannels
                var g = c.adapterGenerator(0x6372_6400, peer: p)  // "crd"
                embeddings.append(CRDEmbeddings(student: student, teacher: teacher.model.pooledChannels, dim: dim, generator: &g))
                memories.append(CRDMemory(rows: c.trainLabels.count, dim: dim, generator: &g))
            }
            return CRD(context: c, teacher: teacher, embeddings: embeddings, memories: memories)
        }

    public let weight: Float, negatives: Int, tau: Float, momentum: Float
    let memories: [CRDMemory]
    let pool: ClassNegatives
    let seed: UInt64, dataCount: Int
    /// The step's global items and embeddings per local peer, for the bank update after the optimiser step.
    private var pending: [Int: (items: [Int], student: Tensor, teacher: Tensor)] = [:]

    init(context c: MethodContext, teacher: FrozenTeacher, embeddings: [Module?], memories: [CRDMemory]) {
        weight = c.options.number("feat_weight"); negatives = c.options.int("nce_k")
        tau = c.options.number("nce_t"); momentum = c.options.number("nce_momentum")
        self.memories = memories; seed = c.seed; dataCount = c.trainLabels.count
        pool = ClassNegatives(trainLabels: c.trainLabels, classes: c.classes)
        super.init(name: "crd", context: c, teacher: teacher, adapters: embeddings)
    }

    public override var featureTermNames: [String] { ["contrast"] }
    public override func peerExtraState(_ k: Int) -> Module? { memories[k] }

    /// idx [N·(K+1)]: each item, then K items of other classes; a stream per (seed, epoch, item).
    public func contrastIndices(items: [Int], labels: [Int], epoch: Int) -> [Int] {
        var idx: [Int] = []
        idx.reserveCapacity(items.count * (negatives + 1))
        for (t, y) in zip(items, labels) {
            var g = Generator(seed: seed, stream: [0x6372_646E, UInt64(epoch), UInt64(t)])  // "crdn"
            idx.append(t)
            pool.draw(negatives, otherThan: y, into: &idx, generator: &g)
        }
        return idx
    }

    public override func terms(_ s: FeatureStep) throws -> [Tensor] {
        guard s.input.indices.count == s.labels.count else { throw MethodError("crd needs the batch's training positions") }
        let e = adapters[s.peer] as! CRDEmbeddings, mem = memories[s.peer]
        let vs = e.embedS(s.studentPooled), vt = e.embedT(s.teacher.pooled)
        let idx = contrastIndices(items: s.input.indices, labels: s.labels, epoch: s.input.epoch)
        let scoresS = indexedMatVec(table: mem.teacher.memory.value, rows: idx, vs) * (1 / tau)
        let scoresT = indexedMatVec(table: mem.student.memory.value, rows: idx, vt) * (1 / tau)
        if mem.z.value.data[0] < 0 {
            // Z = mean(exp(scores))·n_data over the global batch, once.
            var sums = [scoresS, scoresT].map { t in (0..<t.count).reduce(0.0) { $0 + Double(Foundation.exp(t.data[$1])) } } + [Double(scoresS.count)]
            try s.replicas?.allReduce(&sums, op: .sum)
            mem.z.value.data[0] = Float(sums[0] / sums[2] * Double(dataCount))
            mem.z.value.data[1] = Float(sums[1] / sums[2] * Double(dataCount))
        }
        let loss = memoryContrastLoss(scoresS, dataCount: dataCount, z: mem.z.value.data[0])
            + memoryContrastLoss(scoresT, dataCount: dataCount, z: mem.z.value.data[1])
        // The banks take every shard's embeddings, so they stay identical on every rank.
        var items = s.input.indices, student = vs.detached(), teacher = vt.detached()
        if let comm = s.replicas {
            let counts = try gatherCounts(items.count, on: comm)
            try withoutGradients {
                student = try allGather(student, counts: counts, on: comm)
                teacher = try allGather(teacher, counts: counts, on: comm)
            }
            items = try allGatherInts(items, counts: counts, on: comm)
        }
        pending[s.peer] = (items, student, teacher)
        return [loss * weight]
    }

    public override func afterStep(cohort: Cohort, step: Int) {
        for (k, p) in pending {
            memories[k].student.update(items: p.items, embeddings: p.student, momentum: momentum)
            memories[k].teacher.update(items: p.items, embeddings: p.teacher, momentum: momentum)
        }
        pending = [:]
    }
}
