// Readers for the formats users have on disk: CIFAR-10/100 binary batches and IDX files (plain or gzip),
// which is how MNIST and Fashion-MNIST ship. Every size, magic number and label is checked.
import CZlib
import Foundation

/// Reads a whole file, naming it when it is missing or unreadable.
func readFile(_ path: String, expected: String) throws -> [UInt8] {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), !isDir.boolValue else {
        throw DatasetError.missingFile(path: path, expected: expected)
    }
    guard let data = FileManager.default.contents(atPath: path) else {
        throw DatasetError.unreadable(path: path, reason: "permission denied or I/O error")
    }
    return [UInt8](data)
}

/// The largest image side a dataset file may declare.
let maxImageSide = 4096

/// Decompressed gzip data beyond this is refused (a dataset file here is tens of MB; a crafted one could expand
/// without end).
public let maxDecompressedBytes = 1 << 31

/// Decompresses gzip data (zlib, with the gzip header), failing with the file named.
public func gunzip(_ bytes: [UInt8], path: String, limit: Int = maxDecompressedBytes) throws -> [UInt8] {
    var stream = z_stream()
    guard inflateInit2_(&stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
        throw DatasetError.badGzip(path: path, reason: "zlib could not start")
    }
    defer { inflateEnd(&stream) }
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 4)
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    var status: Int32 = Z_OK
    try bytes.withUnsafeBufferPointer { input in
        stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
        stream.avail_in = uInt(input.count)
        repeat {
            try chunk.withUnsafeMutableBufferPointer { buf in
                stream.next_out = buf.baseAddress
                stream.avail_out = uInt(buf.count)
                status = inflate(&stream, Z_NO_FLUSH)
                guard status == Z_OK || status == Z_STREAM_END else {
                    let message = stream.msg.map { String(cString: $0) } ?? "zlib error \(status)"
                    throw DatasetError.badGzip(path: path, reason: message)
                }
                out.append(contentsOf: buf[0..<(buf.count - Int(stream.avail_out))])
                guard out.count <= limit else {
                    throw DatasetError.badGzip(path: path, reason: "it expands to more than \(limit) bytes")
                }
            }
            if status != Z_STREAM_END && stream.avail_in == 0 && stream.avail_out != 0 {
                throw DatasetError.badGzip(path: path, reason: "data ends before the end of the compressed stream (truncated)")
            }
        } while status != Z_STREAM_END
    }
    return out
}

// MARK: - IDX

/// Reads an IDX file (gzip if the name ends in .gz): returns the dimensions and the payload bytes.
/// `kind` is 1 for label files ([N]) and 3 for image files ([N, H, W]).
func readIDX(_ path: String, dimensions kind: Int) throws -> (dims: [Int], payload: ArraySlice<UInt8>) {
    var bytes = try readFile(path, expected: kind == 1 ? "IDX label file" : "IDX image file")
    if path.hasSuffix(".gz") { bytes = try gunzip(bytes, path: path) }
    let header = 4 + 4 * kind
    guard bytes.count >= header else {
        throw DatasetError.badSize(path: path, size: bytes.count, expected: "at least a \(header)-byte IDX header")
    }
    func u32(_ at: Int) -> UInt32 {
        UInt32(bytes[at]) << 24 | UInt32(bytes[at + 1]) << 16 | UInt32(bytes[at + 2]) << 8 | UInt32(bytes[at + 3])
    }
    let expectedMagic = UInt32(0x0000_0800) | UInt32(kind)  // unsigned bytes, `kind` dimensions
    guard u32(0) == expectedMagic else { throw DatasetError.badMagic(path: path, found: u32(0), expected: expectedMagic) }
    let dims = (0..<kind).map { Int(u32(4 + 4 * $0)) }
    // The declared size, checked against the file before anything is allocated (the product may overflow).
    var payload = 1
    for d in dims {
        let (p, overflow) = payload.multipliedReportingOverflow(by: d)
        guard !overflow, p <= bytes.count else {
            throw DatasetError.badSize(path: path, size: bytes.count,
                                       expected: "\(header) header bytes + \(dims.map(String.init).joined(separator: "×")) bytes as its header declares")
        }
        payload = p
    }
    guard bytes.count == header + payload else {
        throw DatasetError.badSize(path: path, size: bytes.count,
                                   expected: "\(header + payload) (header + \(dims.map(String.init).joined(separator: "×")) bytes)")
    }
    return (dims, bytes[header...])
}

/// An IDX image file and its label file as one store; checks that counts agree and labels are in range.
func loadIDX(images: String, labels: String, classes: Int) throws -> ImageStore {
    let (idims, ipix) = try readIDX(images, dimensions: 3)
    let (ldims, lbytes) = try readIDX(labels, dimensions: 1)
    guard idims[1] > 0, idims[2] > 0, idims[1] <= maxImageSide, idims[2] <= maxImageSide else {
        throw DatasetError.mismatch("'\(images)' declares \(idims[1])×\(idims[2]) images; expected each side in 1...\(maxImageSide)")
    }
    guard idims[0] == ldims[0] else {
        throw DatasetError.mismatch("'\(images)' holds \(idims[0]) images but '\(labels)' holds \(ldims[0]) labels")
    }
    var labelValues = [Int32](repeating: 0, count: ldims[0])
    for (i, b) in lbytes.enumerated() {
        guard Int(b) < classes else { throw DatasetError.labelOutOfRange(path: labels, index: i, label: Int(b), classes: classes) }
        labelValues[i] = Int32(b)
    }
    return ImageStore(pixels: Array(ipix), labels: labelValues, height: idims[1], width: idims[2], channels: 1)
}

// MARK: - CIFAR

/// CIFAR-10 or CIFAR-100 binary files: records of label byte(s) then 3072 bytes (1024 R, 1024 G, 1024 B).
/// Pixels are stored channels-last.
func loadCIFAR(files: [String], labelBytes: Int, labelOffset: Int, classes: Int) throws -> ImageStore {
    let record = labelBytes + 3072
    var pixels = [UInt8](), labels = [Int32]()
    for path in files {
        let bytes = try readFile(path, expected: "CIFAR binary batch")
        guard bytes.count > 0 && bytes.count % record == 0 else {
            throw DatasetError.badSize(path: path, size: bytes.count,
                                       expected: "a positive multiple of \(record) (\(labelBytes) label byte\(labelBytes > 1 ? "s" : "") + 3072 pixel bytes per record)")
        }
        let n = bytes.count / record
        pixels.reserveCapacity(pixels.count + n * 3072)
        var image = [UInt8](repeating: 0, count: 3072)
        for r in 0..<n {
            let base = r * record
            let label = Int(bytes[base + labelOffset])
            guard label < classes else {
                throw DatasetError.labelOutOfRange(path: path, index: r, label: label, classes: classes)
            }
            labels.append(Int32(label))
            for p in 0..<1024 {
                image[3 * p] = bytes[base + labelBytes + p]
                image[3 * p + 1] = bytes[base + labelBytes + 1024 + p]
                image[3 * p + 2] = bytes[base + labelBytes + 2048 + p]
            }
            pixels.append(contentsOf: image)
        }
    }
    return ImageStore(pixels: pixels, labels: labels, height: 32, width: 32, channels: 3)
}
