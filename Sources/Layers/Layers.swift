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

    /// BN(x) (+ residual), or max(0, ·) of it when `relu`, in one pass (see `batchNorm`).
    public func forward(_ x: Tensor, relu: Bool, residual: Tensor? = nil) -> Tensor {
        if isTraining { numBatchesTracked.value.data[0] += 1 }
        return batchNorm(x, weight: weight.value, bias: bias.value, runningMean: runningMean.value,
                         runningVar: runningVar.value, training: isTraining, momentum: momentum, eps: eps,
                         fuseReLU: relu, residual: residual)
    }
}

/// Whether evaluation without the tape runs a convolution and the batch norm after it (with the residual sum and
/// ReLU that follow) as one pass over the output (`conv2dFused`); off only to measure what that buys
/// (`distill bench engine --compare-fusion`).
public nonisolated(unsafe) var inferenceFusionEnabled = true

/// Whether `convBatchNorm` fuses for this batch norm now: evaluation mode, no tape.
public func fusesInference(_ bn: BatchNorm2d) -> Bool {
    inferenceFusionEnabled && !GradMode.isEnabled && !bn.isTraining
}

/// Output pixels of one piece of the batch when inference runs a block piece by piece
/// (`inferenceInImageChunks`); 0 runs every block on the whole batch (`distill bench engine --compare-chunking`).
public nonisolated(unsafe) var inferenceChunkPixels = 2048

/// `block(x)` in evaluation mode without the tape, computed on pieces of the batch of whole images (about
/// `inferenceChunkPixels` input pixels each), the pieces split over the worker threads: each piece goes through
/// every layer of the block while its activations are in cache (a block's expanded middle never goes to memory),
/// and the block's kernels run on one thread each, with no hand-over between layers.
/// Every op in evaluation mode computes each image on its own, but OpenBLAS picks its sgemm kernel by the product's
/// size, so a piece's values can differ from the whole batch's in the last bits (as a different batch size's do).
/// The cut depends only on the batch and the block's input size, never on the thread count, so results do not
/// depend on it either (a test holds 1 and 3 threads equal bit for bit, and the whole batch close).
/// Runs block(x) whole when training, on the tape, or when the batch makes fewer than two pieces.
public func inferenceInImageChunks(_ x: Tensor, isTraining: Bool, _ block: (Tensor) -> Tensor) -> Tensor {
    guard inferenceChunkPixels > 0, !isTraining, !GradMode.isEnabled, x.rank == 4 else { return block(x) }
    let n = x.shape[0], perPiece = max(1, inferenceChunkPixels / max(1, x.shape[1] * x.shape[2]))
    var pieces = (n + perPiece - 1) / perPiece
    guard pieces >= 2 else { return block(x) }
    pieces = min(n, (pieces + 1) / 2 * 2)   // even: equal shares on two cores
    return Profiler.measure(.chunkedBlocks) {
        // The first piece to finish allocates the result; each piece is copied in as soon as it is computed, while
        // it is still in cache, and then freed.
        let lock = NSLock()
        var result: Tensor?
        parallelRanges(pieces) { _, range in
            for p in range {
                let lo = n * p / pieces, part = block(x.batchView(lo..<(n * (p + 1) / pieces)))
                lock.lock()
                if result == nil { result = Tensor(uninitialized: [n] + part.shape.dropFirst()) }
                let out = result!
                lock.unlock()
                precondition(Array(part.shape.dropFirst()) == Array(out.shape.dropFirst()),
                             "inferenceInImageChunks: a piece's output \(part.shape) does not fit the batch's \(out.shape)")
                (out.data + lo * (out.count / n)).update(from: part.data, count: part.count)
            }
        }
        return result!
    }
}

/// bn(conv(x)), plus `residual`, then ReLU when `relu`. In evaluation mode without the tape, one pass: the
/// convolution applies batch norm's folded affine map, the sum and the ReLU as it writes each chunk of its output;
/// otherwise the convolution, then batch norm with the sum and ReLU in its pass (which keeps no BN(x) for backward).
/// Both give the values of the ops in turn, bit for bit.
/// With `shuffleGroups` g > 1, the channels are then shuffled (`channelShuffled(groups: g)`), in the same pass
/// when fused.
public func convBatchNorm(_ conv: Conv2d, _ bn: BatchNorm2d, _ x: Tensor, relu: Bool, residual: Tensor? = nil,
                          shuffleGroups: Int = 1) -> Tensor {
    if fusesInference(bn) {
        let (scale, shift) = batchNormEvalAffine(weight: bn.weight.value, bias: bn.bias.value, runningMean: bn.runningMean.value,
                                                 runningVar: bn.runningVar.value, eps: bn.eps)
        return conv2dFused(x, weight: conv.weight.value, bias: conv.bias?.value, stride: conv.stride, padding: conv.padding,
                           groups: conv.groups, scale: scale, shift: shift, residual: residual, relu: relu,
                           shuffleGroups: shuffleGroups)
    }
    let y = bn.forward(conv(x), relu: relu, residual: residual)
    return shuffleGroups > 1 ? y.channelShuffled(groups: shuffleGroups) : y
}

/// y = x·Wᵀ + b.
public final class Linear: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public var isTraining = true

    /// Input features (the weight's second dimension).
    public var inFeatures: Int { weight.value.shape[1] }

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

    /// The layers in turn; in evaluation without the tape, each Conv2d · BatchNorm2d (· ReLU) runs as one
    /// `convBatchNorm`; any other BatchNorm2d · ReLU runs as one batch norm with the ReLU in its pass (the same
    /// values and gradients, one pass less each way, and no BN(x) kept).
    public func callAsFunction(_ x: Tensor) -> Tensor { run(x, layers: layers.indices) }

    /// Layers `range` in turn, fused as `callAsFunction`.
    public func run(_ x: Tensor, layers range: Range<Int>) -> Tensor {
        var h = x, i = range.lowerBound
        while i < range.upperBound {
            if let bn = layers[i] as? BatchNorm2d, i + 1 < range.upperBound, layers[i + 1] is ReLU {
                h = bn.forward(h, relu: true)
                i += 2
            } else if let conv = layers[i] as? Conv2d, i + 1 < range.upperBound, let bn = layers[i + 1] as? BatchNorm2d, fusesInference(bn) {
                let relu = i + 2 < range.upperBound && layers[i + 2] is ReLU
                h = convBatchNorm(conv, bn, h, relu: relu)
                i += relu ? 3 : 2
            } else {
                h = layers[i](h)
                i += 1
            }
        }
        return h
    }
}
