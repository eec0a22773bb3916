import Foundation
import RLHF
import Testing

/// PPO's arithmetic against hand-computed cases.
@Suite struct PPOMathTests {
    static func close(_ a: Double, _ b: Double, _ tolerance: Double = 1e-9) -> Bool { abs(a - b) <= tolerance }
    static func close(_ a: [Double], _ b: [Double], _ tolerance: Double = 1e-9) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { close($0, $1, tolerance) }
    }

    @Test func klEstimators() {
        // k1 = log p - log p_ref; k3 = (r - 1) - log r with r = p_ref / p.
        #expect(PPOMathTests.close(KLEstimator.k1.estimate(logProb: -1, referenceLogProb: -1.5), 0.5))
        #expect(PPOMathTests.close(KLEstimator.k3.estimate(logProb: -1, referenceLogProb: -1.5), exp(-0.5) - 1 + 0.5))
        #expect(PPOMathTests.close(KLEstimator.k3.estimate(logProb: -2, referenceLogProb: -2), 0))
        // k1 may go negative per token, k3 never does.
        #expect(KLEstimator.k1.estimate(logProb: -2, referenceLogProb: -1) < 0)
        #expect(KLEstimator.k3.estimate(logProb: -2, referenceLogProb: -1) > 0)
        #expect(PPOMathTests.close(KLEstimator.k1.perToken(policy: [-1, -2], reference: [-1.5, -1]), [0.5, -1], 1e-6))
    }

    @Test func theKLPenaltyIsPerTokenAndTheScoreLandsOnTheLastToken() {
        let rewards = PPOMath.tokenRewards(score: 2, kl: [0.5, -0.2, 1.0], beta: 0.1)
        #expect(PPOMathTests.close(rewards, [-0.05, 0.02, 1.9]))
        #expect(PPOMathTests.close(PPOMath.tokenRewards(score: -1, kl: [0.3], beta: 0.01), [-1.003]))
    }

    @Test func gaeByHand() {
        // delta2 = 1 - 0.7 = 0.3; delta1 = 0.7 - 0.6 = 0.1; delta0 = 0.6 - 0.5 = 0.1.
        // A2 = 0.3, A1 = 0.1 + 0.95 * 0.3 = 0.385, A0 = 0.1 + 0.95 * 0.385 = 0.46575.
        let (a, r) = PPOMath.gae(rewards: [0, 0, 1], values: [0.5, 0.6, 0.7], gamma: 1, lambda: 0.95)
        #expect(PPOMathTests.close(a, [0.46575, 0.385, 0.3]))
        #expect(PPOMathTests.close(r, [0.96575, 0.985, 1.0]))
        // lambda = 1, gamma = 1: the advantage is the reward-to-go minus the value.
        let (a1, _) = PPOMath.gae(rewards: [0.2, -0.1, 1], values: [0.5, 0.6, 0.7], gamma: 1, lambda: 1)
        #expect(PPOMathTests.close(a1, [1.1 - 0.5, 0.9 - 0.6, 1 - 0.7]))
        // gamma discounts: lambda = 0 is the one-step TD error.
        let (a0, _) = PPOMath.gae(rewards: [0, 1], values: [0.5, 0.2], gamma: 0.9, lambda: 0)
        #expect(PPOMathTests.close(a0, [0.9 * 0.2 - 0.5, 1 - 0.2]))
    }

    @Test func rewardWhiteningRunningAndBatch() {
        var running = RewardWhitener()
        #expect(PPOMathTests.close(running.whiten([1, 2, 3]), [-1, 0, 1]))
        // The fourth score is whitened with the statistics of all four: mean 2.75, sample deviation sqrt(8.75 / 3).
        #expect(PPOMathTests.close(running.whiten([5]), [(5 - 2.75) / (8.75 / 3).squareRoot()]))
        #expect(running.count == 4 && PPOMathTests.close(running.mean, 2.75))
        var batch = RewardWhitener(statistics: .batch)
        let s = (2.0 / 3).squareRoot()
        #expect(PPOMathTests.close(batch.whiten([1, 2, 3]), [-1 / s, 0, 1 / s]))
        #expect(PPOMathTests.close(batch.whiten([10, 20]), [-1, 1]))
        #expect(batch.count == 0)
    }

    @Test func adaptiveKLControllerStepsTowardItsTarget() {
        var controller = AdaptiveKLController(beta: 0.1, target: 6, horizon: 10_000)
        controller.update(kl: 12, steps: 100)
        // The error is clipped to +20%: beta * (1 + 0.2 * 100 / 10000).
        #expect(PPOMathTests.close(controller.beta, 0.1 * 1.002))
        controller.update(kl: 3, steps: 100)
        #expect(PPOMathTests.close(controller.beta, 0.1 * 1.002 * 0.998))
        controller.update(kl: 6, steps: 100)
        #expect(PPOMathTests.close(controller.beta, 0.1 * 1.002 * 0.998))
    }

    @Test func advantageWhiteningKeepsTheShape() {
        let w = PPOMath.whiten([[1, 2], [3]])
        let s = (2.0 / 3).squareRoot()
        #expect(w.count == 2 && PPOMathTests.close(w[0], [-1 / s, 0]) && PPOMathTests.close(w[1], [1 / s]))
    }
}

