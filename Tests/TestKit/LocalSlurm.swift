import Foundation

/// The single-node Slurm the Slurm tests run against (`scripts/slurm-single-node`: Debian's slurmctld,
/// slurmd and munge, this machine as the node), started on first use and stopped when the test process
/// exits, unless it was already up (then it is left as it was). The test process's SLURM_CONF names it,
/// so the launches and Slurm commands the tests start reach it.
public enum LocalSlurm {
    public struct Unavailable: Error, CustomStringConvertible {
        public let description: String
    }

    /// `slurm.conf` of the running cluster, or why it could not start.
    public static let configuration: Result<String, Unavailable> = {
        let script = TestKit.repository + "/scripts/slurm-single-node"
        let base = ProcessInfo.processInfo.environment["SLURM_BASE"] ?? "/tmp/rlhf-slurm"
        let conf = base + "/etc/slurm.conf"
        let wasUp = run(script, ["status"]).status == 0
        if !wasUp {
            let started = run(script, ["start"])
            guard started.status == 0 else {
                return .failure(Unavailable(description: "scripts/slurm-single-node start failed (status \(started.status)): \(started.output)"))
            }
            // Stopped with the test process (a C function pointer: no captures).
            atexit { _ = LocalSlurm.run(TestKit.repository + "/scripts/slurm-single-node", ["stop"]) }
        }
        setenv("SLURM_CONF", conf, 1)
        return .success(conf)
    }()

    /// Runs a Slurm client command (`squeue`, `scancel`, ...) or a script; its status and output.
    @discardableResult
    public static func run(_ command: String, _ arguments: [String]) -> (status: Int32, output: String) {
        TestKit.run(command.hasPrefix("/") ? command : "/usr/bin/" + command, arguments)
    }

    /// The steps of the cluster's jobs now: (`JOB.STEP`, step name).
    public static func steps() -> [(id: String, name: String)] {
        run("squeue", ["--noheader", "--steps", "--format=%i|%j"]).output.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: "|").map(String.init)
            return fields.count == 2 ? (fields[0].trimmingCharacters(in: .whitespaces), fields[1].trimmingCharacters(in: .whitespaces)) : nil
        }
    }

    /// The ids of the cluster's jobs now.
    public static func jobs() -> [String] {
        run("squeue", ["--noheader", "--format=%i"]).output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
    }
}
