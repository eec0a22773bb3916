import Foundation
import LlamaCore
import SwiftProtobuf

/// Version of the wire protocol; peers of another version are refused at registration and every
/// message of another version is answered with an error.
public enum ProtocolVersion {
    /// The version this build speaks. 2: a generate request carries a list of stop tokens (field 8),
    /// no longer one (field 7).
    public static let current: UInt32 = 2
}

/// Why a multipart message was refused. Every case names the frame or field at fault.
public enum WireError: Error, Equatable, CustomStringConvertible, Sendable {
    case tooFewFrames(Int)
    case frameTooLarge(index: Int, bytes: Int, limit: Int)
    case envelopeChecksum
    case malformedEnvelope(String)
    case badMagic(UInt32)
    case versionMismatch(UInt32)
    case unknownType(Int)
    case bodyLength(expected: UInt64, actual: Int)
    case bodyChecksum
    case malformedBody(String)
    case tensorCount(expected: Int, actual: Int)
    case tensorLength(name: String, expected: UInt64, actual: Int)
    case tensorChecksum(name: String)
    case tensorShape(name: String, reason: String)

    /// A short label for counting refusals by kind (a metric label): "truncated", "oversized",
    /// "checksum", "malformed", "wrong_version", "unknown_type" or "tensor".
    public var reason: String {
        switch self {
        case .tooFewFrames, .bodyLength: return "truncated"
        case .frameTooLarge: return "oversized"
        case .envelopeChecksum, .bodyChecksum, .tensorChecksum: return "checksum"
        case .malformedEnvelope, .badMagic, .malformedBody: return "malformed"
        case .versionMismatch: return "wrong_version"
        case .unknownType: return "unknown_type"
        case .tensorCount, .tensorLength, .tensorShape: return "tensor"
        }
    }

    public var description: String {
        switch self {
        case let .tooFewFrames(n): return "a message needs at least 2 frames (envelope, body), got \(n)"
        case let .frameTooLarge(index, bytes, limit): return "frame \(index) has \(bytes) bytes, over the limit of \(limit)"
        case .envelopeChecksum: return "envelope checksum mismatch (corrupt or truncated frame 0)"
        case let .malformedEnvelope(reason): return "malformed envelope: \(reason)"
        case let .badMagic(m): return String(format: "bad magic 0x%08X (not a SwiftRLHF message)", m)
        case let .versionMismatch(v): return "protocol version \(v), this build speaks \(ProtocolVersion.current)"
        case let .unknownType(t): return "unknown message type \(t)"
        case let .bodyLength(expected, actual): return "body length \(actual), envelope says \(expected)"
        case .bodyChecksum: return "body checksum mismatch (corrupt frame 1)"
        case let .malformedBody(reason): return "malformed body: \(reason)"
        case let .tensorCount(expected, actual): return "\(actual) tensor frames, envelope describes \(expected)"
        case let .tensorLength(name, expected, actual): return "tensor \(name): \(actual) bytes, header says \(expected)"
        case let .tensorChecksum(name): return "tensor \(name): checksum mismatch"
        case let .tensorShape(name, reason): return "tensor \(name): \(reason)"
        }
    }
}

/// One raw tensor frame with its descriptor.
public struct WireTensor: Sendable, Equatable {
    public var name: String
    public var dtype: Rlhf_V1_DType
    public var shape: [Int]
    public var bytes: [UInt8]
    /// CRC-32C of `bytes` when already known (precomputed by the sender, or verified on receipt);
    /// `frames()` computes it when nil.
    public var crc32c: UInt32?

    /// A float32 tensor (little-endian on the wire).
    public init(name: String, floats: [Float], shape: [Int]? = nil) {
        self.name = name
        self.dtype = .float32
        self.shape = shape ?? [floats.count]
        self.bytes = floats.withUnsafeBytes { Array($0) }
    }

