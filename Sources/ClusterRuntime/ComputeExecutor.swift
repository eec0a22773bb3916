import Dispatch

/// A serial executor on a dispatch queue of its own: a role's distributed actor runs its calls here,
/// off the poll-loop thread and off the cooperative pool (a call computes for seconds), one at a time,
/// in the same queue as the weight installs its worker runs between calls.
public final class ComputeExecutor: SerialExecutor, @unchecked Sendable {
    /// The queue the actor's jobs run on; other work put on it runs between them.
    public let queue: DispatchQueue

    public init(label: String) { queue = DispatchQueue(label: label) }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async { job.runSynchronously(on: self.asUnownedSerialExecutor()) }
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor { UnownedSerialExecutor(ordinary: self) }
}
