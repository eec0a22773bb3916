import Foundation
import Wire

/// Where a scheduler placed a worker: the Slurm job, step and node of the step it runs in (or the
/// Kubernetes pod). A worker reads it from its environment at start and sends it when it registers;
/// `rlhf status` shows it, and the launcher signals an adopted Slurm worker through it.
public struct SchedulerPlacement: Sendable, Equatable, Codable {
    /// "slurm" or "kubernetes".
    public var scheduler: String
    public var jobID: String
    public var stepID: String
    public var node: String

    public init(scheduler: String, jobID: String, stepID: String = "", node: String = "") {
        self.scheduler = scheduler
        self.jobID = jobID
        self.stepID = stepID
        self.node = node
    }

    /// The placement the environment describes: a Slurm step (`SLURM_JOB_ID`, `SLURM_STEP_ID`,
    /// `SLURMD_NODENAME`), a Kubernetes pod (`KUBERNETES_SERVICE_HOST` and `HOSTNAME`, the pod's name;
    /// `RLHF_NODE_NAME` where the manifest passes the node), or nil outside any scheduler.
    public static func from(environment: [String: String]) -> SchedulerPlacement? {
        if let job = environment["SLURM_JOB_ID"], !job.isEmpty {
            return SchedulerPlacement(scheduler: "slurm", jobID: job, stepID: environment["SLURM_STEP_ID"] ?? "",
                                      node: environment["SLURMD_NODENAME"] ?? environment["SLURM_NODELIST"] ?? "")
        }
        if environment["KUBERNETES_SERVICE_HOST"] != nil, let pod = environment["HOSTNAME"], !pod.isEmpty {
            return SchedulerPlacement(scheduler: "kubernetes", jobID: pod, node: environment["RLHF_NODE_NAME"] ?? "")
        }
        return nil
    }

    /// "slurm job 12 step 3 on node-a", for status lines and logs.
    public var summary: String {
        switch scheduler {
        case "slurm": return "slurm job \(jobID)" + (stepID.isEmpty ? "" : " step \(stepID)") + (node.isEmpty ? "" : " on \(node)")
        default: return "\(scheduler) \(jobID)" + (node.isEmpty ? "" : " on \(node)")
        }
    }

    /// The wire form (absent: an empty message).
    public var wire: Rlhf_V1_SchedulerPlacement {
        var w = Rlhf_V1_SchedulerPlacement()
        w.scheduler = scheduler
        w.jobID = jobID
        w.stepID = stepID
        w.node = node
        return w
    }

    /// Reads the wire form; nil where the peer sent none.
    public init?(wire: Rlhf_V1_SchedulerPlacement) {
        guard !wire.scheduler.isEmpty else { return nil }
        self.init(scheduler: wire.scheduler, jobID: wire.jobID, stepID: wire.stepID, node: wire.node)
    }
}
