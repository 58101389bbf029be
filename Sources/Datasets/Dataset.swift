// Image datasets held in memory as bytes (channels-last, H×W×C per image) with integer labels, and views
// over them: subsets, unlabeled views, unions and seeded validation splits. Views share the bytes.
import Foundation
import Tensors

/// Failures reading or slicing a dataset. Each message names the file, field or value and what was expected.
public enum DatasetError: Error, CustomStringConvertible, Equatable {
    case missingDirectory(path: String, expected: [String])
    case missingFile(path: String, expected: String)
    case unreadable(path: String, reason: String)
    case badSize(path: String, size: Int, expected: String)
    case badMagic(path: String, found: UInt32, expected: UInt32)
    case mismatch(String)
    case badGzip(path: String, reason: String)
    case labelOutOfRange(path: String, index: Int, label: Int, classes: Int)
    case badSubset(String)
    case unknownDataset(String)
    case badNormalization(channels: Int, mean: [Float], std: [Float])

    public var description: String {
        switch self {
        case let .missingDirectory(path, expected):
            return "dataset directory '\(path)' does not exist; expected it to hold: \(expected.joined(separator: ", "))"
        case let .missingFile(path, expected):
            return "missing file '\(path)' (\(expected))"
        case let .unreadable(path, reason):
            return "cannot read '\(path)': \(reason)"
        case let .badSize(path, size, expected):
            return "'\(path)' has \(size) bytes; expected \(expected) (truncated or not this format?)"
        case let .badMagic(path, found, expected):
            return "'\(path)' is not an IDX file of the expected kind: magic number \(String(format: "0x%08X", found)), expected \(String(format: "0x%08X", expected))"
        case let .mismatch(message):
            return message
        case let .badGzip(path, reason):
            return "'\(path)' does not decompress as gzip: \(reason)"
        case let .labelOutOfRange(path, index, label, classes):
            return "'\(path)': label \(label) of record \(index) is outside 0..<\(classes)"
        case let .badSubset(message):
            return message
        case let .unknownDataset(name):
            return "unknown dataset '\(name)'; expected one of: cifar10, cifar100, fashion-mnist, mnist"
        case let .badNormalization(channels, mean, std):
            return "normalisation needs one mean and one positive std per channel (\(channels)), got mean \(mean) and std \(std)"
        }
    }
}

/// Pixel bytes and labels of one loaded split.
public final class ImageStore {
    public let pixels: [UInt8]
    public let labels: [Int32]
    public let count: Int, height: Int, width: Int, channels: Int
    public var imageBytes: Int { height * width * channels }

    public init(pixels: [UInt8], labels: [Int32], height: Int, width: Int, channels: Int) {
        precondition(pixels.count == labels.count * height * width * channels,
                     "ImageStore: \(pixels.count) pixel bytes do not hold \(labels.count) images of \(height)×\(width)×\(channels)")
        self.pixels = pixels; self.labels = labels
        self.count = labels.count; self.height = height; self.width = width; self.channels = channels
    }
}

/// A view of images: which items of a store, whether labels are visible, and per-channel normalisation.
public struct Dataset {
    public let name: String
    public let store: ImageStore
    /// Items of `store` in this view, in order.
    public let indices: [Int]
    /// False when labels are withheld from the method (label-free distillation, extra unlabeled data).
    public let isLabeled: Bool
    public let classes: Int
    /// Per-channel mean and standard deviation of pixel values in [0, 1], for normalisation.
    public let mean: [Float], std: [Float]

    public init(name: String, store: ImageStore, indices: [Int]? = nil, isLabeled: Bool = true, classes: Int,
                mean: [Float], std: [Float]) {
        precondition(mean.count == store.channels && std.count == store.channels,
                     "Dataset: mean/std need one value per channel (\(store.channels))")
        self.name = name; self.store = store
        self.indices = indices ?? Array(0..<store.count)
        self.isLabeled = isLabeled; self.classes = classes; self.mean = mean; self.std = std
    }

    public var count: Int { indices.count }
    public var height: Int { store.height }
    public var width: Int { store.width }
    public var channels: Int { store.channels }

    /// The label of item i of this view, or nil when labels are withheld.
    public func label(_ i: Int) -> Int? { isLabeled ? Int(store.labels[indices[i]]) : nil }

    /// The pixel bytes of item i (H×W×C).
    public func pixels(_ i: Int) -> ArraySlice<UInt8> {
        let start = indices[i] * store.imageBytes
        return store.pixels[start..<(start + store.imageBytes)]
    }

    /// This view normalised with other per-channel statistics (an official code's constants).
    public func normalized(mean: [Float], std: [Float]) throws -> Dataset {
        guard mean.count == channels, std.count == channels, std.allSatisfy({ $0 > 0 }) else {
            throw DatasetError.badNormalization(channels: channels, mean: mean, std: std)
        }
        return Dataset(name: name, store: store, indices: indices, isLabeled: isLabeled, classes: classes, mean: mean, std: std)
    }

