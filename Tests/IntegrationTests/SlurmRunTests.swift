import Foundation
import Testing
import TestKit

/// A cluster whose workers are all Slurm job steps, on a real single-node Slurm (`LocalSlurm`): the run
/// completes with the workers listed by `squeue --steps` and by `rlhf status --json` with their job and
/// step; a generator's step cancelled with `scancel --signal=KILL` mid-round loses no sample and changes
/// no figure (a replacement step takes its place), and one drained with `scancel --signal=TERM` leaves
/// for good; a launcher killed -9 mid-plan and run again adopts the steps still running in its
/// allocation; `--sbatch --submit` runs the plan as a batch job that,
/// cancelled mid-plan and submitted again, resumes from the journal with the same figures; and Slurm's
/// refusal of an unknown partition is the launch's error, with salloc's message and exit status.
/// Serialized: the node's two CPUs hold one allocation at a time.
@Suite(.serialized) struct SlurmRunTests {
    static func writeSpec(_ dir: String, partition: String = "debug") throws -> String {
        let spec = """
        coordinator: tcp://127.0.0.1:*
        heartbeat_ms: 100
        hosts:
          - name: slurm
            slurm: {partition: \(partition), nodes: 1, ntasks_per_node: 2, cpus_per_task: 1, time: "30:00"}
            workers: {generator: 2, reward-model: 1, safety-model: 1, learner: 1, reference-policy: 1}
        model: {checkpoint: \(RLHFRunTests.repository)/models/chat-world/sft.bin}
        task: {seed: 1, eval_prompts: 48, preference_pairs: 600}
        plan:
          - evaluate: {name: SFT}
          - train_rm: {model: reward-model, pairs: 200}
          - train_rm: {model: safety-model, pairs: 200}
          - rs_round: {name: V1, prompts: 96, samples: 6, max_new_tokens: 64, new_pairs: 16, from_sft: true}
          - rs_round: {name: V2, prompts: 96, samples: 6, max_new_tokens: 64, new_pairs: 16, from_sft: true}
        """
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try spec.write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        return dir + "/spec.yaml"
    }

    static let workerIDs: Set<String> = ["generator-slurm-0", "generator-slurm-1", "reward-model-slurm-0", "safety-model-slurm-0",
                                         "learner-slurm-0", "reference-policy-slurm-0"]

    /// Every (round, prompt, sample) once.
    static func checkSamplesOnce(_ run: String) throws {
        for round in ["V1", "V2"] {
            let keys = try RLHFRunTests.sampleKeys(run, round)
            #expect(keys.count == 96 * 6 && Set(keys).count == keys.count, "\(round): \(keys.count) samples, \(Set(keys).count) distinct")
        }
    }

    /// Waits (up to `seconds`) until Slurm lists no job.
    static func waitForNoJobs(_ seconds: Double = 60) -> Bool { TestKit.waitFor(seconds) { LocalSlurm.jobs().isEmpty } }

    /// The undisturbed run, watched: the steps squeue listed and the workers `rlhf status --json` gave.
    struct Calm {
        let run: String
        let status: Int32
        let output: String
        let listedSteps: Set<String>
        /// `rlhf status --json` once every worker had registered.
        let statusJSON: String

        var statusWorkers: [[String: Any]] {
            ((try? JSONSerialization.jsonObject(with: Data(statusJSON.utf8))) as? [String: Any])?["workers"] as? [[String: Any]] ?? []
        }
    }

