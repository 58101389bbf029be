// TensorBoard event files (the TensorFiles target): scalar summaries that TensorBoard reads, written natively.
// A file `events.out.tfevents.<unix seconds>.<host>.<pid>` is a sequence of records
//   [uint64 length, little-endian][uint32 masked CRC32C of those 8 bytes][length bytes][uint32 masked CRC32C of them]
// each holding one serialised `Event` protobuf; masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8. The fields
// written (tensorflow/core/util/event.proto, tensorflow/core/framework/summary.proto):
//   Event      { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5;
//                SessionLog session_log = 6; }
//   Summary    { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
//   SessionLog { SessionStatus status = 1; }   (START = 1: readers drop earlier events at steps ≥ this one)
// The first record is the file version "brain.Event:2". `crc32c` keeps its plain bitwise reference beside the
// table-driven one, and a test holds them together.
import Foundation

public enum TensorBoardError: Error, CustomStringConvertible {
    case io(path: String, reason: String)
    public var description: String {
        switch self { case let .io(path, reason): return "\(path): \(reason)" }
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven.
public func crc32c<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
    var c: UInt32 = 0xFFFF_FFFF
    for b in bytes { c = crc32cTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
    return ~c
}

/// CRC-32C bit by bit: the reference `crc32c` is tested against.
public func crc32cReference<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
    var c: UInt32 = 0xFFFF_FFFF
    for b in bytes {
        c ^= UInt32(b)
        for _ in 0..<8 { c = c & 1 == 1 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
    }
    return ~c
}

private let crc32cTable: [UInt32] = (0..<256).map { i in
    var c = UInt32(i)
    for _ in 0..<8 { c = c & 1 == 1 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
    return c
}

/// The record checksum TensorFlow's record format stores.
public func maskedCRC32C<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
    let c = crc32c(bytes)
    return ((c >> 15) | (c << 17)) &+ 0xA282_EAD8
}

/// The few protobuf encodings an Event needs.
enum Protobuf {
    static func varint(_ v: UInt64, into out: inout [UInt8]) {
        var v = v
        while v >= 0x80 { out.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        out.append(UInt8(v))
    }
    /// A field key: (number << 3) | wire type (0 varint, 1 64-bit, 2 length-delimited, 5 32-bit).
    static func key(_ field: UInt64, _ wire: UInt64, into out: inout [UInt8]) { varint(field << 3 | wire, into: &out) }
    static func bytes(_ field: UInt64, _ value: [UInt8], into out: inout [UInt8]) {
        key(field, 2, into: &out); varint(UInt64(value.count), into: &out); out += value
    }
    static func littleEndian<T: FixedWidthInteger>(_ v: T, into out: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { out += $0 }
    }
}

/// One scalar of a summary: a tag and its value.
public struct Scalar: Equatable {
    public let tag: String
    public let value: Float
    public init(_ tag: String, _ value: Float) { self.tag = tag; self.value = value }
}

/// Appends events to a new event file in a directory (created if missing).
public final class EventFileWriter {
    public let path: String
    private let handle: FileHandle
    private var pending: [UInt8] = []

    public init(directory: String, wallTime: Double = Date().timeIntervalSince1970) throws {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw TensorBoardError.io(path: directory, reason: "cannot create the directory: \(error.localizedDescription)")
        }
        let host = ProcessInfo.processInfo.hostName.replacingOccurrences(of: "/", with: "_")
        path = directory + "/events.out.tfevents.\(Int(wallTime)).\(host).\(getpid())"
        guard FileManager.default.createFile(atPath: path, contents: nil), let h = FileHandle(forWritingAtPath: path) else {
            throw TensorBoardError.io(path: path, reason: "cannot create the event file")
        }
        handle = h
        var event: [UInt8] = []
        Self.header(wallTime: wallTime, step: 0, into: &event)
        Protobuf.bytes(3, Array("brain.Event:2".utf8), into: &event)
        append(event)
        try flush()
    }

    deinit { try? handle.close() }

    /// Scalars at one step (buffered until `flush`).
    public func add(_ scalars: [Scalar], step: Int, wallTime: Double = Date().timeIntervalSince1970) {
        guard !scalars.isEmpty else { return }
        var summary: [UInt8] = []
        for s in scalars {
            var value: [UInt8] = []
            Protobuf.bytes(1, Array(s.tag.utf8), into: &value)
            Protobuf.key(2, 5, into: &value)
            Protobuf.littleEndian(s.value.bitPattern, into: &value)
            Protobuf.bytes(1, value, into: &summary)
        }
        var event: [UInt8] = []
        Self.header(wallTime: wallTime, step: step, into: &event)
        Protobuf.bytes(5, summary, into: &event)
        append(event)
    }

    /// A session start at `step`: readers discard the events at steps ≥ `step` written before it (a resumed run
    /// repeating the steps after its checkpoint).
    public func addSessionStart(step: Int, wallTime: Double = Date().timeIntervalSince1970) {
        var log: [UInt8] = [], event: [UInt8] = []
        Protobuf.key(1, 0, into: &log); Protobuf.varint(1, into: &log)
        Self.header(wallTime: wallTime, step: step, into: &event)
        Protobuf.bytes(6, log, into: &event)
        append(event)
    }

    /// Writes the buffered events to the file and to disk.
    public func flush() throws {
        guard !pending.isEmpty else { return }
        do {
            try handle.write(contentsOf: pending)
            try handle.synchronize()
        } catch {
            throw TensorBoardError.io(path: path, reason: "cannot write: \(error.localizedDescription)")
        }
        pending.removeAll(keepingCapacity: true)
    }

    private static func header(wallTime: Double, step: Int, into event: inout [UInt8]) {
        Protobuf.key(1, 1, into: &event); Protobuf.littleEndian(wallTime.bitPattern, into: &event)
        Protobuf.key(2, 0, into: &event); Protobuf.varint(UInt64(bitPattern: Int64(step)), into: &event)
    }

    private func append(_ event: [UInt8]) {
        var length: [UInt8] = []
        Protobuf.littleEndian(UInt64(event.count), into: &length)
        pending += length
        Protobuf.littleEndian(maskedCRC32C(length), into: &pending)
        pending += event
        Protobuf.littleEndian(maskedCRC32C(event), into: &pending)
    }
}