    /// A tensor of raw bytes of `dtype`, with its checksum if the caller already has it.
    public init(name: String, dtype: Rlhf_V1_DType, shape: [Int], bytes: [UInt8], crc32c: UInt32? = nil) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
        self.crc32c = crc32c
    }

    /// The values of a float32 tensor.
    public var floats: [Float] {
        precondition(dtype == .float32, "tensor \(name) is not float32")
        return bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    /// Equal tensors have the same name, type, shape and bytes; whether the checksum is known yet does not count.
    public static func == (a: WireTensor, b: WireTensor) -> Bool {
        a.name == b.name && a.dtype == b.dtype && a.shape == b.shape && a.bytes == b.bytes
    }

    /// Bytes per element of `dtype` (nil for an unknown dtype).
    public static func elementSize(_ dtype: Rlhf_V1_DType) -> Int? {
        switch dtype {
        case .float32, .int32: return 4
        case .bfloat16: return 2
        case .uint8: return 1
        default: return nil
        }
    }
}

/// A message as it travels: envelope, protobuf body and raw tensor frames, with CRC-32C over each.
public struct WireMessage: Sendable {
    /// "RLHF" read as a little-endian uint32.
    public static let magic: UInt32 = 0x4648_4C52
    /// Largest frame accepted by default (the transport sets ZMQ_MAXMSGSIZE to the same).
    public static let defaultMaxFrameBytes = 256 << 20

    public var type: Rlhf_V1_MessageType
    public var requestID: UInt64
    public var round: UInt32 = 0
    public var step: UInt64 = 0
    public var policyVersion: UInt64 = 0
    public var sender: String = ""
    /// The registration epoch the message belongs to (0 where none applies): a worker's own on what it
    /// sends; on a task, that of the worker it is sent to. Fences results of a worker declared dead.
    public var epoch: UInt64 = 0
    /// The serialized body message.
    public var body: [UInt8]
    public var tensors: [WireTensor]

    /// A message carrying `body` (serialized deterministically) and `tensors`.
    public init(type: Rlhf_V1_MessageType, requestID: UInt64, body: some SwiftProtobuf.Message,
                tensors: [WireTensor] = [], sender: String = "", policyVersion: UInt64 = 0) throws {
        var options = BinaryEncodingOptions()
        options.useDeterministicOrdering = true
        self.type = type
        self.requestID = requestID
        self.body = Array(try body.serializedBytes(options: options) as [UInt8])
        self.tensors = tensors
        self.sender = sender
        self.policyVersion = policyVersion
    }

    /// Decodes the body as `M`.
    public func decodeBody<M: SwiftProtobuf.Message>(_: M.Type) throws -> M {
        do {
            return try M(serializedBytes: body)
        } catch {
            throw WireError.malformedBody("\(M.protoMessageName): \(error)")
        }
    }

    /// The tensor named `name`, if present.
    public func tensor(_ name: String) -> WireTensor? { tensors.first { $0.name == name } }

    /// The multipart frames: `[crc32c(envelope) + envelope, body, tensor...]`.
    public func frames() throws -> [[UInt8]] {
        var envelope = Rlhf_V1_Envelope()
        envelope.magic = WireMessage.magic
        envelope.protocolVersion = ProtocolVersion.current
        envelope.type = type
        envelope.requestID = requestID
        envelope.round = round
        envelope.step = step
        envelope.policyVersion = policyVersion
        envelope.sender = sender
        envelope.epoch = epoch
        envelope.bodyLength = UInt64(body.count)
        envelope.bodyCrc32C = CRC32C.checksum(body)
        envelope.tensors = tensors.map { t in
            var h = Rlhf_V1_TensorHeader()
            h.name = t.name
            h.dtype = t.dtype
            h.shape = t.shape.map(Int64.init)
            h.byteLength = UInt64(t.bytes.count)
            h.crc32C = t.crc32c ?? CRC32C.checksum(t.bytes)
            return h
        }
        var options = BinaryEncodingOptions()
        options.useDeterministicOrdering = true
        let encoded: [UInt8] = try envelope.serializedBytes(options: options)
        var first = withUnsafeBytes(of: CRC32C.checksum(encoded).littleEndian) { Array($0) }
        first += encoded
        return [first, body] + tensors.map(\.bytes)
    }

