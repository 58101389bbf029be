import Foundation
import TestSupport
import XCTest

/// Two "nodes" on this machine as network namespaces (launch/netns-cluster), joined by launch/run with the
/// rsh agent the script writes. Needs root and `ip netns`: skipped with the reason otherwise, failed under CI.
final class NetnsClusterTests: XCTestCase {
    let script = packageRoot + "/launch/netns-cluster"
    var dir = ""
    var sessionDir = ""

    override func setUpWithError() throws {
        try requirePrerequisites(.namespaces, .binary, .mpirun)
        dir = NSTemporaryDirectory() + "distill-netns-" + UUID().uuidString
        sessionDir = dir + "/mpi"
        try FileManager.default.createDirectory(atPath: sessionDir, withIntermediateDirectories: true)
        _ = runProcess("/bin/sh", [script, "down", "2"])
        let up = runProcess("/bin/sh", [script, "up", "2", dir], timeout: 30)
        guard up.status == 0 else {
            _ = runProcess("/bin/sh", [script, "down", "2"])
            try requirePrerequisite(where: "cannot create network namespaces here: \(up.output)")
            return
        }
        usleep(1_000_000)  // let the new links come up before daemons connect back
    }

    override func tearDown() {
        guard !dir.isEmpty else { return }
        // Processes of this job that outlived it (an unreachable node's daemon) carry the session directory.
        _ = runProcess("/usr/bin/pkill", ["-KILL", "-f", sessionDir])
        _ = runProcess("/bin/sh", [script, "down", "2"])
        try? FileManager.default.removeItem(atPath: dir)
    }

    func launchArguments(_ distillArgs: [String], grace: Int = 10) -> [String] {
        ["-np", "2", "--hostfile", dir + "/hostfile", "--agent", dir + "/agent", "--net", "10.77.0.0/24",
         "--grace", "\(grace)", "--mca", "orte_tmpdir_base", sessionDir, "--"] + distillArgs
    }

    func testTwoRankJobAcrossNamespaces() {
        var r = runProcess(packageRoot + "/launch/run", launchArguments(["selftest", "loop", "--seconds", "1"]), timeout: 60)
        if r.status != 0 && !r.output.contains(" of 2: netns ") {
            // Open MPI 4.1's daemons occasionally fail to wire up between fresh namespaces before any rank starts
            // (mpirun: "ORTE does not know how to route a message"); that is the launcher, not the job: retry once.
            print("netns job failed to start, retrying once:\n\(r.output)")
            r = runProcess(packageRoot + "/launch/run", launchArguments(["selftest", "loop", "--seconds", "1"]), timeout: 60)
        }
        XCTAssertEqual(r.status, 0, r.output)
        let lines = r.output.split(separator: "\n").filter { $0.contains(" of 2: netns ") }
        XCTAssertEqual(lines.count, 2, r.output)
        let namespaces = Set(lines.compactMap { $0.split(separator: " ").first { $0.hasPrefix("net:[") } })
        XCTAssertEqual(namespaces.count, 2, "ranks ran in different network namespaces: \(lines)")
        XCTAssertTrue(lines.allSatisfy { $0.hasSuffix("allreduce 3") }, "1 + 2 on both ranks: \(lines)")
    }

