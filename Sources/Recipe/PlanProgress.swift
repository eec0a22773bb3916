import Foundation

/// Where a plan stands and how long the rest should take. Each step's cost is estimated from its sizes
/// (samples generated, sequences scored, sequences trained on) in seconds of a 2-core machine; once
/// steps have finished, the estimates are rescaled by how long those steps really took, so the ETA
/// follows the machine it runs on.
public struct PlanProgress: Sendable {
    /// Estimated seconds per unit of work on the reference machine (a 2-core VM, release build, the
    /// shipped 0.9M-parameter chat model), measured on the default run.
    public struct Costs: Sendable {
        public var generatedSample = 0.0008
        public var scoredSequence = 0.001
        public var rewardTrainingSequence = 0.0043
        public var policyTrainingSequence = 0.008
        public init() {}
    }

    /// Estimated seconds of each step of the plan.
    public let estimates: [Double]
    /// Seconds each finished step took (by plan index).
    public private(set) var taken: [Int: Double] = [:]

    /// Estimates for `plan`, whose evaluations answer `evalAnswers` prompts in all (prompts × samples).
    public init(plan: [ClusterSpec.Step], task: ClusterSpec.Task?, costs: Costs = Costs()) {
        let evalPrompts = Double(task?.evalPrompts ?? 499)
        let evalAnswers = evalPrompts * Double(task?.evalSamples ?? 1)
        let preferencePairs = Double(task?.preferencePairs ?? 8_000)
        // An evaluation: the answers, then the reference's log-probabilities of them.
        let evaluation = evalAnswers * (costs.generatedSample + costs.scoredSequence)
        var roundsSoFar = 0
        estimates = plan.map { step in
            let estimate = PlanProgress.estimate(step, costs: costs, evaluation: evaluation, preferencePairs: preferencePairs, roundsSoFar: &roundsSoFar)
            // A round with a wall-clock budget takes at most the budget and its evaluation.
            return step.budgetSeconds.map { min(estimate, $0 + evaluation) } ?? estimate
        }
    }

    /// The estimated seconds of one step (`roundsSoFar` counts the rejection-sampling rounds).
    static func estimate(_ step: ClusterSpec.Step, costs: Costs, evaluation: Double, preferencePairs: Double, roundsSoFar: inout Int) -> Double {
        switch step {
        case let .generate(prompts, samples, _, _):
            return Double(prompts * samples) * costs.generatedSample
        case let .round(prompts, samples, _, _, _):
            return Double(prompts * samples) * (costs.generatedSample + 3 * costs.scoredSequence) + Double(prompts) * costs.policyTrainingSequence
        case .hold(let seconds):
            return seconds
        case .evaluate:
            return evaluation
        case let .supervisedFineTuning(settings):
            // The embedded task has 6,000 demonstrations; a user's file is counted when the step runs.
            return Double(settings.examples ?? 6_000) * settings.epochs * costs.policyTrainingSequence
        case let .trainRewardModel(settings):
            // The reward model learns from the helpfulness pairs, the safety model from about half as many.
            let pairs = Double(settings.pairs ?? Int(preferencePairs * (settings.model == .rewardModel ? 0.69 : 0.4)))
            return 2 * pairs * settings.epochs * costs.rewardTrainingSequence + 0.2 * pairs * costs.scoredSequence
        case let .rejectionSampling(settings):
            roundsSoFar += 1
            let samples = Double(settings.prompts * settings.samples)
            var seconds = samples * (costs.generatedSample + 2 * costs.scoredSequence) + evaluation
            if settings.newPairs > 0 {
                // Scored again after the reward models are retrained on the new pairs and as many old ones.
                seconds += 2 * samples * costs.scoredSequence + 4 * Double(settings.newPairs) * costs.rewardTrainingSequence
            }
            let trained = Double(settings.prompts * (settings.fromSFT ? roundsSoFar : 1) * settings.epochs)
            return seconds + trained * costs.policyTrainingSequence
        case let .policyRound(settings):
            // Per answer: sampled, scored twice, the reference's log-probabilities, and a learner step's share.
            let answers = Double(settings.iterations * settings.prompts * settings.group)
            return answers * (costs.generatedSample + 3 * costs.scoredSequence + Double(settings.epochs) * costs.policyTrainingSequence) + evaluation
        case let .dpoRound(settings):
            // Per pair: two reference passes and two sequences of a training step each epoch; on-policy, the answers too.
            let pairs = settings.pairs == .data ? Double(settings.maxPairs ?? Int(preferencePairs * 0.9)) : Double(settings.iterations * settings.prompts)
            let sampling = settings.pairs == .data ? 0
                : Double(settings.iterations * settings.prompts * settings.samples) * (costs.generatedSample + 2 * costs.scoredSequence)
            return pairs * (2 * costs.scoredSequence + 2 * Double(settings.epochs) * costs.policyTrainingSequence) + sampling + evaluation
        case let .ppo(settings):
            // Per rollout: sampled, scored twice, the reference's log-probabilities, and on the learner
            // old log-probabilities and values (about half an SFT sequence's worth: short answers, no
            // backward pass), then per epoch a policy and a value step (about one; measured on the
            // default run). Each reward-model refresh: two answers per prompt, scored, and a retraining
            // on the new pairs and as many old ones.
            let rollouts = Double(settings.iterations * settings.rollouts)
            let learner = (0.5 + Double(settings.epochs)) * costs.policyTrainingSequence
            let refresh = Double(settings.newPairs) * (2 * costs.generatedSample + 2 * costs.scoredSequence + 4 * costs.rewardTrainingSequence)
            return rollouts * (costs.generatedSample + 3 * costs.scoredSequence + learner) + evaluation
                + Double(settings.refreshIterations.count) * refresh
        }
    }

    /// Records that step `index` finished after `seconds`.
    public mutating func finished(_ index: Int, seconds: Double) { taken[index] = seconds }

    /// Estimated seconds of evidence the prior (this machine runs as estimated) is worth: a short
    /// first step (with the start-up's one-time costs) must not rescale a long plan on its own.
    public static let priorSeconds = 60.0

    /// How much slower (above 1) or faster this machine runs than the estimates: the finished steps'
    /// real seconds over their estimated seconds, both with `priorSeconds` of a 1:1 prior added (1
    /// before any step has finished).
    public var scale: Double {
        let estimated = taken.keys.reduce(0.0) { $0 + estimates[$1] }
        let real = taken.values.reduce(0, +)
        return (real + PlanProgress.priorSeconds) / (estimated + PlanProgress.priorSeconds)
    }

    /// Seconds left: the unfinished steps after `current` at their rescaled estimates, plus what is
    /// left of `current` after `elapsedInCurrent` seconds of it (never below zero).
    public func remaining(current: Int, elapsedInCurrent: Double) -> Double {
        let s = scale
        var seconds = max(0, estimates[current] * s - elapsedInCurrent)
        for i in (current + 1)..<estimates.count where taken[i] == nil { seconds += estimates[i] * s }
        return seconds
    }

    /// `seconds` as "1h02m", "4m05s" or "12s".
    public static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        if s >= 3600 { return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60) }
        if s >= 60 { return String(format: "%dm%02ds", s / 60, s % 60) }
        return "\(s)s"
    }
}
