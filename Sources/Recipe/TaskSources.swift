import EmbeddedTask
import LlamaCore
import LlamaTraining

// What the RLHF plan works on, as small protocols: where prompts come from, where the reward models'
// first preference pairs and the SFT step's demonstrations come from, and who judges answers. The
// embedded task implements all of them (`EmbeddedTaskSource`); a user's prompt and preference files and an external judge are other
// implementations of the same protocols.

/// A prompt of the plan: its id (index in its set), its text, its tokens in the chat template, and
/// whether it is a safety prompt (LLaMA2's safety gate and the safety evaluation read this).
public struct PlanPrompt: Sendable, Equatable {
    public var id: UInt64
    public var text: String
    public var ids: [Int32]
    public var isSafety: Bool
    /// The prompt record's other fields (labels, ground truth) as a JSON object's text, handed to reward
    /// functions with each answer.
    public var fieldsJSON: String
    /// The conversation the prompt renders (ending with a user turn): what a reward model with a
    /// tokenizer of its own renders again, with the answer, in its chat template.
    public var messages: [ChatTemplate.Message]

    /// A prompt; `messages` defaults to one user turn of `text`.
    public init(id: UInt64, text: String, ids: [Int32], isSafety: Bool, fieldsJSON: String = "{}", messages: [ChatTemplate.Message]? = nil) {
        self.id = id
        self.text = text
        self.ids = ids
        self.isSafety = isSafety
        self.fieldsJSON = fieldsJSON
        self.messages = messages ?? [ChatTemplate.Message(role: .user, content: text)]
    }
}

/// Where a plan's prompts come from: the training prompts (rejection sampling, PPO) and the held-out
/// prompts of the evaluations.
public protocol PromptSource: Sendable {
    var trainPrompts: [PlanPrompt] { get }
    var evalPrompts: [PlanPrompt] { get }
}

/// A preference pair as text: a prompt, the chosen and the rejected response, LLaMA2's preference level
/// (which picks the ranking loss's margin from the step's table) or a margin of its own, and whether it is
/// a safety pair.
public struct PreferencePairText: Sendable, Equatable {
    public var prompt: String
    public var chosen: String
    public var rejected: String
    /// nil for a pair without a level (its margin is `margin`, else 0).
    public var level: PreferenceLevel?
    /// A margin given with the pair (it overrides the level's).
    public var margin: Float?
    public var safety: Bool
    /// The prompt's tokens when it is not a single user message (a conversation); nil: `prompt` in the
    /// chat template.
    public var promptIDs: [Int32]?

    public init(prompt: String, chosen: String, rejected: String, level: PreferenceLevel?, margin: Float? = nil, safety: Bool,
                promptIDs: [Int32]? = nil) {
        self.promptIDs = promptIDs
        self.prompt = prompt
        self.chosen = chosen
        self.rejected = rejected
        self.level = level
        self.margin = margin
        self.safety = safety
    }
}

/// Where the reward models' first preference pairs come from (`train_rm`).
public protocol PairSource: Sendable {
    var preferencePairs: [PreferencePairText] { get }
}

/// Where the demonstrations of a plan's `sft` step come from.
public protocol SFTSource: Sendable {
    /// The demonstrations as token sequences of at most `seqLen` tokens, each with the weight of every
    /// target (1 on the answers' tokens).
    func sftSequences(seqLen: Int) throws -> [MaskedSequence]
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

/// One answer to judge: the prompt's text and the answer, and the prompt's id and record fields (a data
/// file's labels and ground truth, as reward functions get them) for judges that use them.
public struct JudgeItem: Sendable, Equatable {
    public var prompt: String
    public var response: String
    public var promptID: UInt64
    /// The prompt record's other fields as a JSON object's text (`{}` where there are none).
    public var fieldsJSON: String
    /// The prompt's conversation, ending with a user turn (a reward-model judge renders it with the answer).
    public var messages: [ChatTemplate.Message]

    /// An answer; `messages` defaults to one user turn of `prompt`.
    public init(prompt: String, response: String, promptID: UInt64 = 0, fieldsJSON: String = "{}", messages: [ChatTemplate.Message]? = nil) {
        self.prompt = prompt
        self.response = response
        self.promptID = promptID
        self.fieldsJSON = fieldsJSON
        self.messages = messages ?? [ChatTemplate.Message(role: .user, content: prompt)]
    }

