import ClusterRuntime
import Foundation
import LlamaCore
import LlamaTraining
import RLHF
import Wire
import Workers

/// LLaMA2's RLHF stages on the cluster, driven through the coordinator: reward-model training on the
/// learner role, evaluation of the policy on held-out prompts by the hidden annotator, and rejection-
/// sampling rounds (fan-out of K samples per prompt over the generators, scores from the reward and safety
/// models, LLaMA2's safety gate, best-of-K, SFT of the learner on the kept samples, weight sync).
/// Everything a round produces goes to the run directory: `rounds/NAME/samples.jsonl`, a checkpoint per
/// round, `metrics.jsonl` and `summary.json`.
public final class RLHFPipeline {
    /// Settings of a reward-model training step.
    public struct RewardModelSettings: Codable, Sendable, Equatable {
        public var model: WorkerRole
        /// Pairs used (nil: every pair of the subset).
        public var pairs: Int?
        public var epochs: Double = 1
        public var batchSize = 16
        public var learningRate: Float = 1e-4
        public var margin: MarginTable = .small
        public init(model: WorkerRole) { self.model = model }
    }

    /// Settings of one rejection-sampling round.
    public struct RoundSettings: Codable, Sendable, Equatable {
        public var name: String
        public var prompts = 64
        public var samples = 4
        public var temperature: Float = 1.0
        public var maxNewTokens = 96
        /// SFT passes over the kept samples.
        public var epochs = 1
        /// Iterative RLHF: pairs of this round's samples (per prompt, the reward model's favourite
        /// against another) labelled by the annotator and added to the reward models' data, which
        /// are retrained on them (with as many replayed earlier pairs) before the samples are scored
        /// for selection. 0: the reward models stay as they are.
        public var newPairs = 0
        /// Learning rate of that retraining.
        public var rewardLearningRate: Float = 5e-5
        /// Fine-tune the SFT model anew each round on the kept samples of this and every earlier round
        /// (the latest kept sample of each prompt), instead of continuing from the last policy: the
        /// policy cannot drift further with every round.
        public var fromSFT = false
        public var batchSize = 16
        public var learningRate: Float = 1e-4
        /// The reward's sources and weights (nil: the reward models alone).
        public var reward: RewardWeights?
        public init(name: String) { self.name = name }
    }

    /// Settings of an evaluation.
    public struct EvalSettings: Codable, Sendable, Equatable {
        /// Held-out prompts evaluated (nil: all).
        public var prompts: Int?
        public var temperature: Float = 1.0
        public var maxNewTokens = 96
        /// Answers per prompt.
        public var samples = 1
        public init() {}
    }

    /// The figures of one evaluated policy (a line of the final table and of summary.json).
    public struct Figures: Codable, Sendable, Equatable {
        public var name: String
        public var winRateVsSFT: Double
        public var helpfulness: Double
        public var helpfulRate: Double
        public var unsafeRate: Double
        public var rewardMean: Double
        public var kl: Double
        public var gateHitRate: Double
        public var tokensPerSecond: Double
        public var seconds: Double
        public var policyVersion: UInt64
        /// The mean reward the spec's reward function gives the evaluation's answers (nil: no function).
        public var functionReward: Double? = nil
        /// The answers' mean length in tokens.
        public var responseTokens: Double? = nil
        /// The answers' mean score by the helpfulness and the safety reward model (nil: the model was
        /// neither trained in this run nor given a head by the spec, or no worker runs it).
        public var rewardModelScore: Double? = nil
        public var safetyModelScore: Double? = nil

        enum CodingKeys: String, CodingKey {
            case name, helpfulness, kl, seconds
            case rewardModelScore = "reward_model_score"
            case safetyModelScore = "safety_model_score"
            case functionReward = "function_reward"
            case responseTokens = "response_tokens"
            case winRateVsSFT = "win_rate_vs_sft"
            case helpfulRate = "helpful_rate"
            case unsafeRate = "unsafe_rate"
            case rewardMean = "reward_mean"
            case gateHitRate = "gate_hit_rate"
            case tokensPerSecond = "tokens_per_second"
            case policyVersion = "policy_version"
        }
    }

    let coordinator: Coordinator
    let context: TaskContext
    let runDirectory: String
    let config: LlamaConfig
    let report: (String) -> Void
    let gate = SafetyGate()
    var sampler = RejectionSampler(poolFromRound: 4)
    /// Every round's kept sample of each prompt (the latest), for rounds that fine-tune from SFT.
    var keptSoFar: [UInt64: Candidate] = [:]
    /// The SFT policy's evaluation answers (the baseline of every win rate), by "PROMPT_ID/SAMPLE".
    var baseline: [String: String]?
    /// The judge's view of `baseline` (not kept in the state: judged again after a resume).
    var baselineJudgements: [String: Judgement]?
    public internal(set) var sft: Figures?
    public internal(set) var rounds: [Figures] = []
    /// PPO's reward whitening statistics (running across iterations and rounds).
    var whitener = RewardWhitener()
    /// The adaptive KL controller's beta at the end of the last PPO round (nil: none ran).
    var klBeta: Double?
    /// Versions of the reward models trained so far.
    var rewardVersions: [WorkerRole: UInt64] = [:]
    /// Whether the generators' log-probabilities are the learner's own (both in float32): policy
    /// iterations then send them as the old policy's; otherwise (bfloat16 in `precision:`) the learner
    /// computes the old policy's log-probabilities itself, so that the importance ratios start at 1.
    public var generatorLogProbsAreExact = true
    private let metrics: FileHandle?
    /// The same records as TensorBoard scalars (`RUN_DIR/tensorboard`; nil where it cannot be written).
    private var tensorBoard: TensorBoardLog?
    /// How each round's policy is written (`export:` in the spec).
    public var export = PolicyExport()
    /// Whether evaluations also ask the reward-function workers (the spec has a reward function).
    public var evaluatesRewardFunction = false
    /// The reward models the spec gives a score head (their scores mean something before any `train_rm`).
    public var givenRewardHeads: Set<WorkerRole> = []
    /// The reward models whose tokenizer is not the policy's (Hugging Face reward models of another
    /// family): their workers score each answer rendered again in their own chat template.
    public var rewardModelRenderings: [WorkerRole: RewardModelRendering] = [:]

