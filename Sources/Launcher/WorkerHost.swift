import ClusterRuntime

/// One host of a cluster and the workers it runs: a process on this machine, in a network namespace
/// (test hosts made by cluster/make-test-hosts), over ssh, as steps of a Slurm allocation, or started
/// by something else (a Kubernetes StatefulSet, or by hand) and only awaited.
public struct WorkerHost: Sendable, Equatable {
    public var name: String
    /// "local", "external" (the launcher starts nothing: workers with the host's ids join on their
    /// own), "slurm" (a `slurm:` host), or an ssh destination (`user@host`).
    public var address: String
    /// How many workers of each role.
    public var workers: [WorkerRole: Int]
    /// Path of the rlhf executable there (default: the same path as here).
    public var executable: String?
    /// Network namespace to run the workers in.
    public var namespace: String?
    /// The allocation and steps of a `slurm:` host.
    public var slurm: SlurmSettings?
    /// Compute threads of each role's workers where not 1 (a `slurm:` host's are its `cpus_per_task`).
    public var threads: [WorkerRole: Int]

    public init(name: String, address: String, workers: [WorkerRole: Int], executable: String? = nil, namespace: String? = nil,
                slurm: SlurmSettings? = nil, threads: [WorkerRole: Int] = [:]) {
        self.name = name
        self.threads = threads
        self.address = slurm == nil ? address : WorkerHost.slurmAddress
        self.workers = workers
        self.executable = executable
        self.namespace = namespace
        self.slurm = slurm
    }

    /// The address of a `slurm:` host.
    public static let slurmAddress = "slurm"
    /// The address of a host whose workers are started by something else.
    public static let externalAddress = "external"

    /// Whether the host is this machine (its own processes, or a namespace of it).
    public var isLocal: Bool { address == "local" }
    /// Whether its workers are Slurm job steps.
    public var isSlurm: Bool { slurm != nil }
    /// Whether the launcher only waits for its workers (it starts none).
    public var isExternal: Bool { address == WorkerHost.externalAddress }

    /// The compute threads of each of its workers of `role`: a Slurm step's CPUs, else `threads[role]`, else 1.
    public func computeThreads(_ role: WorkerRole) -> Int { slurm?.cpusPerTask ?? threads[role] ?? 1 }

    /// How many workers it runs, of every role.
    public var workerCount: Int { workers.values.reduce(0, +) }

    /// The id of a host's `index`-th worker of `role`: `role-host-index` (stable across launches, so a
    /// resumed run adopts the worker of the same id).
    public func workerID(_ role: WorkerRole, _ index: Int) -> String { "\(role.rawValue)-\(name)-\(index)" }
}
