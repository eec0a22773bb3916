import Distributed
import Foundation
import LlamaCore
import Logging
import SwiftProtobuf
import Synchronization
import Transport
import Wire

/// The coordinator process's front door: a ROUTER socket that admits workers (REGISTER), tracks their
/// heartbeats and health (`Membership`, ticked every 100 ms), carries the calls to the role actors'
/// pools (`pools`: each call a task of `TaskDispatcher`, sent to the worker it picks as a REMOTE_CALL,
/// re-sent elsewhere if that worker dies, its answer journaled before the caller gets it), relays weight versions
/// from the learner to its consumers, and answers status requests (and, when asked to, serves
/// Prometheus text metrics over HTTP). Bad input is answered with an ERROR naming the problem; the
/// coordinator keeps serving.
public final class Coordinator: @unchecked Sendable {
    /// Settings of a coordinator.
    public struct Settings: Sendable, Codable {
        public var bind: String
        public var membership: Membership.Settings = .default
        /// The build workers must run (this executable's by default).
        public var buildHash: String = BuildIdentity.hash
        /// Where to serve Prometheus metrics over HTTP (e.g. `tcp://0.0.0.0:9555`); nil for none.
        public var metricsBind: String?
        /// Largest frame the coordinator accepts: results and control messages, never weights.
        public var maxFrameBytes = 64 << 20
        /// CURVE: the coordinator's secret key and the public keys of the clients it admits (Z85); nil
        /// for plain TCP.
        public var curve: CurveServerKeys?

        /// Encrypts with the server key in `keyFile` (`rlhf keys generate`), admitting the clients whose
        /// public key files are listed.
        public mutating func encrypt(keyFile: String, admitting clientKeyFiles: [String]) throws {
            curve = try CurveKeyFile.server(keyFile: keyFile, admitting: clientKeyFiles)
        }
        /// Where accepted results are written before they are acted on (a launcher's run journal); nil
        /// to keep them in memory only.
        public var journal: RunJournal?
        /// Results a previous life of this coordinator accepted (read back from the journal), by request
        /// id: a task asked for again under the same id is answered from here, not dispatched again.
        public var recoveredResults: [UInt64: [Data]] = [:]
        /// The run this coordinator serves ("": none in particular): workers of another run are refused,
        /// and workers not yet bound to a run bind to this one.
        public var runID = ""

        public init(bind: String) { self.bind = bind }

        /// What a settings file holds: the journal and the results read back from it are the run's, not settings.
        enum CodingKeys: String, CodingKey {
            case bind, membership, buildHash, metricsBind, maxFrameBytes, curve, runID
        }
    }

    final class State: @unchecked Sendable {
        var membership: Membership
        /// ROUTER identity of each worker id.
        var identities: [String: [UInt8]] = [:]
        var planStage = PlanStage.idle
        var round: UInt32 = 0
        var step: UInt64 = 0
        var policyVersion: UInt64 = 0
        var rewardMean = 0.0
        var kl = 0.0
        /// Frames refused, by `WireError.reason` ("bad_body" for a body of the wrong shape).
        var rejected: [String: UInt64] = [:]
        /// At most one "refused a message" line a second, with the count of those not logged.
        var refusalLog = LogThrottle()
        /// Connections the socket saw close (peers leaving or dying, and libzmq closing a connection on
        /// a frame above the transport's cap or a protocol error: the monitor cannot tell these apart).
        var connectionsClosed: UInt64 = 0

        /// Counts a refusal of `reason`; whether to log it now, and how many went unlogged before it.
        func refuse(_ reason: String) -> (log: Bool, suppressed: Int) {
            rejected[reason, default: 0] += 1
            return refusalLog.admit(now: BuildIdentity.now())
        }
        /// Tasks put back in the queue because their worker died, left or registered anew.
        var redispatched: UInt64 = 0
        /// Calls in flight: tasks (the REMOTE_CALL to send) by request id, results accepted once.
        var dispatcher = TaskDispatcher<WireMessage>()
        /// The callers waiting for each call's answer, by request id.
        var waiters: [UInt64: CheckedContinuation<WirePayload, Error>] = [:]
        /// Weight syncs that failed, by the request id of their announcement.
        var failures: [UInt64: String] = [:]
        /// Weight syncs in flight: request id of each WEIGHT_ANNOUNCE sent, to the worker it went to.
        var syncs: [UInt64: String] = [:]
        /// The last version announced and the roles that follow it: a consumer that (re-)registers
        /// holding another version is paused and brought up to it before it gets work.
        var latest: [WorkerRole: WeightAnnouncement] = [:]
        var catchingUp: Set<String> = []
        /// Messages queued by the handler for the pump to send: `(identity, frames)`.
        var outbox: [([UInt8], [[UInt8]])] = []
        /// Messages to the live holder of a worker id that a second process asked for: if one cannot be
        /// delivered (the holder's connection is gone), the holder is dead and the id is free.
        var probes: [(identity: [UInt8], frames: [[UInt8]], workerID: String, incarnation: String)] = []
        /// Second claimants of a worker id already logged (`id#incarnation`), so that their retries are not.
        var loggedClaimants: Set<String> = []
        /// Request ids of tasks: numbered per plan step (`beginStep`), so a replayed step asks for the
        /// same ids. Outside a step they start at 1000.
        var nextTaskID: UInt64 = 1_000
        /// Request ids of control messages (weight announcements): a space of their own (top bit set),
        /// so that they never shift the numbering of tasks.
        var nextControlID: UInt64 = 1 << 63
        /// Accepted results of an earlier life of the coordinator (from the journal), by request id.
        var recovered: [UInt64: [Data]] = [:]
        /// Where accepted results are written first.
        var journal: RunJournal?
        /// Tasks per role dispatched and completed, and tokens of generate results, for metrics.
        var dispatched: [WorkerRole: UInt64] = [:]
        var completedTasks: [WorkerRole: UInt64] = [:]
        var failedTasks: [WorkerRole: UInt64] = [:]
        var tokens = ThroughputMeter()

