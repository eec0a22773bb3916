import ArgumentParser
import Foundation
import LlamaCore
import LlamaTraining
import Recipe

/// `rlhf score`: a reward model's scores of conversations read as JSON lines.
struct ScoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "score",
        abstract: "Score conversations with a reward model: a Hugging Face reward model (ForSequenceClassification) or a trunk with its JSON head.",
        discussion: """
        Reads JSON lines on stdin, each {"messages": [...]} (a conversation ending with the answer scored) or \
        {"prompt": ..., "response": ...}, and writes {"score": x} (the head's logit) for each, in order; a line \
        that cannot be scored gives {"error": ...} in its place, and the exit status says so.
        """
    )

    @Option(help: "The reward model: a Hugging Face directory (a ForSequenceClassification's own head), or a checkpoint with --head.")
    var model: String
    @Option(help: "A score head in JSON ({\"weight\": [...], \"bias\": b}, as rlhf train rm writes OUT.head.json); default: the Hugging Face model's own, else MODEL.head.json.")
    var head: String?
    @Option(help: "Tokenizer (default: the model directory's own, else tokenizer.bin beside the checkpoint).")
    var tokenizer: String?
    @Option(name: .customLong("chat-template-kwargs"), help: "A JSON object of what the model's own chat template reads beside the conversation, e.g. '{\"enable_thinking\": false}'.")
    var chatTemplateKwargs: String?
    @Option(help: "Compute threads.")
    var threads: Int = 1

    func validate() throws {
        try OptionCheck.threads(threads)
        _ = try OptionCheck.chatTemplateArguments(chatTemplateKwargs)
    }

    func run() throws {
        let rewardModel: LocalRewardModel
        let tok: Tokenizer
        do {
            let headPath = head ?? (HuggingFaceCheckpoint.isRewardModel(model) ? nil : model + ".head.json")
            rewardModel = try LocalRewardModel(kind: .rewardModel, checkpoint: model, head: headPath, threads: threads)
            let path = tokenizer ?? Tokenizer.defaultPath(forCheckpoint: model)
            var loaded = try Tokenizer(path: path)
            if let config = rewardModel.service.modelConfig { try loaded.check(against: config, path: path) }
            try loaded.requireChatFormat()
            try loaded.useChatTemplateArguments(try OptionCheck.chatTemplateArguments(chatTemplateKwargs))
            tok = loaded
        } catch {
            throw cliFailure(error)
        }
        var templates = RecordTemplates(tok)
        try forEachStandardInputJSONLine(failedWhat: "could not be scored", failed: { print(jsonLine(["error": "\($0)"])) }) { object in
            // A line's own chat_template_kwargs, over --chat-template-kwargs.
            let tok = try templates.tokenizer(for: object)
            let sequence: [Int32]
            if let list = object["messages"] as? [Any] {
                let messages = try ChatCommand.messages(list)
                guard messages.last?.role == .assistant else { throw LlamaError.invalidInput("the conversation must end with the assistant's answer") }
                sequence = try rewardModel.sequence(conversation: messages, tokenizer: tok)
            } else if let prompt = object["prompt"] as? String, let response = (object["response"] ?? object["completion"]) as? String {
                sequence = try rewardModel.sequence(prompt: [ChatTemplate.Message(role: .user, content: prompt)], response: response, tokenizer: tok)
            } else {
                throw LlamaError.invalidInput("expected {\"messages\": [...]} or {\"prompt\": string, \"response\": string}")
            }
            print(jsonLine(["score": Double(try rewardModel.scores([sequence])[0])]))
        }
    }
}
