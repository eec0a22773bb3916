import Testing
@testable import ClusterRuntime

/// Who holds a worker id, which run a worker serves, and when a worker gives up: the pure rules
/// (Membership on the coordinator's side, WorkerLink on the worker's), without sockets or sleeps.
@Suite struct WorkerLinkTests {
    func registration(_ id: String, role: WorkerRole = .generator, incarnation: String, run: String = "") -> Membership.Registration {
        .init(workerID: id, role: role, protocolVersion: 1, buildHash: "b1", policyVersion: 0, capacity: 4, host: "h", pid: 7,
              incarnation: incarnation, runID: run)
    }

    @Test func aSecondProcessCannotTakeALiveWorkersID() throws {
        var m = Membership(protocolVersion: 1, buildHash: "b1")
        let first = try m.register(registration("dup", incarnation: "a"), now: 0)
        // Another process (another incarnation), even of another role, is refused while the holder lives.
        #expect(throws: Membership.Refusal.duplicateWorkerID("dup", holder: registration("dup", incarnation: "a"))) {
            try m.register(registration("dup", role: .rewardModel, incarnation: "b"), now: 100)
        }
        #expect(m.members["dup"]?.epoch == first && m.members["dup"]?.registration.role == .generator)
        // The holder registering again (a restarted coordinator forgot it) gets a new epoch.
        let again = try m.register(registration("dup", incarnation: "a"), now: 200)
        #expect(again > first)
        // A suspect holder still holds the id; a dead one frees it.
        _ = m.tick(now: 2_000)
        #expect(m.members["dup"]?.health == .suspect)
        #expect(throws: Membership.Refusal.self) { try m.register(registration("dup", incarnation: "b"), now: 2_000) }
        m.remove("dup")
        let replaced = try m.register(registration("dup", role: .rewardModel, incarnation: "b"), now: 2_100)
        #expect(replaced > again && m.members["dup"]?.registration.role == .rewardModel)
        // A peer that names no incarnation (older peers, the C test peer) takes over as before.
        try m.register(registration("dup", incarnation: ""), now: 2_200)
        #expect(m.members["dup"]?.registration.incarnation == "")
        #expect(!Membership.Refusal.otherRun(workerID: "x", theirs: "r1", ours: "r2").isTransient)
        #expect(Membership.Refusal.duplicateWorkerID("dup", holder: registration("dup", incarnation: "a")).isTransient)
    }

    @Test func aWorkerOfAnotherRunIsRefusedNamingBothRuns() throws {
        var m = Membership(protocolVersion: 1, buildHash: "b1", runID: "run-B")
        do {
            try m.register(registration("g", incarnation: "a", run: "run-A"), now: 0)
            Issue.record("another run's worker was admitted")
        } catch {
            #expect(error == .otherRun(workerID: "g", theirs: "run-A", ours: "run-B"))
            #expect(error.description.contains("belongs to run run-A") && error.description.contains("runs run run-B"))
        }
        // Its own run's workers and workers bound to no run are admitted.
        try m.register(registration("g", incarnation: "a", run: "run-B"), now: 0)
        try m.register(registration("h", incarnation: "c"), now: 0)
        // A coordinator outside any run refuses a worker bound to one.
        var free = Membership(protocolVersion: 1, buildHash: "b1")
        #expect(throws: Membership.Refusal.otherRun(workerID: "g", theirs: "run-A", ours: "")) {
            try free.register(registration("g", incarnation: "a", run: "run-A"), now: 0)
        }
    }

    func link(run: String? = nil, orphan: UInt64 = 10_000) -> WorkerLink {
        var settings = WorkerLink.Settings()
        settings.orphanTimeoutMilliseconds = orphan
        settings.duplicateGraceMilliseconds = 3_000
        settings.duplicateRetryMilliseconds = 250
        settings.noticeMilliseconds = 2_000
        return WorkerLink(coordinator: "tcp://c:1", runID: run, settings: settings, now: 0)
    }

    @Test func aWorkerBindsToTheFirstRunThatAdmitsIt() {
        var l = link()
        l.registrationSent(now: 0)
        #expect(l.accepted(epoch: 5, runID: "run-A", now: 10) == .started(epoch: 5))
        #expect(l.runID == "run-A" && l.epoch == 5 && l.registered)
        // Forgotten (a restarted coordinator): registers once, not on every refused heartbeat.
        #expect(l.refused(.unknownWorker, reason: "unknown", now: 2_000) == .register)
        l.registrationSent(now: 2_000)
        #expect(l.refused(.unknownWorker, reason: "unknown", now: 2_100) == WorkerLink.Action.none)
        #expect(l.refused(.unknownWorker, reason: "unknown", now: 3_100) == .register)
        #expect(l.accepted(epoch: 9, runID: "run-A", now: 3_200) == .registeredAgain(epoch: 9))
        // Told by a coordinator of another run: gives up, naming both.
        var m = link(run: "run-A")
        guard case let .giveUp(reason) = m.refused(.otherRun, reason: "worker g belongs to run run-A, but this coordinator runs run run-B", now: 5) else {
            Issue.record("did not give up"); return
        }
        #expect(reason.contains("run-A") && reason.contains("run-B") && m.gaveUp == reason)
        #expect(m.tick(now: 100_000) == WorkerLink.Action.none)
    }

    @Test func aDuplicateRetriesThenGivesUp() {
        var l = link()
        l.registrationSent(now: 0)
        #expect(l.refused(.duplicateWorkerID, reason: "held", now: 0) == .refusedForNow(reason: "held"))
        #expect(l.tick(now: 100) == WorkerLink.Action.none)
        #expect(l.tick(now: 250) == .register)
        l.registrationSent(now: 250)
        #expect(l.refused(.duplicateWorkerID, reason: "held", now: 260) == WorkerLink.Action.none)
        // The holder went (its connection closed): the next try is admitted.
        var freed = l
        #expect(freed.accepted(epoch: 3, runID: "", now: 600) == .started(epoch: 3))
        // The holder stays: refused for the whole grace, then it gives up.
        #expect(l.refused(.duplicateWorkerID, reason: "held", now: 2_999) == WorkerLink.Action.none)
        #expect(l.refused(.duplicateWorkerID, reason: "held", now: 3_000) == .giveUp(reason: "held (refused for 3 s)"))
    }

    @Test func anOrphanSaysItWaitsThenGivesUp() {
        // Before any coordinator answered: notices every 2 s, then the orphan timeout.
        var l = link(orphan: 5_000)
        #expect(l.tick(now: 1_000) == WorkerLink.Action.none)
        #expect(l.tick(now: 2_000) == .stillWaiting(seconds: 2))
        #expect(l.tick(now: 4_000) == .stillWaiting(seconds: 4))
        guard case let .giveUp(reason) = l.tick(now: 5_000) else { Issue.record("no give-up"); return }
        #expect(reason.contains("no coordinator answered at tcp://c:1 within 5 s"))
        // Admitted, heartbeats acknowledged: never an orphan; then the coordinator goes silent.
        var m = link(orphan: 5_000)
        _ = m.accepted(epoch: 1, runID: "r", now: 100)
        for t in stride(from: UInt64(500), through: 20_000, by: 500) {
            m.heard(now: t)
            #expect(m.tick(now: t + 1) == WorkerLink.Action.none)
        }
        #expect(m.tick(now: 22_000) == .stillWaiting(seconds: 2))
        guard case let .giveUp(silent) = m.tick(now: 25_000) else { Issue.record("no give-up"); return }
        #expect(silent.contains("no word from the coordinator at tcp://c:1 for 5 s"))
        // Timeout 0: waits for ever.
        var patient = link(orphan: 0)
        #expect(patient.tick(now: 10_000_000) == .stillWaiting(seconds: 10_000))
        #expect(patient.gaveUp == nil)
    }

    @Test func refusedFramesAreLoggedAtABoundedRate() {
        var throttle = LogThrottle(intervalMilliseconds: 1_000)
        #expect(throttle.admit(now: 0) == (true, 0))
        // 3,300 bad frames within the same second: none logged, all counted for the next line.
        for t in 0 ..< 3_300 { #expect(throttle.admit(now: UInt64(t % 1_000)).log == false) }
        #expect(throttle.admit(now: 1_000) == (true, 3_300))
        #expect(throttle.admit(now: 5_000) == (true, 0))
    }
}
