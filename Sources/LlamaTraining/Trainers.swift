import Foundation
import LlamaCore

/// The trainers behind `rlhf train`: language-model training on masked sequences (pretraining: every
/// token; SFT: the answers' tokens only) and reward-model training with LLaMA2's ranking loss.
public enum Trainers {
    /// Trains `model` on `data` (next-token cross-entropy weighted by each sequence's mask).
    public static func languageModel(_ model: TrainableTransformer, data: [MaskedSequence], settings: TrainerSettings, statePath: String,
                                     resume: TrainingState? = nil, progress: (TrainingProgress) -> Void,
                                     shouldStop: () -> Bool = { false }) throws -> TrainingOutcome {
        let loop = try TrainingLoop(model: model, settings: settings, exampleCount: data.count, statePath: statePath, resume: resume)
        return try loop.run(lossAndGradients: { batch in
            let sequences = batch.map { data[$0] }
            let loss = try model.maskedCrossEntropy(sequences: sequences.map(\.ids), mask: sequences.map(\.mask))
            return (loss, sequences.reduce(0) { $0 + $1.ids.count })
        }, progress: progress, shouldStop: shouldStop)
    }

    /// Trains a reward model (`model`, the trunk, plus `head`) on preference pairs with the LLaMA2
    /// ranking loss `-log(sigmoid(r_c - r_r - m(level)))`; the head is trained with the trunk and
    /// updated in place. Returns how the run ended.
    public static func rewardModel(_ model: TrainableTransformer, head: inout ScalarHead, pairs: [PreferenceExample], margins: MarginTable,
                                   settings: TrainerSettings, statePath: String, resume: TrainingState? = nil,
                                   progress: (TrainingProgress) -> Void, shouldStop: () -> Bool = { false }) throws -> TrainingOutcome {
        let dim = model.config.dim
        guard head.weight.count == dim else { throw LlamaError.invalidInput("the head has \(head.weight.count) weights for a model of dim \(dim)") }
        // The head as one parameter group: weight `(D)` then bias.
        let values = FloatBuffer(count: dim + 1), gradients = FloatBuffer(count: dim + 1)
        values.set(head.weight + [head.bias], at: 0)
        let group = ParameterGroup(values: values, gradients: gradients, ranges: [0..<(dim + 1)])
        let current = { ScalarHead(weight: values.array(0..<dim), bias: values.array(dim..<(dim + 1))[0]) }
        let loop = try TrainingLoop(model: model, extraGroups: [group], settings: settings, exampleCount: pairs.count, statePath: statePath,
                                    resume: resume)
        loop.heads = { ["reward": current()] }
        let outcome = try loop.run(lossAndGradients: { batch in
            let chosen = batch.map { pairs[$0].chosen }, rejected = batch.map { pairs[$0].rejected }
            let result = try model.rankingLoss(chosen: chosen, rejected: rejected, margins: batch.map { pairs[$0].margin(margins) },
                                               head: current())
            gradients.set(result.dHeadWeight + [result.dHeadBias], at: 0)
            return (result.loss, chosen.reduce(0) { $0 + $1.count } + rejected.reduce(0) { $0 + $1.count })
        }, progress: progress, shouldStop: shouldStop)
        head = current()
        return outcome
    }

    /// The reward model's scores of `sequences` (read at each one's last token), `batchSize` at a time.
    public static func scores(_ model: TrainableTransformer, head: ScalarHead, sequences: [[Int32]], batchSize: Int = 16) throws -> [Float] {
        var out: [Float] = []
        for start in stride(from: 0, to: sequences.count, by: batchSize) {
            let part = Array(sequences[start ..< min(sequences.count, start + batchSize)])
            let batch = try TokenBatch(part, config: model.config)
            out += head.scores(model.forward(batch, onlyRows: batch.lastRows), rows: batch.lastRows)
        }
        return out
    }

    /// Ranking accuracy (the chosen scored above the rejected) per preference level, as the LLaMA2
    /// paper's Table 8 reports it: `(correct, total)` for each level present, by name (pairs
    /// without a level under `unlabelled`).
    public static func rankingAccuracy(_ model: TrainableTransformer, head: ScalarHead, pairs: [PreferenceExample]) throws -> [String: (correct: Int, total: Int)] {
        let chosen = try scores(model, head: head, sequences: pairs.map(\.chosen))
        let rejected = try scores(model, head: head, sequences: pairs.map(\.rejected))
        var out: [String: (correct: Int, total: Int)] = [:]
        for (i, pair) in pairs.enumerated() {
            var entry = out[pair.levelName] ?? (0, 0)
            entry.total += 1
            if chosen[i] > rejected[i] { entry.correct += 1 }
            out[pair.levelName] = entry
        }
        return out
    }

    /// Splits pairs into training and held-out sets: every pair whose prompt hashes into the last
    /// `heldOutShare` goes to the held-out set, so that no prompt is in both.
    public static func heldOutSplit(_ pairs: [PreferenceExample], heldOutShare: Double = 0.1) -> (train: [PreferenceExample], heldOut: [PreferenceExample]) {
        var train: [PreferenceExample] = [], heldOut: [PreferenceExample] = []
        for pair in pairs {
            let hash = stableHash(pair.chosen.prefix(pair.promptLength).map { UInt32(bitPattern: $0) })
            if Double(hash % 10_000) < heldOutShare * 10_000 { heldOut.append(pair) } else { train.append(pair) }
        }
        return (train, heldOut)
    }
}
