import Distributed
import Foundation
import LlamaCore
import SwiftProtobuf
import Synchronization
import Transport
import Wire

/// A distributed actor's address: the ROUTER endpoint of the process hosting it and its name in
/// that process's registry.
public struct ClusterActorID: Hashable, Sendable, Codable, CustomStringConvertible {
    /// `tcp://HOST:PORT` of the hosting process.
    public var endpoint: String
    /// The actor's registered name (well-known names like "coordinator", or "actor-N").
    public var name: String

    public init(endpoint: String, name: String) {
        self.endpoint = endpoint
        self.name = name
    }

    public var description: String { "\(name)@\(endpoint)" }
}

/// Why a remote call failed.
public enum RemoteCallError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No reply within the call's timeout.
    case timeout(target: String, milliseconds: Int)
    /// The peer answered with an error envelope.
    case remote(code: Rlhf_V1_ErrorCode, message: String)
    /// The call could not be sent or its reply not read.
    case transport(String)

    public var description: String {
        switch self {
        case let .timeout(target, ms): return "remote call \(target) timed out after \(ms) ms"
        case let .remote(code, message): return "remote call failed (\(code)): \(message)"
        case let .transport(reason): return "remote call transport: \(reason)"
        }
    }
}

/// A `DistributedActorSystem` over the project's ZeroMQ transport and wire format. Arguments and
/// results are protobuf messages (the serialization requirement), carried in REMOTE_CALL and
/// REMOTE_REPLY envelopes with CRC-32C checks. Every call has a timeout; a thrown error comes back as
/// an error envelope. A peer's first call on a connection is a handshake carrying its protocol
/// version and build hash: a peer of another build is refused before any call runs.
///
/// Calls are served on the hosting process's poll loop (a task executor): published actors must answer
/// quickly and leave long work to other threads.
///
/// Actors are found through an explicit registry: `publish(_:as:)` gives an actor a well-known name
/// (e.g. "coordinator") that remote processes `resolve` with `ClusterActorID(endpoint:name:)`.
public final class ClusterActorSystem: DistributedActorSystem, @unchecked Sendable {
    public typealias ActorID = ClusterActorID
    public typealias SerializationRequirement = SwiftProtobuf.Message
    public typealias InvocationEncoder = ProtoInvocationEncoder
    public typealias InvocationDecoder = ProtoInvocationDecoder
    public typealias ResultHandler = ProtoResultHandler

    /// The target name of the handshake call.
    static let handshakeTarget = "rlhf.handshake"

