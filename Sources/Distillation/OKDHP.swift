// Li, Ye, Zhang et al., ICCV 2021, "Online Knowledge Distillation for Efficient Pose Estimation" (OKDHP): the
// feature aggregation unit's (FAU) ensemble, for branches whose outputs are class logits [N, K] or dense maps
// [N, H, W, K] (K maps, channels last).
//
// Branches share a stem. The FAU reads the stem's output x and weights every branch's output per class or map:
//   u = Σ_{k∈{3,5,7}} ReLU(BN(conv_k(x)))          (C → C convolutions with bias, padding 1, 2, 3)
//   v = W₁·GAP(u) + b₁ ∈ ℝ⁶⁴,  a_b = W₂ᵇ·v + b₂ᵇ ∈ ℝᴷ,  α = softmax over the branches b of a_b
//   ens = Σ_b α_b ⊙ o_b
//   L = Σ_b [task(o_b) + kd·r(e)·KLD(ens ‖ o_b)] + ens_w·task(ens),   kd = 2, ens_w = 1, ens not detached,
// r(e) = exp(−5(1 − e/L)²) the sigmoid ramp-up over L = 90 epochs (whole epochs). Per output kind:
//   logits: task = CE(y, o), KLD = KL(softmax(ens) ‖ softmax(o)) (batchmean, T = 1);
//   maps:   task = JointsMSE = (1/K) Σ_k ½·mean_{n,pixels}(o_k − g_k)² = ½·mean (o − g)²,
//           KLD = Σ_{n,k} KL(softmax_pixels(ens_nk) ‖ softmax_pixels(o_nk)) / (N·H·W).
// Followed: zhengli97/OKDHP@452c71e `lib/core/function_okd.py` (train: every output's task loss and
// kd·consistency·KLD to the ensemble, ens_w·task(ens)), `lib/core/loss.py` (JointsMSELoss, JointsKLDLoss, target
// weights 1 here), `lib/models/hourglass_okd_share_less.py` (the FAU; 256 → 64 → 16 per branch there).
// Deviations, ours: the ensemble aggregates each branch's final output (the official `share_less` indexing picks
// branch 1's last, branch 2's first and last stacks, so branch 0 never enters it); the hidden width of the FAU is
// `method.fau_hidden` (64 as the official); our classifiers have no intermediate prediction heads, so the
// official loss on the shared hourglass stacks' outputs has no counterpart. Showing it on pose data would need
// heatmap datasets we do not ship: the dense path is the same code, checked by finite differences and across
// ranks in the tests.
// Distributed: one branch per rank. The stem and the FAU are replicated (gradients summed), but each rank computes
// only its share of the FAU's three convolution paths (balanced by k², so on 2 ranks the 7×7 path on one and the
// 3×3 and 5×5 on the other; the whole FAU costs about half a ResNet-20's training step at this stem end): the paths' pooled outputs meet in one differentiable allreduce of [N, C], and
// each path's batch-norm statistics are sent from its owner after the forward. The branch outputs
// travel in one differentiable allgather and every rank forms the same ensemble; branch terms are local, ens_w·task(ens)
// is computed on every rank at weight 1/R; the KLD's gradient into ens reaches the other branches through the
// allgather's backward and the FAU and stem through the replicated-gradient sum.
import Collectives
import Foundation
import Layers
import Models
import Tensors

/// The feature aggregation unit: branch weights per output channel (class or map) from the shared feature.
public final class FeatureAggregationUnit: Module {
    public let convs: [Conv2d], norms: [BatchNorm2d]
    public let fc: Linear
    public let branchFCs: [Linear]
    public var isTraining = true
    /// The convolution paths' kernel sizes.
    public let kernelSizes = [3, 5, 7]

    public init(channels c: Int, hidden: Int = 64, outputs k: Int, branches: Int, generator g: inout Generator) {
        convs = kernelSizes.map { Conv2d(c, c, kernelSize: $0, padding: $0 / 2, bias: true, generator: &g) }
        norms = kernelSizes.map { _ in BatchNorm2d(c) }
        fc = Linear(c, hidden, generator: &g)
        branchFCs = (0..<branches).map { _ in Linear(hidden, k, generator: &g) }
    }

    public var children: [(String, Module)] {
        zip(kernelSizes, zip(convs, norms)).flatMap { k, cn in [("conv\(k)", cn.0 as Module), ("bn\(k)", cn.1 as Module)] }
            + [("fc", fc)] + branchFCs.enumerated().map { ("branch\($0.offset)", $0.element as Module) }
    }

