import Collectives
import Distillation
import Foundation
import Layers
import Models
import TensorFiles
import Tensors
import TestSupport
import XCTest

/// The offline feature methods: taps, each loss against its official formula written out, and finite-difference
/// checks of each method's whole objective at full weight with respect to the student and its adapters. The
/// teacher is a resnet8x4 (other channels than the resnet8 student, so every adapter is exercised), or a vgg8 whose
/// final map is half the student's side (the heterogeneous case: maps meet at the smaller size).
final class FeatureMethodTests: XCTestCase {
    static let labels = [0, 1, 2, 3, 4, 0, 3, 1]
    static let trainLabels = labels + (0..<32).map { $0 % 5 }
    var teacherPaths: [String: String] = [:]

    override func setUpWithError() throws {
        var g = Generator(seed: 3)
        for name in ["resnet8x4", "vgg8"] {
            let teacher = try ModelZoo.make(name, classes: 5, inChannels: 1, generator: &g)
            teacherPaths[name] = NSTemporaryDirectory() + "distill-teacher-\(UUID().uuidString).safetensors"
            try teacher.saveSafeTensors(to: teacherPaths[name]!)
        }
    }

    override func tearDown() { for p in teacherPaths.values { try? FileManager.default.removeItem(atPath: p) } }

    /// A method from the registry for a resnet8 student of 16×16 one-channel images, and the student.
    func make(_ name: String, _ keys: [String: OptionValue] = [:], teacher: String = "resnet8x4") throws -> (DistillationMethod, Cohort) {
        let spec = try XCTUnwrap(MethodRegistry.spec(name))
        let options = try spec.resolve(keys.merging(["teacher_model": .string(teacher), "teacher_checkpoint": .string(teacherPaths[teacher]!)]) { $1 })
        let placement = try PeerPlacement(peers: 1, ranks: 1, rank: 0)
        let context = MethodContext(models: ["resnet8"], placement: placement, classes: 5, inChannels: 1, seed: 4, options: options,
                                    trainLabels: Self.trainLabels, imageSize: (16, 16))
        var g = Generator(seed: 1)
        let method = try spec.make(context, &g)
        var sg = Generator(seed: 40)
        let student = try ModelZoo.make("resnet8", classes: 5, inChannels: 1, generator: &sg)
        return (method, Cohort(placement: placement, comm: try MPICommunicator.world(), models: [student], stem: nil))
    }

    func param(_ m: Module, _ name: String) -> (String, Tensor) {
        (name, m.namedParameters().first { $0.0 == name }!.1.value)
    }

    /// d(objective)/d(tensors) by central differences for one step on a fixed batch, past every warm-up.
    func check(_ name: String, _ keys: [String: OptionValue] = [:], adapters: [String] = [], eps: Float = 1e-2,
               teacher: String = "resnet8x4", file: StaticString = #filePath, line: UInt = #line) throws {
        let (method, c) = try make(name, keys, teacher: teacher)
        let x = randomTensor([8, 16, 16, 1], seed: 90)
        let input = StepInput(images: [x], labels: Self.labels, epoch: 100, step: 3, indices: Array(0..<8))
        // Deep conv weights of resnet8 on these inputs defeat float32 central differences even for the plain logits
        // (numeric 0.0318 at h = 2e-3, 0.0324 at 5e-4 against an analytic 0.0341): layer1 is reached through its
        // batch norm's scale instead, whose response is close to linear.
        var tensors = [param(c.models[0], "layer3.0.conv2.weight"), param(c.models[0], "layer1.0.bn2.weight"), param(c.models[0], "fc.weight")]
        if let m = method.peerModule(0) { tensors += adapters.map { param(m, $0) } }
        XCTAssertEqual(method.peerModule(0)?.namedParameters().map(\.0).filter { adapters.contains($0) }.count ?? 0, adapters.count,
                       "\(name) has its adapters", file: file, line: line)
        for (label, t) in tensors {
            gradCheck([t], eps: eps, rtol: 3e-2, atol: 2e-3, maxCoordinates: 10, "\(name) \(label)", file: file, line: line) { _ in
                (try? method.step(input, cohort: c).objective) ?? Tensor(scalar: .nan)
            }
        }
    }

