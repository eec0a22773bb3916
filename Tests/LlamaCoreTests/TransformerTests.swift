import Foundation
import Testing
import TestKit
@testable import LlamaCore

@Suite struct TransformerTests {
    @Test func selftestPassesOnTheFixtures() throws {
        let checks = try SelfTest.run(directory: Fixtures.models)
        #expect(checks.count == 6)
        for check in checks { #expect(check.passed, "\(check.line)") }
    }

    @Test(arguments: [1, 2, 3])
    func fixtureGreedyIdsWithThreads(threads: Int) throws {
        let pool = ComputePool(threads: threads)
        defer { pool.shutdown() }
        for name in ["tiny-mha", "tiny-gqa"] {
            let fixture = try SelfTest.loadJSON(SelfTest.GenerateFixture.self, path: Fixtures.models + "/\(name).generate.json")
            let generator = TextGenerator(transformer: Transformer(model: try LlamaModel(checkpoint: Fixtures.model(name)), pool: pool))
            let result = try generator.generate(GenerationRequest(promptIds: fixture.prompt_ids, maxNewTokens: 48,
                                                                  sampling: .greedy, stopTokens: []))
            #expect(result.ids == fixture.greedy_ids, "\(name) with \(threads) threads")
            #expect(result.samplingLogProbs.allSatisfy { $0 == 0 })
        }
    }

    /// A request stops at the first generated token that is any of its stop tokens (a model's end of
    /// turn beside its EOS), on the one-sequence and the batched path alike.
    @Test func generationStopsAtAnyOfItsStopTokens() throws {
        let fixture = try SelfTest.loadJSON(SelfTest.GenerateFixture.self, path: Fixtures.models + "/tiny-mha.generate.json")
        let generator = TextGenerator(transformer: Transformer(model: try LlamaModel(checkpoint: Fixtures.model("tiny-mha"))))
        let greedy = fixture.greedy_ids
        // A token the greedy answer never writes, and one it first writes a few tokens in.
        let absent = (3..<Int32(256)).first { !greedy.contains($0) }!
        let cut = greedy.indices.first { $0 >= 3 && greedy.firstIndex(of: greedy[$0]) == $0 }!
        for stops in [[absent, greedy[cut]], [greedy[cut], absent]] {
            let request = GenerationRequest(promptIds: fixture.prompt_ids, maxNewTokens: 48, sampling: .greedy, stopTokens: stops)
            let expected = Array(greedy[...cut])
            let single = try generator.generate(request)
            #expect(single.ids == expected, "stop tokens \(stops)")
            #expect(single.finishReason == .endOfSequence)
            let batch = try generator.generate(batch: [request, GenerationRequest(promptIds: fixture.prompt_ids, maxNewTokens: 48,
                                                                                  sampling: .greedy, stopTokens: [absent])])
            #expect(batch[0].ids == expected && batch[0].finishReason == .endOfSequence, "stop tokens \(stops), batched")
            #expect(batch[1].ids == Array(greedy.prefix(48)) && batch[1].finishReason == .maxTokens)
        }
    }

    /// B sequences of different lengths decoded together give the logits each gets alone.
    @Test(arguments: ["tiny-mha", "tiny-gqa"])
    func batchedDecodeMatchesSingleSequences(name: String) throws {
        let transformer = Transformer(model: try LlamaModel(checkpoint: Fixtures.model(name)))
        let prompts: [[Int32]] = [[1, 5, 9, 200], [1], [1, 33, 44, 55, 66, 77, 88, 99, 111], [1, 7, 7]]
        let next: [Int32] = [10, 20, 30, 40]
        let caches = prompts.map { _ in transformer.makeCache() }
        for (i, p) in prompts.enumerated() { _ = try transformer.prefill(p, cache: caches[i]) }
        let batched = try transformer.decode(next, caches: caches)
        let batchedRows = (0..<prompts.count).map { batched.row($0) }
        for (i, p) in prompts.enumerated() {
            let cache = transformer.makeCache()
            _ = try transformer.prefill(p, cache: cache)
            let single = try transformer.decode(next[i], cache: cache).row(0)
            let diff = zip(single, batchedRows[i]).map { abs($0 - $1) }.max()!
            #expect(diff < 1e-4, "sequence \(i): max difference \(diff)")
        }
        #expect(caches.map(\.length) == prompts.map { $0.count + 1 })
    }

    @Test func prefillMatchesIncrementalDecode() throws {
        let transformer = Transformer(model: try LlamaModel(checkpoint: Fixtures.model("tiny-gqa")))
        let tokens: [Int32] = [1, 100, 200, 300, 400, 17, 23, 99]
        let all = try transformer.prefill(tokens, cache: transformer.makeCache(), allLogits: true)
        let rows = (0..<tokens.count).map { all.row($0) }
        let cache = transformer.makeCache()
        for (i, token) in tokens.enumerated() {
            let row = try transformer.decode(token, cache: cache).row(0)
            let diff = zip(row, rows[i]).map { abs($0 - $1) }.max()!
            #expect(diff < 1e-4, "position \(i)")
        }
    }

    /// Requests that share a prompt get a copy of its prefilled cache (with grouped-query attention the
    /// cache rows are narrower than the model); every sequence matches its own generation.
    @Test(arguments: ["tiny-mha", "tiny-gqa"])
    func batchGenerationMatchesOneByOne(model: String) throws {
        let generator = TextGenerator(transformer: Transformer(model: try LlamaModel(checkpoint: Fixtures.model(model))))
        let requests = (0..<4).map {
            GenerationRequest(promptIds: $0 == 3 ? [1, 2, 3, 4, 5] : [1, 50, 60], maxNewTokens: 12,
                              sampling: .greedy, seed: 9, stream: UInt64($0), stopTokens: [])
        }
        let batch = try generator.generate(batch: requests)
        for (i, request) in requests.enumerated() {
            let single = try generator.generate(request)
            #expect(batch[i].ids == single.ids, "request \(i)")
            #expect(batch[i].promptIds == request.promptIds)
        }
    }

    @Test func badRequestsAreClearErrors() throws {
        let model = try LlamaModel(checkpoint: Fixtures.model("tiny-mha"))
        let transformer = Transformer(model: model)
        let generator = TextGenerator(transformer: transformer)
        func message(_ body: () throws -> Void) -> String {
            do { try body(); return "" } catch { return "\(error)" }
        }
        let tooLong = [Int32](repeating: 5, count: 200)
        #expect(message { _ = try generator.generate(GenerationRequest(promptIds: tooLong, maxNewTokens: 4)) }.contains("seq_len"))
        #expect(message { _ = try transformer.prefill(tooLong, cache: transformer.makeCache()) }.contains("seq_len 128"))
        #expect(message { _ = try generator.generate(GenerationRequest(promptIds: [], maxNewTokens: 4)) }.contains("empty prompt"))
        #expect(message { _ = try transformer.prefill([], cache: transformer.makeCache()) }.contains("empty prompt"))
        #expect(message { _ = try transformer.decode(512, cache: transformer.makeCache()) }.contains("outside the vocabulary"))
        #expect(message { _ = try generator.generate(GenerationRequest(promptIds: [1, -3], maxNewTokens: 4)) }.contains("outside the vocabulary"))
        let cache = transformer.makeCache()
        #expect(message { _ = try transformer.decode([1, 2], caches: [cache, cache]) }.contains("same cache"))
        // A full context stops generation with a defined reason instead of failing, the prompt and the answer
        // seq_len tokens together (one more would not fit a scorer or a learner of this model), batched or not.
        let nearlyFull = [Int32](repeating: 5, count: 120)
        let request = GenerationRequest(promptIds: nearlyFull, maxNewTokens: 50, sampling: .greedy, stopTokens: [])
        let result = try generator.generate(request)
        #expect(result.ids.count == 8)
        #expect(result.finishReason == .contextFull)
        let batched = try generator.generate(batch: [request, GenerationRequest(promptIds: [1, 2], maxNewTokens: 3, sampling: .greedy, stopTokens: [])], slots: 2)
        #expect(batched[0].ids.count == 8 && batched[0].finishReason == .contextFull && batched[1].ids.count == 3)
    }

    /// Both bfloat16 paths (the row-major copy of a model without batched decode, and the pair panels
    /// that also round the inputs) stay close to float32, prefill and batched decode.
    @Test(arguments: [false, true])
    func bfloat16WeightsStayCloseToFloat32(batchedDecode: Bool) throws {
        let weights = try Checkpoint.read(path: Fixtures.model("tiny-gqa")).weights
        let f32 = Transformer(model: LlamaModel(weights: weights))
        let bf16 = Transformer(model: LlamaModel(weights: weights, precision: .bfloat16, batchedDecode: batchedDecode))
        let prompts: [[Int32]] = [[1, 40, 300], [1, 7], [1, 99, 12, 5]]
        var worst: Float = 0, scale: Float = 0
        for p in prompts {
            let c1 = f32.makeCache(), c2 = bf16.makeCache()
            let a = try f32.prefill(p, cache: c1).row(0), b = try bf16.prefill(p, cache: c2).row(0)
            scale = max(scale, a.map(abs).max()!)
            worst = max(worst, zip(a, b).map { abs($0 - $1) }.max()!)
        }
        if batchedDecode {
            let caches = try prompts.map { p -> (KVCache, KVCache) in
                let c1 = f32.makeCache(), c2 = bf16.makeCache()
                _ = try f32.prefill(p, cache: c1); _ = try bf16.prefill(p, cache: c2)
                return (c1, c2)
            }
            let a = try f32.decode([3, 4, 5], caches: caches.map(\.0))
            let rowsA = (0..<3).map { a.row($0) }
            let b = try bf16.decode([3, 4, 5], caches: caches.map(\.1))
            for r in 0..<3 { worst = max(worst, zip(rowsA[r], b.row(r)).map { abs($0 - $1) }.max()!) }
        }
        #expect(worst > 0, "bfloat16 path was not used")
        // Within 3% of the logits' scale (rounding the inputs too moves the tiny model's logits by up
        // to 2%; weights alone by under 1%).
        #expect(worst < 0.03 * scale, "max difference \(worst), scale \(scale)")
    }

    /// A bfloat16 KV cache (the kernel is exact on rounded keys and values: `attentionMatchesNaive`)
    /// stays close to float32, takes half the bytes, and a copy continues like the original.
    @Test(arguments: ["tiny-mha", "tiny-gqa"])
    func aBFloat16KVCacheStaysCloseToFloat32(name: String) throws {
        let model = try LlamaModel(checkpoint: Fixtures.model(name))
        let f32 = Transformer(model: model), bf16 = Transformer(model: model, kvCache: .bfloat16)
        let c1 = f32.makeCache(), c2 = bf16.makeCache()
        #expect(c2.precision == .bfloat16 && c2.keys16.count == c1.keys.count && c2.keys.count == 0)
        var worst: Float = 0, scale: Float = 0
        let a0 = try f32.prefill([1, 40, 300, 7], cache: c1).row(0), b0 = try bf16.prefill([1, 40, 300, 7], cache: c2).row(0)
        worst = zip(a0, b0).map { abs($0 - $1) }.max()!
        for token: Int32 in [99, 12, 5, 250] {
            let a = try f32.decode(token, cache: c1).row(0), b = try bf16.decode(token, cache: c2).row(0)
            scale = max(scale, a.map(abs).max()!)
            worst = max(worst, zip(a, b).map { abs($0 - $1) }.max()!)
        }
        #expect(worst > 0, "the bfloat16 cache was not used")
        // Within 3% of the logits' scale (the tiny random models' attention is sharp: 2% seen).
        #expect(worst < 0.03 * scale, "max difference \(worst), scale \(scale)")
        // A copy continues exactly like the original.
        let copy = bf16.makeCache()
        copy.copy(from: c2)
        #expect(try bf16.decode(3, cache: copy).row(0) == bf16.decode(3, cache: c2).row(0))
    }

    /// The row-major bfloat16 path (batch 1 of a model without batched decode) computes what float32
    /// computes on weights rounded to bfloat16: the only difference is the rounding of the matrices.
    @Test(arguments: ["tiny-mha", "tiny-gqa"])
    func bfloat16DecodeEqualsFloat32OnRoundedWeights(name: String) throws {
        let weights = try Checkpoint.read(path: Fixtures.model(name)).weights
        let rounded = weights.copy()
        rounded.storage.withUnsafeMutableBufferPointer { buf in
            for tensor in LlamaModel.bf16Tensors(weights.config) {
                for i in rounded.layout.range(tensor) { buf[i] = Kernels.float(bfloat16: Kernels.bfloat16(buf[i])) }
            }
        }
        let bf16 = Transformer(model: LlamaModel(weights: weights, precision: .bfloat16, batchedDecode: false))
        let reference = Transformer(model: LlamaModel(weights: rounded))
        let c1 = bf16.makeCache(), c2 = reference.makeCache()
        var worst: Float = 0
        for token: Int32 in [1, 40, 300, 7, 99, 12] {
            let a = try bf16.decode(token, cache: c1).row(0)
            let b = try reference.decode(token, cache: c2).row(0)
            worst = max(worst, zip(a, b).map { abs($0 - $1) }.max()!)
        }
        #expect(worst < 1e-4, "max difference \(worst)")
    }

    @Test func bfloat16RoundsToNearestEven() {
        #expect(Kernels.bfloat16(1.0) == 0x3F80)
        #expect(Kernels.float(bfloat16: Kernels.bfloat16(3.140625)) == 3.140625)
        // 1 + 2^-8 is halfway between two bfloat16 values: ties go to the even one (1.0).
        #expect(Kernels.bfloat16(1 + 1.0 / 256) == 0x3F80)
        #expect(Kernels.bfloat16(1 + 3.0 / 256) == 0x3F82)
        #expect(Kernels.float(bfloat16: Kernels.bfloat16(-2.5e-3)) < 0)
    }
}
