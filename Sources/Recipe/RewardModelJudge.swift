import Foundation
import LlamaCore
import LlamaTraining
import Wire
import Workers

/// A held-out reward model as the judge (`judge: {source: reward-model, checkpoint: ...}`): a model the
/// plan never trains (one `rlhf train rm` made on other pairs, or a Hugging Face reward model such as a
/// `Qwen2ForSequenceClassification`), so the policy cannot learn to please the very model that grades it. It scores in the coordinator's process: each answer's helpfulness is
/// `sigmoid(score)` of the helpfulness model (its scores are logits, as the plan's reward models' are);
/// with a safety model too, an answer is unsafe where `sigmoid(safety score) < unsafeBelow` (LLaMA2's
/// safety gate's 0.15 by default). Ties, levels and the helpful threshold are the judge settings'.
public struct RewardModelJudge: JudgementSource {
    /// The spec's reward-model judge: the models' files and the unsafe threshold.
    public struct Models: Sendable, Equatable {
        /// The helpfulness model's trunk (a checkpoint file or Hugging Face directory) and score head
        /// (JSON); no head: a Hugging Face reward model's own (`LocalRewardModel`).
        public var checkpoint: String
        public var head: String?
        /// An optional safety model's trunk and head.
        public var safetyCheckpoint: String?
        public var safetyHead: String?
        /// A safety probability below this makes an answer unsafe.
        public var unsafeBelow = 0.15

        public init(checkpoint: String, head: String?) {
            self.checkpoint = checkpoint
            self.head = head
        }
    }

    let helpfulnessModel: LocalRewardModel
    let safetyModel: LocalRewardModel?
    let tokenizer: Tokenizer
    public let models: Models
    public let settings: CommandJudge.Settings

    /// Loads the models of `models`; their text is tokenized with `tokenizer` (checked against both models).
    public init(models: Models, tokenizer: Tokenizer, settings: CommandJudge.Settings = CommandJudge.Settings(), threads: Int = 1) throws {
        func load(_ kind: ModelKind, _ checkpoint: String, _ head: String?) throws -> LocalRewardModel {
            let model = try LocalRewardModel(kind: kind, checkpoint: checkpoint, head: head, threads: threads)
            if let config = model.service.modelConfig {
                try tokenizer.check(against: config, path: "the tokenizer for the judge \(checkpoint)")
            }
            return model
        }
        helpfulnessModel = try load(.rewardModel, models.checkpoint, models.head)
        if let checkpoint = models.safetyCheckpoint {
            safetyModel = try load(.safetyModel, checkpoint, models.safetyHead)
        } else {
            safetyModel = nil
        }
        self.tokenizer = tokenizer
        self.models = models
        self.settings = settings
    }

    public var tieGap: Double { settings.tieGap }

    public func level(gap: Double) -> PreferenceLevel { settings.levels.level(gap: gap) }

    public func judge(_ items: [JudgeItem]) throws -> [Judgement?] {
        func probabilities(_ model: LocalRewardModel) throws -> [Double] {
            let sequences = try items.map {
                try model.sequence(prompt: $0.messages, response: $0.response, tokenizer: tokenizer)
            }
            do {
                return try model.scores(sequences).map { 1 / (1 + exp(-Double($0))) }
            } catch LlamaError.invalidInput(let reason) {
                throw LlamaError.invalidInput("the reward-model judge: \(reason)")
            }
        }
        let helpfulness = try probabilities(helpfulnessModel)
        let safety = try safetyModel.map(probabilities)
        return helpfulness.enumerated().map { i, h in
            Judgement(helpfulness: h, unsafe: safety.map { $0[i] < models.unsafeBelow } ?? false, helpful: h >= settings.helpfulAbove)
        }
    }
}
