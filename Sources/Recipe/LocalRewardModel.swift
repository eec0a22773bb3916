import Foundation
import LlamaCore
import LlamaTraining
import Wire
import Workers

/// A reward model read from disk that scores text in this process (a reward-model judge, `rlhf score`,
/// `rlhf eval --best-of`). Two kinds:
/// - a trunk (a checkpoint or Hugging Face directory) and a score head in JSON, as `rlhf train rm` and the
///   plan's reward models write them: a response scores as those models were trained, the prompt's ids
///   (with the generation prompt), the response's, and the end of turn;
/// - a Hugging Face reward model (`LlamaForSequenceClassification`, `Qwen2ForSequenceClassification`...,
///   one label) with its own head: a conversation scores as `transformers` scores it, the chat template's
///   whole rendering of it (`apply_chat_template(messages, tokenize=True)`) at its last token that is not
///   `pad_token_id`.
public struct LocalRewardModel: Sendable {
    public let service: RewardModelService
    /// Whether the head is the Hugging Face model's own (`score.weight`): conversations then score whole.
    public let isPretrained: Bool

    /// Reads `checkpoint` with `head` (a JSON score head), or a Hugging Face reward model's own head
    /// where `head` is nil.
    public init(kind: ModelKind, checkpoint: String, head: String?, threads: Int = 1) throws {
        guard head != nil || HuggingFaceCheckpoint.isModelDirectory(checkpoint) else {
            throw LlamaError.invalidCheckpoint(path: checkpoint, reason: "a reward model file needs its score head (JSON, as rlhf train rm writes CKPT.head.json)")
        }
        service = try RewardModelService.load(kind: kind, checkpoint: checkpoint, head: head, threads: threads)
        isPretrained = head == nil
    }

    /// The most tokens a scored sequence may have.
    public var contextLength: Int? { service.modelConfig?.seqLen }

    /// The ids `response` to `prompt` scores on, with `tokenizer` (the model's).
    public func sequence(prompt: [ChatTemplate.Message], response: String, tokenizer: Tokenizer) throws -> [Int32] {
        guard isPretrained else {
            return try ChatTemplate.promptIDs(conversation: prompt, tokenizer: tokenizer) + tokenizer.encode(response) + [tokenizer.endOfTurnId]
        }
        return try sequence(conversation: prompt + [ChatTemplate.Message(role: .assistant, content: response)], tokenizer: tokenizer)
    }

    /// The ids a whole conversation scores on: the chat template's rendering of it, tokenized (the
    /// service scores it at its last token that is not `pad_token_id`).
    public func sequence(conversation: [ChatTemplate.Message], tokenizer: Tokenizer) throws -> [Int32] {
        try ChatTemplate.conversationIDs(conversation, tokenizer: tokenizer)
    }

    /// One score (a logit) per sequence, in order, 32 sequences to a forward pass.
    public func scores(_ sequences: [[Int32]]) throws -> [Float] {
        if let limit = contextLength, let long = sequences.firstIndex(where: { $0.count > limit }) {
            throw LlamaError.invalidInput("the reward model's context is \(limit) tokens; sequence \(long + 1) of \(sequences.count) is \(sequences[long].count)")
        }
        var out: [Float] = []
        for start in stride(from: 0, to: sequences.count, by: 32) {
            out += try service.scores(Array(sequences[start ..< min(sequences.count, start + 32)]))
        }
        return out
    }
}
