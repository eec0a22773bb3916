import Foundation

/// The batch script of `rlhf launch SPEC --sbatch`: one job whose allocation is the spec's `slurm:`
/// host's; its batch step runs `rlhf launch` (the coordinator) on the allocation's first node, and that
/// launch starts the workers as steps of the same job. The run directory holds the journal, so the
/// script submitted again resumes the run where the last job stopped. Pure: it makes the text.
public struct SlurmBatchScript: Sendable, Equatable {
    public var settings: SlurmSettings
    /// How many workers the allocation runs (for the default tasks per node).
    public var workers: Int
    /// The rlhf executable (an absolute path every node sees).
    public var executable: String
    /// The spec, the run directory and the directory the job starts in: absolute paths on shared storage.
    public var spec: String
    public var runDirectory: String
    public var workingDirectory: String
    /// More `rlhf launch` options (`--quick`, `--progress-every 15`).
    public var launchOptions: [String] = []

    public init(settings: SlurmSettings, workers: Int, executable: String, spec: String, runDirectory: String, workingDirectory: String,
                launchOptions: [String] = []) {
        self.settings = settings
        self.workers = workers
        self.executable = executable
        self.spec = spec
        self.runDirectory = runDirectory
        self.workingDirectory = workingDirectory
        self.launchOptions = launchOptions
    }

    /// The job's name: `rlhf-` and the run directory's name.
    public var jobName: String {
        let name = (runDirectory as NSString).lastPathComponent
        return "rlhf-" + String(name.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." ? $0 : "_" })
    }

    /// The script's text.
    public var text: String {
        let options = settings.allocationOptions(workers: workers, jobName: jobName)
            + ["--output=\(runDirectory)/slurm-%j.out", "--open-mode=append", "--chdir=\(workingDirectory)"]
        let launch = [executable, "launch", spec, "--run-dir", runDirectory] + launchOptions
        return """
        #!/bin/bash
        # Written by `rlhf launch --sbatch`: the coordinator runs here, on the allocation's first node, and
        # starts every worker as a step of this job. Submitted again (sbatch \(SlurmBatchScript.quoted(runDirectory))/launch.sbatch),
        # it resumes the run from the journal in the run directory. Cancelled, timed out or preempted, it
        # stops with the journal intact (SIGTERM to every step, SIGKILL after the cluster's KillWait).
        \(options.map { "#SBATCH \($0)" }.joined(separator: "\n"))
        set -euo pipefail
        exec \(launch.map(SlurmBatchScript.quoted).joined(separator: " "))

        """
    }

    /// `word` for a POSIX shell: as it is where it is plain, else in single quotes.
    public static func quoted(_ word: String) -> String {
        let plain = !word.isEmpty && word.allSatisfy { $0.isLetter || $0.isNumber || "-_./=:@%+,".contains($0) }
        return plain ? word : "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
}
