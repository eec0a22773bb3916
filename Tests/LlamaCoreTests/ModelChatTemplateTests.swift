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


    @Test(arguments: [("smol", "hf-bytebpe-gqa"), ("zephyr", "hf-llama2-mha")])
    func idsAndAnswersAreTransformers(name: String, fixture: String) throws {
        let template = name == "smol" ? Self.smolTemplate : Self.zephyrTemplate
        let dir = try Fixtures.huggingFace(fixture, template: template)
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

    /// Writes `object` as JSON to `path`.
    static func write(_ object: [String: Any], to path: String) throws {
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: path))
    }

    /// An answer ends with the token the template writes after it, and generation stops there, at EOS
    /// and at generation_config.json's ids: a base model's tokenizer (EOS `<|endoftext|>`) with a ChatML
    /// template ends answers with `<|im_end|>`, which it would otherwise generate past.
    @Test func answersEndWhereTheTemplateEndsThem() throws {
        let dir = try Fixtures.huggingFace("hf-bytebpe-gqa", template: Self.smolTemplate)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/tokenizer_config.json"))) as! [String: Any]
        config["eos_token"] = "<|endoftext|>"
        try Self.write(config, to: dir + "/tokenizer_config.json")
        try Self.write(["eos_token_id": [0, 7]], to: dir + "/generation_config.json")
        let tokenizer = try Tokenizer(path: dir)
        let imEnd = try #require(tokenizer.tokenId("<|im_end|>")), endOfText = try #require(tokenizer.tokenId("<|endoftext|>"))
        #expect(tokenizer.eosId == endOfText && tokenizer.chatTemplate != nil)
        #expect(tokenizer.endOfTurnId == imEnd)
        #expect(tokenizer.stopIds == [imEnd, endOfText, 7])
        #expect(tokenizer.finishedAnswer([40, 41]) == [40, 41, imEnd])
        #expect(tokenizer.finishedAnswer([40, endOfText]) == [40, endOfText])
        // The answers SFT trains on end with that token too.
        let (ids, isAnswer) = try ChatTemplate.encode(Array(Self.conversation.prefix(2)), tokenizer: tokenizer)
        #expect(ids.indices.last { isAnswer[$0] }.map { ids[$0] } == imEnd)
        // Named instead: ChatML's end of turn; LLaMA2's is EOS.
        var chatml = tokenizer
        try chatml.useChatFormat(.chatml)
        #expect(chatml.endOfTurnId == imEnd && chatml.stopIds == [imEnd, endOfText, 7])
        var llama2 = tokenizer
        try llama2.useChatFormat(.llama2)
        #expect(llama2.endOfTurnId == endOfText && llama2.stopIds == [endOfText, 7])
        // Zephyr's template ends answers with EOS; config.json's id stands in for a missing generation_config.json.
        let zephyr = try Fixtures.huggingFace("hf-llama2-mha", template: Self.zephyrTemplate)
        defer { try? FileManager.default.removeItem(atPath: zephyr) }
        try FileManager.default.removeItem(atPath: zephyr + "/generation_config.json")
        var model = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: zephyr + "/config.json"))) as! [String: Any]
        model["eos_token_id"] = [2, 9]
        try Self.write(model, to: zephyr + "/config.json")
        let zephyrTokenizer = try Tokenizer(path: zephyr)
        #expect(zephyrTokenizer.endOfTurnId == 2 && zephyrTokenizer.stopIds == [2, 9])
        // A template that writes plain text after an answer ends it with EOS.
        let plain = try Fixtures.huggingFace("hf-llama2-mha", template: "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n\n' }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
        defer { try? FileManager.default.removeItem(atPath: plain) }
        #expect(try Tokenizer(path: plain).endOfTurnId == 2)
        // llama2.c's tokenizer: EOS alone.
        let llama2c = try Tokenizer(path: Fixtures.llama2Bin)
        #expect(llama2c.endOfTurnId == llama2c.eosId && llama2c.stopIds == [llama2c.eosId])
    }

    /// An `eos_token_id` that is no token id is refused naming the file.
    @Test func aBadGenerationStopIdIsRefused() throws {
        let dir = try Fixtures.huggingFace("hf-bytebpe-gqa", template: Self.smolTemplate)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for bad: Any in ["</s>", [2, "x"], true] {
            try Self.write(["eos_token_id": bad], to: dir + "/generation_config.json")
            #expect { try Tokenizer(path: dir) } throws: { "\($0)".contains("generation_config.json") && "\($0)".contains("eos_token_id") }
        }
    }

    /// A template the engine cannot read is refused where conversations are rendered, naming the file and
    /// line; one that raises refuses the conversation with its words.
    @Test func unreadableAndRaisingTemplates() throws {
        let unreadable = try Fixtures.huggingFace("hf-bytebpe-gqa", template: "{% for m in messages %}\n{% include 'x' %}{% endfor %}")
        defer { try? FileManager.default.removeItem(atPath: unreadable) }
        let bad = try Tokenizer(path: unreadable)
        #expect { try bad.requireChatFormat() } throws: { "\($0)".contains("tokenizer_config.json") && "\($0)".contains("line 2") }
        // A template that cannot render a lone user message is refused up front.
        let broken = try Fixtures.huggingFace("hf-bytebpe-gqa", template: "{{ messages[1]['content'].upper() }}")
        defer { try? FileManager.default.removeItem(atPath: broken) }
        #expect { try Tokenizer(path: broken).requireChatFormat() } throws: {
            "\($0)".contains("cannot render a lone user message") && "\($0)".contains("tokenizer_config.json")
        }
        let strict = try Fixtures.huggingFace("hf-bytebpe-gqa", template: "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for m in messages %}{{ m['content'] }}{% endfor %}")
        defer { try? FileManager.default.removeItem(atPath: strict) }
        let tokenizer = try Tokenizer(path: strict)
        #expect {
            try ChatTemplate.encode([.init(role: .system, content: "s"), .init(role: .user, content: "u"), .init(role: .assistant, content: "a")], tokenizer: tokenizer)
        } throws: { "\($0)".contains("refuses the conversation: System role not supported") }
    }


    /// `chat_template_kwargs` reach every rendering: Qwen3's template with `enable_thinking: false` gives
    /// transformers' `apply_chat_template(..., enable_thinking=False)` ids (the prompt ends with an empty
    /// `<think>` block, so the answer SFT trains on does not hold it), and without it the template's own
    /// default (thinking: the empty block is part of the answer). Ids from transformers 5.25 on the
    /// byte-level fixture.
    @Test func templateArgumentsReachEveryRendering() throws {
        let dir = try Fixtures.huggingFace("hf-bytebpe-gqa", template: try Fixtures.jinjaTemplate("qwen3"))
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let thinking = try Tokenizer(path: dir)
        var direct = thinking
        try direct.useChatTemplateArguments(ChatTemplateArguments(json: #"{"enable_thinking": false}"#, key: "--chat-template-kwargs"))
        #expect(direct.chatTemplate?.arguments.values == ["enable_thinking": .bool(false)])
        let exchange = Array(Self.conversation.prefix(2))
        let user: [Int32] = [1, 732, 262, 201, 48, 548, 284, 284, 383, 293, 16, 2, 201, 1, 961, 358, 494, 201]
        let emptyThought: [Int32] = [30, 312, 266, 77, 32, 201, 201, 30, 17, 312, 266, 77, 32]  // <think>\n\n</think>
        let answer: [Int32] = [35, 286, 81, 90, 16, 2]  // A fox.<|im_end|>
        #expect(ChatTemplate.promptIDs("Name an animal.", tokenizer: thinking) == user)
        #expect(ChatTemplate.promptIDs("Name an animal.", tokenizer: direct) == user + emptyThought + [394])
        #expect(try ChatTemplate.promptIDs(conversation: [Self.conversation[0]], tokenizer: direct) == user + emptyThought + [394])
        func answerRun(_ tokenizer: Tokenizer) throws -> [Int32] {
            let (ids, isAnswer) = try ChatTemplate.encode(exchange, tokenizer: tokenizer)
            #expect(ids == user + emptyThought + [201, 201] + answer + [201])
            return ids.indices.filter { isAnswer[$0] }.map { ids[$0] }
        }
        // Thinking (the default): the empty block is written after the generation prompt, so it is the answer's.
        #expect(try answerRun(thinking) == emptyThought + [201, 201] + answer)
        // Not thinking: the generation prompt holds it; the answer is its text (and the blank line the
        // prompt's last token covers, tokenized apart in the whole text).
        #expect(try answerRun(direct) == [201, 201] + answer)
        #expect(direct.endOfTurnId == thinking.endOfTurnId)
        // What is refused, by name: a name the template never reads, a name the renderer passes, a format named instead.
        var misspelt = thinking
        #expect { try misspelt.useChatTemplateArguments(ChatTemplateArguments(["enable_thinkng": .bool(false)])) } throws: {
            "\($0)".contains("never reads enable_thinkng")
        }
        #expect { try misspelt.useChatTemplateArguments(ChatTemplateArguments(["messages": .list([])])) } throws: {
            "\($0)".contains("messages is passed by the renderer itself")
        }
        var named = thinking
        try named.useChatFormat(.chatml)
        #expect { try named.useChatTemplateArguments(ChatTemplateArguments(["enable_thinking": .bool(false)])) } throws: {
            "\($0)".contains("chatml format, whose template reads none")
        }
        try named.useChatTemplateArguments(ChatTemplateArguments())
        #expect { try ChatTemplateArguments(json: "[1]", key: "--chat-template-kwargs") } throws: { "\($0)".contains("is not a JSON object") }
    }
}
