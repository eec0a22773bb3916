/// What the plan is doing, as the status shows it: a phase, the round or step it belongs to, and what it
/// works on. Shown as e.g. "V1: train", "V1: retrain reward-model", "train safety-model", "SFT: evaluate".
public struct PlanStage: Sendable, Equatable, CustomStringConvertible {
    /// The kinds of work a plan step goes through.
    public enum Phase: String, Sendable, CaseIterable {
        case idle, generate, sample, score, reference, train, retrain, sync, evaluate
        case ppo = "PPO"
        case samplePairs = "sample pairs"
        case hold, done
    }

    public var phase: Phase
    /// The round or step ("V1", "round", "V3 @12"); empty for none.
    public var round: String
    /// What the phase works on (a model, e.g. "reward-model"); empty for none.
    public var subject: String

    public init(_ phase: Phase, round: String = "", subject: String = "") {
        self.phase = phase
        self.round = round
        self.subject = subject
    }

    /// Before the plan starts.
    public static let idle = PlanStage(.idle)

    public var description: String {
        (round.isEmpty ? "" : round + ": ") + phase.rawValue + (subject.isEmpty ? "" : " " + subject)
    }
}
