import Foundation

/// The table of contents of one `.safetensors` file: an 8-byte little-endian header length, a JSON
/// header `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`, then the data
/// (offsets relative to its start). Only the header is read here; tensors are read on demand.
public struct SafetensorsFile: Sendable {
    /// Element types the core reads and writes.
    public enum DType: String, Sendable, CaseIterable {
        case float32 = "F32", bfloat16 = "BF16", float16 = "F16"

        /// Bytes per element.
        public var size: Int { self == .float32 ? 4 : 2 }
    }

    /// One tensor: its type, shape and absolute byte range in the file.
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var dtype: DType
        public var shape: [Int]
        public var range: Range<Int>
    }

    /// The file.
    public let path: String
    /// Its tensors by name.
    public let entries: [String: Entry]
    /// `__metadata__` (string to string), empty when absent.
    public let metadata: [String: String]

    /// Largest header accepted (the format's own limit is 100 MB).
    static let maxHeaderBytes = 100_000_000

    /// Reads and checks the header of `path`: every tensor's type is one of `DType`, its byte range
    /// matches its shape and lies inside the file.
    public init(path: String) throws {
        let file = try ReadableFile(path: path)
        defer { file.close() }
        func invalid(_ reason: String) -> LlamaError { LlamaError.invalidCheckpoint(path: path, reason: reason) }
        guard file.size >= 8 else { throw invalid("file is \(file.size) bytes, too short for the safetensors header length") }
        let lengthBytes = try file.readBytes(at: 0, count: 8, path: path)
        let headerLength = lengthBytes.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard headerLength <= UInt64(min(SafetensorsFile.maxHeaderBytes, file.size - 8)) else {
            throw invalid("truncated or not safetensors: the header claims \(headerLength) bytes, the file has \(file.size - 8) after its length")
        }
        let header = try file.readBytes(at: 8, count: Int(headerLength), path: path)
        guard let object = (try? JSONSerialization.jsonObject(with: Data(header))) as? [String: Any] else {
            throw invalid("the safetensors header is not a JSON object")
        }
        let dataStart = 8 + Int(headerLength)
        var entries: [String: Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in object {
            if name == "__metadata__" {
                metadata = (value as? [String: String]) ?? [:]
                continue
            }
            guard let fields = value as? [String: Any], let typeName = fields["dtype"] as? String,
                  let shape = fields["shape"] as? [Int], let offsets = fields["data_offsets"] as? [Int], offsets.count == 2 else {
                throw invalid("tensor \(name): expected {dtype, shape, data_offsets: [begin, end]}")
            }
            guard let dtype = DType(rawValue: typeName) else {
                throw invalid("tensor \(name): dtype \(typeName) is not supported (supported: F32, BF16, F16)")
            }
            guard shape.allSatisfy({ $0 >= 0 && $0 < 1 << 40 }) else { throw invalid("tensor \(name): shape \(shape) is impossible") }
            let elements = shape.reduce(1, *)
            let begin = offsets[0], end = offsets[1]
            guard begin >= 0, end >= begin, end - begin == elements * dtype.size else {
                throw invalid("tensor \(name): data_offsets \(offsets) hold \(end - begin) bytes, its shape \(shape) of \(typeName) needs \(elements * dtype.size)")
            }
            guard dataStart + end <= file.size else {
                throw invalid("truncated: tensor \(name) ends at byte \(dataStart + end), the file has \(file.size)")
            }
            entries[name] = Entry(name: name, dtype: dtype, shape: shape, range: dataStart + begin ..< dataStart + end)
        }
        self.path = path
        self.entries = entries
        self.metadata = metadata
    }

    /// Reads `entry` as float32 rows of `columns` elements (`rows` of them: all where nil), the `r`-th row
    /// read going to row `destinationRow(r)` of `buffer` starting at `offset`. The file is read in chunks
    /// of whole rows (about 4 MiB), converted as it goes: no second copy of the tensor is ever held.
    func read(_ entry: Entry, rows range: Range<Int>? = nil, columns: Int, into buffer: FloatBuffer, offset: Int,
              destinationRow: (Int) -> Int = { $0 }) throws {
        let file = try ReadableFile(path: path)
        defer { file.close() }
        let elements = entry.shape.reduce(1, *)
        guard columns > 0, elements % columns == 0 else {
            throw LlamaError.invalidCheckpoint(path: path, reason: "tensor \(entry.name): \(elements) elements are not rows of \(columns)")
        }
        let all = 0 ..< elements / columns
        let range = range ?? all
        guard range.lowerBound >= 0 && range.upperBound <= all.upperBound else {
            throw LlamaError.invalidCheckpoint(path: path, reason: "tensor \(entry.name): rows \(range) of \(all.upperBound) asked for")
        }
        let rows = range.count
        let rowBytes = columns * entry.dtype.size
        let rowsPerChunk = max(1, (4 << 20) / rowBytes)
        var row = 0
        while row < rows {
            let count = min(rowsPerChunk, rows - row)
            let bytes = try file.readBytes(at: entry.range.lowerBound + (range.lowerBound + row) * rowBytes, count: count * rowBytes, path: path)
            buffer.withUnsafeMutableBufferPointer { dst in
                bytes.withUnsafeBytes { src in
                    for r in 0..<count {
                        let target = offset + destinationRow(row + r) * columns
                        let source = r * rowBytes
                        switch entry.dtype {
                        case .float32:
                            for c in 0..<columns { dst[target + c] = Float(bitPattern: src.loadUnaligned(fromByteOffset: source + 4 * c, as: UInt32.self)) }
                        case .bfloat16:
                            for c in 0..<columns {
                                dst[target + c] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: source + 2 * c, as: UInt16.self)) << 16)
                            }
                        case .float16:
                            for c in 0..<columns {
                                dst[target + c] = Float(Float16(bitPattern: src.loadUnaligned(fromByteOffset: source + 2 * c, as: UInt16.self)))
                            }
                        }
                    }
                }
            }
            row += count
        }
    }
}

