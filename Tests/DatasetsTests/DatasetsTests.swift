import Datasets
import Foundation
import TestSupport
import XCTest

/// Writes small dataset files into a fresh temporary directory.
final class TempDir {
    let path: String
    init() {
        path = NSTemporaryDirectory() + "distill-test-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func write(_ name: String, _ bytes: [UInt8]) { _ = FileManager.default.createFile(atPath: path + "/" + name, contents: Data(bytes)) }
    func gzip(_ name: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/gzip")
        p.arguments = ["-f", path + "/" + name]
        try! p.run(); p.waitUntilExit()
    }
}

/// A CIFAR record: label byte(s), then planes R, G, B with pixel p of plane c = (seed + 3p + c) mod 256.
func cifarRecord(labels: [UInt8], seed: Int) -> [UInt8] {
    var r = labels
    for c in 0..<3 { for p in 0..<1024 { r.append(UInt8((seed + 3 * p + c) % 256)) } }
    return r
}

func idxBytes(magic: UInt32, dims: [Int], payload: [UInt8]) -> [UInt8] {
    func be(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8((v >> 16) & 255), UInt8((v >> 8) & 255), UInt8(v & 255)] }
    return be(magic) + dims.flatMap { be(UInt32($0)) } + payload
}

final class DatasetFormatTests: XCTestCase {
    func makeCIFAR10(_ dir: TempDir, recordsPerBatch: Int = 2) {
        for b in 1...5 {
            dir.write("data_batch_\(b).bin", (0..<recordsPerBatch).flatMap { cifarRecord(labels: [UInt8(($0 + b) % 10)], seed: 10 * b + $0) })
        }
        dir.write("test_batch.bin", cifarRecord(labels: [7], seed: 99))
    }

    func testCIFAR10DecodesChannelsLast() throws {
        let dir = TempDir()
        makeCIFAR10(dir)
        let train = try DatasetCatalog.load("cifar10", path: dir.path, split: .train)
        XCTAssertEqual(train.count, 10)
        XCTAssertEqual([train.height, train.width, train.channels], [32, 32, 3])
        XCTAssertEqual(train.label(0), 1)  // batch 1, record 0
        XCTAssertEqual(train.label(3), 3)  // batch 2, record 1
        // pixel p, channel c of batch 2 record 1 (seed 21) is (21 + 3p + c) mod 256, stored at 3p + c
        let px = Array(train.pixels(3))
        for p in [0, 1, 500, 1023] { for c in 0..<3 { XCTAssertEqual(Int(px[3 * p + c]), (21 + 3 * p + c) % 256) } }
        let test = try DatasetCatalog.load("cifar10", path: dir.path, split: .test)
        XCTAssertEqual(test.count, 1)
        XCTAssertEqual(test.label(0), 7)
    }

    func testCIFAR100FineAndCoarseLabels() throws {
        let dir = TempDir()
        dir.write("train.bin", cifarRecord(labels: [3, 77], seed: 1) + cifarRecord(labels: [19, 5], seed: 2))
        dir.write("test.bin", cifarRecord(labels: [0, 99], seed: 3))
        let fine = try DatasetCatalog.load("cifar100", path: dir.path, split: .train)
        XCTAssertEqual([fine.label(0), fine.label(1)], [77, 5])
        XCTAssertEqual(fine.classes, 100)
        let coarse = try DatasetCatalog.load("cifar100", path: dir.path, split: .train, coarseLabels: true)
        XCTAssertEqual([coarse.label(0), coarse.label(1)], [3, 19])
        XCTAssertEqual(coarse.classes, 20)
        XCTAssertEqual(Array(fine.pixels(1))[3 * 5 + 2], UInt8((2 + 15 + 2) % 256))
    }

    func testIDXPlainAndGzip() throws {
        let dir = TempDir()
        let pixels = (0..<(3 * 4 * 5)).map { UInt8($0) }
        for (split, prefix) in [("train", "train"), ("test", "t10k")] {
            _ = split
            dir.write("\(prefix)-images-idx3-ubyte", idxBytes(magic: 0x803, dims: [3, 4, 5], payload: pixels))
            dir.write("\(prefix)-labels-idx1-ubyte", idxBytes(magic: 0x801, dims: [3], payload: [4, 0, 9]))
        }
        let plain = try DatasetCatalog.load("fashion-mnist", path: dir.path, split: .train)
        for prefix in ["train", "t10k"] { dir.gzip("\(prefix)-images-idx3-ubyte"); dir.gzip("\(prefix)-labels-idx1-ubyte") }
        let gz = try DatasetCatalog.load("fashion-mnist", path: dir.path, split: .test)
        for d in [plain, gz] {
            XCTAssertEqual(d.count, 3)
            XCTAssertEqual([d.height, d.width, d.channels], [4, 5, 1])
            XCTAssertEqual([d.label(0), d.label(1), d.label(2)], [4, 0, 9])
            XCTAssertEqual(Array(d.pixels(2)), (40..<60).map { UInt8($0) })
        }
    }

