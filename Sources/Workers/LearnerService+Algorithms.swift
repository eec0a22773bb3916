import Foundation
import LlamaCore
import LlamaTraining
import Wire

/// The learner's steps for the algorithms beyond LLaMA2's PPO: the critic-free policy iteration of GRPO,
/// Dr. GRPO, RLOO and REINFORCE++ (advantages computed by the coordinator from the rewards of each
/// prompt's group, or of the batch), and DPO's preference step.
extension LearnerService {
    /// POLICY_ITERATION: `ppoEpochs` passes (at least one) over the batch in a seeded order of
    /// `miniBatchSize`-sequence steps, each the clipped surrogate on the given per-token advantages plus
    /// `klBeta * k3` to the reference, summed as `aggregation` says. The old log-probabilities are the
    /// sampling policy's throughout: the batch's "old_logprobs", or without them (generators that
    /// sample in bfloat16) the learner's own before the first step. The policy is published once, as
    /// the next version.
    func policyIteration(_ batch: TrainBatch, sequences: [[Int32]], mask: [[Float]], tensors: [WireTensor], current: UInt64) throws -> TrainStats {
        let lengths = batch.sequences.map(\.response.count)
        guard lengths.allSatisfy({ $0 > 0 }) else { throw LlamaError.invalidInput("a policy-iteration sequence has no response token") }
        let beta = Double(batch.klBeta)
        guard beta >= 0, beta.isFinite else { throw LlamaError.invalidInput("kl_beta must be a number >= 0, got \(beta)") }
        guard batch.clip >= 0, batch.clip.isFinite else { throw LlamaError.invalidInput("clip must be a number >= 0, got \(batch.clip)") }
        guard batch.ppoEpochs <= 64 else { throw LlamaError.invalidInput("ppo_epochs must be at most 64, got \(batch.ppoEpochs)") }
        let old = tensors.contains { $0.name == "old_logprobs" }
            ? try LearnerService.perResponseToken(tensors, "old_logprobs", lengths, sequences)
            : LearnerService.spread(try trainer.tokenLogProbs(sequences: sequences).enumerated().map { b, row in Array(row.suffix(lengths[b])) },
                                    onto: sequences)
        let advantages = try LearnerService.perResponseToken(tensors, "advantages", lengths, sequences)
        let reference = beta > 0 ? try LearnerService.perResponseToken(tensors, "ref_logprobs", lengths, sequences) : nil
        let aggregation: LossAggregation
        switch batch.aggregation {
        case .token: aggregation = .token
        case .sequence: aggregation = .sequence
        case .constant(let length):
            guard length > 0 else { throw LlamaError.invalidInput("a constant loss aggregation needs a length > 0") }
            aggregation = .constant(length)
        }
        let clip = batch.clip > 0 ? Double(batch.clip) : settings.ppoClip
        var order = Array(sequences.indices)
        var random = SeededGenerator(seed: batch.shuffleSeed)
        let size = batch.miniBatchSize == 0 ? order.count : batch.miniBatchSize
        let parts = (0..<max(1, batch.ppoEpochs)).flatMap { _ -> [[Int]] in
            random.shuffle(&order)
            return stride(from: 0, to: order.count, by: size).map { Array(order[$0 ..< min(order.count, $0 + size)]) }
        }
        var stats = TrainStats(kind: .policyIteration)
        for part in parts {
            trainer.zeroGradients()
            let step = try trainer.groupPolicyLoss(sequences: part.map { sequences[$0] }, responseMask: part.map { mask[$0] },
                                                   oldLogProbs: part.map { old[$0] }, advantages: part.map { advantages[$0] },
                                                   referenceLogProbs: reference.map { r in part.map { r[$0] } }, beta: beta, clip: clip,
                                                   aggregation: aggregation)
            stats.gradNorm += optimizer.update(trainer.trainedGroups, lr: batch.learningRate, pool: trainer.pool)
            stats.loss += step.loss
            stats.clipFraction += step.clipFraction
            stats.approxKL += step.approxKL
            stats.referenceKL += step.referenceKL
        }
        let n = Double(parts.count)
        stats.loss /= n
        stats.clipFraction /= n
        stats.approxKL /= n
        stats.referenceKL /= n
        stats.gradNorm /= n
        stats.gradientSteps = parts.count
        stats.learningRate = Double(batch.learningRate)
        stats.tokens = UInt64(lengths.reduce(0, +))
        return publishPolicy(&stats, after: current)
    }

