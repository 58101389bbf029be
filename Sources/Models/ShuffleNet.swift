// ShuffleNet V1 and V2 for CIFAR as RepDistiller defines them (`models/ShuffleNetv1.py` `ShuffleV1`,
// `models/ShuffleNetv2.py` `ShuffleV2`, net size 1), the students of its heterogeneous pairs. Both start with a 1×1
// conv1 3 → 24 · bn1 · ReLU (no stride, no pooling) and end with global average pooling and `linear` (their
// avg_pool2d(out, 4) over the 4×4 last map of a 32- or 28-pixel input). Convolutions have no bias; init is
// PyTorch's default, as there: conv and linear weights uniform ±1/√fan_in (fan_in = Cin/groups·k²), BN 1, 0.
//   V1 (groups 3, stages layer1..3 of 4, 8, 4 `Bottleneck`s, widths 240, 480, 960): a block is conv1 1×1 (groups
//   3, or 1 when its input is conv1's 24 channels) to mid = out/4 · bn1 · ReLU · channel shuffle · conv2 3×3
//   depthwise (stride 2 on a stage's first block) · bn2 · ReLU · conv3 1×1 (groups 3) · bn3; a stride-2 block
//   concatenates a 3×3 stride-2 average pool of its input (padding 1, zeros counted) to reach the stage width and
//   applies ReLU, the others add the input first.
//   V2 (stages of one `DownBlock` and 3, 7, 3 `BasicBlock`s, widths 116, 232, 464; conv2 1×1 464 → 1024 · bn2 ·
//   ReLU before the pool): a BasicBlock keeps its first half of channels and sends the second through conv1 1×1 ·
//   bn1 · ReLU · conv2 3×3 depthwise · bn2 · conv3 1×1 · bn3 · ReLU, concatenates, and shuffles in 2 groups; a
//   DownBlock (stride 2) concatenates conv1 3×3 depthwise · bn1 · conv2 1×1 · bn2 · ReLU of its input with conv3
//   1×1 · bn3 · ReLU · conv4 3×3 depthwise · bn4 · conv5 1×1 · bn5 · ReLU of it, and shuffles.
// Taps (RepDistiller's feats): relu(bn1(conv1)), then layer1..3's outputs; `head` is (V2: conv2 ·) pool · linear.
// stem = conv1 · bn1 · layer1 · layer2, branch = layer3; the stem cannot move.
import Layers
import Tensors

/// PyTorch's default convolution init (kaiming_uniform with a = √5): uniform ±1/√fan_in.
func shuffleConv(_ cin: Int, _ cout: Int, kernel: Int, stride: Int = 1, groups: Int = 1,
                 generator g: inout Generator) -> Conv2d {
    let conv = Conv2d(cin, cout, kernelSize: kernel, stride: stride, padding: kernel / 2, groups: groups, generator: &g)
    let w = conv.weight.value, bound = 1 / Float(cin / groups * kernel * kernel).squareRoot()
    for i in 0..<w.count { w.data[i] = (2 * g.uniform() - 1) * bound }
    return conv
}

/// ShuffleNet V1's bottleneck.
public final class ShuffleV1Block: Layer {
    public let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d, conv3: Conv2d, bn3: BatchNorm2d
    let stride: Int, shuffleGroups: Int
    public var isTraining = true

    public init(_ inPlanes: Int, _ outPlanes: Int, stride: Int, groups: Int, generator g: inout Generator) {
        let mid = outPlanes / 4
        shuffleGroups = inPlanes == 24 ? 1 : groups
        conv1 = shuffleConv(inPlanes, mid, kernel: 1, groups: shuffleGroups, generator: &g)
        bn1 = BatchNorm2d(mid)
        conv2 = shuffleConv(mid, mid, kernel: 3, stride: stride, groups: mid, generator: &g)
        bn2 = BatchNorm2d(mid)
        conv3 = shuffleConv(mid, outPlanes, kernel: 1, groups: groups, generator: &g)
        bn3 = BatchNorm2d(outPlanes)
        self.stride = stride
    }

