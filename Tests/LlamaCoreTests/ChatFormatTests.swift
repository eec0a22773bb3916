import Foundation
import Testing
import TestKit
@testable import LlamaCore

/// Chat formats against `transformers`' own rendering of their Jinja templates.
@Suite struct ChatFormatTests {
    static func messages(_ value: Any?) -> [ChatTemplate.Message] {
        (value as! [[String: String]]).map { ChatTemplate.Message(role: ChatTemplate.Role(rawValue: $0["role"]!)!, content: $0["content"]!) }
    }

    /// 120 conversations (system prompts, stripping, Unicode, generation prompts) rendered by
    /// transformers' `render_jinja_template` with each format's template (Resources/hf-chat).
    @Test func rendersAsTransformersDoes() throws {
        let text = try String(contentsOfFile: Fixtures.root + "/hf-chat/cases.jsonl", encoding: .utf8)
        var count = 0
        for line in text.split(separator: "\n") {
            let o = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            let format = ChatFormat(rawValue: o["format"] as! String)!
            let rendered = try format.render(Self.messages(o["messages"]), addGenerationPrompt: o["add_generation_prompt"] as! Bool,
                                             bos: o["bos"] as! String, eos: o["eos"] as! String)
            #expect(rendered == o["text"] as! String, "\(format): \(line)")
            // Each format's own template source is recognised as that format.
            #expect(try ChatFormat.recognise(template: format.jinjaSource, path: "t") == format)
            count += 1
        }
        #expect(count == 120)
    }

    /// The fixture directories' templates (tokenizer_config.json, chat_template.jinja) are
    /// recognised, and their chat cases render exactly.
    @Test(arguments: ["hf-llama2-mha", "hf-bytebpe-gqa"])
    func fixtureChatCases(name: String) throws {
        let dir = Fixtures.huggingFace(name)
        let (source, path) = try #require(try ChatFormat.templateSource(directory: dir))
        let format = try ChatFormat.recognise(template: source, path: path)
        #expect(format == (name == "hf-llama2-mha" ? .llama2 : .chatml))
        let tokenizer = try Tokenizer(path: dir)
        #expect(tokenizer.chatFormat == format && tokenizer.chatTemplateError == nil)
        for case_ in try Fixtures.huggingFaceReference(name)["chat_cases"] as! [[String: Any]] {
            let text = try format.render(Self.messages(case_["messages"]), addGenerationPrompt: case_["add_generation_prompt"] as! Bool,
                                         bos: tokenizer.tokenText(tokenizer.bosId), eos: tokenizer.tokenText(tokenizer.eosId))
            #expect(text == case_["text"] as! String)
        }
    }

    /// A template of no supported format is refused naming the file and the supported formats;
    /// LLaMA2's alternation rule is enforced as its template raises.
    @Test func unsupportedTemplatesAndRolesAreRefused() throws {
        #expect {
            try ChatFormat.recognise(template: "{{ messages[0]['content'] }}<|assistant|>", path: "dir/tokenizer_config.json")
        } throws: { "\($0)".contains("dir/tokenizer_config.json") && "\($0)".contains("llama2, chatml, llama3") }
        #expect(throws: LlamaError.self) {
            try ChatFormat.llama2.render([.init(role: .user, content: "a"), .init(role: .user, content: "b")],
                                         addGenerationPrompt: true, bos: "<s>", eos: "</s>")
        }
        #expect { try ChatFormat(named: "vicuna") } throws: { "\($0)".contains("llama2, chatml, llama3") }
        // A format whose special tokens the tokenizer lacks is refused when chosen.
        var sentencePiece = try Tokenizer(path: Fixtures.llama2Model)
        #expect { try sentencePiece.useChatFormat(.chatml) } throws: { "\($0)".contains("<|im_start|>") }
        #expect(throws: Never.self) { try sentencePiece.useChatFormat(.llama2) }
    }

    /// Conversations tokenized in a format: special tokens by id, the answers (and the token ending
    /// them) marked for the loss.
    @Test func chatmlConversationsTokenizeWithAnswerMask() throws {
        var tokenizer = try Tokenizer(path: Fixtures.huggingFace("hf-bytebpe-gqa"))
        tokenizer.chatFormat = .chatml
        let (ids, isAnswer) = try ChatTemplate.encode([.init(role: .user, content: "Hi!"), .init(role: .assistant, content: "Hello.")],
                                                      tokenizer: tokenizer)
        let text = "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"
        #expect(ids == tokenizer.encode(text))
        let answer = zip(ids, isAnswer).filter(\.1).map(\.0)
        #expect(answer == tokenizer.encode("Hello.") + [tokenizer.tokenId("<|im_end|>")!])
        let prompt = ChatTemplate.promptIDs("Hi!", tokenizer: tokenizer)
        #expect(prompt == tokenizer.encode("<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"))
    }
}
