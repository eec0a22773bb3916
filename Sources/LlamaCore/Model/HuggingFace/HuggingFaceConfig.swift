import Foundation

/// A Hugging Face `config.json` of a `LlamaForCausalLM` (or a `MistralForCausalLM`, whose layers attend
/// through its sliding window; a `Qwen2ForCausalLM`, LLaMA's blocks with query, key and value biases; a
/// `Qwen3ForCausalLM`, with per-head query/key norms; a `SmolLM3ForCausalLM`, with layers without RoPE; a
/// `Phi3ForCausalLM`, LLaMA's with fused projections and Mistral's window; a `Gemma3ForCausalLM`, with GeGLU,
/// a scaled embedding, norms after each block's attention and feed-forward, per-head query/key norms and a
/// local RoPE base in its sliding-window layers, and a `Gemma3ForConditionalGeneration`'s text model; a `Gemma2ForCausalLM`, Gemma 3's
/// without the query/key norms and the local base, with its attention scores and logits softcapped; an `Olmo2ForCausalLM`,
/// whose blocks normalise their outputs rather than their inputs and their queries and keys across heads),
/// read into the core's `LlamaConfig` plus the token ids it names. Keys the core cannot honour (LLaMA's
/// `attention_bias`, MLP biases, another architecture or activation, an odd head size, a RoPE scaling
/// other than linear and LLaMA 3.1's, a sliding window but Mistral's, Phi-3's and Gemma 3's, softcapping) are refused with the
/// key and its value.
public struct HuggingFaceConfig: Sendable, Equatable {
    /// The model's shape in the core's terms.
    public var llama: LlamaConfig
    /// `bos_token_id`, when given.
    public var bosTokenId: Int?
    /// `eos_token_id` (one id or a list), empty when not given.
    public var eosTokenIds: [Int]
    /// `dtype` (or the older `torch_dtype`), when given: the precision the weights were saved in.
    public var dtype: String?
    /// `pad_token_id`, when given (written back as it was, or null: a family whose default names an id
    /// past a small vocabulary, as SmolLM3's 128004, would otherwise fail to load in transformers).
    public var padTokenId: Int?
    /// Whether the weights store fused projections (Phi-3: `qkv_proj` and `gate_up_proj`), read apart
    /// into the core's tensors. A model is written back unfused, as the LLaMA it computes.
    public var fusedProjections = false
    /// Whether the directory holds a reward model (`LlamaForSequenceClassification` and its kin, one
    /// label): the trunk and a `score` head of `(1, D)` instead of `lm_head`, scoring a sequence at its
    /// last token that is not `pad_token_id`.
    public var isSequenceClassifier = false
    /// Whether config.json is a `Gemma3ForConditionalGeneration`'s (Gemma 3 4B and up: the text model's config
    /// nested as `text_config`, its tensors beside a vision tower's under `model.language_model.` or
    /// `language_model.model.`): the text model is read, the vision tower and its projector are not. It is
    /// written back as the `Gemma3ForCausalLM` it computes.
    public var isMultimodal = false

    /// transformers' `Gemma3TextConfig` defaults, which a `Gemma3ForConditionalGeneration`'s `text_config` leaves out
    /// where it keeps them (the Hub's configs list only what differs). The RoPE bases are transformers 4's
    /// spelling, taken only where the text config has no `rope_parameters` (5's).
    static var gemma3TextDefaults: [String: Any] { [
        "vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
        "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh",
        "max_position_embeddings": 131_072, "rms_norm_eps": 1e-6, "query_pre_attn_scalar": 256, "sliding_window": 4096,
    ] }
    static var gemma3RoPEDefaults: [String: Any] { ["rope_theta": 1_000_000.0, "rope_local_base_freq": 10000.0] }

    public init(llama: LlamaConfig, bosTokenId: Int? = nil, eosTokenIds: [Int] = [], dtype: String? = nil, padTokenId: Int? = nil) {
        self.llama = llama
        self.bosTokenId = bosTokenId
        self.eosTokenIds = eosTokenIds
        self.dtype = dtype
        self.padTokenId = padTokenId
    }