    func testRealFashionMNISTWhenInstalled() throws {
        XCTAssertEqual(DatasetCatalog.fashionMNISTDefaultPath, fashionMNISTPath)
        try requirePrerequisites(.fashionMNIST)
        let train = try DatasetCatalog.load("fashion-mnist", split: .train)
        let test = try DatasetCatalog.load("fashion-mnist", split: .test)
        XCTAssertEqual(train.count, 60_000)
        XCTAssertEqual(test.count, 10_000)
        XCTAssertEqual((0..<10).map { train.label($0)! }, [9, 0, 0, 3, 0, 2, 7, 2, 5, 5])
        XCTAssertEqual((0..<10).map { test.label($0)! }, [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])
        XCTAssertEqual([train.height, train.width, train.channels], [28, 28, 1])
    }
}

final class DatasetErrorTests: XCTestCase {
    func message(_ body: () throws -> Void) -> String {
        do { try body() } catch { return "\(error)" }
        XCTFail("expected an error")
        return ""
    }

    func testMissingDirectoryAndFiles() {
        let m = message { _ = try DatasetCatalog.load("cifar10", path: "/nonexistent/cifar", split: .train) }
        XCTAssertTrue(m.contains("/nonexistent/cifar") && m.contains("data_batch_1.bin") && m.contains("test_batch.bin"), m)
        let dir = TempDir()
        dir.write("data_batch_1.bin", cifarRecord(labels: [1], seed: 0))
        let m2 = message { _ = try DatasetCatalog.load("cifar10", path: dir.path, split: .train) }
        XCTAssertTrue(m2.contains("data_batch_2.bin") && m2.contains("missing"), m2)
        let m3 = message { _ = try DatasetCatalog.load("imagenet", split: .train) }
        XCTAssertTrue(m3.contains("imagenet") && m3.contains("cifar10"), m3)
    }

    func testTruncatedAndOutOfRangeCIFAR() {
        let dir = TempDir()
        dir.write("train.bin", Array(cifarRecord(labels: [1, 2], seed: 0).dropLast(10)))
        dir.write("test.bin", cifarRecord(labels: [1, 100], seed: 0))
        let m = message { _ = try DatasetCatalog.load("cifar100", path: dir.path, split: .train) }
        XCTAssertTrue(m.contains("train.bin") && m.contains("3064") && m.contains("multiple of 3074"), m)
        let m2 = message { _ = try DatasetCatalog.load("cifar100", path: dir.path, split: .test) }
        XCTAssertTrue(m2.contains("label 100") && m2.contains("0..<100"), m2)
    }

    func writeIDX(_ dir: TempDir, images: [UInt8], labels: [UInt8]) {
        dir.write("train-images-idx3-ubyte", images)
        dir.write("train-labels-idx1-ubyte", labels)
    }

    func testIDXErrors() {
        let good = idxBytes(magic: 0x803, dims: [2, 2, 2], payload: [UInt8](repeating: 1, count: 8))
        let goodLabels = idxBytes(magic: 0x801, dims: [2], payload: [1, 2])
        let cases: [(String, [UInt8], [UInt8], [String])] = [
            ("bad magic", idxBytes(magic: 0x801, dims: [2, 2, 2], payload: [UInt8](repeating: 1, count: 8)), goodLabels,
             ["magic number 0x00000801", "expected 0x00000803", "train-images-idx3-ubyte"]),
            ("truncated", Array(good.dropLast(3)), goodLabels, ["21 bytes", "expected 24"]),
            ("count mismatch", good, idxBytes(magic: 0x801, dims: [3], payload: [1, 2, 3]), ["holds 2 images", "3 labels"]),
            ("label range", good, idxBytes(magic: 0x801, dims: [2], payload: [1, 12]), ["label 12", "0..<10"]),
            // Declared sizes whose product overflows, or images with no pixels: errors, not a trap or an allocation.
            ("huge dimensions", idxBytes(magic: 0x803, dims: [0xFFFF_FFFF, 0xFFFF_FFFF, 0xFFFF_FFFF], payload: [1, 2, 3]), goodLabels,
             ["train-images-idx3-ubyte", "4294967295×4294967295×4294967295 bytes as its header declares"]),
            ("huge labels", good, idxBytes(magic: 0x801, dims: [0xFFFF_FFFF], payload: [1]), ["train-labels-idx1-ubyte", "as its header declares"]),
            ("empty images", idxBytes(magic: 0x803, dims: [2, 0, 7], payload: []), goodLabels, ["declares 0×7 images", "1...4096"]),
        ]
        for (name, images, labels, needles) in cases {
            let dir = TempDir()
            writeIDX(dir, images: images, labels: labels)
            let m = message { _ = try DatasetCatalog.load("mnist", path: dir.path, split: .train) }
            for n in needles { XCTAssertTrue(m.contains(n), "\(name): '\(n)' not in: \(m)") }
        }
    }

