import Distillation
import Foundation
import Layers
import Models
import TensorFiles
import Tensors
import TestSupport
import Training
import XCTest

final class SafeTensorsTests: XCTestCase {
    var dir = ""
    override func setUp() {
        dir = NSTemporaryDirectory() + "distill-st-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// A file from a raw header string and data bytes.
    func file(_ header: String, data: [UInt8]) -> String {
        var bytes = withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { Array($0) }
        bytes += Array(header.utf8) + data
        let path = dir + "/f-\(UUID().uuidString).safetensors"
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    func message(_ body: () throws -> Void) -> String {
        do { try body() } catch { return "\(error)" }
        return "no error"
    }

    func testModelRoundTripWithPyTorchNames() throws {
        var g = Generator(seed: 1)
        let a = try ModelZoo.make("resnet8", classes: 10, generator: &g)
        _ = a(Tensor.randn([2, 8, 8, 3], generator: &g))  // move the running statistics
        let path = dir + "/resnet8.safetensors"
        try a.saveSafeTensors(to: path, metadata: ["model": "resnet8"])
        let (tensors, metadata) = try SafeTensors.read(path)
        XCTAssertEqual(metadata, ["model": "resnet8"])
        XCTAssertEqual(tensors.map { $0.0 }, a.namedState().map { $0.0 }, "file order is state-dict order")
        XCTAssertEqual(tensors.first { $0.0 == "bn1.num_batches_tracked" }?.1.dtype, .I64)
        XCTAssertEqual(tensors.first { $0.0 == "bn1.num_batches_tracked" }?.1.values, [1])
        var g2 = Generator(seed: 2)
        let b = try ModelZoo.make("resnet8", classes: 10, generator: &g2)
        try b.loadSafeTensors(from: path)
        for ((n1, p1), (_, p2)) in zip(a.namedState(), b.namedState()) { XCTAssertEqual(p1.value.array, p2.value.array, n1) }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path + ".tmp-\(getpid())"), "no temporary file left")
    }

