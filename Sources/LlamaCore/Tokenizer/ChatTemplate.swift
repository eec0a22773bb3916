import Foundation

/// The chat formats the core renders and tokenizes, each exactly as its Jinja template renders in
/// `transformers`' `apply_chat_template`:
/// - `llama2`: LLaMA2-Chat's `<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s>`
///   (contents stripped, the system prompt inside the first user turn, roles alternating);
/// - `chatml`: `<|im_start|>{role}\n{content}<|im_end|>\n` per message, generation prompt
///   `<|im_start|>assistant\n`;
/// - `llama3`: BOS, then `<|start_header_id|>{role}<|end_header_id|>\n\n{content stripped}<|eot_id|>`
///   per message, generation prompt `<|start_header_id|>assistant<|end_header_id|>\n\n`.
public enum ChatFormat: String, CaseIterable, Sendable, Codable {
    case llama2, chatml, llama3

    /// The names accepted in a spec's `chat_template:`, for messages.
    public static var supportedNames: String { allCases.map(\.rawValue).joined(separator: ", ") }

    /// Recognises the format of a Jinja chat template by the markers it emits; `path` names the file
    /// in the error for a template of none of the supported formats.
    public static func recognise(template: String, path: String) throws -> ChatFormat {
        if template.contains("<|start_header_id|>") && template.contains("<|eot_id|>") { return .llama3 }
        if template.contains("<|im_start|>") && template.contains("<|im_end|>") { return .chatml }
        if template.contains("[INST]") && template.contains("[/INST]") { return .llama2 }
        throw LlamaError.invalidTokenizer(path: path,
            reason: "its chat template is none of the supported formats (\(supportedNames): LLaMA2's [INST], ChatML's <|im_start|>, LLaMA3's <|start_header_id|>); name one with chat_template: in the spec")
    }

    /// Parses a format's name (a spec's `chat_template:`).
    public init(named name: String) throws {
        guard let format = ChatFormat(rawValue: name.lowercased()) else {
            throw LlamaError.invalidInput("chat template \"\(name)\" is not supported (supported: \(ChatFormat.supportedNames))")
        }
        self = format
    }

    /// One piece of a rendered conversation: literal text or a special token (by its text), and
    /// whether it belongs to an assistant's answer (what training computes the loss on).
    public struct Part: Sendable, Equatable {
        public enum Kind: Sendable, Equatable { case text, special }
        public var kind: Kind
        public var text: String
        public var isAnswer: Bool
    }

    /// The conversation as the template renders it, in parts. `bos`/`eos` are the tokenizer's
    /// special tokens' texts (e.g. `<s>`, `</s>`). Throws where the template raises (LLaMA2: roles
    /// that do not alternate user, assistant after an optional system message).
    public func parts(_ messages: [ChatTemplate.Message], addGenerationPrompt: Bool, bos: String, eos: String) throws -> [Part] {
        func text(_ s: String, answer: Bool = false) -> Part { Part(kind: .text, text: s, isAnswer: answer) }
        func special(_ s: String, answer: Bool = false) -> Part { Part(kind: .special, text: s, isAnswer: answer) }
        var out: [Part] = []
        switch self {
        case .llama2:
            var turns = messages[...]
            var system: String?
            if let first = turns.first, first.role == .system {
                system = first.content
                turns = turns.dropFirst()
            }
            for (index, message) in turns.enumerated() {
                let expected: ChatTemplate.Role = index % 2 == 0 ? .user : .assistant
                guard message.role == expected else {
                    throw LlamaError.invalidInput("message \(index + (system == nil ? 1 : 2)) is from the \(message.role.rawValue); expected the \(expected.rawValue) (LLaMA2's template: roles alternate user, assistant after an optional system message)")
                }
                if message.role == .user {
                    let content = index == 0 && system != nil ? "<<SYS>>\n\(system!)\n<</SYS>>\n\n\(message.content)" : message.content
                    out += [special(bos), text("[INST] " + ChatFormat.strip(content) + " [/INST]")]
                } else {
                    out += [text(" " + ChatFormat.strip(message.content) + " ", answer: true), special(eos, answer: true)]
                }
            }
        case .chatml:
            for message in messages {
                out += [special("<|im_start|>"), text(message.role.rawValue + "\n")]
                let answer = message.role == .assistant
                out += [text(message.content, answer: answer), special("<|im_end|>", answer: answer), text("\n")]
            }
            if addGenerationPrompt { out += [special("<|im_start|>"), text("assistant\n")] }
        case .llama3:
            for (index, message) in messages.enumerated() {
                if index == 0 { out.append(special(bos)) }
                out += [special("<|start_header_id|>"), text(message.role.rawValue), special("<|end_header_id|>"), text("\n\n")]
                let answer = message.role == .assistant
                out += [text(ChatFormat.strip(message.content), answer: answer), special("<|eot_id|>", answer: answer)]
            }
            if addGenerationPrompt { out += [special("<|start_header_id|>"), text("assistant"), special("<|end_header_id|>"), text("\n\n")] }
        }
        return out.filter { !$0.text.isEmpty }
    }

