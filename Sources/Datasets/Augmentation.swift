// Per-sample augmentation and normalisation into the engine's channels-last float layout.
// Training: random crop from the image padded by `cropPadding` on each side (zeros, or a reflection of the border
// as torchvision's padding_mode='reflect', which FFL's official loader uses), random horizontal flip,
// normalisation (x/255 − mean)/std, optional Cutout (a square zeroed after normalisation, as in DeVries &
// Taylor's code). Evaluation: normalisation only.
import Tensors

/// How the crop's padding is filled: zeros (before normalisation, as torchvision's default), or the image reflected
/// about its border pixel (torchvision's 'reflect': the border is not repeated).
public enum PadMode: String, Codable, CaseIterable { case zeros, reflect }

public struct Augmentation: Codable, Equatable {
    /// Padding on each side before a random crop back to the original size (0 = no crop).
    public var cropPadding: Int
    /// What fills the padding.
    public var padMode: PadMode
    /// Flip left-right with probability ½.
    public var horizontalFlip: Bool
    /// Side of the Cutout square (0 = none).
    public var cutout: Int

    public init(cropPadding: Int = 0, padMode: PadMode = .zeros, horizontalFlip: Bool = false, cutout: Int = 0) {
        self.cropPadding = cropPadding; self.padMode = padMode; self.horizontalFlip = horizontalFlip; self.cutout = cutout
    }

    /// No augmentation: normalisation only (evaluation).
    public static let none = Augmentation()
    /// The usual CIFAR recipe: pad 4, random crop, flip.
    public static let cifar = Augmentation(cropPadding: 4, horizontalFlip: true)
    /// For 28×28 Fashion-MNIST: pad 2, random crop, flip.
    public static let fashionMNIST = Augmentation(cropPadding: 2, horizontalFlip: true)

    /// The usual training augmentation for a dataset name.
    public static func standard(for name: String) -> Augmentation {
        name.lowercased().hasPrefix("cifar") ? .cifar : .fashionMNIST
    }
}

/// Writes item `i` of `data`, augmented with draws from `rng`, normalised, into `dst` (H×W×C floats).
@inline(__always)
func writeSample(_ data: Dataset, _ i: Int, _ aug: Augmentation, _ rng: inout Generator,
                 _ scale: UnsafePointer<Float>, _ shift: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>) {
    let H = data.height, W = data.width, C = data.channels
    let p = aug.cropPadding
    let dy = p > 0 ? rng.int(below: 2 * p + 1) - p : 0
    let dx = p > 0 ? rng.int(below: 2 * p + 1) - p : 0
    let flip = aug.horizontalFlip && rng.uniform() < 0.5
    let start = data.indices[i] * data.store.imageBytes
    let reflect = aug.padMode == .reflect
    precondition(!reflect || p < min(H, W), "Augmentation: reflection padding \(p) needs images wider and taller than it (\(H)×\(W))")
    /// A coordinate outside 0..<n reflected back inside (torchvision's 'reflect').
    @inline(__always) func mirrored(_ v: Int, _ n: Int) -> Int { v < 0 ? -v : (v >= n ? 2 * (n - 1) - v : v) }
    data.store.pixels.withUnsafeBufferPointer { all in
        let src = all.baseAddress! + start
        for y in 0..<H {
            let sy = reflect ? mirrored(y + dy, H) : y + dy
            let row = dst + y * W * C
            if sy < 0 || sy >= H {
                for x in 0..<W { for c in 0..<C { row[x * C + c] = shift[c] } }
                continue
            }
            for x in 0..<W {
                let sx = reflect ? mirrored((flip ? W - 1 - x : x) + dx, W) : (flip ? W - 1 - x : x) + dx
                if sx < 0 || sx >= W {
                    for c in 0..<C { row[x * C + c] = shift[c] }
                } else {
                    let s = src + (sy * W + sx) * C
                    for c in 0..<C { row[x * C + c] = Float(s[c]) * scale[c] + shift[c] }
                }
            }
        }
    }
    if aug.cutout > 0 {
        let cy = rng.int(below: H), cx = rng.int(below: W), half = aug.cutout / 2
        for y in max(0, cy - half)..<min(H, cy - half + aug.cutout) {
            for x in max(0, cx - half)..<min(W, cx - half + aug.cutout) {
                for c in 0..<C { dst[(y * W + x) * C + c] = 0 }
            }
        }
    }
}

/// A batch in the engine's layout: images [B, H, W, C] (one tensor per requested peer view) and labels.
public struct Batch {
    /// Images for each requested peer, in the order the peers were asked for.
    public let images: [Tensor]
    /// Labels, or nil when the dataset withholds them.
    public let labels: [Int]?
    /// Items of the dataset in this batch.
    public let indices: [Int]
    /// Each item's position in the global batch (a data-parallel replica holds a slice of it).
    public let positions: [Int]
    /// Items in the global batch (this batch's own count unless it is a replica's slice).
    public let globalCount: Int
}

/// Builds one batch of `items` (indices into `data`). Peer p's view of the sample at position k of the global
/// batch uses the stream (seed, epoch, step, p, globalPosition[k]), so a sample's augmentation does not depend
/// on which rank or replica prepares it.
public func makeBatch(_ data: Dataset, items: [Int], positions: [Int]? = nil, globalCount: Int? = nil, augmentation: Augmentation,
                      seed: UInt64, epoch: Int, step: Int, peers: [Int] = [0]) -> Batch {
    let H = data.height, W = data.width, C = data.channels, per = H * W * C
    var scale = [Float](repeating: 0, count: C), shift = [Float](repeating: 0, count: C)
    for c in 0..<C { scale[c] = 1 / (255 * data.std[c]); shift[c] = -data.mean[c] / data.std[c] }
    let pos = positions ?? Array(0..<items.count)
    var images: [Tensor] = []
    for peer in peers {
        let t = Tensor(uninitialized: [items.count, H, W, C])
        scale.withUnsafeBufferPointer { sc in
            shift.withUnsafeBufferPointer { sh in
                for (k, item) in items.enumerated() {
                    var rng = Generator(seed: seed, stream: [UInt64(epoch), UInt64(step), UInt64(peer), UInt64(pos[k])])
                    writeSample(data, item, augmentation, &rng, sc.baseAddress!, sh.baseAddress!, t.data + k * per)
                }
            }
        }
        images.append(t)
    }
    let labels = data.isLabeled ? items.map { data.label($0)! } : nil
    return Batch(images: images, labels: labels, indices: items, positions: pos, globalCount: globalCount ?? items.count)
}
