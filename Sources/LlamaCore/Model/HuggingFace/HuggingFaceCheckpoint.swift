import Foundation

/// Hugging Face model directories (`config.json` and safetensors weights, as `transformers` saves a
/// `LlamaForCausalLM`) read into and written from the core's `ModelWeights`.
///
/// Hugging Face applies RoPE by rotating halves (`rotate_half`), llama2.c and the core by rotating
/// adjacent pairs; Meta's conversion script permutes the rows of each head of `q_proj` and `k_proj`
/// accordingly. Reading undoes that permutation: within head `h`, the file's row `h*hs + j*hs/2 + i`
/// is the core's row `h*hs + 2i + j` (`i < hs/2`, `j` in 0, 1); writing applies it.
public enum HuggingFaceCheckpoint {
    /// Whether `path` is a directory holding a `config.json`.
    public static func isModelDirectory(_ path: String) -> Bool {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
            && FileManager.default.fileExists(atPath: path + "/config.json")
    }

    /// Whether `path` is a Hugging Face reward model: a directory whose config.json names a
    /// ForSequenceClassification (it brings its own score head).
    public static func isRewardModel(_ path: String) -> Bool {
        isModelDirectory(path) && (try? HuggingFaceConfig(contentsOf: path + "/config.json"))?.isSequenceClassifier == true
    }