    /// Σ over `paths` (indices of the 3×3, 5×5, 7×7 convolutions) of GAP(ReLU(BN(conv_k(x)))) [N, C]: the pooled
    /// u of the paths given (GAP is linear, so the pooled sum of all paths is GAP(u)); zeros for none.
    public func pooled(_ x: Tensor, paths: [Int]) -> Tensor {
        let parts = paths.map { globalAvgPool(norms[$0].forward(convs[$0](x), relu: true)) }
        return parts.dropFirst().reduce(parts.first ?? Tensor(zeros: [x.shape[0], fc.weight.value.shape[1]]), +)
    }

    /// α [B, N, K] from the pooled u: for each branch its weight per sample and output channel (softmax over the
    /// branches).
    public func weights(_ pooled: Tensor) -> Tensor {
        let v = fc(pooled)
        return stack(branchFCs.map { $0(v) }).softmax(axis: 0)
    }

    /// α [B, N, K] from the shared feature, every path computed here.
    public func callAsFunction(_ x: Tensor) -> Tensor { weights(pooled(x, paths: Array(convs.indices))) }
}

/// What a branch output is judged against.
public enum AggregationTarget {
    /// Class labels for logits [N, K].
    case labels([Int])
    /// Target maps [N, H, W, K] for dense outputs of the same shape.
    case maps(Tensor)
}

public final class OKDHP: DistillationMethod {
    public static let spec = MethodSpec(
        name: "okdhp", summary: "Li et al. 2021: branches on a shared stem, a feature aggregation unit weights them per class into the teacher",
        keys: [OptionKey("kd_weight", .number(min: 0, max: nil, openMin: false), default: .number(2), help: "weight kd of every branch's KL to the aggregated ensemble"),
               OptionKey("ensemble_weight", .number(min: 0, max: nil, openMin: false), default: .number(1), help: "weight of the ensemble's own task loss"),
               OptionKey("rampup_epochs", .int(min: 0), default: .int(90), help: "epochs of the sigmoid ramp-up of kd (official: 90 of 150)"),
               OptionKey("fau_hidden", .int(min: 1), default: .int(64), help: "hidden width of the aggregation unit")], dataParallel: true) { c, g in
            guard c.peers >= 2 else { throw MethodError("okdhp needs at least 2 branches (models), got \(c.peers)") }
            let fau = FeatureAggregationUnit(channels: try c.channels(ofPeer: 0).stem, hidden: c.options.int("fau_hidden"),
                                             outputs: c.classes, branches: c.peers, generator: &g)
            return OKDHP(fau: fau, kdWeight: c.options.number("kd_weight"), ensembleWeight: c.options.number("ensemble_weight"),
                         rampUpEpochs: c.options.int("rampup_epochs"))
        }

    public let name = "okdhp"
    public let fau: FeatureAggregationUnit
    public let kdWeight: Float, ensembleWeight: Float, rampUpEpochs: Int

    public init(fau: FeatureAggregationUnit, kdWeight: Float = 2, ensembleWeight: Float = 1, rampUpEpochs: Int = 90) {
        self.fau = fau; self.kdWeight = kdWeight; self.ensembleWeight = ensembleWeight; self.rampUpEpochs = rampUpEpochs
    }

    public var modules: [(String, Module)] { [("fau", fau)] }
    public var sharesStem: Bool { true }
    public var teacherName: String? { "aggregated ensemble" }
    public var termNames: [String] { ["task", "kl", "task_ensemble"] }

    /// ens = Σ_b α_b ⊙ o_b for α [B, N, K] and every branch's output ([N, K] or [N, H, W, K]).
    public static func aggregate(_ alpha: Tensor, _ outputs: [Tensor]) -> Tensor {
        let n = alpha.shape[1], k = alpha.shape[2]
        let shape = outputs[0].rank == 2 ? [n, k] : [n, 1, 1, k]
        let terms = outputs.enumerated().map { b, o in alpha.slice(axis: 0, b..<(b + 1)).reshaped(shape) * o }
        return terms.dropFirst().reduce(terms[0], +)
    }

    /// CE for logits, JointsMSE for maps.
    public static func task(_ o: Tensor, _ target: AggregationTarget) -> Tensor {
        switch target {
        case .labels(let y): return crossEntropy(o, labels: y)
        case .maps(let g): return mseLoss(o, g) * 0.5
        }
    }

