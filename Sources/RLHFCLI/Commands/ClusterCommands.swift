import ArgumentParser
import ClusterRuntime
import Foundation
import Launcher
import LlamaCore
import LlamaTraining
import Logging
import Recipe
import Synchronization
import Transport
import Wire
import Workers
#if canImport(Glibc)
import Glibc
#endif

extension WorkerRole: ExpressibleByArgument {}


/// SIGINT and SIGTERM, caught from creation on (whatever disposition the process inherited):
/// `wait` returns when one arrives, or when other work given to it ends first.
final class TerminationSignals: @unchecked Sendable {
    private var sources: [DispatchSourceSignal] = []
    private let arrived = DispatchSemaphore(value: 0)
    private final class Caught: Sendable { let signal = Atomic<Int32>(0) }
    private let caught = Caught()

    init() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [caught, arrived] in
                caught.signal.store(sig, ordering: .releasing)
                arrived.signal()
            }
            source.resume()
            sources.append(source)
        }
    }

    /// The signal caught, if one was.
    var received: Int32? {
        let sig = caught.signal.load(ordering: .acquiring)
        return sig == 0 ? nil : sig
    }

    /// Blocks until a signal arrives, or until `alsoUntil` (run on a thread of its own) returns.
    func wait(alsoUntil: (@Sendable () -> Void)? = nil) {
        if let alsoUntil {
            Thread.detachNewThread { [arrived] in
                alsoUntil()
                arrived.signal()
            }
        }
        arrived.wait()
        // Leave the wake-up for a later wait if this one was woken by the other work.
        if received != nil { arrived.signal() }
    }

    deinit { sources.forEach { $0.cancel() } }
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
    @Option(help: "Serve Prometheus metrics over HTTP here, e.g. tcp://0.0.0.0:9555 (GET /metrics).")
    var metrics: String?
    @Option(help: "CURVE: this coordinator's key file (from rlhf keys generate); workers then need --curve-server and --curve-key.")
    var curveKey: String?
    @Option(help: "CURVE: public key files of the workers admitted, comma-separated.")
    var curveAllow: String?
    @Option(help: "The run this coordinator serves: workers started for another run are refused (default: none, every worker is admitted).")
    var runID: String?

    func validate() throws {
        if let runID { try OptionCheck.name(runID, option: "--run-id") }
        try OptionCheck.integer(heartbeatMs, "--heartbeat-ms", 10 ... 60_000)
    }

    func run() throws {
        var settings = Coordinator.Settings(bind: bind)
        settings.runID = runID ?? ""
        settings.membership.heartbeatIntervalMilliseconds = heartbeatMs
        settings.metricsBind = metrics
        if let curveKey {
            do {
                settings.curve = try CurveKeyFile.server(keyFile: curveKey, admitting: (curveAllow ?? "").split(separator: ",").map(String.init))
            } catch {
                throw cliFailure(error)
            }
        }
        let coordinator: Coordinator
        do { coordinator = try Coordinator(settings: settings) } catch { throw cliFailure(error) }
        print("coordinator listening on \(coordinator.endpoint)")
        if let m = coordinator.metricsEndpoint { print("metrics at http://\(m.dropFirst(6))/metrics") }
        fflush(nil)
        TerminationSignals().wait()
        coordinator.shutdown()
    }
}

