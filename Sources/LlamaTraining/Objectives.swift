import Foundation
import LlamaCore

/// What a PPO policy-loss pass reports.
public struct PPOPolicyStats: Sendable {
    /// `sum(mask * -min(r A, clip(r) A)) / normalizer`.
    public var loss: Double
    /// Share of masked tokens whose ratio left `[1 - clip, 1 + clip]`.
    public var clipFraction: Double
    /// Mean over masked tokens of `(r - 1) - log r` (the k3 estimator of KL(old || new)).
    public var approxKL: Double
    /// `(B, T-1)` log-probabilities of `tokens[:, 1:]` under the current policy.
    public var newLogProbs: [[Float]]
    /// With reference log-probabilities: the mean over masked tokens of k3 `exp(ref - logp) - (ref - logp) - 1`
    /// (KL(new || ref)), the penalty's estimate; else 0.
    public var referenceKL = 0.0
}

/// What a preference loss pass reports, per pair: the sequence log-probabilities and the implicit
/// rewards `beta * (logp - ref)`.
public struct PreferenceStats: Sendable, Equatable {
    public var loss = 0.0
    public var chosenLogProbs: [Double] = []
    public var rejectedLogProbs: [Double] = []
    public var chosenRewards: [Double] = []
    public var rejectedRewards: [Double] = []

    /// The share of pairs whose chosen response has the larger implicit reward.
    public var accuracy: Double {
        chosenRewards.isEmpty ? 0 : Double(zip(chosenRewards, rejectedRewards).filter { $0 > $1 }.count) / Double(chosenRewards.count)
    }

    /// The mean implicit reward margin, chosen less rejected.
    public var margin: Double {
        chosenRewards.isEmpty ? 0 : zip(chosenRewards, rejectedRewards).reduce(0) { $0 + $1.0 - $1.1 } / Double(chosenRewards.count)
    }
}

/// How a policy-gradient loss sums its per-token terms over the response tokens of a batch.
public enum LossAggregation: Sendable, Equatable, Codable {
    /// Every response token of the batch weighs the same: `sum / response tokens` (PPO's; DAPO's token level).
    case token
    /// Each sequence's mean term, then the mean over sequences (GRPO as published).
    case sequence
    /// `sum / (sequences x length)`: no normalisation by each response's own length (Dr. GRPO, with the
    /// longest response, or the generation limit, as the length).
    case constant(Int)

    /// The per-target weights `(B, T-1)` and the normalizer of a response mask: the loss is
    /// `sum(weight * term) / normalizer`.
    public func weights(_ mask: [[Float]]) -> (weights: [[Float]], normalizer: Double) {
        switch self {
        case .token:
            return (mask, Double(mask.joined().reduce(0, +)))
        case .sequence:
            return (mask.map { row in
                let length = row.reduce(0, +)
                return length > 0 ? row.map { $0 / length } : row
            }, Double(mask.filter { $0.contains { $0 != 0 } }.count))
        case .constant(let length):
            return (mask, Double(mask.count * max(1, length)))
        }
    }
}

extension TrainableTransformer {
    /// Masked next-token cross-entropy, `-sum(mask * log p) / sum(mask)`: inputs `tokens[:-1]`,
    /// targets `tokens[1:]`, `mask[b][t]` weighting target `t` (SFT zeroes the prompt's). Adds the
    /// gradient to `gradients`; returns the loss. `normalizer` replaces `sum(mask)` when micro-batches
    /// of one step must share it.
    @discardableResult
    public func maskedCrossEntropy(sequences: [[Int32]], mask: [[Float]], normalizer: Double? = nil) throws -> Double {
        try checkTargets(sequences, mask, name: "mask")
        let inputs = sequences.map { Array($0.dropLast()) }
        let batch = try TokenBatch(inputs, config: config)
        let total = normalizer ?? Double(mask.joined().reduce(0, +))
        guard total > 0 else { throw LlamaError.invalidInput("the loss mask selects no target token") }
        let tape = trainingForward(batch)
        var rows: [Int] = [], targets: [Int] = [], weights: [Float] = []
        for (b, s) in sequences.enumerated() {
            for t in 0..<(s.count - 1) where mask[b][t] != 0 {
                rows.append(batch.row(sequence: b, position: t))
                targets.append(Int(s[t + 1]))
                weights.append(mask[b][t] / Float(total))
            }
        }
        let targetIds = targets, rowWeights = weights
        let (loss, dHidden) = languageModelHead(tape, rows: rows) { i, logits in
            -Double(rowWeights[i]) * Losses.crossEntropyGradient(logits, target: targetIds[i], weight: rowWeights[i])
        }
        backward(tape, hiddenGradient: dHidden)
        return loss
    }

