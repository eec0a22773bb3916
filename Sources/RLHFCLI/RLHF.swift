import ArgumentParser
import Foundation
import LlamaCore
import Logging

/// The `rlhf` executable: one entry point for the cluster, the trainers and the core's tools.
@main
struct RLHF: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rlhf",
        abstract: "SwiftRLHF: LLaMA2-style RLHF (SFT, reward models, rejection sampling, PPO) in Swift.",
        discussion: """
        Environment: RLHF_LOG_LEVEL (trace, debug, info, notice, warning, error, critical; default info) sets the \
        level of the logs on standard error. RLHF_OPENBLAS_CORETYPE forces OpenBLAS's kernel set (e.g. Haswell); \
        without it, a process whose OpenBLAS chose a generic core on an AVX2 or AVX-512 CPU switches to the \
        matching one at start-up.
        """,
        subcommands: [
            LaunchCommand.self,
            CoordinatorCommand.self,
            WorkerCommand.self,
            StatusCommand.self,
            KeysCommand.self,
            GenerateCommand.self,
            TokenizeCommand.self,
            ChatCommand.self,
            TokenizerCommand.self,
            SelftestCommand.self,
            CheckpointCommand.self,
            BenchCommand.self,
            TaskCommand.self,
            TrainCommand.self,
            EvalCommand.self,
            ScoreCommand.self,
        ]
    )

    static func main() {
        // First, before any thread starts: this may re-execute the process with other BLAS kernels.
        let report = BLASRuntime.prepareProcess()
        let level = ProcessInfo.processInfo.environment["RLHF_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0.lowercased()) } ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "rlhf.blas")
        if level <= .debug {
            // Measured only when asked for: a 512^3 product takes a few milliseconds.
            let gflops = String(format: "%.1f", BLASRuntime.measureSgemm(size: 512, repeats: 2))
            logger.debug("\(report.summary); sgemm 512^3 on 1 thread: \(gflops) GFLOP/s", metadata: ["openblas": "\(report.config)"])
        }
        for warning in report.warnings { logger.warning("\(warning)") }
        main(normalizedArguments(Array(CommandLine.arguments.dropFirst())))
    }

    /// The arguments with a negative number after an option joined to it (`--steps -1` becomes
    /// `--steps=-1`), so that the option's own check names the value instead of ArgumentParser taking
    /// `-1` for an option and saying "Missing value". No command has a positional argument that could
    /// be a negative number.
    static func normalizedArguments(_ arguments: [String]) -> [String] {
        var out: [String] = []
        var i = 0
        while i < arguments.count {
            let word = arguments[i]
            if word.hasPrefix("--"), !word.contains("="), word != "--", i + 1 < arguments.count, looksNegative(arguments[i + 1]) {
                out.append(word + "=" + arguments[i + 1])
                i += 2
            } else {
                out.append(word)
                i += 1
            }
        }
        return out
    }

    /// `-1`, `-0.5`, `-.5`, `-1e3`, `-inf`, `-nan`: a negative number, not an option.
    private static func looksNegative(_ word: String) -> Bool {
        guard word.hasPrefix("-"), word.count >= 2 else { return false }
        let rest = word.dropFirst()
        if let first = rest.first, first.isNumber || first == "." { return true }
        return ["inf", "infinity", "nan"].contains(rest.lowercased())
    }
}
