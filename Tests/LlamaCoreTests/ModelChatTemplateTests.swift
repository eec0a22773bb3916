import Foundation
import Testing
import TestKit
@testable import LlamaCore

/// A Hugging Face model's own chat template, one of none of the core's formats, runs as the template
/// it is: the conversation's text is `transformers`' `apply_chat_template`'s, its ids the tokenizer.json's
/// encoding of that text by the `tokenizers` library (for the byte-level fixture also transformers'
/// tokenize=True ids; for the LLaMA2 one transformers 5 swaps the file's normalizer for its own
/// `LlamaTokenizer` pipeline, which writes no `▁` after a special token), and each answer is what the
/// template writes after the turns before it and its generation prompt.
@Suite struct ModelChatTemplateTests {
    /// SmolLM2-Instruct's template (ChatML with a default system prompt) on the byte-level fixture, and
    /// TinyLlama's (Zephyr: a statement a line, so Jinja's whitespace rules matter) on the LLaMA2 one.
    static let smolTemplate = #"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"#
    static let zephyrTemplate = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
    static let smolFull: [Int32] = [1, 85, 91, 342, 759, 201, 421, 460, 260, 381, 914, 82, 72, 656, 388, 43, 365, 85, 358, 494, 984, 275, 349, 79, 446, 46, 47, 14, 259, 84, 451, 275, 400, 577, 87, 73, 73, 296, 408, 764, 2, 201, 1, 732, 262, 201, 48, 548, 284, 284, 383, 293, 16, 2, 201, 1, 961, 358, 494, 201, 35, 286, 81, 90, 16, 2, 201, 1, 732, 262, 201, 35, 711, 375, 33, 2, 201, 1, 961, 358, 494, 201, 35, 80, 271, 89, 78, 16, 2, 201]
    static let smolPrompt: [Int32] = [1, 85, 91, 342, 759, 201, 421, 460, 260, 381, 914, 82, 72, 656, 388, 43, 365, 85, 358, 494, 984, 275, 349, 79, 446, 46, 47, 14, 259, 84, 451, 275, 400, 577, 87, 73, 73, 296, 408, 764, 2, 201, 1, 732, 262, 201, 48, 548, 284, 284, 383, 293, 16, 2, 201, 1, 961, 358, 494, 201]
    static let zephyrFull: [Int32] = [529, 29989, 1792, 29989, 29958, 13, 1170, 385, 13019, 29889, 2, 29871, 13, 29966, 29989, 465, 22137, 29989, 29958, 13, 29909, 1701, 29916, 29889, 2, 29871, 13, 29966, 29989, 1792, 29989, 29958, 13, 2744, 1228, 29973, 2, 29871, 13, 29966, 29989, 465, 22137, 29989, 29958, 13, 2744, 8152, 29880, 29889, 2, 29871, 13]
    static let zephyrPrompt: [Int32] = [529, 29989, 1792, 29989, 29958, 13, 1170, 385, 13019, 29889, 2, 29871, 13, 29966, 29989, 465, 22137, 29989, 29958, 13]
    static let conversation: [ChatTemplate.Message] = [
        .init(role: .user, content: "Name an animal."), .init(role: .assistant, content: "A fox."),
        .init(role: .user, content: "Another?"), .init(role: .assistant, content: "An owl."),
    ]

    /// A copy of fixture `name` whose tokenizer_config.json carries `template`.
    static func directory(_ name: String, template: String) throws -> String {
        let dir = try Fixtures.temporaryDirectory()
        let source = Fixtures.huggingFace(name)
        for file in try FileManager.default.contentsOfDirectory(atPath: source) where file != "chat_template.jinja" {
            try FileManager.default.copyItem(atPath: source + "/" + file, toPath: dir + "/" + file)
        }
        let configPath = dir + "/tokenizer_config.json"
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: configPath))) as! [String: Any]
        config["chat_template"] = template
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: configPath))
        return dir
    }

    @Test(arguments: [("smol", "hf-bytebpe-gqa"), ("zephyr", "hf-llama2-mha")])
    func idsAndAnswersAreTransformers(name: String, fixture: String) throws {
        let template = name == "smol" ? Self.smolTemplate : Self.zephyrTemplate
        let dir = try Self.directory(fixture, template: template)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let tokenizer = try Tokenizer(path: dir)
        #expect(tokenizer.chatTemplate != nil)
        try tokenizer.requireChatFormat()
        let (ids, isAnswer) = try ChatTemplate.encode(Self.conversation, tokenizer: tokenizer)
        #expect(ids == (name == "smol" ? Self.smolFull : Self.zephyrFull))
        #expect(try ChatTemplate.promptIDs(conversation: [Self.conversation[0]], tokenizer: tokenizer) == (name == "smol" ? Self.smolPrompt : Self.zephyrPrompt))
        #expect(ChatTemplate.promptIDs("Name an animal.", tokenizer: tokenizer) == (name == "smol" ? Self.smolPrompt : Self.zephyrPrompt))
        // The answers: what follows each generation prompt up to the end of the answer's last token.
        // The answers, as runs of the whole text's tokens: "A fox.<|im_end|>" and "A fox.</s>" (both
        // generation prompts end with the newline before the answer), not the "\n" after them.
        let expectedAnswers: [[Int32]] = name == "smol"
            ? [[35, 286, 81, 90, 16, 2], [35, 80, 271, 89, 78, 16, 2]]
            : [[29909, 1701, 29916, 29889, 2], [2744, 8152, 29880, 29889, 2]]
        var runs: [[Int32]] = []
        for (k, id) in ids.enumerated() where isAnswer[k] {
            if k > 0 && isAnswer[k - 1] { runs[runs.count - 1].append(id) } else { runs.append([id]) }
        }
        #expect(runs == expectedAnswers)
        // A format named instead replaces the template.
        var named = tokenizer
        try named.useChatFormat(name == "smol" ? .chatml : .llama2)
        #expect(named.chatTemplate == nil)
        #expect(try ChatTemplate.encode(Self.conversation, tokenizer: named).ids != ids)
    }

    /// A template the engine cannot read is refused where conversations are rendered, naming the file and
    /// line; one that raises refuses the conversation with its words.
    @Test func unreadableAndRaisingTemplates() throws {
        let unreadable = try Self.directory("hf-bytebpe-gqa", template: "{% for m in messages %}\n{% include 'x' %}{% endfor %}")
        defer { try? FileManager.default.removeItem(atPath: unreadable) }
        let bad = try Tokenizer(path: unreadable)
        #expect { try bad.requireChatFormat() } throws: { "\($0)".contains("tokenizer_config.json") && "\($0)".contains("line 2") }
        // A template that cannot render a lone user message is refused up front.
        let broken = try Self.directory("hf-bytebpe-gqa", template: "{{ messages[1]['content'].upper() }}")
        defer { try? FileManager.default.removeItem(atPath: broken) }
        #expect { try Tokenizer(path: broken).requireChatFormat() } throws: {
            "\($0)".contains("cannot render a lone user message") && "\($0)".contains("tokenizer_config.json")
        }
        let strict = try Self.directory("hf-bytebpe-gqa", template: "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
        defer { try? FileManager.default.removeItem(atPath: strict) }
        let tokenizer = try Tokenizer(path: strict)
        #expect {
            try ChatTemplate.encode([.init(role: .system, content: "s"), .init(role: .user, content: "u"), .init(role: .assistant, content: "a")], tokenizer: tokenizer)
        } throws: { "\($0)".contains("refuses the conversation: System role not supported") }
    }
}
