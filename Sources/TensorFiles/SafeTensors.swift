// safetensors files (the TensorFiles target: how modules are stored, below the methods that load teachers and
// the trainer that writes checkpoints): the checkpoint format PyTorch users load with `safetensors.torch.load_file`.
//   [8-byte little-endian header length N][N bytes of JSON header][data]
//   header: {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {..}}
// The reader treats every file as untrusted: the header length is bounded and inside the file, the header is
// UTF-8 JSON parsed by a strict parser that rejects duplicate names, dtypes are known, each tensor's byte size
// equals its offsets, offsets run contiguously from 0 with no overlap or hole, and the file ends exactly at the
// last tensor. Writes go to a temporary file that is fsynced and renamed, so a crash leaves the old file.
import Foundation
import Layers
import Tensors

public enum SafeTensorsError: Error, CustomStringConvertible, Equatable {
    case io(path: String, reason: String)
    case malformed(path: String, reason: String)
    case mismatch(path: String, reason: String)

    public var description: String {
        switch self {
        case let .io(path, reason): return "\(path): \(reason)"
        case let .malformed(path, reason): return "\(path): not a valid safetensors file: \(reason)"
        case let .mismatch(path, reason): return "\(path): \(reason)"
        }
    }
}

/// Element types a safetensors file may declare, with their sizes in bytes.
public enum SafeTensorsDType: String, CaseIterable {
    case F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL
    public var size: Int {
        switch self {
        case .F64, .I64: return 8
        case .F32, .I32: return 4
        case .F16, .BF16, .I16: return 2
        case .I8, .U8, .BOOL: return 1
        }
    }
}

/// One tensor of a file: its declared type and shape, and its values converted to Float.
public struct SafeTensor: Equatable {
    public let dtype: SafeTensorsDType
    public let shape: [Int]
    public let values: [Float]
}

/// The largest header accepted (100 MB, as the reference implementation).
public let safeTensorsMaxHeader = 100_000_000

