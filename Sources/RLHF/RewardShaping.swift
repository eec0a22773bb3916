import Foundation

/// LLaMA2's combination of the two reward models (Touvron et al. 2023, section 3.2.2 and eq. 3): the
/// safety score replaces the helpfulness score on safety prompts and wherever the safety score is low.
///
/// Scores here are raw reward-model outputs (logits); the paper's threshold of 0.15 is on the sigmoid
/// scale, so the gate is `sigmoid(Rs) < 0.15`, i.e. `Rs < ln(0.15 / 0.85) = -1.7346`.
public struct SafetyGate: Sendable, Equatable, Codable {
    /// The threshold on the sigmoid scale (LLaMA2: 0.15).
    public var threshold: Double

    /// A gate at `threshold` (sigmoid scale).
    public init(threshold: Double = 0.15) {
        precondition(threshold > 0 && threshold < 1, "the safety threshold is a probability in (0, 1)")
        self.threshold = threshold
    }

    /// The threshold on the raw (logit) scale: `ln(t / (1 - t))`.
    public var logitThreshold: Double { log(threshold / (1 - threshold)) }

    /// `Rc = Rs` if the prompt is a safety prompt or `sigmoid(Rs) < threshold`, else `Rh`; and whether
    /// the gate replaced the helpfulness score of a non-safety prompt (the gate-hit rate counts these).
    public func combine(helpfulness: Double, safety: Double, isSafetyPrompt: Bool) -> (reward: Double, gateHit: Bool) {
        if isSafetyPrompt { return (safety, false) }
        if safety < logitThreshold { return (safety, true) }
        return (helpfulness, false)
    }

    /// `combine` over parallel arrays; also the share of non-safety prompts' samples whose score the gate replaced.
    public func combine(helpfulness: [Float], safety: [Float], isSafetyPrompt: [Bool]) -> (rewards: [Double], gateHitRate: Double) {
        precondition(helpfulness.count == safety.count && safety.count == isSafetyPrompt.count)
        var rewards: [Double] = [], hits = 0, eligible = 0
        for i in helpfulness.indices {
            let (r, hit) = combine(helpfulness: Double(helpfulness[i]), safety: Double(safety[i]), isSafetyPrompt: isSafetyPrompt[i])
            rewards.append(r)
            if !isSafetyPrompt[i] { eligible += 1 }
            if hit { hits += 1 }
        }
        return (rewards, eligible == 0 ? 0 : Double(hits) / Double(eligible))
    }
}
