import Foundation
import RLHF
import Testing

/// The rejection-sampling algorithms against hand-computed cases.
@Suite struct RLHFTests {
    @Test func theSafetyGateReplacesHelpfulnessOnSafetyPromptsAndLowSafety() {
        let gate = SafetyGate()
        #expect(abs(gate.logitThreshold - -1.734_601) < 1e-6)
        #expect(gate.combine(helpfulness: 2, safety: 0.5, isSafetyPrompt: false) == (2, false))
        #expect(gate.combine(helpfulness: 2, safety: -2, isSafetyPrompt: false) == (-2, true))
        #expect(gate.combine(helpfulness: 2, safety: 0.5, isSafetyPrompt: true) == (0.5, false))
        #expect(gate.combine(helpfulness: 2, safety: -3, isSafetyPrompt: true) == (-3, false))
        let (rewards, rate) = gate.combine(helpfulness: [1, 1, 1, 1], safety: [0, -2, -5, 3], isSafetyPrompt: [false, false, true, false])
        #expect(rewards == [1, -2, -5, 1])
        #expect(abs(rate - 1.0 / 3.0) < 1e-12)
    }

    static func c(_ prompt: UInt64, _ sample: Int, _ round: Int, _ reward: Double) -> Candidate {
        Candidate(promptID: prompt, sampleID: sample, round: round, responseIDs: [Int32(sample), Int32(round)], reward: reward)
    }

    @Test func bestOfKWithDeterministicTiesAndPoolingFromRoundFour() {
        var sampler = RejectionSampler(poolFromRound: 4)
        let c = RLHFTests.c
        // Round 1: prompt 7's best is sample 2; prompt 3 ties between samples 1 and 0 -> sample 0.
        let r1 = sampler.select(round: 1, candidates: [c(7, 0, 1, 0.1), c(3, 1, 1, 0.5), c(7, 2, 1, 0.9), c(3, 0, 1, 0.5), c(7, 1, 1, 0.3)])
        #expect(r1.map(\.promptID) == [7, 3])
        #expect(r1.map(\.sampleID) == [2, 0])
        // Rounds 2 and 3 select within the round only, even when an earlier round had better.
        let r2 = sampler.select(round: 2, candidates: [c(7, 0, 2, 0.2), c(3, 0, 2, 0.1)])
        #expect(r2.map(\.reward) == [0.2, 0.1])
        _ = sampler.select(round: 3, candidates: [c(7, 0, 3, 0.4), c(3, 0, 3, 0.6)])
        // Round 4 pools: prompt 7's round-1 sample (0.9) beats this round's 0.5; prompt 3 keeps 0.8.
        let r4 = sampler.select(round: 4, candidates: [c(7, 1, 4, 0.5), c(3, 1, 4, 0.8)])
        #expect(r4.map { [$0.round, $0.sampleID] } == [[1, 2], [4, 1]])
        // An equal reward goes to the earlier round.
        let r5 = sampler.select(round: 5, candidates: [c(7, 0, 5, 0.9), c(3, 0, 5, 0.1)])
        #expect(r5[0].round == 1)
        #expect(sampler.history[7]?.count == 5)
        var never = RejectionSampler(poolFromRound: .max)
        _ = never.select(round: 1, candidates: [c(1, 0, 1, 5)])
        #expect(never.select(round: 9, candidates: [c(1, 0, 9, 1)])[0].reward == 1)
    }

    @Test func temperatureScheduleHoldsItsLastValue() {
        let schedule = TemperatureSchedule([1.0, 1.1, 1.2])
        #expect(schedule.temperature(round: 1) == 1.0)
        #expect(schedule.temperature(round: 3) == 1.2)
        #expect(schedule.temperature(round: 7) == 1.2)
    }
}
