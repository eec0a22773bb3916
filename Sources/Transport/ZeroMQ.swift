import CZeroMQ
#if canImport(Glibc)
import Glibc
#endif

/// A failed ZeroMQ call: the operation and libzmq's own message.
public struct TransportError: Error, CustomStringConvertible, Sendable, Equatable {
    public let operation: String
    public let code: Int32
    public let message: String

    init(_ operation: String) {
        self.operation = operation
        code = zmq_errno()
        message = String(cString: zmq_strerror(code))
    }

    public var description: String { "\(operation): \(message) (errno \(code))" }

    /// The call would have blocked (non-blocking send or receive).
    public var wouldBlock: Bool { code == EAGAIN }
    /// The peer is not connected (ROUTER_MANDATORY send to an unknown identity).
    public var hostUnreachable: Bool { code == EHOSTUNREACH }
}

/// A ZeroMQ context: one per process. `terminate()` must follow the closing of every socket.
public final class ZMQContext: @unchecked Sendable {
    private let handle: UnsafeMutableRawPointer

    /// A new context.
    public init() throws {
        guard let h = zmq_ctx_new() else { throw TransportError("zmq_ctx_new") }
        handle = h
    }

    /// Terminates the context (blocks until every socket is closed; sockets use LINGER 0 by default).
    public func terminate() { _ = zmq_ctx_term(handle) }

    func withHandle<R>(_ body: (UnsafeMutableRawPointer) throws -> R) rethrows -> R { try body(handle) }
}

/// The socket kinds SwiftRLHF uses.
public enum SocketKind: Sendable {
    case router, dealer, pair, pub, sub
    /// Raw TCP (each message is `[peer id, bytes]`; sending `[peer id, []]` closes the connection):
    /// how the coordinator serves HTTP metrics without another dependency.
    case stream
    /// Strict request/reply (the ZAP authentication handler).
    case rep

    var raw: Int32 {
        switch self {
        case .router: return ZMQ_ROUTER
        case .dealer: return ZMQ_DEALER
        case .pair: return ZMQ_PAIR
        case .pub: return ZMQ_PUB
        case .sub: return ZMQ_SUB
        case .stream: return ZMQ_STREAM
        case .rep: return ZMQ_REP
        }
    }
}

/// Socket settings applied at creation (every rule here was measured on this project's machines:
/// see DESIGN.md section 3).
public struct SocketSettings: Sendable, Equatable {
    /// Milliseconds unsent messages are kept after close (the default, infinite, blocks shutdown).
    public var lingerMilliseconds: Int32 = 0
    /// Largest inbound message part; an oversized one drops the connection instead of exhausting memory.
    public var maxMessageBytes: Int64 = 256 << 20
    /// ZMTP heartbeats: a stopped host or cut link is otherwise never noticed.
    public var heartbeatIntervalMilliseconds: Int32 = 1000
    public var heartbeatTimeoutMilliseconds: Int32 = 5000
    /// Queue limits (messages) before sends block or fail.
    public var sendHighWaterMark: Int32 = 10_000
    public var receiveHighWaterMark: Int32 = 10_000
    /// Reconnection backoff of connecting sockets: the first retry after `reconnectMilliseconds`, each
    /// next one twice as late, up to `reconnectMaxMilliseconds` (0: no backoff).
    public var reconnectMilliseconds: Int32 = 100
    public var reconnectMaxMilliseconds: Int32 = 0
    /// How long one connection attempt may take before it is abandoned and retried (0: the OS's TCP
    /// timeout, minutes when the peer's host is unreachable).
    public var connectTimeoutMilliseconds: Int32 = 0
    /// CURVE encryption and authentication (keys in Z85, 40 characters); nil for plain TCP.
    public var curve: Curve? = nil
    /// ROUTER only: a peer that reconnects with the routing id of a connection not yet noticed as
    /// dead takes that id over (otherwise its messages are lost until the old connection times out).
    public var routerHandover = false

    public init() {}
    public static let `default` = SocketSettings()
}

/// CURVE keys of a socket (Z85 text, 40 characters each).
public enum Curve: Sendable, Equatable, Codable {
    /// A server: its secret key. Which clients may connect is decided by `PollLoop.authorizeCurveClients`.
    case server(secretKey: String)
    /// A client: the server's public key and its own key pair.
    case client(serverKey: String, publicKey: String, secretKey: String)
}

/// A CURVE server's keys: its secret key and the public keys of the clients it admits (Z85 text).
public struct CurveServerKeys: Sendable, Equatable, Codable {
    public var secretKey: String
    public var clients: Set<String>

    public init(secretKey: String, clients: Set<String>) {
        self.secretKey = secretKey
        self.clients = clients
    }
}

