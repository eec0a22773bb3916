import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import LlamaCore
import Testing
import TestKit

/// The RLHF plan on a real local cluster (6 worker processes): the default spec's `--quick` run and its
/// run directory, and a small plan that survives a generator killed mid-round and a launcher killed
/// mid-plan with the same figures as undisturbed.
@Suite struct RLHFRunTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized.path

    static func json(_ path: String) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
    }

    static func lines(_ path: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try #require(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    /// summary.json without its timings: what the run produced, not how fast.
    static func figures(_ run: String) throws -> [String] {
        let summary = try json(run + "/summary.json")
        let policies = [summary["sft"] as? [String: Any]].compactMap { $0 } + ((summary["rounds"] as? [[String: Any]]) ?? [])
        return policies.map { p in
            p.keys.filter { $0 != "seconds" && $0 != "tokens_per_second" }.sorted().map { "\($0)=\(p[$0]!)" }.joined(separator: " ")
        }
    }

    /// The (prompt, sample) keys of a round's samples.jsonl.
    static func sampleKeys(_ run: String, _ round: String) throws -> [String] {
        try lines(run + "/rounds/\(round)/samples.jsonl").map { "\($0["prompt_id"]!)/\($0["sample_id"]!)" }
    }

    @Test func theQuickDefaultRunWritesItsRunDirectory() throws {
        let run = TestKit.scratch("quick")
        let result = try CLITests.rlhf(["launch", "--quick", "--run-dir", run, "--progress-every", "2"], directory: RLHFRunTests.repository)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let out = result.stdout
        #expect(out.contains("reward-model trained on the learner") && out.contains("safety-model trained on the learner"), "\(out)")
        #expect(out.contains("progress: step") && out.contains("ETA"), "\(out)")
        // The final table: a line per policy.
        let table = out.split(separator: "\n").drop { !$0.hasPrefix("policy   win vs SFT") }
        #expect(["SFT", "V1", "V2", "V3", "V4", "V5-RS", "V5"].allSatisfy { name in table.contains { $0.hasPrefix(name + " ") } }, "\(out)")
        // summary.json: the SFT figures and each round's.
        let summary = try RLHFRunTests.json(run + "/summary.json")
        let rounds = try #require(summary["rounds"] as? [[String: Any]])
        #expect(rounds.map { $0["name"] as? String } == ["V1", "V2", "V3", "V4", "V5-RS", "V5"])
        for round in rounds {
            for key in ["win_rate_vs_sft", "helpfulness", "unsafe_rate", "reward_mean", "kl", "tokens_per_second", "seconds"] {
                #expect(round[key] is Double, "\(key) missing")
            }
        }
        #expect((summary["sft"] as? [String: Any])?["win_rate_vs_sft"] as? Double == 0.5)
        // The metrics as TensorBoard scalars: one event file, a record per metrics line (each more than its header).
        let events = try FileManager.default.contentsOfDirectory(atPath: run + "/tensorboard").filter { $0.hasPrefix("events.out.tfevents.") }
        #expect(events.count == 1)
        let eventBytes = try events.first.map { try Data(contentsOf: URL(fileURLWithPath: run + "/tensorboard/" + $0)).count } ?? 0
        #expect(eventBytes > 40 * (try RLHFRunTests.lines(run + "/metrics.jsonl")).count, "\(eventBytes) bytes")
        for (i, name) in ["V1", "V2", "V3", "V4", "V5-RS"].enumerated() {
            // samples.jsonl: every (prompt, sample) of the round once (128 prompts x 4 at the quick size), one kept per prompt.
            let samples = try RLHFRunTests.lines(run + "/rounds/\(name)/samples.jsonl")
            let keys = try RLHFRunTests.sampleKeys(run, name)
            #expect(Set(keys).count == keys.count && keys.count == 512, "\(name): \(keys.count) samples")
            let kept = samples.filter { $0["kept"] as? Bool == true }
            // From round 4 on the best may be an earlier round's sample, so a prompt keeps at most one of this round's.
            #expect(i < 3 ? kept.count == 128 : kept.count <= 128)
            for key in ["seed", "policy_version", "reward", "safety"] { #expect(samples.allSatisfy { $0[key] != nil }, "\(key) missing") }
            // The round's checkpoint is a readable model.
            let info = try CLITests.rlhf(["checkpoint", "info", run + "/rounds/\(name)/policy.bin"])
            #expect(info.status == 0, "\(info.stderr)")
        }
        // The PPO round: each rollout once (4 iterations x 32 at the quick size) and its checkpoint.
        let rollouts = try RLHFRunTests.lines(run + "/rounds/V5/rollouts.jsonl")
        #expect(rollouts.count == 4 * 32 && Set(rollouts.map { "\($0["sample_id"]!)" }).count == rollouts.count)
        #expect(try CLITests.rlhf(["checkpoint", "info", run + "/rounds/V5/policy.bin"]).status == 0)
        // The chart of the rounds is well-formed SVG.
        let svg = try String(contentsOfFile: run + "/rounds.svg", encoding: .utf8)
        _ = try XMLDocument(xmlString: svg)
        #expect(svg.contains("win rate vs SFT") && svg.contains(">V5<"))
        let metrics = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8)
        for stage in ["train_rm", "train_rm_done", "new_pairs", "rs_train", "evaluate", "ppo"] { #expect(metrics.contains("\"stage\":\"\(stage)\""), "\(stage)") }
        #expect(try String(contentsOfFile: run + "/journal.jsonl", encoding: .utf8).contains("\"finished\""))
        #expect(LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:5555").isEmpty, "a worker outlived the run")
    }

    /// A small RLHF plan: SFT evaluation, both reward models, two rejection-sampling rounds that sample
    /// long enough to be interrupted, and a PPO round.
    static func writeSpec(_ dir: String) throws -> String {
        let model = RLHFRunTests.repository + "/models/chat-world/sft.bin"
        let spec = """
        coordinator: tcp://127.0.0.1:*
        heartbeat_ms: 100
        hosts:
          - name: here
            workers: {generator: 2, reward-model: 1, safety-model: 1, learner: 1, reference-policy: 1}
        model:
          checkpoint: \(model)
        task: {seed: 1, eval_prompts: 48, eval_samples: 2, preference_pairs: 600}
        plan:
          - evaluate: {name: SFT}
          - train_rm: {model: reward-model, pairs: 200}
          - train_rm: {model: safety-model, pairs: 200}
          - rs_round: {name: V1, prompts: 96, samples: 6, max_new_tokens: 64, new_pairs: 16, from_sft: true}
          - rs_round: {name: V2, prompts: 96, samples: 6, max_new_tokens: 64, new_pairs: 16, from_sft: true}
          - ppo_round: {name: V3, iterations: 6, rollouts: 24, mini_batch: 8, epochs: 2, new_pairs: 16, rm_every: 3, max_new_tokens: 48, learning_rate: 0.00003}
        """
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        return dir + "/spec.yaml"
    }

    /// The small plan undisturbed (run once, for both comparisons): its run directory, or the failure.
    static let calm = calmRun("rlhf-calm", spec: writeSpec)

    /// A plan launched undisturbed in a new directory named after `name`, the spec written by `spec`:
    /// its run directory, or the launch's output when it failed.
    static func calmRun(_ name: String, spec: (String) throws -> String) -> Result<String, CalmRunFailed> {
        let dir = TestKit.scratch("\(name)")
        do {
            let result = try CLITests.rlhf(["launch", try spec(dir), "--run-dir", dir + "/run"])
            return result.status == 0 ? .success(dir + "/run") : .failure(CalmRunFailed(output: result.stdout + result.stderr))
        } catch {
            return .failure(CalmRunFailed(output: "\(error)"))
        }
    }

    struct CalmRunFailed: Error { let output: String }

    /// The port of the coordinator a run's journal records.
    static func port(_ run: String) -> String? {
        let text = (try? String(contentsOfFile: run + "/journal.jsonl", encoding: .utf8)) ?? ""
        guard let line = text.split(separator: "\n").first(where: { $0.contains("\"coordinator\":") }),
              let start = line.range(of: "127.0.0.1:") else { return nil }
        return String(line[start.upperBound...].prefix { $0.isNumber })
    }

    /// Starts `rlhf launch` in the background (output to files in `dir`).
    static func launch(_ spec: String, run: String, dir: String, name: String) throws -> Process {
        let process = Process()
        process.executableURL = CLITests.executable
        process.arguments = ["launch", spec, "--run-dir", run]
        _ = FileManager.default.createFile(atPath: dir + "/\(name).out", contents: nil)
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/\(name).out"))
        process.standardError = process.standardOutput
        try process.run()
        return process
    }

    /// Waits until `condition` holds or `launch` ends (at most 180 s); returns whether it held.
    static func wait(for launch: Process, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(180)
        while Date() < deadline, launch.isRunning {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.005)
        }
        return condition()
    }

    /// A background launch of the small plan (in a new directory named after `name`), waited on until
    /// the 1-based plan step `step` has `results` results in the journal (task ids `step << 32 ..<
    /// (step + 1) << 32`); `reached` says whether it got there before the launch ended.
    struct Interrupted {
        let dir: String, spec: String, run: String
        let launch: Process
        let stepTasks: Range<UInt64>
        let reached: Bool
        /// The step's results in the journal now.
        var stepResults: Int { LaunchTests.journaledResults(run + "/journal.jsonl").filter { stepTasks.contains($0) }.count }
    }

    static func launchUntil(_ name: String, step: Int, results: Int, output: String,
                            spec write: (String) throws -> String = RLHFRunTests.writeSpec) throws -> Interrupted {
        let dir = TestKit.scratch("rlhf-\(name)")
        let spec = try write(dir)
        let run = dir + "/run"
        let launch = try RLHFRunTests.launch(spec, run: run, dir: dir, name: output)
        let tasks = (UInt64(step) << 32) ..< (UInt64(step + 1) << 32)
        let reached = RLHFRunTests.wait(for: launch) { LaunchTests.journaledResults(run + "/journal.jsonl").filter { tasks.contains($0) }.count >= results }
        return Interrupted(dir: dir, spec: spec, run: run, launch: launch, stepTasks: tasks, reached: reached)
    }

    @Test func aGeneratorKilledMidRoundLosesNoSample() throws {
        let calm = try RLHFRunTests.calm.get()
        // kill -9 a generator once V1 (step 4, task ids from 4 << 32) has some of its 96 sampling tasks accepted.
        let started = try RLHFRunTests.launchUntil("kill-generator", step: 4, results: 8, output: "launch")
        let (dir, run, launch) = (started.dir, started.run, started.launch)
        #expect(started.reached, "V1 never started sampling")
        let port = try #require(RLHFRunTests.port(run))
        let victims = LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port) --id generator-here-0")
        #expect(victims.count == 1)
        for pid in victims { kill(pid, SIGKILL) }
        let sampledBeforeKill = started.stepResults
        launch.waitUntilExit()
        let out = (try? String(contentsOfFile: dir + "/launch.out", encoding: .utf8)) ?? ""
        #expect(launch.terminationStatus == 0, "\(out)")
        #expect(sampledBeforeKill < 96, "the kill came after V1's sampling had finished")
        #expect(out.contains("generator-here-0"), "the run never noticed the dead generator: \(out)")
        // Every (round, prompt, sample) once, and the figures of the undisturbed run.
        for round in ["V1", "V2"] {
            let keys = try RLHFRunTests.sampleKeys(run, round)
            #expect(keys.count == 96 * 6 && Set(keys).count == keys.count, "\(round): \(keys.count) samples, \(Set(keys).count) distinct")
        }
        #expect(try RLHFRunTests.figures(run) == RLHFRunTests.figures(calm))
        #expect(LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port)").isEmpty, "a worker outlived the run")
    }

    /// Launches `write`'s plan, kill -9s generator-here-1 once plan step `step` has `results` results
    /// journaled, waits for the launch, and checks that it finished well and that the kill came before
    /// the step had. Returns the run directory and the coordinator's port.
    static func killGeneratorMidStep(_ name: String, step: Int, results: Int, stepName: String,
                                     spec write: (String) throws -> String = RLHFRunTests.writeSpec) throws -> (run: String, port: String) {
        let started = try RLHFRunTests.launchUntil(name, step: step, results: results, output: "launch", spec: write)
        let (dir, run, launch) = (started.dir, started.run, started.launch)
        #expect(started.reached, "\(stepName) never started")
        let port = try #require(RLHFRunTests.port(run))
        let victims = LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port) --id generator-here-1")
        #expect(victims.count == 1)
        for pid in victims { kill(pid, SIGKILL) }
        let journal = (try? String(contentsOfFile: run + "/journal.jsonl", encoding: .utf8)) ?? ""
        launch.waitUntilExit()
        let out = (try? String(contentsOfFile: dir + "/launch.out", encoding: .utf8)) ?? ""
        #expect(launch.terminationStatus == 0, "\(out)")
        #expect(!journal.contains("\"stepDone\":{\"index\":\(step - 1)"), "the kill came after \(stepName) had finished")
        return (run, port)
    }

    @Test func aGeneratorKilledMidPPORoundUsesEachRolloutOnce() throws {
        let calm = try RLHFRunTests.calm.get()
        // kill -9 a generator in PPO's third iteration (step 6, task ids from 6 << 32).
        let (run, port) = try RLHFRunTests.killGeneratorMidStep("kill-ppo", step: 6, results: 30, stepName: "the PPO round")
        // Each rollout once: 6 iterations x 24, every (iteration, prompt) distinct, each iteration at one policy version.
        let rollouts = try RLHFRunTests.lines(run + "/rounds/V3/rollouts.jsonl")
        #expect(rollouts.count == 6 * 24)
        #expect(Set(rollouts.map { "\($0["iteration"]!)/\($0["prompt_id"]!)" }).count == rollouts.count)
        #expect(Set(rollouts.map { "\($0["sample_id"]!)" }).count == rollouts.count)
        for iteration in 1...6 {
            let versions = Set(rollouts.filter { $0["iteration"] as? Int == iteration }.map { "\($0["policy_version"]!)" })
            #expect(versions.count == 1, "iteration \(iteration) mixed policy versions \(versions)")
        }
        let all = try RLHFRunTests.lines(run + "/metrics.jsonl")
        let metrics = all.filter { $0["stage"] as? String == "ppo" }
        #expect(metrics.count == 6)
        // Two passes over 24 rollouts in mini-batches of 8: 6 policy steps per iteration.
        #expect(metrics.allSatisfy { $0["gradient_steps"] as? Int == 6 }, "\(metrics.map { $0["gradient_steps"] ?? "none" })")
        // The reward models were refreshed once, before iteration 4, on pairs of the policy's own answers.
        let refreshes = all.filter { $0["stage"] as? String == "new_pairs" && ($0["round"] as? String)?.hasPrefix("V3") == true }
        #expect(refreshes.map { $0["round"] as? String } == ["V3 @4"] && (refreshes.first?["pairs"] as? Int ?? 0) > 0, "\(refreshes)")
        for key in ["policy_loss", "value_loss", "kl_mean", "kl_max", "clip_fraction", "entropy", "reward_mean", "response_length",
                    "gate_hit_rate", "tokens_per_second"] {
            #expect(metrics.allSatisfy { $0[key] is Double }, "\(key) missing")
        }
        #expect(try RLHFRunTests.figures(run) == RLHFRunTests.figures(calm))
        #expect(LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port)").isEmpty, "a worker outlived the run")
    }

    @Test func aLauncherAndItsLearnerKilledMidPlanResumeFromTheLearnersState() throws {
        let calm = try RLHFRunTests.calm.get()
        // kill -9 the launcher and the learner (the trained policy and reward models die with it) once V2 has results.
        let started = try RLHFRunTests.launchUntil("kill-learner", step: 5, results: 8, output: "first")
        let (spec, run, launch) = (started.spec, started.run, started.launch)
        #expect(started.reached, "V2 never started")
        let port = try #require(RLHFRunTests.port(run))
        kill(launch.processIdentifier, SIGKILL)
        launch.waitUntilExit()
        let learners = LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port) --id learner-here-0")
        #expect(learners.count == 1)
        for pid in learners { kill(pid, SIGKILL) }
        let journal = (try? String(contentsOfFile: run + "/journal.jsonl", encoding: .utf8)) ?? ""
        #expect(!journal.contains("\"stepDone\":{\"index\":4"), "the kill came after V2 had finished")
        // The learner saved its state at every step's end: after V1 (step 4) is there.
        #expect(FileManager.default.fileExists(atPath: run + "/learner-state/after-step-4/policy.state"))
        let resumed = try CLITests.rlhf(["launch", spec, "--run-dir", run])
        #expect(resumed.status == 0, "\(resumed.stdout)\(resumed.stderr)")
        #expect(resumed.stdout.contains("started 1 and adopted 5 running workers"), "\(resumed.stdout)")
        #expect(resumed.stdout.contains("learner restarted from its state after step 4 (policy v"), "\(resumed.stdout)")
        let keys = try RLHFRunTests.sampleKeys(run, "V2")
        #expect(keys.count == 96 * 6 && Set(keys).count == keys.count)
        #expect(try RLHFRunTests.figures(run) == RLHFRunTests.figures(calm))
        #expect(LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port)").isEmpty, "a worker outlived the resumed run")
    }

    /// Launches the small plan, kill -9s the launcher alone once plan step `step` (0-based index
    /// `step - 1`) has `results` results journaled, checks that the step had not finished, and launches
    /// the same spec on the same run directory again. Returns the run directory and the second launch.
    static func killLauncherAndResume(_ name: String, step: Int, results: Int, stepName: String,
                                      spec write: (String) throws -> String = RLHFRunTests.writeSpec) throws -> (run: String, resumed: CLITests.Output) {
        let started = try RLHFRunTests.launchUntil(name, step: step, results: results, output: "first", spec: write)
        let (spec, run, launch) = (started.spec, started.run, started.launch)
        #expect(started.reached, "\(stepName) never started")
        kill(launch.processIdentifier, SIGKILL)
        launch.waitUntilExit()
        let journal = (try? String(contentsOfFile: run + "/journal.jsonl", encoding: .utf8)) ?? ""
        #expect(!journal.contains("\"stepDone\":{\"index\":\(step - 1)"), "the kill came after \(stepName) had finished")
        let resumed = try CLITests.rlhf(["launch", spec, "--run-dir", run])
        #expect(resumed.status == 0, "\(resumed.stdout)\(resumed.stderr)")
        return (run, resumed)
    }

    @Test func aLauncherKilledMidPPORoundResumesOnALearnerRolledBackToTheStepsStart() throws {
        let calm = try RLHFRunTests.calm.get()
        // kill -9 the launcher alone in PPO's third iteration: the surviving learner has taken two PPO
        // iterations past the journal's last finished step.
        let (run, resumed) = try RLHFRunTests.killLauncherAndResume("kill-launcher-ppo", step: 6, results: 30, stepName: "the PPO round")
        #expect(resumed.stdout.contains("the running learner trained past step 5"), "\(resumed.stdout)")
        #expect(resumed.stdout.contains("learner restarted from its state after step 5"), "\(resumed.stdout)")
        let rollouts = try RLHFRunTests.lines(run + "/rounds/V3/rollouts.jsonl")
        #expect(rollouts.count == 6 * 24 && Set(rollouts.map { "\($0["sample_id"]!)" }).count == rollouts.count)
        #expect(try RLHFRunTests.figures(run) == RLHFRunTests.figures(calm))
        if let port = RLHFRunTests.port(run) {
            #expect(LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port)").isEmpty, "a worker outlived the resumed run")
        }
    }

    @Test func aLauncherKilledMidPlanResumesTheRLHFPipeline() throws {
        let calm = try RLHFRunTests.calm.get()
        // kill -9 the launcher (coordinator and pipeline) once V2 (step 5) has some results accepted.
        let (run, resumed) = try RLHFRunTests.killLauncherAndResume("kill-launcher", step: 5, results: 8, stepName: "V2")
        #expect(resumed.stdout.contains("RLHF pipeline state restored as it was after step 4"), "\(resumed.stdout)")
        #expect(resumed.stdout.contains("started 0 and adopted 6 running workers"), "\(resumed.stdout)")
        // The final table still has the SFT baseline and V1 from before the kill.
        #expect(resumed.stdout.split(separator: "\n").contains { $0.hasPrefix("V1 ") } && resumed.stdout.contains("\nSFT "), "\(resumed.stdout)")
        let keys = try RLHFRunTests.sampleKeys(run, "V2")
        #expect(keys.count == 96 * 6 && Set(keys).count == keys.count)
        #expect(try RLHFRunTests.figures(run) == RLHFRunTests.figures(calm))
        // Only the last step's pipeline state is kept.
        let states = try FileManager.default.contentsOfDirectory(atPath: run + "/pipeline")
        #expect(states == ["after-step-6.json"], "\(states)")
        if let port = RLHFRunTests.port(run) {
            #expect(LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port)").isEmpty, "a worker outlived the resumed run")
        }
    }

    /// A spec whose model is a Hugging Face directory (the shipped SFT policy converted): the plan
    /// runs on it, and `export: hf` writes each round's policy as a model directory beside
    /// policy.bin, holding the same weights.
    @Test func aPlanOnAHuggingFaceDirectoryExportsEachRound() throws {
        let dir = TestKit.scratch("rlhf-hf")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let converted = try CLITests.rlhf(["checkpoint", "convert", RLHFRunTests.repository + "/models/chat-world/sft.bin", "--to", "hf", "--out", dir + "/model"])
        #expect(converted.status == 0, "\(converted.stderr)")
        let spec = """
        coordinator: tcp://127.0.0.1:*
        heartbeat_ms: 100
        hosts:
          - name: here
            workers: {generator: 1, reward-model: 1, safety-model: 1, learner: 1, reference-policy: 1}
        model:
          checkpoint: model
          chat_template: llama2
        export: {format: hf, dtype: bfloat16}
        task: {seed: 1, eval_prompts: 24, eval_samples: 1, preference_pairs: 300}
        plan:
          - evaluate: {name: SFT}
          - train_rm: {model: reward-model, pairs: 100}
          - train_rm: {model: safety-model, pairs: 100}
          - rs_round: {name: V1, prompts: 32, samples: 4, max_new_tokens: 48, new_pairs: 8, from_sft: true}
          - ppo_round: {name: V2, iterations: 2, rollouts: 16, mini_batch: 8, epochs: 1, max_new_tokens: 32, learning_rate: 0.00003}
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let result = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("plan finished"), "\(result.stdout)")
        for round in ["V1", "V2"] {
            let (exported, format) = try Checkpoint.read(path: dir + "/run/rounds/\(round)/policy-hf")
            let policy = try Checkpoint.read(path: dir + "/run/rounds/\(round)/policy.bin").weights
            #expect(format == .huggingFace && exported.config == policy.config)
            // bfloat16 of the same weights: within its rounding.
            let a = exported.values(.wq), b = policy.values(.wq)
            let worst = zip(a, b).map { abs($0 - $1) / max(abs($1), 1e-30) }.max() ?? 1
            #expect(worst <= 1.0 / 256, "\(round): \(worst)")
            #expect(try Tokenizer(path: dir + "/run/rounds/\(round)/policy-hf").chatFormat == .llama2)
        }
    }
    /// A plan on a user's files (prompts as conversations with extra fields, TRL's implicit preference pairs
    /// without levels, gzip) and a judge command, without the embedded task: every step runs, the pairs are
    /// reported unlabelled, the judge's figures fill the table.
    @Test func aPlanRunsOnDataFilesAndAJudgeCommand() throws {
        let dir = TestKit.scratch("rlhf-data")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let generated = try CLITests.rlhf(["task", "generate", "--out", dir + "/task", "--corpus-documents", "0", "--sft-examples", "0",
                                           "--preference-pairs", "400"])
        #expect(generated.status == 0, "\(generated.stderr)")
        func convert(_ from: String, _ to: String, _ record: ([String: Any]) -> [String: Any]) throws {
            let out = try RLHFRunTests.lines(from).map { String(decoding: try JSONSerialization.data(withJSONObject: record($0)), as: UTF8.self) }
            try (out.joined(separator: "\n") + "\n").write(toFile: to, atomically: true, encoding: .utf8)
        }
        try convert(dir + "/task/prompts/train.jsonl", dir + "/prompts.jsonl") {
            ["messages": [["role": "user", "content": $0["prompt"]!]], "safety": $0["safety"]!, "source": "task"]
        }
        try convert(dir + "/task/prefs.jsonl", dir + "/prefs.jsonl") { pair in
            let user = ["role": "user", "content": pair["prompt"]!]
            return ["chosen": [user, ["role": "assistant", "content": pair["chosen"]!]], "rejected": [user, ["role": "assistant", "content": pair["rejected"]!]],
                    "safety": pair["safety"]!]
        }
        let gzip = Process()
        gzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
        gzip.arguments = [dir + "/prefs.jsonl"]
        try gzip.run()
        gzip.waitUntilExit()
        let spec = """
        coordinator: tcp://127.0.0.1:*
        heartbeat_ms: 100
        hosts:
          - name: here
            workers: {generator: 1, reward-model: 1, safety-model: 1, learner: 1, reference-policy: 1}
        model: {checkpoint: \(RLHFRunTests.repository)/models/chat-world/sft.bin}
        data: {prompts: prompts.jsonl, eval_prompts: task/prompts/evaluation.jsonl, preferences: prefs.jsonl.gz}
        judge: {command: [rlhf, task, judge]}
        plan:
          - evaluate: {name: SFT}
          - train_rm: {model: reward-model, pairs: 150}
          - train_rm: {model: safety-model, pairs: 150}
          - rs_round: {name: V1, prompts: 32, samples: 4, max_new_tokens: 48, new_pairs: 8, from_sft: true}
          - ppo_round: {name: V2, iterations: 2, rollouts: 16, mini_batch: 8, epochs: 1, max_new_tokens: 32, learning_rate: 0.00003}
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let result = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("plan finished"), "\(result.stdout)")
        #expect(result.stdout.contains("held-out accuracy") && result.stdout.contains("unlabelled"), "\(result.stdout)")
        let summary = try RLHFRunTests.json(dir + "/run/summary.json")
        #expect((summary["rounds"] as? [[String: Any]])?.map { $0["name"] as? String } == ["V1", "V2"])
        #expect(((summary["sft"] as? [String: Any])?["helpfulness"] as? Double ?? 0) > 0.3, "the judge's figures: \(summary)")
    }
    /// A plan that starts from the pretrained model: its sft step fine-tunes it on the learner, and the
    /// result becomes the chat model and the reference (the evaluation right after has no KL to the
    /// reference). The reference-policy worker killed -9 after the step, a new one joining (`rlhf worker`,
    /// from the checkpoint) is brought up to the SFT weights, fetched from the learner: the next
    /// evaluation's KL is still none.
    @Test func anSFTStepMakesTheChatModelAndTheReference() throws {
        let dir = TestKit.scratch("rlhf-sft")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let generated = try CLITests.rlhf(["task", "generate", "--out", dir + "/task", "--corpus-documents", "0", "--sft-examples", "192",
                                           "--preference-pairs", "0"])
        #expect(generated.status == 0, "\(generated.stderr)")
        let spec = """
        coordinator: tcp://127.0.0.1:*
        heartbeat_ms: 100
        hosts:
          - name: here
            workers: {generator: 1, learner: 1, reference-policy: 1}
        model: {checkpoint: \(RLHFRunTests.repository)/models/chat-world/pretrain.bin}
        task: {seed: 1, eval_prompts: 24}
        data: {sft: task/sft.jsonl}
        plan:
          - sft: {name: SFT-train, batch_size: 16, learning_rate: 0.0005}
          - evaluate: {name: SFT}
          - hold: {seconds: 1}
          - evaluate: {name: again}
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let run = dir + "/run"
        let launch = try RLHFRunTests.launch(dir + "/spec.yaml", run: run, dir: dir, name: "launch")
        let output = { (try? String(contentsOfFile: dir + "/launch.out", encoding: .utf8)) ?? "" }
        #expect(RLHFRunTests.wait(for: launch) { output().contains("hold: the cluster stays up") }, "\(output())")
        let port = try #require(RLHFRunTests.port(run))
        let victim = try #require(LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port) --id reference-policy-here-0").first)
        // The newcomer: the same command line under another id.
        let arguments = try String(contentsOfFile: "/proc/\(victim)/cmdline", encoding: .utf8).split(separator: "\0").dropFirst()
            .map { $0 == "reference-policy-here-0" ? "reference-policy-new" : String($0) }
        kill(victim, SIGKILL)
        let newcomer = Process()
        newcomer.executableURL = CLITests.executable
        newcomer.arguments = arguments
        newcomer.standardOutput = FileHandle.nullDevice
        newcomer.standardError = FileHandle.nullDevice
        try newcomer.run()
        defer { kill(newcomer.processIdentifier, SIGKILL) }
        launch.waitUntilExit()
        let out = output()
        #expect(out.contains("version=12 worker=reference-policy-new"), "the newcomer was not brought up to the SFT model: \(out)")
        #expect(launch.terminationStatus == 0, "\(out)")
        #expect(out.contains("SFT-train: SFT on the learner, 192 demonstrations, 12 steps") && out.contains("is the chat model and the reference"), "\(out)")
        #expect(FileManager.default.fileExists(atPath: run + "/rounds/SFT-train/policy.bin"))
        let summary = try RLHFRunTests.json(run + "/summary.json")
        let sft = try #require(summary["sft"] as? [String: Any]), again = try #require((summary["rounds"] as? [[String: Any]])?.first)
        // The same policy and answers: judged the same, and no KL to a reference that holds the same weights
        // (the sampler's and the training forward pass's log-probabilities agree to about 1e-5 a token).
        #expect(again["win_rate_vs_sft"] as? Double == 0.5 && again["helpfulness"] as? Double == sft["helpfulness"] as? Double)
        for figures in [sft, again] {
            let kl = try #require(figures["kl"] as? Double)
            #expect(abs(kl) < 0.01, "KL \(kl) to the reference: it does not hold the SFT model")
        }
    }

    /// A held-out reward model (`rlhf train rm` on pairs of its own) as the plan's judge: it grades the
    /// evaluations (no safety model: nothing is unsafe) and labels the round's new pairs.
    @Test func aHeldOutRewardModelJudgesThePlan() throws {
        let dir = TestKit.scratch("rlhf-rm-judge")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let generated = try CLITests.rlhf(["task", "generate", "--out", dir + "/task", "--seed", "7", "--corpus-documents", "0", "--sft-examples", "0",
                                           "--preference-pairs", "200"])
        #expect(generated.status == 0, "\(generated.stderr)")
        try FileManager.default.createDirectory(atPath: dir + "/judge", withIntermediateDirectories: true)
        let trained = try CLITests.rlhf(["train", "rm", "--data", dir + "/task/prefs.jsonl", "--init", RLHFRunTests.repository + "/models/chat-world/sft.bin",
                                         "--out", dir + "/judge/rm.bin", "--steps", "8", "--subset", "helpfulness"])
        #expect(trained.status == 0, "\(trained.stdout)\(trained.stderr)")
        let spec = """
        coordinator: tcp://127.0.0.1:*
        heartbeat_ms: 100
        hosts:
          - name: here
            workers: {generator: 1, reward-model: 1, safety-model: 1, learner: 1, reference-policy: 1}
        model: {checkpoint: \(RLHFRunTests.repository)/models/chat-world/sft.bin}
        task: {seed: 1, eval_prompts: 32, preference_pairs: 300}
        judge: {source: reward-model, checkpoint: judge/rm.bin, tie_gap: 0.001}
        plan:
          - evaluate: {name: SFT}
          - train_rm: {model: reward-model, pairs: 100}
          - train_rm: {model: safety-model, pairs: 60}
          - rs_round: {name: V1, prompts: 16, samples: 2, max_new_tokens: 32, new_pairs: 4, from_sft: true}
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let result = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("V1: 4 new pairs labelled"), "\(result.stdout)")
        let summary = try RLHFRunTests.json(dir + "/run/summary.json")
        let sft = try #require(summary["sft"] as? [String: Any])
        let helpfulness = try #require(sft["helpfulness"] as? Double)
        #expect(helpfulness > 0 && helpfulness < 1 && sft["unsafe_rate"] as? Double == 0, "\(sft)")
        let v1 = try #require((summary["rounds"] as? [[String: Any]])?.first)
        #expect(v1["reward_model_score"] is Double && v1["safety_model_score"] is Double && sft["reward_model_score"] == nil, "\(v1)")
    }

    /// A rejection-sampling round rewarded by a reward function on two reward-function workers, one killed -9
    /// while the round's answers are being scored: its calls go to the other, every sample is rewarded
    /// once, with the reward its response earns, and the evaluations report the function's mean.
    @Test func aRewardFunctionWorkerKilledMidRoundLosesNoSample() throws {
        let dir = TestKit.scratch("rlhf-reward-function")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A slow, deterministic reward (20 ms an answer): (characters of the response mod 7) / 7.
        try """
        import json, sys, time
        for line in sys.stdin:
            record = json.loads(line)
            time.sleep(0.02)
            print(json.dumps({"reward": (len(record["response"]) % 7) / 7}), flush=True)
        """.write(toFile: dir + "/slow.py", atomically: true, encoding: .utf8)
        let spec = """
        coordinator: tcp://127.0.0.1:*
        heartbeat_ms: 100
        hosts:
          - name: here
            workers: {generator: 1, learner: 1, reference-policy: 1, reward-function: 2}
        model: {checkpoint: \(RLHFRunTests.repository)/models/chat-world/sft.bin}
        task: {seed: 1, eval_prompts: 24}
        reward_function: {command: [python3, slow.py], timeout_s: 60}
        plan:
          - evaluate: {name: SFT}
          - rs_round: {name: V1, prompts: 48, samples: 4, max_new_tokens: 48, from_sft: true, reward: {function: 1}}
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let run = dir + "/run"
        let launch = try RLHFRunTests.launch(dir + "/spec.yaml", run: run, dir: dir, name: "launch")
        // The round (plan step 1, task ids from 2 << 32): its 48 sampling tasks done and a few of its 12 reward calls
        // (16 answers each) answered: kill one worker.
        let tasks = (UInt64(2) << 32) ..< (UInt64(3) << 32)
        let reached = RLHFRunTests.wait(for: launch) { LaunchTests.journaledResults(run + "/journal.jsonl").filter { tasks.contains($0) }.count >= 50 }
        #expect(reached, "the round's scoring never started")
        let port = try #require(RLHFRunTests.port(run))
        let victims = LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port) --id reward-function-here-0")
        #expect(victims.count == 1)
        for pid in victims { kill(pid, SIGKILL) }
        let scoredBeforeKill = LaunchTests.journaledResults(run + "/journal.jsonl").filter { tasks.contains($0) }.count
        launch.waitUntilExit()
        let out = (try? String(contentsOfFile: dir + "/launch.out", encoding: .utf8)) ?? ""
        #expect(launch.terminationStatus == 0, "\(out)")
        #expect(scoredBeforeKill < 60, "the kill came after the round's scoring had finished")
        #expect(out.contains("reward-function-here-0"), "the run never noticed the dead worker: \(out)")
        let samples = try RLHFRunTests.lines(run + "/rounds/V1/samples.jsonl")
        let keys = samples.map { "\($0["prompt_id"]!)/\($0["sample_id"]!)" }
        #expect(samples.count == 48 * 4 && Set(keys).count == samples.count)
        for sample in samples {
            let response = sample["response"] as? String ?? ""
            let expected = Double(Float(Double(response.unicodeScalars.count % 7) / 7))
            #expect(sample["function_reward"] as? Double == expected, "\(sample)")
            #expect(sample["reward"] as? Double == expected)
        }
        let summary = try RLHFRunTests.json(run + "/summary.json")
        let before = try #require((summary["sft"] as? [String: Any])?["function_reward"] as? Double)
        let after = try #require((summary["rounds"] as? [[String: Any]])?.first?["function_reward"] as? Double)
        #expect(before > 0 && after > 0 && out.contains("reward function"), "\(out)")
    }

    /// The reward function as the judge (`judge: {source: reward-function}`) gets each answer with its
    /// prompt's record fields, as it does when it rewards: a reward that checks the answer against the
    /// data's label judges the held-out answers as it scores them (helpfulness equals the function's
    /// mean, and is neither the label-less 0.5 nor 1).
    @Test func theRewardFunctionJudgesWithThePromptsLabels() throws {
        let dir = TestKit.scratch("rlhf-judge-labels")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try """
        import json, sys
        for line in sys.stdin:
            record = json.loads(line)
            label = record.get("label")
            reward = 0.5 if label is None else (1.0 if label in record["response"] else 0.0)
            print(json.dumps({"reward": reward}), flush=True)
        """.write(toFile: dir + "/label.py", atomically: true, encoding: .utf8)
        let animals = ["fox", "owl", "cat", "dog"]
        let prompts = (0..<40).map { i in
            #"{"prompt": "Tell me a story about a \#(animals[i % 4]).", "label": "\#(animals[(i / 4) % 4])"}"#
        }
        try (prompts.joined(separator: "\n") + "\n").write(toFile: dir + "/prompts.jsonl", atomically: true, encoding: .utf8)
        let spec = """
        coordinator: tcp://127.0.0.1:*
        heartbeat_ms: 100
        hosts:
          - name: here
            workers: {generator: 1, learner: 1, reference-policy: 1, reward-function: 1}
        model: {checkpoint: \(RLHFRunTests.repository)/models/chat-world/sft.bin}
        data: {prompts: prompts.jsonl, eval_prompts: prompts.jsonl}
        task: {eval_samples: 2}
        reward_function: {command: [python3, label.py], timeout_s: 60}
        judge: {source: reward-function, helpful_above: 0.75}
        plan:
          - evaluate: {name: SFT}
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let result = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let sft = try #require(try RLHFRunTests.json(dir + "/run/summary.json")["sft"] as? [String: Any])
        let helpfulness = try #require(sft["helpfulness"] as? Double), function = try #require(sft["function_reward"] as? Double)
        #expect(abs(helpfulness - function) < 1e-6 && helpfulness > 0 && helpfulness < 0.5, "\(sft)")
    }
}