    /// Reads and checks `path` (a config.json).
    public init(contentsOf path: String) throws {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw LlamaError.io(path: path, reason: "cannot read: \(error.localizedDescription)")
        }
        try self.init(json: data, path: path)
    }

    /// Parses config.json bytes; `path` names the file in errors.
    public init(json: Data, path: String) throws {
        func refuse(_ key: String, _ reason: String) -> LlamaError {
            LlamaError.invalidCheckpoint(path: path, reason: "config.json: \(key): \(reason)")
        }
        guard var object = (try? JSONSerialization.jsonObject(with: json)) as? [String: Any] else {
            throw LlamaError.invalidCheckpoint(path: path, reason: "config.json is not a JSON object")
        }
        // Gemma 3 4B and up: a Gemma3ForConditionalGeneration, whose text model is a Gemma3ForCausalLM's decoder
        // configured by text_config (transformers' defaults where it leaves a key out); the token ids, the tie and
        // the dtype are the outer config's (the model that generates and holds lm_head) where it gives them.
        let multimodal = (object["architectures"] as? [String]) == ["Gemma3ForConditionalGeneration"]
        if multimodal {
            guard let text = object["text_config"] as? [String: Any] else {
                throw refuse("text_config", "missing: a Gemma3ForConditionalGeneration's text model is configured there")
            }
            let defaults = HuggingFaceConfig.gemma3TextDefaults.merging(text["rope_parameters"] == nil ? HuggingFaceConfig.gemma3RoPEDefaults : [:]) { a, _ in a }
            var merged = defaults.merging(text) { _, given in given }
            for key in ["bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings", "dtype", "torch_dtype"] {
                if let value = object[key], !(value is NSNull) { merged[key] = value }
            }
            merged["architectures"] = ["Gemma3ForCausalLM"]
            merged["model_type"] = "gemma3_text"
            object = merged
        }
        // JSONSerialization gives true/false as NSNumbers of type char ("c"); JSON numbers never are.
        func isBoolean(_ number: NSNumber) -> Bool { String(cString: number.objCType) == "c" }
        func describe(_ value: Any?) -> String {
            guard let value, !(value is NSNull) else { return "null" }
            if let string = value as? String { return "\"\(string)\"" }
            if let data = try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed]) {
                return String(decoding: data, as: UTF8.self)
            }
            return "\(value)"
        }
        func int(_ key: String, in dictionary: [String: Any]? = nil, required: Bool = true) throws -> Int? {
            let value = (dictionary ?? object)[key]
            guard let value, !(value is NSNull) else {
                if required { throw refuse(key, "missing") }
                return nil
            }
            guard let number = value as? NSNumber, !isBoolean(number),
                  number.doubleValue == number.doubleValue.rounded(), abs(number.doubleValue) < 1e15 else {
                throw refuse(key, "expected an integer, got \(describe(value))")
            }
            return number.intValue
        }
        func double(_ key: String, in dictionary: [String: Any]) throws -> Double? {
            guard let value = dictionary[key], !(value is NSNull) else { return nil }
            guard let number = value as? NSNumber, !isBoolean(number) else {
                throw refuse(key, "expected a number, got \(describe(value))")
            }
            return number.doubleValue
        }
        func flag(_ key: String) throws -> Bool? {
            guard let value = object[key], !(value is NSNull) else { return nil }
            guard let number = value as? NSNumber, isBoolean(number) else {
                throw refuse(key, "expected true or false, got \(describe(value))")
            }
            return number.boolValue
        }

        // What the core runs: LLaMA's decoder, SiLU-gated MLP, no biases; Mistral's is the same decoder
        // (the same tensors) with a sliding window over the keys; Qwen2's adds biases to the query, key
        // and value projections (not the output's); Qwen3's has no biases and RMS-normalises each query
        // and key head before RoPE; SmolLM3's is LLaMA's with no RoPE in some layers (no_rope_layers). Any of
        // them may set its head size apart from hidden_size / heads.
        // A reward model is the same decoder with a one-label `score` head (`*ForSequenceClassification`).
        // Phi-3's is LLaMA's decoder with the query, key and value projections stored as one tensor and the
        // gate and up projections as another, and Mistral's sliding window.
        // Gemma 3's text model (Gemma3ForCausalLM; its reward model is a Gemma3TextForSequenceClassification) is the
        // same decoder with GELU's tanh approximation in the gate, its embedding scaled by sqrt(hidden_size), an RMSNorm
        // on each block's attention output and feed-forward output before the residual add, Qwen3's per-head query/key
        // norms, RMSNorms that scale by 1 + weight (read as the core's weight), and a second RoPE base in its
        // sliding-window layers (which attend through the window, as Mistral's).
        // Gemma 2's are Gemma 3's without the query/key norms or the local RoPE base, with its attention scores and its
        // logits softcapped (cap tanh(x / cap): attn_logit_softcapping 50, final_logit_softcapping 30 by default).
        // OLMo 2's blocks normalise the attention's and the feed-forward's outputs (Gemma's post norms) and not their
        // inputs, and its queries and keys are RMS-normalised each across all heads (weights of QD and KVD) before RoPE.
        let families = ["Llama": "llama", "Mistral": "mistral", "Qwen2": "qwen2", "Qwen3": "qwen3", "SmolLM3": "smollm3", "Phi3": "phi3",
                        "Gemma3": "gemma3_text", "Gemma3Text": "gemma3_text", "Olmo2": "olmo2", "Gemma2": "gemma2"]
        var modelType: String?
        var sequenceClassifier = false
        if let architectures = object["architectures"] {
            let name = (architectures as? [String]).flatMap { $0.count == 1 ? $0[0] : nil } ?? ""
            let family = name.hasSuffix("ForCausalLM") ? String(name.dropLast("ForCausalLM".count))
                : name.hasSuffix("ForSequenceClassification") ? String(name.dropLast("ForSequenceClassification".count)) : ""
            // (Gemma3TextForCausalLM does not exist; Gemma3ForSequenceClassification is the multimodal model's.)
            guard let type = families[family], name != "Gemma3TextForCausalLM", name != "Gemma3ForSequenceClassification" else {
                let causal = families.keys.filter { $0 != "Gemma3Text" }.sorted().map { "\($0)ForCausalLM" }
                throw refuse("architectures", "\(describe(architectures)) is not supported (only one of \(causal.joined(separator: ", ")), "
                             + "Gemma3ForConditionalGeneration (its text model), or the ForSequenceClassification of one (Gemma3TextForSequenceClassification for Gemma 3), a reward model)")
            }
            modelType = type
            sequenceClassifier = name.hasSuffix("ForSequenceClassification")
        }
        if sequenceClassifier {
            // transformers' num_labels is id2label's size (2 where neither is given); a reward model has one.
            let labels = try (object["id2label"] as? [String: Any])?.count ?? int("num_labels", required: false) ?? 2
            guard labels == 1 else {
                throw refuse("id2label", "\(labels) labels; a reward model scores with one (num_labels=1)")
            }
        }
        if let value = object["model_type"], !(value is NSNull) {
            guard let type = value as? String, families.values.contains(type) else {
                throw refuse("model_type", "\(describe(value)) is not supported (only \"llama\", \"mistral\", \"qwen2\", \"qwen3\", \"smollm3\", \"phi3\", \"gemma2\", \"gemma3_text\" or \"olmo2\")")
            }
            if let modelType, modelType != type {
                throw refuse("model_type", "\(describe(value)) disagrees with architectures \(describe(object["architectures"]))")
            }
            modelType = type
        }
        let gemma3 = modelType == "gemma3_text", gemma2 = modelType == "gemma2", olmo2 = modelType == "olmo2"
        // What Gemma 2 and 3 share: GeGLU, the scaled embedding, the sandwich norms, norms of 1 + weight, the attention scale.
        let gemma = gemma3 || gemma2
        // Gemma's gate is GELU's tanh approximation (transformers' "gelu_pytorch_tanh", its default); the others' SiLU.
        let activationName = gemma ? "gelu_pytorch_tanh" : "silu"
        for key in ["hidden_act", "hidden_activation"] {
            if let act = object[key], !(act is NSNull), (act as? String) != activationName {
                throw refuse(key, "\(describe(act)) is not supported (only \"\(activationName)\"\(gemma ? " for Gemma 3" : ""))")
            }
        }
        for key in ["attention_bias", "mlp_bias"] where try flag(key) == true {
            // LLaMA's (and Qwen3's) attention_bias adds one to the output projection too, which the core has no place for.
            throw refuse(key, "true is not supported (the core's biases are Qwen2's: query, key and value only)")
        }
        // RoPE: its base and an optional scaling, spelled `rope_theta` + `rope_scaling` (transformers 4) or
        // `rope_parameters` (transformers 5, which holds both).
        func scaling(_ value: Any, key: String) throws -> RoPEScaling? {
            guard let parameters = value as? [String: Any] else { throw refuse(key, "expected an object, got \(describe(value))") }
            let type = parameters["rope_type"] ?? parameters["type"]
            func number(_ name: String) throws -> Double {
                guard let value = try double(name, in: parameters) else { throw refuse("\(key).\(name)", "missing (rope_type \(describe(type)) needs it)") }
                return value
            }
            let scaling: RoPEScaling?
            switch type {
            case nil, is NSNull: scaling = nil
            case let name as String where name == "default": scaling = nil
            case let name as String where name == "linear": scaling = .linear(factor: try number("factor"))
            case let name as String where name == "llama3":
                let original = try number("original_max_position_embeddings")
                guard original == original.rounded(), original > 0, original < 1e9 else {
                    throw refuse("\(key).original_max_position_embeddings", "expected a positive integer, got \(describe(parameters["original_max_position_embeddings"]))")
                }
                scaling = .llama3(factor: try number("factor"), lowFrequencyFactor: try number("low_freq_factor"),
                                  highFrequencyFactor: try number("high_freq_factor"), originalContext: Int(original))
            default:
                let why = (type as? String) == "dynamic" ? "; dynamic NTK scaling changes the frequencies with the sequence's length" : ""
                throw refuse("\(key).rope_type", "\(describe(type)) is not supported (only \"default\", \"linear\" and \"llama3\"\(why))")
            }
            do { try scaling?.validate() } catch let LlamaError.invalidConfig(field, reason) {
                // The field as this config spells it: rope_scaling.factor or rope_parameters.factor.
                throw refuse(key + field.drop { $0 != "." }, reason)
            }
            return scaling
        }
        // A config without a RoPE base has its family's default (transformers' config classes).
        var theta = ["qwen2": 1_000_000.0, "qwen3": 1_000_000.0, "smollm3": 2_000_000.0][modelType ?? "llama"] ?? 10000.0
        var ropeScaling: RoPEScaling?
        // Gemma 3: a global base (1e6 by default) with an optional scaling for its full-attention layers, and a
        // local base (10000) for its sliding-window layers, spelled `rope_theta`, `rope_scaling` and
        // `rope_local_base_freq` (transformers 4) or `rope_parameters: {full_attention: {...}, sliding_attention: {...}}` (5).
        var localTheta: Double?
        if gemma3 {
            theta = 1_000_000
            localTheta = 10000
            if let value = object["rope_scaling"], !(value is NSNull) { ropeScaling = try scaling(value, key: "rope_scaling") }
            if let value = try double("rope_theta", in: object) { theta = value }
            if let value = try double("rope_local_base_freq", in: object) { localTheta = value }
            if let value = object["rope_parameters"], !(value is NSNull) {
                guard let parameters = value as? [String: Any] else { throw refuse("rope_parameters", "expected an object, got \(describe(value))") }
                for (kind, entry) in parameters {
                    let key = "rope_parameters.\(kind)"
                    guard kind == "full_attention" || kind == "sliding_attention" else {
                        throw refuse(key, "is not a layer type of Gemma 3 (full_attention, sliding_attention)")
                    }
                    guard !(entry is NSNull) else { continue }
                    guard let entry = entry as? [String: Any] else { throw refuse(key, "expected an object, got \(describe(entry))") }
                    let stretch = try scaling(entry, key: key)
                    if kind == "full_attention" {
                        if stretch != nil { ropeScaling = stretch }
                        if let value = try double("rope_theta", in: entry) { theta = value }
                    } else {
                        if stretch != nil { throw refuse(key + ".rope_type", "\(describe(entry["rope_type"])) is not supported for the sliding-window layers (only \"default\")") }
                        if let value = try double("rope_theta", in: entry) { localTheta = value }
                    }
                }
            }
            if try flag("use_bidirectional_attention") == true {
                throw refuse("use_bidirectional_attention", "true is not supported (causal attention only)")
            }
        }
        if !gemma3, let value = object["rope_scaling"], !(value is NSNull) {
            ropeScaling = try scaling(value, key: "rope_scaling")
        }
        if !gemma3, let value = object["rope_parameters"], !(value is NSNull) {
            guard let parameters = value as? [String: Any] else {
                throw refuse("rope_parameters", "expected an object, got \(describe(value))")
            }
            if let fromParameters = try scaling(parameters, key: "rope_parameters") {
                if let ropeScaling, ropeScaling != fromParameters {
                    throw refuse("rope_parameters", "\(describe(parameters)) disagrees with rope_scaling \(describe(object["rope_scaling"]))")
                }
                ropeScaling = fromParameters
            }
            if let value = try double("rope_theta", in: parameters) { theta = value }
        }
        if !gemma3, let value = try double("rope_theta", in: object) { theta = value }
        // Mistral attends to the last `sliding_window` keys (transformers' mask: key j for query i where
        // j > i - window), in every layer; Gemma's in its sliding-attention layers.
        var window: Int?
        var windowLayers: [Int] = []
        if modelType == "phi3" {
            // Phi-3 rotates every dimension of a head (Phi-4-mini's partial rotation is not the core's), and its
            // dropout is the core's (none).
            // transformers 4 writes the factor at the top level, 5 in rope_parameters.
            for place in [object, object["rope_parameters"] as? [String: Any] ?? [:]] {
                if let factor = try double("partial_rotary_factor", in: place), factor != 1 {
                    throw refuse("partial_rotary_factor", "\(factor) is not supported (RoPE over whole heads only)")
                }
            }
            for key in ["resid_pdrop", "embd_pdrop", "attention_dropout"] {
                if let rate = try double(key, in: object), rate != 0 { throw refuse(key, "\(rate) is not supported (no dropout)") }
            }
        }
        if modelType == "mistral" || modelType == "phi3" {
            window = try int("sliding_window", required: false)
            if let window, window < 1 { throw refuse("sliding_window", "expected a positive integer or null, got \(window)") }
            if window != nil, let layers = try int("num_hidden_layers"), (1...(1 << 24)).contains(layers) { windowLayers = Array(0..<layers) }
        }
        if ["qwen2", "qwen3", "smollm3"].contains(modelType) {
            // Qwen2, Qwen3 and SmolLM3 attend through a window only where use_sliding_window is set (layer_types says where).
            if try flag("use_sliding_window") == true { throw refuse("use_sliding_window", "true is not supported (full attention only)") }
            if let types = object["layer_types"], !(types is NSNull) {
                guard let list = types as? [String], list.allSatisfy({ $0 == "full_attention" }) else {
                    throw refuse("layer_types", "\(describe(types)) is not supported (only \"full_attention\" layers)")
                }
            }
        }
        // Gemma 3's layers attend through the window where layer_types says "sliding_attention" (by default all but
        // every sliding_window_pattern-th, 6), and rotate with the local base there.
        var localLayers: [Int] = []
        if gemma, let layers = try int("num_hidden_layers"), (1...(1 << 24)).contains(layers) {
            // Gemma 2's default pattern alternates: every second layer (from the first) slides.
            if let value = object["layer_types"], !(value is NSNull) {
                guard let list = value as? [String], list.count == layers,
                      list.allSatisfy({ $0 == "sliding_attention" || $0 == "full_attention" }) else {
                    throw refuse("layer_types", "expected \(layers) of \"sliding_attention\" and \"full_attention\", got \(describe(value))")
                }
                localLayers = (0..<layers).filter { list[$0] == "sliding_attention" }
            } else {
                let pattern = try int("sliding_window_pattern", required: false) ?? int("_sliding_window_pattern", required: false) ?? (gemma2 ? 2 : 6)
                guard pattern > 0 else { throw refuse("sliding_window_pattern", "expected a positive integer, got \(pattern)") }
                localLayers = (0..<layers).filter { ($0 + 1) % pattern != 0 }
            }
            if !localLayers.isEmpty {
                window = try int("sliding_window", required: false) ?? 4096
                if let window, window < 1 { throw refuse("sliding_window", "expected a positive integer, got \(window)") }
                windowLayers = localLayers
            }
        }
        // Gemma 2 caps its attention scores and logits; no other family does.
        var softcaps: (attention: Float?, logits: Float?) = (nil, nil)
        if gemma2 {
            for (key, fallback) in [("attn_logit_softcapping", 50.0), ("final_logit_softcapping", 30.0)] {
                let present = object[key] != nil
                let value = try double(key, in: object)
                if let value, !(value > 0) || !value.isFinite { throw refuse(key, "expected a positive number or null, got \(value)") }
                let cap = present ? value.map(Float.init) : Float(fallback)
                if key == "attn_logit_softcapping" { softcaps.attention = cap } else { softcaps.logits = cap }
            }
            if try flag("use_bidirectional_attention") == true {
                throw refuse("use_bidirectional_attention", "true is not supported (causal attention only)")
            }
        }
        for key in ["sliding_window", "attn_logit_softcapping", "final_logit_softcapping"]
        where !(key == "sliding_window" && ["mistral", "phi3", "qwen2", "qwen3", "smollm3", "gemma3_text", "gemma2"].contains(modelType)) && !gemma2 {
            if let value = object[key], !(value is NSNull) {
                throw refuse(key, "\(describe(value)) is not supported")
            }
        }

        let dim = try int("hidden_size")!
        let heads = try int("num_attention_heads")!
        let kvHeads = try int("num_key_value_heads", required: false) ?? heads
        // transformers' default head size is hidden_size / heads; a config may set another (Qwen3's 128).
        let headDim = try int("head_dim", required: false)
        let eps = try double("rms_norm_eps", in: object) ?? 1e-6
        // Gemma scores attention by query_pre_attn_scalar^-0.5 (256 by default), not head_dim^-0.5.
        var attentionScale: Float?
        if gemma {
            let scalar = try double("query_pre_attn_scalar", in: object) ?? 256
            guard scalar > 0, scalar.isFinite else { throw refuse("query_pre_attn_scalar", "expected a positive number, got \(scalar)") }
            let implied = headDim ?? (heads > 0 ? dim / heads : 1)
            if scalar != Double(implied) { attentionScale = Float(pow(scalar, -0.5)) }
        }
        // SmolLM3: no_rope_layers[i] is 1 where layer i rotates, 0 where it does not (NoPE); absent, every
        // no_rope_layer_interval-th layer (4 by default) goes without, as transformers builds the list.
        var layersWithoutRoPE: [Int] = []
        // (A layer count out of range is refused below, by validate().)
        if modelType == "smollm3", let layers = try int("num_hidden_layers"), (1...(1 << 24)).contains(layers) {
            if let value = object["no_rope_layers"], !(value is NSNull) {
                guard let flags = value as? [NSNumber], flags.count >= layers,
                      flags.allSatisfy({ !isBoolean($0) && ($0.doubleValue == 0 || $0.doubleValue == 1) }) else {
                    throw refuse("no_rope_layers", "expected a list of at least \(layers) zeros and ones, got \(describe(value))")
                }
                layersWithoutRoPE = (0..<layers).filter { flags[$0].intValue == 0 }
            } else {
                let interval = try int("no_rope_layer_interval", required: false) ?? 4
                guard interval > 0 else { throw refuse("no_rope_layer_interval", "expected a positive integer, got \(interval)") }
                layersWithoutRoPE = (0..<layers).filter { ($0 + 1) % interval == 0 }
            }
        }
        let config = LlamaConfig(dim: dim, hiddenDim: try int("intermediate_size")!, nLayers: try int("num_hidden_layers")!,
                                 nHeads: heads, nKVHeads: kvHeads, vocabSize: try int("vocab_size")!,
                                 seqLen: try int("max_position_embeddings")!,
                                 // A reward model has no lm_head: nothing to hold beside the embedding.
                                 sharedClassifier: try sequenceClassifier || (flag("tie_word_embeddings") ?? gemma),
                                 normEps: Float(eps), ropeTheta: Float(theta), ropeScaling: ropeScaling,
                                 attentionBias: modelType == "qwen2", headSize: headDim, qkNorm: modelType == "qwen3" || gemma3 || olmo2,
                                 layersWithoutRoPE: layersWithoutRoPE, activation: gemma ? .geluTanh : .silu,
                                 embeddingScale: gemma ? Float(Double(dim).squareRoot()) : nil, postNorms: gemma || olmo2,
                                 attentionScale: attentionScale, localRoPETheta: localLayers.isEmpty || !gemma3 ? nil : localTheta.map(Float.init),
                                 localRoPELayers: gemma3 ? localLayers : [], qkNormAcrossHeads: olmo2, inputNorms: !olmo2,
                                 normWeightOffset: gemma ? 1 : 0, attentionSoftcap: softcaps.attention, logitSoftcap: softcaps.logits,
                                 slidingWindow: windowLayers.isEmpty ? nil : window, slidingWindowLayers: windowLayers)
        do { try config.validate() } catch {
            throw LlamaError.invalidCheckpoint(path: path, reason: "config.json: \(error)")
        }
        var eos: [Int] = []
        switch object["eos_token_id"] {
        case let list as [Any]:
            eos = try list.map { value in
                guard let number = value as? NSNumber else { throw refuse("eos_token_id", "expected integers, got \(describe(list))") }
                return number.intValue
            }
        case nil, is NSNull: break
        default: eos = [try int("eos_token_id")!]
        }
        self.init(llama: config, bosTokenId: try int("bos_token_id", required: false), eosTokenIds: eos,
                  dtype: (object["dtype"] as? String) ?? (object["torch_dtype"] as? String),
                  // Kept to write back only (the core pads nothing): any integer, else none.
                  padTokenId: (object["pad_token_id"] as? NSNumber).flatMap { isBoolean($0) ? nil : $0.intValue })
        isSequenceClassifier = sequenceClassifier
        fusedProjections = modelType == "phi3"
        isMultimodal = multimodal
    }

    /// What of `c`'s sliding window no config.json that `json()` writes can say, in words, or nil: LLaMA's
    /// decoder is written as Mistral's, whose window covers every layer; Gemma's name their sliding layers;
    /// Qwen's, SmolLM3's and OLMo 2's are written without a window.
    public static func windowCannotBeWritten(_ c: LlamaConfig) -> String? {
        guard let window = c.slidingWindow else { return nil }
        if c.postNorms && c.inputNorms { return nil }
        if isLLaMADecoder(c) {
            return c.slidingWindowLayers.count == c.nLayers ? nil
                : "a sliding window of \(window) in \(c.slidingWindowLayers.count) of \(c.nLayers) layers (Mistral's covers every layer)"
        }
        return "a sliding window of \(window) (this family is written without one)"
    }

    /// Whether `c` is LLaMA's decoder as such (no Gemma or OLMo 2 norms, no Qwen biases or query/key norms, no
    /// NoPE layers): written as a LlamaForCausalLM, or a MistralForCausalLM with a window.
    static func isLLaMADecoder(_ c: LlamaConfig) -> Bool {
        !c.postNorms && !c.attentionBias && !c.qkNorm && c.layersWithoutRoPE.isEmpty
    }

    /// config.json for `llama` as `transformers` writes a LlamaForCausalLM's (a MistralForCausalLM's where every
    /// layer attends through a sliding window, a Qwen2ForCausalLM's where the model has attention biases, a
    /// Qwen3ForCausalLM's where it normalises queries and keys, a SmolLM3ForCausalLM's where some layers go without
    /// RoPE, Gemma's and OLMo 2's), in the keys that 4.x and 5.x both read (`rope_theta` and `rope_scaling`,
    /// `torch_dtype` beside `dtype`).
    public func json() -> Data {
        let c = llama
        var object: [String: Any] = [
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_act": "silu",
            "hidden_size": c.dim,
            "intermediate_size": c.hiddenDim,
            "num_hidden_layers": c.nLayers,
            "num_attention_heads": c.nHeads,
            "num_key_value_heads": c.nKVHeads,
            "head_dim": c.headSize,
            "vocab_size": c.vocabSize,
            "max_position_embeddings": c.seqLen,
            "rms_norm_eps": Double(c.normEps),
            "rope_theta": Double(c.ropeTheta),
            "rope_scaling": c.ropeScaling.map { $0.huggingFaceParameters as Any } ?? NSNull(),
            "tie_word_embeddings": c.sharedClassifier,
            "attention_bias": false,
            "attention_dropout": 0.0,
            "mlp_bias": false,
            "pretraining_tp": 1,
            "use_cache": true,
            "initializer_range": 0.02,
        ]
        if c.attentionBias || c.qkNorm {
            object["architectures"] = [c.qkNorm ? "Qwen3ForCausalLM" : "Qwen2ForCausalLM"]
            object["model_type"] = c.qkNorm ? "qwen3" : "qwen2"
            for key in ["mlp_bias", "pretraining_tp"] { object[key] = nil }
            if c.attentionBias { object["attention_bias"] = nil }
            object["use_sliding_window"] = false
            object["sliding_window"] = NSNull()
            object["max_window_layers"] = c.nLayers
        }
        if let window = c.slidingWindow, HuggingFaceConfig.isLLaMADecoder(c) {
            // LLaMA's decoder attending through a window in every layer: Mistral's (Phi-3's is written unfused as it).
            object["architectures"] = ["MistralForCausalLM"]
            object["model_type"] = "mistral"
            for key in ["mlp_bias", "pretraining_tp", "attention_bias"] { object[key] = nil }
            object["sliding_window"] = window
        }
        if !c.layersWithoutRoPE.isEmpty {
            object["architectures"] = ["SmolLM3ForCausalLM"]
            object["model_type"] = "smollm3"
            for key in ["pretraining_tp"] { object[key] = nil }
            object["no_rope_layers"] = (0..<c.nLayers).map { c.usesRoPE(layer: $0) ? 1 : 0 }
            object["use_sliding_window"] = false
            object["sliding_window"] = NSNull()
        }
        if c.postNorms && !c.inputNorms {
            // OLMo 2's (transformers reads head_dim beside the class's own keys).
            object["architectures"] = ["Olmo2ForCausalLM"]
            object["model_type"] = "olmo2"
            for key in ["mlp_bias", "pretraining_tp"] { object[key] = nil }
        } else if c.postNorms {
            // Gemma 2's and 3's, in the keys transformers 4.x and 5.x both read (5.x folds rope_theta,
            // rope_local_base_freq and rope_scaling into its rope_parameters). The sliding layers are the window's;
            // without a window, the window is the core's context: no key beyond it is ever out of it, so every layer
            // attends to all earlier tokens as the core's do.
            for key in ["hidden_act", "mlp_bias", "pretraining_tp", "use_sliding_window", "max_window_layers"] { object[key] = nil }
            object["hidden_activation"] = "gelu_pytorch_tanh"
            object["query_pre_attn_scalar"] = Double(1 / (c.attentionScale * c.attentionScale)).rounded()
            object["sliding_window"] = c.slidingWindow ?? c.seqLen
            object["use_bidirectional_attention"] = false
            let windowed = c.slidingWindow == nil ? nil : Set(c.slidingWindowLayers)
            if c.qkNorm {
                // Gemma 3's: the query/key norms, and the local RoPE base of its sliding-window layers.
                object["architectures"] = ["Gemma3ForCausalLM"]
                object["model_type"] = "gemma3_text"
                object["rope_local_base_freq"] = Double(c.localRoPETheta ?? c.ropeTheta)
                object["layer_types"] = (0..<c.nLayers).map {
                    (windowed?.contains($0) ?? c.usesLocalRoPE(layer: $0)) ? "sliding_attention" : "full_attention"
                }
                object["attn_logit_softcapping"] = NSNull()
                object["final_logit_softcapping"] = NSNull()
            } else {
                // Gemma 2's: its softcaps, and its sliding layers (without a window, its default pattern: every
                // second layer).
                object["architectures"] = ["Gemma2ForCausalLM"]
                object["model_type"] = "gemma2"
                object["layer_types"] = (0..<c.nLayers).map {
                    (windowed?.contains($0) ?? (($0 + 1) % 2 == 1)) ? "sliding_attention" : "full_attention"
                }
                object["attn_logit_softcapping"] = c.attentionSoftcap.map { Double("\($0)") ?? Double($0) } ?? NSNull()
                object["final_logit_softcapping"] = c.logitSoftcap.map { Double("\($0)") ?? Double($0) } ?? NSNull()
            }
        }
        if isSequenceClassifier {
            // A reward model: the family's ForSequenceClassification with one label, and no lm_head to tie.
            let family = (object["architectures"] as! [String])[0].dropLast("ForCausalLM".count)
            object["architectures"] = ["\(family)\(family == "Gemma3" ? "Text" : "")ForSequenceClassification"]
            object["id2label"] = ["0": "LABEL_0"]
            object["label2id"] = ["LABEL_0": 0]
            object["tie_word_embeddings"] = false
        }
        if let bosTokenId { object["bos_token_id"] = bosTokenId }
        object["pad_token_id"] = padTokenId ?? NSNull()
        if eosTokenIds.count == 1 { object["eos_token_id"] = eosTokenIds[0] } else if !eosTokenIds.isEmpty { object["eos_token_id"] = eosTokenIds }
        if let dtype { object["torch_dtype"] = dtype; object["dtype"] = dtype }
        // Float eps prints with float32's shortest digits (1e-05, not 9.99999974737875e-06).
        object["rms_norm_eps"] = Double("\(c.normEps)") ?? Double(c.normEps)
        object["rope_theta"] = Double("\(c.ropeTheta)") ?? Double(c.ropeTheta)
        if c.postNorms && c.inputNorms, let local = c.localRoPETheta { object["rope_local_base_freq"] = Double("\(local)") ?? Double(local) }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])) ?? Data()
        return HuggingFaceConfig.floatsSpelledAsFloats(data, keys: ["attn_logit_softcapping", "final_logit_softcapping"])
    }

    /// `data` (pretty-printed JSON) with each of `keys`' whole-number values spelled as a float (`30.0`, not `30`):
    /// transformers 5 checks a config's fields by type, and refuses an integer where it declares a float.
    static func floatsSpelledAsFloats(_ data: Data, keys: [String]) -> Data {
        var text = String(decoding: data, as: UTF8.self)
        for key in keys {
            text = text.replacing(try! Regex("(\"\(key)\" : -?[0-9]+)(?=[,\n}])"), with: { "\($0.output[1].substring ?? "").0" })
        }
        return Data(text.utf8)
    }
}
