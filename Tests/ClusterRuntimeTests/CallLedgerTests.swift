import Testing
@testable import ClusterRuntime

/// A call asked again under its request id runs once, and every asker is answered under the epoch it
/// asked under: the worker's pure rules, without sockets.
@Suite struct CallLedgerTests {
    typealias Ledger = CallLedger<String>
    let step = Ledger.Call(requestID: 7, digest: 0xABCD)

    func isRun(_ a: Ledger.Admission) -> Bool { if case .run = a { return true }; return false }
    func isJoined(_ a: Ledger.Admission) -> Bool { if case .joined = a { return true }; return false }
    func replayed(_ a: Ledger.Admission) -> String? { if case let .replay(r) = a { return r }; return nil }

    @Test func aCallAskedAgainWhileItRunsIsAnsweredUnderBothEpochsAndRunsOnce() {
        var ledger = Ledger()
        #expect(isRun(ledger.admit(step, epoch: 3)))
        #expect(ledger.inFlight == 1)
        // Declared dead mid-call, registered again under epoch 4, given the call back: it joins the run.
        #expect(isJoined(ledger.admit(step, epoch: 4)))
        #expect(isJoined(ledger.admit(step, epoch: 4)))
        #expect(ledger.inFlight == 1)
        #expect(ledger.finish(step, reply: "version 2") == [3, 4])
        #expect(ledger.inFlight == 0)
        // Asked once more after it finished (a restarted coordinator): the same answer, not a second run.
        #expect(replayed(ledger.admit(step, epoch: 5)) == "version 2")
    }

    @Test func anotherCallOrOtherContentUnderTheSameIDRuns() {
        var ledger = Ledger()
        #expect(isRun(ledger.admit(step, epoch: 1)))
        // The same request id with other content is another call (a coordinator that numbers anew).
        let other = Ledger.Call(requestID: 7, digest: 0x1234)
        #expect(isRun(ledger.admit(other, epoch: 1)))
        #expect(ledger.inFlight == 2)
        #expect(ledger.finish(other, reply: "b") == [1])
        #expect(ledger.finish(step, reply: "a") == [1])
        #expect(replayed(ledger.admit(step, epoch: 1)) == "a")
        #expect(isRun(ledger.admit(other, epoch: 1)), "only the last answer is kept")
    }

    @Test func aDrainingWorkerRefusesNewCallsButAnswersTheOnesItRuns() {
        var ledger = Ledger()
        #expect(isRun(ledger.admit(step, epoch: 1)))
        ledger.draining = true
        if case .draining = ledger.admit(.init(requestID: 8, digest: 1), epoch: 1) {} else { Issue.record("a new call ran while draining") }
        #expect(isJoined(ledger.admit(step, epoch: 2)))
        #expect(ledger.finish(step, reply: "done") == [1, 2])
        #expect(replayed(ledger.admit(step, epoch: 2)) == "done")
    }
}
