import LlamaCore

// The one place where the work values meet their generated messages (`Protos/rlhf/v1/work.proto`).

extension ModelKind {
    /// The generated role a model kind travels as (`.unspecified` for the policy).
    var wire: Rlhf_V1_Role {
        switch self {
        case .policy: return .unspecified
        case .rewardModel: return .rewardModel
        case .safetyModel: return .safetyModel
        case .reference: return .referencePolicy
        }
    }

    init(wire: Rlhf_V1_Role) throws {
        switch wire {
        case .unspecified: self = .policy
        case .rewardModel: self = .rewardModel
        case .safetyModel: self = .safetyModel
        case .referencePolicy: self = .reference
        default: throw WireError.malformedBody("\(wire) is not a model (policy, reward model, safety model or reference policy)")
        }
    }
}

extension TokenSequence {
    var wire: Rlhf_V1_Sequence {
        var s = Rlhf_V1_Sequence()
        s.id = id
        s.promptIds = prompt
        s.responseIds = response
        return s
    }

    init(wire s: Rlhf_V1_Sequence) { self.init(id: s.id, prompt: s.promptIds, response: s.responseIds) }
}

extension GenerateRequest: WireCodable {
    public func wirePayload() throws -> WirePayload {
        var r = Rlhf_V1_GenerateRequest()
        r.prompts = prompts.map { p in
            var q = Rlhf_V1_Prompt()
            q.promptID = p.id
            q.ids = p.tokens
            return q
        }
        r.samplesPerPrompt = UInt32(clamping: samplesPerPrompt)
        r.sampling.temperature = sampling.temperature
        r.sampling.topP = sampling.topP
        r.sampling.topK = UInt32(clamping: sampling.topK)
        r.seed = seed
        r.maxNewTokens = UInt32(clamping: maxNewTokens)
        r.policyVersion = policyVersion
        r.stopTokens = stopTokens
        return WirePayload(body: try protoBytes(r))
    }

    public init(wirePayload: WirePayload) throws {
        let r = try Rlhf_V1_GenerateRequest.parse(wirePayload.body)
        // top_p 0 (unset) means no nucleus cut; 0 samples per prompt means one.
        self.init(prompts: r.prompts.map { Prompt(id: $0.promptID, tokens: $0.ids) }, samplesPerPrompt: max(1, Int(r.samplesPerPrompt)),
                  sampling: SamplingSettings(temperature: r.sampling.temperature, topP: r.sampling.topP == 0 ? 1 : r.sampling.topP,
                                             topK: Int(r.sampling.topK)),
                  seed: r.seed, maxNewTokens: Int(r.maxNewTokens), policyVersion: r.policyVersion,
                  stopTokens: r.stopTokens)
    }
}

extension Samples: WireCodable {
    /// Body GENERATE_RESULT; tensor "logprobs" `(sum L)`: the samples' log-probabilities back to back.
    public func wirePayload() throws -> WirePayload {
        var r = Rlhf_V1_GenerateResult()
        r.samples = samples.map { s in
            var w = Rlhf_V1_Sample()
            w.promptID = s.promptID
            w.sampleIndex = UInt32(clamping: s.index)
            w.ids = s.tokens
            w.finishReason = s.finishReason
            return w
        }
        r.policyVersion = policyVersion
        r.tokensPerSecond = tokensPerSecond
        return WirePayload(body: try protoBytes(r), tensors: [WireTensor(name: "logprobs", floats: samples.flatMap(\.logProbs))])
    }

    public init(wirePayload: WirePayload) throws {
        let r = try Rlhf_V1_GenerateResult.parse(wirePayload.body)
        let total = r.samples.reduce(0) { $0 + $1.ids.count }
        let logProbs = try wirePayload.floats("logprobs", count: total, in: "a generate result")
        var cursor = 0
        self.init(samples: r.samples.map { w in
            defer { cursor += w.ids.count }
            return Sample(promptID: w.promptID, index: Int(w.sampleIndex), tokens: w.ids, finishReason: w.finishReason,
                          logProbs: Array(logProbs[cursor ..< cursor + w.ids.count]))
        }, policyVersion: r.policyVersion, tokensPerSecond: r.tokensPerSecond)
    }
}

extension ScoreRequest: WireCodable {
    public func wirePayload() throws -> WirePayload {
        var r = Rlhf_V1_ScoreRequest()
        r.sequences = sequences.map(\.wire)
        r.model = model.wire
        return WirePayload(body: try protoBytes(r))
    }

    public init(wirePayload: WirePayload) throws {
        let r = try Rlhf_V1_ScoreRequest.parse(wirePayload.body)
        self.init(sequences: r.sequences.map(TokenSequence.init(wire:)), model: try ModelKind(wire: r.model))
    }
}

