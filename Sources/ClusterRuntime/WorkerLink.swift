/// A worker's side of its bond with the coordinator, as a pure state machine (time is passed in,
/// milliseconds of a monotonic clock): what to do with each answer to a registration, when to say
/// that it is still waiting and where, and when to give up.
///
/// - A worker belongs to one run: it binds to the run of the first coordinator that admits it (or to
///   the run it was started for) and sends that run with every registration after.
/// - A worker refused because another live process holds its id tries again every
///   `duplicateRetryMilliseconds` (the holder may be a killed process whose connection has not closed
///   yet) and gives up after `duplicateGraceMilliseconds` of refusals.
/// - A worker that hears nothing from its coordinator (no acknowledgement, no task) for
///   `orphanTimeoutMilliseconds` gives up: the launch that started it is gone, and no resume adopted it.
public struct WorkerLink: Sendable {
    /// Time limits, in milliseconds.
    public struct Settings: Codable, Sendable, Equatable {
        /// Give up after this long without a word from the coordinator; 0: wait for ever.
        public var orphanTimeoutMilliseconds: UInt64 = 300_000
        /// Give up after being refused as a second holder of an id for this long.
        public var duplicateGraceMilliseconds: UInt64 = 10_000
        /// Between two registrations while refused as a duplicate.
        public var duplicateRetryMilliseconds: UInt64 = 250
        /// Between two "still waiting" notices.
        public var noticeMilliseconds: UInt64 = 5_000
        /// A registration sent again after being forgotten is not repeated within this long.
        public var registrationRepeatMilliseconds: UInt64 = 1_000

        public init() {}
    }

    /// Why the coordinator refused a registration (the wire's `RegisterRefusal`).
    public enum Refusal: Sendable, Equatable {
        /// It does not know the worker (restarted, or declared it dead): register again.
        case unknownWorker
        /// Another live process holds the worker id.
        case duplicateWorkerID
        /// The worker belongs to another run.
        case otherRun
        /// The worker can never join (protocol, build, capacity, role).
        case incompatible
    }

    /// What the worker does next.
    public enum Action: Sendable, Equatable {
        case none
        /// First admission: start heartbeating.
        case started(epoch: UInt64)
        /// Admitted again (after being forgotten).
        case registeredAgain(epoch: UInt64)
        /// Send a registration now.
        case register
        /// Log that it is still waiting for its coordinator, for this many seconds so far.
        case stillWaiting(seconds: Int)
        /// Log this refusal (once: retries follow).
        case refusedForNow(reason: String)
        /// Stop for good, for this reason.
        case giveUp(reason: String)
    }

    public let settings: Settings
    /// The coordinator's address, for messages.
    public let coordinator: String
    /// The run the worker belongs to (nil until bound).
    public private(set) var runID: String?
    /// The current registration's epoch (0 before the first).
    public private(set) var epoch: UInt64 = 0
    /// Whether the coordinator currently knows the worker.
    public private(set) var registered = false
    /// Whether it was ever admitted (heartbeats run from then on).
    public private(set) var started = false
    /// Why it gave up, once it has.
    public private(set) var gaveUp: String?
    private var draining = false
    private var lastHeard: UInt64
    private var lastNotice: UInt64
    private var registrationSentAt: UInt64 = 0
    private var duplicateSince: UInt64?
    private var retryAt: UInt64?

    /// A link to `coordinator` for a worker started at `now`, bound to `runID` if given.
    public init(coordinator: String, runID: String?, settings: Settings = Settings(), now: UInt64) {
        self.coordinator = coordinator
        self.runID = runID.flatMap { $0.isEmpty ? nil : $0 }
        self.settings = settings
        lastHeard = now
        lastNotice = now
    }

    /// A registration went out at `now`.
    public mutating func registrationSent(now: UInt64) {
        registrationSentAt = now
        retryAt = nil
    }

    /// Any message from the coordinator arrived at `now`.
    public mutating func heard(now: UInt64) {
        lastHeard = max(lastHeard, now)
        lastNotice = lastHeard
    }

    /// The worker stops taking work: refusals no longer make it register again.
    public mutating func startDraining() { draining = true }

    /// The coordinator admitted the worker under `epoch`, in run `runID` ("" outside any run).
    public mutating func accepted(epoch: UInt64, runID coordinatorRun: String, now: UInt64) -> Action {
        guard gaveUp == nil else { return .none }
        heard(now: now)
        if let runID, runID != coordinatorRun {
            return giveUp("the coordinator at \(coordinator) runs \(coordinatorRun.isEmpty ? "outside any run" : "run \(coordinatorRun)"), this worker belongs to run \(runID)")
        }
        if runID == nil, !coordinatorRun.isEmpty { runID = coordinatorRun }
        self.epoch = epoch
        registered = true
        duplicateSince = nil
        retryAt = nil
        if started { return .registeredAgain(epoch: epoch) }
        started = true
        return .started(epoch: epoch)
    }

    /// The coordinator refused a registration (or a heartbeat, as `.unknownWorker`) for `reason`.
    public mutating func refused(_ refusal: Refusal, reason: String, now: UInt64) -> Action {
        guard gaveUp == nil else { return .none }
        heard(now: now)
        switch refusal {
        case .unknownWorker:
            // Forgotten: one registration is enough, and none while draining or before the first admission
            // (that one is still on its way).
            guard started, !draining else { return .none }
            guard registered || now >= registrationSentAt + settings.registrationRepeatMilliseconds else { return .none }
            registered = false
            return .register
        case .duplicateWorkerID:
            registered = false
            let since = duplicateSince ?? now
            duplicateSince = since
            if now >= since + settings.duplicateGraceMilliseconds {
                return giveUp("\(reason) (refused for \((now - since) / 1000) s)")
            }
            retryAt = now + settings.duplicateRetryMilliseconds
            return now == since ? .refusedForNow(reason: reason) : .none
        case .otherRun, .incompatible:
            return giveUp(reason)
        }
    }

    /// Called a few times a second: registrations to retry, notices, and the orphan timeout.
    public mutating func tick(now: UInt64) -> Action {
        guard gaveUp == nil else { return .none }
        let silent = now > lastHeard ? now - lastHeard : 0
        if settings.orphanTimeoutMilliseconds > 0, silent >= settings.orphanTimeoutMilliseconds {
            let limit = settings.orphanTimeoutMilliseconds / 1000
            return giveUp(started
                ? "no word from the coordinator at \(coordinator) for \(silent / 1000) s (orphan timeout \(limit) s): its launch is gone and no resume adopted this worker"
                : "no coordinator answered at \(coordinator) within \(limit) s (orphan timeout)")
        }
        if let retryAt, now >= retryAt {
            self.retryAt = nil
            return .register
        }
        if now >= lastNotice + settings.noticeMilliseconds {
            lastNotice = now
            return .stillWaiting(seconds: Int(silent / 1000))
        }
        return .none
    }

    private mutating func giveUp(_ reason: String) -> Action {
        gaveUp = reason
        registered = false
        return .giveUp(reason: reason)
    }
}
