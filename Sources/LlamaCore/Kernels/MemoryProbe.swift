#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Measures what the machine can stream from memory, so that decode throughput can be read as a
/// fraction of the bandwidth it is bound by.
public enum MemoryProbe {
    /// Read bandwidth in GB/s: `threads` threads of `pool` sum disjoint parts of a `bytes`-byte
    /// buffer (far larger than the caches), best of `repeats` passes.
    public static func readBandwidth(bytes: Int = 512 << 20, pool: ComputePool, repeats: Int = 3) -> Double {
        let count = bytes / 4
        let buffer = FloatBuffer(count: count)
        buffer.withUnsafeMutableBufferPointer { b in for i in stride(from: 0, to: count, by: 1024) { b[i] = 1 } }
        let base = UnsafePointer(buffer.baseAddress)
        var best = 0.0
        var sink: Float = 0
        let sums = FloatBuffer(count: pool.threadCount * 16)
        for _ in 0..<repeats {
            let start = Date()
            pool.parallelFor(count, grain: 4096) { range, thread in
                var a0 = Kernels.Vec(), a1 = Kernels.Vec(), a2 = Kernels.Vec(), a3 = Kernels.Vec()
                var i = range.lowerBound
                while i + 64 <= range.upperBound {
                    a0 += Kernels.load(base, i)
                    a1 += Kernels.load(base, i + 16)
                    a2 += Kernels.load(base, i + 32)
                    a3 += Kernels.load(base, i + 48)
                    i += 64
                }
                sums.baseAddress[thread * 16] = (a0 + a1 + a2 + a3).sum()
            }
            let seconds = Date().timeIntervalSince(start)
            sink += sums.baseAddress[0]
            best = max(best, Double(bytes) / seconds / 1e9)
        }
        if sink.isNaN { print("") }
        return best
    }

    /// Resident memory of this process now, in bytes (Linux `/proc/self/statm`; 0 elsewhere).
    public static func currentResidentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Peak resident memory of this process so far, in bytes.
    public static func peakResidentBytes() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Int(usage.ru_maxrss) * 1024
    }
}
