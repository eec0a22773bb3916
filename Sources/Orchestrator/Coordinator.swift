import ClusterRuntime
import Foundation
import Logging
import SwiftProtobuf
import Synchronization
import Transport
import Wire

/// The coordinator process's front door: a ROUTER socket that admits workers (REGISTER), tracks their
/// heartbeats and health (`Membership`, ticked every 100 ms), and answers status requests. Bad input
/// is answered with an ERROR naming the problem; the coordinator keeps serving.
public final class Coordinator: @unchecked Sendable {
    /// Settings of a coordinator.
    public struct Settings: Sendable {
        public var bind: String
        public var membership: Membership.Settings = .default
        /// The build workers must run (this executable's by default).
        public var buildHash: String = BuildIdentity.hash

        public init(bind: String) { self.bind = bind }
    }

    private final class State: @unchecked Sendable {
        var membership: Membership
        /// ROUTER identity of each worker id.
        var identities: [String: [UInt8]] = [:]
        var planStage = "idle"
        var badMessages = 0
        /// Work in flight: generate tasks by request id, results accepted once.
        var dispatcher = TaskDispatcher<Rlhf_V1_GenerateRequest>()
        var results: [UInt64: WireMessage] = [:]
        var failures: [UInt64: String] = [:]
        var nextRequestID: UInt64 = 1_000

        init(membership: Membership) { self.membership = membership }
    }

    /// The state, shared by the socket handler and the health timer.
    private final class Shared: Sendable {
        let state: Mutex<State>
        init(_ s: State) { state = Mutex(s) }
    }

    private let loop: PollLoop
    private let shared: Shared
    private let socket: PollLoop.SocketID
    /// Signalled whenever a task completes or fails.
    private let progress: DispatchSemaphore
    private let timer: DispatchSourceTimer
    private let logger: Logger
    /// The endpoint actually bound.
    public let endpoint: String

