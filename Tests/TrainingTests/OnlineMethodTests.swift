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

/// Every online method computes the same numbers with one process hosting all peers and with one peer per rank:
/// 5 steps from the same seed, each peer's parameter vector (every tensor of its checkpoint) within 1e-4
/// relative, ‖a − b‖₂ / ‖a‖₂. The two differ only in summation order: about 1e-8 after one step. Training on
/// Fashion-MNIST amplifies any such difference quickly (its constant backgrounds give thousands of equal
/// activations that cross a ReLU threshold together): scaling the loss of a one-process OKDDip run by (1 + 1e-6)
/// moves its weights by 1e-5 after 3 steps and 1e-3 after 5 at lr 0.1, as much as placing it on 2 ranks does.
/// Methods with shared or fused parts are therefore compared at lr 0.003, where 5 steps on 1 and on R ranks
/// agree to about 2e-8 (at lr 0.01 a mass ReLU crossing already lifts FFL to 1e-4).
final class OnlineMethodTests: XCTestCase {
    var dir = "", lastOutput = ""

    override func setUpWithError() throws {
        try requirePrerequisites(.fashionMNIST, .binary, .mpirun)
        dir = NSTemporaryDirectory() + "distill-online-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDown() { if !dir.isEmpty { try? FileManager.default.removeItem(atPath: dir) } }

    /// Trains `config` for 5 steps of 32 images on `ranks` ranks; returns the checkpoint directory.
    func train(_ config: String, models: [String], ranks: Int, extra: [String], suffix: String = "") throws -> String {
        var extra = extra, out = dir + "/\(config)\(suffix)-\(ranks)"
        if let i = extra.firstIndex(of: "--out") { out = extra[i + 1]; extra.removeSubrange(i...(i + 1)) }
        let args = ["train", packageRoot + "/configs/\(config).yaml", "--out", out, "--set", "epochs=1", "--set", "batch_size=32",
                    "--set", "dataset.train_subset=160", "--set", "dataset.test_subset=64", "--set", "threads=1",
                    "--set", "models=[\(models.joined(separator: ", "))]"]
            + (MethodRegistry.spec(config)?.key("rampup_epochs") != nil ? ["--set", "method.rampup_epochs=0"] : []) + extra
        // Check mode: every rank fingerprints every collective, so a rank out of step is named at once.
        let check = ["DISTILL_CHECK_COLLECTIVES": "1"]
        let r = ranks == 1 ? runProcess(distillBinary, args, environment: check, timeout: 300)
                           : runProcess(packageRoot + "/launch/run", ["-np", "\(ranks)", "--"] + args, environment: check, timeout: 300)
        XCTAssertEqual(r.status, 0, r.output)
        lastOutput = r.output
        return out + "/checkpoints/epoch-1"
    }

    /// Asserts ‖a − b‖₂ ≤ rtol·‖a‖₂ over every tensor of two checkpoint files with the same names and shapes.
    func compare(_ a: String, _ b: String, rtol: Double = 1e-4, file: StaticString = #filePath, line: UInt = #line) throws {
        let (x, _) = try SafeTensors.read(a), (y, _) = try SafeTensors.read(b)
        XCTAssertEqual(x.map { $0.0 }, y.map { $0.0 }, "same tensor names", file: file, line: line)
        var diff = 0.0, norm = 0.0, worst = (0.0, "")
        for ((name, t), (_, u)) in zip(x, y) {
            XCTAssertEqual(t.shape, u.shape, "'\(name)' shape", file: file, line: line)
            var d = 0.0
            for (p, q) in zip(t.values, u.values) { d += Double(p - q) * Double(p - q); norm += Double(p) * Double(p) }
            diff += d
            if d > worst.0 { worst = (d, name) }
        }
        let relative = (diff / max(norm, 1e-30)).squareRoot()
        XCTAssertLessThanOrEqual(relative, rtol, "\(a) vs \(b): relative difference \(relative), largest in '\(worst.1)'", file: file, line: line)
    }

    /// Trains on 1 rank and on each of `ranks`; every peer's file (and the method's) agrees with the 1-rank run.
    /// Returns the 1-rank checkpoint and each multi-rank one.
    /// `extraRtol` bounds the per-peer extra state (MCL's memory banks: rows written from the step's embeddings,
    /// so their relative difference is that of activations, not of initial weights plus small updates).
    /// `optimizerRtol`, when given, also bounds each peer's optimiser state (momentum: the gradients' running sum,
    /// far more sensitive to a wrong gradient than the weights after a few small steps).
    func checkEquality(_ config: String, models: [String], ranks: [Int], extra: [String] = [], rtol: Double = 1e-4,
                       extraRtol: Double = 1e-4, optimizerRtol: Double? = nil, suffix: String = "") throws -> (one: String, many: [String]) {
        let one = try train(config, models: models, ranks: 1, extra: extra, suffix: suffix)
        var many: [String] = []
        for R in ranks {
            let dir = try train(config, models: models, ranks: R, extra: extra, suffix: suffix)
            for p in 0..<models.count {
                try compare(one + "/peer\(p).safetensors", dir + "/peer\(p).safetensors", rtol: rtol)
                if let r = optimizerRtol { try compare(one + "/peer\(p).optimizer.safetensors", dir + "/peer\(p).optimizer.safetensors", rtol: r) }
            }
            for f in ["method.safetensors"] + (0..<models.count).flatMap({ ["peer\($0).module.safetensors", "peer\($0).extra.safetensors"] })
            where FileManager.default.fileExists(atPath: one + "/" + f) {
                try compare(one + "/" + f, dir + "/" + f, rtol: f.hasSuffix(".extra.safetensors") ? extraRtol : rtol)
            }
            let lines = try String(contentsOfFile: (dir as NSString).deletingLastPathComponent + "/../metrics.jsonl", encoding: .utf8)
            XCTAssertTrue(lines.contains("\"teacher_test_top1\""), "the teacher is evaluated: \(lines)")
            many.append(dir)
        }
        return (one, many)
    }

    /// The stem tensors of every peer's file from an R-rank run: each rank wrote its own replica.
    func checkStemReplicasAgree(_ dir: String, peers: Int) throws {
        try checkStemReplicasAgreeUpTo(dir, peers: peers, stem: ["conv1.", "bn1.", "layer1.", "layer2."])
    }

    func checkStemReplicasAgreeUpTo(_ dir: String, peers: Int, stem prefixes: [String]) throws {
        let files = try (0..<peers).map { try SafeTensors.read(dir + "/peer\($0).safetensors").tensors }
        let stem = { (name: String) in prefixes.contains { name.hasPrefix($0) } }
        for (name, t) in files[0] where stem(name) {
            for p in 1..<peers {
                XCTAssertEqual(files[p].first { $0.0 == name }?.1.values, t.values, "stem replica of peer \(p) differs in '\(name)'")
            }
        }
    }

    /// Heterogeneous peers: 2 on 2 ranks, and 3 on 2 (rank 0 hosts two, rank 1 one).
    func testDMLAgreesOnEveryPlacement() throws {
        _ = try checkEquality("dml", models: ["resnet8", "resnet14"], ranks: [2])
        _ = try checkEquality("dml", models: ["resnet8", "resnet14", "resnet8"], ranks: [2, 3])
    }

    /// MCL: 3 branches on a conv1..layer1 stem, on 3 and 2 ranks; heads, banks (updated after every step) and
    /// the stem agree.
    func testMCLAgreesOnEveryPlacement() throws {
        let (one, many) = try checkEquality("mcl", models: ["resnet8", "resnet8", "resnet8"], ranks: [3, 2],
                                            extra: ["--set", "optimizer.lr=0.003", "--set", "method.nce_k=32"], extraRtol: 1e-3)
        XCTAssertTrue(FileManager.default.fileExists(atPath: one + "/peer2.extra.safetensors"), "the banks are saved")
        for dir in many { try checkStemReplicasAgreeUpTo(dir, peers: 3, stem: ["conv1.", "bn1.", "layer1."]) }
    }

    /// OEC: 3 students of decreasing width on a conv1·bn1 base, on 3 and 2 ranks (student 0's detached stage maps
    /// reach the others through an allreduce), with the teacher's CE on (our option, which puts the logits' gather
    /// on the tape; the official loss alone runs in testPeersTimesReplicasAgreeWithOneProcess).
    func testOECAgreesOnEveryPlacement() throws {
        let (one, many) = try checkEquality("oec", models: ["resnet8", "resnet8", "resnet8"], ranks: [3, 2],
                                            extra: ["--set", "optimizer.lr=0.0003", "--set", "method.teacher_ce_weight=0.7"])
        let (w, _) = try SafeTensors.read(one + "/peer2.safetensors")
        XCTAssertEqual(w.first { $0.0 == "layer3.0.conv1.weight" }?.1.shape, [21, 10, 3, 3], "student 2 has a third of the widths")
        for dir in many { try checkStemReplicasAgreeUpTo(dir, peers: 3, stem: ["conv1.", "bn1."]) }
    }

    /// OKDHP: 3 branches and the aggregation unit on 3 and 2 ranks (the KL's gradient into the ensemble reaches
    /// the other ranks' branches through the allgather and the unit through the replicated sum).
    func testOKDHPAgreesOnEveryPlacement() throws {
        let (_, many) = try checkEquality("okdhp", models: ["resnet8", "resnet8", "resnet8"], ranks: [3, 2], extra: ["--set", "optimizer.lr=0.003"])
        for dir in many { try checkStemReplicasAgree(dir, peers: 3) }
    }

    func testONEAgreesOnEveryPlacement() throws {
        let (_, many) = try checkEquality("one", models: ["resnet8", "resnet8", "resnet8"], ranks: [3, 2], extra: ["--set", "optimizer.lr=0.003"])
        for dir in many { try checkStemReplicasAgree(dir, peers: 3) }
    }

    /// P peers × D data-parallel replicas (P·D ranks, peer-major) compute what one process hosting the P peers
    /// computes on the same global batch: batch norm synchronised across each peer's replicas, every gradient
    /// averaged over them, MCL's negatives keyed by position in the whole batch and its Z and bank updates taken
    /// over it, CSS's ratio from the whole batch's losses. Every online method, 2 peers × 2 replicas (OKDDip: 2
    /// peers and the leader × 2), in check mode: the weights after 5 steps, and after one step the momentum buffers
    /// too, within 1e-5 (that step's gradients: about 5e-7 apart; CSS with each replica's own loss ratio, 2e-4;
    /// after 5 steps summation order alone moves them by up to 1e-2). AFD is held
    /// to 3e-3: its Adam phases move every weight by about ±lr in their first steps whatever the gradient's size,
    /// so the summation-order noise of a gradient averaged over replicas (near zero for many weights) becomes
    /// lr-sized (7e-4 to 1.7e-3 measured).
    func testPeersTimesReplicasAgreeWithOneProcess() throws {
        for (config, models, lr) in [("dml", ["resnet8", "resnet14"], "0.003"), ("one", ["resnet8", "resnet8"], "0.003"),
                                     ("pcl", ["resnet8", "resnet8"], "0.003"), ("ffl", ["resnet8", "resnet14"], "0.003"),
                                     ("afd", ["resnet8", "wrn10_2"], "0.003"), ("mcl", ["resnet8", "resnet8"], "0.003"),
                                     ("oec", ["resnet8", "resnet8"], "0.0003"), ("okdhp", ["resnet8", "resnet8"], "0.003"),
                                     ("okddip", ["resnet8", "resnet8", "resnet8"], "0.003"), ("css", ["resnet8", "resnet14"], "0.003")] {
            let keys = ["--set", "optimizer.lr=\(lr)"] + (config == "mcl" ? ["--set", "method.nce_k=32"] : [])
            _ = try checkEquality(config, models: models, ranks: [2 * models.count], extra: keys,
                                  rtol: config == "afd" ? 3e-3 : 1e-4, extraRtol: 1e-3)
            // One step: the momentum buffers are that step's gradients, before training amplifies summation order.
            _ = try checkEquality(config, models: models, ranks: [2 * models.count],
                                  extra: keys + ["--set", "dataset.train_subset=32"],
                                  rtol: config == "afd" ? 3e-3 : 1e-4, extraRtol: 1e-3, optimizerRtol: config == "afd" ? nil : 1e-5, suffix: "-1step")
        }
    }

    /// The last partial batch (kept by default, as the official loaders' drop_last=False): 53 images in batches of
    /// 32 and 21, the 21 split 10 / 11 over 2 replicas. Each replica's objective weighted by its slice's share adds
    /// up to the global batch's mean, so 2 peers × 2 replicas still compute one process's numbers.
    func testUnevenLastBatchAgreesWithOneProcess() throws {
        for (config, models) in [("dml", ["resnet8", "resnet14"]), ("ffl", ["resnet8", "resnet14"])] {
            _ = try checkEquality(config, models: models, ranks: [2 * models.count],
                                  extra: ["--set", "optimizer.lr=0.1", "--set", "dataset.train_subset=53"], extraRtol: 1e-3, suffix: "-uneven")
            XCTAssertTrue(lastOutput.contains("step 2/2"), "\(config): the last partial batch is a step: \(lastOutput.suffix(400))")
        }
    }

    /// 4 branches (3 peers + the group leader) on 4, 3 and 2 ranks. On 4 and 3 the leader's rank never reads the
    /// gathered features, so its objective does not reach that collective: the collective rule keeps it in step.
    func testOKDDipAgreesOnEveryPlacement() throws {
        let (_, many) = try checkEquality("okddip", models: Array(repeating: "resnet8", count: 4), ranks: [4, 3, 2],
                                          extra: ["--set", "optimizer.lr=0.003"])
        for dir in many { try checkStemReplicasAgree(dir, peers: 4) }
    }

    /// Each peer its own augmentation through a shared stem (statistics averaged over every view, however they are
    /// spread over ranks); mean teachers live with their peers.
    func testPCLAgreesOnEveryPlacement() throws {
        let (_, many) = try checkEquality("pcl", models: ["resnet8", "resnet8", "resnet8"], ranks: [3, 2], extra: ["--set", "optimizer.lr=0.003"])
        for dir in many { try checkStemReplicasAgree(dir, peers: 3) }
    }

    /// Trains `config` on 2 ranks for 2 epochs straight, and for 1 epoch then --resume to 2; every file of the
    /// final checkpoint must be bit-identical. Returns the files compared.
    func checkResumeIsExact(_ config: String, models: [String]) throws -> [String] {
        let common = ["--set", "batch_size=32", "--set", "dataset.train_subset=96", "--set", "dataset.test_subset=64",
                      "--set", "threads=1", "--set", "models=[\(models.joined(separator: ", "))]"]
        func run(_ out: String, _ epochs: Int, resume: Bool = false) {
            let args = ["-np", "2", "--", "train", packageRoot + "/configs/\(config).yaml", "--out", out, "--set", "epochs=\(epochs)"]
                + common + (resume ? ["--resume"] : [])
            let r = runProcess(packageRoot + "/launch/run", args, timeout: 300)
            XCTAssertEqual(r.status, 0, r.output)
        }
        run(dir + "/\(config)-straight", 2)
        run(dir + "/\(config)-resumed", 1)
        run(dir + "/\(config)-resumed", 2, resume: true)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/\(config)-straight/checkpoints/epoch-2").sorted()
        for f in files {
            XCTAssertEqual(FileManager.default.contents(atPath: dir + "/\(config)-straight/checkpoints/epoch-2/" + f),
                           FileManager.default.contents(atPath: dir + "/\(config)-resumed/checkpoints/epoch-2/" + f), "\(config): \(f)")
        }
        return files
    }

    /// Resuming an online method restores its modules, mean teachers and momentum: PCL on 2 ranks ends
    /// bit-identical to 2 epochs straight, in every file.
    func testPCLResumeOnTwoRanksIsExact() throws {
        XCTAssertEqual(try checkResumeIsExact("pcl", models: ["resnet8", "resnet8"]).count, 8)
    }

    /// CSS's networks (stems, masked branches, joint classifiers) and their momentum resume exactly.
    func testCSSResumeOnTwoRanksIsExact() throws {
        XCTAssertEqual(try checkResumeIsExact("css", models: ["resnet8", "resnet14"]).count, 4)
    }

    /// CSS: two multi-branch networks of different depths, both on one rank or one per rank; the per-branch and
    /// dual-ensemble accuracies are reported.
    func testCSSAgreesOnEveryPlacement() throws {
        let (_, many) = try checkEquality("css", models: ["resnet8", "resnet14"], ranks: [2], extra: ["--set", "optimizer.lr=0.003"])
        let metrics = try String(contentsOfFile: (many[0] as NSString).deletingLastPathComponent + "/../metrics.jsonl", encoding: .utf8)
        let m = try JSONDecoder().decode(EpochMetrics.self, from: Data(metrics.split(separator: "\n").last!.utf8))
        XCTAssertEqual(m.teacher, "dual ensemble")
        XCTAssertEqual(m.extraTestTop1?.keys.sorted(), ["peer0.branch0", "peer0.branch1", "peer0.branch2", "peer1.branch0", "peer1.branch1", "peer1.branch2"])
    }

    /// Different architectures, one per rank: the fusion module's slices live with their peers. (The deeper
    /// resnet20 / resnet32 / wrn16_2 cohort is as sensitive to a 1e-6 change of the loss as to placement — 1.8e-4
    /// after 5 steps even at lr 0.001 — so equality is checked on shallower different architectures, and the
    /// deeper cohort is run on 3 ranks.)
    func testFFLHeterogeneousPeersOnThreeRanks() throws {
        // Two steps, not five: with the F(4×4, 3×3) Winograd tiles the background pixels of a Fashion-MNIST image no
        // longer give exactly equal activations (the transforms round them apart by about 1e-7), so they stop
        // crossing ReLU thresholds together and training amplifies placement's summation order faster. Five steps
        // at lr 0.003 then differ by 3e-4 (2e-8 with F(2×2, 3×3)); two agree to about 4e-7.
        let (_, many) = try checkEquality("ffl", models: ["resnet8", "resnet14", "wrn10_2"], ranks: [3, 2],
                                          extra: ["--set", "optimizer.lr=0.003", "--set", "dataset.train_subset=64"])
        for p in 0..<3 { XCTAssertTrue(FileManager.default.fileExists(atPath: many[0] + "/peer\(p).module.safetensors")) }
        let deep = try train("ffl", models: ["resnet20", "resnet32", "wrn16_2"], ranks: 3, extra: ["--out", dir + "/ffl-deep"])
        XCTAssertTrue(FileManager.default.fileExists(atPath: deep + "/peer2.safetensors"))
        let metrics = try String(contentsOfFile: dir + "/ffl-deep/metrics.jsonl", encoding: .utf8)
        XCTAssertTrue(metrics.contains("\"teacher\":\"fused\""), metrics)
    }
}

extension OnlineMethodTests {
    /// AFD: a cycle of three networks of two widths (adapters on both sides of the wide one), its logit update and
    /// both adversarial phases, on 1, 3 and 2 ranks; the feature maps travel through the ring exchange.
    func testAFDAgreesOnEveryPlacement() throws {
        let (one, many) = try checkEquality("afd", models: ["resnet8", "wrn10_2", "resnet14"], ranks: [3, 2],
                                            extra: ["--set", "optimizer.lr=0.003"])
        for dir in [one] + many {
            for p in 0..<3 { XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/peer\(p).module.safetensors")) }
        }
        XCTAssertTrue(lastOutput.contains("optimizer discriminator (adam, lr 2e-05 constant)"), lastOutput)
        let metrics = try String(contentsOfFile: (many[0] as NSString).deletingLastPathComponent + "/../metrics.jsonl", encoding: .utf8)
        let m = try JSONDecoder().decode(EpochMetrics.self, from: Data(metrics.split(separator: "\n").last!.utf8))
        XCTAssertEqual(m.terms.keys.sorted(), ["adversarial", "ce", "discriminator", "kl"])
        XCTAssertTrue(m.terms.values.allSatisfy { $0.isFinite && $0 > 0 }, "\(m.terms)")
    }

    /// FFL-S, the official form: three sub-networks share conv1..layer2; the fusion module trains at its own weight
    /// decay (1e-5) in a parameter group of the one optimiser.
    func testFFLSharedStemAgreesOnEveryPlacement() throws {
        let (_, many) = try checkEquality("ffl", models: ["resnet8", "resnet8", "resnet8"], ranks: [3, 2],
                                          extra: ["--set", "method.shared_stem=true", "--set", "optimizer.lr=0.003"])
        for dir in many { try checkStemReplicasAgree(dir, peers: 3) }
        XCTAssertTrue(lastOutput.contains("weight decay 0.0001; ") && lastOutput.contains("weight decay 1e-05"), lastOutput)
    }
}

/// One model on two ranks trains data-parallel: each rank takes half of every batch, gradients are averaged.
final class DataParallelTests: XCTestCase {
    override func setUpWithError() throws { try requirePrerequisites(.fashionMNIST, .binary, .mpirun) }

