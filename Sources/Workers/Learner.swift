import ClusterRuntime
import Distributed
import Wire

/// The learner role as a distributed actor: each call applies one training batch (an SFT step, a
/// reward-model ranking step, a PPO step or iteration; or saves or announces the state) and answers
/// with the stats and the version it published. The coordinator calls `ClusterActorID.pool(.learner)`.
public distributed actor Learner {
    public typealias ActorSystem = ClusterActorSystem

    private let service: LearnerService

    /// The actor over `service`, running its calls on the actor system's compute executor.
    public init(service: LearnerService, actorSystem: ClusterActorSystem) {
        self.service = service
        self.actorSystem = actorSystem
    }

    public nonisolated var unownedExecutor: UnownedSerialExecutor { actorSystem.computeExecutor.asUnownedSerialExecutor() }

    /// Applies `batch`; a batch built for another version than the one held is refused.
    public distributed func train(_ batch: TrainBatch) throws -> TrainStats { try service.train(batch) }
}
