import Foundation
import LlamaCore

/// `rlhf bench load`: how long a checkpoint takes to load and how much memory the load peaks at, a
/// Hugging Face directory of bfloat16 safetensors against the same model as a llama2.c float32 file,
/// measured in the same run. Each load runs in a fresh child process (`rlhf bench load --once PATH`),
/// so that peak resident memory (`ru_maxrss`) is the load's own; the rounds alternate the two
/// formats and the best of each is kept (a warm page cache for both).
public struct LoadBenchmark: Sendable {
    /// The model's shape (15M, gqa, 110M).
    public var config: String
    /// Loads per format.
    public var rounds: Int

    public init(config: String = "110M", rounds: Int = 3) {
        self.config = config
        self.rounds = rounds
    }

    /// What one child process measured.
    public struct Once: Codable, Sendable {
        /// Seconds from the start of the read to the weights in memory.
        public var seconds: Double
        /// Peak resident memory of the process (KiB).
        public var peakKiB: Int
        /// Resident memory before the read (KiB): the process's own baseline.
        public var beforeKiB: Int
        /// Parameters loaded.
        public var parameters: Int
    }

    /// Loads `path` in this process and measures it (the child's side).
    public static func once(path: String) throws -> Once {
        let before = residentKiB()
        let start = Date()
        let weights = try Checkpoint.read(path: path).weights
        let seconds = Date().timeIntervalSince(start)
        var usage = rusage()
        #if canImport(Glibc)
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        #else
        getrusage(RUSAGE_SELF, &usage)
        #endif
        return Once(seconds: seconds, peakKiB: Int(usage.ru_maxrss), beforeKiB: before, parameters: weights.config.parameterCount)
    }

    /// Current resident memory (KiB) from /proc/self/statm.
    static func residentKiB() -> Int {
        let fields = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8))?.split(separator: " ") ?? []
        return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) / 1024 : 0
    }

    /// Runs the benchmark, printing its figures and ratios.
    public func run() throws {
        let shape = try benchConfig(config)
        let directory = try benchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        // One model in both formats, with the same values: bfloat16-representable random weights.
        let weights = ModelWeights.random(config: shape, seed: 7)
        weights.storage.withUnsafeMutableBufferPointer { buffer in
            for i in buffer.indices { buffer[i] = Float(bitPattern: UInt32(Kernels.bfloat16(buffer[i])) << 16) }
        }
        let file = directory.appendingPathComponent("model.bin").path
        let hf = directory.appendingPathComponent("model-hf").path
        try Checkpoint.writeLegacy(weights, to: file)
        try HuggingFaceCheckpoint.write(weights, config: HuggingFaceConfig(llama: shape, bosTokenId: 1, eosTokenIds: [2]),
                                        dtype: .bfloat16, to: hf)
        func bytes(_ path: String) -> Int {
            var isDirectory: ObjCBool = false
            _ = FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory)
            let files = isDirectory.boolValue ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).map { path + "/" + $0 } : [path]
            return files.reduce(0) { $0 + ((try? FileManager.default.attributesOfItem(atPath: $1)[.size] as? Int) ?? 0) }
        }
        printMachine()
        print(String(format: "model: %@ shape, %.1fM parameters; llama2.c float32 file %.0f MB, Hugging Face bfloat16 directory %.0f MB",
                     config, Double(shape.parameterCount) / 1e6, Double(bytes(file)) / 1e6, Double(bytes(hf)) / 1e6))
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        func child(_ path: String) throws -> Once {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = ["bench", "load", "--once", path]
            let output = directory.appendingPathComponent("once.json")
            _ = FileManager.default.createFile(atPath: output.path, contents: nil)
            process.standardOutput = try FileHandle(forWritingTo: output)
            try process.run()
            process.waitUntilExit()
            guard process.terminationStatus == 0, let data = FileManager.default.contents(atPath: output.path),
                  let line = String(decoding: data, as: UTF8.self).split(separator: "\n").last,
                  let once = try? JSONDecoder().decode(Once.self, from: Data(line.utf8)) else {
                throw BenchmarkError("loading \(path) in a child process failed (status \(process.terminationStatus))")
            }
            return once
        }
        var best: [String: Once] = [:]
        for _ in 0..<rounds {
            for (name, path) in [("llama2c", file), ("hf", hf)] {
                let once = try child(path)
                if let previous = best[name], previous.seconds <= once.seconds {
                    best[name] = Once(seconds: previous.seconds, peakKiB: min(previous.peakKiB, once.peakKiB),
                                      beforeKiB: previous.beforeKiB, parameters: once.parameters)
                } else {
                    best[name] = once
                }
            }
        }
        let file32 = best["llama2c"]!, hf16 = best["hf"]!
        for (label, once) in [("llama2.c float32 file (baseline)", file32), ("Hugging Face bfloat16 safetensors", hf16)] {
            print(String(format: "%-36@ load %.3f s (%.0f MB/s of float32 weights); peak resident %.0f MB (%.0f MB above the process before the load)",
                         label as NSString, once.seconds, Double(once.parameters * 4) / once.seconds / 1e6,
                         Double(once.peakKiB) / 1024, Double(once.peakKiB - once.beforeKiB) / 1024))
        }
        print("hf bfloat16 vs llama2.c file: load time \(ratio(hf16.seconds, file32.seconds)), peak memory \(ratio(Double(hf16.peakKiB), Double(file32.peakKiB))), "
              + "memory above the process \(ratio(Double(hf16.peakKiB - hf16.beforeKiB), Double(file32.peakKiB - file32.beforeKiB))) (best of \(rounds) loads each, alternating)")
    }
}