/// A CURVE key pair in Z85 text.
public struct CurveKeyPair: Sendable, Equatable {
    public let publicKey: String
    public let secretKey: String

    public init(publicKey: String, secretKey: String) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// A fresh key pair (libzmq built with libsodium).
    public static func generate() throws -> CurveKeyPair {
        var publicKey = [CChar](repeating: 0, count: 41), secretKey = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&publicKey, &secretKey) == 0 else { throw TransportError("zmq_curve_keypair (libzmq without CURVE?)") }
        func text(_ chars: [CChar]) -> String { String(decoding: chars.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        return CurveKeyPair(publicKey: text(publicKey), secretKey: text(secretKey))
    }

    /// The Z85 text of a 32-byte binary key (as ZAP hands client keys over).
    static func z85(_ binary: [UInt8]) -> String? {
        guard binary.count == 32 else { return nil }
        var out = [CChar](repeating: 0, count: 41)
        guard binary.withUnsafeBufferPointer({ zmq_z85_encode(&out, $0.baseAddress, 32) }) != nil else { return nil }
        return String(decoding: out.prefix(40).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// One ZeroMQ socket. Sockets are not thread-safe: each is owned by one thread (the process's poll
/// loop) and closed explicitly with `close()`, never in `deinit`.
public final class ZMQSocket {
    private var handle: UnsafeMutableRawPointer?
    public let kind: SocketKind

    /// A socket of `kind` with `settings` (ROUTER sockets also get ROUTER_MANDATORY: a send to a peer
    /// that is gone fails instead of vanishing).
    public init(context: ZMQContext, kind: SocketKind, settings: SocketSettings = .default, identity: [UInt8]? = nil) throws {
        guard let h = context.withHandle({ zmq_socket($0, kind.raw) }) else { throw TransportError("zmq_socket") }
        handle = h
        self.kind = kind
        do {
            try setInt(ZMQ_LINGER, settings.lingerMilliseconds)
            try setInt64(ZMQ_MAXMSGSIZE, settings.maxMessageBytes)
            try setInt(ZMQ_HEARTBEAT_IVL, settings.heartbeatIntervalMilliseconds)
            try setInt(ZMQ_HEARTBEAT_TIMEOUT, settings.heartbeatTimeoutMilliseconds)
            try setInt(ZMQ_HEARTBEAT_TTL, settings.heartbeatTimeoutMilliseconds)
            try setInt(ZMQ_SNDHWM, settings.sendHighWaterMark)
            try setInt(ZMQ_RCVHWM, settings.receiveHighWaterMark)
            try setInt(ZMQ_RECONNECT_IVL, settings.reconnectMilliseconds)
            try setInt(ZMQ_RECONNECT_IVL_MAX, settings.reconnectMaxMilliseconds)
            try setInt(ZMQ_CONNECT_TIMEOUT, settings.connectTimeoutMilliseconds)
            if kind == .router && settings.routerHandover { try setInt(ZMQ_ROUTER_HANDOVER, 1) }
            switch settings.curve {
            case let .server(secretKey)?:
                try setInt(ZMQ_CURVE_SERVER, 1)
                try setBytes(ZMQ_CURVE_SECRETKEY, Array(secretKey.utf8) + [0])
            case let .client(serverKey, publicKey, secretKey)?:
                try setBytes(ZMQ_CURVE_SERVERKEY, Array(serverKey.utf8) + [0])
                try setBytes(ZMQ_CURVE_PUBLICKEY, Array(publicKey.utf8) + [0])
                try setBytes(ZMQ_CURVE_SECRETKEY, Array(secretKey.utf8) + [0])
            case nil:
                break
            }
            if kind == .router { try setInt(ZMQ_ROUTER_MANDATORY, 1) }
            if kind == .sub { try setBytes(ZMQ_SUBSCRIBE, []) }
            if let identity { try setBytes(ZMQ_ROUTING_ID, identity) }
        } catch {
            close()
            throw error
        }
    }

    /// The libzmq handle (nil after close), for the poll loop.
    var rawHandle: UnsafeMutableRawPointer? { handle }

    private func live() throws -> UnsafeMutableRawPointer {
        guard let handle else { throw TransportError("socket used after close") }
        return handle
    }

    /// Sets an int option.
    public func setInt(_ option: Int32, _ value: Int32) throws {
        var v = value
        guard zmq_setsockopt(try live(), option, &v, MemoryLayout<Int32>.size) == 0 else { throw TransportError("zmq_setsockopt(\(option))") }
    }

    /// Sets an int64 option.
    public func setInt64(_ option: Int32, _ value: Int64) throws {
        var v = value
        guard zmq_setsockopt(try live(), option, &v, MemoryLayout<Int64>.size) == 0 else { throw TransportError("zmq_setsockopt(\(option))") }
    }

    /// Sets a binary option.
    public func setBytes(_ option: Int32, _ value: [UInt8]) throws {
        let h = try live()
        let rc = value.withUnsafeBytes { zmq_setsockopt(h, option, $0.baseAddress, $0.count) }
        guard rc == 0 else { throw TransportError("zmq_setsockopt(\(option))") }
    }

    /// Reads an int option.
    public func getInt(_ option: Int32) throws -> Int32 {
        var v: Int32 = 0
        var size = MemoryLayout<Int32>.size
        guard zmq_getsockopt(try live(), option, &v, &size) == 0 else { throw TransportError("zmq_getsockopt(\(option))") }
        return v
    }

    /// Binds to `endpoint`; returns the endpoint actually bound (a `tcp://host:*` port resolved).
    @discardableResult
    public func bind(_ endpoint: String) throws -> String {
        guard zmq_bind(try live(), endpoint) == 0 else { throw TransportError("zmq_bind(\(endpoint))") }
        var buffer = [CChar](repeating: 0, count: 256)
        var size = buffer.count
        guard zmq_getsockopt(try live(), ZMQ_LAST_ENDPOINT, &buffer, &size) == 0 else { return endpoint }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Publishes this socket's connection and handshake events on a PAIR socket bound at `endpoint`
    /// (an `inproc://` address) for the caller to connect and read.
    public func monitor(_ endpoint: String) throws {
        guard zmq_socket_monitor(try live(), endpoint, SocketEvent.watched) == 0 else { throw TransportError("zmq_socket_monitor(\(endpoint))") }
    }

    /// Connects to `endpoint` (asynchronously: ZeroMQ reconnects by itself).
    public func connect(_ endpoint: String) throws {
        guard zmq_connect(try live(), endpoint) == 0 else { throw TransportError("zmq_connect(\(endpoint))") }
    }

    /// Sends a multipart message; with `wait` false a full queue throws (`wouldBlock`).
    public func send(_ frames: [[UInt8]], wait: Bool = true) throws {
        let h = try live()
        for (i, frame) in frames.enumerated() {
            var flags: Int32 = i + 1 < frames.count ? ZMQ_SNDMORE : 0
            if !wait { flags |= ZMQ_DONTWAIT }
            let rc = frame.withUnsafeBytes { zmq_send(h, $0.baseAddress, $0.count, flags) }
            guard rc >= 0 else { throw TransportError("zmq_send") }
        }
    }

    /// Receives one multipart message; nil when `wait` is false and nothing is queued.
    public func receive(wait: Bool = true) throws -> [[UInt8]]? {
        let h = try live()
        var frames: [[UInt8]] = []
        var more: Int32 = 1
        while more != 0 {
            var message = zmq_msg_t()
            zmq_msg_init(&message)
            defer { zmq_msg_close(&message) }
            let rc = zmq_msg_recv(&message, h, wait || !frames.isEmpty ? 0 : ZMQ_DONTWAIT)
            if rc < 0 {
                let error = TransportError("zmq_msg_recv")
                if error.wouldBlock && frames.isEmpty { return nil }
                throw error
            }
            let size = zmq_msg_size(&message)
            if let data = zmq_msg_data(&message) {
                frames.append(Array(UnsafeRawBufferPointer(start: data, count: size)))
            } else {
                frames.append([])
            }
            more = zmq_msg_more(&message)
        }
        return frames
    }

    /// Whether a message can be received now, waiting up to `timeoutMilliseconds` (-1: forever).
    public func poll(timeoutMilliseconds: Int) throws -> Bool {
        var item = zmq_pollitem_t(socket: try live(), fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)
        let rc = zmq_poll(&item, 1, timeoutMilliseconds)
        guard rc >= 0 else { throw TransportError("zmq_poll") }
        return item.revents & Int16(ZMQ_POLLIN) != 0
    }

    /// Closes the socket (explicitly: sockets are never closed in `deinit`).
    public func close() {
        if let handle { zmq_close(handle) }
        handle = nil
    }

    /// Polls `sockets` for input, up to `timeoutMilliseconds`; returns which are readable.
    public static func poll(_ sockets: [ZMQSocket], timeoutMilliseconds: Int) throws -> [Bool] {
        var items = try sockets.map { zmq_pollitem_t(socket: try $0.live(), fd: 0, events: Int16(ZMQ_POLLIN), revents: 0) }
        let rc = zmq_poll(&items, Int32(items.count), timeoutMilliseconds)
        guard rc >= 0 else { throw TransportError("zmq_poll") }
        return items.map { $0.revents & Int16(ZMQ_POLLIN) != 0 }
    }
}
