import Foundation

/// One worker's Slurm job step, named after the worker: started here through `srun` (watched through
/// that process: srun ends when its step does) or adopted from an earlier launch (watched through
/// `squeue`). Signals go through `scancel JOB.STEP`: SIGTERM sent to srun itself would not drain the
/// worker (srun cancels its step at once on SIGTERM).
public final class SlurmStep: @unchecked Sendable {
    public let jobID: String
    /// The step's name: the worker's id.
    public let name: String
    /// The srun that started it (nil when adopted).
    let srun: Foundation.Process?
    private let lock = NSLock()
    /// `JOB.STEP`, once squeue listed it.
    private var resolved: String?
    /// An adopted step's last squeue answer, and when it was asked (at most every `pollSeconds`: a site's
    /// slurmctld answers every user's squeue).
    private var listed = true
    private var checked = Date.distantPast
    static let pollSeconds = 5.0

    init(jobID: String, name: String, srun: Foundation.Process?) {
        self.jobID = jobID
        self.name = name
        self.srun = srun
    }

    /// `JOB.STEP` (nil while Slurm does not list the step).
    public var stepID: String? {
        if let id = lock.withLock({ resolved }) { return id }
        // The highest-numbered step of the name: a replacement's, not an ended predecessor's.
        let id = Slurm.steps(ofJob: jobID).filter { $0.name == name }.map(\.id)
            .max { (Int($0.split(separator: ".").last ?? "") ?? -1) < (Int($1.split(separator: ".").last ?? "") ?? -1) }
        lock.withLock { resolved = id }
        return id
    }

    var isRunning: Bool { running(maxAge: SlurmStep.pollSeconds) }

    /// Whether it runs, by an squeue answer at most `maxAge` seconds old (srun's state, when started here).
    private func running(maxAge: Double) -> Bool {
        if let srun { return srun.isRunning }
        let stale = lock.withLock { Date().timeIntervalSince(checked) >= maxAge }
        if stale {
            let now = Slurm.steps(ofJob: jobID).contains { $0.name == name }
            lock.withLock { listed = now; checked = Date() }
        }
        return lock.withLock { listed }
    }

    /// Sends `sig` to the step (through srun where Slurm does not list it yet).
    func signal(_ sig: Int32) {
        if let step = stepID, Slurm.signal(step: step, sig) { return }
        if let srun, srun.isRunning { kill(srun.processIdentifier, sig == SIGKILL ? SIGKILL : SIGTERM) }
    }

    func waitUntilExit() {
        if let srun { srun.waitUntilExit(); return }
        while running(maxAge: 0) { Thread.sleep(forTimeInterval: 0.5) }
    }
}
