import Collectives
import Distillation
import Layers
import Models
import Tensors
import TestSupport
import XCTest

/// Finite-difference checks of each online method's whole objective (one process hosting every peer), at full
/// distillation weight, with respect to the method's own modules and to peers' weights: the composition of gathers,
/// gates, attention and fusion backpropagates what the forward computes. Detached targets are held at their values
/// at the base point while the inputs move (`Tensor.detachObserver`), which is what the analytic gradient assumes.
final class MethodGradientTests: XCTestCase {
    func cohort(_ names: [String], sharesStem: Bool, perPeerViews: Bool = false, stemEnd: Int? = nil) throws -> Cohort {
        let comm = try MPICommunicator.world()
        let placement = try PeerPlacement(peers: names.count, ranks: 1, rank: 0)
        let models = try names.enumerated().map { k, name -> Classifier in
            var g = Generator(seed: 40 + UInt64(k))
            let m = try ModelZoo.make(name, classes: 5, inChannels: 1, generator: &g)
            if let e = stemEnd { try m.setStemEnd(e) }
            return m
        }
        let stem = sharesStem ? SharedStem(models: models, comm: comm, perPeerViews: perPeerViews, peer0: nil) : nil
        return Cohort(placement: placement, comm: comm, models: models, stem: stem)
    }

    override func tearDown() { Tensor.detachObserver = nil }

    /// Checks d(objective)/d(tensors) for a step on a fixed batch at full weight (`epoch` past the ramp-up);
    /// `perPeerViews` gives each peer its own input.
    static let labels = [0, 1, 2, 3, 4, 0, 3, 1]

    func check(_ method: DistillationMethod, _ c: Cohort, _ tensors: [(String, Tensor)], perPeerViews: Bool = false, epoch: Int = 100, eps: Float = 1e-2,
               file: StaticString = #filePath, line: UInt = #line) throws {
        let n = 8, labels = Self.labels
        let views = (0..<(perPeerViews ? c.models.count : 1)).map { randomTensor([n, 16, 16, 1], seed: 90 + UInt64($0)) }
        let images = perPeerViews ? views : Array(repeating: views[0], count: c.models.count)
        let input = StepInput(images: images, labels: labels, epoch: epoch, step: 3, indices: Array(0..<n))
        for (name, t) in tensors {
            // The first evaluation (the analytic gradient's) records every detached target; later ones replay them.
            var targets: [Tensor] = [], calls = 0, next = 0
            Tensor.detachObserver = { x in
                if calls == 1 { targets.append(x.copy()); return targets.last! }
                defer { next += 1 }
                return targets[next]
            }
            gradCheck([t], eps: eps, rtol: 3e-2, atol: 2e-3, maxCoordinates: 12, "\(method.name) \(name)", file: file, line: line) { _ in
                calls += 1; next = 0
                return (try? method.step(input, cohort: c).objective) ?? Tensor(scalar: .nan)
            }
            Tensor.detachObserver = nil
            XCTAssertEqual(next, targets.count, "\(method.name): every evaluation reads the same detached targets", file: file, line: line)
        }
    }

    func param(_ m: Module, _ name: String) -> (String, Tensor) {
        (name, m.namedParameters().first { $0.0 == name }!.1.value)
    }

    func testDML() throws {
        let c = try cohort(["resnet8", "wrn10_1", "resnet8"], sharesStem: false)
        let m = DML(temperature: 2)
        try check(m, c, [param(c.models[0], "fc.weight"), param(c.models[1], "block3.layer.0.conv1.weight"), param(c.models[2], "bn1.bias")])
    }

    func testONE() throws {
        let c = try cohort(["resnet8", "resnet8", "resnet8"], sharesStem: true)
        var g = Generator(seed: 3)
        let one = ONE(peers: 3, stemChannels: c.models[0].stemChannels, rampUpEpochs: 80, generator: &g)
        try check(one, c, one.modules.flatMap { n, m in m.namedParameters().map { ("\(n).\($0.0)", $0.1.value) } }
                  + [param(c.models[0], "layer2.0.bn1.bias"), param(c.models[2], "fc.bias")])
    }

    func testOKDDip() throws {
        let c = try cohort(Array(repeating: "resnet8", count: 4), sharesStem: true)
        var g = Generator(seed: 4)
        let m = OKDDip(featureChannels: c.models[0].featureChannels, rampUpEpochs: 0, factor: 8, generator: &g)
        try check(m, c, m.modules.flatMap { n, mod in mod.namedParameters().map { ("\(n).\($0.0)", $0.1.value) } }
                  + [param(c.models[1], "fc.weight"), param(c.models[3], "layer3.0.bn1.weight")])
    }

