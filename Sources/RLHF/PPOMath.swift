import Foundation

/// How the KL between the policy and the reference policy is estimated per token from the sampled
/// token's log-probabilities (Schulman, "Approximating KL divergence", 2020).
public enum KLEstimator: String, Sendable, Codable, CaseIterable {
    /// `log pi - log pi_ref`: unbiased, can be negative per token (the default; what LLaMA2's penalty reads).
    case k1
    /// `(r - 1) - log r` with `r = pi_ref / pi`: unbiased, never negative, lower variance.
    case k3

    /// The estimate for one sampled token.
    public func estimate(logProb: Double, referenceLogProb: Double) -> Double {
        switch self {
        case .k1: return logProb - referenceLogProb
        case .k3:
            let logRatio = referenceLogProb - logProb
            return exp(logRatio) - 1 - logRatio
        }
    }

    /// Per-token estimates of a response: `policy` and `reference` are `(T)` log-probabilities of the
    /// same sampled tokens.
    public func perToken(policy: [Float], reference: [Float]) -> [Double] {
        precondition(policy.count == reference.count, "policy and reference log-probabilities differ in length")
        return zip(policy, reference).map { estimate(logProb: Double($0), referenceLogProb: Double($1)) }
    }
}

/// Whitening of the combined reward, LLaMA2's `WHITEN(LOGIT(Rc))`. The reward models' raw outputs are
/// logits already (`LOGIT(sigmoid(x)) = x`), so the raw combined score is whitened directly.
///
/// Statistics are running ones by default: the mean and variance of every score seen so far
/// (Welford), updated with each batch before it is whitened, so one batch's spread does not rescale
/// the reward of the next. `.batch` whitens each batch by its own mean and deviation.
public struct RewardWhitener: Sendable, Codable, Equatable {
    /// Which statistics whiten a batch.
    public enum Statistics: String, Sendable, Codable {
        case running, batch
    }

    public var statistics: Statistics
    /// Scores seen so far, their mean and sum of squared deviations (running statistics).
    public private(set) var count = 0
    public private(set) var mean = 0.0
    private var squares = 0.0

    public init(statistics: Statistics = .running) { self.statistics = statistics }

    /// The running standard deviation (1 before two scores were seen).
    public var deviation: Double { count < 2 ? 1 : (squares / Double(count - 1)).squareRoot() }

    /// Adds `scores` to the running statistics (for `.running`) and returns them whitened: zero mean,
    /// unit deviation (a deviation under 1e-6 is taken as 1e-6).
    public mutating func whiten(_ scores: [Double]) -> [Double] {
        guard !scores.isEmpty else { return [] }
        let m: Double, s: Double
        switch statistics {
        case .running:
            for x in scores {
                count += 1
                let delta = x - mean
                mean += delta / Double(count)
                squares += delta * (x - mean)
            }
            (m, s) = (mean, deviation)
        case .batch:
            (m, s) = PPOMath.meanAndDeviation(scores)
        }
        return scores.map { ($0 - m) / max(s, 1e-6) }
    }
}

/// The adaptive KL controller of Ziegler et al. (2019): `beta` grows when the measured KL is above the
/// target and shrinks when below, by at most 20% of `steps / horizon` per update.
public struct AdaptiveKLController: Sendable, Codable, Equatable {
    public private(set) var beta: Double
    /// The KL (nats per sequence) the controller steers to.
    public var target: Double
    /// Steps over which a full proportional correction is spread.
    public var horizon: Double

    public init(beta: Double, target: Double, horizon: Double = 10_000) {
        precondition(beta >= 0 && target > 0 && horizon > 0)
        self.beta = beta
        self.target = target
        self.horizon = horizon
    }

    /// Updates `beta` after `steps` samples whose mean KL was `kl`.
    public mutating func update(kl: Double, steps: Int) {
        let error = min(max(kl / target - 1, -0.2), 0.2)
        beta *= 1 + error * Double(steps) / horizon
    }
}

/// PPO's plain arithmetic: per-token rewards with the KL penalty, generalized advantage estimation,
/// whitening.
public enum PPOMath {
    /// Mean and (population) standard deviation of `values` (0 and 1 when empty).
    public static func meanAndDeviation(_ values: [Double]) -> (mean: Double, deviation: Double) {
        guard !values.isEmpty else { return (0, 1) }
        let mean = values.reduce(0, +) / Double(values.count)
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count)
        return (mean, variance.squareRoot())
    }

    /// Per-token rewards of one response: `-beta * kl[t]` on every token, plus `score` (the whitened
    /// combined reward) on the last. `kl` is `(T)`, T >= 1.
    public static func tokenRewards(score: Double, kl: [Double], beta: Double) -> [Double] {
        precondition(!kl.isEmpty, "a response has at least one token")
        var rewards = kl.map { -beta * $0 }
        rewards[rewards.count - 1] += score
        return rewards
    }

    /// Generalized advantage estimation over one response: `rewards` and `values` are `(T)`, the value
    /// after the last token is 0 (the episode ends). `delta_t = r_t + gamma V_{t+1} - V_t`,
    /// `A_t = delta_t + gamma lambda A_{t+1}`; returns are `A_t + V_t`.
    public static func gae(rewards: [Double], values: [Double], gamma: Double = 1, lambda: Double = 0.95)
        -> (advantages: [Double], returns: [Double]) {
        precondition(rewards.count == values.count, "rewards and values differ in length")
        var advantages = [Double](repeating: 0, count: rewards.count)
        var next = 0.0, nextValue = 0.0
        for t in stride(from: rewards.count - 1, through: 0, by: -1) {
            let delta = rewards[t] + gamma * nextValue - values[t]
            next = delta + gamma * lambda * next
            advantages[t] = next
            nextValue = values[t]
        }
        return (advantages, zip(advantages, values).map(+))
    }

    /// `values` of every response together brought to zero mean and unit deviation (advantage
    /// whitening over a batch), keeping each response's shape.
    public static func whiten(_ values: [[Double]]) -> [[Double]] {
        let (m, s) = meanAndDeviation(values.flatMap { $0 })
        return values.map { row in row.map { ($0 - m) / max(s, 1e-8) } }
    }
}
