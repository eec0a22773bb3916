import Foundation
import EmbeddedTask
import LlamaCore
import LlamaTraining
@testable import Recipe
import Testing
import Workers
import TestKit

/// The plan's sources: the embedded task as one implementation (its judge is the hidden annotator,
/// verdict for verdict), and any other set of sources a plan can be built on.
@Suite struct TaskSourceTests {
    static let tokenizer = try! Tokenizer(path: TestKit.repository + "/models/chat-world/tokenizer.bin")

    @Test func theEmbeddedTaskJudgesAsItsAnnotatorDoes() throws {
        let task = EmbeddedTaskSource(seed: 1, tokenizer: TaskSourceTests.tokenizer, preferencePairs: 40)
        #expect(!task.trainPrompts.isEmpty && !task.evalPrompts.isEmpty && task.preferencePairs.count == 40)
        #expect(task.evalPrompts.contains(where: \.isSafety) && task.evalPrompts.contains { !$0.isSafety })
        let annotator = Annotator()
        for pair in task.preferencePairs.prefix(20) {
            let prompt = try #require(TaskPrompt.parse(pair.prompt))
            let chosen = annotator.judge(prompt, pair.chosen)
            let judged = try #require(try task.judge(prompt: pair.prompt, response: pair.chosen))
            #expect(judged == Judgement(helpfulness: chosen.helpfulness, unsafe: chosen.unsafe, helpful: chosen.helpful))
            let rejected = try #require(try task.judge(prompt: pair.prompt, response: pair.rejected))
            let verdict = task.verdict(judged, rejected)
            switch annotator.compare(prompt, pair.chosen, pair.rejected) {
            case .first: #expect(verdict == .first)
            case .second: #expect(verdict == .second)
            case .tie: #expect(verdict == .tie)
            }
        }
        // A prompt the task's judge cannot read is not judged.
        #expect(try task.judge(prompt: "not a task prompt", response: "anything") == nil)
        #expect(task.level(gap: 0.6) == .significantlyBetter && task.level(gap: 0.06) == .negligiblyBetter)
    }

    /// Prompts, pairs and a judge of a user's own (here: fixed in memory).
    struct Fixed: PromptSource, PairSource, JudgementSource {
        var trainPrompts: [PlanPrompt]
        var evalPrompts: [PlanPrompt]
        var preferencePairs: [PreferencePairText]
        func judge(_ items: [JudgeItem]) -> [Judgement?] {
            items.map { Judgement(helpfulness: $0.response.contains("please") ? 1 : 0, unsafe: $0.response.contains("danger"), helpful: $0.response.contains("please")) }
        }
        var tieGap: Double { 0.5 }
        func level(gap: Double) -> PreferenceLevel { gap >= 1 ? .significantlyBetter : .slightlyBetter }
    }

    @Test func aPlanRunsOnAnySources() throws {
        let tokenizer = TaskSourceTests.tokenizer
        let prompt = PlanPrompt(id: 0, text: "Say hello.", ids: ChatTemplate.promptIDs("Say hello.", tokenizer: tokenizer), isSafety: false)
        let fixed = Fixed(trainPrompts: [prompt], evalPrompts: [prompt],
                          preferencePairs: [PreferencePairText(prompt: "Say hello.", chosen: "hello please", rejected: "no", level: .better, safety: false)])
        let context = TaskContext(tokenizer: tokenizer, prompts: fixed, pairs: fixed, judge: fixed)
        #expect(context.trainPrompts == [prompt] && context.evalPrompts == [prompt])
        #expect(context.pairs.preferencePairs.first?.level == .better)
        let judged = try context.judge.judge([("Say hello.", "hello please"), ("Say hello.", "danger")])
        #expect(context.judge.verdict(judged[0]!, judged[1]!) == .first)
        #expect(try context.judge.judge(prompt: "x", response: "danger")?.utility == -1)
    }
}

