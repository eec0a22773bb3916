import ClusterRuntime
import Foundation
import LlamaCore
import LlamaTraining
import Recipe
import Testing
import TestKit

/// Cluster specs with the RLHF plan steps: parsed into settings, refused with the key at fault.
@Suite struct SpecTests {
    static let checkpoint = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../models/chat-world/sft.bin").standardized.path
    static let head = """
    coordinator: tcp://127.0.0.1:5555
    hosts:
      - name: a
        workers: {generator: 1, reward-model: 1, safety-model: 1, learner: 1, reference-policy: 1}
    model: {checkpoint: \(checkpoint)}

    """

    @Test func rlhfStepsAndTheTaskAreParsed() throws {
        let spec = try ClusterSpec.parse(SpecTests.head + """
        task: {seed: 3, eval_prompts: 100, eval_temperature: 0.8}
        plan:
          - evaluate: {name: SFT}
          - train_rm: {model: safety-model, epochs: 2, batch_size: 8, learning_rate: 0.0002, margin: large, pairs: 500}
          - rs_round: {name: V1, prompts: 32, samples: 6, temperature: 1.2, max_new_tokens: 40, epochs: 2, batch_size: 4, learning_rate: 0.00003, new_pairs: 64, from_sft: true}
        """, baseDirectory: "/")
        #expect(spec.task?.seed == 3 && spec.task?.evalPrompts == 100 && spec.task?.evalTemperature == 0.8)
        #expect(spec.plan.count == 3)
        #expect(spec.plan[0] == .evaluate(name: "SFT", settings: RLHFPipeline.EvalSettings()))
        var rm = RLHFPipeline.RewardModelSettings(model: .safetyModel)
        rm.epochs = 2
        rm.batchSize = 8
        rm.learningRate = 0.0002
        rm.margin = .large
        rm.pairs = 500
        #expect(spec.plan[1] == .trainRewardModel(rm))
        guard case let .rejectionSampling(round) = spec.plan[2] else {
            Issue.record("expected a rejection-sampling round")
            return
        }
        #expect(round.name == "V1" && round.prompts == 32 && round.samples == 6 && round.temperature == 1.2 && round.maxNewTokens == 40)
        #expect(round.epochs == 2 && round.batchSize == 4 && round.learningRate == 0.00003 && round.newPairs == 64 && round.fromSFT)
    }

    @Test func aPPORoundIsParsedWithLLaMA2Defaults() throws {
        let spec = try ClusterSpec.parse(SpecTests.head + """
        task: {seed: 1}
        plan:
          - ppo_round: {name: V5}
          - ppo_round: {name: V6, iterations: 8, rollouts: 32, mini_batch: 8, epochs: 3, new_pairs: 64, rm_every: 3, learning_rate: 0.00002, beta: 0, kl_estimator: k3, kl_target: 4, whitening: batch, gamma: 0.99, lambda: 0.9}
        """, baseDirectory: "/")
        guard case let .ppo(v5) = spec.plan[0], case let .ppo(v6) = spec.plan[1] else {
            Issue.record("expected PPO rounds")
            return
        }
        #expect(v5.newPairs == 0 && v5.refreshIterations.isEmpty)
        // Refreshes before iterations 4 and 7 of 8 (none before the first).
        #expect(v6.newPairs == 64 && v6.rmEvery == 3 && v6.refreshIterations == [4, 7])
        #expect(v5.epochs == 1 && v5.beta == 0.01 && v5.klEstimator == .k1 && v5.klTarget == nil && v5.whitening == .running && v5.gamma == 1 && v5.lambda == 0.95)
        #expect(v6.iterations == 8 && v6.rollouts == 32 && v6.miniBatch == 8 && v6.epochs == 3 && v6.learningRate == 0.00002 && v6.beta == 0)
        #expect(v6.klEstimator == .k3 && v6.klTarget == 4 && v6.whitening == .batch && abs(v6.gamma - 0.99) < 1e-6 && abs(v6.lambda - 0.9) < 1e-6)
    }

    @Test func aPlanCanLiveInItsOwnFile() throws {
        let dir = TestKit.scratch("plan")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "- evaluate: {name: SFT}\n- rs_round: {name: V1, prompts: 8}\n".write(toFile: dir + "/plan.yaml", atomically: true, encoding: .utf8)
        try "plan:\n  - hold: {seconds: 2}\n".write(toFile: dir + "/mapping.yaml", atomically: true, encoding: .utf8)
        try "plan: {hold: 1}\n".write(toFile: dir + "/bad.yaml", atomically: true, encoding: .utf8)
        let spec = try ClusterSpec.parse(SpecTests.head + "task: {seed: 1}\nplan: plan.yaml\n", baseDirectory: dir)
        #expect(spec.plan.count == 2 && spec.plan[0].isRLHF && spec.planFileText?.contains("rs_round") == true)
        guard case let .rejectionSampling(v1) = spec.plan[1] else {
            Issue.record("expected a rejection-sampling round")
            return
        }
        #expect(v1.name == "V1" && v1.prompts == 8)
        #expect(try ClusterSpec.parse(SpecTests.head + "plan: \(dir)/mapping.yaml\n", baseDirectory: "/").plan == [.hold(seconds: 2)])
        for (file, reason) in [("missing.yaml", "cannot read"), ("bad.yaml", "no list of steps")] {
            do {
                _ = try ClusterSpec.parse(SpecTests.head + "plan: \(file)\n", baseDirectory: dir)
                Issue.record("\(file) was accepted")
            } catch let error as ClusterSpec.Invalid {
                #expect(error.key == "plan" && error.reason.contains(reason), "\(error)")
            }
        }
    }

