import ClusterRuntime
import Launcher
import RLHF
import Foundation
import Logging
import Workers
import LlamaCore
import LlamaTraining
import Wire

/// `rlhf launch`: starts the coordinator and the spec's workers (local processes, network-namespace test
/// hosts, ssh, or steps of a Slurm allocation: `WorkerProcesses`; an external host's are only awaited),
/// waits for every worker to register, runs the plan (resuming from the run's journal), and stops
/// everything.
public final class ClusterLaunch {
    /// A launch failure that names the host and role at fault.
    public struct Failure: Error, CustomStringConvertible {
        public let message: String
        /// The exit status the launch ends with (a scheduler command's own, where one failed).
        public var exitStatus: Int32?
        public var description: String { message }

        public init(message: String, exitStatus: Int32? = nil) {
            self.message = message
            self.exitStatus = exitStatus
        }
    }

    public let spec: ClusterSpec
    /// The run directory: the journal (`journal.jsonl`) and the workers' logs (`logs/`).
    public let runDirectory: String
    private let specDigest: UInt32
    private let logger: Logger
    /// The worker processes started or adopted.
    private let workers: WorkerProcesses
    /// Guards `coordinator`: `stopAll` may run on a signal handler's queue.
    private let lock = NSLock()
    private var coordinator: Coordinator?
    /// Seconds between progress lines (stage, round, step, elapsed, ETA) while the plan runs.
    public var progressInterval = 15.0
    /// Start no worker: every host's are started by something else (Kubernetes StatefulSets whose pods
    /// are named as the workers' ids) and only awaited.
    public var externalWorkers = false
    /// The RLHF stages' driver, once a step needs it.
    private var rlhf: RLHFPipeline?
    /// The plan's tokenizers and data files as the pre-flight read them (nil: not read yet).
    private var planned: (tokenizers: PlanTokenizers, files: FileDataSource?)?
    /// The workers started so far (a snapshot).
    private var started: [WorkerProcesses.Process] { workers.all }

    /// A launcher for `spec` (whose YAML text was `specText`), keeping its journal and logs in
    /// `runDirectory` and starting workers from `executable` (this program, by default). A run
    /// directory that holds the journal of an unfinished run of the same spec is resumed.
    public init(spec: ClusterSpec, specText: String, runDirectory: String, executable: String = CommandLine.arguments[0],
                logger: Logger = Logger(label: "rlhf.launch")) {
        self.spec = spec
        var crc = CRC32C()
        crc.update(Array(specText.utf8))
        // A plan in its own file is part of what the run is: a changed plan file is another run.
        if let plan = spec.planFileText { crc.update(Array(plan.utf8)) }
        specDigest = crc.value
        self.runDirectory = runDirectory
        workers = WorkerProcesses(runDirectory: runDirectory,
                                  executable: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? executable, logger: logger)
        self.logger = logger
    }

