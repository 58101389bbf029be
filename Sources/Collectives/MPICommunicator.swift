// Communicator over Open MPI through the CMPI shim. A program started without mpirun is a world of one
// (MPI singleton initialisation).
import CMPI
import Foundation
import Tensors

public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    public private(set) var communicationSeconds = 0.0
    public private(set) var payloadBytes: (sent: Int, received: Int) = (0, 0)
    let handle: Int32
    /// Collectives issued so far on this communicator (the check mode's sequence number).
    public private(set) var sequence: Int64 = 0

    nonisolated(unsafe) private static var worldInstance: MPICommunicator?

    /// The world communicator, initialising MPI on first use (thread level FUNNELED).
    public static func world() throws -> MPICommunicator {
        if let w = worldInstance { return w }
        var provided: Int32 = 0
        try check(cmpi_init(&provided), "MPI_Init_thread")
        let w = try MPICommunicator(handle: 0)
        worldInstance = w
        return w
    }

    /// Finalises MPI (call once at the end of a successful run).
    public static func finalize() { if worldInstance != nil { _ = cmpi_finalize() } }

    init(handle: Int32) throws {
        var r: Int32 = 0, s: Int32 = 0
        try MPICommunicator.check(cmpi_rank(handle, &r), "MPI_Comm_rank")
        try MPICommunicator.check(cmpi_size(handle, &s), "MPI_Comm_size")
        self.handle = handle; rank = Int(r); size = Int(s)
    }

    static func check(_ code: Int32, _ call: String) throws {
        guard code == 0 else {
            throw CollectiveError.mpi(call: call, code: code, message: String(cString: cmpi_error_string(code)))
        }
    }

    enum Op: Int64 {
        case allReduceFloat = 1, allReduceDouble, allReduceInt, allGather, allGatherV, broadcast, broadcastBytes, barrier, exchange,
             reduceScatter
        var name: String {
            switch self {
            case .allReduceFloat: return "allReduce(float)"
            case .allReduceDouble: return "allReduce(double)"
            case .allReduceInt: return "allReduce(int64)"
            case .allGather: return "allGather"
            case .allGatherV: return "allGather(variable)"
            case .broadcast: return "broadcast"
            case .broadcastBytes: return "broadcast(bytes)"
            case .barrier: return "barrier"
            case .exchange: return "exchange"
            case .reduceScatter: return "reduceScatter"
            }
        }
    }

    /// Runs one collective: fingerprint check (when enabled), the call with the stall watchdog, timing.
    private func collective(_ op: Op, count: Int, detail: String = "", sent: Int, received: Int, _ call: (Double) -> Int32) throws {
        sequence += 1
        payloadBytes.sent += sent; payloadBytes.received += received
        if CollectiveOptions.checkCollectives && size > 1 { try verifyFingerprint(op, count: count) }
        let timeout = CollectiveOptions.stallTimeout
        let start = cmpi_wtime()
        let code = call(timeout)
        communicationSeconds += cmpi_wtime() - start
        if code == CMPI_TIMEOUT {
            printError("\(fatalMarker) rank \(rank): stalled for \(Int(timeout)) s in \(op.name) (count \(count)\(detail), collective #\(sequence)); another rank is gone or stuck. Exiting.")
            _exit(3)
        }
        try MPICommunicator.check(code, "MPI \(op.name) (count \(count), collective #\(sequence))")
    }

    /// Every rank shares (sequence, op, count); on disagreement every rank stops with the first difference.
    private func verifyFingerprint(_ op: Op, count: Int) throws {
        var mine: [Int64] = [sequence, op.rawValue, Int64(count)]
        var all = [Int64](repeating: 0, count: 3 * size)
        let code = mine.withUnsafeMutableBufferPointer { m in
            all.withUnsafeMutableBufferPointer { a in
                cmpi_allgather(handle, m.baseAddress, 3, a.baseAddress, Int32(CMPI_INT64.rawValue), CollectiveOptions.stallTimeout)
            }
        }
        if code == CMPI_TIMEOUT {
            printError("\(fatalMarker) rank \(rank): stalled in the collective check before \(op.name) (collective #\(sequence)). Exiting.")
            _exit(3)
        }
        try MPICommunicator.check(code, "MPI allGather (collective check)")
        for r in 1..<size where all[3 * r] != all[0] || all[3 * r + 1] != all[1] || all[3 * r + 2] != all[2] {
            func describe(_ q: Int) -> String {
                "\(Op(rawValue: all[3 * q + 1])?.name ?? "?")(count \(all[3 * q + 2])) as collective #\(all[3 * q])"
            }
            abort("collective mismatch: rank \(r) calls \(describe(r)) while rank 0 calls \(describe(0))", code: 4)
        }
    }

    public func allReduce(_ buffer: UnsafeMutablePointer<Float>, count: Int, op: ReduceOp) throws {
        try collective(.allReduceFloat, count: count, detail: ", \(op)", sent: 4 * count, received: 4 * count) {
            cmpi_allreduce(handle, buffer, Int32(count), Int32(CMPI_FLOAT.rawValue), op.rawValue, $0)
        }
    }

    public func allReduce(_ values: inout [Double], op: ReduceOp) throws {
        let n = values.count
        try values.withUnsafeMutableBufferPointer { v in
            try collective(.allReduceDouble, count: n, detail: ", \(op)", sent: 8 * n, received: 8 * n) {
                cmpi_allreduce(handle, v.baseAddress, Int32(n), Int32(CMPI_DOUBLE.rawValue), op.rawValue, $0)
            }
        }
    }

    public func allReduce(_ values: inout [Int64], op: ReduceOp) throws {
        let n = values.count
        try values.withUnsafeMutableBufferPointer { v in
            try collective(.allReduceInt, count: n, detail: ", \(op)", sent: 8 * n, received: 8 * n) {
                cmpi_allreduce(handle, v.baseAddress, Int32(n), Int32(CMPI_INT64.rawValue), op.rawValue, $0)
            }
        }
    }

    public func allGather(_ send: UnsafePointer<Float>, count: Int, into recv: UnsafeMutablePointer<Float>) throws {
        try collective(.allGather, count: count, sent: 4 * count, received: 4 * count * (size - 1)) {
            cmpi_allgather(handle, send, Int32(count), recv, Int32(CMPI_FLOAT.rawValue), $0)
        }
    }

    public func reduceScatter(_ send: UnsafePointer<Float>, counts: [Int], into recv: UnsafeMutablePointer<Float>, op: ReduceOp) throws {
        guard counts.count == size, counts.allSatisfy({ $0 >= 0 }) else {
            throw CollectiveError.badArgument("reduceScatter: counts \(counts) must have \(size) non-negative entries")
        }
        let total = counts.reduce(0, +)
        var c32 = counts.map { Int32($0) }
        try c32.withUnsafeMutableBufferPointer { cb in
            // Fingerprinted by the whole vector's size, which every rank agrees on.
            try collective(.reduceScatter, count: total, sent: 4 * (total - counts[rank]), received: 4 * (total - counts[rank])) {
                cmpi_reduce_scatter(handle, send, recv, cb.baseAddress, Int32(CMPI_FLOAT.rawValue), op.rawValue, $0)
            }
        }
    }

    public func allGather(_ send: UnsafePointer<Float>, count: Int, counts: [Int], into recv: UnsafeMutablePointer<Float>) throws {
        guard counts.count == size, counts[rank] == count else {
            throw CollectiveError.badArgument("allGather(variable): counts \(counts) must have \(size) entries with counts[\(rank)] == \(count)")
        }
        var c32 = counts.map { Int32($0) }
        var displs = [Int32](repeating: 0, count: size)
        for r in 1..<max(size, 1) { displs[r] = displs[r - 1] + c32[r - 1] }
        try c32.withUnsafeMutableBufferPointer { cb in
            try displs.withUnsafeMutableBufferPointer { db in
                // The fingerprint covers the whole receive size, which every rank agrees on.
                try collective(.allGatherV, count: counts.reduce(0, +), sent: 4 * count, received: 4 * (counts.reduce(0, +) - count)) {
                    cmpi_allgatherv(handle, send, Int32(count), recv, cb.baseAddress, db.baseAddress,
                                    Int32(CMPI_FLOAT.rawValue), $0)
                }
            }
        }
    }

    public func broadcast(_ buffer: UnsafeMutablePointer<Float>, count: Int, root: Int) throws {
        try collective(.broadcast, count: count, sent: root == rank ? 4 * count : 0, received: root == rank ? 0 : 4 * count) {
            cmpi_bcast(handle, buffer, Int32(count), Int32(CMPI_FLOAT.rawValue), Int32(root), $0)
        }
    }

    public func broadcast(bytes: inout [UInt8], root: Int) throws {
        let n = bytes.count
        try bytes.withUnsafeMutableBufferPointer { b in
            try collective(.broadcastBytes, count: n, sent: root == rank ? n : 0, received: root == rank ? 0 : n) {
                cmpi_bcast(handle, b.baseAddress, Int32(n), Int32(CMPI_BYTE.rawValue), Int32(root), $0)
            }
        }
    }

    public func exchange(sends: [(rank: Int, buffer: UnsafePointer<Float>, count: Int)],
                         receives: [(rank: Int, buffer: UnsafeMutablePointer<Float>, count: Int)], agreed: Int) throws {
        let valid = 0..<size
        guard sends.count + receives.count <= 64,
              sends.allSatisfy({ valid.contains($0.rank) && $0.rank != rank && $0.count >= 0 }),
              receives.allSatisfy({ valid.contains($0.rank) && $0.rank != rank && $0.count >= 0 }),
              Set(sends.map(\.rank)).count == sends.count, Set(receives.map(\.rank)).count == receives.count else {
            throw CollectiveError.badArgument("exchange: at most 64 messages, one per other rank and direction, to ranks in 0..<\(size) other than \(rank); sends to \(sends.map(\.rank)), receives from \(receives.map(\.rank))")
        }
        var dests = sends.map { Int32($0.rank) }, sendCounts = sends.map { Int32($0.count) }
        var sendBuffers: [UnsafeRawPointer?] = sends.map { UnsafeRawPointer($0.buffer) }
        var sources = receives.map { Int32($0.rank) }, recvCounts = receives.map { Int32($0.count) }
        var recvBuffers: [UnsafeMutableRawPointer?] = receives.map { UnsafeMutableRawPointer($0.buffer) }
        try collective(.exchange, count: agreed, sent: 4 * sends.reduce(0) { $0 + $1.count },
                       received: 4 * receives.reduce(0) { $0 + $1.count }) { timeout in
            cmpi_exchange(handle, Int32(sends.count), &dests, &sendBuffers, &sendCounts,
                          Int32(receives.count), &sources, &recvBuffers, &recvCounts, Int32(CMPI_FLOAT.rawValue), timeout)
        }
    }

    public func barrier() throws {
        try collective(.barrier, count: 0, sent: 0, received: 0) { cmpi_barrier(handle, $0) }
    }

    public func split(color: Int, key: Int) throws -> Communicator {
        var out: Int32 = 0
        try MPICommunicator.check(cmpi_split(handle, Int32(color), Int32(key), &out), "MPI_Comm_split")
        return try MPICommunicator(handle: out)
    }

    public func abort(_ message: String, code: Int32 = 1) -> Never {
        printError("\(fatalMarker) rank \(rank): \(message)")
        cmpi_abort(handle, code)
        _exit(code)
    }
}