    /// Parses and verifies frames: sizes, checksums, magic, version, type, body length and every
    /// tensor's length, shape and checksum.
    public static func decode(_ frames: [[UInt8]], maxFrameBytes: Int = defaultMaxFrameBytes) throws -> WireMessage {
        guard frames.count >= 2 else { throw WireError.tooFewFrames(frames.count) }
        for (i, f) in frames.enumerated() where f.count > maxFrameBytes {
            throw WireError.frameTooLarge(index: i, bytes: f.count, limit: maxFrameBytes)
        }
        let head = frames[0]
        guard head.count >= 4 else { throw WireError.envelopeChecksum }
        let stored = UInt32(head[0]) | UInt32(head[1]) << 8 | UInt32(head[2]) << 16 | UInt32(head[3]) << 24
        let envelopeBytes = Array(head[4...])
        guard CRC32C.checksum(envelopeBytes) == stored else { throw WireError.envelopeChecksum }
        let envelope: Rlhf_V1_Envelope
        do {
            envelope = try Rlhf_V1_Envelope(serializedBytes: envelopeBytes)
        } catch {
            throw WireError.malformedEnvelope("\(error)")
        }
        guard envelope.magic == magic else { throw WireError.badMagic(envelope.magic) }
        guard envelope.protocolVersion == ProtocolVersion.current else { throw WireError.versionMismatch(envelope.protocolVersion) }
        guard case .UNRECOGNIZED = envelope.type else {
            if envelope.type == .unspecified { throw WireError.unknownType(0) }
            return try finish(envelope, frames)
        }
        throw WireError.unknownType(envelope.type.rawValue)
    }

    private static func finish(_ envelope: Rlhf_V1_Envelope, _ frames: [[UInt8]]) throws -> WireMessage {
        let body = frames[1]
        guard envelope.bodyLength == UInt64(body.count) else {
            throw WireError.bodyLength(expected: envelope.bodyLength, actual: body.count)
        }
        guard CRC32C.checksum(body) == envelope.bodyCrc32C else { throw WireError.bodyChecksum }
        guard envelope.tensors.count == frames.count - 2 else {
            throw WireError.tensorCount(expected: envelope.tensors.count, actual: frames.count - 2)
        }
        var tensors: [WireTensor] = []
        for (header, bytes) in zip(envelope.tensors, frames[2...]) {
            guard header.byteLength == UInt64(bytes.count) else {
                throw WireError.tensorLength(name: header.name, expected: header.byteLength, actual: bytes.count)
            }
            guard let size = WireTensor.elementSize(header.dtype) else {
                throw WireError.tensorShape(name: header.name, reason: "unknown dtype \(header.dtype)")
            }
            guard header.shape.allSatisfy({ $0 >= 0 }) else {
                throw WireError.tensorShape(name: header.name, reason: "negative dimension in \(header.shape)")
            }
            let elements = header.shape.reduce(Int64(1)) { $0.multipliedReportingOverflow(by: $1).partialValue }
            guard elements * Int64(size) == Int64(bytes.count) else {
                throw WireError.tensorShape(name: header.name, reason: "shape \(header.shape) needs \(elements * Int64(size)) bytes, frame has \(bytes.count)")
            }
            guard CRC32C.checksum(bytes) == header.crc32C else { throw WireError.tensorChecksum(name: header.name) }
            tensors.append(WireTensor(name: header.name, dtype: header.dtype, shape: header.shape.map { Int($0) }, bytes: bytes,
                                      crc32c: header.crc32C))
        }
        var message = WireMessage(type: envelope.type, requestID: envelope.requestID, rawBody: body, tensors: tensors)
        message.round = envelope.round
        message.step = envelope.step
        message.policyVersion = envelope.policyVersion
        message.sender = envelope.sender
        message.epoch = envelope.epoch
        return message
    }

    /// The frames of an ERROR reply to `requestID`: what every peer answers bad input or a failed task with.
    public static func errorFrames(_ code: Rlhf_V1_ErrorCode, _ text: String, requestID: UInt64, sender: String = "",
                                   epoch: UInt64 = 0) -> [[UInt8]]? {
        var e = Rlhf_V1_Error()
        e.code = code
        e.message = text
        e.requestID = requestID
        guard var message = try? WireMessage(type: .error, requestID: requestID, body: e, sender: sender) else { return nil }
        message.epoch = epoch
        return try? message.frames()
    }

    /// A message with an already serialized body.
    public init(type: Rlhf_V1_MessageType, requestID: UInt64, rawBody: [UInt8], tensors: [WireTensor] = []) {
        self.type = type
        self.requestID = requestID
        self.body = rawBody
        self.tensors = tensors
    }
}
