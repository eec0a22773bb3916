import ClusterRuntime

/// One host of a cluster and the workers it runs: a process on this machine, in a network namespace
/// (test hosts made by cluster/make-test-hosts), or over ssh.
public struct WorkerHost: Sendable, Equatable {
    public var name: String
    /// "local", or an ssh destination (`user@host`).
    public var address: String
    /// How many workers of each role.
    public var workers: [WorkerRole: Int]
    /// Path of the rlhf executable there (default: the same path as here).
    public var executable: String?
    /// Network namespace to run the workers in.
    public var namespace: String?

    public init(name: String, address: String, workers: [WorkerRole: Int], executable: String? = nil, namespace: String? = nil) {
        self.name = name
        self.address = address
        self.workers = workers
        self.executable = executable
        self.namespace = namespace
    }

    /// Whether the host is this machine (its own processes, or a namespace of it).
    public var isLocal: Bool { address == "local" }

    /// The id of a host's `index`-th worker of `role`: `role-host-index` (stable across launches, so a
    /// resumed run adopts the worker of the same id).
    public func workerID(_ role: WorkerRole, _ index: Int) -> String { "\(role.rawValue)-\(name)-\(index)" }
}
