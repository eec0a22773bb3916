import Foundation
import LlamaCore

/// The four preference levels of LLaMA2's annotation protocol, best first.
public enum PreferenceLevel: String, CaseIterable, Codable, Sendable {
    case significantlyBetter = "significantly_better"
    case better
    case slightlyBetter = "slightly_better"
    case negligiblyBetter = "negligibly_better"
}

/// Margin tables of the LLaMA2 ranking loss (Touvron et al. 2023, Table 27).
public enum MarginTable: String, CaseIterable, Codable, Sendable {
    /// 1, 2/3, 1/3, 0.
    case small
    /// 3, 2, 1, 0.
    case large
    /// No margin: the plain binary ranking loss.
    case none

    /// The margin `m(r)` for a pair of preference `level`.
    public func margin(_ level: PreferenceLevel) -> Float {
        switch (self, level) {
        case (.none, _), (_, .negligiblyBetter): return 0
        case (.small, .significantlyBetter): return 1
        case (.small, .better): return 2.0 / 3.0
        case (.small, .slightlyBetter): return 1.0 / 3.0
        case (.large, .significantlyBetter): return 3
        case (.large, .better): return 2
        case (.large, .slightlyBetter): return 1
        }
    }
}

/// Numerically stable `log(1 + exp(x))`.
/// The objective of direct preference optimisation.
public enum PreferenceObjective: String, CaseIterable, Codable, Sendable {
    /// DPO (Rafailov et al. 2023): `-log sigmoid(beta h)`; with label smoothing, conservative DPO.
    case sigmoid
    /// IPO (Azar et al. 2023): `(h - 1 / (2 beta))^2`, which does not push `h` without bound.
    case ipo
}

@inline(__always) func softplus(_ x: Double) -> Double { x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)) }

/// The losses of SFT, reward modelling and PPO as plain functions of scores and log-probabilities.
public enum Losses {
    /// `log sum_j exp(logits[j])` of one row (SIMD exp, sum in float lanes).
    @inline(__always)
    static func logPartition(_ logits: UnsafeMutableBufferPointer<Float>) -> Double {
        Kernels.logSumExp(logits.baseAddress!, logits.count)
    }

    /// `scale * softmax(row)` in place; returns `log Z`.
    @inline(__always)
    static func scaledSoftmaxInPlace(_ logits: UnsafeMutableBufferPointer<Float>, scale: Float) -> Double {
        let base = logits.baseAddress!, n = logits.count
        let m = Kernels.maximum(base, n)
        let sum = Kernels.expShifted(base, base, n, shift: m, scale: 1)
        Kernels.scale(base, n, by: scale / sum)
        return Double(m) + log(Double(sum))
    }

    /// Turns a logit row into `weight * (softmax - onehot(target))` in place, the gradient of
    /// `-weight * log p(target)`, and returns `log p(target)`.
    @inline(__always)
    static func crossEntropyGradient(_ logits: UnsafeMutableBufferPointer<Float>, target: Int, weight: Float) -> Double {
        let targetLogit = Double(logits[target])
        let logZ = scaledSoftmaxInPlace(logits, scale: weight)
        logits[target] -= weight
        return targetLogit - logZ
    }

    /// Turns a logit row into `g * (onehot(target) - softmax)` in place, the gradient of `g * log p(target)`,
    /// and returns `log p(target)` (PPO back-propagates through the log-probability this way).
    @inline(__always)
    static func logProbGradient(_ logits: UnsafeMutableBufferPointer<Float>, target: Int, scale g: Float) -> Double {
        let targetLogit = Double(logits[target])
        let logZ = scaledSoftmaxInPlace(logits, scale: -g)
        logits[target] += g
        return targetLogit - logZ
    }

    /// The LLaMA2 binary ranking loss `mean_i -log sigmoid(r_c - r_r - m_i)` and its gradients with
    /// respect to the chosen and rejected scores.
    public static func ranking(chosen: [Float], rejected: [Float], margins: [Float])
        -> (loss: Double, dChosen: [Float], dRejected: [Float]) {
        precondition(chosen.count == rejected.count && chosen.count == margins.count && !chosen.isEmpty)
        let n = Double(chosen.count)
        var loss = 0.0
        var dChosen = [Float](repeating: 0, count: chosen.count), dRejected = dChosen
        for i in chosen.indices {
            let z = Double(chosen[i]) - Double(rejected[i]) - Double(margins[i])
            loss += softplus(-z) / n
            let g = -1 / (1 + exp(z)) / n // d/dz of softplus(-z), averaged
            dChosen[i] = Float(g)
            dRejected[i] = Float(-g)
        }
        return (loss, dChosen, dRejected)
    }