    /// Binds and starts serving.
    public init(settings: Settings, logger: Logger = Logger(label: "rlhf.coordinator")) throws {
        var tagged = logger
        tagged[metadataKey: "role"] = "coordinator"
        let logger = tagged
        self.logger = logger
        let loop = try PollLoop()
        self.loop = loop
        let shared = Shared(State(membership: Membership(protocolVersion: ProtocolVersion.current, buildHash: settings.buildHash,
                                                         settings: settings.membership)))
        self.shared = shared
        let socketBox = Mutex<PollLoop.SocketID?>(nil)
        let interval = settings.membership.heartbeatIntervalMilliseconds
        let progress = DispatchSemaphore(value: 0)
        self.progress = progress
        let (socket, bound) = try loop.open(.router, bind: [settings.bind]) { frames in
            guard let id = socketBox.withLock({ $0 }), frames.count >= 2 else { return }
            let identity = frames[0]
            if let reply = Coordinator.handle(Array(frames.dropFirst()), identity: identity, shared: shared,
                                              heartbeatInterval: interval, logger: logger, progress: progress) {
                loop.send(id, [identity] + reply)
            }
            Coordinator.pump(shared: shared, loop: loop, socket: id)
        }
        socketBox.withLock { $0 = socket }
        self.socket = socket
        endpoint = bound.first ?? settings.bind
        timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "rlhf.coordinator.health"))
        timer.schedule(deadline: .now(), repeating: .milliseconds(100))
        timer.setEventHandler {
            let changes = shared.state.withLock { s in
                let changes = s.membership.tick(now: BuildIdentity.now())
                for change in changes {
                    switch change.to {
                    case .dead:
                        let requeued = s.dispatcher.removeWorker(change.workerID)
                        if !requeued.isEmpty { logger.warning("re-dispatching tasks of a dead worker", metadata: ["worker": "\(change.workerID)", "tasks": "\(requeued.count)"]) }
                    case .suspect: s.dispatcher.pause(change.workerID)
                    case .healthy: s.dispatcher.resume(change.workerID)
                    }
                }
                return changes
            }
            for change in changes {
                logger.info("worker health changed", metadata: ["worker": "\(change.workerID)", "from": "\(change.from)", "to": "\(change.to)"])
            }
            if let id = socketBox.withLock({ $0 }) { Coordinator.pump(shared: shared, loop: loop, socket: id) }
        }
        timer.resume()
        logger.info("coordinator listening", metadata: ["endpoint": "\(endpoint)"])
    }

    /// Stops the health timer and the loop (closing the socket).
    public func shutdown() {
        timer.cancel()
        loop.shutdown()
    }

    /// A snapshot of the workers.
    public func workers() -> [Membership.Member] { shared.state.withLock { $0.membership.workers() } }

    static func reply(_ type: Rlhf_V1_MessageType, _ requestID: UInt64, _ body: some SwiftProtobuf.Message) -> [[UInt8]]? {
        try? WireMessage(type: type, requestID: requestID, body: body, sender: "coordinator").frames()
    }

    static func error(_ code: Rlhf_V1_ErrorCode, _ text: String, requestID: UInt64) -> [[UInt8]]? {
        WireMessage.errorFrames(code, text, requestID: requestID, sender: "coordinator")
    }

    /// Sends queued tasks to the workers the dispatcher picks.
    private static func pump(shared: Shared, loop: PollLoop, socket: PollLoop.SocketID) {
        let sends = shared.state.withLock { s -> [([UInt8], [[UInt8]])] in
            s.dispatcher.assign(now: BuildIdentity.now()).compactMap { a in
                guard let identity = s.identities[a.workerID],
                      let frames = try? WireMessage(type: .generateRequest, requestID: a.requestID, body: a.payload,
                                                    sender: "coordinator", policyVersion: a.payload.policyVersion).frames()
                else { return nil }
                return (identity, frames)
            }
        }
        for (identity, frames) in sends { loop.send(socket, [identity] + frames) }
    }

    /// Fans `request`'s prompts out over the generators, `promptsPerTask` prompts per task, and returns
    /// every sample exactly once, in prompt then sample order, with each sample's log-probabilities.
    /// Tasks of a generator that dies are re-dispatched; a late duplicate result is dropped.
    public func generate(_ request: Rlhf_V1_GenerateRequest, promptsPerTask: Int = 1, timeoutSeconds: Double = 300)
        throws -> [(sample: Rlhf_V1_Sample, logProbs: [Float])] {
        let chunks = stride(from: 0, to: request.prompts.count, by: max(1, promptsPerTask)).map {
            Array(request.prompts[$0 ..< min(request.prompts.count, $0 + max(1, promptsPerTask))])
        }
        let ids = shared.state.withLock { s -> [UInt64] in
            chunks.map { prompts in
                s.nextRequestID += 1
                var task = request
                task.prompts = prompts
                s.dispatcher.enqueue(requestID: s.nextRequestID, role: .generator, payload: task)
                return s.nextRequestID
            }
        }
        Coordinator.pump(shared: shared, loop: loop, socket: socket)
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while true {
            let (done, failure) = shared.state.withLock { s in
                (ids.allSatisfy { s.results[$0] != nil }, ids.compactMap { s.failures[$0] }.first)
            }
            if let failure { throw CoordinatorError.taskFailed(failure) }
            if done { break }
            if Date() > deadline { throw CoordinatorError.timeout(Int(timeoutSeconds)) }
            _ = progress.wait(timeout: .now() + 0.1)
        }
        let messages = shared.state.withLock { s in ids.map { s.results.removeValue(forKey: $0)! } }
        var out: [(Rlhf_V1_Sample, [Float])] = []
        for message in messages {
            let result = try message.decodeBody(Rlhf_V1_GenerateResult.self)
            let logprobs = message.tensor("logprobs")?.floats ?? []
            var cursor = 0
            for sample in result.samples {
                guard cursor + sample.ids.count <= logprobs.count else { throw CoordinatorError.taskFailed("log-probabilities missing in a result") }
                out.append((sample, Array(logprobs[cursor ..< cursor + sample.ids.count])))
                cursor += sample.ids.count
            }
        }
        return out
    }

    private static func handle(_ frames: [[UInt8]], identity: [UInt8], shared: Shared, heartbeatInterval: UInt64,
                               logger: Logger, progress: DispatchSemaphore) -> [[UInt8]]? {
        let state = shared
        let message: WireMessage
        do {
            message = try WireMessage.decode(frames)
        } catch let e as WireError {
            state.state.withLock { $0.badMessages += 1 }
            logger.warning("refused a message", metadata: ["reason": "\(e)"])
            let code: Rlhf_V1_ErrorCode = {
                switch e {
                case .versionMismatch: return .versionMismatch
                case .unknownType: return .unknownType
                case .envelopeChecksum, .bodyChecksum, .tensorChecksum: return .checksumMismatch
                default: return .badMessage
                }
            }()
            return error(code, e.description, requestID: 0)
        } catch {
            return Coordinator.error(.badMessage, "\(error)", requestID: 0)
        }
        do {
            switch message.type {
            case .register:
                let r = try message.decodeBody(Rlhf_V1_Register.self)
                var ack = Rlhf_V1_RegisterAck()
                ack.heartbeatIntervalMs = UInt32(heartbeatInterval)
                guard let role = WorkerRole(wire: r.role) else {
                    ack.accepted = false
                    ack.reason = "unknown role \(r.role)"
                    return reply(.registerAck, message.requestID, ack)
                }
                let registration = Membership.Registration(workerID: r.workerID, role: role, protocolVersion: r.protocolVersion,
                                                           buildHash: r.buildHash, policyVersion: r.policyVersion,
                                                           capacity: Int(r.capacity), host: r.host, pid: r.pid)
                do {
                    try state.state.withLock { s throws(Membership.Refusal) in
                        try s.membership.register(registration, now: BuildIdentity.now())
                        s.identities[r.workerID] = identity
                        // A generator runs one task at a time and holds the next one ready.
                        s.dispatcher.addWorker(r.workerID, role: role, capacity: 2)
                    }
                    ack.accepted = true
                    logger.info("worker registered", metadata: ["worker": "\(r.workerID)", "role": "\(role.rawValue)", "host": "\(r.host)"])
                } catch {
                    ack.accepted = false
                    ack.reason = error.description
                    logger.warning("registration refused", metadata: ["worker": "\(r.workerID)", "reason": "\(error)"])
                }
                return reply(.registerAck, message.requestID, ack)
            case .heartbeat:
                let h = try message.decodeBody(Rlhf_V1_Heartbeat.self)
                let known = state.state.withLock {
                    $0.membership.heartbeat(h.workerID, now: BuildIdentity.now(), policyVersion: h.policyVersion,
                                            tasksInFlight: Int(h.tasksInFlight))
                }
                if known { return nil }
                var ack = Rlhf_V1_RegisterAck()
                ack.accepted = false
                ack.reason = "unknown or dead worker \(h.workerID): register again"
                return reply(.registerAck, message.requestID, ack)
            case .generateResult:
                let accepted = state.state.withLock { s -> Bool in
                    guard case .accepted = s.dispatcher.complete(requestID: message.requestID, workerID: message.sender,
                                                                 now: BuildIdentity.now()) else { return false }
                    s.results[message.requestID] = message
                    return true
                }
                if !accepted { logger.debug("dropped a duplicate result", metadata: ["request": "\(message.requestID)"]) }
                progress.signal()
                return nil
            case .error:
                let e = (try? message.decodeBody(Rlhf_V1_Error.self)) ?? Rlhf_V1_Error()
                logger.warning("a worker reported an error", metadata: ["worker": "\(message.sender)", "error": "\(e.message)"])
                state.state.withLock { s in
                    if case .accepted = s.dispatcher.complete(requestID: message.requestID, workerID: message.sender, now: BuildIdentity.now()) {
                        s.failures[message.requestID] = "\(message.sender): \(e.message)"
                    }
                }
                progress.signal()
                return nil
            case .statusRequest:
                return reply(.statusReply, message.requestID, state.state.withLock { Coordinator.status($0) })
            default:
                return error(.unknownType, "the coordinator does not handle \(message.type)", requestID: message.requestID)
            }
        } catch {
            return Coordinator.error(.badMessage, "\(error)", requestID: message.requestID)
        }
    }

    private static func status(_ s: State) -> Rlhf_V1_StatusReply {
        var reply = Rlhf_V1_StatusReply()
        let now = BuildIdentity.now()
        reply.workers = s.membership.workers().map { m in
            var w = Rlhf_V1_WorkerStatus()
            w.role = m.registration.role.wire
            w.workerID = m.registration.workerID
            w.host = m.registration.host
            w.pid = m.registration.pid
            w.health = m.health.rawValue
            w.policyVersion = m.policyVersion
            w.tasksInFlight = UInt32(m.tasksInFlight)
            w.lastHeartbeatMs = now > m.lastHeartbeat ? now - m.lastHeartbeat : 0
            return w
        }
        reply.planStage = s.planStage
        reply.queueDepths = WorkerRole.allCases.compactMap { role in
            let depth = s.dispatcher.queueDepth(role)
            guard depth > 0 else { return nil }
            var q = Rlhf_V1_QueueDepth()
            q.queue = role.rawValue
            q.depth = UInt32(depth)
            return q
        }
        return reply
    }
}

/// Failures of the coordinator's plan steps.
public enum CoordinatorError: Error, CustomStringConvertible {
    case taskFailed(String)
    case timeout(Int)

    public var description: String {
        switch self {
        case let .taskFailed(reason): return "a task failed: \(reason)"
        case let .timeout(seconds): return "tasks not done within \(seconds) s"
        }
    }
}

