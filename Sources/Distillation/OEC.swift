// Walawalkar, Shen & Savvides, ECCV 2020, "Online Ensemble Model Compression using Knowledge Distillation" (OEC).
//
// N students of decreasing width share a base (conv1·bn1·relu; the stem ends after stage 0); student j is the
// configured CIFAR ResNet with stage widths ⌊[16, 32, 64]·(N − j)/N⌋, xavier-normal initialised. z_T = (1/N) Σ_j z_j,
//   L = 0.7·Σ_j CE(y, z_j) + 0.15·Σ_{b=1..3} Σ_{j≥1} MSE(sg(F_b⁰), A_{b,j}(F_bʲ)) + 0.15·Σ_j T²·KL(sg(z_T) ‖ z_j),  T = 2
// (F_bʲ: student j's stage-b output; sg: stop-gradient; A_{b,j}: 1×1 convolution with bias to student 0's channels).
// The adapters join the optimiser after the first epoch at 0.5·lr, and the optimiser's state starts afresh then.
// Followed: Devwalkar/BOC-KD@d80a5a8 (unchanged at a19bab4): `utils/Losses.py` Combined_Loss.student_forward
// (preds[0] is z_T and only preds[1:] get CE), `models/ResNet_cifar.py` (student 0's maps detached; widths, init),
// `tools/train.py` (adapters added at lr·0.5 after epoch 0, Adam and scheduler rebuilt), `configs/Cifar100_exp/
// Resnet32.py` (ratios 0.7/0.15/0.15, T 2, Adam 1e-3, wd 1e-5, 350 epochs, milestones 200/300).
// Ours: `teacher_ce_weight` adds w·CE(y, z_T) (default 0, the official loss has none).
// Distributed: students over ranks, the base replicated (gradients summed); the logits gathered detached (on the
// tape only when teacher_ce_weight > 0, that term at weight 1/R on every rank); student 0's stage outputs reach
// every rank detached (an allreduce of the host's maps and the others' zeros); host(j) computes its terms.
import Collectives
import Foundation
import Layers
import Models
import Tensors

/// Student j's adapters A_{1..3,j} (state-dict names "stage1".."stage3").
public final class StageAdapters: Module {
    public let convs: [Conv2d]
    public var isTraining = true
    /// PyTorch's default Conv2d initialisation, U(±1/√fan_in) for the weight and the bias, from `g`.
    public init(from source: [Int], to target: [Int], generator g: inout Generator) {
        convs = zip(source, target).map { cin, cout in
            let conv = Conv2d(cin, cout, kernelSize: 1, bias: true, generator: &g)
            let bound = 1 / Float(cin).squareRoot()
            conv.weight.value.data.update(from: Tensor.uniform(conv.weight.value.shape, low: -bound, high: bound, generator: &g).data,
                                          count: conv.weight.value.count)
            return conv
        }
    }
    public var children: [(String, Module)] { convs.enumerated().map { ("stage\($0.offset + 1)", $0.element) } }
}

/// Xavier-normal weights, N(0, 2/(fan_in + fan_out)), for every convolution and linear layer of a model.
func xavierNormalInit(_ model: Module, generator g: inout Generator) {
    for (name, p) in model.namedParameters() where name.hasSuffix("weight") && p.value.rank >= 2 {
        let s = p.value.shape, receptive = s.dropFirst(2).reduce(1, *)
        let std = (2 / Float((s[0] + s[1]) * receptive)).squareRoot()
        p.value.data.update(from: Tensor.randn(s, std: std, generator: &g).data, count: p.value.count)
    }
}

public final class OEC: DistillationMethod {
    /// The model name of student j of n built on `base` (a CIFAR ResNet name): `base` itself for j = 0, else the
    /// zoo's width-scaled `base_w<(n − j)/n>`.
    public static func studentModel(_ base: String, _ j: Int, of n: Int) -> String {
        j == 0 ? base : "\(base)_w\(Double(n - j) / Double(n))"
    }

