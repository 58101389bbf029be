// Fan, Wang, Chen, Dai, Wu & Zhou, 2022, "Channel Self-Supervision for Online Knowledge Distillation" (CSS).
//
// Two networks A and B (peers 0 and 1), each a stem and n branches. Branch i masks its own corner square of the stem
// output h (L = ⌊H/4⌋: i = 0 top-left, 1 bottom-right, 2 bottom-left, 3 top-right), runs its own last stage and a
// C·n-way classifier, and is trained on the joint label y·n + i: z_i^X = fc_i(pool(stage_i(M_i ⊙ h))) ∈ ℝ^{N×C·n}.
//   CE_X = (1/n) Σ_i CE(z_i^X, y·n + i)
//   KD_X = (1/n) Σ_i T²·KL(softmax(z_i^Y/T) ‖ softmax(z_i^X/T))          (over all C·n logits, batchmean)
//   L_X  = CE_X + (CE_X / CE_Y)·KD_X,     L = L_A + L_B,     T = 3,
// where Y is the other network. As in the official code (PumpkinsLemon/CSS `train.py`, `resnet_css.py`) nothing is
// detached: the KL target z^Y and the ratio CE_X/CE_Y, CE_Y included, receive gradients.
// Inference: network X's class score s^X[c] = (1/n) Σ_i z_i^X[c·n + i] (masks applied); the teacher reported is the
// dual ensemble (s^A + s^B)/2, and each branch's own score z_i^X[c·n + i] is reported as "peerP.branchI".
// The networks are built from any model of the zoo (`models: [A, B]`): its stem, and for branch i the last stage of
// an i-th copy of it (the official networks are bottleneck ResNets: resnet110b and resnet56b here, whose branches are
// named layer3_i and classifier3_i as there). Deviation: with n = 4 the official mask for branch 3 zeroes only column
// W − L of rows 0..L−1 (a missing colon); here it is the top-right square the other masks suggest.
// Distributed (one network per rank, or both on one): each rank stacks its network's joint logits [n, N, C·n] and
// gathers them on the tape; rank X forms L_X from its own and the gathered other, so ∂L_X/∂z^Y travels back to Y.
// With data-parallel replicas each forms CE and KD on its slice of the batch and the ratio from the whole batch's
// CE_X and CE_Y (a differentiable allreduce of both over the replicas), so the replicas' mean gradient is the
// one-process gradient of the whole batch's L.
import Collectives
import Layers
import Models
import Tensors

/// A CSS network: one stem, n masked branches with their own last stage and joint classifier.
public final class CSSNetwork: Classifier {
    /// n copies of the base architecture: copy 0's stem runs, copy i's branch is branch i (the rest is unused).
    let bases: [Classifier]
    /// classifier3_i: the branch's pooled features → C·n joint logits.
    let heads: [Linear]
    public let numClasses: Int
    public var isTraining = true

    public init(base name: String, branches n: Int, classes: Int, inChannels: Int, generator g: inout Generator) throws {
        let bases = try (0..<n).map { _ in try ModelZoo.make(name, classes: classes, inChannels: inChannels, generator: &g) }
        let features = bases[0].featureChannels
        heads = (0..<n).map { _ in Linear(features, classes * n, generator: &g) }
        self.bases = bases
        numClasses = classes
    }

    public var branches: Int { heads.count }
    public var stemChannels: Int { bases[0].stemChannels }
    public var featureChannels: Int { bases[0].featureChannels * branches }
    public var stemModuleNames: [String] { bases[0].stemModuleNames }
    public var headModuleNames: [String] { (0..<branches).map { "classifier3_\($0)" } }

    /// Branch i's own modules: the base's children that are neither stem nor head, under one name.
    func branchModule(_ i: Int) -> (String, Module) {
        let b = bases[i]
        let own = b.children.filter { !b.stemModuleNames.contains($0.0) && !b.headModuleNames.contains($0.0) }
        return own.count == 1 ? (own[0].0 + "_\(i)", own[0].1) : ("branch_\(i)", ModuleGroup(own))
    }

