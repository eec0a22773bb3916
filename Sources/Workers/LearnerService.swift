import ClusterRuntime
import Distributed
import Foundation
import LlamaCore
import LlamaTraining
import RLHF
import Synchronization
import Wire

/// The learner role's compute: applies training batches to the policy (one AdamW step per batch) and
/// publishes each new policy version on its `WeightServer`, answering with stats whose `announce` tells
/// consumers where and what to fetch. `Learner` is its distributed actor.
///
/// Batches: SFT (`sequences` as prompt + response; the loss is next-token cross-entropy on response
/// tokens only, the prompt's loss zeroed); PPO (tensor frames "old_logprobs" and "advantages", each one
/// value per response token, sequences back to back; the clipped policy loss), or a whole PPO iteration
/// from per-token "rewards" (GAE over the learner's value model, mini-batch steps; `ppoIteration`). A
/// batch for another policy version than the learner's is refused: it was built from stale samples.
public final class LearnerService: RoleService, @unchecked Sendable {
    /// Knobs of the learner.
    public struct Settings: Codable, Sendable {
        public var optimizer: AdamWSettings = .default
        /// PPO's ratio clip.
        public var ppoClip: Double = 0.2
        /// PPO's value clip (around the old values).
        public var valueClip: Double = 0.2
        /// Bytes per weight chunk served to consumers.
        public var chunkBytes: Int = 1 << 20
        /// Where SAVE_STATE writes the learner's state (`after-step-N/`); nil: SAVE_STATE is refused.
        public var stateDirectory: String?
        /// The number format of training's matrix products (bfloat16: bfloat16 operands, float32 sums,
        /// float32 master weights, gradients and optimizer state), for every model the learner trains.
        public var precision: WeightPrecision = .float32
        /// LoRA on the policy: the learner trains only these adapters on the frozen weights it started
        /// from (reward and value models train whole), and each version sends only the adapters.
        public var lora: LoRASettings?
        /// Hugging Face reward models (directories) the reward and safety models start from, with their own
        /// heads, where the spec gives them pretrained; the others start from the chat model and a seeded head.
        public var pretrainedRewardModels: [ModelKind: String] = [:]

        public init() {}
    }

    let trainer: TrainableTransformer
    let optimizer: AdamW
    let settings: Settings
    let server: WeightServer
    /// The endpoint consumers fetch from (the bound port on an address they can reach).
    public let advertisedEndpoint: String
    let lock = NSLock()
    var version: UInt64
    var checksum: UInt32
    var announcement: WeightAnnouncement
    private let tokens = Atomic<UInt64>(0)
    /// The chat model: the weights the learner started from, or the policy as a plan's SFT step left it
    /// (MARK_INITIAL). What reward and value models start from, what from-SFT rounds start again from.
    let initialWeights: ModelWeights
    /// Where the chat model made by MARK_INITIAL is served to the reference-policy workers, and its
    /// announcement (nil: no SFT step ran; the reference holds the checkpoint).
    var reference: (server: WeightServer, advertised: String, announce: WeightAnnouncement)?
    /// The policy's trained parameters kept by SNAPSHOT (its weights' storage, or with LoRA its
    /// adapters), by name, for rounds that branch from them (RESTORE_SNAPSHOT).
    var snapshots: [String: FloatBuffer] = [:]
    /// With LoRA: the frozen base the adapters apply to, served once to each consumer that lacks it.
    var loraBase: (server: WeightServer, announce: WeightAnnouncement)?
    /// With LoRA: the adapters as they started (a from-SFT round before any SFT step starts from them).
    var startingAdapters: FloatBuffer?
    /// Reward models trained here (REWARD_RANKING batches), by kind; made at their first batch.
    var rewardModels: [ModelKind: RewardTraining] = [:]
    /// Where reward models' weight servers are opened.
    let serving: WeightServing