    /// The LLaMA2 ranking loss of a reward model (this trunk plus `head`, score at each sequence's
    /// last token) over pairs with margins. Adds the trunk's gradient to `gradients` and returns the
    /// head's with the scores.
    public func rankingLoss(chosen: [[Int32]], rejected: [[Int32]], margins: [Float], head: ScalarHead)
        throws -> (loss: Double, chosenScores: [Float], rejectedScores: [Float], dHeadWeight: [Float], dHeadBias: Float) {
        guard chosen.count == rejected.count, chosen.count == margins.count, !chosen.isEmpty else {
            throw LlamaError.invalidInput("ranking loss needs as many chosen as rejected sequences and margins (\(chosen.count), \(rejected.count), \(margins.count))")
        }
        let batch = try TokenBatch(chosen + rejected, config: config)
        let tape = trainingForward(batch)
        let rows = batch.lastRows
        let scores = head.scores(tape, rows: rows)
        let p = chosen.count
        let (loss, dChosen, dRejected) = Losses.ranking(chosen: Array(scores[..<p]), rejected: Array(scores[p...]), margins: margins)
        let (dHidden, dWeight, dBias) = head.backward(tape, rows: rows, dScores: dChosen + dRejected, model: self)
        backward(tape, hiddenGradient: dHidden)
        return (loss, Array(scores[..<p]), Array(scores[p...]), dWeight, dBias)
    }

    /// PPO's clipped policy loss on response tokens: `r = exp(log p(tokens[1:]) - old)`, loss
    /// `sum(mask * -min(r A, clip(r) A)) / sum(mask)`. Adds the gradient to `gradients`.
    public func ppoPolicyLoss(sequences: [[Int32]], responseMask: [[Float]], oldLogProbs: [[Float]],
                              advantages: [[Float]], clip: Double = 0.2, normalizer: Double? = nil) throws -> PPOPolicyStats {
        try clippedPolicyLoss(sequences: sequences, responseMask: responseMask, weights: responseMask, oldLogProbs: oldLogProbs,
                              advantages: advantages, clip: clip, normalizer: normalizer)
    }

    /// The critic-free methods' policy loss (GRPO, Dr. GRPO, RLOO, REINFORCE++): PPO's clipped surrogate
    /// per response token plus, with `referenceLogProbs`, the KL penalty in the loss, `beta * k3` with
    /// `k3 = exp(ref - logp) - (ref - logp) - 1`; the terms summed as `aggregation` says. Adds the gradient
    /// to `gradients`.
    public func groupPolicyLoss(sequences: [[Int32]], responseMask: [[Float]], oldLogProbs: [[Float]], advantages: [[Float]],
                                referenceLogProbs: [[Float]]? = nil, beta: Double = 0, clip: Double = 0.2,
                                aggregation: LossAggregation = .sequence) throws -> PPOPolicyStats {
        try checkTargets(sequences, responseMask, name: "response mask")
        let (weights, normalizer) = aggregation.weights(responseMask)
        return try clippedPolicyLoss(sequences: sequences, responseMask: responseMask, weights: weights, oldLogProbs: oldLogProbs,
                                     advantages: advantages, clip: clip, normalizer: normalizer,
                                     referenceLogProbs: referenceLogProbs, beta: beta)
    }

