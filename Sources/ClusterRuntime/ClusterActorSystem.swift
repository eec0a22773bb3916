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

    /// The endpoint prefix of a role pool's address: "any worker of the role", routed by the hosting
    /// process's `CallRouter` (the coordinator's load balancer) instead of a socket of its own.
    public static let poolScheme = "pool:"

    /// The address of "a worker of `role`": calls to it go to whichever worker the router picks.
    public static func pool(_ role: WorkerRole) -> ClusterActorID { ClusterActorID(endpoint: poolScheme + role.rawValue, name: role.rawValue) }

    /// The role of a pool address; nil for an actor at an endpoint.
    public var poolRole: WorkerRole? {
        guard endpoint.hasPrefix(ClusterActorID.poolScheme) else { return nil }
        return WorkerRole(rawValue: String(endpoint.dropFirst(ClusterActorID.poolScheme.count)))
    }
}

/// A call on its way out: the actor addressed, the target (a mangled distributed function) and the
/// arguments as they travel.
public struct OutgoingCall: Sendable {
    public var actor: ClusterActorID
    public var target: String
    public var arguments: [WirePayload]
}

/// Carries calls addressed to a role pool (`ClusterActorID.pool`): picks a worker, sends the call,
/// re-sends it elsewhere if that worker dies, and returns the result once.
public protocol CallRouter: AnyObject, Sendable {
    /// The result of `call` (a failed call throws `RemoteCallError`).
    func route(_ call: OutgoingCall) async throws -> WirePayload
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
/// results are `WireCodable` Swift values (the serialization requirement): each a protobuf body carried
/// in the REMOTE_CALL or REMOTE_REPLY envelope, its tensors as raw frames beside it, all under CRC-32C
/// checks. Every call has a timeout; a thrown error comes back as
/// an error envelope. A peer's first call on a connection is a handshake carrying its protocol
/// version and build hash: a peer of another build is refused before any call runs.
///
/// Calls are served on the hosting process's poll loop (a task executor): published actors must answer
/// quickly and leave long work to other threads.
///
/// Actors are found through an explicit registry: `publish(_:as:)` gives an actor a well-known name
/// (e.g. "coordinator") that remote processes `resolve` with `ClusterActorID(endpoint:name:)`. A role
/// pool's address (`ClusterActorID.pool(role)`) names no process: its calls go to the `router`.
public final class ClusterActorSystem: DistributedActorSystem, @unchecked Sendable {
    public typealias ActorID = ClusterActorID
    public typealias SerializationRequirement = WireCodable
    public typealias InvocationEncoder = WireInvocationEncoder
    public typealias InvocationDecoder = WireInvocationDecoder
    public typealias ResultHandler = WireResultHandler

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
    /// Where calls to role pools go (set by the coordinator).
    private let router = Mutex<(any CallRouter)?>(nil)
    /// The serial executor the role actors hosted here run on (a worker hosts one role): off the poll
    /// loop and off the cooperative pool, since a call computes for seconds.
    public let computeExecutor = ComputeExecutor(label: "rlhf.actors.compute")

