import Foundation
import LlamaCore
import Testing

/// `lora:` on a real local cluster: a rejection-sampling round and a PPO round train adapters only;
/// generators that hold the frozen base (the spec's checkpoint) fetch only adapters; the rounds'
/// exports and the learner's state (converted) are the merged policy.
@Suite struct LoRARunTests {
    @Test func aPlanWithLoRASendsTheGeneratorsOnlyAdapters() throws {
        let dir = NSTemporaryDirectory() + "rlhf-lora-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let checkpoint = RLHFRunTests.repository + "/models/chat-world/sft.bin"
        let spec = """
        coordinator: tcp://127.0.0.1:*
        heartbeat_ms: 100
        hosts:
          - name: here
            workers: {generator: 2, reward-model: 1, safety-model: 1, learner: 1, reference-policy: 1}
        model: {checkpoint: \(checkpoint)}
        lora: {rank: 8, alpha: 16, targets: [wq, wk, wv, wo]}
        task: {seed: 1, eval_prompts: 24, preference_pairs: 300}
        plan:
          - train_rm: {model: reward-model, pairs: 100}
          - train_rm: {model: safety-model, pairs: 100}
          - rs_round: {name: V1, prompts: 32, samples: 4, max_new_tokens: 32, from_sft: true, learning_rate: 0.001}
          - ppo_round: {name: V2, iterations: 2, rollouts: 16, mini_batch: 8, max_new_tokens: 32, learning_rate: 0.0003}
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let run = dir + "/run"
        let result = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", run])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")

        // What a version of the adapters weighs: per layer, rank x (in + out) of wq, wk, wv, wo.
        let c = try Checkpoint.read(path: checkpoint).weights.config
        let adapterBytes = c.nLayers * 8 * (2 * c.dim + 2 * (c.dim + c.kvDim) + 2 * c.dim) * 4
        let baseBytes = try Checkpoint.read(path: checkpoint).weights.tensorSet.entries.reduce(0) { $0 + $1.range.count * 4 }
        for generator in ["generator-here-0", "generator-here-1"] {
            let log = try String(contentsOfFile: run + "/logs/\(generator).log", encoding: .utf8)
            let bytes = log.split(separator: "\n").filter { $0.contains("installed a new policy version") }.compactMap { line -> Int? in
                guard let range = line.range(of: #"bytes=[0-9]+"#, options: .regularExpression) else { return nil }
                return Int(line[range].dropFirst("bytes=".count))
            }
            // The generators started from the learner's base (the spec's checkpoint): every install is the
            // adapters alone, a small share of the model.
            #expect(bytes.count >= 3, "\(generator) installed \(bytes.count) versions")
            #expect(bytes.allSatisfy { $0 == adapterBytes } && adapterBytes * 10 < baseBytes, "\(generator): \(bytes)")
        }
        // The rounds' exports are whole weights that moved; the learner's state converts to the same policy.
        let exported = try Checkpoint.read(path: run + "/rounds/V2/policy.bin").weights
        #expect(exported.checksum != (try Checkpoint.read(path: checkpoint).weights.checksum))
        let converted = dir + "/converted.bin"
        let convert = try CLITests.rlhf(["checkpoint", "convert", run + "/learner-state/after-step-4/policy.state", "--to", "llama2c", "--out", converted])
        #expect(convert.status == 0, "\(convert.stderr)")
        #expect(try Checkpoint.read(path: converted).weights.checksum == exported.checksum)
        let metrics = try RLHFRunTests.lines(run + "/metrics.jsonl")
        #expect(metrics.contains { $0["stage"] as? String == "ppo" }, "no PPO iteration in the metrics")
    }
}