    public static let spec = MethodSpec(
        name: "oec", officialEvaluation: "the teacher (mean logits), tested every 10 epochs, its best (tools/train.py)", summary: "Walawalkar et al. 2020: students of decreasing width on a shared base, taught by their mean and student 0's stage maps",
        keys: [.temperature(2),
               OptionKey("student_ce_weight", .number(min: 0, max: nil, openMin: false), default: .number(0.7), help: "weight of each student's CE(y, z_j)"),
               OptionKey("feature_weight", .number(min: 0, max: nil, openMin: false), default: .number(0.15), help: "weight of the stage-map MSE terms"),
               OptionKey("kd_weight", .number(min: 0, max: nil, openMin: false), default: .number(0.15), help: "weight of the students' T²·KL to z_T"),
               OptionKey("teacher_ce_weight", .number(min: 0, max: nil, openMin: false), default: .number(0),
                         help: "weight of CE(y, z_T) (our option; the official loss has none)"),
               OptionKey("train_adapters", .bool, default: .bool(true), help: "train the 1×1 adapters (false: frozen at their random initialisation)"),
               OptionKey("adapter_start_epoch", .int(min: 0), default: .int(1), help: "the epoch (0-based) from which the adapters train; the main optimiser's state starts afresh then, as the official code rebuilds Adam"),
               OptionKey("adapter_lr_scale", .number(min: 0, max: nil, openMin: false), default: .number(0.5), help: "the adapters' learning rate as a multiple of the scheduled one")],
        dataParallel: true,
        makePeer: { c, p, g in
            guard Set(c.models).count == 1 else {
                throw MethodError("oec builds every student from one CIFAR ResNet, scaled in width; give one model name for every student (models: [resnet32, resnet32, ...]), got \(c.models.joined(separator: ", "))")
            }
            let name = studentModel(c.models[0], p, of: c.peers)
            let m = try ModelZoo.make(name, classes: c.classes, inChannels: c.inChannels, generator: &g)
            guard m is CIFARResNet, !c.models[0].lowercased().hasSuffix("b"), !c.models[0].lowercased().hasSuffix("x4") else {
                throw MethodError("oec scales basic-block CIFAR ResNets (resnet8 … resnet110); got \(c.models[0])")
            }
            xavierNormalInit(m, generator: &g)
            return m
        }, peerModel: { models, p in studentModel(models[0], p, of: models.count) }) { c, _ in
            guard c.peers >= 2 else { throw MethodError("oec needs at least 2 students (models), got \(c.peers)") }
            let channels = try (0..<c.peers).map { j -> [Int] in
                let m = try c.model(studentModel(c.models[0], j, of: c.peers))
                try m.setStemEnd(0)
                return m.branchStageChannels
            }
            let adapters = c.placement.localPeers.map { j -> StageAdapters? in
                guard j > 0 else { return nil }
                var g = Generator(seed: c.seed, stream: [0x6F65_6300, UInt64(j)])  // "oec": placement-free init
                return StageAdapters(from: channels[j], to: channels[0], generator: &g)
            }
            return OEC(student0Channels: channels[0], adapters: adapters,
                       temperature: c.options.number("temperature"), teacherWeight: c.options.number("teacher_ce_weight"),
                       featureWeight: c.options.number("feature_weight"), kdWeight: c.options.number("kd_weight"),
                       studentCEWeight: c.options.number("student_ce_weight"), trainAdapters: c.options.bool("train_adapters"),
                       adapterStartEpoch: c.options.int("adapter_start_epoch"), adapterLRScale: c.options.number("adapter_lr_scale"))
        }

    public let name = "oec"
    public let student0Channels: [Int]
    public let temperature: Float, teacherWeight: Float, featureWeight: Float, kdWeight: Float, studentCEWeight: Float
    public let trainAdapters: Bool, adapterStartEpoch: Int, adapterLRScale: Float
    let adapters: [StageAdapters?]

    /// `adapters[k]`: local peer k's, nil for student 0.
    public init(student0Channels: [Int], adapters: [StageAdapters?], temperature: Float = 2,
                teacherWeight: Float = 0, featureWeight: Float = 0.15, kdWeight: Float = 0.15, studentCEWeight: Float = 0.7,
                trainAdapters: Bool = true, adapterStartEpoch: Int = 1, adapterLRScale: Float = 0.5) {
        self.student0Channels = student0Channels; self.adapters = adapters
        self.temperature = temperature; self.teacherWeight = teacherWeight; self.featureWeight = featureWeight
        self.kdWeight = kdWeight; self.studentCEWeight = studentCEWeight; self.trainAdapters = trainAdapters
        self.adapterStartEpoch = adapterStartEpoch; self.adapterLRScale = adapterLRScale
    }

