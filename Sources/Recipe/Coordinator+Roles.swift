import ClusterRuntime
import Distributed
import Wire
import Workers

/// The role pools as distributed actors. Each is the address "a worker of this role"
/// (`ClusterActorID.pool`): a call to it is carried by the coordinator's pool router, and the
/// dispatcher's load balancer picks the worker. A plan step asks for "a generator" and gets one.
public struct WorkerPools: Sendable {
    public let generator: Generator
    public let rewardModel: RewardModel
    public let safetyModel: SafetyModel
    public let referencePolicy: ReferencePolicy
    public let learner: Learner
    public let rewardFunction: RewardFunction

    /// The pools reachable through `actorSystem` (the coordinator's).
    public init(actorSystem: ClusterActorSystem) throws {
        generator = try Generator.resolve(id: .pool(.generator), using: actorSystem)
        rewardModel = try RewardModel.resolve(id: .pool(.rewardModel), using: actorSystem)
        safetyModel = try SafetyModel.resolve(id: .pool(.safetyModel), using: actorSystem)
        referencePolicy = try ReferencePolicy.resolve(id: .pool(.referencePolicy), using: actorSystem)
        learner = try Learner.resolve(id: .pool(.learner), using: actorSystem)
        rewardFunction = try RewardFunction.resolve(id: .pool(.rewardFunction), using: actorSystem)
    }
}

/// The plan's calls on the roles, fanned out over their pools (`Coordinator.fanOut`): blocking, for the
/// plan steps, which run on a thread of their own.
extension Coordinator {
    /// The role pools of this coordinator.
    public func pools() throws -> WorkerPools { try WorkerPools(actorSystem: actorSystem) }

    /// Fans `request`'s prompts out over the generators, `promptsPerTask` prompts per call, and returns
    /// every sample exactly once, in prompt then sample order, with each sample's log-probabilities.
    /// Calls of a generator that dies are re-dispatched; a late duplicate result is dropped.
    public func generate(_ request: GenerateRequest, promptsPerTask: Int = 1, timeoutSeconds: Double = 300) throws -> [Samples.Sample] {
        let parts = Coordinator.chunked(request.prompts, promptsPerTask).map { prompts -> GenerateRequest in
            var part = request
            part.prompts = prompts
            return part
        }
        let generator = try pools().generator
        let answers = try fanOut(parts, timeoutSeconds: timeoutSeconds) { try await generator.generate($0) }
        return try answers.flatMap { answer -> [Samples.Sample] in
            // Samples of another policy version are never mixed in silently.
            guard answer.policyVersion == request.policyVersion else {
                throw CoordinatorError.taskFailed("a generator sampled with policy version \(answer.policyVersion) for a request at version \(request.policyVersion)")
            }
            return answer.samples
        }
    }

    /// Scores `sequences` with the reward model (`.rewardModel`) or the safety model (`.safetyModel`),
    /// `perTask` sequences per call; one score per sequence, in order.
    public func score(_ sequences: [TokenSequence], model: WorkerRole, perTask: Int = 8, timeoutSeconds: Double = 300) throws -> [Float] {
        let parts = Coordinator.chunked(sequences, perTask)
        let answers: [Scores]
        switch model {
        case .rewardModel:
            let scorer = try pools().rewardModel
            answers = try fanOut(parts, timeoutSeconds: timeoutSeconds) { try await scorer.score(ScoreRequest(sequences: $0, model: .rewardModel)) }
        case .safetyModel:
            let scorer = try pools().safetyModel
            answers = try fanOut(parts, timeoutSeconds: timeoutSeconds) { try await scorer.score(ScoreRequest(sequences: $0, model: .safetyModel)) }
        default:
            throw CoordinatorError.taskFailed("\(model.rawValue) does not score")
        }
        return try zip(parts, answers).flatMap { part, answer -> [Float] in
            guard answer.values.count == part.count else {
                throw CoordinatorError.taskFailed("the \(model.rawValue) returned \(answer.values.count) scores for \(part.count) sequences")
            }
            return answer.values
        }
    }

    /// Rewards of `items` from the reward-function workers, `perTask` answers per call; one reward per
    /// item, in order. A call of a worker that dies is re-dispatched to another; a command that fails
    /// fails the call with its message (never a made-up reward).
    public func functionRewards(_ items: [RewardItem], perTask: Int = 16, timeoutSeconds: Double = 900) throws -> [Float] {
        let parts = Coordinator.chunked(items, perTask)
        let function = try pools().rewardFunction
        let answers = try fanOut(parts, timeoutSeconds: timeoutSeconds) { try await function.reward(RewardRequest(items: $0)) }
        return try zip(parts, answers).flatMap { part, answer -> [Float] in
            guard answer.values.count == part.count else {
                throw CoordinatorError.taskFailed("a reward function returned \(answer.values.count) rewards for \(part.count) answers")
            }
            return answer.values
        }
    }

    /// The reference policy's log-probabilities of each sequence's response tokens (one array per
    /// sequence, `response.count` long), asked of references holding `policyVersion`.
    public func referenceLogProbs(_ sequences: [TokenSequence], policyVersion: UInt64, perTask: Int = 8,
                                  timeoutSeconds: Double = 300) throws -> [[Float]] {
        let parts = Coordinator.chunked(sequences, perTask)
        let reference = try pools().referencePolicy
        let answers = try fanOut(parts, timeoutSeconds: timeoutSeconds) {
            try await reference.logProbs(LogProbRequest(sequences: $0, policyVersion: policyVersion))
        }
        return try zip(parts, answers).flatMap { part, answer -> [[Float]] in
            guard answer.values.map(\.count) == part.map(\.response.count) else {
                throw CoordinatorError.taskFailed("a reference policy returned \(answer.values.reduce(0) { $0 + $1.count }) log-probabilities for \(part.reduce(0) { $0 + $1.response.count }) response tokens")
            }
            return answer.values
        }
    }

    /// Sends one train batch to the learner and returns its stats, whose `announce` is the new version
    /// (of the policy, or of the reward model a reward-ranking batch names).
    public func train(_ batch: TrainBatch, timeoutSeconds: Double = 600) throws -> TrainStats {
        let learner = try pools().learner
        let stats = try fanOut([batch], timeoutSeconds: timeoutSeconds) { try await learner.train($0) }[0]
        if batch.kind != .rewardRanking { learnerStepped(step: stats.step, policyVersion: stats.policyVersion) }
        return stats
    }
}
