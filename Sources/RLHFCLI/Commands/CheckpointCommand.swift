import ArgumentParser
import Foundation
import LlamaCore
import LlamaTraining
import Workers

/// `rlhf checkpoint`: make, inspect and convert checkpoints.
struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Create, inspect and convert checkpoints (llama2.c files and Hugging Face model directories).",
        subcommands: [Init.self, Info.self, Convert.self]
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

        @Argument(help: "Checkpoint file, or Hugging Face model directory.") var file: String
        @Flag(help: "One JSON object.") var json = false

        func run() throws {
            do {
                let (weights, format) = try Checkpoint.read(path: file)
                let c = weights.config
                var info: [String: Any] = [
                    "format": format.rawValue, "dim": c.dim, "hidden_dim": c.hiddenDim, "n_layers": c.nLayers,
                    "n_heads": c.nHeads, "n_kv_heads": c.nKVHeads, "vocab_size": c.vocabSize, "seq_len": c.seqLen,
                    "shared_classifier": c.sharedClassifier, "parameters": c.parameterCount,
                    "norm_eps": Double(c.normEps), "rope_theta": Double(c.ropeTheta),
                ]
                if let scaling = c.ropeScaling { info["rope_scaling"] = scaling.huggingFaceParameters }
                info["attention_bias"] = c.attentionBias
                info["head_dim"] = c.headSize
                info["qk_norm"] = c.qkNorm
                info["layers_without_rope"] = c.layersWithoutRoPE
                info["activation"] = c.activation == .silu ? "silu" : "gelu_pytorch_tanh"
                info["post_norms"] = c.postNorms
                info["input_norms"] = c.inputNorms
                info["qk_norm_across_heads"] = c.qkNormAcrossHeads
                if let scale = c.embeddingScale { info["embedding_scale"] = Double(scale) }
                info["attention_scale"] = Double(c.attentionScale)
                if let local = c.localRoPETheta {
                    info["local_rope_theta"] = Double(local)
                    info["local_rope_layers"] = c.localRoPELayers
                }
                if let window = c.slidingWindow {
                    info["sliding_window"] = window
                    info["sliding_window_layers"] = c.slidingWindowLayers
                }
                // A Gemma3ForConditionalGeneration: what was read is its text model.
                let multimodal = format == .huggingFace && (try? HuggingFaceConfig(contentsOf: file + "/config.json"))?.isMultimodal == true
                if multimodal { info["multimodal_text_model"] = true }
                if json {
                    print(jsonLine(info))
                } else {
                    print(format == .huggingFace ? "\(file): Hugging Face model directory" : "\(file): llama2.c \(format.rawValue) checkpoint")
                    if multimodal { print("  the text model of a Gemma3ForConditionalGeneration (its vision tower is not read)") }
                    print("  dim \(c.dim), hidden_dim \(c.hiddenDim), n_layers \(c.nLayers), n_heads \(c.nHeads), n_kv_heads \(c.nKVHeads)")
                    print("  vocab_size \(c.vocabSize), seq_len \(c.seqLen), classifier \(c.sharedClassifier ? "shared" : "separate"), rms_norm_eps \(c.normEps), rope_theta \(c.ropeTheta)")
                    if let scaling = c.ropeScaling {
                        let parameters = scaling.huggingFaceParameters.filter { $0.key != "rope_type" }.sorted { $0.key < $1.key }
                        print("  rope_scaling \(scaling.typeName): " + parameters.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
                    }
                    if c.attentionBias { print("  attention biases: query, key and value (Qwen2)") }
                    if c.explicitHeadSize != nil { print("  head_dim \(c.headSize): attention \(c.queryDim) wide at dim \(c.dim)") }
                    if c.qkNorm {
                        print(c.qkNormAcrossHeads ? "  queries and keys RMS-normalised across heads before RoPE (OLMo 2)"
                              : "  query and key heads RMS-normalised before RoPE (Qwen3, Gemma 3)")
                    }
                    if c.activation == .geluTanh { print("  GeGLU feed-forwards (GELU's tanh approximation)") }
                    if let scale = c.embeddingScale { print("  embedding scaled by \(scale)") }
                    if c.postNorms { print("  attention and feed-forward outputs RMS-normalised before the residual add (Gemma, OLMo 2)") }
                    if !c.inputNorms { print("  no norms on the blocks' inputs (OLMo 2)") }
                    if c.explicitAttentionScale != nil { print("  attention scale \(c.attentionScale)") }
                    if let local = c.localRoPETheta {
                        print("  RoPE base \(local) in layers \(c.localRoPELayers.map(String.init).joined(separator: ", ")) (Gemma 3's sliding-window layers)")
                    }
                    if let window = c.slidingWindow {
                        let layers = c.slidingWindowLayers.count == c.nLayers ? "every layer"
                            : "layers " + c.slidingWindowLayers.map(String.init).joined(separator: ", ")
                        print("  sliding window of \(window) positions in \(layers)")
                    }
                    if !c.layersWithoutRoPE.isEmpty {
                        print("  no RoPE in layers \(c.layersWithoutRoPE.map(String.init).joined(separator: ", ")) (SmolLM3's NoPE layers)")
                    }
                    print("  parameters \(c.parameterCount) (\(String(format: "%.2f", Double(c.parameterCount) / 1e6))M)")
                }
            } catch {
                throw cliFailure(error)
            }
        }
    }
}

