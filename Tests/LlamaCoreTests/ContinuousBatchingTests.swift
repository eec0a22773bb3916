import Testing
import TestKit
@testable import LlamaCore

/// Continuous batching: a request's sample is a function of (seed, prompt, stream) alone, whatever
/// slot, batch or company it decoded in.
@Suite struct ContinuousBatchingTests {
    /// Weights and KV caches: float32, bfloat16 weights, bfloat16 weights and caches.
    static let precisions: [(WeightPrecision, KVCache.Precision)] = [(.float32, .float32), (.bfloat16, .float32), (.bfloat16, .bfloat16)]

    /// A row's logits from batched decode are the same bits alone and among other rows (every count of
    /// rows runs the panel kernels, which sum each feature over k in one order), in float32 and in
    /// bfloat16 (pair panels), with float32 or bfloat16 KV caches.
    @Test(arguments: ["tiny-mha", "tiny-gqa"], ContinuousBatchingTests.precisions)
    func batchedDecodeRowsAreBitIdenticalAloneAndTogether(name: String, precision: (WeightPrecision, KVCache.Precision)) throws {
        let pool = ComputePool(threads: 2)
        defer { pool.shutdown() }
        let transformer = Transformer(model: try LlamaModel(checkpoint: Fixtures.model(name), precision: precision.0), pool: pool,
                                      kvCache: precision.1)
        let prompts: [[Int32]] = [[1, 5, 9, 200], [1], [1, 33, 44, 55, 66, 77, 88, 99, 111], [1, 7, 7], [1, 300, 2]]
        let next: [Int32] = [10, 20, 30, 40, 50]
        func prefilled(_ p: [Int32]) throws -> KVCache {
            let cache = transformer.makeCache()
            _ = try transformer.prefill(p, cache: cache)
            return cache
        }
        // (Logits are a view of the transformer's workspace: rows are copied out before the next pass.)
        let batch = try transformer.decode(next, caches: prompts.map(prefilled))
        let together = prompts.indices.map { batch.row($0) }
        for (i, p) in prompts.enumerated() {
            let alone = try transformer.decode([next[i]], caches: [prefilled(p)]).row(0)
            #expect(alone.elementsEqual(together[i]), "row \(i)")
            // Among a different company, in another position.
            let others = prompts.indices.filter { $0 != i }.prefix(2)
            let mixed = try transformer.decode(others.map { next[$0] } + [next[i]], caches: others.map { try prefilled(prompts[$0]) } + [prefilled(p)])
            #expect(mixed.row(others.count).elementsEqual(alone), "row \(i) after \(Array(others))")
        }
    }

    /// Requests of varied lengths (stop tokens, length limits, a full context), several samples of a
    /// prompt, a prompt that comes back later in the queue and a request for no tokens: every slot
    /// count gives each request exactly what it gets alone, in float32 and in bfloat16.
    @Test(arguments: ["tiny-mha", "tiny-gqa"], ContinuousBatchingTests.precisions)
    func everySlotCountGivesEachRequestItsOwnSample(name: String, precision: (WeightPrecision, KVCache.Precision)) throws {
        let pool = ComputePool(threads: 2)
        defer { pool.shutdown() }
        let model = try LlamaModel(checkpoint: Fixtures.model(name), precision: precision.0)
        let generator = TextGenerator(transformer: Transformer(model: model, pool: pool, kvCache: precision.1))
        let prompts: [[Int32]] = [[1, 50, 60], [1, 2, 3, 4, 5], [1, 400], [Int32](repeating: 9, count: 120)]
        var requests: [GenerationRequest] = []
        for (p, prompt) in (prompts + [prompts[0]]).enumerated() {
            for k in 0..<3 {
                requests.append(GenerationRequest(
                    promptIds: prompt, maxNewTokens: p == 2 && k == 1 ? 0 : 4 + 7 * ((p + 2 * k) % 5),
                    sampling: SamplingSettings(temperature: 1, topP: k == 2 ? 0.9 : 1, topK: k == 1 ? 20 : 0),
                    seed: 77 &+ UInt64(p % 4), stream: UInt64(k), stopTokens: k == 0 ? [3] : k == 1 ? [2] : [3, 2]))
            }
        }
        let alone = try requests.map { try generator.generate(batch: [$0])[0] }
        #expect(Set(alone.map(\.finishReason)).count >= 2, "the lengths vary for more than one reason")
        #expect(alone.contains { $0.ids.isEmpty })
        for slots in [1, 2, 3, 5, requests.count, 1000] {
            let batch = try generator.generate(batch: requests, slots: slots)
            #expect(batch == alone ? true : false, "\(slots) slots")
        }
        #expect(try generator.generate(batch: requests) == alone)
        // The one-sequence streaming path samples the same tokens (its products differ only in the
        // last bits of the log-probabilities).
        for (request, result) in zip(requests, alone) where request.sampling.topK == 0 && request.sampling.topP == 1 {
            #expect(try generator.generate(request).ids == result.ids)
        }
    }

    @Test func aSlotCountBelowOneIsRefused() throws {
        let generator = TextGenerator(transformer: Transformer(model: try LlamaModel(checkpoint: Fixtures.model("tiny-mha"))))
        let request = GenerationRequest(promptIds: [1, 2], maxNewTokens: 3)
        #expect(throws: LlamaError.self) { try generator.generate(batch: [request], slots: 0) }
        #expect(try generator.generate(batch: [], slots: 4).isEmpty)
    }
}
