/// Why a sequence stopped.
public enum FinishReason: String, Sendable, Codable {
    /// The model produced one of the request's stop tokens (included in `ids`).
    case endOfSequence = "eos"
    /// `maxNewTokens` tokens were generated.
    case maxTokens = "max_tokens"
    /// The sequence, prompt and answer, reached the model's `seq_len` tokens.
    case contextFull = "context_full"
}

/// What to generate for one sequence.
public struct GenerationRequest: Sendable, Codable, Equatable {
    /// Prompt token ids (BOS first, usually). Must be non-empty and shorter than `seq_len`.
    public var promptIds: [Int32]
    /// Upper bound on generated tokens.
    public var maxNewTokens: Int
    /// Sampling knobs.
    public var sampling: SamplingSettings
    /// RNG seed; the sequence's stream is `SeededGenerator(seed: seed, stream: stream)`.
    public var seed: UInt64
    /// RNG stream (sample index within a group of samples of one prompt).
    public var stream: UInt64
    /// Stop after any of these tokens (the model's end of turn, its EOS...; empty: never stop early).
    public var stopTokens: [Int32]

    /// A request; `stream` separates the samples of one prompt that share a seed.
    public init(promptIds: [Int32], maxNewTokens: Int, sampling: SamplingSettings = .default, seed: UInt64 = 0,
                stream: UInt64 = 0, stopTokens: [Int32] = [2]) {
        self.promptIds = promptIds
        self.maxNewTokens = maxNewTokens
        self.sampling = sampling
        self.seed = seed
        self.stream = stream
        self.stopTokens = stopTokens
    }
}

/// A generated sequence.
public struct GenerationResult: Sendable, Codable, Equatable {
    /// The prompt as given.
    public var promptIds: [Int32]
    /// Generated ids only.
    public var ids: [Int32]
    /// `log p` of each generated id at temperature 1.
    public var logProbs: [Float]
    /// `log q` of each generated id under the sampling distribution.
    public var samplingLogProbs: [Float]
    /// Why generation stopped.
    public var finishReason: FinishReason
}

/// Drives a `Transformer` and a `Sampler` to produce sequences: one at a time (streaming) or many at
/// once with batched decode. Requests that share a prompt share its prefill.
public final class TextGenerator {
    /// The transformer that runs the model.
    public let transformer: Transformer
    /// KV caches kept from earlier batches (allocating and faulting in megabytes per sequence on every
    /// call costs more than a decode step).
    private var spareCaches: [KVCache] = []
    /// The draws' buffers, one per thread of the transformer's pool, kept across calls.
    private var samplingScratch: [SamplingScratch]

    /// A generator over `transformer`.
    public init(transformer: Transformer) {
        self.transformer = transformer
        samplingScratch = Array(repeating: SamplingScratch(), count: transformer.pool.threadCount)
    }

    private func validate(_ request: GenerationRequest) throws {
        try request.sampling.validate()
        let c = transformer.config
        guard !request.promptIds.isEmpty else {
            throw LlamaError.invalidInput("empty prompt: at least one token (usually BOS) is needed")
        }
        guard request.promptIds.count < c.seqLen else {
            throw LlamaError.invalidInput("prompt of \(request.promptIds.count) tokens does not fit seq_len \(c.seqLen) with room to generate")
        }
        guard request.maxNewTokens >= 0 else {
            throw LlamaError.invalidInput("max new tokens must be >= 0, got \(request.maxNewTokens)")
        }
        for id in request.promptIds where id < 0 || Int(id) >= c.vocabSize {
            throw LlamaError.invalidInput("prompt token id \(id) outside the vocabulary 0..<\(c.vocabSize)")
        }
    }

    /// Generates one sequence with batch-1 decode, calling `onToken` as each token is drawn.
    public func generate(_ request: GenerationRequest, onToken: (SampledToken) -> Void = { _ in }) throws -> GenerationResult {
        try validate(request)
        let sampler = try Sampler(settings: request.sampling)
        var rng = SeededGenerator(seed: request.seed, stream: request.stream)
        let cache = transformer.makeCache()
        var result = GenerationResult(promptIds: request.promptIds, ids: [], logProbs: [], samplingLogProbs: [],
                                      finishReason: .maxTokens)
        guard request.maxNewTokens > 0 else { return result }
        var logits = try transformer.prefill(request.promptIds, cache: cache)
        while true {
            let token = logits.withRow(0) { sampler.sample($0, rng: &rng, scratch: &samplingScratch[0]) }
            result.ids.append(token.id)
            result.logProbs.append(token.logProb)
            result.samplingLogProbs.append(token.samplingLogProb)
            onToken(token)
            if request.stopTokens.contains(token.id) { result.finishReason = .endOfSequence; break }
            if result.ids.count >= request.maxNewTokens { result.finishReason = .maxTokens; break }
            // The sequence (its last token not yet cached) holds seq_len tokens: one more would not fit a
            // model of this context (the reference policy's, the learner's), as transformers' max_length.
            if cache.length + 1 >= transformer.config.seqLen { result.finishReason = .contextFull; break }
            logits = try transformer.decode(token.id, cache: cache)
        }
        return result
    }

