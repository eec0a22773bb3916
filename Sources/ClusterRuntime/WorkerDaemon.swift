import Distributed
import Foundation
import LlamaCore
import Logging
import Synchronization
import Transport
import Wire

/// The process side of a worker: joins a coordinator (REGISTER with role, id, protocol version, build
/// hash, policy version, capacity, host, pid), heartbeats at the interval the coordinator asks for
/// (with its policy version, weights checksum and tokens processed), and registers again when the
/// coordinator no longer knows it (a coordinator restart, or after being declared dead). ZeroMQ
/// reconnects the socket by itself when the coordinator goes away, backing off up to 1 s.
///
/// The role's distributed actor (made by its `RoleService`) is hosted on the daemon's actor system:
/// the coordinator's calls (REMOTE_CALL over this connection, admitted by the registration, which
/// checks the build) run on its compute queue, off the socket thread. WEIGHT_ANNOUNCEs go to that
/// queue too: the daemon fetches the announced version from its source, verifies it, installs it
/// between two calls and reports the new version at once. A call asked again under the same request
/// id with the same content (a coordinator restarted before it journaled the answer, or one that declared
/// the worker dead mid-call and gave the call back to it) is answered with the answer given, or about to
/// be given, not run twice: a learner step is taken once (`CallLedger`). `drain()` stops taking work, finishes
/// what is in flight and says goodbye (SHUTDOWN) so the coordinator forgets the worker cleanly.
public final class WorkerDaemon: @unchecked Sendable {
    /// Who the worker is.
    public struct Settings: Sendable, Codable {
        public var role: WorkerRole
        public var workerID: String
        public var coordinator: String
        public var capacity: Int = 1
        /// CURVE keys for the connection to the coordinator (`.client`); nil for plain TCP.
        public var curve: Curve?
        /// The run the worker serves; nil: the run of the first coordinator that admits it.
        public var runID: String?
        /// When to give up: without a coordinator, or refused as a second holder of the id.
        public var link = WorkerLink.Settings()

        public init(role: WorkerRole, workerID: String, coordinator: String) {
            self.role = role
            self.workerID = workerID
            self.coordinator = coordinator
        }
    }

    /// Registration outcome.
    public enum RegistrationError: Error, CustomStringConvertible {
        /// The worker stopped trying: refused for good, or left without a coordinator.
        case gaveUp(String)

        public var description: String {
            switch self {
            case let .gaveUp(reason): return "the worker gave up: \(reason)"
            }
        }
    }

    private final class State: @unchecked Sendable {
        /// Registration, run, epoch (stamped on every message sent) and when to give up.
        var link: WorkerLink
        var heartbeatMilliseconds: UInt32 = 500
        var nextRequestID: UInt64 = 1
        /// Calls running and the last one answered; whether new calls are refused (draining).
        var calls = CallLedger<WireMessage>()

        init(link: WorkerLink) { self.link = link }
    }

    public let settings: Settings
    private let loop: PollLoop
    private let socket: PollLoop.SocketID
    private let state: Mutex<State>
    /// Signalled at the first admission, or when the worker gives up before it.
    private let firstAnswer = DispatchSemaphore(value: 0)
    /// Signalled when the worker gives up.
    private let gaveUpSignal = DispatchSemaphore(value: 0)
    private var timer: DispatchSourceTimer?
    /// The frozen base of the LoRA adapters last installed (fetched once, kept for the next versions).
    private let loraBase = Mutex<WeightFetcher.Base?>(nil)
    /// Ticks the link: retries, notices and the orphan timeout.
    private var supervisor: DispatchSourceTimer?
    /// Drawn at start, kept for the process's life: tells this process from another with the same id.
    public let incarnation: String
    private let logger: Logger
    /// The role's compute; nil for a worker that only registers and heartbeats.
    private let service: (any RoleService)?
    /// Hosts the role's distributed actor; its compute executor's queue runs the calls and the installs.
    private let actorSystem: ClusterActorSystem
    /// The role's actor, kept for the process's life.
    private var roleActor: (any DistributedActor)?
    private var workQueue: DispatchQueue { actorSystem.computeExecutor.queue }

