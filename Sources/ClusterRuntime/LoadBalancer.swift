/// Which worker of a role gets the next call: the available one with free capacity and the earliest
/// expected finish, `(in flight + 1) x mean call time` (an exponential moving average per worker, so the
/// slower worker gets less); ties by id. A pure state machine: time is passed in by its caller, the
/// `TaskDispatcher`, which owns the queues.
public struct LoadBalancer: Sendable {
    struct Slot: Sendable {
        var role: WorkerRole
        var capacity: Int
        var inFlight: Set<UInt64> = []
        /// Exponential moving average of call time, in milliseconds (starts neutral).
        var meanMilliseconds: Double = 1
        var available = true
    }

    private var slots: [String: Slot] = [:]

    public init() {}

    /// Adds (or re-adds, available again) a worker able to take `capacity` calls at once.
    public mutating func addWorker(_ id: String, role: WorkerRole, capacity: Int) {
        var slot = slots[id] ?? Slot(role: role, capacity: capacity)
        slot.role = role
        slot.capacity = max(1, capacity)
        slot.available = true
        slots[id] = slot
    }

    /// Forgets a worker; returns whether it was known.
    @discardableResult
    public mutating func removeWorker(_ id: String) -> Bool { slots.removeValue(forKey: id) != nil }

    /// Stops choosing a worker (suspect, hung, draining or catching up); its calls in flight stay.
    public mutating func pause(_ id: String) { slots[id]?.available = false }
    /// Chooses a paused worker again.
    public mutating func resume(_ id: String) { slots[id]?.available = true }

    /// The worker of `role` the next call goes to, or nil when none is available with free capacity.
    public func pick(_ role: WorkerRole) -> String? {
        var best: (id: String, finish: Double)? = nil
        for (id, slot) in slots where slot.role == role && slot.available && slot.inFlight.count < slot.capacity {
            let finish = Double(slot.inFlight.count + 1) * slot.meanMilliseconds
            if let b = best, b.finish < finish || (b.finish == finish && b.id < id) { continue }
            best = (id, finish)
        }
        return best?.id
    }

    /// `worker` took call `requestID`.
    mutating func started(_ requestID: UInt64, on worker: String) { slots[worker]?.inFlight.insert(requestID) }

    /// `worker` answered call `requestID` after `milliseconds`: its mean call time moves toward that.
    mutating func finished(_ requestID: UInt64, on worker: String, milliseconds: Double) {
        guard var slot = slots[worker] else { return }
        slot.inFlight.remove(requestID)
        slot.meanMilliseconds = 0.8 * slot.meanMilliseconds + 0.2 * max(milliseconds, 0.1)
        slots[worker] = slot
    }
}
