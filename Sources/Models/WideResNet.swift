// Wide ResNets (Zagoruyko & Komodakis 2016) as the widely used PyTorch CIFAR definition names them:
// conv1, block1..3 (each `.layer.i` of pre-activation blocks bn1·relu·conv1·bn2·relu·conv2 with a 1×1
// `convShortcut` where the width changes), final bn1·relu, global pool, `fc`. depth = 6n + 4, widths
// [16, 16k, 32k, 64k]. stem = conv1·block1·block2, branch = block3·bn1·relu, head = pool·fc.
import Layers
import Tensors

public final class WideBasicBlock: Layer {
    public let bn1: BatchNorm2d, conv1: Conv2d, bn2: BatchNorm2d, conv2: Conv2d
    public let convShortcut: Conv2d?
    public var isTraining = true

    public init(_ inPlanes: Int, _ outPlanes: Int, stride: Int, generator g: inout Generator) {
        bn1 = BatchNorm2d(inPlanes)
        conv1 = Conv2d(inPlanes, outPlanes, kernelSize: 3, stride: stride, padding: 1, generator: &g)
        bn2 = BatchNorm2d(outPlanes)
        conv2 = Conv2d(outPlanes, outPlanes, kernelSize: 3, padding: 1, generator: &g)
        convShortcut = inPlanes == outPlanes ? nil
            : Conv2d(inPlanes, outPlanes, kernelSize: 1, stride: stride, generator: &g)
    }

    public var children: [(String, Module)] {
        var c: [(String, Module)] = [("bn1", bn1), ("conv1", conv1), ("bn2", bn2), ("conv2", conv2)]
        if let s = convShortcut { c.append(("convShortcut", s)) }
        return c
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let a = bn1.forward(x, relu: true)
        let h = bn2.forward(conv1(a), relu: true)
        let y = conv2(h)
        // Equal widths add the raw input; otherwise the shortcut reads the pre-activated input.
        return y + (convShortcut.map { $0(a) } ?? x)
    }
}

/// A stage of WRN blocks, named `layer.i` as the reference NetworkBlock.
public final class NetworkBlock: Layer {
    public let layer: Sequential
    public var isTraining = true

    public init(blocks: Int, _ inPlanes: Int, _ outPlanes: Int, stride: Int, generator g: inout Generator) {
        var list: [Layer] = []
        for i in 0..<blocks {
            list.append(WideBasicBlock(i == 0 ? inPlanes : outPlanes, outPlanes, stride: i == 0 ? stride : 1,
                                       generator: &g))
        }
        layer = Sequential(list)
    }

    public var children: [(String, Module)] { [("layer", layer)] }
    public func callAsFunction(_ x: Tensor) -> Tensor { layer(x) }
}

public final class WideResNet: Classifier {
    public let conv1: Conv2d
    public let block1: NetworkBlock, block2: NetworkBlock, block3: NetworkBlock
    public let bn1: BatchNorm2d
    public let fc: Linear
    public let numClasses: Int, featureChannels: Int
    /// Output channels of conv1 and of each block group.
    public let channels: [Int]
    /// The block groups the stem includes: 0 (conv1 only), 1 or 2 (the default).
    public private(set) var stemEnd = 2
    public var isTraining = true

    public init(depth: Int, widen k: Int, classes: Int, inChannels: Int = 3, generator g: inout Generator) {
        precondition((depth - 4) % 6 == 0, "WideResNet: depth must be 6n+4, got \(depth)")
        let n = (depth - 4) / 6
        let w = [16, 16 * k, 32 * k, 64 * k]
        conv1 = Conv2d(inChannels, w[0], kernelSize: 3, padding: 1, generator: &g)
        block1 = NetworkBlock(blocks: n, w[0], w[1], stride: 1, generator: &g)
        block2 = NetworkBlock(blocks: n, w[1], w[2], stride: 2, generator: &g)
        block3 = NetworkBlock(blocks: n, w[2], w[3], stride: 2, generator: &g)
        bn1 = BatchNorm2d(w[3])
        fc = Linear(w[3], classes, generator: &g)
        // The reference zeroes the classifier bias.
        fc.bias?.value.data.update(repeating: 0, count: classes)
        numClasses = classes
        channels = w
        featureChannels = w[3]
    }

    var blocks: [NetworkBlock] { [block1, block2, block3] }
    public var stemChannels: Int { channels[stemEnd] }
    public var branchStageChannels: [Int] { Array(channels[(stemEnd + 1)...]) }
    public func setStemEnd(_ stage: Int) throws {
        guard (0...2).contains(stage) else { throw ModelError.badStemEnd(model: "wide ResNet", stage: stage, allowed: 0...2) }
        stemEnd = stage
    }

    public var children: [(String, Module)] {
        [("conv1", conv1), ("block1", block1), ("block2", block2), ("block3", block3), ("bn1", bn1), ("fc", fc)]
    }

    public var stemModuleNames: [String] { ["conv1"] + ["block1", "block2"].prefix(stemEnd) }
    public func stem(_ x: Tensor) -> Tensor { blocks.prefix(stemEnd).reduce(conv1(x)) { $1($0) } }
    public func branch(_ h: Tensor) -> Tensor { branchStages(h).last! }
    /// The last stage's output includes the final bn1·relu (the feature map the head pools).
    public func branchStages(_ h: Tensor) -> [Tensor] {
        var x = h
        var out = blocks.dropFirst(stemEnd).map { x = $0(x); return x }
        out[out.count - 1] = bn1.forward(out[out.count - 1], relu: true)
        return out
    }
    public func classify(_ v: Tensor) -> Tensor { fc(v) }
    /// conv1, block1, block2, block3 — each block's raw (pre-activation) output, as mdistiller's and RepDistiller's
    /// WRN feats; the final bn1·relu is `finalMap`'s, so the pooled feature keeps it.
    public func taps(_ x: Tensor) -> [Tensor] {
        var h = conv1(x)
        return [h] + blocks.map { h = $0(h); return h }
    }
    public func finalMap(lastTap t: Tensor) -> Tensor { bn1.forward(t, relu: true) }
    public var tapChannels: [Int] { channels }
}
