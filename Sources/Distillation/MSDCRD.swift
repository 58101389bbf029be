// Wang & Wang, 2025, "Contrastive Representation Distillation via Multi-Scale Feature Decoupling" (MSDCRD).
//
// No code has been published and the method section could not be read: every detail below is ours, following the
// abstract (multi-scale decoupling of the feature maps into local features, sample categorisation, a sample-wise
// and a feature-wise contrastive loss within one batch, no memory bank, no parameters when channels match).
//   Decoupling. For each scale s (default {1, 2, 4}) the final maps F_s, F_t [N, H, W, C] are average-pooled with
//   window k_s = max(1, ⌊H/s⌋) and stride max(1, ⌊k_s/2⌋) (overlapping windows), giving local vectors
//   v^s_{n,p} ∈ ℝ^C at positions p, L2-normalised over C.
//   Sample-wise loss (InfoNCE, τ = 0.1). The student's v^s_{n,p} is pulled to the teacher's v^s_{n,p} against the
//   teacher's vectors of the other images at the same scale and position; "sample categorisation": images of the
//   anchor's class are not negatives (masked out), so the loss never pushes apart two images of one class:
//     ℓ_sample = mean_s mean_p mean_n −log( e^{⟨s_np, t_np⟩/τ} / Σ_{m: m = n or y_m ≠ y_n} e^{⟨s_np, t_mp⟩/τ} ).
//   Feature-wise loss (InfoNCE, τ = 0.1). Each channel's pooled responses over the batch and positions, a vector in
//   ℝ^{N·P} L2-normalised, is a sample: the student's channel c is pulled to the teacher's channel c against the
//   teacher's other channels:  ℓ_feature = mean_s mean_c −log( e^{⟨a_c, b_c⟩/τ} / Σ_d e^{⟨a_c, b_d⟩/τ} ).
//   L = w_ce·CE(y, z_s) + w_kd·T²·KL + β·(ℓ_sample + ℓ_feature),   β = 0.8 (RepDistiller's CRD weight; swept).
// When C_s ≠ C_t a 1×1 convolution (no bias) projects the student's map, trained with it: a deviation from
// "parameter-free", needed for heterogeneous pairs. When the sides differ by a whole factor (vgg8's 4×4 final map
// against mobilenetv2's 2×2) the larger map is average-pooled to the smaller first (ours).
// Distributed (data-parallel): the student's projected map goes through a differentiable allgather and the
// teacher's map and the labels through a plain one, so every rank sees the global batch. A rank's sample-wise
// loss averages over its own anchors against global candidates; the feature-wise loss is computed whole on every
// rank. With the `.mean` gradient sync this is exactly the one-process gradient (the allgather's backward sums
// every rank's contribution to each shard).
import Collectives
import Foundation
import Layers
import Models
import Tensors

/// The window and stride of scale s on an H-pixel map.
public func msdcrdWindow(height h: Int, scale s: Int) -> (kernel: Int, stride: Int) {
    let k = max(1, h / s)
    return (k, max(1, k / 2))
}

/// MSDCRD's two losses for the global batch's student map `student` (on the tape) and teacher map, both
/// [N, H, W, C], with every sample's label; the sample-wise loss averages over the anchors `anchors` (this rank's
/// rows), the feature-wise loss (nil unless `featureWise`) over the whole batch.
public func msdcrdLosses(student: Tensor, teacher: Tensor, labels: [Int], anchors: Range<Int>, scales: [Int], tau: Float,
                         featureWise: Bool = true) -> (sample: Tensor, feature: Tensor?) {
    precondition(student.shape == teacher.shape && student.rank == 4 && labels.count == student.shape[0],
                 "msdcrd: student \(student.shape) and teacher \(teacher.shape) maps must agree, with one label per sample")
    let n = student.shape[0], h = student.shape[1], c = student.shape[3]
    // mask[a, m] = −∞ (as −1e9) where image m has anchor a's class and is not the anchor itself.
    let mask = Tensor(zeros: [anchors.count, n])
    for (a, i) in anchors.enumerated() {
        for m in 0..<n where m != i && labels[m] == labels[i] { mask.data[a * n + m] = -1e9 }
    }
    let targets = Array(anchors)
    var sample: [Tensor] = [], feature: [Tensor] = []
    for s in scales {
        let (k, st) = msdcrdWindow(height: h, scale: s)
        let ps = avgPool2d(student, kernel: k, stride: st), pt = avgPool2d(teacher, kernel: k, stride: st)
        let positions = ps.shape[1] * ps.shape[2]
        let vs = ps.l2Normalized(axis: 3).reshaped([n, positions, c]).permuted([1, 0, 2])
        let vt = pt.l2Normalized(axis: 3).reshaped([n, positions, c]).permuted([1, 0, 2])
        var perPosition: [Tensor] = []
        for p in 0..<positions {
            let a = vs.slice(axis: 0, p..<(p + 1)).reshaped([n, c]).slice(axis: 0, anchors)
            let b = vt.slice(axis: 0, p..<(p + 1)).reshaped([n, c])
            perPosition.append(crossEntropy(matmul(a, b, transB: true) * (1 / tau) + mask, labels: targets))
        }
        sample.append(perPosition.dropFirst().reduce(perPosition[0], +) * (1 / Float(positions)))
        guard featureWise else { continue }
        let fs = ps.reshaped([n * positions, c]).transposed().l2Normalized(axis: 1)
        let ft = pt.reshaped([n * positions, c]).transposed().l2Normalized(axis: 1)
        feature.append(crossEntropy(matmul(fs, ft, transB: true) * (1 / tau), labels: Array(0..<c)))
    }
    let w = 1 / Float(scales.count)
    return (sample.dropFirst().reduce(sample[0], +) * w, feature.isEmpty ? nil : feature.dropFirst().reduce(feature[0], +) * w)
}

