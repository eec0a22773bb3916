import CZeroMQ

/// Runs work with the calling thread pinned to one CPU; threads it starts meanwhile (poll loops, ZeroMQ
/// I/O threads) inherit the pin. For benchmarks that measure the transport's own cost: on a virtual
/// machine, waking a thread on another vCPU costs tens of microseconds per hop.
public enum CPUAffinity {
    /// Runs `body` pinned to `cpu`, then restores the thread's CPU mask. Throws when pinning fails.
    public static func run<T>(onCPU cpu: Int, _ body: () throws -> T) throws -> T {
        var saved = [UInt8](repeating: 0, count: rlhf_cpu_set_size())
        let pinned = saved.withUnsafeMutableBytes { rlhf_pin_thread(Int32(cpu), $0.baseAddress) }
        guard pinned == 0 else { throw TransportError("pthread_setaffinity_np(cpu \(cpu))") }
        defer { _ = saved.withUnsafeBytes { rlhf_restore_thread($0.baseAddress) } }
        return try body()
    }
}
