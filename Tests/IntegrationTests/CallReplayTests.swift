import ClusterRuntime
import Foundation
import Synchronization
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

    /// A coordinator that declared the worker dead mid-call (a stalled machine: no heartbeat for a while)
    /// gives the call back to it once it registers again, under the same request id and a new epoch,
    /// while the first run is still going. The call runs once and is answered under both registrations
    /// (the coordinator fences the first answer and takes the second). Before, the second ran after the
    /// first and failed: its batch no longer matched the learner's version.
    @Test func aCallGivenBackWhileItRunsRunsOnceAndIsAnsweredUnderEachRegistration() async throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        final class Seen: @unchecked Sendable { var identity: [UInt8]?; var replies: [WireMessage] = [] }
        let seen = Mutex(Seen())
        let routerBox = Mutex<PollLoop.SocketID?>(nil)
        // This test is the coordinator: it admits the worker (epoch 1) and keeps what the worker answers.
        let (router, bound) = try loop.open(.router, bind: ["tcp://127.0.0.1:*"]) { frames in
            guard frames.count >= 2, let router = routerBox.withLock({ $0 }),
                  let message = try? WireMessage.decode(Array(frames.dropFirst())) else { return }
            seen.withLock { $0.identity = frames[0] }
            switch message.type {
            case .register:
                var ack = Rlhf_V1_RegisterAck()
                ack.accepted = true
                ack.heartbeatIntervalMs = 200
                ack.epoch = 1
                if let reply = try? WireMessage(type: .registerAck, requestID: message.requestID, body: ack).frames() {
                    loop.send(router, [frames[0]] + reply)
                }
            case .remoteReply, .error: seen.withLock { $0.replies.append(message) }
            default: break
            }
        }
        routerBox.withLock { $0 = router }
        let service = try CallReplayTests.learner(loop)
        let daemon = try WorkerDaemon(settings: .init(role: .learner, workerID: "learner-0", coordinator: bound[0]), service: service)
        defer { daemon.shutdown() }
        try daemon.waitForRegistration()
        let identity = try #require(seen.withLock { $0.identity })

        // A step long enough (16 x 120 tokens) to still be running when the call comes again.
        var batch = TrainBatch(kind: .sft)
        for i in 0..<16 {
            let prompt: [Int32] = [1] + (0..<40).map { (j: Int) -> Int32 in Int32(3 + (j * 7 + i) % 500) }
            let response: [Int32] = (0..<79).map { (j: Int) -> Int32 in Int32(3 + (j * 11 + i) % 500) } + [2]
            batch.sequences.append(TokenSequence(id: UInt64(i), prompt: prompt, response: response))
        }
        batch.learningRate = 1e-3
        let call = try await PoolCalls.message(requestID: 42) { [batch] in
            _ = try await Learner.resolve(id: .pool(.learner), using: $0).train(batch)
        }
        var first = call, again = call
        first.epoch = 1
        again.epoch = 2
        loop.send(router, [identity] + (try first.frames()))
        loop.send(router, [identity] + (try again.frames()))
        #expect(TestKit.waitFor(30) { seen.withLock { $0.replies.filter { $0.requestID == 42 }.count >= 2 } })
        let replies = seen.withLock { $0.replies.filter { $0.requestID == 42 } }
        #expect(replies.map(\.epoch) == [1, 2])
        let stats = try replies.map { try TrainStats(wirePayload: ClusterActorSystem.replyValue($0)) }
        #expect(stats.map(\.policyVersion) == [1, 1], "the step ran twice, or failed")
        #expect(stats.count == 2 && stats[0] == stats[1])
        #expect(service.policyVersion == 1)
        // And nothing more comes: no second run's answer.
        try await Task.sleep(for: .milliseconds(300))
        #expect(seen.withLock { $0.replies.filter { $0.requestID == 42 }.count } == 2)
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
