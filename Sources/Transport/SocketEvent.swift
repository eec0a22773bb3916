import CZeroMQ

/// A connection event of a socket, as libzmq's socket monitor reports it: the peer connected or went,
/// or the security handshake succeeded or failed (and why). Decoded from the monitor's two frames:
/// a 16-bit event and a 32-bit value (little-endian), then the endpoint.
public struct SocketEvent: Sendable, Equatable {
    /// Why a handshake failed.
    public enum HandshakeFailure: Sendable, Equatable {
        /// One side speaks CURVE and the other does not.
        case mechanismMismatch
        /// The CURVE handshake did not decrypt: a wrong server key.
        case cryptographic
        /// The server's authenticator refused the client (a ZAP status code such as 400: key not admitted).
        case refusedByServer(status: UInt32)
        /// The connection closed during the handshake, with no reason given (libzmq passes an errno):
        /// what a CURVE client sees when its server key is wrong.
        case noDetail(errno: UInt32)
        /// Another protocol error (libzmq's code).
        case other(UInt32)
    }

    public enum Kind: Sendable, Equatable {
        case connected
        case disconnected
        case handshakeSucceeded
        case handshakeFailed(HandshakeFailure)
        /// An event not watched for (its libzmq number).
        case other(UInt16)
    }

    public let kind: Kind
    public let endpoint: String

    public init(kind: Kind, endpoint: String) {
        self.kind = kind
        self.endpoint = endpoint
    }

    /// The events a monitor asks for.
    static let watched: Int32 = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED
        | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH

    /// Decodes a monitor message; nil for anything else.
    public static func decode(_ frames: [[UInt8]]) -> SocketEvent? {
        guard frames.count == 2, frames[0].count == 6 else { return nil }
        let f = frames[0]
        let event = UInt16(f[0]) | UInt16(f[1]) << 8
        let value = UInt32(f[2]) | UInt32(f[3]) << 8 | UInt32(f[4]) << 16 | UInt32(f[5]) << 24
        let endpoint = String(decoding: frames[1], as: UTF8.self)
        let kind: Kind
        switch Int32(event) {
        case ZMQ_EVENT_CONNECTED: kind = .connected
        case ZMQ_EVENT_DISCONNECTED: kind = .disconnected
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: kind = .handshakeSucceeded
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: kind = .handshakeFailed(.refusedByServer(status: value))
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
            switch Int32(bitPattern: value) {
            case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: kind = .handshakeFailed(.mechanismMismatch)
            case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: kind = .handshakeFailed(.cryptographic)
            default: kind = .handshakeFailed(.other(value))
            }
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL: kind = .handshakeFailed(.noDetail(errno: value))
        default: kind = .other(event)
        }
        return SocketEvent(kind: kind, endpoint: endpoint)
    }

    private static let curveAdvice = "give --curve-server (its public key file, e.g. server.pub) and --curve-key "
        + "(a key file from rlhf keys generate whose public key it admits)"

    /// What a client should be told about a failed handshake with `peer`, given whether it uses CURVE
    /// (and its public key).
    public static func explain(_ failure: HandshakeFailure, peer: String, clientUsesCurve: Bool, clientPublicKey: String? = nil) -> String {
        switch failure {
        case .mechanismMismatch:
            return clientUsesCurve
                ? "\(peer) does not use CURVE encryption, and this side does: start it with CURVE keys, or drop this side's --curve-* options"
                : "\(peer) requires CURVE encryption: \(curveAdvice)"
        case .cryptographic:
            return "the CURVE handshake with \(peer) failed to decrypt: --curve-server is not its public key"
        case let .refusedByServer(status):
            return "\(peer) did not admit this side's CURVE key\(clientPublicKey.map { " (public key \($0))" } ?? "") "
                + "(status \(status)): add its .pub file to the server's --curve-allow"
        case let .noDetail(errno):
            // A server without CURVE takes any plain client: a plain handshake that breaks off met a CURVE server.
            return clientUsesCurve
                ? "the CURVE handshake with \(peer) broke off (errno \(errno)): check that --curve-server is its public key"
                : "the handshake with \(peer) broke off (errno \(errno)): it requires CURVE encryption: \(curveAdvice)"
        case let .other(code):
            return "the security handshake with \(peer) failed (libzmq protocol error 0x\(String(code, radix: 16)))"
        }
    }
}