    func with(indices: [Int], isLabeled: Bool? = nil, name: String? = nil) -> Dataset {
        Dataset(name: name ?? self.name, store: store, indices: indices, isLabeled: isLabeled ?? self.isLabeled,
                classes: classes, mean: mean, std: std)
    }

    /// This view without the items whose indices (positions in the same files) are in `drop`.
    public func excluding(indices drop: Set<Int>) -> Dataset { with(indices: indices.filter { !drop.contains($0) }) }

    /// The first `count` items.
    public func subset(count n: Int) throws -> Dataset {
        guard n >= 0 && n <= count else {
            throw DatasetError.badSubset("subset of \(n) items requested from '\(name)', which has \(count)")
        }
        return with(indices: Array(indices.prefix(n)))
    }

    /// Items `range` of this view.
    public func subset(range: Range<Int>) throws -> Dataset {
        guard range.lowerBound >= 0 && range.upperBound <= count else {
            throw DatasetError.badSubset("subset range \(range.lowerBound)..<\(range.upperBound) is outside '\(name)', which has \(count) items")
        }
        return with(indices: Array(indices[range]))
    }

    /// The same images with labels withheld.
    public func unlabeled() -> Dataset { with(indices: indices, isLabeled: false, name: name + " (unlabeled)") }

    /// A held-out validation split of `count` items chosen by `seed`; returns (rest, validation), each in the
    /// original order.
    public func splitValidation(count n: Int, seed: UInt64) throws -> (train: Dataset, validation: Dataset) {
        guard n >= 0 && n <= count else {
            throw DatasetError.badSubset("validation split of \(n) items requested from '\(name)', which has \(count)")
        }
        var g = Generator(seed: seed, stream: [0x7661_6C69])  // "vali"
        var order = Array(0..<count)
        for i in stride(from: count - 1, to: 0, by: -1) { order.swapAt(i, g.int(below: i + 1)) }
        let held = Set(order.prefix(n))
        let train = (0..<count).filter { !held.contains($0) }.map { indices[$0] }
        let validation = (0..<count).filter { held.contains($0) }.map { indices[$0] }
        return (with(indices: train), with(indices: validation, name: name + " (validation)"))
    }

    /// Every image zero-padded, centred, to `side`×`side` (the border is what a 0 byte normalises to; the
    /// normalisation statistics stay the stored images'). Only this view's items are kept, in order.
    public func padded(to side: Int) throws -> Dataset {
        guard side >= height && side >= width else {
            throw DatasetError.badSubset("cannot pad '\(name)' (\(height)×\(width)) to \(side)×\(side): the images are larger")
        }
        if side == height && side == width { return self }
        let top = (side - height) / 2, left = (side - width) / 2, C = channels, row = width * C
        var out = [UInt8](repeating: 0, count: count * side * side * C)
        out.withUnsafeMutableBufferPointer { dst in
            store.pixels.withUnsafeBufferPointer { src in
                for (k, i) in indices.enumerated() {
                    let s = src.baseAddress! + i * store.imageBytes, d = dst.baseAddress! + k * side * side * C
                    for y in 0..<height { (d + ((top + y) * side + left) * C).update(from: s + y * row, count: row) }
                }
            }
        }
        let labels = indices.map { store.labels[$0] }
        return Dataset(name: name, store: ImageStore(pixels: out, labels: labels, height: side, width: side, channels: C),
                       isLabeled: isLabeled, classes: classes, mean: mean, std: std)
    }

    /// All items of several datasets of the same image shape, in order. Labeled only if every part is.
    /// Normalisation statistics come from the first part.
    public static func union(_ parts: [Dataset]) throws -> Dataset {
        guard let first = parts.first else { throw DatasetError.badSubset("union of no datasets") }
        for p in parts where (p.height, p.width, p.channels) != (first.height, first.width, first.channels) {
            throw DatasetError.mismatch("cannot join '\(p.name)' (\(p.height)×\(p.width)×\(p.channels)) with '\(first.name)' (\(first.height)×\(first.width)×\(first.channels)): image shapes differ")
        }
        if parts.count == 1 { return first }
        var pixels: [UInt8] = [], labels: [Int32] = []
        pixels.reserveCapacity(parts.reduce(0) { $0 + $1.count } * first.store.imageBytes)
        for p in parts {
            for i in 0..<p.count {
                pixels.append(contentsOf: p.pixels(i))
                labels.append(p.store.labels[p.indices[i]])
            }
        }
        let store = ImageStore(pixels: pixels, labels: labels, height: first.height, width: first.width,
                               channels: first.channels)
        return Dataset(name: parts.map(\.name).joined(separator: " + "), store: store,
                       isLabeled: parts.allSatisfy(\.isLabeled), classes: parts.map(\.classes).max() ?? 0,
                       mean: first.mean, std: first.std)
    }
}