    /// A model with a scalar head in training: a trunk, the head `(D + 1)` (weight then bias) as a
    /// parameter group of its own, and their optimizer. The value model of PPO is one.
    class HeadedTraining {
        let trainer: TrainableTransformer
        let headValues: FloatBuffer
        let headGradients: FloatBuffer
        let optimizer: AdamW

        init(weights: ModelWeights, head: ScalarHead, pool: ComputePool, precision: WeightPrecision, optimizer settings: AdamWSettings) {
            trainer = TrainableTransformer(weights: weights.copy(), pool: pool, precision: precision)
            headValues = FloatBuffer(count: head.weight.count + 1)
            headGradients = FloatBuffer(count: head.weight.count + 1)
            headValues.set(head.weight + [head.bias], at: 0)
            optimizer = AdamW(settings: settings, groupSizes: [trainer.weights.storage.count, headValues.count])
        }

        var head: ScalarHead {
            let dim = headValues.count - 1
            return ScalarHead(weight: headValues.array(0..<dim), bias: headValues.array(dim..<(dim + 1))[0])
        }

        /// The trunk's and the head's parameter groups, in the optimizer's order.
        var groups: [ParameterGroup] {
            [ParameterGroup(model: trainer), ParameterGroup(values: headValues, gradients: headGradients, ranges: [0..<headValues.count])]
        }
    }

    /// A reward model in training: a headed model with its version and the weight server its versions
    /// are fetched from.
    final class RewardTraining: HeadedTraining {
        var version: UInt64 = 0
        let server: WeightServer
        let advertised: String
        /// The announcement of the version served now.
        var announce: WeightAnnouncement?

        init(weights: ModelWeights, head: ScalarHead, pool: ComputePool, precision: WeightPrecision, optimizer settings: AdamWSettings,
             server: WeightServer, advertised: String) {
            self.server = server
            self.advertised = advertised
            super.init(weights: weights, head: head, pool: pool, precision: precision, optimizer: settings)
        }

        /// Publishes the trunk as `version` (the head rides in the announcement) and remembers the announcement.
        func publish(_ version: UInt64, kind: ModelKind, chunkBytes: Int) -> WeightAnnouncement {
            let publisher = WeightPublisher(weights: trainer.weights, policyVersion: version, chunkBytes: chunkBytes, source: advertised)
            server.publish(publisher)
            var announce = publisher.announcement
            announce.model = kind
            let head = self.head
            announce.headWeight = head.weight
            announce.headBias = head.bias
            self.version = version
            self.announce = announce
            return announce
        }
    }

    /// A learner training a copy of `weights` (version `policyVersion`) on `threads` threads, serving its
    /// versions on weight servers opened where `serving` says.
    public init(weights: ModelWeights, threads: Int = 1, policyVersion: UInt64 = 0, settings: Settings = Settings(),
                serving: WeightServing) throws {
        initialWeights = weights.copy()
        self.serving = serving
        trainer = TrainableTransformer(weights: weights.copy(), pool: ComputePool(threads: threads), precision: settings.precision)
        if let lora = settings.lora {
            let adapters = try LoRAAdapters(config: weights.config, settings: lora)
            trainer.lora = adapters
            startingAdapters = adapters.values.copy()
            let (baseServer, baseAdvertised) = try serving.open()
            let base = WeightPublisher(weights: trainer.weights, policyVersion: policyVersion, chunkBytes: settings.chunkBytes, source: baseAdvertised)
            baseServer.publish(base)
            loraBase = (baseServer, base.announcement)
        }
        optimizer = AdamW(settings: settings.optimizer, groupSizes: trainer.trainedGroups.map(\.values.count))
        self.settings = settings
        (server, advertisedEndpoint) = try serving.open()
        version = policyVersion
        let publisher = LearnerService.policyPublisher(trainer, base: loraBase?.announce, version: policyVersion, settings: settings,
                                                       source: advertisedEndpoint)
        server.publish(publisher)
        announcement = publisher.announcement
        checksum = publisher.announcement.modelChecksum
    }

