import Foundation
import Jinja

/// A model's own Jinja chat template (`chat_template.jinja` or `tokenizer_config.json`'s), rendered as
/// `transformers`' `apply_chat_template` renders it: the template itself runs (a default system prompt,
/// dates, role renaming, its own refusals), not a format recognised by its markers. A template whose
/// source is one of `ChatFormat`'s own is rendered by that format instead (the same text).
public struct ModelChatTemplate: Sendable {
    /// The template's source and the file it came from.
    public let source: String
    public let path: String
    /// What the template reads beside the conversation (`chat_template_kwargs`); set through
    /// `Tokenizer.useChatTemplateArguments(_:)`, which checks the template reads each.
    public internal(set) var arguments = ChatTemplateArguments()
    private let template: JinjaTemplate

    /// Reads `source`; a template the engine cannot read is refused naming the file and the line.
    public init(source: String, path: String) throws {
        self.source = source
        self.path = path
        do {
            template = try JinjaTemplate(source)
        } catch let error as JinjaError {
            throw LlamaError.invalidTokenizer(path: path, reason: "its chat template cannot be read (\(error)); name a format with chat_template: in the spec (\(ChatFormat.supportedNames))")
        }
    }

    /// The conversation's text: `messages` as `{"role", "content"}` mappings, `add_generation_prompt`,
    /// `tools` and `documents` (none), the tokenizer's `bos_token`, `eos_token` and `unk_token`, then
    /// `arguments` (which may replace a special token's text), as transformers passes them. `now` is the
    /// date `strftime_now` gives. Where the template raises (`raise_exception`), the error says the
    /// template refused the conversation, with its words.
    public func render(_ messages: [ChatTemplate.Message], addGenerationPrompt: Bool, specialTokens: [String: String],
                       now: Date = Date()) throws -> String {
        // As apply_chat_template passes them: no tools and no documents are none, not undefined.
        var context: [String: Any] = [
            "messages": messages.map { [("role", $0.role.rawValue), ("content", $0.content)] as [(String, Any)] },
            "add_generation_prompt": addGenerationPrompt,
            "tools": NSNull(),
            "documents": NSNull(),
        ]
        for (name, text) in specialTokens { context[name] = text }
        for (name, value) in arguments.context { context[name] = value }
        do {
            return try template.render(context, now: now)
        } catch let JinjaError.raised(message) {
            throw LlamaError.invalidInput("the model's chat template (\(path)) refuses the conversation: \(message)")
        } catch let error as JinjaError {
            throw LlamaError.invalidInput("the model's chat template (\(path)) failed: \(error)")
        }
    }

    /// Whether the template's source names `name` (a variable it may read): a whole word of it outside
    /// a string is not told apart from one inside; enough to catch a misspelt argument.
    func mentions(_ name: String) -> Bool {
        var searchRange = source.startIndex..<source.endIndex
        func isWordCharacter(_ c: Character) -> Bool { c.isLetter || c.isNumber || c == "_" }
        while let found = source.range(of: name, range: searchRange) {
            let before = found.lowerBound == source.startIndex ? nil : source[source.index(before: found.lowerBound)]
            let after = found.upperBound == source.endIndex ? nil : source[found.upperBound]
            if !(before.map(isWordCharacter) ?? false) && !(after.map(isWordCharacter) ?? false) { return true }
            searchRange = found.upperBound..<source.endIndex
        }
        return false
    }
}

extension Tokenizer {
    /// The conversation's text as the model renders it: its own template where it has one, else its
    /// chat format.
    public func renderChat(_ messages: [ChatTemplate.Message], addGenerationPrompt: Bool) throws -> String {
        if let chatTemplate {
            return try chatTemplate.render(messages, addGenerationPrompt: addGenerationPrompt, specialTokens: chatSpecialTokens)
        }
        return try chatFormat.render(messages, addGenerationPrompt: addGenerationPrompt, bos: tokenText(bosId), eos: tokenText(eosId))
    }

    /// What a chat template's `bos_token`, `eos_token` and `unk_token` are: the tokens' texts.
    var chatSpecialTokens: [String: String] {
        ["bos_token": tokenText(bosId), "eos_token": tokenText(eosId), "unk_token": tokenText(unknownId)]
    }

    /// Token ids of text a chat template rendered: the tokenizer's special tokens written in it are
    /// those tokens (as `transformers` tokenizes `apply_chat_template`'s text), the rest is encoded.
    func encodeRendered(_ text: String) -> [Int32] {
        // A tokenizer.json splits out its added tokens itself.
        if huggingFace != nil { return encode(text) }
        let specials = specialPieces
        var ids: [Int32] = []
        var rest = Substring(text)
        var pending = ""
        outer: while !rest.isEmpty {
            for (special, id) in specials where rest.hasPrefix(special) {
                if !pending.isEmpty { ids += encode(pending) }
                pending = ""
                ids.append(id)
                rest = rest.dropFirst(special.count)
                continue outer
            }
            pending.append(rest.removeFirst())
        }
        if !pending.isEmpty { ids += encode(pending) }
        return ids
    }
}

extension Tokenizer {
    /// Whether `ids` ends with one of `stopIds` (an answer that finished, not one cut at a limit).
    public func endsAnswer(_ ids: [Int32]) -> Bool {
        ids.last.map(stopIds.contains) ?? false
    }

    /// `ids` as a finished answer: as they are when they end with a stop token, else with `endOfTurnId` added.
    public func finishedAnswer(_ ids: [Int32]) -> [Int32] {
        endsAnswer(ids) ? ids : ids + [endOfTurnId]
    }

    /// The special token `template` writes right after an answer (after spaces and newlines), found
    /// by rendering one exchange; nil where it writes none there or cannot render one.
    func endOfTurn(_ template: ModelChatTemplate) -> Int32? {
        let answer = "Fine, thank you."
        let messages = [ChatTemplate.Message(role: .user, content: "How are you?"), ChatTemplate.Message(role: .assistant, content: answer)]
        guard let text = try? template.render(messages, addGenerationPrompt: false, specialTokens: chatSpecialTokens),
              let end = text.range(of: answer, options: .backwards)?.upperBound else { return nil }
        let after = text[end...].drop { $0 == " " || $0 == "\n" }
        return specialPieces.first { after.hasPrefix($0.text) }?.id
    }
}
