import Foundation

/// The Slurm client commands the launcher runs (`salloc`, `sbatch`, `srun`, `scancel`, `squeue`,
/// `scontrol`), found on PATH; their failures come back with the scheduler's own message and exit code.
public enum Slurm {
    /// A Slurm command that failed: which, its exit status and what it said.
    public struct Failure: Error, CustomStringConvertible {
        public let command: String
        public let status: Int32
        public let message: String
        public var description: String {
            "\(command) failed (exit status \(status)): " + (message.isEmpty ? "no message" : message)
        }
    }

    /// An allocation the workers of a `slurm:` host run in.
    public struct Allocation: Sendable, Equatable {
        public let jobID: String
        /// Its nodes' hostnames, in Slurm's order.
        public let nodes: [String]
        /// Whether the launcher made it (and so cancels it at the end); false for the allocation the
        /// launcher itself runs in (a batch job, an `salloc` shell).
        public let owned: Bool

        public init(jobID: String, nodes: [String], owned: Bool) {
            self.jobID = jobID
            self.nodes = nodes
            self.owned = owned
        }
    }

    /// The path of Slurm command `name` on PATH, or nil.
    public static func path(of name: String) -> String? {
        let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":")
        return directories.map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// Runs `name ARGUMENTS` to the end; returns its standard output, or throws its failure (its
    /// standard error, trimmed). `stderr` receives the standard error of a command that succeeded.
    @discardableResult
    public static func run(_ name: String, _ arguments: [String], stderr: ((String) -> Void)? = nil) throws -> String {
        guard let executable = path(of: name) else {
            throw Failure(command: name, status: 127, message: "\(name) is not on PATH: install the Slurm client (slurm-client) or put it on PATH")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // Read both to the end before waiting: a full pipe would block the command.
        let group = DispatchGroup()
        nonisolated(unsafe) var errorData = Data()
        DispatchQueue.global().async(group: group) { errorData = err.fileHandleForReading.readDataToEndOfFile() }
        let outputData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        let errorText = String(decoding: errorData, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard process.terminationStatus == 0 else {
            throw Failure(command: name, status: process.terminationStatus, message: errorText.split(separator: "\n").joined(separator: "; "))
        }
        if !errorText.isEmpty { stderr?(errorText) }
        return String(decoding: outputData, as: UTF8.self)
    }

    /// Gets an allocation (`salloc --no-shell`: granted, it holds its nodes until cancelled or its time
    /// limit, with no command of its own); waits while it is pending. `report` receives what salloc says
    /// (for example that the job is queued).
    public static func allocate(_ settings: SlurmSettings, workers: Int, jobName: String, report: (String) -> Void) throws -> Allocation {
        var said = ""
        try run("salloc", ["--no-shell"] + settings.allocationOptions(workers: workers, jobName: jobName)) { said = $0 }
        // salloc says "salloc: Granted job allocation 12" on its standard error.
        for line in said.split(separator: "\n") where !line.contains("Granted job allocation") { report(String(line)) }
        guard let granted = said.split(separator: "\n").first(where: { $0.contains("Granted job allocation") }),
              let job = granted.split(separator: " ").last.map(String.init), UInt64(job) != nil else {
            throw Failure(command: "salloc", status: 0, message: "no job id in its answer: \(said)")
        }
        return Allocation(jobID: job, nodes: try nodes(ofJob: job), owned: true)
    }

    /// The allocation this process runs in (`SLURM_JOB_ID` of a batch script or an `salloc` shell), if any.
    public static func enclosingAllocation(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> Allocation? {
        guard let job = environment["SLURM_JOB_ID"], !job.isEmpty else { return nil }
        let list = environment["SLURM_JOB_NODELIST"] ?? environment["SLURM_NODELIST"]
        let nodes = try list.map { try hostnames($0) } ?? nodes(ofJob: job)
        return Allocation(jobID: job, nodes: nodes, owned: false)
    }

    /// Whether job `jobID` is running (false once it ended, or for an unknown id).
    public static func isRunning(job jobID: String) -> Bool {
        ((try? run("squeue", ["--noheader", "--jobs=\(jobID)", "--format=%T"])) ?? "").trimmingCharacters(in: .whitespacesAndNewlines) == "RUNNING"
    }

    /// The hostnames of job `jobID`'s nodes.
    public static func nodes(ofJob jobID: String) throws -> [String] {
        let list = try run("squeue", ["--noheader", "--jobs=\(jobID)", "--format=%N"]).trimmingCharacters(in: .whitespacesAndNewlines)
        return try hostnames(list)
    }

    /// A Slurm host list (`node[1-3],gpu7`) expanded (`scontrol show hostnames`).
    public static func hostnames(_ list: String) throws -> [String] {
        guard !list.isEmpty else { return [] }
        return try run("scontrol", ["show", "hostnames", list]).split(separator: "\n").map(String.init).filter { !$0.isEmpty }
    }

    /// The steps of job `jobID` now: `JOB.STEP` ids by step name.
    public static func steps(ofJob jobID: String) -> [(id: String, name: String)] {
        guard let text = try? run("squeue", ["--noheader", "--steps", "--jobs=\(jobID)", "--format=%i|%j"]) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: "|", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            return fields.count == 2 ? (fields[0], fields[1]) : nil
        }
    }

    /// Sends `signal` to step `step` (`JOB.STEP`) and returns whether scancel took it. SIGKILL is plain
    /// `scancel JOB.STEP` (the step ends at once); any other, `scancel --signal=NAME` (the worker drains
    /// on SIGTERM).
    @discardableResult
    public static func signal(step: String, _ signal: Int32) -> Bool {
        let arguments = signal == SIGKILL ? [step] : ["--signal=\(signalName(signal))", step]
        return (try? run("scancel", arguments)) != nil
    }

    /// Cancels job `jobID` (SIGTERM to every step, SIGKILL after the cluster's KillWait).
    public static func cancel(job jobID: String) throws {
        try run("scancel", [jobID])
    }

    /// Slurm's name of a signal number.
    static func signalName(_ signal: Int32) -> String {
        switch signal {
        case SIGTERM: return "TERM"
        case SIGINT: return "INT"
        case SIGKILL: return "KILL"
        case SIGSTOP: return "STOP"
        case SIGCONT: return "CONT"
        case SIGUSR1: return "USR1"
        case SIGUSR2: return "USR2"
        default: return "\(signal)"
        }
    }
}
