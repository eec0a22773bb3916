@testable import ClusterRuntime
import Foundation
import LlamaCore
import LlamaTraining
import Testing
import TestKit
import Transport
import Wire
@testable import Workers

/// A learner that trains LoRA adapters: what it trains, what a weight sync sends, what consumers
/// install, and its chat model, snapshots and saved state.
@Suite struct LoRALearnerTests {
    static let lora = LoRASettings(rank: 4, alpha: 8, targets: [.wq, .wv, .w2])

    static func learner(_ loop: PollLoop, _ weights: ModelWeights, stateDirectory: String? = nil,
                        lora: LoRASettings? = LoRALearnerTests.lora) throws -> LearnerService {
        var settings = LearnerService.Settings()
        settings.stateDirectory = stateDirectory
        settings.lora = lora
        return try LearnerService(weights: weights, settings: settings, serving: WeightServing(loop: loop, bind: "tcp://127.0.0.1:*", host: "127.0.0.1"))
    }

    static let sft: TrainBatch = {
        var batch = TrainBatch(kind: .sft)
        batch.learningRate = 1e-2
        batch.sequences = [RoleTests.sequence(0, prompt: [1, 30, 31], response: [32, 33, 34, 2]),
                           RoleTests.sequence(1, prompt: [1, 60], response: [61, 62, 2])]
        return batch
    }()

    /// Sum of the response's log-probabilities under `weights`.
    static func logProb(_ weights: ModelWeights, prompt: [Int32] = [1, 30, 31], response: [Int32] = [32, 33, 34, 2]) throws -> Float {
        try TrainableTransformer(weights: weights).tokenLogProbs(sequences: [prompt + response])[0].suffix(response.count).reduce(0, +)
    }

    @Test func itTrainsOnlyTheAdaptersAndAVersionSendsOnlyThem() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let weights = try RoleTests.weights()
        let learner = try LoRALearnerTests.learner(loop, weights)
        let adapters = try #require(learner.trainer.lora)
        // The optimizer holds moments for the adapters alone.
        #expect(learner.optimizer.firstMoments.map(\.count) == [adapters.values.count])
        // Version 0 is the base itself: B starts at zero.
        #expect(learner.currentAnnouncement.lora != nil && learner.currentAnnouncement.totalBytes == UInt64(adapters.values.count * 4))
        var stats = TrainStats(kind: .sft)
        for step in 0..<6 { stats = try learner.train(LoRALearnerTests.sft.with(version: UInt64(step))) }
        let announce = try #require(stats.announce)
        let lora = try #require(announce.lora)
        #expect(lora.rank == 4 && lora.alpha == 8 && lora.targets == ["wq", "wv", "w2"])
        #expect(lora.base.lora == nil && lora.base.modelChecksum == weights.checksum && lora.base.source != announce.source)
        // The version is the adapters' tensors, PEFT-named, a small share of the model's bytes.
        #expect(announce.tensors.first?.name == "layers.0.wq.lora_A" && announce.tensors.count == 3 * weights.config.nLayers * 2)
        #expect(announce.totalBytes == UInt64(adapters.values.count * 4) && announce.totalBytes * 10 < lora.base.totalBytes)
        #expect(announce.modelChecksum == learner.weightsChecksum)
        // The frozen base did not move.
        #expect(learner.trainer.weights.checksum == weights.checksum)

        // A consumer without the base fetches it once, then the adapters alone; both give the adapted policy.
        let first = try WeightFetcher.fetchPolicy(loop: loop, endpoint: announce.source, config: weights.config, expected: announce)
        #expect(first.bytes == announce.totalBytes + lora.base.totalBytes && first.base?.weights.checksum == weights.checksum)
        let merged = adapters.merged(into: weights)
        #expect(first.weights.checksum == merged.checksum)
        #expect(try LoRALearnerTests.logProb(first.weights) > LoRALearnerTests.logProb(weights) + 0.5, "SFT on the adapters raised the answer's log-probability")
        let again = try WeightFetcher.fetchPolicy(loop: loop, endpoint: announce.source, config: weights.config, expected: announce, heldBase: first.base)
        #expect(again.bytes == announce.totalBytes && again.weights.checksum == merged.checksum)
        // The adapted model the learner trains is the merged one the consumer gets.
        let sequence: [Int32] = [1, 60, 61, 62, 2]
        let own = try learner.trainer.tokenLogProbs(sequences: [sequence])[0], installed = try TrainableTransformer(weights: first.weights).tokenLogProbs(sequences: [sequence])[0]
        #expect(zip(own, installed).allSatisfy { abs($0 - $1) < 1e-4 }, "\(own) vs \(installed)")

