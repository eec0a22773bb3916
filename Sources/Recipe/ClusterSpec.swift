import ClusterRuntime
import Foundation
import LlamaCore
import Launcher
import RLHF
import LlamaTraining
import Wire
import Workers
import Yams

/// A cluster spec (YAML in cluster/): where the coordinator listens, which hosts run which workers,
/// the model, and the plan. Every key is checked; an error names the key and the reason.
public struct ClusterSpec: Sendable, Equatable {
    /// One host and the workers it runs (the launcher's `WorkerHost`).
    public typealias Host = WorkerHost

    /// One plan step.
    public enum Step: Sendable, Equatable {
        /// Sample `samples` completions of `prompts` prompts (random token prompts when the spec
        /// has no data) and report throughput.
        case generate(prompts: Int, samples: Int, maxNewTokens: Int, temperature: Float)
        /// One round through every role: sample `samples` completions of `prompts` prompts, score them
        /// with the reward and safety models, ask the reference for their log-probabilities (the KL
        /// estimate against the reference's fixed version), fine-tune the learner on the best-scored
        /// sample of each prompt (SFT, one step at `learningRate`), and sync the new policy version to
        /// the generators.
        case round(prompts: Int, samples: Int, maxNewTokens: Int, temperature: Float, learningRate: Float)
        /// Keep the cluster up for `seconds` (to look at it with `rlhf status`).
        case hold(seconds: Double)
        /// Evaluate the current policy on held-out prompts with the task's annotator (the first
        /// evaluation, of the SFT policy, is every later win rate's baseline).
        case evaluate(name: String, settings: RLHFPipeline.EvalSettings)
        /// Train a reward model (reward-model or safety-model) on the learner from the task's pairs.
        case trainRewardModel(RLHFPipeline.RewardModelSettings)
        /// Supervised fine-tuning of the policy on the learner from the demonstrations (`data.sft`, else
        /// the embedded task's); the result becomes the chat model (from-SFT rounds, reward and value
        /// models start from it) and the reference policy.
        case supervisedFineTuning(RLHFPipeline.SFTSettings)
        /// A rejection-sampling round (RLHF-V1..V4).
        case rejectionSampling(RLHFPipeline.RoundSettings)
        /// A PPO round (RLHF-V5's last stage).
        case ppo(RLHFPipeline.PPOSettings)
        /// A critic-free policy round: GRPO, Dr. GRPO, RLOO or REINFORCE++ (or PPO).
        case policyRound(RLHFPipeline.PolicyRoundSettings)
        /// A direct-preference round: DPO, IPO or conservative DPO on data or on-policy pairs.
        case dpoRound(RLHFPipeline.DPORoundSettings)

        /// The roles whose workers the step sends work to: a plan with a step whose role no host
        /// starts would wait for ever.
        public var neededRoles: Set<WorkerRole> {
            switch self {
            case .generate: return [.generator]
            case .round: return [.generator, .rewardModel, .referencePolicy, .learner]
            case .hold: return []
            // Samples, then the KL of those samples to the reference.
            case .evaluate: return [.generator, .referencePolicy]
            // Trains on the learner, syncs to the model's workers, which then score the held-out pairs.
            case .trainRewardModel(let settings): return [.learner, settings.model]
            // Trains on the learner, then syncs the generators and the reference policy.
            case .supervisedFineTuning: return [.learner, .generator, .referencePolicy]
            // Sample, the reward's sources (both reward models, the reward function), SFT on the learner, then
            // the round's evaluation.
            case .rejectionSampling(let settings): return Step.rolesOfRound(settings.reward, rewardModelsRetrained: settings.newPairs > 0)
            case .ppo(let settings): return Step.rolesOfRound(settings.reward, rewardModelsRetrained: settings.newPairs > 0)
            case .policyRound(let settings): return Step.rolesOfRound(settings.reward, rewardModelsRetrained: false)
            // Data pairs need no reward source; on-policy pairs ranked by reward do; the evaluation samples.
            case .dpoRound(let settings):
                return settings.pairs == .onPolicy && settings.rankBy == .reward
                    ? Step.rolesOfRound(settings.reward, rewardModelsRetrained: false) : [.generator, .learner, .referencePolicy]
            }
        }

        /// The reward models the step trains on the learner: `train_rm`'s, and both where a round retrains
        /// them on `new_pairs`.
        public var trainedRewardModels: Set<WorkerRole> {
            switch self {
            case .trainRewardModel(let settings): return [settings.model]
            case .rejectionSampling(let settings) where settings.newPairs > 0: return [.rewardModel, .safetyModel]
            case .ppo(let settings) where settings.newPairs > 0: return [.rewardModel, .safetyModel]
            default: return []
            }
        }

        /// A round's roles: generators, learner and reference always; the reward models when they weigh or are
        /// retrained; the reward function when it weighs.
        static func rolesOfRound(_ reward: RewardWeights?, rewardModelsRetrained: Bool) -> Set<WorkerRole> {
            let weights = reward ?? RewardWeights()
            var roles: Set<WorkerRole> = [.generator, .learner, .referencePolicy]
            if weights.models > 0 || rewardModelsRetrained { roles.formUnion([.rewardModel, .safetyModel]) }
            if weights.function > 0 { roles.insert(.rewardFunction) }
            return roles
        }

        /// The round a step makes (its `name:`; nil for steps that make no policy of their own).
        public var roundName: String? {
            switch self {
            case .rejectionSampling(let settings): return settings.name
            case .ppo(let settings): return settings.name
            case .policyRound(let settings): return settings.name
            case .dpoRound(let settings): return settings.name
            case .supervisedFineTuning(let settings): return settings.name
            case .generate, .round, .hold, .evaluate, .trainRewardModel: return nil
            }
        }

        /// The step's wall-clock budget (`budget_s:`), if it has one.
        public var budgetSeconds: Double? {
            switch self {
            case .ppo(let settings): return settings.budgetSeconds
            case .policyRound(let settings): return settings.budgetSeconds
            case .dpoRound(let settings): return settings.budgetSeconds
            default: return nil
            }
        }

        /// The earlier round this step branches from (`start_from:`).
        public var startFrom: String? {
            switch self {
            case .ppo(let settings): return settings.startFrom
            case .policyRound(let settings): return settings.startFrom
            case .dpoRound(let settings): return settings.startFrom
            default: return nil
            }
        }

        /// The step's name in a spec (`plan[i].NAME`).
        public var kind: String {
            switch self {
            case .generate: "generate"
            case .round: "round"
            case .hold: "hold"
            case .evaluate: "evaluate"
            case .trainRewardModel: "train_rm"
            case .supervisedFineTuning: "sft"
            case .rejectionSampling: "rs_round"
            case .ppo: "ppo_round"
            case .policyRound: "policy_round"
            case .dpoRound: "dpo_round"
            }
        }

        /// Whether the step is one of the RLHF pipeline's (which needs the spec's task and keeps
        /// pipeline state across steps).
        public var isRLHF: Bool {
            switch self {
            case .evaluate, .trainRewardModel, .supervisedFineTuning, .rejectionSampling, .ppo, .policyRound, .dpoRound: return true
            case .generate, .round, .hold: return false
            }
        }
    }

    /// The embedded task the RLHF steps work on.
    public struct Task: Sendable, Equatable {
        /// Seed of the task's pairs.
        public var seed: UInt64 = 1
        /// The policy's tokenizer (default: tokenizer.bin beside the checkpoint).
        public var tokenizer: String?
        /// Preference pairs generated for the reward models.
        public var preferencePairs = 8_000
        /// Evaluation prompts used (nil: all).
        public var evalPrompts: Int?
        /// Sampling temperature of evaluations.
        public var evalTemperature: Float = 1.0
        /// Answers drawn per evaluation prompt (each compared with the SFT answer of the same draw):
        /// more answers, a less noisy win rate.
        public var evalSamples = 1
    }

    public var coordinator: String
    public var hosts: [Host]
    public var checkpoint: String
    /// Score heads (JSON) of the reward and safety models; nil: heads initialised from a seed.
    public var rewardHead: String?
    public var safetyHead: String?
    /// Hugging Face reward models (`model.reward_model`, `model.safety_model`: ForSequenceClassification
    /// directories) the reward-model and safety-model workers run, with their own heads, instead of the
    /// policy's trunk with a head; they share the policy's tokenizer, and a step that trains one (`train_rm`,
    /// `new_pairs:`) starts the learner's copy from it.
    public var pretrainedRewardModels: [WorkerRole: String] = [:]
    public var plan: [Step]
    /// The rounds later steps branch from (`start_from:`): the learner keeps a snapshot of the policy at their end.
    public var snapshotRounds: Set<String> { Set(plan.compactMap(\.startFrom)).subtracting([LearnerService.chatModelSnapshot]) }
    /// The text of the plan's own file when the spec names one (`plan: FILE`): part of the run's identity.
    public var planFileText: String?
    public var heartbeatMilliseconds: UInt64
    /// Seconds a worker of this launch waits without a word from its coordinator before it gives up
    /// (the launch died and no resume adopted it); 0: wait for ever.
    public var orphanTimeoutSeconds: UInt64 = ClusterSpec.defaultOrphanTimeoutSeconds
    /// The default of `orphan_timeout_s`.
    public static let defaultOrphanTimeoutSeconds: UInt64 = 300
    /// Sequences each generator decodes at once (`decode_slots`; continuous batching).
    public var decodeSlots: Int = GeneratorService.defaultDecodeSlots
    /// The number formats of the roles' compute (`precision:`).
    public var precision = Precision()

