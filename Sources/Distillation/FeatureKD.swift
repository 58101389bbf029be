// Offline feature distillation, the part every teacher → student feature method shares.
//
// Each local peer is a student of one frozen teacher. Per step the teacher runs once, in evaluation mode and
// without the tape, on the batch every student sees (one view): its taps (Classifier.taps: the input block's
// output, each stage's output) and logits are shared by every student and every loss term. A student's loss is
//   L = w_ce·CE(y, z_s) + w_kd·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + Σ_terms w_term·term(taps_s, taps_t, …),
// so every feature method composes with Hinton's KD term (`kd_weight`, off by default as in mdistiller's
// feature methods; `ce_weight` 1). A method's trainable adapters (regressors, projections, embeddings) belong to
// the student: one module per peer, trained with it and saved beside it (peerP.module.safetensors).
//
// Data-parallel (one student over R ranks) a rank holds one shard of each batch. Terms that read only their own
// samples are averaged over the shard and the `.mean` gradient sync does the rest; terms that compare samples
// across the batch read the other shards through `FeatureStep.replicas` (a differentiable allgather or allreduce,
// see MSDCRD.swift and Avatar.swift), which gives the one-process gradient exactly.
import Collectives
import Layers
import Models
import Tensors

/// The frozen teacher's taps, pooled feature and logits for one batch (no tape).
public typealias TeacherFeatures = TapForward

extension FrozenTeacher {
    /// Every tap, the pooled feature and the logits of one forward pass, without the tape.
    public func features(_ x: Tensor) -> TeacherFeatures { withoutGradients { model.tapForward(x) } }
}

/// What a feature method's terms see for one student on one step.
public struct FeatureStep {
    /// The student's taps, on the tape.
    public let student: [Tensor]
    /// The student's pooled feature (`Classifier.pool`), on the tape.
    public let studentPooled: Tensor
    public let studentLogits: Tensor
    public let teacher: TeacherFeatures
    public let labels: [Int]
    public let input: StepInput
    /// The local peer index (its adapters: `FeatureDistillation.adapter(k)`).
    public let peer: Int
    /// The data-parallel ranks sharing the batch, or nil (this rank has the whole batch).
    public let replicas: Communicator?
}

/// A tap index checked against a model's taps.
func checkTap(_ i: Int, key: String, model: String, taps: Int) throws {
    guard (0..<taps).contains(i) else {
        throw MethodError("method.\(key): \(model) has taps 0…\(taps - 1) (0: the input block, then each stage; \(taps - 1): the final feature map), not \(i)")
    }
}

/// The base of the offline feature methods: the teacher, CE and KD, terms from the subclass.
open class FeatureDistillation: DistillationMethod {
    /// The keys every feature method has, besides its own.
    public static let commonKeys: [OptionKey] = [
        .teacherModel, .teacherCheckpoint,
        OptionKey("ce_weight", .number(min: 0, max: nil, openMin: false), default: .number(1), help: "weight of the student's cross-entropy"),
        OptionKey("kd_weight", .number(min: 0, max: nil, openMin: false), default: .number(0), help: "weight of Hinton's T²·KL(p_t ‖ p_s) beside the feature terms (0: off)"),
        .temperature(4),
    ]

    public let name: String
    public let teacher: FrozenTeacher
    public let ceWeight: Float, kdWeight: Float, temperature: Float
    /// Each local peer's adapters (nil: the method has none).
    public let adapters: [Module?]

    public init(name: String, context c: MethodContext, teacher: FrozenTeacher, adapters: [Module?]) {
        self.name = name; self.teacher = teacher; self.adapters = adapters
        ceWeight = c.options.number("ce_weight"); kdWeight = c.options.number("kd_weight"); temperature = c.options.number("temperature")
    }

    /// The names of the method's own terms, in the order `terms` returns them.
    open var featureTermNames: [String] { [] }
    /// The method's own terms for one student, weighted, on the tape.
    open func terms(_ s: FeatureStep) throws -> [Tensor] { [] }
    /// Runs after the optimiser step (memory banks).
    open func afterStep(cohort: Cohort, step: Int) {}
    /// State saved beside peer k that the optimiser does not train (memory banks).
    open func peerExtraState(_ k: Int) -> Module? { nil }

    public var teacherName: String? { "teacher" }
    public var termNames: [String] { ["ce", "kl"] + featureTermNames }
    public func peerModule(_ k: Int) -> Module? { adapters[k] }

