/// A minimal reader of the protobuf wire format: enough to read SentencePiece's `ModelProto` without
/// generated code. Unknown fields are skipped, malformed input throws.
struct ProtobufReader {
    enum WireError: Error, CustomStringConvertible {
        case truncated(at: Int)
        case badWireType(Int, at: Int)
        case varintTooLong(at: Int)

        var description: String {
            switch self {
            case let .truncated(at): return "protobuf message truncated at byte \(at)"
            case let .badWireType(type, at): return "unsupported protobuf wire type \(type) at byte \(at)"
            case let .varintTooLong(at): return "protobuf varint longer than 10 bytes at byte \(at)"
            }
        }
    }

    /// A field value as read from the wire.
    enum Value {
        case varint(UInt64)
        case fixed64(UInt64)
        case bytes(ArraySlice<UInt8>)
        case fixed32(UInt32)
    }

    let bytes: ArraySlice<UInt8>
    private(set) var position: Int

    init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        position = bytes.startIndex
    }

    var atEnd: Bool { position >= bytes.endIndex }

    mutating func readVarint() throws -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        let start = position
        while true {
            guard position < bytes.endIndex else { throw WireError.truncated(at: position) }
            let byte = bytes[position]
            position += 1
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
            if shift >= 70 { throw WireError.varintTooLong(at: start) }
        }
    }

    private mutating func take(_ n: Int) throws -> ArraySlice<UInt8> {
        guard n >= 0, bytes.endIndex - position >= n else { throw WireError.truncated(at: position) }
        defer { position += n }
        return bytes[position ..< position + n]
    }

    private mutating func littleEndian(_ n: Int) throws -> UInt64 {
        var value: UInt64 = 0
        for (i, b) in try take(n).enumerated() { value |= UInt64(b) << (8 * UInt64(i)) }
        return value
    }

    /// The next field number and value, or nil at the end of the message.
    mutating func nextField() throws -> (number: Int, value: Value)? {
        guard !atEnd else { return nil }
        let start = position
        let key = try readVarint()
        let number = Int(truncatingIfNeeded: key >> 3)
        switch key & 7 {
        case 0: return (number, .varint(try readVarint()))
        case 1: return (number, .fixed64(try littleEndian(8)))
        case 2:
            let length = try readVarint()
            guard length <= UInt64(Int32.max) else { throw WireError.truncated(at: position) }
            return (number, .bytes(try take(Int(length))))
        case 5: return (number, .fixed32(UInt32(try littleEndian(4))))
        default: throw WireError.badWireType(Int(key & 7), at: start)
        }
    }
}