public enum SafeTensors {
    /// Writes `tensors` (name, shape, values, dtype F32 or I64) in the given order with optional metadata,
    /// atomically: temporary file, fsync, rename.
    public static func write(_ tensors: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>, dtype: SafeTensorsDType)],
                             metadata: [String: String] = [:], to path: String) throws {
        try writeAtomically(encode(tensors, metadata: metadata), to: path)
    }

    /// The bytes of a safetensors file holding `tensors` (name, shape, values, dtype F32 or I64) in the given order.
    public static func encode(_ tensors: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>, dtype: SafeTensorsDType)],
                              metadata: [String: String] = [:]) -> Data {
        var header = "{"
        var offset = 0
        var parts: [String] = []
        if !metadata.isEmpty {
            parts.append("\"__metadata__\":{" + metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }.joined(separator: ",") + "}")
        }
        for t in tensors {
            precondition(t.dtype == .F32 || t.dtype == .I64, "SafeTensors.write: only F32 and I64 are written")
            precondition(t.shape.reduce(1, *) == t.values.count, "SafeTensors.write: \(t.name) shape \(t.shape) vs \(t.values.count) values")
            let bytes = t.values.count * t.dtype.size
            parts.append("\(jsonString(t.name)):{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}")
            offset += bytes
        }
        header += parts.joined(separator: ",") + "}"
        while header.utf8.count % 8 != 0 { header += " " }  // align the data to 8 bytes, as the reference does
        var data = Data()
        var n = UInt64(header.utf8.count).littleEndian
        withUnsafeBytes(of: &n) { data.append(contentsOf: $0) }
        data.append(header.data(using: .utf8)!)
        data.reserveCapacity(data.count + offset)
        for t in tensors {
            if t.dtype == .F32 {
                data.append(UnsafeBufferPointer(start: UnsafeRawPointer(t.values.baseAddress!).assumingMemoryBound(to: UInt8.self),
                                                count: t.values.count * 4))
            } else {
                for v in t.values { var i = Int64(v).littleEndian; withUnsafeBytes(of: &i) { data.append(contentsOf: $0) } }
            }
        }
        return data
    }

    /// Reads and validates a file; returns its tensors by name (in file order) and its metadata.
    public static func read(_ path: String) throws -> (tensors: [(String, SafeTensor)], metadata: [String: String]) {
        let data = try SafeTensors.contents(of: path)
        return try read(data: data, path: path)
    }

    /// A file's bytes, or an error naming it.
    public static func contents(of path: String) throws -> Data {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SafeTensorsError.io(path: path, reason: FileManager.default.fileExists(atPath: path) ? "cannot read the file" : "no such file")
        }
        return data
    }

    /// Validates and decodes a file's bytes (`path` names it in errors).
    public static func read(data: Data, path: String) throws -> (tensors: [(String, SafeTensor)], metadata: [String: String]) {
        try data.withUnsafeBytes { raw in try parse(raw, path: path) }
    }

    static func parse(_ raw: UnsafeRawBufferPointer, path: String) throws -> (tensors: [(String, SafeTensor)], metadata: [String: String]) {
        func bad(_ reason: String) -> SafeTensorsError { .malformed(path: path, reason: reason) }
        guard raw.count >= 8 else { throw bad("the file has \(raw.count) bytes, fewer than the 8-byte header length") }
        let n = raw.loadUnaligned(as: UInt64.self).littleEndian
        guard n <= UInt64(safeTensorsMaxHeader) else { throw bad("header length \(n) exceeds the limit of \(safeTensorsMaxHeader) bytes") }
        guard n <= UInt64(raw.count - 8) else { throw bad("header length \(n) runs past the end of the \(raw.count)-byte file") }
        let headerBytes = UnsafeRawBufferPointer(rebasing: raw[8..<(8 + Int(n))])
        guard let text = String(validating: headerBytes.bindMemory(to: UInt8.self), as: UTF8.self) else {
            throw bad("the header is not valid UTF-8")
        }
        var parser = StrictJSON(text)
        let root: StrictJSON.Value
        do { root = try parser.parseDocument() } catch let e as StrictJSON.Failure { throw bad("header JSON: \(e.message)") }
        guard case let .object(entries) = root else { throw bad("the header is not a JSON object") }
        var metadata: [String: String] = [:]
        var specs: [(name: String, dtype: SafeTensorsDType, shape: [Int], begin: Int, end: Int)] = []
        for (name, value) in entries {
            if name == "__metadata__" {
                guard case let .object(m) = value else { throw bad("__metadata__ is not an object") }
                for (k, v) in m {
                    guard case let .string(s) = v else { throw bad("__metadata__[\(k)] is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard case let .object(fields) = value else { throw bad("entry '\(name)' is not an object") }
            var dtype: SafeTensorsDType?, shape: [Int]?, offsets: [Int]?
            for (k, v) in fields {
                switch k {
                case "dtype":
                    guard case let .string(s) = v, let d = SafeTensorsDType(rawValue: s) else {
                        throw bad("'\(name)': unknown dtype \(v); expected one of \(SafeTensorsDType.allCases.map(\.rawValue).joined(separator: ", "))")
                    }
                    dtype = d
                case "shape":
                    guard case let .array(a) = v, let dims = a.map({ $0.nonNegativeInt }) as [Int?]?, dims.allSatisfy({ $0 != nil }) else {
                        throw bad("'\(name)': shape is not a list of non-negative integers")
                    }
                    shape = dims.map { $0! }
                case "data_offsets":
                    guard case let .array(a) = v, a.count == 2, let b = a[0].nonNegativeInt, let e = a[1].nonNegativeInt else {
                        throw bad("'\(name)': data_offsets is not [begin, end]")
                    }
                    offsets = [b, e]
                default:
                    throw bad("'\(name)': unexpected field '\(k)'")
                }
            }
            guard let d = dtype, let s = shape, let o = offsets else { throw bad("'\(name)': needs dtype, shape and data_offsets") }
            var count = 1
            for dim in s {
                let (p, overflow) = count.multipliedReportingOverflow(by: dim)
                guard !overflow, p <= Int(UInt32.max) * 16 else { throw bad("'\(name)': shape \(s) is too large") }
                count = p
            }
            guard o[1] >= o[0], o[1] - o[0] == count * d.size else {
                throw bad("'\(name)': shape \(s) of \(d.rawValue) needs \(count * d.size) bytes but data_offsets \(o) span \(o[1] - o[0])")
            }
            specs.append((name, d, s, o[0], o[1]))
        }
        let dataStart = 8 + Int(n), dataBytes = raw.count - dataStart
        var expected = 0
        for spec in specs.sorted(by: { ($0.begin, $0.end) < ($1.begin, $1.end) }) {
            guard spec.begin == expected else {
                throw bad(spec.begin < expected ? "'\(spec.name)' overlaps the previous tensor (offset \(spec.begin), previous ends at \(expected))"
                                                : "a hole before '\(spec.name)' (offset \(spec.begin), previous ends at \(expected))")
            }
            expected = spec.end
        }
        guard expected == dataBytes else {
            throw bad(expected > dataBytes ? "tensors need \(expected) data bytes but the file holds \(dataBytes) (truncated?)"
                                           : "\(dataBytes - expected) bytes after the last tensor")
        }
        let tensors = specs.map { spec -> (String, SafeTensor) in
            let base = raw.baseAddress! + dataStart + spec.begin
            let count = (spec.end - spec.begin) / spec.dtype.size
            return (spec.name, SafeTensor(dtype: spec.dtype, shape: spec.shape, values: convert(base, count, spec.dtype)))
        }
        return (tensors, metadata)
    }

    static func convert(_ p: UnsafeRawPointer, _ n: Int, _ d: SafeTensorsDType) -> [Float] {
        (0..<n).map { i -> Float in
            switch d {
            case .F32: return Float(bitPattern: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).littleEndian)
            case .F64: return Float(Double(bitPattern: p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self).littleEndian))
            case .F16: return Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian))
            case .BF16: return Float(bitPattern: UInt32(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self).littleEndian) << 16)
            case .I64: return Float(Int64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)))
            case .I32: return Float(Int32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)))
            case .I16: return Float(Int16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self)))
            case .I8: return Float(p.load(fromByteOffset: i, as: Int8.self))
            case .U8, .BOOL: return Float(p.load(fromByteOffset: i, as: UInt8.self))
            }
        }
    }
}