    static let calm: Result<Calm, RLHFRunTests.CalmRunFailed> = {
        do {
            _ = try LocalSlurm.configuration.get()
            let dir = TestKit.scratch("rlhf-slurm-calm")
            let run = dir + "/run"
            let launch = try RLHFRunTests.launch(try writeSpec(dir), run: run, dir: dir, name: "launch")
            var listed: Set<String> = []
            var statusJSON = ""
            // While it runs: the steps, and the coordinator's view of the workers once all six registered.
            while launch.isRunning {
                listed.formUnion(LocalSlurm.steps().map(\.name))
                if statusJSON.isEmpty, let port = RLHFRunTests.port(run) {
                    let status = try CLITests.rlhf(["status", "--coordinator", "tcp://127.0.0.1:\(port)", "--json", "--timeout", "2"])
                    if status.status == 0, let object = try? JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any],
                       let all = object["workers"] as? [[String: Any]], all.count == 6 {
                        statusJSON = status.stdout
                    }
                }
                Thread.sleep(forTimeInterval: 0.5)
            }
            let output = (try? String(contentsOfFile: dir + "/launch.out", encoding: .utf8)) ?? ""
            return .success(Calm(run: run, status: launch.terminationStatus, output: output, listedSteps: listed, statusJSON: statusJSON))
        } catch {
            return .failure(RLHFRunTests.CalmRunFailed(output: "\(error)"))
        }
    }()

    @Test func aRunWhoseWorkersAreSlurmStepsCompletes() throws {
        let calm = try SlurmRunTests.calm.get()
        #expect(calm.status == 0, "\(calm.output)")
        #expect(calm.output.contains("granted job") && calm.output.contains("plan finished"), "\(calm.output)")
        // squeue --steps listed each worker's step by its id while the plan ran.
        #expect(SlurmRunTests.workerIDs.isSubset(of: calm.listedSteps), "steps seen: \(calm.listedSteps)")
        // rlhf status --json: each worker's job, step and node.
        #expect(Set(calm.statusWorkers.compactMap { $0["id"] as? String }) == SlurmRunTests.workerIDs)
        let placements = calm.statusWorkers.compactMap { $0["scheduler"] as? [String: Any] }
        #expect(placements.count == 6 && placements.allSatisfy { $0["scheduler"] as? String == "slurm" && !($0["node"] as? String ?? "").isEmpty })
        #expect(Set(placements.compactMap { $0["job_id"] as? String }).count == 1, "\(placements)")
        #expect(Set(placements.compactMap { $0["step_id"] as? String }).count == 6, "\(placements)")
        try SlurmRunTests.checkSamplesOnce(calm.run)
        // The allocation was cancelled at the end: nothing left on the cluster.
        #expect(SlurmRunTests.waitForNoJobs(), "jobs left: \(LocalSlurm.jobs())")
    }

    @Test func aGeneratorStepCancelledMidRoundIsReplacedAndLosesNoSample() throws {
        let calm = try SlurmRunTests.calm.get()
        #expect(SlurmRunTests.waitForNoJobs())
        // Once V1 (step 4, task ids from 4 << 32) has some of its 96 sampling tasks accepted.
        let started = try RLHFRunTests.launchUntil("slurm-kill", step: 4, results: 8, output: "launch") { try SlurmRunTests.writeSpec($0) }
        #expect(started.reached, "V1 never started sampling")
        let victim = try #require(LocalSlurm.steps().first { $0.name == "generator-slurm-0" }, "no step of generator-slurm-0")
        let cancelled = LocalSlurm.run("scancel", ["--signal=KILL", victim.id])
        #expect(cancelled.status == 0, "\(cancelled.output)")
        let sampledBeforeKill = started.stepResults
        // Once the replacement runs: generator-slurm-1 drained through Slurm (SIGTERM) leaves for good.
        let replaced = TestKit.waitFor(60) { LocalSlurm.steps().contains { $0.name == "generator-slurm-0" && $0.id != victim.id } }
        #expect(replaced, "no replacement step of generator-slurm-0")
        let drained = try #require(LocalSlurm.steps().first { $0.name == "generator-slurm-1" }, "no step of generator-slurm-1")
        #expect(started.launch.isRunning, "the run ended before the drain")
        #expect(LocalSlurm.run("scancel", ["--signal=TERM", drained.id]).status == 0)
        started.launch.waitUntilExit()
        let out = (try? String(contentsOfFile: started.dir + "/launch.out", encoding: .utf8)) ?? ""
        #expect(started.launch.terminationStatus == 0, "\(out)")
        #expect(sampledBeforeKill < 96, "the kill came after V1's sampling had finished")
        #expect(out.contains("worker generator-slurm-0's Slurm step ended") && out.contains("started a replacement step"), "\(out)")
        #expect(out.contains("worker generator-slurm-1 drained and left") && !out.contains("worker generator-slurm-1's Slurm step ended"), "\(out)")
        try SlurmRunTests.checkSamplesOnce(started.run)
        #expect(try RLHFRunTests.figures(started.run) == RLHFRunTests.figures(calm.run))
        #expect(SlurmRunTests.waitForNoJobs(), "jobs left: \(LocalSlurm.jobs())")
    }

    @Test func aLauncherKilledMidPlanAdoptsItsStepsWhenRunAgain() throws {
        let calm = try SlurmRunTests.calm.get()
        #expect(SlurmRunTests.waitForNoJobs())
        // kill -9 the launcher once V2 (step 5) has results: its allocation and the workers' steps run on.
        let started = try RLHFRunTests.launchUntil("slurm-relaunch", step: 5, results: 8, output: "first") { try SlurmRunTests.writeSpec($0) }
        #expect(started.reached, "V2 never started")
        kill(started.launch.processIdentifier, SIGKILL)
        started.launch.waitUntilExit()
        #expect(SlurmRunTests.workerIDs.isSubset(of: Set(LocalSlurm.steps().map(\.name))), "the steps did not outlive the launcher")
        let again = try RLHFRunTests.launch(started.spec, run: started.run, dir: started.dir, name: "second")
        again.waitUntilExit()
        let out = (try? String(contentsOfFile: started.dir + "/second.out", encoding: .utf8)) ?? ""
        #expect(again.terminationStatus == 0, "\(out)")
        #expect(out.contains("of the previous launch still runs") && out.contains("adopted 6 running workers"), "\(out)")
        try SlurmRunTests.checkSamplesOnce(started.run)
        #expect(try RLHFRunTests.figures(started.run) == RLHFRunTests.figures(calm.run))
        #expect(SlurmRunTests.waitForNoJobs(), "jobs left: \(LocalSlurm.jobs())")
    }

    /// `rlhf launch SPEC --sbatch --submit --run-dir RUN`: the job id it submitted.
    static func submit(_ spec: String, run: String) throws -> String {
        let submitted = try CLITests.rlhf(["launch", spec, "--sbatch", "--submit", "--run-dir", run])
        #expect(submitted.status == 0, "\(submitted.stdout)\(submitted.stderr)")
        let line = try #require(submitted.stdout.split(separator: "\n").first { $0.hasPrefix("submitted batch job ") }, "\(submitted.stdout)")
        return String(line.dropFirst("submitted batch job ".count).prefix { $0.isNumber })
    }

    @Test func aBatchJobCancelledMidPlanResumesWhenSubmittedAgain() throws {
        let calm = try SlurmRunTests.calm.get()
        #expect(SlurmRunTests.waitForNoJobs())
        let dir = TestKit.scratch("rlhf-slurm-batch")
        let spec = try SlurmRunTests.writeSpec(dir)
        let run = dir + "/run"
        let first = try SlurmRunTests.submit(spec, run: run)
        let script = try String(contentsOfFile: run + "/launch.sbatch", encoding: .utf8)
        #expect(script.contains("#SBATCH --partition=debug") && script.contains("--run-dir \(run)"), "\(script)")
        // Cancel the whole job once V2 (step 5) has results: SIGTERM to every step, SIGKILL after KillWait.
        let tasks = (UInt64(5) << 32) ..< (UInt64(6) << 32)
        let reached = TestKit.waitFor(300) {
            LaunchTests.journaledResults(run + "/journal.jsonl").contains { tasks.contains($0) } || !LocalSlurm.jobs().contains(first)
        }
        #expect(reached && LocalSlurm.jobs().contains(first), "the job ended before V2 had results")
        #expect(LocalSlurm.run("scancel", [first]).status == 0)
        #expect(SlurmRunTests.waitForNoJobs(), "job \(first) outlived scancel")
        let journal = (try? String(contentsOfFile: run + "/journal.jsonl", encoding: .utf8)) ?? ""
        #expect(!journal.contains("\"finished\""), "the plan finished before the cancel")
        // Submitted again: the same run directory's journal, the plan goes on.
        let second = try SlurmRunTests.submit(spec, run: run)
        #expect(second != first)
        #expect(TestKit.waitFor(600) { !LocalSlurm.jobs().contains(second) }, "job \(second) did not finish")
        let out = (try? String(contentsOfFile: run + "/slurm-\(second).out", encoding: .utf8)) ?? ""
        #expect(out.contains("resuming from the journal") && out.contains("plan finished"), "\(out)")
        try SlurmRunTests.checkSamplesOnce(run)
        #expect(try RLHFRunTests.figures(run) == RLHFRunTests.figures(calm.run))
    }

    @Test func anUnknownPartitionIsSlurmsErrorAndLeavesNothingRunning() throws {
        _ = try LocalSlurm.configuration.get()
        #expect(SlurmRunTests.waitForNoJobs())
        let dir = TestKit.scratch("rlhf-slurm-bad")
        let spec = try SlurmRunTests.writeSpec(dir, partition: "no-such-partition")
        let launched = try CLITests.rlhf(["launch", spec, "--run-dir", dir + "/run"])
        #expect(launched.status == 1, "\(launched.stdout)\(launched.stderr)")
        #expect(launched.stderr.contains("salloc failed (exit status 1)") && launched.stderr.contains("Invalid partition name specified"),
                "\(launched.stderr)")
        let submitted = try CLITests.rlhf(["launch", spec, "--sbatch", "--submit", "--run-dir", dir + "/batch"])
        #expect(submitted.status == 1 && submitted.stderr.contains("sbatch failed (exit status 1)")
                && submitted.stderr.contains("Invalid partition name specified"), "\(submitted.stderr)")
        #expect(LocalSlurm.jobs().isEmpty && LocalSlurm.steps().isEmpty)
        #expect(LaunchTests.pids(matching: dir).isEmpty, "a process of the refused launch is still running")
    }
}
