import Foundation
import Testing
import TestKit

/// A launch owns its run: its workers serve no other run, give up once their launch is gone, and a
/// second launch cannot take a run directory or an endpoint that a live launch holds. Real processes.
@Suite(.serialized) struct RunIdentityTests {
    /// A spec of three workers on `port` holding for `seconds`, whose workers give up after `orphan` s alone.
    static func spec(port: Int, seconds: Int, orphan: Int) -> String {
        """
        coordinator: tcp://127.0.0.1:\(port)
        heartbeat_ms: 100
        orphan_timeout_s: \(orphan)
        hosts:
          - name: here
            workers: {generator: 2, reward-model: 1}
        model:
          checkpoint: \(Fixtures.model("tiny-gqa"))
        plan:
          - hold: {seconds: \(seconds)}
        """
    }

    /// Starts `rlhf launch spec --run-dir run` in the background and waits until its hold step began.
    static func startLaunch(_ spec: String, run: String, out: String) throws -> Process {
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        let launch = Process()
        launch.executableURL = CLITests.executable
        launch.arguments = ["launch", spec, "--run-dir", run]
        launch.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
        launch.standardError = launch.standardOutput
        try launch.run()
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, launch.isRunning, !((try? String(contentsOfFile: out, encoding: .utf8)) ?? "").contains("step 1 hold") {
            Thread.sleep(forTimeInterval: 0.05)
        }
        return launch
    }

    /// The run id a launch printed ("...; run ID, run directory ...").
    static func runID(_ out: String) -> String? {
        let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        guard let range = text.range(of: "; run ") else { return nil }
        return text[range.upperBound...].split(separator: ",").first.map(String.init)
    }

    static func waitFor(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            Thread.sleep(forTimeInterval: 0.05)
        }
        return condition()
    }

    @Test func workersOfADeadLaunchJoinNoOtherRunAndGiveUp() throws {
        let dir = TestKit.scratch("orphans")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // A fixed port below the ephemeral range (32768-60999) that port * and outgoing connections draw from.
        let port = try TestKit.freePort()
        let workerMark = "--coordinator tcp://127.0.0.1:\(port)"
        try RunIdentityTests.spec(port: port, seconds: 120, orphan: 30).write(toFile: dir + "/long.yaml", atomically: true, encoding: .utf8)
        let first = try RunIdentityTests.startLaunch(dir + "/long.yaml", run: dir + "/first", out: dir + "/first.out")
        defer { if first.isRunning { kill(first.processIdentifier, SIGKILL) } }
        let orphans = LaunchTests.pids(matching: workerMark)
        #expect(orphans.count == 3, "workers: \(orphans)")
        let firstRun = try #require(RunIdentityTests.runID(dir + "/first.out"))
        // The launch dies at once (kill -9): its workers are left behind, reconnecting.
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        defer { for pid in orphans { kill(pid, SIGKILL) } }
        #expect(orphans.allSatisfy { kill($0, 0) == 0 })

        // A new launch of the same spec, in another run directory, on the same endpoint: the old workers are
        // refused (another run) and leave; the new launch runs on its own workers only.
        try RunIdentityTests.spec(port: port, seconds: 1, orphan: 30).write(toFile: dir + "/short.yaml", atomically: true, encoding: .utf8)
        let second = try CLITests.rlhf(["launch", dir + "/short.yaml", "--run-dir", dir + "/second"])
        #expect(second.status == 0, "\(second.stdout)\(second.stderr)")
        #expect(second.stdout.contains("all 3 workers registered and healthy"), "\(second.stdout)")
        #expect(second.stdout.contains("plan finished"))
        #expect(RunIdentityTests.waitFor(10) { orphans.allSatisfy { kill($0, 0) != 0 } }, "an orphan of the dead launch is still running")
        let log = (try? String(contentsOfFile: dir + "/first/logs/generator-here-0.log", encoding: .utf8)) ?? ""
        #expect(log.contains("belongs to run \(firstRun)") && log.contains("giving up"), "\(log.suffix(1500))")
        #expect(LaunchTests.pids(matching: workerMark).isEmpty, "a worker outlived the second launch")
    }

    @Test func anOrphanGivesUpAfterItsTimeout() throws {
        let dir = TestKit.scratch("orphans")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // A fixed port below the ephemeral range (32768-60999) that port * and outgoing connections draw from.
        let port = try TestKit.freePort()
        let workerMark = "--coordinator tcp://127.0.0.1:\(port)"
        try RunIdentityTests.spec(port: port, seconds: 120, orphan: 3).write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let launch = try RunIdentityTests.startLaunch(dir + "/spec.yaml", run: dir + "/run", out: dir + "/out")
        defer { if launch.isRunning { kill(launch.processIdentifier, SIGKILL) } }
        let orphans = LaunchTests.pids(matching: workerMark)
        #expect(orphans.count == 3)
        defer { for pid in orphans { kill(pid, SIGKILL) } }
        kill(launch.processIdentifier, SIGKILL)
        launch.waitUntilExit()
        let killed = Date()
        #expect(RunIdentityTests.waitFor(15) { orphans.allSatisfy { kill($0, 0) != 0 } }, "orphans still running")
        let seconds = Date().timeIntervalSince(killed)
        #expect(seconds >= 2.5 && seconds < 8, "orphans left \(seconds) s after their launch died (timeout 3 s)")
        let log = (try? String(contentsOfFile: dir + "/run/logs/reward-model-here-0.log", encoding: .utf8)) ?? ""
        #expect(log.contains("orphan timeout 3 s") && log.contains("giving up"), "\(log.suffix(1500))")
    }

    @Test func aSecondLaunchCannotTakeALiveRunDirectoryOrEndpoint() throws {
        let dir = TestKit.scratch("second")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // A fixed port below the ephemeral range (32768-60999) that port * and outgoing connections draw from.
        let port = try TestKit.freePort()
        try RunIdentityTests.spec(port: port, seconds: 60, orphan: 30).write(toFile: dir + "/spec.yaml", atomically: true, encoding: .utf8)
        let first = try RunIdentityTests.startLaunch(dir + "/spec.yaml", run: dir + "/run", out: dir + "/out")
        defer { if first.isRunning { kill(first.processIdentifier, SIGINT); first.waitUntilExit() } }
        #expect(first.isRunning)
        let journal = try String(contentsOfFile: dir + "/run/journal.jsonl", encoding: .utf8)

        let sameDirectory = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/run"])
        #expect(sameDirectory.status == 1)
        #expect(sameDirectory.stderr.contains("run directory \(dir)/run is in use by another launch (pid \(first.processIdentifier))"),
                "\(sameDirectory.stderr)")
        let sameEndpoint = try CLITests.rlhf(["launch", dir + "/spec.yaml", "--run-dir", dir + "/other"])
        #expect(sameEndpoint.status == 1)
        #expect(sameEndpoint.stderr.contains("the coordinator endpoint tcp://127.0.0.1:\(port) is in use"), "\(sameEndpoint.stderr)")
        // Neither touched the running launch: its journal, its workers.
        #expect(try String(contentsOfFile: dir + "/run/journal.jsonl", encoding: .utf8) == journal)
        #expect(first.isRunning)
        #expect(LaunchTests.pids(matching: "--coordinator tcp://127.0.0.1:\(port)").count == 3)
        kill(first.processIdentifier, SIGINT)
        first.waitUntilExit()
        #expect(first.terminationStatus == 130)
    }
}
