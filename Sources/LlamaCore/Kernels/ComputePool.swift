import Dispatch
import Synchronization
import Foundation

/// A fixed set of threads that run one parallel region at a time, for the kernels of one process.
///
/// The calling thread is thread 0; `threadCount - 1` helpers spin briefly between regions (a decode
/// step issues dozens of regions a few microseconds apart), then sleep on a semaphore. Regions are
/// issued by one caller at a time (the transformer that owns the pool).
public final class ComputePool: @unchecked Sendable {
    /// Threads taking part in each region, the caller included.
    public let threadCount: Int

    private let generation = Atomic<Int>(0)
    private let pending = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let helpers: [Helper]
    private nonisolated(unsafe) var job: ((Int) -> Void)?

    private static let awake = 0, asleep = 1

    private final class Helper: Sendable {
        let state = Atomic<Int>(0)
        let semaphore = DispatchSemaphore(value: 0)
    }

    /// The thread counts a command or worker takes (`--threads`, a spec's `threads:` and `cpus_per_task`).
    public static let threadCounts = 1 ... 256

    /// A pool of `threads` threads (at least 1; 1 runs everything on the caller).
    public init(threads: Int) {
        threadCount = max(1, threads)
        helpers = (1..<max(1, threads)).map { _ in Helper() }
        for index in 1..<threadCount {
            let thread = Thread { [self] in self.helperLoop(index) }
            thread.name = "llama-compute-\(index)"
            thread.start()
        }
    }

    /// A single-threaded pool.
    public static let serial = ComputePool(threads: 1)

    /// Stops the helper threads; the pool must not be used afterwards.
    public func shutdown() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        wakeSleepers()
    }

    private func wakeSleepers() {
        for helper in helpers {
            let (exchanged, _) = helper.state.compareExchange(expected: ComputePool.asleep, desired: ComputePool.awake,
                                                              ordering: .sequentiallyConsistent)
            if exchanged { helper.semaphore.signal() }
        }
    }

    private func helperLoop(_ index: Int) {
        let helper = helpers[index - 1]
        // Regions are counted from 0, the value at construction: a helper that starts late must still
        // take part in the regions issued before it ran (reading the counter here would skip them).
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins < 200_000 { continue }
                helper.state.store(ComputePool.asleep, ordering: .sequentiallyConsistent)
                if generation.load(ordering: .sequentiallyConsistent) != seen {
                    let (exchanged, _) = helper.state.compareExchange(
                        expected: ComputePool.asleep, desired: ComputePool.awake, ordering: .sequentiallyConsistent)
                    if !exchanged { helper.semaphore.wait() }
                } else {
                    helper.semaphore.wait()
                }
                spins = 0
            }
            seen = generation.load(ordering: .acquiring)
            if stopping.load(ordering: .acquiring) { return }
            job?(index)
            pending.subtract(1, ordering: .releasing)
        }
    }

    /// Runs `body(thread)` once on each of the `threadCount` threads and returns when all are done.
    public func run(_ body: (Int) -> Void) {
        if threadCount == 1 { body(0); return }
        withoutActuallyEscaping(body) { escapable in
            job = escapable
            pending.store(threadCount - 1, ordering: .sequentiallyConsistent)
            generation.add(1, ordering: .sequentiallyConsistent)
            wakeSleepers()
            escapable(0)
            while pending.load(ordering: .acquiring) > 0 {}
            job = nil
        }
    }

    /// The share of `0..<count` that thread `thread` of `threads` takes, in whole multiples of `grain`.
    public static func share(of count: Int, thread: Int, threads: Int, grain: Int = 1) -> Range<Int> {
        let units = (count + grain - 1) / grain
        let lo = units * thread / threads * grain, hi = units * (thread + 1) / threads * grain
        return min(lo, count) ..< min(hi, count)
    }

    /// Splits `0..<count` into one contiguous range per thread and runs `body(range, thread)` on each.
    public func parallelFor(_ count: Int, grain: Int = 1, _ body: (Range<Int>, Int) -> Void) {
        let threads = threadCount
        if threads == 1 || count <= grain { body(0..<count, 0); return }
        run { t in
            let range = ComputePool.share(of: count, thread: t, threads: threads, grain: grain)
            if !range.isEmpty { body(range, t) }
        }
    }
}
