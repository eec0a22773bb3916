import ArgumentParser
import Foundation
import LlamaCore

/// `rlhf checkpoint`: make and inspect llama2.c checkpoints.
struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Create and inspect llama2.c checkpoints.",
        subcommands: [Init.self, Info.self]
    )

    /// Named shapes for `--preset`.
    enum Preset: String, ExpressibleByArgument, CaseIterable {
        case stories15M = "15M", gqa, llama110M = "110M", tiny

        var config: LlamaConfig {
            switch self {
            case .stories15M: return .stories15M
            case .gqa: return .gqa
            case .llama110M: return .llama110M
            case .tiny: return LlamaConfig(dim: 64, hiddenDim: 172, nLayers: 4, nHeads: 8, nKVHeads: 8, vocabSize: 512, seqLen: 128)
            }
        }
    }

    struct Init: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a random-weight model (N(0, 0.02) matrices, unit norms) in the legacy format.")

        @Option(help: "Start from a named shape: \(Preset.allCases.map(\.rawValue).joined(separator: ", ")).")
        var preset: Preset?
        @Option var dim: Int?
        @Option(name: .customLong("hidden-dim")) var hiddenDim: Int?
        @Option var layers: Int?
        @Option var heads: Int?
        @Option(name: .customLong("kv-heads")) var kvHeads: Int?
        @Option var vocab: Int?
        @Option(name: .customLong("seq-len")) var seqLen: Int?
        @Flag(name: .customLong("separate-classifier"), help: "Store a classifier apart from the embedding.")
        var separateClassifier = false
        @Option(help: "RNG seed.") var seed: UInt64 = 0
        @Option(help: "Output path.") var out: String

        func validate() throws {
            for (value, name) in [(dim, "--dim"), (hiddenDim, "--hidden-dim"), (layers, "--layers"), (heads, "--heads"), (kvHeads, "--kv-heads"),
                                  (vocab, "--vocab"), (seqLen, "--seq-len")] {
                try OptionCheck.integer(value, name, 1 ... 1 << 24)
            }
        }

        func run() throws {
            var c = preset?.config ?? LlamaConfig(dim: 0, hiddenDim: 0, nLayers: 0, nHeads: 0, nKVHeads: 0, vocabSize: 0, seqLen: 0)
            if let dim { c.dim = dim }
            if let hiddenDim { c.hiddenDim = hiddenDim }
            if let layers { c.nLayers = layers }
            if let heads { c.nHeads = heads }
            if let kvHeads { c.kvHeads = kvHeads }
            if let vocab { c.vocabSize = vocab }
            if let seqLen { c.seqLen = seqLen }
            if preset == nil && kvHeads == nil { c.nKVHeads = c.nHeads }
            if separateClassifier { c.sharedClassifier = false }
            do {
                try c.validate()
                let weights = ModelWeights.random(config: c, seed: seed)
                try Checkpoint.writeLegacy(weights, to: out)
            } catch {
                throw cliFailure(error)
            }
            print("wrote \(out): \(c.parameterCount) parameters")
        }
    }

    struct Info: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a checkpoint's format, config and parameter count.")

        @Argument(help: "Checkpoint file.") var file: String
        @Flag(help: "One JSON object.") var json = false

        func run() throws {
            do {
                let (weights, format) = try Checkpoint.read(path: file)
                let c = weights.config
                let info: [String: Any] = [
                    "format": format.rawValue, "dim": c.dim, "hidden_dim": c.hiddenDim, "n_layers": c.nLayers,
                    "n_heads": c.nHeads, "n_kv_heads": c.nKVHeads, "vocab_size": c.vocabSize, "seq_len": c.seqLen,
                    "shared_classifier": c.sharedClassifier, "parameters": c.parameterCount,
                ]
                if json {
                    print(jsonLine(info))
                } else {
                    print("\(file): llama2.c \(format.rawValue) checkpoint")
                    print("  dim \(c.dim), hidden_dim \(c.hiddenDim), n_layers \(c.nLayers), n_heads \(c.nHeads), n_kv_heads \(c.nKVHeads)")
                    print("  vocab_size \(c.vocabSize), seq_len \(c.seqLen), classifier \(c.sharedClassifier ? "shared" : "separate")")
                    print("  parameters \(c.parameterCount) (\(String(format: "%.2f", Double(c.parameterCount) / 1e6))M)")
                }
            } catch {
                throw cliFailure(error)
            }
        }
    }
}

extension LlamaConfig {
    /// Alias used by the CLI's flag names.
    var kvHeads: Int {
        get { nKVHeads }
        set { nKVHeads = newValue }
    }
}
