import EmbeddedTask
import Foundation
import LlamaCore
import LlamaTraining

/// What the RLHF plan works on: the tokenizer of the policy, the training and evaluation prompts (with
/// whether each is a safety prompt, which the prompt sets say), the preference pairs the reward models
/// start from, and the judge of the evaluations. For the embedded task everything is generated from a
/// seed in this process; only the coordinator holds the annotator (workers never see it).
public struct TaskContext: Sendable {
    /// A prompt of the plan: its id (index in its set), text, tokens in the chat template, and whether
    /// it is a safety prompt.
    public struct Prompt: Sendable, Equatable {
        public var id: UInt64
        public var text: String
        public var ids: [Int32]
        public var isSafety: Bool
    }

    public let tokenizer: Tokenizer
    public let trainPrompts: [Prompt]
    public let evalPrompts: [Prompt]
    /// Preference pairs of the task (prompt text, chosen, rejected, level, safety).
    public let preferences: [TaskData.PreferencePair]
    /// The hidden annotator: judges evaluations and labels new pairs.
    public let annotator: Annotator

    /// The embedded task's prompts and pairs (seed `seed`) with `tokenizer`.
    public init(embeddedSeed seed: UInt64, tokenizer: Tokenizer, preferencePairs: Int) {
        self.tokenizer = tokenizer
        var settings = TaskData.Settings.default
        settings.corpusDocuments = 0
        settings.sftExamples = 0
        settings.preferencePairs = preferencePairs
        let data = TaskData(seed: seed, settings: settings)
        func prompts(_ split: TaskSplit) -> [Prompt] {
            (data.prompts[split] ?? []).enumerated().map { i, p in
                Prompt(id: UInt64(i), text: p.text, ids: ChatTemplate.promptIDs(p.text, tokenizer: tokenizer), isSafety: p.request.isSafety)
            }
        }
        trainPrompts = prompts(.train)
        evalPrompts = prompts(.evaluation)
        preferences = data.preferences
        annotator = Annotator()
    }

    /// The annotator's judgement of `response` to the prompt `text`.
    public func judge(_ text: String, _ response: String) -> Annotator.Judgement? {
        TaskPrompt.parse(text).map { annotator.judge($0, response) }
    }

    /// Decoded text of response tokens (EOS dropped).
    public func text(_ ids: [Int32]) -> String {
        tokenizer.decode(ids.filter { $0 != tokenizer.eosId }).trimmingCharacters(in: .whitespaces)
    }
}
