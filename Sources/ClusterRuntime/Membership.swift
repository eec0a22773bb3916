/// The coordinator's view of its workers: registration (protocol version and build hash checked),
/// heartbeats, and health by heartbeat age. A pure state machine: time is passed in (milliseconds of
/// a monotonic clock), so it is tested without sockets or sleeps.
public struct Membership: Sendable {
    /// Thresholds, in heartbeat intervals missed.
    public struct Settings: Codable, Sendable, Equatable {
        public var heartbeatIntervalMilliseconds: UInt64 = 500
        /// Suspect after this many intervals without a heartbeat.
        public var suspectAfterIntervals: UInt64 = 3
        /// Dead after this many.
        public var deadAfterIntervals: UInt64 = 10
        /// A worker of `progressRoles` holding tasks whose reported progress (tokens processed) has
        /// not moved for this long is hung. Generators report progress every decode step; the other
        /// roles once per request, so they are not judged by it.
        public var hangAfterMilliseconds: UInt64 = 1_000
        public var progressRoles: Set<WorkerRole> = [.generator]

        public init() {}
        public static let `default` = Settings()
    }

    /// What a worker says when it registers.
    public struct Registration: Sendable, Equatable {
        public var workerID: String
        public var role: WorkerRole
        public var protocolVersion: UInt32
        public var buildHash: String
        public var policyVersion: UInt64
        public var capacity: Int
        public var host: String
        public var pid: Int32
        /// Drawn by the worker process at start and kept for its life ("" from a peer that sends none):
        /// two processes claiming one id differ here.
        public var incarnation: String
        /// The run the worker belongs to ("": not bound to one yet).
        public var runID: String
        /// Where a scheduler placed it (nil outside one).
        public var placement: SchedulerPlacement?

        public init(workerID: String, role: WorkerRole, protocolVersion: UInt32, buildHash: String, policyVersion: UInt64,
                    capacity: Int, host: String, pid: Int32, incarnation: String = "", runID: String = "", placement: SchedulerPlacement? = nil) {
            self.workerID = workerID
            self.role = role
            self.protocolVersion = protocolVersion
            self.buildHash = buildHash
            self.policyVersion = policyVersion
            self.capacity = capacity
            self.host = host
            self.pid = pid
            self.incarnation = incarnation
            self.runID = runID
            self.placement = placement
        }

        /// "generator pid 123 on host h", for messages.
        public var summary: String { "\(role.rawValue) pid \(pid) on host \(host.isEmpty ? "?" : host)" }
    }

    /// One worker as tracked.
    public struct Member: Sendable, Equatable {
        public var registration: Registration
        public var health: Health
        public var lastHeartbeat: UInt64
        public var policyVersion: UInt64
        public var tasksInFlight: Int
        /// CRC-32C of the weights the worker holds, as last reported (0 before a report).
        public var weightsChecksum: UInt32 = 0
        /// Tokens the worker has processed since it started, as last reported.
        public var tokensProcessed: UInt64 = 0
        /// The worker is finishing its tasks before leaving: no new work goes to it.
        public var draining = false
        /// This registration's epoch: messages stamped with another are from an earlier life of the
        /// worker (before it was declared dead) and are refused.
        public var epoch: UInt64 = 0
        /// When `tokensProcessed` last moved, or the worker last became busy.
        public var lastProgressAt: UInt64 = 0
    }

    /// A health transition reported by `tick`.
    public struct Change: Sendable, Equatable {
        public var workerID: String
        public var from: Health
        public var to: Health
    }

    /// Why a registration was refused.
    public enum Refusal: Error, Equatable, Sendable, CustomStringConvertible {
        case protocolVersion(theirs: UInt32, ours: UInt32)
        case buildHash(theirs: String, ours: String)
        case capacity(Int)
        case emptyWorkerID
        /// Another live process (`holder`) is registered under the id.
        case duplicateWorkerID(String, holder: Registration)
        /// The worker belongs to run `theirs`; this membership is run `ours` ("" when outside any run).
        case otherRun(workerID: String, theirs: String, ours: String)

        public var description: String {
            switch self {
            case let .protocolVersion(theirs, ours): return "protocol version \(theirs), the coordinator speaks \(ours)"
            case let .buildHash(theirs, ours): return "build \(theirs) differs from the coordinator's \(ours): every peer must run the same build"
            case let .capacity(c): return "capacity must be at least 1, got \(c)"
            case .emptyWorkerID: return "worker id is empty"
            case let .duplicateWorkerID(id, holder):
                return "worker id \(id) is held by a live \(holder.summary); every worker needs its own --id"
            case let .otherRun(id, theirs, ours):
                return "worker \(id) belongs to run \(theirs), but this coordinator runs "
                    + (ours.isEmpty ? "outside any run" : "run \(ours)")
                    + ": a worker serves the one run it joined (left over from another launch?)"
            }
        }

        /// Whether the worker may be admitted later without changing anything: a duplicate id is freed
        /// when its holder goes.
        public var isTransient: Bool {
            if case .duplicateWorkerID = self { return true }
            return false
        }
    }

    public let settings: Settings
    /// The run this membership admits workers of ("": none in particular). A worker bound to another
    /// run is refused; one not yet bound is admitted (and binds to this run).
    public let runID: String
    public let protocolVersion: UInt32
    public let buildHash: String
    public private(set) var members: [String: Member] = [:]
    /// The last epoch handed out (epochs are never reused, so a late message cannot match a new life).
    private var lastEpoch: UInt64 = 0
    /// Transitions made by heartbeats, reported by the next `tick`.
    private var pending: [Change] = []

