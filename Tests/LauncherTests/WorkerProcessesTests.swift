import ClusterRuntime
import Foundation
import Launcher
import Logging
import Testing
import TestKit

/// Process supervision with real processes: `/bin/sh` in place of `rlhf` (the supervisor does not care
/// what a worker runs), started locally with its log, stopped with SIGTERM, killed when it ignores it,
/// and a dead start reported.
@Suite(.serialized) struct WorkerProcessesTests {
    static func supervisor(_ executable: String = "/bin/sh") throws -> (WorkerProcesses, String) {
        let dir = TestKit.scratch("launcher")
        try FileManager.default.createDirectory(atPath: dir + "/logs", withIntermediateDirectories: true)
        return (WorkerProcesses(runDirectory: dir, executable: executable, logger: Logger(label: "test")), dir)
    }

    @Test func startsLogsStopsAndKillsWhatIgnoresTheStop() throws {
        let (workers, dir) = try WorkerProcessesTests.supervisor()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let host = WorkerHost(name: "here", address: "local", workers: [.generator: 2])
        #expect(host.isLocal && host.workerID(.generator, 1) == "generator-here-1")
        let polite = try workers.start(id: "generator-here-0", role: .generator, host: host, arguments: ["-c", "echo started; exec sleep 30"])
        let stubborn = try workers.start(id: "generator-here-1", role: .generator, host: host,
                                         arguments: ["-c", "trap '' TERM; echo started; exec sleep 30"])
        #expect(polite > 0 && stubborn > 0 && polite != stubborn)
        #expect(TestKit.waitFor(5) { (try? String(contentsOfFile: workers.log("generator-here-1"), encoding: .utf8))?.contains("started") == true })
        #expect(workers.all.map(\.id) == ["generator-here-0", "generator-here-1"] && workers.all.allSatisfy(\.isRunning))
        #expect(workers.firstExited() == nil)
        // Not an rlhf worker: never adopted by id.
        #expect(!WorkerProcesses.isWorker(polite, id: "generator-here-0"))
        let started = Date()
        #expect(workers.stopAll(graceSeconds: 0.5) == 2)
        #expect(Date().timeIntervalSince(started) < 5)
        #expect(!WorkerProcesses.isAlive(polite) && !WorkerProcesses.isAlive(stubborn))
        #expect(workers.all.isEmpty)
    }

    @Test func aWorkerThatExitsIsReportedWithItsLog() throws {
        let (workers, dir) = try WorkerProcessesTests.supervisor()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let host = WorkerHost(name: "here", address: "local", workers: [.learner: 1])
        try workers.start(id: "learner-here-0", role: .learner, host: host, arguments: ["-c", "echo no checkpoint here >&2; exit 3"])
        #expect(TestKit.waitFor(5) { workers.firstExited() != nil })
        let report = try #require(workers.firstExited())
        #expect(report.contains("learner on host here exited with status 3") && report.contains("no checkpoint here"), "\(report)")
        // An executable that does not exist: the start fails naming the host and role.
        let (missing, other) = try WorkerProcessesTests.supervisor("/nonexistent/rlhf")
        defer { try? FileManager.default.removeItem(atPath: other) }
        #expect(throws: WorkerProcesses.Failure.self) { try missing.start(id: "x", role: .generator, host: host, arguments: []) }
    }

    @Test func anAdoptedProcessIsWatchedAndStoppedByPid() throws {
        let (workers, dir) = try WorkerProcessesTests.supervisor()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A process this supervisor did not start (an earlier launch's), adopted by pid.
        let stray = Process()
        stray.executableURL = URL(fileURLWithPath: "/bin/sleep")
        stray.arguments = ["30"]
        try stray.run()
        workers.adopt(id: "reference-policy-here-0", role: .referencePolicy, host: WorkerHost(name: "here", address: "local", workers: [:]),
                      pid: stray.processIdentifier)
        #expect(workers.all.first?.isAdopted == true && workers.all.first?.isRunning == true)
        #expect(workers.stopAll(graceSeconds: 1) == 1)
        stray.waitUntilExit()
        #expect(stray.terminationReason == .uncaughtSignal)
    }
}