    /// DPO: one step of the preference loss on pairs (sequences chosen then rejected), the loss on the
    /// response tokens, the reference's sequence log-probabilities in the tensor frame "ref_logprobs".
    func preferenceStep(_ batch: TrainBatch, sequences: [[Int32]], mask: [[Float]], tensors: [WireTensor], current: UInt64) throws -> TrainStats {
        guard !sequences.isEmpty, sequences.count % 2 == 0 else {
            throw LlamaError.invalidInput("a DPO batch has chosen/rejected pairs: an even number of sequences, got \(sequences.count)")
        }
        guard batch.sequences.allSatisfy({ !$0.response.isEmpty }) else { throw LlamaError.invalidInput("a DPO response is empty") }
        guard let tensor = tensors.first(where: { $0.name == "ref_logprobs" }), tensor.dtype == .float32, tensor.floats.count == sequences.count else {
            throw LlamaError.invalidInput("a DPO batch needs the float32 tensor frame \"ref_logprobs\" with one value per sequence (\(sequences.count))")
        }
        guard batch.klBeta > 0, batch.klBeta.isFinite else { throw LlamaError.invalidInput("DPO's beta must be a positive number, got \(batch.klBeta)") }
        guard (0..<0.5).contains(batch.labelSmoothing) else {
            throw LlamaError.invalidInput("label_smoothing must lie in [0, 0.5), got \(batch.labelSmoothing)")
        }
        let reference = tensor.floats.map(Double.init)
        let chosen = stride(from: 0, to: sequences.count, by: 2), rejected = stride(from: 1, to: sequences.count, by: 2)
        trainer.zeroGradients()
        let result = try trainer.directPreferenceLoss(chosen: chosen.map { sequences[$0] }, rejected: rejected.map { sequences[$0] },
                                                      chosenMask: chosen.map { mask[$0] }, rejectedMask: rejected.map { mask[$0] },
                                                      referenceChosen: chosen.map { reference[$0] }, referenceRejected: rejected.map { reference[$0] },
                                                      beta: Double(batch.klBeta), objective: batch.objective == .ipo ? .ipo : .sigmoid,
                                                      labelSmoothing: Double(batch.labelSmoothing))
        var stats = TrainStats(kind: .dpo)
        stats.loss = result.loss
        stats.accuracy = result.accuracy
        stats.rewardMargin = result.margin
        stats.gradNorm = optimizer.update(trainer.trainedGroups, lr: batch.learningRate, pool: trainer.pool)
        stats.learningRate = Double(batch.learningRate)
        stats.tokens = UInt64(batch.sequences.reduce(0) { $0 + $1.response.count })
        stats.gradientSteps = 1
        return publishPolicy(&stats, after: current)
    }

    /// The snapshot name that restores the chat model when no round of that name was snapshotted.
    public static let chatModelSnapshot = "sft"

    /// SNAPSHOT: keeps the policy's weights under the batch's name (replacing an older snapshot of it).
    func snapshot(_ batch: TrainBatch) throws -> TrainStats {
        guard !batch.snapshotName.isEmpty else { throw LlamaError.invalidInput("a snapshot needs a name") }
        let current = policyVersion
        guard batch.policyVersion == current else {
            throw LlamaError.invalidInput("snapshot of policy version \(batch.policyVersion), the learner holds \(current)")
        }
        lock.withLock { snapshots[batch.snapshotName] = trainedValues.copy() }
        var stats = TrainStats(kind: .snapshot)
        stats.policyVersion = current
        return stats
    }

    /// RESTORE_SNAPSHOT: the policy becomes the named snapshot, with fresh optimizer moments and no value
    /// model (the next PPO iteration makes one, as a first one does), published as the next version.
    func restoreSnapshot(_ batch: TrainBatch) throws -> TrainStats {
        let current = policyVersion
        guard batch.policyVersion == current else {
            throw LlamaError.invalidInput("restore of a snapshot for policy version \(batch.policyVersion), the learner holds \(current)")
        }
        // "sft" without a snapshot of that name: the chat model (the checkpoint, or an SFT step's result;
        // with LoRA, the adapters as they started: MARK_INITIAL snapshots an SFT step's adapters as "sft").
        let chatModel = startingAdapters ?? initialWeights.storage
        guard let saved = lock.withLock({ snapshots[batch.snapshotName] ?? (batch.snapshotName == LearnerService.chatModelSnapshot ? chatModel : nil) }) else {
            let known = lock.withLock { snapshots.keys.sorted() }
            throw LlamaError.invalidInput("no snapshot named \"\(batch.snapshotName)\" (the learner holds: \(known.isEmpty ? "none" : known.joined(separator: ", ")))")
        }
        guard saved.count == trainedValues.count else {
            throw LlamaError.invalidInput("snapshot \"\(batch.snapshotName)\" holds \(saved.count) values, the policy trains \(trainedValues.count)")
        }
        trainedValues.update(from: saved)
        optimizer.reset()
        lock.withLock { valueModel = nil }
        var stats = TrainStats(kind: .restoreSnapshot)
        return publishPolicy(&stats, after: current)
    }
}