/// `rlhf worker`: a worker daemon joining a running cluster.
struct WorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Run a worker daemon that joins the coordinator at --coordinator (SIGTERM drains and leaves)."
    )

    @Option(help: "generator, reward-model, safety-model, learner, reference-policy or reward-function.")
    var role: WorkerRole
    @Option(help: "Coordinator endpoint, e.g. tcp://10.0.0.1:5555.")
    var coordinator: String
    @Option(help: "Worker id (default: role-host-pid); unique in the cluster: a second live worker with the same id is refused.")
    var id: String?
    @Option(help: "The run this worker serves (rlhf launch passes its own); by default the run of the first coordinator that admits it.")
    var runID: String?
    @Option(help: "Seconds without a word from the coordinator after which the worker gives up and exits (before it is admitted too); 0: never.")
    var orphanTimeout: Double = Double(ClusterSpec.defaultOrphanTimeoutSeconds)
    @Option(help: "Compute threads.")
    var threads: Int = 1
    @Option(help: "Sequences processed at once.")
    var capacity: Int = 16
    @Option(help: "Generator: sequences decoded at once (continuous batching: a slot whose answer ends takes the next queued sample).")
    var decodeSlots: Int = GeneratorService.defaultDecodeSlots
    @Option(help: "Generator and learner: the number format of their matrix products, float32 or bfloat16 (bfloat16 operands, float32 sums; a learner keeps float32 weights, gradients and optimizer state).")
    var precision: WeightPrecision = .float32
    @Option(help: "Generator: what its KV caches store, float32 or bfloat16.")
    var kvCache: KVCache.Precision = .float32
    @Option(help: "Learner: train the policy as LoRA adapters of this rank on its frozen weights (each version then sends only the adapters); 0: whole weights.")
    var loraRank: Int = 0
    @Option(help: "Learner, with --lora-rank: the adapters' alpha (they add alpha/rank B A).")
    var loraAlpha: Double = 16
    @Option(help: "Learner, with --lora-rank: dropout on the adapters' input while training.")
    var loraDropout: Double = 0
    @Option(help: "Learner, with --lora-rank: the adapted matrices, comma-separated (wq, wk, wv, wo, w1, w2, w3).")
    var loraTargets: String = "wq,wk,wv,wo"
    @Option(help: "Model checkpoint the role serves (the policy for generator, learner and reference-policy; the trunk for the reward models).")
    var checkpoint: String?
    @Option(help: "Reward and safety models: the score head, JSON {\"weight\": [dim floats], \"bias\": b}. Without it the head is initialised from --seed (an untrained scorer).")
    var head: String?
    @Option(help: "Seed of an initialised score head.")
    var seed: UInt64 = 1
    @Option(name: .customLong("pretrained-reward-model"), help: "Learner: a Hugging Face reward model the reward-model starts from when the plan trains it (its own head), instead of the policy with a seeded head.")
    var pretrainedRewardModel: String?
    @Option(name: .customLong("pretrained-safety-model"), help: "Learner: a Hugging Face reward model the safety-model starts from when the plan trains it.")
    var pretrainedSafetyModel: String?
    @Option(help: "Reward function: the command it runs, as words (JSON lines {prompt, response, prompt_id, sample_id, ...} in, {\"reward\": number} out).")
    var rewardCommand: String?
    @Option(help: "Reward function: the command's working directory.")
    var rewardDirectory: String?
    @Option(help: "Reward function: an HTTP endpoint in OpenRLHF's remote reward shape (POST {query, prompts, labels}, answered {rewards}), instead of a command.")
    var rewardEndpoint: String?
    @Option(help: "Reward function, endpoint: the prompt record's field sent as each answer's label.")
    var rewardLabelKey = "label"
    @Option(help: "Reward function: seconds one batch may take.")
    var rewardTimeout: Double = 600
    @Option(help: "Learner: the address consumers reach this host at (default: the address that routes to the coordinator).")
    var advertise: String?
    @Option(help: "Learner: directory its state is saved to at the end of every plan step (after-step-N/), to resume a plan without this process.")
    var stateDir: String?
    @Option(help: "Learner: start from the state saved after this 0-based plan step in --state-dir.")
    var restoreStep: Int?
    @Option(help: "Seconds a SIGTERM waits for tasks in flight before leaving anyway.")
    var drainTimeout: Double = 60
    @Option(help: "CURVE: the coordinator's public key file.")
    var curveServer: String?
    @Option(help: "CURVE: this worker's key file (from rlhf keys generate).")
    var curveKey: String?
    @Option(help: "CURVE, learner: the server key file its weight server uses (the coordinator's).")
    var curveServeKey: String?
    @Option(help: "CURVE, learner: public key files admitted to its weight server, comma-separated.")
    var curveAllow: String?
    @Option(help: ArgumentHelp("Fault injection for tests: a generator's compute hangs after this many decode steps.",
                               visibility: .hidden))
    var faultHangAfterSteps: Int?

    func validate() throws {
        if let id { try OptionCheck.name(id, option: "--id") }
        if let runID { try OptionCheck.name(runID, option: "--run-id") }
        try OptionCheck.number(orphanTimeout, "--orphan-timeout", 0 ... 604_800)
        try OptionCheck.threads(threads)
        try OptionCheck.integer(capacity, "--capacity", 1 ... 65_536)
        try OptionCheck.integer(decodeSlots, "--decode-slots", 1 ... 65_536)
        if role != .generator && role != .learner && precision != .float32 {
            throw ValidationError("--precision is a generator and learner option; a \(role.rawValue) computes in float32")
        }
        if role != .generator && kvCache != .float32 {
            throw ValidationError("--kv-cache is a generator option; a \(role.rawValue) keeps no KV cache")
        }
        try OptionCheck.integer(restoreStep, "--restore-step", 0 ... 1_000_000)
        try OptionCheck.integer(loraRank, "--lora-rank", 0 ... 4096)
        try OptionCheck.number(loraAlpha, "--lora-alpha", 0 ... 1_000_000, openBelow: true)
        try OptionCheck.number(loraDropout, "--lora-dropout", 0 ... 1, openAbove: true)
        if loraRank > 0 && role != .learner { throw ValidationError("--lora-rank is a learner option; a \(role.rawValue) trains nothing") }
        if role != .learner, let option = [(pretrainedRewardModel, "--pretrained-reward-model"), (pretrainedSafetyModel, "--pretrained-safety-model")]
            .first(where: { $0.0 != nil })?.1 {
            throw ValidationError("\(option) is a learner option (the model its reward training starts from); a \(role.rawValue) trains nothing")
        }
        if let problem = try loraSettings()?.problem() { throw ValidationError(problem) }
        try OptionCheck.number(drainTimeout, "--drain-timeout", 0 ... 86_400)
        try OptionCheck.number(rewardTimeout, "--reward-timeout", 0 ... 86_400, openBelow: true)
        if role == .rewardFunction && (rewardCommand == nil) == (rewardEndpoint == nil) {
            throw ValidationError("a reward-function worker needs --reward-command or --reward-endpoint (one of them)")
        }
        if role != .rewardFunction && (rewardCommand != nil || rewardEndpoint != nil) {
            throw ValidationError("--reward-command and --reward-endpoint are for --role reward-function")
        }
    }

    func run() throws {
        var settings = WorkerDaemon.Settings(role: role, workerID: id ?? "\(role.rawValue)-\(BuildIdentity.host)-\(BuildIdentity.pid)",
                                             coordinator: coordinator)
        settings.capacity = capacity
        settings.runID = runID
        settings.link.orphanTimeoutMilliseconds = UInt64(orphanTimeout * 1000)
        // From here on SIGTERM stops the worker: while it loads its model and while it waits to be admitted
        // too (a disposition inherited as "ignore" would otherwise hold it until its timeouts).
        let signals = TerminationSignals()
        if curveServer != nil || curveKey != nil {
            guard let curveServer, let curveKey else { throw cliFailure(ValidationError("CURVE needs both --curve-server and --curve-key")) }
            do {
                settings.curve = try CurveKeyFile.client(serverPublicKeyFile: curveServer, keyFile: curveKey)
            } catch {
                throw cliFailure(error)
            }
        }
        if checkpoint == nil && role != .rewardFunction {
            var logger = Logger(label: "rlhf.worker")
            logger[metadataKey: "worker"] = "\(settings.workerID)"
            logger.warning("no --checkpoint: this worker holds no model; it registers and heartbeats, and refuses every task")
        }
        let daemon: WorkerDaemon
        do {
            // One poll loop for the process: the daemon's connection and, on a learner, its weight servers.
            let loop = try PollLoop()
            let service = try makeService(loop: loop)
            if let config = service?.modelConfig {
                // What it holds (sequences of up to 256 tokens), against what the machine has.
                let memory = WorkerMemory.estimate(role: role, config: config, decodeSlots: decodeSlots, precision: precision, kvCache: kvCache,
                                                   lora: try loraSettings())
                var logger = Logger(label: "rlhf.worker")
                logger[metadataKey: "role"] = "\(role.rawValue)"
                logger[metadataKey: "worker"] = "\(settings.workerID)"
                logger.info("holds \(WorkerMemory.format(memory.bytes)): \(memory)", metadata: [
                    "resident_now": "\(WorkerMemory.format(MemoryProbe.currentResidentBytes()))",
                    "machine_available": "\(WorkerMemory.availableBytes().map(WorkerMemory.format) ?? "unknown")",
                ])
            }
            daemon = try WorkerDaemon(settings: settings, service: service, loop: loop)
        } catch {
            throw cliFailure(error)
        }
        signals.wait(alsoUntil: { try? daemon.waitForRegistration() })
        if let sig = signals.received, !daemon.isRegistered {
            // Not admitted yet: nothing to drain.
            daemon.shutdown()
            throw ExitCode(128 + sig)
        }
        if let reason = daemon.gaveUpReason {
            daemon.shutdown()
            throw cliFailure(WorkerDaemon.RegistrationError.gaveUp(reason))
        }
        signals.wait(alsoUntil: { daemon.waitUntilGivenUp() })
        if let reason = daemon.gaveUpReason {
            daemon.shutdown()
            throw cliFailure(WorkerDaemon.RegistrationError.gaveUp(reason))
        }
        daemon.drain(timeoutSeconds: drainTimeout)
        daemon.shutdown()
    }

    /// The LoRA settings of `--lora-*`; nil without `--lora-rank`.
    func loraSettings() throws -> LoRASettings? {
        guard loraRank > 0 else { return nil }
        let targets = try loraTargets.split(separator: ",").map { name in
            guard let target = LoRASettings.target(named: name.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--lora-targets: \(name) is not a matrix an adapter can target (choose from \(LoRASettings.targetable.map(\.name).joined(separator: ", ")))")
            }
            return target
        }
        return LoRASettings(rank: loraRank, alpha: loraAlpha, dropout: loraDropout, targets: targets)
    }

    /// The role's compute (a learner serves its weights on `loop`).
    private func makeService(loop: PollLoop) throws -> (any RoleService)? {
        if role == .rewardFunction, let rewardCommand {
            return try RewardFunctionService(arguments: rewardCommand.split(whereSeparator: \.isWhitespace).map(String.init),
                                             directory: rewardDirectory, timeoutSeconds: rewardTimeout)
        }
        if role == .rewardFunction, let rewardEndpoint {
            return try RewardFunctionService(endpoint: rewardEndpoint, labelKey: rewardLabelKey, timeoutSeconds: rewardTimeout)
        }
        guard let checkpoint else {
            // A worker without a model only registers and heartbeats (useful to test a cluster).
            return nil
        }
        func weights() throws -> ModelWeights { try Checkpoint.read(path: checkpoint).weights }
        switch role {
        case .generator:
            return GeneratorService(model: LlamaModel(weights: try weights(), precision: precision), threads: threads, decodeSlots: decodeSlots,
                                    kvCache: kvCache, faultHangAfterSteps: faultHangAfterSteps)
        case .rewardModel, .safetyModel:
            // The policy's trunk with the spec's head (or one from --seed), or a Hugging Face reward model with its own.
            return try RewardModelService.load(kind: role == .safetyModel ? .safetyModel : .rewardModel, checkpoint: checkpoint, head: head,
                                               seed: seed, threads: threads)
        case .referencePolicy:
            return ReferencePolicyService(weights: try weights(), threads: threads)
        case .rewardFunction:
            throw ValidationError("a reward-function worker needs --reward-command or --reward-endpoint")
        case .learner:
            let host = try advertise ?? Network.localAddress(toward: coordinator)
            let curve = try curveServeKey.map {
                try CurveKeyFile.server(keyFile: $0, admitting: (curveAllow ?? "").split(separator: ",").map(String.init))
            }
            var learnerSettings = LearnerService.Settings()
            learnerSettings.stateDirectory = stateDir
            learnerSettings.precision = precision
            learnerSettings.lora = try loraSettings()
            learnerSettings.pretrainedRewardModels = [ModelKind.rewardModel: pretrainedRewardModel, .safetyModel: pretrainedSafetyModel].compactMapValues { $0 }
            let learner = try LearnerService(weights: try weights(), threads: threads, settings: learnerSettings,
                                             serving: WeightServing(loop: loop, bind: "tcp://0.0.0.0:*", host: host, curve: curve))
            if let restoreStep {
                guard stateDir != nil else { throw ValidationError("--restore-step needs --state-dir") }
                try learner.restoreState(afterStep: restoreStep)
            }
            return learner
        }
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
    @Flag(help: "Refresh until interrupted.")
    var watch = false
    @Option(help: "CURVE: the coordinator's public key file.")
    var curveServer: String?
    @Option(help: "CURVE: a key file admitted by the coordinator.")
    var curveKey: String?
    @Option(help: "Seconds between refreshes with --watch.")
    var interval: Double = 2

    /// Seconds a wait may take: finite, positive, at most a day (a larger value overflowed the
    /// millisecond timeout and killed the process).
    static let longestWait: Double = 86_400

    func validate() throws {
        if (curveServer == nil) != (curveKey == nil) { throw ValidationError("CURVE needs both --curve-server and --curve-key") }
        try OptionCheck.number(timeout, "--timeout", 0 ... StatusCommand.longestWait, openBelow: true)
        try OptionCheck.number(interval, "--interval", 0 ... StatusCommand.longestWait, openBelow: true)
    }

    func run() throws {
        let coordinator: String
        do {
            coordinator = try self.coordinator ?? ClusterSpec.coordinatorEndpoint(ofSpecAt: "cluster/local.yaml")
        } catch {
            throw cliFailure(error)
        }
        // A distributed-actor call to the coordinator's control actor (handshake with the build hash first).
        var curve: Curve? = nil
        if let curveServer, let curveKey {
            do {
                curve = try CurveKeyFile.client(serverPublicKeyFile: curveServer, keyFile: curveKey)
            } catch {
                throw cliFailure(error)
            }
        }
        let system = try ClusterActorSystem(bind: nil, callTimeoutMilliseconds: Int(max(0.1, timeout) * 1000), curve: curve)
        defer { system.shutdown() }
        let control = try CoordinatorControl.resolve(id: CoordinatorControl.address(at: coordinator), using: system)
        let terminal = isatty(STDOUT_FILENO) != 0
        repeat {
            let status: ClusterStatus
            do {
                status = try blocking { try await control.status() }
            } catch RemoteCallError.timeout {
                printError("error: no answer from the coordinator at \(coordinator) within \(timeout) s")
                throw ExitCode.failure
            } catch {
                printError("error: the coordinator at \(coordinator): \(error)")
                throw ExitCode.failure
            }
            if watch && terminal && !json { print("\u{1B}[H\u{1B}[2J", terminator: "") }
            if json {
                print(StatusCommand.json(status))
            } else {
                print(StatusCommand.table(status, coordinator: coordinator), terminator: "")
            }
            fflush(nil)
            if watch { Thread.sleep(forTimeInterval: max(0.1, interval)) }
        } while watch
    }

    /// One JSON object: "workers" (role, id, host, pid, state, policy_version, ...) and the rest.
    static func json(_ status: ClusterStatus) -> String {
        let workers: [[String: Any]] = status.workers.map { w in
            ["role": w.role.rawValue, "id": w.id, "host": w.host, "pid": Int(w.pid),
             "state": w.health.rawValue, "policy_version": Int(w.policyVersion), "tasks_in_flight": w.tasksInFlight,
             "last_heartbeat_ms": Int(w.lastHeartbeatMilliseconds),
             "weights_crc32c": w.weightsChecksum == 0 ? NSNull() : String(format: "%08x", w.weightsChecksum) as Any,
             "tokens_processed": Int(w.tokensProcessed),
             // Slurm: the job, step and node of the worker's step; Kubernetes: its pod.
             "scheduler": w.placement.map { p -> Any in
                 ["scheduler": p.scheduler, "job_id": p.jobID, "step_id": p.stepID, "node": p.node] } ?? NSNull()]
        }
        return jsonLine(["workers": workers, "plan_stage": status.planStage.description, "plan_phase": status.planStage.phase.rawValue, "round": Int(status.round), "step": Int(status.step),
                         "queue_depths": Dictionary(uniqueKeysWithValues: status.queueDepths.map { ($0.key.rawValue, $0.value) }),
                         "tokens_per_second": status.tokensPerSecond, "reward_mean": status.rewardMean, "kl": status.kl,
                         "policy_version": Int(status.policyVersion), "tasks_redispatched": Int(status.tasksRedispatched),
                         "run_id": status.runID,
                         "rejected_frames": status.rejectedFrames.mapValues { Int($0) }])
    }

    /// The human view, like `ray status`: a summary line, then each role's workers.
    static func table(_ status: ClusterStatus, coordinator: String) -> String {
        var out = "coordinator \(coordinator)" + (status.runID.isEmpty ? "" : "  run \(status.runID)") + "\n"
        out += "  stage \(status.planStage)  round \(status.round)  step \(status.step)  policy v\(status.policyVersion)\n"
        out += String(format: "  throughput %.1f tok/s  reward %.4f  KL %.4f\n", status.tokensPerSecond, status.rewardMean, status.kl)
        let queues = WorkerRole.allCases.compactMap { role in status.queueDepths[role].map { "\(role.rawValue) \($0)" } }
        out += "  queues: \(queues.isEmpty ? "empty" : queues.joined(separator: ", "))"
            + (status.tasksRedispatched > 0 ? "  (\(status.tasksRedispatched) tasks re-dispatched from lost workers)" : "") + "\n"
        let rejected = status.rejectedFrames.keys.sorted().map { "\($0) \(status.rejectedFrames[$0]!)" }
        if !rejected.isEmpty { out += "  rejected frames: \(rejected.joined(separator: ", "))\n" }
        for role in WorkerRole.allCases {
            let members = status.workers.filter { $0.role == role }
            guard !members.isEmpty else { continue }
            let count = { (h: Health) in members.filter { $0.health == h }.count }
            out += "  \(role.rawValue): \(members.count) (\(count(.healthy)) healthy, \(count(.hung)) hung, \(count(.suspect)) suspect, \(count(.dead)) dead)\n"
            for w in members {
                out += "    \(w.id)  \(w.health.rawValue)  host \(w.host)  pid \(w.pid)"
                    + (w.placement.map { "  \($0.summary)" } ?? "") + "  policy v\(w.policyVersion)"
                    // A checksum of 0: the worker holds no model (started without --checkpoint).
                    + "  weights \(w.weightsChecksum == 0 ? "none (no model)" : String(format: "%08x", w.weightsChecksum))"
                    + "  tasks \(w.tasksInFlight)  tokens \(w.tokensProcessed)"
                    + "  heartbeat \(w.lastHeartbeatMilliseconds) ms ago\n"
            }
        }
        return out
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
    @Option(help: ArgumentHelp("Run directory: the coordinator's journal and the workers' logs (default: a new folder under runs/). "
                               + "Give the directory of an unfinished run to resume it after a crash.", valueName: "DIR"))
    var runDir: String?
    @Flag(help: "Run the spec's plan at a smoke-test size (every step, far less data): the default spec's in about a minute.")
    var quick = false
    @Option(help: "Seconds between progress lines (stage, round, step, ETA); 0 for none.")
    var progressEvery: Double = 15
    @Flag(help: ArgumentHelp("Write a Slurm batch script for the run (RUN_DIR/launch.sbatch) instead of launching: the coordinator runs "
                             + "on the allocation's first node, the workers as steps of the job. The run directory must be on storage every node sees; "
                             + "submitting the script again resumes the run."))
    var sbatch = false
    @Flag(help: "With --sbatch: submit the script (sbatch) and print the job id.")
    var submit = false
    @Option(parsing: .upToNextOption,
            help: ArgumentHelp("Write the spec's cluster as manifests instead of launching: `--emit kubernetes DIR` (the coordinator a Deployment "
                               + "with a Service, each role of each host a StatefulSet, the spec a ConfigMap, the run directory a "
                               + "PersistentVolumeClaim, CURVE keys a Secret; see docs/kubernetes.md).", valueName: "kubernetes DIR"))
    var emit: [String] = []
    @Option(help: "With --emit: the container image (rlhf on its PATH, the spec's directory tree at --workdir).")
    var image = "swiftrlhf:latest"
    @Option(help: "With --emit: where the image holds what this directory holds (the spec's relative paths resolve there).")
    var workdir = "/opt/swiftrlhf"
    @Option(help: "With --emit: the run volume's size.")
    var storage = "10Gi"
    @Flag(help: ArgumentHelp("Start no worker: wait for every host's workers to join on their own under their ids (ROLE-HOST-I), as "
                             + "Kubernetes StatefulSets' pods do."))
    var externalWorkers = false
    @Option(help: ArgumentHelp("Bind the coordinator here instead of the spec's endpoint (e.g. tcp://0.0.0.0:5555 in a pod).", valueName: "ENDPOINT"))
    var coordinatorBind: String?
    @Option(help: ArgumentHelp("Serve metrics here instead of the spec's endpoint.", valueName: "ENDPOINT"))
    var metricsBind: String?

    func validate() throws {
        try OptionCheck.number(progressEvery, "--progress-every", 0 ... 86_400)
        if submit && !sbatch { throw ValidationError("--submit goes with --sbatch") }
        if !emit.isEmpty && (emit.count != 2 || emit[0] != "kubernetes") {
            throw ValidationError("--emit takes a kind and a directory: --emit kubernetes DIR")
        }
        if !emit.isEmpty && sbatch { throw ValidationError("--emit and --sbatch are two ways of not launching: give one") }
    }

    func run() throws {
        guard let text = try? String(contentsOfFile: spec, encoding: .utf8) else {
            printError("error: cannot read cluster spec \(spec) (run from the repository root, or give a path)")
            throw ExitCode.failure
        }
        do {
            if !emit.isEmpty { return try writeManifests(text) }
            for (option, endpoint) in [("--coordinator-bind", coordinatorBind), ("--metrics-bind", metricsBind)] {
                if let endpoint, !endpoint.hasPrefix("tcp://") || endpoint.split(separator: ":").count != 3 {
                    throw ValidationError("\(option) expects an endpoint like tcp://0.0.0.0:5555, got \(endpoint)")
                }
            }
            var parsed = try ClusterSpec.parse(text, baseDirectory: (spec as NSString).deletingLastPathComponent)
            if sbatch { return try writeBatchScript(parsed) }
            if let coordinatorBind { parsed.coordinator = coordinatorBind }
            if let metricsBind { parsed.metrics = metricsBind }
            if quick { parsed = parsed.quick() }
            let runDirectory = runDir ?? LaunchCommand.newRunDirectory()
            // A quick run is another plan than the spec's: its journal must not resume the full one, nor the reverse.
            let launcher = ClusterLaunch(spec: parsed, specText: quick ? text + "\n# --quick\n" : text, runDirectory: runDirectory)
            launcher.progressInterval = progressEvery
            launcher.externalWorkers = externalWorkers
            // Ctrl-C or SIGTERM: stop every process this launch started (bounded), then exit.
            var sources: [DispatchSourceSignal] = []
            for sig in [SIGINT, SIGTERM] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: DispatchQueue(label: "rlhf.launch.signals"))
                source.setEventHandler {
                    printError("\(sig == SIGINT ? "interrupted" : "terminated"): stopping the cluster")
                    let stopped = launcher.stopAll(graceSeconds: ClusterLaunch.stopGraceSeconds)
                    printError("stopped \(stopped) workers and the coordinator")
                    Glibc.exit(sig == SIGINT ? 130 : 143)
                }
                source.resume()
                sources.append(source)
            }
            defer { sources.forEach { $0.cancel() } }
            try launcher.run { print($0); fflush(nil) }
        } catch {
            throw cliFailure(error)
        }
    }

    /// `--emit kubernetes DIR`: the spec's cluster as manifests (the files it names need not exist here).
    private func writeManifests(_ text: String) throws {
        let cwd = FileManager.default.currentDirectoryPath
        let specPath = ((spec.hasPrefix("/") ? spec : cwd + "/" + spec) as NSString).standardizingPath
        var parsed = try ClusterSpec.parse(text, baseDirectory: (specPath as NSString).deletingLastPathComponent, checkingFiles: false)
        if quick { parsed = parsed.quick() }
        var manifests = KubernetesManifests(spec: parsed, specText: text, specPath: specPath, localDirectory: cwd)
        manifests.image = image
        manifests.workdir = workdir
        manifests.storage = storage
        if let runDir { manifests.runName = (runDir as NSString).lastPathComponent }
        let written = try manifests.write(to: emit[1])
        print("wrote \(written.count) manifests to \(emit[1]) (kubectl apply -f \(emit[1])); image \(image), the spec's files under \(workdir)")
    }

    /// `--sbatch`: writes RUN_DIR/launch.sbatch for the spec's slurm host and, with `--submit`, submits it.
    private func writeBatchScript(_ parsed: ClusterSpec) throws {
        guard let host = parsed.hosts.first(where: \.isSlurm), let slurm = host.slurm else {
            throw ValidationError("--sbatch needs a host with slurm: {...} in the spec (the allocation the job asks for)")
        }
        let cwd = FileManager.default.currentDirectoryPath
        func absolute(_ path: String) -> String { ((path.hasPrefix("/") ? path : cwd + "/" + path) as NSString).standardizingPath }
        let runDirectory = absolute(runDir ?? LaunchCommand.newRunDirectory())
        try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var options = ["--progress-every", "\(progressEvery)"]
        if quick { options.insert("--quick", at: 0) }
        if let coordinatorBind { options += ["--coordinator-bind", coordinatorBind] }
        if let metricsBind { options += ["--metrics-bind", metricsBind] }
        // Local hosts' workers run beside the coordinator, on the first node, inside the allocation.
        let script = SlurmBatchScript(settings: slurm, workers: host.workerCount, executable: executable, spec: absolute(spec),
                                      runDirectory: runDirectory, workingDirectory: cwd, launchOptions: options)
        let path = runDirectory + "/launch.sbatch"
        try script.text.write(toFile: path, atomically: true, encoding: .utf8)
        print("wrote \(path)")
        guard submit else {
            print("submit it with: sbatch \(SlurmBatchScript.quoted(path))  (again, to resume the run)")
            return
        }
        do {
            let answer = try Slurm.run("sbatch", ["--parsable", path]).trimmingCharacters(in: .whitespacesAndNewlines)
            // --parsable: "JOB" or "JOB;CLUSTER".
            let job = answer.split(separator: ";").first.map(String.init) ?? answer
            print("submitted batch job \(job); its output: \(runDirectory)/slurm-\(job).out; watch it with squeue --jobs=\(job) --steps")
        } catch let failure as Slurm.Failure {
            printError("error: \(failure)")
            throw ExitCode(failure.status)
        }
    }

    /// `runs/YYYYMMDD-HHMMSS` (with a suffix if a run started in the same second).
    static func newRunDirectory() -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyyMMdd-HHmmss"
        formatter.timeZone = TimeZone(identifier: "UTC")
        let base = "runs/" + formatter.string(from: Date())
        var candidate = base, n = 1
        while FileManager.default.fileExists(atPath: candidate) {
            n += 1
            candidate = "\(base)-\(n)"
        }
        return candidate
    }
}