    /// Each `(text, key)`: the head plus `text` is refused, naming `key`.
    static func expectRefused(_ cases: [(String, String)]) {
        for (text, key) in cases {
            do {
                _ = try ClusterSpec.parse(SpecTests.head + text, baseDirectory: "/")
                Issue.record("accepted: \(text)")
            } catch let e as ClusterSpec.Invalid {
                #expect(e.key == key, "\(text): \(e)")
            } catch {
                Issue.record("\(error)")
            }
        }
    }

    @Test func badRLHFStepsNameTheKey() {
        let cases: [(String, String)] = [
            ("plan:\n  - evaluate: {name: SFT}\n", "data.prompts"),
            ("task: {seed: 1}\nplan:\n  - train_rm: {model: learner}\n", "plan[0].train_rm.model"),
            ("task: {seed: 1}\nplan:\n  - train_rm: {model: reward-model, margin: huge}\n", "plan[0].train_rm.margin"),
            ("task: {seed: 1}\nplan:\n  - rs_round: {prompts: 4}\n", "plan[0].rs_round.name"),
            ("task: {seed: 1}\nplan:\n  - rs_round: {name: V1, samples: 0}\n", "plan[0].rs_round.samples"),
            ("task: {seed: 1}\nplan:\n  - rs_round: {name: V1, sampels: 4}\n", "plan[0].rs_round.sampels"),
            ("task: {seed: -1}\n", "task.seed"),
            ("task: {seed: 1}\nplan:\n  - rs_round: {name: V1, from_sft: maybe}\n", "plan[0].rs_round.from_sft"),
            ("task: {tokenizer: /nonexistent.bin}\n", "task.tokenizer"),
            ("task: {seed: 1}\nplan:\n  - ppo_round: {iterations: 4}\n", "plan[0].ppo_round.name"),
            ("task: {seed: 1}\nplan:\n  - ppo_round: {name: V5, kl_estimator: k2}\n", "plan[0].ppo_round.kl_estimator"),
            ("task: {seed: 1}\nplan:\n  - ppo_round: {name: V5, beta: -0.1}\n", "plan[0].ppo_round.beta"),
            ("task: {seed: 1}\nplan:\n  - ppo_round: {name: V5, lambda: 1.5}\n", "plan[0].ppo_round.lambda"),
            ("task: {seed: 1}\nplan:\n  - ppo_round: {name: V5, whitening: never}\n", "plan[0].ppo_round.whitening"),
            ("task: {seed: 1, eval_samples: 0}\n", "task.eval_samples"),
        ]
        SpecTests.expectRefused(cases)
    }
}

/// Spec values that were taken silently wrong (issue 23, point 4): each is now read as written or refused
/// with the key's path.
@Suite struct SpecValueTests {
    /// A step whose role no host starts (before: `generator: 0` printed progress with "ETA 0s" for ever).
    @Test func aStepWhoseRoleNoHostStartsIsRefusedNamingTheRole() throws {
        func spec(_ workers: String, _ plan: String) -> String {
            SpecTests.head.replacingOccurrences(of: "{generator: 1, reward-model: 1, safety-model: 1, learner: 1, reference-policy: 1}",
                                                with: workers) + "task: {seed: 1}\nplan:\n" + plan
        }
        let cases: [(String, String, String, String)] = [
            ("{generator: 0, learner: 1}", "  - hold: {seconds: 1}\n  - generate: {prompts: 2}\n", "plan[1].generate", "generator"),
            ("{generator: 1}", "  - evaluate: {name: SFT}\n", "plan[0].evaluate", "reference-policy"),
            ("{generator: 1, learner: 1, reward-model: 1}", "  - train_rm: {model: safety-model}\n", "plan[0].train_rm", "safety-model"),
            ("{generator: 1, learner: 1, reward-model: 1, reference-policy: 1}", "  - rs_round: {name: V1}\n", "plan[0].rs_round", "safety-model"),
            ("{generator: 2, reward-model: 1, safety-model: 1, reference-policy: 1}", "  - ppo_round: {name: V5}\n", "plan[0].ppo_round", "learner"),
            ("{generator: 1, reward-model: 1, learner: 1}", "  - round: {prompts: 2}\n", "plan[0].round", "reference-policy"),
        ]
        for (workers, plan, key, role) in cases {
            do {
                _ = try ClusterSpec.parse(spec(workers, plan), baseDirectory: "/")
                Issue.record("accepted: \(workers) with \(plan)")
            } catch let e as ClusterSpec.Invalid {
                #expect(e.key == key, "\(e)")
                #expect(e.reason.contains("needs") && e.reason.contains(role), "\(e)")
            }
        }
        // What each step needs is enough.
        _ = try ClusterSpec.parse(spec("{generator: 1, learner: 1, safety-model: 1}", "  - generate: {}\n  - train_rm: {model: safety-model}\n  - hold: {seconds: 1}\n"),
                                  baseDirectory: "/")
    }

    @Test func anIntegerTemperatureIsThatTemperature() throws {
        let spec = try ClusterSpec.parse(SpecTests.head + "plan:\n  - generate: {temperature: 0}\n  - round: {temperature: 2}\n", baseDirectory: "/")
        guard case let .generate(_, _, _, greedy) = spec.plan[0], case let .round(_, _, _, hot, _) = spec.plan[1] else {
            Issue.record("steps not parsed: \(spec.plan)")
            return
        }
        #expect(greedy == 0)
        #expect(hot == 2)
    }

