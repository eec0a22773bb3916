import Foundation
import LlamaCore
import Testing
import Transport
@testable import Wire
import Workers
@testable import ClusterRuntime

@Suite struct WeightSyncTests {
    static let config = LlamaConfig(dim: 32, hiddenDim: 64, nLayers: 2, nHeads: 4, nKVHeads: 2, vocabSize: 50, seqLen: 16,
                                    sharedClassifier: false)

    @Test func twoConsumersGetTheSameVerifiedWeights() throws {
        let weights = ModelWeights.random(config: WeightSyncTests.config, seed: 3)
        let serverLoop = try PollLoop(), clientLoop = try PollLoop()
        defer { clientLoop.shutdown(); serverLoop.shutdown() }
        let server = try WeightServer(loop: serverLoop, bind: "tcp://127.0.0.1:*")
        server.publish(WeightPublisher(weights: weights, policyVersion: 5, chunkBytes: 1000))
        let results = try [0, 1].map { _ in
            try WeightFetcher.fetch(loop: clientLoop, endpoint: server.endpoint, config: WeightSyncTests.config, window: 4)
        }
        for (fetched, version) in results {
            #expect(version == 5)
            #expect(fetched.storage.array(0..<fetched.storage.count) == weights.storage.array(0..<weights.storage.count))
        }
        // A newer version replaces the old one for later fetches.
        let newer = ModelWeights.random(config: WeightSyncTests.config, seed: 4)
        server.publish(WeightPublisher(weights: newer, policyVersion: 6))
        let (again, version) = try WeightFetcher.fetch(loop: clientLoop, endpoint: server.endpoint, config: WeightSyncTests.config)
        #expect(version == 6 && again.values(.wq) == newer.values(.wq))
    }

    @Test func oldVersionsAndBadRangesAreRefused() throws {
        let weights = ModelWeights.random(config: WeightSyncTests.config, seed: 3)
        let publisher = WeightPublisher(weights: weights, policyVersion: 7)
        var request = Rlhf_V1_WeightChunkRequest()
        request.policyVersion = 6
        request.length = 16
        #expect(throws: WeightSyncError.wrongVersion(requested: 6, serving: 7)) { try publisher.chunk(request) }
        request.policyVersion = 7
        request.tensorIndex = 99
        #expect(throws: WeightSyncError.self) { try publisher.chunk(request) }
        request.tensorIndex = 0
        request.offset = UInt64(weights.layout.count(.tokenEmbedding) * 4)
        #expect(throws: WeightSyncError.self) { try publisher.chunk(request) }
        // Over the wire, the refusal is an ERROR with the right code.
        var message = try WireMessage(type: .weightChunkRequest, requestID: 3, body: { var r = request; r.policyVersion = 1; r.offset = 0; return r }())
        message.sender = "test"
        let reply = try #require(WeightServer.answer(try message.frames(), publisher: publisher))
        let error = try WireMessage.decode(reply).decodeBody(Rlhf_V1_Error.self)
        #expect(error.code == .wrongPolicyVersion && error.requestID == 3)
        #expect(try WireMessage.decode(try #require(WeightServer.answer([[1, 2, 3], []], publisher: publisher))).type == .error)
        // Offsets and lengths off the network near the top of their ranges are refused, not overflowed.
        for offset in [UInt64.max, UInt64.max - 3, UInt64(Int.max) + 1, 1 << 62] {
            request.offset = offset
            request.length = .max
            #expect(throws: WeightSyncError.self) { try publisher.chunk(request) }
            #expect(publisher.checksum(of: request) == nil)
            var assembler = try WeightAssembler(announcement: publisher.announcement, config: WeightSyncTests.config)
            #expect(throws: WeightSyncError.self) { try assembler.receive(tensorIndex: 0, offset: offset, bytes: [1, 2, 3, 4]) }
            #expect(throws: WeightSyncError.self) { try assembler.receive(tensorIndex: .max, offset: 0, bytes: [1, 2, 3, 4]) }
        }
    }

    @Test func corruptionAndLayoutMismatchAreCaught() throws {
        let weights = ModelWeights.random(config: WeightSyncTests.config, seed: 3)
        let publisher = WeightPublisher(weights: weights, policyVersion: 1, chunkBytes: 4096)
        var assembler = try WeightAssembler(announcement: publisher.announcement, config: WeightSyncTests.config)
        var first = true
        while let request = assembler.nextRequest() {
            var bytes = try publisher.chunk(request)
            if first { bytes[0] ^= 1; first = false }
            try assembler.receive(tensorIndex: request.tensorIndex, offset: request.offset, bytes: bytes)
        }
        #expect(throws: WeightSyncError.tensorChecksum(name: "tok_embeddings")) { try assembler.finish() }
        // With chunk checksums (the wire's), the tensor check combines them: one wrong checksum is caught.
        var combined = try WeightAssembler(announcement: publisher.announcement, config: WeightSyncTests.config)
        var index = 0
        while let request = combined.nextRequest() {
            let bytes = try publisher.chunk(request)
            let crc = try #require(publisher.checksum(of: request))
            try combined.receive(tensorIndex: request.tensorIndex, offset: request.offset, bytes: bytes,
                                 crc32c: index == 3 ? crc ^ 1 : crc)
            index += 1
        }
        #expect(throws: WeightSyncError.self) { try combined.finish() }
        var other = WeightSyncTests.config
        other.hiddenDim = 96
        #expect(throws: WeightSyncError.self) { try WeightAssembler(announcement: publisher.announcement, config: other) }
        let incomplete = try WeightAssembler(announcement: publisher.announcement, config: WeightSyncTests.config)
        #expect(throws: WeightSyncError.self) { try incomplete.finish() }
    }
}