    func testIndependentOnTwoRanksTrainsOneModel() throws {
        let out = NSTemporaryDirectory() + "distill-dp-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = runProcess(packageRoot + "/launch/run", ["-np", "2", "--", "train", packageRoot + "/configs/independent.yaml",
            "--out", out, "--set", "epochs=1", "--set", "batch_size=64", "--set", "model=resnet8", "--set", "threads=1",
            "--set", "dataset.train_subset=640", "--set", "dataset.test_subset=200"], timeout: 300)
        XCTAssertEqual(r.status, 0, r.output)
        let (tensors, _) = try SafeTensors.read(out + "/checkpoints/epoch-1/peer0.safetensors")
        XCTAssertFalse(tensors.isEmpty)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/checkpoints/epoch-1/peer1.safetensors"), "one model, one file")
        let metrics = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8)
        XCTAssertTrue(metrics.contains("\"test_top1\""), metrics)
        // More ranks than peers must be a whole number of replicas per peer.
        let bad = runProcess(packageRoot + "/launch/run", ["-np", "3", "--", "train", packageRoot + "/configs/dml.yaml",
            "--out", out + "-bad", "--set", "models=[resnet8, resnet8]", "--set", "epochs=1"], timeout: 120)
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.output.contains("3 ranks for 2 peers: with more ranks than peers every peer trains data-parallel on the same number of ranks, so run a multiple of 2 ranks (or at most 2)"), bad.output)
    }
}

