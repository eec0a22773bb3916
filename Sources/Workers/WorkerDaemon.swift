import ClusterRuntime
import Foundation
import Logging
import Synchronization
import Transport
import Wire

/// The process side of a worker: joins a coordinator (REGISTER with role, id, protocol version, build
/// hash, policy version, capacity, host, pid), heartbeats at the interval the coordinator asks for,
/// and registers again when the coordinator no longer knows it (a coordinator restart, or after being
/// declared dead). ZeroMQ reconnects the socket by itself when the coordinator goes away.
public final class WorkerDaemon: @unchecked Sendable {
    /// Who the worker is.
    public struct Settings: Sendable {
        public var role: WorkerRole
        public var workerID: String
        public var coordinator: String
        public var capacity: Int = 1
        public var policyVersion: UInt64 = 0

        public init(role: WorkerRole, workerID: String, coordinator: String) {
            self.role = role
            self.workerID = workerID
            self.coordinator = coordinator
        }
    }

    /// Registration outcome.
    public enum RegistrationError: Error, CustomStringConvertible {
        case refused(String)
        case timeout(String)

        public var description: String {
            switch self {
            case let .refused(reason): return "the coordinator refused this worker: \(reason)"
            case let .timeout(endpoint): return "no answer from the coordinator at \(endpoint)"
            }
        }
    }

    private final class State: @unchecked Sendable {
        var registered = false
        var refusal: String?
        var heartbeatMilliseconds: UInt32 = 500
        var nextRequestID: UInt64 = 1
    }

    public let settings: Settings
    private let loop: PollLoop
    private let socket: PollLoop.SocketID
    private let state = Mutex(State())
    private let firstAnswer = DispatchSemaphore(value: 0)
    private var timer: DispatchSourceTimer?
    private let logger: Logger
    /// Serves work messages (off the poll loop: compute must not stall the sockets); nil answers nothing.
    private let work: (@Sendable (WireMessage) throws -> WireMessage?)?
    private let workQueue = DispatchQueue(label: "rlhf.worker.compute")

    /// Connects and sends the first registration; `work` serves the role's requests.
    public init(settings: Settings, logger: Logger = Logger(label: "rlhf.worker"),
                work: (@Sendable (WireMessage) throws -> WireMessage?)? = nil) throws {
        self.settings = settings
        self.work = work
        var tagged = logger
        tagged[metadataKey: "role"] = "\(settings.role.rawValue)"
        tagged[metadataKey: "worker"] = "\(settings.workerID)"
        self.logger = tagged
        loop = try PollLoop()
        let box = Mutex<WorkerDaemon?>(nil)
        (socket, _) = try loop.open(.dealer, identity: Array(settings.workerID.utf8), connect: [settings.coordinator]) { frames in
            box.withLock { $0 }?.handle(frames)
        }
        box.withLock { $0 = self }
        sendRegistration()
    }

    private func nextID() -> UInt64 { state.withLock { s in s.nextRequestID += 1; return s.nextRequestID } }

    private func sendRegistration() {
        var r = Rlhf_V1_Register()
        r.role = settings.role.wire
        r.workerID = settings.workerID
        r.protocolVersion = ProtocolVersion.current
        r.buildHash = BuildIdentity.hash
        r.policyVersion = settings.policyVersion
        r.capacity = UInt32(settings.capacity)
        r.host = BuildIdentity.host
        r.pid = BuildIdentity.pid
        if let frames = try? WireMessage(type: .register, requestID: nextID(), body: r, sender: settings.workerID).frames() {
            loop.send(socket, frames)
        }
    }

    private func handle(_ frames: [[UInt8]]) {
        guard let message = try? WireMessage.decode(frames) else {
            logger.warning("dropped a malformed message from the coordinator")
            return
        }
        switch message.type {
        case .registerAck:
            guard let ack = try? message.decodeBody(Rlhf_V1_RegisterAck.self) else { return }
            let (wasRegistered, first) = state.withLock { s -> (Bool, Bool) in
                let was = s.registered
                let first = !s.registered && s.refusal == nil
                if ack.accepted {
                    s.registered = true
                    s.heartbeatMilliseconds = max(10, ack.heartbeatIntervalMs)
                } else if s.registered {
                    s.registered = false // the coordinator forgot us: register again below
                } else {
                    s.refusal = ack.reason
                }
                return (was, first)
            }
            if ack.accepted {
                logger.info("registered with the coordinator")
                if first { startHeartbeats(); firstAnswer.signal() }
            } else if wasRegistered {
                logger.info("the coordinator does not know this worker any more; registering again")
                sendRegistration()
            } else {
                logger.error("registration refused", metadata: ["reason": "\(ack.reason)"])
                firstAnswer.signal()
            }
        case .generateRequest, .scoreRequest, .referenceLogprobRequest, .trainBatch:
            guard let work else {
                reply(error: .unknownType, "a \(settings.role.rawValue) does not serve \(message.type)", to: message)
                return
            }
            workQueue.async { [self] in
                do {
                    if var answer = try work(message) {
                        answer.sender = settings.workerID
                        loop.send(socket, try answer.frames())
                    }
                } catch {
                    logger.warning("request failed", metadata: ["type": "\(message.type)", "error": "\(error)"])
                    reply(error: .invalidArgument, "\(error)", to: message)
                }
            }
        case .error:
            let text = (try? message.decodeBody(Rlhf_V1_Error.self).message) ?? ""
            logger.warning("the coordinator reported an error", metadata: ["error": "\(text)"])
        default:
            logger.debug("ignored a message", metadata: ["type": "\(message.type)"])
        }
    }

    private func reply(error code: Rlhf_V1_ErrorCode, _ text: String, to message: WireMessage) {
        if let frames = WireMessage.errorFrames(code, text, requestID: message.requestID, sender: settings.workerID) {
            loop.send(socket, frames)
        }
    }

    private func startHeartbeats() {
        let interval = state.withLock { Int($0.heartbeatMilliseconds) }
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "rlhf.worker.heartbeat"))
        timer.schedule(deadline: .now() + .milliseconds(interval), repeating: .milliseconds(interval))
        timer.setEventHandler { [weak self] in self?.sendHeartbeat() }
        timer.resume()
        self.timer = timer
    }

    private func sendHeartbeat() {
        var h = Rlhf_V1_Heartbeat()
        h.workerID = settings.workerID
        h.state = .idle
        h.policyVersion = settings.policyVersion
        if let frames = try? WireMessage(type: .heartbeat, requestID: nextID(), body: h, sender: settings.workerID).frames() {
            loop.send(socket, frames)
        }
    }

    /// Waits for the first answer to the registration.
    public func waitForRegistration(timeoutSeconds: Double = 30) throws {
        guard firstAnswer.wait(timeout: .now() + timeoutSeconds) == .success else {
            throw RegistrationError.timeout(settings.coordinator)
        }
        if let refusal = state.withLock({ $0.refusal }) { throw RegistrationError.refused(refusal) }
    }

    /// Stops heartbeats and closes the socket.
    public func shutdown() {
        timer?.cancel()
        loop.shutdown()
    }
}
