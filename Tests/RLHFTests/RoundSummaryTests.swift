import RLHF
import Testing

@Suite struct RoundSummaryTests {
    @Test func roundArithmetic() {
        #expect(RoundSummary.bestPerPrompt(promptIDs: [7, 7, 3, 7, 3], scores: [0.1, 0.5, -1, 0.5, -0.2]) == [1, 4])
        #expect(abs(RoundSummary.meanSequenceKL(policy: [[-1, -2], [-0.5]], reference: [[-1.5, -2], [-1]]) - 0.5) < 1e-9)
        // A figure that prints as zero at three decimals is zero, not "-0.000".
        #expect(String(format: "%.3f", RoundSummary.shown(-0.0001)) == "0.000" && RoundSummary.shown(-0.002) == -0.002)
    }
}