    public var policyVersion: UInt64 { lock.withLock { version } }
    public var weightsChecksum: UInt32 { lock.withLock { checksum } }
    public var tokensProcessed: UInt64 { tokens.load(ordering: .relaxed) }
    public var modelConfig: LlamaConfig? { trainer.config }
    /// The announcement of the version served now.
    public var currentAnnouncement: WeightAnnouncement { lock.withLock { announcement } }

    public func hostActor(on actorSystem: ClusterActorSystem, as name: String) -> any DistributedActor {
        let actor = Learner(service: self, actorSystem: actorSystem)
        actorSystem.publish(actor, as: name)
        return actor
    }

    /// One optimizer step on `batch`; publishes the new version and returns its stats.
    public func train(_ batch: TrainBatch) throws -> TrainStats {
        let tensors = batch.tensors
        if batch.kind == .rewardRanking { return try trainRewardModel(batch, tensors: tensors) }
        if batch.kind == .saveState { return try saveState(afterStep: batch.stateStep) }
        if batch.kind == .announceAll { return announceAll() }
        if batch.kind == .markInitial { return try markInitial(batch) }
        if batch.kind == .snapshot { return try snapshot(batch) }
        if batch.kind == .restoreSnapshot { return try restoreSnapshot(batch) }
        let current = policyVersion
        guard batch.policyVersion == current else {
            throw LlamaError.invalidInput("train batch for policy version \(batch.policyVersion), the learner holds \(current)")
        }
        guard batch.learningRate > 0, batch.learningRate.isFinite else {
            throw LlamaError.invalidInput("learning_rate must be a positive number, got \(batch.learningRate)")
        }
        let sequences = try joinedSequences(batch.sequences, config: trainer.config)
        // Targets are tokens 1..<n: target t is a response token when t + 1 >= prompt length. An SFT
        // batch's "mask" frame weighs each response token (a conversation's user turns weigh 0).
        let mask = batch.kind == .sft && tensors.contains(where: { $0.name == "mask" })
            ? try LearnerService.perResponseToken(tensors, "mask", batch.sequences.map(\.response.count), sequences)
            : zip(sequences, batch.sequences).map { joined, s in
                (0..<(joined.count - 1)).map { t -> Float in t + 1 >= s.prompt.count ? 1 : 0 }
            }
        if batch.fromInitial {
            // A fresh fine-tune of the chat model: its weights back, the optimizer's moments forgotten.
            trainer.weights.storage.set(initialWeights.storage.array(0..<initialWeights.storage.count), at: 0)
            optimizer.reset()
        }
        var stats = TrainStats(kind: batch.kind)
        trainer.zeroGradients()
        switch batch.kind {
        case .sft:
            stats.loss = try trainer.maskedCrossEntropy(sequences: sequences, mask: mask)
        case .ppo where tensors.contains { $0.name == "rewards" }:
            return try ppoIteration(batch, sequences: sequences, mask: mask, tensors: tensors, current: current)
        case .ppo:
            let responseLengths = batch.sequences.map(\.response.count)
            let old = try LearnerService.perResponseToken(tensors, "old_logprobs", responseLengths, sequences)
            let advantages = try LearnerService.perResponseToken(tensors, "advantages", responseLengths, sequences)
            let ppo = try trainer.ppoPolicyLoss(sequences: sequences, responseMask: mask, oldLogProbs: old,
                                                advantages: advantages, clip: settings.ppoClip)
            stats.loss = ppo.loss
            stats.clipFraction = ppo.clipFraction
            stats.approxKL = ppo.approxKL
        case .policyIteration:
            return try policyIteration(batch, sequences: sequences, mask: mask, tensors: tensors, current: current)
        case .dpo:
            return try preferenceStep(batch, sequences: sequences, mask: mask, tensors: tensors, current: current)
        case .rewardRanking, .saveState, .announceAll, .markInitial, .snapshot, .restoreSnapshot:
            throw LlamaError.invalidInput("unknown train batch kind \(batch.kind.rawValue)")
        }
        stats.gradNorm = optimizer.update(trainer.trainedGroups, lr: batch.learningRate, pool: trainer.pool)
        stats.learningRate = Double(batch.learningRate)
        stats.tokens = UInt64(batch.sequences.reduce(0) { $0 + $1.response.count })
        return publishPolicy(&stats, after: current)
    }