    @Test func wrongTypesUnknownKeysAndBadPortsNameTheKey() {
        let cases: [(String, String)] = [
            ("plan:\n  - generate: {prompts: four}\n", "plan[0].generate.prompts"),
            ("plan:\n  - generate: {prompts: 2.5}\n", "plan[0].generate.prompts"),
            ("plan:\n  - generate: {temprature: 1}\n", "plan[0].generate.temprature"),
            ("plan:\n  - generate: {temperature: hot}\n", "plan[0].generate.temperature"),
            ("plan:\n  - generate: {temperature: -0.5}\n", "plan[0].generate.temperature"),
            ("plan:\n  - generate: {temperature: true}\n", "plan[0].generate.temperature"),
            ("plan:\n  - generate: 5\n", "plan[0].generate"),
            ("plan:\n  - round: {samples: many}\n", "plan[0].round.samples"),
            ("plan:\n  - round: {learning_rate: fast}\n", "plan[0].round.learning_rate"),
            ("plan:\n  - hold: {seconds: soon}\n", "plan[0].hold.seconds"),
            ("plan:\n  - hold: {seconds: 2, minutes: 1}\n", "plan[0].hold.minutes"),
            ("metrics: tcp://127.0.0.1:70000\n", "metrics"),
        ]
        SpecTests.expectRefused(cases)
        for port in ["99999", "0", "http", ""] {
            let text = SpecTests.head.replacingOccurrences(of: ":5555", with: ":" + port)
            #expect(throws: ClusterSpec.Invalid.self, "port \(port)") { try ClusterSpec.parse(text, baseDirectory: "/") }
        }
        // `*` (any free port) stays allowed.
        #expect(throws: Never.self) { try ClusterSpec.parse(SpecTests.head.replacingOccurrences(of: ":5555", with: ":*"), baseDirectory: "/") }
    }

    /// `threads: {role: n}` gives a host's workers of a role n compute threads (`--threads`), 1 where not
    /// given; a bad role or count is refused naming the key (beside `slurm:`, SchedulerSpecTests).
    @Test func perRoleThreadsReachTheWorkersCommandLines() throws {
        let text = SpecTests.head.replacingOccurrences(of: "reference-policy: 1}\n", with: "reference-policy: 1}\n    threads: {learner: 2, generator: 3}\n")
            + "plan:\n  - generate: {prompts: 2}\n"
        let spec = try ClusterSpec.parse(text, baseDirectory: "/")
        let host = spec.hosts[0]
        #expect(host.threads == [.learner: 2, .generator: 3])
        func threads(_ role: WorkerRole) -> String? {
            let arguments = spec.workerArguments(id: "x", role: role, host: host, coordinator: "tcp://127.0.0.1:5555", runID: nil, stateDirectory: "/tmp/s")
            return arguments.firstIndex(of: "--threads").map { arguments[$0 + 1] }
        }
        #expect(threads(.learner) == "2" && threads(.generator) == "3" && threads(.rewardModel) == nil)
        let bad: [(String, String)] = [
            ("threads: {learner: 0}", "hosts[0].threads.learner"),
            ("threads: {learner: 257}", "hosts[0].threads.learner"),
            ("threads: {learner: two}", "hosts[0].threads.learner"),
            ("threads: {trainer: 2}", "hosts[0].threads.trainer"),
            ("threads: 2", "hosts[0].threads"),
        ]
        for (line, key) in bad {
            let text = SpecTests.head.replacingOccurrences(of: "reference-policy: 1}\n", with: "reference-policy: 1}\n    \(line)\n")
                + "plan:\n  - generate: {prompts: 2}\n"
            #expect { try ClusterSpec.parse(text, baseDirectory: "/") } throws: { ($0 as? ClusterSpec.Invalid)?.key == key }
        }
    }

