import Datasets
import Distillation
import Foundation
import Layers
import Models
import TensorFiles
import Tensors
import TestSupport
import Training
import XCTest

/// A run killed with SIGKILL after its first checkpoint and resumed ends with exactly the weights of an
/// uninterrupted run, on 1 rank and on 2 ranks, and for AFD with its three optimisers (SGD, two Adams); resumed on
/// another number of ranks, within float summation order of it.
final class ResumeTests: XCTestCase {
    var dir = ""

    override func setUpWithError() throws {
        try requirePrerequisites(.fashionMNIST, .binary, .mpirun)
        dir = NSTemporaryDirectory() + "distill-resume-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { if !dir.isEmpty { try? FileManager.default.removeItem(atPath: dir) } }

    func command(_ ranks: Int, _ out: String, config: String = "demo", models: [String]? = nil, resume: Bool = false, extra: [String] = []) -> (String, [String]) {
        var args = ["train", packageRoot + "/configs/\(config).yaml", "--out", out, "--set", "epochs=3",
                    "--set", "dataset.train_subset=1536", "--set", "dataset.test_subset=256", "--set", "threads=1"] + extra
        if let models { args += ["--set", "models=[\(models.joined(separator: ", "))]"] }
        else if ranks > 1 { args += ["--set", "models=[resnet8, resnet8]"] }
        if resume { args.append("--resume") }
        return ranks == 1 ? (distillBinary, args) : (packageRoot + "/launch/run", ["-np", "\(ranks)", "--"] + args)
    }

    /// Compares every file of the final checkpoint (weights, optimiser state, per-peer modules).
    func check(ranks: Int, config: String = "demo", models: [String]? = nil, extra: [String] = []) throws {
        let (exe, straight) = command(ranks, dir + "/straight", config: config, models: models, extra: extra)
        let a = runProcess(exe, straight, timeout: 300)
        XCTAssertEqual(a.status, 0, a.output)
        // Start the same run, kill it as soon as the first checkpoint is committed, resume it.
        let (_, killedArgs) = command(ranks, dir + "/killed", config: config, models: models, extra: extra)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = killedArgs
        p.environment = childEnvironment()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        let state = dir + "/killed/checkpoints/state.json"
        let start = Date()
        while !FileManager.default.fileExists(atPath: state) && p.isRunning && Date().timeIntervalSince(start) < 120 { usleep(5_000) }
        kill(-p.processIdentifier, SIGKILL)
        kill(p.processIdentifier, SIGKILL)
        if ranks > 1 { _ = runProcess("/usr/bin/pkill", ["-KILL", "-f", dir + "/killed"]) }
        p.waitUntilExit()
        XCTAssertEqual(try RunDirectory(dir + "/killed").readState().epoch, 1, "killed after the first checkpoint")
        let (_, resumeArgs) = command(ranks, dir + "/killed", config: config, models: models, resume: true, extra: extra)
        let b = runProcess(exe, resumeArgs, timeout: 300)
        XCTAssertEqual(b.status, 0, b.output)
        XCTAssertTrue(b.output.contains("resuming after epoch 1"), b.output)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/straight/checkpoints/epoch-3").sorted()
        XCTAssertEqual(files, try FileManager.default.contentsOfDirectory(atPath: dir + "/killed/checkpoints/epoch-3").sorted())
        for peer in 0..<(models?.count ?? (config == "demo" ? ranks : 1)) { XCTAssertTrue(files.contains("peer\(peer).safetensors"), "\(files)") }
        for f in files {
            let x = FileManager.default.contents(atPath: dir + "/straight/checkpoints/epoch-3/" + f)
            let y = FileManager.default.contents(atPath: dir + "/killed/checkpoints/epoch-3/" + f)
            XCTAssertEqual(x, y, "\(f): resumed run is bit-identical to the uninterrupted run")
        }
        let lines = try String(contentsOfFile: dir + "/killed/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(lines.count, 3, "one metrics line per epoch after resuming")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/killed/checkpoints/epoch-1"), "older checkpoints are removed")
    }

    func testResumeOnOneRank() throws { try check(ranks: 1) }

