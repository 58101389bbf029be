// CIFAR ResNets (He et al. 2016, §4.2) as the widely used PyTorch definitions name them: conv1/bn1, three stages
// layer1..3, 1×1-conv + BN projection shortcuts (`downsample.0`, `downsample.1`) where the shape changes, global
// average pool, `fc`.
//   BasicBlock networks ("resnetD"): depth = 6n + 2, widths [16, 16, 32, 64]; the "x4" variants [32, 64, 128, 256].
//   Bottleneck networks ("resnetDb"): depth = 9n + 2, stages of n Bottleneck blocks (1×1, 3×3, 1×1 convolutions,
//   expansion 4) with 16, 32, 64 planes, so 64, 128, 256 output channels: the deep CIFAR ResNets of ONE, OKDDip,
//   CSS and MCL-OKD (`ResNet(Bottleneck, [n, n, n])`; their "resnet110" is resnet110b here, their "resnet56" resnet56b).
//   Width-scaled networks ("resnetD_wS", e.g. resnet32_w0.6): stage widths ⌊S·w⌋ after an unscaled conv1, the
//   students of online ensemble compression (Distillation/OEC.swift).
// stem = conv1·bn1·relu·layer1·layer2, branch = layer3, head = pool·fc by default; a method that shares less moves
// the stem's end to after layer1 or to right after conv1·bn1·relu (`setStemEnd`).
import Layers
import Tensors

/// out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))
public final class BasicBlock: Layer {
    public let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d
    public let downsample: Sequential?
    public var isTraining = true

    public init(_ inPlanes: Int, _ planes: Int, stride: Int, generator g: inout Generator) {
        conv1 = Conv2d(inPlanes, planes, kernelSize: 3, stride: stride, padding: 1, generator: &g)
        bn1 = BatchNorm2d(planes)
        conv2 = Conv2d(planes, planes, kernelSize: 3, padding: 1, generator: &g)
        bn2 = BatchNorm2d(planes)
        if stride != 1 || inPlanes != planes {
            downsample = Sequential([Conv2d(inPlanes, planes, kernelSize: 1, stride: stride, generator: &g),
                                     BatchNorm2d(planes)])
        } else {
            downsample = nil
        }
    }

    public var children: [(String, Module)] {
        var c: [(String, Module)] = [("conv1", conv1), ("bn1", bn1), ("conv2", conv2), ("bn2", bn2)]
        if let d = downsample { c.append(("downsample", d)) }
        return c
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { inferenceInImageChunks(x, isTraining: isTraining, forward) }

    func forward(_ x: Tensor) -> Tensor {
        let h = convBatchNorm(conv1, bn1, x, relu: true)
        let shortcut = downsample.map { $0(x) } ?? x
        return convBatchNorm(conv2, bn2, h, relu: true, residual: shortcut)
    }
}

/// out = relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x)); conv1 and conv3 are 1×1, conv2 is
/// 3×3 with the stride; `planes` inner channels, 4·planes out.
public final class Bottleneck: Layer {
    public static let expansion = 4
    public let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d, conv3: Conv2d, bn3: BatchNorm2d
    public let downsample: Sequential?
    public var isTraining = true

    public init(_ inPlanes: Int, _ planes: Int, stride: Int, generator g: inout Generator) {
        let out = planes * Bottleneck.expansion
        conv1 = Conv2d(inPlanes, planes, kernelSize: 1, generator: &g)
        bn1 = BatchNorm2d(planes)
        conv2 = Conv2d(planes, planes, kernelSize: 3, stride: stride, padding: 1, generator: &g)
        bn2 = BatchNorm2d(planes)
        conv3 = Conv2d(planes, out, kernelSize: 1, generator: &g)
        bn3 = BatchNorm2d(out)
        if stride != 1 || inPlanes != out {
            downsample = Sequential([Conv2d(inPlanes, out, kernelSize: 1, stride: stride, generator: &g), BatchNorm2d(out)])
        } else {
            downsample = nil
        }
    }

