// TensorBoard event files: CRC-32C against its bitwise reference and the standard check value, and the records
// an EventFileWriter writes decoded back (framing, checksums, protobuf fields). launch/check-tensorboard reads a
// training run's files with TensorBoard's own reader.
import Foundation
import TensorFiles
import XCTest

final class TensorBoardTests: XCTestCase {
    func testCRC32CMatchesReferenceAndCheckValue() {
        XCTAssertEqual(crc32c(Array("123456789".utf8)), 0xE306_9283)  // the CRC-32C check value
        XCTAssertEqual(crc32c([UInt8]()), 0)
        var state: UInt64 = 7
        for n in [1, 3, 8, 31, 257] {
            let bytes = (0..<n).map { _ -> UInt8 in state = state &* 6364136223846793005 &+ 1; return UInt8(state >> 56) }
            XCTAssertEqual(crc32c(bytes), crc32cReference(bytes), "length \(n)")
        }
    }

    /// One decoded record: the event's fields by number (varints as UInt64, fixed64 as Double bits, bytes).
    struct Event { var wallTime = 0.0, step: Int64 = 0, fileVersion: String?, scalars: [(String, Float)] = [], sessionStatus: UInt64? }

    func readRecords(_ path: String) throws -> [Event] {
        let d = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        var i = 0, events: [Event] = []
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(UInt64(0)) { $0 | UInt64(d[at + $1]) << (8 * UInt64($1)) } }
        func u32(_ at: Int) -> UInt32 { (0..<4).reduce(UInt32(0)) { $0 | UInt32(d[at + $1]) << (8 * UInt32($1)) } }
        while i < d.count {
            let n = Int(u64(i))
            XCTAssertEqual(u32(i + 8), maskedCRC32C(d[i..<(i + 8)]), "length checksum at byte \(i)")
            let body = Array(d[(i + 12)..<(i + 12 + n)])
            XCTAssertEqual(u32(i + 12 + n), maskedCRC32C(body), "data checksum at byte \(i)")
            events.append(try decodeEvent(body))
            i += 12 + n + 4
        }
        XCTAssertEqual(i, d.count)
        return events
    }

    /// Protobuf fields of a message: (number, wire type, varint or fixed value, bytes).
    func fields(_ m: [UInt8]) -> [(Int, Int, UInt64, [UInt8])] {
        var i = 0, out: [(Int, Int, UInt64, [UInt8])] = []
        func varint() -> UInt64 { var v: UInt64 = 0, s: UInt64 = 0; while true { let b = m[i]; i += 1; v |= UInt64(b & 0x7F) << s; s += 7; if b < 0x80 { return v } } }
        while i < m.count {
            let key = varint(), field = Int(key >> 3), wire = Int(key & 7)
            switch wire {
            case 0: out.append((field, 0, varint(), []))
            case 1: out.append((field, 1, (0..<8).reduce(UInt64(0)) { $0 | UInt64(m[i + $1]) << (8 * UInt64($1)) }, [])); i += 8
            case 2: let n = Int(varint()); out.append((field, 2, 0, Array(m[i..<(i + n)]))); i += n
            case 5: out.append((field, 5, (0..<4).reduce(UInt64(0)) { $0 | UInt64(m[i + $1]) << (8 * UInt64($1)) }, [])); i += 4
            default: XCTFail("unexpected wire type \(wire)"); return out
            }
        }
        return out
    }

    func decodeEvent(_ body: [UInt8]) throws -> Event {
        var e = Event()
        for (f, _, v, b) in fields(body) {
            switch f {
            case 1: e.wallTime = Double(bitPattern: v)
            case 2: e.step = Int64(bitPattern: v)
            case 3: e.fileVersion = String(decoding: b, as: UTF8.self)
            case 5:
                for (_, _, _, value) in fields(b) {
                    var tag = "", x: Float = .nan
                    for (g, _, w, c) in fields(value) {
                        if g == 1 { tag = String(decoding: c, as: UTF8.self) }
                        if g == 2 { x = Float(bitPattern: UInt32(w)) }
                    }
                    e.scalars.append((tag, x))
                }
            case 6: e.sessionStatus = fields(b).first { $0.0 == 1 }?.2
            default: XCTFail("unexpected Event field \(f)")
            }
        }
        return e
    }

    func testWriterRecordsDecodeBack() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tb-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let w = try EventFileWriter(directory: dir, wallTime: 1_700_000_000.25)
        w.add([Scalar("loss/peer0", 2.5), Scalar("test_top1/aggregated_ensemble", 0.875)], step: 300, wallTime: 1_700_000_001.5)
        w.addSessionStart(step: 301, wallTime: 1_700_000_002)
        w.add([Scalar("lr", -1e-3)], step: 1 << 40)
        try w.flush()
        XCTAssertTrue(w.path.hasPrefix(dir + "/events.out.tfevents.1700000000."))
        let events = try readRecords(w.path)
        XCTAssertEqual(events.count, 4)
        XCTAssertEqual(events[0].fileVersion, "brain.Event:2")
        XCTAssertEqual(events[0].wallTime, 1_700_000_000.25)
        XCTAssertEqual(events[1].step, 300)
        XCTAssertEqual(events[1].wallTime, 1_700_000_001.5)
        XCTAssertEqual(events[1].scalars.map(\.0), ["loss/peer0", "test_top1/aggregated_ensemble"])
        XCTAssertEqual(events[1].scalars.map(\.1), [2.5, 0.875])
        XCTAssertEqual(events[2].step, 301)
        XCTAssertEqual(events[2].sessionStatus, 1)
        XCTAssertEqual(events[3].step, 1 << 40)
        XCTAssertEqual(events[3].scalars.first?.1, -1e-3)
    }

    func testUnwritableDirectoryIsAnError() {
        XCTAssertThrowsError(try EventFileWriter(directory: "/proc/no-such/tensorboard")) { e in
            XCTAssertTrue("\(e)".contains("/proc/no-such/tensorboard"), "\(e)")
        }
    }
}
