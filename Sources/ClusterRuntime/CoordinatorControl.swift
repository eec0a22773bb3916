import Distributed
import Wire

/// The coordinator as a distributed actor, published as "coordinator" on the coordinator's own
/// endpoint: what `rlhf status` calls, and the remote-call round trip the transport benchmark times.
public distributed actor CoordinatorControl {
    public typealias ActorSystem = ClusterActorSystem

    /// The registry name it is published under.
    public static let wellKnownName = "coordinator"

    private weak var coordinator: Coordinator?

    init(coordinator: Coordinator, actorSystem: ClusterActorSystem) {
        self.coordinator = coordinator
        self.actorSystem = actorSystem
    }

    /// Workers, queues, plan progress and throughput.
    public distributed func status() throws -> ClusterStatus {
        guard let coordinator else { throw RemoteCallError.remote(code: .internal, message: "the coordinator is shutting down") }
        return coordinator.status()
    }

    /// Echoes a ping: a liveness probe of the coordinator and the round trip of a small call.
    public distributed func ping(_ ping: Ping) -> Ping { ping }

    /// The address of the coordinator's control actor at `endpoint`.
    public static func address(at endpoint: String) -> ClusterActorID { ClusterActorID(endpoint: endpoint, name: wellKnownName) }
}
