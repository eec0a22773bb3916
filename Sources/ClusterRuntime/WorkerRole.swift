/// The worker roles (and the coordinator), as the cluster's code names them: LLaMA2's five, and reward
/// functions (external commands or endpoints that score text).
public enum WorkerRole: String, CaseIterable, Codable, Sendable {
    case generator
    case rewardModel = "reward-model"
    case safetyModel = "safety-model"
    case learner
    case referencePolicy = "reference-policy"
    case rewardFunction = "reward-function"
}

/// A worker's health as the coordinator sees it.
public enum Health: String, Codable, Sendable, Comparable, CaseIterable {
    /// Heartbeats arrive on time.
    case healthy
    /// Heartbeats arrive but the worker makes no progress on the tasks it holds (its compute hangs
    /// while its socket lives): no new work is sent, tasks in flight are kept.
    case hung
    /// Heartbeats are late: no new work is sent, tasks in flight are kept.
    case suspect
    /// Silent for too long (or gone): its tasks are re-dispatched.
    case dead

    public static func < (a: Health, b: Health) -> Bool {
        let order: [Health] = [.healthy, .hung, .suspect, .dead]
        return order.firstIndex(of: a)! < order.firstIndex(of: b)!
    }
}
