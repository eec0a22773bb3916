/// The coordinator's work queue: tasks with request ids, load-balanced over the healthy workers of
/// their role within each worker's capacity, the slower worker getting less (the expected finish time
/// `(in flight + 1) x mean task time` picks the worker). A worker that dies has its tasks put back at
/// the front of the queue; a result is accepted once per request id, only from the worker holding the
/// task (a dead worker's late result is fenced), and late duplicates are dropped.
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
        /// A result from a worker that does not hold the task (it was re-dispatched after the worker
        /// was declared dead): refused, the holder's result will count.
        case fenced
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

    /// Waiting tasks per role, oldest first (`heads[role]` marks the first live entry).
    private var queues: [WorkerRole: [Pending]] = [:]
    private var heads: [WorkerRole: Int] = [:]
    /// Request ids waiting in some queue.
    private var waiting: Set<UInt64> = []
    private var running: [UInt64: Running] = [:]
    /// Request ids completed: recent ones (late duplicates arrive within a re-dispatch), bounded.
    private var completed: Set<UInt64> = []
    private var completedOrder: [UInt64] = []
    private var slots: [String: Slot] = [:]
    /// How many completed request ids are remembered to drop late duplicates.
    public static var completedMemory: Int { 1 << 16 }

    public init() {}

    /// Tasks waiting for a worker, per role.
    public func queueDepth(_ role: WorkerRole) -> Int { (queues[role]?.count ?? 0) - (heads[role] ?? 0) }
    /// Tasks being worked on.
    public var inFlightCount: Int { running.count }

    /// Queues a task (a request id already queued, running or completed is ignored: tasks are idempotent).
    public mutating func enqueue(requestID: UInt64, role: WorkerRole, payload: Payload) {
        guard running[requestID] == nil, !completed.contains(requestID), waiting.insert(requestID).inserted else { return }
        queues[role, default: []].append(Pending(requestID: requestID, role: role, payload: payload))
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

    /// Removes a dead worker; its tasks go back to the front of their queue. Returns their request ids.
    @discardableResult
    public mutating func removeWorker(_ id: String) -> [UInt64] {
        guard slots.removeValue(forKey: id) != nil else { return [] }
        let requeued = running.values.filter { $0.workerID == id }.sorted { $0.requestID < $1.requestID }
        for task in requeued {
            running[task.requestID] = nil
            waiting.insert(task.requestID)
            compact(task.role)
            queues[task.role, default: []].insert(Pending(requestID: task.requestID, role: task.role, payload: task.payload), at: 0)
        }
        // Inserted one by one at the front: restore request order among the re-queued.
        for role in Set(requeued.map(\.role)) {
            let count = requeued.filter { $0.role == role }.count
            queues[role]![0..<count].reverse()
        }
        return requeued.map(\.requestID)
    }

    /// Drops the consumed prefix of a role's queue.
    private mutating func compact(_ role: WorkerRole) {
        guard let head = heads[role], head > 0 else { return }
        queues[role]!.removeFirst(head)
        heads[role] = 0
    }

    /// The available worker of `role` with free capacity and the earliest expected finish
    /// (`(in flight + 1) x mean task time`; ties by id).
    private func bestWorker(for role: WorkerRole) -> String? {
        var best: (id: String, finish: Double)? = nil
        for (id, slot) in slots where slot.role == role && slot.available && slot.inFlight.count < slot.capacity {
            let finish = Double(slot.inFlight.count + 1) * slot.meanMilliseconds
            if let b = best, b.finish < finish || (b.finish == finish && b.id < id) { continue }
            best = (id, finish)
        }
        return best?.id
    }

    /// Hands queued tasks to available workers with free capacity, in queue order.
    public mutating func assign(now: UInt64) -> [Assignment] {
        var out: [Assignment] = []
        for role in queues.keys {
            var head = heads[role] ?? 0
            let queue = queues[role]!
            while head < queue.count, let worker = bestWorker(for: role) {
                let task = queue[head]
                head += 1
                waiting.remove(task.requestID)
                slots[worker]!.inFlight.insert(task.requestID)
                running[task.requestID] = Running(requestID: task.requestID, role: role, payload: task.payload,
                                                  workerID: worker, started: now)
                out.append(Assignment(requestID: task.requestID, workerID: worker, payload: task.payload))
            }
            heads[role] = head
            if head > 1024 && head * 2 > queue.count { compact(role) }
            if head == queue.count { queues[role] = []; heads[role] = 0 }
        }
        return out
    }

    private mutating func markCompleted(_ requestID: UInt64) {
        completed.insert(requestID)
        completedOrder.append(requestID)
        if completedOrder.count > 2 * Self.completedMemory {
            for old in completedOrder[..<Self.completedMemory] { completed.remove(old) }
            completedOrder.removeFirst(Self.completedMemory)
        }
    }

    /// Records a result from `workerID` for `requestID`.
    public mutating func complete(requestID: UInt64, workerID: String, now: UInt64) -> Completion {
        if completed.contains(requestID) { return .duplicate }
        guard let holder = running[requestID] else {
            // Queued again after its worker died: that worker's late result is fenced.
            return waiting.contains(requestID) ? .fenced : .unknown
        }
        guard holder.workerID == workerID else { return .fenced }
        let task = running.removeValue(forKey: requestID)!
        markCompleted(requestID)
        if var slot = slots[task.workerID] {
            slot.inFlight.remove(requestID)
            let elapsed = Double(now > task.started ? now - task.started : 0)
            slot.meanMilliseconds = 0.8 * slot.meanMilliseconds + 0.2 * max(elapsed, 0.1)
            slots[task.workerID] = slot
        }
        return .accepted(task.payload)
    }
}
