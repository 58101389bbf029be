// MobileNetV2 for CIFAR as RepDistiller defines it (`models/mobilenetv2.py`, `mobile_half`: expansion T = 6, width
// 0.5), the student of its heterogeneous pairs. conv1 = 3×3 stride-2 conv · BN · ReLU to ⌊32·w⌋ channels; seven
// stages `blocks.0..6` of inverted residuals (t, c, n, s) = (1, 16, 1, 1), (T, 24, 2, 1), (T, 32, 3, 2),
// (T, 64, 4, 2), (T, 96, 3, 1), (T, 160, 3, 2), (T, 320, 1, 1), c scaled by w; each block is `conv` = 1×1 expand ·
// BN · ReLU · 3×3 depthwise (stride s on a stage's first block) · BN · ReLU · 1×1 project · BN, plus the input when
// the stride is 1 and the widths agree (the expansion conv exists even at t = 1, as there); conv2 = 1×1 conv · BN ·
// ReLU to 1280; average pool; `classifier.0` Linear(1280 → classes). Convolutions have no bias. Init as there:
// conv N(0, 2/(k²·C_out)), BN 1, 0, Linear N(0, 0.01²), bias 0. On 32-pixel inputs the last map is 2×2 (its
// AvgPool2d(2) is our global pool); other sizes work too (28 → 2×2).
// Taps (RepDistiller's feats): conv1's output, then blocks 1, 2, 4 and 6's; `head` is conv2 · pool · classifier.
// stem = conv1 · blocks 0–4, branch = blocks 5–6; the stem cannot move.
import Layers
import Tensors

/// An inverted residual block (`conv.0` … `conv.7`).
public final class InvertedResidual: Layer {
    public let conv: Sequential
    public let residual: Bool
    public var isTraining = true
    public init(_ inp: Int, _ oup: Int, stride: Int, expansion t: Int, generator g: inout Generator) {
        let h = inp * t
        conv = Sequential([Conv2d(inp, h, kernelSize: 1, generator: &g), BatchNorm2d(h), ReLU(),
                           Conv2d(h, h, kernelSize: 3, stride: stride, padding: 1, groups: h, generator: &g), BatchNorm2d(h), ReLU(),
                           Conv2d(h, oup, kernelSize: 1, generator: &g), BatchNorm2d(oup)])
        residual = stride == 1 && inp == oup
    }
    public var children: [(String, Module)] { [("conv", conv)] }
    /// The block (in inference, piece by piece of the batch: `inferenceInImageChunks`); with the residual,
    /// conv.6 · conv.7 adds it as it writes (`convBatchNorm`).
    public func callAsFunction(_ x: Tensor) -> Tensor { inferenceInImageChunks(x, isTraining: isTraining, forward) }

    func forward(_ x: Tensor) -> Tensor {
        guard residual else { return conv(x) }
        return convBatchNorm(conv.layers[6] as! Conv2d, conv.layers[7] as! BatchNorm2d, conv.run(x, layers: 0..<6),
                             relu: false, residual: x)
    }
}

public final class MobileNetV2: Classifier {
    public let conv1: Sequential, blocks: Sequential, conv2: Sequential
    public let classifier: Sequential
    public let numClasses: Int
    public var isTraining = true
    let stageChannels: [Int]

    public init(expansion T: Int = 6, width w: Double = 0.5, classes: Int, inChannels: Int = 3, generator g: inout Generator) {
        let settings = [(1, 16, 1, 1), (T, 24, 2, 1), (T, 32, 3, 2), (T, 64, 4, 2), (T, 96, 3, 1), (T, 160, 3, 2), (T, 320, 1, 1)]
        var c = Int(32 * w)
        conv1 = Sequential([Conv2d(inChannels, c, kernelSize: 3, stride: 2, padding: 1, generator: &g), BatchNorm2d(c), ReLU()])
        var stages: [Layer] = [], widths: [Int] = []
        for (t, ch, n, s) in settings {
            let o = Int(Double(ch) * w)
            stages.append(Sequential((0..<n).map { i in
                defer { c = o }
                return InvertedResidual(i == 0 ? c : o, o, stride: i == 0 ? s : 1, expansion: t, generator: &g)
            }))
            widths.append(o)
        }
        blocks = Sequential(stages)
        let last = w > 1 ? Int(1280 * w) : 1280
        conv2 = Sequential([Conv2d(c, last, kernelSize: 1, generator: &g), BatchNorm2d(last), ReLU()])
        classifier = Sequential([Linear(last, classes, generator: &g)])
        numClasses = classes
        stageChannels = [Int(32 * w), widths[1], widths[2], widths[4], widths[6]]
        for (_, p) in namedParameters() {
            let v = p.value
            if v.rank == 4 {
                let std = (2 / Float(v.shape[0] * v.shape[2] * v.shape[3])).squareRoot()
                for i in 0..<v.count { v.data[i] = g.normal() * std }
            } else if v.rank == 2 {
                for i in 0..<v.count { v.data[i] = g.normal() * 0.01 }
            }
        }
        (classifier.layers[0] as! Linear).bias!.value.data.update(repeating: 0, count: classes)
    }

    public var children: [(String, Module)] { [("conv1", conv1), ("blocks", blocks), ("conv2", conv2), ("classifier", classifier)] }
    public var featureChannels: Int { stageChannels[4] }
    public var stemChannels: Int { stageChannels[3] }
    public var stemModuleNames: [String] { ["conv1"] + (0...4).map { "blocks.\($0)" } }
    public var headModuleNames: [String] { ["conv2", "classifier"] }
    public var tapChannels: [Int] { stageChannels }

    public func taps(_ x: Tensor) -> [Tensor] {
        var h = conv1(x), out = [h]
        for (i, b) in blocks.layers.enumerated() {
            h = b(h)
            if [1, 2, 4, 6].contains(i) { out.append(h) }
        }
        return out
    }
    public func stem(_ x: Tensor) -> Tensor { blocks.layers.prefix(5).reduce(conv1(x)) { $1($0) } }
    public func branch(_ h: Tensor) -> Tensor { blocks.layers.dropFirst(5).reduce(h) { $1($0) } }
    /// conv2 (1×1 to 1280 channels) · BN · ReLU, then the pool (mdistiller's pooled_feat).
    public func pool(_ f: Tensor) -> Tensor { globalAvgPool(conv2(f)) }
    public var pooledChannels: Int { (classifier.layers[0] as! Linear).inFeatures }
    public func classify(_ v: Tensor) -> Tensor { classifier(v) }
}