    /// The reward models whose scores of an evaluation's answers are reported: those trained in this run
    /// or given a head by the spec, that a healthy worker runs.
    func scoringModels() -> [WorkerRole] {
        let live = Set(coordinator.workers().filter { $0.health == .healthy }.map(\.registration.role))
        return [WorkerRole.rewardModel, .safetyModel].filter { live.contains($0) && (rewardVersions[$0] != nil || givenRewardHeads.contains($0)) }
    }

    /// A pipeline on `coordinator` over `context`, writing to `runDirectory`, for a policy of `config`.
    public init(coordinator: Coordinator, context: TaskContext, config: LlamaConfig, runDirectory: String, report: @escaping (String) -> Void) throws {
        self.coordinator = coordinator
        self.context = context
        self.config = config
        self.runDirectory = runDirectory
        self.report = report
        let path = runDirectory + "/metrics.jsonl"
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        metrics = FileHandle(forWritingAtPath: path)
        _ = try? metrics?.seekToEnd()
        tensorBoard = try? TensorBoardLog(directory: runDirectory + "/tensorboard")
    }

    /// Appends one JSON object to metrics.jsonl, and its numbers to the TensorBoard log.
    func metric(_ object: [String: Any]) {
        var o = object
        let time = Date().timeIntervalSince1970
        o["time"] = time
        guard let data = try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]) else { return }
        metrics?.write(data + Data([0x0A]))
        try? tensorBoard?.write(o, wallTime: time)
    }

    // MARK: - Reward models

    /// A preference pair in tokens: the chat-formatted prompt, both answers (ending in EOS), the level
    /// (nil: unlabelled) or a margin of its own, and whether the prompt is a safety prompt.
    struct TokenPair: Codable, Equatable {
        var promptText: String
        var prompt: [Int32]
        var chosen: [Int32]
        var rejected: [Int32]
        var level: PreferenceLevel?
        var margin: Float? = nil
        var safety: Bool

        /// The ranking loss's margin: the pair's own, else its level's in `table`, else 0.
        func margin(_ table: MarginTable) -> Float { margin ?? level.map(table.margin) ?? 0 }
        /// The name accuracy is reported under.
        var levelName: String { level?.rawValue ?? "unlabelled" }
    }

    /// Pairs each reward model has trained on so far (replayed when it is retrained on new pairs).
    var rewardPairs: [WorkerRole: [TokenPair]] = [:]

    /// A source's pair as tokens.
    func tokens(_ pair: PreferencePairText) -> TokenPair {
        let end = context.tokenizer.endOfTurnId
        return TokenPair(promptText: pair.prompt, prompt: pair.promptIDs ?? ChatTemplate.promptIDs(pair.prompt, tokenizer: context.tokenizer),
                         chosen: context.tokenizer.encode(pair.chosen) + [end], rejected: context.tokenizer.encode(pair.rejected) + [end],
                         level: pair.level, margin: pair.margin, safety: pair.safety)
    }

    /// Which pairs a reward model learns from: the reward model from pairs not flagged safety; the
    /// safety model from safety pairs plus as many others (LLaMA2 mixed helpfulness data into its
    /// safety reward model's).
    static func pairs(for role: WorkerRole, _ all: [TokenPair]) -> [TokenPair] {
        if role == .rewardModel { return all.filter { !$0.safety } }
        let safety = all.filter(\.safety)
        return safety + all.filter { !$0.safety }.prefix(safety.count)
    }

    /// Trains `settings.model` (reward or safety) on the learner from the task's pairs, a tenth of the
    /// prompts held out. Syncs the trained version to its workers and reports the held-out accuracy per
    /// preference level, scored by those workers.
    public func trainRewardModel(_ settings: RewardModelSettings) throws {
        let role = settings.model
        guard role == .rewardModel || role == .safetyModel else { throw ClusterLaunch.Failure(message: "train_rm trains reward-model or safety-model, not \(role.rawValue)") }
        let started = Date()
        let all = context.pairs.preferencePairs
        if role == .safetyModel && !all.isEmpty && !all.contains(where: \.safety) {
            throw ClusterLaunch.Failure(message: "train_rm safety-model: none of the \(all.count) preference pairs is flagged safety "
                                        + "(give safety pairs \"safety\": true, or leave the safety model's train_rm out of the plan)")
        }
        var pairs = RLHFPipeline.pairs(for: role, all.map(tokens))
        if let n = settings.pairs { pairs = Array(pairs.prefix(n)) }
        let heldOut = pairs.filter { RLHFPipeline.isHeldOut($0.promptText) }, train = pairs.filter { !RLHFPipeline.isHeldOut($0.promptText) }
        guard !train.isEmpty else { throw ClusterLaunch.Failure(message: "train_rm \(role.rawValue): no pairs to train on") }
        rewardPairs[role, default: []] += train
        let steps = try trainOnLearner(role, pairs: train, epochs: settings.epochs, batchSize: settings.batchSize,
                                       learningRate: settings.learningRate, margin: settings.margin, stage: PlanStage(.train, subject: role.rawValue))
        let (levels, correct, count) = try accuracy(role, heldOut)
        let table = (PreferenceLevel.allCases.map(\.rawValue) + ["unlabelled"]).compactMap { name -> String? in
            guard let (c, t) = levels[name], t > 0 else { return nil }
            return String(format: "%@ %.1f%% (%d)", name, 100 * Double(c) / Double(t), t)
        }.joined(separator: ", ")
        // A prompt set too small (or too uniform) for the hash to hold any out has no held-out figure.
        let accuracyText = count == 0 ? "no pairs held out (a tenth of the prompts, by a hash of their text, is held out: too few distinct prompts)"
            : String(format: "held-out accuracy %.1f%% of %d: ", 100 * Double(correct) / Double(count), count) + table
        report(String(format: "%@ trained on the learner: %d pairs, %d steps, version %llu, %.1f s; ",
                      role.rawValue, train.count, steps, rewardVersions[role] ?? 0, Date().timeIntervalSince(started)) + accuracyText)
        metric(["stage": "train_rm_done", "model": role.rawValue, "version": rewardVersions[role] ?? 0,
                "held_out_accuracy": count == 0 ? 0 : Double(correct) / Double(count),
                "levels": Dictionary(uniqueKeysWithValues: levels.map { ($0.key, ["correct": $0.value.0, "total": $0.value.1]) })])
    }

    /// Ranking-loss steps of `role` on the learner over `pairs` (shuffled with a fixed seed), on a
    /// cosine schedule, then a sync of the new version to the role's workers. Returns the steps taken.
    @discardableResult
    func trainOnLearner(_ role: WorkerRole, pairs: [TokenPair], epochs: Double, batchSize: Int, learningRate: Float, margin: MarginTable,
                        stage: PlanStage) throws -> Int {
        coordinator.setProgress(stage)
        let steps = RLHFPipeline.scheduledBatches(count: pairs.count, batchSize: batchSize, epochs: epochs, learningRate: learningRate,
                                                  seed: 17 &+ (rewardVersions[role] ?? 0))
        let total = steps.count
        var version = rewardVersions[role] ?? 0
        var last: TrainStats?
        for (index, planned) in steps.enumerated() {
            let step = index + 1
            let batchPairs = planned.indices.map { pairs[$0] }
            var batch = TrainBatch(kind: .rewardRanking)
            batch.model = role == .safetyModel ? .safetyModel : .rewardModel
            batch.policyVersion = version
            batch.learningRate = planned.rate
            for (i, pair) in batchPairs.enumerated() {
                batch.sequences.append(sequence(UInt64(2 * i), pair.prompt, pair.chosen))
                batch.sequences.append(sequence(UInt64(2 * i + 1), pair.prompt, pair.rejected))
            }
            batch.tensors = [WireTensor(name: "margins", floats: batchPairs.map { $0.margin(margin) })]
            let stats = try coordinator.train(batch)
            version = stats.policyVersion
            last = stats
            coordinator.setProgress(stage, step: UInt64(step))
            metric(["stage": "train_rm", "model": role.rawValue, "version": version, "step": step, "steps": total, "loss": stats.loss,
                    "accuracy": stats.accuracy, "grad_norm": stats.gradNorm, "learning_rate": stats.learningRate])
        }
        rewardVersions[role] = version
        if let last { try coordinator.syncWeights(last.announce, roles: [role]) }
        return total
    }

    /// The steps of training on `count` examples, `batchSize` a step for `epochs` passes: each step's
    /// learning rate on the trainer's warm-up and cosine schedule peaking at `learningRate`, and the indices
    /// of its examples, in a seeded order reshuffled whenever it runs out.
    static func scheduledBatches(count: Int, batchSize: Int, epochs: Double, learningRate: Float, seed: UInt64) -> [(rate: Float, indices: [Int])] {
        var trainer = TrainerSettings.default
        trainer.batchSize = batchSize
        trainer.epochs = epochs
        trainer.learningRate = learningRate
        let total = trainer.totalSteps(examples: count)
        let schedule = trainer.schedule(total: total)
        var order = Array(0..<count), cursor = order.count
        var random = SeededGenerator(seed: seed)
        return (1...max(1, total)).map { step in
            if cursor + batchSize > order.count {
                random.shuffle(&order)
                cursor = 0
            }
            defer { cursor += batchSize }
            return (schedule.rate(step: step), (0..<min(batchSize, order.count)).map { order[cursor + $0] })
        }
    }

    /// The share of `pairs` that `role`'s workers rank right, per level, and overall.
    func accuracy(_ role: WorkerRole, _ pairs: [TokenPair]) throws -> (levels: [String: (Int, Int)], correct: Int, count: Int) {
        var levels: [String: (Int, Int)] = [:]
        guard !pairs.isEmpty else { return ([:], 0, 0) }
        guard rewardModelRenderings[role] == nil else {
            throw ClusterLaunch.Failure(message: "the \(role.rawValue) tokenizes otherwise than the policy: pairs in the policy's ids cannot be scored by it")
        }
        var sequences: [TokenSequence] = []
        for (i, pair) in pairs.enumerated() {
            sequences.append(sequence(UInt64(2 * i), pair.prompt, pair.chosen))
            sequences.append(sequence(UInt64(2 * i + 1), pair.prompt, pair.rejected))
        }
        let scores = try coordinator.score(sequences, model: role, perTask: 32)
        for (i, pair) in pairs.enumerated() {
            var entry = levels[pair.levelName] ?? (0, 0)
            entry.1 += 1
            if scores[2 * i] > scores[2 * i + 1] { entry.0 += 1 }
            levels[pair.levelName] = entry
        }
        return (levels, levels.values.reduce(0) { $0 + $1.0 }, levels.values.reduce(0) { $0 + $1.1 })
    }

    /// A prompt's pairs are held out when its text hashes into the last tenth.
    static func isHeldOut(_ prompt: String) -> Bool {
        stableHash(prompt.utf8) % 10 == 9
    }

    func sequence(_ id: UInt64, _ prompt: [Int32], _ response: [Int32]) -> TokenSequence {
        TokenSequence(id: id, prompt: prompt, response: response)
    }

    /// Drawn answers as token sequences (prompt and answer), numbered in order.
    func sequences(of drawn: [Drawn]) -> [TokenSequence] {
        drawn.enumerated().map { i, g in sequence(UInt64(i), g.prompt.ids, g.sample.tokens) }
    }

    /// `model`'s scores of `drawn` (`sequences` are their policy ids, `sequences(of: drawn)`), `perTask` a
    /// call: of the policy's ids, or, for a reward model with a tokenizer of its own, of each prompt's
    /// conversation and answer text rendered again in its chat template.
    func modelScores(_ drawn: [Drawn], sequences: [TokenSequence], model: WorkerRole, perTask: Int) throws -> [Float] {
        guard let rendering = rewardModelRenderings[model] else { return try coordinator.score(sequences, model: model, perTask: perTask) }
        let rendered = try drawn.enumerated().map { i, d in
            try rendering.sequence(id: UInt64(i), prompt: d.prompt.messages, response: context.text(d.sample.tokens))
        }
        return try coordinator.score(rendered, model: model, perTask: perTask)
    }

    // MARK: - Sampling

    /// `count` training prompts, a draw seeded by `seed` (the first of a seeded shuffle).
    func trainingPrompts(_ count: Int, seed: UInt64) -> [TaskContext.Prompt] {
        var random = SeededGenerator(seed: seed)
        var pool = context.trainPrompts
        random.shuffle(&pool)
        return Array(pool.prefix(count))
    }

    /// A sample of the policy with the prompt it answers and its temperature-1 log-probabilities `(T)`.
    struct Drawn {
        var prompt: TaskContext.Prompt
        var sample: Samples.Sample
        var logProbs: [Float] { sample.logProbs }
    }

    /// `samples` answers to each of `prompts` from the generators at the current policy version
    /// (`promptsPerTask` prompts a task), seeded by `seed`; empty answers are dropped. An answer to a
    /// prompt that was not asked is a worker's fault, refused with its id.
    func draw(_ prompts: [TaskContext.Prompt], samples: Int, temperature: Float, maxNewTokens: Int, seed: UInt64, promptsPerTask: Int) throws -> [Drawn] {
        let request = GenerateRequest(prompts: prompts.map { GenerateRequest.Prompt(id: $0.id, tokens: $0.ids) }, samplesPerPrompt: max(1, samples),
                                      sampling: SamplingSettings(temperature: temperature, topP: 1), seed: seed, maxNewTokens: maxNewTokens,
                                      policyVersion: coordinator.status().policyVersion, stopTokens: context.tokenizer.stopIds)
        let byID = Dictionary(prompts.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        return try coordinator.generate(request, promptsPerTask: promptsPerTask).compactMap { g in
            guard let prompt = byID[g.promptID] else {
                throw ClusterLaunch.Failure(message: "a generator answered prompt \(g.promptID), which was not asked")
            }
            return g.tokens.isEmpty ? nil : Drawn(prompt: prompt, sample: g)
        }
    }

    // MARK: - Evaluation

    /// Answers of the current policy to the held-out prompts (`settings.samples` each, the same seeds
    /// every time so that policies are compared on the same draws), judged by the annotator, against the
    /// SFT policy (the first evaluation is the SFT policy's and becomes the baseline): the k-th answer to
    /// a prompt is compared with the SFT policy's k-th.
    @discardableResult
    public func evaluate(name: String, settings: EvalSettings, rewardMean: Double = 0, gateHitRate: Double = 0,
                         tokensPerSecond: Double? = nil, seconds: Double? = nil) throws -> Figures {
        let started = Date()
        coordinator.setProgress(PlanStage(.evaluate, round: name))
        let prompts = Array(context.evalPrompts.prefix(settings.prompts ?? context.evalPrompts.count))
        let version = coordinator.status().policyVersion
        let generated = try draw(prompts, samples: settings.samples, temperature: settings.temperature, maxNewTokens: settings.maxNewTokens,
                                 seed: 0xE7A1, promptsPerTask: max(1, 8 / max(1, settings.samples)))
        // KL to the reference policy on these answers.
        let referenceVersion = coordinator.referenceVersion
        let sequences = sequences(of: generated)
        let reference = try coordinator.referenceLogProbs(sequences, policyVersion: referenceVersion)
        let kl = RoundSummary.meanSequenceKL(policy: generated.map(\.logProbs), reference: reference)
        var stories = 0, helpful = 0, safety = 0, unsafe = 0
        var helpfulness = 0.0
        var answers: [String: String] = [:]
        var wins = 0.0
        let texts = generated.map { context.text($0.sample.tokens) }
        let judgements = try context.judge.judge(zip(generated, texts).map { JudgeItem($0.prompt, response: $1) })
        var judged: [String: Judgement] = [:]
        for (i, g) in generated.enumerated() {
            let p = g.prompt
            let answer = texts[i], key = "\(p.id)/\(g.sample.index)"
            answers[key] = answer
            guard let j = judgements[i] else { continue }
            judged[key] = j
            if p.isSafety {
                safety += 1
                if j.unsafe { unsafe += 1 }
            } else {
                stories += 1
                helpfulness += j.helpfulness
                if j.helpful { helpful += 1 }
            }
        }
        if baseline == nil {
            baseline = answers
            baselineJudgements = judged
        }
        if baselineJudgements == nil, let baseline {
            let keys = Array(baseline.keys)
            let promptOf = Dictionary(generated.map { ("\($0.prompt.id)/\($0.sample.index)", $0.prompt) }, uniquingKeysWith: { a, _ in a })
            let known = keys.filter { promptOf[$0] != nil }
            let again = try context.judge.judge(known.map { JudgeItem(promptOf[$0]!, response: baseline[$0]!) })
            baselineJudgements = Dictionary(uniqueKeysWithValues: zip(known, again).compactMap { key, j in j.map { (key, $0) } })
        }
        for g in generated {
            let key = "\(g.prompt.id)/\(g.sample.index)"
            guard let judgement = judged[key], let reference = baselineJudgements?[key] else { continue }
            switch context.judge.verdict(judgement, reference) {
            case .first: wins += 1
            case .tie: wins += 0.5
            case .second: break
            }
        }
        let tokens = generated.reduce(0) { $0 + $1.sample.tokens.count }
        let measured = Figures(name: name, winRateVsSFT: wins / Double(max(1, generated.count)), helpfulness: helpfulness / Double(max(1, stories)),
                              helpfulRate: Double(helpful) / Double(max(1, stories)), unsafeRate: Double(unsafe) / Double(max(1, safety)),
                              rewardMean: rewardMean, kl: kl, gateHitRate: gateHitRate,
                              tokensPerSecond: tokensPerSecond ?? Double(tokens) / max(1e-9, Date().timeIntervalSince(started)),
                              seconds: seconds ?? Date().timeIntervalSince(started), policyVersion: version)
        var figures = measured
        figures.responseTokens = Double(tokens) / Double(max(1, generated.count))
        if evaluatesRewardFunction && !generated.isEmpty {
            figures.functionReward = try functionRewards(generated).reduce(0.0) { $0 + Double($1) } / Double(generated.count)
        }
        if !generated.isEmpty {
            for role in scoringModels() {
                let mean = try modelScores(generated, sequences: sequences, model: role, perTask: 16).reduce(0.0) { $0 + Double($1) } / Double(generated.count)
                if role == .rewardModel { figures.rewardModelScore = mean } else { figures.safetyModelScore = mean }
            }
        }
        if sft == nil { sft = figures } else { rounds.append(figures) }
        coordinator.setTrainingSignals(rewardMean: rewardMean, kl: kl)
        metric(["stage": "evaluate", "name": name, "win_rate_vs_sft": figures.winRateVsSFT, "helpfulness": figures.helpfulness,
                "helpful_rate": figures.helpfulRate, "unsafe_rate": figures.unsafeRate, "kl": kl, "policy_version": version,
                "function_reward": figures.functionReward ?? NSNull(), "response_tokens": figures.responseTokens ?? 0,
                "reward_model_score": figures.rewardModelScore ?? NSNull(), "safety_model_score": figures.safetyModelScore ?? NSNull()])
        // The win rate's standard error over the compared answers (ties count half).
        let standardError = (figures.winRateVsSFT * (1 - figures.winRateVsSFT) / Double(max(1, generated.count))).squareRoot()
        report(String(format: "%@: win rate vs SFT %.1f%% (±%.1f, %d answers), helpfulness %.3f (helpful %.1f%%), unsafe %.1f%% of %d safety answers, KL %.3f, %.1f tokens an answer",
                      name, 100 * figures.winRateVsSFT, 100 * standardError, generated.count, figures.helpfulness, 100 * figures.helpfulRate,
                      100 * figures.unsafeRate, safety, RoundSummary.shown(kl), figures.responseTokens ?? 0)
               + (figures.functionReward.map { String(format: ", reward function %.3f", $0) } ?? "")
               + (figures.rewardModelScore.map { String(format: ", reward model %.3f", $0) } ?? "")
               + (figures.safetyModelScore.map { String(format: ", safety model %.3f", $0) } ?? ""))
        try writeSummary()
        return figures
    }

    // MARK: - Rejection sampling

    /// One rejection-sampling round (LLaMA2 RLHF-V1..V4): `prompts` training prompts, K samples each
    /// fanned out over the generators, scored by both reward models, combined by the safety gate, the
    /// best of K kept (from round 4 on, among earlier rounds' too); the learner fine-tunes on the kept
    /// samples; the new policy is synced to the generators and evaluated.
    public func rejectionSamplingRound(_ settings: RoundSettings, evaluation: EvalSettings, seed: UInt64) throws {
        let started = Date()
        let round = Int(coordinator.status().round) + 1
        coordinator.setProgress(PlanStage(.sample, round: settings.name), round: UInt32(round))
        let version = coordinator.status().policyVersion
        let prompts = trainingPrompts(settings.prompts, seed: seed)
        let generateStart = Date()
        let generated = try draw(prompts, samples: settings.samples, temperature: settings.temperature, maxNewTokens: settings.maxNewTokens,
                                 seed: seed, promptsPerTask: 1)
        let generateSeconds = Date().timeIntervalSince(generateStart)
        let tokens = generated.reduce(0) { $0 + $1.sample.tokens.count }
        let sequences = sequences(of: generated)
        coordinator.setProgress(PlanStage(.score, round: settings.name))
        let weights = settings.reward ?? RewardWeights()
        let useModels = weights.models > 0 || settings.newPairs > 0
        let none = [Float](repeating: 0, count: sequences.count)
        var helpfulness = useModels ? try modelScores(generated, sequences: sequences, model: .rewardModel, perTask: 16) : none
        var safety = useModels ? try modelScores(generated, sequences: sequences, model: .safetyModel, perTask: 16) : none
        let function = weights.function > 0 ? try functionRewards(generated) : nil
        if settings.newPairs > 0 {
            try retrainRewardModels(name: settings.name, newPairs: settings.newPairs, learningRate: settings.rewardLearningRate,
                                    seed: UInt64(round), generated: generated.map(\.sample),
                                    prompts: Dictionary(generated.map { ($0.prompt.id, $0.prompt) }, uniquingKeysWith: { a, _ in a }),
                                    helpfulness: helpfulness)
            helpfulness = try modelScores(generated, sequences: sequences, model: .rewardModel, perTask: 16)
            safety = try modelScores(generated, sequences: sequences, model: .safetyModel, perTask: 16)
        }
        let (gated, gatedHits) = gate.combine(helpfulness: helpfulness, safety: safety,
                                              isSafetyPrompt: generated.map(\.prompt.isSafety))
        // The gate is the reward models'; a round they do not weigh in has no gate to hit.
        let gateHits = weights.models > 0 ? gatedHits : 0
        let rewards = weights.combine(gated: gated, function: function, count: generated.count)
        let candidates = generated.enumerated().map { i, g in
            Candidate(promptID: g.sample.promptID, sampleID: g.sample.index, round: round, responseIDs: g.sample.tokens, reward: rewards[i])
        }
        let kept = sampler.select(round: round, candidates: candidates)
        let keptKeys = Set(kept.filter { $0.round == round }.map { "\($0.promptID)/\($0.sampleID)" })
        // samples.jsonl: every sample of the round once.
        let directory = runDirectory + "/rounds/\(settings.name)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var lines = ""
        for (i, c) in candidates.enumerated() {
            var record: [String: Any] = ["prompt_id": c.promptID, "sample_id": c.sampleID, "seed": seed, "policy_version": version,
                                         "reward": rewards[i], "helpfulness_score": Double(helpfulness[i]), "safety": Double(safety[i]),
                                         "kept": keptKeys.contains("\(c.promptID)/\(c.sampleID)"), "response": context.text(c.responseIDs)]
            if let function { record["function_reward"] = Double(function[i]) }
            lines += String(decoding: try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]), as: UTF8.self) + "\n"
        }
        try Data(lines.utf8).write(to: URL(fileURLWithPath: directory + "/samples.jsonl"))
        // SFT on the kept samples.
        coordinator.setProgress(PlanStage(.train, round: settings.name))
        var current = version
        var last: TrainStats?
        var steps = 0
        for c in kept { keptSoFar[c.promptID] = c }
        // From SFT: all rounds' kept samples in a seeded order; else this round's.
        var training = kept
        if settings.fromSFT {
            training = keptSoFar.keys.sorted().map { keptSoFar[$0]! }
            var order = SeededGenerator(seed: seed &+ 7)
            order.shuffle(&training)
        }
        for _ in 0..<max(1, settings.epochs) {
            for start in stride(from: 0, to: training.count, by: settings.batchSize) {
                var batch = TrainBatch(kind: .sft)
                batch.policyVersion = current
                batch.learningRate = settings.learningRate
                batch.fromInitial = settings.fromSFT && steps == 0
                batch.sequences = training[start ..< min(training.count, start + settings.batchSize)].enumerated().map { i, c in
                    // Samples that stopped end in a stop token already; one cut at the token limit gets the end of turn added.
                    // (Prompt ids index the training prompts: a kept sample of an earlier round has its prompt there.)
                    sequence(UInt64(i), context.trainPrompts[Int(c.promptID)].ids,
                             context.tokenizer.finishedAnswer(c.responseIDs))
                }
                let stats = try coordinator.train(batch)
                current = stats.policyVersion
                last = stats
                steps += 1
                coordinator.setProgress(PlanStage(.train, round: settings.name), step: UInt64(steps))
                metric(["stage": "rs_train", "round": settings.name, "step": steps, "loss": stats.loss, "grad_norm": stats.gradNorm,
                        "policy_version": current])
            }
        }
        coordinator.setProgress(PlanStage(.sync, round: settings.name))
        if let last, let announce = last.announce {
            try coordinator.syncWeights(announce, roles: [.generator])
            // The round's checkpoint, fetched from the learner as the generators got it.
            let weights = try coordinator.fetchWeights(announce, config: config)
            try export.write(weights, directory: directory)
        }
        coordinator.setProgress(PlanStage(.evaluate, round: settings.name), round: UInt32(round))
        let rewardMean = rewards.reduce(0, +) / Double(max(1, rewards.count))
        let keptMean = kept.map(\.reward).reduce(0, +) / Double(max(1, kept.count))
        report(String(format: "%@: %d prompts x %d samples at T=%.2f -> %d tokens in %.1f s (%.0f tok/s); reward mean %.3f, kept mean %.3f, "
                      + "safety gate hit %.1f%%; SFT%@ on %d kept, %d steps -> policy v%llu",
                      settings.name, prompts.count, settings.samples, settings.temperature, tokens, generateSeconds,
                      Double(tokens) / max(1e-9, generateSeconds), rewardMean, keptMean, 100 * gateHits,
                      settings.fromSFT ? " of the SFT model anew" : "", training.count, steps, current))
        try evaluate(name: settings.name, settings: evaluation, rewardMean: rewardMean, gateHitRate: gateHits,
                     tokensPerSecond: Double(tokens) / max(1e-9, generateSeconds), seconds: Date().timeIntervalSince(started))
    }

    /// The reward-function workers' rewards of drawn answers (with each prompt's record fields), in order.
    func functionRewards(_ drawn: [Drawn]) throws -> [Float] {
        try coordinator.functionRewards(drawn.map { d in
            RewardItem(promptID: d.prompt.id, sampleID: UInt64(d.sample.index), prompt: d.prompt.text, response: context.text(d.sample.tokens),
                       fieldsJSON: d.prompt.fieldsJSON, messages: d.prompt.messages)
        })
    }

    /// A preference pair of two judged answers to `prompt`, ordered by utility and labelled with the
    /// judge's level; nil when the judge sees them as a tie.
    func labelledPair(_ prompt: TaskContext.Prompt, _ a: [Int32], _ b: [Int32], _ ja: Judgement, _ jb: Judgement) -> TokenPair? {
        let gap = abs(ja.utility - jb.utility)
        guard gap >= context.judge.tieGap else { return nil }
        let (chosen, rejected) = ja.utility > jb.utility ? (a, b) : (b, a)
        return TokenPair(promptText: prompt.text, prompt: prompt.ids, chosen: context.tokenizer.finishedAnswer(chosen),
                         rejected: context.tokenizer.finishedAnswer(rejected), level: context.judge.level(gap: gap), safety: prompt.isSafety)
    }

    /// Labels up to `newPairs` new pairs from a round's samples with the annotator (per prompt: the
    /// reward model's top sample against a random other; ties dropped) and retrains both reward models
    /// on them plus as many replayed earlier pairs. `name` labels the report and the progress stage;
    /// `seed` the choice of the other sample and of the replayed pairs.
    func retrainRewardModels(name: String, newPairs: Int, learningRate: Float, seed: UInt64, generated: [Samples.Sample],
                             prompts: [UInt64: TaskContext.Prompt], helpfulness: [Float]) throws {
        var byPrompt: [UInt64: [Int]] = [:], order: [UInt64] = []
        for (i, s) in generated.enumerated() {
            if byPrompt[s.promptID] == nil { order.append(s.promptID) }
            byPrompt[s.promptID, default: []].append(i)
        }
        var random = SeededGenerator(seed: 0xBA1 &+ seed)
        // Candidate pairs (the best sample against a random other) in prompt order, judged a batch at a time
        // until `newPairs` are labelled. The candidates draw from a copy of the generator, which then moves
        // on by the candidates examined: pairs and later draws are those of judging one pair at a time.
        var draws = random
        var candidates: [(prompt: TaskContext.Prompt, a: [Int32], b: [Int32])] = []
        for id in order {
            guard let indices = byPrompt[id], indices.count >= 2, let prompt = prompts[id] else { continue }
            let top = indices.max { helpfulness[$0] < helpfulness[$1] }!
            let others = indices.filter { $0 != top }
            let other = others[Int(draws.next() % UInt64(others.count))]
            candidates.append((prompt, generated[top].tokens, generated[other].tokens))
        }
        var fresh: [TokenPair] = []
        var examined = 0
        while fresh.count < newPairs && examined < candidates.count {
            let chunk = candidates[examined..<min(candidates.count, examined + max(16, 2 * (newPairs - fresh.count)))]
            let judgements = try context.judge.judge(chunk.flatMap {
                [JudgeItem($0.prompt, response: context.text($0.a)), JudgeItem($0.prompt, response: context.text($0.b))]
            })
            for (k, candidate) in chunk.enumerated() where fresh.count < newPairs {
                examined += 1
                guard let ja = judgements[2 * k], let jb = judgements[2 * k + 1] else { continue }
                if let pair = labelledPair(candidate.prompt, candidate.a, candidate.b, ja, jb) { fresh.append(pair) }
            }
        }
        for _ in 0..<examined { _ = random.next() }

        let labelled = fresh.count
        var lines: [String] = []
        for role in [WorkerRole.rewardModel, .safetyModel] {
            let new = RLHFPipeline.pairs(for: role, fresh)
            guard !new.isEmpty else { continue }
            let before = try accuracy(role, new)
            var old = rewardPairs[role] ?? []
            random.shuffle(&old)
            let mix = new + old.prefix(new.count)
            rewardPairs[role, default: []] += new
            try trainOnLearner(role, pairs: mix, epochs: 1, batchSize: 16, learningRate: learningRate, margin: .small,
                               stage: PlanStage(.retrain, round: name, subject: role.rawValue))
            lines.append(String(format: "%@ %.1f%% right on %d new pairs before", role.rawValue,
                                before.count == 0 ? 0 : 100 * Double(before.correct) / Double(before.count), new.count))
        }
        report("\(name): \(labelled) new pairs labelled from this round's samples; reward models retrained (\(lines.joined(separator: "; ")))")
        metric(["stage": "new_pairs", "round": name, "pairs": labelled])
    }

    // MARK: - State across a restart

    /// What the pipeline carries from step to step, beyond the coordinator's journal: the SFT baseline
    /// answers, the figures so far, the sampler's per-round history, every round's kept samples, the
    /// reward models' pairs and versions. Saved after every step, restored on resume.
    struct State: Codable {
        var afterStep: Int
        var baseline: [String: String]?
        var sft: Figures?
        var rounds: [Figures]
        var sampler: RejectionSampler
        var keptSoFar: [UInt64: Candidate]
        var rewardPairs: [String: [TokenPair]]
        var rewardVersions: [String: UInt64]
        var whitener: RewardWhitener
        var klBeta: Double?
    }

    /// The file that holds the state after plan step `index` (0-based).
    static func statePath(runDirectory: String, afterStep index: Int) -> String {
        runDirectory + "/pipeline/after-step-\(index + 1).json"
    }

    /// Writes the state after plan step `index` (atomically: a crash leaves the old file or the new).
    public func save(afterStep index: Int) throws {
        let state = State(afterStep: index, baseline: baseline, sft: sft, rounds: rounds, sampler: sampler, keptSoFar: keptSoFar,
                          rewardPairs: Dictionary(uniqueKeysWithValues: rewardPairs.map { ($0.key.rawValue, $0.value) }),
                          rewardVersions: Dictionary(uniqueKeysWithValues: rewardVersions.map { ($0.key.rawValue, $0.value) }),
                          whitener: whitener, klBeta: klBeta)
        let path = RLHFPipeline.statePath(runDirectory: runDirectory, afterStep: index)
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try JSONEncoder().encode(state).write(to: URL(fileURLWithPath: path), options: .atomic)
    }

    /// Restores the state saved after plan step `index`; a missing or unreadable file is an error that
    /// names it.
    public func restore(afterStep index: Int) throws {
        let path = RLHFPipeline.statePath(runDirectory: runDirectory, afterStep: index)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ClusterLaunch.Failure(message: "cannot resume: the RLHF pipeline's state after step \(index + 1) is missing (\(path))")
        }
        let state: State
        do {
            state = try JSONDecoder().decode(State.self, from: data)
        } catch {
            throw ClusterLaunch.Failure(message: "cannot resume: \(path) is damaged (\(error))")
        }
        guard state.afterStep == index else {
            throw ClusterLaunch.Failure(message: "cannot resume: \(path) holds the state after step \(state.afterStep + 1), not \(index + 1)")
        }
        var pairs: [WorkerRole: [TokenPair]] = [:], versions: [WorkerRole: UInt64] = [:]
        for (name, value) in state.rewardPairs {
            guard let role = WorkerRole(rawValue: name) else { throw ClusterLaunch.Failure(message: "cannot resume: \(path) names an unknown role \(name)") }
            pairs[role] = value
        }
        for (name, value) in state.rewardVersions {
            guard let role = WorkerRole(rawValue: name) else { throw ClusterLaunch.Failure(message: "cannot resume: \(path) names an unknown role \(name)") }
            versions[role] = value
        }
        baseline = state.baseline
        sft = state.sft
        rounds = state.rounds
        sampler = state.sampler
        keptSoFar = state.keptSoFar
        rewardPairs = pairs
        rewardVersions = versions
        whitener = state.whitener
        klBeta = state.klBeta
    }

    /// Removes the states saved before plan step `index` (once the journal records it done).
    public func pruneStates(before index: Int) {
        for i in 0..<max(0, index) { try? FileManager.default.removeItem(atPath: RLHFPipeline.statePath(runDirectory: runDirectory, afterStep: i)) }
    }

    // MARK: - Summary

    /// Writes summary.json (the SFT figures and each round's) and their chart, rounds.svg.
    public func writeSummary() throws {
        struct Summary: Encodable {
            let sft: Figures?
            let rounds: [Figures]
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(Summary(sft: sft, rounds: rounds)).write(to: URL(fileURLWithPath: runDirectory + "/summary.json"))
        try RoundPlot.svg([sft].compactMap { $0 } + rounds).write(toFile: runDirectory + "/rounds.svg", atomically: true, encoding: .utf8)
    }

    /// The final table, one line per policy, in the spirit of LLaMA2's Figure 11.
    public func table() -> [String] {
        let all = [sft].compactMap { $0 } + rounds
        // The names' column: 8 wide, or the longest name's width.
        let width = max(8, all.map(\.name.count).max() ?? 0)
        var lines = ["policy".padding(toLength: width, withPad: " ", startingAt: 0) + " win vs SFT  helpfulness  helpful  unsafe  reward  KL      tok/s  seconds"]
        for f in all {
            lines.append(f.name.padding(toLength: width, withPad: " ", startingAt: 0)
                         + String(format: " %9.1f%%  %11.3f  %6.1f%%  %5.1f%%  %6.3f  %6.3f  %5.0f  %7.1f", 100 * f.winRateVsSFT, f.helpfulness,
                                  100 * f.helpfulRate, 100 * f.unsafeRate, f.rewardMean, RoundSummary.shown(f.kl), f.tokensPerSecond, f.seconds))
        }
        return lines
    }
}