    /// Starts a long allreduce loop across the two nodes; returns it once both ranks report, or nil (with the
    /// output) if the job ended before that.
    func startLoop(timeout: Int, grace: Int) throws -> (Process, OutputBuffer)? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: packageRoot + "/launch/run")
        p.arguments = launchArguments(["selftest", "loop", "--seconds", "120"], grace: grace)
        p.environment = childEnvironment(["DISTILL_COLLECTIVE_TIMEOUT": "\(timeout)"])
        let out = Pipe()
        p.standardOutput = out; p.standardError = out
        let buffer = OutputBuffer()
        out.fileHandleForReading.readabilityHandler = { h in buffer.append(h.availableData) }
        try p.run()
        let start = Date()
        while buffer.text.components(separatedBy: " of 2: netns ").count < 3 && Date().timeIntervalSince(start) < 30 && p.isRunning {
            usleep(50_000)
        }
        if p.isRunning { return (p, buffer) }
        print("netns job ended before both ranks ran:\n\(buffer.text)")
        return nil
    }

    func testCutLinkEndsTheJobWithinTheWatchdogLimit() throws {
        let timeout = 3, grace = 3
        // As in the test above, Open MPI's daemons occasionally fail to wire up between fresh namespaces: retry once.
        guard let (p, buffer) = try startLoop(timeout: timeout, grace: grace) ?? startLoop(timeout: timeout, grace: grace) else {
            XCTFail("the job across namespaces did not start twice in a row")
            return
        }
        func text() -> String { buffer.text }
        defer { if p.isRunning { kill(-p.processIdentifier, SIGKILL); p.terminate() } }
        usleep(500_000)
        let cut = Date()
        _ = runProcess(which("ip")!, ["link", "set", "v2", "down"])
        while p.isRunning && Date().timeIntervalSince(cut) < Double(timeout + grace + 20) { usleep(50_000) }
        let elapsed = Date().timeIntervalSince(cut)
        XCTAssertFalse(p.isRunning, "the job must end after the link is cut:\n\(text())")
        if !p.isRunning {
            XCTAssertNotEqual(p.terminationStatus, 0, text())
            XCTAssertLessThan(elapsed, Double(timeout + grace + 10), "ends within the watchdog limit plus the grace period")
        }
        XCTAssertTrue(text().contains("stalled for \(timeout) s in allReduce"), text())
    }

    /// The epoch a run directory's state.json names, if any.
    func committedEpoch(_ run: String) -> Int? {
        guard let data = FileManager.default.contents(atPath: run + "/checkpoints/state.json"),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return json["epoch"] as? Int
    }

    /// Runs launch/run across the two nodes; retries once when Open MPI's daemons fail to wire up (see above).
    func launch(_ distillArgs: [String]) -> ProcessResult {
        var r = runProcess(packageRoot + "/launch/run", launchArguments(distillArgs), timeout: 300)
        if r.status != 0 && r.output.contains("ORTE") && !r.output.contains("distill: fatal:") {
            print("netns job failed to start, retrying once:\n\(r.output)")
            r = runProcess(packageRoot + "/launch/run", launchArguments(distillArgs), timeout: 300)
        }
        return r
    }

    /// Nodes that share no disk at the output path (each sees its own directory there): training writes the
    /// whole checkpoint on rank 0's node and nothing on the other; one rank is killed mid-run and
    /// `launch/run --max-restarts 1` resumes the job from rank 0's node; eval reads it from there across the nodes;
    /// and the run ends with the files of the same run on two local ranks sharing one disk, bit for bit.
    func testCheckpointIsWholeOnRankZerosNodeWithoutASharedDisk() throws {
        let out = dir + "/out"
        _ = runProcess("/bin/sh", [script, "down", "2"])
        let up = runProcess("/bin/sh", [script, "up", "2", dir, out], timeout: 30)
        XCTAssertEqual(up.status, 0, up.output)
        usleep(1_000_000)
        let config = packageRoot + "/configs/dml.yaml"
        let sets = ["--set", "models=[resnet8, resnet8]", "--set", "dataset.train_subset=1024", "--set", "dataset.test_subset=256",
                    "--set", "threads=1", "--set", "tensorboard=false", "--set", "epochs=3"]
        // Rank 1 (on node 2) is killed once the first checkpoint is committed on node 1.
        let r = try runKillingOneRank(["--max-restarts", "1"] + launchArguments(["train", config, "--out", out + "/run"] + sets),
                                      log: dir + "/launch.log", ranks: out + "/run", pick: { $0.last },
                                      until: { self.committedEpoch(self.dir + "/disk1/run") != nil })
        let node1 = dir + "/disk1/run/checkpoints", node2 = dir + "/disk2"
        XCTAssertEqual(r.ranksRunning, 2, "two ranks running")
        XCTAssertEqual(r.status, 0, r.output)
        XCTAssertTrue(r.output.contains("restart 1 of 1 (train --resume-if-checkpoint)"), r.output)
        XCTAssertTrue(r.output.contains("resuming after epoch 1"), "resumed from rank 0's node: \(r.output)")
        XCTAssertEqual(committedEpoch(dir + "/disk1/run"), 3, "state.json on rank 0's node")
        let files = Set((try? FileManager.default.contentsOfDirectory(atPath: node1 + "/epoch-3")) ?? [])
        XCTAssertEqual(files, ["peer0.safetensors", "peer0.optimizer.safetensors", "peer1.safetensors", "peer1.optimizer.safetensors"])
        let elsewhere = FileManager.default.enumerator(atPath: node2)?.allObjects as? [String] ?? []
        XCTAssertTrue(elsewhere.allSatisfy { !$0.hasSuffix(".safetensors") && !$0.hasSuffix("state.json") }, "nothing of the checkpoint on node 2: \(elsewhere)")
        XCTAssertTrue((try? FileManager.default.contentsOfDirectory(atPath: out))?.isEmpty ?? true, "the launching namespace's own directory is untouched")

        // Evaluated across the nodes (rank 1 reads its peer from rank 0's node) and in one process from that disk.
        func top1(_ r: ProcessResult) -> [Double]? {
            XCTAssertEqual(r.status, 0, r.output)
            let line = r.output.split(separator: "\n").first { $0.hasPrefix("{") }.map(String.init) ?? "{}"
            let json = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            return json?.first { $0.key.lowercased().contains("top1") && !$0.key.lowercased().contains("teacher") }?.value as? [Double]
        }
        let across = top1(launch(["eval", "--config", config, "--checkpoint", out + "/run", "--json"] + sets))
        let local = top1(runProcess(distillBinary, ["eval", "--config", config, "--checkpoint", dir + "/disk1/run", "--json"] + sets, timeout: 120))
        XCTAssertNotNil(across)
        XCTAssertEqual(across, local)

        // The same run on two local ranks with one disk, uninterrupted.
        let straight = runProcess(packageRoot + "/launch/run", ["-np", "2", "--", "train", config, "--out", dir + "/straight"] + sets, timeout: 300)
        XCTAssertEqual(straight.status, 0, straight.output)
        for f in try FileManager.default.contentsOfDirectory(atPath: dir + "/straight/checkpoints/epoch-3") {
            XCTAssertEqual(FileManager.default.contents(atPath: dir + "/straight/checkpoints/epoch-3/" + f),
                           FileManager.default.contents(atPath: node1 + "/epoch-3/" + f), "\(f) bit for bit")
        }
    }
}
