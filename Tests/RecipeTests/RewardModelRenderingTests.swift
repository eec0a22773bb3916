import LlamaCore
import Recipe
import Testing
import TestKit

/// A reward model of another tokenizer than the policy's reads each answer as transformers' `apply_chat_template`
/// renders the whole conversation in its template (the ids of `hf-reward/reward.reference.json`), split where the
/// prompt's own rendering with the generation prompt ends.
@Suite struct RewardModelRenderingTests {
    @Test(arguments: ["llama-rm", "qwen2-rm"])
    func answersRenderAsTransformersRendersTheConversation(name: String) throws {
        let directory = Fixtures.rewardModel(name)
        let rendering = try RewardModelRendering(tokenizer: try Tokenizer(path: directory))
        for (i, item) in try LocalRewardModelTests.cases(name).enumerated() {
            let answer = try #require(item.messages.last)
            #expect(answer.role == .assistant)
            let prompt = Array(item.messages.dropLast())
            let sequence = try rendering.sequence(id: UInt64(i), prompt: prompt, response: answer.content)
            #expect(sequence.id == UInt64(i))
            #expect(sequence.prompt + sequence.response == item.ids)
            let promptIDs = try ChatTemplate.promptIDs(conversation: prompt, tokenizer: rendering.tokenizer)
            #expect(!sequence.response.isEmpty && promptIDs.starts(with: sequence.prompt), "\(sequence.prompt) vs \(promptIDs)")
        }
    }

    /// A prompt that does not end with a user turn is refused, as every prompt rendering refuses it.
    @Test func aPromptEndingWithAnAnswerIsRefused() throws {
        let rendering = try RewardModelRendering(tokenizer: try Tokenizer(path: Fixtures.rewardModel("llama-rm")))
        #expect(throws: LlamaError.self) {
            try rendering.sequence(id: 0, prompt: [ChatTemplate.Message(role: .assistant, content: "Hi.")], response: "Hello.")
        }
    }
}