    /// The spec's `precision: {generator: F, kv_cache: F, learner: F}` (F: float32 or bfloat16): the
    /// generators' matrix products (bfloat16: bfloat16 weights and inputs, float32 sums), what their KV
    /// caches store, and the learner's training products (bfloat16 operands, float32 sums and float32
    /// master weights, gradients and optimizer state). The other roles compute in float32.
    public struct Precision: Sendable, Equatable {
        public var generator: WeightPrecision = .float32
        public var kvCache: KVCache.Precision = .float32
        public var learner: WeightPrecision = .float32

        public init(generator: WeightPrecision = .float32, kvCache: KVCache.Precision = .float32, learner: WeightPrecision = .float32) {
            self.generator = generator
            self.kvCache = kvCache
            self.learner = learner
        }

        static func parse(_ value: Any) throws -> Precision {
            guard let entries = value as? [String: Any] else {
                throw Invalid(key: "precision", reason: "expected a mapping like {generator: bfloat16, kv_cache: bfloat16, learner: bfloat16}, got \(describe(value))")
            }
            var precision = Precision()
            for (key, raw) in entries.sorted(by: { $0.key < $1.key }) {
                let formats = "float32 or bfloat16"
                switch key {
                case "generator", "learner":
                    guard let text = raw as? String, let format = WeightPrecision(rawValue: text) else {
                        throw Invalid(key: "precision.\(key)", reason: "expected \(formats), got \(describe(raw))")
                    }
                    if key == "generator" { precision.generator = format } else { precision.learner = format }
                case "kv_cache":
                    guard let text = raw as? String, let format = KVCache.Precision(rawValue: text) else {
                        throw Invalid(key: "precision.kv_cache", reason: "expected \(formats), got \(describe(raw))")
                    }
                    precision.kvCache = format
                case _ where WorkerRole(rawValue: key) != nil:
                    guard raw as? String == "float32" else {
                        throw Invalid(key: "precision.\(key)", reason: "a \(key) computes in float32 (bfloat16 is available for generator, kv_cache and learner)")
                    }
                default:
                    throw Invalid(key: "precision.\(key)", reason: "unknown key (expected generator, kv_cache, learner)")
                }
            }
            return precision
        }
    }
    /// LoRA on the policy (`lora: {rank, alpha, dropout, targets}`): the learner trains only adapters on
    /// the spec's checkpoint, kept frozen, and weight syncs send only the adapters; nil: whole weights.
    public var lora: LoRASettings?

    /// Reads `lora: {rank: 8, alpha: 16, dropout: 0.05, targets: [wq, wk, wv, wo]}` (every key optional,
    /// PEFT's defaults but for the targets: LLaMA's attention projections).
    static func parseLoRA(_ value: Any) throws -> LoRASettings {
        guard let entries = value as? [String: Any] else {
            throw Invalid(key: "lora", reason: "expected a mapping like {rank: 8, alpha: 16, dropout: 0.05, targets: [wq, wk, wv, wo]}, got \(describe(value))")
        }
        var settings = LoRASettings()
        for (key, raw) in entries.sorted(by: { $0.key < $1.key }) {
            switch key {
            case "rank":
                guard let rank = raw as? Int, (1 ... 4096).contains(rank) else {
                    throw Invalid(key: "lora.rank", reason: "expected an integer in 1...4096, got \(describe(raw))")
                }
                settings.rank = rank
            case "alpha", "dropout":
                guard let number = (raw as? Double) ?? (raw as? Int).map(Double.init), number.isFinite else {
                    throw Invalid(key: "lora.\(key)", reason: "expected a number, got \(describe(raw))")
                }
                if key == "alpha" { settings.alpha = number } else { settings.dropout = number }
            case "targets":
                let names = (raw as? [Any])?.compactMap { $0 as? String } ?? (raw as? String).map { $0.split(separator: ",").map(String.init) }
                guard let names, (raw as? [Any]).map({ $0.count == names.count }) ?? true else {
                    throw Invalid(key: "lora.targets", reason: "expected a list of matrix names like [wq, wk, wv, wo], got \(describe(raw))")
                }
                settings.targets = try names.map { name in
                    guard let target = LoRASettings.target(named: name.trimmingCharacters(in: .whitespaces)) else {
                        throw Invalid(key: "lora.targets", reason: "\(name) is not a matrix an adapter can target (choose from \(LoRASettings.targetable.map(\.name).joined(separator: ", ")))")
                    }
                    return target
                }
            default:
                throw Invalid(key: "lora.\(key)", reason: "unknown key (expected rank, alpha, dropout, targets)")
            }
        }
        if let problem = settings.problem() { throw Invalid(key: "lora", reason: problem) }
        return settings
    }

    /// Where the coordinator serves Prometheus metrics (`tcp://HOST:PORT`); nil for nowhere.
    public var metrics: String?
    /// The host name or address workers on other machines dial the coordinator at, where it binds every
    /// interface (`tcp://*:PORT`, `tcp://0.0.0.0:PORT`); nil: this machine's host name.
    public var advertise: String?
    /// CURVE key prefixes (files PREFIX.key and PREFIX.pub from `rlhf keys generate`): the servers'
    /// (coordinator, learners' weight servers) and the workers'. nil: plain TCP.
    public var curve: (server: String, client: String)?
    /// The embedded task, for the RLHF steps (nil: none; those steps are then refused).
    public var task: Task?
    /// The chat format the policy's conversations are rendered in (`model.chat_template`; nil: the
    /// model's own template, else LLaMA2's).
    public var chatTemplate: ChatFormat?
    /// What the model's own chat template reads beside the conversation (`model.chat_template_kwargs`,
    /// e.g. `{enable_thinking: false}`), in every rendering; empty: its defaults.
    public var chatTemplateArguments = ChatTemplateArguments()
    /// How each round's policy is written (`export: hf` or `export: {format: hf, dtype: bfloat16}`).
    public var export = PolicyExport()
    /// The user's prompt and preference files (`data:`); what they do not give comes from the task.
    public var data: DataFiles?
    /// The judge of evaluations and new pairs (`judge: {command: ...}`); nil: the task's annotator.
    public var judge: JudgeCommand?
    /// What the reward-function workers run (`reward_function: {command: ..., timeout_s}`).
    public var rewardFunction: RewardFunctionCommand?

    /// Whether a host starts reward-function workers.
    public var startsRewardFunctionWorkers: Bool { hosts.contains { ($0.workers[.rewardFunction] ?? 0) > 0 } }

    /// The spec's `reward_function:`: the command every reward-function worker runs, in the spec's directory
    /// (on a remote host: the same path there).
    public struct RewardFunctionCommand: Sendable, Equatable {
        /// The command's words (empty for an endpoint).
        public var arguments: [String]
        public var directory: String
        public var timeoutSeconds = 600.0
        /// An HTTP endpoint in OpenRLHF's remote reward shape, instead of a command.
        public var endpoint: String?

        public init(arguments: [String], directory: String, timeoutSeconds: Double = 600, endpoint: String? = nil) {
            self.arguments = arguments
            self.directory = directory
            self.timeoutSeconds = timeoutSeconds
            self.endpoint = endpoint
        }
    }

    /// The spec's `judge:`: a command (run in the spec's directory) and how its answers are read.
    public struct JudgeCommand: Sendable, Equatable {
        /// The argument vector; a first word `rlhf` is this executable (empty when the reward function judges).
        public var arguments: [String]
        /// The spec's reward function is the judge (`source: reward-function`), not a command.
        public var usesRewardFunction = false
        /// A held-out reward model is the judge (`source: reward-model`), not a command.
        public var rewardModel: RewardModelJudge.Models?
        /// The spec's directory.
        public var directory: String
        public var settings = CommandJudge.Settings()
    }

    public static func == (a: ClusterSpec, b: ClusterSpec) -> Bool {
        a.coordinator == b.coordinator && a.hosts == b.hosts && a.checkpoint == b.checkpoint && a.rewardHead == b.rewardHead
            && a.safetyHead == b.safetyHead && a.pretrainedRewardModels == b.pretrainedRewardModels && a.plan == b.plan && a.heartbeatMilliseconds == b.heartbeatMilliseconds
            && a.orphanTimeoutSeconds == b.orphanTimeoutSeconds && a.decodeSlots == b.decodeSlots && a.precision == b.precision && a.lora == b.lora
            && a.metrics == b.metrics && a.curve?.server == b.curve?.server && a.curve?.client == b.curve?.client && a.task == b.task
            && a.chatTemplate == b.chatTemplate && a.chatTemplateArguments == b.chatTemplateArguments && a.export == b.export && a.data == b.data && a.judge == b.judge
            && a.rewardFunction == b.rewardFunction
    }

    /// A spec error: the key (dotted path) and why.
    public struct Invalid: Error, CustomStringConvertible, Equatable {
        public let key: String
        public let reason: String
        public var description: String { "invalid cluster spec: \(key): \(reason)" }
    }

