// Basic layers: Conv2d, BatchNorm2d, Linear, Dropout, ReLU, Sequential. Initialisation as torchvision /
// PyTorch: conv weights Kaiming-normal with fan_out (ReLU gain), linear layers PyTorch's default
// (uniform ±1/√fan_in for weight and bias), batch norm γ = 1, β = 0.
import Tensors
import Foundation

/// 2-D convolution over channels-last input [N, H, W, Cin]; weight [Cout, Cin/groups, k, k] as PyTorch.
public final class Conv2d: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let stride: Int, padding: Int, groups: Int
    public var isTraining = true

    public init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                groups: Int = 1, bias: Bool = false, generator g: inout Generator) {
        precondition(inChannels % groups == 0 && outChannels % groups == 0,
                     "Conv2d: channels \(inChannels)→\(outChannels) not divisible by groups \(groups)")
        let fanOut = outChannels * kernelSize * kernelSize
        let std = (2 / Float(fanOut)).squareRoot()
        weight = Parameter(Tensor.randn([outChannels, inChannels / groups, kernelSize, kernelSize],
                                        std: std, generator: &g))
        if bias {
            let bound = 1 / Float(inChannels / groups * kernelSize * kernelSize).squareRoot()
            self.bias = Parameter(Tensor.uniform([outChannels], low: -bound, high: bound, generator: &g))
        } else {
            self.bias = nil
        }
        self.stride = stride; self.padding = padding; self.groups = groups
    }

    public var ownTensors: [(String, Parameter)] {
        [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        conv2d(x, weight: weight.value, bias: bias?.value, stride: stride, padding: padding, groups: groups)
    }
}

/// Batch normalisation over the channel (last) axis with running statistics (momentum 0.1, ε = 1e-5).
public final class BatchNorm2d: Layer {
    public let weight: Parameter, bias: Parameter
    public let runningMean: Parameter, runningVar: Parameter, numBatchesTracked: Parameter
    public let momentum: Float, eps: Float
    public var isTraining = true

    public init(_ channels: Int, momentum: Float = 0.1, eps: Float = 1e-5) {
        weight = Parameter(Tensor(shape: [channels], repeating: 1))
        bias = Parameter(Tensor(zeros: [channels]))
        runningMean = Parameter(Tensor(zeros: [channels]), trainable: false)
        runningVar = Parameter(Tensor(shape: [channels], repeating: 1), trainable: false)
        numBatchesTracked = Parameter(Tensor(zeros: []), trainable: false)
        self.momentum = momentum; self.eps = eps
    }

    public var ownTensors: [(String, Parameter)] {
        [("weight", weight), ("bias", bias), ("running_mean", runningMean), ("running_var", runningVar),
         ("num_batches_tracked", numBatchesTracked)]
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { forward(x, relu: false) }

    /// BN(x), or max(0, BN(x)) in one pass when `relu`.
    public func forward(_ x: Tensor, relu: Bool) -> Tensor {
        if isTraining { numBatchesTracked.value.data[0] += 1 }
        return batchNorm(x, weight: weight.value, bias: bias.value, runningMean: runningMean.value,
                         runningVar: runningVar.value, training: isTraining, momentum: momentum, eps: eps,
                         fuseReLU: relu)
    }
}

/// y = x·Wᵀ + b.
public final class Linear: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public var isTraining = true

    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, generator g: inout Generator) {
        let bound = 1 / Float(inFeatures).squareRoot()
        weight = Parameter(Tensor.uniform([outFeatures, inFeatures], low: -bound, high: bound, generator: &g))
        self.bias = bias ? Parameter(Tensor.uniform([outFeatures], low: -bound, high: bound, generator: &g)) : nil
    }

    public var ownTensors: [(String, Parameter)] {
        [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { linear(x, weight: weight.value, bias: bias?.value) }
}

/// Dropout with its own seeded stream; identity in evaluation mode.
public final class Dropout: Layer {
    public let p: Float
    public var generator: Generator
    public var isTraining = true

    public init(p: Float, seed: UInt64 = 0) {
        self.p = p
        generator = Generator(seed: seed)
    }

    public func callAsFunction(_ x: Tensor) -> Tensor { x.dropout(p: p, training: isTraining, generator: &generator) }
}

/// max(0, x) as a layer.
public final class ReLU: Layer {
    public var isTraining = true
    public init() {}
    public func callAsFunction(_ x: Tensor) -> Tensor { x.relu() }
}

/// Layers applied in order, named "0", "1", ... as nn.Sequential.
public final class Sequential: Layer {
    public let layers: [Layer]
    public var isTraining = true

    public init(_ layers: [Layer]) { self.layers = layers }

    public var children: [(String, Module)] { layers.enumerated().map { (String($0.offset), $0.element) } }

    public func callAsFunction(_ x: Tensor) -> Tensor { layers.reduce(x) { $1($0) } }
}
