/// LLaMA2-Chat's prompt format: each user turn wrapped as `[INST] ... [/INST]`, an optional system prompt
/// inside the first one as `<<SYS>>\n...\n<</SYS>>\n\n`, each exchange between BOS and EOS:
/// `<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s><s>[INST] {user} [/INST]`.
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

    /// The text of one user turn as the model sees it (without BOS), with the system prompt when given.
    public static func instruction(_ user: String, system: String? = nil) -> String {
        let body = system.map { "<<SYS>>\n\($0)\n<</SYS>>\n\n\(user)" } ?? user
        return "[INST] \(body.trimmingCharacters(in: .whitespaces)) [/INST]"
    }

    /// Token ids of a prompt that asks the model for the next answer: BOS and the user turn.
    public static func promptIDs(_ user: String, system: String? = nil, tokenizer: Tokenizer) -> [Int32] {
        [tokenizer.bosId] + tokenizer.encode(instruction(user, system: system))
    }

    /// Token ids of a conversation for training, and for each id whether it belongs to an answer (the
    /// assistant's words and the EOS that ends them: what the loss is computed on). Messages: an
    /// optional system message first, then user and assistant turns alternating, starting with a user.
    public static func encode(_ messages: [Message], tokenizer: Tokenizer) throws -> (ids: [Int32], isAnswer: [Bool]) {
        var turns = messages[...]
        var system: String?
        if let first = turns.first, first.role == .system {
            system = first.content
            turns = turns.dropFirst()
        }
        guard !turns.isEmpty else { throw LlamaError.invalidInput("a conversation needs at least one user message") }
        var ids: [Int32] = [], isAnswer: [Bool] = []
        var index = turns.startIndex
        var firstTurn = true
        while index < turns.endIndex {
            let user = turns[index]
            guard user.role == .user else {
                throw LlamaError.invalidInput("message \(index + 1) is from the \(user.role.rawValue); expected the user (turns alternate user, assistant)")
            }
            let prompt = [tokenizer.bosId] + tokenizer.encode(instruction(user.content, system: firstTurn ? system : nil))
            ids += prompt
            isAnswer += Array(repeating: false, count: prompt.count)
            firstTurn = false
            index += 1
            guard index < turns.endIndex else { break }
            let answer = turns[index]
            guard answer.role == .assistant else {
                throw LlamaError.invalidInput("message \(index + 1) is from the \(answer.role.rawValue); expected the assistant (turns alternate user, assistant)")
            }
            let text = answer.content.trimmingCharacters(in: .whitespaces)
            guard !text.isEmpty else { throw LlamaError.invalidInput("message \(index + 1): the assistant's answer is empty") }
            let response = tokenizer.encode(text) + [tokenizer.eosId]
            ids += response
            isAnswer += Array(repeating: true, count: response.count)
            index += 1
        }
        return (ids, isAnswer)
    }
}

import Foundation
