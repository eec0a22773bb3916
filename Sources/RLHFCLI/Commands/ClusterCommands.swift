import ArgumentParser
import ClusterRuntime
import Foundation
import LlamaCore
import Logging
import Orchestrator
import Synchronization
import Transport
import Wire
import Workers
#if canImport(Glibc)
import Glibc
#endif

extension WorkerRole: ExpressibleByArgument {}

/// Blocks until SIGINT or SIGTERM.
func waitForTerminationSignal() {
    let done = DispatchSemaphore(value: 0)
    var sources: [DispatchSourceSignal] = []
    for sig in [SIGINT, SIGTERM] {
        signal(sig, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        source.setEventHandler { done.signal() }
        source.resume()
        sources.append(source)
    }
    done.wait()
    sources.forEach { $0.cancel() }
}

/// `rlhf coordinator`: the coordinator daemon (`rlhf launch` starts it for you).
struct CoordinatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coordinator",
        abstract: "Run the coordinator: admits workers, tracks their health, answers rlhf status."
    )

    @Option(help: "Endpoint to bind, e.g. tcp://0.0.0.0:5555 (port * picks one; the bound endpoint is printed).")
    var bind: String = "tcp://127.0.0.1:5555"
    @Option(help: "Heartbeat interval asked of workers, in milliseconds.")
    var heartbeatMs: UInt64 = 500

    func run() throws {
        var settings = Coordinator.Settings(bind: bind)
        settings.membership.heartbeatIntervalMilliseconds = heartbeatMs
        let coordinator: Coordinator
        do { coordinator = try Coordinator(settings: settings) } catch { throw cliFailure(error) }
        print("coordinator listening on \(coordinator.endpoint)")
        fflush(nil)
        waitForTerminationSignal()
        coordinator.shutdown()
    }
}

/// `rlhf worker`: a worker daemon joining a running cluster.
struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a worker daemon that joins the coordinator at --coordinator (SIGTERM leaves)."
    )

    @Option(help: "generator, reward-model, safety-model, learner or reference-policy.")
    var role: WorkerRole
    @Option(help: "Coordinator endpoint, e.g. tcp://10.0.0.1:5555.")
    var coordinator: String
    @Option(help: "Worker id (default: role-host-pid).")
    var id: String?
    @Option(help: "Compute threads.")
    var threads: Int = 1
    @Option(help: "Sequences processed at once.")
    var capacity: Int = 16
    @Option(help: "Model checkpoint the role serves (generator: the policy).")
    var checkpoint: String?

    func run() throws {
        var settings = WorkerDaemon.Settings(role: role, workerID: id ?? "\(role.rawValue)-\(BuildIdentity.host)-\(BuildIdentity.pid)",
                                             coordinator: coordinator)
        settings.capacity = capacity
        let daemon: WorkerDaemon
        do {
            var work: (@Sendable (WireMessage) throws -> WireMessage?)? = nil
            if role == .generator, let checkpoint {
                let generator = Generator(model: try LlamaModel(checkpoint: checkpoint), threads: threads)
                work = { message in try generator.handle(message) }
            }
            daemon = try WorkerDaemon(settings: settings, work: work)
            try daemon.waitForRegistration()
        } catch {
            throw cliFailure(error)
        }
        waitForTerminationSignal()
        daemon.shutdown()
    }
}

/// `rlhf status`: the cluster's workers and progress.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show the cluster: workers per role (health, host, pid, policy version), plan stage, queues."
    )

    @Option(help: "Coordinator endpoint (default: the coordinator of cluster/local.yaml).")
    var coordinator: String?
    @Flag(help: "One JSON object.")
    var json = false
    @Option(help: "Seconds to wait for the coordinator.")
    var timeout: Double = 5

    func run() throws {
        let coordinator: String
        do {
            coordinator = try self.coordinator ?? ClusterSpec.coordinatorEndpoint(ofSpecAt: "cluster/local.yaml")
        } catch {
            throw cliFailure(error)
        }
        let loop = try PollLoop()
        defer { loop.shutdown() }
        let answer = Mutex<WireMessage?>(nil)
        let arrived = DispatchSemaphore(value: 0)
        let (socket, _) = try loop.open(.dealer, connect: [coordinator]) { frames in
            if let m = try? WireMessage.decode(frames) {
                answer.withLock { $0 = m }
                arrived.signal()
            }
        }
        loop.send(socket, try WireMessage(type: .statusRequest, requestID: 1, body: Rlhf_V1_StatusRequest(), sender: "status").frames())
        guard arrived.wait(timeout: .now() + timeout) == .success, let message = answer.withLock({ $0 }) else {
            printError("error: no answer from the coordinator at \(coordinator) within \(timeout) s")
            throw ExitCode.failure
        }
        let status = try message.decodeBody(Rlhf_V1_StatusReply.self)
        if json {
            let workers: [[String: Any]] = status.workers.map { w in
                ["role": WorkerRole(wire: w.role)?.rawValue ?? "unknown", "id": w.workerID, "host": w.host, "pid": Int(w.pid),
                 "state": w.health, "policy_version": Int(w.policyVersion), "tasks_in_flight": Int(w.tasksInFlight),
                 "last_heartbeat_ms": Int(w.lastHeartbeatMs)]
            }
            print(jsonLine(["workers": workers, "plan_stage": status.planStage, "round": Int(status.round), "step": Int(status.step),
                            "queue_depths": Dictionary(uniqueKeysWithValues: status.queueDepths.map { ($0.queue, Int($0.depth)) }),
                            "tokens_per_second": status.tokensPerSecond, "reward_mean": status.rewardMean, "kl": status.kl,
                            "policy_version": Int(status.policyVersion)]))
        } else {
            print("coordinator \(coordinator): stage \(status.planStage), round \(status.round), step \(status.step), policy v\(status.policyVersion)")
            for role in WorkerRole.allCases {
                let members = status.workers.filter { WorkerRole(wire: $0.role) == role }
                guard !members.isEmpty else { continue }
                print("  \(role.rawValue): \(members.count) (\(members.filter { $0.health == "healthy" }.count) healthy)")
                for w in members {
                    print("    \(w.workerID)  \(w.health)  host \(w.host)  pid \(w.pid)  policy v\(w.policyVersion)  last heartbeat \(w.lastHeartbeatMs) ms ago")
                }
            }
        }
    }
}

/// `rlhf launch`: the cluster launch command.
struct LaunchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "launch",
        abstract: "Start the coordinator and the workers a cluster spec names, run its plan, stop everything. Without SPEC: cluster/local.yaml (everything on this machine)."
    )

    @Argument(help: "Cluster spec (YAML).")
    var spec: String = "cluster/local.yaml"

    func run() throws {
        guard let text = try? String(contentsOfFile: spec, encoding: .utf8) else {
            printError("error: cannot read cluster spec \(spec) (run from the repository root, or give a path)")
            throw ExitCode.failure
        }
        do {
            let parsed = try ClusterSpec.parse(text, baseDirectory: (spec as NSString).deletingLastPathComponent)
            try Launcher(spec: parsed).run { print($0); fflush(nil) }
        } catch {
            throw cliFailure(error)
        }
    }
}
