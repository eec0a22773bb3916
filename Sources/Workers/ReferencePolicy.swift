import ClusterRuntime
import Distributed
import Wire

/// The reference-policy role as a distributed actor: per-token log-probabilities of responses under a
/// frozen copy of the policy (PPO's KL penalty). The coordinator calls
/// `ClusterActorID.pool(.referencePolicy)`.
public distributed actor ReferencePolicy {
    public typealias ActorSystem = ClusterActorSystem

    private let service: ReferencePolicyService

    /// The actor over `service`, running its calls on the actor system's compute executor.
    public init(service: ReferencePolicyService, actorSystem: ClusterActorSystem) {
        self.service = service
        self.actorSystem = actorSystem
    }

    public nonisolated var unownedExecutor: UnownedSerialExecutor { actorSystem.computeExecutor.asUnownedSerialExecutor() }

    /// `(N, L_i)`: the log-probability of every response token, one array per sequence.
    public distributed func logProbs(_ request: LogProbRequest) throws -> LogProbs { try service.logProbs(request) }
}
