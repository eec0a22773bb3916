import ClusterRuntime
import Foundation
import Logging

/// Process supervision: the worker processes of a run, started here (locally, in a network namespace,
/// over ssh, or as Slurm job steps through `srun`, each logging to `logs/ID.log` in the run directory)
/// or adopted from an earlier launch of the same run (watched and signalled by pid, or through
/// `scancel`), and stopped at the end. It knows processes and hosts, not what the workers do.
public final class WorkerProcesses: @unchecked Sendable {
    /// A start that failed, naming the host and role.
    public struct Failure: Error, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    /// A worker process: one this launch started, or one an earlier launch of the run started and this
    /// one adopted.
    public struct Process: @unchecked Sendable {
        enum Handle {
            case child(Foundation.Process)
            case adopted(pid_t)
            /// A worker on an ssh host that joined again: its pid there.
            case remote(address: String, pid: pid_t)
            /// A Slurm job step (started here through srun, or adopted).
            case slurm(SlurmStep)
            /// A worker something else starts (a Kubernetes pod): awaited, never signalled.
            case external
        }
        public let host: String
        public let role: WorkerRole
        public let id: String
        let handle: Handle
        /// Its log file.
        public let log: String

        /// Whether an earlier launch of this run started it.
        public var isAdopted: Bool {
            switch handle {
            case .child: return false
            // Started by something else: like an adopted one, not started anew by this launch.
            case .adopted, .remote, .external: return true
            case let .slurm(step): return step.srun == nil
            }
        }

        public var isRunning: Bool {
            switch handle {
            case let .child(p): return p.isRunning
            case let .adopted(pid): return WorkerProcesses.isAlive(pid)
            // Not watched from here once signalled: it drains and leaves on its own.
            case .remote: return false
            case let .slurm(step): return step.isRunning
            case .external: return true
            }
        }

        /// The exit status of a child that has exited (nil for an adopted process).
        public var exitStatus: Int32? {
            if case let .child(p) = handle, !p.isRunning { return p.terminationStatus }
            if case let .slurm(step) = handle, let p = step.srun, !p.isRunning { return p.terminationStatus }
            return nil
        }

        /// Sends `sig` (over ssh to a remote worker).
        public func signal(_ sig: Int32) {
            switch handle {
            case let .child(p): kill(p.processIdentifier, sig)
            case let .adopted(pid): kill(pid, sig)
            case let .remote(address, pid):
                let ssh = Foundation.Process()
                ssh.executableURL = URL(fileURLWithPath: "/usr/bin/ssh")
                ssh.arguments = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=2", address, "kill", "-\(sig)", "\(pid)"]
                try? ssh.run()
                ssh.waitUntilExit()
            case let .slurm(step): step.signal(sig)
            case .external: break
            }
        }

        public func waitUntilExit() {
            switch handle {
            case let .child(p): p.waitUntilExit()
            case let .adopted(pid): while WorkerProcesses.isAlive(pid) { Thread.sleep(forTimeInterval: 0.01) }
            case .remote, .external: break
            case let .slurm(step): step.waitUntilExit()
            }
        }

        /// Whether it is a Slurm job step.
        public var isSlurmStep: Bool {
            if case .slurm = handle { return true }
            return false
        }
    }

