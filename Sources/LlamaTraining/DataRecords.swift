import Foundation
import LlamaCore

/// The key names of a data file's records, for datasets that spell them otherwise (TRL's and
/// OpenRLHF's `prompt_key`, `chosen_key`, ...): `--prompt-key` and friends on the trainers.
public struct DataKeys: Sendable, Equatable, Codable {
    public var prompt = "prompt"
    public var chosen = "chosen"
    public var rejected = "rejected"
    public var messages = "messages"
    public var label = "label"
    /// The SFT answer beside the prompt (OpenRLHF's `output_key`); the default, `completion`, also
    /// takes `response` where a record has no `completion`.
    public var completion = "completion"

    public init(prompt: String = "prompt", chosen: String = "chosen", rejected: String = "rejected",
                messages: String = "messages", label: String = "label", completion: String = "completion") {
        self.prompt = prompt
        self.chosen = chosen
        self.rejected = rejected
        self.messages = messages
        self.label = label
        self.completion = completion
    }

    /// The conversation keys looked for, in order: the default, `messages`, also takes ShareGPT's
    /// `conversations`.
    var messagesKeys: [String] { messages == "messages" ? ["messages", "conversations"] : [messages] }

    /// The conversation key `object` holds, if any.
    func messagesKey(in object: [String: Any]) -> String? { messagesKeys.first { object[$0] != nil } }

    /// The answer keys an SFT record's prompt may come with, in the order they are looked for.
    var completionKeys: [String] { completion == "completion" ? ["completion", "response"] : [completion] }

    /// The answer keys as messages name them: `"completion" (or "response")`.
    var completionKeysDescription: String {
        completionKeys.map { "\"\($0)\"" }.joined(separator: " (or ") + (completionKeys.count > 1 ? ")" : "")
    }
}

/// One SFT record as the shapes TRL and OpenRLHF write it: a conversation (`{"messages"}`,
/// `{"prompt", "completion"}` or `{"prompt", "response"}`, prompt and completion as strings or message
/// lists), trained on the assistant's answers; or plain `{"text"}`, trained on every token.
public enum SFTRecord: Sendable, Equatable {
    case conversation([ChatTemplate.Message])
    case text(String)

    /// Reads a record; the error says which key is missing or of the wrong type.
    public init(_ object: [String: Any], keys: DataKeys = DataKeys()) throws {
        if let key = keys.messagesKey(in: object) {
            self = .conversation(try DataRecords.messages(object[key]!, key: key))
            return
        }
        if let value = object[keys.prompt] {
            let prompt = try DataRecords.turns(value, key: keys.prompt, role: .user)
            guard let answerKey = keys.completionKeys.first(where: { object[$0] != nil }), let answer = object[answerKey] else {
                throw LlamaError.invalidInput("missing \(keys.completionKeysDescription) beside \"\(keys.prompt)\"")
            }
            let completion = try DataRecords.turns(answer, key: answerKey, role: .assistant)
            guard completion.contains(where: { $0.role == .assistant && !$0.content.allSatisfy(\.isWhitespace) }) else {
                throw LlamaError.invalidInput("empty \(answerKey)")
            }
            self = .conversation(prompt + completion)
            return
        }
        if let value = object["text"] {
            guard let text = value as? String else { throw LlamaError.invalidInput("\"text\" must be a string, got \(TrainingData.jsonKind(value))") }
            guard !text.allSatisfy(\.isWhitespace) else { throw LlamaError.invalidInput("empty \"text\"") }
            self = .text(text)
            return
        }
        let answers = keys.completionKeys.map { "\"\($0)\"" }.joined(separator: " or ")
        throw LlamaError.invalidInput("expected \"\(keys.messages)\", \"\(keys.prompt)\" with \(answers), or \"text\"\(DataRecords.keysNote(object))")
    }
}

/// One preference record as TRL and OpenRLHF write them: `{"prompt", "chosen", "rejected"}` with
/// strings or message lists, or TRL's implicit-prompt `{"chosen", "rejected"}` conversations (the
/// prompt is what both share before their last answer); an optional numeric `margin`, LLaMA2's
/// `preference` level (its margin comes from the table) and a `safety` flag.
public struct PreferenceRecord: Sendable, Equatable {
    /// The conversation before the answers (it ends with a user turn).
    public var prompt: [ChatTemplate.Message]
    public var chosen: String
    public var rejected: String
    /// An explicit margin (it overrides the level's).
    public var margin: Float?
    public var level: PreferenceLevel?
    public var safety: Bool

