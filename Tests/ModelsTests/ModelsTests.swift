import Layers
import Models
import Tensors
import TestSupport
import XCTest

final class ModelsTests: XCTestCase {
    func testParameterCountsMatchPyTorchDefinitions() throws {
        let expected100 = ["resnet8": 83_892, "resnet14": 181_108, "resnet20": 278_324, "resnet32": 472_756,
                           "resnet56": 861_620, "resnet110": 1_736_564, "resnet8x4": 1_233_540,
                           "resnet32x4": 7_433_860, "wrn16_2": 703_284, "wrn40_2": 2_255_156,
                           // Bottleneck ResNets, counted by hand from the layout (1×1, 3×3, 1×1 convolutions with BN,
                           // projection where the shape changes): ResNet-164 is the known 1.73M.
                           "resnet56b": 614_452, "resnet110b": 1_170_868, "resnet164b": 1_727_284]
        for (name, count) in expected100 {
            var g = Generator(seed: 0)
            XCTAssertEqual(try ModelZoo.make(name, classes: 100, generator: &g).parameterCount, count, name)
        }
        for (name, count) in ["resnet20": 272_474, "resnet32": 466_906, "resnet56b": 591_322, "resnet110b": 1_147_738] {
            var g = Generator(seed: 0)
            XCTAssertEqual(try ModelZoo.make(name, classes: 10, generator: &g).parameterCount, count, name)
        }
        var g = Generator(seed: 0)
        XCTAssertThrowsError(try ModelZoo.make("resnet21", classes: 10, generator: &g))
        // RepDistiller's heterogeneous-pair models (vggD is its vggD_bn), counted from its definitions with PyTorch.
        for (name, count) in ["vgg8": 3_965_028, "vgg11": 9_277_284, "vgg13": 9_462_180, "vgg16": 14_774_436, "vgg19": 20_086_692,
                              "mobilenetv2": 812_836, "shufflenetv1": 949_258, "shufflenetv2": 1_355_528] {
            XCTAssertEqual(try ModelZoo.make(name, classes: 100, generator: &g).parameterCount, count, name)
        }
        XCTAssertThrowsError(try ModelZoo.make("vgg99", classes: 10, generator: &g)) { error in
            XCTAssertTrue("\(error)".contains("resnet20"), "the message lists known models")
        }
    }

    func testStateDictNames() throws {
        var g = Generator(seed: 0)
        let resnet = try ModelZoo.make("resnet20", classes: 10, generator: &g)
        let names = resnet.namedState().map { $0.0 }
        for n in ["conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
                  "layer2.0.downsample.1.num_batches_tracked", "layer3.2.bn2.bias", "fc.weight", "fc.bias"] {
            XCTAssertTrue(names.contains(n), n)
        }
        XCTAssertFalse(names.contains("layer1.0.downsample.0.weight"), "no projection where shapes match")
        XCTAssertEqual(names.first, "conv1.weight")
        let wrn = try ModelZoo.make("wrn16_2", classes: 10, generator: &g)
        let wnames = wrn.namedState().map { $0.0 }
        for n in ["conv1.weight", "block1.layer.0.bn1.weight", "block1.layer.0.convShortcut.weight",
                  "block2.layer.1.conv2.weight", "bn1.running_mean", "fc.bias"] {
            XCTAssertTrue(wnames.contains(n), n)
        }
        XCTAssertEqual(try ModelZoo.make("resnet8x4", classes: 10, generator: &g).namedState()
            .first { $0.0 == "layer1.0.downsample.0.weight" }?.1.shape, [64, 32, 1, 1])
        // Bottleneck blocks under the official names; layer1's first block projects 16 → 64 channels.
        let b = try ModelZoo.make("resnet56b", classes: 10, generator: &g)
        let shapes = Dictionary(uniqueKeysWithValues: b.namedState().map { ($0.0, $0.1.shape) })
        XCTAssertEqual(shapes["layer1.0.conv1.weight"], [16, 16, 1, 1])
        XCTAssertEqual(shapes["layer1.0.conv3.weight"], [64, 16, 1, 1])
        XCTAssertEqual(shapes["layer1.0.downsample.0.weight"], [64, 16, 1, 1])
        XCTAssertEqual(shapes["layer2.0.conv2.weight"], [32, 32, 3, 3])
        XCTAssertEqual(shapes["layer3.5.bn3.weight"], [256])
        XCTAssertNil(shapes["layer1.1.downsample.0.weight"])
        XCTAssertEqual(shapes["fc.weight"], [10, 256])
        XCTAssertEqual(b.stemChannels, 128)
        XCTAssertEqual(b.featureChannels, 256)
        XCTAssertThrowsError(try ModelZoo.make("resnet57b", classes: 10, generator: &g), "depth must be 9n + 2")
    }