    /// `model.chat_template` names a chat format; `export` a format (and type) for each round's policy.
    @Test func chatTemplateAndExportAreParsedOrNamed() throws {
        let model = "model: {checkpoint: \(SpecTests.checkpoint)}"
        let chatml = SpecTests.head.replacingOccurrences(of: model, with: "model: {checkpoint: \(SpecTests.checkpoint), chat_template: chatml}")
        let spec = try ClusterSpec.parse(chatml + "export: {format: hf, dtype: bfloat16}\n", baseDirectory: "/")
        #expect(spec.chatTemplate == .chatml && spec.export.format == .hf && spec.export.dtype == .bfloat16)
        let plain = try ClusterSpec.parse(SpecTests.head + "export: hf\n", baseDirectory: "/")
        #expect(plain.chatTemplate == nil && plain.export.format == .hf && plain.export.dtype == .float32)
        #expect(try ClusterSpec.parse(SpecTests.head, baseDirectory: "/").export.format == .llama2c)
        SpecTests.expectRefused([("export: onnx\n", "export"), ("export: {format: hf, dtype: int8}\n", "export.dtype"),
                                 ("export: {fromat: hf}\n", "export.fromat")])
        let vicuna = SpecTests.head.replacingOccurrences(of: model, with: "model: {checkpoint: \(SpecTests.checkpoint), chat_template: vicuna}")
        #expect { try ClusterSpec.parse(vicuna, baseDirectory: "/") } throws: {
            ($0 as? ClusterSpec.Invalid)?.key == "model.chat_template" && "\($0)".contains("llama2, chatml, llama3")
        }
    }

    /// `model.reward_model` and `model.safety_model` name Hugging Face reward models the reward-model and
    /// safety-model workers run (their `--checkpoint`, no `--head`) and the learner's reward training starts
    /// from; another directory and a head beside one are refused by key.
    @Test func pretrainedRewardModelsAreParsedOrRefused() throws {
        let model = "model: {checkpoint: \(SpecTests.checkpoint)}"
        let rm = Fixtures.rewardModel("llama-rm"), safety = Fixtures.rewardModel("qwen2-rm")
        func spec(_ modelLine: String, _ rest: String = "") -> String { SpecTests.head.replacingOccurrences(of: model, with: modelLine) + rest }
        let parsed = try ClusterSpec.parse(spec("model: {checkpoint: \(SpecTests.checkpoint), reward_model: \(rm), safety_model: \(safety)}",
                                                "task: {seed: 1}\nplan:\n  - ppo_round: {name: V5, rollouts: 4}\n"), baseDirectory: "/")
        #expect(parsed.pretrainedRewardModels == [.rewardModel: rm, .safetyModel: safety])
        let host = parsed.hosts[0]
        func checkpointArgument(_ role: WorkerRole) -> String? {
            let arguments = parsed.workerArguments(id: "x", role: role, host: host, coordinator: "tcp://127.0.0.1:5555", runID: nil, stateDirectory: "/tmp/s")
            return arguments.firstIndex(of: "--checkpoint").map { arguments[$0 + 1] }
        }
        #expect(checkpointArgument(.rewardModel) == rm && checkpointArgument(.safetyModel) == safety)
        #expect(checkpointArgument(.generator) == SpecTests.checkpoint && checkpointArgument(.learner) == SpecTests.checkpoint)
        // The learner starts its copies from them where the plan trains one.
        let learner = parsed.workerArguments(id: "x", role: .learner, host: host, coordinator: "tcp://127.0.0.1:5555", runID: nil, stateDirectory: "/tmp/s")
        #expect(learner.joined(separator: " ").contains("--pretrained-reward-model \(rm) --pretrained-safety-model \(safety)"))
        for (line, rest, key) in [
            ("model: {checkpoint: \(SpecTests.checkpoint), reward_model: \(Fixtures.qwen2)}", "", "model.reward_model"),
            ("model: {checkpoint: \(SpecTests.checkpoint), safety_model: \(safety), safety_head: \(SpecTests.checkpoint)}", "", "model.safety_head"),
        ] {
            #expect { try ClusterSpec.parse(spec(line, rest), baseDirectory: "/") } throws: { ($0 as? ClusterSpec.Invalid)?.key == key }
        }
    }

    /// `model.chat_template_kwargs` is a mapping of JSON values for the model's own template; with a named
    /// format (whose template reads none) or as anything but a mapping it is refused by key.
    @Test func chatTemplateArgumentsAreParsedOrRefused() throws {
        let model = "model: {checkpoint: \(SpecTests.checkpoint)}"
        func spec(_ modelLine: String) -> String { SpecTests.head.replacingOccurrences(of: model, with: modelLine) }
        let parsed = try ClusterSpec.parse(spec("""
        model:
          checkpoint: \(SpecTests.checkpoint)
          chat_template_kwargs: {enable_thinking: false, date_string: 07 Dec 2026, budget: 3, tags: [a, 1.5], extra: {x: null}}
        """), baseDirectory: "/")
        #expect(parsed.chatTemplateArguments.values == ["enable_thinking": .bool(false), "date_string": .string("07 Dec 2026"), "budget": .int(3),
                                                         "tags": .list([.string("a"), .double(1.5)]), "extra": .map(["x": .null])])
        #expect(try ClusterSpec.parse(SpecTests.head, baseDirectory: "/").chatTemplateArguments.isEmpty)
        for (line, key) in [("model: {checkpoint: \(SpecTests.checkpoint), chat_template_kwargs: [enable_thinking]}", "model.chat_template_kwargs"),
                            ("model: {checkpoint: \(SpecTests.checkpoint), chat_template_kwargs: true}", "model.chat_template_kwargs"),
                            ("model: {checkpoint: \(SpecTests.checkpoint), chat_template: chatml, chat_template_kwargs: {enable_thinking: false}}",
                             "model.chat_template_kwargs")] {
            #expect { try ClusterSpec.parse(spec(line), baseDirectory: "/") } throws: { ($0 as? ClusterSpec.Invalid)?.key == key }
        }
    }
}

/// The `data:` and `judge:` sections: a user's files and judge command as the plan's sources.
@Suite struct DataSpecTests {
    static func temporaryDirectory() throws -> String {
        let dir = TestKit.scratch("data-spec")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func dataFilesAndAJudgeCommandAreParsed() throws {
        let dir = try DataSpecTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for name in ["train.jsonl", "eval.jsonl.gz", "prefs.jsonl"] { try "{}\n".write(toFile: dir + "/" + name, atomically: true, encoding: .utf8) }
        let spec = try ClusterSpec.parse(SpecTests.head + """
        data: {prompts: train.jsonl, eval_prompts: eval.jsonl.gz, preferences: \(dir)/prefs.jsonl, prompt_key: question, chosen_key: good,
               rejected_key: bad, messages_key: conversation, completion_key: output, on_bad_data: skip}
        judge: {command: [python3, judge.py, --strict], tie_gap: 0.1, levels: [1, 0.5, 0.2], helpful_above: 0.3, timeout_s: 30}
        plan:
          - evaluate: {name: SFT}
          - train_rm: {model: reward-model}
          - rs_round: {name: V1}
        """, baseDirectory: dir)
        let data = try #require(spec.data)
        #expect(data.prompts == dir + "/train.jsonl" && data.evalPrompts == dir + "/eval.jsonl.gz" && data.preferences == dir + "/prefs.jsonl")
        #expect(data.keys == DataKeys(prompt: "question", chosen: "good", rejected: "bad", messages: "conversation", completion: "output")
                && data.onBadData == .skip)
        let judge = try #require(spec.judge)
        #expect(judge.arguments == ["python3", "judge.py", "--strict"] && judge.directory == dir)
        #expect(judge.settings.tieGap == 0.1 && judge.settings.helpfulAbove == 0.3 && judge.settings.timeoutSeconds == 30)
        #expect(judge.settings.levels == LevelThresholds(significantlyBetter: 1, better: 0.5, slightlyBetter: 0.2))
        #expect(spec.task == nil)
        // A string command is its words.
        let words = try ClusterSpec.parse(SpecTests.head + "judge: {command: rlhf task judge}\n", baseDirectory: dir)
        #expect(words.judge?.arguments == ["rlhf", "task", "judge"])
        // With the embedded task, any source may be left out (the task gives it).
        let mixed = try ClusterSpec.parse(SpecTests.head + "task: {seed: 1}\ndata: {preferences: prefs.jsonl}\nplan:\n  - train_rm: {model: reward-model}\n",
                                          baseDirectory: dir)
        #expect(mixed.data?.prompts == nil && mixed.data?.preferences == dir + "/prefs.jsonl")
        SpecTests.expectRefused([
            ("data: {prompts: nowhere.jsonl}\n", "data.prompts"),
            ("data: {prompts: 3}\n", "data.prompts"),
            ("data: {promts: train.jsonl}\n", "data.promts"),
            ("data: {eval_prompts: \(dir)/eval.jsonl.gz}\n", "data.eval_prompts"),
            ("data: {prompts: \(dir)/train.jsonl, on_bad_data: ignore}\n", "data.on_bad_data"),
            ("judge: {command: []}\n", "judge.command"),
            ("judge: {command: [rlhf, 3]}\n", "judge.command"),
            ("judge: {command: rlhf, levels: [0.1, 0.5, 1]}\n", "judge.levels"),
            ("judge: {command: rlhf, levels: [1, 0.5]}\n", "judge.levels"),
            ("judge: {command: rlhf, tie_gap: -1}\n", "judge.tie_gap"),
            ("judge: {command: rlhf, timeout_s: 0}\n", "judge.timeout_s"),
            ("judge: {command: rlhf, weight: 2}\n", "judge.weight"),
            // Without the task, each source the plan needs must be given.
            ("data: {prompts: \(dir)/train.jsonl}\nplan:\n  - evaluate: {name: SFT}\n", "judge"),
            ("data: {prompts: \(dir)/train.jsonl}\njudge: {command: rlhf}\nplan:\n  - train_rm: {model: reward-model}\n", "data.preferences"),
            ("data: {prompts: \(dir)/train.jsonl}\njudge: {command: rlhf}\nplan:\n  - sft: {}\n", "data.sft"),
        ])
    }

