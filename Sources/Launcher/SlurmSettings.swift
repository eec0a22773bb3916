/// What a spec's `slurm:` host asks of the scheduler: the allocation (`salloc`, or the `#SBATCH` lines of
/// a batch script) and how each worker runs in it (one job step, `srun`). Pure: it makes command lines
/// and runs nothing (`Slurm` runs them).
public struct SlurmSettings: Sendable, Equatable {
    /// Partition (nil: the cluster's default).
    public var partition: String?
    /// Nodes of the allocation.
    public var nodes = 1
    /// Tasks per node of the allocation (nil: as many as the host's workers need, spread over the nodes).
    public var tasksPerNode: Int?
    /// CPUs of each task: each worker's step gets this many, and its `--threads`.
    public var cpusPerTask = 1
    /// Memory per node, in Slurm's syntax (`16G`).
    public var memory: String?
    /// Time limit, in Slurm's syntax (`2:00:00`, `1-00:00:00`).
    public var time: String?
    public var account: String?
    public var qos: String?
    /// Node features (`--constraint`).
    public var constraint: String?
    /// More options for the allocation, as given (`["--exclusive", "--gres=..."]`).
    public var extraArguments: [String] = []

    public init() {}

    /// Tasks per node for `workers` workers: the spec's, else enough for them over the nodes.
    public func tasksPerNode(workers: Int) -> Int { tasksPerNode ?? max(1, (workers + nodes - 1) / nodes) }

    /// The allocation's options (for `salloc` and for `#SBATCH` lines), for a host of `workers` workers.
    public func allocationOptions(workers: Int, jobName: String) -> [String] {
        var options = ["--job-name=\(jobName)", "--nodes=\(nodes)", "--ntasks-per-node=\(tasksPerNode(workers: workers))",
                       "--cpus-per-task=\(cpusPerTask)"]
        if let partition { options.append("--partition=\(partition)") }
        if let memory { options.append("--mem=\(memory)") }
        if let time { options.append("--time=\(time)") }
        if let account { options.append("--account=\(account)") }
        if let qos { options.append("--qos=\(qos)") }
        if let constraint { options.append("--constraint=\(constraint)") }
        return options + extraArguments
    }

    /// `srun`'s options for one worker: a one-task step in allocation `jobID` on `node`, named `name` (the
    /// worker's id, so that `squeue --steps` shows which worker a step is). `--overlap`: the workers'
    /// steps share the allocation's CPUs (a role's worker idles while another computes, as processes
    /// on one machine do); `--exact`: each gets its own `--cpus-per-task`, not the whole node.
    public func stepOptions(jobID: String, node: String?, name: String) -> [String] {
        var options = ["--jobid=\(jobID)", "--job-name=\(name)", "--nodes=1", "--ntasks=1", "--cpus-per-task=\(cpusPerTask)",
                       "--overlap", "--exact", "--quiet"]
        if let node { options.append("--nodelist=\(node)") }
        return options
    }
}
