import CWirePeer
import Foundation
import SwiftProtobuf
import Testing
@testable import Wire

/// A C peer built with protobuf-c from the same protos reads and writes our bytes, byte for byte.
@Suite struct CPeerTests {
    static func repack(_ kind: Int32, _ bytes: [UInt8]) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: bytes.count + 64)
        let n = bytes.withUnsafeBufferPointer { input in
            out.withUnsafeMutableBufferPointer { output in
                wire_peer_repack(kind, input.baseAddress, input.count, output.baseAddress, output.count)
            }
        }
        return n >= 0 ? Array(out.prefix(n)) : nil
    }

    static func bytes(_ m: some SwiftProtobuf.Message) throws -> [UInt8] {
        var options = BinaryEncodingOptions()
        options.useDeterministicOrdering = true
        return try m.serializedBytes(options: options)
    }

    /// One populated instance of every body type, keyed by its MessageType.
    static func samples() throws -> [(Rlhf_V1_MessageType, any SwiftProtobuf.Message)] {
        var register = Rlhf_V1_Register()
        register.role = .learner; register.workerID = "learner-1"; register.protocolVersion = 1
        register.buildHash = "abc123"; register.policyVersion = 5; register.capacity = 8; register.host = "h1"; register.pid = 77
        register.incarnation = "5f3a9c0e1b2d4a67"; register.runID = "20261204-210000-3f2a"
        var ack = Rlhf_V1_RegisterAck(); ack.accepted = true; ack.reason = "ok"; ack.heartbeatIntervalMs = 500
        var refused = Rlhf_V1_RegisterAck(); refused.reason = "worker id g-1 is held"; refused.refusal = .duplicateWorkerID
        refused.runID = "20261204-210000-3f2a"
        var heartbeatAck = Rlhf_V1_HeartbeatAck(); heartbeatAck.runID = "20261204-210000-3f2a"
        var heartbeat = Rlhf_V1_Heartbeat(); heartbeat.workerID = "g-2"; heartbeat.state = .busy; heartbeat.policyVersion = 3
        heartbeat.tasksInFlight = 2; heartbeat.tokensProcessed = 123_456_789_012; heartbeat.weightsCrc32C = 0x8693_7347
        var shutdown = Rlhf_V1_Shutdown(); shutdown.reason = "plan finished"; shutdown.drain = true
        var error = Rlhf_V1_Error(); error.code = .checksumMismatch; error.message = "body checksum"; error.requestID = 9
        var worker = Rlhf_V1_WorkerStatus(); worker.role = .generator; worker.workerID = "g-1"; worker.host = "h"
        worker.pid = 3; worker.health = .healthy; worker.policyVersion = 2; worker.tasksInFlight = 1; worker.lastHeartbeatMs = 10
        worker.weightsCrc32C = 0xFFFF_FFFF; worker.tokensProcessed = 1 << 40
        var status = Rlhf_V1_StatusReply(); status.workers = [worker, worker]; status.planStage.phase = .planSample; status.planStage.round = "V1"
        status.round = 2; status.step = 40; status.queueDepths = [("generate", 3), ("score", 1), ("train", 0)].map { name, depth in
            var q = Rlhf_V1_QueueDepth(); q.queue = name; q.depth = UInt32(depth); return q
        }
        status.tokensPerSecond = 1234.5; status.rewardMean = 0.25; status.kl = 0.01; status.policyVersion = 2
        status.tasksRedispatched = 7; status.runID = "20261204-210000-3f2a"
        status.rejectedFrames = [("checksum", 3), ("truncated", 1)].map { reason, count in
            var r = Rlhf_V1_RejectedFrames(); r.reason = reason; r.count = UInt64(count); return r
        }
        var prompt = Rlhf_V1_Prompt(); prompt.promptID = 1; prompt.ids = [1, 2, 300, -1]
        var generate = Rlhf_V1_GenerateRequest(); generate.prompts = [prompt]; generate.samplesPerPrompt = 8
        generate.sampling.temperature = 1.2; generate.sampling.topP = 0.9; generate.sampling.topK = 40
        generate.seed = UInt64.max; generate.maxNewTokens = 64; generate.policyVersion = 4; generate.stopTokens = [2, 128_009, -1]
        var sample = Rlhf_V1_Sample(); sample.promptID = 1; sample.sampleIndex = 3; sample.ids = [5, 6]; sample.finishReason = "eos"
        var result = Rlhf_V1_GenerateResult(); result.samples = [sample]; result.policyVersion = 4; result.tokensPerSecond = 99.5
        var sequence = Rlhf_V1_Sequence(); sequence.id = 4; sequence.promptIds = [1, 2]; sequence.responseIds = [3, 4, 2]
        var score = Rlhf_V1_ScoreRequest(); score.sequences = [sequence]; score.model = .safetyModel
        var scoreResult = Rlhf_V1_ScoreResult(); scoreResult.model = .rewardModel; scoreResult.modelVersion = 1
        var ref = Rlhf_V1_ReferenceLogProbRequest(); ref.sequences = [sequence, sequence]
        var batch = Rlhf_V1_TrainBatch(); batch.kind = .ppo; batch.sequences = [sequence]; batch.learningRate = 1e-6; batch.policyVersion = 8
        var stats = Rlhf_V1_TrainStats(); stats.kind = .rewardRanking; stats.loss = 0.69; stats.gradNorm = 1.5
        stats.learningRate = 1e-5; stats.clipFraction = 0.1; stats.approxKl = 0.002; stats.tokens = 4096; stats.step = 3; stats.policyVersion = 9
        var tensor = Rlhf_V1_WeightTensor(); tensor.name = "wq"; tensor.shape = [6, 288, 288]; tensor.byteLength = 1_990_656; tensor.crc32C = 0xDEADBEEF
        var announce = Rlhf_V1_WeightAnnounce(); announce.policyVersion = 9; announce.totalBytes = 60_000_000
        announce.chunkBytes = 1 << 20; announce.tensors = [tensor]; announce.source = "learner-1"
        stats.announce = announce
        var chunkRequest = Rlhf_V1_WeightChunkRequest(); chunkRequest.policyVersion = 9; chunkRequest.tensorIndex = 2
        chunkRequest.offset = 1 << 33; chunkRequest.length = 1 << 20
        var chunk = Rlhf_V1_WeightChunk(); chunk.policyVersion = 9; chunk.tensorIndex = 2; chunk.offset = 5
        var call = Rlhf_V1_RemoteCall(); call.actorID = "gen-1"; call.target = "$s7Workers9GeneratorC8generate"
        call.arguments = [Data([1, 2, 3]), Data()]; call.timeoutMs = 30_000
        var reply = Rlhf_V1_RemoteReply(); reply.error = error
        var replyValue = Rlhf_V1_RemoteReply(); replyValue.value = Data([9, 8])
        return [
            (.register, register), (.registerAck, ack), (.registerAck, refused), (.heartbeat, heartbeat),
            (.heartbeatAck, heartbeatAck), (.statusRequest, Rlhf_V1_StatusRequest()),
            (.statusReply, status), (.shutdown, shutdown), (.error, error), (.generateRequest, generate),
            (.generateResult, result), (.scoreRequest, score), (.scoreResult, scoreResult),
            (.referenceLogprobRequest, ref), (.referenceLogprobResult, Rlhf_V1_ReferenceLogProbResult()),
            (.trainBatch, batch), (.trainStats, stats), (.weightAnnounce, announce), (.weightChunkRequest, chunkRequest),
            (.weightChunk, chunk), (.remoteCall, call), (.remoteReply, reply), (.remoteReply, replyValue),
        ]
    }

    @Test func cRepacksEveryMessageTypeByteForByte() throws {
        let samples = try CPeerTests.samples()
        // Every body type of the enum is covered.
        let covered = Set(samples.map { $0.0.rawValue })
        for type in Rlhf_V1_MessageType.allCases where type != .unspecified {
            #expect(covered.contains(type.rawValue), "no sample for \(type)")
        }
        for (type, message) in samples {
            let swiftBytes = try CPeerTests.bytes(message)
            let cBytes = CPeerTests.repack(Int32(type.rawValue), swiftBytes)
            #expect(cBytes == swiftBytes, "\(type): C re-encoding differs")
        }
        // The envelope too, with tensor headers.
        let frames = try WireTests.sampleMessage().frames()
        let envelope = Array(frames[0][4...])
        #expect(CPeerTests.repack(Int32(WIRE_PEER_ENVELOPE), envelope) == envelope)
    }

    @Test func swiftReadsWhatCWrites() throws {
        var out = [UInt8](repeating: 0, count: 256)
        let n = out.withUnsafeMutableBufferPointer { wire_peer_make_register($0.baseAddress, $0.count) }
        #expect(n > 0)
        let cBytes = Array(out.prefix(n))
        let register = try Rlhf_V1_Register(serializedBytes: cBytes)
        #expect(register.role == .generator && register.workerID == "c-peer" && register.policyVersion == 7)
        #expect(register.capacity == 16 && register.host == "c-host" && register.pid == 4242)
        #expect(try CPeerTests.bytes(register) == cBytes)
        #expect(CPeerTests.repack(Int32(Rlhf_V1_MessageType.register.rawValue), [0xFF, 0xFF]) == nil)
    }
}
