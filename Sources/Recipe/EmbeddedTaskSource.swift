import EmbeddedTask
import LlamaCore
import LlamaTraining

/// The embedded task as the plan's sources: its prompts and preference pairs, generated from a seed in
/// this process, and its hidden annotator as the judge.
public struct EmbeddedTaskSource: PromptSource, PairSource, JudgementSource, SFTSource {
    public let trainPrompts: [PlanPrompt]
    public let evalPrompts: [PlanPrompt]
    public let preferencePairs: [PreferencePairText]
    private let annotator = Annotator()
    private let seed: UInt64
    private let tokenizer: Tokenizer

    /// The task of seed `seed` (with `preferencePairs` pairs), its prompts in `tokenizer`'s chat template.
    public init(seed: UInt64, tokenizer: Tokenizer, preferencePairs: Int) {
        var settings = TaskData.Settings.default
        settings.corpusDocuments = 0
        settings.sftExamples = 0
        settings.preferencePairs = preferencePairs
        self.seed = seed
        self.tokenizer = tokenizer
        let data = TaskData(seed: seed, settings: settings)
        func prompts(_ split: TaskSplit) -> [PlanPrompt] {
            (data.prompts[split] ?? []).enumerated().map { i, p in
                PlanPrompt(id: UInt64(i), text: p.text, ids: ChatTemplate.promptIDs(p.text, tokenizer: tokenizer), isSafety: p.request.isSafety)
            }
        }
        trainPrompts = prompts(.train)
        evalPrompts = prompts(.evaluation)
        self.preferencePairs = data.preferences.map { pair in
            PreferencePairText(prompt: pair.prompt, chosen: pair.chosen, rejected: pair.rejected,
                               level: PreferenceLevel(rawValue: pair.preference) ?? .negligiblyBetter, safety: pair.safety)
        }
    }

    /// The task's SFT examples (those `rlhf task generate` writes to sft.jsonl for the same seed), made
    /// when a plan's `sft` step asks for them.
    public func sftSequences(seqLen: Int) throws -> [MaskedSequence] {
        // The corpus draws from the same stream before the SFT examples: it is made too, so that they are the file's.
        var settings = TaskData.Settings.default
        settings.preferencePairs = 0
        return try TaskData(seed: seed, settings: settings).sft.enumerated().map { i, example in
            do {
                return try TrainingData.sequence(.conversation([.init(role: .user, content: example.prompt),
                                                                .init(role: .assistant, content: example.response)]),
                                                 tokenizer: tokenizer, seqLen: seqLen)
            } catch {
                throw LlamaError.invalidInput("the embedded task's SFT example \(i + 1): \(error)")
            }
        }
    }

    public func judge(_ items: [JudgeItem]) -> [Judgement?] {
        items.map { item in
            TaskPrompt.parse(item.prompt).map { task in
                let j = annotator.judge(task, item.response)
                return Judgement(helpfulness: j.helpfulness, unsafe: j.unsafe, helpful: j.helpful)
            }
        }
    }

    public var tieGap: Double { Annotator.tieGap }

    public func level(gap: Double) -> PreferenceLevel {
        PreferenceLevel(rawValue: Annotator.level(gap: gap).rawValue) ?? .negligiblyBetter
    }
}