/// A user's data files and a judge command as the plan's sources.
@Suite struct FileSourceTests {
    static func write(_ lines: [String], _ path: String) throws {
        try (lines.joined(separator: "\n") + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// A prompt record's own `chat_template_kwargs` render its generation prompt (Qwen3's template: the empty
    /// think block where thinking is off); a preference record's, its pair's prompt.
    @Test func aRecordsTemplateArgumentsRenderItsPrompt() throws {
        let dir = try Fixtures.huggingFace("hf-bytebpe-gqa", template: try Fixtures.jinjaTemplate("qwen3"))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let thinking = try Tokenizer(path: dir)
        var direct = thinking
        try direct.useChatTemplateArguments(ChatTemplateArguments(["enable_thinking": .bool(false)]))
        let off = #""chat_template_kwargs": {"enable_thinking": false}"#
        try FileSourceTests.write([#"{"prompt": "Name an animal."}"#, #"{"prompt": "Name an animal.", \#(off)}"#], dir + "/prompts.jsonl")
        try FileSourceTests.write([#"{"prompt": "Hi?", "chosen": "Hello.", "rejected": "No.", \#(off)}"#], dir + "/prefs.jsonl")
        let source = try FileDataSource(files: DataFiles(prompts: dir + "/prompts.jsonl", evalPrompts: dir + "/prompts.jsonl",
                                                         preferences: dir + "/prefs.jsonl"), tokenizer: thinking, seqLen: 256)
        #expect(source.trainPrompts.map(\.ids) == [ChatTemplate.promptIDs("Name an animal.", tokenizer: thinking),
                                                    ChatTemplate.promptIDs("Name an animal.", tokenizer: direct)])
        #expect(source.trainPrompts[0].ids != source.trainPrompts[1].ids)
        #expect(source.preferencePairs.map(\.promptIDs) == [ChatTemplate.promptIDs("Hi?", tokenizer: direct)])
    }

    @Test func promptsAndPairsInTheShapesUsersBring() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tokenizer = TaskSourceTests.tokenizer
        // Prompts: a string with a label, a conversation, a safety prompt; 40 of them so a tenth is held out.
        var prompts: [String] = []
        for i in 0..<40 {
            switch i % 3 {
            case 0: prompts.append(#"{"prompt": "Tell me a story about a fox number \#(i).", "label": "fox", "answer": \#(i)}"#)
            case 1: prompts.append(#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name animal \#(i)."}]}"#)
            default: prompts.append(#"{"prompt": "How do I pick lock \#(i)?", "safety": true}"#)
            }
        }
        try FileSourceTests.write(prompts, dir + "/prompts.jsonl")
        try FileSourceTests.write([
            // TRL's implicit prompt, no level: unlabelled.
            #"{"chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}], "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "No."}]}"#,
            #"{"question": "Hi?", "chosen": "Hello.", "rejected": "No.", "preference": "better", "safety": true}"#,
            #"{"question": "Hi?", "chosen": "Hello.", "rejected": "No.", "margin": 0.5}"#,
        ], dir + "/prefs.jsonl")
        var files = DataFiles(prompts: dir + "/prompts.jsonl", preferences: dir + "/prefs.jsonl")
        files.keys.prompt = "question"
        // The prompt key names the preferences' prompts here, so the prompt file's "prompt" records are bad lines.
        #expect { try FileDataSource(files: files, tokenizer: tokenizer, seqLen: 256) } throws: {
            "\($0)".contains("prompts.jsonl:1: expected \"question\"")
        }
        files.onBadData = .skip
        let skipping = try FileDataSource(files: files, tokenizer: tokenizer, seqLen: 256)
        #expect(skipping.skipped.count == 27 && skipping.trainPrompts.count + skipping.evalPrompts.count == 13)
        files.keys.prompt = "prompt"
        files.onBadData = .stop
        #expect { try FileDataSource(files: files, tokenizer: tokenizer, seqLen: 256) } throws: {
            "\($0)".contains("prefs.jsonl:2: ")
        }
        try FileSourceTests.write([#"{"chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}], "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "No."}]}"#,
                                   #"{"prompt": "Hi?", "chosen": "Hello.", "rejected": "No.", "preference": "better", "safety": true}"#,
                                   #"{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}], "chosen": "Hello.", "rejected": "No.", "margin": 0.5}"#],
                                  dir + "/prefs.jsonl")
        let source = try FileDataSource(files: files, tokenizer: tokenizer, seqLen: 256)
        // A tenth held out by the prompt's hash (the same tenth train_rm holds out), ids renumbered in each set.
        let all = source.trainPrompts + source.evalPrompts
        #expect(all.count == 40 && !source.evalPrompts.isEmpty && source.evalPrompts.count < 10)
        #expect(source.trainPrompts.map(\.id) == (0..<UInt64(source.trainPrompts.count)).map { $0 })
        let fox = try #require(all.first { $0.text == "Tell me a story about a fox number 0." })
        #expect(fox.ids == ChatTemplate.promptIDs(fox.text, tokenizer: tokenizer) && !fox.isSafety)
        let conversation = try #require(all.first { $0.text == "Name animal 1." })
        #expect(conversation.ids == (try ChatTemplate.promptIDs(conversation: [.init(role: .system, content: "Be brief."), .init(role: .user, content: "Name animal 1.")],
                                                                tokenizer: tokenizer)))
        #expect(all.filter(\.isSafety).count == 13)
        #expect(source.preferencePairs.map(\.level) == [nil, .better, nil] && source.preferencePairs.map(\.margin) == [nil, nil, 0.5])
        #expect(source.preferencePairs.map(\.safety) == [false, true, false] && source.preferencePairs.allSatisfy { $0.prompt == "Hi?" })
        #expect(source.preferencePairs[0].promptIDs == nil && source.preferencePairs[2].promptIDs != nil)

        // An evaluation file: nothing held out of the training prompts.
        try FileSourceTests.write([#"{"prompt": "Tell me a story."}"#], dir + "/eval.jsonl")
        files.evalPrompts = dir + "/eval.jsonl"
        let split = try FileDataSource(files: files, tokenizer: tokenizer, seqLen: 256)
        #expect(split.trainPrompts.count == 40 && split.evalPrompts.map(\.text) == ["Tell me a story."])
        // A prompt the model's context cannot hold is a bad line.
        #expect { try FileDataSource(files: files, tokenizer: tokenizer, seqLen: 8) } throws: {
            "\($0)".contains("prompts.jsonl:1: the prompt is")
        }
    }

    @Test func demonstrationsFromAFileAndFromTheEmbeddedTask() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tokenizer = TaskSourceTests.tokenizer
        try FileSourceTests.write([
            #"{"prompt": "Tell me a story about a fox.", "completion": "Once a fox ran."}"#,
            #"{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Name a cat."}, {"role": "assistant", "content": "Tom."}]}"#,
            #"{"text": "A fox ran home."}"#,
            #"{"prompt": "No answer here."}"#,
        ], dir + "/sft.jsonl")
        var files = DataFiles()
        files.sft = dir + "/sft.jsonl"
        #expect { try FileDataSource(files: files, tokenizer: tokenizer, seqLen: 256) } throws: { "\($0)".contains("sft.jsonl:4: missing \"completion\"") }
        files.onBadData = .skip
        let source = try FileDataSource(files: files, tokenizer: tokenizer, seqLen: 256)
        let demonstrations = try source.sftSequences(seqLen: 256)
        #expect(demonstrations.count == 3 && source.skipped.count == 1)
        // As the learner's batches carry them: the tokens up to the first trained target as the prompt, one
        // weight per response token; the conversation's second user turn weighs 0, the text is all trained.
        for example in demonstrations {
            let (prompt, response, mask) = RLHFPipeline.split(example)
            #expect(prompt + response == example.ids && mask.count == response.count && mask.first == 1)
            #expect(Array(repeating: 0, count: prompt.count - 1) + mask == example.mask)
        }
        #expect(RLHFPipeline.split(demonstrations[1]).mask.contains(0) && RLHFPipeline.split(demonstrations[2]).prompt == [tokenizer.bosId])
        #expect(throws: (any Error).self) { try source.sftSequences(seqLen: 128) }

        // The embedded task's demonstrations are those `rlhf task generate` writes to sft.jsonl for its seed.
        let data = TaskData(seed: 3)
        try FileSourceTests.write(try data.sft.map { String(decoding: try JSONEncoder().encode($0), as: UTF8.self) }, dir + "/task-sft.jsonl")
        let written = try TrainingData.sft(dir + "/task-sft.jsonl", tokenizer: tokenizer, seqLen: 256, policy: .stop).sequences
        let embedded = try EmbeddedTaskSource(seed: 3, tokenizer: tokenizer, preferencePairs: 0).sftSequences(seqLen: 256)
        #expect(embedded.count == 6_000 && embedded == written)
    }

    @Test func aRewardModelJudgesByItsScores() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tokenizer = TaskSourceTests.tokenizer
        let checkpoint = TestKit.repository + "/models/chat-world/sft.bin"
        let weights = try Checkpoint.read(path: checkpoint).weights
        let helpfulHead = ScalarHead(dim: weights.config.dim, seed: 5), safetyHead = ScalarHead(dim: weights.config.dim, seed: 6)
        try JSONEncoder().encode(helpfulHead).write(to: URL(fileURLWithPath: dir + "/helpful.json"))
        try JSONEncoder().encode(safetyHead).write(to: URL(fileURLWithPath: dir + "/safety.json"))
        var models = RewardModelJudge.Models(checkpoint: checkpoint, head: dir + "/helpful.json")
        let task = EmbeddedTaskSource(seed: 1, tokenizer: tokenizer, preferencePairs: 24)
        let items = task.preferencePairs.flatMap { [($0.prompt, $0.chosen), ($0.prompt, $0.rejected)] }
        // The helpfulness model alone: sigmoid of its score, as the model scores prompt + answer + EOS; never unsafe.
        let judge = try RewardModelJudge(models: models, tokenizer: tokenizer)
        let judged = try judge.judge(items)
        let sequences = items.map { ChatTemplate.promptIDs($0.0, tokenizer: tokenizer) + tokenizer.encode($0.1) + [tokenizer.eosId] }
        let scores = try RewardModelService(kind: .rewardModel, weights: weights, head: helpfulHead).scores(sequences)
        #expect(judged.count == items.count)
        for (j, score) in zip(judged, scores) {
            let p = 1 / (1 + exp(-Double(score)))
            #expect(abs(j!.helpfulness - p) < 1e-9 && !j!.unsafe && j!.helpful == (p >= judge.settings.helpfulAbove))
        }
        // With a safety model, unsafe where its probability is under the threshold (here the median, so some are).
        let safetyScores = try RewardModelService(kind: .safetyModel, weights: weights, head: safetyHead).scores(sequences).map { 1 / (1 + exp(-Double($0))) }
        models.safetyCheckpoint = checkpoint
        models.safetyHead = dir + "/safety.json"
        models.unsafeBelow = safetyScores.sorted()[safetyScores.count / 2]
        let withSafety = try RewardModelJudge(models: models, tokenizer: tokenizer).judge(items)
        #expect(withSafety.map { $0!.unsafe } == safetyScores.map { $0 < models.unsafeBelow })
        #expect(withSafety.contains { $0!.unsafe } && withSafety.contains { !$0!.unsafe })
        // A tokenizer the model cannot read, and an answer longer than its context, are refused by name.
        models.head = dir + "/missing.json"
        #expect { try RewardModelJudge(models: models, tokenizer: tokenizer) } throws: { "\($0)".contains("missing.json") }
        #expect { try judge.judge([("Tell me a story.", String(repeating: "a fox ran home. ", count: 400))]) } throws: {
            "\($0)".contains("the reward-model judge: the reward model's context is 256 tokens")
        }
    }