extension CheckpointCommand {
    /// Where `convert` writes.
    enum Target: String, ExpressibleByArgument, CaseIterable {
        case hf, llama2c
    }

    /// Element type of exported Hugging Face weights.
    enum ExportType: String, ExpressibleByArgument, CaseIterable {
        case float32, bfloat16
    }

    /// `rlhf checkpoint convert`: llama2.c files to Hugging Face directories and back.
    struct Convert: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Convert a checkpoint: to a Hugging Face model directory (config, safetensors, tokenizer files, chat template) or to a llama2.c legacy file with tokenizer.bin beside it.")

        @Argument(help: "Checkpoint file, Hugging Face model directory, or a learner's state file (LoRA adapters in it are merged).") var source: String
        @Option(help: "Target format: hf or llama2c.") var to: Target
        @Option(help: "Output: the model directory (hf) or the checkpoint file (llama2c; tokenizer.bin is written beside it).") var out: String
        @Option(help: "Weights' type in the Hugging Face directory: float32 or bfloat16.") var dtype: ExportType = .float32
        @Option(help: "Tokenizer (default: a model directory's own, else tokenizer.bin beside the source).") var tokenizer: String?
        @Option(name: .customLong("chat-template"), help: "Chat format of the exported model: \(ChatFormat.supportedNames) (default: the tokenizer's own).")
        var chatTemplate: ChatFormat?
        @Option(help: "A score head (JSON, as rlhf train rm writes OUT.head.json): the output is then a reward model (with --to hf the family's ForSequenceClassification; with --to llama2c the trunk and OUT.head.json). A learner's reward-model state and a Hugging Face reward model bring their own.")
        var head: String?

        func validate() throws {
            if to == .llama2c && dtype != .float32 { throw ValidationError("--dtype: llama2.c files hold float32 only") }
        }

        func run() throws {
            do {
                // A learner's state (policy.state, snapshot-N.state): its weights with any LoRA adapters merged in; a
                // reward model's state (reward-model.state) and a Hugging Face reward model bring their score heads.
                let state = TrainingState.isStateFile(source) ? try TrainingState.read(path: source) : nil
                let pretrained = state == nil && HuggingFaceCheckpoint.isRewardModel(source) ? try HuggingFaceCheckpoint.readRewardModel(directory: source) : nil
                let weights = try state?.mergedWeights ?? pretrained?.weights ?? Checkpoint.read(path: source).weights
                let scoreHead = try head.map { try RewardModelService.loadHead(path: $0) } ?? state?.heads["score"] ?? state?.heads["reward"]
                    ?? pretrained.map { ScalarHead(weight: $0.head, bias: 0) }
                if let scoreHead, to == .hf, scoreHead.bias != 0 {
                    // The ranking loss does not move a head's bias but for rounding (AdamW then steps it anyway): every score
                    // shifts by the same amount, which no pairwise comparison sees.
                    printError("warning: the score head's bias (\(scoreHead.bias)) has no place in transformers' score layer: "
                               + "the exported model's scores are this model's less it (their differences, and so its rankings, are the same)")
                }
                let tokenizerPath = tokenizer ?? Tokenizer.defaultPath(forCheckpoint: source)
                switch to {
                case .hf:
                    guard FileManager.default.fileExists(atPath: tokenizerPath) else {
                        throw ValidationError("no tokenizer at \(tokenizerPath): give --tokenizer")
                    }
                    try HuggingFaceExport.write(weights: weights, tokenizerPath: tokenizerPath, chatFormat: chatTemplate,
                                                dtype: dtype == .float32 ? .float32 : .bfloat16, to: out, scoreHead: scoreHead?.weight)
                    let written = (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json")))) as? [String: Any]
                    let architecture = (written?["architectures"] as? [String])?.first ?? "model"
                    print("wrote \(out): Hugging Face \(architecture), \(weights.config.parameterCount) parameters in \(dtype.rawValue)")
                case .llama2c:
                    let c = weights.config
                    // The legacy header has no fields for these; llama2.c's run.c assumes LLaMA2's.
                    if let unheld = Checkpoint.legacyCannotHold(c) {
                        throw ValidationError("llama2.c's format cannot hold \(unheld) (run.c assumes rms_norm_eps 1e-05, rope_theta 10000 and no RoPE scaling); keep this model as a Hugging Face directory")
                    }
                    try OutputCheck.writable(out, option: "--out")
                    try Checkpoint.writeLegacy(weights, to: out)
                    var wrote = "wrote \(out): llama2.c legacy checkpoint"
                    if let scoreHead {
                        // A reward model's trunk, and its head beside it as rlhf train rm writes them (what --head loads).
                        try JSONEncoder().encode(scoreHead).write(to: URL(fileURLWithPath: out + ".head.json"))
                        wrote += " (a reward model's trunk) and its score head \(out).head.json"
                    }
                    if FileManager.default.fileExists(atPath: tokenizerPath) {
                        let tok = try Tokenizer(path: tokenizerPath)
                        try tok.check(against: c, path: tokenizerPath)
                        let beside = ((out as NSString).deletingLastPathComponent as NSString).appendingPathComponent("tokenizer.bin")
                        try tok.write(llama2cPath: beside)
                        wrote += " and \(beside)"
                        if tok.bosId != 1 || tok.eosId != 2 {
                            printError("warning: llama2.c's run.c takes BOS as id 1 and EOS as id 2; this tokenizer's are \(tok.bosId) and \(tok.eosId)")
                        }
                    }
                    print(wrote)
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
