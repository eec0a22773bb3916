import ClusterRuntime
import Foundation
import LlamaCore
import Wire

extension RLHFPipeline {
    /// Settings of a direct-preference round (`dpo_round`).
    public struct DPORoundSettings: Codable, Sendable, Equatable {
        /// Where the pairs come from.
        public enum Pairs: String, Codable, Sendable, CaseIterable {
            /// The plan's preference pairs (the data's, or the embedded task's), offline.
            case data
            /// Each iteration, `samples` answers of the current policy to `prompts` prompts, the best against
            /// the worst by the round's reward sources (or the judge): iterative DPO.
            case onPolicy = "on_policy"
        }

        /// What ranks on-policy answers.
        public enum Ranking: String, Codable, Sendable, CaseIterable {
            case reward, judge
        }

        public var name: String
        /// Branch: the round starts from the policy as the earlier round of this name left it (nil: the current policy).
        public var startFrom: String?
        /// A wall-clock budget in seconds: no iteration starts after the round has run this long (nil: none;
        /// `iterations` is then the only limit). For comparisons at equal cost; a resumed round may take another count.
        public var budgetSeconds: Double?
        public var pairs = Pairs.data
        public var beta = 0.1
        public var objective = TrainBatch.Objective.sigmoid
        /// Conservative DPO's label smoothing (0: plain DPO).
        public var labelSmoothing = 0.0
        public var epochs = 1
        /// Pairs per gradient step.
        public var batchSize = 16
        public var learningRate: Float = 1e-5
        /// Data pairs used (nil: every training pair).
        public var maxPairs: Int?
        /// On-policy: iterations, prompts per iteration, answers per prompt, and what ranks them.
        public var iterations = 1
        public var prompts = 256
        public var samples = 4
        public var rankBy = Ranking.reward
        public var temperature: Float = 1.0
        public var maxNewTokens = 96
        /// The reward's sources and weights when ranking by reward (nil: the reward models alone).
        public var reward: RewardWeights?
        public init(name: String) { self.name = name }
    }