    /// Reads a record; the error says which key is missing or of the wrong type.
    public init(_ object: [String: Any], keys: DataKeys = DataKeys()) throws {
        guard let chosenValue = object[keys.chosen] else { throw LlamaError.invalidInput("missing \"\(keys.chosen)\"\(DataRecords.keysNote(object))") }
        guard let rejectedValue = object[keys.rejected] else { throw LlamaError.invalidInput("missing \"\(keys.rejected)\"\(DataRecords.keysNote(object))") }
        if let promptValue = object[keys.prompt] {
            prompt = try DataRecords.turns(promptValue, key: keys.prompt, role: .user)
            chosen = try DataRecords.answer(chosenValue, key: keys.chosen, after: prompt)
            rejected = try DataRecords.answer(rejectedValue, key: keys.rejected, after: prompt)
        } else {
            // TRL's implicit prompt: two conversations that differ only in their last answer.
            guard let c = chosenValue as? [Any], let r = rejectedValue as? [Any] else {
                throw LlamaError.invalidInput("missing \"\(keys.prompt)\" (without it, \"\(keys.chosen)\" and \"\(keys.rejected)\" must be conversations)")
            }
            let chosenTurns = try DataRecords.messages(c, key: keys.chosen), rejectedTurns = try DataRecords.messages(r, key: keys.rejected)
            guard let lastChosen = chosenTurns.last, lastChosen.role == .assistant,
                  let lastRejected = rejectedTurns.last, lastRejected.role == .assistant else {
                throw LlamaError.invalidInput("\"\(keys.chosen)\" and \"\(keys.rejected)\" must each end with the assistant's answer")
            }
            guard chosenTurns.dropLast() == rejectedTurns.dropLast() else {
                throw LlamaError.invalidInput("\"\(keys.chosen)\" and \"\(keys.rejected)\" differ before their last answer (give the prompt as \"\(keys.prompt)\")")
            }
            prompt = Array(chosenTurns.dropLast())
            chosen = lastChosen.content
            rejected = lastRejected.content
        }
        guard prompt.last?.role == .user else { throw LlamaError.invalidInput("the prompt must end with a user message") }
        guard !chosen.allSatisfy(\.isWhitespace) else { throw LlamaError.invalidInput("empty \"\(keys.chosen)\"") }
        guard !rejected.allSatisfy(\.isWhitespace) else { throw LlamaError.invalidInput("empty \"\(keys.rejected)\"") }
        if let value = object["margin"], !(value is NSNull) {
            guard TrainingData.jsonKind(value) == "a number", let number = value as? Double, number.isFinite else {
                throw LlamaError.invalidInput("\"margin\" must be a number, got \(TrainingData.jsonKind(value))")
            }
            margin = Float(number)
        }
        if let value = object["preference"], !(value is NSNull) {
            guard let name = value as? String, let level = PreferenceLevel(rawValue: name) else {
                throw LlamaError.invalidInput("\"preference\" must be one of \(PreferenceLevel.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            self.level = level
        }
        if let flag = object["safety"], !(flag is NSNull) {
            guard TrainingData.jsonKind(flag) == "a boolean" else {
                throw LlamaError.invalidInput("\"safety\" must be true or false, got \(TrainingData.jsonKind(flag))")
            }
            safety = flag as? Bool ?? false
        } else {
            safety = false
        }
    }
}

/// One prompt record as TRL and OpenRLHF prompt sets hold them: `{"prompt": str}` (or a message list),
/// or `{"messages": [...]}` ending with the user's turn; any other fields (labels, ground truth) are
/// kept for reward functions, and a boolean `safety` marks a safety prompt (LLaMA2's gate).
public struct PromptRecord: Sendable, Equatable {
    /// The conversation to answer (it ends with a user turn).
    public var messages: [ChatTemplate.Message]
    public var safety: Bool
    /// The record's other fields, as a JSON object (sorted keys).
    public var extras: Data

    /// The text judges and reward functions see: the last user message.
    public var text: String { messages.last?.content ?? "" }

    /// Reads a record; the error says which key is missing or of the wrong type.
    public init(_ object: [String: Any], keys: DataKeys = DataKeys()) throws {
        let key: String
        if object[keys.prompt] != nil { key = keys.prompt } else if let messagesKey = keys.messagesKey(in: object) { key = messagesKey } else {
            throw LlamaError.invalidInput("expected \"\(keys.prompt)\" (a string or messages) or \"\(keys.messages)\"\(DataRecords.keysNote(object))")
        }
        messages = try DataRecords.turns(object[key]!, key: key, role: .user)
        guard let last = messages.last, last.role == .user else { throw LlamaError.invalidInput("\"\(key)\" must end with the user's turn") }
        guard !last.content.allSatisfy(\.isWhitespace) else { throw LlamaError.invalidInput("empty \"\(key)\"") }
        switch object["safety"] {
        case nil, is NSNull: safety = false
        case let flag as NSNumber where String(cString: flag.objCType) == "c": safety = flag.boolValue
        case let other?: throw LlamaError.invalidInput("\"safety\" must be true or false, got \(TrainingData.jsonKind(other))")
        }
        var rest = object
        rest[key] = nil
        rest["safety"] = nil
        extras = try JSONSerialization.data(withJSONObject: rest, options: [.sortedKeys, .withoutEscapingSlashes])
    }
}

/// Shared readers of the records' fields.
enum DataRecords {
    /// ` (the record's keys: "a", "b")`: what a record that lacks the expected keys has instead, so that
    /// the message says which `--*-key` to give.
    static func keysNote(_ object: [String: Any]) -> String {
        let names = object.keys.sorted().prefix(8).map { "\"\($0)\"" }
        guard !names.isEmpty else { return " (the record is empty)" }
        return " (the record's keys: \(names.joined(separator: ", "))\(object.count > 8 ? ", ..." : ""))"
    }

    /// ShareGPT's speaker names (`"from"`), beside the roles themselves.
    private static let shareGPTRoles: [String: ChatTemplate.Role] = ["human": .user, "gpt": .assistant]

    /// A message list, non-empty: `[{"role", "content"}, ...]` as TRL and OpenRLHF write it, or
    /// ShareGPT's `[{"from": "human"|"gpt"|"system", "value"}, ...]`.
    static func messages(_ value: Any, key: String) throws -> [ChatTemplate.Message] {
        guard let list = value as? [Any], !list.isEmpty else {
            throw LlamaError.invalidInput("\"\(key)\" must be a non-empty list of {\"role\", \"content\"}")
        }
        return try list.enumerated().map { i, item in
            guard let m = item as? [String: Any] else { throw LlamaError.invalidInput("\(key)[\(i)]: expected {\"role\", \"content\"}") }
            let shareGPT = m["role"] == nil && m["from"] != nil
            let (roleKey, contentKey) = shareGPT ? ("from", "value") : ("role", "content")
            guard let roleName = m[roleKey] as? String,
                  let role = ChatTemplate.Role(rawValue: roleName) ?? (shareGPT ? shareGPTRoles[roleName] : nil) else {
                throw LlamaError.invalidInput(shareGPT ? "\(key)[\(i)]: \"from\" must be system, human or gpt (ShareGPT's), or user or assistant"
                                                         : "\(key)[\(i)]: \"role\" must be system, user or assistant")
            }
            guard let content = m[contentKey] as? String else {
                throw LlamaError.invalidInput("\(key)[\(i)]: \"\(contentKey)\" must be a string")
            }
            return ChatTemplate.Message(role: role, content: content)
        }
    }

    /// A string (one message of `role`) or a message list.
    static func turns(_ value: Any, key: String, role: ChatTemplate.Role) throws -> [ChatTemplate.Message] {
        if let text = value as? String { return [ChatTemplate.Message(role: role, content: text)] }
        if value is [Any] { return try messages(value, key: key) }
        throw LlamaError.invalidInput("\"\(key)\" must be a string or a list of messages, got \(TrainingData.jsonKind(value))")
    }

    /// An answer: a string, or a message list whose last message is the assistant's (a list that
    /// repeats the prompt first is accepted).
    static func answer(_ value: Any, key: String, after prompt: [ChatTemplate.Message]) throws -> String {
        if let text = value as? String { return text }
        let list = try turns(value, key: key, role: .assistant)
        guard let last = list.last, last.role == .assistant else {
            throw LlamaError.invalidInput("\"\(key)\" must end with the assistant's answer")
        }
        let before = list.dropLast()
        guard before.isEmpty || Array(before) == prompt else {
            throw LlamaError.invalidInput("\"\(key)\" holds other messages than the prompt before its answer")
        }
        return last.content
    }
}

/// A data file's per-record chat template arguments: a record's `chat_template_kwargs` object (TRL's
/// column of that name; SmolTalk2 gives `{"enable_thinking": false}` per example) over the arguments
/// the tokenizer has already (a spec's `model.chat_template_kwargs`, `--chat-template-kwargs`), the
/// record's winning where both name one. Refused as those are: a name the template never reads, a name
/// the renderer passes itself, a tokenizer without a template of its own. One tokenizer per distinct
/// set of arguments is made and kept.
public struct RecordTemplates {
    /// The key looked for.
    public static let key = "chat_template_kwargs"
    public let base: Tokenizer
    private var made: [String: Tokenizer] = [:]

    public init(_ base: Tokenizer) { self.base = base }

    /// The tokenizer to render `object` with: `base`, or a copy with the record's arguments.
    public mutating func tokenizer(for object: [String: Any]) throws -> Tokenizer {
        guard let value = object[RecordTemplates.key], !(value is NSNull) else { return base }
        let own: ChatTemplateArguments
        do {
            own = try ChatTemplateArguments(mapping: value, key: RecordTemplates.key)
        } catch let invalid as ChatTemplateArguments.Invalid {
            throw LlamaError.invalidInput("\(invalid)")
        }
        guard !own.isEmpty else { return base }
        let identity = String(decoding: try JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed]), as: UTF8.self)
        if let tokenizer = made[identity] { return tokenizer }
        var tokenizer = base
        let merged = (base.chatTemplate?.arguments.values ?? [:]).merging(own.values) { _, record in record }
        do {
            try tokenizer.useChatTemplateArguments(ChatTemplateArguments(merged))
        } catch LlamaError.invalidInput(let reason), LlamaError.invalidTokenizer(_, let reason) {
            throw LlamaError.invalidInput("\(RecordTemplates.key): \(reason)")
        }
        made[identity] = tokenizer
        return tokenizer
    }
}
