// A classifier split into stem / branch / head, so multi-branch methods can share a stem and reach feature maps.
//   stem:   layers a multi-branch method shares (input → shared feature map)
//   branch: the rest of the trunk up to the final feature map
//   head:   pool (any head convolution, then global average pooling) → the pooled feature → classify (fc)
import Layers
import Tensors

public protocol Classifier: Module {
    /// Input → the feature map branches start from.
    func stem(_ x: Tensor) -> Tensor
    /// Stem output → final feature map [N, H, W, C].
    func branch(_ h: Tensor) -> Tensor
    /// Final feature map → the pooled feature [N, pooledChannels]: after the head convolution where the model has
    /// one (MobileNetV2's conv2, ShuffleNet V2's), global average pooling. CRD embeds it (mdistiller's pooled_feat).
    func pool(_ f: Tensor) -> Tensor
    /// Pooled feature → logits [N, classes].
    func classify(_ v: Tensor) -> Tensor
    /// Channels of the pooled feature.
    var pooledChannels: Int { get }
    /// Channels of the stem output and of the final feature map.
    var stemChannels: Int { get }
    var featureChannels: Int { get }
    var numClasses: Int { get }
    /// Names of the child modules that make up the stem (their state-dict prefixes).
    var stemModuleNames: [String] { get }
    /// Names of the child modules that make up the head (the classifier after pooling).
    var headModuleNames: [String] { get }
    /// The output of each stage of the branch, in order; the last is the final feature map.
    func branchStages(_ h: Tensor) -> [Tensor]
    /// Channels of each `branchStages` output.
    var branchStageChannels: [Int] { get }
    /// Moves the stem's end to after stage `stage` (0: the input convolution only); a model that cannot throws.
    func setStemEnd(_ stage: Int) throws
    /// The feature taps of a full forward pass, the tensors the network computes anyway (nothing is copied): tap 0
    /// is the input block's output, taps 1… each stage's output (the last is the last stage's output, which
    /// `finalMap` turns into the map `head` pools). Feature distillation names taps by these indices (RepDistiller's
    /// and mdistiller's `feats` order).
    func taps(_ x: Tensor) -> [Tensor]
    /// The final feature map from the last tap: the tap itself, or (WRN) after the final bn1·relu.
    func finalMap(lastTap t: Tensor) -> Tensor
    /// Channels of each tap.
    var tapChannels: [Int] { get }
}

/// One forward pass as feature distillation reads it: every tap, the pooled feature and the logits.
public struct TapForward {
    public let taps: [Tensor]
    public let pooled: Tensor
    public let logits: Tensor
}

extension Classifier {
    public var headModuleNames: [String] { ["fc"] }
    public var pooledChannels: Int { featureChannels }
    public func pool(_ f: Tensor) -> Tensor { globalAvgPool(f) }
    public func finalMap(lastTap t: Tensor) -> Tensor { t }
    /// Final feature map → logits.
    public func head(_ f: Tensor) -> Tensor { classify(pool(f)) }
    /// Taps, pooled feature and logits of one forward pass (each layer runs once).
    public func tapForward(_ x: Tensor) -> TapForward {
        let t = taps(x), v = pool(finalMap(lastTap: t.last!))
        return TapForward(taps: t, pooled: v, logits: classify(v))
    }
    public func branchStages(_ h: Tensor) -> [Tensor] { [branch(h)] }
    public var branchStageChannels: [Int] { [featureChannels] }
    public func setStemEnd(_ stage: Int) throws { throw ModelError.badStemEnd(model: String(describing: type(of: self)), stage: stage, allowed: nil) }
    public func taps(_ x: Tensor) -> [Tensor] { [features(x)] }
    public var tapChannels: [Int] { [featureChannels] }
    /// The shape [H, W, C] of each tap for `height`×`width` images (one image forwarded without the tape, in
    /// evaluation mode so no statistics move).
    public func tapShapes(height: Int, width: Int, channels: Int) -> [[Int]] {
        let was = isTraining
        eval()
        defer { if was { train() } }
        return withoutGradients { taps(Tensor(zeros: [1, height, width, channels])).map { Array($0.shape.dropFirst()) } }
    }
    /// Logits for a channels-last batch [N, H, W, C].
    public func callAsFunction(_ x: Tensor) -> Tensor { head(branch(stem(x))) }
    /// Final feature map for a batch.
    public func features(_ x: Tensor) -> Tensor { branch(stem(x)) }
    /// Whether a state-dict name belongs to the stem.
    public func isStem(_ name: String) -> Bool { stemModuleNames.contains { name.hasPrefix($0 + ".") } }
    /// The stem's parameters and buffers.
    public func stemState() -> [(String, Parameter)] { namedState().filter { isStem($0.0) } }
    /// Copies another model's stem weights and buffers into this one (same architecture).
    public func copyStem(from other: Classifier) {
        for ((_, dst), (_, src)) in zip(stemState(), other.stemState()) { dst.value.data.update(from: src.value.data, count: src.value.count) }
    }
}