    func testFitNetsGradients() throws { try check("fitnets", adapters: ["conv.weight", "conv.bias", "bn.weight"]) }
    /// β = 1000 makes AT's objective curve sharply: checked at a smaller step, and the loss alone on smooth inputs.
    func testATGradients() throws {
        try check("at", eps: 2e-3)
        let t = [randomTensor([2, 8, 8, 5], seed: 2), randomTensor([2, 4, 4, 7], seed: 3)]
        gradCheck([randomTensor([2, 4, 4, 3], seed: 1), randomTensor([2, 4, 4, 6], seed: 4)], eps: 1e-3, "attention transfer") {
            attentionTransferLoss(student: $0, teacher: t)
        }
    }
    func testDKDGradients() throws { try check("dkd") }
    func testCRDGradients() throws { try check("crd", ["nce_k": .int(12), "nce_t": .number(0.5)], adapters: ["embed_s.linear.weight", "embed_t.linear.weight"]) }
    func testMSDCRDGradients() throws {
        try check("msdcrd", adapters: ["proj.weight"])
        try check("msdcrd", ["scales": .string("1+2")], adapters: ["proj.weight"], teacher: "vgg8")
    }
    func testAvatarGradients() throws {
        try check("avatar", adapters: ["align.weight", "align.bias"])
        try check("avatar", ["base": .string("mgd"), "avatars": .int(2), "feat_weight": .number(1e-3)],
                  adapters: ["align.weight", "mgd.generation.0.weight", "mgd.generation.2.bias"])
        try check("avatar", adapters: ["align.weight"], teacher: "vgg8")
    }
    func testKDTermComposesWithFeatureMethods() throws {
        try check("at", ["kd_weight": .number(0.9), "ce_weight": .number(0.1)], eps: 2e-3)
        let (method, c) = try make("fitnets", ["kd_weight": .number(1)])
        let r = try method.step(StepInput(images: [randomTensor([8, 16, 16, 1], seed: 90)], labels: Self.labels, epoch: 0, step: 0, indices: Array(0..<8)), cohort: c)
        XCTAssertGreaterThan(r.terms["kl"]!, 0)
        XCTAssertEqual(method.termNames, ["ce", "kl", "hint"])
    }

    /// Taps: the input block and each stage, the last one the map `head` pools (WRN: after its final bn1·relu, so its
    /// last tap is the raw block3 output, with negative values, as mdistiller's and RepDistiller's WRN feats); logits
    /// through them are the model's.
    func testTaps() throws {
        for name in ["resnet8", "resnet8x4", "wrn16_2", "resnet20b"] {
            var g = Generator(seed: 2)
            let m = try ModelZoo.make(name, classes: 5, inChannels: 1, generator: &g)
            m.eval()
            let x = randomTensor([2, 16, 16, 1], seed: 3)
            let taps = m.taps(x)
            XCTAssertEqual(taps.count, 4, name)
            XCTAssertEqual(taps.map { $0.shape[3] }, m.tapChannels, name)
            XCTAssertEqual(taps.map { $0.shape[1] }, [16, 16, 8, 4], name)
            assertClose(m.head(m.finalMap(lastTap: taps.last!)), m(x), rtol: 1e-5, atol: 1e-6, name)
            let f = m.tapForward(x)
            assertClose(f.logits, m(x), rtol: 1e-5, atol: 1e-6, name)
            XCTAssertEqual(f.pooled.shape, [2, m.pooledChannels], name)
            if name.hasPrefix("wrn") { XCTAssertLessThan(taps.last!.array.min()!, 0, "\(name): the last tap is block3's raw output") }
            XCTAssertEqual(m.tapShapes(height: 16, width: 16, channels: 1), taps.map { Array($0.shape.dropFirst()) }, name)
        }
    }

    /// mdistiller's at(f) = normalize(f.pow(2).mean(1).view(N, −1)) and the mean squared difference, written out.
    func testAttentionMapsAgainstTheFormula() {
        let s = randomTensor([2, 4, 4, 3], seed: 1), t = randomTensor([2, 8, 8, 5], seed: 2)
        let got = attentionTransferLoss(student: [s], teacher: [t]).item
        func at(_ f: Tensor, pool: Int) -> [[Double]] {
            let (n, h, w, c) = (f.shape[0], f.shape[1], f.shape[2], f.shape[3]), oh = h / pool
            return (0..<n).map { b in
                var v = [Double](repeating: 0, count: oh * oh)
                for y in 0..<oh { for x in 0..<oh {
                    for ch in 0..<c {  // pool the map first (mdistiller pools f, then squares)
                        var m = 0.0
                        for dy in 0..<pool { for dx in 0..<pool { m += Double(f.data[((b * h + y * pool + dy) * w + x * pool + dx) * c + ch]) } }
                        m /= Double(pool * pool)
                        v[y * oh + x] += m * m / Double(c)
                    }
                } }
                let norm = max(v.reduce(0) { $0 + $1 * $1 }.squareRoot(), 1e-12)
                return v.map { $0 / norm }
            }
        }
        let a = at(s, pool: 1), b = at(t, pool: 2)
        var want = 0.0
        for i in 0..<2 { for j in 0..<16 { want += (a[i][j] - b[i][j]) * (a[i][j] - b[i][j]) } }
        XCTAssertEqual(Double(got), want / 32, accuracy: 1e-6)
    }

