// A small strict JSON parser for untrusted headers: objects keep their key order, duplicate keys are an error,
// nesting depth is bounded, numbers are integers or decimals, and anything after the document must be space.

struct StrictJSON {
    indirect enum Value: Equatable, CustomStringConvertible {
        case object([(String, Value)]), array([Value]), string(String), number(Double, isInteger: Bool), bool(Bool), null

        static func == (a: Value, b: Value) -> Bool { a.description == b.description }

        var nonNegativeInt: Int? {
            if case let .number(v, isInteger) = self, isInteger, v >= 0, v <= 9_007_199_254_740_992 { return Int(v) }
            return nil
        }

        var description: String {
            switch self {
            case let .object(o): return "{" + o.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}"
            case let .array(a): return "[" + a.map(\.description).joined(separator: ", ") + "]"
            case let .string(s): return "\"\(s)\""
            case let .number(v, isInteger): return isInteger ? String(Int64(v)) : String(v)
            case let .bool(b): return String(b)
            case .null: return "null"
            }
        }
    }

    struct Failure: Error { let message: String }

    private let bytes: [UInt8]
    private var i = 0
    private let maxDepth = 16

    init(_ text: String) { bytes = Array(text.utf8) }

    mutating func parseDocument() throws -> Value {
        let v = try value(depth: 0)
        skipSpace()
        guard i == bytes.count else { throw Failure(message: "unexpected data after the JSON value at byte \(i)") }
        return v
    }

    private mutating func skipSpace() {
        while i < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
    }

    private mutating func expect(_ c: UInt8) throws {
        skipSpace()
        guard i < bytes.count, bytes[i] == c else {
            throw Failure(message: "expected '\(Character(UnicodeScalar(c)))' at byte \(i)")
        }
        i += 1
    }

    private mutating func value(depth: Int) throws -> Value {
        guard depth <= maxDepth else { throw Failure(message: "nesting deeper than \(maxDepth)") }
        skipSpace()
        guard i < bytes.count else { throw Failure(message: "unexpected end of the header") }
        switch bytes[i] {
        case UInt8(ascii: "{"):
            i += 1
            var entries: [(String, Value)] = []
            var seen = Set<String>()
            skipSpace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object([]) }
            while true {
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw Failure(message: "expected a key at byte \(i)") }
                let key = try string()
                guard seen.insert(key).inserted else { throw Failure(message: "duplicate key '\(key)'") }
                try expect(UInt8(ascii: ":"))
                entries.append((key, try value(depth: depth + 1)))
                skipSpace()
                guard i < bytes.count else { throw Failure(message: "unterminated object") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(entries) }
                throw Failure(message: "expected ',' or '}' at byte \(i)")
            }
        case UInt8(ascii: "["):
            i += 1
            var items: [Value] = []
            skipSpace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array([]) }
            while true {
                items.append(try value(depth: depth + 1))
                skipSpace()
                guard i < bytes.count else { throw Failure(message: "unterminated array") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                throw Failure(message: "expected ',' or ']' at byte \(i)")
            }
        case UInt8(ascii: "\""):
            return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        default:
            return try number()
        }
    }

    private mutating func literal(_ word: String) throws {
        let w = Array(word.utf8)
        guard i + w.count <= bytes.count, Array(bytes[i..<(i + w.count)]) == w else { throw Failure(message: "bad literal at byte \(i)") }
        i += w.count
    }

    private mutating func string() throws -> String {
        i += 1  // opening quote
        var out = [UInt8]()
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                return String(decoding: out, as: UTF8.self)
            }
            if c < 0x20 { throw Failure(message: "control character in a string at byte \(i)") }
            if c == UInt8(ascii: "\\") {
                guard i + 1 < bytes.count else { break }
                let e = bytes[i + 1]
                i += 2
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    guard i + 4 <= bytes.count, let code = UInt32(String(decoding: bytes[i..<(i + 4)], as: UTF8.self), radix: 16),
                          let scalar = UnicodeScalar(code) else { throw Failure(message: "bad \\u escape at byte \(i)") }
                    out.append(contentsOf: Array(String(Character(scalar)).utf8))
                    i += 4
                default: throw Failure(message: "bad escape at byte \(i - 1)")
                }
                continue
            }
            out.append(c)
            i += 1
        }
        throw Failure(message: "unterminated string")
    }

    private mutating func number() throws -> Value {
        let start = i
        if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
        var isInteger = true
        while i < bytes.count {
            let c = bytes[i]
            if c >= 0x30 && c <= 0x39 { i += 1; continue }
            if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") || c == UInt8(ascii: "+") || c == UInt8(ascii: "-") {
                isInteger = false; i += 1; continue
            }
            break
        }
        let text = String(decoding: bytes[start..<i], as: UTF8.self)
        guard i > start, let v = Double(text), v.isFinite else { throw Failure(message: "bad value at byte \(start)") }
        if isInteger, text.count > 16 { throw Failure(message: "integer \(text) too large") }
        return .number(v, isInteger: isInteger)
    }
}
