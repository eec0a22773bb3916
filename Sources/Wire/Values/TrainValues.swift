import LlamaCore

/// What a training batch asks of the learner.
public enum TrainKind: String, Sendable, Codable, CaseIterable {
    /// One SFT step: cross-entropy on the response tokens.
    case sft
    /// One step of LLaMA2's ranking loss on a reward model: sequences are (chosen, rejected) pairs.
    case rewardRanking = "reward-ranking"
    /// One PPO step (tensors "old_logprobs" and "advantages") or a whole PPO iteration (tensor "rewards").
    case ppo
    /// Write every model's state (`stateStep`).
    case saveState = "save-state"
    /// Announce every model's current version again (after a coordinator restart).
    case announceAll = "announce-all"
    /// The policy as it is becomes the chat model: what from-SFT rounds start again from, what reward and
    /// value models start from, and the reference policy's weights (announced with model `.reference`).
    case markInitial = "mark-initial"
    /// A critic-free policy iteration (GRPO, Dr. GRPO, RLOO, REINFORCE++): tensors "old_logprobs",
    /// "advantages" and, with `klBeta > 0`, "ref_logprobs", one value per response token.
    case policyIteration = "policy-iteration"
    /// One DPO step on chosen/rejected pairs; tensor "ref_logprobs": each sequence's reference log-probability.
    case dpo
    /// Keep the policy's weights under `snapshotName`.
    case snapshot
    /// The policy becomes the snapshot `snapshotName` (fresh optimizer, no value model), as the next version.
    case restoreSnapshot = "restore-snapshot"
}

/// A batch for the learner. Per-token tensors (`rewards`, `old_logprobs`, `advantages`: one value per
/// response token, sequences back to back; `margins`: one per pair) travel as raw frames.
public struct TrainBatch: Sendable, Equatable {
    public var kind: TrainKind
    public var sequences: [TokenSequence] = []
    public var learningRate: Float = 0
    /// The version of the model trained that the batch was built from (the learner refuses another).
    public var policyVersion: UInt64 = 0
    /// The reward model a `.rewardRanking` batch trains.
    public var model: ModelKind = .policy
    /// Start again from the chat model's weights with fresh optimizer moments.
    public var fromInitial = false
    /// PPO: sequences per gradient step (0: the whole batch).
    public var miniBatchSize = 0
    /// PPO: the value model's learning rate (0: `learningRate`).
    public var valueLearningRate: Float = 0
    /// PPO's GAE; both 0 mean gamma 1, lambda 0.95.
    public var gamma: Float = 0
    public var gaeLambda: Float = 0
    public var shuffleSeed: UInt64 = 0
    /// `.saveState`: the 0-based plan step the state is saved after.
    public var stateStep = 0
    /// PPO passes over the batch (0: one).
    public var ppoEpochs = 0
    /// `.policyIteration`: the KL penalty's coefficient in the loss (0: none); `.dpo`: beta.
    public var klBeta: Float = 0
    /// `.policyIteration`: how the per-token terms are summed, and the ratio clip (0: the learner's).
    public var aggregation = Aggregation.token
    public var clip: Float = 0
    /// `.dpo`: the objective and conservative DPO's label smoothing.
    public var objective = Objective.sigmoid
    public var labelSmoothing: Float = 0
    /// `.snapshot`, `.restoreSnapshot`: the snapshot's name.
    public var snapshotName = ""
    public var tensors: [WireTensor] = []

    /// How a policy iteration's per-token terms are summed.
    public enum Aggregation: Sendable, Equatable, Codable {
        /// `sum / response tokens`.
        case token
        /// Each sequence's mean, then the mean over sequences.
        case sequence
        /// `sum / (sequences x length)`.
        case constant(Int)
    }

    /// A DPO step's objective.
    public enum Objective: String, Sendable, Equatable, Codable, CaseIterable {
        case sigmoid, ipo
    }

    public init(kind: TrainKind) { self.kind = kind }
}