    /// DKD against mdistiller's dkd_loss written out in doubles.
    func testDKDAgainstTheFormula() {
        let zs = randomTensor([3, 5], seed: 4) * 3, zt = randomTensor([3, 5], seed: 5) * 3, labels = [2, 0, 4], T: Double = 4
        let (tckd, nckd) = decoupledKDLoss(student: zs, teacher: zt, labels: labels, alpha: 1, beta: 8, temperature: Float(T))
        var wantT = 0.0, wantN = 0.0
        for b in 0..<3 {
            func softmax(_ z: [Double]) -> [Double] { let m = z.max()!, e = z.map { Foundation.exp($0 - m) }, s = e.reduce(0, +); return e.map { $0 / s } }
            let s = (0..<5).map { Double(zs.data[b * 5 + $0]) / T }, t = (0..<5).map { Double(zt.data[b * 5 + $0]) / T }
            let ps = softmax(s), pt = softmax(t), g = labels[b]
            let bs = [ps[g], 1 - ps[g]], bt = [pt[g], 1 - pt[g]]
            wantT += (0..<2).reduce(0) { $0 + bt[$1] * Foundation.log(bt[$1] / bs[$1]) }
            let others = (0..<5).filter { $0 != g }
            let ns = softmax(others.map { s[$0] }), nt = softmax(others.map { t[$0] })
            wantN += (0..<4).reduce(0) { $0 + nt[$1] * Foundation.log(nt[$1] / ns[$1]) }
        }
        XCTAssertEqual(Double(tckd.item), wantT * T * T / 3, accuracy: 1e-4)
        XCTAssertEqual(Double(nckd.item), 8 * wantN * T * T / 3, accuracy: 1e-3)
    }

    /// U: per-channel standardisation with the batch's biased variance, BatchNorm2d(affine=False) in training mode.
    func testChannelStandardizeIsBatchNormWithoutAffine() throws {
        let x = randomTensor([3, 4, 4, 6], seed: 6)
        let u = try channelStandardize(x, comm: nil)
        let bn = BatchNorm2d(6)
        assertClose(u, bn(x), rtol: 1e-4, atol: 1e-4)
    }

    /// MSDCRD's windows: one global window at scale 1, overlapping half-stride windows below.
    func testMSDCRDWindows() {
        XCTAssertTrue(msdcrdWindow(height: 8, scale: 1) == (8, 4))
        XCTAssertTrue(msdcrdWindow(height: 8, scale: 2) == (4, 2))
        XCTAssertTrue(msdcrdWindow(height: 7, scale: 4) == (1, 1))
        // Identical student and teacher maps: each anchor's positive is its own best match, so the sample-wise
        // loss is below log(batch) and falls as τ falls.
        let f = randomTensor([6, 8, 8, 4], seed: 7)
        let labels = [0, 1, 2, 3, 4, 5]
        let warm = msdcrdLosses(student: f, teacher: f, labels: labels, anchors: 0..<6, scales: [1, 2], tau: 1)
        let cold = msdcrdLosses(student: f, teacher: f, labels: labels, anchors: 0..<6, scales: [1, 2], tau: 0.05)
        XCTAssertLessThan(warm.sample.item, Float(Foundation.log(6.0)))
        XCTAssertLessThan(cold.sample.item, warm.sample.item)
        // Same-class images are not negatives: with every image of one class the sample-wise loss is 0.
        XCTAssertEqual(msdcrdLosses(student: f, teacher: randomTensor([6, 8, 8, 4], seed: 8), labels: [1, 1, 1, 1, 1, 1],
                                    anchors: 0..<6, scales: [2], tau: 0.1).sample.item, 0, accuracy: 1e-6)
    }

    /// Bad keys are named.
    func testBadKeysAreNamed() throws {
        XCTAssertThrowsError(try make("fitnets", ["hint_layer": .int(7)])) { XCTAssertTrue("\($0)".contains("method.hint_layer"), "\($0)") }
        XCTAssertThrowsError(try make("msdcrd", ["scales": .string("1,x")])) { XCTAssertTrue("\($0)".contains("method.scales"), "\($0)") }
        XCTAssertThrowsError(try make("avatar", ["base": .string("l2")])) { XCTAssertTrue("\($0)".contains("method.base"), "\($0)") }
        // resnet8's 4×4 final map against vgg8's 2×2 meets at 2×2; AT's layer taps (16, 8, 4 against 8, 4, 2) too.
        XCTAssertNoThrow(try make("avatar", teacher: "vgg8"))
    }
}