    /// Whether `pid` names a live process (a zombie counts as gone).
    public static func isAlive(_ pid: pid_t) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return true }
        return !stat[close...].dropFirst(2).hasPrefix("Z")
    }

    /// Whether the live process `pid` is the worker daemon `id` (its command line names that id).
    public static func isWorker(_ pid: pid_t, id: String) -> Bool {
        guard isAlive(pid), let cmdline = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline")) else { return false }
        let arguments = cmdline.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
        return arguments.contains("worker") && zip(arguments, arguments.dropFirst()).contains { $0 == "--id" && $1 == id }
    }

    /// The run directory (`logs/` holds each worker's log).
    public let runDirectory: String
    /// The rlhf executable started on local hosts (and on remote ones without `executable:`).
    public let executable: String
    private let logger: Logger
    /// Guards `processes`, `allocations` and `nodes`: `stopAll` may run on a signal handler's queue.
    private let lock = NSLock()
    private var processes: [Process] = []
    /// The Slurm allocation of each `slurm:` host, by host name.
    private var allocations: [String: Slurm.Allocation] = [:]
    /// The node each Slurm worker runs on, by worker id (a replacement runs where its predecessor did).
    private var nodes: [String: String] = [:]

    public init(runDirectory: String, executable: String, logger: Logger) {
        self.runDirectory = runDirectory
        self.executable = executable
        self.logger = logger
    }

    /// The worker processes now (a snapshot).
    public var all: [Process] { lock.withLock { processes } }

    /// Where worker `id` logs.
    public func log(_ id: String) -> String { runDirectory + "/logs/\(id).log" }

    /// Sets the allocation the workers of `slurm:` host `host` run in (before any is started).
    public func setAllocation(_ allocation: Slurm.Allocation, for host: String) { lock.withLock { allocations[host] = allocation } }

    /// The allocation of each `slurm:` host, by host name.
    public var slurmAllocations: [String: Slurm.Allocation] { lock.withLock { allocations } }

    /// The node for Slurm worker `id` of `host`: its predecessor's, else the next in turn (the host's
    /// workers spread over the allocation's nodes round-robin).
    private func node(for id: String, host: String, in allocation: Slurm.Allocation) -> String? {
        lock.withLock {
            if let node = nodes[id] { return node }
            guard !allocation.nodes.isEmpty else { return nil }
            let placed = processes.filter { $0.host == host }.count
            let node = allocation.nodes[placed % allocation.nodes.count]
            nodes[id] = node
            return node
        }
    }

    /// Starts worker `id` of `role` on `host` as `rlhf ARGUMENTS` (appending to its log, so a resumed run
    /// keeps its earlier life's); returns the pid of the process started here (for a Slurm worker, its
    /// srun's).
    @discardableResult
    public func start(id: String, role: WorkerRole, host: WorkerHost, arguments: [String]) throws -> pid_t {
        let exe = host.executable ?? executable
        var arguments = arguments
        let process = Foundation.Process()
        var step: SlurmStep?
        if let slurm = host.slurm {
            guard let allocation = lock.withLock({ allocations[host.name] }) else {
                throw Failure(message: "could not start \(role.rawValue) on host \(host.name): it has no Slurm allocation")
            }
            guard let srun = Slurm.path(of: "srun") else {
                throw Failure(message: "could not start \(role.rawValue) on host \(host.name): srun is not on PATH (install slurm-client)")
            }
            process.executableURL = URL(fileURLWithPath: srun)
            arguments = slurm.stepOptions(jobID: allocation.jobID, node: node(for: id, host: host.name, in: allocation), name: id)
                + [exe] + arguments
            step = SlurmStep(jobID: allocation.jobID, name: id, srun: process)
        } else if host.isExternal {
            throw Failure(message: "host \(host.name) is external: its workers are started by something else, not by the launcher")
        } else if host.isLocal {
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
        let log = log(id)
        if !FileManager.default.fileExists(atPath: log) { _ = FileManager.default.createFile(atPath: log, contents: nil) }
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        try output.seekToEnd()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        do {
            try process.run()
        } catch {
            throw Failure(message: "could not start \(role.rawValue) on host \(host.name): \(error)")
        }
        let handle: Process.Handle = step.map { .slurm($0) } ?? .child(process)
        lock.withLock { processes.append(Process(host: host.name, role: role, id: id, handle: handle, log: log)) }
        return process.processIdentifier
    }

    /// Waits for worker `id` of an external host (started by something else): it counts as running.
    public func expect(id: String, role: WorkerRole, host: WorkerHost) {
        lock.withLock { processes.append(Process(host: host.name, role: role, id: id, handle: .external, log: log(id))) }
    }

    /// Forgets worker `id` (one that ended, before a replacement is started under its id).
    public func forget(id: String) {
        lock.withLock { processes.removeAll { $0.id == id } }
    }

    /// Takes over worker `id` that an earlier launch started: on this machine by its pid, on a remote
    /// host by the pid it registered with (signalled over ssh).
    public func adopt(id: String, role: WorkerRole, host: WorkerHost, pid: pid_t) {
        let handle: Process.Handle
        if host.isSlurm, let allocation = lock.withLock({ allocations[host.name] }) {
            handle = .slurm(SlurmStep(jobID: allocation.jobID, name: id, srun: nil))
        } else {
            handle = host.isLocal ? .adopted(pid) : .remote(address: host.address, pid: pid)
        }
        lock.withLock { processes.append(Process(host: host.name, role: role, id: id, handle: handle, log: log(id))) }
    }

    /// Kills the workers of `role` (SIGKILL), waits for them, and forgets them; returns them.
    public func killAll(_ role: WorkerRole) -> [Process] {
        let old = lock.withLock { () -> [Process] in
            defer { processes.removeAll { $0.role == role } }
            return processes.filter { $0.role == role }
        }
        for worker in old {
            worker.signal(SIGKILL)
            worker.waitUntilExit()
        }
        return old
    }

    /// A worker that exited (or an adopted one that is gone), with the last lines of its log.
    public func firstExited() -> String? {
        guard let worker = all.first(where: { !$0.isRunning }) else { return nil }
        let tail = (try? String(contentsOfFile: worker.log, encoding: .utf8))?.split(separator: "\n").suffix(3).joined(separator: " | ") ?? ""
        let status = worker.exitStatus.map { "with status \($0)" } ?? "(adopted from the previous launch)"
        return "worker \(worker.role.rawValue) on host \(worker.host) exited \(status) before registering: \(tail)"
    }

    /// SIGTERM to every worker, SIGKILL to any still running after `graceSeconds`. Safe to call from a
    /// signal handler's queue, and twice. Returns how many it stopped.
    @discardableResult
    public func stopAll(graceSeconds: Double) -> Int {
        let workers = lock.withLock { () -> [Process] in
            defer { processes.removeAll() }
            return processes
        }
        for worker in workers where worker.isRunning { worker.signal(SIGTERM) }
        let deadline = Date().addingTimeInterval(graceSeconds)
        while workers.contains(where: { $0.isRunning }) && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        for worker in workers where worker.isRunning {
            worker.signal(SIGKILL)
            logger.warning("worker did not stop in time; killed", metadata: ["worker": "\(worker.id)", "host": "\(worker.host)"])
        }
        for worker in workers { worker.waitUntilExit() }
        return workers.count
    }

    /// Cancels the Slurm allocations this launch made (`scancel JOB`), once; not the one it runs in.
    public func releaseAllocations() {
        let owned = lock.withLock { () -> [Slurm.Allocation] in
            defer { allocations.removeAll() }
            return allocations.values.filter(\.owned)
        }
        for allocation in Set(owned.map(\.jobID)).sorted() {
            do {
                try Slurm.cancel(job: allocation)
            } catch {
                logger.warning("could not cancel the Slurm allocation", metadata: ["job": "\(allocation)", "error": "\(error)"])
            }
        }
    }
}
