import Foundation
import LlamaCore
import Testing
import TestKit

/// Hugging Face model directories through the `rlhf` executable, as the issue's must-shows run them.
@Suite struct HuggingFaceCLITests {
    static let names = ["hf-llama2-mha", "hf-bytebpe-gqa"]

    static func json(_ text: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(text.utf8)) as! [String: Any]
    }

    static func ints(_ value: Any?) -> [Int] { value as! [Int] }

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

        let model = dir + "/odd-template"
        let source = Fixtures.huggingFace("hf-bytebpe-gqa")
        try FileManager.default.createDirectory(atPath: model, withIntermediateDirectories: true)
        for file in try FileManager.default.contentsOfDirectory(atPath: source) where file != "chat_template.jinja" {
            try FileManager.default.copyItem(atPath: source + "/" + file, toPath: model + "/" + file)
        }
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
}
