/// What `rlhf status` shows: the workers and their health, the plan's progress, throughput, and what
/// the coordinator refused. Its wire form (STATUS_REPLY) is in `ClusterStatus+Wire.swift`.
public struct ClusterStatus: Sendable, Equatable {
    /// One worker as the coordinator sees it.
    public struct Worker: Sendable, Equatable {
        public var role: WorkerRole
        public var id: String
        public var host: String
        public var pid: Int32
        public var health: Health
        public var policyVersion: UInt64
        public var tasksInFlight: Int
        /// Milliseconds since its last heartbeat.
        public var lastHeartbeatMilliseconds: UInt64
        /// CRC-32C of the weights it holds.
        public var weightsChecksum: UInt32
        public var tokensProcessed: UInt64
        /// Where a scheduler placed it (nil outside one).
        public var placement: SchedulerPlacement?

        public init(role: WorkerRole, id: String, host: String, pid: Int32, health: Health, policyVersion: UInt64, tasksInFlight: Int,
                    lastHeartbeatMilliseconds: UInt64, weightsChecksum: UInt32, tokensProcessed: UInt64, placement: SchedulerPlacement? = nil) {
            self.role = role
            self.id = id
            self.host = host
            self.pid = pid
            self.health = health
            self.policyVersion = policyVersion
            self.tasksInFlight = tasksInFlight
            self.lastHeartbeatMilliseconds = lastHeartbeatMilliseconds
            self.weightsChecksum = weightsChecksum
            self.tokensProcessed = tokensProcessed
            self.placement = placement
        }
    }

    /// The run the coordinator serves ("" for none in particular).
    public var runID = ""
    public var workers: [Worker] = []
    /// What the plan is doing (shown as e.g. "V1: train").
    public var planStage = PlanStage.idle
    public var round: UInt32 = 0
    public var step: UInt64 = 0
    public var policyVersion: UInt64 = 0
    public var rewardMean = 0.0
    public var kl = 0.0
    /// Generated tokens per second over the last 10 s.
    public var tokensPerSecond = 0.0
    /// Calls sent again because their worker died, left or registered anew.
    public var tasksRedispatched: UInt64 = 0
    /// Messages refused, by reason ("checksum", "fenced", "handshake", ...).
    public var rejectedFrames: [String: UInt64] = [:]
    /// Calls waiting for a worker, by role (roles with none waiting are left out).
    public var queueDepths: [WorkerRole: Int] = [:]

    public init() {}
}
