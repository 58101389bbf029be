// Running the built `distill` binary and launch scripts from integration tests.
import Foundation
import XCTest

/// The package root (three levels above this file).
public let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
}()

/// The release `distill` binary that `launch/test` builds before running the tests.
public let distillBinary = packageRoot + "/.build/release/distill"

public struct ProcessResult {
    public let status: Int32
    public let output: String
    public let seconds: Double
    public let timedOut: Bool
}

/// Runs `executable` with `arguments`, capturing stdout and stderr together; kills its process group after
/// `timeout` seconds.
public func runProcess(_ executable: String, _ arguments: [String], environment: [String: String] = [:],
                       timeout: Double = 60) -> ProcessResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: executable)
    p.arguments = arguments
    p.environment = childEnvironment(environment)
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    let collected = OutputBuffer()
    pipe.fileHandleForReading.readabilityHandler = { h in collected.append(h.availableData) }
    let start = Date()
    do { try p.run() } catch { return ProcessResult(status: -1, output: "cannot start \(executable): \(error)", seconds: 0, timedOut: false) }
    var timedOut = false
    while p.isRunning {
        if Date().timeIntervalSince(start) > timeout {
            timedOut = true
            kill(-p.processIdentifier, SIGKILL)
            p.terminate()
            kill(p.processIdentifier, SIGKILL)
            break
        }
        usleep(20_000)
    }
    p.waitUntilExit()
    let seconds = Date().timeIntervalSince(start)
    usleep(100_000)
    pipe.fileHandleForReading.readabilityHandler = nil
    collected.append(pipe.fileHandleForReading.availableData)
    return ProcessResult(status: p.terminationStatus, output: collected.text, seconds: seconds, timedOut: timedOut)
}

/// Bytes collected from a pipe's readability handler (another thread), read as text.
public final class OutputBuffer: @unchecked Sendable {
    private var data = Data()
    private let lock = NSLock()
    public init() {}
    public func append(_ d: Data) { lock.lock(); data.append(d); lock.unlock() }
    public var text: String { lock.lock(); defer { lock.unlock() }; return String(decoding: data, as: UTF8.self) }
}

/// The environment for a child process: this one's, without the Open MPI/PMIx variables a test that used MPI
/// in this process (a world of one) leaves behind (a child mpirun inheriting them believes it runs inside that
/// job), with running as root allowed, plus `extra`.
public func childEnvironment(_ extra: [String: String] = [:]) -> [String: String] {
    var env = ProcessInfo.processInfo.environment.filter { key, _ in
        !["OMPI_", "PMIX_", "OPAL_", "ORTE_"].contains { key.hasPrefix($0) }
    }
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    for (k, v) in extra { env[k] = v }
    return env
}

/// Runs `launch/run` with `arguments` (which should include `--max-restarts`), waits until `committed()` says the
/// first checkpoint is in place, SIGKILLs the training rank `pick` chooses among the processes whose command line
/// starts with the binary and `train` and matches `pattern`, then waits (at most 300 s) for the job to end by
/// itself. Returns its exit status, its output (kept in `logPath`) and the number of ranks that were running.
public func runKillingOneRank(_ arguments: [String], log logPath: String, ranks pattern: String, pick: ([Int32]) -> Int32?,
                              until committed: () -> Bool) throws -> (status: Int32, output: String, ranksRunning: Int) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: packageRoot + "/launch/run")
    p.arguments = arguments
    p.environment = childEnvironment()
    FileManager.default.createFile(atPath: logPath, contents: nil)
    let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
    p.standardOutput = log
    p.standardError = log
    try p.run()
    var start = Date()
    while !committed() && p.isRunning && Date().timeIntervalSince(start) < 120 { usleep(5_000) }
    // The training processes' command lines start with the binary; mpirun's and the script's do not.
    let ranks = runProcess("/usr/bin/pgrep", ["-f", "^\(distillBinary) train .*\(pattern)"])
    let pids = ranks.output.split(separator: "\n").compactMap { Int32($0.trimmingCharacters(in: .whitespaces)) }
    if let victim = pick(pids) { kill(victim, SIGKILL) }
    start = Date()
    while p.isRunning && Date().timeIntervalSince(start) < 300 { usleep(50_000) }
    if p.isRunning { p.terminate(); _ = runProcess("/usr/bin/pkill", ["-KILL", "-f", pattern]) }
    p.waitUntilExit()
    try log.close()
    return (p.terminationStatus, (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "", pids.count)
}

/// mpirun arguments for a local job of `ranks` processes on this machine (as the tests run it: oversubscribed,
/// shared-memory single copy off for containers, TCP on loopback).
public func localMPIRun(_ ranks: Int, _ arguments: [String], environment: [String] = []) -> [String] {
    ["-np", "\(ranks)", "--oversubscribe", "--mca", "btl", "self,vader,tcp", "--mca", "btl_vader_single_copy_mechanism",
     "none", "--mca", "btl_tcp_if_include", "lo", "--mca", "oob_tcp_if_include", "lo"]
        + environment.flatMap { ["-x", $0] } + [distillBinary] + arguments
}

/// The path of an executable on PATH, or nil.
public func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

/// What an integration test needs from the machine.
public enum Prerequisite: CustomStringConvertible {
    /// Debian's dataset-fashion-mnist.
    case fashionMNIST
    /// The release `distill` binary `launch/test` builds.
    case binary
    case mpirun
    /// Root and iproute2, for network namespaces.
    case namespaces

    public var description: String {
        switch self {
        case .fashionMNIST: return "Fashion-MNIST at \(fashionMNISTPath) (Debian's dataset-fashion-mnist; launch/test installs it)"
        case .binary: return "the release binary \(distillBinary) (launch/test builds it)"
        case .mpirun: return "mpirun (Debian's openmpi-bin; launch/test installs it)"
        case .namespaces: return "root and `ip` (iproute2) to create network namespaces"
        }
    }

    var isMet: Bool {
        switch self {
        case .fashionMNIST: return FileManager.default.fileExists(atPath: fashionMNISTPath)
        case .binary: return FileManager.default.isExecutableFile(atPath: distillBinary)
        case .mpirun: return which("mpirun") != nil
        case .namespaces: return getuid() == 0 && which("ip") != nil
        }
    }
}

/// Where Debian's package installs Fashion-MNIST (the same default the Datasets catalog uses; a test holds them equal).
public let fashionMNISTPath = "/usr/share/datasets/fashion-mnist"

/// Whether this is a CI run (`CI=true`), where a missing prerequisite is a failure, not a skip.
public var isCI: Bool { ["1", "true", "yes"].contains(ProcessInfo.processInfo.environment["CI"]?.lowercased() ?? "") }

/// A prerequisite that CI must have and does not.
public struct MissingPrerequisite: Error, CustomStringConvertible {
    public let description: String
}

/// Skips the test when a prerequisite is missing on a developer's machine; under CI (`CI=true`) fails it instead,
/// so a missing install step cannot hide behind skipped tests.
public func requirePrerequisites(_ needs: Prerequisite...) throws {
    try requirePrerequisite(where: needs.first { !$0.isMet }.map { "missing \($0)" })
}

/// Skips (or under CI fails) with `reason` when it is not nil.
public func requirePrerequisite(where reason: String?) throws {
    guard let reason else { return }
    if isCI { throw MissingPrerequisite(description: "CI=true and a prerequisite is missing: \(reason)") }
    throw XCTSkip(reason)
}