    /// The policy as `version` for consumers: its whole weights, or with LoRA only its adapters (on `base`).
    static func policyPublisher(_ trainer: TrainableTransformer, base: WeightAnnouncement?, version: UInt64, settings: Settings,
                                source: String) -> WeightPublisher {
        guard let adapters = trainer.lora, let base else {
            return WeightPublisher(weights: trainer.weights, policyVersion: version, chunkBytes: settings.chunkBytes, source: source)
        }
        let lora = WeightAnnouncement.Adapters(rank: adapters.settings.rank, alpha: adapters.settings.alpha,
                                               targets: adapters.settings.targets.map(\.name), base: base)
        return WeightPublisher(tensors: adapters.tensorSet, policyVersion: version, chunkBytes: settings.chunkBytes, source: source, lora: lora)
    }

    /// What the optimizer trains of the policy, in one buffer: its weights, or with LoRA its adapters.
    var trainedValues: FloatBuffer { trainer.lora?.values ?? trainer.weights.storage }

    /// Publishes the policy as version `current + 1` and completes `stats` with it.
    func publishPolicy(_ stats: inout TrainStats, after current: UInt64) -> TrainStats {
        tokens.add(stats.tokens, ordering: .relaxed)
        stats.step = UInt64(optimizer.step)
        let publisher = LearnerService.policyPublisher(trainer, base: loraBase?.announce, version: current + 1, settings: settings,
                                                       source: advertisedEndpoint)
        server.publish(publisher)
        lock.withLock {
            version = current + 1
            announcement = publisher.announcement
            checksum = publisher.announcement.modelChecksum
        }
        stats.policyVersion = current + 1
        stats.announce = publisher.announcement
        return stats
    }

    /// The value model of PPO: a trunk with a scalar head read at every position, trained with the
    /// clipped value loss. Made at the first PPO iteration from the helpfulness reward model trained
    /// here (LLaMA2 initialises its value model from the reward model), else from the chat model.
    var valueModel: HeadedTraining?