    /// A membership that admits peers speaking `protocolVersion` built as `buildHash`; the first epoch
    /// handed out is `firstEpoch + 1`.
    public init(protocolVersion: UInt32, buildHash: String, settings: Settings = .default, firstEpoch: UInt64 = 0, runID: String = "") {
        self.protocolVersion = protocolVersion
        self.buildHash = buildHash
        self.settings = settings
        self.runID = runID
        lastEpoch = firstEpoch
    }

    /// Admits a worker (again, after it was declared dead or forgotten) and returns its new epoch.
    /// Refused: another run's worker, and a second process claiming the id of a live worker (the
    /// first keeps it; a process registering again under its own id is admitted anew).
    @discardableResult
    public mutating func register(_ r: Registration, now: UInt64) throws(Refusal) -> UInt64 {
        guard !r.workerID.isEmpty else { throw .emptyWorkerID }
        guard r.protocolVersion == protocolVersion else { throw .protocolVersion(theirs: r.protocolVersion, ours: protocolVersion) }
        guard r.buildHash == buildHash else { throw .buildHash(theirs: r.buildHash, ours: buildHash) }
        guard r.capacity >= 1 else { throw .capacity(r.capacity) }
        guard r.runID.isEmpty || r.runID == runID else { throw .otherRun(workerID: r.workerID, theirs: r.runID, ours: runID) }
        if let holder = members[r.workerID], holder.health != .dead, !holder.registration.incarnation.isEmpty,
           !r.incarnation.isEmpty, holder.registration.incarnation != r.incarnation {
            throw .duplicateWorkerID(r.workerID, holder: holder.registration)
        }
        lastEpoch += 1
        members[r.workerID] = Member(registration: r, health: .healthy, lastHeartbeat: now, policyVersion: r.policyVersion,
                                     tasksInFlight: 0, epoch: lastEpoch, lastProgressAt: now)
        return lastEpoch
    }

    /// Whether a message from `workerID` stamped with `epoch` comes from its current, live registration.
    public func isCurrent(_ workerID: String, epoch: UInt64) -> Bool {
        guard let m = members[workerID], m.health != .dead else { return false }
        return m.epoch == epoch
    }

    /// Records a heartbeat; false for an unknown (or dead) worker, which must register again.
    @discardableResult
    public mutating func heartbeat(_ workerID: String, now: UInt64, policyVersion: UInt64, tasksInFlight: Int,
                                   weightsChecksum: UInt32 = 0, tokensProcessed: UInt64 = 0, draining: Bool = false) -> Bool {
        guard var m = members[workerID], m.health != .dead else { return false }
        m.lastHeartbeat = max(m.lastHeartbeat, now)
        m.policyVersion = policyVersion
        if tokensProcessed > m.tokensProcessed || m.tasksInFlight == 0 || tasksInFlight == 0 { m.lastProgressAt = now }
        m.tasksInFlight = tasksInFlight
        m.weightsChecksum = weightsChecksum
        m.tokensProcessed = max(m.tokensProcessed, tokensProcessed)
        m.draining = draining
        let health = isHung(m, now: now) ? Health.hung : .healthy
        if health != m.health { pending.append(Change(workerID: workerID, from: m.health, to: health)) }
        m.health = health
        members[workerID] = m
        return true
    }

    private func isHung(_ m: Member, now: UInt64) -> Bool {
        settings.progressRoles.contains(m.registration.role) && m.tasksInFlight > 0
            && now > m.lastProgressAt + settings.hangAfterMilliseconds
    }

    /// Marks a worker dead at once (it left, or its connection failed for good).
    @discardableResult
    public mutating func remove(_ workerID: String) -> Change? {
        guard var m = members[workerID], m.health != .dead else { return nil }
        let change = Change(workerID: workerID, from: m.health, to: .dead)
        m.health = .dead
        members[workerID] = m
        return change
    }

    /// Forgets a worker that left cleanly (drained and said goodbye).
    @discardableResult
    public mutating func leave(_ workerID: String) -> Bool { members.removeValue(forKey: workerID) != nil }

    /// Updates health from heartbeat ages; returns the transitions.
    public mutating func tick(now: UInt64) -> [Change] {
        var changes = pending
        pending.removeAll()
        let interval = settings.heartbeatIntervalMilliseconds
        for id in members.keys.sorted() {
            var m = members[id]!
            guard m.health != .dead else { continue }
            let age = now > m.lastHeartbeat ? now - m.lastHeartbeat : 0
            let health: Health = age >= interval * settings.deadAfterIntervals ? .dead
                : age >= interval * settings.suspectAfterIntervals ? .suspect : isHung(m, now: now) ? .hung : .healthy
            if health != m.health {
                changes.append(Change(workerID: id, from: m.health, to: health))
                m.health = health
                members[id] = m
            }
        }
        return changes
    }

    /// Workers of `role` in `health` (all healths when nil), sorted by id.
    public func workers(role: WorkerRole? = nil, health: Health? = nil) -> [Member] {
        members.values.filter { (role == nil || $0.registration.role == role) && (health == nil || $0.health == health) }
            .sorted { $0.registration.workerID < $1.registration.workerID }
    }
}