    /// `sum(weight * (-min(r A, clip(r) A) + beta * k3)) / normalizer` over the targets (default
    /// normalizer: the weights' sum); statistics over the tokens `responseMask` selects.
    func clippedPolicyLoss(sequences: [[Int32]], responseMask: [[Float]], weights: [[Float]], oldLogProbs: [[Float]],
                           advantages: [[Float]], clip: Double, normalizer: Double?,
                           referenceLogProbs: [[Float]]? = nil, beta: Double = 0) throws -> PPOPolicyStats {
        try checkTargets(sequences, responseMask, name: "response mask")
        try checkTargets(sequences, weights, name: "token weights")
        try checkTargets(sequences, oldLogProbs, name: "old log-probabilities")
        try checkTargets(sequences, advantages, name: "advantages")
        if let referenceLogProbs { try checkTargets(sequences, referenceLogProbs, name: "reference log-probabilities") }
        let inputs = sequences.map { Array($0.dropLast()) }
        let batch = try TokenBatch(inputs, config: config)
        let total = normalizer ?? Double(weights.joined().reduce(0, +))
        guard total > 0 else { throw LlamaError.invalidInput("the response mask selects no token") }
        let tape = trainingForward(batch)
        var rows: [Int] = [], where_: [(Int, Int)] = []
        for (b, s) in sequences.enumerated() {
            for t in 0..<(s.count - 1) {
                rows.append(batch.row(sequence: b, position: t))
                where_.append((b, t))
            }
        }
        // Per-row results: the head calls the loss for several rows at once.
        let count = rows.count
        let logProbs = AlignedBuffer<Double>(count: count), clippedFlags = AlignedBuffer<Double>(count: count)
        let klTerms = AlignedBuffer<Double>(count: count), referenceTerms = AlignedBuffer<Double>(count: count)
        let lp = logProbs.baseAddress, cf = clippedFlags.baseAddress, klp = klTerms.baseAddress, rkp = referenceTerms.baseAddress
        let positions = where_
        let (loss, dHidden) = languageModelHead(tape, rows: rows) { i, logits in
            let (b, t) = positions[i]
            let m = Double(weights[b][t]), inResponse = Double(responseMask[b][t])
            let target = Int(sequences[b][t + 1])
            if m == 0 || inResponse == 0 {
                // Log-probability only; no gradient from tokens outside the response.
                lp[i] = Double(logits[target]) - Losses.logPartition(logits)
                logits.update(repeating: 0)
                return 0
            }
            let old = Double(oldLogProbs[b][t])
            let logProb = Double(logits[target]) - Losses.logPartition(logits)
            var term = Losses.ppoToken(logProb: logProb, oldLogProb: old, advantage: Double(advantages[b][t]), clip: clip)
            if let referenceLogProbs {
                let penalty = Losses.k3Penalty(logProb: logProb, referenceLogProb: Double(referenceLogProbs[b][t]))
                term.loss += beta * penalty.value
                term.dLogProb += beta * penalty.dLogProb
                rkp[i] = inResponse * penalty.value
            }
            _ = Losses.logProbGradient(logits, target: target, scale: Float(term.dLogProb * m / total))
            lp[i] = logProb
            let ratio = exp(logProb - old)
            cf[i] = term.clipped ? inResponse : 0
            klp[i] = inResponse * ((ratio - 1) - log(ratio))
            return term.loss * m / total
        }
        var newLogProbs = sequences.map { [Float](repeating: 0, count: $0.count - 1) }
        var clipped = 0.0, kl = 0.0, referenceKL = 0.0, maskSum = 0.0
        for (i, (b, t)) in positions.enumerated() {
            newLogProbs[b][t] = Float(lp[i])
            clipped += cf[i]
            kl += klp[i]
            if referenceLogProbs != nil { referenceKL += rkp[i] }
            maskSum += Double(responseMask[b][t])
        }
        backward(tape, hiddenGradient: dHidden)
        var stats = PPOPolicyStats(loss: loss, clipFraction: maskSum > 0 ? clipped / maskSum : 0,
                                   approxKL: maskSum > 0 ? kl / maskSum : 0, newLogProbs: newLogProbs)
        stats.referenceKL = maskSum > 0 ? referenceKL / maskSum : 0
        return stats
    }