/// Writes a `.safetensors` file from tensors held in float32 buffers, converting to the file's
/// dtype as it streams (no second copy of the weights).
struct SafetensorsWriter {
    /// One tensor to write: name, shape `(rows, columns)` or `(n)`, and where its rows come from.
    struct Tensor {
        var name: String
        var shape: [Int]
        /// The source buffer and the offset of its first element.
        var source: FloatBuffer
        var offset: Int
        /// File row `r` is source row `sourceRow(r)`.
        var sourceRow: (Int) -> Int = { $0 }
        /// Elements of a row (nil: the last dimension; 1 for a vector whose elements `sourceRow` maps).
        var columns: Int? = nil
    }

    /// Writes `tensors` in order, atomically, as `dtype`, with `metadata` (e.g. `{"format": "pt"}`).
    static func write(_ tensors: [Tensor], dtype: SafetensorsFile.DType, metadata: [String: String], to path: String) throws {
        var header: [String: Any] = ["__metadata__": metadata]
        var cursor = 0
        for tensor in tensors {
            let bytes = tensor.shape.reduce(1, *) * dtype.size
            header[tensor.name] = ["dtype": dtype.rawValue, "shape": tensor.shape, "data_offsets": [cursor, cursor + bytes]] as [String: Any]
            cursor += bytes
        }
        var json = Array(try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys]))
        // The data starts 8-byte aligned: the header is padded with spaces, as safetensors does.
        while (8 + json.count) % 8 != 0 { json.append(UInt8(ascii: " ")) }
        let file = try WritableFile(atomicPath: path)
        do {
            let length = UInt64(json.count)
            try file.write((0..<8).map { UInt8(truncatingIfNeeded: length >> (8 * UInt64($0))) })
            try file.write(json)
            for tensor in tensors {
                let columns = tensor.columns ?? tensor.shape.last ?? 1
                let rows = tensor.shape.reduce(1, *) / max(columns, 1)
                let rowsPerChunk = max(1, (4 << 20) / max(1, columns * dtype.size))
                var row = 0
                while row < rows {
                    let count = min(rowsPerChunk, rows - row)
                    var chunk = [UInt8](repeating: 0, count: count * columns * dtype.size)
                    tensor.source.withUnsafeBufferPointer { src in
                        chunk.withUnsafeMutableBytes { dst in
                            for r in 0..<count {
                                let from = tensor.offset + tensor.sourceRow(row + r) * columns
                                let to = r * columns * dtype.size
                                for c in 0..<columns {
                                    let value = src[from + c]
                                    switch dtype {
                                    case .float32: dst.storeBytes(of: value.bitPattern, toByteOffset: to + 4 * c, as: UInt32.self)
                                    case .bfloat16: dst.storeBytes(of: Kernels.bfloat16(value), toByteOffset: to + 2 * c, as: UInt16.self)
                                    case .float16: dst.storeBytes(of: Float16(value).bitPattern, toByteOffset: to + 2 * c, as: UInt16.self)
                                    }
                                }
                            }
                        }
                    }
                    try file.write(chunk)
                    row += count
                }
            }
            try file.commit()
        } catch {
            file.abandon()
            throw error
        }
    }
}