    /// A DPO round (Rafailov et al. 2023; IPO, Azar et al. 2023; conservative DPO with label smoothing):
    /// pairs from the data (the training pairs, a tenth held out as `train_rm` holds it out) or on-policy,
    /// each response's sequence log-probability under the reference asked of the reference workers once
    /// per pair, then `epochs` passes of DPO steps on the learner (a seeded order, `batchSize` pairs a
    /// step); the policy is synced to the generators after each iteration and evaluated at the end.
    public func dpoRound(_ settings: DPORoundSettings, evaluation: EvalSettings, seed: UInt64) throws {
        let started = Date()
        let round = Int(coordinator.status().round) + 1
        let directory = runDirectory + "/rounds/\(settings.name)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var tokens = 0, sampleSeconds = 0.0, rewardMeans: [Double] = []
        var pairLines = ""
        var last: TrainStats?
        for iteration in 1...(settings.pairs == .data ? 1 : settings.iterations) {
            if let budget = settings.budgetSeconds, iteration > 1, Date().timeIntervalSince(started) >= budget {
                report(String(format: "%@: the %.0f s budget is spent after %d iterations", settings.name, budget, iteration - 1))
                break
            }
            var pairs: [TokenPair]
            if settings.pairs == .data {
                pairs = context.pairs.preferencePairs.map { self.tokens($0) }.filter { !RLHFPipeline.isHeldOut($0.promptText) }
                if let n = settings.maxPairs { pairs = Array(pairs.prefix(n)) }
            } else {
                coordinator.setProgress(PlanStage(.samplePairs, round: settings.name), round: UInt32(round), step: UInt64(iteration))
                let sampleStart = Date()
                let (made, rewardMean, generatedTokens) = try onPolicyPairs(settings, iteration: iteration, seed: seed)
                sampleSeconds += Date().timeIntervalSince(sampleStart)
                tokens += generatedTokens
                rewardMeans.append(rewardMean)
                pairs = made
            }
            let fitting = pairs.filter { $0.prompt.count + max($0.chosen.count, $0.rejected.count) <= config.seqLen }
            if fitting.count < pairs.count {
                report("\(settings.name): \(pairs.count - fitting.count) of \(pairs.count) pairs are longer than the model's context \(config.seqLen); left out")
            }
            guard !fitting.isEmpty else { throw ClusterLaunch.Failure(message: "\(settings.name): iteration \(iteration) has no preference pair to train on") }
            // The reference's sequence log-probabilities, once per pair.
            coordinator.setProgress(PlanStage(.reference, round: settings.name), round: UInt32(round), step: UInt64(iteration))
            let sequences = fitting.enumerated().flatMap { i, p in [sequence(UInt64(2 * i), p.prompt, p.chosen), sequence(UInt64(2 * i + 1), p.prompt, p.rejected)] }
            let reference = try coordinator.referenceLogProbs(sequences, policyVersion: coordinator.referenceVersion).map { $0.reduce(0.0) { $0 + Double($1) } }
            for (i, p) in fitting.enumerated() {
                let record: [String: Any] = ["iteration": iteration, "prompt": p.promptText, "chosen": context.text(p.chosen), "rejected": context.text(p.rejected),
                                             "reference_chosen": reference[2 * i], "reference_rejected": reference[2 * i + 1]]
                pairLines += String(decoding: try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]), as: UTF8.self) + "\n"
            }
            // DPO steps.
            let stage = PlanStage(.train, round: settings.name)
            coordinator.setProgress(stage, round: UInt32(round), step: 0)
            var order = Array(fitting.indices)
            var random = SeededGenerator(seed: seed &+ 31 &* UInt64(iteration))
            var version = coordinator.status().policyVersion
            var steps = 0, accuracy = 0.0, margin = 0.0, loss = 0.0
            for _ in 0..<max(1, settings.epochs) {
                random.shuffle(&order)
                for start in stride(from: 0, to: order.count, by: settings.batchSize) {
                    let part = order[start ..< min(order.count, start + settings.batchSize)]
                    var batch = TrainBatch(kind: .dpo)
                    batch.policyVersion = version
                    batch.learningRate = settings.learningRate
                    batch.klBeta = Float(settings.beta)
                    batch.objective = settings.objective
                    batch.labelSmoothing = Float(settings.labelSmoothing)
                    batch.sequences = part.flatMap { [sequences[2 * $0], sequences[2 * $0 + 1]] }
                    batch.tensors = [WireTensor(name: "ref_logprobs", floats: part.flatMap { [Float(reference[2 * $0]), Float(reference[2 * $0 + 1])] })]
                    let stats = try coordinator.train(batch)
                    version = stats.policyVersion
                    last = stats
                    steps += 1
                    loss += stats.loss
                    accuracy += stats.accuracy
                    margin += stats.rewardMargin
                    coordinator.setProgress(stage, round: UInt32(round), step: UInt64(steps))
                    metric(["stage": "dpo", "round": settings.name, "iteration": iteration, "step": steps, "loss": stats.loss,
                            "reward_accuracy": stats.accuracy, "reward_margin": stats.rewardMargin, "grad_norm": stats.gradNorm,
                            "policy_version": version])
                }
            }
            coordinator.setProgress(PlanStage(.sync, round: settings.name), round: UInt32(round), step: UInt64(iteration))
            if let announce = last?.announce { try coordinator.syncWeights(announce, roles: [.generator]) }
            let n = Double(max(1, steps))
            report(String(format: "%@ DPO %d/%d: %d pairs, %d steps: loss %.4f, reward accuracy %.1f%%, margin %.3f (means over the steps) -> policy v%llu",
                          settings.name, iteration, settings.pairs == .data ? 1 : settings.iterations, fitting.count, steps, loss / n,
                          100 * accuracy / n, margin / n, version))
        }
        try Data(pairLines.utf8).write(to: URL(fileURLWithPath: directory + "/pairs.jsonl"))
        if let announce = last?.announce {
            try export.write(try coordinator.fetchWeights(announce, config: config), directory: directory)
        }
        coordinator.setProgress(PlanStage(.evaluate, round: settings.name), round: UInt32(round))
        try evaluate(name: settings.name, settings: evaluation, rewardMean: rewardMeans.reduce(0, +) / Double(max(1, rewardMeans.count)),
                     tokensPerSecond: sampleSeconds > 0 ? Double(tokens) / sampleSeconds : nil, seconds: Date().timeIntervalSince(started))
    }

    /// On-policy pairs: `samples` answers of the current policy to each of `prompts` training prompts (a
    /// seeded draw), ranked by the round's reward sources or the judge; per prompt the best answer against
    /// the worst (none where they tie). Returns the pairs, the answers' mean reward and their tokens.
    func onPolicyPairs(_ settings: DPORoundSettings, iteration: Int, seed: UInt64) throws -> (pairs: [TokenPair], rewardMean: Double, tokens: Int) {
        let prompts = trainingPrompts(settings.prompts, seed: seed &+ UInt64(iteration))
        let generated = try draw(prompts, samples: max(2, settings.samples), temperature: settings.temperature, maxNewTokens: settings.maxNewTokens,
                                 seed: seed &* 7919 &+ UInt64(iteration), promptsPerTask: 1)
        let scores: [Double]
        switch settings.rankBy {
        case .reward:
            let sequences = sequences(of: generated)
            scores = try sourceRewards(generated, sequences: sequences, weights: settings.reward ?? RewardWeights()).combined
        case .judge:
            scores = try context.judge.judge(generated.map { JudgeItem($0.prompt, response: context.text($0.sample.tokens)) }).map { $0?.utility ?? -.infinity }
        }
        var byPrompt: [UInt64: [Int]] = [:]
        for (i, g) in generated.enumerated() { byPrompt[g.prompt.id, default: []].append(i) }
        var pairs: [TokenPair] = []
        for prompt in prompts {
            guard let members = byPrompt[prompt.id], members.count >= 2 else { continue }
            let best = members.max { (scores[$0], $1) < (scores[$1], $0) }!, worst = members.min { (scores[$0], $1) < (scores[$1], $0) }!
            guard scores[best] > scores[worst], scores[worst].isFinite else { continue }
            pairs.append(TokenPair(promptText: prompt.text, prompt: prompt.ids, chosen: generated[best].sample.tokens,
                                   rejected: generated[worst].sample.tokens, level: nil, safety: prompt.isSafety))
        }
        let finite = scores.filter(\.isFinite)
        return (pairs, finite.reduce(0, +) / Double(max(1, finite.count)), generated.reduce(0) { $0 + $1.sample.tokens.count })
    }
}
