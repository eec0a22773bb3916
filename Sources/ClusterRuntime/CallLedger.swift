/// A worker's record of the calls it runs and has answered, as a pure state machine: what to do with a
/// call that arrives (run it, answer it with the answer already given, have it wait for the same call in
/// flight, or refuse it while draining) and whom to answer when a call finishes.
///
/// A call is the same call when it has the same request id and the same content (its digest). The
/// coordinator asks again under the same id when it restarted before journaling the answer, or when it
/// declared the worker dead mid-call and re-dispatched the call to it once it registered again. A second
/// run of the call would take a learner step twice (the second then fails: the batch no longer matches the
/// learner's version), so the call runs once and every asker gets its answer, stamped with the epoch it
/// asked under (the coordinator fences answers of an earlier registration).
///
/// `Reply` is the answer's type (the wire message for the daemon).
public struct CallLedger<Reply: Sendable>: Sendable {
    /// A call: its request id and a digest of its content.
    public struct Call: Hashable, Sendable {
        public var requestID: UInt64
        public var digest: UInt32

        public init(requestID: UInt64, digest: UInt32) {
            self.requestID = requestID
            self.digest = digest
        }
    }

    /// What to do with an arriving call.
    public enum Admission: Sendable {
        /// Run it; answer it under `epoch` (and whoever joins it) when `finish` says.
        case run
        /// Answered before: send this answer again, stamped with the caller's epoch.
        case replay(Reply)
        /// The same call is running: its answer will go to this caller too.
        case joined
        /// The worker is draining and takes no new work.
        case draining
    }

    /// The last call answered and its answer.
    private var lastAnswered: (call: Call, reply: Reply)?
    /// Calls running, each with the epochs to answer under (the first asker's first), without repeats.
    private var running: [Call: [UInt64]] = [:]
    /// Whether new calls are refused (calls already running, and askers joining them, are still answered).
    public var draining = false

    public init() {}

    /// Calls running now (not counting askers joined to them).
    public var inFlight: Int { running.count }

    /// Admits `call`, asked under `epoch`.
    public mutating func admit(_ call: Call, epoch: UInt64) -> Admission {
        if let last = lastAnswered, last.call == call { return .replay(last.reply) }
        if var epochs = running[call] {
            if !epochs.contains(epoch) { epochs.append(epoch) }
            running[call] = epochs
            return .joined
        }
        if draining { return .draining }
        running[call] = [epoch]
        return .run
    }

    /// `call` finished with `reply`: returns the epochs to send it under (each asker's, in the order
    /// they asked), and keeps it to answer the same call asked again.
    public mutating func finish(_ call: Call, reply: Reply) -> [UInt64] {
        let epochs = running.removeValue(forKey: call) ?? []
        lastAnswered = (call, reply)
        return epochs
    }
}
