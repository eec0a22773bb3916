import Foundation
import LlamaCore
import Recipe
import LlamaTraining
import Testing
import TestKit
import Workers

/// Hugging Face reward models (`*ForSequenceClassification`, one label) score as transformers scores them:
/// the chat template's whole rendering of a conversation, pooled at the last token that is not
/// `pad_token_id`, through the model's own `score` head (float64 references, `hf-reward/generate.py`).
@Suite struct LocalRewardModelTests {
    static func cases(_ name: String) throws -> [(messages: [ChatTemplate.Message], ids: [Int32], score: Double)] {
        let reference = try Fixtures.rewardModelReference()
        return (reference[name] as! [[String: Any]]).map { item in
            let messages = (item["messages"] as! [[String: String]]).map {
                ChatTemplate.Message(role: ChatTemplate.Role(rawValue: $0["role"]!)!, content: $0["content"]!)
            }
            return (messages, (item["ids"] as! [Int]).map(Int32.init), item["score"] as! Double)
        }
    }

    @Test(arguments: ["llama-rm", "qwen2-rm"])
    func scoresAreTransformers(name: String) throws {
        let directory = Fixtures.rewardModel(name)
        #expect(HuggingFaceCheckpoint.isRewardModel(directory))
        let model = try LocalRewardModel(kind: .rewardModel, checkpoint: directory, head: nil)
        #expect(model.isPretrained)
        let tokenizer = try Tokenizer(path: directory)
        var sequences: [[Int32]] = []
        for item in try Self.cases(name) {
            // The ids transformers feeds (the Qwen2 model's pad id, the newline, ends each: not scored at).
            let sequence = try model.sequence(conversation: item.messages, tokenizer: tokenizer)
            #expect(sequence == item.ids)
            sequences.append(sequence)
        }
        let scores = try model.scores(sequences)
        for (score, item) in zip(scores, try Self.cases(name)) {
            #expect(abs(Double(score) - item.score) < 2e-5 * max(1, abs(item.score)), "\(score) vs \(item.score)")
        }
        // What a reward-model worker loads from the same directory (its --seed unused) scores alike.
        let worker = try RewardModelService.load(kind: .safetyModel, checkpoint: directory, head: nil, seed: 5)
        #expect(try worker.scores(sequences) == scores)
        #expect(worker.padTokenId == (name == "qwen2-rm" ? 201 : nil))
        // A prompt and its response score as the conversation of the two.
        let first = try Self.cases(name)[0]
        #expect(try model.sequence(prompt: [first.messages[0]], response: first.messages[1].content, tokenizer: tokenizer) == sequences[0])
    }

    /// A worker given the policy's trunk and no head draws one from its seed, as before; a causal LM with
    /// neither a head nor a seed is refused.
    @Test func aWorkerWithoutAHeadDrawsOneFromItsSeed() throws {
        let policy = Fixtures.huggingFace("hf-bytebpe-gqa")
        let worker = try RewardModelService.load(kind: .rewardModel, checkpoint: policy, head: nil, seed: 3)
        #expect(worker.head == ScalarHead(dim: worker.modelConfig!.dim, seed: 3) && worker.padTokenId == nil)
        #expect { try RewardModelService.load(kind: .rewardModel, checkpoint: policy, head: nil) } throws: { "\($0)".contains("not a reward model") }
    }

    /// The judge takes a Hugging Face reward model without a head file: helpfulness is sigmoid of its score.
    @Test func aPretrainedRewardModelJudges() throws {
        let directory = Fixtures.rewardModel("llama-rm")
        var models = RewardModelJudge.Models(checkpoint: directory, head: nil)
        models.safetyCheckpoint = Fixtures.rewardModel("qwen2-rm")
        models.unsafeBelow = 0.85
        let judge = try RewardModelJudge(models: models, tokenizer: try Tokenizer(path: directory))
        let items = try Self.cases("llama-rm").prefix(2).map { ($0.messages[0].content, $0.messages[1].content) }
        let judgements = try judge.judge(items.map { JudgeItem(prompt: $0.0, response: $0.1) })
        let helpfulness = try Self.cases("llama-rm").prefix(2).map { 1 / (1 + exp(-$0.score)) }
        let safety = try Self.cases("qwen2-rm").prefix(2).map { 1 / (1 + exp(-$0.score)) }
        for (k, judgement) in judgements.enumerated() {
            #expect(abs(judgement!.helpfulness - helpfulness[k]) < 1e-5)
            #expect(judgement!.unsafe == (safety[k] < 0.85))
        }
        #expect(judgements.map { $0!.unsafe } == [false, true])
        // A prompt of several turns (a system message, an earlier exchange) is judged with all of them.
        let long = try Self.cases("llama-rm").filter { $0.messages.count > 2 }
        #expect(long.count == 2)
        let whole = try judge.judge(long.map { JudgeItem(prompt: $0.messages.dropLast().last!.content, response: $0.messages.last!.content,
                                                         messages: Array($0.messages.dropLast())) })
        for (judgement, item) in zip(whole, long) {
            #expect(abs(judgement!.helpfulness - 1 / (1 + exp(-item.score))) < 1e-5)
        }
        // An empty answer (a policy may end its turn at once) is judged like any other, as transformers scores it.
        let empty = try judge.judge([JudgeItem(prompt: "Hi!", response: "")])
        #expect(empty.count == 1 && empty[0] != nil)
    }
}