    @Test func aRewardModelJudgeIsParsed() throws {
        let dir = try DataSpecTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for name in ["rm.bin", "rm.bin.head.json", "other-head.json", "safety.bin", "safety.bin.head.json"] {
            try "{}".write(toFile: dir + "/" + name, atomically: true, encoding: .utf8)
        }
        let spec = try ClusterSpec.parse(SpecTests.head + "judge: {source: reward-model, checkpoint: rm.bin, tie_gap: 0.02}\n", baseDirectory: dir)
        #expect(spec.judge?.rewardModel == RewardModelJudge.Models(checkpoint: dir + "/rm.bin", head: dir + "/rm.bin.head.json"))
        #expect(spec.judge?.settings.tieGap == 0.02 && spec.judge?.arguments == [] && spec.judge?.usesRewardFunction == false)
        let both = try ClusterSpec.parse(SpecTests.head + """
        judge: {source: reward-model, checkpoint: rm.bin, head: other-head.json, safety_checkpoint: safety.bin, unsafe_below: 0.3}
        """, baseDirectory: dir)
        var models = RewardModelJudge.Models(checkpoint: dir + "/rm.bin", head: dir + "/other-head.json")
        models.safetyCheckpoint = dir + "/safety.bin"
        models.safetyHead = dir + "/safety.bin.head.json"
        models.unsafeBelow = 0.3
        #expect(both.judge?.rewardModel == models)
        // A Hugging Face reward model brings its own head (its score.weight); its safety model too.
        let pretrained = Fixtures.rewardModel("llama-rm"), other = Fixtures.rewardModel("qwen2-rm")
        let hf = try ClusterSpec.parse(SpecTests.head + "judge: {source: reward-model, checkpoint: \(pretrained), safety_checkpoint: \(other)}\n",
                                       baseDirectory: dir)
        var own = RewardModelJudge.Models(checkpoint: pretrained, head: nil)
        own.safetyCheckpoint = other
        #expect(hf.judge?.rewardModel == own)
        let policyIsRewardModel = SpecTests.head.replacingOccurrences(of: "model: {checkpoint: \(SpecTests.checkpoint)}", with: "model: {checkpoint: \(pretrained)}")
        #expect { try ClusterSpec.parse(policyIsRewardModel, baseDirectory: dir) } throws: {
            ($0 as? ClusterSpec.Invalid)?.key == "model.checkpoint" && "\($0)".contains("holds a reward model")
        }
        for (text, key) in [
            ("judge: {source: reward-model}\n", "judge.checkpoint"),
            ("judge: {source: reward-model, checkpoint: \(Fixtures.qwen2)}\n", "judge.head"),
            ("judge: {source: reward-model, checkpoint: nothing.bin}\n", "judge.checkpoint"),
            ("judge: {source: reward-model, checkpoint: safety.bin, head: nothing.json}\n", "judge.head"),
            ("judge: {source: reward-model, checkpoint: other-head.json}\n", "judge.head"),
            ("judge: {source: reward-model, checkpoint: rm.bin, safety_head: other-head.json}\n", "judge.safety_head"),
            ("judge: {source: reward-model, checkpoint: rm.bin, unsafe_below: 2}\n", "judge.unsafe_below"),
            ("judge: {command: [python3, j.py], checkpoint: rm.bin}\n", "judge.checkpoint"),
            ("judge: {source: reward-function, unsafe_below: 0.2}\n", "judge.unsafe_below"),
            ("judge: {source: reward-models, checkpoint: rm.bin}\n", "judge.source"),
        ] {
            #expect { try ClusterSpec.parse(SpecTests.head + text, baseDirectory: dir) } throws: { ($0 as? ClusterSpec.Invalid)?.key == key }
        }
    }

    @Test func policyAndDPORoundsAreParsed() throws {
        let spec = try ClusterSpec.parse(SpecTests.head + """
        task: {seed: 1}
        plan:
          - policy_round: {name: G, algorithm: grpo, iterations: 30, prompts: 32, group: 8, epochs: 2, mini_batch: 64, clip: 0.28,
                           learning_rate: 0.00002, beta: 0.02, loss_aggregation: token, temperature: 0.9, max_new_tokens: 64}
          - policy_round: {name: R, algorithm: reinforce_pp, group: 1, kl_estimator: k3, reward: {models: 0.5}}
          - policy_round: {name: D, algorithm: dr_grpo, max_new_tokens: 80}
          - policy_round: {name: P, algorithm: ppo, prompts: 8, group: 8, mini_batch: 16}
          - dpo_round: {name: O, beta: 0.2, loss: ipo, label_smoothing: 0.1, epochs: 2, batch_size: 8, max_pairs: 500}
          - dpo_round: {name: I, pairs: on_policy, iterations: 3, prompts: 64, samples: 6, rank_by: judge}
        """, baseDirectory: "/")
        guard case let .policyRound(g) = spec.plan[0], case let .policyRound(r) = spec.plan[1], case let .policyRound(d) = spec.plan[2],
              case let .policyRound(p) = spec.plan[3], case let .dpoRound(o) = spec.plan[4], case let .dpoRound(i) = spec.plan[5] else {
            Issue.record("steps not parsed as policy and DPO rounds: \(spec.plan)")
            return
        }
        #expect(g.algorithm == .grpo && g.iterations == 30 && g.prompts == 32 && g.group == 8 && g.epochs == 2 && g.miniBatch == 64)
        #expect(g.clip == 0.28 && g.learningRate == 0.00002 && g.beta == 0.02 && g.temperature == 0.9 && g.maxNewTokens == 64)
        // GRPO: the KL in the loss, here summed per token; REINFORCE++: in the reward, per token; Dr. GRPO: a constant length.
        #expect(g.klPlacement == .loss && g.aggregation == .token)
        #expect(r.algorithm == .reinforcePP && r.klPlacement == .reward && r.aggregation == .token && r.klEstimator == .k3)
        #expect(r.reward == RewardWeights(models: 0.5) && spec.plan[1].neededRoles == [.generator, .learner, .referencePolicy, .rewardModel, .safetyModel])
        #expect(d.aggregation == .constant(80) && RLHFPipeline.PolicyRoundSettings(name: "x").aggregation == .sequence)
        #expect(p.algorithm == .ppo && p.ppo.rollouts == 64 && p.ppo.miniBatch == 16)
        #expect(o.pairs == .data && o.beta == 0.2 && o.objective == .ipo && o.labelSmoothing == 0.1 && o.epochs == 2 && o.batchSize == 8 && o.maxPairs == 500)
        #expect(spec.plan[4].neededRoles == [.generator, .learner, .referencePolicy])
        #expect(i.pairs == .onPolicy && i.iterations == 3 && i.prompts == 64 && i.samples == 6 && i.rankBy == .judge)
        #expect(spec.plan.map(\.kind) == ["policy_round", "policy_round", "policy_round", "policy_round", "dpo_round", "dpo_round"])
        // --quick: a few small iterations, at most 512 data pairs once.
        guard case let .policyRound(quickG) = spec.quick().plan[0], case let .dpoRound(quickO) = spec.quick().plan[4] else { return }
        #expect(quickG.iterations == 4 && quickG.prompts == 8 && quickG.group == 4 && quickO.maxPairs == 500 && quickO.epochs == 1)
        SpecTests.expectRefused([
            ("task: {seed: 1}\nplan:\n  - policy_round: {algorithm: grpo}\n", "plan[0].policy_round.name"),
            ("task: {seed: 1}\nplan:\n  - policy_round: {name: G, algorithm: gpro}\n", "plan[0].policy_round.algorithm"),
            ("task: {seed: 1}\nplan:\n  - policy_round: {name: G, group: 1}\n", "plan[0].policy_round.group"),
            ("task: {seed: 1}\nplan:\n  - policy_round: {name: G, clip: 1.5}\n", "plan[0].policy_round.clip"),
            ("task: {seed: 1}\nplan:\n  - policy_round: {name: G, kl_in: both}\n", "plan[0].policy_round.kl_in"),
            ("task: {seed: 1}\nplan:\n  - policy_round: {name: G, algorithm: dr_grpo, loss_aggregation: token}\n", "plan[0].policy_round.loss_aggregation"),
            ("task: {seed: 1}\nplan:\n  - policy_round: {name: G, epochs: 65}\n", "plan[0].policy_round.epochs"),
            ("task: {seed: 1}\nplan:\n  - dpo_round: {name: O, loss: hinge}\n", "plan[0].dpo_round.loss"),
            ("task: {seed: 1}\nplan:\n  - dpo_round: {name: O, beta: 0}\n", "plan[0].dpo_round.beta"),
            ("task: {seed: 1}\nplan:\n  - dpo_round: {name: O, label_smoothing: 0.5}\n", "plan[0].dpo_round.label_smoothing"),
            ("task: {seed: 1}\nplan:\n  - dpo_round: {name: O, pairs: offline}\n", "plan[0].dpo_round.pairs"),
            ("task: {seed: 1}\nplan:\n  - dpo_round: {name: O, samples: 4}\n", "plan[0].dpo_round.samples"),
            ("task: {seed: 1}\nplan:\n  - dpo_round: {name: O, pairs: on_policy, samples: 1}\n", "plan[0].dpo_round.samples"),
        ])
    }

    /// The shipped specs parse (files.yaml needs `rlhf task generate` first; the multi-host one, hosts of its own).
    @Test(arguments: ["local.yaml", "from-pretrained.yaml", "compare-algorithms.yaml"])
    func theShippedSpecsParse(name: String) throws {
        let spec = try ClusterSpec.parse(String(contentsOfFile: TestKit.repository + "/cluster/" + name, encoding: .utf8),
                                         baseDirectory: TestKit.repository + "/cluster")
        #expect(!spec.plan.isEmpty)
        if name == "compare-algorithms.yaml" {
            #expect(spec.snapshotRounds == ["V5-RS"] && spec.plan.suffix(6).allSatisfy { $0.startFrom == "V5-RS" })
        }
    }

    @Test func branchesStartFromAnEarlierRound() throws {
        let spec = try ClusterSpec.parse(SpecTests.head + """
        task: {seed: 1}
        plan:
          - rs_round: {name: V1}
          - ppo_round: {name: P, start_from: V1, budget_s: 30}
          - policy_round: {name: G, start_from: V1}
          - dpo_round: {name: D, start_from: G, budget_s: 12.5}
          - policy_round: {name: R, algorithm: rloo, start_from: sft}
        """, baseDirectory: "/")
        // `sft`: the chat model, which the learner always holds (no snapshot needed).
        #expect(spec.snapshotRounds == ["V1", "G"] && spec.plan.map(\.startFrom) == [nil, "V1", "V1", "G", "sft"])
        #expect(spec.plan.map(\.roundName) == ["V1", "P", "G", "D", "R"])
        guard case let .ppo(p) = spec.plan[1], case let .dpoRound(d) = spec.plan[3] else { return }
        #expect(p.budgetSeconds == 30 && d.budgetSeconds == 12.5)
        SpecTests.expectRefused([
            ("task: {seed: 1}\nplan:\n  - policy_round: {name: G, start_from: V1}\n  - rs_round: {name: V1}\n", "plan[0].policy_round.start_from"),
            ("task: {seed: 1}\nplan:\n  - rs_round: {name: V1}\n  - dpo_round: {name: D, start_from: V2}\n", "plan[1].dpo_round.start_from"),
            ("task: {seed: 1}\nplan:\n  - ppo_round: {name: P, budget_s: 0}\n", "plan[0].ppo_round.budget_s"),
            // Two rounds of one name would write over each other's rounds/NAME/; a name is one directory.
            ("task: {seed: 1}\nplan:\n  - rs_round: {name: V1}\n  - evaluate: {name: V1}\n  - ppo_round: {name: V1}\n", "plan[2].ppo_round.name"),
            ("task: {seed: 1}\nplan:\n  - sft: {}\n  - sft: {epochs: 2}\n", "plan[1].sft.name"),
            ("task: {seed: 1}\nplan:\n  - rs_round: {name: ../V1}\n", "plan[0].rs_round.name"),
            ("task: {seed: 1}\nplan:\n  - dpo_round: {name: ..}\n", "plan[0].dpo_round.name"),
        ])
    }

    @Test func anSFTStepAndItsDataAreParsed() throws {
        let dir = try DataSpecTests.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "{}\n".write(toFile: dir + "/sft.jsonl", atomically: true, encoding: .utf8)
        let spec = try ClusterSpec.parse(SpecTests.head + """
        task: {seed: 1}
        data: {sft: sft.jsonl}
        plan:
          - sft: {name: SFT-1, examples: 500, epochs: 2.5, batch_size: 8, learning_rate: 0.0005}
          - sft: {}
          - evaluate: {name: SFT}
        """, baseDirectory: dir)
        #expect(spec.data?.sft == dir + "/sft.jsonl")
        var first = RLHFPipeline.SFTSettings()
        first.name = "SFT-1"
        first.examples = 500
        first.epochs = 2.5
        first.batchSize = 8
        first.learningRate = 0.0005
        #expect(spec.plan.first == .supervisedFineTuning(first) && spec.plan[1] == .supervisedFineTuning(RLHFPipeline.SFTSettings()))
        #expect(spec.plan[0].kind == "sft" && spec.plan[0].isRLHF && spec.plan[0].neededRoles == [.learner, .generator, .referencePolicy])
        // --quick trains on at most 1,000 demonstrations once.
        guard case let .supervisedFineTuning(quick) = spec.quick().plan[1] else { Issue.record("not an sft step"); return }
        #expect(quick.examples == 1_000 && quick.epochs == 1)
        SpecTests.expectRefused([
            ("task: {seed: 1}\nplan:\n  - sft: {epochs: 0}\n", "plan[0].sft.epochs"),
            ("task: {seed: 1}\nplan:\n  - sft: {examples: -3}\n", "plan[0].sft.examples"),
            ("task: {seed: 1}\nplan:\n  - sft: {learning_rate: 20}\n", "plan[0].sft.learning_rate"),
            ("task: {seed: 1}\nplan:\n  - sft: {epoch: 1}\n", "plan[0].sft.epoch"),
            ("data: {sft: nowhere.jsonl}\n", "data.sft"),
        ])
    }
}