    /// The conversation's text exactly as the template renders it.
    public func render(_ messages: [ChatTemplate.Message], addGenerationPrompt: Bool, bos: String, eos: String) throws -> String {
        try parts(messages, addGenerationPrompt: addGenerationPrompt, bos: bos, eos: eos).map(\.text).joined()
    }

    /// The format's Jinja template as the models that use it ship it (LLaMA2-Chat's, ChatML as in
    /// the fixture, Meta-Llama-3-Instruct's): what an export writes.
    public var jinjaSource: String {
        switch self {
        case .llama2:
            return #"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"#
        case .chatml:
            return #"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"#
        case .llama3:
            return #"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"#
        }
    }

    /// The special tokens the format writes besides BOS and EOS: the tokenizer must have each.
    public var specialTokens: [String] {
        switch self {
        case .llama2: return []
        case .chatml: return ["<|im_start|>", "<|im_end|>"]
        case .llama3: return ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
        }
    }

    /// The token the format writes after an answer, in `tokenizer`: EOS (LLaMA2), `<|im_end|>` (ChatML),
    /// `<|eot_id|>` (LLaMA 3); EOS where the tokenizer lacks the format's.
    func endOfTurn(in tokenizer: Tokenizer) -> Int32 {
        switch self {
        case .llama2: return tokenizer.eosId
        case .chatml: return tokenizer.tokenId("<|im_end|>") ?? tokenizer.eosId
        case .llama3: return tokenizer.tokenId("<|eot_id|>") ?? tokenizer.eosId
        }
    }

    /// Python's `str.strip()` (Jinja's `trim`): whitespace at both ends removed.
    static func strip(_ s: String) -> String {
        s.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Reads the chat template of a Hugging Face model directory: `chat_template.jinja`, else
    /// `tokenizer_config.json`'s `chat_template` (a string, or a list of `{name, template}` whose
    /// `default` is taken), else the processor's `chat_template.json` (a multimodal model's, such as Gemma 3
    /// 4B's). Nil when the directory has none.
    public static func templateSource(directory: String) throws -> (source: String, path: String)? {
        let jinja = directory + "/chat_template.jinja"
        if let data = FileManager.default.contents(atPath: jinja) { return (String(decoding: data, as: UTF8.self), jinja) }
        for file in ["tokenizer_config.json", "chat_template.json"] {
            let path = directory + "/" + file
            guard let data = FileManager.default.contents(atPath: path) else { continue }
            guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
                throw LlamaError.invalidTokenizer(path: path, reason: "not a JSON object")
            }
            switch object["chat_template"] {
            case let source as String:
                return (source, path)
            case let list as [[String: Any]]:
                let chosen = list.first { ($0["name"] as? String) == "default" } ?? list.first
                if let template = chosen?["template"] as? String { return (template, path) }
            default:
                continue
            }
        }
        return nil
    }
}

/// Chat conversations in a model's format, tokenized: what training and the RLHF plan feed the
/// model. The format is the tokenizer's (`Tokenizer.chatFormat`: LLaMA2's unless the model
/// directory's template or the spec names another).
public enum ChatTemplate {
    /// Who speaks.
    public enum Role: String, Sendable, Codable {
        case system, user, assistant
    }

    /// One message of a conversation.
    public struct Message: Sendable, Equatable, Codable {
        public var role: Role
        public var content: String

        public init(role: Role, content: String) {
            self.role = role
            self.content = content
        }
    }