    /// One PPO iteration on a batch of rollouts whose per-token rewards (the KL penalty on every token,
    /// the whitened score on the last) came in the tensor frame "rewards": the policy's old
    /// log-probabilities and the value model's old values computed here, GAE per rollout, advantages
    /// whitened over the batch, then `ppo_epochs` passes (one by default) in which each mini-batch (a
    /// seeded order, new every pass) takes one clipped policy step and one clipped value step. The policy
    /// is published once, as the next version.
    func ppoIteration(_ batch: TrainBatch, sequences: [[Int32]], mask: [[Float]], tensors: [WireTensor],
                      current: UInt64) throws -> TrainStats {
        let responseLengths = batch.sequences.map(\.response.count)
        guard responseLengths.allSatisfy({ $0 > 0 }) else { throw LlamaError.invalidInput("a PPO rollout has no response token") }
        let rewards = try LearnerService.perResponseToken(tensors, "rewards", responseLengths, sequences)
        let gamma = batch.gamma == 0 && batch.gaeLambda == 0 ? 1 : Double(batch.gamma)
        let lambda = batch.gamma == 0 && batch.gaeLambda == 0 ? 0.95 : Double(batch.gaeLambda)
        guard (0...1).contains(gamma), (0...1).contains(lambda) else {
            throw LlamaError.invalidInput("gamma and gae_lambda must lie in [0, 1], got \(gamma) and \(lambda)")
        }
        let valueRate = batch.valueLearningRate == 0 ? batch.learningRate : batch.valueLearningRate
        guard valueRate > 0, valueRate.isFinite else { throw LlamaError.invalidInput("value_learning_rate must be a positive number, got \(valueRate)") }
        guard batch.ppoEpochs <= 64 else { throw LlamaError.invalidInput("ppo_epochs must be at most 64, got \(batch.ppoEpochs)") }
        let critic = lock.withLock { () -> HeadedTraining in
            if let existing = valueModel { return existing }
            let made: HeadedTraining
            if let rm = rewardModels[.rewardModel] {
                made = HeadedTraining(weights: rm.trainer.weights, head: rm.head, pool: trainer.pool, precision: settings.precision, optimizer: settings.optimizer)
            } else {
                made = HeadedTraining(weights: initialWeights, head: ScalarHead(dim: trainer.config.dim, seed: 3), pool: trainer.pool,
                                      precision: settings.precision, optimizer: settings.optimizer)
            }
            valueModel = made
            return made
        }
        // The old policy and old values, then GAE on each rollout's response tokens.
        let oldLogProbs = try trainer.tokenLogProbs(sequences: sequences)
        let oldValues = try critic.trainer.tokenValues(sequences: sequences, head: critic.head)
        var advantages: [[Double]] = [], returns: [[Double]] = []
        for (b, joined) in sequences.enumerated() {
            let first = joined.count - 1 - responseLengths[b]
            let r = (first..<(joined.count - 1)).map { Double(rewards[b][$0]) }
            let v = (first..<(joined.count - 1)).map { Double(oldValues[b][$0]) }
            let (a, ret) = PPOMath.gae(rewards: r, values: v, gamma: gamma, lambda: lambda)
            advantages.append(a)
            returns.append(ret)
        }
        let meanReturn = returns.flatMap { $0 }.reduce(0, +) / Double(max(1, responseLengths.reduce(0, +)))
        let whitened = PPOMath.whiten(advantages)
        let advantageRows = LearnerService.spread(whitened.map { $0.map(Float.init) }, onto: sequences)
        let returnRows = LearnerService.spread(returns.map { $0.map(Float.init) }, onto: sequences)
        var order = Array(sequences.indices)
        var random = SeededGenerator(seed: batch.shuffleSeed)
        let size = batch.miniBatchSize == 0 ? order.count : batch.miniBatchSize
        var stats = TrainStats(kind: .ppo)
        var steps = 0
        // Every epoch a new order: the old log-probabilities, values and advantages stay those of the
        // policy that sampled the rollouts, so later epochs' ratios move away from 1 and the clip bites.
        let miniBatches = (0..<max(1, batch.ppoEpochs)).flatMap { _ -> [[Int]] in
            random.shuffle(&order)
            return stride(from: 0, to: order.count, by: size).map { Array(order[$0 ..< min(order.count, $0 + size)]) }
        }
        for part in miniBatches {
            let s = part.map { sequences[$0] }, m = part.map { mask[$0] }
            trainer.zeroGradients()
            let policy = try trainer.ppoPolicyLoss(sequences: s, responseMask: m, oldLogProbs: part.map { oldLogProbs[$0] },
                                                   advantages: part.map { advantageRows[$0] }, clip: settings.ppoClip)
            stats.gradNorm += optimizer.update(trainer.trainedGroups, lr: batch.learningRate, pool: trainer.pool)
            critic.trainer.zeroGradients()
            let value = try critic.trainer.valueLoss(sequences: s, responseMask: m, oldValues: part.map { oldValues[$0] },
                                                     returns: part.map { returnRows[$0] }, head: critic.head, clip: Float(settings.valueClip))
            critic.headGradients.set(value.dHeadWeight + [value.dHeadBias], at: 0)
            _ = critic.optimizer.update(critic.groups, lr: valueRate, pool: critic.trainer.pool)
            stats.loss += policy.loss
            stats.clipFraction += policy.clipFraction
            stats.approxKL += policy.approxKL
            stats.valueLoss += value.loss
            stats.valueClipFraction += value.clipFraction
            steps += 1
        }
        let n = Double(max(1, steps))
        stats.loss /= n
        stats.clipFraction /= n
        stats.approxKL /= n
        stats.valueLoss /= n
        stats.valueClipFraction /= n
        stats.gradNorm /= n
        stats.gradientSteps = steps
        stats.meanReturn = meanReturn
        stats.learningRate = Double(batch.learningRate)
        stats.tokens = UInt64(responseLengths.reduce(0, +))
        return publishPolicy(&stats, after: current)
    }

