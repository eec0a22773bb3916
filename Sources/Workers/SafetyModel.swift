import ClusterRuntime
import Distributed
import Wire

/// The safety-model role as a distributed actor: the same scorer as `RewardModel` (a trunk and a
/// scalar head at the last token), trained on the safety preference pairs and answering as the
/// safety model, so the coordinator can tell the two scores apart when it shapes the PPO reward. The
/// coordinator calls `ClusterActorID.pool(.safetyModel)`.
public distributed actor SafetyModel {
    public typealias ActorSystem = ClusterActorSystem

    private let service: RewardModelService

    /// The actor over `service` (of kind `.safetyModel`), running its calls on the actor system's
    /// compute executor.
    public init(service: RewardModelService, actorSystem: ClusterActorSystem) {
        self.service = service
        self.actorSystem = actorSystem
    }

    public nonisolated var unownedExecutor: UnownedSerialExecutor { actorSystem.computeExecutor.asUnownedSerialExecutor() }

    /// `(N)` safety scores of the request's sequences, in order.
    public distributed func score(_ request: ScoreRequest) throws -> Scores { try service.score(request) }
}