    /// KL(softmax(ens) ‖ softmax(o)) over classes (batchmean) or over each map's pixels (summed, / (N·H·W)).
    public static func consistency(_ o: Tensor, _ ens: Tensor) -> Tensor {
        guard o.rank == 4 else { return klDivergence(student: o, teacher: ens, temperature: 1) }
        let (n, h, w, k) = (o.shape[0], o.shape[1], o.shape[2], o.shape[3])
        let rows = { (t: Tensor) in t.permuted([0, 3, 1, 2]).reshaped([n * k, h * w]) }
        return klDivergence(student: rows(o), teacher: rows(ens), temperature: 1) * (Float(k) / Float(h * w))
    }

    /// This rank's share of the objective for its branches' outputs `local` (logits or maps), the shared feature
    /// `x` the FAU reads, and the target; also the ensemble (on every rank).
    public func objective(local: [Tensor], shared x: Tensor, target: AggregationTarget, epoch: Int, cohort: Cohort) throws
        -> (objective: Tensor, losses: [Float], terms: [String: Float], ensemble: Tensor) {
        let ens = OKDHP.aggregate(try weights(x, cohort: cohort), try cohort.gather(local))
        let ensTask = OKDHP.task(ens, target)
        var total = ensTask * (ensembleWeight * cohort.sharedScale), losses: [Float] = [], task: Float = 0, kl: Float = 0
        let w = kdWeight * rampUpWeight(epoch: epoch, length: rampUpEpochs)
        for o in local {
            let t = OKDHP.task(o, target), d = OKDHP.consistency(o, ens)
            let loss = t + d * w
            total = total + loss
            task += t.item; kl += d.item; losses.append(loss.item)
        }
        return (total, losses, ["task": task, "kl": kl * w, "task_ensemble": ensTask.item * ensembleWeight * cohort.sharedScale], ens)
    }

    public func step(_ input: StepInput, cohort: Cohort) throws -> StepResult {
        guard let labels = input.labels else { throw MethodError("okdhp needs labels") }
        let (h, features) = cohort.sharedStemFeatures(input.images[0])
        let logits = zip(cohort.models, features).map { $0.head($1) }
        let r = try objective(local: logits, shared: h, target: .labels(labels), epoch: input.epoch, cohort: cohort)
        return StepResult(objective: r.objective, peerLogits: logits, peerLoss: r.losses, terms: r.terms, teacherLogits: r.ensemble.detached())
    }

    public func evaluate(_ x: Tensor, cohort: Cohort) throws -> Predictions {
        let (h, features) = cohort.sharedStemFeatures(x)
        let logits = zip(cohort.models, features).map { $0.head($1) }
        return Predictions(peers: logits, teacher: OKDHP.aggregate(try weights(h, cohort: cohort), try cohort.gatherDetached(logits)))
    }

    /// The rank that computes each of the FAU's paths (all of them on one rank): by cost, k² for the k×k convolution, the
    /// largest first to the least loaded rank (lowest rank on ties); on 2 ranks the 7×7 path on one, the 3×3 and
    /// 5×5 on the other.
    func pathOwners(ranks: Int) -> [Int] {
        var load = [Int](repeating: 0, count: ranks), owner = [Int](repeating: 0, count: fau.convs.count)
        for k in fau.convs.indices.sorted(by: { fau.kernelSizes[$0] > fau.kernelSizes[$1] }) {
            let r = load.indices.min { load[$0] < load[$1] || (load[$0] == load[$1] && $0 < $1) }!
            owner[k] = r
            load[r] += fau.kernelSizes[k] * fau.kernelSizes[k]
        }
        return owner
    }

    /// α on every rank, each rank computing only its own convolution paths: their pooled sums meet in one
    /// allreduce (differentiable in training, so each path's gradient returns to its owner and the replicated
    /// gradient sum gives it to every rank). In training, the owners' batch-norm statistics then go to every rank.
    func weights(_ x: Tensor, cohort: Cohort) throws -> Tensor {
        guard cohort.placement.ranks > 1 else { return fau(x) }
        let owners = pathOwners(ranks: cohort.placement.ranks)
        let local = fau.pooled(x, paths: fau.convs.indices.filter { owners[$0] == cohort.placement.rank })
        guard fau.isTraining else {
            let total = local.detached().copy()
            try cohort.comm.allReduce(total)
            return fau.weights(total)
        }
        let total = try allReduceSum(local, on: cohort.comm)
        // Each path's running statistics from its owner.
        for r in Set(owners).sorted() {
            let buffers = fau.convs.indices.filter { owners[$0] == r }.flatMap { fau.norms[$0].namedBuffers().map { $0.1.value } }
            try broadcastValues(buffers, on: cohort.comm, root: r)
        }
        return fau.weights(total)
    }
}
