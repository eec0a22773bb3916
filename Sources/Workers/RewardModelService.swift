import ClusterRuntime
import Distributed
import Foundation
import LlamaCore
import LlamaTraining
import Synchronization
import Wire

/// The compute of the reward-model roles (helpfulness, and safety): a LLaMA2 trunk with a scalar head
/// read at the last token of `prompt + response`, one score per sequence. `RewardModel` and
/// `SafetyModel` are its distributed actors.
public final class RewardModelService: RoleService, @unchecked Sendable {
    /// Which of the two reward models this is (`.rewardModel` or `.safetyModel`).
    public let kind: ModelKind
    /// The trunk and head with the model version and trunk checksum, swapped whole by `install`.
    private let held: VersionedModel<(trunk: TrainableTransformer, head: ScalarHead)>
    private let pool: ComputePool
    private let tokens = Atomic<UInt64>(0)
    /// The padding id a Hugging Face reward model names: a sequence is scored at its last token that is not
    /// it, as transformers pools (nil: at its last token).
    public let padTokenId: Int32?

    /// A reward model of `weights` and `head` (`head.weight` has `dim` entries) on `threads` threads.
    public init(kind: ModelKind, weights: ModelWeights, head: ScalarHead, threads: Int = 1, modelVersion: UInt64 = 0,
                padTokenId: Int32? = nil) throws {
        guard kind == .rewardModel || kind == .safetyModel else {
            throw LlamaError.invalidInput("a reward model is the reward-model or the safety-model, not the \(kind.rawValue)")
        }
        guard head.weight.count == weights.config.dim else {
            throw LlamaError.invalidInput("the score head has \(head.weight.count) weights, the model's dim is \(weights.config.dim)")
        }
        self.kind = kind
        self.padTokenId = padTokenId
        pool = ComputePool(threads: threads)
        held = VersionedModel((RewardModelService.scorer(weights, pool: pool), head), version: modelVersion, checksum: weights.checksum)
    }

    /// A trunk of `weights` that only scores (each version installed gets its own).
    private static func scorer(_ weights: ModelWeights, pool: ComputePool) -> TrainableTransformer {
        let trunk = TrainableTransformer(weights: weights, pool: pool)
        trunk.prepareForScoring()
        return trunk
    }

    /// The version of the reward model held (0: as loaded; the learner's reward training counts up).
    public var policyVersion: UInt64 { held.snapshot.version }
    public var weightsChecksum: UInt32 { held.snapshot.checksum }
    public var tokensProcessed: UInt64 { tokens.load(ordering: .relaxed) }
    public var modelConfig: LlamaConfig? { held.snapshot.model.trunk.config }
    /// The score head held.
    public var head: ScalarHead { held.snapshot.model.head }

    /// Installs a version of this reward model trained on the learner: the trunk, and the head the
    /// announcement carries.
    public func install(_ weights: ModelWeights, version: UInt64, announce: WeightAnnouncement) throws {
        guard announce.model == kind else {
            throw LlamaError.invalidInput("weights of the \(announce.model.rawValue) were announced to the \(kind.rawValue)")
        }
        guard announce.headWeight.count == weights.config.dim else {
            throw LlamaError.invalidInput("the announced head has \(announce.headWeight.count) weights for a model of dim \(weights.config.dim)")
        }
        let head = ScalarHead(weight: announce.headWeight, bias: announce.headBias)
        held.replace((RewardModelService.scorer(weights, pool: pool), head), version: version, checksum: weights.checksum)
    }

    /// Scores of `(prompt + response)` token lists `(N)`, each read at the sequence's last token (the last
    /// that is not `padTokenId`, where there is one: trailing padding is not scored).
    public func scores(_ sequences: [[Int32]]) throws -> [Float] {
        let (model, _, _) = held.snapshot
        let (trunk, head) = model
        let scored = padTokenId.map { pad in
            sequences.map { sequence in sequence.last == pad ? Array(sequence.reversed().drop { $0 == pad }.reversed()) : sequence }
        } ?? sequences
        if let empty = scored.firstIndex(where: \.isEmpty), !sequences[empty].isEmpty {
            throw LlamaError.invalidInput("sequence \(empty + 1) of \(sequences.count) is padding alone (pad_token_id \(padTokenId!)): nothing to score")
        }
        let batch = try TokenBatch(scored, config: trunk.config)
        let tape = trunk.forward(batch, onlyRows: batch.lastRows)
        tokens.add(UInt64(batch.rowCount), ordering: .relaxed)
        return head.scores(tape, rows: batch.lastRows)
    }

    /// One score per sequence of `request`, in order; refuses a request for the other reward model.
    public func score(_ request: ScoreRequest) throws -> Scores {
        guard request.model == .policy || request.model == kind else {
            throw LlamaError.invalidInput("a score from the \(request.model.rawValue) was asked of the \(kind.rawValue)")
        }
        let version = held.snapshot.version
        let values = try scores(try joinedSequences(request.sequences, config: held.snapshot.model.trunk.config))
        return Scores(model: kind, modelVersion: version, values: values)
    }

    public func hostActor(on actorSystem: ClusterActorSystem, as name: String) -> any DistributedActor {
        if kind == .safetyModel {
            let actor = SafetyModel(service: self, actorSystem: actorSystem)
            actorSystem.publish(actor, as: name)
            return actor
        }
        let actor = RewardModel(service: self, actorSystem: actorSystem)
        actorSystem.publish(actor, as: name)
        return actor
    }

    /// A reward model read from disk: `checkpoint`'s trunk with `head` (a JSON score head), or without
    /// one a Hugging Face reward model's own (`score.weight`, no bias, and its `pad_token_id`; a causal
    /// LM's directory is then refused), or where `head` is nil and `checkpoint` is no reward model, a
    /// head drawn from `seed` (an untrained scorer; nil seed refuses).
    public static func load(kind: ModelKind, checkpoint: String, head: String?, seed: UInt64? = nil,
                            threads: Int = 1) throws -> RewardModelService {
        if head == nil && (seed == nil || HuggingFaceCheckpoint.isRewardModel(checkpoint)) {
            let (weights, config, own) = try HuggingFaceCheckpoint.readRewardModel(directory: checkpoint)
            return try RewardModelService(kind: kind, weights: weights, head: ScalarHead(weight: own, bias: 0), threads: threads,
                                          padTokenId: config.padTokenId.flatMap { Int32(exactly: $0) })
        }
        let weights = try Checkpoint.read(path: checkpoint).weights
        let scoreHead = try head.map { try loadHead(path: $0) } ?? ScalarHead(dim: weights.config.dim, seed: seed!)
        return try RewardModelService(kind: kind, weights: weights, head: scoreHead, threads: threads)
    }

    /// Reads a score head written as JSON (`{"weight": [...], "bias": b}`), naming the file on failure.
    public static func loadHead(path: String) throws -> ScalarHead {
        guard let data = FileManager.default.contents(atPath: path) else { throw LlamaError.io(path: path, reason: "cannot read the score head") }
        do {
            return try JSONDecoder().decode(ScalarHead.self, from: data)
        } catch {
            throw LlamaError.invalidInput("score head \(path) is not a {\"weight\": [...], \"bias\": ...} JSON object: \(error)")
        }
    }
}