    /// MARK_INITIAL: the policy as it is now becomes the chat model (`initialWeights`), served to the
    /// reference-policy workers as the version it was made at; answers with that announcement.
    func markInitial(_ batch: TrainBatch) throws -> TrainStats {
        let current = policyVersion
        guard batch.policyVersion == current else {
            throw LlamaError.invalidInput("mark-initial for policy version \(batch.policyVersion), the learner holds \(current)")
        }
        var stats = TrainStats(kind: .markInitial)
        stats.announce = try lock.withLock { () throws -> WeightAnnouncement in
            // With LoRA the chat model is the base with the adapters merged in; the adapters as they are
            // now are what a from-SFT round starts again from.
            let chatModel = trainer.lora.map { $0.merged(into: trainer.weights) } ?? trainer.weights
            initialWeights.storage.update(from: chatModel.storage)
            if let adapters = trainer.lora { snapshots[LearnerService.chatModelSnapshot] = adapters.values.copy() }
            return try publishReference(version: current)
        }
        stats.policyVersion = current
        return stats
    }

    /// Serves `initialWeights` as the reference's `version` (opening its weight server the first time)
    /// and returns the announcement. The caller holds `lock`.
    func publishReference(version: UInt64) throws -> WeightAnnouncement {
        let (server, advertised) = try reference.map { ($0.server, $0.advertised) } ?? serving.open()
        let publisher = WeightPublisher(weights: initialWeights, policyVersion: version, chunkBytes: settings.chunkBytes, source: advertised)
        server.publish(publisher)
        var announce = publisher.announcement
        announce.model = .reference
        reference = (server, advertised, announce)
        return announce
    }

    /// The version of the reward model `kind` trained here (0 before its first batch).
    public func rewardModelVersion(_ kind: ModelKind) -> UInt64 { lock.withLock { rewardModels[kind]?.version ?? 0 } }