        init(membership: Membership) { self.membership = membership }
    }

    /// The state, shared by the socket handler and the health timer.
    final class Shared: Sendable {
        let state: Mutex<State>
        /// Serves distributed-actor calls that arrive on the coordinator's socket.
        let actors = Mutex<ClusterActorSystem?>(nil)
        let runID: String
        let logger: Logger
        init(_ s: State, runID: String, logger: Logger) {
            state = Mutex(s)
            self.runID = runID
            self.logger = logger
        }
    }

    private let loop: PollLoop
    /// The base of the LoRA adapters last fetched (`fetchWeights`).
    private let loraBase = Mutex<WeightFetcher.Base?>(nil)
    private let shared: Shared
    private let socket: PollLoop.SocketID
    /// Signalled whenever a task completes or fails.
    private let progress: DispatchSemaphore
    private let timer: DispatchSourceTimer
    private let logger: Logger
    /// The endpoint actually bound.
    public let endpoint: String
    /// The distributed-actor system served on the coordinator's socket; `control` is published in it
    /// as "coordinator".
    public let actorSystem: ClusterActorSystem
    private var control: CoordinatorControl?
    /// The metrics endpoint bound (`tcp://host:port`, served as `http://host:port/metrics`), if any.
    public private(set) var metricsEndpoint: String?