extension Scores: WireCodable {
    /// Body SCORE_RESULT; tensor "scores" `(N)`.
    public func wirePayload() throws -> WirePayload {
        var r = Rlhf_V1_ScoreResult()
        r.model = model.wire
        r.modelVersion = modelVersion
        return WirePayload(body: try protoBytes(r), tensors: [WireTensor(name: "scores", floats: values)])
    }

    public init(wirePayload: WirePayload) throws {
        let r = try Rlhf_V1_ScoreResult.parse(wirePayload.body)
        guard let tensor = wirePayload.tensor("scores") else { throw WireError.malformedBody("a score result lacks the tensor frame \"scores\"") }
        let values = try wirePayload.floats("scores", count: tensor.bytes.count / 4, in: "a score result")
        self.init(model: try ModelKind(wire: r.model), modelVersion: r.modelVersion, values: values)
    }
}

extension RewardRequest: WireCodable {
    public func wirePayload() throws -> WirePayload {
        var r = Rlhf_V1_RewardRequest()
        r.items = items.map { item in
            var w = Rlhf_V1_RewardItem()
            w.promptID = item.promptID
            w.sampleID = item.sampleID
            w.prompt = item.prompt
            w.response = item.response
            w.fieldsJson = item.fieldsJSON
            w.messages = item.messages.map { message in
                var m = Rlhf_V1_ChatMessage()
                m.role = message.role.rawValue
                m.content = message.content
                return m
            }
            return w
        }
        return WirePayload(body: try protoBytes(r))
    }

    public init(wirePayload: WirePayload) throws {
        let r = try Rlhf_V1_RewardRequest.parse(wirePayload.body)
        self.init(items: try r.items.enumerated().map { i, item in
            let messages = try item.messages.map { m -> ChatTemplate.Message in
                guard let role = ChatTemplate.Role(rawValue: m.role) else {
                    throw WireError.malformedBody("answer \(i + 1) of a reward request has a message of role \(m.role.debugDescription) "
                                                  + "(expected system, user or assistant)")
                }
                return ChatTemplate.Message(role: role, content: m.content)
            }
            return RewardItem(promptID: item.promptID, sampleID: item.sampleID, prompt: item.prompt, response: item.response,
                              fieldsJSON: item.fieldsJson.isEmpty ? "{}" : item.fieldsJson, messages: messages.isEmpty ? nil : messages)
        })
    }
}

extension FunctionRewards: WireCodable {
    /// Body SCORE_RESULT of model REWARD_FUNCTION; tensor "scores" `(N)`.
    public func wirePayload() throws -> WirePayload {
        var r = Rlhf_V1_ScoreResult()
        r.model = .rewardFunction
        return WirePayload(body: try protoBytes(r), tensors: [WireTensor(name: "scores", floats: values)])
    }

    public init(wirePayload: WirePayload) throws {
        let r = try Rlhf_V1_ScoreResult.parse(wirePayload.body)
        guard r.model == .rewardFunction else { throw WireError.malformedBody("a score result of \(r.model) where a reward function's was expected") }
        guard let tensor = wirePayload.tensor("scores") else { throw WireError.malformedBody("a reward result lacks the tensor frame \"scores\"") }
        self.init(values: try wirePayload.floats("scores", count: tensor.bytes.count / 4, in: "a reward result"))
    }
}

extension LogProbRequest: WireCodable {
    public func wirePayload() throws -> WirePayload {
        var r = Rlhf_V1_ReferenceLogProbRequest()
        r.sequences = sequences.map(\.wire)
        r.policyVersion = policyVersion
        return WirePayload(body: try protoBytes(r))
    }

    public init(wirePayload: WirePayload) throws {
        let r = try Rlhf_V1_ReferenceLogProbRequest.parse(wirePayload.body)
        self.init(sequences: r.sequences.map(TokenSequence.init(wire:)), policyVersion: r.policyVersion)
    }
}

extension LogProbs: WireCodable {
    /// Body REFERENCE_LOGPROB_RESULT (the lengths); tensor "logprobs" `(sum L_i)`, sequences back to back.
    public func wirePayload() throws -> WirePayload {
        var r = Rlhf_V1_ReferenceLogProbResult()
        r.lengths = values.map { UInt32($0.count) }
        r.policyVersion = policyVersion
        return WirePayload(body: try protoBytes(r), tensors: [WireTensor(name: "logprobs", floats: Array(values.joined()))])
    }

    public init(wirePayload: WirePayload) throws {
        let r = try Rlhf_V1_ReferenceLogProbResult.parse(wirePayload.body)
        let flat = try wirePayload.floats("logprobs", count: r.lengths.reduce(0) { $0 + Int($1) }, in: "a log-probability result")
        var cursor = 0
        self.init(values: r.lengths.map { length in
            defer { cursor += Int(length) }
            return Array(flat[cursor ..< cursor + Int(length)])
        }, policyVersion: r.policyVersion)
    }
}