    public var sharesStem: Bool { true }
    public var stemEnd: Int? { 0 }
    public var teacherName: String? { "ensemble" }
    public var termNames: [String] { ["ce_students", "feature_mse", "kl"] + (teacherWeight > 0 ? ["ce_teacher"] : []) }
    public func peerModule(_ k: Int) -> Module? { adapters[k] }
    public func mainPhaseUpdates(_ role: ParameterRole, _ name: String) -> Bool { role != .peerModule || trainAdapters }
    public func groupSettings(_ role: ParameterRole, _ name: String) -> GroupSettings? {
        role == .peerModule ? GroupSettings(lrScale: adapterLRScale, fromEpoch: adapterStartEpoch) : nil
    }
    public func restartsMainOptimizer(atEpoch epoch: Int) -> Bool { trainAdapters && adapterStartEpoch > 0 && epoch == adapterStartEpoch }

    /// Student 0's stage outputs on every rank, detached: the host's maps summed with the others' zeros.
    func student0Maps(_ local: [[Tensor]], cohort: Cohort) throws -> [Tensor] {
        let shapes = local[0].enumerated().map { b, f in [f.shape[0], f.shape[1], f.shape[2], student0Channels[b]] }
        let sizes = shapes.map { $0.reduce(1, *) }
        let flat = try withoutGradients { () -> Tensor in
            let mine = cohort.placement.localPeers.firstIndex(of: 0).map { concat(local[$0].map { $0.detached().reshaped([-1]) }, axis: 0) }
                ?? Tensor(zeros: [sizes.reduce(0, +)])
            return try allReduceSum(mine, on: cohort.comm)
        }
        return zip(flat.split(sizes: sizes, axis: 0), shapes).map { $0.reshaped($1) }
    }

    public func step(_ input: StepInput, cohort: Cohort) throws -> StepResult {
        guard let labels = input.labels else { throw MethodError("oec needs labels") }
        let h = cohort.stem!([input.images[0]])[0]
        let stages = cohort.models.map { $0.branchStages(h) }
        let logits = zip(cohort.models, stages).map { $0.head($1.last!) }
        // z_T is a target only, unless its own CE (our option) trains the students through it.
        let teacher = meanLogits(teacherWeight > 0 ? try cohort.gather(logits) : try cohort.gatherDetached(logits))
        let target = teacher.detached()
        let maps0 = try student0Maps(stages, cohort: cohort)
        var total: Tensor? = nil, losses: [Float] = [], mse: Float = 0, kl: Float = 0, ce: Float = 0
        var terms: [String: Float] = [:]
        if teacherWeight > 0 {
            let ceT = crossEntropy(teacher, labels: labels) * (teacherWeight * cohort.sharedScale)
            total = ceT
            terms["ce_teacher"] = ceT.item
        }
        for (k, p) in cohort.placement.localPeers.enumerated() {
            let own = crossEntropy(logits[k], labels: labels), d = klDivergence(student: logits[k], teacher: target, temperature: temperature)
            var loss = own * studentCEWeight + d * kdWeight
            ce += own.item; kl += d.item
            if p > 0, let a = adapters[k] {
                for (b, conv) in a.convs.enumerated() {
                    let m = mseLoss(maps0[b], conv(stages[k][b]))
                    loss = loss + m * featureWeight
                    mse += m.item
                }
            }
            losses.append(loss.item)
            total = total.map { $0 + loss } ?? loss
        }
        terms["ce_students"] = ce * studentCEWeight; terms["feature_mse"] = mse * featureWeight; terms["kl"] = kl * kdWeight
        return StepResult(objective: total!, peerLogits: logits, peerLoss: losses, terms: terms, teacherLogits: target)
    }

    public func evaluate(_ x: Tensor, cohort: Cohort) throws -> Predictions {
        let logits = cohort.logits(x)
        return Predictions(peers: logits, teacher: meanLogits(try cohort.gatherDetached(logits)))
    }
}
