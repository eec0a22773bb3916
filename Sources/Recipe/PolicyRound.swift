import ClusterRuntime
import Foundation
import LlamaCore
import RLHF
import Wire
import Workers

extension RLHFPipeline {
    /// Settings of a critic-free policy round (`policy_round`): GRPO, Dr. GRPO, RLOO or REINFORCE++ on the
    /// K-samples-per-prompt fan-out of the generators, no value model.
    public struct PolicyRoundSettings: Codable, Sendable, Equatable {
        /// The algorithms of a `policy_round` (`ppo` runs today's `ppo_round` with these settings).
        public enum Algorithm: String, Codable, Sendable, CaseIterable {
            case grpo
            case drGRPO = "dr_grpo"
            case rloo
            case reinforcePP = "reinforce_pp"
            case ppo
        }

        /// Where the KL to the reference enters: the loss (`beta * k3` per token, GRPO's) or the reward
        /// (`-beta * kl` per token, REINFORCE++'s and PPO's).
        public enum KLPlacement: String, Codable, Sendable, CaseIterable {
            case loss, reward
        }

        public var name: String
        /// Branch: the round starts from the policy as the earlier round of this name left it (nil: the current policy).
        public var startFrom: String?
        /// A wall-clock budget in seconds: no iteration starts after the round has run this long (nil: none;
        /// `iterations` is then the only limit). For comparisons at equal cost; a resumed round may take another count.
        public var budgetSeconds: Double?
        public var algorithm = Algorithm.grpo
        /// Iterations: each a fresh draw of prompts, `group` answers to each, one learner iteration.
        public var iterations = 20
        /// Prompts per iteration.
        public var prompts = 16
        /// Answers per prompt (the group whose rewards are each answer's baseline).
        public var group = 4
        /// Passes over each iteration's answers, and sequences per gradient step (0: all in one).
        public var epochs = 1
        public var miniBatch = 0
        public var clip = 0.2
        public var learningRate: Float = 1e-5
        /// The KL coefficient (GRPO's 0.04 by default).
        public var beta = 0.04
        /// The per-token KL estimator where the KL is in the reward (in the loss it is always k3).
        public var klEstimator: KLEstimator = .k1
        /// nil: the algorithm's own (the loss for GRPO, Dr. GRPO and RLOO; the reward for REINFORCE++).
        public var klIn: KLPlacement?
        /// nil: the algorithm's own (per sequence for GRPO and RLOO, per token for REINFORCE++; Dr. GRPO
        /// always sums over a constant length, `max_new_tokens`).
        public var lossAggregation: String?
        public var temperature: Float = 1.0
        public var maxNewTokens = 96
        /// The reward's sources and weights (nil: the reward models alone).
        public var reward: RewardWeights?
        public init(name: String) { self.name = name }

        /// Where the KL goes for this algorithm.
        public var klPlacement: KLPlacement { klIn ?? (algorithm == .reinforcePP || algorithm == .ppo ? .reward : .loss) }

        /// How the learner sums the per-token terms.
        public var aggregation: TrainBatch.Aggregation {
            if algorithm == .drGRPO { return .constant(maxNewTokens) }
            switch lossAggregation ?? (algorithm == .reinforcePP ? "token" : "sequence") {
            case "token": return .token
            default: return .sequence
            }
        }

        /// The same round as LLaMA2's PPO (`algorithm: ppo`): `prompts * group` rollouts an iteration.
        public var ppo: PPOSettings {
            var settings = PPOSettings(name: name)
            settings.iterations = iterations
            settings.rollouts = prompts * group
            settings.miniBatch = miniBatch == 0 ? settings.rollouts : miniBatch
            settings.epochs = epochs
            settings.learningRate = learningRate
            settings.beta = beta
            settings.klEstimator = klEstimator
            settings.temperature = temperature
            settings.maxNewTokens = maxNewTokens
            settings.reward = reward
            settings.budgetSeconds = budgetSeconds
            return settings
        }
    }