    func testPCL() throws {
        let c = try cohort(["resnet8", "resnet8", "resnet8"], sharesStem: true, perPeerViews: true)
        var g = Generator(seed: 5)
        let teachers = try (0..<3).map { _ -> Classifier in var tg = Generator(seed: 0); return try ModelZoo.make("resnet8", classes: 5, inChannels: 1, generator: &tg) }
        let m = PCL(peers: 3, featureChannels: c.models[0].featureChannels, classes: 5, meanTeachers: teachers, rampUpEpochs: 80, generator: &g)
        m.start(cohort: c)
        m.afterStep(cohort: c, step: 1)
        try check(m, c, [("ensemble_fc.weight", m.modules[0].1.namedParameters()[0].1.value), param(c.models[0], "bn1.bias"),
                         param(c.models[1], "fc.weight")], perPeerViews: true)
    }

    func testFFL() throws {
        let c = try cohort(["resnet8", "wrn10_1"], sharesStem: false)
        var g = Generator(seed: 6)
        let m = FFL(localPeers: [0, 1], channels: c.models.map(\.featureChannels), fusedChannels: 16, classes: 5, seed: 1,
                    rampUpEpochs: 80, generator: &g)
        let slices = (0..<2).flatMap { k in m.peerModule(k)!.namedParameters().map { ("peer\(k).\($0.0)", $0.1.value) } }
        try check(m, c, slices + m.modules.flatMap { n, mod in mod.namedParameters().map { ("\(n).\($0.0)", $0.1.value) } }
                  + [param(c.models[1], "fc.weight")], eps: 2e-3)
    }

    /// AFD's logit objective (mutual KL, detached targets), and its two adversarial phases: the discriminator loss
    /// with respect to every discriminator's weights, the networks' adversarial loss with respect to a network's
    /// weights and its 1×1 adapter (resnet8 and wrn10_2 differ in channels, so both adapters exist), at λ = 1.
    func testAFD() throws {
        let c = try cohort(["resnet8", "wrn10_2", "resnet8"], sharesStem: false)
        let m = AFD(localPeers: [0, 1, 2], channels: c.models.map(\.featureChannels), seed: 2, temperature: 3)
        try check(m, c, [param(c.models[0], "fc.weight"), param(c.models[1], "block3.layer.0.conv1.weight"), param(c.models[2], "bn1.bias")])
        let input = StepInput(images: Array(repeating: randomTensor([8, 16, 16, 1], seed: 91), count: 3), labels: [0, 1, 2, 3, 4, 0, 3, 1],
                              epoch: 0, step: 0)
        let modules = (0..<3).map { m.peerModule($0)! }
        let discriminators = modules.enumerated().flatMap { k, mod in
            mod.namedParameters().filter { $0.0.hasPrefix("discriminator.") }.map { ("peer\(k).\($0.0)", $0.1.value) }
        }
        XCTAssertEqual(discriminators.count, 3 * 6, "conv1 weight and bias, bn weight and bias, conv2 weight and bias")
        for (name, t) in discriminators {
            gradCheck([t], eps: 1e-2, rtol: 3e-2, atol: 2e-3, maxCoordinates: 8, "afd discriminator loss, \(name)") { _ in
                (try? m.phaseStep(0, input, cohort: c).objective) ?? Tensor(scalar: .nan)
            }
        }
        let adapters = modules.enumerated().compactMap { k, mod in
            mod.namedParameters().first { $0.0 == "adapter.weight" }.map { ("peer\(k).adapter.weight", $0.1.value) }
        }
        XCTAssertEqual(adapters.map(\.0), ["peer1.adapter.weight", "peer2.adapter.weight"], "the cycle resnet8 → wrn10_2 → resnet8 → resnet8: channels change into peers 1 and 2")
        for (name, t) in adapters + [param(c.models[1], "block2.layer.0.conv2.weight"), param(c.models[2], "layer3.0.bn2.weight")] {
            gradCheck([t], eps: 1e-2, rtol: 3e-2, atol: 2e-3, maxCoordinates: 8, "afd adversarial loss, \(name)") { _ in
                guard (try? m.phaseStep(0, input, cohort: c)) != nil, let r = try? m.phaseStep(1, input, cohort: c) else { return Tensor(scalar: .nan) }
                return r.objective
            }
        }
    }

