import ClusterRuntime
import Foundation
import Recipe
import Testing

/// The plan's ETA and the `--quick` size of a spec.
@Suite struct PlanProgressTests {
    static let spec = SpecTests.head + """
    task: {seed: 1, eval_samples: 4}
    plan:
      - evaluate: {name: SFT}
      - train_rm: {model: reward-model}
      - rs_round: {name: V1, prompts: 1024, samples: 8, new_pairs: 512, from_sft: true, epochs: 2}
      - rs_round: {name: V2, prompts: 1024, samples: 8, new_pairs: 512, from_sft: true, epochs: 2}
      - hold: {seconds: 30}
    """

    @Test func aBudgetCapsARoundsEstimate() throws {
        let spec = try ClusterSpec.parse(SpecTests.head + """
        task: {seed: 1}
        plan:
          - rs_round: {name: V1}
          - policy_round: {name: G, iterations: 1000, start_from: V1}
          - policy_round: {name: H, iterations: 1000, start_from: V1, budget_s: 150}
          - dpo_round: {name: D, pairs: on_policy, iterations: 3}
        """, baseDirectory: "/")
        let e = PlanProgress(plan: spec.plan, task: spec.task).estimates
        #expect(e[1] > 500 && e[2] < 200 && e[2] > 150 && e[3] > 0, "\(e)")
    }

    @Test func estimatesFollowTheSizesAndTheMachine() throws {
        let spec = try ClusterSpec.parse(PlanProgressTests.spec, baseDirectory: "/")
        var progress = PlanProgress(plan: spec.plan, task: spec.task)
        let e = progress.estimates
        #expect(e.count == 5 && e.allSatisfy { $0 > 0 })
        // V2 fine-tunes the SFT model on two rounds' kept samples: it costs more than V1.
        #expect(e[3] > e[2])
        #expect(e[4] == 30)
        #expect(progress.scale == 1)
        #expect(abs(progress.remaining(current: 0, elapsedInCurrent: 0) - e.reduce(0, +)) < 1e-9)
        // Halfway through step 1 of a machine that runs as estimated.
        #expect(abs(progress.remaining(current: 0, elapsedInCurrent: e[0] / 2) - (e.reduce(0, +) - e[0] / 2)) < 1e-9)
        // Steps 1 and 2 took twice their estimates: the rest is expected to as well, tempered by the
        // prior's weight (a short first step must not rescale a long plan on its own).
        progress.finished(0, seconds: 2 * e[0])
        progress.finished(1, seconds: 2 * e[1])
        let done = e[0] + e[1], prior = PlanProgress.priorSeconds
        let scale = (2 * done + prior) / (done + prior)
        #expect(abs(progress.scale - scale) < 1e-9 && progress.scale > 1.3 && progress.scale < 2)
        #expect(abs(progress.remaining(current: 2, elapsedInCurrent: 0) - scale * (e[2] + e[3] + e[4])) < 1e-6)
        // Past its estimate, a step counts as nearly done, never negative.
        #expect(progress.remaining(current: 4, elapsedInCurrent: 1_000) == 0)
        #expect(PlanProgress.duration(5) == "5s" && PlanProgress.duration(125) == "2m05s" && PlanProgress.duration(3_720) == "1h02m")
    }

    @Test func quickKeepsEveryStepAtASmallerSize() throws {
        let spec = try ClusterSpec.parse(PlanProgressTests.spec, baseDirectory: "/")
        let quick = spec.quick()
        #expect(quick.plan.count == spec.plan.count)
        #expect(quick.task?.evalPrompts == 128 && quick.task?.evalSamples == 1)
        guard case let .trainRewardModel(rm) = quick.plan[1], case let .rejectionSampling(v1) = quick.plan[2],
              case let .rejectionSampling(v2) = quick.plan[3], case let .hold(seconds) = quick.plan[4] else {
            Issue.record("the steps changed kind: \(quick.plan)")
            return
        }
        #expect(rm.model == .rewardModel && rm.pairs == 1_500 && rm.epochs == 1)
        #expect(v1.name == "V1" && v1.prompts == 128 && v1.samples == 4 && v1.newPairs == 64 && v1.fromSFT && v1.epochs == 2)
        #expect(v2.name == "V2")
        #expect(seconds == 1)
        // The quick plan is estimated far cheaper.
        #expect(PlanProgress(plan: quick.plan, task: quick.task).estimates.reduce(0, +) * 5 < PlanProgress(plan: spec.plan, task: spec.task).estimates.reduce(0, +))
    }
}
