import LlamaCore
import Testing
@testable import Wire

/// The conversion layer: every value the role actors take or return survives its wire form, with its
/// tensors as frames beside the body; a body or tensor of the wrong shape is refused, naming it.
@Suite struct ValueTests {
    static func roundTrip<V: WireCodable & Equatable>(_ value: V) throws -> V {
        let payload = try value.wirePayload()
        // Through real frames, as the actor system sends them (checksums, lengths).
        let message = try WireMessage.decode(WireMessage(type: .remoteReply, requestID: 1, rawBody: payload.body, tensors: payload.tensors).frames())
        return try V(wirePayload: WirePayload(body: message.body, tensors: message.tensors))
    }

    static let sequences = [TokenSequence(id: 3, prompt: [1, 5, 6], response: [7, 2]), TokenSequence(id: 9, prompt: [1], response: [4, 4, 4])]

    @Test func everyValueRoundTrips() throws {
        let generate = GenerateRequest(prompts: [.init(id: 5, tokens: [1, 2]), .init(id: 1 << 40, tokens: [1])], samplesPerPrompt: 4,
                                       sampling: SamplingSettings(temperature: 1.25, topP: 0.9, topK: 40), seed: .max, maxNewTokens: 64,
                                       policyVersion: 7, stopTokens: [2, 128_009])
        #expect(try ValueTests.roundTrip(generate) == generate)
        var noStop = generate
        noStop.stopTokens = []
        #expect(try ValueTests.roundTrip(noStop) == noStop)
        let samples = Samples(samples: [.init(promptID: 5, index: 0, tokens: [9, 8, 2], finishReason: "stop", logProbs: [-0.5, -1, -0.25]),
                                        .init(promptID: 5, index: 1, tokens: [], finishReason: "length", logProbs: []),
                                        .init(promptID: 1, index: 0, tokens: [3], finishReason: "length", logProbs: [-3])],
                              policyVersion: 7, tokensPerSecond: 1234.5)
        #expect(try ValueTests.roundTrip(samples) == samples)
        #expect(try samples.wirePayload().tensor("logprobs")?.floats == [-0.5, -1, -0.25, -3])
        for model in ModelKind.allCases {
            #expect(try ValueTests.roundTrip(ScoreRequest(sequences: ValueTests.sequences, model: model)) == ScoreRequest(sequences: ValueTests.sequences, model: model))
            #expect(try ValueTests.roundTrip(Scores(model: model, modelVersion: 3, values: [0.5, -2])) == Scores(model: model, modelVersion: 3, values: [0.5, -2]))
        }
        let rewardRequest = RewardRequest(items: [RewardItem(promptID: 4, sampleID: 2, prompt: "Name a fox.", response: "A fox — Max.",
                                                             fieldsJSON: #"{"label":"fox"}"#),
                                                  RewardItem(promptID: 1 << 40, sampleID: 0, prompt: "", response: ""),
                                                  RewardItem(promptID: 2, sampleID: 1, prompt: "And an owl?", response: "Hoo.", messages: [
                                                      .init(role: .system, content: "Be brief."), .init(role: .user, content: "A fox?"),
                                                      .init(role: .assistant, content: "Yes."), .init(role: .user, content: "And an owl?")])])
        #expect(try ValueTests.roundTrip(rewardRequest) == rewardRequest)
        // A message of no known role is refused by name.
        var unknownRole = Rlhf_V1_RewardRequest()
        var item = Rlhf_V1_RewardItem()
        var message = Rlhf_V1_ChatMessage()
        message.role = "tool"
        item.messages = [message]
        unknownRole.items = [item]
        #expect { try RewardRequest(wirePayload: WirePayload(body: try unknownRole.serializedBytes())) } throws: { "\($0)".contains("role \"tool\"") }
        #expect(try ValueTests.roundTrip(FunctionRewards(values: [0.5, -2, 1e-7])) == FunctionRewards(values: [0.5, -2, 1e-7]))
        // A reward model's scores are not a reward function's rewards.
        #expect(throws: (any Error).self) { try FunctionRewards(wirePayload: Scores(model: .rewardModel, modelVersion: 1, values: [1]).wirePayload()) }
        #expect(try ValueTests.roundTrip(LogProbRequest(sequences: ValueTests.sequences, policyVersion: 2))
                == LogProbRequest(sequences: ValueTests.sequences, policyVersion: 2))
        let logProbs = LogProbs(values: [[-1, -2], [], [-0.5]], policyVersion: 4)
        #expect(try ValueTests.roundTrip(logProbs) == logProbs)

        var announce = WeightAnnouncement(policyVersion: 3, totalBytes: 96, chunkBytes: 1 << 20,
                                          tensors: [.init(name: "wq", shape: [4, 4], byteLength: 64, crc32c: 0xDEAD_BEEF),
                                                    .init(name: "w1", shape: [8], byteLength: 32, crc32c: 7)],
                                          source: "tcp://10.0.0.1:5000", model: .safetyModel)
        announce.headWeight = [0.25, -0.5]
        announce.headBias = 0.125
        #expect(try ValueTests.roundTrip(announce) == announce)
        #expect(try WeightAnnouncement(wire: announce.wire).modelChecksum == announce.modelChecksum)
        for kind in TrainKind.allCases {
            var batch = TrainBatch(kind: kind)
            batch.sequences = ValueTests.sequences
            batch.learningRate = 1e-5
            batch.policyVersion = 12
            batch.model = .rewardModel
            batch.fromInitial = true
            batch.miniBatchSize = 64
            batch.valueLearningRate = 2e-6
            batch.gamma = 1
            batch.gaeLambda = 0.95
            batch.shuffleSeed = 99
            batch.stateStep = 4
            batch.ppoEpochs = 2
            batch.tensors = [WireTensor(name: "rewards", floats: [0.1, 0.2, 0.3, 0.4, 0.5])]
            #expect(try ValueTests.roundTrip(batch) == batch)
            var stats = TrainStats(kind: kind)
            stats.loss = 0.5
            stats.gradNorm = 1.5
            stats.learningRate = 1e-5
            stats.clipFraction = 0.1
            stats.approxKL = 0.01
            stats.tokens = 77
            stats.step = 8
            stats.policyVersion = 13
            stats.announce = kind == .ppo ? nil : announce
            stats.accuracy = 0.75
            stats.valueLoss = 0.25
            stats.valueClipFraction = 0.2
            stats.gradientSteps = 8
            stats.meanReturn = -0.5
            stats.announces = kind == .announceAll ? [announce, announce] : []
            #expect(try ValueTests.roundTrip(stats) == stats)
        }
    }

