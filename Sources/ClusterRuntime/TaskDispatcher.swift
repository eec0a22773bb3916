/// The coordinator's work queue: tasks with request ids, handed to the worker of their role that the
/// `LoadBalancer` picks (healthy, within its capacity, the slower worker getting less). A worker that dies has its tasks put back at
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

    /// Waiting tasks per role, oldest first (`heads[role]` marks the first live entry).
    private var queues: [WorkerRole: [Pending]] = [:]
    private var heads: [WorkerRole: Int] = [:]
    /// Request ids waiting in some queue.
    private var waiting: Set<UInt64> = []
    private var running: [UInt64: Running] = [:]
    /// Request ids completed: recent ones (late duplicates arrive within a re-dispatch), bounded.
    private var completed: Set<UInt64> = []
    private var completedOrder: [UInt64] = []
    /// Which worker gets each task.
    public private(set) var balancer = LoadBalancer()
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
    public mutating func addWorker(_ id: String, role: WorkerRole, capacity: Int) { balancer.addWorker(id, role: role, capacity: capacity) }

    /// Stops sending work to a worker (suspect or draining); its tasks in flight stay.
    public mutating func pause(_ id: String) { balancer.pause(id) }
    /// Resumes sending work to a paused worker.
    public mutating func resume(_ id: String) { balancer.resume(id) }

    /// Removes a dead worker; its tasks go back to the front of their queue. Returns their request ids.
    @discardableResult
    public mutating func removeWorker(_ id: String) -> [UInt64] {
        guard balancer.removeWorker(id) else { return [] }
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

    /// A task `workerID` refused without starting it (it is draining): back to the front of its queue for
    /// another worker, and no more work for this one. Returns whether the worker held the task.
    @discardableResult
    public mutating func handBack(requestID: UInt64, workerID: String) -> Bool {
        guard let task = running[requestID], task.workerID == workerID else { return false }
        running[requestID] = nil
        balancer.finished(requestID, on: workerID, milliseconds: 0)
        balancer.pause(workerID)
        waiting.insert(requestID)
        compact(task.role)
        queues[task.role, default: []].insert(Pending(requestID: requestID, role: task.role, payload: task.payload), at: 0)
        return true
    }

    /// Drops the consumed prefix of a role's queue.
    private mutating func compact(_ role: WorkerRole) {
        guard let head = heads[role], head > 0 else { return }
        queues[role]!.removeFirst(head)
        heads[role] = 0
    }

    /// Hands queued tasks to available workers with free capacity, in queue order.
    public mutating func assign(now: UInt64) -> [Assignment] {
        var out: [Assignment] = []
        for role in queues.keys {
            var head = heads[role] ?? 0
            let queue = queues[role]!
            while head < queue.count, let worker = balancer.pick(role) {
                let task = queue[head]
                head += 1
                waiting.remove(task.requestID)
                balancer.started(task.requestID, on: worker)
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
        balancer.finished(requestID, on: task.workerID, milliseconds: Double(now > task.started ? now - task.started : 0))
        return .accepted(task.payload)
    }
}
