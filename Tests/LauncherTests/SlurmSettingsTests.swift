import Launcher
import Testing

/// The command lines a `slurm:` host makes: the allocation's options, a worker's step, the batch script.
@Suite struct SlurmSettingsTests {
    static func settings() -> SlurmSettings {
        var s = SlurmSettings()
        s.partition = "cpu"
        s.nodes = 2
        s.cpusPerTask = 4
        s.memory = "16G"
        s.time = "2:00:00"
        s.account = "rl"
        s.qos = "normal"
        s.constraint = "avx512"
        s.extraArguments = ["--exclusive"]
        return s
    }

    @Test func theAllocationAsksForWhatTheSpecSays() {
        let options = SlurmSettingsTests.settings().allocationOptions(workers: 7, jobName: "rlhf-run")
        #expect(options == ["--job-name=rlhf-run", "--nodes=2", "--ntasks-per-node=4", "--cpus-per-task=4", "--partition=cpu", "--mem=16G",
                            "--time=2:00:00", "--account=rl", "--qos=normal", "--constraint=avx512", "--exclusive"])
        // The defaults: the cluster's partition, one node with a task per worker, one CPU each.
        #expect(SlurmSettings().allocationOptions(workers: 6, jobName: "j") == ["--job-name=j", "--nodes=1", "--ntasks-per-node=6", "--cpus-per-task=1"])
        var given = SlurmSettings()
        given.tasksPerNode = 2
        #expect(given.tasksPerNode(workers: 6) == 2)
    }

    @Test func aWorkerIsAOneTaskStepThatSharesTheAllocation() {
        let options = SlurmSettingsTests.settings().stepOptions(jobID: "41", node: "node-b", name: "generator-slurm-1")
        #expect(options == ["--jobid=41", "--job-name=generator-slurm-1", "--nodes=1", "--ntasks=1", "--cpus-per-task=4", "--overlap", "--exact",
                            "--quiet", "--nodelist=node-b"])
    }

    @Test func theBatchScriptRunsTheLaunchInsideItsAllocation() {
        let script = SlurmBatchScript(settings: SlurmSettingsTests.settings(), workers: 6, executable: "/opt/rlhf/bin/rlhf",
                                      spec: "/shared/specs/my spec.yaml", runDirectory: "/shared/runs/r1", workingDirectory: "/shared",
                                      launchOptions: ["--quick"])
        let lines = script.text.split(separator: "\n").map(String.init)
        #expect(lines.first == "#!/bin/bash")
        #expect(lines.filter { $0.hasPrefix("#SBATCH ") } == [
            "#SBATCH --job-name=rlhf-r1", "#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=3", "#SBATCH --cpus-per-task=4", "#SBATCH --partition=cpu",
            "#SBATCH --mem=16G", "#SBATCH --time=2:00:00", "#SBATCH --account=rl", "#SBATCH --qos=normal", "#SBATCH --constraint=avx512",
            "#SBATCH --exclusive", "#SBATCH --output=/shared/runs/r1/slurm-%j.out", "#SBATCH --open-mode=append", "#SBATCH --chdir=/shared"])
        // sbatch reads #SBATCH lines only before the first command.
        let firstCommand = lines.firstIndex { !$0.hasPrefix("#") }!
        #expect(lines[firstCommand...].allSatisfy { !$0.hasPrefix("#SBATCH") })
        #expect(lines.last == "exec /opt/rlhf/bin/rlhf launch '/shared/specs/my spec.yaml' --run-dir /shared/runs/r1 --quick")
        #expect(SlurmBatchScript.quoted("it's") == "'it'\\''s'")
    }
}
