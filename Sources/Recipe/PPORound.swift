import ClusterRuntime
import Foundation
import LlamaCore
import RLHF
import Wire
import Workers

extension RLHFPipeline {
    /// Settings of a PPO round (LLaMA2's RLHF-V5 after rejection sampling).
    public struct PPOSettings: Codable, Sendable, Equatable {
        public var name: String
        /// Branch: the round starts from the policy as the earlier round of this name left it (nil: the current policy).
        public var startFrom: String?
        /// A wall-clock budget in seconds: no iteration starts after the round has run this long (nil: none;
        /// `iterations` is then the only limit). For comparisons at equal cost; a resumed round may take another count.
        public var budgetSeconds: Double?
        /// The reward's sources and weights (nil: the reward models alone).
        public var reward: RewardWeights?
        /// PPO iterations: each a fresh batch of rollouts, then one learner iteration on them.
        public var iterations = 20
        /// Rollouts per iteration (one prompt each, drawn anew every iteration).
        public var rollouts = 64
        /// Rollouts per mini-batch: one policy and one value gradient step each.
        public var miniBatch = 16
        /// Passes over each iteration's rollouts (each mini-batch one gradient step per pass).
        public var epochs = 1
        /// The policy's learning rate (constant, as LLaMA2's PPO).
        public var learningRate: Float = 1e-5
        /// The value model's learning rate.
        public var valueLearningRate: Float = 1e-5
        /// The KL penalty's coefficient (LLaMA2: 0.01 for the 7B and 13B models).
        public var beta = 0.01
        public var klEstimator: KLEstimator = .k1
        /// With a target (nats per rollout), an adaptive controller (Ziegler et al.) steers beta to it.
        public var klTarget: Double?
        /// Whitening of the combined reward: running statistics (default) or each batch's own.
        public var whitening: RewardWhitener.Statistics = .running
        public var temperature: Float = 1.0
        public var maxNewTokens = 96
        public var gamma: Float = 1
        public var lambda: Float = 0.95
        /// Iterative RLHF inside the round: every `rmEvery` iterations, `newPairs` fresh prompts are
        /// answered twice by the current policy, the pairs labelled by the annotator, and both reward
        /// models retrained on them (with as many replayed earlier pairs) before the next rollouts are
        /// scored, so the reward follows the policy it judges. 0: the reward models stay as they are.
        public var newPairs = 0
        /// Iterations between two reward-model refreshes (nil: a quarter of the round).
        public var rmEvery: Int?
        /// Learning rate of those refreshes.
        public var rewardLearningRate: Float = 5e-5
        public init(name: String) { self.name = name }

        /// The iterations before which the reward models are refreshed (never before the first).
        public var refreshIterations: [Int] {
            guard newPairs > 0 else { return [] }
            let every = max(1, rmEvery ?? iterations / 4)
            return Array(stride(from: 1 + every, through: iterations, by: every))
        }
    }

    /// What one PPO iteration measured (a line of metrics.jsonl).
    struct PPOIterationFigures {
        var rewardMean: Double
        var klMean: Double
        var annotatorUtility: Double
    }