    /// A critic-free policy round. Each iteration draws `prompts` training prompts, fans `group` answers to
    /// each out over the generators at the current policy version (with their log-probabilities, the old
    /// policy's), rewards them from the round's sources, asks the reference workers for the same tokens'
    /// log-probabilities, and turns rewards into advantages without a critic: within each prompt's group
    /// (GRPO `(r - mean) / (std + 1e-4)`; Dr. GRPO `r - mean`; RLOO `r - mean of the others`) or over the
    /// whole batch (REINFORCE++: the KL penalty in every token's reward, returns to go, normalised). The
    /// learner runs one iteration on them (POLICY_ITERATION: clipped surrogate, with the KL in the loss as
    /// `beta * k3` where it goes there) and the new policy is synced to the generators. Every answer goes
    /// once to `rounds/NAME/rollouts.jsonl`; the round ends with a checkpoint and an evaluation.
    public func policyRound(_ settings: PolicyRoundSettings, evaluation: EvalSettings, seed: UInt64) throws {
        if settings.algorithm == .ppo {
            try ppoRound(settings.ppo, evaluation: evaluation, seed: seed)
            return
        }
        let started = Date()
        let round = Int(coordinator.status().round) + 1
        let directory = runDirectory + "/rounds/\(settings.name)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var rollouts = ""
        var tokens = 0, sampleSeconds = 0.0, gateHits = 0.0
        var rewardMeans: [Double] = []
        var last: TrainStats?
        let weights = settings.reward ?? RewardWeights()
        for iteration in 1...settings.iterations {
            if let budget = settings.budgetSeconds, iteration > 1, Date().timeIntervalSince(started) >= budget {
                report(String(format: "%@: the %.0f s budget is spent after %d iterations", settings.name, budget, iteration - 1))
                break
            }
            let stage = PlanStage(.sample, round: settings.name)
            coordinator.setProgress(stage, round: UInt32(round), step: UInt64(iteration))
            let version = coordinator.status().policyVersion
            let prompts = trainingPrompts(settings.prompts, seed: seed &+ UInt64(iteration))
            let sampleStart = Date()
            let drawn = try draw(prompts, samples: settings.group, temperature: settings.temperature, maxNewTokens: settings.maxNewTokens,
                                 seed: seed &* 7919 &+ UInt64(iteration), promptsPerTask: 1)
            sampleSeconds += Date().timeIntervalSince(sampleStart)
            // Groups in prompt order, each answer once (an empty answer was dropped: its group is smaller).
            let order = Dictionary(prompts.enumerated().map { ($1.id, $0) }, uniquingKeysWith: { a, _ in a })
            let generated = drawn.sorted { (order[$0.prompt.id] ?? 0, $0.sample.index) < (order[$1.prompt.id] ?? 0, $1.sample.index) }
            guard !generated.isEmpty else { throw ClusterLaunch.Failure(message: "\(settings.name): iteration \(iteration) produced no answer") }
            tokens += generated.reduce(0) { $0 + $1.sample.tokens.count }
            let sequences = sequences(of: generated)
            coordinator.setProgress(PlanStage(.score, round: settings.name), round: UInt32(round), step: UInt64(iteration))
            let (combined, function, hitRate) = try sourceRewards(generated, sequences: sequences, weights: weights)
            gateHits += hitRate
            let reference = try coordinator.referenceLogProbs(sequences, policyVersion: coordinator.referenceVersion)
            let kl = generated.enumerated().map { i, g in settings.klEstimator.perToken(policy: g.logProbs, reference: reference[i]) }
            let k3 = generated.enumerated().map { i, g in KLEstimator.k3.perToken(policy: g.logProbs, reference: reference[i]) }
            let klInReward = settings.klPlacement == .reward
            // Per-token advantages (B, T_b).
            // Each prompt's answers, in prompt order (`generated` is sorted so).
            var groups: [[Int]] = []
            for (i, g) in generated.enumerated() {
                if i > 0 && generated[i - 1].prompt.id == g.prompt.id { groups[groups.count - 1].append(i) } else { groups.append([i]) }
            }
            var advantages: [[Double]]
            if settings.algorithm == .reinforcePP {
                advantages = ReinforcePlusPlus.advantages(scores: combined, kl: klInReward ? kl : kl.map { $0.map { _ in 0 } }, beta: settings.beta)
            } else {
                let method: GroupAdvantage = settings.algorithm == .rloo ? .rloo : settings.algorithm == .drGRPO ? .drGRPO : .grpo
                // With the KL in the reward: each answer's reward less beta times its summed KL.
                let rewards = klInReward ? combined.enumerated().map { $1 - settings.beta * kl[$0].reduce(0, +) } : combined
                var perSequence = [Double](repeating: 0, count: generated.count)
                for members in groups {
                    for (k, a) in method.advantages(rewards: members.map { rewards[$0] }, group: members.count).enumerated() { perSequence[members[k]] = a }
                }
                advantages = generated.indices.map { [Double](repeating: perSequence[$0], count: generated[$0].sample.tokens.count) }
            }
            let groupRewards = groups.map { $0.map { combined[$0] } }
            let flat = GroupAdvantage.flatGroupShare(groupRewards), deviation = GroupAdvantage.meanGroupDeviation(groupRewards)
            var batch = TrainBatch(kind: .policyIteration)
            batch.policyVersion = version
            batch.learningRate = settings.learningRate
            batch.miniBatchSize = settings.miniBatch
            batch.ppoEpochs = settings.epochs
            batch.shuffleSeed = seed &+ UInt64(iteration)
            batch.aggregation = settings.aggregation
            batch.clip = Float(settings.clip)
            batch.klBeta = klInReward ? 0 : Float(settings.beta)
            batch.sequences = sequences
            batch.tensors = [WireTensor(name: "advantages", floats: advantages.joined().map(Float.init))]
            if generatorLogProbsAreExact {
                batch.tensors.append(WireTensor(name: "old_logprobs", floats: Array(generated.map(\.logProbs).joined())))
            }
            if !klInReward { batch.tensors.append(WireTensor(name: "ref_logprobs", floats: Array(reference.joined()))) }
            coordinator.setProgress(PlanStage(.train, round: settings.name), round: UInt32(round), step: UInt64(iteration))
            let stats = try coordinator.train(batch)
            last = stats
            coordinator.setProgress(PlanStage(.sync, round: settings.name), round: UInt32(round), step: UInt64(iteration))
            try coordinator.syncWeights(stats.announce, roles: [.generator])
            let rewardMean = combined.reduce(0, +) / Double(combined.count)
            let klMean = k3.map { $0.reduce(0, +) }.reduce(0, +) / Double(k3.count)
            rewardMeans.append(rewardMean)
            coordinator.setTrainingSignals(rewardMean: rewardMean, kl: klMean)
            let responseTokens = generated.map(\.sample.tokens.count).reduce(0, +)
            metric(["stage": "policy", "round": settings.name, "algorithm": settings.algorithm.rawValue, "iteration": iteration,
                    "policy_version": stats.policyVersion, "loss": stats.loss, "clip_fraction": stats.clipFraction, "approx_kl": stats.approxKL,
                    "reference_kl": stats.referenceKL, "kl_mean": klMean, "reward_mean": rewardMean,
                    "group_reward_std": deviation, "flat_group_share": flat,
                    "response_length": Double(responseTokens) / Double(generated.count), "gate_hit_rate": hitRate, "grad_norm": stats.gradNorm,
                    "gradient_steps": stats.gradientSteps, "tokens_per_second": Double(tokens) / max(1e-9, sampleSeconds)])
            for (i, g) in generated.enumerated() {
                var record: [String: Any] = ["prompt_id": g.sample.promptID, "sample_id": g.sample.index, "iteration": iteration,
                                             "policy_version": version, "reward": combined[i], "kl": k3[i].reduce(0, +)]
                if let function { record["function_reward"] = Double(function[i]) }
                rollouts += String(decoding: try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]), as: UTF8.self) + "\n"
            }
            if iteration == 1 || iteration == settings.iterations || iteration % max(1, settings.iterations / 5) == 0 {
                report(String(format: "%@ %@ %d/%d: reward %.3f (group std %.3f, %.0f%% flat groups), KL %.3f, loss %.4f, clip %.2f -> policy v%llu",
                              settings.name, settings.algorithm.rawValue, iteration, settings.iterations, rewardMean,
                              deviation, 100 * flat, klMean, stats.loss,
                              stats.clipFraction, stats.policyVersion))
            }
        }
        try Data(rollouts.utf8).write(to: URL(fileURLWithPath: directory + "/rollouts.jsonl"))
        if let last, let announce = last.announce {
            try export.write(try coordinator.fetchWeights(announce, config: config), directory: directory)
        }
        coordinator.setProgress(PlanStage(.evaluate, round: settings.name), round: UInt32(round))
        try evaluate(name: settings.name, settings: evaluation, rewardMean: rewardMeans.reduce(0, +) / Double(max(1, rewardMeans.count)),
                     gateHitRate: gateHits / Double(max(1, settings.iterations)), tokensPerSecond: Double(tokens) / max(1e-9, sampleSeconds),
                     seconds: Date().timeIntervalSince(started))
    }

    /// Keeps the policy as it is under the round name `name` on the learner (a later round branches from it).
    public func snapshot(_ name: String) throws {
        var batch = TrainBatch(kind: .snapshot)
        batch.policyVersion = coordinator.status().policyVersion
        batch.snapshotName = name
        _ = try coordinator.train(batch)
    }

    /// A branch: the policy becomes the snapshot taken at the end of round `from` (fresh optimizer moments,
    /// no value model), published as the next version and synced to the generators before round `round`.
    public func branch(from: String, round: String) throws {
        coordinator.setProgress(PlanStage(.sync, round: round))
        var batch = TrainBatch(kind: .restoreSnapshot)
        batch.policyVersion = coordinator.status().policyVersion
        batch.snapshotName = from
        let stats = try coordinator.train(batch)
        try coordinator.syncWeights(stats.announce, roles: [.generator])
        report("\(round): starts from " + (from == LearnerService.chatModelSnapshot ? "the chat model" : "the policy as \(from) left it")
               + " (policy v\(stats.policyVersion))")
        metric(["stage": "branch", "round": round, "from": from, "policy_version": stats.policyVersion])
    }
}
