import Foundation
import TestSupport
import XCTest

/// Integration tests: the built binary's self-tests under mpirun on 1 to 4 ranks.
final class MPITests: XCTestCase {
    var mpirun: String!

    override func setUpWithError() throws {
        try requirePrerequisites(.binary, .mpirun)
        mpirun = which("mpirun") ?? "mpirun"
    }

    func testEveryCollectiveOnOneToFourRanks() {
        for ranks in 1...4 {
            let r = runProcess(mpirun, localMPIRun(ranks, ["selftest", "collectives"]), timeout: 120)
            XCTAssertEqual(r.status, 0, "\(ranks) ranks:\n\(r.output)")
            XCTAssertTrue(r.output.contains("selftest collectives: ok (\(ranks) rank"), r.output)
        }
    }

    /// Every offline feature method's step on R data-parallel ranks gives the one-process objective, gradient and
    /// memory banks (Sources/distill/SelfTestFeatures.swift), R = 1, 2, 3, collectives fingerprinted.
    func testFeatureMethodsMatchOneProcessOnOneToThreeRanks() {
        for ranks in 1...3 {
            let r = runProcess(mpirun, localMPIRun(ranks, ["selftest", "feature-methods", "--check-collectives"]), timeout: 300)
            XCTAssertEqual(r.status, 0, "\(ranks) ranks:\n\(r.output)")
            XCTAssertTrue(r.output.contains("selftest feature-methods: ok (\(ranks) rank"), r.output)
        }
    }

    func testCheckModePassesWhenRanksAgree() {
        let r = runProcess(mpirun, localMPIRun(3, ["selftest", "collectives", "--check-collectives"]), timeout: 120)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("ok (3 ranks)"), r.output)
    }

    func testWithoutMpirunTheProgramIsAWorldOfOne() {
        let r = runProcess(distillBinary, ["selftest", "collectives"], timeout: 60)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("ok (1 rank)"), r.output)
    }

    func testAFatalErrorOnOneRankEndsTheWholeJob() {
        let r = runProcess(mpirun, localMPIRun(4, ["selftest", "failure", "--kind", "throw", "--rank", "2"]), timeout: 30)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertLessThan(r.seconds, 10, "every process ends within 10 s")
        XCTAssertFalse(r.timedOut)
        XCTAssertTrue(r.output.contains("distill: fatal: rank 2: selftest: rank 2 failed on purpose"), r.output)
    }

    func testCheckModeNamesAMismatchedCollective() {
        let r = runProcess(mpirun, localMPIRun(3, ["selftest", "failure", "--kind", "mismatch", "--rank", "1"],
                                               environment: ["DISTILL_CHECK_COLLECTIVES"]),
                           environment: ["DISTILL_CHECK_COLLECTIVES": "1"], timeout: 30)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertLessThan(r.seconds, 10)
        XCTAssertTrue(r.output.contains("collective mismatch: rank 1 calls allGather(count 48)") &&
                      r.output.contains("rank 0 calls allGather(count 40)"), r.output)
    }

    func testStallWatchdogNamesTheCollective() {
        let r = runProcess(mpirun, localMPIRun(3, ["selftest", "failure", "--kind", "stall", "--rank", "1"],
                                               environment: ["DISTILL_COLLECTIVE_TIMEOUT"]),
                           environment: ["DISTILL_COLLECTIVE_TIMEOUT": "2"], timeout: 30)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertLessThan(r.seconds, 10)
        XCTAssertTrue(r.output.contains("stalled for 2 s in allGather"), r.output)
    }
}

/// launch/run: the command it builds, and real local jobs through it.
final class LaunchRunTests: XCTestCase {
    let script = packageRoot + "/launch/run"