        // A generator installs the merged policy and reports the announcement's checksum (base and adapters).
        let generator = GeneratorService(model: LlamaModel(weights: weights))
        try generator.install(first.weights, version: first.policyVersion, announce: announce)
        #expect(generator.policyVersion == 6 && generator.weightsChecksum == announce.modelChecksum)
    }

    @Test func announcedAdaptersOfAnotherShapeOrBaseAreRefused() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let weights = try RoleTests.weights()
        let learner = try LoRALearnerTests.learner(loop, weights)
        let announce = try #require(try learner.train(LoRALearnerTests.sft).announce)
        // Over the wire and back, the adapters' settings and base survive.
        #expect(try WeightAnnouncement(wire: announce.wire) == announce)
        // Announced with other settings than the server's: refused before any chunk is applied.
        var other = announce
        other.lora = WeightAnnouncement.Adapters(rank: 2, alpha: 8, targets: ["wq", "wv", "w2"], base: announce.lora!.base)
        #expect(throws: WeightFetcher.Failure.self) {
            _ = try WeightFetcher.fetchPolicy(loop: loop, endpoint: announce.source, config: weights.config, expected: other)
        }
        // A target that is not a matrix an adapter can take is named.
        let bad = WeightAnnouncement.Adapters(rank: 4, alpha: 8, targets: ["wq", "norm"], base: announce.lora!.base)
        #expect { _ = try WeightFetcher.adapterLayout(bad, config: weights.config) } throws: { "\($0)".contains("norm") }
        // Adapters whose base is itself adapters do not parse.
        var nested = announce.wire
        nested.lora.baseWeights = announce.wire
        #expect(throws: WireError.self) { _ = try WeightAnnouncement(wire: nested) }
    }

    @Test func theChatModelMergesTheSFTAdaptersAndRoundsBranchFromSnapshotsOfAdapters() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let dir = TestKit.scratch("lora-learner")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let weights = try RoleTests.weights()
        let learner = try LoRALearnerTests.learner(loop, weights, stateDirectory: dir)
        let untrained = learner.weightsChecksum
        for step in 0..<3 { _ = try learner.train(LoRALearnerTests.sft.with(version: UInt64(step))) }
        let sftPolicy = learner.weightsChecksum
        var mark = TrainBatch(kind: .markInitial)
        mark.policyVersion = 3
        let reference = try #require(try learner.train(mark).announce)
        // The reference is whole weights: the base with the SFT adapters merged in.
        #expect(reference.lora == nil && reference.model == .reference)
        let chat = try WeightFetcher.fetch(loop: loop, endpoint: reference.source, config: weights.config, expected: reference).weights
        #expect(chat.checksum == learner.trainer.lora!.merged(into: weights).checksum && chat.checksum != weights.checksum)
        // Rounds after it: a snapshot holds adapters; "sft" restores the SFT adapters.
        for step in 3..<5 { _ = try learner.train(LoRALearnerTests.sft.with(version: UInt64(step))) }
        var snapshot = TrainBatch(kind: .snapshot)
        snapshot.policyVersion = 5
        snapshot.snapshotName = "V1"
        _ = try learner.train(snapshot)
        #expect(learner.snapshots["V1"]?.count == learner.trainer.lora!.values.count)
        let v1 = learner.weightsChecksum
        _ = try learner.train(LoRALearnerTests.sft.with(version: 5))
        var restore = TrainBatch(kind: .restoreSnapshot)
        restore.policyVersion = 6
        restore.snapshotName = "sft"
        let back = try #require(try learner.train(restore).announce)
        #expect(back.policyVersion == 7 && back.lora != nil && learner.weightsChecksum == sftPolicy)
        let fetched = try WeightFetcher.fetch(loop: loop, endpoint: back.source, config: weights.config, expected: back).weights
        #expect(fetched.checksum == chat.checksum)
        restore.policyVersion = 7
        restore.snapshotName = "V1"
        _ = try learner.train(restore)
        #expect(learner.weightsChecksum == v1)

        // Saved and restored by a new learner: the same adapters, versions, chat model and snapshots.
        var save = TrainBatch(kind: .saveState)
        save.stateStep = 0
        _ = try learner.train(save)
        let fresh = try LoRALearnerTests.learner(loop, weights, stateDirectory: dir)
        #expect(fresh.weightsChecksum == untrained)
        try fresh.restoreState(afterStep: 0)
        #expect(fresh.policyVersion == 8 && fresh.weightsChecksum == v1)
        restore.policyVersion = 8
        restore.snapshotName = "sft"
        _ = try fresh.train(restore)
        #expect(fresh.weightsChecksum == sftPolicy)
        // The policy's state converts to whole weights with the adapters merged in.
        let state = try TrainingState.read(path: dir + "/after-step-1/policy.state")
        #expect(state.lora?.settings == LoRALearnerTests.lora && state.mergedWeights.checksum == learner.trainer.lora!.merged(into: weights).checksum)
        // A learner of whole weights does not take a LoRA state, nor one of another rank.
        let whole = try LoRALearnerTests.learner(loop, weights, stateDirectory: dir, lora: nil)
        #expect { try whole.restoreState(afterStep: 0) } throws: { "\($0)".contains("holds LoRA adapters") }
        let otherRank = try LoRALearnerTests.learner(loop, weights, stateDirectory: dir, lora: LoRASettings(rank: 2, targets: [.wq]))
        #expect { try otherRank.restoreState(afterStep: 0) } throws: { "\($0)".contains("no LoRA adapters of these settings") }
    }

    @Test func everyAlgorithmTrainsTheAdapters() throws {
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let weights = try RoleTests.weights()
        let learner = try LoRALearnerTests.learner(loop, weights)
        let sequences = [RoleTests.sequence(0, prompt: [1, 30], response: [40, 41, 2]), RoleTests.sequence(1, prompt: [1, 30], response: [50, 51, 2])]
        // PPO on per-token rewards (its value model trains whole weights).
        var ppo = TrainBatch(kind: .ppo)
        ppo.learningRate = 1e-2
        ppo.sequences = sequences
        ppo.tensors = [WireTensor(name: "rewards", floats: [0, 0, 1, 0, 0, -1])]
        var before = learner.weightsChecksum
        let ppoStats = try learner.train(ppo)
        #expect(ppoStats.announce?.lora != nil && learner.weightsChecksum != before && ppoStats.loss.isFinite)
        // A GRPO-style policy iteration.
        var group = TrainBatch(kind: .policyIteration)
        group.policyVersion = 1
        group.learningRate = 1e-2
        group.sequences = sequences
        group.tensors = [WireTensor(name: "advantages", floats: [1, 1, 1, -1, -1, -1])]
        before = learner.weightsChecksum
        _ = try learner.train(group)
        #expect(learner.weightsChecksum != before)
        // DPO on a pair.
        var dpo = TrainBatch(kind: .dpo)
        dpo.policyVersion = 2
        dpo.learningRate = 1e-2
        dpo.klBeta = 0.1
        dpo.sequences = sequences
        dpo.tensors = [WireTensor(name: "ref_logprobs", floats: [-9, -9])]
        before = learner.weightsChecksum
        let dpoStats = try learner.train(dpo)
        #expect(learner.weightsChecksum != before && dpoStats.policyVersion == 3)
        #expect(learner.trainer.weights.checksum == weights.checksum, "the base stays frozen")
    }
}
