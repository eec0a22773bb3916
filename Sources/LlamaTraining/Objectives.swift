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
        let tape = forward(batch)
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
        let tape = forward(batch)
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
        try checkTargets(sequences, responseMask, name: "response mask")
        try checkTargets(sequences, oldLogProbs, name: "old log-probabilities")
        try checkTargets(sequences, advantages, name: "advantages")
        let inputs = sequences.map { Array($0.dropLast()) }
        let batch = try TokenBatch(inputs, config: config)
        let total = normalizer ?? Double(responseMask.joined().reduce(0, +))
        guard total > 0 else { throw LlamaError.invalidInput("the response mask selects no token") }
        let tape = forward(batch)
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
        let klTerms = AlignedBuffer<Double>(count: count)
        let lp = logProbs.baseAddress, cf = clippedFlags.baseAddress, klp = klTerms.baseAddress
        let positions = where_
        let (loss, dHidden) = languageModelHead(tape, rows: rows) { i, logits in
            let (b, t) = positions[i]
            let m = Double(responseMask[b][t])
            let target = Int(sequences[b][t + 1])
            if m == 0 {
                // Log-probability only; no gradient from tokens outside the response.
                lp[i] = Double(logits[target]) - Losses.logPartition(logits)
                logits.update(repeating: 0)
                return 0
            }
            let old = Double(oldLogProbs[b][t])
            let logProb = Double(logits[target]) - Losses.logPartition(logits)
            let term = Losses.ppoToken(logProb: logProb, oldLogProb: old, advantage: Double(advantages[b][t]), clip: clip)
            _ = Losses.logProbGradient(logits, target: target, scale: Float(term.dLogProb * m / total))
            lp[i] = logProb
            let ratio = exp(logProb - old)
            cf[i] = term.clipped ? m : 0
            klp[i] = m * ((ratio - 1) - log(ratio))
            return term.loss * m / total
        }
        var newLogProbs = sequences.map { [Float](repeating: 0, count: $0.count - 1) }
        var clipped = 0.0, kl = 0.0, maskSum = 0.0
        for (i, (b, t)) in positions.enumerated() {
            newLogProbs[b][t] = Float(lp[i])
            clipped += cf[i]
            kl += klp[i]
            maskSum += Double(responseMask[b][t])
        }
        backward(tape, hiddenGradient: dHidden)
        return PPOPolicyStats(loss: loss, clipFraction: maskSum > 0 ? clipped / maskSum : 0,
                              approxKL: maskSum > 0 ? kl / maskSum : 0, newLogProbs: newLogProbs)
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