/// Writes `data` to `path` through a temporary file in the same directory, fsynced, then renamed over `path`.
public func writeAtomically(_ data: Data, to path: String) throws {
    let tmp = path + ".tmp-\(getpid())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else {
        throw SafeTensorsError.io(path: path, reason: "cannot create \(tmp): \(String(cString: strerror(errno)))")
    }
    var ok = true
    data.withUnsafeBytes { raw in
        var done = 0
        while done < raw.count {
            let w = Foundation.write(fd, raw.baseAddress! + done, raw.count - done)
            if w <= 0 { ok = false; break }
            done += w
        }
    }
    if ok { ok = fsync(fd) == 0 }
    close(fd)
    guard ok, rename(tmp, path) == 0 else {
        let reason = String(cString: strerror(errno))
        unlink(tmp)
        throw SafeTensorsError.io(path: path, reason: "write failed: \(reason)")
    }
}

func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        default:
            if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
        }
    }
    return out + "\""
}

// MARK: - Module state

extension Module {
    /// Writes every parameter and buffer under its state-dict name (num_batches_tracked as I64, as PyTorch).
    public func saveSafeTensors(to path: String, metadata: [String: String] = [:]) throws {
        try writeAtomically(safeTensorsData(metadata: metadata), to: path)
    }

    /// The bytes saveSafeTensors writes.
    public func safeTensorsData(metadata: [String: String] = [:]) -> Data {
        let state = namedState()
        return withBuffers(state.map { $0.1.value }) { buffers in
            SafeTensors.encode(zip(state, buffers).map { entry, buf in
                (entry.0, entry.1.value.shape, buf, entry.0.hasSuffix("num_batches_tracked") ? .I64 : .F32)
            }, metadata: metadata)
        }
    }

    /// Loads every parameter and buffer from a file; every name must be present with the same shape (but a batch
    /// norm's num_batches_tracked, which a missing one keeps its value for, as torch's load_state_dict does), and
    /// the file may hold no other tensors. Nothing is changed unless everything matches.
    public func loadSafeTensors(from path: String) throws {
        let data = try SafeTensors.contents(of: path)
        try loadSafeTensors(data: data, path: path)
    }

    /// Loads every parameter and buffer from a file's bytes (`path` names it in errors), as loadSafeTensors(from:).
    public func loadSafeTensors(data: Data, path: String) throws {
        let (tensors, _) = try SafeTensors.read(data: data, path: path)
        var byName: [String: SafeTensor] = [:]
        for (n, t) in tensors { byName[n] = t }
        let state = namedState()
        for (name, p) in state {
            guard let t = byName[name] else {
                if name.hasSuffix(SafeTensors.batchCountSuffix) { continue }
                throw SafeTensorsError.mismatch(path: path, reason: "missing tensor '\(name)' (shape \(p.value.shape))")
            }
            guard t.shape == p.value.shape || (t.shape.isEmpty && p.value.shape.isEmpty) else {
                throw SafeTensorsError.mismatch(path: path, reason: "tensor '\(name)' has shape \(t.shape), the model expects \(p.value.shape)")
            }
        }
        let known = Set(state.map { $0.0 })
        if let extra = tensors.first(where: { !known.contains($0.0) }) {
            throw SafeTensorsError.mismatch(path: path, reason: "unexpected tensor '\(extra.0)' (the model has no parameter or buffer of that name)")
        }
        for (name, p) in state where p.value.count > 0 {
            byName[name]?.values.withUnsafeBufferPointer { p.value.data.update(from: $0.baseAddress!, count: $0.count) }
        }
    }
}

extension SafeTensors {
    /// The name ending of a batch norm's batch count, the one tensor a state dict may lack.
    public static let batchCountSuffix = "num_batches_tracked"

    /// The batch norms (name prefixes) that have running statistics but no num_batches_tracked among `names`.
    public static func batchNormsWithoutCount(_ names: [String]) -> [String] {
        let all = Set(names)
        return names.filter { $0.hasSuffix("running_mean") }.map { String($0.dropLast("running_mean".count)) }
            .filter { !all.contains($0 + batchCountSuffix) }
    }

    /// Writes float32 tensors under their names.
    public static func write(named tensors: [(String, Tensor)], metadata: [String: String] = [:], to path: String) throws {
        try writeAtomically(encode(named: tensors, metadata: metadata), to: path)
    }

    /// The bytes write(named:) writes.
    public static func encode(named tensors: [(String, Tensor)], metadata: [String: String] = [:]) -> Data {
        withBuffers(tensors.map { $0.1 }) { b in encode(zip(tensors, b).map { ($0.0, $0.1.shape, $1, .F32) }, metadata: metadata) }
    }
}

/// Calls body with buffer pointers over each tensor's values.
func withBuffers<R>(_ tensors: [Tensor], _ body: ([UnsafeBufferPointer<Float>]) throws -> R) rethrows -> R {
    try body(tensors.map { UnsafeBufferPointer(start: $0.data, count: $0.count) })
}
