import ClusterRuntime
import Foundation
import Logging
import Wire

/// `rlhf launch`: starts the coordinator and the spec's workers (local processes, network-namespace test
/// hosts, or ssh), waits for every worker to register, runs the plan, and stops everything.
public final class Launcher {
    /// A launch failure that names the host and role at fault.
    public struct Failure: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    struct Launched {
        let host: String
        let role: WorkerRole
        let id: String
        let process: Process
        let log: String
    }

    public let spec: ClusterSpec
    private let executable: String
    private let logger: Logger
    private var launched: [Launched] = []
    private var coordinator: Coordinator?

    /// A launcher for `spec`, starting workers from `executable` (this program, by default).
    public init(spec: ClusterSpec, executable: String = CommandLine.arguments[0], logger: Logger = Logger(label: "rlhf.launch")) {
        self.spec = spec
        self.executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? executable
        self.logger = logger
    }

    /// Runs the whole launch; `report` receives one line per event for the user.
    public func run(report: (String) -> Void) throws {
        var settings = Coordinator.Settings(bind: spec.coordinator)
        settings.membership.heartbeatIntervalMilliseconds = spec.heartbeatMilliseconds
        let coordinator = try Coordinator(settings: settings)
        self.coordinator = coordinator
        defer { stop(report: report) }
        report("coordinator listening on \(coordinator.endpoint)")
        try startWorkers(endpoint: coordinator.endpoint)
        report("started \(launched.count) workers on \(Set(launched.map(\.host)).count) host(s); waiting for them to register")
        try waitForRegistration(coordinator)
        report("all \(launched.count) workers registered and healthy")
        for (i, step) in spec.plan.enumerated() {
            try run(step, index: i, coordinator: coordinator, report: report)
        }
        report("plan finished")
    }

    private func startWorkers(endpoint: String) throws {
        let logs = NSTemporaryDirectory() + "rlhf-launch-\(ProcessInfo.processInfo.processIdentifier)"
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        for host in spec.hosts {
            for role in WorkerRole.allCases {
                for i in 0..<(host.workers[role] ?? 0) {
                    let id = "\(role.rawValue)-\(host.name)-\(i)"
                    let exe = host.executable ?? executable
                    var arguments = ["worker", "--role", role.rawValue, "--coordinator", endpoint, "--id", id,
                                     "--checkpoint", spec.checkpoint]
                    let process = Process()
                    if host.address == "local" {
                        if let ns = host.namespace {
                            process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
                            arguments = ["netns", "exec", ns, exe] + arguments
                        } else {
                            process.executableURL = URL(fileURLWithPath: exe)
                        }
                    } else {
                        process.executableURL = URL(fileURLWithPath: "/usr/bin/ssh")
                        arguments = ["-o", "BatchMode=yes", host.address, exe] + arguments
                    }
                    process.arguments = arguments
                    let log = logs + "/\(id).log"
                    _ = FileManager.default.createFile(atPath: log, contents: nil)
                    process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
                    process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
                    process.standardInput = FileHandle.nullDevice
                    do {
                        try process.run()
                    } catch {
                        throw Failure(message: "could not start \(role.rawValue) on host \(host.name): \(error)")
                    }
                    launched.append(Launched(host: host.name, role: role, id: id, process: process, log: log))
                }
            }
        }
    }

    private func waitForRegistration(_ coordinator: Coordinator) throws {
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            for worker in launched where !worker.process.isRunning {
                let tail = (try? String(contentsOfFile: worker.log, encoding: .utf8))?.split(separator: "\n").suffix(3).joined(separator: " | ") ?? ""
                throw Failure(message: "worker \(worker.role.rawValue) on host \(worker.host) exited with status \(worker.process.terminationStatus) before registering: \(tail)")
            }
            let healthy = Set(coordinator.workers().filter { $0.health == .healthy }.map(\.registration.workerID))
            if launched.allSatisfy({ healthy.contains($0.id) }) { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        let healthy = Set(coordinator.workers().map(\.registration.workerID))
        let missing = launched.filter { !healthy.contains($0.id) }.map { "\($0.role.rawValue) on \($0.host)" }
        throw Failure(message: "workers did not register within 120 s: \(missing.joined(separator: ", "))")
    }

    private func run(_ step: ClusterSpec.Step, index: Int, coordinator: Coordinator, report: (String) -> Void) throws {
        switch step {
        case let .generate(prompts, samples, maxNew, temperature):
            var request = Rlhf_V1_GenerateRequest()
            var rng = SeededGeneratorShim(seed: UInt64(index + 1))
            request.prompts = (0..<prompts).map { i in
                var p = Rlhf_V1_Prompt()
                p.promptID = UInt64(i)
                p.ids = [1] + (0..<4).map { _ in Int32(3 + rng.next() % 200) }
                return p
            }
            request.samplesPerPrompt = UInt32(samples)
            request.sampling.temperature = temperature
            request.sampling.topP = 1
            request.seed = UInt64(index + 1)
            request.maxNewTokens = UInt32(maxNew)
            request.stopToken = 2
            let start = Date()
            let results = try coordinator.generate(request, promptsPerTask: 1)
            let seconds = Date().timeIntervalSince(start)
            let tokens = results.reduce(0) { $0 + $1.sample.ids.count }
            report(String(format: "step %d generate: %d prompts x %d samples -> %d samples, %d tokens in %.2f s (%.0f tok/s over the generators)",
                          index + 1, prompts, samples, results.count, tokens, seconds, Double(tokens) / seconds))
        case let .hold(seconds):
            report(String(format: "step %d hold: the cluster stays up for %.1f s", index + 1, seconds))
            Thread.sleep(forTimeInterval: seconds)
        }
    }

    /// SIGTERM to every worker, then the coordinator.
    private func stop(report: (String) -> Void) {
        for worker in launched where worker.process.isRunning { worker.process.terminate() }
        for worker in launched { worker.process.waitUntilExit() }
        coordinator?.shutdown()
        if !launched.isEmpty { report("stopped \(launched.count) workers and the coordinator") }
        launched.removeAll()
    }
}

/// SplitMix64 for the plan's synthetic prompts (Orchestrator keeps LlamaCore out of its imports).
struct SeededGeneratorShim {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