    /// Runs the whole launch; `report` receives one line per event for the user.
    public func run(report: @escaping (String) -> Void) throws {
        try FileManager.default.createDirectory(atPath: runDirectory + "/logs", withIntermediateDirectories: true)
        // One launch at a time per run directory: a second one would write the same journal.
        let hold = try RunDirectoryLock(directory: runDirectory)
        defer { hold.release() }
        let (journal, recovered) = try RunJournal.open(at: runDirectory + "/journal.jsonl")
        if let digest = recovered.specDigest, digest != specDigest {
            throw Failure(message: "run directory \(runDirectory) holds a run of another spec (its journal's spec digest differs); "
                          + "resume it with the spec it was started with, or choose a new --run-dir")
        }
        if recovered.finished {
            throw Failure(message: "the run in \(runDirectory) already finished; choose a new --run-dir to run the plan again")
        }
        let resuming = recovered.specDigest != nil
        // The RLHF steps keep state of their own (the SFT baseline answers, the sampler's history, the
        // reward models' pairs), saved beside the journal after every step and restored below.
        let rlhfDone = recovered.doneSteps.keys.contains { index in
            guard index < spec.plan.count else { return false }
            return spec.plan[index].isRLHF
        }
        if !resuming, let available = WorkerMemory.availableBytes(), let config = try? Checkpoint.readConfig(path: spec.checkpoint),
           let shortfall = spec.memoryShortfall(config: config, available: available,
                                                roleConfigs: spec.pretrainedRewardModels.compactMapValues { try? Checkpoint.readConfig(path: $0) }) {
            // Refused before anything starts (a resumed run's workers may already hold their memory).
            throw Failure(message: shortfall)
        }
        if spec.plan.contains(where: \.isRLHF) {
            // Refused before anything starts: a tokenizer that lacks the chat format's tokens or does not fit
            // the model, or a data file that cannot be used, would stop the plan at its first RLHF step, with
            // every worker started. The files read here are the plan's (not read again).
            let config = try Checkpoint.readConfig(path: spec.checkpoint)
            let tokenizers = try ClusterLaunch.planTokenizers(spec, config: config)
            let files = try ClusterLaunch.planData(spec, tokenizer: tokenizers.policy, config: config)
            if let files { try ClusterLaunch.checkRewardModelRoom(tokenizers, prompts: files.trainPrompts + files.evalPrompts) }
            lock.withLock { planned = (tokenizers, files) }
        }
        if !resuming { try journal.append(.run(specDigest: specDigest)) }
        // The run's identity, kept across resumes: its workers carry it, so that they join no other run.
        let runID = recovered.runID ?? ClusterLaunch.newRunID(directory: runDirectory)
        if recovered.runID == nil { try journal.append(.runIdentity(id: runID)) }
        self.runID = runID
        // A resumed run binds the endpoint its workers know (the spec's may name port *).
        var settings = Coordinator.Settings(bind: recovered.endpoint ?? spec.coordinator)
        settings.membership.heartbeatIntervalMilliseconds = spec.heartbeatMilliseconds
        settings.metricsBind = spec.metrics
        settings.journal = journal
        settings.recoveredResults = recovered.results
        settings.runID = runID
        if let curve = spec.curve {
            try settings.encrypt(keyFile: curve.server + ".key", admitting: [curve.client + ".pub"])
        }
        let coordinator: Coordinator
        do {
            coordinator = try Coordinator(settings: settings)
        } catch CoordinatorError.endpointInUse {
            throw Failure(message: "the coordinator endpoint \(settings.bind) is in use: another launch or coordinator holds it "
                          + "(rlhf status --coordinator \(settings.bind) shows which); stop it, or give this spec another coordinator port (or port *)")
        }
        let bound = Date()
        lock.withLock { self.coordinator = coordinator }
        defer { stop(report: report) }
        try journal.append(.coordinator(endpoint: coordinator.endpoint))
        report("coordinator listening on \(coordinator.endpoint); run \(runID), run directory \(runDirectory)")
        if let m = coordinator.metricsEndpoint { report("metrics at http://\(m.dropFirst(6))/metrics") }
        if resuming {
            let last = recovered.lastDoneStep.map { "steps 1-\($0 + 1) of \(spec.plan.count) done" } ?? "no step done"
            report("resuming from the journal (\(recovered.records) records\(recovered.cutTornTail ? ", a torn last record cut off" : "")): "
                   + "\(last), \(recovered.results.count) results of the step in progress already accepted")
            if let index = recovered.lastDoneStep, let done = recovered.doneSteps[index] {
                var announces: [WorkerRole: WeightAnnouncement] = [:]
                for (name, bytes) in done.announces {
                    guard let role = WorkerRole(rawValue: name) else { throw Failure(message: "the journal names an unknown role \(name)") }
                    announces[role] = try WeightAnnouncement(wirePayload: WirePayload(body: [UInt8](bytes)))
                }
                // Announcements name the weight server of the learner that published them. When that
                // learner is gone (no local process left, none remote that may rejoin), every worker
                // registering now would be sent into a fetch that can only time out; the learner started
                // anew announces its own once it has restored its state.
                let learnerMayLive = recovered.workers.contains { id, worker in
                    guard id.hasPrefix(WorkerRole.learner.rawValue + "-"), let host = spec.hosts.first(where: { $0.name == worker.host }) else { return false }
                    // A Slurm step lives only as long as its allocation (a resubmitted batch job is another).
                    if host.isSlurm { return recovered.allocations[host.name].map { Slurm.isRunning(job: $0) } ?? false }
                    return !host.isLocal || WorkerProcesses.isWorker(worker.pid, id: id)
                }
                coordinator.restore(policyVersion: done.policyVersion, round: done.round, announces: learnerMayLive ? announces : [:])
            }
        }
        if rlhfDone, let last = recovered.lastDoneStep {
            try pipeline(coordinator, report: report).restore(afterStep: last)
            report("RLHF pipeline state restored as it was after step \(last + 1)")
        }
        // A learner started anew resumes from the state it saved at the end of the last step done.
        if resuming, let last = recovered.lastDoneStep,
           FileManager.default.fileExists(atPath: LearnerService.stateDirectory(learnerStateDirectory, afterStep: last)) {
            learnerRestoreStep = last
        }
        try allocateSlurm(journal: journal, recovered: recovered, report: report)
        let adopted = try startWorkers(coordinator: coordinator, journal: journal, previous: recovered.workers,
                                       previousAllocations: recovered.allocations)
        report("started \(started.count - adopted) and adopted \(adopted) running workers on \(Set(started.map(\.host)).count) host(s); "
               + "waiting for them to register")
        var freshLearner = resuming && started.contains { $0.role == .learner && !$0.isAdopted }
        if freshLearner, recovered.lastDoneStep != nil, learnerRestoreStep == nil {
            throw Failure(message: "cannot resume: the learner of the previous launch is gone, and with it the weights trained so far, and "
                          + "\(learnerStateDirectory) holds no state saved after step \(recovered.lastDoneStep! + 1); start the plan again with a new --run-dir")
        }
        try waitForRegistration(coordinator)
        if resuming, !freshLearner, started.contains(where: { $0.role == .learner }),
           let ahead = try learnerAheadOfJournal(coordinator, recovered: recovered) {
            try replaceLearner(coordinator, journal: journal, because: ahead, report: report)
            freshLearner = true
        }
        if freshLearner {
            try adoptRestoredLearner(coordinator, recovered: recovered, report: report)
        }
        report(String(format: "all %d workers registered and healthy %.2f s after the coordinator started", started.count,
                      Date().timeIntervalSince(bound)))
        let progress = ProgressReporter(plan: spec.plan, task: spec.task, coordinator: coordinator, report: report)
        progress.start(every: progressInterval)
        defer { progress.stop() }
        // A Slurm step that ends (cancelled, its node lost) is a dead worker: its calls go to the others,
        // and a replacement step takes its id, as a scheduler restarts a failed task.
        let replacer = spec.hosts.contains(where: \.isSlurm)
            ? StepReplacer(launch: self, coordinator: coordinator, journal: journal, report: report) : nil
        replacer?.start()
        defer { replacer?.stop() }
        for (i, step) in spec.plan.enumerated() {
            if recovered.doneSteps[i] != nil {
                report("step \(i + 1) was done before the restart")
                continue
            }
            try journal.append(.stepBegin(index: i))
            coordinator.beginStep(i)
            progress.begin(i)
            if let from = step.startFrom { try pipeline(coordinator, report: report).branch(from: from, round: step.roundName ?? "") }
            try run(step, index: i, coordinator: coordinator, report: report)
            if let name = step.roundName, spec.snapshotRounds.contains(name) { try pipeline(coordinator, report: report).snapshot(name) }
            progress.end(i)
            try rlhf?.save(afterStep: i)
            if spec.hosts.contains(where: { ($0.workers[.learner] ?? 0) > 0 }) {
                // The learner's own state at this boundary: what a new learner resumes from.
                var save = TrainBatch(kind: .saveState)
                save.stateStep = i
                _ = try coordinator.train(save)
            }
            let status = coordinator.status()
            var announces: [String: Data] = [:]
            for (role, announce) in coordinator.latestAnnouncements { announces[role.rawValue] = Data(try announce.wirePayload().body) }
            try journal.append(.stepDone(index: i, policyVersion: status.policyVersion, round: status.round, announces: announces))
            rlhf?.pruneStates(before: i)
        }
        try journal.append(.finished)
        if let rlhf {
            for line in rlhf.table() { report(line) }
            report("summary: \(runDirectory)/summary.json")
        }
        report("plan finished")
    }