    /// A state dict without num_batches_tracked (PyTorch's load_state_dict accepts one) loads, each batch norm
    /// keeping its count; `distill inspect` says which are absent.
    func testStateDictWithoutBatchCountsLoads() throws {
        var g = Generator(seed: 1)
        let a = try ModelZoo.make("resnet8", classes: 10, generator: &g)
        _ = a(Tensor.randn([2, 8, 8, 3], generator: &g))
        let path = dir + "/no-counts.safetensors"
        try SafeTensors.write(named: a.namedState().filter { !$0.0.hasSuffix("num_batches_tracked") }.map { ($0.0, $0.1.value) }, to: path)
        let b = try ModelZoo.make("resnet8", classes: 10, generator: &g)
        try b.loadSafeTensors(from: path)
        for ((n, p), (_, q)) in zip(a.namedState(), b.namedState()) where !n.hasSuffix("num_batches_tracked") {
            XCTAssertEqual(p.value.array, q.value.array, n)
        }
        XCTAssertEqual(b.namedState().first { $0.0 == "bn1.num_batches_tracked" }?.1.value.array, [0], "the model's own count is kept")
        let (tensors, _) = try SafeTensors.read(path)
        XCTAssertEqual(SafeTensors.batchNormsWithoutCount(tensors.map(\.0)).first, "bn1.")
        XCTAssertEqual(SafeTensors.batchNormsWithoutCount(tensors.map(\.0)).count, a.namedState().filter { $0.0.hasSuffix("running_mean") }.count)
        let r = runProcess(distillBinary, ["inspect", path])
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("have no num_batches_tracked") && r.output.contains("load_state_dict"), r.output)
        // Any other missing tensor is still an error.
        try SafeTensors.write(named: a.namedState().filter { $0.0 != "bn1.running_var" }.map { ($0.0, $0.1.value) }, to: path)
        XCTAssertTrue(message { try b.loadSafeTensors(from: path) }.contains("missing tensor 'bn1.running_var'"))
    }

    func testLoadingChecksEveryNameAndShape() throws {
        var g = Generator(seed: 1)
        let r8 = try ModelZoo.make("resnet8", classes: 10, generator: &g)
        let path = dir + "/r8.safetensors"
        try r8.saveSafeTensors(to: path)
        func state(_ m: Classifier) -> [[Float]] { m.namedState().map { $0.1.value.array } }
        let wrongShape = try ModelZoo.make("resnet8", classes: 100, generator: &g)
        let wrongBefore = state(wrongShape)
        let m = message { try wrongShape.loadSafeTensors(from: path) }
        XCTAssertTrue(m.contains("fc.weight") && m.contains("[10, 64]") && m.contains("[100, 64]"), m)
        let bigger = try ModelZoo.make("resnet14", classes: 10, generator: &g)
        let biggerBefore = state(bigger)
        let m2 = message { try bigger.loadSafeTensors(from: path) }
        XCTAssertTrue(m2.contains("missing tensor 'layer1.1.conv1.weight'"), m2)
        let smallerPath = dir + "/r14.safetensors"
        try bigger.saveSafeTensors(to: smallerPath)
        let r8Before = state(r8)
        let m3 = message { try r8.loadSafeTensors(from: smallerPath) }
        XCTAssertTrue(m3.contains("unexpected tensor 'layer1.1.conv1.weight'"), m3)
        // A failed load changes nothing: each model holds what it held before the load.
        XCTAssertEqual(state(wrongShape), wrongBefore, "a load failing on a shape changes nothing")
        XCTAssertEqual(state(bigger), biggerBefore, "a load failing on a missing tensor changes nothing")
        XCTAssertEqual(state(r8), r8Before, "a load failing on an unexpected tensor changes nothing")
    }

    func testMalformedHeaders() {
        let f32x2 = [UInt8](repeating: 0, count: 8)
        let cases: [(String, [UInt8], String)] = [
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}",
             f32x2 + f32x2, "duplicate key 'a'"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
             f32x2 + f32x2 + f32x2, "overlaps"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]}}",
             f32x2 + f32x2 + f32x2, "a hole before 'b'"),
            ("{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", f32x2, "unknown dtype"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", f32x2, "needs 12 bytes"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", f32x2 + [0], "1 bytes after the last tensor"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", [0, 0, 0], "truncated"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", f32x2, "non-negative"),
            ("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", f32x2, "header JSON"),
            ("[1,2]", [], "not a JSON object"),
        ]
        for (header, data, needle) in cases {
            let m = message { _ = try SafeTensors.read(file(header, data: data)) }
            XCTAssertTrue(m.contains(needle), "'\(needle)' not in: \(m)")
        }
        // A header length far beyond the file, and beyond the limit.
        var huge = withUnsafeBytes(of: UInt64.max.littleEndian) { Array($0) }
        huge += [0x7B, 0x7D]
        let path = dir + "/huge.safetensors"
        _ = FileManager.default.createFile(atPath: path, contents: Data(huge))
        XCTAssertTrue(message { _ = try SafeTensors.read(path) }.contains("exceeds the limit"))
        var long = withUnsafeBytes(of: UInt64(1000).littleEndian) { Array($0) }
        long += [0x7B, 0x7D]
        _ = FileManager.default.createFile(atPath: path, contents: Data(long))
        XCTAssertTrue(message { _ = try SafeTensors.read(path) }.contains("runs past the end"))
        XCTAssertTrue(message { _ = try SafeTensors.read(dir + "/none.safetensors") }.contains("no such file"))
    }

    /// Every truncation and every single-byte corruption of the header gives an error or a fully validated
    /// file, never a crash.
    func testTruncationAndBitFlipsNeverCrash() throws {
        var g = Generator(seed: 3)
        let m = Sequential([Conv2d(2, 3, kernelSize: 3, generator: &g), BatchNorm2d(3), Linear(3, 2, generator: &g)])
        let path = dir + "/small.safetensors"
        try m.saveSafeTensors(to: path)
        let good = [UInt8](FileManager.default.contents(atPath: path)!)
        let headerLength = Int(good.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        var errors = 0
        for cut in stride(from: 0, to: good.count, by: 7) {
            _ = FileManager.default.createFile(atPath: path, contents: Data(good.prefix(cut)))
            if (try? SafeTensors.read(path)) == nil { errors += 1 }
        }
        XCTAssertEqual(errors, (good.count + 6) / 7, "every truncated file is rejected")
        var accepted = 0
        for i in 0..<(8 + headerLength) {
            for bit in [0, 3, 6] {
                var b = good
                b[i] ^= UInt8(1 << bit)
                _ = FileManager.default.createFile(atPath: path, contents: Data(b))
                if let (tensors, _) = try? SafeTensors.read(path) {
                    accepted += 1
                    // Whatever was accepted is internally consistent.
                    XCTAssertEqual(tensors.reduce(0) { $0 + $1.1.values.count * $1.1.dtype.size }, good.count - 8 - headerLength)
                }
            }
        }
        XCTAssertLessThan(accepted, 3 * (8 + headerLength) / 2, "most header corruptions are caught")
    }
}
