import ClusterRuntime
import Foundation
import LlamaCore
import Recipe
import Testing
import TestKit
import Transport
import Wire
import Workers

/// A coordinator restarted before it journaled an answer asks for the same call again, under the same
/// request id (a replayed step numbers its calls as before). The worker answers with the answer it
/// already gave instead of running the call twice: a learner's step is taken once.
@Suite(.serialized) struct CallReplayTests {
    /// A learner of the test model, serving its weights on `loop`.
    static func learner(_ loop: PollLoop) throws -> LearnerService {
        try LearnerService(weights: try Checkpoint.read(path: RoleProcessTests.checkpoint).weights,
                           serving: WeightServing(loop: loop, bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
    }

    /// A coordinator on a port of the OS's choosing, heartbeats every 100 ms.
    static var settings: Coordinator.Settings {
        var settings = Coordinator.Settings(bind: "tcp://127.0.0.1:*")
        settings.membership.heartbeatIntervalMilliseconds = 100
        return settings
    }

    /// One SFT step's batch at policy version 0.
    static var batch: TrainBatch {
        var batch = TrainBatch(kind: .sft)
        batch.sequences = [TokenSequence(id: 0, prompt: [1, 30, 31], response: [32, 33, 34, 2])]
        batch.learningRate = 3e-3
        return batch
    }

    @Test func aCallAskedAgainByARestartedCoordinatorIsAnsweredNotRunTwice() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let service = try CallReplayTests.learner(loop)
        var settings = CallReplayTests.settings
        let first = try Coordinator(settings: settings)
        let daemon = try WorkerDaemon(settings: .init(role: .learner, workerID: "learner-0", coordinator: first.endpoint), service: service)
        defer { daemon.shutdown() }
        try daemon.waitForRegistration()
        #expect(TestKit.waitFor(10) { first.workers().contains { $0.health == .healthy } })
        var batch = CallReplayTests.batch
        first.beginStep(0)
        let answered = try first.train(batch)
        let checksum = service.weightsChecksum
        #expect(answered.policyVersion == 1)
        first.shutdown()

        // The same endpoint, a new life: the worker registers again and gets the step's first call again.
        settings.bind = first.endpoint
        let second = try Coordinator(settings: settings)
        defer { second.shutdown() }
        #expect(TestKit.waitFor(20) { second.workers().contains { $0.registration.workerID == "learner-0" && $0.health == .healthy } })
        second.beginStep(0)
        let again = try second.train(batch)
        #expect(again == answered)
        #expect(service.policyVersion == 1 && service.weightsChecksum == checksum)
        // The next call is a new one: the batch of version 1 is applied.
        batch.policyVersion = 1
        #expect(try second.train(batch).policyVersion == 2)
        #expect(service.policyVersion == 2)
    }

    /// A worker in the coordinator's process answers while every thread of the cooperative pool is
    /// blocked (as synchronous callers of `Coordinator.fanOut` block theirs): its calls start on its poll
    /// loop and run on its actor's executor, never waiting for a pool thread. Before, such a call waited
    /// out its 600 s timeout on a 2-core machine.
    @Test func aWorkerAnswersWhileTheCooperativePoolIsBlocked() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let service = try CallReplayTests.learner(loop)
        let settings = CallReplayTests.settings
        let coordinator = try Coordinator(settings: settings)
        defer { coordinator.shutdown() }
        let daemon = try WorkerDaemon(settings: .init(role: .learner, workerID: "learner-0", coordinator: coordinator.endpoint), service: service)
        defer { daemon.shutdown() }
        try daemon.waitForRegistration()
        #expect(TestKit.waitFor(10) { coordinator.workers().contains { $0.health == .healthy } })

        // Occupy every pool thread this test does not already hold (those other tests hold stay held:
        // the blockers then wait in the pool's queue, which is as full).
        let width = ProcessInfo.processInfo.activeProcessorCount
        let started = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        for _ in 0..<width { Task { started.signal(); release.wait() } }
        defer { for _ in 0..<width { release.signal() } }
        var blocked = 0
        while blocked < width - 1, started.wait(timeout: .now() + 2) == .success { blocked += 1 }

        let batch = CallReplayTests.batch
        coordinator.beginStep(0)
        #expect(try coordinator.train(batch, timeoutSeconds: 30).policyVersion == 1)
    }
}