    public var children: [(String, Module)] {
        [("conv1", conv1), ("bn1", bn1), ("conv2", conv2), ("bn2", bn2), ("conv3", conv3), ("bn3", bn3)]
    }

    /// In inference, piece by piece of the batch (`inferenceInImageChunks`).
    public func callAsFunction(_ x: Tensor) -> Tensor { inferenceInImageChunks(x, isTraining: isTraining, forward) }

    func forward(_ x: Tensor) -> Tensor {
        var h = convBatchNorm(conv1, bn1, x, relu: true, shuffleGroups: shuffleGroups)
        h = convBatchNorm(conv2, bn2, h, relu: true)
        if stride == 2 { return concat([convBatchNorm(conv3, bn3, h, relu: false), avgPool2d(x, kernel: 3, stride: 2, padding: 1)], axis: 3).relu() }
        return convBatchNorm(conv3, bn3, h, relu: true, residual: x)
    }
}

/// ShuffleNet V2's stride-1 unit: half the channels pass, half are transformed, then the halves are shuffled.
public final class ShuffleV2Block: Layer {
    public let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d, conv3: Conv2d, bn3: BatchNorm2d
    let half: Int
    public var isTraining = true

    public init(_ channels: Int, generator g: inout Generator) {
        half = channels / 2
        let c = channels - half
        conv1 = shuffleConv(c, c, kernel: 1, generator: &g); bn1 = BatchNorm2d(c)
        conv2 = shuffleConv(c, c, kernel: 3, groups: c, generator: &g); bn2 = BatchNorm2d(c)
        conv3 = shuffleConv(c, c, kernel: 1, generator: &g); bn3 = BatchNorm2d(c)
    }

    public var children: [(String, Module)] {
        [("conv1", conv1), ("bn1", bn1), ("conv2", conv2), ("bn2", bn2), ("conv3", conv3), ("bn3", bn3)]
    }

    /// In inference, piece by piece of the batch (`inferenceInImageChunks`).
    public func callAsFunction(_ x: Tensor) -> Tensor { inferenceInImageChunks(x, isTraining: isTraining, forward) }

    func forward(_ x: Tensor) -> Tensor {
        let C = x.shape[3]
        let h = convBatchNorm(conv3, bn3, convBatchNorm(conv2, bn2, convBatchNorm(conv1, bn1, x.slice(axis: 3, half..<C), relu: true), relu: false), relu: true)
        return interleaveChannels(x, channels: 0..<half, h)   // = concat([x[…, ..<half], h]).channelShuffled(groups: 2)
    }
}

/// ShuffleNet V2's stride-2 unit: two paths over the whole input, concatenated and shuffled.
public final class ShuffleV2DownBlock: Layer {
    public let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d, conv3: Conv2d, bn3: BatchNorm2d
    public let conv4: Conv2d, bn4: BatchNorm2d, conv5: Conv2d, bn5: BatchNorm2d
    public var isTraining = true

    public init(_ cin: Int, _ cout: Int, generator g: inout Generator) {
        let mid = cout / 2
        conv1 = shuffleConv(cin, cin, kernel: 3, stride: 2, groups: cin, generator: &g); bn1 = BatchNorm2d(cin)
        conv2 = shuffleConv(cin, mid, kernel: 1, generator: &g); bn2 = BatchNorm2d(mid)
        conv3 = shuffleConv(cin, mid, kernel: 1, generator: &g); bn3 = BatchNorm2d(mid)
        conv4 = shuffleConv(mid, mid, kernel: 3, stride: 2, groups: mid, generator: &g); bn4 = BatchNorm2d(mid)
        conv5 = shuffleConv(mid, mid, kernel: 1, generator: &g); bn5 = BatchNorm2d(mid)
    }

    public var children: [(String, Module)] {
        [("conv1", conv1), ("bn1", bn1), ("conv2", conv2), ("bn2", bn2), ("conv3", conv3), ("bn3", bn3),
         ("conv4", conv4), ("bn4", bn4), ("conv5", conv5), ("bn5", bn5)]
    }

    /// In inference, piece by piece of the batch (`inferenceInImageChunks`).
    public func callAsFunction(_ x: Tensor) -> Tensor { inferenceInImageChunks(x, isTraining: isTraining, forward) }