    /// The least-squares losses against their definitions, values and gradients.
    /// MCL: the contrastive terms (banks at random rows, negatives of other classes), the last branch's KL and
    /// every CE, with respect to an embedding head, a branch, the shared stem (conv1..layer1) and a classifier.
    /// (conv1's weight is left out: each coordinate moves a whole channel of 2048 pre-activations, enough of which
    /// cross the ReLU kink at any usable step that the central difference is off by several percent for every
    /// method, ONE's included.)
    func testMCL() throws {
        let c = try cohort(["resnet8", "resnet8", "resnet8"], sharesStem: true, stemEnd: 1)
        let trainLabels = Self.labels + (0..<32).map { $0 % 5 }
        var g = Generator(seed: 8)
        let heads = (0..<3).map { _ in EmbeddingHead(c.models[0].featureChannels, 16, generator: &g) }
        let banks = (0..<3).map { _ in MemoryBank(rows: trainLabels.count, dim: 16, generator: &g) }
        let m = MCL(trainLabels: trainLabels, classes: 5, heads: heads, banks: banks, seed: 1,
                    negatives: 12, contrastWeight: 1)
        XCTAssertEqual(c.stem!.runner.stemModuleNames, ["conv1", "bn1", "layer1"])
        try check(m, c, [param(heads[1], "linear.weight"), param(c.models[2], "layer2.0.conv1.weight"), param(c.models[2], "fc.weight")])
        // Through the stem every branch's embedding moves at once, and exp(⟨m, e⟩/0.1) curves enough over a usable
        // step to spoil the central difference: the stem is checked at τ = 1, the same formula.
        let smooth = MCL(trainLabels: trainLabels, classes: 5, heads: heads, banks: banks, seed: 1,
                         negatives: 12, tau: 1, contrastWeight: 1)
        try check(smooth, c, [param(c.models[0], "bn1.weight"), param(c.models[0], "layer1.0.conv2.weight")])
    }

    /// MCL's negatives: K distinct items of other classes per sample (with replacement only when fewer exist),
    /// the sample itself first, the same for the same (seed, epoch, step, position).
    func testMCLNegatives() {
        let labels = (0..<50).map { $0 % 5 }
        var g = Generator(seed: 1)
        let make = { (k: Int, g: inout Generator) in
            MCL(trainLabels: labels, classes: 5, heads: [], banks: [], seed: 4, negatives: k) }
        let m = make(30, &g)
        let items = [3, 17, 42], idx = m.contrastIndices(items: items, labels: items.map { labels[$0] }, epoch: 2, step: 7)
        XCTAssertEqual(idx.count, 3 * 31)
        for (b, t) in items.enumerated() {
            let row = Array(idx[(b * 31)..<((b + 1) * 31)])
            XCTAssertEqual(row[0], t)
            XCTAssertEqual(Set(row.dropFirst()).count, 30, "without replacement")
            XCTAssertTrue(row.dropFirst().allSatisfy { labels[$0] != labels[t] }, "negatives are of other classes")
        }
        XCTAssertEqual(idx, m.contrastIndices(items: items, labels: items.map { labels[$0] }, epoch: 2, step: 7))
        XCTAssertNotEqual(idx, m.contrastIndices(items: items, labels: items.map { labels[$0] }, epoch: 2, step: 8))
        let many = make(45, &g).contrastIndices(items: [0], labels: [0], epoch: 0, step: 0)
        XCTAssertEqual(many.count, 46)
        XCTAssertTrue(many.dropFirst().allSatisfy { labels[$0] != 0 }, "with replacement from the 40 others")
    }

    /// The contrastive term against the official formula written out in doubles.
    func testMemoryContrastLossValue() {
        let n = 3, k = 4, dataCount = 50
        let x = randomTensor([n, k + 1], seed: 5)
        let got = memoryContrastLoss(x, dataCount: dataCount).item
        let s: [Double] = (0..<x.count).map { Foundation.exp(Double(x.data[$0])) }
        let mean: Double = s.reduce(0, +) / Double(s.count)
        let z: Double = mean * Double(dataCount), c: Double = Double(k) / Double(dataCount)
        var want = 0.0
        for b in 0..<n {
            let p0: Double = s[b * (k + 1)] / z
            want += Foundation.log(p0 / (p0 + c + 1e-7))
            for j in 1...k {
                let pj: Double = s[b * (k + 1) + j] / z
                want += Foundation.log(c / (pj + c + 1e-7))
            }
        }
        XCTAssertEqual(Double(got), -want / Double(n), accuracy: 1e-4 * abs(want))
    }

