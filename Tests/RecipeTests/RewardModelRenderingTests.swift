import LlamaCore
@testable import Recipe
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

    /// How the launch plans each pretrained reward model: of the policy's tokenizer, it scores the policy's ids
    /// (told where its own template renders otherwise); of another, it scores re-rendered answers, and a plan
    /// that trains it is refused naming the step.
    @Test func theLaunchPlansEachRewardModelByItsTokenizer() throws {
        let rm = Fixtures.rewardModel("llama-rm")
        func planned(_ policy: String, _ extra: String = "", plan: String = "- rs_round: {name: V1}") throws -> ClusterLaunch.PlanTokenizers {
            let spec = try ClusterSpec.parse("""
                coordinator: tcp://127.0.0.1:5555
                hosts:
                  - name: a
                    workers: {generator: 1, reward-model: 1, safety-model: 1, learner: 1, reference-policy: 1}
                model: {checkpoint: \(policy), reward_model: \(rm)\(extra)}
                task: {seed: 1}
                plan:
                  \(plan)
                """, baseDirectory: TestKit.repository)
            return try ClusterLaunch.planTokenizers(spec, config: try Checkpoint.readConfig(path: spec.checkpoint))
        }
        let same = try planned(Fixtures.huggingFace("hf-bytebpe-gqa"))
        #expect(same.rewardModelRenderings.isEmpty && same.notes.isEmpty)
        let otherTemplate = try planned(Fixtures.huggingFace("hf-bytebpe-gqa"), ", chat_template: llama2")
        #expect(otherTemplate.rewardModelRenderings.isEmpty && otherTemplate.notes.count == 1
                && otherTemplate.notes[0].contains("renders conversations otherwise than its own"), "\(otherTemplate.notes)")
        let shipped = TestKit.repository + "/models/chat-world/sft.bin"
        let other = try planned(shipped)
        #expect(other.rewardModelRenderings.keys.sorted { $0.rawValue < $1.rawValue } == [.rewardModel])
        #expect(other.notes.count == 1 && other.notes[0].contains("tokenizes otherwise than the policy"), "\(other.notes)")
        #expect { try planned(shipped, plan: "- rs_round: {name: V1}\n  - train_rm: {model: reward-model}") } throws: {
            "\($0)".contains("model.reward_model") && "\($0)".contains("plan step 2 trains it")
        }
        // A prompt whose rendering fills the reward model's context (256 tokens) is refused before the round samples it.
        #expect(other.rewardModelRenderings[.rewardModel]?.contextLength == 256)
        let short = PlanPrompt(id: 0, text: "Tell me about the fox.", ids: [1], isSafety: false)
        let long = PlanPrompt(id: 1, text: String(repeating: "Tell me about the fox. ", count: 60), ids: [1], isSafety: false)
        try ClusterLaunch.checkRewardModelRoom(other, prompts: [short])
        try ClusterLaunch.checkRewardModelRoom(same, prompts: [short, long])
        #expect { try ClusterLaunch.checkRewardModelRoom(other, prompts: [short, long]) } throws: {
            "\($0)".contains("model.reward_model") && "\($0)".contains("the prompt \"Tell me about the fox. Tell me")
                && "\($0)".contains("the reward model's context is 256: no room for an answer")
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