    /// VGG and MobileNetV2: RepDistiller's state-dict names, their taps (its `feats`) on 32-pixel inputs, and logits
    /// through the taps equal to the model's.
    func testHeterogeneousPairModels() throws {
        var g = Generator(seed: 0)
        let vgg = try ModelZoo.make("vgg13", classes: 10, generator: &g)
        let vnames = Dictionary(uniqueKeysWithValues: vgg.namedState().map { ($0.0, $0.1.shape) })
        XCTAssertEqual(vnames["block0.0.weight"], [64, 3, 3, 3])
        XCTAssertEqual(vnames["block0.0.bias"], [64])
        XCTAssertEqual(vnames["block0.4.running_var"], [64], "the second conv's BN: conv, BN, ReLU, conv, BN")
        XCTAssertNil(vnames["block0.5.weight"], "the block's last ReLU is applied outside it")
        XCTAssertEqual(vnames["classifier.weight"], [10, 512])
        let mob = try ModelZoo.make("mobilenetv2", classes: 10, generator: &g)
        let mnames = Dictionary(uniqueKeysWithValues: mob.namedState().map { ($0.0, $0.1.shape) })
        XCTAssertEqual(mnames["conv1.0.weight"], [16, 3, 3, 3])
        XCTAssertEqual(mnames["blocks.0.0.conv.3.weight"], [16, 1, 3, 3], "depthwise, t = 1")
        XCTAssertEqual(mnames["blocks.1.0.conv.0.weight"], [48, 8, 1, 1])
        XCTAssertEqual(mnames["blocks.6.0.conv.7.running_mean"], [160])
        XCTAssertEqual(mnames["conv2.0.weight"], [1280, 160, 1, 1])
        XCTAssertEqual(mnames["classifier.0.weight"], [10, 1280])
        // The pooled feature is after the head convolution where there is one (mdistiller's pooled_feat).
        XCTAssertEqual([vgg.pooledChannels, mob.pooledChannels], [512, 1280])
        for (m, sides, channels) in [(vgg, [32, 16, 8, 4, 4], [64, 128, 256, 512, 512]), (mob, [16, 16, 8, 4, 2], [16, 12, 16, 48, 160])] {
            m.eval()
            let x = randomTensor([2, 32, 32, 3], seed: 4)
            let taps = m.taps(x)
            XCTAssertEqual(taps.map { $0.shape[1] }, sides)
            XCTAssertEqual(taps.map { $0.shape[3] }, channels)
            XCTAssertEqual(m.tapChannels, channels)
            assertClose(m.head(taps.last!), m(x), rtol: 1e-5, atol: 1e-6)
        }
        // ShuffleNet V1 and V2: names and shapes as RepDistiller's (296 and 338 state-dict entries there), 4×4 last maps.
        let v1 = try ModelZoo.make("shufflenetv1", classes: 10, generator: &g)
        let v1names = Dictionary(uniqueKeysWithValues: v1.namedState().map { ($0.0, $0.1.shape) })
        XCTAssertEqual(v1names.count, 296)
        XCTAssertEqual(v1names["layer1.0.conv1.weight"], [54, 24, 1, 1], "the first block's conv1 is ungrouped")
        XCTAssertEqual(v1names["layer1.0.conv3.weight"], [216, 18, 1, 1], "216 + 24 pooled input channels = 240")
        XCTAssertEqual(v1names["layer2.3.conv1.weight"], [120, 160, 1, 1], "groups 3")
        XCTAssertEqual(v1names["layer3.3.conv2.weight"], [240, 1, 3, 3], "depthwise")
        XCTAssertEqual(v1names["linear.weight"], [10, 960])
        let v2 = try ModelZoo.make("shufflenetv2", classes: 10, generator: &g)
        let v2names = Dictionary(uniqueKeysWithValues: v2.namedState().map { ($0.0, $0.1.shape) })
        XCTAssertEqual(v2names.count, 338)
        XCTAssertEqual(v2names["layer1.0.conv1.weight"], [24, 1, 3, 3], "the down block's left depthwise conv")
        XCTAssertEqual(v2names["layer1.0.conv5.weight"], [58, 58, 1, 1])
        XCTAssertEqual(v2names["layer2.7.bn3.running_var"], [116], "the basic block transforms half the channels")
        XCTAssertEqual(v2names["conv2.weight"], [1024, 464, 1, 1])
        XCTAssertEqual(v2names["linear.weight"], [10, 1024])
        XCTAssertEqual([v1.pooledChannels, v2.pooledChannels], [960, 1024])
        for (m, channels) in [(v1, [24, 240, 480, 960]), (v2, [24, 116, 232, 464])] {
            m.eval()
            let x = randomTensor([2, 32, 32, 3], seed: 6)
            let taps = m.taps(x)
            XCTAssertEqual(taps.map { $0.shape[1] }, [32, 16, 8, 4])
            XCTAssertEqual(taps.map { $0.shape[3] }, channels)
            XCTAssertEqual(m.tapChannels, channels)
            assertClose(m.head(taps.last!), m(x), rtol: 1e-5, atol: 1e-6)
        }
        for name in ["vgg8", "mobilenetv2", "shufflenetv1", "shufflenetv2"] {  // Fashion-MNIST's 28-pixel grey images
            let m = try ModelZoo.make(name, classes: 10, inChannels: 1, generator: &g)
            XCTAssertEqual(m(randomTensor([2, 28, 28, 1], seed: 5)).shape, [2, 10], name)
        }
    }

