import LlamaCore

// The arguments and results of the roles' distributed functions: plain Swift values. Their wire form
// is in `WorkValues+Wire.swift`. Shapes: N sequences or samples, L_i tokens of sequence i.

/// Which model a score, a training batch or a weight version is about.
public enum ModelKind: String, Sendable, Codable, CaseIterable {
    /// The policy (the chat model being trained).
    case policy
    /// The helpfulness reward model.
    case rewardModel = "reward-model"
    /// The safety reward model.
    case safetyModel = "safety-model"
    /// The reference policy's chat model, as a plan's SFT step made it.
    case reference = "reference-policy"
}

/// A prompt and a response as token ids, with an id the caller chooses.
public struct TokenSequence: Sendable, Equatable {
    public var id: UInt64
    public var prompt: [Int32]
    public var response: [Int32]

    public init(id: UInt64, prompt: [Int32], response: [Int32]) {
        self.id = id
        self.prompt = prompt
        self.response = response
    }
}

/// K samples of each prompt, asked of a generator holding `policyVersion`.
public struct GenerateRequest: Sendable, Equatable {
    /// A prompt's token ids and its id (which seeds its samples' random streams).
    public struct Prompt: Sendable, Equatable {
        public var id: UInt64
        public var tokens: [Int32]

        public init(id: UInt64, tokens: [Int32]) {
            self.id = id
            self.tokens = tokens
        }
    }

    public var prompts: [Prompt]
    /// K, at least 1.
    public var samplesPerPrompt: Int
    public var sampling: SamplingSettings
    /// Sample k of prompt p draws from random stream k of `seed ^ (p.id * 0x9E3779B97F4A7C15)`.
    public var seed: UInt64
    public var maxNewTokens: Int
    public var policyVersion: UInt64
    /// The tokens that end a sample (empty: only the length does).
    public var stopTokens: [Int32]

    public init(prompts: [Prompt], samplesPerPrompt: Int = 1, sampling: SamplingSettings = SamplingSettings(), seed: UInt64 = 0,
                maxNewTokens: Int, policyVersion: UInt64 = 0, stopTokens: [Int32] = []) {
        self.prompts = prompts
        self.samplesPerPrompt = samplesPerPrompt
        self.sampling = sampling
        self.seed = seed
        self.maxNewTokens = maxNewTokens
        self.policyVersion = policyVersion
        self.stopTokens = stopTokens
    }
}

/// A generator's answer: every sample of every prompt, prompt by prompt, with its log-probabilities.
public struct Samples: Sendable, Equatable {
    /// One sample: the tokens generated (not the prompt) and the temperature-1 log-probability of each.
    public struct Sample: Sendable, Equatable {
        public var promptID: UInt64
        /// k, the sample's index among its prompt's samples.
        public var index: Int
        public var tokens: [Int32]
        /// "stop" (the stop token) or "length".
        public var finishReason: String
        /// `(L)`: one per generated token.
        public var logProbs: [Float]

        public init(promptID: UInt64, index: Int, tokens: [Int32], finishReason: String, logProbs: [Float]) {
            self.promptID = promptID
            self.index = index
            self.tokens = tokens
            self.finishReason = finishReason
            self.logProbs = logProbs
        }
    }

    public var samples: [Sample]
    /// The policy version that sampled them.
    public var policyVersion: UInt64
    public var tokensPerSecond: Double

    public init(samples: [Sample], policyVersion: UInt64, tokensPerSecond: Double = 0) {
        self.samples = samples
        self.policyVersion = policyVersion
        self.tokensPerSecond = tokensPerSecond
    }
}

/// Sequences to score with the reward model or the safety model.
public struct ScoreRequest: Sendable, Equatable {
    public var sequences: [TokenSequence]
    /// `.rewardModel` or `.safetyModel`; `.policy` means "whichever scorer gets it".
    public var model: ModelKind

    public init(sequences: [TokenSequence], model: ModelKind) {
        self.sequences = sequences
        self.model = model
    }
}

/// One score per sequence `(N)`, in request order.
public struct Scores: Sendable, Equatable {
    public var model: ModelKind
    public var modelVersion: UInt64
    public var values: [Float]

    public init(model: ModelKind, modelVersion: UInt64, values: [Float]) {
        self.model = model
        self.modelVersion = modelVersion
        self.values = values
    }
}

/// One answer for a reward function: the prompt and response as text, their ids in the round, the
/// prompt record's other fields (a JSON object's text, `{}` when it has none), and the prompt's whole
/// conversation.
public struct RewardItem: Sendable, Equatable {
    public var promptID: UInt64
    public var sampleID: UInt64
    /// The prompt's last user turn.
    public var prompt: String
    public var response: String
    public var fieldsJSON: String
    /// The prompt's conversation (a system message, earlier turns), ending with the user turn `prompt`.
    public var messages: [ChatTemplate.Message]

    /// An answer; `messages` defaults to one user turn of `prompt`.
    public init(promptID: UInt64, sampleID: UInt64, prompt: String, response: String, fieldsJSON: String = "{}",
                messages: [ChatTemplate.Message]? = nil) {
        self.promptID = promptID
        self.sampleID = sampleID
        self.prompt = prompt
        self.response = response
        self.fieldsJSON = fieldsJSON
        self.messages = messages ?? [ChatTemplate.Message(role: .user, content: prompt)]
    }
}

/// Answers a reward-function worker scores, one reward each.
public struct RewardRequest: Sendable, Equatable {
    public var items: [RewardItem]

    public init(items: [RewardItem]) { self.items = items }
}

/// A reward function's rewards `(N)`, in request order.
public struct FunctionRewards: Sendable, Equatable {
    public var values: [Float]

    public init(values: [Float]) { self.values = values }
}

/// Responses whose per-token log-probabilities a reference policy of `policyVersion` computes.
public struct LogProbRequest: Sendable, Equatable {
    public var sequences: [TokenSequence]
    public var policyVersion: UInt64

    public init(sequences: [TokenSequence], policyVersion: UInt64) {
        self.sequences = sequences
        self.policyVersion = policyVersion
    }
}

/// `log p(response[j] | prompt, response[..<j])` for every response token, one array per sequence.
public struct LogProbs: Sendable, Equatable {
    /// `(N, L_i)`: `values[i].count` is sequence i's response length.
    public var values: [[Float]]
    public var policyVersion: UInt64

    public init(values: [[Float]], policyVersion: UInt64) {
        self.values = values
        self.policyVersion = policyVersion
    }
}
