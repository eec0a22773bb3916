@testable import ClusterRuntime
import Testing

/// The load balancer alone: which worker of a role gets the next call.
@Suite struct LoadBalancerTests {
    @Test func theEarliestExpectedFinishWinsWithinCapacityAndPausedWorkersAreSkipped() {
        var balancer = LoadBalancer()
        #expect(balancer.pick(.generator) == nil)
        balancer.addWorker("gen-b", role: .generator, capacity: 2)
        balancer.addWorker("gen-a", role: .generator, capacity: 2)
        balancer.addWorker("rm-0", role: .rewardModel, capacity: 1)
        // Ties go by id; the other role's worker is never picked for a generator call.
        #expect(balancer.pick(.generator) == "gen-a")
        #expect(balancer.pick(.rewardModel) == "rm-0")
        // gen-a turns out slow (100 ms a call), gen-b fast (10 ms): gen-b gets the next calls, two at once at most.
        balancer.started(1, on: "gen-a")
        balancer.finished(1, on: "gen-a", milliseconds: 100)
        balancer.started(2, on: "gen-b")
        balancer.finished(2, on: "gen-b", milliseconds: 10)
        #expect(balancer.pick(.generator) == "gen-b")
        balancer.started(3, on: "gen-b")
        #expect(balancer.pick(.generator) == "gen-b") // 2 x 2.8 ms expected beats 1 x 20.8 ms
        balancer.started(4, on: "gen-b")
        #expect(balancer.pick(.generator) == "gen-a") // gen-b is at its capacity
        // Paused (suspect, hung, draining) is not picked; resumed it is again; removed it is gone.
        balancer.pause("gen-a")
        #expect(balancer.pick(.generator) == nil)
        balancer.resume("gen-a")
        #expect(balancer.pick(.generator) == "gen-a")
        #expect(balancer.removeWorker("gen-a") && !balancer.removeWorker("gen-a"))
        #expect(balancer.pick(.generator) == nil)
    }
}