    /// Binds and starts serving.
    public init(settings: Settings, logger: Logger = Logger(label: "rlhf.coordinator")) throws {
        var tagged = logger
        tagged[metadataKey: "role"] = "coordinator"
        let logger = tagged
        self.logger = logger
        let loop = try PollLoop()
        self.loop = loop
        // Epochs start from the clock (microseconds), so that a restarted coordinator never hands a worker
        // an epoch of its previous life: a result stamped in that life stays fenced.
        let firstEpoch = UInt64(Date().timeIntervalSince1970 * 1_000_000)
        let state = State(membership: Membership(protocolVersion: ProtocolVersion.current, buildHash: settings.buildHash,
                                                 settings: settings.membership, firstEpoch: firstEpoch, runID: settings.runID))
        state.journal = settings.journal
        state.recovered = settings.recoveredResults
        let shared = Shared(state, runID: settings.runID, logger: logger)
        self.shared = shared
        let socketBox = Mutex<PollLoop.SocketID?>(nil)
        let interval = settings.membership.heartbeatIntervalMilliseconds
        let maxFrameBytes = settings.maxFrameBytes
        let progress = DispatchSemaphore(value: 0)
        self.progress = progress
        var socketSettings = SocketSettings.default
        // A worker back from a cut link reconnects under its id before the old connection is noticed dead.
        socketSettings.routerHandover = true
        socketSettings.heartbeatIntervalMilliseconds = 500
        socketSettings.heartbeatTimeoutMilliseconds = 1_500
        if let curve = settings.curve {
            try loop.authorizeCurveClients(curve.clients)
            socketSettings.curve = .server(secretKey: curve.secretKey)
        }
        // A frame above the transport's cap is dropped by libzmq with its connection, before the
        // coordinator sees it: frames between its own limit and 4x that reach it and are counted as
        // "oversized"; beyond, only the connection's close is counted.
        socketSettings.maxMessageBytes = Int64(settings.maxFrameBytes) * 4
        // A peer whose security handshake fails never sends a frame: counted (rejected "handshake") and
        // logged here, at most once a second.
        let handshakes = { @Sendable (event: SocketEvent) in
            if event.kind == .disconnected { shared.state.withLock { $0.connectionsClosed += 1 } }
            guard case let .handshakeFailed(failure) = event.kind else { return }
            let (log, suppressed) = shared.state.withLock { $0.refuse("handshake") }
            if log {
                logger.warning("a peer failed the security handshake", metadata: [
                    "failure": "\(failure)", "curve": "\(settings.curve != nil)", "refused_unlogged_since_last": "\(suppressed)"])
            }
        }
        let opened: (PollLoop.SocketID, [String])
        do {
            opened = try loop.open(.router, settings: socketSettings, bind: [settings.bind], events: handshakes) { frames in
                guard let id = socketBox.withLock({ $0 }), frames.count >= 2 else { return }
                let identity = frames[0]
                if let reply = Coordinator.handle(Array(frames.dropFirst()), identity: identity, shared: shared,
                                                  heartbeatInterval: interval, maxFrameBytes: maxFrameBytes, logger: logger,
                                                  progress: progress) {
                    loop.send(id, [identity] + reply)
                }
                Coordinator.pump(shared: shared, loop: loop, socket: id)
            }
        } catch let error as TransportError where error.code == EADDRINUSE {
            loop.shutdown()
            throw CoordinatorError.endpointInUse(settings.bind)
        } catch {
            loop.shutdown()
            throw error
        }
        let (socket, bound) = opened
        socketBox.withLock { $0 = socket }
        self.socket = socket
        endpoint = bound.first ?? settings.bind
        let actorSystem = ClusterActorSystem(loop: loop, serving: socket, endpoint: endpoint, buildHash: settings.buildHash)
        self.actorSystem = actorSystem
        shared.actors.withLock { $0 = actorSystem }
        actorSystem.route(pools: PoolRouter(shared: shared, loop: loop, socket: socket))

        timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "rlhf.coordinator.health"))
        timer.schedule(deadline: .now(), repeating: .milliseconds(100))
        timer.setEventHandler {
            let changes = shared.state.withLock { s in
                let changes = s.membership.tick(now: BuildIdentity.now())
                for change in changes {
                    switch change.to {
                    case .dead:
                        let requeued = s.dispatcher.removeWorker(change.workerID)
                        s.redispatched += UInt64(requeued.count)
                        if !requeued.isEmpty { logger.warning("re-dispatching tasks of a dead worker", metadata: ["worker": "\(change.workerID)", "tasks": "\(requeued.count)"]) }
                    case .suspect, .hung: s.dispatcher.pause(change.workerID)
                    case .healthy:
                        if s.membership.members[change.workerID]?.draining != true { s.dispatcher.resume(change.workerID) }
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
        let control = CoordinatorControl(coordinator: self, actorSystem: actorSystem)
        actorSystem.publish(control, as: CoordinatorControl.wellKnownName)
        self.control = control
        if let metricsBind = settings.metricsBind {
            metricsEndpoint = try MetricsServer.start(on: loop, bind: metricsBind) { shared.state.withLock { Coordinator.metricsText($0) } }
            logger.info("serving Prometheus metrics", metadata: ["endpoint": "\(metricsEndpoint ?? "")"])
        }
    }

    /// Stops the health timer and the loop (closing the socket).
    public func shutdown() {
        timer.cancel()
        actorSystem.shutdown()
        loop.shutdown()
        control = nil
        // Calls still waiting for an answer fail now instead of at their timeout.
        let waiting = shared.state.withLock { s -> [CheckedContinuation<WirePayload, Error>] in
            defer { s.waiters.removeAll() }
            return Array(s.waiters.values)
        }
        for waiter in waiting { waiter.resume(throwing: CoordinatorError.taskFailed("the coordinator shut down")) }
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
    static func pump(shared: Shared, loop: PollLoop, socket: PollLoop.SocketID) {
        let probes = shared.state.withLock { s in
            defer { s.probes.removeAll() }
            return s.probes
        }
        for probe in probes {
            loop.send(socket, [probe.identity] + probe.frames) { _ in
                Coordinator.holderIsGone(probe.workerID, incarnation: probe.incarnation, shared: shared)
            }
        }
        let sends = shared.state.withLock { s -> [([UInt8], [[UInt8]])] in
            defer { s.outbox.removeAll() }
            return s.outbox + s.dispatcher.assign(now: BuildIdentity.now()).compactMap { a in
                guard let identity = s.identities[a.workerID] else { return nil }
                var message = a.payload
                message.requestID = a.requestID
                // The task belongs to the worker's current registration: it carries that epoch, and so
                // does its answer, even if the task overtakes the registration's acknowledgement (this
                // pump may run on another thread than the one that sends the acknowledgement).
                message.epoch = s.membership.members[a.workerID]?.epoch ?? 0
                guard let frames = try? message.frames() else { return nil }
                if let role = s.membership.members[a.workerID]?.registration.role { s.dispatched[role, default: 0] += 1 }
                return (identity, frames)
            }
        }
        for (identity, frames) in sends { loop.send(socket, [identity] + frames) }
    }

    /// The holder of `workerID` (in life `incarnation`) cannot be reached: its connection closed (a
    /// killed process), and a second process is asking for the id. It is dead at once (its tasks go back
    /// to the queue) instead of after the missed heartbeats, so the newcomer's next try is admitted.
    private static func holderIsGone(_ workerID: String, incarnation: String, shared: Shared) {
        let requeued = shared.state.withLock { s -> Int? in
            guard s.membership.members[workerID]?.registration.incarnation == incarnation, s.membership.remove(workerID) != nil else { return nil }
            let requeued = s.dispatcher.removeWorker(workerID)
            s.redispatched += UInt64(requeued.count)
            return requeued.count
        }
        guard let requeued else { return }
        shared.logger.warning("worker unreachable while a second process asks for its id: declared dead",
                              metadata: ["worker": "\(workerID)", "requeued": "\(requeued)"])
    }

    /// Runs `call` once per part, all at once, and returns the results in part order. The calls are
    /// numbered in part order from the step's next request id whatever order they run in (so a replayed
    /// step asks for the same ids, and the journal answers them); the first failure fails the whole, and
    /// so does `timeoutSeconds`. `call` makes one call on a role pool per part (its request id is the
    /// part's). Blocks the calling thread (never a task's): the calls run on the coordinator's poll loop.
    public func fanOut<Part: Sendable, Answer: Sendable>(_ parts: [Part], timeoutSeconds: Double = 300,
                                                        _ call: @escaping @Sendable (Part) async throws -> Answer) throws -> [Answer] {
        guard !parts.isEmpty else { return [] }
        let first = shared.state.withLock { s -> UInt64 in
            defer { s.nextTaskID += UInt64(parts.count) }
            return s.nextTaskID + 1
        }
        let outcome = Mutex<Result<[Answer], Error>?>(nil)
        let finished = DispatchSemaphore(value: 0)
        let work = Task(executorPreference: loop) {
            do {
                let answers = try await withThrowingTaskGroup(of: (Int, Answer).self) { group in
                    for (index, part) in parts.enumerated() {
                        group.addTask {
                            (index, try await PoolRouter.$requestID.withValue(first + UInt64(index)) { try await call(part) })
                        }
                    }
                    var answers = [Answer?](repeating: nil, count: parts.count)
                    for try await (index, answer) in group { answers[index] = answer }
                    return answers.map { $0! }
                }
                outcome.withLock { $0 = .success(answers) }
            } catch {
                outcome.withLock { $0 = .failure(error) }
            }
            finished.signal()
        }
        if finished.wait(timeout: .now() + timeoutSeconds) == .timedOut {
            work.cancel()
            finished.wait()
            throw CoordinatorError.timeout(Int(timeoutSeconds))
        }
        return try outcome.withLock { $0! }.get()
    }

    /// What the learner reported after a policy step: its optimizer's step count and the version it
    /// published (status and metrics show them).
    public func learnerStepped(step: UInt64, policyVersion: UInt64) {
        shared.state.withLock { s in
            s.step = step
            s.policyVersion = max(s.policyVersion, policyVersion)
        }
    }

    /// Fetches `announce`'s weights from its source (a learner's weight server) on the coordinator's
    /// loop, every tensor checked against the announcement; LoRA adapters come merged into their base,
    /// which is fetched once and kept for the next versions.
    public func fetchWeights(_ announce: WeightAnnouncement, config: LlamaConfig, timeoutSeconds: Double = 60) throws -> ModelWeights {
        let fetched = try WeightFetcher.fetchPolicy(loop: loop, endpoint: announce.source, config: config, expected: announce,
                                                    heldBase: loraBase.withLock { $0 }, timeoutSeconds: timeoutSeconds)
        if let base = fetched.base { loraBase.withLock { $0 = base } }
        return fetched.weights
    }

    /// Tells every live worker of `roles` to fetch `announce`'s version from its source, and waits
    /// until each reports that version with the announced weights checksum. Returns the workers synced;
    /// a worker that fails to sync fails the call with its reason. Workers of `roles` that register
    /// later holding another version are paused and brought up to this one before they get work.
    @discardableResult
    public func syncWeights(_ announce: WeightAnnouncement?, roles: Set<WorkerRole> = [.generator, .referencePolicy],
                            timeoutSeconds: Double = 120) throws -> [String] {
        guard let announce else { throw CoordinatorError.taskFailed("the learner announced no weight version to sync") }
        let checksum = announce.modelChecksum
        let sends = shared.state.withLock { s -> [(String, UInt64, [UInt8], [[UInt8]])] in
            for role in roles { s.latest[role] = announce }
            return s.membership.workers().filter { roles.contains($0.registration.role) && $0.health != .dead }.compactMap { m in
                let id = m.registration.workerID
                guard let identity = s.identities[id] else { return nil }
                s.nextControlID += 1
                guard let frames = try? WireMessage(type: .weightAnnounce, requestID: s.nextControlID, body: announce.wire,
                                                    sender: "coordinator", policyVersion: announce.policyVersion).frames() else { return nil }
                s.syncs[s.nextControlID] = id
                return (id, s.nextControlID, identity, frames)
            }
        }
        for (_, _, identity, frames) in sends { loop.send(socket, [identity] + frames) }
        let targets = sends.map(\.0), requestIDs = sends.map(\.1)
        defer { shared.state.withLock { s in for id in requestIDs { s.syncs[id] = nil; s.failures[id] = nil } } }
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while true {
            let (done, failure) = shared.state.withLock { s -> (Bool, String?) in
                // A target that died or left meanwhile does not hold the sync up: if it comes back, it
                // is brought up to the latest version at registration.
                let done = targets.allSatisfy { id in
                    guard let m = s.membership.members[id], m.health != .dead else { return true }
                    return m.policyVersion == announce.policyVersion && m.weightsChecksum == checksum
                }
                return (done, requestIDs.compactMap { s.failures[$0] }.first)
            }
            if let failure { throw CoordinatorError.taskFailed(failure) }
            if done { break }
            if Date() > deadline {
                throw CoordinatorError.taskFailed("weight sync to version \(announce.policyVersion) not confirmed by every worker within \(Int(timeoutSeconds)) s")
            }
            _ = progress.wait(timeout: .now() + 0.05)
        }
        return shared.state.withLock { s in
            // A reward model's versions are its own; the cluster's policy version is the policy's.
            if announce.model == .policy { s.policyVersion = announce.policyVersion }
            return targets.filter { s.membership.members[$0].map { $0.health != .dead && $0.policyVersion == announce.policyVersion } == true }
        }
    }

    /// Numbers the tasks of plan step `index` from `RunJournal.firstRequestID(ofStep:)`.
    public func beginStep(_ index: Int) {
        shared.state.withLock { $0.nextTaskID = RunJournal.firstRequestID(ofStep: index) }
    }

    /// Takes up where an earlier life of the coordinator left off: the policy version and round it
    /// had reached and the last weight version it announced to each role (workers registering with
    /// another version are brought up to it before they get work).
    public func restore(policyVersion: UInt64, round: UInt32, announces: [WorkerRole: WeightAnnouncement]) {
        shared.state.withLock { s in
            s.policyVersion = policyVersion
            s.round = round
            s.latest = announces
        }
    }

    /// Drops the results a previous life of the coordinator accepted for the step in progress: that
    /// step runs again from its start (its learner was lost and restored to the step's beginning).
    public func forgetRecoveredResults() { shared.state.withLock { $0.recovered = [:] } }

    /// The last weight version announced to each role that follows the learner.
    public var latestAnnouncements: [WorkerRole: WeightAnnouncement] { shared.state.withLock { $0.latest } }

    /// The version the reference-policy workers hold: the last announced to them (the chat model of a
    /// plan's SFT step), else a healthy one's (the checkpoint's).
    public var referenceVersion: UInt64 {
        latestAnnouncements[.referencePolicy]?.policyVersion
            ?? workers().first { $0.registration.role == .referencePolicy && $0.health == .healthy }?.policyVersion ?? 0
    }

    /// Sets what `rlhf status` reports as the plan's stage, round and step.
    public func setProgress(_ stage: PlanStage, round: UInt32? = nil, step: UInt64? = nil) {
        shared.state.withLock { s in
            // A new stage counts its steps from zero.
            if stage != s.planStage { s.step = 0 }
            s.planStage = stage
            if let round { s.round = round }
            if let step { s.step = step }
        }
    }

    /// Sets the latest mean reward and KL that `rlhf status` and the metrics report.
    public func setTrainingSignals(rewardMean: Double, kl: Double) {
        shared.state.withLock { s in
            s.rewardMean = rewardMean
            s.kl = kl
        }
    }

    /// The status as `rlhf status` gets it.
    public func status() -> ClusterStatus { shared.state.withLock { Coordinator.status($0) } }

    public static func chunked<T>(_ items: [T], _ size: Int) -> [[T]] {
        stride(from: 0, to: items.count, by: max(1, size)).map { Array(items[$0 ..< min(items.count, $0 + max(1, size))]) }
    }

    private static func handle(_ frames: [[UInt8]], identity: [UInt8], shared: Shared, heartbeatInterval: UInt64,
                               maxFrameBytes: Int, logger: Logger, progress: DispatchSemaphore) -> [[UInt8]]? {
        let state = shared
        let message: WireMessage
        do {
            message = try WireMessage.decode(frames, maxFrameBytes: maxFrameBytes)
        } catch let e as WireError {
            let (log, suppressed) = state.state.withLock { $0.refuse(e.reason) }
            if log { logger.warning("refused a message", metadata: ["reason": "\(e)", "refused_unlogged_since_last": "\(suppressed)"]) }
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
                ack.runID = shared.runID
                guard let role = WorkerRole(wire: r.role) else {
                    ack.accepted = false
                    ack.refusal = .incompatible
                    ack.reason = "unknown role \(r.role)"
                    return reply(.registerAck, message.requestID, ack)
                }
                let registration = Membership.Registration(workerID: r.workerID, role: role, protocolVersion: r.protocolVersion,
                                                           buildHash: r.buildHash, policyVersion: r.policyVersion,
                                                           capacity: Int(r.capacity), host: r.host, pid: r.pid,
                                                           incarnation: r.incarnation, runID: r.runID,
                                                           placement: r.hasPlacement ? SchedulerPlacement(wire: r.placement) : nil)
                do {
                    ack.epoch = try state.state.withLock { s throws(Membership.Refusal) -> UInt64 in
                        let epoch = try s.membership.register(registration, now: BuildIdentity.now())
                        s.identities[r.workerID] = identity
                        // A new life of the worker: whatever its previous one held goes back to the queue.
                        s.redispatched += UInt64(s.dispatcher.removeWorker(r.workerID).count)
                        // A generator runs one task at a time and holds the next one ready.
                        s.dispatcher.addWorker(r.workerID, role: role, capacity: 2)
                        if let latest = s.latest[role], r.policyVersion != latest.policyVersion {
                            // Behind the cluster's policy: no work until it has fetched the current version.
                            s.dispatcher.pause(r.workerID)
                            s.catchingUp.insert(r.workerID)
                            s.nextControlID += 1
                            if let frames = try? WireMessage(type: .weightAnnounce, requestID: s.nextControlID, body: latest.wire,
                                                             sender: "coordinator", policyVersion: latest.policyVersion).frames() {
                                s.syncs[s.nextControlID] = r.workerID
                                s.outbox.append((identity, frames))
                            }
                        }
                        return epoch
                    }
                    ack.accepted = true
                    logger.info("worker registered", metadata: ["worker": "\(r.workerID)", "role": "\(role.rawValue)", "host": "\(r.host)"])
                } catch {
                    ack.accepted = false
                    ack.reason = error.description
                    var logged = true
                    switch error {
                    case let .duplicateWorkerID(id, holder):
                        ack.refusal = .duplicateWorkerID
                        // Tell the holder; if that cannot be delivered, its connection is gone and so is it.
                        let firstTry = state.state.withLock { s -> Bool in
                            // Bounded: a peer inventing incarnations must not grow this for ever.
                            if s.loggedClaimants.count >= 10_000 { s.loggedClaimants.removeAll() }
                            let firstTry = s.loggedClaimants.insert("\(id)#\(r.incarnation)").inserted
                            // The first time, an ERROR for its log; on the claimant's retries, a HEARTBEAT_ACK it ignores.
                            let frames = firstTry
                                ? WireMessage.errorFrames(.invalidArgument, "a second process (\(registration.summary)) asked to register "
                                                          + "as worker \(id); this worker keeps the id", requestID: 0, sender: "coordinator")
                                : reply(.heartbeatAck, 0, { var a = Rlhf_V1_HeartbeatAck(); a.runID = shared.runID; return a }())
                            if let identity = s.identities[id], let frames { s.probes.append((identity, frames, id, holder.incarnation)) }
                            return firstTry
                        }
                        // A claimant's retries are not logged again.
                        logged = firstTry
                    case .otherRun:
                        ack.refusal = .otherRun
                    default:
                        ack.refusal = .incompatible
                    }
                    if logged {
                        logger.warning("registration refused", metadata: ["worker": "\(r.workerID)", "reason": "\(error)",
                                                                        "from": "\(registration.summary)"])
                    }
                }
                return reply(.registerAck, message.requestID, ack)
            case .heartbeat:
                let h = try message.decodeBody(Rlhf_V1_Heartbeat.self)
                let known = state.state.withLock { s in
                    // A heartbeat from an earlier life (stamped with an old epoch) is not this worker's.
                    guard s.membership.isCurrent(h.workerID, epoch: message.epoch) else { return false }
                    let known = s.membership.heartbeat(h.workerID, now: BuildIdentity.now(), policyVersion: h.policyVersion,
                                                       tasksInFlight: Int(h.tasksInFlight), weightsChecksum: h.weightsCrc32C,
                                                       tokensProcessed: h.tokensProcessed, draining: h.state == .draining)
                    if known && h.state == .draining { s.dispatcher.pause(h.workerID) }
                    if known, s.catchingUp.contains(h.workerID), let role = s.membership.members[h.workerID]?.registration.role,
                       let latest = s.latest[role], h.policyVersion == latest.policyVersion, h.weightsCrc32C == latest.modelChecksum {
                        s.catchingUp.remove(h.workerID)
                        s.syncs = s.syncs.filter { $0.value != h.workerID }
                        if h.state != .draining { s.dispatcher.resume(h.workerID) }
                        logger.info("worker caught up with the policy", metadata: ["worker": "\(h.workerID)", "version": "\(h.policyVersion)"])
                    }
                    return known
                }
                if state.state.withLock({ $0.syncs[message.requestID] != nil }) { progress.signal() }
                if known {
                    // Heard: the worker counts the time since the last of these to notice a lost coordinator.
                    var ack = Rlhf_V1_HeartbeatAck()
                    ack.runID = shared.runID
                    return reply(.heartbeatAck, message.requestID, ack)
                }
                var ack = Rlhf_V1_RegisterAck()
                ack.accepted = false
                ack.refusal = .unknownWorker
                ack.runID = shared.runID
                ack.reason = "unknown or dead worker \(h.workerID): register again"
                return reply(.registerAck, message.requestID, ack)
            case .remoteReply:
                // The answer to a call on a role pool: fenced unless its worker holds the call under the
                // epoch it carries; journaled before its caller gets it; accepted once.
                // Parsed once, here: the caller gets the value (or the worker's error) as it is.
                let value: WirePayload?, failure: String?
                do {
                    value = try ClusterActorSystem.replyValue(message)
                    failure = nil
                } catch RemoteCallError.remote(_, let text) {
                    (value, failure) = (nil, text)
                } catch {
                    (value, failure) = (nil, "\(error)")
                }
                let outcome = state.state.withLock { s -> (String, CheckedContinuation<WirePayload, Error>?) in
                    // Fencing: a result sent before its worker was declared dead carries an old epoch.
                    guard s.membership.isCurrent(message.sender, epoch: message.epoch) else {
                        s.rejected["fenced", default: 0] += 1
                        return ("fenced", nil)
                    }
                    let role = s.membership.members[message.sender]?.registration.role
                    switch s.dispatcher.complete(requestID: message.requestID, workerID: message.sender, now: BuildIdentity.now()) {
                    case .accepted:
                        let waiter = s.waiters.removeValue(forKey: message.requestID)
                        if failure != nil {
                            if let role { s.failedTasks[role, default: 0] += 1 }
                            return ("failed", waiter)
                        }
                        // Written to the journal (and the disk) before anything is done with it.
                        if let journal = s.journal {
                            do {
                                try journal.append(.result(requestID: message.requestID, frames: frames.map { Data($0) }))
                            } catch {
                                waiter?.resume(throwing: CoordinatorError.taskFailed("cannot write the run journal \(journal.path): \(error)"))
                                return ("unjournaled", nil)
                            }
                        }
                        if let role { s.completedTasks[role, default: 0] += 1 }
                        if role == .generator { s.tokens.add((message.tensor("logprobs")?.bytes.count ?? 0) / 4, at: BuildIdentity.now()) }
                        return ("accepted", waiter)
                    case .fenced:
                        s.rejected["fenced", default: 0] += 1
                        return ("fenced", nil)
                    case .duplicate: return ("duplicate", nil)
                    case .unknown: return ("unknown", nil)
                    }
                }
                switch outcome.0 {
                case "accepted": outcome.1?.resume(returning: value ?? WirePayload(body: []))
                case "failed":
                    let reason = failure ?? ""
                    logger.warning("a worker reported an error", metadata: ["worker": "\(message.sender)", "error": "\(reason)"])
                    outcome.1?.resume(throwing: CoordinatorError.taskFailed("\(message.sender): \(reason)"))
                case "unjournaled":
                    logger.error("could not journal an accepted result; the plan step fails", metadata: ["request": "\(message.requestID)"])
                case "fenced":
                    logger.warning("refused a result from a fenced worker (declared dead, or not holding the task)",
                                   metadata: ["worker": "\(message.sender)", "request": "\(message.requestID)"])
                default:
                    logger.debug("dropped a result", metadata: ["request": "\(message.requestID)", "why": "\(outcome.0)"])
                }
                return nil
            case .error:
                let e = (try? message.decodeBody(Rlhf_V1_Error.self)) ?? Rlhf_V1_Error()
                logger.warning("a worker reported an error", metadata: ["worker": "\(message.sender)", "error": "\(e.message)"])
                let waiter = state.state.withLock { s -> CheckedContinuation<WirePayload, Error>? in
                    if !s.membership.isCurrent(message.sender, epoch: message.epoch) {
                        s.rejected["fenced", default: 0] += 1
                    } else if e.code == .workerDraining, s.dispatcher.handBack(requestID: message.requestID, workerID: message.sender) {
                        // Sent before its draining heartbeat arrived: not a failure, the task goes to another worker.
                        s.redispatched += 1
                    } else if s.syncs[message.requestID] != nil {
                        s.failures[message.requestID] = "\(message.sender): \(e.message)"
                    } else if case .accepted = s.dispatcher.complete(requestID: message.requestID, workerID: message.sender, now: BuildIdentity.now()) {
                        if let role = s.membership.members[message.sender]?.registration.role { s.failedTasks[role, default: 0] += 1 }
                        return s.waiters.removeValue(forKey: message.requestID)
                    }
                    return nil
                }
                waiter?.resume(throwing: CoordinatorError.taskFailed("\(message.sender): \(e.message)"))
                progress.signal()
                return nil
            case .shutdown:
                let bye = (try? message.decodeBody(Rlhf_V1_Shutdown.self)) ?? Rlhf_V1_Shutdown()
                let requeued = state.state.withLock { s -> [UInt64]? in
                    guard s.membership.isCurrent(message.sender, epoch: message.epoch) else { return nil }
                    s.membership.leave(message.sender)
                    s.identities[message.sender] = nil
                    let requeued = s.dispatcher.removeWorker(message.sender)
                    s.redispatched += UInt64(requeued.count)
                    return requeued
                }
                guard let requeued else {
                    logger.warning("ignored a goodbye from an earlier life of a worker", metadata: ["worker": "\(message.sender)"])
                    return nil
                }
                logger.info("worker left", metadata: ["worker": "\(message.sender)", "reason": "\(bye.reason)", "requeued": "\(requeued.count)"])
                return nil
            case .remoteCall:
                state.actors.withLock { $0 }?.serve([identity] + frames)
                return nil
            case .statusRequest:
                return reply(.statusReply, message.requestID, state.state.withLock { Coordinator.status($0) }.wire)
            default:
                return error(.unknownType, "the coordinator does not handle \(message.type)", requestID: message.requestID)
            }
        } catch {
            let (log, suppressed) = state.state.withLock { $0.refuse("bad_body") }
            if log {
                logger.warning("refused a message", metadata: ["type": "\(message.type)", "reason": "\(error)",
                                                             "refused_unlogged_since_last": "\(suppressed)"])
            }
            return Coordinator.error(.badMessage, "\(error)", requestID: message.requestID)
        }
    }

    private static func status(_ s: State) -> ClusterStatus {
        var status = ClusterStatus()
        let now = BuildIdentity.now()
        status.runID = s.membership.runID
        status.workers = s.membership.workers().map { m in
            ClusterStatus.Worker(role: m.registration.role, id: m.registration.workerID, host: m.registration.host, pid: m.registration.pid,
                                 health: m.health, policyVersion: m.policyVersion, tasksInFlight: m.tasksInFlight,
                                 lastHeartbeatMilliseconds: now > m.lastHeartbeat ? now - m.lastHeartbeat : 0,
                                 weightsChecksum: m.weightsChecksum, tokensProcessed: m.tokensProcessed,
                                 placement: m.registration.placement)
        }
        status.planStage = s.planStage
        status.round = s.round
        status.step = s.step
        status.policyVersion = s.policyVersion
        status.rewardMean = s.rewardMean
        status.kl = s.kl
        status.tokensPerSecond = s.tokens.rate(at: now)
        status.tasksRedispatched = s.redispatched
        status.rejectedFrames = s.rejected
        for role in WorkerRole.allCases {
            let depth = s.dispatcher.queueDepth(role)
            if depth > 0 { status.queueDepths[role] = depth }
        }
        return status
    }
}

/// Failures of the coordinator's plan steps.
public enum CoordinatorError: Error, CustomStringConvertible {
    case taskFailed(String)
    case timeout(Int)
    /// The endpoint to bind is held by another process.
    case endpointInUse(String)

    public var description: String {
        switch self {
        case let .taskFailed(reason): return "a task failed: \(reason)"
        case let .timeout(seconds): return "tasks not done within \(seconds) s"
        case let .endpointInUse(endpoint): return "the coordinator endpoint \(endpoint) is in use"
        }
    }
}


extension Coordinator {
    /// The Prometheus text exposition of the coordinator's state (metric names start with `rlhf_`;
    /// counters end in `_total`).
    public func metrics() -> String { shared.state.withLock { Coordinator.metricsText($0) } }

    private static func metricsText(_ s: State) -> String {
        var out = PrometheusText()
        let members = s.membership.workers()
        out.family("rlhf_workers", "gauge", "Workers known to the coordinator, by role and health.")
        for role in WorkerRole.allCases {
            for health in [Health.healthy, .hung, .suspect, .dead] {
                out.sample("rlhf_workers", ["role": role.rawValue, "health": health.rawValue],
                           Double(members.filter { $0.registration.role == role && $0.health == health }.count))
            }
        }
        out.family("rlhf_queue_depth", "gauge", "Tasks waiting for a worker, by role.")
        for role in WorkerRole.allCases { out.sample("rlhf_queue_depth", ["role": role.rawValue], Double(s.dispatcher.queueDepth(role))) }
        for (name, help, counts) in [("rlhf_tasks_dispatched_total", "Tasks sent to workers, by role.", s.dispatched),
                                     ("rlhf_tasks_completed_total", "Task results accepted, by role.", s.completedTasks),
                                     ("rlhf_tasks_failed_total", "Tasks a worker refused or failed, by role.", s.failedTasks)] {
            out.family(name, "counter", help)
            for role in WorkerRole.allCases { out.sample(name, ["role": role.rawValue], Double(counts[role] ?? 0)) }
        }
        out.family("rlhf_tasks_redispatched_total", "counter", "Tasks put back in the queue because their worker died, left or registered anew.")
        out.sample("rlhf_tasks_redispatched_total", [:], Double(s.redispatched))
        out.family("rlhf_worker_tokens_processed_total", "counter", "Tokens each worker reports processed (generated, scored, trained).")
        for m in members {
            out.sample("rlhf_worker_tokens_processed_total", ["role": m.registration.role.rawValue, "worker": m.registration.workerID],
                       Double(m.tokensProcessed))
        }
        out.family("rlhf_generated_tokens_total", "counter", "Tokens in generate results accepted.")
        out.sample("rlhf_generated_tokens_total", [:], Double(s.tokens.total))
        out.family("rlhf_generated_tokens_per_second", "gauge", "Generated tokens per second over the last 10 s.")
        out.sample("rlhf_generated_tokens_per_second", [:], s.tokens.rate(at: BuildIdentity.now()))
        out.family("rlhf_frames_rejected_total", "counter",
                   "Messages refused, by reason (truncated, oversized, checksum, malformed, wrong_version, unknown_type, tensor, bad_body, fenced, handshake).")
        for reason in ["truncated", "oversized", "checksum", "malformed", "wrong_version", "unknown_type", "tensor", "bad_body", "fenced", "handshake"] {
            out.sample("rlhf_frames_rejected_total", ["reason": reason], Double(s.rejected[reason] ?? 0))
        }
        out.family("rlhf_connections_closed_total", "counter",
                   "Connections closed: peers that left or died, and connections libzmq closed on a frame above the transport's cap "
                   + "(4x the coordinator's largest frame) or a protocol error, which it does not tell apart.")
        out.sample("rlhf_connections_closed_total", [:], Double(s.connectionsClosed))
        for (name, help, value) in [("rlhf_policy_version", "Policy version the cluster serves.", Double(s.policyVersion)),
                                    ("rlhf_round", "Plan round.", Double(s.round)),
                                    ("rlhf_step", "Learner step.", Double(s.step)),
                                    ("rlhf_reward_mean", "Mean reward of the latest batch.", s.rewardMean),
                                    ("rlhf_kl", "KL to the reference policy of the latest batch.", s.kl)] {
            out.family(name, "gauge", help)
            out.sample(name, [:], value)
        }
        return out.text
    }
}

/// Tokens per second over a sliding window of recent results (10 s), for `rlhf status`.
struct ThroughputMeter: Sendable {
    /// `(time in ms, tokens)` of recent results, oldest first.
    private var events: [(UInt64, Int)] = []
    /// All tokens counted since start.
    private(set) var total: UInt64 = 0
    let windowMilliseconds: UInt64 = 10_000

    mutating func add(_ tokens: Int, at now: UInt64) {
        guard tokens > 0 else { return }
        total += UInt64(tokens)
        events.append((now, tokens))
        if let first = events.firstIndex(where: { $0.0 + windowMilliseconds >= now }), first > 0 { events.removeFirst(first) }
    }

    /// Tokens per second over the window ending at `now` (0 when idle for a whole window).
    func rate(at now: UInt64) -> Double {
        let recent = events.filter { $0.0 + windowMilliseconds >= now }
        guard let first = recent.first else { return 0 }
        let span = max(1_000, now - min(first.0, now))
        return Double(recent.reduce(0) { $0 + $1.1 }) * 1_000 / Double(span)
    }
}
