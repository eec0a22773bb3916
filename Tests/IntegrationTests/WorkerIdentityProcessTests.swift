import ClusterRuntime
import Foundation
import Testing
import TestKit

/// Worker ids are held by one process at a time, with real processes: a coordinator daemon
/// (`rlhf coordinator`, its own process, so that a crash shows as its exit) and worker daemons.
@Suite(.serialized) struct WorkerIdentityProcessTests {
    /// Starts `rlhf arguments` with its output in `log`.
    static func spawn(_ arguments: [String], log: String) throws -> Process { try TestKit.spawn(arguments, log: log) }

    /// The workers `rlhf status --json` lists: (id, role, pid, state).
    static func workers(_ endpoint: String) -> [(id: String, role: String, pid: Int, state: String)] {
        let out = TestKit.scratch("status") + ".json"
        defer { try? FileManager.default.removeItem(atPath: out) }
        guard let p = try? spawn(["status", "--coordinator", endpoint, "--json", "--timeout", "2"], log: out) else { return [] }
        p.waitUntilExit()
        guard p.terminationStatus == 0, let data = FileManager.default.contents(atPath: out),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let list = object["workers"] as? [[String: Any]] else { return [] }
        return list.map { ($0["id"] as? String ?? "", $0["role"] as? String ?? "", $0["pid"] as? Int ?? 0, $0["state"] as? String ?? "") }
    }

    @Test func aSecondProcessWithALiveWorkersIDIsRefusedAndTheCoordinatorKeepsServing() throws {
        let dir = TestKit.scratch("dup")
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // A fixed port below the ephemeral range (32768-60999) that port * and outgoing connections draw from.
        let endpoint = "tcp://127.0.0.1:\(try TestKit.freePort())"
        let coordinator = try WorkerIdentityProcessTests.spawn(["coordinator", "--bind", endpoint, "--heartbeat-ms", "100"], log: dir + "/coordinator.log")
        var processes = [coordinator]
        defer { for p in processes where p.isRunning { kill(p.processIdentifier, SIGKILL) } }
        func worker(_ role: String, _ log: String) throws -> Process {
            let p = try WorkerIdentityProcessTests.spawn(["worker", "--role", role, "--coordinator", endpoint, "--id", "dup"], log: dir + "/" + log)
            processes.append(p)
            return p
        }
        let holder = try worker("generator", "holder.log")
        let holderPid = Int(holder.processIdentifier)
        #expect(TestKit.waitFor(30) { WorkerIdentityProcessTests.workers(endpoint).contains { $0.id == "dup" && $0.pid == holderPid } })

        // A reward model started with the same id is refused, keeps trying for a while, then exits saying why.
        let claimant = try worker("reward-model", "claimant.log")
        #expect(TestKit.waitFor(30) { !claimant.isRunning })
        #expect(claimant.terminationStatus == 1)
        let said = (try? String(contentsOfFile: dir + "/claimant.log", encoding: .utf8)) ?? ""
        #expect(said.contains("worker id dup is held by a live generator pid \(holderPid)"), "\(said)")
        #expect(said.contains("every worker needs its own --id"))

        // The crash: claimants that leave (kill -9, SIGTERM) while the coordinator refuses them.
        for i in 0 ..< 8 {
            let c = try worker(i % 3 == 0 ? "learner" : "reward-model", "claimant-\(i).log")
            Thread.sleep(forTimeInterval: 0.2 + 0.15 * Double(i % 4))
            kill(c.processIdentifier, i % 2 == 0 ? SIGKILL : SIGTERM)
            c.waitUntilExit()
            #expect(coordinator.isRunning, "the coordinator died after claimant \(i) left")
        }
        Thread.sleep(forTimeInterval: 0.5)
        #expect(coordinator.isRunning)
        let listed = WorkerIdentityProcessTests.workers(endpoint)
        #expect(listed.count == 1 && listed.first?.role == "generator" && listed.first?.pid == holderPid && listed.first?.state == "healthy",
                "\(listed)")

        // The holder killed with -9 and started again under its id (as a launcher restarts a worker): the
        // new process is admitted at once, not after the old one's missed heartbeats.
        kill(holder.processIdentifier, SIGKILL)
        holder.waitUntilExit()
        let started = Date()
        let replacement = try worker("generator", "replacement.log")
        let replacementPid = Int(replacement.processIdentifier)
        #expect(TestKit.waitFor(20) {
            WorkerIdentityProcessTests.workers(endpoint).contains { $0.id == "dup" && $0.pid == replacementPid && $0.state == "healthy" }
        })
        #expect(Date().timeIntervalSince(started) < 5, "the replacement was admitted after \(Date().timeIntervalSince(started)) s")
        #expect(coordinator.isRunning)
    }
}
