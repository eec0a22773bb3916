import ClusterRuntime
import Foundation
import Logging
import Transport
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
    /// Guards `launched` and `coordinator`: `stopAll` may run on a signal handler's queue.
    private let lock = NSLock()
    private var launched: [Launched] = []
    private var coordinator: Coordinator?
    /// The workers started so far (a snapshot).
    private var started: [Launched] { lock.withLock { launched } }

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
        settings.metricsBind = spec.metrics
        if let curve = spec.curve {
            settings.curve = try CurveKeyFile.server(keyFile: curve.server + ".key", admitting: [curve.client + ".pub"])
        }
        let coordinator = try Coordinator(settings: settings)
        lock.withLock { self.coordinator = coordinator }
        defer { stop(report: report) }
        report("coordinator listening on \(coordinator.endpoint)")
        if let m = coordinator.metricsEndpoint { report("metrics at http://\(m.dropFirst(6))/metrics") }
        try startWorkers(endpoint: coordinator.endpoint)
        report("started \(started.count) workers on \(Set(started.map(\.host)).count) host(s); waiting for them to register")
        try waitForRegistration(coordinator)
        report("all \(started.count) workers registered and healthy")
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
                    if role == .rewardModel, let head = spec.rewardHead { arguments += ["--head", head] }
                    if role == .safetyModel, let head = spec.safetyHead { arguments += ["--head", head] }
                    if role == .safetyModel { arguments += ["--seed", "2"] }
                    if let curve = spec.curve {
                        arguments += ["--curve-server", curve.server + ".pub", "--curve-key", curve.client + ".key"]
                        if role == .learner { arguments += ["--curve-serve-key", curve.server + ".key", "--curve-allow", curve.client + ".pub"] }
                    }
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
                    lock.withLock { launched.append(Launched(host: host.name, role: role, id: id, process: process, log: log)) }
                }
            }
        }
    }

    private func waitForRegistration(_ coordinator: Coordinator) throws {
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            for worker in started where !worker.process.isRunning {
                let tail = (try? String(contentsOfFile: worker.log, encoding: .utf8))?.split(separator: "\n").suffix(3).joined(separator: " | ") ?? ""
                throw Failure(message: "worker \(worker.role.rawValue) on host \(worker.host) exited with status \(worker.process.terminationStatus) before registering: \(tail)")
            }
            let healthy = Set(coordinator.workers().filter { $0.health == .healthy }.map(\.registration.workerID))
            if started.allSatisfy({ healthy.contains($0.id) }) { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        let healthy = Set(coordinator.workers().map(\.registration.workerID))
        let missing = started.filter { !healthy.contains($0.id) }.map { "\($0.role.rawValue) on \($0.host)" }
        throw Failure(message: "workers did not register within 120 s: \(missing.joined(separator: ", "))")
    }

    private func run(_ step: ClusterSpec.Step, index: Int, coordinator: Coordinator, report: (String) -> Void) throws {
        switch step {
        case let .generate(prompts, samples, maxNew, temperature):
            coordinator.setProgress(stage: "generate")
            let request = Launcher.generateRequest(prompts: prompts, samples: samples, maxNewTokens: maxNew,
                                                   temperature: temperature, seed: UInt64(index + 1),
                                                   policyVersion: coordinator.status().policyVersion)
            let start = Date()
            let results = try coordinator.generate(request, promptsPerTask: 1)
            let seconds = Date().timeIntervalSince(start)
            let tokens = results.reduce(0) { $0 + $1.sample.ids.count }
            report(String(format: "step %d generate: %d prompts x %d samples -> %d samples, %d tokens in %.2f s (%.0f tok/s over the generators)",
                          index + 1, prompts, samples, results.count, tokens, seconds, Double(tokens) / seconds))
        case let .round(prompts, samples, maxNew, temperature, lr):
            try runRound(index: index, prompts: prompts, samples: samples, maxNewTokens: maxNew, temperature: temperature,
                         learningRate: lr, coordinator: coordinator, report: report)
        case let .hold(seconds):
            coordinator.setProgress(stage: "hold")
            report(String(format: "step %d hold: the cluster stays up for %.1f s", index + 1, seconds))
            Thread.sleep(forTimeInterval: seconds)
        }
    }

    /// A generate request of `prompts` synthetic prompts (BOS and 4 random ids: the spec has no data
    /// yet), `samples` samples each.
    static func generateRequest(prompts: Int, samples: Int, maxNewTokens: Int, temperature: Float, seed: UInt64,
                                policyVersion: UInt64) -> Rlhf_V1_GenerateRequest {
        var request = Rlhf_V1_GenerateRequest()
        var rng = SeededGeneratorShim(seed: seed)
        request.prompts = (0..<prompts).map { i in
            var p = Rlhf_V1_Prompt()
            p.promptID = UInt64(i)
            p.ids = [1] + (0..<4).map { _ in Int32(3 + rng.next() % 200) }
            return p
        }
        request.samplesPerPrompt = UInt32(samples)
        request.sampling.temperature = temperature
        request.sampling.topP = 1
        request.seed = seed
        request.maxNewTokens = UInt32(maxNewTokens)
        request.stopToken = 2
        request.policyVersion = policyVersion
        return request
    }

    private func runRound(index: Int, prompts: Int, samples: Int, maxNewTokens: Int, temperature: Float, learningRate: Float,
                          coordinator: Coordinator, report: (String) -> Void) throws {
        let version = coordinator.status().policyVersion
        let round = coordinator.status().round + 1
        let roles = Set(started.map(\.role))
        for needed in [WorkerRole.generator, .rewardModel, .referencePolicy, .learner] where !roles.contains(needed) {
            throw Failure(message: "plan step \(index + 1) (round) needs a \(needed.rawValue) worker; the spec starts none")
        }
        let start = Date()
        coordinator.setProgress(stage: "round: generate", round: round)
        let request = Launcher.generateRequest(prompts: prompts, samples: samples, maxNewTokens: maxNewTokens, temperature: temperature,
                                               seed: UInt64(1000 * round) + UInt64(index), policyVersion: version)
        let generated = try coordinator.generate(request, promptsPerTask: 1).filter { !$0.sample.ids.isEmpty }
        guard !generated.isEmpty else { throw Failure(message: "round \(round): every sample was empty") }
        let promptIDs = Dictionary(uniqueKeysWithValues: request.prompts.map { ($0.promptID, $0.ids) })
        let sequences = generated.enumerated().map { i, g -> Rlhf_V1_Sequence in
            var s = Rlhf_V1_Sequence()
            s.id = UInt64(i)
            s.promptIds = promptIDs[g.sample.promptID] ?? []
            s.responseIds = g.sample.ids
            return s
        }
        coordinator.setProgress(stage: "round: score")
        let rewards = try coordinator.score(sequences, model: .rewardModel)
        let safety = roles.contains(.safetyModel) ? try coordinator.score(sequences, model: .safetyModel) : nil
        coordinator.setProgress(stage: "round: reference")
        // The reference stays where it started (the policy before these rounds): the KL measures drift from it.
        let referenceVersion = coordinator.workers().first { $0.registration.role == .referencePolicy && $0.health == .healthy }?.policyVersion ?? 0
        let reference = try coordinator.referenceLogProbs(sequences, policyVersion: referenceVersion)
        let policyLogProbs = generated.map(\.logProbs)
        let kl = RoundSummary.meanSequenceKL(policy: policyLogProbs, reference: reference)
        let best = RoundSummary.bestPerPrompt(promptIDs: generated.map(\.sample.promptID), scores: rewards)
        coordinator.setTrainingSignals(rewardMean: Double(rewards.reduce(0, +)) / Double(rewards.count), kl: kl)
        coordinator.setProgress(stage: "round: train")
        var batch = Rlhf_V1_TrainBatch()
        batch.kind = .sft
        batch.sequences = best.map { sequences[$0] }
        batch.learningRate = learningRate
        batch.policyVersion = version
        let stats = try coordinator.train(batch)
        coordinator.setProgress(stage: "round: sync")
        let syncStart = Date()
        let synced = try coordinator.syncWeights(stats.announce, roles: [.generator])
        coordinator.setProgress(stage: "round done")
        let safetyText = safety.map { String(format: ", safety mean %.4f", Double($0.reduce(0, +)) / Double($0.count)) } ?? ""
        report(String(format: "step %d round %d: %d samples, reward mean %.4f (best-of-%d mean %.4f)%@, KL to reference %.4f; "
                      + "SFT on %d best: loss %.4f, grad norm %.3f; policy v%llu synced to %d generators in %.2f s; round %.2f s",
                      index + 1, round, generated.count, Double(rewards.reduce(0, +)) / Double(rewards.count), samples,
                      Double(best.map { rewards[$0] }.reduce(0, +)) / Double(best.count), safetyText, kl, best.count, stats.loss,
                      stats.gradNorm, stats.policyVersion, synced.count, Date().timeIntervalSince(syncStart), Date().timeIntervalSince(start)))
    }

    /// SIGTERM to every worker, then the coordinator.
    private func stop(report: (String) -> Void) {
        let stopped = stopAll(graceSeconds: Launcher.stopGraceSeconds)
        if stopped > 0 { report("stopped \(stopped) workers and the coordinator") }
    }

    /// Seconds a worker gets to drain after SIGTERM before it is killed.
    public static let stopGraceSeconds = 1.5

    /// SIGTERM to every worker started, SIGKILL to any still running after `graceSeconds`, then the
    /// coordinator. Safe to call from a signal handler's queue while `run` is in progress, and twice.
    /// Returns how many workers it stopped.
    @discardableResult
    public func stopAll(graceSeconds: Double) -> Int {
        let workers = lock.withLock { () -> [Launched] in
            defer { launched.removeAll() }
            return launched
        }
        for worker in workers where worker.process.isRunning { worker.process.terminate() }
        let deadline = Date().addingTimeInterval(graceSeconds)
        while workers.contains(where: { $0.process.isRunning }) && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        for worker in workers where worker.process.isRunning {
            kill(worker.process.processIdentifier, SIGKILL)
            logger.warning("worker did not stop in time; killed", metadata: ["worker": "\(worker.id)", "host": "\(worker.host)"])
        }
        for worker in workers { worker.process.waitUntilExit() }
        lock.withLock { () -> Coordinator? in defer { coordinator = nil }; return coordinator }?.shutdown()
        return workers.count
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

/// The arithmetic of a round's report, apart from the I/O.
enum RoundSummary {
    /// Mean over sequences of `sum_t (log pi(t) - log ref(t))`: the Monte Carlo KL(pi || ref) of the sampled responses.
    static func meanSequenceKL(policy: [[Float]], reference: [[Float]]) -> Double {
        let pairs = zip(policy, reference).filter { $0.0.count == $0.1.count }
        guard !pairs.isEmpty else { return 0 }
        return pairs.reduce(0.0) { sum, pair in sum + zip(pair.0, pair.1).reduce(0.0) { $0 + Double($1.0 - $1.1) } } / Double(pairs.count)
    }

    /// For each prompt (in first-seen order), the index of its highest-scored sample (the first on ties).
    static func bestPerPrompt(promptIDs: [UInt64], scores: [Float]) -> [Int] {
        var best: [UInt64: Int] = [:], order: [UInt64] = []
        for (i, id) in promptIDs.enumerated() {
            if let b = best[id] {
                if scores[i] > scores[b] { best[id] = i }
            } else {
                best[id] = i
                order.append(id)
            }
        }
        return order.map { best[$0]! }
    }
}