    private let loop: PollLoop
    /// Whether `loop` belongs to this system (and is shut down with it).
    private let ownsLoop: Bool
    /// The endpoint this system's actors are reachable at ("" for a client-only system).
    public let endpoint: String
    private let server: PollLoop.SocketID?
    private let buildHash: String
    /// Milliseconds a call waits for its reply.
    public let callTimeoutMilliseconds: Int
    /// CURVE client keys for outgoing connections, if the cluster is encrypted.
    private let curve: Curve?
    /// Sweeps calls past their deadline every 10 ms.
    private let timeoutTimer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "rlhf.actors.timeouts"))

    private final class Registry: @unchecked Sendable {
        var actors: [String: any DistributedActor] = [:]
        var aliases: [String: String] = [:]
        var nextName = 0
    }
    private let registry = Mutex(Registry())

    private final class Pending: @unchecked Sendable {
        var calls: [UInt64: (continuation: CheckedContinuation<WireMessage, Error>, deadline: UInt64, target: String, endpoint: String)] = [:]
        var connections: [String: PollLoop.SocketID] = [:]
        /// Endpoints whose security handshake failed, and what to tell the caller: calls to them fail at once.
        var refused: [String: String] = [:]
        /// Endpoints whose handshake succeeded.
        var shaken: Set<String> = []
        /// ROUTER identities of peers that completed the handshake.
        var trustedPeers: Set<[UInt8]> = []
        var nextRequestID: UInt64 = 0
    }
    private let pending = Mutex(Pending())

    /// A system with its own poll loop. With `bind` (e.g. `tcp://127.0.0.1:*`) it serves calls to this
    /// process's actors there; without, it only makes calls.
    /// `curve` (client keys) encrypts the connections this system opens to other processes.
    public init(bind: String?, buildHash: String = BuildIdentity.hash, callTimeoutMilliseconds: Int = 5_000, curve: Curve? = nil) throws {
        self.curve = curve
        loop = try PollLoop()
        ownsLoop = true
        self.buildHash = buildHash
        self.callTimeoutMilliseconds = callTimeoutMilliseconds
        guard let bind else {
            server = nil
            endpoint = ""
            startTimeouts()
            return
        }
        let box = Mutex<ClusterActorSystem?>(nil)
        let (server, bound) = try loop.open(.router, bind: [bind]) { frames in
            box.withLock { $0 }?.serve(frames)
        }
        self.server = server
        endpoint = bound.first ?? bind
        box.withLock { $0 = self }
        startTimeouts()
    }

    private func startTimeouts() {
        timeoutTimer.schedule(deadline: .now() + .milliseconds(10), repeating: .milliseconds(10))
        timeoutTimer.setEventHandler { [weak self] in self?.expireCalls() }
        timeoutTimer.resume()
    }

    /// A system sharing a process's existing ROUTER socket (bound at `endpoint` on `loop`): the socket's
    /// owner hands REMOTE_CALL messages to `serve(_:)`, so one port serves both.
    public init(loop: PollLoop, serving socket: PollLoop.SocketID, endpoint: String, buildHash: String = BuildIdentity.hash,
                callTimeoutMilliseconds: Int = 5_000) {
        self.loop = loop
        ownsLoop = false
        server = socket
        self.endpoint = endpoint
        self.buildHash = buildHash
        self.callTimeoutMilliseconds = callTimeoutMilliseconds
        curve = nil
        startTimeouts()
    }

    /// The system's poll loop as a task executor: a caller making many small calls can run on it
    /// (`withTaskExecutorPreference`), so sends and replies need no hop between threads.
    public var taskExecutor: any TaskExecutor { loop }

    /// Closes every socket; calls in flight fail.
    public func shutdown() {
        timeoutTimer.cancel()
        let calls = pending.withLock { p -> [CheckedContinuation<WireMessage, Error>] in
            defer { p.calls.removeAll() }
            return p.calls.values.map(\.continuation)
        }
        for call in calls { call.resume(throwing: RemoteCallError.transport("actor system shut down")) }
        if ownsLoop {
            loop.shutdown()
        } else {
            for socket in pending.withLock({ Array($0.connections.values) }) { loop.close(socket) }
        }
    }

    // MARK: - Registry

    public func assignID<Act>(_ actorType: Act.Type) -> ClusterActorID where Act: DistributedActor, Act.ID == ClusterActorID {
        registry.withLock { r in
            r.nextName += 1
            return ClusterActorID(endpoint: endpoint, name: "actor-\(r.nextName)")
        }
    }

    public func actorReady<Act>(_ actor: Act) where Act: DistributedActor, Act.ID == ClusterActorID {
        registry.withLock { $0.actors[actor.id.name] = actor }
    }

    public func resignID(_ id: ClusterActorID) {
        registry.withLock { r in
            r.actors[id.name] = nil
            r.aliases = r.aliases.filter { $0.value != id.name }
        }
    }

    /// Makes a local actor reachable under `name` as well (its well-known address); returns that address.
    @discardableResult
    public func publish<Act>(_ actor: Act, as name: String) -> ClusterActorID where Act: DistributedActor, Act.ID == ClusterActorID {
        registry.withLock { $0.aliases[name] = actor.id.name }
        return ClusterActorID(endpoint: endpoint, name: name)
    }

    public func resolve<Act>(id: ClusterActorID, as actorType: Act.Type) throws -> Act? where Act: DistributedActor, Act.ID == ClusterActorID {
        guard id.endpoint == endpoint else { return nil } // remote: the runtime makes a proxy
        return registry.withLock { r in
            r.actors[r.aliases[id.name] ?? id.name] as? Act
        }
    }

    private func localActor(named name: String) -> (any DistributedActor)? {
        registry.withLock { r in r.actors[r.aliases[name] ?? name] }
    }

    // MARK: - Calls

    public func makeInvocationEncoder() -> ProtoInvocationEncoder { ProtoInvocationEncoder() }

    public func remoteCall<Act, Err, Res>(on actor: Act, target: RemoteCallTarget, invocation: inout ProtoInvocationEncoder,
                                          throwing: Err.Type, returning: Res.Type) async throws -> Res
        where Act: DistributedActor, Act.ID == ClusterActorID, Err: Error, Res: SwiftProtobuf.Message {
        let reply = try await call(actor.id, target: target.identifier, arguments: invocation.arguments)
        return try Res(serializedBytes: reply)
    }

    public func remoteCallVoid<Act, Err>(on actor: Act, target: RemoteCallTarget, invocation: inout ProtoInvocationEncoder,
                                         throwing: Err.Type) async throws
        where Act: DistributedActor, Act.ID == ClusterActorID, Err: Error {
        _ = try await call(actor.id, target: target.identifier, arguments: invocation.arguments)
    }

    /// Sends one call (after the connection's handshake) and returns the reply's value bytes.
    private func call(_ id: ClusterActorID, target: String, arguments: [[UInt8]]) async throws -> [UInt8] {
        let (socket, needsHandshake) = try connection(to: id.endpoint)
        if needsHandshake {
            var hello = Rlhf_V1_Register()
            hello.protocolVersion = ProtocolVersion.current
            hello.buildHash = buildHash
            hello.role = .unspecified
            _ = try await exchange(socket, endpoint: id.endpoint, actor: "", target: ClusterActorSystem.handshakeTarget,
                                   arguments: [try hello.serializedBytes()])
            pending.withLock { _ = $0.shaken.insert(id.endpoint) }
        }
        return try await exchange(socket, endpoint: id.endpoint, actor: id.name, target: target, arguments: arguments)
    }

    private func connection(to endpoint: String) throws -> (PollLoop.SocketID, Bool) {
        if let known = pending.withLock({ p in p.connections[endpoint].map { ($0, !p.shaken.contains(endpoint)) } }) { return known }
        let box = Mutex<ClusterActorSystem?>(self)
        var settings = SocketSettings.default
        settings.curve = curve
        let (socket, _) = try loop.open(.dealer, settings: settings, connect: [endpoint],
                                        events: { event in box.withLock { $0 }?.connectionEvent(event, endpoint: endpoint) }) { frames in
            box.withLock { $0 }?.receiveReply(frames)
        }
        return pending.withLock { p in
            if let raced = p.connections[endpoint] {
                loop.close(socket)
                return (raced, !p.shaken.contains(endpoint))
            }
            p.connections[endpoint] = socket
            return (socket, true)
        }
    }

    /// A failed security handshake fails the calls waiting on that endpoint with what is wrong (they would
    /// otherwise wait out their timeout, or fail with libzmq's "Resource temporarily unavailable").
    private func connectionEvent(_ event: SocketEvent, endpoint: String) {
        guard case let .handshakeFailed(failure) = event.kind else { return }
        var publicKey: String?
        if case let .client(_, key, _)? = curve { publicKey = key }
        let reason = SocketEvent.explain(failure, peer: endpoint, clientUsesCurve: curve != nil, clientPublicKey: publicKey)
        let failed = pending.withLock { p -> [CheckedContinuation<WireMessage, Error>] in
            p.refused[endpoint] = reason
            let ids = p.calls.filter { $0.value.endpoint == endpoint }.map(\.key)
            return ids.compactMap { p.calls.removeValue(forKey: $0)?.continuation }
        }
        for continuation in failed { continuation.resume(throwing: RemoteCallError.transport(reason)) }
    }

    private func exchange(_ socket: PollLoop.SocketID, endpoint: String, actor: String, target: String, arguments: [[UInt8]]) async throws -> [UInt8] {
        var call = Rlhf_V1_RemoteCall()
        call.actorID = actor
        call.target = target
        call.arguments = arguments.map { Data($0) }
        call.timeoutMs = UInt32(callTimeoutMilliseconds)
        let requestID = pending.withLock { p -> UInt64 in p.nextRequestID += 1; return p.nextRequestID }
        let frames = try WireMessage(type: .remoteCall, requestID: requestID, body: call).frames()
        let timeout = callTimeoutMilliseconds
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(timeout) * 1_000_000
        let reply: WireMessage = try await withCheckedThrowingContinuation { continuation in
            let refused = pending.withLock { p -> String? in
                if let reason = p.refused[endpoint] { return reason }
                p.calls[requestID] = (continuation, deadline, target, endpoint)
                return nil
            }
            if let refused {
                continuation.resume(throwing: RemoteCallError.transport(refused))
                return
            }
            loop.send(socket, frames) { [self] error in
                // No connection to queue on yet (its handshake may be failing): the call waits for the
                // handshake's outcome or its timeout instead of failing with "Resource temporarily unavailable".
                if let transport = error as? TransportError, transport.wouldBlock { return }
                self.finish(requestID, .failure(RemoteCallError.transport("\(error)")))
            }
        }
        let answer = try reply.decodeBody(Rlhf_V1_RemoteReply.self)
        switch answer.result {
        case let .value(bytes): return Array(bytes)
        case let .error(e): throw RemoteCallError.remote(code: e.code, message: e.message)
        case nil: return []
        }
    }

    private func finish(_ requestID: UInt64, _ result: Result<WireMessage, Error>) {
        guard let call = pending.withLock({ $0.calls.removeValue(forKey: requestID) }) else { return }
        call.continuation.resume(with: result)
    }

    /// Fails the calls past their deadline (run by `timeoutTimer` on a dispatch queue, not a task: the
    /// timeout must fire even when the cooperative pool is busy).
    private func expireCalls() {
        let now = DispatchTime.now().uptimeNanoseconds
        let expired = pending.withLock { p -> [(CheckedContinuation<WireMessage, Error>, String)] in
            let ids = p.calls.filter { $0.value.deadline <= now }.map(\.key)
            return ids.map { id in let call = p.calls.removeValue(forKey: id)!; return (call.continuation, call.target) }
        }
        for (continuation, target) in expired {
            continuation.resume(throwing: RemoteCallError.timeout(target: target, milliseconds: callTimeoutMilliseconds))
        }
    }

    private func receiveReply(_ frames: [[UInt8]]) {
        guard let message = try? WireMessage.decode(frames) else { return } // corrupt: the call times out
        switch message.type {
        case .remoteReply: finish(message.requestID, .success(message))
        case .error:
            let e = (try? message.decodeBody(Rlhf_V1_Error.self)) ?? Rlhf_V1_Error()
            finish(message.requestID, .failure(RemoteCallError.remote(code: e.code, message: e.message)))
        default: break
        }
    }

    // MARK: - Serving

    /// Handles one message `[peer identity, frames...]` from the server socket (on the poll-loop
    /// thread): the handshake inline, calls on a task.
    public func serve(_ frames: [[UInt8]]) {
        guard frames.count >= 2, let server else { return }
        let peer = frames[0]
        let message: WireMessage
        do {
            message = try WireMessage.decode(Array(frames.dropFirst()))
        } catch {
            if let reply = WireMessage.errorFrames(.badMessage, "\(error)", requestID: 0) { loop.send(server, [peer] + reply) }
            return
        }
        guard message.type == .remoteCall, let call = try? message.decodeBody(Rlhf_V1_RemoteCall.self) else {
            if let reply = WireMessage.errorFrames(.unknownType, "the actor system serves REMOTE_CALL, not \(message.type)",
                                                   requestID: message.requestID) { loop.send(server, [peer] + reply) }
            return
        }
        if call.target == ClusterActorSystem.handshakeTarget {
            let hello = call.arguments.first.flatMap { try? Rlhf_V1_Register(serializedBytes: $0) }
            if let hello, hello.protocolVersion == ProtocolVersion.current, hello.buildHash == buildHash {
                pending.withLock { _ = $0.trustedPeers.insert(peer) }
                reply(to: peer, requestID: message.requestID, .value(Data()))
            } else {
                let reason = hello.map { "peer runs protocol \($0.protocolVersion) build \($0.buildHash); this process runs protocol \(ProtocolVersion.current) build \(buildHash)" }
                    ?? "malformed handshake"
                reply(to: peer, requestID: message.requestID, .error(Self.error(.versionMismatch, reason, message.requestID)))
            }
            return
        }
        guard pending.withLock({ $0.trustedPeers.contains(peer) }) else {
            reply(to: peer, requestID: message.requestID,
                  .error(Self.error(.versionMismatch, "no handshake on this connection: call \(ClusterActorSystem.handshakeTarget) first", message.requestID)))
            return
        }
        guard let actor = localActor(named: call.actorID) else {
            reply(to: peer, requestID: message.requestID, .error(Self.error(.unknownActor, "no actor named \(call.actorID) at \(endpoint)", message.requestID)))
            return
        }
        let requestID = message.requestID
        // Served on the poll loop itself (no hop to the global pool, which a blocked caller may hold):
        // actors published here must answer quickly.
        Task(executorPreference: loop) { [self] in
            var decoder = ProtoInvocationDecoder(arguments: call.arguments.map { Array($0) })
            let handler = ProtoResultHandler()
            do {
                try await executeDistributedTarget(on: actor, target: RemoteCallTarget(call.target), invocationDecoder: &decoder, handler: handler)
                reply(to: peer, requestID: requestID, handler.outcome ?? .error(Self.error(.internal, "no result", requestID)))
            } catch {
                reply(to: peer, requestID: requestID, .error(Self.error(.invalidArgument, "\(error)", requestID)))
            }
        }
    }

    private static func error(_ code: Rlhf_V1_ErrorCode, _ message: String, _ requestID: UInt64) -> Rlhf_V1_Error {
        var e = Rlhf_V1_Error()
        e.code = code
        e.message = message
        e.requestID = requestID
        return e
    }

    private func reply(to peer: [UInt8], requestID: UInt64, _ result: Rlhf_V1_RemoteReply.OneOf_Result) {
        guard let server else { return }
        var answer = Rlhf_V1_RemoteReply()
        answer.result = result
        guard let frames = try? WireMessage(type: .remoteReply, requestID: requestID, body: answer).frames() else { return }
        loop.send(server, [peer] + frames)
    }
}