    /// Sends the calls addressed to role pools through `router` from now on.
    public func route(pools router: any CallRouter) { self.router.withLock { $0 = router } }

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
    public init(loop: PollLoop, serving socket: PollLoop.SocketID?, endpoint: String, buildHash: String = BuildIdentity.hash,
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

    public func makeInvocationEncoder() -> WireInvocationEncoder { WireInvocationEncoder() }

    public func remoteCall<Act, Err, Res>(on actor: Act, target: RemoteCallTarget, invocation: inout WireInvocationEncoder,
                                          throwing: Err.Type, returning: Res.Type) async throws -> Res
        where Act: DistributedActor, Act.ID == ClusterActorID, Err: Error, Res: WireCodable {
        let reply = try await call(actor.id, target: target.identifier, arguments: invocation.arguments)
        do {
            return try Res(wirePayload: reply)
        } catch {
            throw RemoteCallError.remote(code: .badMessage, message: "the reply of \(target.identifier) is not a \(Res.self): \(error)")
        }
    }

    public func remoteCallVoid<Act, Err>(on actor: Act, target: RemoteCallTarget, invocation: inout WireInvocationEncoder,
                                         throwing: Err.Type) async throws
        where Act: DistributedActor, Act.ID == ClusterActorID, Err: Error {
        _ = try await call(actor.id, target: target.identifier, arguments: invocation.arguments)
    }

    /// Sends one call (after the connection's handshake; through the router for a role pool) and returns
    /// the reply's value.
    private func call(_ id: ClusterActorID, target: String, arguments: [WirePayload]) async throws -> WirePayload {
        if id.poolRole != nil {
            guard let router = router.withLock({ $0 }) else {
                throw RemoteCallError.transport("no router for calls to \(id): only the coordinator reaches worker pools")
            }
            return try await router.route(OutgoingCall(actor: id, target: target, arguments: arguments))
        }
        let (socket, needsHandshake) = try connection(to: id.endpoint)
        if needsHandshake { try await handshake(socket, endpoint: id.endpoint) }
        do {
            return try await exchange(socket, endpoint: id.endpoint, actor: id.name, target: target, arguments: arguments)
        } catch let RemoteCallError.remote(code, message) where code == .versionMismatch && message.hasPrefix(ClusterActorSystem.noHandshake) {
            // The connection was made anew under the socket (ZeroMQ reconnects after a cut link or missed
            // heartbeats, and the peer sees a new identity): the peer refused the call unrun, so shake
            // hands again and send it once more.
            try await handshake(socket, endpoint: id.endpoint)
            return try await exchange(socket, endpoint: id.endpoint, actor: id.name, target: target, arguments: arguments)
        }
    }

    /// The first call on a connection: this process's protocol version and build, which the peer checks
    /// before it serves anything else from the connection.
    private func handshake(_ socket: PollLoop.SocketID, endpoint: String) async throws {
        var hello = Rlhf_V1_Register()
        hello.protocolVersion = ProtocolVersion.current
        hello.buildHash = buildHash
        hello.role = .unspecified
        _ = try await exchange(socket, endpoint: endpoint, actor: "", target: ClusterActorSystem.handshakeTarget,
                               arguments: [try hello.wirePayload()])
        pending.withLock { _ = $0.shaken.insert(endpoint) }
    }

    /// How a peer's refusal of a call on a connection that made no handshake begins.
    static let noHandshake = "no handshake on this connection"

    /// A REMOTE_CALL message for `actor`'s `target` with `arguments`: their bodies in the call, their
    /// tensors as frames named `argument-index/name`.
    public static func callMessage(actor: String, target: String, arguments: [WirePayload], timeoutMilliseconds: Int, requestID: UInt64) throws -> WireMessage {
        var call = Rlhf_V1_RemoteCall()
        call.actorID = actor
        call.target = target
        call.arguments = arguments.map { Data($0.body) }
        call.timeoutMs = UInt32(clamping: timeoutMilliseconds)
        let tensors = arguments.enumerated().flatMap { index, argument in
            argument.tensors.map { t -> WireTensor in
                var named = t
                named.name = "\(index)/\(t.name)"
                return named
            }
        }
        return try WireMessage(type: .remoteCall, requestID: requestID, body: call, tensors: tensors)
    }

    /// The error a REMOTE_REPLY (or ERROR) carries; nil for a value.
    public static func replyError(_ message: WireMessage) throws -> RemoteCallError? {
        do {
            _ = try replyValue(message)
            return nil
        } catch let error as RemoteCallError {
            return error
        }
    }

    /// The value of a REMOTE_REPLY (its body's value and the message's tensors), or the error it carries.
    public static func replyValue(_ message: WireMessage) throws -> WirePayload {
        switch message.type {
        case .remoteReply:
            let answer = try message.decodeBody(Rlhf_V1_RemoteReply.self)
            switch answer.result {
            case let .value(bytes): return WirePayload(body: Array(bytes), tensors: message.tensors)
            case let .error(e): throw RemoteCallError.remote(code: e.code, message: e.message)
            case nil: return WirePayload(body: [], tensors: message.tensors)
            }
        case .error:
            let e = try message.decodeBody(Rlhf_V1_Error.self)
            throw RemoteCallError.remote(code: e.code, message: e.message)
        default:
            throw RemoteCallError.remote(code: .unknownType, message: "a call was answered with \(message.type), not REMOTE_REPLY")
        }
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

    private func exchange(_ socket: PollLoop.SocketID, endpoint: String, actor: String, target: String, arguments: [WirePayload]) async throws -> WirePayload {
        let requestID = pending.withLock { p -> UInt64 in p.nextRequestID += 1; return p.nextRequestID }
        let frames = try ClusterActorSystem.callMessage(actor: actor, target: target, arguments: arguments,
                                                        timeoutMilliseconds: callTimeoutMilliseconds, requestID: requestID).frames()
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
        return try ClusterActorSystem.replyValue(reply)
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
                send(to: peer, ClusterActorSystem.reply(message.requestID, .value(Data())))
            } else {
                let reason = hello.map { "peer runs protocol \($0.protocolVersion) build \($0.buildHash); this process runs protocol \(ProtocolVersion.current) build \(buildHash)" }
                    ?? "malformed handshake"
                send(to: peer, ClusterActorSystem.reply(message.requestID, .error(Self.error(.versionMismatch, reason, message.requestID))))
            }
            return
        }
        guard pending.withLock({ $0.trustedPeers.contains(peer) }) else {
            send(to: peer, ClusterActorSystem.reply(message.requestID, .error(Self.error(
                .versionMismatch, "\(ClusterActorSystem.noHandshake): call \(ClusterActorSystem.handshakeTarget) first", message.requestID))))
            return
        }
        // Served on the poll loop itself (no hop to the global pool, which a blocked caller may hold):
        // actors published here answer quickly, or run on an executor of their own.
        Task(executorPreference: loop) { [self] in
            send(to: peer, await answer(call, tensors: message.tensors, requestID: message.requestID))
        }
    }

