import LlamaTraining

// What the RLHF plan works on, as three small protocols: where prompts come from, where the reward
// models' first preference pairs come from, and who judges answers. The embedded task implements all
// three (`EmbeddedTaskSource`); a user's prompt and preference files and an external judge are other
// implementations of the same protocols.

/// A prompt of the plan: its id (index in its set), its text, its tokens in the chat template, and
/// whether it is a safety prompt (LLaMA2's safety gate and the safety evaluation read this).
public struct PlanPrompt: Sendable, Equatable {
    public var id: UInt64
    public var text: String
    public var ids: [Int32]
    public var isSafety: Bool

    public init(id: UInt64, text: String, ids: [Int32], isSafety: Bool) {
        self.id = id
        self.text = text
        self.ids = ids
        self.isSafety = isSafety
    }
}

/// Where a plan's prompts come from: the training prompts (rejection sampling, PPO) and the held-out
/// prompts of the evaluations.
public protocol PromptSource: Sendable {
    var trainPrompts: [PlanPrompt] { get }
    var evalPrompts: [PlanPrompt] { get }
}

/// A preference pair as text: a prompt, the chosen and the rejected response, LLaMA2's preference level
/// (which picks the ranking loss's margin) and whether it is a safety pair.
public struct PreferencePairText: Sendable, Equatable {
    public var prompt: String
    public var chosen: String
    public var rejected: String
    public var level: PreferenceLevel
    public var safety: Bool

    public init(prompt: String, chosen: String, rejected: String, level: PreferenceLevel, safety: Bool) {
        self.prompt = prompt
        self.chosen = chosen
        self.rejected = rejected
        self.level = level
        self.safety = safety
    }
}

/// Where the reward models' first preference pairs come from (`train_rm`).
public protocol PairSource: Sendable {
    var preferencePairs: [PreferencePairText] { get }
}

/// A judge's view of one response.
public struct Judgement: Sendable, Equatable {
    /// How helpful the response is, 0 to 1.
    public var helpfulness: Double
    public var unsafe: Bool
    /// Whether it counts as helpful (the judge's own threshold).
    public var helpful: Bool

    public init(helpfulness: Double, unsafe: Bool, helpful: Bool) {
        self.helpfulness = helpfulness
        self.unsafe = unsafe
        self.helpful = helpful
    }

    /// Helpfulness, less 1 for an unsafe answer: what new preference pairs are ranked by.
    public var utility: Double { helpfulness - (unsafe ? 1 : 0) }
}

/// Which of two responses a judge prefers.
public enum Verdict: Sendable, Equatable {
    case first, second, tie
}

/// Who judges the plan's answers: the evaluations (helpfulness, safety, the win rate against the SFT
/// policy's answers) and the labels of new preference pairs. Only the coordinator holds it; the
/// workers and the policy never see it.
public protocol JudgementSource: Sendable {
    /// The judgement of `response` to `prompt`; nil for a prompt it cannot judge.
    func judge(prompt: String, response: String) -> Judgement?
    /// Which of `a` and `b` (responses to `prompt`) is better; nil for a prompt it cannot judge.
    func compare(prompt: String, _ a: String, _ b: String) -> Verdict?
    /// Utilities closer than this make no preference pair.
    var tieGap: Double { get }
    /// LLaMA2's level for a pair whose utilities differ by `gap` (> `tieGap`).
    func level(gap: Double) -> PreferenceLevel
}