/// The `reward_function:` section and a round's `reward:` weights.
@Suite struct RewardSourceSpecTests {
    static let head = SpecTests.head.replacingOccurrences(of: "learner: 1, reference-policy: 1}", with: "learner: 1, reference-policy: 1, reward-function: 2}")

    @Test func aRewardFunctionAndTheRoundsWeightsAreParsed() throws {
        let spec = try ClusterSpec.parse(RewardSourceSpecTests.head + """
        task: {seed: 1}
        reward_function: {command: [python3, score.py, --strict], timeout_s: 30}
        plan:
          - rs_round: {name: V1, reward: {function: 1}}
          - ppo_round: {name: V2, reward: {models: 1, function: 0.5}}
          - rs_round: {name: V3}
        """, baseDirectory: "/data")
        #expect(spec.rewardFunction == ClusterSpec.RewardFunctionCommand(arguments: ["python3", "score.py", "--strict"], directory: "/data",
                                                                          timeoutSeconds: 30))
        guard case let .rejectionSampling(v1) = spec.plan[0], case let .ppo(v2) = spec.plan[1], case let .rejectionSampling(v3) = spec.plan[2] else {
            Issue.record("\(spec.plan)")
            return
        }
        #expect(v1.reward == RewardWeights(models: 0, function: 1) && v2.reward == RewardWeights(models: 1, function: 0.5) && v3.reward == nil)
        // A round rewarded by the function alone needs no reward models; one with both needs all of them.
        #expect(spec.plan[0].neededRoles == [.generator, .learner, .referencePolicy, .rewardFunction])
        #expect(spec.plan[1].neededRoles == Set(WorkerRole.allCases))
        #expect(spec.plan[2].neededRoles == [.generator, .learner, .referencePolicy, .rewardModel, .safetyModel])
        #expect(RewardWeights(models: 2, function: 0.5).combine(gated: [1, -1], function: [4, 2], count: 2) == [4, -1])
        let task = "task: {seed: 1}\n"
        for (text, key) in [
            (task + "reward_function: {command: [python3, score.py]}\nplan:\n  - rs_round: {name: V1, reward: {function: 0, models: 0}}\n", "plan[0].rs_round.reward"),
            (task + "reward_function: {command: [python3, score.py]}\nplan:\n  - rs_round: {name: V1, reward: {function: -1}}\n", "plan[0].rs_round.reward.function"),
            (task + "reward_function: {command: [python3, score.py]}\nplan:\n  - rs_round: {name: V1, reward: {judge: 1}}\n", "plan[0].rs_round.reward.judge"),
            (task + "reward_function: {command: [python3, \"my score.py\"]}\n", "reward_function.command"),
            (task + "reward_function: {command: []}\n", "reward_function.command"),
            (task + "reward_function: {command: x, every: 2}\n", "reward_function.every"),
            // Workers that would have nothing to run.
            (task, "reward_function"),
        ] {
            do {
                _ = try ClusterSpec.parse(RewardSourceSpecTests.head + text, baseDirectory: "/")
                Issue.record("accepted: \(text)")
            } catch let e as ClusterSpec.Invalid {
                #expect(e.key == key, "\(text): \(e)")
            }
        }
        // An endpoint in place of the command; its labels are the data's label_key field.
        let endpoint = try ClusterSpec.parse(RewardSourceSpecTests.head + "reward_function: {endpoint: http://10.0.0.5:5000/get_reward, timeout_s: 5}\n",
                                             baseDirectory: "/")
        #expect(endpoint.rewardFunction?.endpoint == "http://10.0.0.5:5000/get_reward" && endpoint.rewardFunction?.arguments == [])
        for (text, key) in [("reward_function: {endpoint: ftp://x/y}\n", "reward_function.endpoint"),
                            ("reward_function: {endpoint: http://x/y, command: [python3, r.py]}\n", "reward_function")] {
            #expect { try ClusterSpec.parse(RewardSourceSpecTests.head + text, baseDirectory: "/") } throws: { ($0 as? ClusterSpec.Invalid)?.key == key }
        }
        // The reward function as the judge.
        let judged = try ClusterSpec.parse(RewardSourceSpecTests.head + "reward_function: {command: [python3, r.py]}\njudge: {source: reward-function, helpful_above: 0.5}\n",
                                           baseDirectory: "/")
        #expect(judged.judge?.usesRewardFunction == true && judged.judge?.settings.helpfulAbove == 0.5)
        for text in ["reward_function: {command: [python3, r.py]}\njudge: {source: reward-function, command: [x]}\n",
                     "reward_function: {command: [python3, r.py]}\njudge: {source: annotator}\n"] {
            #expect { try ClusterSpec.parse(RewardSourceSpecTests.head + text, baseDirectory: "/") } throws: { ($0 as? ClusterSpec.Invalid)?.key == "judge.source" }
        }
        #expect { try ClusterSpec.parse(SpecTests.head + "judge: {source: reward-function}\n", baseDirectory: "/") } throws: {
            ($0 as? ClusterSpec.Invalid)?.key == "judge.source"
        }
        // A round that weighs the function in a spec without one.
        SpecTests.expectRefused([("task: {seed: 1}\nplan:\n  - ppo_round: {name: V1, reward: {function: 1}}\n", "plan[0].ppo_round.reward.function")])
    }
}