    /// The text of one LLaMA2 user turn as the model sees it (without BOS), with the system prompt when given.
    public static func instruction(_ user: String, system: String? = nil) -> String {
        let body = system.map { "<<SYS>>\n\($0)\n<</SYS>>\n\n\(user)" } ?? user
        return "[INST] \(body.trimmingCharacters(in: .whitespaces)) [/INST]"
    }

    /// Token ids of a prompt that asks the model for the next answer: the user turn (with the
    /// system prompt when given) and the generation prompt, in the tokenizer's chat format.
    public static func promptIDs(_ user: String, system: String? = nil, tokenizer: Tokenizer) -> [Int32] {
        if tokenizer.chatTemplate == nil && tokenizer.chatFormat == .llama2 {
            return [tokenizer.bosId] + tokenizer.encode(instruction(user, system: system))
        }
        var messages = [Message(role: .user, content: user)]
        if let system { messages.insert(Message(role: .system, content: system), at: 0) }
        if let template = tokenizer.chatTemplate {
            return (try? promptIDs(messages, template: template, tokenizer: tokenizer)) ?? []
        }
        // A lone user turn (after an optional system message) renders in every format.
        return (try? encodeParts(messages, addGenerationPrompt: true, tokenizer: tokenizer).ids) ?? []
    }

    /// The model's own template's prompt: the conversation and the generation prompt, tokenized.
    static func promptIDs(_ messages: [Message], template: ModelChatTemplate, tokenizer: Tokenizer) throws -> [Int32] {
        tokenizer.encodeRendered(try template.render(messages, addGenerationPrompt: true, specialTokens: tokenizer.chatSpecialTokens))
    }

    /// Token ids of a prompt that is a conversation (optional system message, then user and
    /// assistant turns alternating, ending with a user turn) and the generation prompt. A lone user
    /// turn gives `promptIDs(_:system:tokenizer:)`'s ids.
    public static func promptIDs(conversation messages: [Message], tokenizer: Tokenizer) throws -> [Int32] {
        guard messages.last?.role == .user else { throw LlamaError.invalidInput("a prompt must end with a user message") }
        if let template = tokenizer.chatTemplate { return try promptIDs(messages, template: template, tokenizer: tokenizer) }
        if tokenizer.chatFormat == .llama2 { return try encode(messages, tokenizer: tokenizer).ids }
        return try encodeParts(messages, addGenerationPrompt: true, tokenizer: tokenizer).ids
    }

    /// Token ids of a whole conversation as the model's chat template renders it, answers not told apart
    /// (`apply_chat_template(messages, tokenize=True)`: the text tokenized whole, its special tokens as
    /// tokens): what a reward model scores. An empty answer is scored as any other (training refuses one).
    public static func conversationIDs(_ messages: [Message], tokenizer: Tokenizer) throws -> [Int32] {
        tokenizer.encodeRendered(try tokenizer.renderChat(messages, addGenerationPrompt: false))
    }

    /// Token ids of a conversation for training, and for each id whether it belongs to an answer (the
    /// assistant's words and the token that ends them: what the loss is computed on). Messages: an
    /// optional system message first, then user and assistant turns alternating, starting with a user.
    public static func encode(_ messages: [Message], tokenizer: Tokenizer) throws -> (ids: [Int32], isAnswer: [Bool]) {
        var turns = messages[...]
        var system: String?
        if let first = turns.first, first.role == .system {
            system = first.content
            turns = turns.dropFirst()
        }
        guard !turns.isEmpty else { throw LlamaError.invalidInput("a conversation needs at least one user message") }
        for (offset, message) in turns.enumerated() {
            let index = turns.startIndex + offset
            let expected: Role = offset % 2 == 0 ? .user : .assistant
            guard message.role == expected else {
                throw LlamaError.invalidInput("message \(index + 1) is from the \(message.role.rawValue); expected the \(expected.rawValue) (turns alternate user, assistant)")
            }
            if message.role == .assistant && message.content.trimmingCharacters(in: .whitespaces).isEmpty {
                throw LlamaError.invalidInput("message \(index + 1): the assistant's answer is empty")
            }
        }
        if let template = tokenizer.chatTemplate { return try encode(messages, template: template, tokenizer: tokenizer) }
        guard tokenizer.chatFormat == .llama2 else {
            return try encodeParts(messages, addGenerationPrompt: false, tokenizer: tokenizer)
        }
        // LLaMA2: each exchange between BOS and EOS, the answer encoded on its own (SentencePiece's
        // dummy prefix gives it the space the template writes).
        var ids: [Int32] = [], isAnswer: [Bool] = []
        var firstTurn = true
        var index = turns.startIndex
        while index < turns.endIndex {
            let prompt = [tokenizer.bosId] + tokenizer.encode(instruction(turns[index].content, system: firstTurn ? system : nil))
            ids += prompt
            isAnswer += Array(repeating: false, count: prompt.count)
            firstTurn = false
            index += 1
            guard index < turns.endIndex else { break }
            let response = tokenizer.encode(turns[index].content.trimmingCharacters(in: .whitespaces)) + [tokenizer.eosId]
            ids += response
            isAnswer += Array(repeating: true, count: response.count)
            index += 1
        }
        return (ids, isAnswer)
    }