    /// Width-scaled CIFAR ResNets (OEC's students): stage widths ⌊S·[16, 32, 64]⌋ after an unscaled conv1, and
    /// their parameter counts (what the compression buys).
    func testWidthScaledResNets() throws {
        var g = Generator(seed: 1)
        let widths = try [1.0, 0.8, 0.6, 0.4, 0.2].map { s -> [Int] in
            let m = try ModelZoo.make(s == 1 ? "resnet32" : "resnet32_w\(s)", classes: 100, generator: &g)
            return try XCTUnwrap(m as? CIFARResNet).channels
        }
        XCTAssertEqual(widths, [[16, 16, 32, 64], [16, 12, 25, 51], [16, 9, 19, 38], [16, 6, 12, 25], [16, 3, 6, 12]])
        let counts = try ["resnet32", "resnet32_w0.8", "resnet32_w0.2"].map { try ModelZoo.make($0, classes: 100, generator: &g).parameterCount }
        // conv1·bn1 464 + layer1 23,360 + layer2 88,768 + layer3 353,664 (1×1-conv shortcuts) + fc 6,500
        XCTAssertEqual(counts[0], 472_756, "resnet32 for 100 classes")
        XCTAssertLessThan(counts[2], counts[1])
        XCTAssertThrowsError(try ModelZoo.make("resnet32_w0", classes: 10, generator: &g))
        XCTAssertThrowsError(try ModelZoo.make("resnet32_w1.5", classes: 10, generator: &g))
    }

    /// The stem's end moves (after conv1·bn1, layer1 or layer2) without changing what the model computes.
    func testStemEndMoves() throws {
        for (name, end, stem) in [("resnet8", 0, ["conv1", "bn1"]), ("resnet8", 1, ["conv1", "bn1", "layer1"]), ("wrn10_1", 1, ["conv1", "block1"])] {
            var g = Generator(seed: 1)
            let m = try ModelZoo.make(name, classes: 10, inChannels: 1, generator: &g)
            m.eval()
            let x = randomTensor([2, 16, 16, 1], seed: 2), before = m(x)
            try m.setStemEnd(end)
            XCTAssertEqual(m.stemModuleNames, stem)
            let h = m.stem(x)
            XCTAssertEqual(h.shape.last, m.stemChannels)
            let stages = m.branchStages(h)
            XCTAssertEqual(stages.map { $0.shape.last! }, m.branchStageChannels)
            assertClose(m.head(stages.last!), before, name)
            XCTAssertThrowsError(try m.setStemEnd(3))
        }
    }