    /// launch/run --max-restarts: one rank of a 2-rank run is killed with SIGKILL mid-epoch; the job restarts by
    /// itself from its last checkpoint and ends with the uninterrupted run's files, bit for bit.
    func testLaunchRunRestartsAfterARankIsKilled() throws {
        let (exe, straight) = command(2, dir + "/straight")
        let a = runProcess(exe, straight, timeout: 300)
        XCTAssertEqual(a.status, 0, a.output)
        let (_, args) = command(2, dir + "/killed")
        let state = dir + "/killed/checkpoints/state.json"
        let r = try runKillingOneRank(["--max-restarts", "1"] + args, log: dir + "/launch.log", ranks: dir + "/killed",
                                      pick: { $0.first }, until: { FileManager.default.fileExists(atPath: state) })
        XCTAssertEqual(r.ranksRunning, 2, "two ranks running")
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("restart 1 of 1 (train --resume-if-checkpoint)"), r.output)
        XCTAssertTrue(r.output.contains("resuming after epoch 1"), r.output)
        for f in try FileManager.default.contentsOfDirectory(atPath: dir + "/straight/checkpoints/epoch-3") {
            XCTAssertEqual(FileManager.default.contents(atPath: dir + "/straight/checkpoints/epoch-3/" + f),
                           FileManager.default.contents(atPath: dir + "/killed/checkpoints/epoch-3/" + f), "\(f) bit for bit")
        }
        XCTAssertEqual(try String(contentsOfFile: dir + "/killed/metrics.jsonl", encoding: .utf8).split(separator: "\n").count, 3)
    }

    func testResumeOnTwoRanks() throws {
        try check(ranks: 2)
    }

    /// MCL on 2 ranks (3 branches): the memory banks, embedding heads and momentum come back exactly.
    func testMCLResumeOnTwoRanks() throws {
        try check(ranks: 2, config: "mcl", models: ["resnet8", "resnet8", "resnet8"])
        let (bank, _) = try SafeTensors.read(dir + "/killed/checkpoints/epoch-3/peer2.extra.safetensors")
        XCTAssertEqual(bank.map(\.0), ["memory"])
    }

    /// OEC on 2 ranks (3 students): Adam's state and the frozen adapters come back exactly.
    func testOECResumeOnTwoRanks() throws {
        try check(ranks: 2, config: "oec", models: ["resnet8", "resnet8", "resnet8"])
    }

    /// CRD with one student data-parallel on 2 ranks: the memory banks (updated from both shards), their Z and the
    /// embeddings come back exactly; and so do Avatar's alignment and MGD generator (an adapter per student).
    func testFeatureMethodsResumeOnTwoRanks() throws {
        let teacher = try trainTeacher(in: dir)
        try check(ranks: 2, config: "crd", models: ["resnet8"], extra: teacher + ["--set", "method.nce_k=256", "--set", "batch_size=64"])
        let (bank, _) = try SafeTensors.read(dir + "/killed/checkpoints/epoch-3/peer0.extra.safetensors")
        XCTAssertEqual(bank.map(\.0), ["z", "memory_s.memory", "memory_t.memory"])
        XCTAssertTrue(bank[0].1.values.allSatisfy { $0 > 0 }, "Z is set")
        for sub in ["straight", "killed"] { try FileManager.default.removeItem(atPath: dir + "/" + sub) }
        try check(ranks: 2, config: "avatar", models: ["resnet8"], extra: teacher + ["--set", "method.base=mgd", "--set", "batch_size=64"])
        let (modules, _) = try SafeTensors.read(dir + "/killed/checkpoints/epoch-3/peer0.module.safetensors")
        XCTAssertEqual(modules.map(\.0).first, "align.weight")
    }

    /// A checkpoint is placement-free: written by R ranks and resumed on R' (2 → 1, 1 → 3 and, with 2 replicas of
    /// each peer, 6 → 3; three peers), the run
    /// ends as close to the uninterrupted run on R' as the uninterrupted runs on R and R' are to each other (float
    /// summation order, which training amplifies), tensor by tensor: for `one` (a shared stem, a replicated gate
    /// and their optimiser state) and `pcl` (per-peer mean teachers). Losing any saved state (momentum, a mean
    /// teacher, the gate) moves its tensor by far more. The learning rate is held constant so that a 1-epoch run
    /// resumed to 2 epochs is the 2-epoch run cut after its first.
    func testResumeOnAnotherWorldSize() throws {
        let models = ["resnet8", "resnet8", "resnet8"]
        let sets = ["--set", "schedule.name=multistep", "--set", "schedule.milestones=[10]", "--set", "optimizer.lr=0.05",
                    "--set", "dataset.train_subset=256", "--set", "dataset.test_subset=128"]
        func train(_ config: String, ranks: Int, out: String, epochs: Int, resume: Bool) {
            let (exe, args) = command(ranks, out, config: config, models: models, resume: resume, extra: sets)
            let r = runProcess(exe, args + ["--set", "epochs=\(epochs)"], timeout: 300)
            XCTAssertEqual(r.status, 0, r.output)
            if resume { XCTAssertTrue(r.output.contains("resuming after epoch 1"), r.output) }
        }
        /// Every tensor of a final checkpoint, by file and name.
        func tensors(_ run: String) throws -> [String: [Float]] {
            let dir = run + "/checkpoints/epoch-2/"
            var all: [String: [Float]] = [:]
            for f in try FileManager.default.contentsOfDirectory(atPath: dir) {
                for (name, t) in try SafeTensors.read(dir + f).tensors { all[f + " " + name] = t.values }
            }
            return all
        }
        func difference(_ a: [Float], _ b: [Float]) -> Float { zip(a, b).map { abs($0 - $1) }.max() ?? 0 }
        for config in ["one", "pcl"] {
            var straight: [Int: [String: [Float]]] = [:]
            // `one` also from 3 peers × 2 data-parallel replicas (6 ranks) to one rank per peer.
            let pairs = config == "one" ? [(2, 1), (1, 3), (6, 3)] : [(2, 1), (1, 3)]
            for ranks in Set(pairs.flatMap { [$0.0, $0.1] }).sorted() {
                train(config, ranks: ranks, out: dir + "/\(config)-straight\(ranks)", epochs: 2, resume: false)
                straight[ranks] = try tensors(dir + "/\(config)-straight\(ranks)")
            }
            let names = straight[1]!.keys.sorted()
            XCTAssertTrue(names.contains { $0.hasPrefix("shared.optimizer") } && names.contains { $0.hasPrefix("peer2.optimizer") }, "\(names.prefix(5))")
            if config == "pcl" { XCTAssertTrue(names.contains { $0.hasPrefix("peer2.extra") }, "the mean teachers") }
            for (first, second) in pairs {
                let out = dir + "/\(config)-\(first)to\(second)"
                train(config, ranks: first, out: out, epochs: 1, resume: false)
                XCTAssertEqual(try RunDirectory(out).readState().ranks, first)
                train(config, ranks: second, out: out, epochs: 2, resume: true)
                let resumed = try tensors(out)
                XCTAssertEqual(resumed.keys.sorted(), names)
                for name in names {
                    let reference = straight[second]![name]!, placementGap = difference(straight[first]![name]!, reference)
                    let scale = reference.map { abs($0) }.max() ?? 0
                    let gap = difference(resumed[name] ?? [], reference)
                    XCTAssertLessThanOrEqual(gap, 4 * placementGap + 1e-6 * max(scale, 1),
                                             "\(config) resumed \(first) → \(second) ranks: \(name) is \(gap) from the \(second)-rank run, which is \(placementGap) from the \(first)-rank run")
                }
            }
        }
    }

    /// OKDHP on 2 ranks (3 branches): the aggregation unit (a replicated module) and its momentum come back exactly.
    func testOKDHPResumeOnTwoRanks() throws {
        try check(ranks: 2, config: "okdhp", models: ["resnet8", "resnet8", "resnet8"])
    }

    /// AFD on 2 ranks, networks of different widths (so both adapters exist): the logit SGD's momentum, both
    /// Adams' moments and step counts, the discriminators and adapters all come back exactly.
    func testAFDResumeOnTwoRanks() throws {
        try check(ranks: 2, config: "afd", models: ["resnet8", "wrn10_2"])
        let (state, _) = try SafeTensors.read(dir + "/killed/checkpoints/epoch-3/peer1.optimizer.safetensors")
        let phases = Set(state.map { String($0.0.split(separator: "/")[0]) })
        XCTAssertEqual(phases, ["main", "discriminator", "adversarial"])
        let steps = state.first { $0.0 == "discriminator/module.discriminator.conv1.weight/step" }?.1.values
        XCTAssertEqual(steps, [Float(3 * 1536 / 128)], "Adam's step count after 3 epochs of 12 steps")
        XCTAssertNotNil(state.first { $0.0 == "adversarial/module.adapter.weight/exp_avg" }, "the adapter trains in the adversarial phase")
    }
}

/// Trains a small resnet8x4 teacher (1 epoch, 256 images) in `dir`; returns the `--set` options that name it.
func trainTeacher(in dir: String) throws -> [String] {
    let out = dir + "/teacher"
    let r = runProcess(distillBinary, ["train", packageRoot + "/configs/independent.yaml", "--out", out, "--set", "model=resnet8x4",
                                       "--set", "epochs=1", "--set", "dataset.train_subset=256", "--set", "dataset.test_subset=64",
                                       "--set", "threads=1", "--set", "batch_size=64"], timeout: 300)
    XCTAssertEqual(r.status, 0, r.output)
    return ["--set", "method.teacher_model=resnet8x4", "--set", "method.teacher_checkpoint=\(out)/checkpoints/epoch-1/peer0.safetensors"]
}