    /// An answer to `prompt`, with its id, fields and conversation.
    public init(_ prompt: PlanPrompt, response: String) {
        self.init(prompt: prompt.text, response: response, promptID: prompt.id, fieldsJSON: prompt.fieldsJSON, messages: prompt.messages)
    }
}

/// Who judges the plan's answers: the evaluations (helpfulness, safety, the win rate against the SFT
/// policy's answers) and the labels of new preference pairs. Only the coordinator holds it; the
/// workers and the policy never see it. Judgements are asked for in batches (a judge command or
/// endpoint answers many per call); an error (a crashed command, a bad answer) fails the step.
public protocol JudgementSource: Sendable {
    /// The judgements of `items`, in their order; nil for one it cannot judge.
    func judge(_ items: [JudgeItem]) throws -> [Judgement?]
    /// Helpfulness closer than this is a tie, and makes no preference pair.
    var tieGap: Double { get }
    /// LLaMA2's level for a pair whose utilities differ by `gap` (> `tieGap`).
    func level(gap: Double) -> PreferenceLevel
}

extension JudgementSource {
    /// The judgement of one response.
    public func judge(prompt: String, response: String) throws -> Judgement? {
        try judge([JudgeItem(prompt: prompt, response: response)]).first ?? nil
    }

    /// The judgements of answers to prompts without ids or fields.
    public func judge(_ pairs: [(prompt: String, response: String)]) throws -> [Judgement?] {
        try judge(pairs.map { JudgeItem(prompt: $0.prompt, response: $0.response) })
    }

    /// Which of two judged responses is better: the safe one when one is unsafe, else the more helpful
    /// one, a tie within `tieGap` (the embedded annotator's rule, and every judge's).
    public func verdict(_ a: Judgement, _ b: Judgement) -> Verdict {
        if a.unsafe != b.unsafe { return a.unsafe ? .second : .first }
        if abs(a.helpfulness - b.helpfulness) < tieGap { return .tie }
        return a.helpfulness > b.helpfulness ? .first : .second
    }
}

/// LLaMA2's four levels by the utility gap of a pair: at least `thresholds[0]` significantly better,
/// `[1]` better, `[2]` slightly better, below that negligibly better.
public struct LevelThresholds: Sendable, Equatable, Codable {
    public var significantlyBetter: Double
    public var better: Double
    public var slightlyBetter: Double

    public init(significantlyBetter: Double, better: Double, slightlyBetter: Double) {
        self.significantlyBetter = significantlyBetter
        self.better = better
        self.slightlyBetter = slightlyBetter
    }

    /// The embedded annotator's (0.5, 0.25, 0.1).
    public static let annotator = LevelThresholds(significantlyBetter: Annotator.levelGaps.significantlyBetter, better: Annotator.levelGaps.better,
                                                  slightlyBetter: Annotator.levelGaps.slightlyBetter)

    /// The level of a pair whose utilities differ by `gap`.
    public func level(gap: Double) -> PreferenceLevel {
        if gap >= significantlyBetter { return .significantlyBetter }
        if gap >= better { return .better }
        if gap >= slightlyBetter { return .slightlyBetter }
        return .negligiblyBetter
    }
}

/// What a round's reward is made of: the trained reward and safety models combined by LLaMA2's safety
/// gate, and the spec's reward function (its workers' rewards), each with a weight. The reward is
/// `models * gated + function * f`.
public struct RewardWeights: Codable, Sendable, Equatable {
    public var models: Double
    public var function: Double

    public init(models: Double = 1, function: Double = 0) {
        self.models = models
        self.function = function
    }

    /// The sum of the sources' rewards, each weighted; a source of weight 0 is not asked.
    public func combine(gated: [Double]?, function rewards: [Float]?, count: Int) -> [Double] {
        (0..<count).map { i in
            (models == 0 ? 0 : models * (gated?[i] ?? 0)) + (function == 0 ? 0 : function * Double(rewards?[i] ?? 0))
        }
    }
}
