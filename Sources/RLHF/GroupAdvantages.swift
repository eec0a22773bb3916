import Foundation

/// The critic-free methods' advantages: no value model, the baseline of a sample's reward comes from
/// the other samples of its prompt (GRPO, Dr. GRPO, RLOO) or of the whole batch (REINFORCE++).
///
/// Rewards come prompt-major: the `group` samples of prompt `g` at `g * group ..< (g + 1) * group`.
public enum GroupAdvantage: String, Sendable, Codable, CaseIterable {
    /// GRPO (Shao et al. 2024, DeepSeekMath): `(r - mean_g) / (std_g + eps)`, the group's unbiased
    /// (n - 1) standard deviation.
    case grpo
    /// Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-like training"): `r - mean_g`, no division by
    /// the group's deviation (which weighs prompts that are too easy or too hard up).
    case drGRPO = "dr_grpo"
    /// RLOO (Ahmadian et al. 2024, "Back to basics"): `r_i - mean_{j != i} r_j`, the leave-one-out mean
    /// as the baseline (unbiased: the baseline does not depend on the sample's own reward).
    case rloo

    /// One advantage per reward `(B)`; `rewards.count` must be a multiple of `group`. A group of one
    /// sample has nothing to compare with: its advantage is 0.
    public func advantages(rewards: [Double], group: Int, eps: Double = 1e-4) -> [Double] {
        precondition(group > 0 && rewards.count % group == 0, "\(rewards.count) rewards are not whole groups of \(group)")
        var out = [Double](repeating: 0, count: rewards.count)
        guard group > 1 else { return out }
        for start in stride(from: 0, to: rewards.count, by: group) {
            let g = rewards[start ..< start + group]
            let sum = g.reduce(0, +), mean = sum / Double(group)
            switch self {
            case .grpo:
                let std = (g.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(group - 1)).squareRoot()
                // A flat group (std 0) with eps 0 would be 0 / 0: no signal, advantage 0.
                for i in g.indices { out[i] = std + eps > 0 ? (rewards[i] - mean) / (std + eps) : 0 }
            case .drGRPO:
                for i in g.indices { out[i] = rewards[i] - mean }
            case .rloo:
                for i in g.indices { out[i] = rewards[i] - (sum - rewards[i]) / Double(group - 1) }
            }
        }
        return out
    }

    /// The share of groups whose rewards are all equal, or that have one answer (no signal: every
    /// advantage is 0). Groups may differ in size (an empty answer is dropped from its group).
    public static func flatGroupShare(_ groups: [[Double]]) -> Double {
        guard !groups.isEmpty else { return 0 }
        return Double(groups.filter { g in g.count < 2 || g.allSatisfy { $0 == g[0] } }.count) / Double(groups.count)
    }

    /// The mean over groups of two or more of the rewards' standard deviation within the group (n - 1).
    public static func meanGroupDeviation(_ groups: [[Double]]) -> Double {
        let compared = groups.filter { $0.count > 1 }
        guard !compared.isEmpty else { return 0 }
        return compared.reduce(0.0) { total, g in
            let mean = g.reduce(0, +) / Double(g.count)
            return total + (g.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(g.count - 1)).squareRoot()
        } / Double(compared.count)
    }
}

/// REINFORCE++ (Hu 2025): the KL penalty to the reference in the reward of every token
/// (`r_t = -beta * kl_t`, plus the sequence's score on its last token), the return to go as each token's
/// advantage (no discount), normalised over every response token of the batch (mean 0, deviation 1): a
/// global baseline instead of a critic or a group's.
public enum ReinforcePlusPlus {
    /// Per-token advantages `(B, T_b)` from each response's score and per-token KL estimates `(B, T_b)`.
    public static func advantages(scores: [Double], kl: [[Double]], beta: Double) -> [[Double]] {
        precondition(scores.count == kl.count, "\(scores.count) scores for \(kl.count) responses")
        var returns: [[Double]] = []
        for (score, perToken) in zip(scores, kl) {
            var g = 0.0
            var row = [Double](repeating: 0, count: perToken.count)
            for t in perToken.indices.reversed() {
                g += -beta * perToken[t] + (t == perToken.count - 1 ? score : 0)
                row[t] = g
            }
            returns.append(row)
        }
        let all = returns.joined()
        guard all.count > 1 else { return returns.map { $0.map { _ in 0 } } }
        let mean = all.reduce(0, +) / Double(all.count)
        let deviation = (all.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(all.count - 1)).squareRoot()
        return returns.map { $0.map { ($0 - mean) / max(deviation, 1e-8) } }
    }
}
