import ArgumentParser
import Foundation
import LlamaCore
import LlamaTraining

/// `rlhf chat`: conversations in a model's chat format.
struct ChatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chat",
        abstract: "Conversations in a model's chat format.",
        subcommands: [Render.self]
    )

    /// A JSON list of `{"role", "content"}` objects as messages, naming the first that is not one.
    static func messages(_ list: [Any]) throws -> [ChatTemplate.Message] {
        try list.enumerated().map { index, item -> ChatTemplate.Message in
            guard let m = item as? [String: Any], let roleName = m["role"] as? String, let content = m["content"] as? String else {
                throw LlamaError.invalidInput("message \(index + 1): expected {\"role\": ..., \"content\": string}")
            }
            guard let role = ChatTemplate.Role(rawValue: roleName) else {
                throw LlamaError.invalidInput("message \(index + 1): role \"\(roleName)\" is not one of system, user, assistant")
            }
            return ChatTemplate.Message(role: role, content: content)
        }
    }

    /// `rlhf chat render`: the text a model's chat template makes of conversations.
    struct Render: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Read {\"messages\": [...], \"add_generation_prompt\": bool, \"chat_template_kwargs\": {...}} JSON lines on stdin (the last two optional), write {\"text\": ...} per line: the conversation as the model's chat template renders it.")

        @Option(help: "Hugging Face model directory (its chat template and special tokens), or a tokenizer file.")
        var model: String
        @Option(name: .customLong("chat-template"), help: "Chat format instead of the model's own template: \(ChatFormat.supportedNames).")
        var chatTemplate: ChatFormat?
        @Option(name: .customLong("chat-template-kwargs"), help: "A JSON object of what the model's own chat template reads beside the conversation, as transformers' apply_chat_template takes them, e.g. '{\"enable_thinking\": false}' for Qwen3 and SmolLM3.")
        var chatTemplateKwargs: String?

        func validate() throws {
            _ = try OptionCheck.chatTemplateArguments(chatTemplateKwargs)
        }

        func run() throws {
            let tokenizer: Tokenizer
            do {
                var loaded = try Tokenizer(path: model)
                if let chatTemplate { loaded.chatFormat = chatTemplate } else { try loaded.requireChatFormat() }
                try loaded.useChatTemplateArguments(try OptionCheck.chatTemplateArguments(chatTemplateKwargs))
                tokenizer = loaded
            } catch {
                throw cliFailure(error)
            }
            var templates = RecordTemplates(tokenizer)
            try forEachStandardInputJSONLine(failedWhat: "failed") { object in
                guard let list = object["messages"] as? [Any] else {
                    throw LlamaError.invalidInput("expected a JSON object with a list \"messages\"")
                }
                let messages = try ChatCommand.messages(list)
                let generationPrompt = object["add_generation_prompt"] as? Bool ?? false
                // A line's own chat_template_kwargs, over --chat-template-kwargs.
                print(jsonLine(["text": try templates.tokenizer(for: object).renderChat(messages, addGenerationPrompt: generationPrompt)]))
            }
        }
    }
}
