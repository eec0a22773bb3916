import Foundation
import Testing

/// The algorithms beyond LLaMA2's PPO on a real local cluster: a GRPO round and an on-policy (iterative)
/// DPO round after the reward models are trained; every answer used once with a generator killed -9
/// mid-iteration, and the same figures after the launcher is killed mid-round and the plan resumed.
@Suite struct AlgorithmRunTests {
    static func writeSpec(_ dir: String) throws -> String {
        let spec = """
        coordinator: tcp://127.0.0.1:*
        heartbeat_ms: 100
        hosts:
          - name: here
            workers: {generator: 2, reward-model: 1, safety-model: 1, learner: 1, reference-policy: 1}
        model: {checkpoint: \(RLHFRunTests.repository)/models/chat-world/sft.bin}
        task: {seed: 1, eval_prompts: 48, preference_pairs: 600}
        plan:
          - evaluate: {name: SFT}
          - train_rm: {model: reward-model, pairs: 200}
          - train_rm: {model: safety-model, pairs: 200}
          - policy_round: {name: G, algorithm: grpo, iterations: 5, prompts: 8, group: 4, epochs: 2, mini_batch: 16, max_new_tokens: 48, learning_rate: 0.00003}
          - dpo_round: {name: D, pairs: on_policy, iterations: 2, prompts: 24, samples: 4, max_new_tokens: 48, batch_size: 8}
        """
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        return dir + "/spec.yaml"
    }

    /// The plan undisturbed (run once, for every comparison): its run directory, or the failure.
    static let calm = RLHFRunTests.calmRun("rlhf-algorithms", spec: writeSpec)

    /// Each GRPO answer once: 5 iterations x 8 prompts x 4, each iteration at one policy version.
    static func checkRollouts(_ run: String) throws {
        let rollouts = try RLHFRunTests.lines(run + "/rounds/G/rollouts.jsonl")
        #expect(rollouts.count == 5 * 8 * 4)
        #expect(Set(rollouts.map { "\($0["iteration"]!)/\($0["prompt_id"]!)/\($0["sample_id"]!)" }).count == rollouts.count)
        for iteration in 1...5 {
            let versions = Set(rollouts.filter { $0["iteration"] as? Int == iteration }.map { "\($0["policy_version"]!)" })
            #expect(versions.count == 1, "iteration \(iteration) mixed policy versions \(versions)")
        }
    }

    @Test func aGRPOAndAnIterativeDPORoundRunOnTheCluster() throws {
        let run = try AlgorithmRunTests.calm.get()
        try AlgorithmRunTests.checkRollouts(run)
        let metrics = try RLHFRunTests.lines(run + "/metrics.jsonl")
        let policy = metrics.filter { $0["stage"] as? String == "policy" }
        #expect(policy.count == 5 && policy.allSatisfy { $0["algorithm"] as? String == "grpo" })
        // Two passes over 32 answers in mini-batches of 16: 4 steps an iteration; the policy moves once an iteration.
        #expect(policy.allSatisfy { $0["gradient_steps"] as? Int == 4 }, "\(policy.map { $0["gradient_steps"] ?? "none" })")
        #expect(policy.map { $0["policy_version"] as? Int } == [1, 2, 3, 4, 5])
        for key in ["loss", "reward_mean", "kl_mean", "reference_kl", "clip_fraction", "group_reward_std", "flat_group_share", "response_length"] {
            #expect(policy.allSatisfy { $0[key] is Double }, "\(key) missing")
        }
        // The first iteration samples the reference itself: no KL yet; later ones move away.
        #expect(abs(policy[0]["reference_kl"] as? Double ?? 1) < 1e-3 && (policy[4]["reference_kl"] as? Double ?? 0) > 0, "\(policy.map { $0["reference_kl"]! })")
        let dpo = metrics.filter { $0["stage"] as? String == "dpo" }
        #expect(!dpo.isEmpty && dpo.allSatisfy { $0["reward_accuracy"] is Double && $0["reward_margin"] is Double && $0["loss"] is Double })
        let pairs = try RLHFRunTests.lines(run + "/rounds/D/pairs.jsonl")
        #expect(!pairs.isEmpty && pairs.allSatisfy { $0["reference_chosen"] is Double && $0["reference_rejected"] is Double })
        #expect(Set(pairs.map { $0["iteration"] as? Int }) == [1, 2])
        for name in ["G", "D"] { #expect(FileManager.default.fileExists(atPath: run + "/rounds/\(name)/policy.bin"), "\(name)") }
        let summary = try RLHFRunTests.json(run + "/summary.json")
        #expect((summary["rounds"] as? [[String: Any]])?.map { $0["name"] as? String } == ["G", "D"])
    }

    @Test func aGeneratorKilledMidGRPOUsesEachAnswerOnce() throws {
        let calm = try AlgorithmRunTests.calm.get()
        // kill -9 a generator in GRPO's second iteration (step 4, task ids from 4 << 32, one prompt a task).
        let (run, port) = try RLHFRunTests.killGeneratorMidStep("kill-grpo", step: 4, results: 10, stepName: "the GRPO round",
                                                                spec: AlgorithmRunTests.writeSpec)
        try AlgorithmRunTests.checkRollouts(run)
        #expect(try RLHFRunTests.figures(run) == RLHFRunTests.figures(calm))
        #expect(LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port)").isEmpty, "a worker outlived the run")
    }

    @Test(arguments: [(4, 14, "the GRPO round"), (5, 12, "the DPO round")])
    func aLauncherKilledMidRoundResumesWithTheSameFigures(step: Int, results: Int, name: String) throws {
        let calm = try AlgorithmRunTests.calm.get()
        let (run, resumed) = try RLHFRunTests.killLauncherAndResume("kill-launcher-alg-\(step)", step: step, results: results, stepName: name,
                                                                    spec: AlgorithmRunTests.writeSpec)
        #expect(resumed.stdout.contains("plan finished"), "\(resumed.stdout)")
        try AlgorithmRunTests.checkRollouts(run)
        #expect(try RLHFRunTests.figures(run) == RLHFRunTests.figures(calm))
        if let port = RLHFRunTests.port(run) {
            #expect(LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port)").isEmpty, "a worker outlived the resumed run")
        }
    }
}