    /// Runs a REMOTE_CALL addressed to an actor of this process and returns its REMOTE_REPLY (the value,
    /// or an error naming what went wrong). For a peer already trusted: a worker serves the calls its
    /// coordinator sends over the worker's own connection (admitted by registration, which checks the build).
    public func answer(_ message: WireMessage) async -> WireMessage {
        guard message.type == .remoteCall, let call = try? message.decodeBody(Rlhf_V1_RemoteCall.self) else {
            return ClusterActorSystem.reply(message.requestID, .error(Self.error(.badMessage, "not a REMOTE_CALL: \(message.type)", message.requestID)))
        }
        return await answer(call, tensors: message.tensors, requestID: message.requestID)
    }

    private func answer(_ call: Rlhf_V1_RemoteCall, tensors: [WireTensor], requestID: UInt64) async -> WireMessage {
        guard let actor = localActor(named: call.actorID) else {
            return ClusterActorSystem.reply(requestID, .error(Self.error(.unknownActor, "no actor named \(call.actorID) at \(endpoint)", requestID)))
        }
        // Argument i's tensors travel as "i/name".
        var perArgument = [[WireTensor]](repeating: [], count: call.arguments.count)
        for t in tensors {
            guard let slash = t.name.firstIndex(of: "/"), let index = Int(t.name[..<slash]), perArgument.indices.contains(index) else {
                return ClusterActorSystem.reply(requestID, .error(Self.error(.badMessage, "tensor \(t.name) names no argument of the call", requestID)))
            }
            var own = t
            own.name = String(t.name[t.name.index(after: slash)...])
            perArgument[index].append(own)
        }
        var decoder = WireInvocationDecoder(arguments: zip(call.arguments, perArgument).map { WirePayload(body: Array($0), tensors: $1) })
        let handler = WireResultHandler()
        do {
            try await executeDistributedTarget(on: actor, target: RemoteCallTarget(call.target), invocationDecoder: &decoder, handler: handler)
            return handler.reply(requestID: requestID)
        } catch {
            return ClusterActorSystem.reply(requestID, .error(Self.error(.invalidArgument, "\(error)", requestID)))
        }
    }

