import Foundation
import LlamaCore

/// Evaluation of a policy on the task's held-out prompts, judged by the hidden annotator: its
/// helpfulness and unsafe rates, and head-to-head win rates between two policies.
public enum TaskEvaluation {
    /// How responses are drawn.
    public struct Settings: Sendable, Equatable {
        /// Prompts to evaluate on (nil: every evaluation prompt).
        public var prompts: Int?
        /// Seed of the prompt sample and of the sampling.
        public var seed: UInt64 = 1
        public var sampling = SamplingSettings(temperature: 1, topP: 1)
        public var maxNewTokens = 96
        /// Samples per prompt; with a scorer, the best-scored one is the response (best-of-K).
        public var bestOf = 1
        /// Sequences decoded together.
        public var batchSize = 16

        /// The defaults: every evaluation prompt, one sample at temperature 1.
        public static let `default` = Settings()
        public init() {}
    }

    /// What the annotator makes of a policy's responses.
    public struct Report: Sendable, Equatable, Codable {
        /// Prompts judged.
        public var prompts: Int
        /// Mean helpfulness over story prompts.
        public var helpfulness: Double
        /// Share of story prompts answered helpfully.
        public var helpfulRate: Double
        /// Share of safety prompts answered unsafely.
        public var unsafeRate: Double
        /// Share of safety prompts refused.
        public var refusalRate: Double
        /// Mean response length in tokens.
        public var meanTokens: Double
    }

    /// A head-to-head comparison of A against B.
    public struct WinRate: Sendable, Equatable, Codable {
        public var wins: Int
        public var ties: Int
        public var losses: Int
        /// `(wins + ties / 2) / prompts`.
        public var rate: Double {
            let n = wins + ties + losses
            return n == 0 ? 0 : (Double(wins) + Double(ties) / 2) / Double(n)
        }
    }

    /// The evaluation prompts in use: all, or `count` of them drawn with `seed` (the same on every machine).
    public static func prompts(count: Int?, seed: UInt64) -> [TaskPrompt] {
        let all = TaskPrompt.all.filter { $0.split == .evaluation }
        guard let count, count < all.count else { return all }
        var random = TaskRandom(seed: seed)
        var order = Array(all.indices)
        for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, random.below(i + 1)) }
        return order.prefix(max(0, count)).sorted().map { all[$0] }
    }

    /// One response per prompt from `generator`: a sample, or with `scorer` (token lists of prompt +
    /// response, one score each) the best of `settings.bestOf` samples (the first on ties). Also returns
    /// the token count of each response.
    public static func responses(_ prompts: [TaskPrompt], generator: TextGenerator, tokenizer: Tokenizer, settings: Settings,
                                 scorer: (([[Int32]]) throws -> [Float])? = nil) throws -> [(text: String, tokens: Int)] {
        let k = max(1, settings.bestOf)
        var requests: [GenerationRequest] = []
        for (i, prompt) in prompts.enumerated() {
            let ids = ChatTemplate.promptIDs(prompt.text, tokenizer: tokenizer)
            for sample in 0..<k {
                requests.append(GenerationRequest(promptIds: ids, maxNewTokens: settings.maxNewTokens, sampling: settings.sampling,
                                                  seed: settings.seed &+ UInt64(i), stream: UInt64(sample), stopTokens: tokenizer.stopIds))
            }
        }
        // Continuous batching over batchSize slots: a finished answer's slot takes the next request.
        let results = try generator.generate(batch: requests, slots: max(1, settings.batchSize))
        var out: [(String, Int)] = []
        for i in prompts.indices {
            let samples = Array(results[(i * k) ..< ((i + 1) * k)])
            var best = 0
            if k > 1, let scorer {
                let scores = try scorer(samples.map { $0.promptIds + $0.ids })
                for j in 1..<k where scores[j] > scores[best] { best = j }
            }
            let stops = tokenizer.stopIds
            let ids = samples[best].ids.filter { !stops.contains($0) }
            out.append((tokenizer.decode(ids).trimmingCharacters(in: .whitespaces), ids.count))
        }
        return out
    }

    /// The annotator's verdict on `responses` to `prompts`.
    public static func report(_ prompts: [TaskPrompt], _ responses: [(text: String, tokens: Int)], annotator: Annotator = Annotator()) -> Report {
        var stories = 0, helpful = 0, safety = 0, unsafe = 0, refused = 0
        var helpfulness = 0.0
        for (prompt, response) in zip(prompts, responses) {
            let j = annotator.judge(prompt, response.text)
            if prompt.request.isSafety {
                safety += 1
                if j.unsafe { unsafe += 1 }
                if j.refusal { refused += 1 }
            } else {
                stories += 1
                helpfulness += j.helpfulness
                if j.helpful { helpful += 1 }
            }
        }
        return Report(prompts: prompts.count, helpfulness: helpfulness / Double(max(1, stories)), helpfulRate: Double(helpful) / Double(max(1, stories)),
                      unsafeRate: Double(unsafe) / Double(max(1, safety)), refusalRate: Double(refused) / Double(max(1, safety)),
                      meanTokens: Double(responses.reduce(0) { $0 + $1.tokens }) / Double(max(1, responses.count)))
    }

    /// Win rate of responses `a` over `b` to the same prompts, by the annotator (ties count half).
    public static func winRate(_ prompts: [TaskPrompt], _ a: [String], _ b: [String], annotator: Annotator = Annotator()) -> WinRate {
        var result = WinRate(wins: 0, ties: 0, losses: 0)
        for (prompt, (x, y)) in zip(prompts, zip(a, b)) {
            switch annotator.compare(prompt, x, y) {
            case .first: result.wins += 1
            case .second: result.losses += 1
            case .tie: result.ties += 1
            }
        }
        return result
    }
}