    /// Connects and sends the first registration; `service` serves the role's calls. The daemon runs on
    /// `loop` (the process's one poll loop, which `shutdown()` closes), or on one of its own.
    public init(settings: Settings, service: (any RoleService)?, loop: PollLoop? = nil, logger: Logger = Logger(label: "rlhf.worker")) throws {
        self.settings = settings
        self.service = service
        var tagged = logger
        tagged[metadataKey: "role"] = "\(settings.role.rawValue)"
        tagged[metadataKey: "worker"] = "\(settings.workerID)"
        self.logger = tagged
        incarnation = String(UInt64.random(in: 1 ... .max), radix: 16)
        state = Mutex(State(link: WorkerLink(coordinator: settings.coordinator, runID: settings.runID, settings: settings.link,
                                             now: BuildIdentity.now())))
        self.loop = try loop ?? PollLoop()
        let loop = self.loop
        // The role's actor exists before the connection does: the first call may follow the registration at once.
        actorSystem = ClusterActorSystem(loop: loop, serving: nil, endpoint: "worker/\(settings.workerID)")
        roleActor = service?.hostActor(on: actorSystem, as: settings.role.rawValue)
        // The daemon as the socket's callbacks reach it. Socket events before it is reachable (a refused
        // handshake can come within a millisecond of the connect) are kept and handed over once it is, not lost.
        let early = Mutex<(daemon: WorkerDaemon?, events: [SocketEvent])>((nil, []))
        // After a cut link: ZMTP heartbeats drop the dead connection within 1.5 s, each reconnection
        // attempt gives up after 1 s, and attempts back off to at most 1 s apart, so the worker is back
        // within about 2 s of the link returning.
        var socketSettings = SocketSettings.default
        socketSettings.reconnectMaxMilliseconds = 1_000
        socketSettings.connectTimeoutMilliseconds = 1_000
        socketSettings.heartbeatIntervalMilliseconds = 500
        socketSettings.heartbeatTimeoutMilliseconds = 1_500
        socketSettings.curve = settings.curve
        // The socket's routing id names this process, not only the worker id: a second process started
        // with the same --id is a different peer to the coordinator's socket (which refuses its
        // registration) instead of taking the first one's connection over.
        (socket, _) = try loop.open(.dealer, settings: socketSettings, identity: Array("\(settings.workerID)#\(incarnation)".utf8),
                                    connect: [settings.coordinator],
                                    events: { event in
                                        let daemon = early.withLock { e -> WorkerDaemon? in
                                            if e.daemon == nil { e.events.append(event) }
                                            return e.daemon
                                        }
                                        daemon?.connectionEvent(event)
                                    }) { frames in
            early.withLock { $0.daemon }?.handle(frames)
        }
        for event in early.withLock({ e -> [SocketEvent] in
            e.daemon = self
            defer { e.events = [] }
            return e.events
        }) { connectionEvent(event) }
        logger.info("joining the coordinator", metadata: ["coordinator": "\(settings.coordinator)", "run": "\(settings.runID ?? "any")",
                                                          "orphan_timeout_s": "\(settings.link.orphanTimeoutMilliseconds / 1000)"])
        sendRegistration()
        let supervisor = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "rlhf.worker.link"))
        supervisor.schedule(deadline: .now() + .milliseconds(100), repeating: .milliseconds(100))
        supervisor.setEventHandler { [weak self] in
            guard let self else { return }
            act(state.withLock { $0.link.tick(now: BuildIdentity.now()) })
        }
        supervisor.resume()
        self.supervisor = supervisor
    }

    /// A failed security handshake will not succeed by retrying (the keys are given at start): the worker
    /// gives up, saying which keys are wrong, instead of waiting for a coordinator it cannot reach.
    private func connectionEvent(_ event: SocketEvent) {
        guard case let .handshakeFailed(failure) = event.kind else { return }
        var publicKey: String?
        if case let .client(_, key, _)? = settings.curve { publicKey = key }
        let reason = SocketEvent.explain(failure, peer: "the coordinator at \(settings.coordinator)", clientUsesCurve: settings.curve != nil,
                                         clientPublicKey: publicKey)
        act(state.withLock { $0.link.refused(.incompatible, reason: reason, now: BuildIdentity.now()) })
    }

    /// Does what the link decided.
    private func act(_ action: WorkerLink.Action) {
        switch action {
        case .none:
            break
        case let .started(epoch):
            let run = state.withLock { $0.link.runID } ?? "none"
            logger.info("registered with the coordinator", metadata: ["epoch": "\(epoch)", "run": "\(run)"])
            startHeartbeats()
            firstAnswer.signal()
        case let .registeredAgain(epoch):
            logger.info("registered with the coordinator again", metadata: ["epoch": "\(epoch)"])
        case .register:
            sendRegistration()
        case let .stillWaiting(seconds):
            let limit = settings.link.orphanTimeoutMilliseconds / 1000
            logger.notice("waiting for the coordinator", metadata: [
                "coordinator": "\(settings.coordinator)", "silent_s": "\(seconds)",
                "gives_up_after_s": "\(limit == 0 ? "never" : "\(limit)")"])
        case let .refusedForNow(reason):
            logger.warning("registration refused; trying again for a while", metadata: ["reason": "\(reason)"])
        case let .giveUp(reason):
            logger.error("giving up", metadata: ["reason": "\(reason)"])
            timer?.cancel()
            supervisor?.cancel()
            firstAnswer.signal()
            gaveUpSignal.signal()
        }
    }

    private func nextID() -> UInt64 { state.withLock { s in s.nextRequestID += 1; return s.nextRequestID } }

    private func sendRegistration() {
        let runID = state.withLock { s in
            s.link.registrationSent(now: BuildIdentity.now())
            return s.link.runID
        }
        var r = Rlhf_V1_Register()
        r.incarnation = incarnation
        r.runID = runID ?? ""
        r.role = settings.role.wire
        r.workerID = settings.workerID
        r.protocolVersion = ProtocolVersion.current
        r.buildHash = BuildIdentity.hash
        r.policyVersion = service?.policyVersion ?? 0
        r.capacity = UInt32(settings.capacity)
        r.host = BuildIdentity.host
        r.pid = BuildIdentity.pid
        if let placement = BuildIdentity.placement { r.placement = placement.wire }
        if let frames = try? WireMessage(type: .register, requestID: nextID(), body: r, sender: settings.workerID).frames() {
            loop.send(socket, frames)
        }
    }

    private func handle(_ frames: [[UInt8]]) {
        guard let message = try? WireMessage.decode(frames) else {
            logger.warning("dropped a malformed message from the coordinator")
            return
        }
        state.withLock { $0.link.heard(now: BuildIdentity.now()) }
        switch message.type {
        case .registerAck:
            guard let ack = try? message.decodeBody(Rlhf_V1_RegisterAck.self) else { return }
            let now = BuildIdentity.now()
            let action = state.withLock { s -> WorkerLink.Action in
                if ack.accepted {
                    s.heartbeatMilliseconds = max(10, ack.heartbeatIntervalMs)
                    return s.link.accepted(epoch: ack.epoch, runID: ack.runID, now: now)
                }
                let refusal: WorkerLink.Refusal
                switch ack.refusal {
                case .unknownWorker: refusal = .unknownWorker
                case .duplicateWorkerID: refusal = .duplicateWorkerID
                case .otherRun: refusal = .otherRun
                case .incompatible, .unspecified, .UNRECOGNIZED: refusal = .incompatible
                }
                return s.link.refused(refusal, reason: ack.reason, now: now)
            }
            if action == .register { logger.info("the coordinator does not know this worker any more; registering again") }
            act(action)
        case .heartbeatAck:
            break
        case .remoteCall:
            guard service != nil else {
                reply(error: .unknownType, "a \(settings.role.rawValue) worker serves no calls", to: message)
                return
            }
            // The call belongs to the registration it was sent to: its answer carries that epoch (stamped
            // on the call by the coordinator; else the one it arrived under), so an answer finished
            // after the worker was declared dead (and registered anew) is fenced, and a call that
            // overtook the acknowledgement of its registration is still answered under it.
            let call = CallLedger<WireMessage>.Call(requestID: message.requestID, digest: WorkerDaemon.digest(message))
            let (epoch, admission) = state.withLock { s in
                let epoch = message.epoch != 0 ? message.epoch : s.link.epoch
                return (epoch, s.calls.admit(call, epoch: epoch))
            }
            switch admission {
            case .draining:
                reply(error: .workerDraining, "worker \(settings.workerID) is draining and takes no new work", to: message)
                return
            case let .replay(answer):
                send(answer, epochs: [epoch])
                return
            case .joined:
                // Asked again while it runs (declared dead mid-call, registered again, and given the call
                // back): answered under this epoch too when it finishes, not run a second time.
                logger.info("a call asked again while it runs is answered once it finishes", metadata: [
                    "request": "\(message.requestID)", "epoch": "\(epoch)"])
                return
            case .run:
                break
            }
            let actorSystem = actorSystem
            // Started on the poll loop, never the global pool: a process whose cooperative threads are
            // all blocked (a synchronous caller waiting for this very answer, as an in-process
            // coordinator's plan is) must still answer. The actor's work itself runs on its own executor.
            Task(executorPreference: loop) { [self] in
                var answer = await actorSystem.answer(message)
                answer.sender = settings.workerID
                if let failure = try? ClusterActorSystem.replyError(answer) {
                    logger.warning("call failed", metadata: ["error": "\(failure)"])
                }
                send(answer, epochs: state.withLock { $0.calls.finish(call, reply: answer) })
            }
        case .weightAnnounce:
            guard let service, let config = service.modelConfig else {
                reply(error: .unknownType, "a \(settings.role.rawValue) does not take weight versions", to: message)
                return
            }
            guard let announce = try? WeightAnnouncement(wire: message.decodeBody(Rlhf_V1_WeightAnnounce.self)) else {
                reply(error: .badMessage, "WEIGHT_ANNOUNCE body does not parse", to: message)
                return
            }
            workQueue.async { [self] in
                do {
                    try sync(service, to: announce, config: config)
                    sendHeartbeat(requestID: message.requestID)
                } catch {
                    logger.warning("weight sync failed", metadata: ["version": "\(announce.policyVersion)", "error": "\(error)"])
                    reply(error: .checksumMismatch, "weight sync to version \(announce.policyVersion) failed: \(error)", to: message)
                }
            }
        case .error:
            let text = (try? message.decodeBody(Rlhf_V1_Error.self).message) ?? ""
            logger.warning("the coordinator reported an error", metadata: ["error": "\(text)"])
        default:
            logger.debug("ignored a message", metadata: ["type": "\(message.type)"])
        }
    }

    /// Sends `answer` once under each of `epochs`: the registration each asker sent the call to.
    private func send(_ answer: WireMessage, epochs: [UInt64]) {
        for epoch in epochs {
            var stamped = answer
            stamped.epoch = epoch
            if let frames = try? stamped.frames() { loop.send(socket, frames) }
        }
    }

    private func reply(error code: Rlhf_V1_ErrorCode, _ text: String, to message: WireMessage, epoch: UInt64? = nil) {
        if let frames = WireMessage.errorFrames(code, text, requestID: message.requestID, sender: settings.workerID,
                                                epoch: epoch ?? state.withLock { $0.link.epoch }) {
            loop.send(socket, frames)
        }
    }

    /// Fetches `announce`'s version from its source, checks it is the announced version with the
    /// announced checksum, and installs it.
    private func sync(_ service: any RoleService, to announce: WeightAnnouncement, config: LlamaConfig) throws {
        if service.policyVersion == announce.policyVersion && service.weightsChecksum == announce.modelChecksum { return }
        let started = Date()
        // The source must serve exactly the relayed announcement; the fetch verifies every tensor against
        // it (so the whole model's checksum, combined from the tensors', is the announced one).
        // Weight servers share the coordinator's CURVE server key: the same client keys reach them.
        // LoRA adapters: merged into their base, which is the model held before the first adapters (when
        // it is the same: the checksum says), else fetched once; kept for the next versions.
        let kept = loraBase.withLock { $0 }
        let fetched = try WeightFetcher.fetchPolicy(loop: loop, endpoint: announce.source, config: config, expected: announce,
                                                    heldBase: kept ?? service.heldWeights.map { WeightFetcher.Base(weights: $0) },
                                                    curve: settings.curve)
        loraBase.withLock { $0 = fetched.base }
        if kept == nil, let base = fetched.base {
            // Memory the start-up statement could not count: the role learns of LoRA from its first adapters.
            logger.info("keeps the frozen LoRA base beside the merged policy", metadata: [
                "bytes": "\(base.weights.storage.count * MemoryLayout<Float>.size)", "fetched": "\(fetched.bytes > announce.totalBytes)"])
        }
        try service.install(fetched.weights, version: fetched.policyVersion, announce: announce)
        logger.info("installed a new policy version", metadata: [
            "version": "\(fetched.policyVersion)", "bytes": "\(fetched.bytes)", "lora": "\(announce.lora != nil)",
            "seconds": "\(String(format: "%.3f", Date().timeIntervalSince(started)))"])
    }

    private func startHeartbeats() {
        let interval = state.withLock { Int($0.heartbeatMilliseconds) }
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "rlhf.worker.heartbeat"))
        timer.schedule(deadline: .now() + .milliseconds(interval), repeating: .milliseconds(interval))
        timer.setEventHandler { [weak self] in self?.sendHeartbeat() }
        timer.resume()
        self.timer = timer
    }

    private func sendHeartbeat(requestID: UInt64? = nil) {
        let (inFlight, draining) = state.withLock { ($0.calls.inFlight, $0.calls.draining) }
        var h = Rlhf_V1_Heartbeat()
        h.workerID = settings.workerID
        h.state = draining ? .draining : inFlight > 0 ? .busy : .idle
        h.tasksInFlight = UInt32(inFlight)
        h.policyVersion = service?.policyVersion ?? 0
        h.weightsCrc32C = service?.weightsChecksum ?? 0
        h.tokensProcessed = service?.tokensProcessed ?? 0
        if var message = try? WireMessage(type: .heartbeat, requestID: requestID ?? nextID(), body: h, sender: settings.workerID) {
            message.epoch = state.withLock { $0.link.epoch }
            if let frames = try? message.frames() { loop.send(socket, frames) }
        }
    }

    /// Stops taking new work (the coordinator is told at once), waits up to `timeoutSeconds` for the
    /// tasks in flight, then says goodbye. Returns whether every task finished.
    @discardableResult
    public func drain(timeoutSeconds: Double = 60) -> Bool {
        state.withLock { s in
            s.calls.draining = true
            s.link.startDraining()
        }
        sendHeartbeat()
        logger.info("draining: finishing tasks in flight")
        let done = DispatchSemaphore(value: 0)
        workQueue.async { done.signal() }
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        // Calls admitted before the drain may still be on their way to the compute queue.
        var finished = done.wait(timeout: .now() + timeoutSeconds) == .success
        while finished && state.withLock({ $0.calls.inFlight }) > 0 {
            if Date() > deadline { finished = false; break }
            Thread.sleep(forTimeInterval: 0.01)
        }
        timer?.cancel()
        var bye = Rlhf_V1_Shutdown()
        bye.reason = finished ? "drained" : "drain timed out after \(Int(timeoutSeconds)) s"
        bye.drain = true
        if var goodbye = try? WireMessage(type: .shutdown, requestID: nextID(), body: bye, sender: settings.workerID) {
            goodbye.epoch = state.withLock { $0.link.epoch }
            if let frames = try? goodbye.frames() { loop.send(socket, frames) }
        }
        // Let the poll loop flush the goodbye before the socket closes (LINGER is 0).
        Thread.sleep(forTimeInterval: 0.05)
        return finished
    }

    /// Waits until the coordinator admits the worker, or the worker gives up (refused for good, or no
    /// coordinator within its orphan timeout; logging every few seconds that it waits, and where).
    public func waitForRegistration() throws {
        firstAnswer.wait()
        firstAnswer.signal()
        if let reason = gaveUpReason { throw RegistrationError.gaveUp(reason) }
    }

    /// Blocks until the worker gives up (it may never).
    public func waitUntilGivenUp() {
        gaveUpSignal.wait()
        gaveUpSignal.signal()
    }

    /// Whether the worker has been admitted (it may since have been forgotten).
    public var isRegistered: Bool { state.withLock { $0.link.started } }

    /// Why the worker gave up, once it has.
    public var gaveUpReason: String? { state.withLock { $0.link.gaveUp } }

    /// The run the worker belongs to (nil until it is admitted by a coordinator of a run).
    public var runID: String? { state.withLock { $0.link.runID } }

    /// Stops heartbeats and closes the socket.
    public func shutdown() {
        timer?.cancel()
        supervisor?.cancel()
        actorSystem.shutdown()
        loop.shutdown()
    }

    /// CRC-32C over a call's body and tensor bytes: tells a call asked again from a new one.
    static func digest(_ message: WireMessage) -> UInt32 {
        var crc = CRC32C()
        crc.update(message.body)
        for t in message.tensors { crc.update(t.bytes) }
        return crc.value
    }
}