    func testBadGzip() {
        let dir = TempDir()
        dir.write("train-images-idx3-ubyte.gz", [0x1f, 0x8b, 8, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        dir.write("train-labels-idx1-ubyte.gz", [1, 2, 3])
        let m = message { _ = try DatasetCatalog.load("fashion-mnist", path: dir.path, split: .train) }
        XCTAssertTrue(m.contains("gzip") && m.contains("train-images-idx3-ubyte.gz"), m)
        // A valid gzip stream cut short.
        let dir2 = TempDir()
        dir2.write("train-images-idx3-ubyte", idxBytes(magic: 0x803, dims: [50, 10, 10], payload: (0..<5000).map { UInt8($0 % 251) }))
        dir2.gzip("train-images-idx3-ubyte")
        let full = FileManager.default.contents(atPath: dir2.path + "/train-images-idx3-ubyte.gz")!
        dir2.write("train-images-idx3-ubyte.gz", Array(full.prefix(full.count / 2)))
        dir2.write("train-labels-idx1-ubyte", idxBytes(magic: 0x801, dims: [50], payload: [UInt8](repeating: 0, count: 50)))
        let m2 = message { _ = try DatasetCatalog.load("fashion-mnist", path: dir2.path, split: .train) }
        XCTAssertTrue(m2.contains("truncated") || m2.contains("gzip"), m2)
    }

    /// A gzip stream that expands beyond the limit stops there with an error naming the file.
    func testGzipExpansionIsBounded() throws {
        let dir = TempDir()
        dir.write("big", [UInt8](repeating: 0, count: 50_000))
        dir.gzip("big")
        let bytes = [UInt8](FileManager.default.contents(atPath: dir.path + "/big.gz")!)
        XCTAssertEqual(try gunzip(bytes, path: "big.gz").count, 50_000)
        XCTAssertThrowsError(try gunzip(bytes, path: "big.gz", limit: 10_000)) { e in
            XCTAssertTrue("\(e)".contains("big.gz") && "\(e)".contains("more than 10000 bytes"), "\(e)")
        }
    }

    /// dataset.pad_to: every image of the view centred in zeros, labels and normalisation kept; smaller sides refused.
    func testPaddedTo() throws {
        let store = ImageStore(pixels: (0..<(3 * 2 * 3 * 2)).map { UInt8($0 + 1) }, labels: [7, 8, 9], height: 2, width: 3, channels: 2)
        let d = try Dataset(name: "toy", store: store, classes: 10, mean: [0.5, 0.5], std: [0.2, 0.2]).subset(range: 1..<3)
        let p = try d.padded(to: 5)
        XCTAssertEqual([p.count, p.height, p.width, p.channels], [2, 5, 5, 2])
        XCTAssertEqual([p.label(0), p.label(1)], [8, 9])
        XCTAssertEqual(p.mean, d.mean)
        let img = Array(p.pixels(1))  // item 2 of the store: bytes 25...36, rows of 3 pixels × 2 channels
        // Rows 1–2, columns 1–3 (top = ⌊3/2⌋, left = ⌊2/2⌋) hold the image; everything else is 0.
        for y in 0..<5 {
            for x in 0..<5 {
                let inside = (1...2).contains(y) && (1...3).contains(x)
                let expected: [UInt8] = inside ? Array(d.pixels(1))[((y - 1) * 3 + (x - 1)) * 2..<((y - 1) * 3 + x) * 2].map { $0 } : [0, 0]
                XCTAssertEqual(Array(img[(y * 5 + x) * 2..<(y * 5 + x + 1) * 2]), expected, "pixel (\(y), \(x))")
            }
        }
        XCTAssertEqual(try d.padded(to: 3).height, 3)
        let m = message { _ = try d.padded(to: 2) }
        XCTAssertTrue(m.contains("toy") && m.contains("2×3"), m)
    }

    func testSubsetTooLarge() throws {
        let dir = TempDir()
        dir.write("train.bin", cifarRecord(labels: [1, 2], seed: 0))
        dir.write("test.bin", cifarRecord(labels: [1, 2], seed: 0))
        let d = try DatasetCatalog.load("cifar100", path: dir.path, split: .train)
        let m = message { _ = try d.subset(count: 5) }
        XCTAssertTrue(m.contains("5") && m.contains("has 1"), m)
        let m2 = message { _ = try d.subset(range: 0..<2) }
        XCTAssertTrue(m2.contains("0..<2"), m2)
        let m3 = message { _ = try d.splitValidation(count: 2, seed: 1) }
        XCTAssertTrue(m3.contains("validation"), m3)
    }
}
