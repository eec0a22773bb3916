import ClusterRuntime
import Testing
import Wire

/// The status as `rlhf status` gets it survives its STATUS_REPLY form; enumerations (role, health),
/// not strings, travel.
@Suite struct ClusterStatusTests {
    @Test func theStatusRoundTripsThroughItsWireForm() throws {
        var status = ClusterStatus()
        status.runID = "run-1"
        status.workers = Health.allCases.enumerated().map { i, health in
            ClusterStatus.Worker(role: WorkerRole.allCases[i % WorkerRole.allCases.count], id: "w-\(i)", host: "h", pid: Int32(100 + i), health: health,
                                 policyVersion: 3, tasksInFlight: i, lastHeartbeatMilliseconds: 40, weightsChecksum: 0xFFFF_FFFF, tokensProcessed: 1 << 40)
        }
        status.planStage = PlanStage(.train, round: "V1")
        status.round = 2
        status.step = 9
        status.policyVersion = 3
        status.rewardMean = 0.25
        status.kl = 0.5
        status.tokensPerSecond = 1234.5
        status.tasksRedispatched = 7
        status.rejectedFrames = ["checksum": 3, "fenced": 1]
        status.queueDepths = [.generator: 12, .learner: 1]
        let payload = try status.wirePayload()
        #expect(try ClusterStatus(wirePayload: payload) == status)
        #expect(status.wire.workers.map(\.health) == [.healthy, .hung, .suspect, .dead])
        // A worker of no role is refused by name.
        var reply = status.wire
        reply.workers[0].role = .coordinator
        #expect(throws: WireError.self) { _ = try ClusterStatus(wire: reply) }
        #expect(try Ping(wirePayload: Ping(sender: "probe").wirePayload()) == Ping(sender: "probe"))
    }
}