    /// Model `name` (10 classes) in evaluation mode with every vector (batch norm's affine terms and running
    /// statistics, biases) moved away from its initial value.
    func evalModelWithMovedVectors(_ name: String, seed: UInt64) throws -> Classifier {
        var g = Generator(seed: seed)
        let m = try ModelZoo.make(name, classes: 10, generator: &g)
        for (key, p) in m.namedState() where p.value.rank == 1 {
            let v = p.value
            for i in 0..<v.count { v.data[i] = key.hasSuffix("running_var") ? 0.5 + g.uniform() : g.normal() * 0.2 + (key.hasSuffix("weight") ? 1 : 0) }
        }
        m.eval()
        return m
    }

    /// Evaluation without the tape runs each convolution with the batch norm after it (and the residual sum and
    /// ReLU that follow) as one pass: logits and feature taps equal the unfused layers' bit for bit, in every model
    /// family, with non-trivial running statistics.
    func testInferenceFusionIsBitIdentical() throws {
        defer { inferenceFusionEnabled = true }
        for name in ["resnet8", "resnet20b", "vgg8", "mobilenetv2", "shufflenetv1", "shufflenetv2"] {
            let m = try evalModelWithMovedVectors(name, seed: 5)
            let x = randomTensor([3, 32, 32, 3], seed: 6)
            var outputs: [[[Float]]] = []
            for fused in [true, false] {
                inferenceFusionEnabled = fused
                outputs.append(withoutGradients { [m(x).array] + m.taps(x).map(\.array) })
            }
            XCTAssertEqual(outputs[0].count, outputs[1].count, name)
            for (k, (a, b)) in zip(outputs[0], outputs[1]).enumerated() {
                let differing = zip(a, b).filter { $0 != $1 }.count
                XCTAssertTrue(a.count == b.count && differing == 0, "\(name), output \(k): \(differing) of \(a.count) values differ")
            }
        }
    }

    /// Inference runs ResNet's, MobileNetV2's and ShuffleNet's blocks piece by piece of the batch, the pieces on several
    /// threads at once: logits and taps at 1 and 3 threads are equal bit for bit, and close to the whole-batch
    /// blocks' (OpenBLAS picks its kernel by the product's size: the last bits may differ, as across batch sizes),
    /// with pieces of one image and of several (uneven) images, and in a batch of one.
    func testInferenceInImageChunksMatchesTheWholeBatch() throws {
        let saved = inferenceChunkPixels, savedThreads = Threads.count
        defer { inferenceChunkPixels = saved; Threads.set(savedThreads) }
        for name in ["resnet8", "mobilenetv2", "shufflenetv1", "shufflenetv2"] {
            let m = try evalModelWithMovedVectors(name, seed: 7)
            for batch in [7, 1] {
                let x = randomTensor([batch, 32, 32, 3], seed: 8)
                func run(_ pixels: Int, threads: Int) -> [Tensor] {
                    inferenceChunkPixels = pixels
                    Threads.set(threads)
                    return withoutGradients { [m(x)] + m.taps(x) }
                }
                let whole = run(0, threads: 1)
                for pixels in [200, 600, 2048] {
                    let one = run(pixels, threads: 1), three = run(pixels, threads: 3)
                    XCTAssertEqual(one.count, whole.count, name)
                    for (k, (a, b)) in zip(one, three).enumerated() {
                        let differing = zip(a.array, b.array).filter { $0 != $1 }.count
                        XCTAssertTrue(a.shape == b.shape && differing == 0,
                                      "\(name), batch \(batch), \(pixels) pixels, output \(k): \(differing) of \(a.count) values differ between 1 and 3 threads")
                        assertClose(a, whole[k], rtol: 1e-4, atol: 1e-5, "\(name), batch \(batch), \(pixels) pixels, output \(k)")
                    }
                }
            }
        }
    }

