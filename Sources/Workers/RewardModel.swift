import Foundation
import LlamaCore
import LlamaTraining
import Synchronization
import Wire

/// The reward-model role (helpfulness, and with `SafetyModel` the safety model): a LLaMA2 trunk with
/// a scalar head read at the last token of `prompt + response`. A SCORE_REQUEST is answered with a
/// SCORE_RESULT and the tensor frame "scores" `(N)`, one score per sequence in request order.
public final class RewardModel: RoleService, @unchecked Sendable {
    /// Which of the two reward models this is (`.rewardModel` or `.safetyModel`).
    public let kind: Rlhf_V1_Role
    private let trunk: TrainableTransformer
    private let head: ScalarHead
    private let version: UInt64
    private let checksum: UInt32
    private let tokens = Atomic<UInt64>(0)

    /// A reward model of `weights` and `head` (`head.weight` has `dim` entries) on `threads` threads.
    public init(kind: Rlhf_V1_Role, weights: ModelWeights, head: ScalarHead, threads: Int = 1, modelVersion: UInt64 = 0) throws {
        guard kind == .rewardModel || kind == .safetyModel else {
            throw LlamaError.invalidInput("a reward model is REWARD_MODEL or SAFETY_MODEL, not \(kind)")
        }
        guard head.weight.count == weights.config.dim else {
            throw LlamaError.invalidInput("the score head has \(head.weight.count) weights, the model's dim is \(weights.config.dim)")
        }
        self.kind = kind
        trunk = TrainableTransformer(weights: weights, pool: ComputePool(threads: threads))
        self.head = head
        version = modelVersion
        checksum = weights.checksum
    }

    public var policyVersion: UInt64 { version }
    public var weightsChecksum: UInt32 { checksum }
    public var tokensProcessed: UInt64 { tokens.load(ordering: .relaxed) }
    public var modelConfig: LlamaConfig? { trunk.config }

    /// Scores of `(prompt + response)` token lists `(N)`, each read at the sequence's last token.
    public func scores(_ sequences: [[Int32]]) throws -> [Float] {
        let batch = try TokenBatch(sequences, config: trunk.config)
        let tape = trunk.forward(batch)
        tokens.add(UInt64(batch.rowCount), ordering: .relaxed)
        return head.scores(tape, rows: batch.lastRows)
    }

    public func handle(_ message: WireMessage) throws -> WireMessage {
        guard message.type == .scoreRequest else { throw LlamaError.invalidInput("a reward model serves SCORE_REQUEST, not \(message.type)") }
        let request = try message.decodeBody(Rlhf_V1_ScoreRequest.self)
        guard request.model == .unspecified || request.model == kind else {
            throw LlamaError.invalidInput("a score from \(request.model) was asked of the \(kind) model")
        }
        let values = try scores(try joinedSequences(request.sequences, config: trunk.config))
        var result = Rlhf_V1_ScoreResult()
        result.model = kind
        result.modelVersion = version
        return try WireMessage(type: .scoreResult, requestID: message.requestID, body: result,
                               tensors: [WireTensor(name: "scores", floats: values)])
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
