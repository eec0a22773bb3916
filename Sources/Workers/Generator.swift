import ClusterRuntime
import Distributed
import Wire

/// The generator role as a distributed actor: K samples of each prompt, sampled by batched decode on
/// the worker's compute queue. The coordinator calls "a generator" (`ClusterActorID.pool(.generator)`)
/// and its load balancer picks which.
public distributed actor Generator {
    public typealias ActorSystem = ClusterActorSystem

    private let service: GeneratorService

    /// The actor over `service`, running its calls on the actor system's compute executor.
    public init(service: GeneratorService, actorSystem: ClusterActorSystem) {
        self.service = service
        self.actorSystem = actorSystem
    }

    public nonisolated var unownedExecutor: UnownedSerialExecutor { actorSystem.computeExecutor.asUnownedSerialExecutor() }

    /// Every sample of every prompt, prompt by prompt, with its log-probabilities; refuses a request for
    /// another policy version than the one held.
    public distributed func generate(_ request: GenerateRequest) throws -> Samples { try service.generate(request) }
}