    /// One step of LLaMA2's ranking loss on the reward model `batch.model`: sequences are pairs, chosen
    /// then rejected; the tensor frame "margins" has one margin per pair. The reward model starts from
    /// the learner's initial weights (the chat model) with a seeded head; each step publishes its new
    /// version (trunk, and the head in the announcement) on a weight server of its own.
    func trainRewardModel(_ batch: TrainBatch, tensors: [WireTensor]) throws -> TrainStats {
        let kind = batch.model
        guard kind == .rewardModel || kind == .safetyModel else {
            throw LlamaError.invalidInput("a reward-ranking batch names its model: the reward-model or the safety-model, not the \(kind.rawValue)")
        }
        guard batch.learningRate > 0, batch.learningRate.isFinite else {
            throw LlamaError.invalidInput("learning_rate must be a positive number, got \(batch.learningRate)")
        }
        guard !batch.sequences.isEmpty, batch.sequences.count % 2 == 0 else {
            throw LlamaError.invalidInput("a reward-ranking batch has chosen/rejected pairs: an even number of sequences, got \(batch.sequences.count)")
        }
        let pairs = batch.sequences.count / 2
        guard let tensor = tensors.first(where: { $0.name == "margins" }), tensor.dtype == .float32, tensor.floats.count == pairs else {
            throw LlamaError.invalidInput("a reward-ranking batch needs the float32 tensor frame \"margins\" with one value per pair (\(pairs))")
        }
        let model = try lock.withLock { () throws -> RewardTraining in
            if let existing = rewardModels[kind] { return existing }
            // As the model's workers hold it at version 0: a pretrained reward model, else the chat model with a seeded head.
            let (weights, head): (ModelWeights, ScalarHead)
            if let directory = settings.pretrainedRewardModels[kind] {
                let read = try HuggingFaceCheckpoint.readRewardModel(directory: directory)
                (weights, head) = (read.weights, ScalarHead(weight: read.head, bias: 0))
            } else {
                (weights, head) = (initialWeights, ScalarHead(dim: trainer.config.dim, seed: kind == .safetyModel ? 2 : 1))
            }
            let (server, advertised) = try serving.open()
            let made = RewardTraining(weights: weights, head: head, pool: trainer.pool, precision: settings.precision, optimizer: settings.optimizer,
                                      server: server, advertised: advertised)
            rewardModels[kind] = made
            return made
        }
        let joined = try joinedSequences(batch.sequences, config: model.trainer.config)
        guard batch.policyVersion == model.version else {
            throw LlamaError.invalidInput("train batch for \(kind.rawValue) version \(batch.policyVersion), the learner's is at \(model.version)")
        }
        let chosen = stride(from: 0, to: joined.count, by: 2).map { joined[$0] }, rejected = stride(from: 1, to: joined.count, by: 2).map { joined[$0] }
        model.trainer.zeroGradients()
        let result = try model.trainer.rankingLoss(chosen: chosen, rejected: rejected, margins: tensor.floats, head: model.head)
        model.headGradients.set(result.dHeadWeight + [result.dHeadBias], at: 0)
        let norm = model.optimizer.update(model.groups, lr: batch.learningRate, pool: model.trainer.pool)
        let next = model.version + 1
        let announce = lock.withLock { model.publish(next, kind: kind, chunkBytes: settings.chunkBytes) }
        let trained = UInt64(joined.reduce(0) { $0 + $1.count })
        tokens.add(trained, ordering: .relaxed)
        var stats = TrainStats(kind: .rewardRanking)
        stats.loss = result.loss
        stats.gradNorm = norm
        stats.learningRate = Double(batch.learningRate)
        stats.tokens = trained
        stats.step = UInt64(model.optimizer.step)
        stats.policyVersion = next
        // The share of pairs ranked right before the step.
        stats.accuracy = Double(zip(result.chosenScores, result.rejectedScores).filter { $0 > $1 }.count) / Double(pairs)
        stats.announce = announce
        return stats
    }

    /// A per-response-token tensor spread onto `(B, T-1)` target rows (zeros on the prompt's targets).
    static func perResponseToken(_ tensors: [WireTensor], _ name: String, _ responseLengths: [Int],
                                 _ sequences: [[Int32]]) throws -> [[Float]] {
        guard let tensor = tensors.first(where: { $0.name == name }), tensor.dtype == .float32 else {
            throw LlamaError.invalidInput("the batch needs the float32 tensor frame \"\(name)\"")
        }
        let values = tensor.floats
        let expected = responseLengths.reduce(0, +)
        guard values.count == expected else {
            throw LlamaError.invalidInput("tensor \"\(name)\" has \(values.count) values, expected \(expected) (one per response token)")
        }
        var cursor = 0
        let perResponse = responseLengths.map { length -> [Float] in
            defer { cursor += length }
            return Array(values[cursor ..< cursor + length])
        }
        return spread(perResponse, onto: sequences)
    }

    /// Per-response-token values (each row as long as its response) placed on the `(B, T-1)` target
    /// rows of the joined `sequences`, the response's targets last; zeros on the prompt's targets.
    static func spread(_ perResponse: [[Float]], onto sequences: [[Int32]]) -> [[Float]] {
        zip(sequences, perResponse).map { joined, values in
            var row = [Float](repeating: 0, count: joined.count - 1)
            for (j, x) in values.enumerated() { row[joined.count - 1 - values.count + j] = x }
            return row
        }
    }
}