    /// A conversation in the model's own template, tokenized whole as `transformers` tokenizes
    /// `apply_chat_template`'s text, with each answer marked: the text the template adds after the
    /// conversation before it and its generation prompt (the answer's words and the tokens that end
    /// them), less trailing whitespace. A template that does not render a conversation as its earlier
    /// turns followed by the new one (one that rewrites earlier turns) is refused: the answers have no
    /// place in it.
    static func encode(_ messages: [Message], template: ModelChatTemplate, tokenizer: Tokenizer) throws -> (ids: [Int32], isAnswer: [Bool]) {
        let now = Date()
        func render(_ turns: ArraySlice<Message>, generationPrompt: Bool) throws -> String {
            try template.render(Array(turns), addGenerationPrompt: generationPrompt, specialTokens: tokenizer.chatSpecialTokens, now: now)
        }
        let full = try render(messages[...], generationPrompt: false)
        let fullBytes = Array(full.utf8)
        // Answers as byte ranges of the whole text.
        var answers: [Range<Int>] = []
        for (index, message) in messages.enumerated() where message.role == .assistant {
            let before = try render(messages[..<index], generationPrompt: true)
            let through = try render(messages[...index], generationPrompt: false)
            guard through.utf8.starts(with: before.utf8), fullBytes.starts(with: through.utf8) else {
                throw LlamaError.invalidInput("the model's chat template (\(template.path)) does not render message \(index + 1) after the turns before it and the generation prompt, so its answer cannot be told apart for training")
            }
            var end = through.utf8.count
            while end > before.utf8.count, [0x20, 0x09, 0x0A, 0x0D].contains(fullBytes[end - 1]) { end -= 1 }
            answers.append(before.utf8.count..<end)
        }
        let ids = tokenizer.encodeRendered(full)
        // A boundary in tokens: as many of the whole text's tokens as the text before it encodes to
        // alike (a token that spans the boundary goes with the text after it).
        func tokenBoundary(_ byteOffset: Int) -> Int {
            let head = tokenizer.encodeRendered(String(decoding: fullBytes[..<byteOffset], as: UTF8.self))
            var k = 0
            while k < head.count, k < ids.count, head[k] == ids[k] { k += 1 }
            return k
        }
        var isAnswer = [Bool](repeating: false, count: ids.count)
        for range in answers {
            let from = tokenBoundary(range.lowerBound), to = tokenBoundary(range.upperBound)
            if from < to { for k in from..<to { isAnswer[k] = true } }
        }
        return (ids, isAnswer)
    }

    /// Tokenizes the format's parts: special tokens by id, text through the tokenizer.
    static func encodeParts(_ messages: [Message], addGenerationPrompt: Bool, tokenizer: Tokenizer) throws -> (ids: [Int32], isAnswer: [Bool]) {
        let parts = try tokenizer.chatFormat.parts(messages, addGenerationPrompt: addGenerationPrompt,
                                                   bos: tokenizer.tokenText(tokenizer.bosId), eos: tokenizer.tokenText(tokenizer.eosId))
        var ids: [Int32] = [], isAnswer: [Bool] = []
        for part in parts {
            let partIds: [Int32]
            switch part.kind {
            case .special:
                guard let id = tokenizer.tokenId(part.text) else {
                    throw LlamaError.invalidInput("the \(tokenizer.chatFormat.rawValue) chat format needs the token \(part.text), which the tokenizer does not have")
                }
                partIds = [id]
            case .text:
                partIds = tokenizer.encode(part.text)
            }
            ids += partIds
            isAnswer += Array(repeating: part.isAnswer, count: partIds.count)
        }
        return (ids, isAnswer)
    }
}
