// Fuzz targets for every reader of untrusted input, for libFuzzer: launch/fuzz builds this target (declared in
// Package.swift only when DISTILL_FUZZ is set) with -sanitize=fuzzer, whose libFuzzer driver main below hands
// the arguments to, and runs one reader per process, chosen by
// DISTILL_FUZZ_TARGET: safetensors, yaml (a config), state (a checkpoint's state.json), idx (Fashion-MNIST's
// files, plain or gzip), cifar (CIFAR-10 and CIFAR-100 batches). Every input must end in a value or a thrown
// error; a crash, a hang (libFuzzer's -timeout) or runaway memory (-rss_limit_mb) is a finding.
import Datasets
import Foundation
import TensorFiles
import Training

let target = ProcessInfo.processInfo.environment["DISTILL_FUZZ_TARGET"] ?? ""
/// A directory of this process's own for the readers that take paths (in memory where /dev/shm exists).
let scratch: String = {
    let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
    let dir = base + "/distill-fuzz-\(getpid())"
    try? FileManager.default.createDirectory(atPath: dir + "/run/checkpoints", withIntermediateDirectories: true)
    return dir
}()

/// A valid IDX file of `dims` (1 for labels [2], 3 for images [2, 2, 2]), for the file of a pair not fuzzed.
func validIDX(kind: Int) -> Data {
    var d = Data([0, 0, 8, UInt8(kind)])
    let dims = kind == 1 ? [2] : [2, 2, 2]
    for n in dims { d.append(contentsOf: [0, 0, 0, UInt8(n)]) }
    d.append(contentsOf: [UInt8](repeating: 1, count: dims.reduce(1, *)))
    return d
}

func write(_ data: Data, _ name: String) { _ = FileManager.default.createFile(atPath: scratch + "/" + name, contents: data) }
func remove(_ names: [String]) { for n in names { try? FileManager.default.removeItem(atPath: scratch + "/" + n) } }

/// libFuzzer's driver (linked by -sanitize=fuzzer): parses libFuzzer's flags and calls `test` with each input.
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                     _ test: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

@main
struct DistillFuzz {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(runFuzzerDriver(&argc, &argv) { start, count in fuzzOneInput(start, count) })
    }
}

func fuzzOneInput(_ start: UnsafePointer<UInt8>?, _ count: Int) -> CInt {
    let data = count > 0 ? Data(bytes: start!, count: count) : Data()
    switch target {
    case "safetensors":
        _ = try? SafeTensors.read(data: data, path: "fuzz.safetensors")
    case "yaml":
        _ = try? TrainConfig.parse(String(decoding: data, as: UTF8.self), source: "fuzz.yaml")
    case "state":
        write(data, "run/checkpoints/state.json")
        _ = try? RunDirectory(scratch + "/run").readState()
    case "idx":
        // The first byte picks the file fuzzed (images or labels) and its form (gzip or plain); the other is valid.
        guard let choice = data.first else { return 0 }
        let body = data.dropFirst(), names = ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
        remove(names + names.map { $0 + ".gz" })
        let fuzzed = Int(choice & 1), gz = choice & 2 != 0 ? ".gz" : ""
        write(Data(body), names[fuzzed] + gz)
        write(validIDX(kind: fuzzed == 0 ? 1 : 3), names[1 - fuzzed])
        _ = try? DatasetCatalog.load("fashion-mnist", path: scratch, split: .test)
    case "cifar":
        guard let choice = data.first else { return 0 }
        let hundred = choice & 1 != 0
        write(Data(data.dropFirst()), hundred ? "test.bin" : "test_batch.bin")
        _ = try? DatasetCatalog.load(hundred ? "cifar100" : "cifar10", path: scratch, split: .test, coarseLabels: choice & 2 != 0)
    default:
        FileHandle.standardError.write(Data("DISTILL_FUZZ_TARGET must be one of safetensors, yaml, state, idx, cifar (got '\(target)')\n".utf8))
        exit(2)
    }
    return 0
}
