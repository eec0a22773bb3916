import Foundation
import LlamaCore
import Recipe
import Testing
import TestKit
import Workers

/// Hugging Face model directories through the `rlhf` executable, as the issue's must-shows run them.
@Suite struct HuggingFaceCLITests {
    static let names = ["hf-llama2-mha", "hf-bytebpe-gqa"]

    /// A copy of the byte-level fixture at `model` without its chat_template.jinja (a test gives it one).
    static func untemplatedCopy(into model: String) throws -> String {
        let source = Fixtures.huggingFace("hf-bytebpe-gqa")
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
        for file in try FileManager.default.contentsOfDirectory(atPath: source) where file != "chat_template.jinja" {
            try FileManager.default.copyItem(atPath: source + "/" + file, toPath: model + "/" + file)
        }
        return model
    }

    static func json(_ text: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
    }

    static func ints(_ value: Any?) -> [Int] { value as! [Int] }

    /// The animal task's files in `dir`: 120 SFT demonstrations ("Tell me about the fox." -> "The fox is an animal."),
    /// 60 labelled prompts, the first 12 of them as eval prompts, and `label.py`, a reward function of 1 where the
    /// answer names the prompt's animal. Returns the six animals.
    static func writeAnimalTask(into dir: String) throws -> [String] {
        let animals = ["fox", "owl", "bee", "cat", "dog", "elk"]
        let sft = (0..<120).map { #"{"prompt": "Tell me about the \#(animals[$0 % 6]).", "completion": "The \#(animals[$0 % 6]) is an animal."}"# }
        let prompts = (0..<60).map { #"{"prompt": "Tell me about the \#(animals[$0 % 6]).", "label": "\#(animals[$0 % 6])"}"# }
        try (sft.joined(separator: "\n") + "\n").write(toFile: dir + "/sft.jsonl", atomically: true, encoding: .utf8)
        try (prompts.joined(separator: "\n") + "\n").write(toFile: dir + "/prompts.jsonl", atomically: true, encoding: .utf8)
        try (prompts.prefix(12).joined(separator: "\n") + "\n").write(toFile: dir + "/eval.jsonl", atomically: true, encoding: .utf8)
        try """
        import json, sys
        for line in sys.stdin:
            record = json.loads(line)
            print(json.dumps({"reward": 1.0 if record.get("label", "") in record["response"] else 0.0}), flush=True)
        """.write(toFile: dir + "/label.py", atomically: true, encoding: .utf8)
        return animals
    }

    /// Greedy ids and their log-probabilities from `rlhf generate --json` on `checkpoint`.
    static func greedy(_ checkpoint: String, prompt: [Int], steps: Int) throws -> (ids: [Int], logprobs: [Double]) {
        let result = try CLITests.rlhf(["generate", "--checkpoint", checkpoint, "--prompt-ids", prompt.map(String.init).joined(separator: ","),
                                        "--temperature", "0", "--ignore-eos", "--steps", String(steps), "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let o = try json(result.stdout)
        return (ints(o["ids"]), o["logprobs"] as! [Double])
    }

    @Test(arguments: names)
    func generateMatchesTransformers(name: String) throws {
        let reference = try Fixtures.huggingFaceReference(name)
        let expected = Self.ints(reference["greedy_ids"])
        let (ids, logprobs) = try Self.greedy(Fixtures.huggingFace(name), prompt: Self.ints(reference["prompt_ids"]), steps: expected.count)
        #expect(ids == expected)
        let worst = zip(logprobs, reference["greedy_logprobs"] as! [Double]).map { abs($0 - $1) }.max() ?? .infinity
        #expect(worst < 1e-4, "\(name): log-probability difference \(worst)")
        let info = try CLITests.rlhf(["checkpoint", "info", Fixtures.huggingFace(name), "--json"])
        #expect(try Self.json(info.stdout)["format"] as? String == "hf")
    }

    /// A Gemma3ForConditionalGeneration's directory is a checkpoint like another: `rlhf generate` gives its text
    /// model's greedy ids (gemma3-tiny's, as transformers computes them) past the sliding window too, and
    /// `checkpoint info` says what it read.
    @Test func gemma3MultimodalGeneratesAsItsTextModel() throws {
        let directory = Fixtures.gemma3Multimodal("gemma3-mm")
        let reference = try Fixtures.gemma3Reference()
        let expected = Self.ints(reference["greedy_ids"])
        let (ids, _) = try Self.greedy(directory, prompt: Self.ints(reference["prompt_ids"]), steps: expected.count)
        #expect(ids == expected)
        let beyond = try Fixtures.beyondWindowReference("gemma3")
        #expect(try Self.greedy(directory, prompt: Self.ints(beyond["prompt_ids"]), steps: 12).ids == Self.ints(beyond["greedy_ids"]))
        let info = try Self.json(CLITests.rlhf(["checkpoint", "info", directory, "--json"]).stdout)
        #expect(info["multimodal_text_model"] as? Bool == true && info["sliding_window"] as? Int == 48 && info["seq_len"] as? Int == 512)
        #expect(try CLITests.rlhf(["checkpoint", "info", directory]).stdout.contains("the text model of a Gemma3ForConditionalGeneration"))
    }

    @Test(arguments: names)
    func tokenizeAndChatRenderMatchTheLibraries(name: String) throws {
        let reference = try Fixtures.huggingFaceReference(name)
        let cases = reference["encode_cases"] as! [[String: Any]]
        let input = try cases.map { String(decoding: try JSONSerialization.data(withJSONObject: ["text": $0["text"]!]), as: UTF8.self) }
        let result = try CLITests.rlhf(["tokenize", "--tokenizer", Fixtures.huggingFace(name) + "/tokenizer.json"], stdin: input.joined(separator: "\n") + "\n")
        #expect(result.status == 0, "\(result.stderr)")
        let lines = result.stdout.split(separator: "\n")
        #expect(lines.count == cases.count)
        for (line, case_) in zip(lines, cases) {
            #expect(Self.ints(try Self.json(String(line))["ids"]) == Self.ints(case_["ids"]), "\(case_["text"]!)")
        }
        let chats = reference["chat_cases"] as! [[String: Any]]
        let chatInput = try chats.map {
            String(decoding: try JSONSerialization.data(withJSONObject: ["messages": $0["messages"]!, "add_generation_prompt": $0["add_generation_prompt"]!]), as: UTF8.self)
        }
        let rendered = try CLITests.rlhf(["chat", "render", "--model", Fixtures.huggingFace(name)], stdin: chatInput.joined(separator: "\n") + "\n")
        #expect(rendered.status == 0, "\(rendered.stderr)")
        let texts = try rendered.stdout.split(separator: "\n").map { try Self.json(String($0))["text"] as! String }
        #expect(texts == chats.map { $0["text"] as! String })
    }

    /// A trained chat-world policy leaves as a Hugging Face directory that gives the same greedy
    /// tokens and log-probabilities; a Hugging Face directory leaves as a llama2.c file that does;
    /// what llama2.c's header cannot hold is refused.
    @Test func convertBothWays() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let policy = TestKit.repository + "/models/chat-world/sft.bin"
        let toHF = try CLITests.rlhf(["checkpoint", "convert", policy, "--to", "hf", "--out", dir + "/policy-hf"])
        #expect(toHF.status == 0, "\(toHF.stderr)")
        for file in ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
            #expect(FileManager.default.fileExists(atPath: dir + "/policy-hf/" + file), "\(file)")
        }
        let prompt = [1, 316, 432, 333, 261, 325, 328, 261, 790, 317]
        let before = try Self.greedy(policy, prompt: prompt, steps: 32)
        let after = try Self.greedy(dir + "/policy-hf", prompt: prompt, steps: 32)
        #expect(before.ids == after.ids && before.logprobs == after.logprobs)
        // The exported tokenizer.json encodes as the tokenizer.bin it came from.
        let text = #"{"text": "In the meadow lived a fox called Zoe. Zoe's ünï 日本"}"#
        let a = try CLITests.rlhf(["tokenize", "--tokenizer", TestKit.repository + "/models/chat-world/tokenizer.bin"], stdin: text + "\n")
        let b = try CLITests.rlhf(["tokenize", "--tokenizer", dir + "/policy-hf/tokenizer.json"], stdin: text + "\n")
        #expect(a.stdout == b.stdout && a.status == 0)

        let reference = try Fixtures.huggingFaceReference("hf-llama2-mha")
        let toBin = try CLITests.rlhf(["checkpoint", "convert", Fixtures.huggingFace("hf-llama2-mha"), "--to", "llama2c", "--out", dir + "/mha.bin"])
        #expect(toBin.status == 0, "\(toBin.stderr)")
        #expect(FileManager.default.fileExists(atPath: dir + "/tokenizer.bin"))
        let greedy = try Self.greedy(dir + "/mha.bin", prompt: Self.ints(reference["prompt_ids"]), steps: 24)
        #expect(greedy.ids == Self.ints(reference["greedy_ids"]))

        let refused = try CLITests.rlhf(["checkpoint", "convert", Fixtures.huggingFace("hf-bytebpe-gqa"), "--to", "llama2c", "--out", dir + "/gqa.bin"])
        #expect(refused.status != 0 && refused.stderr.contains("rope_theta 500000"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/gqa.bin"))
    }

    /// `train sft` from a Hugging Face directory writes one back (llama2.c's header cannot hold its
    /// theta); a directory whose chat template is none of the supported formats is refused, naming
    /// them, until --chat-template names one.
    @Test func trainSFTFromAndToAHuggingFaceDirectory() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let data = (0..<8).map { #"{"prompt": "Tell me a story \#($0).", "response": "Once upon a time."}"# }.joined(separator: "\n") + "\n"
        try data.write(toFile: dir + "/sft.jsonl", atomically: true, encoding: .utf8)
        let trained = try CLITests.rlhf(["train", "sft", "--data", dir + "/sft.jsonl", "--init", Fixtures.huggingFace("hf-bytebpe-gqa"),
                                         "--out", dir + "/sft", "--steps", "2", "--batch-size", "4"])
        #expect(trained.status == 0, "\(trained.stderr)")
        let (weights, format) = try Checkpoint.read(path: dir + "/sft")
        #expect(format == .huggingFace && weights.config.ropeTheta == 500000 && weights.config.normEps == 1e-6)
        #expect(try Tokenizer(path: dir + "/sft").chatFormat == .chatml)

        let model = try Self.untemplatedCopy(into: dir + "/odd-template")
        // A template of none of the core's formats runs as itself (the Jinja engine) ...
        try "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}".write(toFile: model + "/chat_template.jinja", atomically: true, encoding: .utf8)
        let own = try CLITests.rlhf(["train", "sft", "--data", dir + "/sft.jsonl", "--init", model, "--out", dir + "/odd", "--steps", "1"])
        #expect(own.status == 0, "\(own.stderr)")
        let render = try CLITests.rlhf(["chat", "render", "--model", model], stdin: #"{"messages": [{"role": "user", "content": "Hi"}]}"# + "\n")
        #expect(render.status == 0 && render.stdout == #"{"text":"<|user|>Hi"}"# + "\n", "\(render.stdout) \(render.stderr)")
        // ... one the engine cannot read is refused naming the file and the formats that can be named instead.
        try "{% for m in messages %}\n{% include 'turn.jinja' %}{% endfor %}".write(toFile: model + "/chat_template.jinja", atomically: true, encoding: .utf8)
        let refused = try CLITests.rlhf(["train", "sft", "--data", dir + "/sft.jsonl", "--init", model, "--out", dir + "/odd", "--steps", "1"])
        #expect(refused.status != 0 && refused.stderr.contains("chat_template.jinja") && refused.stderr.contains("line 2")
                && refused.stderr.contains("llama2, chatml, llama3"), "\(refused.stderr)")
        let named = try CLITests.rlhf(["train", "sft", "--data", dir + "/sft.jsonl", "--init", model, "--out", dir + "/odd", "--steps", "1",
                                       "--chat-template", "chatml"])
        #expect(named.status == 0, "\(named.stderr)")
        let refusedRender = try CLITests.rlhf(["chat", "render", "--model", model], stdin: #"{"messages": [{"role": "user", "content": "Hi"}]}"# + "\n")
        #expect(refusedRender.status != 0 && refusedRender.stderr.contains("llama2, chatml, llama3"))
    }

    /// A base model's tokenizer (EOS `<|endoftext|>`, as config.json and generation_config.json say) with
    /// SmolLM2's ChatML template, taught by an `sft` step to end its answers with `<|im_end|>`: the
    /// launch says where answers end, and the rejection-sampling round's samples stop there (before, they
    /// ran on to the token limit, writing the next turns, and were trained on).
    @Test func rolloutsStopAtTheTemplatesEndOfTurn() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let model = try Self.untemplatedCopy(into: dir + "/model")
        func edit(_ file: String, _ change: (inout [String: Any]) -> Void) throws {
            var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: model + "/" + file))) as! [String: Any]
            change(&object)
            try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: model + "/" + file))
        }
        try edit("tokenizer_config.json") {
            $0["eos_token"] = "<|endoftext|>"
            $0["chat_template"] = #"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"#
        }
        try edit("config.json") { $0["eos_token_id"] = 0 }
        try edit("generation_config.json") { $0["eos_token_id"] = 0 }
        let animals = try Self.writeAnimalTask(into: dir)
        let spec = """
        coordinator: tcp://127.0.0.1:*
        heartbeat_ms: 100
        hosts:
          - name: here
            workers: {generator: 1, learner: 1, reference-policy: 1, reward-function: 1}
        model: {checkpoint: model}
        data: {prompts: prompts.jsonl, eval_prompts: eval.jsonl, sft: sft.jsonl}
        reward_function: {command: [python3, label.py], timeout_s: 60}
        judge: {source: reward-function, helpful_above: 0.5}
        plan:
          - sft: {name: SFT, epochs: 4, batch_size: 8, learning_rate: 0.002}
          - rs_round: {name: V1, prompts: 24, samples: 2, max_new_tokens: 48, reward: {function: 1}}
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let result = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("answers end with <|im_end|>; sampling stops at <|im_end|> (2), <|endoftext|> (0)"), "\(result.stdout)")
        let samples = try RLHFRunTests.lines(dir + "/run/rounds/V1/samples.jsonl")
        #expect(samples.count == 48)
        // The answers the model was taught, and nothing after them; 48 samples run to the limit would be 2304 tokens.
        let taught = Set(animals.map { "The \($0) is an animal." })
        let clean = samples.filter { taught.contains($0["response"] as? String ?? "") }.count
        #expect(clean >= 40, "\(clean) of 48 samples are a taught answer alone: \(samples.prefix(3).map { $0["response"] ?? "" })")
        let tokens = result.stdout.firstMatch(of: /V1: 24 prompts x 2 samples at T=1.00 -> (\d+) tokens/).flatMap { Int($0.1) }
        #expect(tokens.map { $0 < 48 * 20 } == true, "\(result.stdout)")
        // The exported policy tells transformers' generate to stop there too: EOS, then the end of turn.
        let exported = dir + "/run/rounds/V1/policy-hf"
        let generation = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: exported + "/generation_config.json"))) as! [String: Any]
        #expect(generation["eos_token_id"] as? [Int] == [0, 2], "\(generation)")
        #expect(try Tokenizer(path: exported).stopIds == [2, 0])
    }

    /// A Gemma 3 model with its tokenizer and chat template: `generate --chat` renders the conversation (the
    /// system message folded into the user's turn) and answers as transformers does, and a launch teaches it
    /// (SFT), samples and trains on it (a rejection-sampling round, a GRPO round), stopping its answers at
    /// `<end_of_turn>`, and exports each round's policy as a Gemma3ForCausalLM that reads back as the same model.
    @Test func aGemma3ModelRunsThePlan() throws {
        let reference = try Fixtures.gemma3Reference()["chat"] as! [String: Any]
        let answer = try CLITests.rlhf(["generate", "--checkpoint", Fixtures.gemma3Chat, "--chat", reference["user"] as! String,
                                        "--system", reference["system"] as! String, "--temperature", "0", "--ignore-eos",
                                        "--steps", String(Self.ints(reference["greedy_ids"]).count), "--json"])
        #expect(answer.status == 0, "\(answer.stderr)")
        let generated = try Self.json(answer.stdout)
        #expect(Self.ints(generated["prompt_ids"]) == Self.ints(reference["prompt_ids"]))
        #expect(Self.ints(generated["ids"]) == Self.ints(reference["greedy_ids"]))

        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let animals = try Self.writeAnimalTask(into: dir)
        let spec = """
        coordinator: tcp://127.0.0.1:*
        heartbeat_ms: 100
        hosts:
          - name: here
            workers: {generator: 1, learner: 1, reference-policy: 1, reward-function: 1}
        model: {checkpoint: \(Fixtures.gemma3Chat)}
        data: {prompts: prompts.jsonl, eval_prompts: eval.jsonl, sft: sft.jsonl}
        reward_function: {command: [python3, label.py], timeout_s: 60}
        judge: {source: reward-function, helpful_above: 0.5}
        plan:
          - sft: {name: SFT, epochs: 10, batch_size: 8, learning_rate: 0.005}
          - rs_round: {name: V1, prompts: 24, samples: 2, max_new_tokens: 40, reward: {function: 1}}
          - policy_round: {name: G, algorithm: grpo, iterations: 2, prompts: 4, group: 4, max_new_tokens: 24, reward: {function: 1}}
        """
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let result = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("answers end with <end_of_turn>; sampling stops at <end_of_turn> (477), <eos> (1)"), "\(result.stdout)")
        let samples = try RLHFRunTests.lines(dir + "/run/rounds/V1/samples.jsonl")
        #expect(samples.count == 48)
        // The taught answers, ended at the end of turn: 48 samples run to the limit would be 1920 tokens.
        let taught = Set(animals.map { "The \($0) is an animal." })
        let clean = samples.filter { taught.contains($0["response"] as? String ?? "") }.count
        #expect(clean >= 36, "\(clean) of 48 samples are a taught answer alone: \(samples.prefix(3).map { $0["response"] ?? "" })")
        let tokens = result.stdout.firstMatch(of: /V1: 24 prompts x 2 samples at T=1.00 -> (\d+) tokens/).flatMap { Int($0.1) }
        #expect(tokens.map { $0 < 48 * 20 } == true, "\(result.stdout)")
        #expect(result.stdout.contains("G grpo 2/2: reward"), "\(result.stdout)")
        let (original, originalConfig) = try HuggingFaceCheckpoint.read(directory: Fixtures.gemma3Chat)
        for round in ["V1", "G"] {
            let exported = dir + "/run/rounds/\(round)/policy-hf"
            let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: exported + "/config.json"))) as! [String: Any]
            #expect(config["architectures"] as? [String] == ["Gemma3ForCausalLM"] && config["model_type"] as? String == "gemma3_text")
            let (trained, trainedConfig) = try HuggingFaceCheckpoint.read(directory: exported)
            #expect(trainedConfig.llama == originalConfig.llama)
            #expect(trained.values(.rmsPostFFN) != original.values(.rmsPostFFN) && trained.values(.wq) != original.values(.wq))
        }
    }

    /// `--chat-template-kwargs` and `model.chat_template_kwargs` reach the model's own template: Qwen3's
    /// with `enable_thinking: false` renders (`chat render`), prompts (`generate --chat`) and trains
    /// (`train sft`) with the empty thinking block in the prompt; a name the template never reads is
    /// refused by each command, and by `launch` before any worker starts.
    @Test func chatTemplateArgumentsReachTheCommandsAndTheLaunch() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let model = try Self.untemplatedCopy(into: dir + "/model")
        let cases = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: TestKit.repository + "/Tests/JinjaTests/Resources/cases.json"))) as! [String: Any]
        try ((cases["templates"] as! [String: String])["qwen3"]!).write(toFile: model + "/chat_template.jinja", atomically: true, encoding: .utf8)
        let off = #"{"enable_thinking": false}"#, misspelt = #"{"enable_thinkng": false}"#
        let line = #"{"messages": [{"role": "user", "content": "Hi"}], "add_generation_prompt": true}"# + "\n"

        let render = try CLITests.rlhf(["chat", "render", "--model", model, "--chat-template-kwargs", off], stdin: line)
        #expect(render.status == 0 && render.stdout == #"{"text":"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"}"# + "\n",
                "\(render.stdout) \(render.stderr)")
        let thinking = try CLITests.rlhf(["chat", "render", "--model", model], stdin: line)
        #expect(thinking.status == 0 && thinking.stdout == #"{"text":"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"}"# + "\n", "\(thinking.stdout)")
        // A line's own arguments go over the command's: each line as if given alone; a misspelt one is that line's error.
        let own = line.replacingOccurrences(of: "}\n", with: #", "chat_template_kwargs": {"enable_thinking": true}}"# + "\n")
        let bad = line.replacingOccurrences(of: "}\n", with: #", "chat_template_kwargs": \#(misspelt)}"# + "\n")
        let mixed = try CLITests.rlhf(["chat", "render", "--model", model, "--chat-template-kwargs", off], stdin: line + own + bad)
        #expect(mixed.status != 0 && mixed.stdout == render.stdout + thinking.stdout, "\(mixed.stdout)")
        #expect(mixed.stderr.contains("stdin line 3: invalid input: chat_template_kwargs: the model's chat template") && mixed.stderr.contains("never reads enable_thinkng"),
                "\(mixed.stderr)")

        func promptIDs(_ extra: [String]) throws -> [Int] {
            let result = try CLITests.rlhf(["generate", "--checkpoint", model, "--chat", "Hi", "--steps", "1", "--seed", "1", "--json"] + extra)
            #expect(result.status == 0, "\(result.stderr)")
            let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
            return object["prompt_ids"] as! [Int]
        }
        let plain = try promptIDs([]), withoutThinking = try promptIDs(["--chat-template-kwargs", off])
        // The same prompt, then <think>\n\n</think> and the blank line (ids of the byte-level fixture).
        #expect(Array(withoutThinking.prefix(plain.count)) == plain)
        #expect(Array(withoutThinking.dropFirst(plain.count)) == [30, 312, 266, 77, 32, 201, 201, 30, 17, 312, 266, 77, 32, 394])

        try #"{"prompt": "Hi", "completion": "Hello."}"#.write(toFile: dir + "/sft.jsonl", atomically: true, encoding: .utf8)
        let trained = try CLITests.rlhf(["train", "sft", "--data", dir + "/sft.jsonl", "--init", model, "--out", dir + "/sft", "--steps", "1",
                                         "--chat-template-kwargs", off])
        #expect(trained.status == 0, "\(trained.stderr)")

        for arguments in [["chat", "render", "--model", model], ["generate", "--checkpoint", model, "--chat", "Hi", "--steps", "1"],
                          ["train", "sft", "--data", dir + "/sft.jsonl", "--init", model, "--out", dir + "/bad", "--steps", "1"]] {
            let refused = try CLITests.rlhf(arguments + ["--chat-template-kwargs", misspelt], stdin: line)
            #expect(refused.status != 0 && refused.stderr.contains("never reads enable_thinkng"), "\(arguments[0]): \(refused.stderr)")
        }
        // Pretraining renders no conversation: the arguments would change nothing, and are refused.
        try "Once there was a fox.\n".write(toFile: dir + "/corpus.txt", atomically: true, encoding: .utf8)
        let pretrain = try CLITests.rlhf(["train", "pretrain", "--corpus", dir + "/corpus.txt", "--tokenizer", model, "--config", "dim=32,n_layers=1,n_heads=2",
                                          "--out", dir + "/pre.bin", "--steps", "1", "--chat-template-kwargs", off])
        #expect(pretrain.status != 0 && pretrain.stderr.contains("train pretrain renders no conversation"), "\(pretrain.stderr)")
        let notJSON = try CLITests.rlhf(["chat", "render", "--model", model, "--chat-template-kwargs", "enable_thinking=false"], stdin: line)
        #expect(notJSON.status != 0 && notJSON.stderr.contains("--chat-template-kwargs: enable_thinking=false is not a JSON object"), "\(notJSON.stderr)")

        try (0..<4).map { #"{"prompt": "Hi \#($0)"}"# }.joined(separator: "\n").write(toFile: dir + "/prompts.jsonl", atomically: true, encoding: .utf8)
        try """
        coordinator: tcp://127.0.0.1:*
        hosts:
          - name: here
            workers: {generator: 1, learner: 1, reference-policy: 1, reward-function: 1}
        model: {checkpoint: model, chat_template_kwargs: \(misspelt)}
        data: {prompts: prompts.jsonl}
        reward_function: {command: [python3, -c, "pass"]}
        judge: {source: reward-function, helpful_above: 0.5}
        plan:
          - policy_round: {name: G1, algorithm: grpo, prompts: 2, group: 2, max_new_tokens: 4, reward: {function: 1}}
        """.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let launch = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"])
        #expect(launch.status != 0 && launch.stderr.contains("model.chat_template_kwargs") && launch.stderr.contains("never reads enable_thinkng"),
                "\(launch.stdout)\(launch.stderr)")
        #expect(!launch.stdout.contains("started"), "\(launch.stdout)")
    }

    /// `rlhf score` scores conversations with a Hugging Face reward model as transformers does (float64
    /// references of `hf-reward/generate.py`), a prompt and response as their conversation; a line it
    /// cannot score answers with an error in its place and fails the command, the others still scored.
    @Test(arguments: ["llama-rm", "qwen2-rm"])
    func scoreWithAHuggingFaceRewardModel(name: String) throws {
        let cases = try Fixtures.rewardModelReference()[name] as! [[String: Any]]
        var lines = try cases.map { String(decoding: try JSONSerialization.data(withJSONObject: ["messages": $0["messages"]!]), as: UTF8.self) }
        let first = cases[0]["messages"] as! [[String: String]]
        lines.append(String(decoding: try JSONSerialization.data(withJSONObject: ["prompt": first[0]["content"]!, "response": first[1]["content"]!]), as: UTF8.self))
        lines.append(#"{"messages": [{"role": "user", "content": "no answer"}]}"#)
        let result = try CLITests.rlhf(["score", "--model", Fixtures.rewardModel(name)], stdin: lines.joined(separator: "\n") + "\n")
        #expect(result.status != 0 && result.stderr.contains("stdin line \(lines.count): ") && result.stderr.contains("must end with the assistant's answer"),
                "\(result.stderr)")
        let outputs = result.stdout.split(separator: "\n").map { try! JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        #expect(outputs.count == lines.count)
        let expected = cases.map { $0["score"] as! Double } + [cases[0]["score"] as! Double]
        for (output, score) in zip(outputs, expected) {
            let got = try #require(output["score"] as? Double)
            #expect(abs(got - score) < 2e-5 * max(1, abs(score)), "\(got) vs \(score)")
        }
        #expect(outputs.last?["error"] != nil)
        // Converted (a reward model stays one: its family's classifier, its head and pad id), it scores the same.
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let converted = try CLITests.rlhf(["checkpoint", "convert", Fixtures.rewardModel(name), "--to", "hf", "--out", dir + "/rm"])
        #expect(converted.status == 0 && converted.stdout.contains("ForSequenceClassification"), "\(converted.stdout)\(converted.stderr)")
        let again = try CLITests.rlhf(["score", "--model", dir + "/rm"], stdin: lines.dropLast().joined(separator: "\n") + "\n")
        #expect(again.status == 0 && again.stdout == result.stdout.split(separator: "\n").dropLast().joined(separator: "\n") + "\n",
                "\(again.stdout) vs \(result.stdout)")
        // A causal LM without a head file is refused, naming what is missing.
        let plain = try CLITests.rlhf(["score", "--model", Fixtures.huggingFace("hf-bytebpe-gqa")], stdin: lines[0] + "\n")
        #expect(plain.status != 0 && plain.stderr.contains("hf-bytebpe-gqa.head.json"), "\(plain.stderr)")
    }

    /// `model.reward_model` and `model.safety_model`: Hugging Face reward models scoring a rejection-sampling
    /// round's samples on the reward-model and safety-model workers (the samples' scores are those models'
    /// scores of the policy's ids), with a third judging it. A `train_rm` step before the round trains the
    /// learner's copy of the reward model from the pretrained one and syncs it to its workers (at a learning
    /// rate too small to move a score, so the round's scores are still the pretrained model's: a copy started
    /// from the policy with a seeded head would score otherwise). A reward model whose tokenizer is not the
    /// policy's is refused before any worker starts.
    @Test func pretrainedRewardModelsScoreARound() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let prompt = "Tell me about the fox."
        let answers = ["The fox is an animal.", "A fox ran home.", "Foxes live in the meadow."]
        try ((0..<48).map { #"{"prompt": "\#(prompt)", "completion": "\#(answers[$0 % 3])"}"# }.joined(separator: "\n") + "\n")
            .write(toFile: dir + "/sft.jsonl", atomically: true, encoding: .utf8)
        try ((0..<16).map { _ in #"{"prompt": "\#(prompt)"}"# }.joined(separator: "\n") + "\n").write(toFile: dir + "/prompts.jsonl", atomically: true, encoding: .utf8)
        try ((0..<24).map { #"{"prompt": "\#(prompt)", "chosen": "\#(answers[$0 % 3])", "rejected": "No."}"# }.joined(separator: "\n") + "\n")
            .write(toFile: dir + "/prefs.jsonl", atomically: true, encoding: .utf8)
        let rm = Fixtures.rewardModel("llama-rm"), safety = Fixtures.rewardModel("qwen2-rm")
        func spec(_ policy: String) -> String {
            """
            coordinator: tcp://127.0.0.1:*
            heartbeat_ms: 100
            hosts:
              - name: here
                workers: {generator: 1, learner: 1, reference-policy: 1, reward-model: 1, safety-model: 1}
            model: {checkpoint: \(policy), reward_model: \(rm), safety_model: \(safety)}
            data: {prompts: prompts.jsonl, eval_prompts: prompts.jsonl, sft: sft.jsonl, preferences: prefs.jsonl}
            judge: {source: reward-model, checkpoint: \(rm)}
            plan:
              - sft: {name: SFT, epochs: 10, batch_size: 8, learning_rate: 0.002}
              - train_rm: {model: reward-model, epochs: 1, batch_size: 8, learning_rate: 0.000000001}
              - rs_round: {name: V1, prompts: 8, samples: 2, max_new_tokens: 16, reward: {models: 1}}
            """
        }
        try spec(Fixtures.huggingFace("hf-bytebpe-gqa")).write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let result = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(result.stdout.contains("reward-model trained on the learner"), "\(result.stdout)")
        #expect(!result.stdout.contains("tokenizes otherwise") && !result.stdout.contains("renders conversations otherwise"), "\(result.stdout)")
        let samples = try RLHFRunTests.lines(dir + "/run/rounds/V1/samples.jsonl")
        #expect(samples.count == 16)
        // Each sample's scores, again from the same models on the prompt's ids, the answer's and its end of turn
        // (where the answer's text encodes back to the ids sampled: most of them, after the SFT step).
        let tokenizer = try Tokenizer(path: Fixtures.huggingFace("hf-bytebpe-gqa"))
        let helpfulness = try RewardModelService.load(kind: .rewardModel, checkpoint: rm, head: nil)
        let safetyModel = try RewardModelService.load(kind: .safetyModel, checkpoint: safety, head: nil)
        var agreeing = 0
        for sample in samples {
            let sequence = ChatTemplate.promptIDs(prompt, tokenizer: tokenizer) + tokenizer.finishedAnswer(tokenizer.encode(sample["response"] as! String))
            let expected = (try helpfulness.scores([sequence])[0], try safetyModel.scores([sequence])[0])
            let got = ((sample["helpfulness_score"] as! NSNumber).floatValue, (sample["safety"] as! NSNumber).floatValue)
            if abs(got.0 - expected.0) < 1e-3 && abs(got.1 - expected.1) < 1e-4 { agreeing += 1 }
        }
        #expect(agreeing >= 12, "\(agreeing) of 16 samples scored as the reward models score them: \(samples.prefix(2))")

        // The shipped model tokenizes otherwise: a reward model of another tokenizer cannot be trained on the
        // plan's pairs (the policy's ids), refused by key before any worker starts.
        try spec(TestKit.repository + "/models/chat-world/sft.bin").write(toFile: dir + "/other.yaml", atomically: true, encoding: .utf8)
        let refused = try CLITests.rlhf(["launch", dir + "/other.yaml", "--run-dir", dir + "/other"])
        #expect(refused.status != 0 && refused.stderr.contains("model.reward_model") && refused.stderr.contains("tokenizes otherwise than the policy")
                && refused.stderr.contains("plan step 2 trains it"), "\(refused.stdout)\(refused.stderr)")
        #expect(!refused.stdout.contains("started"), "\(refused.stdout)")
    }

    /// Hugging Face reward models whose tokenizer is not the policy's (byte-level BPE reward models, the
    /// shipped SentencePiece policy) score a rejection-sampling round: each answer's text, with its prompt's
    /// conversation (a single turn, and one of three turns), rendered again in the reward model's chat
    /// template, as `rlhf score` scores it. A round that would retrain them (`new_pairs`) is refused.
    @Test func rewardModelsOfAnotherTokenizerScoreRenderedAnswers() throws {
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let single = #"{"prompt": "Tell me about the fox."}"#
        let turns = #"{"messages": [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Tell me about the fox."}]}"#
        try ((0..<8).map { $0 % 2 == 0 ? single : turns }.joined(separator: "\n") + "\n").write(toFile: dir + "/prompts.jsonl", atomically: true, encoding: .utf8)
        let rm = Fixtures.rewardModel("llama-rm"), safety = Fixtures.rewardModel("qwen2-rm")
        func spec(_ round: String) -> String {
            """
            coordinator: tcp://127.0.0.1:*
            heartbeat_ms: 100
            hosts:
              - name: here
                workers: {generator: 1, learner: 1, reference-policy: 1, reward-model: 1, safety-model: 1}
            model: {checkpoint: \(TestKit.repository)/models/chat-world/sft.bin, reward_model: \(rm), safety_model: \(safety)}
            data: {prompts: prompts.jsonl, eval_prompts: prompts.jsonl}
            judge: {source: reward-model, checkpoint: \(rm)}
            plan:
              - rs_round: {name: V1, prompts: 8, samples: 2, max_new_tokens: 12, reward: {models: 1}\(round)}
            """
        }
        try spec("").write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let result = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        for role in ["reward-model", "safety-model"] {
            #expect(result.stdout.contains("the \(role) (") && result.stdout.contains("tokenizes otherwise than the policy: it scores each answer's text"),
                    "\(result.stdout)")
        }
        let samples = try RLHFRunTests.lines(dir + "/run/rounds/V1/samples.jsonl")
        #expect(samples.count == 16)
        // Each sample's scores, again: its prompt's conversation and its text in each reward model's template and tokenizer.
        let conversations = [[ChatTemplate.Message(role: .user, content: "Tell me about the fox.")],
                             [ChatTemplate.Message(role: .user, content: "Hi."), ChatTemplate.Message(role: .assistant, content: "Hello."),
                              ChatTemplate.Message(role: .user, content: "Tell me about the fox.")]]
        let helpfulness = try LocalRewardModel(kind: .rewardModel, checkpoint: rm, head: nil)
        let safetyModel = try LocalRewardModel(kind: .safetyModel, checkpoint: safety, head: nil)
        let (rmTokenizer, safetyTokenizer) = (try Tokenizer(path: rm), try Tokenizer(path: safety))
        for sample in samples {
            let prompt = conversations[(sample["prompt_id"] as! Int) % 2], response = sample["response"] as! String
            let expected = (try helpfulness.scores([try helpfulness.sequence(prompt: prompt, response: response, tokenizer: rmTokenizer)])[0],
                            try safetyModel.scores([try safetyModel.sequence(prompt: prompt, response: response, tokenizer: safetyTokenizer)])[0])
            let got = ((sample["helpfulness_score"] as! NSNumber).floatValue, (sample["safety"] as! NSNumber).floatValue)
            #expect(abs(got.0 - expected.0) < 1e-4 && abs(got.1 - expected.1) < 1e-4, "\(got) vs \(expected): \(sample)")
        }

        try spec(", new_pairs: 4").write(toFile: dir + "/retrain.yaml", atomically: true, encoding: .utf8)
        let refused = try CLITests.rlhf(["launch", dir + "/retrain.yaml", "--run-dir", dir + "/retrain"])
        #expect(refused.status != 0 && refused.stderr.contains("model.reward_model") && refused.stderr.contains("plan step 1 trains it"),
                "\(refused.stdout)\(refused.stderr)")
        #expect(!refused.stdout.contains("started"), "\(refused.stdout)")
        // A prompt the reward models' 256-token context cannot hold with an answer: refused before any worker starts.
        let long = String(repeating: "Tell me about the fox. ", count: 30)
        try ((0..<8).map { $0 == 5 ? #"{"prompt": "\#(long)"}"# : single }.joined(separator: "\n") + "\n").write(toFile: dir + "/prompts.jsonl", atomically: true, encoding: .utf8)
        let tooLong = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/long"])
        #expect(tooLong.status != 0 && tooLong.stderr.contains("model.reward_model") && tooLong.stderr.contains("no room for an answer"),
                "\(tooLong.stdout)\(tooLong.stderr)")
        #expect(!tooLong.stdout.contains("started"), "\(tooLong.stdout)")
    }
}
