import ClusterRuntime
import Foundation
import LlamaCore
import LlamaTraining

/// What a worker of a role holds in memory for a model, part by part: what the worker says at start-up
/// and what a launch checks a machine's memory against before it starts anything. Sizes are float32
/// (4 bytes a value). Sequences (a generator's KV cache per slot, a batch's activations) are counted at
/// `sequenceTokens` tokens, a prompt and its answer: a cache is allocated for the whole context, but
/// only the positions written are resident, and counting every sequence at a 4k context would refuse
/// specs that fit. Longer sequences hold proportionally more.
public struct WorkerMemory: Sendable, Equatable, CustomStringConvertible {
    /// One thing held: a name ("weights", "AdamW moments", ...) and its bytes.
    public struct Part: Sendable, Equatable {
        public var name: String
        public var bytes: Int
    }

    /// The role whose worker this is.
    public var role: WorkerRole
    /// What it holds.
    public var parts: [Part]
    /// All of it, in bytes.
    public var bytes: Int { parts.reduce(0) { $0 + $1.bytes } }

    /// What the plan asks of the learner beyond the policy: the models it trains and keeps.
    public struct LearnerLoad: Sendable, Equatable {
        /// Reward models trained on the learner (reward-model, safety-model) that start from the policy: 0 to 2.
        public var rewardModels: Int
        /// Whether a PPO step trains a value model.
        public var valueModel: Bool
        /// Pretrained reward models trained on the learner, by their own shapes (a spec's `model.reward_model`).
        public var pretrainedRewardModels: [LlamaConfig]
        public init(rewardModels: Int = 2, valueModel: Bool = true, pretrainedRewardModels: [LlamaConfig] = []) {
            self.rewardModels = rewardModels
            self.valueModel = valueModel
            self.pretrainedRewardModels = pretrainedRewardModels
        }
    }

    /// Sequences a training or scoring batch is counted at.
    public static let batchSequences = 8
    /// Tokens a sequence is counted at: the model's context, up to 256.
    public static func sequenceTokens(_ c: LlamaConfig) -> Int { min(c.seqLen, 256) }

