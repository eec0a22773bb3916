@testable import ClusterRuntime
import Foundation
import LlamaCore
import LlamaTraining
import Testing
import TestKit
import Transport
import Wire
import Workers

/// The roles' compute, driven directly (no network).
@Suite struct RoleTests {
    static let checkpoint = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../LlamaCoreTests/Resources/models/tiny-gqa.bin").standardized.path

    static func weights() throws -> ModelWeights { try Checkpoint.read(path: checkpoint).weights }

    /// A learner of `weights` serving on `loop`, saving its state to `stateDirectory`.
    static func learner(_ loop: PollLoop, _ weights: ModelWeights, stateDirectory: String) throws -> LearnerService {
        var settings = LearnerService.Settings()
        settings.stateDirectory = stateDirectory
        return try LearnerService(weights: weights, settings: settings, serving: WeightServing(loop: loop, bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
    }

    static func sequence(_ id: UInt64, prompt: [Int32], response: [Int32]) -> TokenSequence {
        TokenSequence(id: id, prompt: prompt, response: response)
    }

    @Test func referenceLogProbsMatchTheGeneratorsOwn() async throws {
        let weights = try RoleTests.weights()
        // The roles' distributed actors, called as the coordinator's pools call them (locally here).
        let system = try ClusterActorSystem(bind: nil)
        defer { system.shutdown() }
        let generator = Generator(service: GeneratorService(model: LlamaModel(weights: weights)), actorSystem: system)
        let prompt = GenerateRequest.Prompt(id: 5, tokens: [1, 40, 41, 42])
        let request = GenerateRequest(prompts: [prompt], samplesPerPrompt: 3, sampling: SamplingSettings(temperature: 1, topP: 1), seed: 9,
                                      maxNewTokens: 10)
        let result = try await generator.generate(request)
        #expect(result.samples.map(\.index) == [0, 1, 2] && result.samples.allSatisfy { $0.promptID == 5 })
        let sampled = result.samples.flatMap(\.logProbs)

        // The reference (the training forward pass) scores the same tokens the same way.
        let service = ReferencePolicyService(weights: weights)
        let reference = ReferencePolicy(service: service, actorSystem: system)
        let ask = LogProbRequest(sequences: result.samples.enumerated().map { RoleTests.sequence(UInt64($0), prompt: prompt.tokens, response: $1.tokens) },
                                 policyVersion: 0)
        let answer = try await reference.logProbs(ask)
        let values = answer.values.flatMap { $0 }
        #expect(answer.values.map(\.count) == result.samples.map(\.tokens.count))
        for (a, b) in zip(values, sampled) { #expect(abs(a - b) < 1e-4, "\(a) vs \(b)") }
        #expect(service.tokensProcessed > 0)

        // Another policy version is refused, by name.
        var stale = ask
        stale.policyVersion = 3
        await #expect(throws: LlamaError.self) { _ = try await reference.logProbs(stale) }
    }

    /// A bfloat16 generator (bfloat16 products and KV caches): its samples do not depend on the decode
    /// slots, their log-probabilities stay near the float32 reference's, and an installed policy
    /// keeps the precision.
    @Test func aBFloat16GeneratorSamplesLikeItselfInAnySlotsAndKeepsItsPrecision() throws {
        // The shipped chat model (the tiny random fixtures' attention is too sharp to say much here).
        let weights = try Checkpoint.read(path: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../models/chat-world/sft.bin").standardized.path).weights
        let prompts = [GenerateRequest.Prompt(id: 5, tokens: [1, 40, 41, 42]), GenerateRequest.Prompt(id: 6, tokens: [1, 7])]
        let request = GenerateRequest(prompts: prompts, samplesPerPrompt: 3, sampling: SamplingSettings(temperature: 1, topP: 0.9), seed: 9,
                                      maxNewTokens: 12)
        let results = try [1, 4, 64].map { slots in
            try GeneratorService(model: LlamaModel(weights: weights, precision: .bfloat16), decodeSlots: slots, kvCache: .bfloat16).generate(request)
        }
        #expect(results[1].samples == results[0].samples && results[2].samples == results[0].samples)
        let reference = ReferencePolicyService(weights: weights)
        let ask = LogProbRequest(sequences: results[0].samples.enumerated().map { i, sample in
            RoleTests.sequence(UInt64(i), prompt: prompts[i / 3].tokens, response: sample.tokens)
        }, policyVersion: 0)
        let exact = try reference.logProbs(ask).values.flatMap { $0 }
        let differences = zip(exact, results[0].samples.flatMap(\.logProbs)).map { abs($0 - $1) }
        let mean = differences.reduce(0, +) / Float(differences.count)
        // bfloat16 products and caches move the chat model's log-probabilities by about 0.0015 nats on
        // average, 0.05 at most (measured on 1,280 tokens).
        #expect(mean > 0 && mean < 0.01 && differences.max()! < 0.2, "log-probability differences: mean \(mean), largest \(differences.max()!)")
        let generator = GeneratorService(model: LlamaModel(weights: weights, precision: .bfloat16), kvCache: .bfloat16)
        try generator.install(weights, version: 1)
        #expect(generator.precision == .bfloat16 && generator.kvCache == .bfloat16 && generator.policyVersion == 1)
    }

    @Test func scoresDoNotDependOnBatchCompanions() throws {
        let weights = try RoleTests.weights()
        let model = try RewardModelService(kind: .rewardModel, weights: weights, head: ScalarHead(dim: weights.config.dim, seed: 3))
        let a: [Int32] = [1, 10, 11, 12, 13], b: [Int32] = [1, 50, 51], c: [Int32] = [1, 7, 8, 9, 10, 11, 12]
        let together = try model.scores([a, b, c])
        let alone = try [a, b, c].map { try model.scores([$0])[0] }
        for (x, y) in zip(together, alone) { #expect(abs(x - y) < 1e-5) }
        #expect(Set(together).count == 3)
        // A wrong head width and an empty response are refused with the reason.
        #expect(throws: LlamaError.self) { _ = try RewardModelService(kind: .rewardModel, weights: weights, head: ScalarHead(dim: 3, seed: 1)) }
        var request = ScoreRequest(sequences: [RoleTests.sequence(1, prompt: [1, 2], response: [])], model: .rewardModel)
        do {
            _ = try model.score(request)
            Issue.record("an empty response was scored")
        } catch {
            #expect("\(error)".contains("empty response"))
        }
        request.sequences = [RoleTests.sequence(1, prompt: [1, 2], response: [Int32(weights.config.vocabSize)])]
        #expect(throws: LlamaError.self) { _ = try model.score(request) }
        // The safety model's score is not asked of the reward model.
        request.sequences = [RoleTests.sequence(1, prompt: [1, 2], response: [3])]
        request.model = .safetyModel
        #expect(throws: LlamaError.self) { _ = try model.score(request) }
    }

    @Test func learnerStepsPublishVersionsAndRefuseStaleOrBadBatches() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let weights = try RoleTests.weights()
        let learner = try LearnerService(weights: weights, serving: WeightServing(loop: loop, bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
        #expect(learner.weightsChecksum == weights.checksum)
        var batch = TrainBatch(kind: .sft)
        batch.sequences = [RoleTests.sequence(0, prompt: [1, 30, 31], response: [32, 33, 34, 2]),
                           RoleTests.sequence(1, prompt: [1, 60], response: [61, 62, 2])]
        batch.learningRate = 3e-3
        var losses: [Double] = []
        for step in 0..<4 {
            batch.policyVersion = UInt64(step)
            let stats = try learner.train(batch)
            losses.append(stats.loss)
            #expect(stats.policyVersion == UInt64(step + 1))
            #expect(stats.announce?.policyVersion == UInt64(step + 1))
            #expect(stats.announce?.modelChecksum == learner.weightsChecksum)
            #expect(stats.tokens == 7) // response tokens only: 4 + 3
        }
        #expect(losses.last! < losses.first!, "\(losses)")
        // The published version is fetched whole and verified.
        let (fetched, version) = try WeightFetcher.fetch(loop: loop, endpoint: learner.advertisedEndpoint, config: weights.config)
        #expect(version == 4)
        #expect(fetched.checksum == learner.weightsChecksum)
        #expect(fetched.checksum != weights.checksum)

        batch.policyVersion = 2
        #expect(throws: LlamaError.self) { _ = try learner.train(batch) }
        batch.policyVersion = 4
        batch.learningRate = 0
        #expect(throws: LlamaError.self) { _ = try learner.train(batch) }
        batch.learningRate = 1e-3
        batch.kind = .ppo
        do {
            _ = try learner.train(batch)
            Issue.record("a PPO batch without advantages was applied")
        } catch {
            #expect("\(error)".contains("old_logprobs"))
        }
        #expect(learner.policyVersion == 4)
    }

    @Test func aPPOIterationOnRewardsMovesThePolicyTowardTheRewardedAnswer() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let weights = try RoleTests.weights()
        let learner = try LearnerService(weights: weights, serving: WeightServing(loop: loop, bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
        let good: [Int32] = [40, 41, 2], bad: [Int32] = [50, 51, 2]
        let reference = TrainableTransformer(weights: weights.copy(), pool: ComputePool(threads: 1))
        func logProb(_ model: TrainableTransformer, _ response: [Int32]) throws -> Float {
            try model.tokenLogProbs(sequences: [[1, 30] + response])[0].suffix(response.count).reduce(0, +)
        }
        let before = (good: try logProb(reference, good), bad: try logProb(reference, bad))
        var version: UInt64 = 0
        var stats = TrainStats(kind: .ppo)
        for iteration in 0..<6 {
            var batch = TrainBatch(kind: .ppo)
            batch.learningRate = 1e-3
            batch.policyVersion = version
            batch.miniBatchSize = 2
            batch.shuffleSeed = UInt64(iteration)
            var rewards: [Float] = []
            // Two rollouts of each answer; the score (on the last token) favours the good one, a small KL penalty on every token.
            for i in 0..<4 {
                let response = i % 2 == 0 ? good : bad
                batch.sequences.append(RoleTests.sequence(UInt64(i), prompt: [1, 30], response: response))
                rewards += [-0.01, -0.01, (i % 2 == 0 ? 1 : -1) - 0.01]
            }
            batch.tensors = [WireTensor(name: "rewards", floats: rewards)]
            stats = try learner.train(batch)
            version = stats.policyVersion
        }
        // One published version per iteration, one policy and one value step per mini-batch of 2.
        #expect(learner.policyVersion == 6 && stats.gradientSteps == 2)
        #expect(stats.valueLoss.isFinite && stats.valueLoss >= 0 && stats.loss.isFinite)
        // The served policy now prefers the rewarded answer more than it did.
        let announce = try #require(stats.announce)
        let (trained, _) = try WeightFetcher.fetch(loop: loop, endpoint: announce.source, config: weights.config, expected: announce)
        let after = TrainableTransformer(weights: trained, pool: ComputePool(threads: 1))
        let gain = (try logProb(after, good) - logProb(after, bad)) - (before.good - before.bad)
        #expect(gain > 0.5, "log-probability margin of the rewarded answer grew by \(gain)")
        // Rewards that do not match the response tokens are refused with the counts.
        var bad2 = TrainBatch(kind: .ppo)
        bad2.learningRate = 1e-3
        bad2.policyVersion = 6
        bad2.sequences = [RoleTests.sequence(0, prompt: [1, 30], response: good)]
        #expect(throws: LlamaError.self) {
            bad2.tensors = [WireTensor(name: "rewards", floats: [1])]
            _ = try learner.train(bad2)
        }
        #expect(learner.policyVersion == 6)
    }

    @Test func aLearnerSavesItsStateAndANewOneServesTheSameVersions() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let dir = TestKit.scratch("learner-state")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var settings = LearnerService.Settings()
        settings.stateDirectory = dir
        let weights = try RoleTests.weights()
        let learner = try LearnerService(weights: weights, settings: settings, serving: WeightServing(loop: loop, bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
        var sft = TrainBatch(kind: .sft)
        sft.learningRate = 3e-3
        sft.sequences = [RoleTests.sequence(0, prompt: [1, 30, 31], response: [32, 33, 2])]
        _ = try learner.train(sft)
        var rm = TrainBatch(kind: .rewardRanking)
        rm.model = .safetyModel
        rm.learningRate = 3e-3
        rm.sequences = [RoleTests.sequence(0, prompt: [1, 30], response: [40, 2]), RoleTests.sequence(1, prompt: [1, 30], response: [50, 2])]
        rm.tensors = [WireTensor(name: "margins", floats: [1])]
        _ = try learner.train(rm)
        var save = TrainBatch(kind: .saveState)
        save.stateStep = 2
        let saved = try learner.train(save)
        #expect(saved.policyVersion == 1 && saved.announces.count == 2 && saved.announces[1].model == .safetyModel)
        #expect(FileManager.default.fileExists(atPath: dir + "/after-step-3/policy.state"))
        // A second save keeps this one and the one before, no older.
        save.stateStep = 3
        _ = try learner.train(save)
        save.stateStep = 4
        _ = try learner.train(save)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).sorted() == ["after-step-4", "after-step-5"])

        // A new learner (the old one lost) restores the state after step 3 (0-based; saved again above unchanged).
        let fresh = try LearnerService(weights: weights, settings: settings, serving: WeightServing(loop: loop, bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
        try fresh.restoreState(afterStep: 3)
        #expect(fresh.policyVersion == 1 && fresh.weightsChecksum == learner.weightsChecksum)
        let again = try fresh.train(TrainBatch(kind: .announceAll))
        #expect(again.announces.count == 2)
        #expect(again.announces[1].policyVersion == saved.announces[1].policyVersion && again.announces[1].modelChecksum == saved.announces[1].modelChecksum)
        #expect(again.announces[1].headWeight == saved.announces[1].headWeight)
        // Both continue identically: the optimizer's moments came back too.
        sft.policyVersion = 1
        let a = try learner.train(sft), b = try fresh.train(sft)
        #expect(a.loss == b.loss && learner.weightsChecksum == fresh.weightsChecksum)
        #expect(throws: (any Error).self) { try fresh.restoreState(afterStep: 9) }
    }

    @Test func theLearnerTrainsRewardModelsThatRewardWorkersInstall() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let weights = try RoleTests.weights()
        let learner = try LearnerService(weights: weights, serving: WeightServing(loop: loop, bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
        var batch = TrainBatch(kind: .rewardRanking)
        batch.model = .safetyModel
        batch.learningRate = 3e-3
        // Pairs: chosen then rejected.
        for i in 0..<4 {
            let prompt: [Int32] = [1, Int32(30 + i)]
            batch.sequences.append(RoleTests.sequence(UInt64(2 * i), prompt: prompt, response: [40, 41, 2]))
            batch.sequences.append(RoleTests.sequence(UInt64(2 * i + 1), prompt: prompt, response: [50, 51, 2]))
        }
        let margins = WireTensor(name: "margins", floats: [1, 2.0 / 3.0, 1.0 / 3.0, 0])
        var accuracies: [Double] = []
        var stats = TrainStats(kind: .rewardRanking)
        batch.tensors = [margins]
        for step in 0..<6 {
            batch.policyVersion = UInt64(step)
            stats = try learner.train(batch)
            accuracies.append(stats.accuracy)
            #expect(stats.kind == .rewardRanking && stats.policyVersion == UInt64(step + 1))
        }
        #expect(accuracies.last! == 1, "\(accuracies)")
        #expect(learner.rewardModelVersion(.safetyModel) == 6 && learner.rewardModelVersion(.rewardModel) == 0)
        // The policy is untouched.
        #expect(learner.policyVersion == 0 && learner.weightsChecksum == weights.checksum)
        let announce = try #require(stats.announce)
        #expect(announce.model == .safetyModel && announce.headWeight.count == weights.config.dim)
        #expect(announce.source != learner.advertisedEndpoint)

        // A safety-model worker fetches and installs it (trunk and head) and scores as the learner's model does.
        let worker = try RewardModelService(kind: .safetyModel, weights: weights, head: ScalarHead(dim: weights.config.dim, seed: 9))
        let (fetched, version) = try WeightFetcher.fetch(loop: loop, endpoint: announce.source, config: weights.config, expected: announce)
        try worker.install(fetched, version: version, announce: announce)
        #expect(worker.policyVersion == 6 && worker.weightsChecksum == announce.modelChecksum)
        #expect(worker.head == ScalarHead(weight: announce.headWeight, bias: announce.headBias))
        let scores = try worker.scores([[1, 30, 40, 41, 2], [1, 30, 50, 51, 2]])
        #expect(scores[0] > scores[1])
        // A reward model refuses the other model's weights, and a generator refuses a reward model's.
        let other = try RewardModelService(kind: .rewardModel, weights: weights, head: ScalarHead(dim: weights.config.dim, seed: 9))
        #expect(throws: LlamaError.self) { try other.install(fetched, version: version, announce: announce) }
        let generator = GeneratorService(model: LlamaModel(weights: weights))
        #expect(throws: LlamaError.self) { try generator.install(fetched, version: version, announce: announce) }

        // Refused: a stale version, an odd number of sequences, margins missing, no model named.
        batch.policyVersion = 2
        #expect(throws: LlamaError.self) { _ = try learner.train(batch) }
        batch.policyVersion = 6
        var unmargined = batch
        unmargined.tensors = []
        #expect(throws: LlamaError.self) { _ = try learner.train(unmargined) }
        var odd = batch
        odd.sequences.removeLast()
        #expect(throws: LlamaError.self) { _ = try learner.train(odd) }
        var unnamed = batch
        unnamed.model = .policy
        #expect(throws: LlamaError.self) { _ = try learner.train(unnamed) }
        #expect(learner.rewardModelVersion(.safetyModel) == 6)
    }

    @Test func aBatchFromInitialStartsAgainFromTheChatModel() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let weights = try RoleTests.weights()
        var batch = TrainBatch(kind: .sft)
        batch.sequences = [RoleTests.sequence(0, prompt: [1, 30, 31], response: [32, 33, 34, 2])]
        batch.learningRate = 3e-3
        let fresh = try LearnerService(weights: weights, serving: WeightServing(loop: loop, bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
        _ = try fresh.train(batch)
        let trained = try LearnerService(weights: weights, serving: WeightServing(loop: loop, bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
        for step in 0..<3 {
            batch.policyVersion = UInt64(step)
            _ = try trained.train(batch)
        }
        #expect(trained.weightsChecksum != fresh.weightsChecksum)
        // From the initial weights with a fresh optimizer: the same step as a fresh learner's first, as version 4.
        batch.policyVersion = 3
        batch.fromInitial = true
        let stats = try trained.train(batch)
        #expect(stats.policyVersion == 4)
        #expect(trained.weightsChecksum == fresh.weightsChecksum)
    }


    @Test func aPolicyIterationMovesTheAdvantagedAnswerUpAndRefusesBadFrames() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let weights = try RoleTests.weights()
        let learner = try LearnerService(weights: weights, serving: WeightServing(loop: loop, bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
        let prompt: [Int32] = [1, 30, 31]
        let good: [Int32] = [40, 41, 2], bad: [Int32] = [50, 51, 2]
        let sequences = [RoleTests.sequence(0, prompt: prompt, response: good), RoleTests.sequence(1, prompt: prompt, response: bad)]
        let old = try TrainableTransformer(weights: weights.copy()).tokenLogProbs(sequences: sequences.map { $0.prompt + $0.response })
            .map { Array($0.suffix(3)) }
        var batch = TrainBatch(kind: .policyIteration)
        batch.learningRate = 1e-3
        batch.sequences = sequences
        batch.aggregation = .sequence
        batch.ppoEpochs = 2
        batch.miniBatchSize = 1
        batch.klBeta = 0.04
        batch.tensors = [WireTensor(name: "old_logprobs", floats: Array(old.joined())),
                         WireTensor(name: "advantages", floats: [1, 1, 1, -1, -1, -1]),
                         WireTensor(name: "ref_logprobs", floats: Array(old.joined()))]
        let stats = try learner.train(batch)
        // Two passes of two one-sequence steps, one new version; the reference KL is measured.
        #expect(stats.kind == .policyIteration && stats.policyVersion == 1 && stats.gradientSteps == 4)
        #expect(stats.referenceKL >= 0 && stats.referenceKL.isFinite)
        let announce = try #require(stats.announce)
        let (trained, _) = try WeightFetcher.fetch(loop: loop, endpoint: announce.source, config: weights.config, expected: announce)
        let after = try TrainableTransformer(weights: trained).tokenLogProbs(sequences: sequences.map { $0.prompt + $0.response })
            .map { $0.suffix(3).reduce(0, +) }
        // The advantaged answer gains on the other (both may fall: a random model's steps move every logit).
        let gain = (after[0] - after[1]) - (old[0].reduce(0, +) - old[1].reduce(0, +))
        #expect(gain > 0.5, "log-probability margin of the advantaged answer grew by \(gain)")
        // Missing reference frame with a KL coefficient, wrong lengths, stale versions: refused by name.
        var noReference = batch
        noReference.policyVersion = 1
        noReference.tensors.removeLast()
        #expect { _ = try learner.train(noReference) } throws: { "\($0)".contains("\"ref_logprobs\"") }
        var short = noReference
        short.klBeta = 0
        short.tensors = [WireTensor(name: "old_logprobs", floats: [0, 0]), WireTensor(name: "advantages", floats: [1, 1, 1, 1, 1, 1])]
        #expect { _ = try learner.train(short) } throws: { "\($0)".contains("\"old_logprobs\" has 2 values, expected 6") }
        #expect { _ = try learner.train(batch) } throws: { "\($0)".contains("policy version 0") }
    }

    /// Without "old_logprobs" (generators that sample in bfloat16), the learner takes its own
    /// log-probabilities as the old policy's: the same step as when they are sent.
    @Test func aPolicyIterationWithoutOldLogProbsUsesTheLearnersOwn() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let weights = try RoleTests.weights()
        let sequences = [RoleTests.sequence(0, prompt: [1, 30, 31], response: [40, 41, 2]), RoleTests.sequence(1, prompt: [1, 30], response: [50, 2])]
        let old = try TrainableTransformer(weights: weights.copy()).tokenLogProbs(sequences: sequences.map { $0.prompt + $0.response })
        var batch = TrainBatch(kind: .policyIteration)
        batch.learningRate = 1e-3
        batch.sequences = sequences
        batch.ppoEpochs = 2
        batch.tensors = [WireTensor(name: "advantages", floats: [1, 1, 1, -1, -1])]
        var sent = batch
        sent.tensors.append(WireTensor(name: "old_logprobs", floats: Array(old[0].suffix(3)) + Array(old[1].suffix(2))))
        func checksum(_ b: TrainBatch) throws -> UInt32? {
            let learner = try LearnerService(weights: weights.copy(), serving: WeightServing(loop: loop, bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
            return try learner.train(b).announce?.modelChecksum
        }
        let own = try checksum(batch), given = try checksum(sent)
        #expect(own != nil && own == given)
    }

    @Test func aSnapshotIsRestoredAsANewVersionAndSurvivesTheLearnersState() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let dir = TestKit.scratch("learner-snapshot")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let weights = try RoleTests.weights()
        func learner() throws -> LearnerService { try RoleTests.learner(loop, weights, stateDirectory: dir) }
        let service = try learner()
        var sft = TrainBatch(kind: .sft)
        sft.learningRate = 3e-3
        sft.sequences = [RoleTests.sequence(0, prompt: [1, 30, 31], response: [32, 33, 2])]
        _ = try service.train(sft)
        var snapshot = TrainBatch(kind: .snapshot)
        snapshot.policyVersion = 1
        snapshot.snapshotName = "V5-RS"
        #expect(try service.train(snapshot).policyVersion == 1)
        let kept = service.weightsChecksum
        for step in 1..<3 {
            sft.policyVersion = UInt64(step)
            _ = try service.train(sft)
        }
        #expect(service.weightsChecksum != kept)
        // A branch: the snapshot's weights again, as version 4.
        var restore = TrainBatch(kind: .restoreSnapshot)
        restore.policyVersion = 3
        restore.snapshotName = "V5-RS"
        let restored = try service.train(restore)
        #expect(restored.policyVersion == 4 && service.weightsChecksum == kept && restored.announce?.modelChecksum == kept)
        // An unknown name and a stale version are refused by name.
        restore.policyVersion = 4
        restore.snapshotName = "V9"
        #expect { _ = try service.train(restore) } throws: { "\($0)".contains("no snapshot named \"V9\" (the learner holds: V5-RS)") }
        restore.snapshotName = "V5-RS"
        restore.policyVersion = 2
        #expect(throws: LlamaError.self) { _ = try service.train(restore) }
        // "sft" is the chat model (here the checkpoint), snapshot or not.
        var chat = TrainBatch(kind: .restoreSnapshot)
        chat.policyVersion = 4
        chat.snapshotName = "sft"
        #expect(try service.train(chat).announce?.modelChecksum == weights.checksum)
        restore.policyVersion = 5
        _ = try service.train(restore)
        // Saved with the learner's state, a new learner branches from it too.
        _ = try service.train(sft.with(version: 6))
        var save = TrainBatch(kind: .saveState)
        save.stateStep = 0
        _ = try service.train(save)
        let fresh = try learner()
        try fresh.restoreState(afterStep: 0)
        restore.policyVersion = 7
        _ = try fresh.train(restore)
        #expect(fresh.weightsChecksum == kept && fresh.policyVersion == 8)
    }

    @Test func aDPOStepPrefersTheChosenAnswer() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let weights = try RoleTests.weights()
        let learner = try LearnerService(weights: weights, serving: WeightServing(loop: loop, bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
        let prompt: [Int32] = [1, 30, 31]
        let sequences = [RoleTests.sequence(0, prompt: prompt, response: [40, 41, 2]), RoleTests.sequence(1, prompt: prompt, response: [50, 51, 2])]
        let reference = try TrainableTransformer(weights: weights.copy()).tokenLogProbs(sequences: sequences.map { $0.prompt + $0.response })
            .map { $0.suffix(3).reduce(0, +) }
        var batch = TrainBatch(kind: .dpo)
        batch.learningRate = 3e-3
        batch.klBeta = 0.1
        batch.sequences = sequences
        batch.tensors = [WireTensor(name: "ref_logprobs", floats: reference)]
        var margins: [Double] = []
        for step in 0..<4 {
            batch.policyVersion = UInt64(step)
            let stats = try learner.train(batch)
            #expect(stats.kind == .dpo && stats.policyVersion == UInt64(step + 1))
            margins.append(stats.rewardMargin)
        }
        // The policy starts as the reference (margin 0, loss log 2), then the chosen answer's implicit reward leads.
        #expect(abs(margins[0]) < 1e-4 && margins[3] > margins[1] && margins[3] > 0, "\(margins)")
        var odd = batch
        odd.policyVersion = 4
        odd.sequences = Array(sequences.prefix(1))
        #expect { _ = try learner.train(odd) } throws: { "\($0)".contains("even number of sequences") }
        var noBeta = batch
        noBeta.policyVersion = 4
        noBeta.klBeta = 0
        #expect { _ = try learner.train(noBeta) } throws: { "\($0)".contains("beta must be a positive number") }
        var noReference = batch
        noReference.policyVersion = 4
        noReference.tensors = []
        #expect { _ = try learner.train(noReference) } throws: { "\($0)".contains("\"ref_logprobs\"") }
    }

    @Test func anSFTBatchsMaskFrameWeighsItsResponseTokens() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let weights = try RoleTests.weights()
        func learner() throws -> LearnerService {
            try LearnerService(weights: weights, serving: WeightServing(loop: loop, bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
        }
        // A mask of ones is the default (every response token trained on).
        var plain = TrainBatch(kind: .sft)
        plain.learningRate = 3e-3
        plain.sequences = [RoleTests.sequence(0, prompt: [1, 30, 31], response: [32, 33, 34, 2])]
        var ones = plain
        ones.tensors = [WireTensor(name: "mask", floats: [1, 1, 1, 1])]
        let a = try learner(), b = try learner()
        let sa = try a.train(plain), sb = try b.train(ones)
        #expect(sa.loss == sb.loss && a.weightsChecksum == b.weightsChecksum)
        // A conversation's user turn inside the response weighs 0: another loss and step than with every
        // token weighed.
        var masked = plain
        masked.sequences = [RoleTests.sequence(0, prompt: [1, 30, 31], response: [32, 33, 40, 41, 34, 2])]
        masked.tensors = [WireTensor(name: "mask", floats: [1, 1, 0, 0, 1, 1])]
        var unmasked = masked
        unmasked.tensors = [WireTensor(name: "mask", floats: [1, 1, 1, 1, 1, 1])]
        let c = try learner(), d = try learner()
        let sc = try c.train(masked), sd = try d.train(unmasked)
        #expect(sc.loss.isFinite && sc.loss > 0 && sc.loss != sd.loss && c.weightsChecksum != d.weightsChecksum)
        // A frame of the wrong length is refused by name.
        var wrong = plain
        wrong.tensors = [WireTensor(name: "mask", floats: [1, 1])]
        #expect { _ = try learner().train(wrong) } throws: { "\($0)".contains("\"mask\" has 2 values, expected 4") }
    }

    @Test func markInitialMakesThePolicyTheChatModelAndTheReference() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let dir = TestKit.scratch("learner-mark")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let weights = try RoleTests.weights()
        func learner() throws -> LearnerService { try RoleTests.learner(loop, weights, stateDirectory: dir) }
        let sft = try learner()
        var batch = TrainBatch(kind: .sft)
        batch.learningRate = 3e-3
        batch.sequences = [RoleTests.sequence(0, prompt: [1, 30, 31], response: [32, 33, 34, 2])]
        for step in 0..<2 {
            batch.policyVersion = UInt64(step)
            _ = try sft.train(batch)
        }
        let sftChecksum = sft.weightsChecksum
        // A stale mark is refused; a current one announces the policy as the reference, on its own server.
        var mark = TrainBatch(kind: .markInitial)
        #expect(throws: LlamaError.self) { _ = try sft.train(mark) }
        mark.policyVersion = 2
        let marked = try sft.train(mark)
        let announce = try #require(marked.announce)
        #expect(marked.policyVersion == 2 && announce.model == .reference && announce.policyVersion == 2)
        #expect(announce.modelChecksum == sftChecksum && announce.source != sft.advertisedEndpoint)
        // The reference policy fetches and installs it; a generator refuses it.
        let reference = ReferencePolicyService(weights: weights)
        let (fetched, version) = try WeightFetcher.fetch(loop: loop, endpoint: announce.source, config: weights.config, expected: announce)
        try reference.install(fetched, version: version, announce: announce)
        #expect(reference.policyVersion == 2 && reference.weightsChecksum == sftChecksum)
        #expect(throws: LlamaError.self) { try GeneratorService(model: LlamaModel(weights: weights)).install(fetched, version: version, announce: announce) }

        // Training on, then from the chat model again: back to the marked weights, not the checkpoint's.
        for step in 2..<4 {
            batch.policyVersion = UInt64(step)
            _ = try sft.train(batch)
        }
        let moved = sft.weightsChecksum
        #expect(moved != sftChecksum)
        // The reference is still served as it was made, whatever the policy became.
        let (again, _) = try WeightFetcher.fetch(loop: loop, endpoint: announce.source, config: weights.config, expected: announce)
        #expect(again.checksum == sftChecksum)

        // Saved and restored: a new learner serves the same reference and starts from-SFT rounds from it.
        var save = TrainBatch(kind: .saveState)
        save.stateStep = 0
        let saved = try sft.train(save)
        #expect(saved.announces.map(\.model) == [.policy, .reference])
        #expect(FileManager.default.fileExists(atPath: dir + "/after-step-1/reference.state"))
        let fresh = try learner()
        try fresh.restoreState(afterStep: 0)
        let restored = try fresh.train(TrainBatch(kind: .announceAll)).announces
        #expect(restored.count == 2 && restored[1].model == .reference && restored[1].policyVersion == 2 && restored[1].modelChecksum == sftChecksum)
        #expect(fresh.weightsChecksum == moved)
        var fromInitial = batch
        fromInitial.policyVersion = 4
        fromInitial.fromInitial = true
        _ = try sft.train(fromInitial)
        _ = try fresh.train(fromInitial)
        #expect(sft.weightsChecksum == fresh.weightsChecksum)
        // ... which is one step from the marked weights: a learner started from them takes the same step.
        let fromMarked = try LearnerService(weights: fetched, serving: WeightServing(loop: loop, bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
        var first = batch
        first.policyVersion = 0
        _ = try fromMarked.train(first)
        #expect(fromMarked.weightsChecksum == sft.weightsChecksum)
    }
    @Test func learnerPPOBatchUsesPerResponseTokenTensors() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let learner = try LearnerService(weights: try RoleTests.weights(), serving: WeightServing(loop: loop, bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
        var batch = TrainBatch(kind: .ppo)
        batch.sequences = [RoleTests.sequence(0, prompt: [1, 30], response: [32, 33, 34]),
                           RoleTests.sequence(1, prompt: [1, 60, 61], response: [62, 2])]
        batch.learningRate = 1e-3
        let reference = ReferencePolicyService(weights: try RoleTests.weights())
        let old = try reference.responseLogProbs(batch.sequences.map { $0.prompt + $0.response }, responseLengths: [3, 2])
        let tensors = [WireTensor(name: "old_logprobs", floats: Array(old.joined())),
                       WireTensor(name: "advantages", floats: [1, -1, 0.5, 2, -0.5])]
        batch.tensors = tensors
        let stats = try learner.train(batch)
        // The policy is the old policy: every ratio is 1, nothing clipped, no KL yet.
        #expect(abs(stats.approxKL) < 1e-6)
        #expect(stats.clipFraction == 0)
        #expect(stats.policyVersion == 1)
        // A tensor of the wrong length is refused, naming the count expected.
        batch.policyVersion = 1
        do {
            batch.tensors = [tensors[0], WireTensor(name: "advantages", floats: [1, 2])]
            _ = try learner.train(batch)
            Issue.record("advantages of the wrong length were applied")
        } catch {
            #expect("\(error)".contains("expected 5"))
        }
    }
}

extension TrainBatch {
    /// The batch for another policy version.
    func with(version: UInt64) -> TrainBatch {
        var batch = self
        batch.policyVersion = version
        return batch
    }
}