    /// DPO's loss (or IPO's, or conservative DPO's) over pairs: each response's sequence log-probability
    /// is the sum over the targets its mask selects `(T-1)`; `h = (logp_c - ref_c) - (logp_r - ref_r)`
    /// with the reference's sequence log-probabilities; the loss is the mean over pairs. One forward
    /// pass over chosen and rejected together; adds the gradient to `gradients`.
    public func directPreferenceLoss(chosen: [[Int32]], rejected: [[Int32]], chosenMask: [[Float]], rejectedMask: [[Float]],
                                     referenceChosen: [Double], referenceRejected: [Double], beta: Double,
                                     objective: PreferenceObjective = .sigmoid, labelSmoothing: Double = 0) throws -> PreferenceStats {
        let pairs = chosen.count
        guard pairs > 0, rejected.count == pairs, referenceChosen.count == pairs, referenceRejected.count == pairs else {
            throw LlamaError.invalidInput("a preference loss needs as many chosen as rejected responses and reference log-probabilities of each "
                                          + "(\(chosen.count), \(rejected.count), \(referenceChosen.count), \(referenceRejected.count))")
        }
        guard beta > 0, beta.isFinite else { throw LlamaError.invalidInput("beta must be a positive number, got \(beta)") }
        let sequences = chosen + rejected, mask = chosenMask + rejectedMask
        try checkTargets(sequences, mask, name: "response mask")
        let batch = try TokenBatch(sequences.map { Array($0.dropLast()) }, config: config)
        let tape = trainingForward(batch)
        var rows: [Int] = [], owners: [Int] = [], weights: [Float] = [], targets: [Int] = []
        for (b, s) in sequences.enumerated() {
            for t in 0..<(s.count - 1) where mask[b][t] != 0 {
                rows.append(batch.row(sequence: b, position: t))
                owners.append(b)
                weights.append(mask[b][t])
                targets.append(Int(s[t + 1]))
            }
        }
        guard Set(owners).count == sequences.count else { throw LlamaError.invalidInput("a response's mask selects no token") }
        // The sequences' log-probabilities first (the logits only), then each token's gradient, which
        // depends on its pair's h.
        let perRow = AlignedBuffer<Double>(count: rows.count), values = perRow.baseAddress
        let rowTargets = targets
        _ = languageModelHead(tape, rows: rows, computeGradients: false) { i, logits in
            values[i] = Double(logits[rowTargets[i]]) - Losses.logPartition(logits)
            return 0
        }
        var logProbs = [Double](repeating: 0, count: sequences.count)
        for (i, b) in owners.enumerated() { logProbs[b] += Double(weights[i]) * values[i] }
        var stats = PreferenceStats()
        var dSequence = [Double](repeating: 0, count: sequences.count)
        for p in 0..<pairs {
            let chosenReward = logProbs[p] - referenceChosen[p], rejectedReward = logProbs[pairs + p] - referenceRejected[p]
            let (loss, dH) = Losses.directPreference(h: chosenReward - rejectedReward, beta: beta, objective: objective, labelSmoothing: labelSmoothing)
            stats.loss += loss / Double(pairs)
            dSequence[p] = dH / Double(pairs)
            dSequence[pairs + p] = -dH / Double(pairs)
            stats.chosenRewards.append(beta * chosenReward)
            stats.rejectedRewards.append(beta * rejectedReward)
        }
        stats.chosenLogProbs = Array(logProbs[..<pairs])
        stats.rejectedLogProbs = Array(logProbs[pairs...])
        let rowOwners = owners, rowWeights = weights, dSeq = dSequence
        let (_, dHidden) = languageModelHead(tape, rows: rows) { i, logits in
            _ = Losses.logProbGradient(logits, target: rowTargets[i], scale: Float(dSeq[rowOwners[i]] * Double(rowWeights[i])))
            return 0
        }
        backward(tape, hiddenGradient: dHidden)
        return stats
    }

