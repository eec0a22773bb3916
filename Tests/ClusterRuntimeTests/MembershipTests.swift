import Testing
@testable import ClusterRuntime

@Suite struct MembershipTests {
    func registration(_ id: String, role: WorkerRole = .generator, build: String = "b1", version: UInt32 = 1) -> Membership.Registration {
        .init(workerID: id, role: role, protocolVersion: version, buildHash: build, policyVersion: 0, capacity: 4, host: "h", pid: 1)
    }

    @Test func healthFollowsHeartbeats() throws {
        var m = Membership(protocolVersion: 1, buildHash: "b1")
        try m.register(registration("g1"), now: 0)
        try m.register(registration("g2"), now: 0)
        #expect(m.tick(now: 1000).isEmpty)
        m.heartbeat("g1", now: 1400, policyVersion: 2, tasksInFlight: 1)
        #expect(m.tick(now: 1500) == [.init(workerID: "g2", from: .healthy, to: .suspect)])
        let changes = m.tick(now: 5000)
        #expect(changes == [.init(workerID: "g1", from: .healthy, to: .suspect), .init(workerID: "g2", from: .suspect, to: .dead)])
        // A dead worker must register again; a heartbeat does not revive it.
        let revived = m.heartbeat("g2", now: 5100, policyVersion: 2, tasksInFlight: 0)
        #expect(!revived)
        try m.register(registration("g2"), now: 5200)
        #expect(m.members["g2"]?.health == .healthy)
        #expect(m.workers(role: .generator, health: .healthy).map(\.registration.workerID) == ["g2"])
    }

    @Test func suspectRecoversOnHeartbeat() throws {
        var m = Membership(protocolVersion: 1, buildHash: "b1")
        try m.register(registration("r1", role: .rewardModel), now: 0)
        _ = m.tick(now: 2000)
        #expect(m.members["r1"]?.health == .suspect)
        m.heartbeat("r1", now: 2100, policyVersion: 0, tasksInFlight: 0)
        #expect(m.members["r1"]?.health == .healthy)
        let removed = m.remove("r1"), again = m.remove("r1")
        #expect(removed == .init(workerID: "r1", from: .healthy, to: .dead))
        #expect(again == nil)
    }

    @Test func recoveryIsReportedAndStalledGeneratorsAreHung() throws {
        var m = Membership(protocolVersion: 1, buildHash: "b1")
        try m.register(registration("g"), now: 0)
        try m.register(registration("r", role: .rewardModel), now: 0)
        #expect(m.tick(now: 1600).map(\.to) == [.suspect, .suspect])
        // A heartbeat revives a suspect worker; the next tick reports it (the dispatcher resumes on it).
        m.heartbeat("g", now: 1700, policyVersion: 0, tasksInFlight: 1, tokensProcessed: 10)
        m.heartbeat("r", now: 1700, policyVersion: 0, tasksInFlight: 1, tokensProcessed: 0)
        #expect(m.tick(now: 1750) == [.init(workerID: "g", from: .suspect, to: .healthy), .init(workerID: "r", from: .suspect, to: .healthy)])
        // Heartbeats on time but no progress with a task held: the generator is hung after 1 s; the
        // reward model (progress once per request) is not judged by it.
        for t in stride(from: 1800, through: 2800, by: 200) {
            m.heartbeat("g", now: UInt64(t), policyVersion: 0, tasksInFlight: 1, tokensProcessed: 10)
            m.heartbeat("r", now: UInt64(t), policyVersion: 0, tasksInFlight: 1, tokensProcessed: 0)
        }
        #expect(m.tick(now: 2850) == [.init(workerID: "g", from: .healthy, to: .hung)])
        m.heartbeat("g", now: 2900, policyVersion: 0, tasksInFlight: 1, tokensProcessed: 11)
        #expect(m.tick(now: 2950) == [.init(workerID: "g", from: .hung, to: .healthy)])
    }

    @Test func strangersAreRefused() {
        var m = Membership(protocolVersion: 1, buildHash: "b1")
        #expect(throws: Membership.Refusal.buildHash(theirs: "other", ours: "b1")) { try m.register(registration("x", build: "other"), now: 0) }
        #expect(throws: Membership.Refusal.protocolVersion(theirs: 2, ours: 1)) { try m.register(registration("x", version: 2), now: 0) }
        #expect(throws: Membership.Refusal.emptyWorkerID) { try m.register(registration(""), now: 0) }
        #expect(m.members.isEmpty)
    }
}

