import Foundation
import LlamaCore
import Testing
import TestKit

/// `lora:` on a real local cluster: rejection-sampling rounds and a PPO round train adapters only;
/// generators that hold the frozen base (the spec's checkpoint) fetch only adapters; the rounds'
/// exports and the learner's state (converted) are the merged policy; a learner killed -9 mid-round
/// comes back from its saved adapters to the same figures.
@Suite struct LoRARunTests {
    static let checkpoint = RLHFRunTests.repository + "/models/chat-world/sft.bin"

    static func writeSpec(_ dir: String) throws -> String {
        let spec = """
        coordinator: tcp://127.0.0.1:*
        heartbeat_ms: 100
        hosts:
          - name: here
            workers: {generator: 2, reward-model: 1, safety-model: 1, learner: 1, reference-policy: 1}
        model: {checkpoint: \(LoRARunTests.checkpoint)}
        lora: {rank: 8, alpha: 16, targets: [wq, wk, wv, wo]}
        task: {seed: 1, eval_prompts: 24, preference_pairs: 300}
        plan:
          - train_rm: {model: reward-model, pairs: 100}
          - train_rm: {model: safety-model, pairs: 100}
          - rs_round: {name: V1, prompts: 32, samples: 4, max_new_tokens: 32, from_sft: true, learning_rate: 0.001}
          - rs_round: {name: V2, prompts: 96, samples: 4, max_new_tokens: 32, learning_rate: 0.001}
          - ppo_round: {name: V3, iterations: 2, rollouts: 16, mini_batch: 8, max_new_tokens: 32, learning_rate: 0.0003}
        """
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        return dir + "/spec.yaml"
    }

    /// The plan undisturbed (run once, for every check): its run directory, or the failure.
    static let calm = RLHFRunTests.calmRun("rlhf-lora", spec: writeSpec)

    @Test func aPlanWithLoRASendsTheGeneratorsOnlyAdapters() throws {
        let run = try LoRARunTests.calm.get()
        // What a version of the adapters weighs: per layer, rank x (in + out) of wq, wk, wv, wo.
        let base = try Checkpoint.read(path: LoRARunTests.checkpoint).weights
        let c = base.config
        let adapterBytes = c.nLayers * 8 * (2 * c.dim + 2 * (c.dim + c.kvDim) + 2 * c.dim) * 4
        let baseBytes = base.tensorSet.entries.reduce(0) { $0 + $1.range.count * 4 }
        for generator in ["generator-here-0", "generator-here-1"] {
            let log = try String(contentsOfFile: run + "/logs/\(generator).log", encoding: .utf8)
            let bytes = log.split(separator: "\n").filter { $0.contains("installed a new policy version") }.compactMap { line -> Int? in
                guard let range = line.range(of: #"bytes=[0-9]+"#, options: .regularExpression) else { return nil }
                return Int(line[range].dropFirst("bytes=".count))
            }
            // The generators started from the learner's base (the spec's checkpoint): every install is the
            // adapters alone, a small share of the model.
            #expect(bytes.count >= 4, "\(generator) installed \(bytes.count) versions")
            #expect(bytes.allSatisfy { $0 == adapterBytes } && adapterBytes * 10 < baseBytes, "\(generator): \(bytes)")
        }
        // The rounds' exports are whole weights that moved; the learner's state converts to the same policy.
        let exported = try Checkpoint.read(path: run + "/rounds/V3/policy.bin").weights
        #expect(exported.checksum != base.checksum)
        let converted = TestKit.scratch("lora-converted") + ".bin"
        defer { try? FileManager.default.removeItem(atPath: converted) }
        let convert = try CLITests.rlhf(["checkpoint", "convert", run + "/learner-state/after-step-5/policy.state", "--to", "llama2c", "--out", converted])
        #expect(convert.status == 0, "\(convert.stderr)")
        #expect(try Checkpoint.read(path: converted).weights.checksum == exported.checksum)
        let metrics = try RLHFRunTests.lines(run + "/metrics.jsonl")
        #expect(metrics.contains { $0["stage"] as? String == "ppo" }, "no PPO iteration in the metrics")
    }

    @Test func aLoRALearnerKilledMidRoundResumesFromItsAdapters() throws {
        let calm = try LoRARunTests.calm.get()
        // kill -9 the launcher and the learner once V2 (plan step 4) has results: the adapters trained so
        // far die with the learner and come back from its state after V1.
        let started = try RLHFRunTests.launchUntil("lora-kill-learner", step: 4, results: 8, output: "first", spec: LoRARunTests.writeSpec)
        let (spec, run, launch) = (started.spec, started.run, started.launch)
        #expect(started.reached, "V2 never started")
        let port = try #require(RLHFRunTests.port(run))
        kill(launch.processIdentifier, SIGKILL)
        launch.waitUntilExit()
        for pid in LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port) --id learner-here-0") { kill(pid, SIGKILL) }
        let journal = (try? String(contentsOfFile: run + "/journal.jsonl", encoding: .utf8)) ?? ""
        #expect(!journal.contains("\"stepDone\":{\"index\":3"), "the kill came after V2 had finished")
        let resumed = try CLITests.rlhf(["launch", spec, "--run-dir", run])
        #expect(resumed.status == 0, "\(resumed.stdout)\(resumed.stderr)")
        #expect(resumed.stdout.contains("learner restarted from its state after step 3 (policy v"), "\(resumed.stdout)")
        #expect(try RLHFRunTests.figures(run) == RLHFRunTests.figures(calm))
        #expect(LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port)").isEmpty, "a worker outlived the resumed run")
    }
}
