import ClusterRuntime
import Distributed
import Wire

/// The reward-function role as a distributed actor: one reward per answer, from an external command the
/// worker runs or an HTTP endpoint it calls. The coordinator calls `ClusterActorID.pool(.rewardFunction)`,
/// so the calls spread over every reward-function worker and are re-dispatched when one dies.
public distributed actor RewardFunction {
    public typealias ActorSystem = ClusterActorSystem

    private let service: RewardFunctionService

    /// The actor over `service`, running its calls on the actor system's compute executor.
    public init(service: RewardFunctionService, actorSystem: ClusterActorSystem) {
        self.service = service
        self.actorSystem = actorSystem
    }

    public nonisolated var unownedExecutor: UnownedSerialExecutor { actorSystem.computeExecutor.asUnownedSerialExecutor() }

    /// `(N)` rewards of the request's answers, in order.
    public distributed func reward(_ request: RewardRequest) async throws -> FunctionRewards { try await service.reward(request) }
}