/// Every offline feature method trains one student data-parallel on 2 ranks from its config, evaluates the student
/// and the teacher, and saves the student's adapters beside it.
final class FeatureMethodTrainingTests: XCTestCase {
    override func setUpWithError() throws { try requirePrerequisites(.fashionMNIST, .binary, .mpirun) }

    func testEveryFeatureMethodTrainsDataParallel() throws {
        let dir = NSTemporaryDirectory() + "distill-feature-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let teacher = try trainTeacher(in: dir)
        // resnet8 → resnet8x4 differ in channels, so every method that has adapters builds them.
        let adapters: [String: Bool] = ["fitnets": true, "at": false, "crd": true, "dkd": false, "msdcrd": true, "avatar": true]
        for (method, hasAdapters) in adapters.sorted(by: { $0.key < $1.key }) {
            let out = dir + "/" + method
            var args = ["-np", "2", "--", "train", packageRoot + "/configs/\(method).yaml", "--out", out, "--set", "epochs=1",
                        "--set", "batch_size=64", "--set", "threads=1", "--set", "dataset.train_subset=256", "--set", "dataset.test_subset=64"] + teacher
            if method == "crd" { args += ["--set", "method.nce_k=64"] }
            let r = runProcess(packageRoot + "/launch/run", args, environment: ["DISTILL_CHECK_COLLECTIVES": "1"], timeout: 300)
            XCTAssertEqual(r.status, 0, "\(method): \(r.output)")
            let metrics = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8)
            XCTAssertTrue(metrics.contains("\"teacher_test_top1\""), "\(method): \(metrics)")
            XCTAssertEqual(FileManager.default.fileExists(atPath: out + "/checkpoints/epoch-1/peer0.module.safetensors"), hasAdapters, method)
        }
    }
}