    /// One token of PPO's clipped surrogate: `-min(r A, clip(r, 1-e, 1+e) A)` with `r = exp(logp - old)`.
    /// Returns the loss term, its derivative with respect to `logp`, and whether the ratio lies outside
    /// the clip range.
    @inline(__always)
    public static func ppoToken(logProb: Double, oldLogProb: Double, advantage: Double, clip: Double)
        -> (loss: Double, dLogProb: Double, clipped: Bool) {
        let ratio = exp(logProb - oldLogProb)
        let unclipped = ratio * advantage
        let clippedRatio = min(max(ratio, 1 - clip), 1 + clip)
        let clippedTerm = clippedRatio * advantage
        // The min picks the unclipped term (and its gradient) unless clipping makes it smaller.
        let useUnclipped = unclipped <= clippedTerm
        return (-min(unclipped, clippedTerm), useUnclipped ? -unclipped : 0, abs(ratio - 1) > clip)
    }

    /// DPO's loss of one pair and its derivative with respect to `h = (logp_c - ref_c) - (logp_r - ref_r)`
    /// (the difference of the implicit rewards over `beta`).
    public static func directPreference(h: Double, beta: Double, objective: PreferenceObjective, labelSmoothing: Double = 0)
        -> (loss: Double, dH: Double) {
        switch objective {
        case .sigmoid:
            // -(1 - e) log sigmoid(beta h) - e log sigmoid(-beta h): conservative DPO with e > 0.
            let z = beta * h, e = labelSmoothing
            let loss = (1 - e) * softplus(-z) + e * softplus(z)
            let sigmoid = 1 / (1 + exp(-z))
            return (loss, beta * (-(1 - e) * (1 - sigmoid) + e * sigmoid))
        case .ipo:
            let target = 1 / (2 * beta)
            return ((h - target) * (h - target), 2 * (h - target))
        }
    }

    /// The k3 estimate of KL(policy || reference) for one sampled token, `exp(ref - logp) - (ref - logp) - 1`
    /// (never negative), and its derivative with respect to `logp`, `1 - exp(ref - logp)`.
    @inline(__always)
    public static func k3Penalty(logProb: Double, referenceLogProb: Double) -> (value: Double, dLogProb: Double) {
        let logRatio = referenceLogProb - logProb, ratio = exp(logRatio)
        return (ratio - logRatio - 1, 1 - ratio)
    }

    /// PPO's clipped value loss over masked tokens: `0.5 * mean max((v - R)^2, (v_clip - R)^2)` with
    /// `v_clip = old + clip(v - old, -e, e)`; returns the loss, `dL/dv` and the clipped fraction.
    public static func clippedValue(values: [Float], oldValues: [Float], returns: [Float], mask: [Float], clip: Float)
        -> (loss: Double, dValues: [Float], clipFraction: Double) {
        precondition(values.count == oldValues.count && values.count == returns.count && values.count == mask.count)
        let count = Double(mask.reduce(0, +))
        guard count > 0 else { return (0, [Float](repeating: 0, count: values.count), 0) }
        var loss = 0.0, clippedCount = 0.0
        var dValues = [Float](repeating: 0, count: values.count)
        for i in values.indices where mask[i] != 0 {
            let v = Double(values[i]), old = Double(oldValues[i]), target = Double(returns[i]), e = Double(clip)
            let vClip = old + min(max(v - old, -e), e)
            let a = (v - target) * (v - target), b = (vClip - target) * (vClip - target)
            loss += 0.5 * max(a, b) * Double(mask[i]) / count
            if a >= b {
                dValues[i] = Float((v - target) * Double(mask[i]) / count)
            } else if abs(v - old) < e {
                dValues[i] = Float((vClip - target) * Double(mask[i]) / count)
            }
            if abs(v - old) > e { clippedCount += Double(mask[i]) }
        }
        return (loss, dValues, clippedCount / count)
    }
}
