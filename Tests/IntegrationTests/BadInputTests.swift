import ClusterRuntime
import Foundation
import LlamaCore
import Recipe
import Synchronization
import SwiftProtobuf
import Testing
import TestKit
import Transport
import Wire

/// Bad frames of every kind sent to a live coordinator over a socket: each answered with an ERROR that
/// names the problem, counted by reason in the status and the metrics, and the coordinator keeps serving.
@Suite struct BadInputTests {
    /// Frames of a valid message whose envelope is re-encoded after `edit` (checksum recomputed).
    static func frames(editing edit: (inout Rlhf_V1_Envelope) -> Void) throws -> [[UInt8]] {
        var frames = try WireMessage(type: .statusRequest, requestID: 5, body: Rlhf_V1_StatusRequest()).frames()
        var envelope = try Rlhf_V1_Envelope(serializedBytes: Array(frames[0].dropFirst(4)))
        edit(&envelope)
        var options = BinaryEncodingOptions()
        options.useDeterministicOrdering = true
        let encoded: [UInt8] = try envelope.serializedBytes(options: options)
        frames[0] = withUnsafeBytes(of: CRC32C.checksum(encoded).littleEndian) { Array($0) } + encoded
        return frames
    }

    @Test func everyKindOfBadFrameIsRefusedCountedAndSurvived() throws {
        var settings = Coordinator.Settings(bind: "tcp://127.0.0.1:*")
        settings.maxFrameBytes = 1 << 20
        settings.metricsBind = "tcp://127.0.0.1:*"
        let coordinator = try Coordinator(settings: settings)
        defer { coordinator.shutdown() }
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let replies = Mutex<[WireMessage]>([])
        let (socket, _) = try loop.open(.dealer, connect: [coordinator.endpoint]) { frames in
            if let m = try? WireMessage.decode(frames) { replies.withLock { $0.append(m) } }
        }
        let valid = try WireMessage(type: .statusRequest, requestID: 5, body: Rlhf_V1_StatusRequest()).frames()
        var flipped = valid
        flipped[0][6] ^= 0x10
        var heartbeat = Rlhf_V1_Heartbeat()
        heartbeat.workerID = "nobody"
        var corruptBody = try WireMessage(type: .heartbeat, requestID: 6, body: heartbeat).frames()
        corruptBody[1][0] ^= 0x01
        var rng = SeededGenerator(seed: 3)
        let cases: [(String, [[UInt8]])] = [
            ("truncated", [valid[0]]),
            ("checksum", flipped),
            ("checksum", corruptBody),
            ("truncated", [valid[0], [1, 2, 3]]),
            ("oversized", [valid[0], [UInt8](repeating: 7, count: (1 << 20) + 1)]),
            ("wrong_version", try BadInputTests.frames { $0.protocolVersion = 99 }),
            ("unknown_type", try BadInputTests.frames { $0.type = Rlhf_V1_MessageType(rawValue: 77)! }),
            ("malformed", try BadInputTests.frames { $0.magic = 0x1234_5678 }),
            ("checksum", [(0..<40).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, (0..<10).map { _ in UInt8(truncatingIfNeeded: rng.next()) }]),
        ]
        for (i, (reason, frames)) in cases.enumerated() {
            loop.send(socket, frames)
            #expect(TestKit.waitFor(5) { replies.withLock { $0.count } == i + 1 }, "case \(i) (\(reason)) got no answer")
            let answer = replies.withLock { $0.last }
            #expect(answer?.type == .error, "case \(i) (\(reason))")
            let text = (try? answer?.decodeBody(Rlhf_V1_Error.self).message) ?? ""
            #expect(!text.isEmpty, "case \(i): the refusal names no reason")
        }
        // Counted by reason, in the status and the metrics.
        let status = coordinator.status()
        let counts = status.rejectedFrames.mapValues { Int($0) }
        let expected = Dictionary(cases.map { ($0.0, 1) }, uniquingKeysWith: +)
        #expect(counts == expected, "\(counts)")
        let metrics = coordinator.metrics()
        #expect(metrics.contains("rlhf_frames_rejected_total{reason=\"checksum\"} 3"))
        #expect(metrics.contains("rlhf_frames_rejected_total{reason=\"truncated\"} 2"))
        #expect(metrics.contains("rlhf_frames_rejected_total{reason=\"wrong_version\"} 1"))
        // And it still serves.
        loop.send(socket, valid)
        #expect(TestKit.waitFor(5) { replies.withLock { $0.last?.type == .statusReply } })
        // A frame above the transport's cap (4x the largest frame) never reaches the coordinator: libzmq
        // closes its connection, which is counted; the peer reconnects and is served again.
        loop.send(socket, [valid[0], [UInt8](repeating: 7, count: (4 << 20) + 1)])
        #expect(TestKit.waitFor(5) { coordinator.metrics().contains("rlhf_connections_closed_total 1") }, "\(coordinator.metrics())")
        let answered = replies.withLock { $0.count }
        #expect(TestKit.waitFor(10) {
            loop.send(socket, valid)
            return replies.withLock { $0.count > answered && $0.last?.type == .statusReply }
        })
        #expect(coordinator.status().rejectedFrames["oversized"] == 1)
    }

    /// Each role, seen from a coordinator that sends it garbage: a worker process registers with this
    /// test's ROUTER, gets bad frames of every kind, answers or drops each, and then still serves a
    /// valid request. The learner's weight server (which anyone may reach) answers garbage with errors.
    @Test(arguments: ["generator", "reward-model", "safety-model", "reference-policy", "learner", "reward-function"])
    func aRoleKeepsServingAfterBadFrames(role: String) async throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        final class Seen: @unchecked Sendable { var identity: [UInt8]?; var messages: [WireMessage] = []; var raw = 0 }
        let seen = Mutex(Seen())
        let socketBox = Mutex<PollLoop.SocketID?>(nil)
        let (router, bound) = try loop.open(.router, bind: ["tcp://127.0.0.1:*"]) { frames in
            guard frames.count >= 2, let id = socketBox.withLock({ $0 }) else { return }
            seen.withLock { $0.identity = frames[0]; $0.raw += 1 }
            guard let message = try? WireMessage.decode(Array(frames.dropFirst())) else { return }
            seen.withLock { $0.messages.append(message) }
            if message.type == .register {
                var ack = Rlhf_V1_RegisterAck()
                ack.accepted = true
                ack.heartbeatIntervalMs = 200
                ack.epoch = 1
                if let reply = try? WireMessage(type: .registerAck, requestID: message.requestID, body: ack).frames() {
                    loop.send(id, [frames[0]] + reply)
                }
            }
        }
        socketBox.withLock { $0 = router }
        let roleArguments = role == "reward-function"
            ? ["--reward-command", "python3 reward.py", "--reward-directory", RLHFRunTests.repository + "/examples/animal-reward"]
            : ["--checkpoint", RoleProcessTests.checkpoint]
        let worker = try ClusterProcessTests.spawn(["worker", "--role", role, "--coordinator", bound[0], "--id", "victim"] + roleArguments)
        defer { if worker.isRunning { worker.terminate() } }
        #expect(TestKit.waitFor(30) { seen.withLock { $0.messages.contains { $0.type == .heartbeat } } })
        let identity = try #require(seen.withLock { $0.identity })
        let valid = try WireMessage(type: .statusRequest, requestID: 5, body: Rlhf_V1_StatusRequest()).frames()
        var flipped = valid
        flipped[0][6] ^= 0x10
        let sequence = TokenSequence(id: 0, prompt: [1, 5, 6], response: [7, 8, 2])
        let kind = try #require(WorkerRole(rawValue: role))
        let garbage: [[[UInt8]]] = [
            [valid[0]], flipped, [[1, 2, 3], [4]], try BadInputTests.frames { $0.protocolVersion = 99 },
            try BadInputTests.frames { $0.type = Rlhf_V1_MessageType(rawValue: 77)! },
            // A well-formed call whose body is not a call, and one whose argument is not what its target takes.
            try WireMessage(type: .remoteCall, requestID: 9, rawBody: [0xFF, 0xFF, 0xFF]).frames(),
            try BadInputTests.argumentReplaced(try await PoolCalls.valid(role: kind, sequence: sequence, requestID: 10), by: [0x0A, 0x05, 0x01]).frames(),
            // A call of a function this build does not have, and one for an actor this worker does not host.
            try BadInputTests.retargeted(try await PoolCalls.valid(role: kind, sequence: sequence, requestID: 11),
                                         target: "$s7Workers9GeneratorC8nonesuch", actor: nil).frames(),
            try BadInputTests.retargeted(try await PoolCalls.valid(role: kind, sequence: sequence, requestID: 12), target: nil, actor: "coordinator").frames(),
            // A request of the old, pre-actor kind: not served.
            try WireMessage(type: .generateRequest, requestID: 13, rawBody: [0xFF, 0xFF, 0xFF]).frames(),
        ]
        for frames in garbage { loop.send(router, [identity] + frames) }
        // Still alive and answering: a valid call of its kind gets a real answer.
        let request = try await PoolCalls.valid(role: kind, sequence: sequence, requestID: 77)
        loop.send(router, [identity] + (try request.frames()))
        #expect(TestKit.waitFor(30) {
            seen.withLock { $0.messages.contains { $0.requestID == 77 && $0.type == .remoteReply && (try? ClusterActorSystem.replyValue($0)) != nil } }
        }, "\(role) did not answer a valid call after the bad frames")
        // The calls that could not run were answered with errors naming the problem.
        for (id, words) in [(UInt64(9), "REMOTE_CALL"), (10, "argument 1"), (11, "nonesuch"), (12, "no actor named coordinator")] {
            let answer = seen.withLock { $0.messages.first { $0.requestID == id } }
            let error = answer.flatMap { (try? ClusterActorSystem.replyError($0)) ?? nil }
            #expect("\(error.map { "\($0)" } ?? "no error")".contains(words), "\(role) answered call \(id) with \(String(describing: error))")
        }
        #expect(worker.isRunning)

        if role == "learner" {
            let stats = try #require(seen.withLock { $0.messages.first { $0.requestID == 77 } })
            let announce = try #require(try TrainStats(wirePayload: ClusterActorSystem.replyValue(stats)).announce)
            #expect(!announce.source.isEmpty)
            // Its weight server, reachable by anyone, answers garbage with errors and keeps serving.
            let replies = Mutex<[WireMessage]>([])
            let (dealer, _) = try loop.open(.dealer, connect: [announce.source]) { frames in
                if let m = try? WireMessage.decode(frames) { replies.withLock { $0.append(m) } }
            }
            for frames in garbage { loop.send(dealer, frames) }
            var ask = Rlhf_V1_WeightChunkRequest()
            ask.policyVersion = announce.policyVersion
            loop.send(dealer, try WireMessage(type: .weightAnnounce, requestID: 1, body: ask).frames())
            #expect(TestKit.waitFor(10) { replies.withLock { $0.contains { $0.type == .weightAnnounce } } })
            #expect(replies.withLock { $0.filter { $0.type == .error }.count } >= 3)
        }
    }

    /// `call` with its first argument's body replaced by `bytes`.
    static func argumentReplaced(_ call: WireMessage, by bytes: [UInt8]) throws -> WireMessage {
        var body = try call.decodeBody(Rlhf_V1_RemoteCall.self)
        body.arguments[0] = Data(bytes)
        return try WireMessage(type: .remoteCall, requestID: call.requestID, body: body, tensors: call.tensors)
    }

    /// `call` aimed at another target or actor.
    static func retargeted(_ call: WireMessage, target: String?, actor: String?) throws -> WireMessage {
        var body = try call.decodeBody(Rlhf_V1_RemoteCall.self)
        if let target { body.target = target }
        if let actor { body.actorID = actor }
        return try WireMessage(type: .remoteCall, requestID: call.requestID, body: body, tensors: call.tensors)
    }
}
