import ClusterRuntime
import Foundation
import LlamaCore
import LlamaTraining
import Recipe
import Synchronization
import Transport
import Wire
import Workers

public struct GenerateBenchmark: Sendable {

    /// Configs to run, comma-separated: 15M, gqa, 110M, or all.
    public var config: String
    /// Thread counts to measure, comma-separated.
    public var threads: [Int]
    /// Rounds per figure; the best is reported (the machine is shared and noisy: +-10% between minutes).
    public var repeats: Int
    /// Batch size for batched decode.
    public var batch: Int
    /// Tokens each batched sequence generates.
    public var batchTokens: Int
    /// Positions batch-1 decode generates (at most the model's context).
    public var steps: Int
    /// The baselines measured beside ours.
    public var baselines: Baselines
    /// Write the figures as JSON to this file too.
    public var jsonOut: String?



    public init(config: String = "all", threads: [Int], repeats: Int = 3, batch: Int = 16, batchTokens: Int = 128, steps: Int = 256, jsonOut: String? = nil, baselines: Baselines) {
        self.config = config
        self.threads = threads
        self.repeats = repeats
        self.batch = batch
        self.batchTokens = batchTokens
        self.steps = steps
        self.jsonOut = jsonOut
        self.baselines = baselines
    }

    /// Runs the benchmark, printing its figures and ratios.
    public func run() throws {
        let names = config.lowercased() == "all" ? ["15M", "gqa", "110M"] : config.split(separator: ",").map(String.init)
        let configs = try names.map { ($0, try benchConfig($0)) }
        let threadCounts = threads
        let directory = try benchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        printMachine()
        let llama2c = try baselines.llama2c.map { try Llama2cBaseline(path: $0, workDirectory: directory) }
        if baselines.llama2c == nil { print("skipped: llama2.c (give --llama2c PATH to run.c or its binary)") }
        if baselines.torch == nil { print("skipped: PyTorch (give --torch PYTHON, a Python with torch)") }
        var report: [[String: Any]] = []
        var bandwidth: [Int: Double] = [:]
        for t in threadCounts {
            let pool = ComputePool(threads: t)
            bandwidth[t] = MemoryProbe.readBandwidth(pool: pool)
            pool.shutdown()
            print(String(format: "memory read probe, %d thread(s): %.1f GB/s", t, bandwidth[t]!))
        }
        for (name, c) in configs {
            let before = MemoryProbe.currentResidentBytes()
            let weights = ModelWeights.random(config: c, seed: 1)
            let checkpoint = directory.appendingPathComponent("\(name).bin").path
            let tokenizer = directory.appendingPathComponent("tokenizer-\(c.vocabSize).bin").path
            if llama2c != nil || baselines.torch != nil { try Checkpoint.writeLegacy(weights, to: checkpoint) }
            if llama2c != nil { try Llama2cBaseline.writeTokenizer(vocabSize: c.vocabSize, to: tokenizer) }
            let f32 = LlamaModel(weights: weights, precision: .float32)
            let afterF32 = MemoryProbe.currentResidentBytes()
            // bfloat16 batch-1 decode on float32 inputs (the row-major copy, no panels), and bfloat16
            // batched decode (pair panels; inputs rounded too).
            let bf16 = LlamaModel(weights: weights, precision: .bfloat16, batchedDecode: false)
            let afterBF16 = MemoryProbe.currentResidentBytes()
            let bf16Batched = LlamaModel(weights: weights, precision: .bfloat16)
            let afterBF16Panels = MemoryProbe.currentResidentBytes()
            print("\n== \(name): dim \(c.dim), hidden \(c.hiddenDim), \(c.nLayers) layers, \(c.nHeads) heads, \(c.nKVHeads) kv heads, vocab \(c.vocabSize), seq \(c.seqLen); \(String(format: "%.1f", Double(c.parameterCount) / 1e6))M parameters")
            print(String(format: "memory: float32 model (weights + batched-decode panels) %.0f MB resident, bfloat16 copies +%.0f MB, bfloat16 pair panels +%.0f MB; KV cache %.1f MB per sequence",
                         Double(afterF32 - before) / 1e6, Double(afterBF16 - afterF32) / 1e6, Double(afterBF16Panels - afterBF16) / 1e6,
                         Double(2 * c.nLayers * c.seqLen * c.kvDim * 4) / 1e6))
            let torch = try baselines.torch.map { try TorchBaseline(python: $0, checkpoint: checkpoint, workDirectory: directory) }
            defer { torch?.stop() }
            if let torch { print("PyTorch \(torch.version), same weights") }
            let steps = min(self.steps, c.seqLen)
            let newTokens = min(batchTokens, c.seqLen - 33)
            for t in threadCounts {
                let pool = ComputePool(threads: t)
                defer { pool.shutdown() }
                _ = try torch?.call(["op": "threads", "n": t])
                var best = BestOf()
                for round in 0..<repeats {
                    best.record("f32", try batch1(f32, pool: pool, steps: steps, seed: UInt64(round)))
                    if let llama2c {
                        best.record("llama2c", try llama2c.tokensPerSecond(checkpoint: checkpoint, tokenizer: tokenizer, steps: steps, threads: t, seed: round))
                    }
                    best.record("bf16", try batch1(bf16, pool: pool, steps: steps, seed: UInt64(round)))
                    if let torch {
                        best.record("torch1", try torch.figure(["op": "decode", "batch": 1, "tokens": steps, "top_p": 1.0, "prompt_max": 1, "seed": round], "tps"))
                    }
                    for topP: Float in [1, 0.9] {
                        let key = topP < 1 ? "topp" : "plain"
                        let (decode, endToEnd) = try batched(f32, pool: pool, topP: topP, newTokens: newTokens, round: round)
                        best.record(key, decode)
                        best.record(key + "-e2e", endToEnd)
                        if let torch {
                            best.record("torch-" + key, try torch.figure(["op": "decode", "batch": batch, "tokens": newTokens, "top_p": Double(topP),
                                                                          "prompt_max": 32, "seed": round], "tps"))
                        }
                    }
                    for kv in KVCache.Precision.allCases {
                        let key = kv == .bfloat16 ? "bf16kv-plain" : "bf16-plain"
                        let (decode, endToEnd) = try batched(bf16Batched, pool: pool, topP: 1, newTokens: newTokens, round: round, kvCache: kv)
                        best.record(key, decode)
                        best.record(key + "-e2e", endToEnd)
                    }
                }
                let label = "[\(t) thread\(t == 1 ? "" : "s")]"
                let gbF32 = best["f32"]! * Double(f32.bytesPerDecodedToken) / 1e9, gbBF16 = best["bf16"]! * Double(bf16.bytesPerDecodedToken) / 1e9
                // Batch-1 decode streams the weights once a token: from memory, or from the last-level
                // cache where they fit in it. A read probe over the same number of bytes measures the
                // rate of whichever it is (llama2.c reads the same float32 weights).
                let probeF32 = MemoryProbe.readBandwidth(bytes: f32.bytesPerDecodedToken, pool: pool, repeats: 5)
                let probeBF16 = MemoryProbe.readBandwidth(bytes: bf16.bytesPerDecodedToken, pool: pool, repeats: 5)
                let gbLlama2c = best["llama2c"].map { String(format: " (%.1f GB/s)", $0 * Double(f32.bytesPerDecodedToken) / 1e9) } ?? ""
                print(String(format: "%@ batch 1 float32:  %7.1f tok/s  %5.1f GB/s (%.0f%% of probe; %.0f%% of a %.0f MB probe, %.1f GB/s)  vs llama2.c %@%@: %@  vs PyTorch %@: %@",
                             label, best["f32"]!, gbF32, 100 * gbF32 / bandwidth[t]!, 100 * gbF32 / probeF32, Double(f32.bytesPerDecodedToken) / 1e6, probeF32,
                             figure(best["llama2c"]), gbLlama2c, ratio(best["f32"], best["llama2c"]) + best.roundRatios("f32", "llama2c"),
                             figure(best["torch1"]), ratio(best["f32"], best["torch1"])))
                print(String(format: "%@ batch 1 bfloat16: %7.1f tok/s  %5.1f GB/s (%.0f%% of probe; %.0f%% of a %.0f MB probe, %.1f GB/s)  vs llama2.c float32: %@",
                             label, best["bf16"]!, gbBF16, 100 * gbBF16 / bandwidth[t]!, 100 * gbBF16 / probeBF16, Double(bf16.bytesPerDecodedToken) / 1e6, probeBF16,
                             ratio(best["bf16"], best["llama2c"])))
                for key in ["topp", "plain"] {
                    print(String(format: "%@ batch %d float32 decode, top-p %@: %7.1f tok/s (end to end with prefill: %.1f)  vs PyTorch %@: %@",
                                 label, batch, key == "topp" ? "0.9" : "1  ", best[key]!, best[key + "-e2e"]!,
                                 figure(best["torch-" + key]), ratio(best[key], best["torch-" + key])))
                }
                for (key, what) in [("bf16-plain", "bfloat16 weights"), ("bf16kv-plain", "bfloat16 weights and KV cache")] {
                    print(String(format: "%@ batch %d %@, top-p 1: %7.1f tok/s (end to end with prefill: %.1f)  vs float32: %@  vs llama2.c batch 1: %@",
                                 label, batch, what, best[key]!, best[key + "-e2e"]!, ratio(best[key], best["plain"]),
                                 ratio(best[key], best["llama2c"])))
                }
                print(String(format: "%@ top-p 0.9 costs %.1f%% of the top-p 1 decode rate", label, 100 * (1 - best["topp"]! / best["plain"]!)))
                let prefill = try prefillRate(f32, pool: pool)
                print(String(format: "%@ prefill of %d tokens: %.0f tok/s", label, c.seqLen / 2, prefill))
                var row: [String: Any] = ["config": name, "threads": t, "probe_gbps": bandwidth[t]!, "prefill_tps": prefill,
                                          "batch1_f32_gbps": gbF32, "batch1_bf16_gbps": gbBF16, "batch": batch,
                                          "probe_f32_weights_gbps": probeF32, "probe_bf16_weights_gbps": probeBF16]
                for (key, value) in best.values { row[key] = value }
                report.append(row)
            }
        }
        let peak = MemoryProbe.peakResidentBytes()
        print(String(format: "\npeak resident memory: %.0f MB (includes the %d MB bandwidth probe buffer)", Double(peak) / 1e6, 512 * 1048576 / 1_000_000))
        if let jsonOut {
            let data = try JSONSerialization.data(withJSONObject: ["runs": report, "peak_rss_bytes": peak, "blas": BLASRuntime.coreName],
                                                  options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: jsonOut))
        }
    }

    /// Batch-1 decode from BOS for `steps` positions at temperature 1 (plain multinomial, as llama2.c's
    /// `-t 1 -p 1`): tokens per second.
    private func batch1(_ model: LlamaModel, pool: ComputePool, steps: Int, seed: UInt64) throws -> Double {
        let generator = TextGenerator(transformer: Transformer(model: model, pool: pool))
        let start = Date()
        let result = try generator.generate(GenerationRequest(promptIds: [1], maxNewTokens: steps - 1, sampling: SamplingSettings(temperature: 1, topP: 1),
                                                              seed: seed, stopTokens: []))
        return Double(result.ids.count) / Date().timeIntervalSince(start)
    }

    /// Batched decode: `batch` sequences with prompts of 1-32 tokens (prefilled one by one), then
    /// `newTokens - 1` decode steps of all rows. Returns the decode steps' rate (a rollout's steady state)
    /// and the rate end to end with the prefill.
    private func batched(_ model: LlamaModel, pool: ComputePool, topP: Float, newTokens: Int, round: Int,
                         kvCache: KVCache.Precision = .float32) throws -> (Double, Double) {
        let transformer = Transformer(model: model, pool: pool, kvCache: kvCache)
        let c = model.config
        var rng = SeededGenerator(seed: 7, stream: UInt64(round))
        let prompts = (0..<batch).map { _ -> [Int32] in
            let length = 1 + Int(rng.next() % 32)
            return [Int32(1)] + (1..<length).map { _ in Int32(3 + rng.next() % UInt64(c.vocabSize - 3)) }
        }
        let caches = (0..<batch).map { _ in transformer.makeCache() }
        let sampling = SamplingSettings(temperature: 1, topP: topP)
        let samplers = try prompts.map { _ in try Sampler(settings: sampling) }
        var scratch = Array(repeating: SamplingScratch(), count: pool.threadCount)
        var rngs = (0..<batch).map { SeededGenerator(seed: UInt64(round), stream: UInt64($0)) }
        let start = Date()
        var tokens = try prompts.enumerated().map { i, prompt in
            try transformer.prefill(prompt, cache: caches[i]).withRow(0) { samplers[i].sample($0, rng: &rngs[i], scratch: &scratch[0]).id }
        }
        let decodeStart = Date()
        let rows = Array(0..<batch)
        for _ in 1..<newTokens {
            let logits = try transformer.decode(tokens, caches: caches)
            tokens = Sampler.sample(logits, sequences: rows, samplers: samplers, rngs: &rngs, pool: pool, scratch: &scratch).map(\.id)
        }
        let end = Date()
        return (Double(batch * (newTokens - 1)) / end.timeIntervalSince(decodeStart), Double(batch * newTokens) / end.timeIntervalSince(start))
    }

    /// Prefill of half the context in one pass: tokens per second, best of `repeats`.
    private func prefillRate(_ model: LlamaModel, pool: ComputePool) throws -> Double {
        let transformer = Transformer(model: model, pool: pool)
        let c = model.config
        let prompt = [Int32(1)] + (1..<(c.seqLen / 2)).map { Int32(3 + ($0 * 7919) % (c.vocabSize - 3)) }
        var best = 0.0
        let cache = transformer.makeCache()
        for _ in 0..<repeats {
            cache.reset()
            let start = Date()
            _ = try transformer.prefill(prompt, cache: cache)
            best = max(best, Double(prompt.count) / Date().timeIntervalSince(start))
        }
        return best
    }
}