    public var children: [(String, Module)] {
        let stem = bases[0].children.filter { stemModuleNames.contains($0.0) }
        return stem + (0..<branches).flatMap { [branchModule($0), ("classifier3_\($0)", heads[$0] as Module)] }
    }

    /// M_i: ones but for branch i's corner square of side ⌊H/4⌋, as [1, H, W, 1].
    public static func mask(branch i: Int, height h: Int, width w: Int) -> Tensor {
        let l = h / 4, m = Tensor(shape: [1, h, w, 1], repeating: 1)
        let rows = i == 0 || i == 3 ? 0..<l : (h - l)..<h, cols = i == 0 || i == 2 ? 0..<l : (w - l)..<w
        for r in rows { for c in cols { m.data[r * w + c] = 0 } }
        return m
    }

    public func stem(_ x: Tensor) -> Tensor { bases[0].stem(x) }

    /// Branch i's final feature map: its last stage on its masked view of the stem output.
    func branchFeatures(_ h: Tensor, _ i: Int) -> Tensor {
        bases[i].branch(h * CSSNetwork.mask(branch: i, height: h.shape[1], width: h.shape[2]))
    }

    /// Each branch's joint logits [N, C·n] from the stem output.
    public func joint(_ h: Tensor) -> [Tensor] {
        (0..<branches).map { heads[$0](globalAvgPool(branchFeatures(h, $0))) }
    }

    /// Branch i's class scores from its joint logits: z[c·n + i].
    public func branchScore(_ z: Tensor, _ i: Int) -> Tensor {
        let n = z.shape[0]
        return z.reshaped([n, numClasses, branches]).slice(axis: 2, i..<(i + 1)).reshaped([n, numClasses])
    }

    /// The network's class scores: the mean over branches of their own scores.
    public func score(_ joint: [Tensor]) -> Tensor {
        joint.indices.dropFirst().reduce(branchScore(joint[0], 0)) { $0 + branchScore(joint[$1], $1) } * (1 / Float(branches))
    }

    /// Classifier view: branch = every branch's final map side by side, head = the class scores.
    public func branch(_ h: Tensor) -> Tensor {
        concat((0..<branches).map { branchFeatures(h, $0) }, axis: 3)
    }

    /// Each branch's map pooled on its own, side by side [N, branches·C].
    public func pool(_ f: Tensor) -> Tensor { globalAvgPool(f) }
    public func classify(_ v: Tensor) -> Tensor {
        let parts = v.split(sizes: Array(repeating: bases[0].featureChannels, count: branches), axis: 1)
        return score(zip(heads, parts).map { $0($1) })
    }
}

public final class CSS: DistillationMethod {
    public static let spec = MethodSpec(
        name: "css", officialEvaluation: "the best epoch of A, of B and of their ensemble, each (train.py)", summary: "Fan et al. 2022: two multi-branch networks, masked branches on joint labels, KD weighted by the CE ratio",
        keys: [.temperature(3), OptionKey("branches", .int(min: 2), default: .int(3), help: "branches n per network (at most 4 masks)")],
        dataParallel: true,
        makePeer: { c, p, g in
            let n = c.options.int("branches")
            guard n <= 4 else { throw MethodError("method.branches: at most 4 (one mask per corner), got \(n)") }
            guard c.peers == 2 else { throw MethodError("css trains two networks (models: [A, B]), got \(c.peers)") }
            return try CSSNetwork(base: c.models[p], branches: n, classes: c.classes, inChannels: c.inChannels, generator: &g)
        }) { c, _ in CSS(branches: c.options.int("branches"), temperature: c.options.number("temperature")) }

