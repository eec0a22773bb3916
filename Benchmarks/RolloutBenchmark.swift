import Foundation
import LlamaCore

/// Rollout sampling as a generator does it (K samples of each prompt, temperature 1), with continuous
/// batching over `slots` decode slots against static batching of the same slots (the requests in
/// consecutive batches of `slots`, each decoded until its longest member ends), interleaved in one run
/// on the same random weights. Both must give every request the same tokens, bit for bit.
public struct RolloutBenchmark: Sendable {
    /// Model shape: 15M, gqa or 110M.
    public var config: String
    /// Thread counts to measure.
    public var threads: [Int]
    /// Prompts, and samples of each.
    public var prompts: Int, samples: Int
    /// Longest answer, in new tokens.
    public var maxNewTokens: Int
    /// A token's chance of being the end of an answer: each answer's length is drawn as if EOS came with
    /// this probability at every token (a geometric length, capped at `maxNewTokens`).
    public var eosProbability: Double
    /// Decode slots (the static batch size).
    public var slots: Int
    /// Rounds per figure; the best is reported.
    public var repeats: Int
    /// Write the figures as JSON to this file too.
    public var jsonOut: String?

    public init(config: String = "110M", threads: [Int] = [2], prompts: Int = 64, samples: Int = 4, maxNewTokens: Int = 256,
                eosProbability: Double = 1.0 / 128, slots: Int = 16, repeats: Int = 1, jsonOut: String? = nil) {
        self.config = config
        self.threads = threads
        self.prompts = prompts
        self.samples = samples
        self.maxNewTokens = maxNewTokens
        self.eosProbability = eosProbability
        self.slots = slots
        self.repeats = repeats
        self.jsonOut = jsonOut
    }

    /// The round's requests: prompts of 8 to 32 random tokens after BOS, `samples` streams of each, and
    /// each sample's length drawn from the EOS model (deterministic in the seed).
    func requests(_ c: LlamaConfig) -> [GenerationRequest] {
        var rng = SeededGenerator(seed: 0x5EED, stream: 0)
        func uniform() -> Double { Double(rng.next() >> 11) / Double(1 << 53) }
        return (0..<prompts).flatMap { p -> [GenerationRequest] in
            let length = 8 + Int(rng.next() % 25)
            let prompt = [Int32(1)] + (0..<length).map { _ in Int32(3 + rng.next() % UInt64(c.vocabSize - 3)) }
            return (0..<samples).map { k in
                // Geometric: the first token whose draw falls under the EOS probability ends the answer.
                let drawn = eosProbability >= 1 ? 1 : Int((log(max(1e-300, 1 - uniform())) / log(1 - eosProbability)).rounded(.down)) + 1
                return GenerationRequest(promptIds: prompt, maxNewTokens: min(maxNewTokens, drawn, c.seqLen - prompt.count),
                                         sampling: SamplingSettings(temperature: 1), seed: UInt64(p), stream: UInt64(k), stopTokens: [])
            }
        }
    }

    /// Runs the benchmark, printing its figures and the ratio.
    public func run() throws {
        let c = try benchConfig(config)
        printMachine()
        let requests = requests(c)
        let lengths = requests.map(\.maxNewTokens)
        let total = lengths.reduce(0, +)
        let staticSteps = stride(from: 0, to: lengths.count, by: slots).reduce(0) { $0 + lengths[$1 ..< min(lengths.count, $1 + slots)].max()! }
        print("== \(config): \(String(format: "%.1f", Double(c.parameterCount) / 1e6))M parameters; \(prompts) prompts x \(samples) samples, "
              + "answer lengths 1-\(maxNewTokens) as if EOS had probability \(String(format: "%.4f", eosProbability)) at each token "
              + "(mean \(String(format: "%.1f", Double(total) / Double(lengths.count))), longest \(lengths.max() ?? 0)); \(total) tokens; \(slots) slots")
        print("decode steps: static \(staticSteps), continuous at least \((total + slots - 1) / slots)")
        let model = LlamaModel(weights: ModelWeights.random(config: c, seed: 1))
        var report: [[String: Any]] = []
        for t in threads {
            let pool = ComputePool(threads: t)
            defer { pool.shutdown() }
            let generator = TextGenerator(transformer: Transformer(model: model, pool: pool))
            var best = BestOf()
            for _ in 0..<repeats {
                var start = Date()
                var batched: [GenerationResult] = []
                for first in stride(from: 0, to: requests.count, by: slots) {
                    batched += try generator.generate(batch: Array(requests[first ..< min(requests.count, first + slots)]))
                }
                best.record("static", Double(total) / Date().timeIntervalSince(start))
                start = Date()
                let continuous = try generator.generate(batch: requests, slots: slots)
                best.record("continuous", Double(total) / Date().timeIntervalSince(start))
                guard continuous == batched else {
                    throw BenchmarkError("continuous batching sampled other tokens than static batching for the same requests")
                }
            }
            let label = "[\(t) thread\(t == 1 ? "" : "s")]"
            print(String(format: "%@ static batching (batches of %d): %7.1f tok/s   continuous batching (%d slots): %7.1f tok/s   ratio %@ (same tokens: yes)",
                         label, slots, best["static"]!, slots, best["continuous"]!, ratio(best["continuous"], best["static"])))
            var row: [String: Any] = ["config": config, "threads": t, "slots": slots, "tokens": total, "static_steps": staticSteps]
            for (key, value) in best.values { row[key + "_tps"] = value }
            report.append(row)
        }
        if let jsonOut {
            let data = try JSONSerialization.data(withJSONObject: ["runs": report], options: [.prettyPrinted, .sortedKeys])
            try data.write(to: URL(fileURLWithPath: jsonOut))
        }
    }
}
