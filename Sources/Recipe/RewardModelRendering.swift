import LlamaCore
import Wire

/// How a reward model whose tokenizer is not the policy's reads an answer: the prompt's conversation and
/// the answer's text, rendered again as one conversation by the reward model's chat template (no
/// generation prompt) and tokenized by its tokenizer, as TRL's GRPO trainer re-renders for a reward model
/// with its own processing class and veRL's reward workers re-tokenize. The reward-model workers score
/// those ids at their last token that is not `pad_token_id`, as `rlhf score` and transformers do.
///
/// A reward model that shares the policy's tokenizer needs none of this: it scores the policy's own ids.
public struct RewardModelRendering: Sendable {
    /// The reward model's tokenizer, with its chat template.
    public let tokenizer: Tokenizer
    /// The most tokens the reward model scores (its `max_position_embeddings`; nil: not checked here).
    public let contextLength: Int?

    /// Renders with `tokenizer` for a model of `contextLength` tokens; refused where it cannot render a
    /// conversation.
    public init(tokenizer: Tokenizer, contextLength: Int? = nil) throws {
        try tokenizer.requireChatFormat()
        self.tokenizer = tokenizer
        self.contextLength = contextLength
    }

    /// Throws where `prompt` leaves no room for an answer in the reward model's context: its rendering
    /// with an empty answer already fills it (a round would fail at scoring, after its sampling).
    public func checkRoom(for prompt: [ChatTemplate.Message]) throws {
        guard let contextLength else { return }
        let empty = try sequence(id: 0, prompt: prompt, response: "")
        let count = empty.prompt.count + empty.response.count
        guard count < contextLength else {
            throw LlamaError.invalidInput("it renders as \(count) tokens with an empty answer in the reward model's template, "
                                          + "and the reward model's context is \(contextLength): no room for an answer")
        }
    }

    /// The ids of `response` answering `prompt` (a conversation ending with a user turn), as sequence `id`:
    /// the whole rendering, split where it leaves the rendering of the prompt alone with the generation
    /// prompt (the split only names the parts; the workers score the ids joined).
    public func sequence(id: UInt64, prompt: [ChatTemplate.Message], response: String) throws -> TokenSequence {
        let whole = try ChatTemplate.conversationIDs(prompt + [ChatTemplate.Message(role: .assistant, content: response)], tokenizer: tokenizer)
        guard whole.count >= 2 else {
            throw LlamaError.invalidInput("the reward model's chat template renders a conversation as \(whole.count) token(s)")
        }
        let promptIDs = try ChatTemplate.promptIDs(conversation: prompt, tokenizer: tokenizer)
        let shared = zip(whole, promptIDs).prefix { $0 == $1 }.count
        let split = min(max(1, shared), whole.count - 1)
        return TokenSequence(id: id, prompt: Array(whole[..<split]), response: Array(whole[split...]))
    }
}