/// Records a call's arguments as serialized protobuf messages.
public struct ProtoInvocationEncoder: DistributedTargetInvocationEncoder {
    public typealias SerializationRequirement = SwiftProtobuf.Message
    /// The serialized arguments, in order.
    public private(set) var arguments: [[UInt8]] = []

    public mutating func recordGenericSubstitution<T>(_ type: T.Type) throws {
        throw RemoteCallError.transport("generic distributed functions are not supported")
    }

    public mutating func recordArgument<Value: SwiftProtobuf.Message>(_ argument: RemoteCallArgument<Value>) throws {
        arguments.append(try argument.value.serializedBytes())
    }

    public mutating func recordErrorType<E: Error>(_ type: E.Type) throws {}
    public mutating func recordReturnType<R: SwiftProtobuf.Message>(_ type: R.Type) throws {}
    public mutating func doneRecording() throws {}
}

/// Reads a call's arguments back, each parsed as the type the target declares.
public struct ProtoInvocationDecoder: DistributedTargetInvocationDecoder {
    public typealias SerializationRequirement = SwiftProtobuf.Message
    private let arguments: [[UInt8]]
    private var next = 0

    init(arguments: [[UInt8]]) { self.arguments = arguments }

    public mutating func decodeGenericSubstitutions() throws -> [Any.Type] { [] }

