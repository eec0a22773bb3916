import CBLAS
import CKernels
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Which kernel set OpenBLAS should run on this CPU: the pure decision, apart from the process's I/O.
///
/// OpenBLAS built with DYNAMIC_ARCH (Debian's) picks its kernels from CPUID when the library loads. On
/// CPUs it does not recognise, e.g. a KVM guest whose model string is the generic "Intel(R) Xeon(R)
/// Processor", it falls back to a generic core (`Prescott`: SSE3 kernels, 7x slower than its AVX-512
/// ones on sgemm). The core can only be chosen before the library loads, through `OPENBLAS_CORETYPE`,
/// so a process that finds a generic core re-executes itself once with the matching one.
public enum BLASKernelPolicy {
    /// The widest vector instruction set a kernel set (or a CPU) uses.
    public enum ISALevel: Int, Comparable, Sendable, CustomStringConvertible {
        case sse = 1, avx, avx2, avx512

        public static func < (a: ISALevel, b: ISALevel) -> Bool { a.rawValue < b.rawValue }

        public var description: String {
            switch self {
            case .sse: "SSE"
            case .avx: "AVX"
            case .avx2: "AVX2+FMA"
            case .avx512: "AVX-512"
            }
        }
    }

    /// Environment variable naming a core to use whatever the CPU (e.g. `Haswell`, `Prescott`): the user's
    /// explicit choice, taken verbatim.
    public static let overrideVariable = "RLHF_OPENBLAS_CORETYPE"
    /// Environment variable set on re-execution: `COUNT:ORIGINAL_CORE` (stops loops, and names the core
    /// OpenBLAS picked by itself).
    public static let reexecVariable = "RLHF_BLAS_REEXEC"
    /// Environment variable naming a core whose products failed the start-up check (set on the way back).
    public static let probeFailureVariable = "RLHF_BLAS_PROBE_FAILED"
    /// Environment variable naming a switched core whose products passed the start-up check.
    public static let verifiedVariable = "RLHF_BLAS_VERIFIED"
    /// OpenBLAS's own variable, read when the library loads.
    public static let coreTypeVariable = "OPENBLAS_CORETYPE"

    /// The instruction set of OpenBLAS's x86-64 kernel set `name` (as `openblas_get_corename()` spells
    /// it, any case); nil for names it does not know (other architectures, future cores).
    public static func level(ofCore name: String) -> ISALevel? {
        switch name.lowercased() {
        case "katmai", "coppermine", "northwood", "prescott", "banias", "atom", "core2", "penryn", "dunnington",
             "nehalem", "opteron", "opteron(sse3)", "barcelona", "bobcat", "generic", "unknown":
            return .sse
        case "sandybridge", "bulldozer", "piledriver", "steamroller", "excavator":
            return .avx
        case "haswell", "zen":
            return .avx2
        case "skylakex", "cooperlake", "sapphirerapids":
            return .avx512
        default:
            return nil
        }
    }

    /// The instruction set a CPU with these `/proc/cpuinfo` flags (as the kernel enabled them) can run.
    public static func level(cpuFlags flags: Set<String>) -> ISALevel {
        if ["avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"].allSatisfy(flags.contains) { return .avx512 }
        if flags.contains("avx2") && flags.contains("fma") { return .avx2 }
        if flags.contains("avx") { return .avx }
        return .sse
    }

    /// The kernel set that matches a CPU with these flags: `Cooperlake` (SkylakeX's kernels plus
    /// bfloat16) or `SkylakeX` for AVX-512, `Haswell` for AVX2+FMA; nil below that.
    public static func nativeCore(cpuFlags flags: Set<String>) -> String? {
        switch level(cpuFlags: flags) {
        case .avx512: flags.contains("avx512_bf16") ? "Cooperlake" : "SkylakeX"
        case .avx2: "Haswell"
        case .avx, .sse: nil
        }
    }

    /// What a process should do about its kernels.
    public enum Decision: Equatable, Sendable {
        /// The kernels in use are right for this CPU (or the user's choice).
        case keep
        /// Re-execute with `OPENBLAS_CORETYPE` set to this core.
        case switchTo(String)
        /// The kernels are still wrong after a re-execution (the library ignored the request): go on, and
        /// say so.
        case stillWrong(wanted: String)
    }

