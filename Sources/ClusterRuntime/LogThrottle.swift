/// Bounds the rate of a repeated log line (a peer sending thousands of bad frames must not write
/// thousands of lines): the first event is logged, then at most one per `intervalMilliseconds`,
/// carrying the number of events not logged since the last line. Time is passed in.
public struct LogThrottle: Sendable {
    public let intervalMilliseconds: UInt64
    private var lastLogged: UInt64?
    private var suppressed = 0

    public init(intervalMilliseconds: UInt64 = 1_000) { self.intervalMilliseconds = intervalMilliseconds }

    /// Counts an event at `now`: whether to log it, and how many events went unlogged before it.
    public mutating func admit(now: UInt64) -> (log: Bool, suppressed: Int) {
        if let last = lastLogged, now < last + intervalMilliseconds {
            suppressed += 1
            return (false, 0)
        }
        defer { suppressed = 0 }
        lastLogged = now
        return (true, suppressed)
    }
}
