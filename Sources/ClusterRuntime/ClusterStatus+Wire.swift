import Wire

// The one place where the status values meet their generated messages (STATUS_REPLY, `control.proto`).

extension Health {
    var wire: Rlhf_V1_WorkerHealth {
        switch self {
        case .healthy: return .healthy
        case .hung: return .hung
        case .suspect: return .suspect
        case .dead: return .dead
        }
    }

    init(wire: Rlhf_V1_WorkerHealth) throws {
        switch wire {
        case .healthy: self = .healthy
        case .hung: self = .hung
        case .suspect: self = .suspect
        case .dead: self = .dead
        default: throw WireError.malformedBody("unknown worker health \(wire)")
        }
    }
}

extension PlanStage.Phase {
    var wire: Rlhf_V1_PlanPhase {
        switch self {
        case .idle: return .planIdle
        case .generate: return .planGenerate
        case .sample: return .planSample
        case .score: return .planScore
        case .reference: return .planReference
        case .train: return .planTrain
        case .retrain: return .planRetrain
        case .sync: return .planSync
        case .evaluate: return .planEvaluate
        case .ppo: return .planPpo
        case .samplePairs: return .planSamplePairs
        case .hold: return .planHold
        case .done: return .planDone
        }
    }

    init(wire: Rlhf_V1_PlanPhase) throws {
        switch wire {
        case .planIdle: self = .idle
        case .planGenerate: self = .generate
        case .planSample: self = .sample
        case .planScore: self = .score
        case .planReference: self = .reference
        case .planTrain: self = .train
        case .planRetrain: self = .retrain
        case .planSync: self = .sync
        case .planEvaluate: self = .evaluate
        case .planPpo: self = .ppo
        case .planSamplePairs: self = .samplePairs
        case .planHold: self = .hold
        case .planDone: self = .done
        default: throw WireError.malformedBody("unknown plan phase \(wire)")
        }
    }
}

extension ClusterStatus: WireCodable {
    /// The generated form: what STATUS_REPLY carries (C and other peers read it).
    public var wire: Rlhf_V1_StatusReply {
        var reply = Rlhf_V1_StatusReply()
        reply.runID = runID
        reply.workers = workers.map { w in
            var s = Rlhf_V1_WorkerStatus()
            s.role = w.role.wire
            s.workerID = w.id
            s.host = w.host
            s.pid = w.pid
            s.health = w.health.wire
            s.policyVersion = w.policyVersion
            s.tasksInFlight = UInt32(clamping: w.tasksInFlight)
            s.lastHeartbeatMs = w.lastHeartbeatMilliseconds
            s.weightsCrc32C = w.weightsChecksum
            s.tokensProcessed = w.tokensProcessed
            if let placement = w.placement { s.placement = placement.wire }
            return s
        }
        reply.planStage.phase = planStage.phase.wire
        reply.planStage.round = planStage.round
        reply.planStage.subject = planStage.subject
        reply.round = round
        reply.step = step
        reply.policyVersion = policyVersion
        reply.rewardMean = rewardMean
        reply.kl = kl
        reply.tokensPerSecond = tokensPerSecond
        reply.tasksRedispatched = tasksRedispatched
        reply.rejectedFrames = rejectedFrames.keys.sorted().map { reason in
            var r = Rlhf_V1_RejectedFrames()
            r.reason = reason
            r.count = rejectedFrames[reason]!
            return r
        }
        reply.queueDepths = WorkerRole.allCases.compactMap { role in
            guard let depth = queueDepths[role] else { return nil }
            var q = Rlhf_V1_QueueDepth()
            q.queue = role.rawValue
            q.depth = UInt32(clamping: depth)
            return q
        }
        return reply
    }

    /// Reads STATUS_REPLY back, refusing an unknown role or health.
    public init(wire reply: Rlhf_V1_StatusReply) throws {
        self.init()
        runID = reply.runID
        workers = try reply.workers.map { s in
            guard let role = WorkerRole(wire: s.role) else { throw WireError.malformedBody("worker \(s.workerID) has no worker role (\(s.role))") }
            return Worker(role: role, id: s.workerID, host: s.host, pid: s.pid, health: try Health(wire: s.health), policyVersion: s.policyVersion,
                          tasksInFlight: Int(s.tasksInFlight), lastHeartbeatMilliseconds: s.lastHeartbeatMs, weightsChecksum: s.weightsCrc32C,
                          tokensProcessed: s.tokensProcessed, placement: s.hasPlacement ? SchedulerPlacement(wire: s.placement) : nil)
        }
        planStage = PlanStage(try PlanStage.Phase(wire: reply.planStage.phase), round: reply.planStage.round, subject: reply.planStage.subject)
        round = reply.round
        step = reply.step
        policyVersion = reply.policyVersion
        rewardMean = reply.rewardMean
        kl = reply.kl
        tokensPerSecond = reply.tokensPerSecond
        tasksRedispatched = reply.tasksRedispatched
        rejectedFrames = Dictionary(reply.rejectedFrames.map { ($0.reason, $0.count) }, uniquingKeysWith: +)
        queueDepths = Dictionary(try reply.queueDepths.map { q in
            guard let role = WorkerRole(rawValue: q.queue) else { throw WireError.malformedBody("queue depth of unknown role \(q.queue)") }
            return (role, Int(q.depth))
        }, uniquingKeysWith: +)
    }

    public func wirePayload() throws -> WirePayload { try wire.wirePayload() }

    public init(wirePayload: WirePayload) throws { try self.init(wire: try Rlhf_V1_StatusReply(wirePayload: wirePayload)) }
}

/// A liveness probe's argument and answer: the remote-call round trip `rlhf bench transport` times.
public struct Ping: Sendable, Equatable, WireCodable {
    /// Who asks (echoed back).
    public var sender: String

    public init(sender: String) { self.sender = sender }

    public func wirePayload() throws -> WirePayload {
        var h = Rlhf_V1_Heartbeat()
        h.workerID = sender
        return try h.wirePayload()
    }

    public init(wirePayload: WirePayload) throws { sender = try Rlhf_V1_Heartbeat(wirePayload: wirePayload).workerID }
}
