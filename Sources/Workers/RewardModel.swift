import ClusterRuntime
import Distributed
import Wire

/// The helpfulness reward-model role as a distributed actor: one score per `(prompt, response)`, read
/// by a scalar head at the sequence's last token. The coordinator calls
/// `ClusterActorID.pool(.rewardModel)`.
public distributed actor RewardModel {
    public typealias ActorSystem = ClusterActorSystem

    private let service: RewardModelService

    /// The actor over `service` (of kind `.rewardModel`), running its calls on the actor system's
    /// compute executor.
    public init(service: RewardModelService, actorSystem: ClusterActorSystem) {
        self.service = service
        self.actorSystem = actorSystem
    }

    public nonisolated var unownedExecutor: UnownedSerialExecutor { actorSystem.computeExecutor.asUnownedSerialExecutor() }

    /// `(N)` scores of the request's sequences, in order.
    public distributed func score(_ request: ScoreRequest) throws -> Scores { try service.score(request) }
}
