import LlamaCore

/// What the RLHF plan works on: the policy's tokenizer and the plan's sources of prompts, preference
/// pairs and judgements (`TaskSources.swift`). The embedded task is one such source; only the
/// coordinator holds the judge (workers never see it).
public struct TaskContext: Sendable {
    /// A prompt of the plan.
    public typealias Prompt = PlanPrompt

    public let tokenizer: Tokenizer
    public let prompts: any PromptSource
    public let pairs: any PairSource
    public let judge: any JudgementSource
    /// The `sft` step's demonstrations (nil: none; the step is refused).
    public let demonstrations: (any SFTSource)?

    /// A plan over `prompts`, `pairs`, `judge` and `demonstrations`, its text in `tokenizer`.
    public init(tokenizer: Tokenizer, prompts: any PromptSource, pairs: any PairSource, judge: any JudgementSource,
                demonstrations: (any SFTSource)? = nil) {
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.pairs = pairs
        self.judge = judge
        self.demonstrations = demonstrations
    }

    /// The embedded task's prompts, pairs, demonstrations and annotator (seed `seed`) with `tokenizer`.
    public init(embeddedSeed seed: UInt64, tokenizer: Tokenizer, preferencePairs: Int) {
        let task = EmbeddedTaskSource(seed: seed, tokenizer: tokenizer, preferencePairs: preferencePairs)
        self.init(tokenizer: tokenizer, prompts: task, pairs: task, judge: task, demonstrations: task)
    }

    public var trainPrompts: [PlanPrompt] { prompts.trainPrompts }
    public var evalPrompts: [PlanPrompt] { prompts.evalPrompts }

    /// Decoded text of response tokens (stop tokens dropped).
    public func text(_ ids: [Int32]) -> String {
        let stops = tokenizer.stopIds
        return tokenizer.decode(ids.filter { !stops.contains($0) }).trimmingCharacters(in: .whitespaces)
    }
}