    public let name = "css"
    public let branches: Int, temperature: Float
    public init(branches: Int = 3, temperature: Float = 3) { self.branches = branches; self.temperature = temperature }
    public var teacherName: String? { "dual ensemble" }
    public var termNames: [String] { ["ce", "kd"] }

    public func extraNames(peers: Int) -> [String] {
        (0..<peers).flatMap { p in (0..<branches).map { "peer\(p).branch\($0)" } }
    }

    func network(_ m: Classifier) -> CSSNetwork {
        guard let n = m as? CSSNetwork else { preconditionFailure("css: peer models are CSS networks (MethodSpec.makePeer)") }
        return n
    }

    /// CE_X = (1/n) Σ_i CE(z_i, y·n + i).
    func crossEntropy(_ joint: [Tensor], labels: [Int]) -> Tensor {
        let n = joint.count
        return joint.enumerated().map { i, z in Tensors.crossEntropy(z, labels: labels.map { $0 * n + i }) }
            .reduce(Tensor(scalar: 0), +) * (1 / Float(n))
    }

    public func step(_ input: StepInput, cohort: Cohort) throws -> StepResult {
        guard let labels = input.labels else { throw MethodError("css needs labels") }
        let nets = cohort.models.map(network)
        let joints = zip(nets, input.images).map { $0.joint($0.stem($1)) }
        let all = try cohort.gather(joints.map { stack($0) })  // each peer's [n, N, C·n], on the tape
        let n = joints[0].count
        func unstack(_ t: Tensor) -> [Tensor] { (0..<n).map { t.slice(axis: 0, $0..<($0 + 1)).reshaped(Array(t.shape.dropFirst())) } }
        var total: Tensor?, losses: [Float] = [], ce: Float = 0, kd: Float = 0
        for (k, p) in cohort.placement.localPeers.enumerated() {
            let other = unstack(all[1 - p])
            let ceX = crossEntropy(joints[k], labels: labels), ceY = crossEntropy(other, labels: labels)
            let kdX = zip(joints[k], other).map { klDivergence(student: $0, teacher: $1, temperature: temperature) }
                .reduce(Tensor(scalar: 0), +) * (1 / Float(n))
            var ratio = ceX / ceY
            if let comm = cohort.replicaComm {
                // With replicas, the ratio of the whole batch's losses: every replica's sums, on the tape (the
                // allreduce's backward brings every replica's KD_X to each one's CE terms, as in one process).
                let sums = try allReduceSum(concat([ceX.reshaped([1]), ceY.reshaped([1])], axis: 0), on: comm)
                ratio = (sums.slice(axis: 0, 0..<1) / sums.slice(axis: 0, 1..<2)).reshaped([])
            }
            let loss = ceX + ratio * kdX
            total = total.map { $0 + loss } ?? loss
            losses.append(loss.item); ce += ceX.item; kd += kdX.item
        }
        // Scores for training accuracy: read the tape's values, record nothing.
        let (scores, ensemble) = withoutGradients {
            (zip(nets, joints).map { $0.score($1) }, (nets[0].score(unstack(all[0])) + nets[0].score(unstack(all[1]))) * 0.5)
        }
        return StepResult(objective: total!, peerLogits: scores, peerLoss: losses, terms: ["ce": ce, "kd": kd], teacherLogits: ensemble)
    }

    public func evaluate(_ x: Tensor, cohort: Cohort) throws -> Predictions {
        let nets = cohort.models.map(network)
        var extra: [String: Tensor] = [:], scores: [Tensor] = []
        for (net, p) in zip(nets, cohort.placement.localPeers) {
            let joint = net.joint(net.stem(x))
            for i in joint.indices { extra["peer\(p).branch\(i)"] = net.branchScore(joint[i], i) }
            scores.append(net.score(joint))
        }
        let both = try cohort.gatherDetached(scores)
        return Predictions(peers: scores, teacher: (both[0] + both[1]) * 0.5, extra: extra)
    }
}