/// `distill bench step` and `distill eval` on a short dml run over 2 ranks.
final class BenchAndEvalCommandTests: XCTestCase {
    override func setUpWithError() throws { try requirePrerequisites(.fashionMNIST, .binary, .mpirun) }

    /// The one JSON object a command printed.
    func json(_ output: String) throws -> [String: Any] {
        let line = output.split(separator: "\n").first { $0.hasPrefix("{") } ?? ""
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], output)
    }

    /// AFD's ring: the payload a rank sends and receives per step stays flat from K = 2 to K = 4 networks (its
    /// predecessor's feature map and the others' logits), where an allgather of maps would grow with K − 1.
    func testAFDPayloadPerRankIsFlatInK() throws {
        func payload(_ K: Int) throws -> (sent: Double, received: Double) {
            let models = "[" + Array(repeating: "resnet8", count: K).joined(separator: ", ") + "]"
            let r = runProcess(packageRoot + "/launch/run", ["-np", "\(K)", "--oversubscribe", "--", "bench", "step", "--config", packageRoot + "/configs/afd.yaml",
                "--steps", "2", "--warmup", "1", "--json", "--set", "models=\(models)", "--set", "batch_size=32", "--set", "threads=1",
                "--set", "dataset.train_subset=128", "--set", "dataset.test_subset=32"], timeout: 300)
            XCTAssertEqual(r.status, 0, r.output)
            let b = try json(r.output)
            return (try XCTUnwrap(b["payload_sent_kib_per_step"] as? Double), try XCTUnwrap(b["payload_received_kib_per_step"] as? Double))
        }
        let two = try payload(2), four = try payload(4)
        let map = 32.0 * 7 * 7 * 64 * 4 / 1024, logits = 32.0 * 10 * 4 / 1024  // KiB: resnet8's last map and its logits
        XCTAssertEqual(two.sent, map + logits, accuracy: 0.01, "one map and one set of logits out")
        XCTAssertEqual(four.sent, map + logits, accuracy: 0.01)
        XCTAssertEqual(two.received, map + logits, accuracy: 0.01, "the predecessor's map and the other's logits in")
        XCTAssertEqual(four.received, map + 3 * logits, accuracy: 0.01, "the predecessor's map and three others' logits in")
    }

    func testBenchStepAndEvalOnTwoRanks() throws {
        let run = packageRoot + "/launch/run", config = packageRoot + "/configs/dml.yaml"
        let small = ["--set", "models=[resnet8, resnet8]", "--set", "dataset.train_subset=256", "--set", "dataset.test_subset=100",
                     "--set", "batch_size=32", "--set", "threads=1"]
        let bench = runProcess(run, ["-np", "2", "--", "bench", "step", "--config", config, "--steps", "2", "--warmup", "1", "--json"] + small, timeout: 300)
        XCTAssertEqual(bench.status, 0, bench.output)
        let b = try json(bench.output)
        for key in ["step_ms_mean", "images_per_second", "communication_share"] { XCTAssertNotNil(b[key] as? Double, "\(key) in \(bench.output)") }
        XCTAssertEqual((b["peak_rss_mib"] as? [Double])?.count, 2, bench.output)
        XCTAssertEqual(b["ranks"] as? Int, 2, bench.output)
        let out = NSTemporaryDirectory() + "distill-eval-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: out) }
        let train = runProcess(run, ["-np", "2", "--", "train", config, "--out", out, "--set", "epochs=1"] + small, timeout: 300)
        XCTAssertEqual(train.status, 0, train.output)
        let eval = runProcess(distillBinary, ["eval", "--config", out + "/config.yaml", "--checkpoint", out, "--json"], timeout: 300)
        XCTAssertEqual(eval.status, 0, eval.output)
        // The checkpoint's accuracy is the one the run measured after its last epoch.
        let metrics = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8)
        let measured = try JSONDecoder().decode(EpochMetrics.self, from: Data(metrics.split(separator: "\n").last!.utf8))
        let e = try json(eval.output)
        XCTAssertEqual((e["test_top1"] as? [Double])?.map(Float.init), measured.testTop1, "eval \(eval.output) vs run \(metrics)")
        XCTAssertEqual(e["teacher"] as? String, "ensemble", eval.output)
        let missing = runProcess(distillBinary, ["eval", "--config", config, "--checkpoint", out + "/nowhere"], timeout: 60)
        XCTAssertEqual(missing.status, 2, missing.output)
    }
}