/// The 1×1 projection of a student's map to the teacher's channels ("proj"), when they differ.
public final class ChannelProjection: Module {
    public let proj: Conv2d
    public var isTraining = true
    public init(_ from: Int, _ to: Int, generator g: inout Generator) { proj = Conv2d(from, to, kernelSize: 1, generator: &g) }
    public var children: [(String, Module)] { [("proj", proj)] }
    public func callAsFunction(_ x: Tensor) -> Tensor { proj(x) }
}

public final class MSDCRD: FeatureDistillation {
    public static let spec = MethodSpec(
        name: "msdcrd", summary: "Wang & Wang 2025: multi-scale local features of the final maps, sample-wise and feature-wise contrast within the batch (our reading)",
        keys: FeatureDistillation.commonKeys + [
            OptionKey("feat_weight", .number(min: 0, max: nil, openMin: false), default: .number(0.8), help: "weight β of the sample-wise plus feature-wise losses"),
            OptionKey("scales", .string, default: .string("1,2,4"), help: "the decoupling scales s, separated by commas or '+' (1+2+4 fits a command-line variant): windows of ⌊H/s⌋ pixels at half-window strides"),
            OptionKey("nce_t", .number(min: 0, max: nil, openMin: true), default: .number(0.1), help: "temperature τ of both contrastive losses"),
            OptionKey("feature_wise", .bool, default: .bool(true), help: "include the feature-wise (channel) loss")],
        dataParallel: true) { c, _ in
            let teacher = try c.frozenTeacher()
            let text = c.options.string("scales")!
            let scales = text.split(whereSeparator: { $0 == "," || $0 == "+" }).map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !scales.isEmpty, scales.allSatisfy({ ($0 ?? 0) >= 1 }) else {
                throw MethodError("method.scales: '\(text)' is not a list of whole numbers ≥ 1 separated by commas or '+' (e.g. 1,2,4)")
            }
            var projections: [Module?] = []
            for p in c.placement.localPeers {
                let (s, t) = try c.finalMapShapes(teacher: teacher.model, peer: p, method: "msdcrd")
                var g = c.adapterGenerator(0x6D73_6463, peer: p)  // "msdc"
                projections.append(s[2] == t[2] ? nil : ChannelProjection(s[2], t[2], generator: &g))
            }
            return MSDCRD(context: c, teacher: teacher, projections: projections, scales: scales.map { $0! })
        }

    public let weight: Float, scales: [Int], tau: Float, featureWise: Bool
    init(context c: MethodContext, teacher: FrozenTeacher, projections: [Module?], scales: [Int]) {
        weight = c.options.number("feat_weight"); tau = c.options.number("nce_t"); featureWise = c.options.bool("feature_wise")
        self.scales = scales
        super.init(name: "msdcrd", context: c, teacher: teacher, adapters: projections)
    }

    public override var featureTermNames: [String] { ["sample", "feature"] }
    public override func terms(_ s: FeatureStep) throws -> [Tensor] {
        var student = s.student.last!, teacher = s.teacher.taps.last!, labels = s.labels
        if let proj = adapters[s.peer] as? ChannelProjection { student = proj(student) }
        (student, teacher) = matchSpatial(student, teacher)
        var anchors = 0..<labels.count
        if let comm = s.replicas {
            let counts = try gatherCounts(labels.count, on: comm), offset = counts[..<comm.rank].reduce(0, +)
            student = try allGather(student, counts: counts, on: comm)
            try withoutGradients {
                teacher = try allGather(teacher, counts: counts, on: comm)
            }
            labels = try allGatherInts(labels, counts: counts, on: comm)
            anchors = offset..<(offset + s.labels.count)
        }
        let l = msdcrdLosses(student: student, teacher: teacher, labels: labels, anchors: anchors, scales: scales, tau: tau, featureWise: featureWise)
        return [l.sample * weight, (l.feature ?? Tensor(scalar: 0)) * weight]
    }
}