    /// A PPO round: per iteration, rollouts from the generators at the current policy version (with
    /// their log-probabilities), the reference worker's log-probabilities of the same tokens, scores from
    /// the reward-model and safety-model workers combined by the safety gate, LLaMA2's reward
    /// `WHITEN(LOGIT(Rc)) - beta * KL` per token, and one PPO iteration on the learner (GAE over its
    /// value model, mini-batch steps); the new policy is synced to the generators before the next
    /// iteration samples. Every rollout goes once to `rounds/NAME/rollouts.jsonl`; the round ends with a
    /// checkpoint, a check that the reward models and the hidden annotator agree in trend, and an
    /// evaluation.
    public func ppoRound(_ settings: PPOSettings, evaluation: EvalSettings, seed: UInt64) throws {
        let started = Date()
        let round = Int(coordinator.status().round) + 1
        let directory = runDirectory + "/rounds/\(settings.name)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var rollouts = ""
        whitener.statistics = settings.whitening
        var controller = settings.klTarget.map { AdaptiveKLController(beta: klBeta ?? settings.beta, target: $0) }
        var history: [PPOIterationFigures] = []
        var tokens = 0, sampleSeconds = 0.0, gateHits = 0.0
        var last: TrainStats?
        let refreshes = Set(settings.refreshIterations)
        for iteration in 1...settings.iterations {
            if let budget = settings.budgetSeconds, iteration > 1, Date().timeIntervalSince(started) >= budget {
                report(String(format: "%@: the %.0f s budget is spent after %d iterations", settings.name, budget, iteration - 1))
                break
            }
            if refreshes.contains(iteration) {
                try refreshRewardModels(settings, round: round, iteration: iteration, seed: seed)
            }
            coordinator.setProgress(PlanStage(.ppo, round: settings.name), round: UInt32(round), step: UInt64(iteration))
            let version = coordinator.status().policyVersion
            let prompts = trainingPrompts(settings.rollouts, seed: seed &+ UInt64(iteration))
            let sampleStart = Date()
            let generated = try draw(prompts, samples: 1, temperature: settings.temperature, maxNewTokens: settings.maxNewTokens,
                                     seed: seed &* 7919 &+ UInt64(iteration), promptsPerTask: 4)
            sampleSeconds += Date().timeIntervalSince(sampleStart)
            guard !generated.isEmpty else { throw ClusterLaunch.Failure(message: "\(settings.name): iteration \(iteration) produced no rollout") }
            tokens += generated.reduce(0) { $0 + $1.sample.tokens.count }
            let sequences = sequences(of: generated)
            let (combined, function, hitRate) = try sourceRewards(generated, sequences: sequences, weights: settings.reward ?? RewardWeights())
            let referenceVersion = coordinator.referenceVersion
            let reference = try coordinator.referenceLogProbs(sequences, policyVersion: referenceVersion)
            gateHits += hitRate
            let scores = whitener.whiten(combined)
            let beta = controller?.beta ?? settings.beta
            var rewards: [Float] = [], kls: [Double] = []
            for (i, g) in generated.enumerated() {
                let kl = settings.klEstimator.perToken(policy: g.logProbs, reference: reference[i])
                kls.append(kl.reduce(0, +))
                rewards += PPOMath.tokenRewards(score: scores[i], kl: kl, beta: beta).map(Float.init)
            }
            var batch = TrainBatch(kind: .ppo)
            batch.policyVersion = version
            batch.learningRate = settings.learningRate
            batch.valueLearningRate = settings.valueLearningRate
            batch.miniBatchSize = settings.miniBatch
            batch.ppoEpochs = settings.epochs
            batch.gamma = settings.gamma
            batch.gaeLambda = settings.lambda
            batch.shuffleSeed = seed &+ UInt64(iteration)
            // A rollout cut at the token limit ends its episode at its last sampled token (no EOS added).
            batch.sequences = sequences
            batch.tensors = [WireTensor(name: "rewards", floats: rewards)]
            let stats = try coordinator.train(batch)
            // The round counts iterations (the learner's reply would set its optimizer's step count).
            coordinator.setProgress(PlanStage(.ppo, round: settings.name), round: UInt32(round), step: UInt64(iteration))
            last = stats
            try coordinator.syncWeights(stats.announce, roles: [.generator])
            controller?.update(kl: kls.reduce(0, +) / Double(kls.count), steps: kls.count)
            // The hidden annotator's view of the same rollouts, for the trend check (never used to train).
            let utility = try context.judge.judge(generated.map { JudgeItem($0.prompt, response: context.text($0.sample.tokens)) })
                .reduce(0.0) { $0 + ($1?.utility ?? 0) }
            let responseTokens = generated.map(\.logProbs.count)
            let entropy = -generated.reduce(0.0) { $0 + $1.logProbs.reduce(0.0) { $0 + Double($1) } } / Double(max(1, responseTokens.reduce(0, +)))
            let figures = PPOIterationFigures(rewardMean: combined.reduce(0, +) / Double(combined.count), klMean: kls.reduce(0, +) / Double(kls.count),
                                              annotatorUtility: utility / Double(generated.count))
            history.append(figures)
            coordinator.setTrainingSignals(rewardMean: figures.rewardMean, kl: figures.klMean)
            metric(["stage": "ppo", "round": settings.name, "iteration": iteration, "policy_version": stats.policyVersion,
                    "policy_loss": stats.loss, "value_loss": stats.valueLoss, "value_clip_fraction": stats.valueClipFraction,
                    "kl_mean": figures.klMean, "kl_max": kls.max() ?? 0, "clip_fraction": stats.clipFraction, "approx_kl": stats.approxKL,
                    "entropy": entropy, "reward_mean": figures.rewardMean, "response_length": Double(responseTokens.reduce(0, +)) / Double(generated.count),
                    "gate_hit_rate": hitRate, "beta": beta, "mean_return": stats.meanReturn, "grad_norm": stats.gradNorm,
                    "gradient_steps": stats.gradientSteps, "annotator_utility": figures.annotatorUtility,
                    "tokens_per_second": Double(tokens) / max(1e-9, sampleSeconds)])
            for (i, g) in generated.enumerated() {
                var record: [String: Any] = ["prompt_id": g.sample.promptID, "sample_id": (iteration - 1) * settings.rollouts + i,
                                             "iteration": iteration, "policy_version": version, "reward": combined[i], "kl": kls[i]]
                if let function { record["function_reward"] = Double(function[i]) }
                rollouts += String(decoding: try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]), as: UTF8.self) + "\n"
            }
            if iteration == 1 || iteration == settings.iterations || iteration % max(1, settings.iterations / 5) == 0 {
                report(String(format: "%@ PPO %d/%d: reward %.3f, KL %.3f (max %.3f), beta %.4f, policy loss %.4f, value loss %.4f, clip %.2f, "
                              + "entropy %.3f, annotator utility %.3f -> policy v%llu",
                              settings.name, iteration, settings.iterations, figures.rewardMean, figures.klMean, kls.max() ?? 0, beta,
                              stats.loss, stats.valueLoss, stats.clipFraction, entropy, figures.annotatorUtility, stats.policyVersion))
            }
        }
        klBeta = controller?.beta
        try Data(rollouts.utf8).write(to: URL(fileURLWithPath: directory + "/rollouts.jsonl"))
        if let trend = RLHFPipeline.rewardHackingWarning(history) {
            report("\(settings.name): WARNING: \(trend)")
            metric(["stage": "reward_hacking", "round": settings.name, "message": trend])
        }
        if let last, let announce = last.announce {
            let weights = try coordinator.fetchWeights(announce, config: config)
            try export.write(weights, directory: directory)
        }
        coordinator.setProgress(PlanStage(.evaluate, round: settings.name), round: UInt32(round))
        let rewardMean = history.map(\.rewardMean).reduce(0, +) / Double(max(1, history.count))
        try evaluate(name: settings.name, settings: evaluation, rewardMean: rewardMean, gateHitRate: gateHits / Double(max(1, settings.iterations)),
                     tokensPerSecond: Double(tokens) / max(1e-9, sampleSeconds), seconds: Date().timeIntervalSince(started))
    }

    /// Each drawn answer's reward from a round's sources, weighted: both reward models combined by
    /// LLaMA2's safety gate (the safety score on safety prompts and where `sigmoid(Rs) < 0.15`) and the
    /// reward function; with the function's own rewards and the gate's hit rate (0 when the models do
    /// not weigh). A source of weight 0 is not asked.
    func sourceRewards(_ generated: [Drawn], sequences: [TokenSequence], weights: RewardWeights) throws
        -> (combined: [Double], function: [Float]?, gateHitRate: Double) {
        let none = [Float](repeating: 0, count: sequences.count)
        let helpfulness = weights.models > 0 ? try modelScores(generated, sequences: sequences, model: .rewardModel, perTask: 16) : none
        let safety = weights.models > 0 ? try modelScores(generated, sequences: sequences, model: .safetyModel, perTask: 16) : none
        let function = weights.function > 0 ? try functionRewards(generated) : nil
        let (gated, hitRate) = gate.combine(helpfulness: helpfulness, safety: safety, isSafetyPrompt: generated.map(\.prompt.isSafety))
        return (weights.combine(gated: gated, function: function, count: generated.count), function, weights.models > 0 ? hitRate : 0)
    }

    /// Refreshes both reward models during a PPO round: `settings.newPairs` training prompts (a draw of
    /// their own) answered twice by the current policy, each pair labelled by the annotator, then the
    /// retraining of a rejection-sampling round's `new_pairs`.
    func refreshRewardModels(_ settings: PPOSettings, round: Int, iteration: Int, seed: UInt64) throws {
        let stage = "\(settings.name) @\(iteration)"
        coordinator.setProgress(PlanStage(.samplePairs, round: stage), round: UInt32(round), step: UInt64(iteration))
        let prompts = trainingPrompts(settings.newPairs, seed: seed &* 31 &+ UInt64(iteration))
        let generated = try draw(prompts, samples: 2, temperature: settings.temperature, maxNewTokens: settings.maxNewTokens,
                                 seed: seed &* 104_729 &+ UInt64(iteration), promptsPerTask: 8)
        let sequences = sequences(of: generated)
        let helpfulness = try modelScores(generated, sequences: sequences, model: .rewardModel, perTask: 16)
        try retrainRewardModels(name: stage, newPairs: settings.newPairs, learningRate: settings.rewardLearningRate,
                                seed: UInt64(round) << 16 | UInt64(iteration), generated: generated.map(\.sample),
                                prompts: Dictionary(generated.map { ($0.prompt.id, $0.prompt) }, uniquingKeysWith: { a, _ in a }),
                                helpfulness: helpfulness)
    }

    /// Whether the reward models' scores and the hidden annotator's judgement of the same rollouts
    /// diverged over a PPO round: the reward's mean rose from the first third of the iterations to the
    /// last while the annotator's utility fell by more than 0.02. Returns the message to show, or nil.
    static func rewardHackingWarning(_ history: [PPOIterationFigures]) -> String? {
        let third = history.count / 3
        guard third >= 1 else { return nil }
        func mean(_ part: ArraySlice<PPOIterationFigures>, _ value: (PPOIterationFigures) -> Double) -> Double {
            part.map(value).reduce(0, +) / Double(part.count)
        }
        let first = history.prefix(third), last = history.suffix(third)
        let reward = mean(last, \.rewardMean) - mean(first, \.rewardMean)
        let utility = mean(last, \.annotatorUtility) - mean(first, \.annotatorUtility)
        guard reward > 0, utility < -0.02 else { return nil }
        return String(format: "the reward models and the annotator disagree (reward hacking?): the reward rose by %.3f while the annotator's "
                      + "utility of the same rollouts fell by %.3f", reward, -utility)
    }
}
