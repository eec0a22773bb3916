import ClusterRuntime
import Foundation

/// Watches the Slurm workers while the plan runs: a step that ended (`scancel`, a lost node) while the
/// launch is not stopping is started again under the same id (the coordinator has declared the old one
/// dead and sent its calls to the others, once); one that drained and exited 0 (`scancel
/// --signal=TERM JOB.STEP`) left on purpose and is not. A worker that keeps ending is given up after
/// `limit` replacements, and the run goes on with the others.
final class StepReplacer: @unchecked Sendable {
    private weak var launch: ClusterLaunch?
    private let coordinator: Coordinator
    private let journal: RunJournal
    private let report: (String) -> Void
    private let lock = NSLock()
    private var timer: DispatchSourceTimer?
    private var replacements: [String: Int] = [:]
    /// Replacements per worker id before it is given up.
    let limit = 5

    init(launch: ClusterLaunch, coordinator: Coordinator, journal: RunJournal, report: @escaping (String) -> Void) {
        self.launch = launch
        self.coordinator = coordinator
        self.journal = journal
        self.report = report
    }

    func start() {
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "rlhf.launch.steps"))
        timer.schedule(deadline: .now() + 0.5, repeating: 0.5)
        timer.setEventHandler { [weak self] in self?.check() }
        timer.resume()
        lock.withLock { self.timer = timer }
    }

    func stop() { lock.withLock { timer?.cancel(); timer = nil } }

    private func check() {
        guard let launch, !launch.stopping else { return }
        for worker in launch.workerProcesses where worker.isSlurmStep && !worker.isRunning {
            guard !launch.stopping else { return }
            if worker.exitStatus == 0 {
                // Drained (scancel --signal=TERM): it left on purpose, as a worker sent SIGTERM does.
                launch.forget(worker)
                report("worker \(worker.id) drained and left (its Slurm step ended with status 0); not replaced")
                continue
            }
            let count = lock.withLock { () -> Int in replacements[worker.id, default: 0] += 1; return replacements[worker.id]! }
            guard count <= limit else {
                if count == limit + 1 { report("worker \(worker.id) ended \(limit + 1) times; not replaced again (the run goes on without it)") }
                continue
            }
            do {
                try launch.replace(worker, coordinator: coordinator, journal: journal)
                report("worker \(worker.id)'s Slurm step ended (srun exit status \(worker.exitStatus.map(String.init) ?? "?")); "
                       + "started a replacement step (\(count) of at most \(limit))")
            } catch {
                report("worker \(worker.id)'s Slurm step ended and could not be replaced: \(error)")
            }
        }
    }
}
