import LlamaCore
import LlamaTraining
import Wire

/// The safety-model role: the same scorer as the helpfulness `RewardModel` (a trunk and a scalar
/// head at the last token), trained on the safety preference pairs and answering as SAFETY_MODEL,
/// so the coordinator can tell the two scores apart when it shapes the PPO reward.
public enum SafetyModel {
    /// A safety model of `weights` and `head` on `threads` threads.
    public static func make(weights: ModelWeights, head: ScalarHead, threads: Int = 1, modelVersion: UInt64 = 0) throws -> RewardModel {
        try RewardModel(kind: .safetyModel, weights: weights, head: head, threads: threads, modelVersion: modelVersion)
    }
}
