import ClusterRuntime
import Foundation
import LlamaCore
import LlamaTraining
import Recipe
import Synchronization
import Transport
import Wire
import Workers

/// Why a benchmark could not run or measure, naming the problem.
public struct BenchmarkError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// The 1, 5 and 15 minute load averages (printed beside the figures).
public func loadAverage() -> String {
    (try? String(contentsOfFile: "/proc/loadavg", encoding: .utf8))?.split(separator: " ").prefix(3).joined(separator: " ") ?? "unknown"
}

/// What the bench's baselines and our own figures run on: the BLAS kernels, measured once.
func printMachine() {
    print("machine: \(ProcessInfo.processInfo.activeProcessorCount) cores; load average \(loadAverage())")
    let report = BLASRuntime.startupReport
    print(String(format: "BLAS: %@; sgemm 1024^3 on 1 thread: %.1f GFLOP/s", report?.summary ?? "OpenBLAS kernels \(BLASRuntime.coreName)",
                 BLASRuntime.measureSgemm()))
    let peaks = Kernels.arithmeticPeaks()
    let peakLine = peaks.bfloat16 > 0 && peaks.float32 > 0
        ? String(format: "; one core's peak: vdpbf16ps %.1f GFLOP/s, float32 FMA %.1f GFLOP/s (bfloat16 %.2fx float32)",
                 peaks.bfloat16, peaks.float32, peaks.bfloat16 / peaks.float32)
        : ""
    print("bfloat16 products: " + (Kernels.bfloat16Hardware ? "AVX-512 BF16 (vdpbf16ps)" : "portable fallback (no AVX-512 BF16 on this CPU)") + peakLine)
}

/// The bench's model shapes by name (15M, gqa, 110M); an unknown name is refused, naming the choices.
public func benchConfig(_ name: String) throws -> LlamaConfig {
    switch name.lowercased() {
    case "15m": return .stories15M
    case "gqa": return .gqa
    case "110m": return .llama110M
    default: throw BenchmarkError("--config: '\(name)' is not one of 15M, gqa, 110M")
    }
}

/// A temporary folder for a bench's checkpoints and baseline files, removed at the end.
func benchDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("rlhf-bench-\(getpid())")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}


/// Best-of figures gathered over interleaved rounds, and every round's figure (recorded once a round per
/// key, so that round r's figures of two keys were measured side by side).
struct BestOf {
    private(set) var values: [String: Double] = [:]
    private(set) var rounds: [String: [Double]] = [:]
    mutating func record(_ key: String, _ value: Double) {
        values[key] = max(values[key] ?? 0, value)
        rounds[key, default: []].append(value)
    }
    subscript(_ key: String) -> Double? { values[key] }

    /// `a / b` round by round, for the rounds in which both were measured.
    func pairedRatios(_ a: String, _ b: String) -> [Double] {
        guard let x = rounds[a], let y = rounds[b] else { return [] }
        return zip(x, y).compactMap { $1 > 0 ? $0 / $1 : nil }
    }

    /// " (rounds 1.28x 1.35x 1.31x, median 1.31x)": what `a / b` was in each round, beside the best-of
    /// ratio; on a machine whose bandwidth swings between seconds the best of each side may come from
    /// different moments. Empty with fewer than two rounds.
    func roundRatios(_ a: String, _ b: String) -> String {
        let ratios = pairedRatios(a, b)
        guard ratios.count >= 2 else { return "" }
        let sorted = ratios.sorted()
        let median = sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        return " (rounds " + ratios.map { String(format: "%.2fx", $0) }.joined(separator: " ") + String(format: ", median %.2fx)", median)
    }
}

/// A baseline's figure, or "(skipped)" when it was not measured.
func figure(_ value: Double?) -> String { value.map { String(format: "%.0f", $0) } ?? "(skipped)" }

/// `a / b` as "1.23x", or "n/a".
func ratio(_ a: Double?, _ b: Double?) -> String {
    guard let a, let b, b > 0 else { return "n/a" }
    return String(format: "%.2fx", a / b)
}