    /// The run's identity (set when `run` starts).
    public private(set) var runID = ""

    /// A new run's identity: the run directory's name and a random suffix, e.g. `20261204-210000-3f2a9c`.
    static func newRunID(directory: String) -> String {
        let name = (directory as NSString).standardizingPath.split(separator: "/").last.map(String.init) ?? "run"
        let safe = String(name.unicodeScalars.map { (0x21 ... 0x7E).contains($0.value) && $0 != "/" ? Character($0) : "_" }.prefix(100))
        return "\(safe)-\(String(format: "%06x", UInt32.random(in: 0 ... 0xFF_FFFF)))"
    }

    /// Where the learner saves its state at the end of every step (`after-step-N/`).
    var learnerStateDirectory: String { runDirectory + "/learner-state" }
    /// The step whose saved state a learner started by this launch restores (nil: it starts from the checkpoint).
    private var learnerRestoreStep: Int?

    /// A resumed run whose learner was started anew from its saved state: the step in progress is run
    /// again from its start (the results the journal holds of it were computed against the old learner),
    /// the coordinator takes the new learner's announcements (the old ones name a dead weight server),
    /// and every consumer is synced to them.
    private func adoptRestoredLearner(_ coordinator: Coordinator, recovered: RunJournal.Recovered, report: (String) -> Void) throws {
        coordinator.forgetRecoveredResults()
        let ask = TrainBatch(kind: .announceAll)
        let stats = try coordinator.train(ask)
        let expected = recovered.lastDoneStep.flatMap { recovered.doneSteps[$0] }?.policyVersion ?? 0
        guard stats.policyVersion == expected else {
            throw Failure(message: "cannot resume: the restarted learner holds policy version \(stats.policyVersion), the journal's last step ended at \(expected)")
        }
        var announces: [WorkerRole: WeightAnnouncement] = [:]
        for announce in stats.announces {
            switch announce.model {
            case .rewardModel: announces[.rewardModel] = announce
            case .safetyModel: announces[.safetyModel] = announce
            case .policy: announces[.generator] = announce
            case .reference: announces[.referencePolicy] = announce
            }
        }
        let status = coordinator.status()
        coordinator.restore(policyVersion: expected, round: status.round, announces: announces)
        for (role, announce) in announces.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            // Generators follow the policy, reward workers their model; the reference policy holds the
            // checkpoint, or the chat model an SFT step made.
            try coordinator.syncWeights(announce, roles: [role])
        }
        report("learner restarted from its state after step \(learnerRestoreStep.map { $0 + 1 } ?? 0) (policy v\(expected)); the step in progress runs again from its start")
    }

    /// Whether the adopted learner trained past the last step the journal holds as done (the previous
    /// launcher died while a step was training): then its policy or a reward model is at another version
    /// than that step ended with, and the step cannot run again on it. Returns what differs, or nil.
    private func learnerAheadOfJournal(_ coordinator: Coordinator, recovered: RunJournal.Recovered) throws -> String? {
        guard let last = recovered.lastDoneStep, let done = recovered.doneSteps[last] else { return nil }
        let ask = TrainBatch(kind: .announceAll)
        let stats = try coordinator.train(ask)
        if stats.policyVersion != done.policyVersion {
            return "its policy is at version \(stats.policyVersion), step \(last + 1) ended at \(done.policyVersion)"
        }
        for announce in stats.announces {
            guard let role = WorkerRole(rawValue: announce.model.rawValue), role == .rewardModel || role == .safetyModel else { continue }
            let expected = rlhf?.rewardVersions[role] ?? 0
            if announce.policyVersion != expected {
                return "its \(role.rawValue) is at version \(announce.policyVersion), step \(last + 1) ended at \(expected)"
            }
        }
        return nil
    }

    /// Replaces the adopted learner by one started from the state saved after the last step done.
    private func replaceLearner(_ coordinator: Coordinator, journal: RunJournal, because reason: String, report: (String) -> Void) throws {
        guard let step = learnerRestoreStep else {
            throw Failure(message: "cannot resume: the running learner trained past the journal's last finished step (\(reason)), and "
                          + "\(learnerStateDirectory) holds no state saved after that step; start the plan again with a new --run-dir")
        }
        // Registrations are numbered (epochs): the new learners register under later ones.
        let ids = Set(started.filter { $0.role == .learner }.map(\.id))
        let epochs = Dictionary(coordinator.workers().filter { ids.contains($0.registration.workerID) }.map { ($0.registration.workerID, $0.epoch) },
                                uniquingKeysWith: max)
        let old = workers.killAll(.learner)
        for worker in old {
            guard let host = spec.hosts.first(where: { $0.name == worker.host }) else { continue }
            try startWorker(id: worker.id, role: .learner, host: host, endpoint: coordinator.endpoint, journal: journal)
        }
        report("the running learner trained past step \(step + 1) (\(reason)); replaced by one restored from the state saved after it")
        // The killed learner's registration may look healthy until its heartbeats are missed: only the
        // new processes' own (later) registrations count.
        try waitForRegistration(coordinator, after: epochs)
    }

    /// Starts the spec's workers, adopting those that a previous launch of this run started and that
    /// still run. A local one is recognised by its pid in the journal; a remote one gets
    /// `ClusterLaunch.remoteRejoinSeconds` to register again before a new one is started in its place.
    /// Returns how many were adopted.
    private func startWorkers(coordinator: Coordinator, journal: RunJournal, previous: [String: (host: String, pid: Int32)],
                              previousAllocations: [String: String]) throws -> Int {
        var adopted = 0
        var awaiting: [(host: WorkerHost, role: WorkerRole, id: String)] = []
        for host in spec.hosts {
            for role in WorkerRole.allCases {
                for i in 0..<(host.workers[role] ?? 0) {
                    let id = host.workerID(role, i)
                    if host.isExternal || externalWorkers {
                        // Started by something else (a Kubernetes StatefulSet): awaited under its id.
                        workers.expect(id: id, role: role, host: host)
                        continue
                    }
                    // A Slurm worker of the previous launch lives on only in the same allocation (not in a
                    // batch job submitted again, say).
                    if let old = previous[id], old.host == host.name,
                       !host.isSlurm || workers.slurmAllocations[host.name]?.jobID == previousAllocations[host.name] {
                        if host.isLocal {
                            if WorkerProcesses.isWorker(old.pid, id: id) {
                                workers.adopt(id: id, role: role, host: host, pid: old.pid)
                                adopted += 1
                                continue
                            }
                        } else {
                            awaiting.append((host, role, id))
                            continue
                        }
                    }
                    try startWorker(id: id, role: role, host: host, endpoint: coordinator.endpoint, journal: journal)
                }
            }
        }
        guard !awaiting.isEmpty else { return adopted }
        let deadline = Date().addingTimeInterval(ClusterLaunch.remoteRejoinSeconds)
        var registered: Set<String> = []
        repeat {
            registered = Set(coordinator.workers().filter { $0.health == .healthy }.map(\.registration.workerID))
            if awaiting.allSatisfy({ registered.contains($0.id) }) { break }
            Thread.sleep(forTimeInterval: 0.05)
        } while Date() < deadline
        for (host, role, id) in awaiting {
            if registered.contains(id), let pid = coordinator.workers().first(where: { $0.registration.workerID == id })?.registration.pid {
                // On another machine: signalled there over ssh, by the pid it registered with.
                adopted += 1
                workers.adopt(id: id, role: role, host: host, pid: pid_t(pid))
            } else {
                try startWorker(id: id, role: role, host: host, endpoint: coordinator.endpoint, journal: journal)
            }
        }
        return adopted
    }

    /// Seconds a remote worker of the previous launch gets to register with the restarted coordinator
    /// before a new one is started in its place.
    public static let remoteRejoinSeconds = 5.0

    /// Gets the allocation of the spec's `slurm:` host: the one this launch runs in (a batch job of
    /// `--sbatch`, an `salloc` shell), else the previous launch's while it still runs (its workers'
    /// steps are adopted), else a new one (`salloc`, journalled). Slurm's refusal is the launch's error,
    /// with salloc's message and exit status.
    private func allocateSlurm(journal: RunJournal, recovered: RunJournal.Recovered, report: (String) -> Void) throws {
        for host in spec.hosts where !externalWorkers {
            guard let slurm = host.slurm else { continue }
            let allocation: Slurm.Allocation
            do {
                if let enclosing = try Slurm.enclosingAllocation() {
                    allocation = enclosing
                    report("slurm host \(host.name): the workers run as steps of job \(enclosing.jobID), the allocation this launch runs in "
                           + "(nodes \(enclosing.nodes.joined(separator: ",")))")
                } else if let job = recovered.allocations[host.name], Slurm.isRunning(job: job) {
                    allocation = Slurm.Allocation(jobID: job, nodes: try Slurm.nodes(ofJob: job), owned: true)
                    report("slurm host \(host.name): job \(job) of the previous launch still runs; its workers' steps are adopted")
                } else {
                    let options = slurm.allocationOptions(workers: host.workerCount, jobName: "rlhf-\(runID)")
                    report("slurm host \(host.name): asking for an allocation (salloc \(options.joined(separator: " ")))")
                    allocation = try Slurm.allocate(slurm, workers: host.workerCount, jobName: "rlhf-\(runID)", report: report)
                    report("slurm host \(host.name): granted job \(allocation.jobID) on \(allocation.nodes.joined(separator: ","))")
                }
                // What a relaunch checks: whether its workers may still run (in this allocation).
                if recovered.allocations[host.name] != allocation.jobID { try journal.append(.allocation(host: host.name, jobID: allocation.jobID)) }
            } catch let failure as Slurm.Failure {
                throw Failure(message: "slurm host \(host.name): \(failure)", exitStatus: failure.status)
            }
            workers.setAllocation(allocation, for: host.name)
        }
    }

    /// The endpoint workers dial: the coordinator's, with a wildcard address (`*`, `0.0.0.0`) replaced by
    /// the spec's `advertise:` (else this machine's host name) for workers on other machines.
    func workerEndpoint(_ bound: String, for host: WorkerHost) -> String {
        ClusterLaunch.workerEndpoint(bound, advertise: host.isLocal ? nil : (spec.advertise ?? ProcessInfo.processInfo.hostName))
    }

    /// `bound` with its wildcard address replaced by `advertise` (unchanged for a concrete address or nil).
    public static func workerEndpoint(_ bound: String, advertise: String?) -> String {
        guard let advertise, bound.hasPrefix("tcp://"), let colon = bound.lastIndex(of: ":") else { return bound }
        let address = bound[bound.index(bound.startIndex, offsetBy: 6) ..< colon]
        guard address == "*" || address == "0.0.0.0" else { return bound }
        return "tcp://\(advertise)" + bound[colon...]
    }

    /// Starts worker `id` again (on its host, where its previous life ran) after its process or step ended.
    func replace(_ worker: WorkerProcesses.Process, coordinator: Coordinator, journal: RunJournal) throws {
        guard let host = spec.hosts.first(where: { $0.name == worker.host }) else { return }
        workers.forget(id: worker.id)
        try startWorker(id: worker.id, role: worker.role, host: host, endpoint: coordinator.endpoint, journal: journal)
    }

    /// Forgets a worker that left on purpose.
    func forget(_ worker: WorkerProcesses.Process) { workers.forget(id: worker.id) }

    /// Whether the launch is stopping (no replacement is started then).
    var stopping: Bool { lock.withLock { coordinator == nil } }

    /// The workers now (for the step replacer).
    var workerProcesses: [WorkerProcesses.Process] { workers.all }

    private func startWorker(id: String, role: WorkerRole, host: WorkerHost, endpoint: String, journal: RunJournal) throws {
        let arguments = spec.workerArguments(id: id, role: role, host: host, coordinator: workerEndpoint(endpoint, for: host), runID: runID,
                                             stateDirectory: learnerStateDirectory, restoreStep: learnerRestoreStep)
        do {
            let pid = try workers.start(id: id, role: role, host: host, arguments: arguments)
            try journal.append(.worker(id: id, host: host.name, pid: pid))
        } catch let failure as WorkerProcesses.Failure {
            throw Failure(message: failure.message)
        }
    }

    /// Waits until every worker started is registered and healthy, under an epoch later than
    /// `epochs[id]` where given (a replaced worker's old registration does not count).
    private func waitForRegistration(_ coordinator: Coordinator, after epochs: [String: UInt64] = [:]) throws {
        let deadline = Date().addingTimeInterval(120)
        while Date() < deadline {
            if let exited = workers.firstExited() { throw Failure(message: exited) }
            let healthy = Set(coordinator.workers().filter { $0.health == .healthy && $0.epoch > epochs[$0.registration.workerID, default: 0] }
                .map(\.registration.workerID))
            if started.allSatisfy({ healthy.contains($0.id) }) { return }
            Thread.sleep(forTimeInterval: 0.05)
        }
        let healthy = Set(coordinator.workers().map(\.registration.workerID))
        let missing = started.filter { !healthy.contains($0.id) }.map { "\($0.role.rawValue) on \($0.host)" }
        throw Failure(message: "workers did not register within 120 s: \(missing.joined(separator: ", "))")
    }

    private func run(_ step: ClusterSpec.Step, index: Int, coordinator: Coordinator, report: @escaping (String) -> Void) throws {
        switch step {
        case let .generate(prompts, samples, maxNew, temperature):
            coordinator.setProgress(PlanStage(.generate))
            let request = ClusterLaunch.generateRequest(prompts: prompts, samples: samples, maxNewTokens: maxNew,
                                                   temperature: temperature, seed: UInt64(index + 1),
                                                   policyVersion: coordinator.status().policyVersion)
            let start = Date()
            let results = try coordinator.generate(request, promptsPerTask: 1)
            let seconds = Date().timeIntervalSince(start)
            let tokens = results.reduce(0) { $0 + $1.tokens.count }
            report(String(format: "step %d generate: %d prompts x %d samples -> %d samples, %d tokens in %.2f s (%.0f tok/s over the generators)",
                          index + 1, prompts, samples, results.count, tokens, seconds, Double(tokens) / seconds))
        case let .round(prompts, samples, maxNew, temperature, lr):
            try runRound(index: index, prompts: prompts, samples: samples, maxNewTokens: maxNew, temperature: temperature,
                         learningRate: lr, coordinator: coordinator, report: report)
        case let .evaluate(name, _):
            try pipeline(coordinator, report: report).evaluate(name: name, settings: evalSettings)
        case let .trainRewardModel(settings):
            try pipeline(coordinator, report: report).trainRewardModel(settings)
        case let .supervisedFineTuning(settings):
            try pipeline(coordinator, report: report).supervisedFineTuning(settings, seed: UInt64(1_000 + index))
        case let .rejectionSampling(settings):
            try pipeline(coordinator, report: report).rejectionSamplingRound(settings, evaluation: evalSettings, seed: UInt64(1_000 + index))
        case let .ppo(settings):
            try pipeline(coordinator, report: report).ppoRound(settings, evaluation: evalSettings, seed: UInt64(1_000 + index))
        case let .policyRound(settings):
            try pipeline(coordinator, report: report).policyRound(settings, evaluation: evalSettings, seed: UInt64(1_000 + index))
        case let .dpoRound(settings):
            try pipeline(coordinator, report: report).dpoRound(settings, evaluation: evalSettings, seed: UInt64(1_000 + index))
        case let .hold(seconds):
            coordinator.setProgress(PlanStage(.hold))
            report(String(format: "step %d hold: the cluster stays up for %.1f s", index + 1, seconds))
            Thread.sleep(forTimeInterval: seconds)
        }
    }

    /// Evaluation settings from the spec's task.
    private var evalSettings: RLHFPipeline.EvalSettings {
        var settings = RLHFPipeline.EvalSettings()
        settings.prompts = spec.task?.evalPrompts
        settings.temperature = spec.task?.evalTemperature ?? 1
        settings.samples = spec.task?.evalSamples ?? 1
        return settings
    }

    /// The RLHF pipeline of the spec's task, made at the first step that needs it.
    private func pipeline(_ coordinator: Coordinator, report: @escaping (String) -> Void) throws -> RLHFPipeline {
        if let pipeline = rlhf { return pipeline }
        let config = try Checkpoint.read(path: spec.checkpoint).weights.config
        // What the pre-flight read (a plan with RLHF steps always has it), else read now.
        let (tokenizers, files) = try lock.withLock { planned } ?? {
            let tokenizers = try ClusterLaunch.planTokenizers(spec, config: config)
            return (tokenizers, try ClusterLaunch.planData(spec, tokenizer: tokenizers.policy, config: config))
        }()
        let tokenizer = tokenizers.policy
        tokenizers.notes.forEach(report)
        if tokenizer.stopIds != [tokenizer.eosId] {
            // Said where the answers' end is not EOS alone: what a rollout stops at is then the model's to say.
            report("answers end with \(tokenizer.tokenText(tokenizer.endOfTurnId)); sampling stops at "
                   + tokenizer.stopIds.map { "\(tokenizer.tokenText($0)) (\($0))" }.joined(separator: ", "))
        }
        // A judge command `rlhf ...` runs this program (the coordinator's, on this machine).
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let context = try ClusterLaunch.taskContext(spec, tokenizer: tokenizer, files: files, executable: executable, coordinator: coordinator,
                                                    report: report)
        let pipeline = try RLHFPipeline(coordinator: coordinator, context: context, config: config, runDirectory: runDirectory, report: report)
        pipeline.generatorLogProbsAreExact = spec.precision == ClusterSpec.Precision()
        var export = spec.export
        export.tokenizerPath = tokenizers.path
        export.chatFormat = spec.chatTemplate
        pipeline.export = export
        pipeline.evaluatesRewardFunction = spec.rewardFunction != nil && spec.startsRewardFunctionWorkers
        pipeline.givenRewardHeads = Set([spec.rewardHead.map { _ in WorkerRole.rewardModel }, spec.safetyHead.map { _ in WorkerRole.safetyModel }]
            .compactMap { $0 }).union(spec.pretrainedRewardModels.keys)
        pipeline.rewardModelRenderings = tokenizers.rewardModelRenderings
        rlhf = pipeline
        return pipeline
    }

    /// What the RLHF steps tokenize with: the policy's tokenizer, and how the pretrained reward models read
    /// its answers.
    struct PlanTokenizers {
        /// The policy's tokenizer (the task's, else the checkpoint's), in the spec's chat format (else the
        /// model's own template, with the spec's `chat_template_kwargs`), checked against the model.
        var policy: Tokenizer
        var path: String
        /// The pretrained reward models whose tokenizer is not the policy's: they score each answer
        /// rendered again in their own chat template.
        var rewardModelRenderings: [WorkerRole: RewardModelRendering] = [:]
        /// Lines for the user on how each pretrained reward model reads the answers.
        var notes: [String] = []
    }

    /// The plan's tokenizers (`PlanTokenizers`). A pretrained reward model with the policy's tokenizer,
    /// token for token, scores the policy's ids; one of another scores each answer rendered again in its
    /// own chat template, and cannot be trained here (the plan's pairs are the policy's ids).
    static func planTokenizers(_ spec: ClusterSpec, config: LlamaConfig) throws -> PlanTokenizers {
        let path = spec.task?.tokenizer ?? Tokenizer.defaultPath(forCheckpoint: spec.checkpoint)
        var tokenizer = try Tokenizer(path: path)
        do {
            if let format = spec.chatTemplate { try tokenizer.useChatFormat(format) } else { try tokenizer.requireChatFormat() }
        } catch LlamaError.invalidTokenizer(_, let reason) {
            // The chat format's checks do not know the file: name it.
            throw LlamaError.invalidTokenizer(path: path, reason: reason)
        }
        do {
            try tokenizer.useChatTemplateArguments(spec.chatTemplateArguments)
        } catch LlamaError.invalidInput(let reason), LlamaError.invalidTokenizer(_, let reason) {
            throw ClusterSpec.Invalid(key: "model.chat_template_kwargs", reason: reason)
        }
        try tokenizer.check(against: config, path: path)
        var planned = PlanTokenizers(policy: tokenizer, path: path)
        for (role, directory) in spec.pretrainedRewardModels.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            let key = "model.\(role == .rewardModel ? "reward_model" : "safety_model")"
            let own = try Tokenizer(path: directory)
            let ownConfig = try Checkpoint.readConfig(path: directory)
            try own.check(against: ownConfig, path: directory)
            guard let id = own.firstDifference(from: tokenizer) else {
                // Its template may still differ: it then reads the policy's rendering (as TRL's PPOTrainer does).
                let probe = [ChatTemplate.Message(role: .user, content: "Hello."), ChatTemplate.Message(role: .assistant, content: "Hi.")]
                if (try? ChatTemplate.conversationIDs(probe, tokenizer: own)) != (try? ChatTemplate.conversationIDs(probe, tokenizer: tokenizer)) {
                    planned.notes.append("the \(role.rawValue) (\(directory)) shares the policy's tokenizer and scores the policy's ids, "
                                         + "in the policy's chat template, which renders conversations otherwise than its own")
                }
                continue
            }
            let difference = "\(directory) tokenizes otherwise than the policy (\(path): "
                + (own.vocabSize != tokenizer.vocabSize ? "\(own.vocabSize) tokens against \(tokenizer.vocabSize))"
                   : "token \(id) is \(own.tokenText(id).debugDescription) there, \(tokenizer.tokenText(id).debugDescription) here)")
            if let step = spec.plan.firstIndex(where: { $0.trainedRewardModels.contains(role) }) {
                throw ClusterSpec.Invalid(key: key, reason: difference + "; it scores answers rendered again in its own chat template, "
                    + "but plan step \(step + 1) trains it (train_rm, new_pairs) on pairs in the policy's ids: "
                    + "train a reward model with the policy's tokenizer, or keep this one as it is")
            }
            do {
                planned.rewardModelRenderings[role] = try RewardModelRendering(tokenizer: own, contextLength: ownConfig.seqLen)
            } catch LlamaError.invalidTokenizer(_, let reason), LlamaError.invalidInput(let reason) {
                throw ClusterSpec.Invalid(key: key, reason: difference + ", so it scores answers rendered in its own chat template, and \(reason)")
            }
            planned.notes.append("the \(role.rawValue) (\(directory)) tokenizes otherwise than the policy: "
                                 + "it scores each answer's text rendered again in its own chat template")
        }
        return planned
    }

    /// Refuses `prompts` a reward model of another tokenizer cannot score an answer to (their rendering in
    /// its template fills its context), naming the model's key and the first such prompt.
    static func checkRewardModelRoom(_ tokenizers: PlanTokenizers, prompts: [PlanPrompt]) throws {
        for (role, rendering) in tokenizers.rewardModelRenderings.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            for prompt in prompts {
                do {
                    try rendering.checkRoom(for: prompt.messages)
                } catch LlamaError.invalidInput(let reason) {
                    let text = prompt.text.count > 60 ? String(prompt.text.prefix(60)) + "..." : prompt.text
                    throw ClusterSpec.Invalid(key: "model.\(role == .rewardModel ? "reward_model" : "safety_model")",
                                              reason: "the prompt \(text.debugDescription): \(reason)")
                }
            }
        }
    }

    /// The spec's data files (`data:`) read and tokenized with `tokenizer`; nil without a `data:` section.
    /// A file that cannot be used is refused naming it (and the line).
    static func planData(_ spec: ClusterSpec, tokenizer: Tokenizer, config: LlamaConfig) throws -> FileDataSource? {
        guard let data = spec.data else { return nil }
        do {
            return try FileDataSource(files: data, tokenizer: tokenizer, seqLen: config.seqLen)
        } catch let issue as DataIssue {
            throw Failure(message: "data: \(issue)")
        } catch LlamaError.invalidInput(let reason) {
            throw Failure(message: "data: \(reason)")
        }
    }

    /// The plan's sources: the spec's data files (`files`, from `planData`) and judge command where it
    /// gives them, the embedded task for the rest. Bad lines skipped (`on_bad_data: skip`) are reported,
    /// with their count.
    static func taskContext(_ spec: ClusterSpec, tokenizer: Tokenizer, files: FileDataSource?, executable: String,
                            coordinator: Coordinator, report: (String) -> Void) throws -> TaskContext {
        // The embedded task, made only when a source is not given otherwise.
        let needsEmbedded = spec.data?.prompts == nil || spec.data?.preferences == nil || spec.judge == nil
            || (spec.data?.sft == nil && spec.plan.contains { $0.kind == "sft" })
        let embedded = needsEmbedded ? spec.task.map { EmbeddedTaskSource(seed: $0.seed, tokenizer: tokenizer, preferencePairs: $0.preferencePairs) } : nil
        if let files {
            for issue in files.skipped.prefix(20) { report("data: skipped \(issue)") }
            if !files.skipped.isEmpty {
                report("data: skipped \(files.skipped.count) bad line\(files.skipped.count == 1 ? "" : "s")")
            }
        }
        func need<T>(_ value: T?, _ what: String) throws -> T {
            guard let value else { throw Failure(message: "the plan's RLHF steps need \(what) (data files, a judge command or the embedded task)") }
            return value
        }
        let prompts: any PromptSource
        if spec.data?.prompts != nil, let files { prompts = files } else { prompts = try need(embedded, "prompts") }
        let pairs: any PairSource
        if spec.data?.preferences != nil, let files { pairs = files } else if let embedded { pairs = embedded } else { pairs = FileDataSource.none }
        let judge: any JudgementSource
        if let models = spec.judge?.rewardModel {
            // Its own tokenizer where its model has one, else the policy's.
            let path = Tokenizer.defaultPath(forCheckpoint: models.checkpoint)
            var own = tokenizer
            if FileManager.default.fileExists(atPath: path) && path != Tokenizer.defaultPath(forCheckpoint: spec.checkpoint) {
                own = try Tokenizer(path: path)
                // The judge renders conversations in its model's own template (a Hugging Face reward model scores them whole).
                try own.requireChatFormat()
            }
            judge = try RewardModelJudge(models: models, tokenizer: own, settings: spec.judge!.settings,
                                         threads: min(4, ProcessInfo.processInfo.activeProcessorCount))
        } else if let command = spec.judge, command.usesRewardFunction {
            judge = RewardFunctionJudge(coordinator: coordinator, settings: command.settings)
        } else if let command = spec.judge {
            var argv = command.arguments
            if argv[0] == "rlhf" { argv[0] = executable }
            judge = CommandJudge(arguments: argv, directory: command.directory, settings: command.settings)
        } else {
            judge = try need(embedded, "a judge")
        }
        let demonstrations: (any SFTSource)? = spec.data?.sft != nil ? files : embedded
        return TaskContext(tokenizer: tokenizer, prompts: prompts, pairs: pairs, judge: judge, demonstrations: demonstrations)
    }

    /// A generate request of `prompts` synthetic prompts (BOS and 4 random ids: the spec has no data
    /// yet), `samples` samples each.
    static func generateRequest(prompts: Int, samples: Int, maxNewTokens: Int, temperature: Float, seed: UInt64,
                                policyVersion: UInt64) -> GenerateRequest {
        var rng = SeededGeneratorShim(seed: seed)
        let prompts = (0..<prompts).map { i in
            GenerateRequest.Prompt(id: UInt64(i), tokens: [1] + (0..<4).map { _ in Int32(3 + rng.next() % 200) })
        }
        return GenerateRequest(prompts: prompts, samplesPerPrompt: samples, sampling: SamplingSettings(temperature: temperature, topP: 1),
                               seed: seed, maxNewTokens: maxNewTokens, policyVersion: policyVersion, stopTokens: [2])
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
        coordinator.setProgress(PlanStage(.generate, round: "round"), round: round)
        let request = ClusterLaunch.generateRequest(prompts: prompts, samples: samples, maxNewTokens: maxNewTokens, temperature: temperature,
                                               seed: UInt64(1000 * round) + UInt64(index), policyVersion: version)
        let generated = try coordinator.generate(request, promptsPerTask: 1).filter { !$0.tokens.isEmpty }
        guard !generated.isEmpty else { throw Failure(message: "round \(round): every sample was empty") }
        let promptIDs = Dictionary(uniqueKeysWithValues: request.prompts.map { ($0.id, $0.tokens) })
        let sequences = generated.enumerated().map { i, g in
            TokenSequence(id: UInt64(i), prompt: promptIDs[g.promptID] ?? [], response: g.tokens)
        }
        coordinator.setProgress(PlanStage(.score, round: "round"))
        let rewards = try coordinator.score(sequences, model: .rewardModel)
        let safety = roles.contains(.safetyModel) ? try coordinator.score(sequences, model: .safetyModel) : nil
        coordinator.setProgress(PlanStage(.reference, round: "round"))
        // The reference stays where it started (the policy before these rounds): the KL measures drift from it.
        let referenceVersion = coordinator.referenceVersion
        let reference = try coordinator.referenceLogProbs(sequences, policyVersion: referenceVersion)
        let policyLogProbs = generated.map(\.logProbs)
        let kl = RoundSummary.meanSequenceKL(policy: policyLogProbs, reference: reference)
        let best = RoundSummary.bestPerPrompt(promptIDs: generated.map(\.promptID), scores: rewards)
        coordinator.setTrainingSignals(rewardMean: Double(rewards.reduce(0, +)) / Double(rewards.count), kl: kl)
        coordinator.setProgress(PlanStage(.train, round: "round"))
        var batch = TrainBatch(kind: .sft)
        batch.sequences = best.map { sequences[$0] }
        batch.learningRate = learningRate
        batch.policyVersion = version
        let stats = try coordinator.train(batch)
        coordinator.setProgress(PlanStage(.sync, round: "round"))
        let syncStart = Date()
        let synced = try coordinator.syncWeights(stats.announce, roles: [.generator])
        coordinator.setProgress(PlanStage(.done, round: "round"))
        let safetyText = safety.map { String(format: ", safety mean %.4f", Double($0.reduce(0, +)) / Double($0.count)) } ?? ""
        report(String(format: "step %d round %d: %d samples, reward mean %.4f (best-of-%d mean %.4f)%@, KL to reference %.4f; "
                      + "SFT on %d best: loss %.4f, grad norm %.3f; policy v%llu synced to %d generators in %.2f s; round %.2f s",
                      index + 1, round, generated.count, Double(rewards.reduce(0, +)) / Double(rewards.count), samples,
                      Double(best.map { rewards[$0] }.reduce(0, +)) / Double(best.count), safetyText, kl, best.count, stats.loss,
                      stats.gradNorm, stats.policyVersion, synced.count, Date().timeIntervalSince(syncStart), Date().timeIntervalSince(start)))
    }

    /// SIGTERM to every worker, then the coordinator.
    private func stop(report: (String) -> Void) {
        let stopped = stopAll(graceSeconds: ClusterLaunch.stopGraceSeconds)
        if stopped > 0 { report("stopped \(stopped) workers and the coordinator") }
    }

    /// Seconds a worker gets to drain after SIGTERM before it is killed.
    public static let stopGraceSeconds = 1.5

    /// SIGTERM to every worker started, SIGKILL to any still running after `graceSeconds`, then the
    /// coordinator. Safe to call from a signal handler's queue while `run` is in progress, and twice.
    /// Returns how many workers it stopped.
    @discardableResult
    public func stopAll(graceSeconds: Double) -> Int {
        // The coordinator goes first out of reach of the step replacer: no replacement while stopping.
        let running = lock.withLock { () -> Coordinator? in defer { coordinator = nil }; return coordinator }
        let stopped = workers.stopAll(graceSeconds: graceSeconds)
        workers.releaseAllocations()
        running?.shutdown()
        return stopped
    }
}