    /// A REMOTE_REPLY with `result` and, for a value, its tensors.
    static func reply(_ requestID: UInt64, _ result: Rlhf_V1_RemoteReply.OneOf_Result, tensors: [WireTensor] = []) -> WireMessage {
        var answer = Rlhf_V1_RemoteReply()
        answer.result = result
        return (try? WireMessage(type: .remoteReply, requestID: requestID, body: answer, tensors: tensors))
            ?? WireMessage(type: .remoteReply, requestID: requestID, rawBody: [])
    }

    private static func error(_ code: Rlhf_V1_ErrorCode, _ message: String, _ requestID: UInt64) -> Rlhf_V1_Error {
        var e = Rlhf_V1_Error()
        e.code = code
        e.message = message
        e.requestID = requestID
        return e
    }

    private func send(to peer: [UInt8], _ reply: WireMessage) {
        guard let server, let frames = try? reply.frames() else { return }
        loop.send(server, [peer] + frames)
    }
}

/// Records a call's arguments as they travel.
public struct WireInvocationEncoder: DistributedTargetInvocationEncoder {
    public typealias SerializationRequirement = WireCodable
    /// The arguments, in order.
    public private(set) var arguments: [WirePayload] = []

    public mutating func recordGenericSubstitution<T>(_ type: T.Type) throws {
        throw RemoteCallError.transport("generic distributed functions are not supported")
    }

    public mutating func recordArgument<Value: WireCodable>(_ argument: RemoteCallArgument<Value>) throws {
        arguments.append(try argument.value.wirePayload())
    }

    public mutating func recordErrorType<E: Error>(_ type: E.Type) throws {}
    public mutating func recordReturnType<R: WireCodable>(_ type: R.Type) throws {}
    public mutating func doneRecording() throws {}
}

/// Reads a call's arguments back, each as the type the target declares.
public struct WireInvocationDecoder: DistributedTargetInvocationDecoder {
    public typealias SerializationRequirement = WireCodable
    private let arguments: [WirePayload]
    private var next = 0

    init(arguments: [WirePayload]) { self.arguments = arguments }

    public mutating func decodeGenericSubstitutions() throws -> [Any.Type] { [] }

    public mutating func decodeNextArgument<Argument: WireCodable>() throws -> Argument {
        guard next < arguments.count else {
            throw RemoteCallError.remote(code: .invalidArgument, message: "the call has \(arguments.count) arguments, the target wants more")
        }
        defer { next += 1 }
        do {
            return try Argument(wirePayload: arguments[next])
        } catch {
            throw RemoteCallError.remote(code: .badMessage, message: "argument \(next + 1) is not a \(Argument.self): \(error)")
        }
    }

    public mutating func decodeErrorType() throws -> Any.Type? { nil }
    public mutating func decodeReturnType() throws -> Any.Type? { nil }
}

/// Captures a served call's outcome for the reply envelope.
public final class WireResultHandler: DistributedTargetInvocationResultHandler, @unchecked Sendable {
    public typealias SerializationRequirement = WireCodable
    private enum Outcome {
        case value(WirePayload)
        case error(Rlhf_V1_Error)
    }
    private var outcome: Outcome?

    public func onReturn<Success: WireCodable>(value: Success) async throws {
        outcome = .value(try value.wirePayload())
    }

    public func onReturnVoid() async throws { outcome = .value(WirePayload(body: [])) }

    public func onThrow<Err: Error>(error: Err) async throws {
        var e = Rlhf_V1_Error()
        e.code = .internal
        e.message = "\(error)"
        outcome = .error(e)
    }

    /// The REMOTE_REPLY for the outcome.
    func reply(requestID: UInt64) -> WireMessage {
        switch outcome {
        case let .value(value)?: return ClusterActorSystem.reply(requestID, .value(Data(value.body)), tensors: value.tensors)
        case var .error(e)?:
            e.requestID = requestID
            return ClusterActorSystem.reply(requestID, .error(e))
        case nil:
            var e = Rlhf_V1_Error()
            e.code = .internal
            e.message = "no result"
            e.requestID = requestID
            return ClusterActorSystem.reply(requestID, .error(e))
        }
    }
}