    public var children: [(String, Module)] {
        var c: [(String, Module)] = [("conv1", conv1), ("bn1", bn1), ("conv2", conv2), ("bn2", bn2), ("conv3", conv3), ("bn3", bn3)]
        if let d = downsample { c.append(("downsample", d)) }
        return c
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let h = convBatchNorm(conv2, bn2, convBatchNorm(conv1, bn1, x, relu: true), relu: true)
        let shortcut = downsample.map { $0(x) } ?? x
        return convBatchNorm(conv3, bn3, h, relu: true, residual: shortcut)
    }
}

public final class CIFARResNet: Classifier {
    public let conv1: Conv2d, bn1: BatchNorm2d
    public let layer1: Sequential, layer2: Sequential, layer3: Sequential
    public let fc: Linear
    public let numClasses: Int, featureChannels: Int
    /// Output channels of conv1 and of each stage.
    public let channels: [Int]
    /// The stages the stem includes: 0 (conv1·bn1·relu only), 1 (…·layer1) or 2 (…·layer2, the default).
    public private(set) var stemEnd = 2
    public var isTraining = true

    /// BasicBlock stages (depth 6n + 2) of `widths[1...3]` channels after a `widths[0]`-channel conv1, or with
    /// `bottleneck` Bottleneck stages (depth 9n + 2) of `widths[1...3]` planes, 4× as many output channels.
    public init(depth: Int, widths: [Int], bottleneck: Bool = false, classes: Int, inChannels: Int = 3, generator g: inout Generator) {
        let perBlock = bottleneck ? 9 : 6, expansion = bottleneck ? Bottleneck.expansion : 1
        precondition((depth - 2) % perBlock == 0 && widths.count == 4, "CIFARResNet: depth must be \(perBlock)n+2 and widths 4 numbers")
        let n = (depth - 2) / perBlock
        conv1 = Conv2d(inChannels, widths[0], kernelSize: 3, padding: 1, generator: &g)
        bn1 = BatchNorm2d(widths[0])
        var inPlanes = widths[0]
        func stage(_ planes: Int, _ stride: Int, _ g: inout Generator) -> Sequential {
            var blocks: [Layer] = []
            for i in 0..<n {
                let s = i == 0 ? stride : 1
                blocks.append(bottleneck ? Bottleneck(inPlanes, planes, stride: s, generator: &g)
                                         : BasicBlock(inPlanes, planes, stride: s, generator: &g))
                inPlanes = planes * expansion
            }
            return Sequential(blocks)
        }
        layer1 = stage(widths[1], 1, &g)
        layer2 = stage(widths[2], 2, &g)
        layer3 = stage(widths[3], 2, &g)
        fc = Linear(widths[3] * expansion, classes, generator: &g)
        numClasses = classes
        channels = [widths[0]] + widths.dropFirst().map { $0 * expansion }
        featureChannels = widths[3] * expansion
    }

    var stages: [Sequential] { [layer1, layer2, layer3] }
    public var stemChannels: Int { channels[stemEnd] }
    public var branchStageChannels: [Int] { Array(channels[(stemEnd + 1)...]) }
    public func setStemEnd(_ stage: Int) throws {
        guard (0...2).contains(stage) else { throw ModelError.badStemEnd(model: "CIFAR ResNet", stage: stage, allowed: 0...2) }
        stemEnd = stage
    }

    public var children: [(String, Module)] {
        [("conv1", conv1), ("bn1", bn1), ("layer1", layer1), ("layer2", layer2), ("layer3", layer3), ("fc", fc)]
    }

    public var stemModuleNames: [String] { ["conv1", "bn1"] + ["layer1", "layer2"].prefix(stemEnd) }
    public func stem(_ x: Tensor) -> Tensor { stages.prefix(stemEnd).reduce(convBatchNorm(conv1, bn1, x, relu: true)) { $1($0) } }
    public func branch(_ h: Tensor) -> Tensor { stages.dropFirst(stemEnd).reduce(h) { $1($0) } }
    public func branchStages(_ h: Tensor) -> [Tensor] {
        var x = h
        return stages.dropFirst(stemEnd).map { x = $0(x); return x }
    }
    public func classify(_ v: Tensor) -> Tensor { fc(v) }
    /// relu(bn1(conv1(x))), layer1, layer2, layer3 (each after its last block's ReLU).
    public func taps(_ x: Tensor) -> [Tensor] {
        var h = convBatchNorm(conv1, bn1, x, relu: true)
        return [h] + stages.map { h = $0(h); return h }
    }
    public var tapChannels: [Int] { channels }
}