    /// Decides from the core OpenBLAS loaded (`current`), the CPU's flags and the environment.
    /// A generic core is replaced even when the environment's `OPENBLAS_CORETYPE` asked for it (such a
    /// value is often left by images made for older OpenBLAS builds); `RLHF_OPENBLAS_CORETYPE` is the
    /// user's way to insist on any core.
    public static func decide(current: String, cpuFlags: Set<String>, environment: [String: String]) -> Decision {
        let reexecuted = environment[reexecVariable].map { !$0.isEmpty } ?? false
        let wanted: String
        if let forced = environment[overrideVariable], !forced.isEmpty {
            guard forced.lowercased() != current.lowercased() else { return .keep }
            wanted = forced
        } else {
            guard let native = nativeCore(cpuFlags: cpuFlags) else { return .keep }
            let cpu = level(cpuFlags: cpuFlags)
            // Unknown names are left alone: they are cores this table has not heard of, not generic ones.
            guard let running = level(ofCore: current), running < cpu else { return .keep }
            wanted = native
        }
        return reexecuted ? .stillWrong(wanted: wanted) : .switchTo(wanted)
    }

    /// Parses `RLHF_BLAS_REEXEC` (`COUNT:ORIGINAL_CORE`).
    public static func reexecState(_ value: String?) -> (count: Int, originalCore: String)? {
        guard let value, let colon = value.firstIndex(of: ":"), let count = Int(value[..<colon]) else { return nil }
        return (count, String(value[value.index(after: colon)...]))
    }
}

/// What the process's BLAS runs, as found (and, where needed, fixed) at start-up.
public struct BLASReport: Sendable {
    /// The kernel set in use (`openblas_get_corename()`).
    public var core: String
    /// The library's build line (`openblas_get_config()`).
    public var config: String
    /// The core OpenBLAS picked by itself when this process re-executed to change it.
    public var switchedFrom: String?
    /// The CPU's instruction set, as the kernel enabled it.
    public var cpuLevel: BLASKernelPolicy.ISALevel
    /// Things to tell the user (warnings): a switch that did not take, a probe that failed.
    public var warnings: [String] = []

    /// One line for logs and benchmarks.
    public var summary: String {
        var line = "OpenBLAS kernels \(core) on a CPU with \(cpuLevel)"
        if let switchedFrom { line += " (OpenBLAS chose \(switchedFrom) by itself; switched at start-up)" }
        return line
    }
}

/// The process-wide side of `BLASKernelPolicy`: reads the CPU and the library, re-executes once when the
/// kernels are generic, and checks a switched core's results.
public enum BLASRuntime {
    private static let startup = Mutex<BLASReport?>(nil)

    /// What `prepareProcess()` found, or nil in a process that did not call it (tests, other hosts).
    public static var startupReport: BLASReport? { startup.withLock { $0 } }