    func forward(_ x: Tensor) -> Tensor {
        let left = convBatchNorm(conv2, bn2, convBatchNorm(conv1, bn1, x, relu: false), relu: true)
        let right = convBatchNorm(conv5, bn5, convBatchNorm(conv4, bn4, convBatchNorm(conv3, bn3, x, relu: true), relu: false), relu: true)
        return interleaveChannels(left, channels: 0..<left.shape[3], right)   // = concat([left, right]).channelShuffled(groups: 2)
    }
}

public final class ShuffleNet: Classifier {
    public enum Version { case v1, v2 }
    public let conv1: Conv2d, bn1: BatchNorm2d
    public let layer1: Sequential, layer2: Sequential, layer3: Sequential
    /// V2's 1×1 conv to 1024 channels before the pool (nil for V1).
    public let conv2: Conv2d?, bn2: BatchNorm2d?
    public let linear: Linear
    public let numClasses: Int
    public var isTraining = true
    let widths: [Int]

    public init(_ version: Version, classes: Int, inChannels: Int = 3, generator g: inout Generator) {
        conv1 = shuffleConv(inChannels, 24, kernel: 1, generator: &g)
        bn1 = BatchNorm2d(24)
        var c = 24, stages: [Sequential] = []
        switch version {
        case .v1:
            for (out, n) in [(240, 4), (480, 8), (960, 4)] {
                stages.append(Sequential((0..<n).map { i in
                    defer { c = out }
                    // A stride-2 block concatenates its pooled input, so it computes the rest of the width.
                    return ShuffleV1Block(c, i == 0 ? out - c : out, stride: i == 0 ? 2 : 1, groups: 3, generator: &g)
                }))
            }
            conv2 = nil; bn2 = nil
        case .v2:
            for (out, n) in [(116, 3), (232, 7), (464, 3)] {
                stages.append(Sequential([ShuffleV2DownBlock(c, out, generator: &g) as Layer]
                                         + (0..<n).map { _ in ShuffleV2Block(out, generator: &g) }))
                c = out
            }
            conv2 = shuffleConv(c, 1024, kernel: 1, generator: &g); bn2 = BatchNorm2d(1024)
            c = 1024
        }
        layer1 = stages[0]; layer2 = stages[1]; layer3 = stages[2]
        widths = version == .v1 ? [24, 240, 480, 960] : [24, 116, 232, 464]
        linear = Linear(c, classes, generator: &g)
        numClasses = classes
    }

    public var children: [(String, Module)] {
        var c: [(String, Module)] = [("conv1", conv1), ("bn1", bn1), ("layer1", layer1), ("layer2", layer2), ("layer3", layer3)]
        if let conv2, let bn2 { c += [("conv2", conv2), ("bn2", bn2)] }
        return c + [("linear", linear)]
    }
    public var featureChannels: Int { widths[3] }
    public var stemChannels: Int { widths[2] }
    public var stemModuleNames: [String] { ["conv1", "bn1", "layer1", "layer2"] }
    public var headModuleNames: [String] { (conv2 == nil ? [] : ["conv2", "bn2"]) + ["linear"] }
    public var tapChannels: [Int] { widths }

    public func taps(_ x: Tensor) -> [Tensor] {
        var h = convBatchNorm(conv1, bn1, x, relu: true), out = [h]
        for stage in [layer1, layer2, layer3] { h = stage(h); out.append(h) }
        return out
    }
    public func stem(_ x: Tensor) -> Tensor { layer2(layer1(convBatchNorm(conv1, bn1, x, relu: true))) }
    public func branch(_ h: Tensor) -> Tensor { layer3(h) }
    /// V2: conv2 (1×1 to 1024 channels) · bn2 · ReLU, then the pool (mdistiller's pooled_feat); V1: the pool.
    public func pool(_ f: Tensor) -> Tensor {
        guard let conv2, let bn2 else { return globalAvgPool(f) }
        return globalAvgPool(convBatchNorm(conv2, bn2, f, relu: true))
    }
    public var pooledChannels: Int { linear.inFeatures }
    public func classify(_ v: Tensor) -> Tensor { linear(v) }
}