    func testStemBranchHeadComposeAndGrayscaleInput() throws {
        for name in ["resnet8", "wrn16_1"] {
            var g = Generator(seed: 1)
            let m = try ModelZoo.make(name, classes: 10, inChannels: 1, generator: &g)
            m.eval()
            let x = randomTensor([2, 28, 28, 1], seed: 2)
            let h = m.stem(x)
            XCTAssertEqual(h.shape, [2, 14, 14, m.stemChannels], name)
            let f = m.branch(h)
            XCTAssertEqual(f.shape, [2, 7, 7, m.featureChannels], name)
            assertClose(m.head(f), m(x), name)
            XCTAssertEqual(m(x).shape, [2, 10])
        }
    }

    /// Finite differences through a whole ResNet-8 loss (batch norm in training mode) on sampled coordinates
    /// of the input and of parameters in every part of the network. A network of ReLUs is piecewise linear: a
    /// perturbation can cross a kink somewhere and spoil that one difference quotient, so a coordinate passes
    /// when either of two step sizes agrees with the analytic gradient, and 90% of coordinates must pass
    /// (a wrong backward fails nearly all coordinates of the tensor it touches).
    func testResNet8LossGradient() throws {
        var g = Generator(seed: 3)
        let m = try ModelZoo.make("resnet8", classes: 5, generator: &g)
        let x = randomTensor([6, 8, 8, 3], seed: 4)
        x.requiresGrad = true
        let labels = [0, 3, 1, 4, 2, 2]
        let named = m.namedParameters()
        let probes = [("input", x)] + ["conv1.weight", "bn1.bias", "layer1.0.conv2.weight", "layer2.0.downsample.0.weight",
                                       "layer2.0.bn1.weight", "layer3.0.conv1.weight", "layer3.0.bn2.bias", "fc.weight", "fc.bias"]
            .map { n in (n, named.first { $0.0 == n }!.1.value) }
        crossEntropy(m(x), labels: labels).backward()
        func loss() -> Double { withoutGradients { Double(crossEntropy(m(x), labels: labels).item) } }
        var passed = 0, total = 0
        var failures: [String] = []
        for (name, t) in probes {
            for _ in 0..<6 {
                let i = g.int(below: t.count)
                let analytic = t.grad!.data[i]
                let ok = [Float(1e-3), 3e-4].contains { eps in
                    let saved = t.data[i]
                    t.data[i] = saved + eps; let up = loss()
                    t.data[i] = saved - eps; let down = loss()
                    t.data[i] = saved
                    let numeric = Float((up - down) / Double(2 * eps))
                    return abs(numeric - analytic) <= 2e-3 + 0.1 * abs(numeric)
                }
                total += 1
                if ok { passed += 1 } else { failures.append("\(name)[\(i)]") }
            }
        }
        XCTAssertGreaterThanOrEqual(Double(passed) / Double(total), 0.9, "failed coordinates: \(failures)")
    }

    func testResNet8OverfitsSmallBatch() throws {
        var g = Generator(seed: 5)
        let m = try ModelZoo.make("resnet8", classes: 10, generator: &g)
        let x = Tensor.randn([64, 16, 16, 3], generator: &g)
        let labels = (0..<64).map { _ in g.int(below: 10) }
        let opt = SGD(parameters: m.namedParameters(), lr: 0.05, momentum: 0.9, weightDecay: 0)
        var loss: Float = .infinity
        var steps = 0
        while steps < 400 && loss > 0.05 {
            opt.zeroGrad()
            let l = crossEntropy(m(x), labels: labels)
            l.backward()
            opt.step()
            loss = l.item
            steps += 1
        }
        XCTAssertLessThan(loss, 0.05, "after \(steps) steps")
        m.eval()
        let accuracy = zip(m(x).argmaxLastAxis(), labels).filter { $0 == $1 }.count
        XCTAssertGreaterThanOrEqual(accuracy, 60, "eval-mode accuracy on the memorised batch")
    }
}