/// A run directory whose RLHF steps had finished resumes from the pipeline state saved after its last
/// step; without that state it is refused with the reason.
@Suite struct RLHFResumeTests {
    @Test func resumingWithoutThePipelineStateIsRefusedWithTheReason() throws {
        // Port * : the refusal must come before any worker starts, whatever else listens on this machine.
        let text = SpecTests.head.replacingOccurrences(of: ":5555", with: ":*") + "task: {seed: 1}\nplan:\n  - evaluate: {name: SFT}\n  - hold: {seconds: 1}\n"
        let spec = try ClusterSpec.parse(text, baseDirectory: "/")
        let dir = TestKit.scratch("rlhf-resume")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var crc = CRC32C()
        crc.update(Array(text.utf8))
        let (journal, _) = try RunJournal.open(at: dir + "/journal.jsonl")
        try journal.append(.run(specDigest: crc.value))
        try journal.append(.stepBegin(index: 0))
        try journal.append(.stepDone(index: 0, policyVersion: 0, round: 0, announces: [:]))
        do {
            try ClusterLaunch(spec: spec, specText: text, runDirectory: dir).run { _ in }
            Issue.record("an RLHF plan was resumed part-way")
        } catch let failure as ClusterLaunch.Failure {
            #expect(failure.message.contains("state after step 1 is missing") && failure.message.contains("pipeline/after-step-1.json"), "\(failure)")
        }
    }
}
