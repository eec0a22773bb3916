/// The coordinator's work queue: tasks with request ids, load-balanced over the healthy workers of
/// their role within each worker's capacity, the slower worker getting less (the expected finish time
/// `(in flight + 1) x mean task time` picks the worker). A worker that dies has its tasks put back at
/// the front of the queue; a result is accepted once per request id and late duplicates are dropped.
/// A pure state machine: time is passed in.
public struct TaskDispatcher<Payload: Sendable>: Sendable {
    /// A task handed to a worker.
    public struct Assignment: Sendable {
        public let requestID: UInt64
        public let workerID: String
        public let payload: Payload
    }

    /// What became of a result.
    public enum Completion: Sendable {
        /// The first result for this request: its payload.
        case accepted(Payload)
        /// A result for a request already completed (a late duplicate after re-dispatch): dropped.
        case duplicate
        /// No such request.
        case unknown
    }

    struct Pending: Sendable {
        let requestID: UInt64
        let role: WorkerRole
        let payload: Payload
    }

    struct Running: Sendable {
        let requestID: UInt64
        let role: WorkerRole
        let payload: Payload
        let workerID: String
        let started: UInt64
    }

    struct Slot: Sendable {
        var role: WorkerRole
        var capacity: Int
        var inFlight: Set<UInt64> = []
        /// Exponential moving average of task time, in milliseconds (starts neutral).
        var meanMilliseconds: Double = 1
        var available: Bool = true
    }

    private var queue: [Pending] = []
    private var running: [UInt64: Running] = [:]
    private var completed: Set<UInt64> = []
    private var slots: [String: Slot] = [:]

    public init() {}

    /// Tasks waiting for a worker, per role.
    public func queueDepth(_ role: WorkerRole) -> Int { queue.filter { $0.role == role }.count }
    /// Tasks being worked on.
    public var inFlightCount: Int { running.count }

    /// Queues a task (a request id already queued, running or completed is ignored: tasks are idempotent).
    public mutating func enqueue(requestID: UInt64, role: WorkerRole, payload: Payload) {
        guard running[requestID] == nil, !completed.contains(requestID),
              !queue.contains(where: { $0.requestID == requestID }) else { return }
        queue.append(Pending(requestID: requestID, role: role, payload: payload))
    }

    /// Adds (or re-adds) a worker able to take `capacity` tasks at once.
    public mutating func addWorker(_ id: String, role: WorkerRole, capacity: Int) {
        var slot = slots[id] ?? Slot(role: role, capacity: capacity)
        slot.role = role
        slot.capacity = max(1, capacity)
        slot.available = true
        slots[id] = slot
    }

    /// Stops sending work to a worker (suspect or draining); its tasks in flight stay.
    public mutating func pause(_ id: String) { slots[id]?.available = false }
    /// Resumes sending work to a paused worker.
    public mutating func resume(_ id: String) { slots[id]?.available = true }

    /// Removes a dead worker; its tasks go back to the front of the queue. Returns their request ids.
    @discardableResult
    public mutating func removeWorker(_ id: String) -> [UInt64] {
        guard slots.removeValue(forKey: id) != nil else { return [] }
        let requeued = running.values.filter { $0.workerID == id }.sorted { $0.requestID < $1.requestID }
        for task in requeued { running[task.requestID] = nil }
        queue.insert(contentsOf: requeued.map { Pending(requestID: $0.requestID, role: $0.role, payload: $0.payload) }, at: 0)
        return requeued.map(\.requestID)
    }

    /// Hands queued tasks to available workers with free capacity, in queue order.
    public mutating func assign(now: UInt64) -> [Assignment] {
        var out: [Assignment] = []
        var remaining: [Pending] = []
        for task in queue {
            let candidates = slots.filter { $0.value.role == task.role && $0.value.available && $0.value.inFlight.count < $0.value.capacity }
            guard let best = candidates.min(by: { a, b in
                let ea = Double(a.value.inFlight.count + 1) * a.value.meanMilliseconds
                let eb = Double(b.value.inFlight.count + 1) * b.value.meanMilliseconds
                return ea != eb ? ea < eb : a.key < b.key
            }) else {
                remaining.append(task)
                continue
            }
            slots[best.key]!.inFlight.insert(task.requestID)
            running[task.requestID] = Running(requestID: task.requestID, role: task.role, payload: task.payload,
                                              workerID: best.key, started: now)
            out.append(Assignment(requestID: task.requestID, workerID: best.key, payload: task.payload))
        }
        queue = remaining
        return out
    }

    /// Records a result from `workerID` for `requestID`.
    public mutating func complete(requestID: UInt64, workerID: String, now: UInt64) -> Completion {
        if completed.contains(requestID) { return .duplicate }
        guard let task = running.removeValue(forKey: requestID) else {
            // A result from a worker whose task was re-queued after it was declared dead: the first
            // result wins, so accept it and drop the queued copy.
            if let index = queue.firstIndex(where: { $0.requestID == requestID }) {
                let task = queue.remove(at: index)
                completed.insert(requestID)
                return .accepted(task.payload)
            }
            return .unknown
        }
        completed.insert(requestID)
        if var slot = slots[task.workerID] {
            slot.inFlight.remove(requestID)
            let elapsed = Double(now > task.started ? now - task.started : 0)
            slot.meanMilliseconds = 0.8 * slot.meanMilliseconds + 0.2 * max(elapsed, 0.1)
            slots[task.workerID] = slot
        }
        if task.workerID != workerID, var other = slots[workerID] {
            other.inFlight.remove(requestID)
            slots[workerID] = other
        }
        return .accepted(task.payload)
    }
}