/// SplitMix64 for the plan's synthetic prompts (the recipe keeps LlamaCore out of its imports).
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

/// Prints a progress line every few seconds while a plan runs: the step, the coordinator's stage,
/// round and step counter, the time elapsed and the ETA of the whole plan (`PlanProgress`).
final class ProgressReporter: @unchecked Sendable {
    private let lock = NSLock()
    private var progress: PlanProgress
    private var current: (index: Int, started: Date)?
    private let planStarted = Date()
    private let steps: Int
    private let coordinator: Coordinator
    private let report: (String) -> Void
    private var timer: DispatchSourceTimer?

    init(plan: [ClusterSpec.Step], task: ClusterSpec.Task?, coordinator: Coordinator, report: @escaping (String) -> Void) {
        progress = PlanProgress(plan: plan, task: task)
        steps = plan.count
        self.coordinator = coordinator
        self.report = report
    }

    func start(every seconds: Double) {
        guard seconds > 0 else { return }
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "rlhf.launch.progress"))
        timer.schedule(deadline: .now() + seconds, repeating: seconds)
        timer.setEventHandler { [weak self] in self?.tick() }
        timer.resume()
        lock.withLock { self.timer = timer }
    }

    func stop() { lock.withLock { timer?.cancel(); timer = nil } }

    func begin(_ index: Int) { lock.withLock { current = (index, Date()) } }

    func end(_ index: Int) {
        lock.withLock {
            if let c = current, c.index == index { progress.finished(index, seconds: Date().timeIntervalSince(c.started)) }
            current = nil
        }
    }

    private func tick() {
        guard let line = lock.withLock({ () -> String? in
            guard let c = current else { return nil }
            let status = coordinator.status()
            let elapsed = Date().timeIntervalSince(c.started)
            let left = progress.remaining(current: c.index, elapsedInCurrent: elapsed)
            var where_ = "step \(c.index + 1) of \(steps)"
            if status.planStage != .idle { where_ += " (\(status.planStage)" + (status.step > 0 ? ", step \(status.step)" : "") + ")" }
            if status.round > 0 { where_ += ", round \(status.round)" }
            return "progress: \(where_); \(PlanProgress.duration(Date().timeIntervalSince(planStarted))) elapsed, ETA \(PlanProgress.duration(left))"
        }) else { return }
        report(line)
    }
}