    @Test func theTaskJudgeCommandJudgesAsTheAnnotatorDoes() throws {
        let task = EmbeddedTaskSource(seed: 2, tokenizer: TaskSourceTests.tokenizer, preferencePairs: 300)
        let judge = CommandJudge(arguments: [TestKit.executable.path, "task", "judge"])
        let items = task.preferencePairs.flatMap { [($0.prompt, $0.chosen), ($0.prompt, $0.rejected)] } + [("not a task prompt", "anything")]
        let viaCommand = try judge.judge(items), inMemory = try task.judge(items)
        #expect(viaCommand.count == 601 && viaCommand == inMemory && viaCommand.last! == nil)
        // A second batch goes to the same process.
        #expect(try judge.judge(Array(items.prefix(3))) == Array(inMemory.prefix(3)))
        #expect(judge.tieGap == task.tieGap && [0.05, 0.1, 0.3, 0.6].allSatisfy { judge.level(gap: $0) == task.level(gap: $0) })
    }

    /// A judge that crashes, answers nonsense or hangs fails the batch naming the command and its stderr;
    /// the next batch starts it again.
    @Test(arguments: [
        (#"read line; echo '{"reward": 1}'; echo boom >&2; exit 3"#, "exited with status 3 after 1 of 2 answers; its stderr ends: boom"),
        (#"while read line; do echo '{"reward": "high"}'; done"#, "\"reward\" is not a finite number"),
        (#"while read line; do echo 'fine'; done"#, "answer 1 of 2 is not a JSON object: fine"),
        (#"while read line; do echo '{"score": 1}'; done"#, "expected {\"reward\": number}"),
        (#"sleep 30"#, "no answer within 0.5 s"),
        (#"read line; read line; printf '{"reward": 1}\n{"reward": 1}\n{"reward": 1}\n'"#, "wrote more lines than the 2 answers"),
    ])
    func aFailingJudgeFailsTheBatch(script: String, message: String) throws {
        var settings = CommandJudge.Settings()
        settings.timeoutSeconds = 0.5
        let judge = CommandJudge(arguments: ["/bin/sh", "-c", script], settings: settings)
        #expect { try judge.judge([("p", "a"), ("p", "b")]) } throws: { "\($0)".contains(message) && "\($0)".contains("/bin/sh -c") }
    }

    /// A relative command path is the spec directory's.
    @Test func aRelativeCommandRunsFromItsDirectory() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "#!/bin/sh\nwhile read line; do echo '{\"reward\": 0.5}'; done\n".write(toFile: dir + "/judge.sh", atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: dir + "/judge.sh")
        let judge = CommandJudge(arguments: ["./judge.sh"], directory: dir)
        #expect(try judge.judge([("p", "a")]) == [Judgement(helpfulness: 0.5, unsafe: false, helpful: false)])
    }

    /// A judge command's request lines carry the prompt record's fields (labels, ground truth) beside
    /// `prompt` and `response`, as a reward function's do.
    @Test func aJudgeCommandGetsThePromptsFields() throws {
        let script = #"import json, sys\nfor line in sys.stdin:\n    r = json.loads(line)\n    print(json.dumps({'reward': 1.0 if r.get('label') in r['response'] else 0.0}), flush=True)"#
        let judge = CommandJudge(arguments: ["python3", "-c", script.replacingOccurrences(of: "\\n", with: "\n")])
        let judged = try judge.judge([JudgeItem(prompt: "p", response: "a fox ran", fieldsJSON: #"{"label": "fox"}"#),
                                      JudgeItem(prompt: "p", response: "a dog ran", fieldsJSON: #"{"label": "fox"}"#)])
        #expect(judged.map { $0?.helpfulness } == [1, 0])
        #expect(CommandJudge.request(JudgeItem(prompt: "p", response: "r", fieldsJSON: #"{"label": 3, "prompt": "shadowed"}"#))["prompt"] as? String == "p")
        // And the prompt's whole conversation, as `messages`.
        let turns = [ChatTemplate.Message(role: .system, content: "Be brief."), ChatTemplate.Message(role: .user, content: "p")]
        let line = CommandJudge.request(JudgeItem(prompt: "p", response: "r", messages: turns))
        #expect(line["messages"] as? [[String: String]] == [["role": "system", "content": "Be brief."], ["role": "user", "content": "p"]])
        #expect(CommandJudge.request(JudgeItem(prompt: "p", response: "r"))["messages"] as? [[String: String]] == [["role": "user", "content": "p"]])
    }

    @Test func aJudgeRestartsAfterAFailure() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Dies on its first start (no marker file yet), serves on the second.
        let script = #"if [ ! -e started ]; then touch started; exit 1; fi; while read line; do echo '{"reward": 0.25, "unsafe": true}'; done"#
        let judge = CommandJudge(arguments: ["/bin/sh", "-c", script], directory: dir)
        #expect(throws: (any Error).self) { try judge.judge([("p", "a")]) }
        let again = try judge.judge([("p", "a"), ("p", "b")])
        #expect(again == [Judgement(helpfulness: 0.25, unsafe: true, helpful: false), Judgement(helpfulness: 0.25, unsafe: true, helpful: false)])
    }
}