    @Test func badBodiesAndTensorsAreRefusedByName() throws {
        // A body that is not the message.
        #expect(throws: WireError.self) { _ = try GenerateRequest(wirePayload: WirePayload(body: [0xFF, 0xFF, 0xFF])) }
        // Samples whose log-probabilities are missing, or one short.
        let samples = Samples(samples: [.init(promptID: 1, index: 0, tokens: [4, 5], finishReason: "length", logProbs: [-1, -2])], policyVersion: 0)
        var payload = try samples.wirePayload()
        payload.tensors = []
        #expect(throws: WireError.self) { _ = try Samples(wirePayload: payload) }
        payload.tensors = [WireTensor(name: "logprobs", floats: [-1])]
        do {
            _ = try Samples(wirePayload: payload)
            Issue.record("samples with one log-probability for two tokens were accepted")
        } catch {
            #expect("\(error)".contains("logprobs") && "\(error)".contains("needs 2"), "\(error)")
        }
        // Log-probabilities whose lengths do not add up to the tensor.
        var lp = try LogProbs(values: [[-1, -2]], policyVersion: 0).wirePayload()
        lp.tensors = [WireTensor(name: "logprobs", floats: [-1, -2, -3])]
        #expect(throws: WireError.self) { _ = try LogProbs(wirePayload: lp) }
        // A model kind the values do not have (a generator's role where a reward model is named).
        var score = Rlhf_V1_ScoreRequest()
        score.model = .generator
        #expect(throws: WireError.self) { _ = try ScoreRequest(wirePayload: WirePayload(body: try score.serializedBytes())) }
        // A batch of no kind.
        #expect(throws: WireError.self) { _ = try TrainBatch(wirePayload: WirePayload(body: try Rlhf_V1_TrainBatch().serializedBytes())) }
        // A weight tensor with a negative dimension.
        var announce = Rlhf_V1_WeightAnnounce()
        var tensor = Rlhf_V1_WeightTensor()
        tensor.name = "wq"
        tensor.shape = [4, -1]
        announce.tensors = [tensor]
        #expect(throws: WireError.self) { _ = try WeightAnnouncement(wire: announce) }
    }
}