    /// The tensor names of layer `layer`'s parameters and of the others, by core tensor. With `postNorms`
    /// (Gemma's blocks) `post_attention_layernorm` is the attention output's norm and the feed-forward's input
    /// norm is `pre_feedforward_layernorm`.
    static func name(_ tensor: ParameterTensor, layer: Int, postNorms: Bool = false) -> String {
        let prefix = "model.layers.\(layer)."
        switch tensor {
        case .tokenEmbedding: return "model.embed_tokens.weight"
        case .rmsAttention: return prefix + "input_layernorm.weight"
        case .wq: return prefix + "self_attn.q_proj.weight"
        case .wk: return prefix + "self_attn.k_proj.weight"
        case .wv: return prefix + "self_attn.v_proj.weight"
        case .wo: return prefix + "self_attn.o_proj.weight"
        case .rmsFFN: return prefix + (postNorms ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight")
        case .rmsPostAttention: return prefix + "post_attention_layernorm.weight"
        case .rmsPostFFN: return prefix + "post_feedforward_layernorm.weight"
        case .w1: return prefix + "mlp.gate_proj.weight"
        case .w2: return prefix + "mlp.down_proj.weight"
        case .w3: return prefix + "mlp.up_proj.weight"
        case .rmsFinal: return "model.norm.weight"
        case .classifier: return "lm_head.weight"
        case .bq: return prefix + "self_attn.q_proj.bias"
        case .bk: return prefix + "self_attn.k_proj.bias"
        case .bv: return prefix + "self_attn.v_proj.bias"
        case .qNorm: return prefix + "self_attn.q_norm.weight"
        case .kNorm: return prefix + "self_attn.k_norm.weight"
        case .freqCisReal, .freqCisImag: return ""
        }
    }

    /// Every tensor a model of `config` has in a Hugging Face file: name, core tensor, layer, the file
    /// tensor's shape, and which of its rows are the core tensor's (nil: all). With `fused` (Phi-3's
    /// layout) a layer's query, key and value projections are one `self_attn.qkv_proj` (their rows
    /// stacked in that order) and its gate and up projections one `mlp.gate_up_proj` (gate first).
    static func tensors(_ config: LlamaConfig, fused: Bool = false)
        -> [(name: String, tensor: ParameterTensor, layer: Int, shape: [Int], rows: Range<Int>?)] {
        var out: [(String, ParameterTensor, Int, [Int], Range<Int>?)] = []
        out.append((name(.tokenEmbedding, layer: 0), .tokenEmbedding, 0, [config.vocabSize, config.dim], nil))
        let perLayer: [ParameterTensor] = (config.inputNorms ? [.rmsAttention] : []) + [.wq, .wk, .wv, .wo] + (config.inputNorms ? [.rmsFFN] : [])
            + [.w1, .w2, .w3] + (config.attentionBias ? [.bq, .bk, .bv] : [])
            + (config.qkNorm ? [.qNorm, .kNorm] : []) + (config.postNorms ? [.rmsPostAttention, .rmsPostFFN] : [])
        let (q, kv, hidden) = (config.queryDim, config.kvDim, config.hiddenDim)
        let parts: [ParameterTensor: (name: String, rows: Range<Int>, of: Int)] = fused ? [
            .wq: ("self_attn.qkv_proj.weight", 0 ..< q, q + 2 * kv), .wk: ("self_attn.qkv_proj.weight", q ..< q + kv, q + 2 * kv),
            .wv: ("self_attn.qkv_proj.weight", q + kv ..< q + 2 * kv, q + 2 * kv),
            .w1: ("mlp.gate_up_proj.weight", 0 ..< hidden, 2 * hidden), .w3: ("mlp.gate_up_proj.weight", hidden ..< 2 * hidden, 2 * hidden),
        ] : [:]
        for layer in 0..<config.nLayers {
            for tensor in perLayer {
                if let part = parts[tensor] {
                    out.append(("model.layers.\(layer).\(part.name)", tensor, layer, [part.of, config.dim], part.rows))
                } else {
                    out.append((name(tensor, layer: layer, postNorms: config.postNorms), tensor, layer,
                                Array(ParameterLayout.shape(tensor, config).dropFirst()), nil))
                }
            }
        }
        out.append((name(.rmsFinal, layer: 0), .rmsFinal, 0, [config.dim], nil))
        if !config.sharedClassifier { out.append((name(.classifier, layer: 0), .classifier, 0, [config.vocabSize, config.dim], nil)) }
        return out
    }

    /// Whether `tensor`'s elements move one by one under the RoPE permutation (a bias's elements are its
    /// projection's rows; a query/key norm's are one head's), rather than as rows of the file.
    static func movesByElement(_ tensor: ParameterTensor) -> Bool { tensor.isAttentionBias || tensor.isQueryKeyNorm }

    /// Maps a row of a `q_proj`/`k_proj` (or an element of its bias, or of the one head a `q_norm`/`k_norm`
    /// weighs) in Hugging Face's order to the core's row (see the type's comment); other tensors keep
    /// their rows.
    static func coreRow(_ tensor: ParameterTensor, _ config: LlamaConfig) -> (Int) -> Int {
        guard [.wq, .wk, .bq, .bk, .qNorm, .kNorm].contains(tensor) else { return { $0 } }
        let hs = config.headSize, half = hs / 2
        return { row in
            let head = row / hs, within = row % hs
            let j = within / half, i = within % half
            return head * hs + 2 * i + j
        }
    }

    /// The name of a reward model's head, `(1, D)`.
    static let scoreHeadName = "score.weight"

    /// Reads the model in `directory`: `config.json`, then `model.safetensors` or the shards that
    /// `model.safetensors.index.json` lists, in float32, bfloat16 or float16. A missing tensor, a
    /// shape that disagrees with the config, or a tensor the core has no place for (a bias, for one)
    /// is refused with its name; so is a reward model (`*ForSequenceClassification`), which scores and
    /// does not generate (`readRewardModel(directory:)` reads it).
    public static func read(directory: String) throws -> (weights: ModelWeights, config: HuggingFaceConfig) {
        let (weights, config, _) = try readModel(directory: directory)
        if config.isSequenceClassifier {
            throw LlamaError.invalidCheckpoint(path: directory, reason: "holds a reward model (ForSequenceClassification: a score head, no lm_head); "
                + "it scores text and does not generate: use it where a reward model goes (judge: {source: reward-model, checkpoint: DIR}, rlhf score)")
        }
        return (weights, config)
    }

    /// Reads a reward model in `directory` (`LlamaForSequenceClassification` and its kin, one label, as
    /// `transformers` saves one): the trunk as `read(directory:)` reads a model, and `score.weight`'s `D`
    /// weights, the head's (it has no bias). A causal LM's directory is refused: it has no score head.
    public static func readRewardModel(directory: String) throws -> (weights: ModelWeights, config: HuggingFaceConfig, head: [Float]) {
        let (weights, config, head) = try readModel(directory: directory)
        guard let head else {
            throw LlamaError.invalidCheckpoint(path: directory, reason: "holds a causal language model, not a reward model (no score head; "
                + "config.json's architectures would be a ForSequenceClassification): give its score head (JSON) beside it")
        }
        return (weights, config, head)
    }

    /// The weights of `directory`, its config, and a reward model's score head (nil for a causal LM).
    private static func readModel(directory: String) throws -> (weights: ModelWeights, config: HuggingFaceConfig, head: [Float]?) {
        let hfConfig = try HuggingFaceConfig(contentsOf: directory + "/config.json")
        let config = hfConfig.llama
        var files: [String: SafetensorsFile] = [:]
        var location: [String: String] = [:]
        let indexPath = directory + "/model.safetensors.index.json"
        if FileManager.default.fileExists(atPath: indexPath) {
            guard let data = FileManager.default.contents(atPath: indexPath),
                  let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
                  let map = object["weight_map"] as? [String: String] else {
                throw LlamaError.invalidCheckpoint(path: indexPath, reason: "expected a JSON object with a weight_map of tensor name to file")
            }
            for shard in Set(map.values).sorted() {
                guard !shard.contains("/") else {
                    throw LlamaError.invalidCheckpoint(path: indexPath, reason: "weight_map names \(shard), outside the directory")
                }
                files[shard] = try SafetensorsFile(path: directory + "/" + shard)
            }
            for (name, shard) in map {
                guard files[shard]?.entries[name] != nil else {
                    throw LlamaError.invalidCheckpoint(path: indexPath, reason: "weight_map puts \(name) in \(shard), which does not hold it")
                }
                location[name] = shard
            }
        } else {
            let single = "model.safetensors"
            guard FileManager.default.fileExists(atPath: directory + "/" + single) else {
                throw LlamaError.invalidCheckpoint(path: directory,
                    reason: "no model.safetensors and no model.safetensors.index.json (pytorch_model.bin is not read; save with safe_serialization)")
            }
            let file = try SafetensorsFile(path: directory + "/" + single)
            files[single] = file
            for name in file.entries.keys { location[name] = single }
        }

        var expected = tensors(config, fused: hfConfig.fusedProjections)
        if hfConfig.isMultimodal {
            // A Gemma3ForConditionalGeneration's text model: its tensors under the prefix transformers 5 writes
            // (model.language_model.) or the one 4.x wrote (language_model.model., the head language_model.lm_head);
            // the vision tower's and the projector's are not the text model's.
            let prefix = ["model.language_model.", "language_model.model."].first { location[$0 + "embed_tokens.weight"] != nil }
            guard let prefix else {
                throw LlamaError.invalidCheckpoint(path: directory, reason: "holds no model.language_model.embed_tokens.weight "
                    + "(nor language_model.model.embed_tokens.weight): a Gemma3ForConditionalGeneration's text model is missing")
            }
            let head = prefix == "language_model.model." ? "language_model.lm_head.weight" : "lm_head.weight"
            expected = expected.map { item in
                var item = item
                item.name = item.name == "lm_head.weight" ? head : prefix + item.name.dropFirst("model.".count)
                return item
            }
            for name in location.keys where !name.hasPrefix(prefix) && name != head && name != "lm_head.weight" {
                location[name] = nil
            }
        }
        var known = Set(expected.map(\.name))
        if hfConfig.isSequenceClassifier { known.insert(scoreHeadName) }
        for name in location.keys.sorted() where !known.contains(name) {
            // Older exports keep RoPE's inverse frequencies; a tied model may still store lm_head.
            if name.hasSuffix("rotary_emb.inv_freq") || (["lm_head.weight", "language_model.lm_head.weight"].contains(name) && config.sharedClassifier) { continue }
            let family = hfConfig.fusedProjections ? "Phi-3" : !config.inputNorms ? "OLMo 2" : config.postNorms ? (config.qkNorm ? "Gemma 3" : "Gemma 2") : config.qkNorm ? "Qwen3" : config.attentionBias ? "Qwen2"
                : config.layersWithoutRoPE.isEmpty ? "LLaMA" : "SmolLM3"
            throw LlamaError.invalidCheckpoint(path: directory, reason: "tensor \(name) has no place in a \(family) model the core runs (\(config.attentionBias ? "biases of the query, key and value projections only" : "no biases"), no extra layers)")
        }
        let weights = ModelWeights(zerosFor: config)
        for item in expected {
            guard let shard = location[item.name], let file = files[shard], let entry = file.entries[item.name] else {
                throw LlamaError.invalidCheckpoint(path: directory, reason: "tensor \(item.name) is missing")
            }
            guard entry.shape == item.shape else {
                throw LlamaError.invalidCheckpoint(path: file.path,
                    reason: "tensor \(item.name) has shape \(entry.shape), config.json implies \(item.shape)")
            }
            let offset = item.tensor == .rmsFinal || item.tensor == .tokenEmbedding || item.tensor == .classifier
                ? weights.layout.offset(item.tensor) : weights.layout.offset(item.tensor, layer: item.layer)
            try file.read(entry, rows: item.rows, columns: movesByElement(item.tensor) ? 1 : item.shape.last!, into: weights.storage, offset: offset,
                          destinationRow: coreRow(item.tensor, config))
        }
        // Gemma's norms scale by 1 + weight: the core keeps the scale.
        let normOffset = config.normWeightOffset
        if normOffset != 0 { addToNormWeights(weights, normOffset) }
        guard hfConfig.isSequenceClassifier else { return (weights, hfConfig, nil) }
        guard let shard = location[scoreHeadName], let file = files[shard], let entry = file.entries[scoreHeadName] else {
            throw LlamaError.invalidCheckpoint(path: directory, reason: "tensor \(scoreHeadName) is missing (a ForSequenceClassification model's head)")
        }
        guard entry.shape == [1, config.dim] else {
            throw LlamaError.invalidCheckpoint(path: file.path, reason: "tensor \(scoreHeadName) has shape \(entry.shape), a one-label head of this model is [1, \(config.dim)]")
        }
        let head = FloatBuffer(count: config.dim, hugePages: false)
        try file.read(entry, columns: config.dim, into: head, offset: 0)
        return (weights, hfConfig, head.array(0..<config.dim))
    }

    /// Writes `weights` into `directory` (created if needed) as `config.json` (with `config`'s token
    /// ids) and one `model.safetensors` in `dtype`, and `generation_config.json`. With `scoreHead` (`D`
    /// weights), a reward model: the family's ForSequenceClassification, `score.weight` in place of `lm_head`.
    public static func write(_ weights: ModelWeights, config: HuggingFaceConfig, dtype: SafetensorsFile.DType,
                             to directory: String, scoreHead: [Float]? = nil) throws {
        let c = weights.config
        if let problem = HuggingFaceConfig.windowCannotBeWritten(c) {
            throw LlamaError.invalidInput("a Hugging Face config.json cannot hold this model: \(problem)")
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var described = config
        described.llama = c
        described.dtype = dtype == .float32 ? "float32" : dtype == .bfloat16 ? "bfloat16" : "float16"
        described.isSequenceClassifier = scoreHead != nil
        if let scoreHead, scoreHead.count != c.dim {
            throw LlamaError.invalidInput("the score head has \(scoreHead.count) weights, the model's dim is \(c.dim)")
        }
        // A family whose norms scale by 1 + weight (Gemma) is written from a copy holding its own weights.
        let normOffset = c.normWeightOffset
        let source = normOffset == 0 ? weights : weights.copy()
        if normOffset != 0 { addToNormWeights(source, -normOffset) }
        var items = tensors(c).filter { scoreHead == nil || $0.tensor != .classifier }.map { item in
            let offset = item.tensor == .rmsFinal || item.tensor == .tokenEmbedding || item.tensor == .classifier
                ? weights.layout.offset(item.tensor) : weights.layout.offset(item.tensor, layer: item.layer)
            return SafetensorsWriter.Tensor(name: item.name, shape: item.shape, source: source.storage, offset: offset,
                                            sourceRow: coreRow(item.tensor, c), columns: movesByElement(item.tensor) ? 1 : nil)
        }
        if let scoreHead {
            let head = FloatBuffer(count: c.dim, hugePages: false)
            head.set(scoreHead, at: 0)
            items.append(SafetensorsWriter.Tensor(name: scoreHeadName, shape: [1, c.dim], source: head, offset: 0))
        }
        try SafetensorsWriter.write(items, dtype: dtype, metadata: ["format": "pt"], to: directory + "/model.safetensors")
        try write(described.json(), to: directory + "/config.json")
        var generation: [String: Any] = ["_from_model_config": true]
        if let bos = config.bosTokenId { generation["bos_token_id"] = bos }
        if config.eosTokenIds.count == 1 { generation["eos_token_id"] = config.eosTokenIds[0] } else if !config.eosTokenIds.isEmpty { generation["eos_token_id"] = config.eosTokenIds }
        try write(try JSONSerialization.data(withJSONObject: generation, options: [.prettyPrinted, .sortedKeys]),
                  to: directory + "/generation_config.json")
    }

    /// Adds `amount` to every RMSNorm weight of `weights` (Gemma's `1 + weight` read as the core's scale, or back).
    static func addToNormWeights(_ weights: ModelWeights, _ amount: Float) {
        weights.storage.withUnsafeMutableBufferPointer { storage in
            for tensor in weights.layout.storedTensors where tensor.isNormWeight {
                for i in weights.layout.range(tensor) { storage[i] += amount }
            }
        }
    }

    /// Writes `data` to `path` atomically.
    static func write(_ data: Data, to path: String) throws {
        let file = try WritableFile(atomicPath: path)
        do {
            try file.write(Array(data))
            try file.commit()
        } catch {
            file.abandon()
            throw error
        }
    }
}
