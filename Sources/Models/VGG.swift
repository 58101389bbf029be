// VGG with batch norm for CIFAR, as RepDistiller defines it (`models/vgg.py`, the `vggD_bn` networks its model
// dict calls `vggD`): five blocks of 3×3 convolutions (with bias) · BN · ReLU, the last ReLU of each block applied
// outside it, 2×2 max pooling after blocks 0–2 (and 3 on 64-pixel inputs), global average pooling, `classifier`
// Linear(512 → classes); no fully connected hidden layers. State-dict names `block0.0.weight`, `block0.1.running_mean`,
// …, `classifier.weight`. Configurations (channels per block): vgg8 [64], [128], [256], [512], [512]; vgg11 [64],
// [128], [256, 256], [512, 512], [512, 512]; vgg13 doubles vgg8's; vgg16 three in blocks 2–4; vgg19 four.
// Init as RepDistiller: conv N(0, 2/(9·C_out)), bias 0; BN 1, 0; Linear N(0, 0.01²), bias 0.
// Taps (RepDistiller's feats): relu(block0), relu(block1) … relu(block4). stem = blocks 0–3 with their pools,
// branch = block4, head = pool · classifier; the stem cannot move.
import Layers
import Tensors

public final class VGG: Classifier {
    public static let configs: [String: [[Int]]] = [
        "vgg8": [[64], [128], [256], [512], [512]],
        "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
        "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
        "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
        "vgg19": [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
    ]
    public let blocks: [Sequential]
    public let classifier: Linear
    public let numClasses: Int
    public var isTraining = true
    let widths: [Int]

    public init(_ config: [[Int]], classes: Int, inChannels: Int = 3, generator g: inout Generator) {
        var c = inChannels, built: [Sequential] = []
        for block in config {
            var layers: [Layer] = []
            for v in block {
                let conv = Conv2d(c, v, kernelSize: 3, padding: 1, bias: true, generator: &g)
                let std = (2 / Float(9 * v)).squareRoot(), w = conv.weight.value
                for i in 0..<w.count { w.data[i] = g.normal() * std }
                conv.bias!.value.data.update(repeating: 0, count: v)
                layers += [conv, BatchNorm2d(v), ReLU()]
                c = v
            }
            built.append(Sequential(Array(layers.dropLast())))
        }
        blocks = built
        widths = config.map { $0.last! }
        classifier = Linear(c, classes, generator: &g)
        let w = classifier.weight.value
        for i in 0..<w.count { w.data[i] = g.normal() * 0.01 }
        classifier.bias!.value.data.update(repeating: 0, count: classes)
        numClasses = classes
    }

    public var children: [(String, Module)] {
        blocks.enumerated().map { ("block\($0.offset)", $0.element as Module) } + [("classifier", classifier)]
    }
    public var featureChannels: Int { widths[4] }
    public var stemChannels: Int { widths[3] }
    public var stemModuleNames: [String] { ["block0", "block1", "block2", "block3"] }
    public var headModuleNames: [String] { ["classifier"] }
    public var tapChannels: [Int] { widths }

    /// The taps; block i's input is the previous tap max-pooled (2×2) for i ≤ 3, block 3's output pooled only on
    /// inputs of 64 pixels.
    public func taps(_ x: Tensor) -> [Tensor] { run(x, blocks: 0..<5, inputSide: x.shape[1]) }
    public func stem(_ x: Tensor) -> Tensor { run(x, blocks: 0..<4, inputSide: x.shape[1]).last! }
    /// Block 3's output is 1/8 of the input's side.
    public func branch(_ h: Tensor) -> Tensor { run(h, blocks: 4..<5, inputSide: h.shape[1] * 8).last! }
    public func classify(_ v: Tensor) -> Tensor { classifier(v) }

    func run(_ x: Tensor, blocks range: Range<Int>, inputSide: Int) -> [Tensor] {
        var h = x, out: [Tensor] = []
        for i in range {
            if i > 0 && (i <= 3 || inputSide == 64) { h = maxPool2d(h, kernel: 2) }
            h = blocks[i](h).relu()
            out.append(h)
        }
        return out
    }
}