/// The critic-free methods' advantages against hand-computed cases (the fixtures' are checked by `rlhf selftest`).
@Suite struct GroupAdvantageTests {
    @Test func groupBaselines() {
        let rewards = [1.0, 0, 0.5, 0.5, /* a flat group */ 2, 2, 2, 2]
        // GRPO: (r - mean) / (std + eps), std with n - 1: the first group's mean 0.5, std sqrt(1/6).
        let std = (0.5 / 3).squareRoot()
        #expect(PPOMathTests.close(GroupAdvantage.grpo.advantages(rewards: rewards, group: 4, eps: 0),
                                   [0.5 / std, -0.5 / std, 0, 0, 0, 0, 0, 0]))
        #expect(PPOMathTests.close(GroupAdvantage.drGRPO.advantages(rewards: rewards, group: 4), [0.5, -0.5, 0, 0, 0, 0, 0, 0]))
        // RLOO: r_i less the mean of the other three.
        #expect(PPOMathTests.close(GroupAdvantage.rloo.advantages(rewards: rewards, group: 4), [1 - 1.0 / 3, -2.0 / 3, 0.5 - 0.5, 0, 0, 0, 0, 0]))
        // Dr. GRPO's advantages are RLOO's scaled by (n - 1) / n.
        let dr = GroupAdvantage.drGRPO.advantages(rewards: rewards, group: 4), loo = GroupAdvantage.rloo.advantages(rewards: rewards, group: 4)
        #expect(PPOMathTests.close(dr, loo.map { $0 * 3 / 4 }))
        // A group of one has no baseline: nothing to learn from.
        #expect(GroupAdvantage.grpo.advantages(rewards: [3, -1], group: 1) == [0, 0])
        let groups = [Array(rewards[..<4]), Array(rewards[4...])]
        #expect(GroupAdvantage.flatGroupShare(groups) == 0.5)
        #expect(PPOMathTests.close(GroupAdvantage.meanGroupDeviation(groups), std / 2))
    }

    @Test func reinforcePlusPlusPutsTheKLInEveryTokensRewardAndNormalisesOverTheBatch() {
        // Returns to go: scores on the last token, -beta * kl on every token.
        let kl: [[Double]] = [[0.1, 0.2, 0.3], [0.4]]
        let advantages = ReinforcePlusPlus.advantages(scores: [1, -1], kl: kl, beta: 0.5)
        let returns = [1 - 0.5 * 0.6, 1 - 0.5 * 0.5, 1 - 0.5 * 0.3, -1 - 0.5 * 0.4]
        let mean = returns.reduce(0, +) / 4
        let deviation = (returns.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / 3).squareRoot()
        #expect(PPOMathTests.close(Array(advantages.joined()), returns.map { ($0 - mean) / deviation }))
        #expect(advantages.map(\.count) == [3, 1])
    }
}