    /// Generates every request with continuous batching over `slots` decode slots (nil: one per
    /// request, all at once): requests are admitted in order into free slots, each distinct prompt is
    /// prefilled once (the requests that share it get a copy of its cache), and every decode step
    /// advances all occupied slots by one token. A slot whose sequence ends (its stop token, its length,
    /// the context) takes the next queued request before the next step, so a batch never waits for its
    /// longest member. Each sequence has its own sampler and RNG stream, and batched decode gives a row
    /// the same logits whatever shares its step, so a request's result does not depend on `slots` or
    /// on the other requests. Results come back in request order.
    /// `onStep(tokens)` is called after each decode step (and after the first tokens of newly
    /// admitted requests) with the number of tokens it produced (progress reports).
    public func generate(batch requests: [GenerationRequest], slots: Int? = nil, onStep: ((Int) -> Void)? = nil) throws -> [GenerationResult] {
        for request in requests { try validate(request) }
        if let slots, slots < 1 { throw LlamaError.invalidInput("continuous batching needs at least 1 slot, got \(slots)") }
        let n = requests.count
        let width = max(1, min(slots ?? n, n))
        let samplers = try requests.map { try Sampler(settings: $0.sampling) }
        var rngs = requests.map { SeededGenerator(seed: $0.seed, stream: $0.stream) }
        var results = requests.map {
            GenerationResult(promptIds: $0.promptIds, ids: [], logProbs: [], samplingLogProbs: [], finishReason: .maxTokens)
        }
        guard n > 0 else { return results }
        while spareCaches.count < width { spareCaches.append(transformer.makeCache()) }
        let slotCaches = Array(spareCaches[..<width])
        var freeSlots = Array((0..<width).reversed())
        var slotOf = [Int](repeating: -1, count: n)
        // A prompt's prefilled cache and first logits, kept while requests of it are still queued.
        var waiting: [[Int32]: Int] = [:]
        for request in requests where request.maxNewTokens > 0 { waiting[request.promptIds, default: 0] += 1 }
        var prefilled: [[Int32]: (cache: KVCache, logits: [Float])] = [:]
        // Caches past the slots' serve as prompt templates (kept for the next call, as the slots' are).
        var spareTemplates = Array(spareCaches[width...])

        var next = 0
        var active: [Int] = []
        var nextTokens: [Int32] = []
        /// Records `token` for request `i`; a sequence that goes on is queued for the next step, one that
        /// ends frees its slot.
        func accept(_ i: Int, _ token: SampledToken) {
            results[i].ids.append(token.id)
            results[i].logProbs.append(token.logProb)
            results[i].samplingLogProbs.append(token.samplingLogProb)
            let cache = slotCaches[slotOf[i]]
            if requests[i].stopTokens.contains(token.id) {
                results[i].finishReason = .endOfSequence
            } else if results[i].ids.count >= requests[i].maxNewTokens {
                results[i].finishReason = .maxTokens
            } else if cache.length + 1 >= transformer.config.seqLen {
                results[i].finishReason = .contextFull
            } else {
                active.append(i)
                nextTokens.append(token.id)
                return
            }
            freeSlots.append(slotOf[i])
        }
        /// Fills free slots from the queue: prefill (or a copy of the prompt's prefilled cache) and the
        /// first token.
        func admit() throws {
            var drawn = 0
            while next < n, let slot = freeSlots.last {
                let i = next, request = requests[i]
                next += 1
                guard request.maxNewTokens > 0 else { continue }
                freeSlots.removeLast()
                slotOf[i] = slot
                let cache = slotCaches[slot]
                let prompt = request.promptIds
                let logits: [Float]
                if let shared = prefilled[prompt] {
                    cache.copy(from: shared.cache)
                    logits = shared.logits
                } else {
                    cache.reset()
                    logits = try transformer.prefill(prompt, cache: cache).row(0)
                    if waiting[prompt, default: 0] > 1 {
                        let template = spareTemplates.popLast() ?? {
                            let fresh = transformer.makeCache()
                            spareCaches.append(fresh)
                            return fresh
                        }()
                        template.copy(from: cache)
                        prefilled[prompt] = (template, logits)
                    }
                }
                waiting[prompt, default: 0] -= 1
                if waiting[prompt] == 0, let done = prefilled.removeValue(forKey: prompt) { spareTemplates.append(done.cache) }
                let token = logits.withUnsafeBufferPointer { samplers[i].sample($0, rng: &rngs[i], scratch: &samplingScratch[0]) }
                accept(i, token)
                drawn += 1
            }
            if drawn > 0 { onStep?(drawn) }
        }

        try admit()
        while !active.isEmpty {
            let stepIndices = active, stepTokens = nextTokens
            active.removeAll(keepingCapacity: true)
            nextTokens.removeAll(keepingCapacity: true)
            let logits = try transformer.decode(stepTokens, caches: stepIndices.map { slotCaches[slotOf[$0]] })
            let drawn = Sampler.sample(logits, sequences: stepIndices, samplers: samplers, rngs: &rngs,
                                       pool: transformer.pool, scratch: &samplingScratch)
            for (row, i) in stepIndices.enumerated() { accept(i, drawn[row]) }
            onStep?(stepIndices.count)
            try admit()
        }
        return results
    }
}

extension KVCache {
    /// Copies the filled positions of `other` (same config) into this cache.
    public func copy(from other: KVCache) {
        precondition(other.config == config && other.precision == precision, "KV caches of different configs or precisions")
        let perLayer = config.seqLen * config.kvDim
        let used = other.length * config.kvDim
        for layer in 0..<config.nLayers {
            let offset = layer * perLayer
            switch precision {
            case .float32:
                (keys.baseAddress + offset).update(from: other.keys.baseAddress + offset, count: used)
                (values.baseAddress + offset).update(from: other.values.baseAddress + offset, count: used)
            case .bfloat16:
                (keys16.baseAddress + offset).update(from: other.keys16.baseAddress + offset, count: used)
                (values16.baseAddress + offset).update(from: other.values16.baseAddress + offset, count: used)
            }
        }
        length = other.length
    }
}