    /// OEC (BOC-KD's student_forward): 0.7·Σ_j CE of the students, the stage-map MSE through the adapters against
    /// student 0's detached maps, and the KL terms, with respect to student 0's stages, a small student, an adapter
    /// and the shared base; with our teacher CE on, the same check.
    func testOEC() throws {
        let names = (0..<3).map { OEC.studentModel("resnet8", $0, of: 3) }
        XCTAssertEqual(names, ["resnet8", "resnet8_w0.6666666666666666", "resnet8_w0.3333333333333333"])
        let c = try cohort(names, sharesStem: true, stemEnd: 0)
        XCTAssertEqual(c.models.map(\.branchStageChannels), [[16, 32, 64], [10, 21, 42], [5, 10, 21]])
        var g = Generator(seed: 9)
        let adapters = (0..<3).map { j in j == 0 ? nil : StageAdapters(from: c.models[j].branchStageChannels, to: [16, 32, 64], generator: &g) }
        let m = OEC(student0Channels: [16, 32, 64], adapters: adapters)
        XCTAssertEqual(m.termNames, ["ce_students", "feature_mse", "kl"])
        try check(m, c, [param(c.models[0], "layer1.0.conv2.weight"), param(c.models[0], "layer3.0.bn2.weight"),
                         param(c.models[2], "layer2.0.conv1.weight"), param(adapters[1]!, "stage2.weight"),
                         param(c.models[0], "bn1.bias")])
        // Our option: the teacher's CE beside the official terms.
        let withCE = OEC(student0Channels: [16, 32, 64], adapters: adapters, teacherWeight: 0.7)
        XCTAssertEqual(withCE.termNames, ["ce_students", "feature_mse", "kl", "ce_teacher"])
        try check(withCE, c, [param(c.models[1], "fc.weight"), param(c.models[2], "layer1.0.conv1.weight"),
                              param(c.models[0], "bn1.bias")])
    }

    /// OEC's objective term by term, as BOC-KD computes it: 0.7·Σ_j CE(z_j) (no CE of z_T), and student 0's stage
    /// maps detached, so the feature terms send no gradient to student 0's stages (only its CE and KL do).
    func testOECObjectiveIsTheOfficialOne() throws {
        let names = (0..<3).map { OEC.studentModel("resnet8", $0, of: 3) }
        let c = try cohort(names, sharesStem: true, stemEnd: 0)
        var g = Generator(seed: 9)
        let adapters = (0..<3).map { j in j == 0 ? nil : StageAdapters(from: c.models[j].branchStageChannels, to: [16, 32, 64], generator: &g) }
        let x = randomTensor([8, 16, 16, 1], seed: 90)
        let input = StepInput(images: Array(repeating: x, count: 3), labels: Self.labels, epoch: 5, step: 0, indices: Array(0..<8))
        let full = try OEC(student0Channels: [16, 32, 64], adapters: adapters).step(input, cohort: c)
        let logits = c.logits(x), teacher = meanLogits(logits)
        let ce = logits.map { crossEntropy($0, labels: Self.labels).item }.reduce(0, +)
        let kl = logits.map { klDivergence(student: $0, teacher: teacher, temperature: 2).item }.reduce(0, +)
        XCTAssertEqual(full.terms["ce_students"]!, 0.7 * ce, accuracy: 1e-5 * ce)
        XCTAssertEqual(full.terms["kl"]!, 0.15 * kl, accuracy: 1e-4 * max(kl, 1e-3))
        XCTAssertEqual(full.objective.item, full.terms.values.reduce(0, +), accuracy: 1e-5 * full.objective.item)
        // Only the feature terms: student 0's stage weights get no gradient through its (detached) maps.
        let featureOnly = OEC(student0Channels: [16, 32, 64], adapters: adapters, featureWeight: 1, kdWeight: 0, studentCEWeight: 0)
        let w0 = param(c.models[0], "layer2.0.conv1.weight").1, w1 = param(c.models[1], "layer2.0.conv1.weight").1
        w0.zeroGrad(); w1.zeroGrad()
        try featureOnly.step(input, cohort: c).objective.backward()
        XCTAssertEqual(w0.grad.map { $0.array.map(abs).max()! } ?? 0, 0, "student 0's maps are detached in the feature terms")
        XCTAssertGreaterThan(w1.grad!.array.map(abs).max()!, 0, "student 1 learns from them")
    }