    public func step(_ input: StepInput, cohort: Cohort) throws -> StepResult {
        guard let labels = input.labels else { throw MethodError("\(name) needs labels (its loss has a cross-entropy term)") }
        let x = input.images[0], t = teacher.features(x)
        var total: Tensor?, logits: [Tensor] = [], losses: [Float] = []
        var sums = [Float](repeating: 0, count: termNames.count)
        for (k, m) in cohort.models.enumerated() {
            let f = m.tapForward(x), z = f.logits
            let ce = crossEntropy(z, labels: labels) * ceWeight
            var loss = ce, parts = [ce.item, 0]
            if kdWeight > 0 {
                let kl = klDivergence(student: z, teacher: t.logits, temperature: temperature) * kdWeight
                loss = loss + kl; parts[1] = kl.item
            }
            for term in try terms(FeatureStep(student: f.taps, studentPooled: f.pooled, studentLogits: z, teacher: t, labels: labels, input: input, peer: k,
                                              replicas: cohort.replicaComm)) {
                loss = loss + term; parts.append(term.item)
            }
            for i in sums.indices { sums[i] += parts[i] }
            total = total.map { $0 + loss } ?? loss
            logits.append(z); losses.append(loss.item)
        }
        return StepResult(objective: total!, peerLogits: logits, peerLoss: losses,
                          terms: Dictionary(uniqueKeysWithValues: zip(termNames, sums)), teacherLogits: t.logits)
    }

    public func evaluate(_ x: Tensor, cohort: Cohort) throws -> Predictions {
        Predictions(peers: cohort.logits(x), teacher: teacher.logits(x))
    }

    public var teacherIsFrozen: Bool { true }
    public func evaluatePeers(_ x: Tensor, cohort: Cohort) throws -> Predictions { Predictions(peers: cohort.logits(x)) }
}

extension MethodContext {
    /// Tap shapes [H, W, C] of the teacher and of peer p's model for this data.
    func tapShapes(teacher: Classifier, peer p: Int) throws -> (teacher: [[Int]], student: [[Int]]) {
        let (h, w) = imageSize
        return (teacher.tapShapes(height: h, width: w, channels: inChannels),
                try model(models[p]).tapShapes(height: h, width: w, channels: inChannels))
    }

    /// The final maps' shapes [H, W, C] of peer p's model and of the teacher, for a method that compares them
    /// position by position: their sides must agree, or the larger be a whole multiple of the smaller (the method
    /// then average-pools the larger down with `matchSpatial`, as mdistiller's AT does for its maps).
    func finalMapShapes(teacher: Classifier, peer p: Int, method: String) throws -> (student: [Int], teacher: [Int]) {
        let shapes = try tapShapes(teacher: teacher, peer: p)
        let (s, t) = (shapes.student.last!, shapes.teacher.last!)
        func multiples(_ a: Int, _ b: Int) -> Bool { max(a, b) % min(a, b) == 0 }
        let ratio = (max(s[0], t[0]) / min(s[0], t[0]), max(s[1], t[1]) / min(s[1], t[1]))
        guard multiples(s[0], t[0]) && multiples(s[1], t[1]) && ratio.0 == ratio.1 && (s[0] <= t[0]) == (s[1] <= t[1]) else {
            throw MethodError("\(method) compares maps position by position: \(models[p])'s final map is \(s[0])×\(s[1]), the teacher's \(t[0])×\(t[1]); the larger must be the smaller times a whole number (on 28-pixel images, dataset.pad_to: 32 gives the CIFAR sizes)")
        }
        return (s, t)
    }

    /// A generator for peer p's adapters: their initial weights depend on (seed, method, peer), not on placement.
    func adapterGenerator(_ tag: UInt64, peer p: Int) -> Generator { Generator(seed: seed, stream: [tag, UInt64(p)]) }
}

/// Average-pools the larger of two maps down to the other's spatial size (integer ratios, the same on both
/// sides; `finalMapShapes` and the AT check make sure), as mdistiller's AT does with adaptive pooling.
func matchSpatial(_ a: Tensor, _ b: Tensor) -> (Tensor, Tensor) {
    let ha = a.shape[1], hb = b.shape[1]
    if ha > hb { precondition(ha % hb == 0, "matchSpatial: \(ha) is not a multiple of \(hb)"); return (avgPool2d(a, kernel: ha / hb), b) }
    if hb > ha { precondition(hb % ha == 0, "matchSpatial: \(hb) is not a multiple of \(ha)"); return (a, avgPool2d(b, kernel: hb / ha)) }
    return (a, b)
}

/// Every rank's row count.
func gatherCounts(_ n: Int, on comm: Communicator) throws -> [Int] {
    var counts = [Double](repeating: 0, count: comm.size)
    counts[comm.rank] = Double(n)
    try comm.allReduce(&counts, op: .sum)
    return counts.map { Int($0) }
}

/// Every rank's integers (training positions, labels; exact below 2²⁴) concatenated in rank order, off the tape.
func allGatherInts(_ values: [Int], counts: [Int], on comm: Communicator) throws -> [Int] {
    try withoutGradients {
        try allGather(Tensor(shape: [values.count], values: values.map(Float.init)), counts: counts, on: comm).array.map { Int($0) }
    }
}