@Suite struct TaskDispatcherTests {
    @Test func everyTaskOnceWithinCapacity() {
        var d = TaskDispatcher<String>()
        d.addWorker("g1", role: .generator, capacity: 2)
        d.addWorker("g2", role: .generator, capacity: 2)
        d.addWorker("r1", role: .rewardModel, capacity: 1)
        for i in 0..<6 { d.enqueue(requestID: UInt64(i), role: .generator, payload: "task \(i)") }
        d.enqueue(requestID: 100, role: .rewardModel, payload: "score")
        d.enqueue(requestID: 3, role: .generator, payload: "again") // idempotent: ignored
        let first = d.assign(now: 0)
        #expect(first.count == 5) // 2 + 2 generators, 1 reward model
        #expect(Set(first.filter { $0.workerID == "r1" }.map(\.requestID)) == [100])
        #expect(d.queueDepth(.generator) == 2)
        for a in first {
            guard case .accepted = d.complete(requestID: a.requestID, workerID: a.workerID, now: 10) else {
                Issue.record("result refused"); continue
            }
        }
        let second = d.assign(now: 10)
        #expect(second.count == 2)
        var seen = Set(first.map(\.requestID))
        for a in second { #expect(seen.insert(a.requestID).inserted) }
        for a in second { _ = d.complete(requestID: a.requestID, workerID: a.workerID, now: 20) }
        #expect(seen == Set((0..<6).map(UInt64.init) + [100]))
        guard case .duplicate = d.complete(requestID: 0, workerID: "g1", now: 30) else { Issue.record("duplicate accepted"); return }
        guard case .unknown = d.complete(requestID: 999, workerID: "g1", now: 30) else { Issue.record("unknown accepted"); return }
    }

    @Test func deadWorkersTasksAreRedispatched() {
        var d = TaskDispatcher<Int>()
        d.addWorker("g1", role: .generator, capacity: 4)
        d.addWorker("g2", role: .generator, capacity: 4)
        for i in 0..<4 { d.enqueue(requestID: UInt64(i), role: .generator, payload: i) }
        let assigned = d.assign(now: 0)
        let onG1 = assigned.filter { $0.workerID == "g1" }.map(\.requestID)
        #expect(!onG1.isEmpty)
        #expect(d.removeWorker("g1") == onG1.sorted())
        let again = d.assign(now: 5)
        #expect(again.map(\.requestID).sorted() == onG1.sorted())
        #expect(again.allSatisfy { $0.workerID == "g2" })
        // The dead worker's late result is fenced while g2 holds the task, and a duplicate after.
        guard case .fenced = d.complete(requestID: onG1[0], workerID: "g1", now: 8) else { Issue.record("fenced result accepted"); return }
        for a in again {
            guard case .accepted = d.complete(requestID: a.requestID, workerID: "g2", now: 9) else { Issue.record("holder's result refused"); return }
        }
        guard case .duplicate = d.complete(requestID: onG1[0], workerID: "g1", now: 10) else { Issue.record("late duplicate accepted"); return }
        // Queued again (no worker free) and not yet re-dispatched: the dead worker's result is fenced too.
        var q = TaskDispatcher<Int>()
        q.addWorker("a", role: .generator, capacity: 1)
        q.enqueue(requestID: 1, role: .generator, payload: 1)
        _ = q.assign(now: 0)
        q.removeWorker("a")
        guard case .fenced = q.complete(requestID: 1, workerID: "a", now: 1) else { Issue.record("result of a re-queued task accepted"); return }
        #expect(q.queueDepth(.generator) == 1)
    }

    /// A task a draining worker refused (sent before its draining heartbeat arrived) goes back to the
    /// front of the queue for another worker, and the refusing worker gets no more.
    @Test func aDrainingWorkersRefusalGoesToAnotherWorker() {
        var d = TaskDispatcher<Int>()
        d.addWorker("g1", role: .generator, capacity: 2)
        for i in 0..<3 { d.enqueue(requestID: UInt64(i), role: .generator, payload: i) }
        let first = d.assign(now: 0)
        #expect(first.map(\.requestID) == [0, 1] && first.allSatisfy { $0.workerID == "g1" })
        let handed = d.handBack(requestID: 0, workerID: "g1")
        let again = d.handBack(requestID: 0, workerID: "g1"), notHolder = d.handBack(requestID: 1, workerID: "g2")
        #expect(handed && !again && !notHolder, "only the holder hands a task back, once")
        let none = d.assign(now: 1)
        #expect(none.isEmpty, "the draining worker was given more work")
        d.addWorker("g2", role: .generator, capacity: 4)
        let second = d.assign(now: 2)
        #expect(second.map(\.requestID) == [0, 2] && second.allSatisfy { $0.workerID == "g2" })
        // g1 finishes what it had started; the handed-back task's late result from g1 is fenced.
        guard case .accepted = d.complete(requestID: 1, workerID: "g1", now: 3) else { Issue.record("g1's started task refused"); return }
        guard case .fenced = d.complete(requestID: 0, workerID: "g1", now: 3) else { Issue.record("a handed-back task's result accepted from g1"); return }
        for a in second {
            guard case .accepted = d.complete(requestID: a.requestID, workerID: "g2", now: 4) else { Issue.record("g2's result refused"); return }
        }
        #expect(d.inFlightCount == 0 && d.queueDepth(.generator) == 0)
    }

    @Test func epochsFenceEarlierLives() throws {
        var m = Membership(protocolVersion: 1, buildHash: "b")
        let r = Membership.Registration(workerID: "g", role: .generator, protocolVersion: 1, buildHash: "b", policyVersion: 0,
                                        capacity: 1, host: "h", pid: 1)
        let first = try m.register(r, now: 0)
        #expect(m.isCurrent("g", epoch: first))
        m.remove("g")
        #expect(!m.isCurrent("g", epoch: first))
        let second = try m.register(r, now: 10)
        #expect(second != first)
        #expect(m.isCurrent("g", epoch: second) && !m.isCurrent("g", epoch: first))
    }

    @Test func slowWorkersGetLess() {
        var d = TaskDispatcher<Int>()
        d.addWorker("fast", role: .generator, capacity: 8)
        d.addWorker("slow", role: .generator, capacity: 8)
        var now: UInt64 = 0
        var next: UInt64 = 0
        var perWorker: [String: Int] = [:]
        // The slow worker takes 10x as long per task.
        for _ in 0..<40 {
            for _ in 0..<4 { d.enqueue(requestID: next, role: .generator, payload: 0); next += 1 }
            for a in d.assign(now: now) {
                perWorker[a.workerID, default: 0] += 1
                _ = d.complete(requestID: a.requestID, workerID: a.workerID, now: now + (a.workerID == "slow" ? 100 : 10))
            }
            now += 100
        }
        #expect(perWorker["fast", default: 0] > 2 * perWorker["slow", default: 0], "\(perWorker)")
    }
}