    /// OKDHP on class logits: every branch's CE and KL to the aggregated ensemble (not detached) and the
    /// ensemble's CE, with respect to the aggregation unit, a branch and the shared stem.
    func testOKDHP() throws {
        let c = try cohort(["resnet8", "resnet8", "resnet8"], sharesStem: true)
        var g = Generator(seed: 11)
        let fau = FeatureAggregationUnit(channels: c.models[0].stemChannels, hidden: 8, outputs: 5, branches: 3, generator: &g)
        let m = OKDHP(fau: fau, rampUpEpochs: 0)
        try check(m, c, [param(fau, "conv5.weight"), param(fau, "branch1.weight"), param(fau, "bn7.bias"),
                         param(c.models[1], "layer3.0.conv2.weight"), param(c.models[0], "layer2.0.bn1.weight")])
    }

    /// OKDHP's dense path: maps [N, H, W, K] with JointsMSE and the pixel-wise KL to the aggregated maps, by finite
    /// differences with respect to the branch maps, the shared feature and the aggregation unit; and the KL's
    /// normalisation against the official JointsKLDLoss written out (sum over samples, maps and pixels / (N·H·W)).
    func testOKDHPDenseMaps() throws {
        let c = try cohort(["resnet8", "resnet8"], sharesStem: true)
        var g = Generator(seed: 12)
        let fau = FeatureAggregationUnit(channels: 4, hidden: 6, outputs: 3, branches: 2, generator: &g)
        let m = OKDHP(fau: fau, rampUpEpochs: 0)
        let maps = (0..<2).map { randomTensor([2, 5, 4, 3], seed: 20 + UInt64($0)) }
        let x = randomTensor([2, 6, 6, 4], seed: 30), target = randomTensor([2, 5, 4, 3], seed: 31)
        let f = { (_: [Tensor]) -> Tensor in
            (try? m.objective(local: maps, shared: x, target: .maps(target), epoch: 0, cohort: c).objective) ?? Tensor(scalar: .nan)
        }
        gradCheck(maps + [x], eps: 1e-2, rtol: 3e-2, atol: 2e-3, "okdhp dense maps and shared feature", f)
        for name in ["conv3.weight", "bn5.weight", "fc.weight", "branch0.bias"] {
            gradCheck([param(fau, name).1], eps: 1e-2, rtol: 3e-2, atol: 2e-3, "okdhp dense \(name)", f)
        }
        let o = maps[0], e = maps[1]
        var want = 0.0
        for n in 0..<2 {
            for k in 0..<3 {
                let pix = (0..<20).map { (n * 20 + $0) * 3 + k }
                let lo = pix.map { Double(o.data[$0]) }, le = pix.map { Double(e.data[$0]) }
                let zo = Foundation.log(lo.map { Foundation.exp($0) }.reduce(0, +)), ze = Foundation.log(le.map { Foundation.exp($0) }.reduce(0, +))
                for i in 0..<20 { want += Foundation.exp(le[i] - ze) * ((le[i] - ze) - (lo[i] - zo)) }
            }
        }
        XCTAssertEqual(Double(OKDHP.consistency(o, e).item), want / Double(2 * 5 * 4), accuracy: 1e-5)
        XCTAssertEqual(OKDHP.task(o, .maps(e)).item, mseLoss(o, e).item / 2)
    }

    func testLSGANLosses() {
        let real = Tensor(shape: [3], values: [0.9, 0.2, 0.6]), fake = Tensor(shape: [3], values: [0.1, 0.7, 0.4])
        XCTAssertEqual(lsganDiscriminatorLoss(real: real, fake: fake).item, (0.01 + 0.64 + 0.16) / 3 + (0.01 + 0.49 + 0.16) / 3, accuracy: 1e-6)
        XCTAssertEqual(lsganGeneratorLoss(fake: fake).item, (0.81 + 0.09 + 0.36) / 3, accuracy: 1e-6)
        gradCheck([real, fake], eps: 1e-3, "LSGAN discriminator loss") { lsganDiscriminatorLoss(real: $0[0], fake: $0[1]) }
        gradCheck([fake], eps: 1e-3, "LSGAN generator loss") { lsganGeneratorLoss(fake: $0[0]) }
    }
}