/// Errors a model lookup can raise.
public enum ModelError: Error, CustomStringConvertible {
    case unknownModel(String)
    /// A stem end the model does not offer (`allowed` nil: its stem cannot move).
    case badStemEnd(model: String, stage: Int, allowed: ClosedRange<Int>?)
    public var description: String {
        switch self {
        case let .badStemEnd(model, stage, allowed):
            guard let r = allowed else { return "\(model) cannot end its stem elsewhere than its default (asked: after stage \(stage))" }
            return "\(model): the stem can end after stage \(r.lowerBound) to \(r.upperBound), not \(stage)"

        case .unknownModel(let name):
            return "unknown model '\(name)'; expected one of: \(ModelZoo.names.joined(separator: ", ")) (or resnetD with D = 6n+2, resnetDb with D = 9n+2 for bottleneck blocks, resnetD_wS for stage widths scaled by 0 < S ≤ 1, e.g. resnet32_w0.6; wrnD_K, e.g. wrn28_10)"
        }
    }
}

public enum ModelZoo {
    /// Built-in model names.
    public static let names = ["resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
                               "resnet8x4", "resnet32x4", "resnet20b", "resnet56b", "resnet110b", "resnet164b",
                               "wrn16_1", "wrn16_2", "wrn40_1", "wrn40_2",
                               "vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "mobilenetv2", "shufflenetv1", "shufflenetv2"]

    /// Builds a model by name for `inChannels`-channel images and `classes` outputs, initialised from `generator`.
    public static func make(_ name: String, classes: Int, inChannels: Int = 3,
                            generator g: inout Generator) throws -> Classifier {
        let lower = name.lowercased()
        if let config = VGG.configs[lower] { return VGG(config, classes: classes, inChannels: inChannels, generator: &g) }
        if lower == "mobilenetv2" { return MobileNetV2(classes: classes, inChannels: inChannels, generator: &g) }
        if lower == "shufflenetv1" { return ShuffleNet(.v1, classes: classes, inChannels: inChannels, generator: &g) }
        if lower == "shufflenetv2" { return ShuffleNet(.v2, classes: classes, inChannels: inChannels, generator: &g) }
        if lower.hasPrefix("resnet") {
            var spec = String(lower.dropFirst("resnet".count))
            var widths = [16, 16, 32, 64]
            if let w = spec.range(of: "_w") {  // a width-scaled basic-block network
                guard let scale = Double(spec[w.upperBound...]), scale > 0, scale <= 1 else { throw ModelError.unknownModel(name) }
                spec = String(spec[..<w.lowerBound])
                widths = [16] + widths.dropFirst().map { Int((Double($0) * scale + 1e-9).rounded(.down)) }
            } else {
                if spec.hasSuffix("x4") { spec.removeLast(2); widths = [32, 64, 128, 256] }
                if spec.hasSuffix("b"), let depth = Int(spec.dropLast()), depth >= 11, (depth - 2) % 9 == 0, widths[0] == 16 {
                    return CIFARResNet(depth: depth, widths: widths, bottleneck: true, classes: classes, inChannels: inChannels, generator: &g)
                }
            }
            guard let depth = Int(spec), depth >= 8, (depth - 2) % 6 == 0, widths.allSatisfy({ $0 >= 1 }) else { throw ModelError.unknownModel(name) }
            return CIFARResNet(depth: depth, widths: widths, classes: classes, inChannels: inChannels, generator: &g)
        }
        if lower.hasPrefix("wrn") {
            let parts = lower.dropFirst(3).split(separator: "_")
            guard parts.count == 2, let depth = Int(parts[0]), let k = Int(parts[1]), depth >= 10, (depth - 4) % 6 == 0, k >= 1
            else { throw ModelError.unknownModel(name) }
            return WideResNet(depth: depth, widen: k, classes: classes, inChannels: inChannels, generator: &g)
        }
        throw ModelError.unknownModel(name)
    }
}