    /// PPO's clipped value loss with a value head read at every input position (the state before
    /// each target token): `0.5 * mean over masked tokens of max((v - R)^2, (v_clip - R)^2)`. Adds the
    /// trunk's gradient to `gradients` and returns the head's with the values.
    public func valueLoss(sequences: [[Int32]], responseMask: [[Float]], oldValues: [[Float]], returns: [[Float]],
                          head: ScalarHead, clip: Float = 0.2)
        throws -> (loss: Double, clipFraction: Double, values: [[Float]], dHeadWeight: [Float], dHeadBias: Float) {
        try checkTargets(sequences, responseMask, name: "response mask")
        try checkTargets(sequences, oldValues, name: "old values")
        try checkTargets(sequences, returns, name: "returns")
        let (tape, rows) = try everyPosition(sequences)
        let values = head.scores(tape, rows: rows)
        let (loss, dValues, clipFraction) = Losses.clippedValue(values: values, oldValues: Array(oldValues.joined()),
                                                                returns: Array(returns.joined()),
                                                                mask: Array(responseMask.joined()), clip: clip)
        let (dHidden, dWeight, dBias) = head.backward(tape, rows: rows, dScores: dValues, model: self)
        backward(tape, hiddenGradient: dHidden)
        return (loss, clipFraction, TrainableTransformer.perSequence(values, sequences), dWeight, dBias)
    }

    /// A value head read at every input position of `sequences` (no gradient): `(B, T-1)`, entry `t`
    /// the value of the state before target token `t + 1`, what `valueLoss` trains.
    public func tokenValues(sequences: [[Int32]], head: ScalarHead) throws -> [[Float]] {
        let (tape, rows) = try everyPosition(sequences)
        return TrainableTransformer.perSequence(head.scores(tape, rows: rows), sequences)
    }

    /// The forward pass over `sequences[:, :-1]` and its rows of every input position, sequence by
    /// sequence: where a value head is read.
    func everyPosition(_ sequences: [[Int32]]) throws -> (tape: ForwardTape, rows: [Int]) {
        let batch = try TokenBatch(sequences.map { Array($0.dropLast()) }, config: config)
        var rows: [Int] = []
        for (b, s) in sequences.enumerated() {
            for t in 0..<(s.count - 1) { rows.append(batch.row(sequence: b, position: t)) }
        }
        return (forward(batch), rows)
    }

    /// `values` read at `everyPosition(sequences)`'s rows, split back into `(B, T-1)`.
    static func perSequence(_ values: [Float], _ sequences: [[Int32]]) -> [[Float]] {
        var out: [[Float]] = [], cursor = 0
        for s in sequences {
            out.append(Array(values[cursor ..< cursor + s.count - 1]))
            cursor += s.count - 1
        }
        return out
    }

    /// Per-token log-probabilities of `tokens[1:]` given `tokens[:-1]` (no gradient): what the
    /// reference policy serves and what PPO stores as the old policy.
    public func tokenLogProbs(sequences: [[Int32]]) throws -> [[Float]] {
        let batch = try TokenBatch(sequences.map { Array($0.dropLast()) }, config: config)
        let tape = forward(batch)
        var rows: [Int] = [], where_: [(Int, Int)] = []
        for (b, s) in sequences.enumerated() {
            for t in 0..<(s.count - 1) {
                rows.append(batch.row(sequence: b, position: t))
                where_.append((b, t))
            }
        }
        let flat = FloatBuffer(count: rows.count), values = flat.baseAddress
        let positions = where_
        _ = languageModelHead(tape, rows: rows, computeGradients: false) { i, logits in
            let (b, t) = positions[i]
            values[i] = logits[Int(sequences[b][t + 1])] - Float(Losses.logPartition(logits))
            return 0
        }
        var out = sequences.map { [Float](repeating: 0, count: $0.count - 1) }
        for (i, (b, t)) in positions.enumerated() { out[b][t] = values[i] }
        return out
    }

    private func checkTargets(_ sequences: [[Int32]], _ perTarget: [[Float]], name: String) throws {
        guard sequences.count == perTarget.count else {
            throw LlamaError.invalidInput("\(sequences.count) sequences but \(perTarget.count) rows of \(name)")
        }
        for (b, s) in sequences.enumerated() {
            guard s.count >= 2 else { throw LlamaError.invalidInput("sequence \(b) needs at least 2 tokens (an input and a target)") }
            guard perTarget[b].count == s.count - 1 else {
                throw LlamaError.invalidInput("sequence \(b): \(name) has \(perTarget[b].count) entries, expected \(s.count - 1) (one per target token)")
            }
        }
    }
}
