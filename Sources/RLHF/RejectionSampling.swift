/// One sample considered by rejection sampling: which prompt, which sample of which round, its tokens and
/// its combined reward.
public struct Candidate: Sendable, Equatable, Codable {
    public var promptID: UInt64
    /// The sample's index among its prompt's K samples of its round.
    public var sampleID: Int
    /// The round (1-based) the sample was drawn in.
    public var round: Int
    /// The response's token ids.
    public var responseIDs: [Int32]
    /// The combined reward (`SafetyGate.combine`).
    public var reward: Double

    public init(promptID: UInt64, sampleID: Int, round: Int, responseIDs: [Int32], reward: Double) {
        self.promptID = promptID
        self.sampleID = sampleID
        self.round = round
        self.responseIDs = responseIDs
        self.reward = reward
    }

    /// Whether `self` beats `other` for the same prompt: the higher reward; on equal rewards the earlier
    /// round, then the lower sample id (deterministic).
    public func beats(_ other: Candidate) -> Bool {
        if reward != other.reward { return reward > other.reward }
        if round != other.round { return round < other.round }
        return sampleID < other.sampleID
    }
}

/// Best-of-K selection across rounds. LLaMA2 (section 3.2.3): each round keeps the best of K samples
/// per prompt by reward; from RLHF-V4 on, the best is chosen among the samples of all earlier rounds
/// too, which stopped a regression in some capabilities. The pool keeps, per prompt, the best sample
/// of every round so far (scored when drawn).
public struct RejectionSampler: Sendable, Codable, Equatable {
    /// The first round (1-based) whose selection also considers earlier rounds' samples (LLaMA2: 4).
    public var poolFromRound: Int
    /// The best sample of each earlier round, per prompt.
    public private(set) var history: [UInt64: [Candidate]] = [:]

    /// A sampler that pools earlier rounds from round `poolFromRound` on (`Int.max`: never).
    public init(poolFromRound: Int = 4) { self.poolFromRound = poolFromRound }

    /// The kept sample of each prompt of `round` among `candidates` (this round's samples, any order),
    /// in the order prompts first appear; records this round's best in the history.
    public mutating func select(round: Int, candidates: [Candidate]) -> [Candidate] {
        var best: [UInt64: Candidate] = [:], order: [UInt64] = []
        for c in candidates {
            if let b = best[c.promptID] {
                if c.beats(b) { best[c.promptID] = c }
            } else {
                best[c.promptID] = c
                order.append(c.promptID)
            }
        }
        var kept: [Candidate] = []
        for id in order {
            var choice = best[id]!
            if round >= poolFromRound {
                for earlier in history[id] ?? [] where earlier.beats(choice) { choice = earlier }
            }
            kept.append(choice)
            history[id, default: []].append(best[id]!)
        }
        return kept
    }
}

/// The sampling temperature of each round. LLaMA2 re-tunes it every round (T in [1.2, 1.3] was best for
/// 10-100 samples at its scale); the last value holds for later rounds.
public struct TemperatureSchedule: Sendable, Equatable, Codable {
    /// Temperatures of rounds 1, 2, ...
    public var temperatures: [Float]

    public init(_ temperatures: [Float]) {
        precondition(!temperatures.isEmpty && temperatures.allSatisfy { $0 > 0 && $0.isFinite }, "temperatures must be positive")
        self.temperatures = temperatures
    }

    /// The temperature of 1-based `round`.
    public func temperature(round: Int) -> Float { temperatures[min(max(1, round), temperatures.count) - 1] }
}