    /// Only the coordinator endpoint of a spec file (what `rlhf status` needs).
    public static func coordinatorEndpoint(ofSpecAt path: String) throws -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw Invalid(key: "(file)", reason: "cannot read \(path)")
        }
        guard let top = (try? Yams.load(yaml: text)) as? [String: Any], let endpoint = top["coordinator"] as? String else {
            throw Invalid(key: "coordinator", reason: "no coordinator endpoint in \(path)")
        }
        return endpoint
    }

    /// Parses YAML text; relative paths are resolved against `baseDirectory`.
    /// The same plan at a smoke-test size (`rlhf launch --quick`): every step keeps its kind, order and
    /// settings but works on far less data, so that the whole plan runs in about a minute. Evaluations
    /// answer 128 prompts once; reward models train on at most 1,500 pairs for one epoch; rounds draw
    /// 4 samples of at most 128 prompts and label at most 64 new pairs; SFT steps train on at most 1,000
    /// demonstrations for one epoch; holds last a second.
    public func quick() -> ClusterSpec {
        var spec = self
        if var task = spec.task {
            task.evalPrompts = min(task.evalPrompts ?? 128, 128)
            task.evalSamples = 1
            task.preferencePairs = min(task.preferencePairs, 3_000)
            spec.task = task
        }
        spec.plan = plan.map { step in
            switch step {
            case let .generate(prompts, samples, maxNewTokens, temperature):
                return .generate(prompts: min(prompts, 16), samples: min(samples, 4), maxNewTokens: maxNewTokens, temperature: temperature)
            case let .round(prompts, samples, maxNewTokens, temperature, learningRate):
                return .round(prompts: min(prompts, 16), samples: min(samples, 4), maxNewTokens: maxNewTokens, temperature: temperature,
                              learningRate: learningRate)
            case let .hold(seconds):
                return .hold(seconds: min(seconds, 1))
            case let .evaluate(name, settings):
                return .evaluate(name: name, settings: settings)
            case var .supervisedFineTuning(settings):
                settings.examples = min(settings.examples ?? 1_000, 1_000)
                settings.epochs = min(settings.epochs, 1)
                return .supervisedFineTuning(settings)
            case var .trainRewardModel(settings):
                settings.pairs = min(settings.pairs ?? 1_500, 1_500)
                settings.epochs = min(settings.epochs, 1)
                return .trainRewardModel(settings)
            case var .rejectionSampling(settings):
                settings.prompts = min(settings.prompts, 128)
                settings.samples = min(settings.samples, 4)
                settings.newPairs = min(settings.newPairs, 64)
                return .rejectionSampling(settings)
            case var .policyRound(settings):
                settings.iterations = min(settings.iterations, 4)
                settings.prompts = min(settings.prompts, 8)
                settings.group = min(settings.group, 4)
                return .policyRound(settings)
            case var .dpoRound(settings):
                settings.maxPairs = min(settings.maxPairs ?? 512, 512)
                settings.epochs = 1
                settings.iterations = min(settings.iterations, 2)
                settings.prompts = min(settings.prompts, 64)
                settings.samples = min(settings.samples, 4)
                return .dpoRound(settings)
            case var .ppo(settings):
                settings.iterations = min(settings.iterations, 4)
                settings.rollouts = min(settings.rollouts, 32)
                settings.miniBatch = min(settings.miniBatch, settings.rollouts)
                settings.newPairs = min(settings.newPairs, 32)
                settings.rmEvery = settings.rmEvery.map { min($0, 2) }
                return .ppo(settings)
            }
        }
        return spec
    }

    /// Whether parsing checks that the files a spec names exist here (not when the spec is read for
    /// another machine: `rlhf launch --emit kubernetes`).
    @TaskLocal static var checksFiles = true

    /// Parses a spec for another place than this machine: the files it names need not exist here.
    public static func parse(_ text: String, baseDirectory: String, checkingFiles: Bool) throws -> ClusterSpec {
        try $checksFiles.withValue(checkingFiles) { try parse(text, baseDirectory: baseDirectory) }
    }

    public static func parse(_ text: String, baseDirectory: String) throws -> ClusterSpec {
        let root: Any?
        do {
            root = try Yams.load(yaml: text)
        } catch {
            throw Invalid(key: "(file)", reason: "not valid YAML: \(error)")
        }
        guard let top = root as? [String: Any] else { throw Invalid(key: "(file)", reason: "expected a mapping at the top level") }
        let known: Set<String> = ["coordinator", "hosts", "model", "plan", "heartbeat_ms", "orphan_timeout_s", "metrics", "curve", "task", "export",
                                  "data", "judge", "reward_function", "advertise", "decode_slots", "precision", "lora"]
        if let unknown = top.keys.first(where: { !known.contains($0) }) {
            throw Invalid(key: unknown, reason: "unknown key (expected one of \(known.sorted().joined(separator: ", ")))")
        }
        guard let coordinator = top["coordinator"] as? String, coordinator.hasPrefix("tcp://") else {
            throw Invalid(key: "coordinator", reason: "expected an endpoint like tcp://127.0.0.1:5555")
        }
        try ClusterSpec.checkPort(of: coordinator, key: "coordinator")
        guard let hostList = top["hosts"] as? [Any], !hostList.isEmpty else {
            throw Invalid(key: "hosts", reason: "expected a non-empty list of hosts")
        }
        var hosts: [Host] = []
        for (i, item) in hostList.enumerated() {
            let key = "hosts[\(i)]"
            let h = try arguments(item, key: key, known: ["name", "address", "workers", "threads", "executable", "namespace", "slurm"])
            guard let name = h["name"] as? String, !name.isEmpty else { throw Invalid(key: "\(key).name", reason: "expected a name") }
            for optional in ["address", "executable", "namespace"] {
                if let value = h[optional], !((value as? String).map { !$0.isEmpty } ?? false) {
                    throw Invalid(key: "\(key).\(optional)", reason: "expected a non-empty string, got \(describe(value))")
                }
            }
            let address = h["address"] as? String ?? "local"
            guard let roles = h["workers"] as? [String: Any], !roles.isEmpty else {
                throw Invalid(key: "\(key).workers", reason: "expected a mapping of role to count")
            }
            let workers = try roleNumbers(roles, key: "\(key).workers", in: 0 ... 4_096, expecting: "a count in 0...4096")
            var threads: [WorkerRole: Int] = [:]
            if let value = h["threads"] {
                guard let perRole = value as? [String: Any] else {
                    throw Invalid(key: "\(key).threads", reason: "expected a mapping of role to compute threads, e.g. {learner: 2}, got \(describe(value))")
                }
                let counts = ComputePool.threadCounts
                threads = try roleNumbers(perRole, key: "\(key).threads", in: counts,
                                          expecting: "a thread count in \(counts.lowerBound)...\(counts.upperBound) (rlhf worker --threads)")
                if h["slurm"] != nil {
                    throw Invalid(key: "\(key).threads", reason: "a slurm host's workers take its slurm: cpus_per_task as their threads: give no threads")
                }
            }
            var slurm: SlurmSettings?
            if let value = h["slurm"] {
                for other in ["address", "namespace"] where h[other] != nil {
                    throw Invalid(key: "\(key).\(other)", reason: "a slurm host's workers run where Slurm places them: give no \(other)")
                }
                // The scalars as written: YAML 1.1 reads `time: 2:00:00` as the number 7200 (base 60).
                let written = (try? Yams.compose(yaml: text))?["hosts"]?[i]?["slurm"]
                slurm = try slurmSettings(value, key: "\(key).slurm") { written?[$0]?.scalar?.string }
            }
            guard name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }) else {
                throw Invalid(key: "\(key).name", reason: "expected letters, digits, '-', '_' or '.' (it is part of the workers' ids), got \(describe(name))")
            }
            hosts.append(Host(name: name, address: address, workers: workers, executable: h["executable"] as? String,
                              namespace: h["namespace"] as? String, slurm: slurm, threads: threads))
        }
        if hosts.filter(\.isSlurm).count > 1 {
            throw Invalid(key: "hosts", reason: "more than one slurm host: give one slurm host (its nodes: and workers: say how many and which); "
                          + "one allocation holds all the Slurm workers")
        }
        if Set(hosts.map(\.name)).count < hosts.count {
            throw Invalid(key: "hosts", reason: "two hosts share a name (the name is part of each worker's id)")
        }
        guard let model = top["model"] as? [String: Any], let path = model["checkpoint"] as? String else {
            throw Invalid(key: "model.checkpoint", reason: "expected the path of a checkpoint file or a Hugging Face model directory")
        }
        let modelKeys: Set<String> = ["checkpoint", "reward_head", "safety_head", "reward_model", "safety_model", "chat_template", "chat_template_kwargs"]
        if let unknown = model.keys.first(where: { !modelKeys.contains($0) }) {
            throw Invalid(key: "model.\(unknown)", reason: "unknown key (expected one of \(modelKeys.sorted().joined(separator: ", ")))")
        }
        func file(_ key: String, _ value: Any?) throws -> String? {
            guard let value else { return nil }
            guard let path = value as? String, !path.isEmpty else { throw Invalid(key: "model.\(key)", reason: "expected a path") }
            let resolved = path.hasPrefix("/") ? path : (baseDirectory as NSString).appendingPathComponent(path)
            guard !ClusterSpec.checksFiles || FileManager.default.fileExists(atPath: resolved) else { throw Invalid(key: "model.\(key)", reason: "no file at \(resolved)") }
            return resolved
        }
        let checkpoint = try file("checkpoint", path)!
        if HuggingFaceCheckpoint.isRewardModel(checkpoint) {
            throw Invalid(key: "model.checkpoint", reason: "\(checkpoint) holds a reward model (ForSequenceClassification), which scores and does not generate; "
                          + "the policy is a causal LM (use the reward model as judge: {source: reward-model, checkpoint: ...})")
        }
        let rewardHead = try file("reward_head", model["reward_head"]), safetyHead = try file("safety_head", model["safety_head"])
        var pretrainedRewardModels: [WorkerRole: String] = [:]
        for (key, role, head) in [("reward_model", WorkerRole.rewardModel, "reward_head"), ("safety_model", .safetyModel, "safety_head")] {
            guard let directory = try file(key, model[key]) else { continue }
            guard !ClusterSpec.checksFiles || HuggingFaceCheckpoint.isRewardModel(directory) else {
                throw Invalid(key: "model.\(key)", reason: "\(directory) is not a Hugging Face reward model (a directory whose config.json names a ForSequenceClassification)")
            }
            guard model[head] == nil else {
                throw Invalid(key: "model.\(head)", reason: "given with model.\(key), which brings its own head")
            }
            pretrainedRewardModels[role] = directory
        }
        var plan: [Step] = []
        // The plan: a list in the spec, or the path of a YAML file holding the list (or a mapping with `plan:`).
        var planItems: [Any] = []
        var planFileText: String?
        switch top["plan"] {
        case nil, is NSNull:
            break
        case let items as [Any]:
            planItems = items
        case let file as String:
            let path = file.hasPrefix("/") ? file : (baseDirectory as NSString).appendingPathComponent(file)
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw Invalid(key: "plan", reason: "cannot read the plan file \(path)") }
            let loaded: Any?
            do {
                loaded = try Yams.load(yaml: text)
            } catch {
                throw Invalid(key: "plan", reason: "the plan file \(path) is not valid YAML: \(error)")
            }
            guard let items = (loaded as? [Any]) ?? ((loaded as? [String: Any])?["plan"] as? [Any]) else {
                throw Invalid(key: "plan", reason: "the plan file \(path) holds no list of steps (a list, or plan: followed by one)")
            }
            planItems = items
            planFileText = text
        default:
            throw Invalid(key: "plan", reason: "expected a list of steps or the path of a YAML file holding them")
        }
        for (i, item) in planItems.enumerated() {
            guard let step = item as? [String: Any], step.count == 1, let (kind, value) = step.first else {
                throw Invalid(key: "plan[\(i)]", reason: "expected a mapping with one step kind")
            }
            switch kind {
            case "generate":
                let key = "plan[\(i)].generate"
                let args = try arguments(value, key: key, known: ["prompts", "samples", "max_new_tokens", "temperature"])
                let d = GenerateStepSettings()
                plan.append(.generate(prompts: try positive(args, "prompts", key) ?? d.prompts, samples: try positive(args, "samples", key) ?? d.samples,
                                      maxNewTokens: try positive(args, "max_new_tokens", key) ?? d.maxNewTokens,
                                      temperature: try temperature(args, key).map(Float.init) ?? d.temperature))
            case "round":
                let key = "plan[\(i)].round"
                let args = try arguments(value, key: key, known: ["prompts", "samples", "max_new_tokens", "temperature", "learning_rate"])
                let d = RoundStepSettings()
                plan.append(.round(prompts: try positive(args, "prompts", key) ?? d.prompts, samples: try positive(args, "samples", key) ?? d.samples,
                                   maxNewTokens: try positive(args, "max_new_tokens", key) ?? d.maxNewTokens,
                                   temperature: try temperature(args, key).map(Float.init) ?? d.temperature,
                                   learningRate: try number(args, "learning_rate", key, largest: 10).map(Float.init) ?? d.learningRate))
            case "hold":
                let key = "plan[\(i)].hold"
                let args = try arguments(value, key: key, known: ["seconds"])
                guard let seconds = try number(args, "seconds", key, largest: 86_400) else { throw Invalid(key: key + ".seconds", reason: "expected a positive number of seconds") }
                plan.append(.hold(seconds: seconds))
            case "evaluate":
                let args = try arguments(value, key: "plan[\(i)].evaluate", known: ["name"])
                plan.append(.evaluate(name: try ClusterSpec.text(args, "name", "plan[\(i)].evaluate") ?? "SFT", settings: RLHFPipeline.EvalSettings()))
            case "train_rm":
                let key = "plan[\(i)].train_rm"
                let args = try arguments(value, key: key, known: ["model", "pairs", "epochs", "batch_size", "learning_rate", "margin"])
                guard let name = args["model"] as? String, let role = WorkerRole(rawValue: name), role == .rewardModel || role == .safetyModel else {
                    throw Invalid(key: key + ".model", reason: "expected reward-model or safety-model")
                }
                var settings = RLHFPipeline.RewardModelSettings(model: role)
                settings.pairs = try positive(args, "pairs", key)
                settings.epochs = try number(args, "epochs", key) ?? settings.epochs
                settings.batchSize = try positive(args, "batch_size", key) ?? settings.batchSize
                settings.learningRate = try number(args, "learning_rate", key, largest: 10).map(Float.init) ?? settings.learningRate
                if let m = args["margin"] {
                    guard let text = m as? String, let margin = MarginTable(rawValue: text) else {
                        throw Invalid(key: key + ".margin", reason: "expected small, large or none")
                    }
                    settings.margin = margin
                }
                plan.append(.trainRewardModel(settings))
            case "sft":
                let key = "plan[\(i)].sft"
                let args = try arguments(value, key: key, known: ["name", "examples", "epochs", "batch_size", "learning_rate"])
                var settings = RLHFPipeline.SFTSettings()
                settings.name = try ClusterSpec.text(args, "name", key) ?? settings.name
                settings.examples = try positive(args, "examples", key)
                settings.epochs = try number(args, "epochs", key, largest: 1_000) ?? settings.epochs
                settings.batchSize = try positive(args, "batch_size", key) ?? settings.batchSize
                settings.learningRate = try number(args, "learning_rate", key, largest: 10).map(Float.init) ?? settings.learningRate
                plan.append(.supervisedFineTuning(settings))
            case "rs_round":
                let key = "plan[\(i)].rs_round"
                let args = try arguments(value, key: key, known: ["name", "prompts", "samples", "temperature", "max_new_tokens", "epochs",
                                                                  "batch_size", "learning_rate", "new_pairs", "rm_learning_rate", "from_sft", "reward"])
                guard let name = args["name"] as? String, !name.isEmpty else { throw Invalid(key: key + ".name", reason: "expected a name, e.g. V1") }
                var settings = RLHFPipeline.RoundSettings(name: name)
                settings.prompts = try positive(args, "prompts", key) ?? settings.prompts
                settings.samples = try positive(args, "samples", key) ?? settings.samples
                settings.temperature = try number(args, "temperature", key, largest: 100).map(Float.init) ?? settings.temperature
                settings.maxNewTokens = try positive(args, "max_new_tokens", key) ?? settings.maxNewTokens
                settings.epochs = try positive(args, "epochs", key) ?? settings.epochs
                settings.batchSize = try positive(args, "batch_size", key) ?? settings.batchSize
                settings.learningRate = try number(args, "learning_rate", key, largest: 10).map(Float.init) ?? settings.learningRate
                settings.newPairs = try count(args, "new_pairs", key) ?? settings.newPairs
                settings.rewardLearningRate = try number(args, "rm_learning_rate", key, largest: 10).map(Float.init) ?? settings.rewardLearningRate
                if let flag = args["from_sft"] {
                    guard let value = flag as? Bool else { throw Invalid(key: key + ".from_sft", reason: "expected true or false") }
                    settings.fromSFT = value
                }
                settings.reward = try rewardWeights(args["reward"], key: key + ".reward")
                plan.append(.rejectionSampling(settings))
            case "ppo_round":
                plan.append(.ppo(try ClusterSpec.ppoSettings(value, key: "plan[\(i)].ppo_round")))
            case "policy_round":
                plan.append(.policyRound(try ClusterSpec.policyRoundSettings(value, key: "plan[\(i)].policy_round")))
            case "dpo_round":
                plan.append(.dpoRound(try ClusterSpec.dpoRoundSettings(value, key: "plan[\(i)].dpo_round")))
            default:
                throw Invalid(key: "plan[\(i)].\(kind)",
                              reason: "unknown step (this build runs: generate, round, hold, evaluate, sft, train_rm, rs_round, ppo_round, policy_round, dpo_round)")
            }
        }
        // Each round writes rounds/NAME/ and is snapshotted under its name: two rounds of one name would
        // write over each other's files and make start_from ambiguous, and a name is one path component.
        var namedAt: [String: Int] = [:]
        for (i, step) in plan.enumerated() {
            guard let name = step.roundName else { continue }
            if let first = namedAt[name] {
                throw Invalid(key: "plan[\(i)].\(step.kind).name",
                              reason: "\(name) already names plan[\(first)] (each round writes rounds/NAME/: give every round its own name)")
            }
            namedAt[name] = i
            if name == "." || name == ".." || name.contains("/") || name.contains(where: \.isNewline) || name.contains("\0") {
                throw Invalid(key: "plan[\(i)].\(step.kind).name", reason: "\(describe(name)) cannot name a directory (rounds/NAME/): no '/', newline, '.' or '..'")
            }
        }
        // A branch starts from an earlier round of the plan.
        for (i, step) in plan.enumerated() {
            guard let from = step.startFrom else { continue }
            if from != LearnerService.chatModelSnapshot && !plan[..<i].contains(where: { $0.roundName == from }) {
                throw Invalid(key: "plan[\(i)].\(step.kind).start_from", reason: "no earlier round is named \(from) (or start_from: sft, the chat model)")
            }
        }
        var heartbeat = 500
        if let value = top["heartbeat_ms"] {
            guard let ms = value as? Int, (10 ... 60_000).contains(ms) else {
                throw Invalid(key: "heartbeat_ms", reason: "expected an integer number of milliseconds in 10...60000, got \(describe(value))")
            }
            heartbeat = ms
        }
        var orphanTimeout = Int(ClusterSpec.defaultOrphanTimeoutSeconds)
        if let value = top["orphan_timeout_s"] {
            guard let seconds = value as? Int, (0 ... 604_800).contains(seconds) else {
                throw Invalid(key: "orphan_timeout_s", reason: "expected an integer number of seconds in 0...604800 (0: never), got \(describe(value))")
            }
            orphanTimeout = seconds
        }
        var decodeSlots = GeneratorService.defaultDecodeSlots
        if let value = top["decode_slots"] {
            guard let slots = value as? Int, (1 ... 4_096).contains(slots) else {
                throw Invalid(key: "decode_slots", reason: "expected an integer number of sequences in 1...4096, got \(describe(value))")
            }
            decodeSlots = slots
        }
        let precision = try top["precision"].map(Precision.parse) ?? Precision()
        let lora = try top["lora"].map(ClusterSpec.parseLoRA)
        var metrics: String? = nil
        if let m = top["metrics"] {
            guard let endpoint = m as? String, endpoint.hasPrefix("tcp://") else {
                throw Invalid(key: "metrics", reason: "expected an endpoint like tcp://127.0.0.1:9555")
            }
            try ClusterSpec.checkPort(of: endpoint, key: "metrics")
            metrics = endpoint
        }
        var advertise: String? = nil
        if let a = top["advertise"] {
            guard let host = a as? String, !host.isEmpty, !host.contains(where: { $0.isWhitespace || $0 == "/" || $0 == ":" }) else {
                throw Invalid(key: "advertise", reason: "expected the host name or address the workers reach the coordinator at, got \(describe(a))")
            }
            advertise = host
        }
        var curve: (server: String, client: String)? = nil
        if let c = top["curve"] {
            guard let keys = c as? [String: Any] else { throw Invalid(key: "curve", reason: "expected {server: PREFIX, client: PREFIX}") }
            if let unknown = keys.keys.first(where: { $0 != "server" && $0 != "client" }) {
                throw Invalid(key: "curve.\(unknown)", reason: "unknown key (expected server, client)")
            }
            var prefixes: [String: String] = [:]
            for name in ["server", "client"] {
                guard let prefix = keys[name] as? String, !prefix.isEmpty else {
                    throw Invalid(key: "curve.\(name)", reason: "expected the prefix of a key pair made by rlhf keys generate")
                }
                let resolved = prefix.hasPrefix("/") ? prefix : (baseDirectory as NSString).appendingPathComponent(prefix)
                for file in [resolved + ".key", resolved + ".pub"] where ClusterSpec.checksFiles && !FileManager.default.fileExists(atPath: file) {
                    throw Invalid(key: "curve.\(name)", reason: "no file at \(file) (make it with: rlhf keys generate --out \(resolved))")
                }
                prefixes[name] = resolved
            }
            curve = (prefixes["server"]!, prefixes["client"]!)
        }
        var spec = ClusterSpec(coordinator: coordinator, hosts: hosts, checkpoint: checkpoint, rewardHead: rewardHead, safetyHead: safetyHead,
                               plan: plan, heartbeatMilliseconds: UInt64(heartbeat), metrics: metrics)
        spec.curve = curve
        spec.advertise = advertise
        spec.orphanTimeoutSeconds = UInt64(orphanTimeout)
        spec.decodeSlots = decodeSlots
        spec.precision = precision
        spec.lora = lora
        spec.planFileText = planFileText
        spec.pretrainedRewardModels = pretrainedRewardModels
        if let name = model["chat_template"] {
            guard let text = name as? String, let format = try? ChatFormat(named: text) else {
                throw Invalid(key: "model.chat_template", reason: "\(describe(name)) is not a supported chat format (supported: \(ChatFormat.supportedNames))")
            }
            spec.chatTemplate = format
        }
        if let arguments = model["chat_template_kwargs"], !(arguments is NSNull) {
            do {
                spec.chatTemplateArguments = try ChatTemplateArguments(mapping: arguments, key: "model.chat_template_kwargs")
            } catch let error as ChatTemplateArguments.Invalid {
                throw Invalid(key: error.key, reason: error.reason)
            }
            if spec.chatTemplate != nil && !spec.chatTemplateArguments.isEmpty {
                throw Invalid(key: "model.chat_template_kwargs", reason: "the arguments go to the model's own chat template; model.chat_template names a format instead, whose template reads none")
            }
        }
        switch top["export"] {
        case nil, is NSNull:
            break
        case let name as String:
            guard let format = PolicyExport.Format(rawValue: name) else {
                throw Invalid(key: "export", reason: "\"\(name)\" is not a format (expected hf or llama2c)")
            }
            spec.export.format = format
        case let value:
            let args = try arguments(value as Any, key: "export", known: ["format", "dtype"])
            if let name = args["format"] {
                guard let text = name as? String, let format = PolicyExport.Format(rawValue: text) else {
                    throw Invalid(key: "export.format", reason: "\(describe(name)) is not a format (expected hf or llama2c)")
                }
                spec.export.format = format
            }
            if let name = args["dtype"] {
                switch name as? String {
                case "float32": spec.export.dtype = .float32
                case "bfloat16": spec.export.dtype = .bfloat16
                default: throw Invalid(key: "export.dtype", reason: "\(describe(name)) is not a type (expected float32 or bfloat16)")
                }
            }
        }
        if let t = top["task"] {
            let args = try arguments(t, key: "task", known: ["seed", "tokenizer", "preference_pairs", "eval_prompts", "eval_temperature", "eval_samples"])
            var task = Task()
            if let seed = args["seed"] {
                guard let n = seed as? Int, n >= 0 else { throw Invalid(key: "task.seed", reason: "expected a seed >= 0") }
                task.seed = UInt64(n)
            }
            if let path = args["tokenizer"] {
                guard let text = path as? String else { throw Invalid(key: "task.tokenizer", reason: "expected a path") }
                let resolved = text.hasPrefix("/") ? text : (baseDirectory as NSString).appendingPathComponent(text)
                guard !ClusterSpec.checksFiles || FileManager.default.fileExists(atPath: resolved) else { throw Invalid(key: "task.tokenizer", reason: "no file at \(resolved)") }
                task.tokenizer = resolved
            }
            task.preferencePairs = try positive(args, "preference_pairs", "task") ?? task.preferencePairs
            task.evalPrompts = try positive(args, "eval_prompts", "task")
            task.evalTemperature = try number(args, "eval_temperature", "task", largest: 100).map(Float.init) ?? task.evalTemperature
            task.evalSamples = try positive(args, "eval_samples", "task") ?? task.evalSamples
            spec.task = task
        }
        if let value = top["data"] { spec.data = try dataFiles(value, baseDirectory: baseDirectory) }
        if let value = top["judge"] { spec.judge = try judgeCommand(value, baseDirectory: baseDirectory) }
        if let value = top["reward_function"] {
            let args = try arguments(value, key: "reward_function", known: ["command", "endpoint", "timeout_s"])
            let timeout = try number(args, "timeout_s", "reward_function", largest: 86_400) ?? 600
            if let endpoint = args["endpoint"] {
                guard args["command"] == nil else { throw Invalid(key: "reward_function", reason: "give a command or an endpoint, not both") }
                guard let url = endpoint as? String, let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme ?? ""), parsed.host != nil else {
                    throw Invalid(key: "reward_function.endpoint", reason: "expected an http:// or https:// URL, got \(describe(endpoint))")
                }
                spec.rewardFunction = RewardFunctionCommand(arguments: [], directory: baseDirectory, timeoutSeconds: timeout, endpoint: url)
            } else {
                let argv = try commandWords(args["command"], key: "reward_function.command")
                if let spaced = argv.first(where: { $0.contains(where: \.isWhitespace) }) {
                    throw Invalid(key: "reward_function.command", reason: "\"\(spaced)\" holds a space (workers take the command as words; wrap it in a script)")
                }
                spec.rewardFunction = RewardFunctionCommand(arguments: argv, directory: baseDirectory, timeoutSeconds: timeout)
            }
        }
        if spec.rewardFunction == nil, let host = hosts.first(where: { ($0.workers[.rewardFunction] ?? 0) > 0 }) {
            throw Invalid(key: "reward_function", reason: "host \(host.name) starts reward-function workers, and the spec has no reward_function: {command: ...}")
        }
        if spec.judge?.usesRewardFunction == true && !spec.startsRewardFunctionWorkers {
            throw Invalid(key: "judge.source", reason: "the reward function judges, and no host starts reward-function workers (with reward_function: {command: ...})")
        }
        for (i, step) in plan.enumerated() where step.neededRoles.contains(.rewardFunction) && spec.rewardFunction == nil {
            throw Invalid(key: "plan[\(i)].\(step.kind).reward.function", reason: "a reward function weighs, and the spec has no reward_function: {command: ...}")
        }
        // Refused before anything starts: a step whose role no host starts would wait for ever.
        let started = Set(hosts.flatMap { $0.workers.filter { $0.value > 0 }.keys })
        for (i, step) in plan.enumerated() {
            let missing = step.neededRoles.subtracting(started)
            if !missing.isEmpty {
                let names = missing.map(\.rawValue).sorted()
                throw Invalid(key: "plan[\(i)].\(step.kind)",
                              reason: "needs \(names.joined(separator: ", ")) workers, and no host starts any (give a host e.g. workers: {\(names[0]): 1})")
            }
        }
        // The RLHF steps need prompts, the first pairs (train_rm) and a judge (evaluations, new pairs): each
        // from the data files and the judge command where the spec gives them, else from the embedded task.
        if plan.contains(where: \.isRLHF) && spec.task == nil {
            var missing: [String] = []
            if spec.data?.prompts == nil { missing.append("data.prompts") }
            if plan.contains(where: { $0.kind == "train_rm" }) && spec.data?.preferences == nil { missing.append("data.preferences") }
            if plan.contains(where: { $0.kind == "sft" }) && spec.data?.sft == nil { missing.append("data.sft") }
            if plan.contains(where: { ["evaluate", "rs_round", "ppo_round", "policy_round", "dpo_round"].contains($0.kind) }) && spec.judge == nil {
                missing.append("judge")
            }
            if plan.contains(where: { if case .dpoRound(let d) = $0 { d.pairs == .data } else { false } }) && spec.data?.preferences == nil {
                missing.append("data.preferences")
            }
            if !missing.isEmpty {
                var kinds: [String] = []
                for step in plan where step.isRLHF && !kinds.contains(step.kind) { kinds.append(step.kind) }
                throw Invalid(key: missing[0], reason: "the plan's \(kinds.joined(separator: ", ")) steps need "
                              + "\(missing.joined(separator: ", ")), or the embedded task for what is not given (e.g. task: {seed: 1})")
            }
        }
        return spec
    }

    /// The `data:` section.
    static func dataFiles(_ value: Any, baseDirectory: String) throws -> DataFiles {
        let args = try arguments(value, key: "data", known: ["prompts", "eval_prompts", "preferences", "sft", "prompt_key", "chosen_key", "rejected_key",
                                                             "messages_key", "label_key", "completion_key", "on_bad_data"])
        var files = DataFiles()
        func path(_ name: String) throws -> String? {
            guard let text = try text(args, name, "data") else { return nil }
            let resolved = text.hasPrefix("/") ? text : (baseDirectory as NSString).appendingPathComponent(text)
            guard FileManager.default.isReadableFile(atPath: resolved) else { throw Invalid(key: "data.\(name)", reason: "no readable file at \(resolved)") }
            return resolved
        }
        files.prompts = try path("prompts")
        files.evalPrompts = try path("eval_prompts")
        files.preferences = try path("preferences")
        files.sft = try path("sft")
        if files.evalPrompts != nil && files.prompts == nil {
            throw Invalid(key: "data.eval_prompts", reason: "given without data.prompts (the training prompts)")
        }
        files.keys.prompt = try text(args, "prompt_key", "data") ?? files.keys.prompt
        files.keys.chosen = try text(args, "chosen_key", "data") ?? files.keys.chosen
        files.keys.rejected = try text(args, "rejected_key", "data") ?? files.keys.rejected
        files.keys.messages = try text(args, "messages_key", "data") ?? files.keys.messages
        files.keys.label = try text(args, "label_key", "data") ?? files.keys.label
        files.keys.completion = try text(args, "completion_key", "data") ?? files.keys.completion
        if let name = args["on_bad_data"] {
            guard let text = name as? String, let policy = BadDataPolicy(rawValue: text) else {
                throw Invalid(key: "data.on_bad_data", reason: "\(describe(name)) is not stop or skip")
            }
            files.onBadData = policy
        }
        return files
    }

    /// A command as a list of words, or one string of words.
    static func commandWords(_ value: Any?, key: String) throws -> [String] {
        let argv: [String]
        switch value {
        case let line as String:
            argv = line.split(whereSeparator: \.isWhitespace).map(String.init)
        case let list as [Any] where list.allSatisfy({ $0 is String }):
            argv = list.map { $0 as! String }
        default:
            throw Invalid(key: key, reason: "expected the command as a list of words (or one string of words), e.g. [python3, score.py]")
        }
        guard !argv.isEmpty, !argv[0].isEmpty else { throw Invalid(key: key, reason: "empty command") }
        return argv
    }

    /// The `judge:` section: `{command: [ARGV...] | "shell words", tie_gap, levels: [3 gaps], helpful_above, timeout_s}`,
    /// `{source: reward-function, ...}` or `{source: reward-model, checkpoint, head, safety_checkpoint, safety_head, unsafe_below, ...}`.
    static func judgeCommand(_ value: Any, baseDirectory: String) throws -> JudgeCommand {
        let modelKeys = ["checkpoint", "head", "safety_checkpoint", "safety_head", "unsafe_below"]
        let args = try arguments(value, key: "judge", known: Set(["command", "source", "tie_gap", "levels", "helpful_above", "timeout_s"] + modelKeys))
        var judge: JudgeCommand
        let source = args["source"] as? String
        guard args["source"] == nil || ["command", "reward-function", "reward-model"].contains(source) else {
            throw Invalid(key: "judge.source", reason: "expected command (with judge.command), reward-function or reward-model (without), "
                          + "got \(describe(args["source"]!))")
        }
        if source != "reward-model", let key = modelKeys.first(where: { args[$0] != nil }) {
            throw Invalid(key: "judge.\(key)", reason: "belongs to a reward-model judge (source: reward-model)")
        }
        switch source {
        case "reward-function" where args["command"] == nil:
            judge = JudgeCommand(arguments: [], usesRewardFunction: true, directory: baseDirectory)
        case "reward-model" where args["command"] == nil:
            func file(_ key: String, orElse fallback: String? = nil) throws -> String? {
                guard let text = try ClusterSpec.text(args, key, "judge") ?? fallback else { return nil }
                let resolved = text.hasPrefix("/") ? text : (baseDirectory as NSString).appendingPathComponent(text)
                guard !ClusterSpec.checksFiles || FileManager.default.fileExists(atPath: resolved) else { throw Invalid(key: "judge.\(key)", reason: "no file at \(resolved)") }
                return resolved
            }
            guard let checkpoint = try file("checkpoint") else {
                throw Invalid(key: "judge.checkpoint", reason: "a reward-model judge needs its model (a checkpoint or Hugging Face directory)")
            }
            // `rlhf train rm --out M` writes the head to M.head.json; a Hugging Face reward model brings its own.
            func head(_ key: String, of model: String) throws -> String? {
                try file(key, orElse: args[key] == nil && HuggingFaceCheckpoint.isRewardModel(model) ? nil : model + ".head.json")
            }
            var models = RewardModelJudge.Models(checkpoint: checkpoint, head: try head("head", of: checkpoint))
            if let safety = try file("safety_checkpoint") {
                models.safetyCheckpoint = safety
                models.safetyHead = try head("safety_head", of: safety)
            } else if args["safety_head"] != nil {
                throw Invalid(key: "judge.safety_head", reason: "given without judge.safety_checkpoint")
            }
            if let below = args["unsafe_below"] {
                guard let x = number(below), (0...1).contains(x) else {
                    throw Invalid(key: "judge.unsafe_below", reason: "expected a probability in [0, 1], got \(describe(below))")
                }
                models.unsafeBelow = x
            }
            judge = JudgeCommand(arguments: [], directory: baseDirectory)
            judge.rewardModel = models
        case nil where args["source"] == nil, "command":
            judge = JudgeCommand(arguments: try commandWords(args["command"], key: "judge.command"), directory: baseDirectory)
        default:
            throw Invalid(key: "judge.source", reason: "expected command (with judge.command), reward-function or reward-model (without), "
                          + "got \(describe(args["source"]!))")
        }
        if let gap = args["tie_gap"] {
            guard let x = number(gap), x >= 0, x.isFinite else { throw Invalid(key: "judge.tie_gap", reason: "expected a number >= 0, got \(describe(gap))") }
            judge.settings.tieGap = x
        }
        if let levels = args["levels"] {
            guard let list = levels as? [Any], list.count == 3, let gaps = Optional(list.compactMap(number)), gaps.count == 3,
                  gaps[0] >= gaps[1], gaps[1] >= gaps[2], gaps[2] >= 0 else {
                throw Invalid(key: "judge.levels", reason: "expected three decreasing gaps [significantly_better, better, slightly_better], got \(describe(levels))")
            }
            judge.settings.levels = LevelThresholds(significantlyBetter: gaps[0], better: gaps[1], slightlyBetter: gaps[2])
        }
        if let above = args["helpful_above"] {
            guard let x = number(above), x.isFinite else { throw Invalid(key: "judge.helpful_above", reason: "expected a number, got \(describe(above))") }
            judge.settings.helpfulAbove = x
        }
        judge.settings.timeoutSeconds = try number(args, "timeout_s", "judge", largest: 86_400) ?? judge.settings.timeoutSeconds
        return judge
    }

    /// A `policy_round` step's settings.
    static func policyRoundSettings(_ value: Any, key: String) throws -> RLHFPipeline.PolicyRoundSettings {
        let args = try arguments(value, key: key, known: ["name", "algorithm", "iterations", "prompts", "group", "epochs", "mini_batch", "clip",
                                                          "learning_rate", "beta", "kl_estimator", "kl_in", "loss_aggregation", "temperature",
                                                          "max_new_tokens", "reward", "start_from", "budget_s"])
        guard let name = args["name"] as? String, !name.isEmpty else { throw Invalid(key: key + ".name", reason: "expected a name, e.g. V5-GRPO") }
        var settings = RLHFPipeline.PolicyRoundSettings(name: name)
        settings.budgetSeconds = try number(args, "budget_s", key, largest: 604_800)
        settings.startFrom = try ClusterSpec.text(args, "start_from", key)
        if let a = args["algorithm"] {
            guard let text = a as? String, let algorithm = RLHFPipeline.PolicyRoundSettings.Algorithm(rawValue: text) else {
                throw Invalid(key: key + ".algorithm", reason: "expected one of \(RLHFPipeline.PolicyRoundSettings.Algorithm.allCases.map(\.rawValue).joined(separator: ", ")), got \(describe(a))")
            }
            settings.algorithm = algorithm
        }
        settings.iterations = try positive(args, "iterations", key) ?? settings.iterations
        settings.prompts = try positive(args, "prompts", key) ?? settings.prompts
        settings.group = try positive(args, "group", key) ?? settings.group
        if settings.group < 2 && settings.algorithm != .reinforcePP && settings.algorithm != .ppo {
            throw Invalid(key: key + ".group", reason: "\(settings.algorithm.rawValue) compares each answer with the others of its prompt: expected at least 2")
        }
        settings.epochs = try positive(args, "epochs", key) ?? settings.epochs
        guard settings.epochs <= 64 else { throw Invalid(key: key + ".epochs", reason: "expected at most 64 passes over the answers") }
        settings.miniBatch = try positive(args, "mini_batch", key) ?? settings.miniBatch
        if let c = args["clip"] {
            guard let clip = number(c), clip > 0, clip < 1 else { throw Invalid(key: key + ".clip", reason: "expected a number in (0, 1), got \(describe(c))") }
            settings.clip = clip
        }
        settings.learningRate = try number(args, "learning_rate", key, largest: 10).map(Float.init) ?? settings.learningRate
        if let b = args["beta"] {
            guard let beta = number(b), beta >= 0, beta <= 1e6 else { throw Invalid(key: key + ".beta", reason: "expected a number in [0, 1e6], got \(describe(b))") }
            settings.beta = beta
        }
        if let e = args["kl_estimator"] {
            guard let text = e as? String, let estimator = KLEstimator(rawValue: text) else { throw Invalid(key: key + ".kl_estimator", reason: "expected k1 or k3") }
            settings.klEstimator = estimator
        }
        if let p = args["kl_in"] {
            guard let text = p as? String, let placement = RLHFPipeline.PolicyRoundSettings.KLPlacement(rawValue: text) else {
                throw Invalid(key: key + ".kl_in", reason: "expected loss or reward")
            }
            settings.klIn = placement
        }
        if let a = args["loss_aggregation"] {
            guard let text = a as? String, ["token", "sequence"].contains(text) else { throw Invalid(key: key + ".loss_aggregation", reason: "expected token or sequence") }
            if settings.algorithm == .drGRPO { throw Invalid(key: key + ".loss_aggregation", reason: "dr_grpo always sums over a constant length (max_new_tokens)") }
            settings.lossAggregation = text
        }
        settings.temperature = try number(args, "temperature", key, largest: 100).map(Float.init) ?? settings.temperature
        settings.maxNewTokens = try positive(args, "max_new_tokens", key) ?? settings.maxNewTokens
        settings.reward = try rewardWeights(args["reward"], key: key + ".reward")
        return settings
    }

    /// A `dpo_round` step's settings.
    static func dpoRoundSettings(_ value: Any, key: String) throws -> RLHFPipeline.DPORoundSettings {
        let args = try arguments(value, key: key, known: ["name", "pairs", "beta", "loss", "label_smoothing", "epochs", "batch_size", "learning_rate",
                                                          "max_pairs", "iterations", "prompts", "samples", "rank_by", "temperature", "max_new_tokens",
                                                          "reward", "start_from", "budget_s"])
        guard let name = args["name"] as? String, !name.isEmpty else { throw Invalid(key: key + ".name", reason: "expected a name, e.g. V5-DPO") }
        var settings = RLHFPipeline.DPORoundSettings(name: name)
        settings.budgetSeconds = try number(args, "budget_s", key, largest: 604_800)
        settings.startFrom = try ClusterSpec.text(args, "start_from", key)
        if let p = args["pairs"] {
            guard let text = p as? String, let pairs = RLHFPipeline.DPORoundSettings.Pairs(rawValue: text) else {
                throw Invalid(key: key + ".pairs", reason: "expected data or on_policy")
            }
            settings.pairs = pairs
        }
        if let b = args["beta"] {
            guard let beta = number(b), beta > 0, beta <= 1e3 else { throw Invalid(key: key + ".beta", reason: "expected a number in (0, 1000], got \(describe(b))") }
            settings.beta = beta
        }
        if let l = args["loss"] {
            guard let text = l as? String, let objective = TrainBatch.Objective(rawValue: text) else { throw Invalid(key: key + ".loss", reason: "expected sigmoid or ipo") }
            settings.objective = objective
        }
        if let e = args["label_smoothing"] {
            guard let x = number(e), x >= 0, x < 0.5 else { throw Invalid(key: key + ".label_smoothing", reason: "expected a number in [0, 0.5), got \(describe(e))") }
            settings.labelSmoothing = x
        }
        settings.epochs = try positive(args, "epochs", key) ?? settings.epochs
        settings.batchSize = try positive(args, "batch_size", key) ?? settings.batchSize
        settings.learningRate = try number(args, "learning_rate", key, largest: 10).map(Float.init) ?? settings.learningRate
        settings.maxPairs = try positive(args, "max_pairs", key)
        settings.iterations = try positive(args, "iterations", key) ?? settings.iterations
        settings.prompts = try positive(args, "prompts", key) ?? settings.prompts
        settings.samples = try positive(args, "samples", key) ?? settings.samples
        if settings.samples < 2 { throw Invalid(key: key + ".samples", reason: "an on-policy pair needs at least 2 answers a prompt") }
        if let r = args["rank_by"] {
            guard let text = r as? String, let ranking = RLHFPipeline.DPORoundSettings.Ranking(rawValue: text) else {
                throw Invalid(key: key + ".rank_by", reason: "expected reward or judge")
            }
            settings.rankBy = ranking
        }
        settings.temperature = try number(args, "temperature", key, largest: 100).map(Float.init) ?? settings.temperature
        settings.maxNewTokens = try positive(args, "max_new_tokens", key) ?? settings.maxNewTokens
        settings.reward = try rewardWeights(args["reward"], key: key + ".reward")
        if settings.pairs == .data, let key2 = ["iterations", "prompts", "samples", "rank_by", "reward"].first(where: { args[$0] != nil }) {
            throw Invalid(key: key + "." + key2, reason: "belongs to on-policy pairs (pairs: on_policy)")
        }
        return settings
    }

    /// A `ppo_round` step's settings.
    static func ppoSettings(_ value: Any, key: String) throws -> RLHFPipeline.PPOSettings {
        let args = try arguments(value, key: key, known: ["name", "iterations", "rollouts", "mini_batch", "epochs", "learning_rate", "value_learning_rate",
                                                          "beta", "kl_estimator", "kl_target", "whitening", "temperature", "max_new_tokens",
                                                          "gamma", "lambda", "new_pairs", "rm_every", "rm_learning_rate", "reward", "start_from", "budget_s"])
        guard let name = args["name"] as? String, !name.isEmpty else { throw Invalid(key: key + ".name", reason: "expected a name, e.g. V5") }
        var settings = RLHFPipeline.PPOSettings(name: name)
        settings.budgetSeconds = try number(args, "budget_s", key, largest: 604_800)
        settings.startFrom = try ClusterSpec.text(args, "start_from", key)
        settings.iterations = try positive(args, "iterations", key) ?? settings.iterations
        settings.rollouts = try positive(args, "rollouts", key) ?? settings.rollouts
        settings.miniBatch = try positive(args, "mini_batch", key) ?? settings.miniBatch
        settings.epochs = try positive(args, "epochs", key) ?? settings.epochs
        settings.newPairs = try count(args, "new_pairs", key) ?? settings.newPairs
        settings.rmEvery = try positive(args, "rm_every", key)
        settings.rewardLearningRate = try number(args, "rm_learning_rate", key, largest: 10).map(Float.init) ?? settings.rewardLearningRate
        guard settings.epochs <= 64 else { throw Invalid(key: key + ".epochs", reason: "expected at most 64 passes over the rollouts") }
        settings.learningRate = try number(args, "learning_rate", key, largest: 10).map(Float.init) ?? settings.learningRate
        settings.valueLearningRate = try number(args, "value_learning_rate", key, largest: 10).map(Float.init) ?? settings.valueLearningRate
        if let b = args["beta"] {
            guard let beta = number(b), beta >= 0, beta <= 1e6 else {
                throw Invalid(key: key + ".beta", reason: "expected a number in [0, 1e6], got \(describe(b))")
            }
            settings.beta = beta
        }
        if let e = args["kl_estimator"] {
            guard let text = e as? String, let estimator = KLEstimator(rawValue: text) else { throw Invalid(key: key + ".kl_estimator", reason: "expected k1 or k3") }
            settings.klEstimator = estimator
        }
        settings.klTarget = try number(args, "kl_target", key)
        if let w = args["whitening"] {
            guard let text = w as? String, let whitening = RewardWhitener.Statistics(rawValue: text) else {
                throw Invalid(key: key + ".whitening", reason: "expected running or batch")
            }
            settings.whitening = whitening
        }
        settings.temperature = try number(args, "temperature", key, largest: 100).map(Float.init) ?? settings.temperature
        settings.maxNewTokens = try positive(args, "max_new_tokens", key) ?? settings.maxNewTokens
        for (name, path) in [("gamma", \RLHFPipeline.PPOSettings.gamma), ("lambda", \RLHFPipeline.PPOSettings.lambda)] {
            guard let v = args[name] else { continue }
            guard let x = number(v), (0...1).contains(x) else {
                throw Invalid(key: "\(key).\(name)", reason: "expected a number in [0, 1]")
            }
            settings[keyPath: path] = Float(x)
        }
        settings.reward = try rewardWeights(args["reward"], key: key + ".reward")
        return settings
    }

    /// A round's `reward: {models: W, function: W}` (weights >= 0, not both 0); nil when not given.
    static func rewardWeights(_ value: Any?, key: String) throws -> RewardWeights? {
        guard let value else { return nil }
        let args = try arguments(value, key: key, known: ["models", "function"])
        var weights = RewardWeights(models: 0, function: 0)
        for (name, slot) in [("models", \RewardWeights.models), ("function", \RewardWeights.function)] {
            guard let raw = args[name] else { continue }
            guard let x = number(raw), x >= 0, x <= 1e6 else { throw Invalid(key: "\(key).\(name)", reason: "expected a weight >= 0, got \(describe(raw))") }
            weights[keyPath: slot] = x
        }
        guard weights.models > 0 || weights.function > 0 else { throw Invalid(key: key, reason: "every weight is 0: the round would have no reward") }
        return weights
    }

    /// A host's mapping of role names to whole numbers in `range` (its `workers:` counts, its `threads:`),
    /// refused naming the key of an unknown role or a number out of range.
    static func roleNumbers(_ mapping: [String: Any], key: String, in range: ClosedRange<Int>, expecting: String) throws -> [WorkerRole: Int] {
        var numbers: [WorkerRole: Int] = [:]
        for (roleName, value) in mapping {
            guard let role = WorkerRole(rawValue: roleName) else {
                throw Invalid(key: "\(key).\(roleName)", reason: "unknown role (expected \(WorkerRole.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            guard let n = value as? Int, range.contains(n) else {
                throw Invalid(key: "\(key).\(roleName)", reason: "expected \(expecting), got \(describe(value))")
            }
            numbers[role] = n
        }
        return numbers
    }

    /// A step's (or section's) arguments as a mapping, every key known.
    static func arguments(_ value: Any, key: String, known: Set<String>) throws -> [String: Any] {
        if value is NSNull { return [:] }
        guard let args = value as? [String: Any] else { throw Invalid(key: key, reason: "expected a mapping") }
        if let unknown = args.keys.first(where: { !known.contains($0) }) {
            throw Invalid(key: "\(key).\(unknown)", reason: "unknown key (expected one of \(known.sorted().joined(separator: ", ")))")
        }
        return args
    }

    /// The largest count a step takes (prompts, samples, tokens, epochs...): far beyond any real run, and
    /// small enough that products of two counts cannot overflow.
    public static let largestCount = 1 << 26

    /// A positive integer argument, if given (at most `largestCount`).
    static func positive(_ args: [String: Any], _ name: String, _ key: String) throws -> Int? {
        guard let value = args[name] else { return nil }
        guard let n = value as? Int, (1 ... largestCount).contains(n) else {
            throw Invalid(key: "\(key).\(name)", reason: "expected a positive integer at most \(largestCount), got \(describe(value))")
        }
        return n
    }

    /// A non-empty string argument, if given.
    static func text(_ args: [String: Any], _ name: String, _ key: String) throws -> String? {
        guard let value = args[name] else { return nil }
        guard let string = value as? String, !string.isEmpty else {
            throw Invalid(key: "\(key).\(name)", reason: "expected a non-empty string, got \(describe(value))")
        }
        return string
    }

    /// A count >= 0 (at most `largestCount`), if given.
    static func count(_ args: [String: Any], _ name: String, _ key: String) throws -> Int? {
        guard let value = args[name] else { return nil }
        guard let n = value as? Int, (0 ... largestCount).contains(n) else {
            throw Invalid(key: "\(key).\(name)", reason: "expected a count in 0...\(largestCount), got \(describe(value))")
        }
        return n
    }

    /// A sampling temperature, if given: a finite number >= 0 (0 is greedy), integer or not.
    static func temperature(_ args: [String: Any], _ key: String) throws -> Double? {
        guard let value = args["temperature"] else { return nil }
        guard let x = number(value), x >= 0, x <= 100 else {
            throw Invalid(key: "\(key).temperature", reason: "expected a number in [0, 100] (0 samples greedily), got \(describe(value))")
        }
        return x
    }

    /// A YAML scalar as a number: floats and integers (YAML reads `0` as an integer); nil for anything
    /// else (strings, booleans).
    static func number(_ value: Any) -> Double? {
        if value is Bool { return nil }
        return (value as? Double) ?? (value as? Int).map(Double.init)
    }

    /// A YAML value as an error message shows it (strings quoted).
    /// A host's `slurm:` mapping.
    /// `written` gives a key's scalar as the text has it.
    static func slurmSettings(_ value: Any, key: String, written: (String) -> String? = { _ in nil }) throws -> SlurmSettings {
        let args = try arguments(value, key: key, known: ["partition", "nodes", "ntasks_per_node", "cpus_per_task", "mem", "time", "account",
                                                          "qos", "constraint", "extra_args"])
        var settings = SlurmSettings()
        func text(_ name: String) throws -> String? {
            guard let value = args[name] else { return nil }
            // Slurm takes numbers here too (mem: 4096 is MB, time: 30 is minutes); `2:00:00` as written.
            if value is Int, ["mem", "time"].contains(name), let text = written(name), !text.isEmpty,
               !text.contains(where: { $0.isWhitespace }), !text.hasPrefix("-") {
                return text
            }
            guard let text = value as? String, !text.isEmpty, !text.contains(where: { $0.isWhitespace }) else {
                throw Invalid(key: "\(key).\(name)", reason: "expected a word in Slurm's syntax, got \(describe(value))")
            }
            return text
        }
        func count(_ name: String, _ range: ClosedRange<Int>) throws -> Int? {
            guard let value = args[name] else { return nil }
            guard let n = value as? Int, range.contains(n) else {
                throw Invalid(key: "\(key).\(name)", reason: "expected a whole number in \(range.lowerBound)...\(range.upperBound), got \(describe(value))")
            }
            return n
        }
        settings.partition = try text("partition")
        settings.memory = try text("mem")
        settings.time = try text("time")
        settings.account = try text("account")
        settings.qos = try text("qos")
        settings.constraint = try text("constraint")
        settings.nodes = try count("nodes", 1 ... 100_000) ?? 1
        settings.tasksPerNode = try count("ntasks_per_node", 1 ... 4_096)
        // Each worker's --threads.
        settings.cpusPerTask = try count("cpus_per_task", ComputePool.threadCounts) ?? 1
        if let extra = args["extra_args"] {
            if let line = extra as? String {
                settings.extraArguments = line.split(whereSeparator: \.isWhitespace).map(String.init)
            } else if let list = extra as? [Any], list.allSatisfy({ ($0 as? String).map { !$0.isEmpty } ?? false }) {
                settings.extraArguments = list.map { $0 as! String }
            } else {
                throw Invalid(key: "\(key).extra_args", reason: "expected a list of options (e.g. [--exclusive]), got \(describe(extra))")
            }
            if let bad = settings.extraArguments.first(where: { !$0.hasPrefix("-") }) {
                throw Invalid(key: "\(key).extra_args", reason: "expected options starting with '-', got \(describe(bad))")
            }
        }
        return settings
    }

    static func describe(_ value: Any) -> String {
        if let text = value as? String { return "\"\(text)\"" }
        return "\(value)"
    }

    /// The port of a `tcp://HOST:PORT` endpoint is `*` or in 1...65535 (a larger number was taken modulo
    /// 65536 by the socket library: 99999 bound 34463).
    static func checkPort(of endpoint: String, key: String) throws {
        guard let colon = endpoint.lastIndex(of: ":"), colon > endpoint.index(endpoint.startIndex, offsetBy: 5) else {
            throw Invalid(key: key, reason: "expected tcp://HOST:PORT, got \(endpoint)")
        }
        let port = endpoint[endpoint.index(after: colon)...]
        guard port == "*" || (Int(port).map { (1...65535).contains($0) } ?? false) else {
            throw Invalid(key: key, reason: "port \(port) is not * or a number in 1...65535")
        }
    }

    /// A positive number argument, if given: at most `largest`, and one that a Float holds as a positive
    /// number (1e-50 is 0 as a Float, 1e39 infinite).
    static func number(_ args: [String: Any], _ name: String, _ key: String, largest: Double = 1e6) throws -> Double? {
        guard let value = args[name] else { return nil }
        guard let x = number(value), x > 0, x <= largest, Float(x) > 0 else {
            throw Invalid(key: "\(key).\(name)", reason: "expected a positive number at most \(largest), got \(describe(value))")
        }
        return x
    }
}

/// The `generate` step's settings, defaults here: `prompts` synthetic prompts, `samples` samples each.
public struct GenerateStepSettings: Codable, Sendable, Equatable {
    public var prompts = 8
    public var samples = 4
    public var maxNewTokens = 32
    public var temperature: Float = 1.0
    public init() {}
}

/// The `round` step's settings (one pass through every role), defaults here.
public struct RoundStepSettings: Codable, Sendable, Equatable {
    public var prompts = 4
    public var samples = 4
    public var maxNewTokens = 16
    public var temperature: Float = 1.0
    public var learningRate: Float = 1e-4
    public init() {}
}