    public mutating func decodeNextArgument<Argument: SwiftProtobuf.Message>() throws -> Argument {
        guard next < arguments.count else {
            throw RemoteCallError.remote(code: .invalidArgument, message: "the call has \(arguments.count) arguments, the target wants more")
        }
        defer { next += 1 }
        do {
            return try Argument(serializedBytes: arguments[next])
        } catch {
            throw RemoteCallError.remote(code: .badMessage, message: "argument \(next + 1) is not a \(Argument.protoMessageName): \(error)")
        }
    }

    public mutating func decodeErrorType() throws -> Any.Type? { nil }
    public mutating func decodeReturnType() throws -> Any.Type? { nil }
}

/// Captures a served call's outcome for the reply envelope.
public final class ProtoResultHandler: DistributedTargetInvocationResultHandler, @unchecked Sendable {
    public typealias SerializationRequirement = SwiftProtobuf.Message
    private(set) var outcome: Rlhf_V1_RemoteReply.OneOf_Result?

    public func onReturn<Success: SwiftProtobuf.Message>(value: Success) async throws {
        outcome = .value(Data(try value.serializedBytes() as [UInt8]))
    }

    public func onReturnVoid() async throws { outcome = .value(Data()) }

    public func onThrow<Err: Error>(error: Err) async throws {
        var e = Rlhf_V1_Error()
        e.code = .internal
        e.message = "\(error)"
        outcome = .error(e)
    }
}