    /// The estimate for a worker of `role` over a model of `config`: a generator with `decodeSlots`
    /// slots, its products in `precision` and KV caches in `kvCache`; a learner with `learner`'s models,
    /// its training products in `precision` (bfloat16 adds each trained model's packing buffers).
    /// With `lora`, the learner trains adapters on a frozen base it serves, and a generator keeps that
    /// base beside the merged policy.
    public static func estimate(role: WorkerRole, config c: LlamaConfig, decodeSlots: Int = GeneratorService.defaultDecodeSlots,
                                precision: WeightPrecision = .float32, kvCache: KVCache.Precision = .float32,
                                learner: LearnerLoad = LearnerLoad(), lora: LoRASettings? = nil) -> WorkerMemory {
        let float = 4
        let weights = c.parameterCount * float
        let head = (c.dim + 1) * float
        // A training or scoring forward keeps, per token and layer, the normed inputs, queries, keys,
        // values, attention output and residuals, the SwiGLU activations and a row of attention
        // probabilities per head (with post norms, Gemma's, the attention's and feed-forward's outputs before
        // them too); then the final norm and a row of logits.
        let tokens = sequenceTokens(c)
        let perToken = c.nLayers * (4 * c.dim + 2 * c.queryDim + 2 * c.kvDim + 3 * c.hiddenDim + c.nHeads * tokens + (c.postNorms ? 2 * c.dim : 0))
            + 3 * c.dim + c.vocabSize
        let activations = batchSequences * tokens * perToken * float
        // A model in training: its weights, their gradients and AdamW's two moments.
        let training = 4 * weights
        switch role {
        case .generator:
            let kvPerSequence = 2 * c.nLayers * tokens * c.kvDim * KVCache.bytesPerValue(kvCache)
            let slots = max(1, decodeSlots)
            let workspace = slots * (2 * c.dim + 2 * c.queryDim + 2 * c.kvDim + 2 * c.hiddenDim + c.vocabSize) * float
            return WorkerMemory(role: role, parts: [
                Part(name: "weights", bytes: weights),
            ] + (lora == nil ? [] : [Part(name: "LoRA base (each version's adapters merge into it)", bytes: weights)]) + [
                Part(name: precision == .bfloat16 ? "bfloat16 batched-decode panels" : "batched-decode panels",
                     bytes: LlamaModel.panelBytes(c, precision: precision)),
                // One cache per slot, and a prompt's prefilled cache kept for its other samples.
                Part(name: "KV cache (\(slots + 1) sequences x \(tokens) positions)", bytes: (slots + 1) * kvPerSequence),
                Part(name: "decode workspace", bytes: workspace),
            ])
        case .referencePolicy:
            return WorkerMemory(role: role, parts: [Part(name: "weights", bytes: weights),
                                                    Part(name: "projections transposed for scoring", bytes: TrainableTransformer.scoringCopyBytes(c)),
                                                    Part(name: "scoring activations (\(batchSequences) x \(tokens) tokens)", bytes: activations)])
        case .rewardModel, .safetyModel:
            return WorkerMemory(role: role, parts: [Part(name: "weights and score head", bytes: weights + head),
                                                    Part(name: "projections transposed for scoring", bytes: TrainableTransformer.scoringCopyBytes(c)),
                                                    Part(name: "scoring activations (\(batchSequences) x \(tokens) tokens)", bytes: activations)])
        case .learner:
            let adapters = ((try? lora.map { try LoRALayout(config: c, settings: $0) }) ?? nil).map { $0.totalCount * float }
            var parts = [
                adapters.map { Part(name: "frozen policy weights, LoRA adapters, their gradients and AdamW moments", bytes: 2 * weights + 4 * $0) }
                    ?? Part(name: "policy weights, gradients and AdamW moments", bytes: training),
                Part(name: "the starting weights (from-SFT rounds start from them)", bytes: weights),
                Part(name: "training activations (\(batchSequences) x \(tokens) tokens)", bytes: activations),
            ]
            if learner.rewardModels > 0 {
                parts.append(Part(name: "\(learner.rewardModels) reward model(s) in training", bytes: learner.rewardModels * (training + 4 * head)))
            }
            // A model in training of its own shape: weights, gradients and AdamW's moments, and its head's.
            func inTraining(_ m: LlamaConfig) -> Int { 4 * (m.parameterCount + m.dim + 1) * float }
            for model in learner.pretrainedRewardModels {
                parts.append(Part(name: "pretrained reward model in training (\(model.parameterCount / 1_000_000)M parameters)", bytes: inTraining(model)))
            }
            // The value model starts from the trained reward model where there is one: sized as the larger.
            let valueShape = learner.pretrainedRewardModels.first { $0.parameterCount > c.parameterCount } ?? c
            if learner.valueModel { parts.append(Part(name: "value model in training", bytes: inTraining(valueShape))) }
            if precision == .bfloat16 {
                let models = 1 + learner.rewardModels + (learner.valueModel ? 1 : 0)
                parts.append(Part(name: "bfloat16 packing buffers (\(models + learner.pretrainedRewardModels.count) model(s) in training)",
                                  bytes: models * MatrixProducts.bfloat16ScratchBytes(c, tokens: batchSequences * tokens)
                                    + learner.pretrainedRewardModels.reduce(0) { $0 + MatrixProducts.bfloat16ScratchBytes($1, tokens: batchSequences * tokens) }))
            }
            return WorkerMemory(role: role, parts: parts)
        case .rewardFunction:
            return WorkerMemory(role: role, parts: [])
        }
    }

    /// "weights 438 MB, batched-decode panels 454 MB, KV cache (65 sequences x 256 positions) 1.2 GB, ...".
    public var description: String {
        parts.map { "\($0.name) \(WorkerMemory.format($0.bytes))" }.joined(separator: ", ")
    }

    /// Bytes for people: "438 MB", "4.9 GB".
    public static func format(_ bytes: Int) -> String {
        bytes >= 1_000_000_000 ? String(format: "%.1f GB", Double(bytes) / 1e9) : String(format: "%.0f MB", Double(bytes) / 1e6)
    }

    /// The memory this machine has available now (`MemAvailable` of /proc/meminfo); nil where it cannot
    /// be read.
    public static func availableBytes() -> Int? { meminfo("MemAvailable") }

    /// The memory this machine has in all (`MemTotal` of /proc/meminfo), never less than `availableBytes()`;
    /// nil where it cannot be read.
    public static func totalBytes() -> Int? { meminfo("MemTotal") }

    /// One field of /proc/meminfo ("MemAvailable:   1234 kB"), in bytes.
    private static func meminfo(_ field: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
              let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return nil }
        return kilobytes * 1024
    }
}