    func testDryRunCommand() throws {
        let r = runProcess(script, ["-np", "64", "--dry-run", "--mca", "coll_tuned_use_dynamic_rules", "1", "--", "train", "x.yaml"])
        XCTAssertEqual(r.status, 0, r.output)
        let cores = ProcessInfo.processInfo.activeProcessorCount
        XCTAssertTrue(r.output.hasPrefix("mpirun -np 64"), r.output)
        XCTAssertEqual(r.output.contains("--allow-run-as-root"), getuid() == 0, "root flag only as root")
        XCTAssertEqual(r.output.contains("--oversubscribe"), 64 > cores)
        XCTAssertTrue(r.output.contains("--mca coll_tuned_use_dynamic_rules 1"), "pass-through options")
        XCTAssertTrue(r.output.contains("-x OPENBLAS_NUM_THREADS=1"))
        XCTAssertTrue(r.output.hasSuffix("distill train x.yaml \n") || r.output.contains("distill train x.yaml"), r.output)
        let one = runProcess(script, ["-np", "1", "--dry-run", "--", "bench", "comm"])
        XCTAssertTrue(one.output.contains("OPENBLAS_NUM_THREADS=\(cores)") && one.output.contains("--bind-to"), one.output)
        XCTAssertFalse(one.output.contains("--oversubscribe"))
        let bad = runProcess(script, ["--dry-run", "--", "train"])
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.output.contains("-np N is required"), bad.output)
    }

    /// Inside a (fake) Slurm or PBS allocation without a hostfile: no loopback pinning, threads from the
    /// allocation's cores per node, PBS's node file turned into a hostfile; a broken allocation is a usage error.
    func testDryRunInsideAllocations() throws {
        let slurm = runProcess(script, ["-np", "4", "--dry-run", "--", "train", "x.yaml"],
                               environment: ["SLURM_JOB_NODELIST": "node[1-2]", "SLURM_JOB_NUM_NODES": "2", "SLURM_JOB_CPUS_PER_NODE": "8(x2)"])
        XCTAssertEqual(slurm.status, 0, slurm.output)
        XCTAssertTrue(slurm.output.contains("Slurm allocation: 2 node(s), 8 core(s) per node, 2 rank(s)"), slurm.output)
        XCTAssertTrue(slurm.output.contains("-x OPENBLAS_NUM_THREADS=4"), slurm.output)
        XCTAssertFalse(slurm.output.contains("_if_include lo"), "TCP is not pinned to loopback")
        XCTAssertFalse(slurm.output.contains("--hostfile") || slurm.output.contains("--oversubscribe"), "mpirun reads Slurm's allocation")
        let dir = NSTemporaryDirectory() + "distill-pbs-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let nodefile = dir + "/nodes"
        try "n1\nn1\nn1\nn2\nn2\nn2\n".write(toFile: nodefile, atomically: true, encoding: .utf8)
        let pbs = runProcess(script, ["-np", "2", "--dry-run", "--", "train", "x.yaml"], environment: ["PBS_NODEFILE": nodefile, "TMPDIR": dir])
        XCTAssertEqual(pbs.status, 0, pbs.output)
        XCTAssertTrue(pbs.output.contains("#   n1 slots=3\n#   n2 slots=3"), pbs.output)
        XCTAssertTrue(pbs.output.contains("--hostfile \(dir)/distill-pbs-hosts.") && pbs.output.contains("OPENBLAS_NUM_THREADS=3"), pbs.output)
        XCTAssertFalse(pbs.output.contains("_if_include lo"))
        let broken = runProcess(script, ["-np", "2", "--dry-run", "--", "train", "x.yaml"], environment: ["SLURM_JOB_NODELIST": "node[1-2]"])
        XCTAssertEqual(broken.status, 2)
        XCTAssertTrue(broken.output.contains("SLURM_JOB_NUM_NODES"), broken.output)
    }

    func testLocalJobThroughLaunchRun() throws {
        let r = runProcess(script, ["-np", "3", "--oversubscribe", "--", "selftest", "collectives"], timeout: 120)
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("ok (3 ranks)"), r.output)
        // A config error is not something a restart fixes.
        let c = runProcess(script, ["-np", "2", "--max-restarts", "3", "--", "train", "/nonexistent/x.yaml"], timeout: 60)
        XCTAssertEqual(c.status, 2, c.output)
        XCTAssertTrue(c.output.contains("not restarting") && !c.output.contains("restart 1 of 3"), c.output)
        let f = runProcess(script, ["-np", "2", "--", "selftest", "failure", "--kind", "throw", "--rank", "1"], timeout: 30)
        XCTAssertNotEqual(f.status, 0)
        XCTAssertTrue(f.output.contains("distill: fatal: rank 1"), f.output)
    }
}