    /// The kernel set OpenBLAS loaded.
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name).trimmingCharacters(in: .whitespaces)
    }

    /// OpenBLAS's build line (version, options, core).
    public static var configLine: String {
        guard let line = openblas_get_config() else { return "unknown" }
        return String(cString: line).trimmingCharacters(in: .whitespaces)
    }

    /// The CPU's feature flags from `/proc/cpuinfo` (empty where there is none).
    public static func cpuFlags() -> Set<String> {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = line.firstIndex(of: ":") else { return [] }
        return Set(line[line.index(after: colon)...].split(separator: " ").map(String.init))
    }

    /// Makes this process run the BLAS kernels that match its CPU. Where OpenBLAS loaded a generic core
    /// on an AVX2 or AVX-512 CPU, it sets `OPENBLAS_CORETYPE` and re-executes the same executable with the
    /// same arguments (same pid; at most twice per process tree), so this must run first thing in `main`,
    /// before any thread starts. After a switch, a few products are checked against a plain reference
    /// and a core that computes wrong results is switched back. Also stops OpenBLAS's idle server threads
    /// (`rlhf_blas_stop_server_threads`). Returns what runs, with any warnings.
    public static func prepareProcess() -> BLASReport {
        // The core's ComputePool owns parallelism and every BLAS call runs on one thread, so the server
        // threads a threaded OpenBLAS started when it loaded only spin (~0.1 s of a core per process,
        // each worker included) before they sleep: pinned to one thread and stopped while no other
        // thread exists.
        Kernels.blasSingleThreaded
        _ = rlhf_blas_stop_server_threads()
        let environment = ProcessInfo.processInfo.environment
        let flags = cpuFlags()
        let current = coreName
        let state = BLASKernelPolicy.reexecState(environment[BLASKernelPolicy.reexecVariable])
        var report = BLASReport(core: current, config: configLine, switchedFrom: nil,
                                cpuLevel: BLASKernelPolicy.level(cpuFlags: flags))
        if let state, state.originalCore.lowercased() != current.lowercased() { report.switchedFrom = state.originalCore }
        if let failed = environment[BLASKernelPolicy.probeFailureVariable], !failed.isEmpty {
            report.warnings.append("OpenBLAS's \(failed) kernels gave wrong matrix products on this CPU; running \(current) instead")
        }
        switch BLASKernelPolicy.decide(current: current, cpuFlags: flags, environment: environment) {
        case .keep:
            break
        case .stillWrong(let wanted):
            report.warnings.append("OpenBLAS runs \(current) kernels although \(wanted) was asked for at start-up "
                                   + "(this OpenBLAS build does not know that core)")
        case .switchTo(let wanted):
            let count = (state?.count ?? 0) + 1
            if count > 2 {
                report.warnings.append("OpenBLAS runs \(current) kernels; not re-executing a third time for \(wanted)")
            } else if let failure = reexecute(coreType: wanted, state: "\(count):\(state?.originalCore ?? current)") {
                report.warnings.append("could not re-execute with OPENBLAS_CORETYPE=\(wanted): \(failure)")
            }
        }
        // Checked once per process tree: workers inherit the switched core and the verdict.
        let verified = environment[BLASKernelPolicy.verifiedVariable] == current
        if let from = report.switchedFrom, !verified {
            if verifyProducts() {
                setenv(BLASKernelPolicy.verifiedVariable, current, 1)
            } else {
                switchBack(from: from, current: current, state: state, report: &report)
            }
        }
        startup.withLock { $0 = report }
        return report
    }

    /// After a failed product check: back to the core OpenBLAS chose by itself (re-executes; returns only
    /// when that is impossible, with a warning in `report`).
    private static func switchBack(from: String, current: String, state: (count: Int, originalCore: String)?,
                                   report: inout BLASReport) {
        setenv(BLASKernelPolicy.overrideVariable, from, 1)
        setenv(BLASKernelPolicy.probeFailureVariable, current, 1)
        let count = (state?.count ?? 0) + 1
        if count > 2 || reexecute(coreType: from, state: "\(count):\(from)") != nil {
            report.warnings.append("OpenBLAS's \(current) kernels gave wrong matrix products on this CPU and \(from) could not be restored")
        }
    }

    /// Replaces the process image with the same executable and arguments under `OPENBLAS_CORETYPE=coreType`.
    /// Returns only on failure, with the reason.
    private static func reexecute(coreType: String, state: String) -> String? {
        setenv(BLASKernelPolicy.coreTypeVariable, coreType, 1)
        setenv(BLASKernelPolicy.reexecVariable, state, 1)
        fflush(nil)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        let reason = String(cString: strerror(errno))
        unsetenv(BLASKernelPolicy.reexecVariable)
        return reason
    }

    /// Checks the three sgemm layouts the core uses (A·Wᵀ, A·W, Aᵀ·B) on odd shapes against a float64
    /// reference: a kernel set that miscomputes on this CPU is caught before it trains anything.
    public static func verifyProducts() -> Bool {
        Kernels.blasSingleThreaded
        let m = 37, n = 53, k = 131
        var state: UInt64 = 0x2545_F491_4F6C_DD1D
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state >> 11) % 2001 - 1000) / 1000
        }
        let a = (0..<(m * k)).map { _ in next() }
        let w = (0..<(n * k)).map { _ in next() }
        var ok = true
        // (transA, transB): C(m, n) = op(A) op(B) with A stored (m, k) or (k, m), B stored (n, k) or (k, n).
        for (transA, transB) in [(false, true), (false, false), (true, false)] {
            var c = [Float](repeating: .nan, count: m * n)
            cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                        Int32(m), Int32(n), Int32(k), 1, a, Int32(transA ? m : k), w, Int32(transB ? k : n), 0, &c, Int32(n))
            for i in 0..<m {
                for j in 0..<n {
                    var reference = 0.0
                    for p in 0..<k {
                        let x = transA ? a[p * m + i] : a[i * k + p]
                        let y = transB ? w[j * k + p] : w[p * n + j]
                        reference += Double(x) * Double(y)
                    }
                    if !(abs(Double(c[i * n + j]) - reference) <= 1e-4 * Double(k)) { ok = false }
                }
            }
        }
        return ok
    }

    /// Single-thread sgemm throughput of `(n, n) x (n, n)` in GFLOP/s, the best of `repeats`.
    public static func measureSgemm(size n: Int = 1024, repeats: Int = 3) -> Double {
        Kernels.blasSingleThreaded
        let a = [Float](repeating: 0.5, count: n * n), b = [Float](repeating: 0.25, count: n * n)
        var c = [Float](repeating: 0, count: n * n)
        var best = Double.infinity
        for _ in 0..<max(1, repeats) {
            let start = DispatchTime.now().uptimeNanoseconds
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, a, Int32(n), b, Int32(n), 0, &c, Int32(n))
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return 2 * Double(n * n * n) / best / 1e9
    }
}
