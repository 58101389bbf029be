import Datasets
import Foundation
import TestSupport
import XCTest

/// An in-memory dataset of `n` images h×w×c whose pixels encode the item and position.
func syntheticDataset(n: Int, h: Int = 6, w: Int = 5, c: Int = 3, labeled: Bool = true) -> Dataset {
    var pixels = [UInt8]()
    for i in 0..<n { for p in 0..<(h * w * c) { pixels.append(UInt8((i * 7 + p) % 256)) } }
    let store = ImageStore(pixels: pixels, labels: (0..<n).map { Int32($0 % 10) }, height: h, width: w, channels: c)
    return Dataset(name: "synthetic", store: store, isLabeled: labeled, classes: 10,
                   mean: [Float](repeating: 0.5, count: c), std: [Float](repeating: 0.25, count: c))
}

final class SamplingTests: XCTestCase {
    func testSamplerDependsOnlyOnSeedAndEpoch() {
        let a = EpochSampler(count: 100, batchSize: 8, seed: 3), b = EpochSampler(count: 100, batchSize: 8, seed: 3)
        XCTAssertEqual(a.order(epoch: 4), b.order(epoch: 4))
        XCTAssertNotEqual(a.order(epoch: 4), a.order(epoch: 5))
        XCTAssertNotEqual(a.order(epoch: 4), EpochSampler(count: 100, batchSize: 8, seed: 4).order(epoch: 4))
        XCTAssertEqual(Set(a.order(epoch: 1)), Set(0..<100))
        XCTAssertEqual(a.stepsPerEpoch, 12)
        XCTAssertEqual(a.batches(epoch: 0).map(\.count), [Int](repeating: 8, count: 12), "drop_last")
        let keep = EpochSampler(count: 100, batchSize: 8, seed: 3, dropLast: false)
        XCTAssertEqual(keep.batches(epoch: 0).last?.count, 4)
        XCTAssertEqual(EpochSampler(count: 5, batchSize: 2, seed: 0, shuffle: false).order(epoch: 9), [0, 1, 2, 3, 4])
    }

    /// A last partial batch is kept unless it is smaller than `minLastBatch` (batch statistics need two samples,
    /// and every data-parallel replica one).
    func testLastPartialBatch() {
        XCTAssertEqual(EpochSampler(count: 10, batchSize: 4, seed: 0, dropLast: true).stepsPerEpoch, 2)
        let keep = EpochSampler(count: 10, batchSize: 4, seed: 0, dropLast: false, minLastBatch: 2)
        XCTAssertEqual(keep.batches(epoch: 0).map(\.count), [4, 4, 2])
        XCTAssertEqual(keep.droppedPerEpoch, 0)
        let one = EpochSampler(count: 9, batchSize: 4, seed: 0, dropLast: false, minLastBatch: 2)
        XCTAssertEqual(one.batches(epoch: 0).map(\.count), [4, 4], "a last batch of one image is dropped")
        XCTAssertEqual(one.droppedPerEpoch, 1)
        XCTAssertEqual(EpochSampler(count: 10, batchSize: 4, seed: 0, dropLast: false, minLastBatch: 3).stepsPerEpoch, 2)
    }

    func testShardsCoverEachEpochExactlyOnce() {
        for replicas in [1, 2, 3, 4] {
            let s = EpochSampler(count: 103, batchSize: 10, seed: 1, dropLast: false)
            var seen: [Int] = []
            for batch in s.batches(epoch: 2) {
                for r in 0..<replicas { seen += batch[EpochSampler.shard(size: batch.count, replica: r, of: replicas)] }
            }
            XCTAssertEqual(seen.sorted(), Array(0..<103), "\(replicas) replicas")
        }
    }

    func testNormalisationWithoutAugmentation() {
        let d = syntheticDataset(n: 3)
        let b = makeBatch(d, items: [2, 0], augmentation: .none, seed: 1, epoch: 0, step: 0)
        XCTAssertEqual(b.images[0].shape, [2, 6, 5, 3])
        XCTAssertEqual(b.labels!, [2, 0])
        let px = Array(d.pixels(2))
        for k in [0, 17, 89] { XCTAssertEqual(b.images[0].data[k], (Float(px[k]) / 255 - 0.5) / 0.25, accuracy: 1e-5) }
        XCTAssertNil(makeBatch(d.unlabeled(), items: [0], augmentation: .none, seed: 1, epoch: 0, step: 0).labels)
    }

    /// Reflection padding (torchvision's padding_mode='reflect', FFL's loader): every pixel of the crop is a pixel of
    /// the image, mirrored about the border pixel without repeating it; an 8-pixel ramp padded by 3 and shifted by
    /// the crop to the far left starts 3 2 1 0 1 2 3 4.
    func testReflectionPaddingMirrorsTheBorder() {
        let store = ImageStore(pixels: (0..<64).map { UInt8($0) }, labels: [0], height: 8, width: 8, channels: 1)
        let d = Dataset(name: "ramp", store: store, classes: 1, mean: [0], std: [1])
        let aug = Augmentation(cropPadding: 3, padMode: .reflect)
        var rows = Set<[Int]>()
        for step in 0..<200 {
            let out = makeBatch(d, items: [0], augmentation: aug, seed: 2, epoch: 0, step: step).images[0].array.map { Int(($0 * 255).rounded()) }
            XCTAssertTrue(out.allSatisfy { (0..<64).contains($0) }, "only image pixels, no zeros of padding: \(out.prefix(8))")
            // Columns within a row come from one row of the image: out[x] % 8 is the mirrored column.
            rows.insert(out.prefix(8).map { $0 % 8 })
        }
        func mirrored(_ v: Int) -> Int { v < 0 ? -v : (v > 7 ? 14 - v : v) }
        let expected = Set((-3...3).map { dx in (0..<8).map { mirrored($0 + dx) } })
        XCTAssertEqual(rows, expected, "every horizontal shift of the reflected row, and only those")
        XCTAssertTrue(rows.contains([3, 2, 1, 0, 1, 2, 3, 4]))
    }