/// What a training batch did, and the version it published.
public struct TrainStats: Sendable, Equatable {
    public var kind: TrainKind
    public var loss = 0.0
    public var gradNorm = 0.0
    public var learningRate = 0.0
    public var clipFraction = 0.0
    public var approxKL = 0.0
    public var tokens: UInt64 = 0
    /// The optimizer's step count after the batch.
    public var step: UInt64 = 0
    /// The version published (of the policy, or of the reward model trained).
    public var policyVersion: UInt64 = 0
    /// Where and what the consumers fetch.
    public var announce: WeightAnnouncement?
    /// Reward ranking: the share of pairs ranked right before the step.
    public var accuracy = 0.0
    public var valueLoss = 0.0
    public var valueClipFraction = 0.0
    public var gradientSteps = 0
    public var meanReturn = 0.0
    /// `.announceAll`: every model's announcement, the policy's first.
    public var announces: [WeightAnnouncement] = []
    /// `.policyIteration`: the mean k3 KL to the reference over response tokens.
    public var referenceKL = 0.0
    /// `.dpo`: the mean implicit reward margin (chosen less rejected); `accuracy` the share of pairs whose
    /// chosen response has the larger implicit reward.
    public var rewardMargin = 0.0

    public init(kind: TrainKind) { self.kind = kind }
}

/// A weight version a learner serves: where to fetch it, and each tensor's size and checksum.
public struct WeightAnnouncement: Sendable, Equatable {
    /// One tensor of the model, in llama2.c order.
    public struct Tensor: Sendable, Equatable {
        public var name: String
        public var shape: [Int]
        public var byteLength: UInt64
        public var crc32c: UInt32

        public init(name: String, shape: [Int], byteLength: UInt64, crc32c: UInt32) {
            self.name = name
            self.shape = shape
            self.byteLength = byteLength
            self.crc32c = crc32c
        }
    }

    public var policyVersion: UInt64
    public var totalBytes: UInt64
    public var chunkBytes: Int
    public var tensors: [Tensor]
    /// The weight server's endpoint (`tcp://HOST:PORT`).
    public var source: String
    public var model: ModelKind
    /// A reward model's score head `(D)` and bias, carried with its trunk's version.
    public var headWeight: [Float] = []
    public var headBias: Float = 0
    /// Set when the tensors are a policy's LoRA adapters on a frozen base, not whole weights.
    public var lora: Adapters?

    /// LoRA adapters' settings and the base they apply to: the policy is `base + alpha/rank B A`.
    public struct Adapters: Sendable, Equatable {
        public var rank: Int
        public var alpha: Double
        /// The adapted matrices by llama2.c name, in the tensors' order.
        public var targets: [String]
        private let baseBox: Box
        /// The frozen base (whole weights), fetched once by a consumer that does not hold it.
        public var base: WeightAnnouncement { baseBox.value }

        private final class Box: Sendable {
            let value: WeightAnnouncement
            init(_ value: WeightAnnouncement) { self.value = value }
        }

        public init(rank: Int, alpha: Double, targets: [String], base: WeightAnnouncement) {
            self.rank = rank
            self.alpha = alpha
            self.targets = targets
            baseBox = Box(base)
        }

        public static func == (a: Adapters, b: Adapters) -> Bool {
            a.rank == b.rank && a.alpha == b.alpha && a.targets == b.targets && a.base == b.base
        }
    }

    public init(policyVersion: UInt64, totalBytes: UInt64, chunkBytes: Int, tensors: [Tensor], source: String, model: ModelKind = .policy) {
        self.policyVersion = policyVersion
        self.totalBytes = totalBytes
        self.chunkBytes = chunkBytes
        self.tensors = tensors
        self.source = source
        self.model = model
    }

    /// CRC-32C of all tensors back to back, combined from the per-tensor checksums; for adapters, of
    /// the base's tensors followed by the adapters' (so it names the adapted policy, base included).
    public var modelChecksum: UInt32 {
        let own = tensors.dropFirst().reduce(tensors.first?.crc32c ?? 0) {
            CRC32C.combine($0, $1.crc32c, lengthOfB: Int($1.byteLength))
        }
        guard let lora, !tensors.isEmpty else { return own }
        return CRC32C.combine(lora.base.modelChecksum, own, lengthOfB: Int(totalBytes))
    }
}
