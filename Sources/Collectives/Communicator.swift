// Communicators: the collectives peers use to exchange logits and features and to synchronise gradients.
// All ranks of a communicator must issue the same collectives in the same order with the same sizes; the
// check mode verifies that before every call, and the stall watchdog ends a rank stuck in one.
import Foundation
import Tensors

public enum ReduceOp: Int32, CustomStringConvertible {
    case sum = 0, max = 1, min = 2
    public var description: String { ["sum", "max", "min"][Int(rawValue)] }
}

/// An MPI or collective failure, naming the call.
public enum CollectiveError: Error, CustomStringConvertible {
    case mpi(call: String, code: Int32, message: String)
    case placement(String)
    case badArgument(String)

    public var description: String {
        switch self {
        case let .mpi(call, code, message): return "\(call) failed (MPI error \(code)): \(message)"
        case let .placement(message): return message
        case let .badArgument(message): return message
        }
    }
}

public protocol Communicator: AnyObject {
    /// This process's index in the communicator.
    var rank: Int { get }
    /// Number of processes.
    var size: Int { get }
    /// Seconds spent inside collectives so far (for metrics).
    var communicationSeconds: Double { get }
    /// Payload this rank has handed to and taken from its collectives so far, in bytes: an allreduce counts its
    /// buffer each way, an allgather its own part sent and the others' parts received, a reduce-scatter the
    /// others' blocks each way, a broadcast its buffer on
    /// the root (sent) or elsewhere (received), an exchange its messages. Wire traffic depends on MPI's algorithms.
    var payloadBytes: (sent: Int, received: Int) { get }

    /// In-place reduction of `count` floats across ranks.
    func allReduce(_ buffer: UnsafeMutablePointer<Float>, count: Int, op: ReduceOp) throws
    /// In-place reduction of doubles.
    func allReduce(_ values: inout [Double], op: ReduceOp) throws
    /// In-place reduction of 64-bit integers.
    func allReduce(_ values: inout [Int64], op: ReduceOp) throws
    /// Every rank's `count` floats, concatenated in rank order into `recv` (size·count floats).
    func allGather(_ send: UnsafePointer<Float>, count: Int, into recv: UnsafeMutablePointer<Float>) throws
    /// Like allGather with per-rank counts (`counts[r]` floats from rank r; `count` must be counts[rank]).
    func allGather(_ send: UnsafePointer<Float>, count: Int, counts: [Int], into recv: UnsafeMutablePointer<Float>) throws
    /// Reduces every rank's `send` (Σ counts floats) elementwise and leaves rank r's block, `counts[r]` floats at
    /// offset Σ counts[..<r], in its `recv` (MPI_Reduce_scatter).
    func reduceScatter(_ send: UnsafePointer<Float>, counts: [Int], into recv: UnsafeMutablePointer<Float>, op: ReduceOp) throws
    /// Copies root's `count` floats to every rank.
    func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws
    /// Copies root's bytes to every rank (the count must agree).
    func broadcast(bytes: inout [UInt8], root: Int) throws
    /// Point-to-point exchange: sends each `sends[i]` to its rank and fills each `receives[j]` from its rank, all
    /// at once; at most one message from one rank to another per call, none to itself. Every rank calls it (with
    /// or without messages of its own) and gives the same `agreed` number (the check mode fingerprints it).
    func exchange(sends: [(rank: Int, buffer: UnsafePointer<Float>, count: Int)],
                  receives: [(rank: Int, buffer: UnsafeMutablePointer<Float>, count: Int)], agreed: Int) throws
    /// Waits until every rank arrives.
    func barrier() throws
    /// Splits into sub-communicators by `color`, ordered by `key` (MPI_Comm_split).
    func split(color: Int, key: Int) throws -> Communicator
    /// Prints `message` naming this rank and ends every process of the job.
    func abort(_ message: String, code: Int32) -> Never
}

extension Communicator {
    /// Sum-reduces a tensor's values in place.
    public func allReduce(_ t: Tensor, op: ReduceOp = .sum) throws { try allReduce(t.data, count: t.count, op: op) }
}

/// Options read once from the environment (and settable by command-line flags).
public enum CollectiveOptions {
    /// Fingerprint every collective (sequence, operation, count) before running it: `DISTILL_CHECK_COLLECTIVES=1`.
    public nonisolated(unsafe) static var checkCollectives =
        ["1", "true", "yes"].contains(ProcessInfo.processInfo.environment["DISTILL_CHECK_COLLECTIVES"]?.lowercased() ?? "")
    /// Seconds a rank may wait inside one collective before it reports the stall and exits:
    /// `DISTILL_COLLECTIVE_TIMEOUT` (default 300; 0 waits forever).
    public nonisolated(unsafe) static var stallTimeout: Double =
        Double(ProcessInfo.processInfo.environment["DISTILL_COLLECTIVE_TIMEOUT"] ?? "") ?? 300
}

/// The marker launch/run watches for in the job's output to end a job whose ranks cannot all be torn down.
public let fatalMarker = "distill: fatal:"

/// Writes a line to standard error immediately.
public func printError(_ line: String) {
    FileHandle.standardError.write((line + "\n").data(using: .utf8)!)
}