    func testCropAndFlipMoveWholePixels() {
        // A constant image: every output pixel is the constant or, where the crop reaches the padding, zero.
        var store = ImageStore(pixels: [UInt8](repeating: 200, count: 2 * 8 * 8), labels: [0, 1], height: 8, width: 8, channels: 1)
        var d = Dataset(name: "flat", store: store, classes: 2, mean: [0], std: [1])
        let b = makeBatch(d, items: [0, 1], augmentation: Augmentation(cropPadding: 3, horizontalFlip: true), seed: 5, epoch: 0, step: 0)
        let values = Set(b.images[0].array.map { ($0 * 255).rounded() })
        XCTAssertTrue(values.isSubset(of: [0, 200]), "\(values)")
        // Flip only: each row comes out either unchanged or mirrored.
        store = ImageStore(pixels: (0..<64).map { UInt8($0) }, labels: [0], height: 8, width: 8, channels: 1)
        d = Dataset(name: "ramp", store: store, classes: 1, mean: [0], std: [1])
        var flipped = 0
        for step in 0..<40 {
            let out = makeBatch(d, items: [0], augmentation: Augmentation(horizontalFlip: true), seed: 9, epoch: 0, step: step)
                .images[0].array.map { Int(($0 * 255).rounded()) }
            let mirror = (0..<64).map { (($0 / 8) * 8) + 7 - $0 % 8 }
            XCTAssertTrue(out == Array(0..<64) || out == mirror)
            if out == mirror { flipped += 1 }
        }
        XCTAssertTrue(flipped > 5 && flipped < 35, "flips \(flipped) of 40")
    }

    func testPeersGetDifferentAugmentationsIndependentOfPlacement() {
        let d = syntheticDataset(n: 20, h: 12, w: 12, c: 1)
        let all = makeBatch(d, items: Array(0..<8), augmentation: .cifar, seed: 4, epoch: 1, step: 3, peers: [0, 1, 2])
        XCTAssertNotEqual(all.images[0].array, all.images[1].array, "peers see different augmentations")
        // A rank hosting only peer 2 gets exactly what the single process made for peer 2.
        let alone = makeBatch(d, items: Array(0..<8), augmentation: .cifar, seed: 4, epoch: 1, step: 3, peers: [2])
        XCTAssertEqual(alone.images[0].array, all.images[2].array)
        // A replica preparing positions 4..<8 gets the same samples as the whole batch's second half.
        let half = makeBatch(d, items: Array(4..<8), positions: Array(4..<8), augmentation: .cifar, seed: 4, epoch: 1, step: 3, peers: [1])
        XCTAssertEqual(half.images[0].array, Array(all.images[1].array[(4 * 144)...]))
    }

    func testLoaderMatchesDirectBatchesAndPrefetches() {
        let d = syntheticDataset(n: 50)
        let s = EpochSampler(count: 50, batchSize: 16, seed: 2)
        let loader = BatchLoader(data: d, sampler: s, epoch: 3, augmentation: .cifar, peers: [0, 1], replica: 1, replicas: 2)
        var steps = 0
        for (k, batch) in loader.enumerated() {
            let global = s.batches(epoch: 3)[k]
            let direct = makeBatch(d, items: Array(global[8..<16]), positions: Array(8..<16), augmentation: .cifar,
                                   seed: 2, epoch: 3, step: k, peers: [0, 1])
            XCTAssertEqual(batch.indices, direct.indices)
            XCTAssertEqual(batch.images[1].array, direct.images[1].array)
            steps += 1
        }
        XCTAssertEqual(steps, 3)
    }

    func testUnionUnlabeledAndValidationSplit() throws {
        let a = syntheticDataset(n: 10), b = syntheticDataset(n: 4).unlabeled()
        let u = try Dataset.union([a, b])
        XCTAssertEqual(u.count, 14)
        XCTAssertFalse(u.isLabeled, "a union with an unlabeled part withholds labels")
        XCTAssertEqual(Array(u.pixels(11)), Array(b.pixels(1)))
        XCTAssertThrowsError(try Dataset.union([a, syntheticDataset(n: 2, h: 3)]))
        let (train, val) = try a.splitValidation(count: 3, seed: 7)
        XCTAssertEqual(train.count, 7); XCTAssertEqual(val.count, 3)
        XCTAssertEqual(Set(train.indices).union(val.indices), Set(0..<10))
        XCTAssertEqual(try a.splitValidation(count: 3, seed: 7).validation.indices, val.indices)
        XCTAssertEqual(try a.subset(range: 2..<5).indices, [2, 3, 4])
    }
}
