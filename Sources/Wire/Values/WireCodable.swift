import SwiftProtobuf

/// What a value becomes on the wire: a protobuf body (a message of `Protos/`) and the raw tensor frames
/// that travel beside it, never inside the body.
public struct WirePayload: Sendable, Equatable {
    /// The serialized protobuf message.
    public var body: [UInt8]
    /// Raw little-endian tensors, each named.
    public var tensors: [WireTensor]

    public init(body: [UInt8], tensors: [WireTensor] = []) {
        self.body = body
        self.tensors = tensors
    }

    /// The tensor named `name`, if present.
    public func tensor(_ name: String) -> WireTensor? { tensors.first { $0.name == name } }

    /// The float32 tensor `name` with exactly `count` values; throws naming the tensor otherwise.
    public func floats(_ name: String, count: Int, in what: String) throws -> [Float] {
        guard let tensor = tensor(name) else { throw WireError.malformedBody("\(what) lacks the tensor frame \"\(name)\"") }
        guard tensor.dtype == .float32 else { throw WireError.tensorShape(name: name, reason: "expected float32, got \(tensor.dtype)") }
        guard tensor.bytes.count == count * 4 else {
            throw WireError.tensorShape(name: name, reason: "\(tensor.bytes.count / 4) values where \(what) needs \(count)")
        }
        return tensor.floats
    }
}

/// A Swift value that crosses the wire: the argument and result types of the cluster's distributed
/// actors (their serialization requirement). The conversions to and from the generated `Rlhf_V1_*`
/// messages live in this module's `+Wire` files, so no module above sees a generated type.
public protocol WireCodable: Sendable {
    /// The value as a protobuf body and tensor frames.
    func wirePayload() throws -> WirePayload
    /// Reads a value back, refusing a body or tensors of the wrong shape with a `WireError` naming it.
    init(wirePayload: WirePayload) throws
}

/// The cluster runtime's own control messages (status, pings) travel as themselves.
public protocol ProtobufWireCodable: WireCodable, SwiftProtobuf.Message {}

extension ProtobufWireCodable {
    public func wirePayload() throws -> WirePayload { WirePayload(body: try protoBytes(self)) }

    public init(wirePayload: WirePayload) throws {
        do {
            try self.init(serializedBytes: wirePayload.body)
        } catch {
            throw WireError.malformedBody("\(Self.protoMessageName): \(error)")
        }
    }
}

/// A message's bytes with map entries in a fixed order (so equal messages give equal bytes).
func protoBytes(_ message: some SwiftProtobuf.Message) throws -> [UInt8] {
    var options = BinaryEncodingOptions()
    options.useDeterministicOrdering = true
    return try message.serializedBytes(options: options)
}

extension SwiftProtobuf.Message {
    /// Parses `bytes`, naming the message type on failure.
    static func parse(_ bytes: [UInt8]) throws -> Self {
        do {
            return try Self(serializedBytes: bytes)
        } catch {
            throw WireError.malformedBody("\(protoMessageName): \(error)")
        }
    }
}

extension Rlhf_V1_StatusReply: ProtobufWireCodable {}
extension Rlhf_V1_Heartbeat: ProtobufWireCodable {}
extension Rlhf_V1_Register: ProtobufWireCodable {}
