import ClusterRuntime
import EmbeddedTask
import Foundation
import LlamaCore
import LlamaTraining
import RLHF
import Transport
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
    public struct RewardModelSettings: Sendable, Equatable {
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
    public struct RoundSettings: Sendable, Equatable {
        public var name: String
        public var prompts = 64
        public var samples = 4
        public var temperature: Float = 1.0
        public var maxNewTokens = 96
        /// SFT passes over the kept samples.
        public var epochs = 1
        public var batchSize = 16
        public var learningRate: Float = 1e-4
        public init(name: String) { self.name = name }
    }

    /// Settings of an evaluation.
    public struct EvalSettings: Sendable, Equatable {
        /// Held-out prompts evaluated (nil: all).
        public var prompts: Int?
        public var temperature: Float = 1.0
        public var maxNewTokens = 96
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

        enum CodingKeys: String, CodingKey {
            case name, helpfulness, kl, seconds
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
    /// The SFT policy's evaluation answers (the baseline of every win rate), by eval prompt.
    var baseline: [String]?
    public private(set) var sft: Figures?
    public private(set) var rounds: [Figures] = []
    /// Versions of the reward models trained so far.
    var rewardVersions: [WorkerRole: UInt64] = [:]
    let loop: PollLoop
    private let metrics: FileHandle?

    /// A pipeline on `coordinator` over `context`, writing to `runDirectory`, for a policy of `config`.
    public init(coordinator: Coordinator, context: TaskContext, config: LlamaConfig, runDirectory: String, report: @escaping (String) -> Void) throws {
        self.coordinator = coordinator
        self.context = context
        self.config = config
        self.runDirectory = runDirectory
        self.report = report
        loop = try PollLoop()
        let path = runDirectory + "/metrics.jsonl"
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        metrics = FileHandle(forWritingAtPath: path)
        _ = try? metrics?.seekToEnd()
    }

    deinit { loop.shutdown() }

    /// Appends one JSON object to metrics.jsonl.
    func metric(_ object: [String: Any]) {
        var o = object
        o["time"] = Date().timeIntervalSince1970
        guard let data = try? JSONSerialization.data(withJSONObject: o, options: [.sortedKeys]) else { return }
        metrics?.write(data + Data([0x0A]))
    }

    // MARK: - Reward models

    /// Trains `settings.model` (reward or safety) on the learner from the task's pairs: the reward model
    /// on pairs not flagged safety, the safety model on safety pairs plus as many others (LLaMA2 mixed
    /// helpfulness data into its safety RM's); a tenth of the prompts held out. Syncs the trained version
    /// to its workers and reports the held-out accuracy per preference level, scored by those workers.
    public func trainRewardModel(_ settings: RewardModelSettings) throws {
        let role = settings.model
        guard role == .rewardModel || role == .safetyModel else { throw Launcher.Failure(message: "train_rm trains reward-model or safety-model, not \(role.rawValue)") }
        let started = Date()
        var pairs = context.preferences.filter { role == .rewardModel ? !$0.safety : $0.safety }
        if role == .safetyModel { pairs += context.preferences.filter { !$0.safety }.prefix(pairs.count) }
        if let n = settings.pairs { pairs = Array(pairs.prefix(n)) }
        let heldOut = pairs.filter { RLHFPipeline.isHeldOut($0.prompt) }, train = pairs.filter { !RLHFPipeline.isHeldOut($0.prompt) }
        guard !train.isEmpty else { throw Launcher.Failure(message: "train_rm \(role.rawValue): no pairs to train on") }
        coordinator.setProgress(stage: "train \(role.rawValue)")
        var trainer = TrainerSettings.default
        trainer.batchSize = settings.batchSize
        trainer.epochs = settings.epochs
        let total = trainer.totalSteps(examples: train.count)
        let schedule = trainer.schedule(total: total)
        var order = Array(train.indices), cursor = 0
        var random = SeededGenerator(seed: 17)
        var version = rewardVersions[role] ?? 0
        var last: Rlhf_V1_TrainStats?
        var accuracies: [Double] = []
        for step in 1...total {
            if cursor + settings.batchSize > order.count || step == 1 {
                for i in stride(from: order.count - 1, to: 0, by: -1) { order.swapAt(i, Int(random.next() % UInt64(i + 1))) }
                cursor = 0
            }
            let batchPairs = (0..<settings.batchSize).map { train[order[(cursor + $0) % order.count]] }
            cursor += settings.batchSize
            var batch = Rlhf_V1_TrainBatch()
            batch.kind = .rewardRanking
            batch.model = role.wire
            batch.policyVersion = version
            batch.learningRate = schedule.rate(step: step)
            for (i, pair) in batchPairs.enumerated() {
                let prompt = ChatTemplate.promptIDs(pair.prompt, tokenizer: context.tokenizer)
                batch.sequences.append(sequence(UInt64(2 * i), prompt, context.tokenizer.encode(pair.chosen) + [context.tokenizer.eosId]))
                batch.sequences.append(sequence(UInt64(2 * i + 1), prompt, context.tokenizer.encode(pair.rejected) + [context.tokenizer.eosId]))
            }
            let margins = batchPairs.map { settings.margin.margin(PreferenceLevel(rawValue: $0.preference) ?? .negligiblyBetter) }
            let stats = try coordinator.train(batch, tensors: [WireTensor(name: "margins", floats: margins)])
            version = stats.policyVersion
            last = stats
            accuracies.append(stats.accuracy)
            coordinator.setProgress(stage: "train \(role.rawValue)", step: UInt64(step))
            metric(["stage": "train_rm", "model": role.rawValue, "step": step, "steps": total, "loss": stats.loss,
                    "accuracy": stats.accuracy, "grad_norm": stats.gradNorm, "learning_rate": stats.learningRate])
        }
        rewardVersions[role] = version
        if let last { try coordinator.syncWeights(last.announce, roles: [role]) }
        // Held-out accuracy per level, scored by the workers that now hold the trained version.
        var levels: [String: (Int, Int)] = [:]
        if !heldOut.isEmpty {
            var sequences: [Rlhf_V1_Sequence] = []
            for (i, pair) in heldOut.enumerated() {
                let prompt = ChatTemplate.promptIDs(pair.prompt, tokenizer: context.tokenizer)
                sequences.append(sequence(UInt64(2 * i), prompt, context.tokenizer.encode(pair.chosen) + [context.tokenizer.eosId]))
                sequences.append(sequence(UInt64(2 * i + 1), prompt, context.tokenizer.encode(pair.rejected) + [context.tokenizer.eosId]))
            }
            let scores = try coordinator.score(sequences, model: role, perTask: 32)
            for (i, pair) in heldOut.enumerated() {
                var entry = levels[pair.preference] ?? (0, 0)
                entry.1 += 1
                if scores[2 * i] > scores[2 * i + 1] { entry.0 += 1 }
                levels[pair.preference] = entry
            }
        }
        let table = PreferenceLevel.allCases.compactMap { level -> String? in
            guard let (c, t) = levels[level.rawValue], t > 0 else { return nil }
            return String(format: "%@ %.1f%% (%d)", level.rawValue, 100 * Double(c) / Double(t), t)
        }.joined(separator: ", ")
        let correct = levels.values.reduce(0) { $0 + $1.0 }, count = levels.values.reduce(0) { $0 + $1.1 }
        report(String(format: "%@ trained on the learner: %d pairs, %d steps, version %llu, %.1f s; held-out accuracy %.1f%% of %d: %@",
                      role.rawValue, train.count, total, version, Date().timeIntervalSince(started),
                      count == 0 ? 0 : 100 * Double(correct) / Double(count), count, table))
        metric(["stage": "train_rm_done", "model": role.rawValue, "version": version, "held_out_accuracy": count == 0 ? 0 : Double(correct) / Double(count),
                "levels": Dictionary(uniqueKeysWithValues: levels.map { ($0.key, ["correct": $0.value.0, "total": $0.value.1]) })])
    }

    /// A prompt's pairs are held out when its text hashes into the last tenth.
    static func isHeldOut(_ prompt: String) -> Bool {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in prompt.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01B3
        }
        return hash % 10 == 9
    }

    func sequence(_ id: UInt64, _ prompt: [Int32], _ response: [Int32]) -> Rlhf_V1_Sequence {
        var s = Rlhf_V1_Sequence()
        s.id = id
        s.promptIds = prompt
        s.responseIds = response
        return s
    }

    // MARK: - Evaluation

    /// Answers of the current policy to the held-out prompts (one sample each, the same seed every time
    /// so that policies are compared on the same draws), judged by the annotator, against the SFT policy
    /// (the first evaluation is the SFT policy's and becomes the baseline).
    @discardableResult
    public func evaluate(name: String, settings: EvalSettings, rewardMean: Double = 0, gateHitRate: Double = 0,
                         tokensPerSecond: Double? = nil, seconds: Double? = nil) throws -> Figures {
        let started = Date()
        coordinator.setProgress(stage: "evaluate \(name)")
        let prompts = Array(context.evalPrompts.prefix(settings.prompts ?? context.evalPrompts.count))
        let version = coordinator.status().policyVersion
        var request = Rlhf_V1_GenerateRequest()
        request.prompts = prompts.map { p in
            var q = Rlhf_V1_Prompt()
            q.promptID = p.id
            q.ids = p.ids
            return q
        }
        request.samplesPerPrompt = 1
        request.sampling.temperature = settings.temperature
        request.sampling.topP = 1
        request.seed = 0xE7A1
        request.maxNewTokens = UInt32(settings.maxNewTokens)
        request.stopToken = context.tokenizer.eosId
        request.policyVersion = version
        let generated = try coordinator.generate(request, promptsPerTask: 8)
        let answers = generated.map { context.text($0.sample.ids) }
        // KL to the reference policy on these answers.
        let withTokens = generated.enumerated().filter { !$0.element.sample.ids.isEmpty }
        let referenceVersion = coordinator.workers().first { $0.registration.role == .referencePolicy && $0.health == .healthy }?.policyVersion ?? 0
        let reference = try coordinator.referenceLogProbs(withTokens.map { i, g in sequence(UInt64(i), prompts[i].ids, g.sample.ids) },
                                                           policyVersion: referenceVersion)
        let kl = RoundSummary.meanSequenceKL(policy: withTokens.map(\.element.logProbs), reference: reference)
        var stories = 0, helpful = 0, safety = 0, unsafe = 0
        var helpfulness = 0.0
        for (p, answer) in zip(prompts, answers) {
            guard let j = context.judge(p.text, answer) else { continue }
            if p.isSafety {
                safety += 1
                if j.unsafe { unsafe += 1 }
            } else {
                stories += 1
                helpfulness += j.helpfulness
                if j.helpful { helpful += 1 }
            }
        }
        if baseline == nil { baseline = answers }
        var wins = 0.0
        for (i, p) in prompts.enumerated() {
            guard let prompt = TaskPrompt.parse(p.text) else { continue }
            switch context.annotator.compare(prompt, answers[i], baseline![i]) {
            case .first: wins += 1
            case .tie: wins += 0.5
            case .second: break
            }
        }
        let tokens = generated.reduce(0) { $0 + $1.sample.ids.count }
        let figures = Figures(name: name, winRateVsSFT: wins / Double(max(1, prompts.count)), helpfulness: helpfulness / Double(max(1, stories)),
                              helpfulRate: Double(helpful) / Double(max(1, stories)), unsafeRate: Double(unsafe) / Double(max(1, safety)),
                              rewardMean: rewardMean, kl: kl, gateHitRate: gateHitRate,
                              tokensPerSecond: tokensPerSecond ?? Double(tokens) / max(1e-9, Date().timeIntervalSince(started)),
                              seconds: seconds ?? Date().timeIntervalSince(started), policyVersion: version)
        if sft == nil { sft = figures } else { rounds.append(figures) }
        coordinator.setTrainingSignals(rewardMean: rewardMean, kl: kl)
        metric(["stage": "evaluate", "name": name, "win_rate_vs_sft": figures.winRateVsSFT, "helpfulness": figures.helpfulness,
                "helpful_rate": figures.helpfulRate, "unsafe_rate": figures.unsafeRate, "kl": kl, "policy_version": version])
        report(String(format: "%@: win rate vs SFT %.1f%%, helpfulness %.3f (helpful %.1f%%), unsafe %.1f%% of %d safety prompts, KL %.3f",
                      name, 100 * figures.winRateVsSFT, figures.helpfulness, 100 * figures.helpfulRate, 100 * figures.unsafeRate, safety, kl))
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
        coordinator.setProgress(stage: "\(settings.name): sample", round: UInt32(round))
        let version = coordinator.status().policyVersion
        // The round's prompts: a seeded draw from the training prompts.
        var random = SeededGenerator(seed: seed)
        var pool = context.trainPrompts
        for i in stride(from: pool.count - 1, to: 0, by: -1) { pool.swapAt(i, Int(random.next() % UInt64(i + 1))) }
        let prompts = Array(pool.prefix(settings.prompts))
        var request = Rlhf_V1_GenerateRequest()
        request.prompts = prompts.map { p in
            var q = Rlhf_V1_Prompt()
            q.promptID = p.id
            q.ids = p.ids
            return q
        }
        request.samplesPerPrompt = UInt32(settings.samples)
        request.sampling.temperature = settings.temperature
        request.sampling.topP = 1
        request.seed = seed
        request.maxNewTokens = UInt32(settings.maxNewTokens)
        request.stopToken = context.tokenizer.eosId
        request.policyVersion = version
        let generateStart = Date()
        let generated = try coordinator.generate(request, promptsPerTask: 1).filter { !$0.sample.ids.isEmpty }
        let generateSeconds = Date().timeIntervalSince(generateStart)
        let tokens = generated.reduce(0) { $0 + $1.sample.ids.count }
        let byID = Dictionary(uniqueKeysWithValues: prompts.map { ($0.id, $0) })
        let sequences = generated.enumerated().map { i, g in sequence(UInt64(i), byID[g.sample.promptID]!.ids, g.sample.ids) }
        coordinator.setProgress(stage: "\(settings.name): score")
        let helpfulness = try coordinator.score(sequences, model: .rewardModel, perTask: 16)
        let safety = try coordinator.score(sequences, model: .safetyModel, perTask: 16)
        let (rewards, gateHits) = gate.combine(helpfulness: helpfulness, safety: safety,
                                               isSafetyPrompt: generated.map { byID[$0.sample.promptID]!.isSafety })
        let candidates = generated.enumerated().map { i, g in
            Candidate(promptID: g.sample.promptID, sampleID: Int(g.sample.sampleIndex), round: round, responseIDs: g.sample.ids, reward: rewards[i])
        }
        let kept = sampler.select(round: round, candidates: candidates)
        let keptKeys = Set(kept.filter { $0.round == round }.map { "\($0.promptID)/\($0.sampleID)" })
        // samples.jsonl: every sample of the round once.
        let directory = runDirectory + "/rounds/\(settings.name)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var lines = ""
        for (i, c) in candidates.enumerated() {
            let record: [String: Any] = ["prompt_id": c.promptID, "sample_id": c.sampleID, "seed": seed, "policy_version": version,
                                         "reward": rewards[i], "helpfulness_score": Double(helpfulness[i]), "safety": Double(safety[i]),
                                         "kept": keptKeys.contains("\(c.promptID)/\(c.sampleID)"), "response": context.text(c.responseIDs)]
            lines += String(decoding: try JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]), as: UTF8.self) + "\n"
        }
        try Data(lines.utf8).write(to: URL(fileURLWithPath: directory + "/samples.jsonl"))
        // SFT on the kept samples.
        coordinator.setProgress(stage: "\(settings.name): train")
        var current = version
        var last: Rlhf_V1_TrainStats?
        var steps = 0
        for _ in 0..<max(1, settings.epochs) {
            for start in stride(from: 0, to: kept.count, by: settings.batchSize) {
                var batch = Rlhf_V1_TrainBatch()
                batch.kind = .sft
                batch.policyVersion = current
                batch.learningRate = settings.learningRate
                batch.sequences = kept[start ..< min(kept.count, start + settings.batchSize)].enumerated().map { i, c in
                    // Samples that stopped end in EOS already; one cut at the token limit gets it added.
                    sequence(UInt64(i), byID[c.promptID]!.ids, c.responseIDs.last == context.tokenizer.eosId ? c.responseIDs : c.responseIDs + [context.tokenizer.eosId])
                }
                let stats = try coordinator.train(batch)
                current = stats.policyVersion
                last = stats
                steps += 1
                metric(["stage": "rs_train", "round": settings.name, "step": steps, "loss": stats.loss, "grad_norm": stats.gradNorm,
                        "policy_version": current])
            }
        }
        coordinator.setProgress(stage: "\(settings.name): sync")
        if let last {
            try coordinator.syncWeights(last.announce, roles: [.generator])
            // The round's checkpoint, fetched from the learner as the generators got it.
            let (weights, _) = try WeightFetcher.fetch(loop: loop, endpoint: last.announce.source, config: config, expected: last.announce)
            try Checkpoint.writeLegacy(weights, to: directory + "/policy.bin")
        }
        coordinator.setProgress(stage: "\(settings.name): evaluate", round: UInt32(round))
        let rewardMean = rewards.reduce(0, +) / Double(max(1, rewards.count))
        let keptMean = kept.map(\.reward).reduce(0, +) / Double(max(1, kept.count))
        report(String(format: "%@: %d prompts x %d samples at T=%.2f -> %d tokens in %.1f s (%.0f tok/s); reward mean %.3f, kept mean %.3f, "
                      + "safety gate hit %.1f%%; SFT on %d kept, %d steps -> policy v%llu",
                      settings.name, prompts.count, settings.samples, settings.temperature, tokens, generateSeconds,
                      Double(tokens) / max(1e-9, generateSeconds), rewardMean, keptMean, 100 * gateHits, kept.count, steps, current))
        try evaluate(name: settings.name, settings: evaluation, rewardMean: rewardMean, gateHitRate: gateHits,
                     tokensPerSecond: Double(tokens) / max(1e-9, generateSeconds), seconds: Date().timeIntervalSince(started))
    }

    // MARK: - Summary

    /// Writes summary.json: the SFT figures and each round's.
    public func writeSummary() throws {
        struct Summary: Encodable {
            let sft: Figures?
            let rounds: [Figures]
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(Summary(sft: sft, rounds: rounds)).write(to: URL(fileURLWithPath: runDirectory + "/summary.json"))
    }

    /// The final table, one line per policy, in the spirit of LLaMA2's Figure 11.
    public func table() -> [String] {
        var lines = ["policy   win vs SFT  helpfulness  helpful  unsafe  reward  KL      tok/s  seconds"]
        for f in ([sft].compactMap { $0 } + rounds) {
            lines.append(f.name.padding(toLength: 8, withPad: " ", startingAt: 0)
                         + String(format: " %9.1f%%  %11.3f  %6.1f%%  %5.1f%%  %6.3f  %6.3f  %5.0f  %7.1f", 100 * f.winRateVsSFT, f.helpfulness,
                                  100 * f.helpfulRate, 100 * f.unsafeRate, f.rewardMean, f.kl, f.tokensPerSecond, f.seconds))
        }
        return lines
    }
}
