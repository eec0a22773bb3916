import Foundation
import Testing
import TestKit
@testable import LlamaCore

/// Hugging Face model directories against `transformers`' float64 outputs on the same weights.
@Suite struct HuggingFaceCheckpointTests {
    static let names = ["hf-llama2-mha", "hf-bytebpe-gqa"]

    /// Greedy ids exact and their log-probabilities within 1e-4; full logits within 1e-4 where the
    /// reference gives them. Proves the rotate-half permutation of q/k, GQA, tied embeddings, theta,
    /// eps, bfloat16 and sharded weights.
    @Test(arguments: names)
    func logitsMatchTransformers(name: String) throws {
        let reference = try Fixtures.huggingFaceReference(name)
        let (weights, format) = try Checkpoint.read(path: Fixtures.huggingFace(name))
        #expect(format == .huggingFace)
        try Self.expectGreedyAndLogits(weights, reference: reference, name: name)
    }

    /// `weights` against a reference (`NAME.reference.json`): the greedy ids exactly, their
    /// log-probabilities within 1e-4, and the logits at every position of `logits_at` within 1e-4.
    static func expectGreedyAndLogits(_ weights: ModelWeights, reference: [String: Any], name: String) throws {
        let prompt = (reference["prompt_ids"] as! [Int]).map(Int32.init)
        let greedy = (reference["greedy_ids"] as! [Int]).map(Int32.init)
        let logProbs = reference["greedy_logprobs"] as! [Double]
        let generator = TextGenerator(transformer: Transformer(model: LlamaModel(weights: weights)))
        let result = try generator.generate(GenerationRequest(promptIds: prompt, maxNewTokens: greedy.count, sampling: .greedy, stopTokens: []))
        #expect(result.ids == greedy, "\(name) greedy ids")
        let worst = zip(result.logProbs, logProbs).map { abs(Double($0) - $1) }.max() ?? .infinity
        #expect(worst < 1e-4, "\(name) log-probability difference \(worst)")
        let transformer = Transformer(model: LlamaModel(weights: weights))
        let logits = try transformer.prefill(prompt + greedy, cache: transformer.makeCache(), allLogits: true)
        for (key, value) in reference["logits_at"] as! [String: [Double]] {
            let row = logits.row(Int(key)!)
            let diff = zip(row, value).map { abs(Double($0) - $1) }.max()!
            #expect(diff < 1e-4, "\(name) logits at \(key): max difference \(diff)")
        }
    }

    /// Batched decode (the panel kernels) gives each row the logits of the same sequence alone: the reference's
    /// prompt cut at 15 tokens beside the prompt and its first `generated` greedy tokens, decoding one token each,
    /// against the reference's logits at 15 and `16 + generated`; and bfloat16 weights give the same first
    /// `bfloat16Tokens` greedy tokens.
    static func expectBatchedAndBFloat16(_ weights: ModelWeights, reference: [String: Any], generated: Int, bfloat16Tokens: Int) throws {
        let prompt = (reference["prompt_ids"] as! [Int]).map(Int32.init), greedy = (reference["greedy_ids"] as! [Int]).map(Int32.init)
        let transformer = Transformer(model: LlamaModel(weights: weights))
        let caches = [transformer.makeCache(), transformer.makeCache()]
        _ = try transformer.prefill(Array(prompt.prefix(15)), cache: caches[0])
        _ = try transformer.prefill(prompt + greedy.prefix(generated), cache: caches[1])
        let batched = try transformer.decode([prompt[15], greedy[generated]], caches: caches)
        let expected = reference["logits_at"] as! [String: [Double]]
        for (row, key) in [(0, "15"), (1, String(prompt.count + generated))] {
            let want = try #require(expected[key], "the reference has logits at \(key)")
            #expect(zip(batched.row(row), want).map { abs(Double($0) - $1) }.max()! < 1e-4, "batched row \(row)")
        }
        let bf16 = TextGenerator(transformer: Transformer(model: LlamaModel(weights: weights, precision: .bfloat16, batchedDecode: false)))
        let rounded = try bf16.generate(GenerationRequest(promptIds: prompt, maxNewTokens: bfloat16Tokens, sampling: .greedy, stopTokens: []))
        #expect(rounded.ids == Array(greedy.prefix(bfloat16Tokens)))
    }

    /// `weights` written as a float32 Hugging Face directory at `directory` and read back: the same config
    /// and every trainable tensor bit for bit. Returns the written config.json.
    static func expectWrittenBackBitForBit(_ weights: ModelWeights, config: HuggingFaceConfig, to directory: String) throws -> [String: Any] {
        try HuggingFaceCheckpoint.write(weights, config: config, dtype: .float32, to: directory)
        let (again, againConfig) = try HuggingFaceCheckpoint.read(directory: directory)
        #expect(againConfig.llama == config.llama)
        for tensor in weights.layout.trainableTensors { #expect(again.values(tensor) == weights.values(tensor), "\(tensor)") }
        return try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/config.json"))) as! [String: Any]
    }

    /// A config.json made of `object`, parsed.
    static func config(_ object: [String: Any]) throws -> HuggingFaceConfig {
        try HuggingFaceConfig(json: JSONSerialization.data(withJSONObject: object), path: "config.json")
    }

    /// Written back as Hugging Face (float32) and read again: the same weights, bit for bit; as
    /// bfloat16: within bfloat16's rounding.
    @Test(arguments: names)
    func writeAndReadBack(name: String) throws {
        let (weights, config) = try HuggingFaceCheckpoint.read(directory: Fixtures.huggingFace(name))
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try HuggingFaceCheckpoint.write(weights, config: config, dtype: .float32, to: dir + "/f32")
        let (again, againConfig) = try HuggingFaceCheckpoint.read(directory: dir + "/f32")
        #expect(againConfig.llama == config.llama && againConfig.bosTokenId == config.bosTokenId && againConfig.eosTokenIds == config.eosTokenIds)
        for tensor in weights.layout.trainableTensors { #expect(again.values(tensor) == weights.values(tensor), "\(tensor)") }
        try HuggingFaceCheckpoint.write(weights, config: config, dtype: .bfloat16, to: dir + "/bf16")
        let half = try HuggingFaceCheckpoint.read(directory: dir + "/bf16").weights
        for tensor in weights.layout.trainableTensors {
            let diff = zip(half.values(tensor), weights.values(tensor)).map { abs($0 - $1) / max(abs($1), 1e-30) }.max() ?? 0
            #expect(diff <= 1.0 / 256, "\(tensor): relative difference \(diff)")
        }
    }

    /// What the core cannot run is refused with the key and its value.
    @Test func unsupportedConfigsAreRefusedByKey() throws {
        let original = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.huggingFace("hf-llama2-mha") + "/config.json"))) as! [String: Any]
        let cases: [(String, Any, String)] = [
            ("attention_bias", true, "attention_bias: true"),
            ("mlp_bias", true, "mlp_bias: true"),
            ("rope_scaling", ["rope_type": "dynamic", "factor": 2.0], "rope_scaling.rope_type: \"dynamic\" is not supported"),
            ("rope_scaling", ["type": "linear", "factor": 0.5], "rope_scaling.factor: must be a finite number >= 1, got 0.5"),
            ("rope_scaling", ["rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0],
             "rope_scaling.original_max_position_embeddings: missing (rope_type \"llama3\" needs it)"),
            ("rope_scaling", ["rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192],
             "rope_scaling.high_freq_factor: must be a finite number above low_freq_factor 4.0, got 4.0"),
            ("rope_scaling", "linear", "rope_scaling: expected an object, got \"linear\""),
            ("architectures", ["GemmaForCausalLM"], "architectures: [\"GemmaForCausalLM\"] is not supported"),
            ("architectures", ["Qwen3ForCausalLM"], "model_type: \"llama\" disagrees with architectures [\"Qwen3ForCausalLM\"]"),
            ("architectures", ["Qwen2ForCausalLM"], "model_type: \"llama\" disagrees with architectures [\"Qwen2ForCausalLM\"]"),
            ("architectures", ["MistralForCausalLM"], "model_type: \"llama\" disagrees with architectures [\"MistralForCausalLM\"]"),
            ("model_type", "gemma", "model_type: \"gemma\" is not supported"),
            ("sliding_window", 64, "sliding_window: 64 is not supported"),
            ("hidden_act", "gelu", "hidden_act: \"gelu\""),
            ("head_dim", 33, "head_dim: head size 33 is odd"),
            ("head_dim", 0, "head_dim: must be positive"),
            ("rope_parameters", ["rope_type": "yarn", "rope_theta": 10000.0], "rope_parameters.rope_type: \"yarn\""),
        ]
        for (key, value, message) in cases {
            var object = original
            object[key] = value
            let data = try JSONSerialization.data(withJSONObject: object)
            #expect {
                try HuggingFaceConfig(json: data, path: "config.json")
            } throws: { error in
                "\(error)".contains(message)
            }
        }
        var missing = original
        missing.removeValue(forKey: "hidden_size")
        #expect(throws: LlamaError.invalidCheckpoint(path: "config.json", reason: "config.json: hidden_size: missing")) {
            try HuggingFaceConfig(json: try JSONSerialization.data(withJSONObject: missing), path: "config.json")
        }
    }

    static let scaledNames = ["rope-llama3", "rope-linear"]

    /// A reward model (`*ForSequenceClassification`, one label) reads as its trunk and `score.weight`; it
    /// is refused where a model must generate, and a causal LM where a reward model's head is asked for.
    /// A classifier of more than one label, another family and a missing head are refused by name.
    @Test func rewardModelsReadTheirScoreHead() throws {
        let directory = Fixtures.rewardModel("qwen2-rm")
        let (weights, config, head) = try HuggingFaceCheckpoint.readRewardModel(directory: directory)
        #expect(config.isSequenceClassifier && config.padTokenId == 201 && config.llama.attentionBias && head.count == config.llama.dim)
        #expect(weights.config.sharedClassifier)
        #expect(!(try HuggingFaceConfig(contentsOf: Fixtures.qwen2 + "/config.json")).isSequenceClassifier)
        #expect { try HuggingFaceCheckpoint.read(directory: directory) } throws: { "\($0)".contains("holds a reward model") }
        #expect { try Checkpoint.read(path: directory) } throws: { "\($0)".contains("holds a reward model") }
        #expect { try HuggingFaceCheckpoint.readRewardModel(directory: Fixtures.qwen2) } throws: { "\($0)".contains("not a reward model") }
        let object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: directory + "/config.json"))) as! [String: Any]
        var two = object
        two["id2label"] = ["0": "LABEL_0", "1": "LABEL_1"]
        #expect { try Self.config(two) } throws: { "\($0)".contains("id2label: 2 labels; a reward model scores with one") }
        var unnamed = object
        unnamed["id2label"] = nil
        #expect { try Self.config(unnamed) } throws: { "\($0)".contains("2 labels") }
        unnamed["num_labels"] = 1
        #expect(try Self.config(unnamed).isSequenceClassifier)
        var gemma = object
        gemma["architectures"] = ["GemmaForSequenceClassification"]
        #expect { try Self.config(gemma) } throws: { "\($0)".contains("is not supported (only one of Gemma2ForCausalLM, Gemma3ForCausalLM, LlamaForCausalLM") }
        // The head missing, or of two labels' shape.
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let stripped = dir + "/stripped"
        try HuggingFaceCheckpoint.write(weights, config: HuggingFaceConfig(llama: weights.config), dtype: .float32, to: stripped)
        var classifier = object
        classifier["tie_word_embeddings"] = true
        try JSONSerialization.data(withJSONObject: classifier).write(to: URL(fileURLWithPath: stripped + "/config.json"))
        #expect { try HuggingFaceCheckpoint.readRewardModel(directory: stripped) } throws: { "\($0)".contains("score.weight is missing") }
        // Written with its head, a reward model again: the same weights and head, bit for bit, as its family's classifier.
        try HuggingFaceCheckpoint.write(weights, config: config, dtype: .float32, to: dir + "/again", scoreHead: head)
        let again = try HuggingFaceCheckpoint.readRewardModel(directory: dir + "/again")
        #expect(again.head == head && again.config.padTokenId == 201 && again.weights.storage.array(0..<weights.storage.count) == weights.storage.array(0..<weights.storage.count))
        let written = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/again/config.json"))) as! [String: Any]
        #expect(written["architectures"] as? [String] == ["Qwen2ForSequenceClassification"] && (written["id2label"] as? [String: String])?.count == 1)
    }

    /// A MistralForCausalLM is LLaMA's decoder with a sliding window over the keys in every layer (48 of its 512
    /// positions): within the window transformers' float64 greedy ids, log-probabilities and logits agree (and
    /// past it: `slidingWindowsAttendAsTransformersPastTheWindow`); written out, it is a MistralForCausalLM of
    /// that window.
    @Test func mistralRunsWithItsSlidingWindow() throws {
        let (weights, config) = try HuggingFaceCheckpoint.read(directory: Fixtures.mistral)
        #expect(config.llama.seqLen == 512 && config.llama.nKVHeads == 2)
        #expect(config.llama.slidingWindow == 48 && config.llama.slidingWindowLayers == [0, 1])
        try Self.expectGreedyAndLogits(weights, reference: try Fixtures.mistralReference(), name: "mistral-window")
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try HuggingFaceCheckpoint.write(weights, config: config, dtype: .float32, to: dir + "/out")
        #expect(try HuggingFaceCheckpoint.read(directory: dir + "/out").config.llama == config.llama)
        let written = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/out/config.json"))) as! [String: Any]
        #expect(written["architectures"] as? [String] == ["MistralForCausalLM"] && written["sliding_window"] as? Int == 48)
        // llama2.c's header cannot hold the window.
        #expect(Checkpoint.legacyCannotHold(config.llama)?.contains("a sliding window of 48") == true)
        // No window: every layer attends to the whole context; a window that is no positive integer is refused by key.
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.mistral + "/config.json"))) as! [String: Any]
        object["sliding_window"] = NSNull()
        #expect(try Self.config(object).llama.seqLen == 512 && Self.config(object).llama.slidingWindow == nil)
        object["sliding_window"] = 4096
        #expect(try Self.config(object).llama.seqLen == 512 && Self.config(object).llama.slidingWindow == 4096)
        object["sliding_window"] = 0
        #expect { try Self.config(object) } throws: {
            "\($0)".contains("sliding_window: expected a positive integer or null, got 0")
        }
    }

    /// Past the sliding window (48 positions, sequences of 100 to 112 tokens) the windowed layers attend as
    /// transformers' do (key j for query i where j > i - 48): Mistral's and Phi-3's every layer, Gemma 3's and
    /// Gemma 2's layers 0 and 2 (with the local RoPE base, and the softcap). Greedy decoding through the KV cache
    /// from a 100-token prompt, the prefill's logits at six positions, and batched decode of two rows 39 positions
    /// apart agree with transformers' float64 (the reference checks that full attention gives other logits there).
    @Test(arguments: ["mistral", "phi3", "gemma3", "gemma2"])
    func slidingWindowsAttendAsTransformersPastTheWindow(model: String) throws {
        let directory = ["mistral": Fixtures.mistral, "phi3": Fixtures.phi3, "gemma3": Fixtures.gemma3, "gemma2": Fixtures.gemma2][model]!
        let (weights, config) = try HuggingFaceCheckpoint.read(directory: directory)
        #expect(config.llama.slidingWindow == 48 && config.llama.seqLen == 512)
        let reference = try Fixtures.beyondWindowReference(model)
        try Self.expectGreedyAndLogits(weights, reference: reference, name: "\(model) past the window")
        let sequence = ((reference["prompt_ids"] as! [Int]) + (reference["greedy_ids"] as! [Int])).map(Int32.init)
        let transformer = Transformer(model: LlamaModel(weights: weights))
        let caches = [transformer.makeCache(), transformer.makeCache()]
        _ = try transformer.prefill(Array(sequence.prefix(60)), cache: caches[0])
        _ = try transformer.prefill(Array(sequence.prefix(99)), cache: caches[1])
        let batched = try transformer.decode([sequence[60], sequence[99]], caches: caches)
        let expected = reference["logits_at"] as! [String: [Double]]
        for (row, key) in [(0, "60"), (1, "99")] {
            let diff = zip(batched.row(row), expected[key]!).map { abs(Double($0) - $1) }.max()!
            #expect(diff < 1e-4, "\(model) batched row \(row) at \(key): max difference \(diff)")
        }
    }

    /// A Phi3ForCausalLM is LLaMA's decoder with the query, key and value projections stored as one
    /// `qkv_proj` and the gate and up projections as one `gate_up_proj`, and Mistral's sliding window: read
    /// apart (grouped-query attention: 4 query heads, 2 key/value heads), transformers' float64 greedy ids,
    /// log-probabilities and logits agree within the window (and past it:
    /// `slidingWindowsAttendAsTransformersPastTheWindow`); written out, it is the LLaMA decoder with Mistral's
    /// window it computes, a MistralForCausalLM. Partial rotation (Phi-4-mini's) and dropout are refused by key.
    @Test func phi3ReadsItsFusedProjections() throws {
        let (weights, config) = try HuggingFaceCheckpoint.read(directory: Fixtures.phi3)
        #expect(config.fusedProjections && config.llama.seqLen == 512 && config.llama.slidingWindow == 48 && config.llama.nKVHeads == 2 && config.llama.nHeads == 4)
        try Self.expectGreedyAndLogits(weights, reference: try Fixtures.phi3Reference(), name: "phi3-fused")
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try HuggingFaceCheckpoint.write(weights, config: config, dtype: .float32, to: dir + "/out")
        let written = try HuggingFaceCheckpoint.read(directory: dir + "/out")
        #expect(written.config.llama == config.llama && !written.config.fusedProjections)
        #expect(written.weights.storage.array(0..<written.weights.storage.count) == weights.storage.array(0..<weights.storage.count))
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.phi3 + "/config.json"))) as! [String: Any]
        for (key, value, message) in [("partial_rotary_factor", 0.75, "partial_rotary_factor: 0.75 is not supported"),
                                      ("resid_pdrop", 0.1, "resid_pdrop: 0.1 is not supported (no dropout)")] {
            var changed = object
            changed[key] = value
            #expect { try Self.config(changed) } throws: { "\($0)".contains(message) }
        }
        var parameters = (object["rope_parameters"] as? [String: Any]) ?? ["rope_type": "default", "rope_theta": 10000.0]
        parameters["partial_rotary_factor"] = 0.5
        object["rope_parameters"] = parameters
        #expect { try Self.config(object) } throws: { "\($0)".contains("partial_rotary_factor: 0.5 is not supported") }
    }

    /// A Qwen2ForCausalLM is LLaMA's decoder with biases on the query, key and value projections: the
    /// biases are read (the query's and key's elements permuted as their rows are), transformers' float64
    /// greedy ids, log-probabilities and logits agree, and it writes back as a Qwen2ForCausalLM, bit for
    /// bit; llama2.c's files cannot hold it, and LLaMA's attention_bias (an output bias too) stays refused.
    @Test func qwen2RunsWithItsAttentionBiases() throws {
        let (weights, config) = try HuggingFaceCheckpoint.read(directory: Fixtures.qwen2)
        #expect(config.llama.attentionBias && config.llama.ropeTheta == 1_000_000 && config.llama.sharedClassifier)
        #expect(weights.layout.storedTensors.suffix(3) == [.bq, .bk, .bv])
        #expect(config.llama.parameterCount == weights.layout.trainableTensors.reduce(0) { $0 + weights.layout.count($1) })
        try Self.expectGreedyAndLogits(weights, reference: try Fixtures.qwen2Reference(), name: "qwen2-bias")
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let written = try Self.expectWrittenBackBitForBit(weights, config: config, to: dir + "/out")
        #expect(written["architectures"] as? [String] == ["Qwen2ForCausalLM"] && written["model_type"] as? String == "qwen2")
        #expect { try Checkpoint.writeLegacy(weights, to: dir + "/model.bin") } throws: { "\($0)".contains("attention biases") }
        // A window, or LLaMA's attention_bias, is refused by key.
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.qwen2 + "/config.json"))) as! [String: Any]
        object["use_sliding_window"] = true
        #expect { try Self.config(object) } throws: {
            "\($0)".contains("use_sliding_window: true is not supported")
        }
        object["use_sliding_window"] = false
        object["layer_types"] = ["full_attention", "sliding_attention"]
        #expect { try Self.config(object) } throws: { "\($0)".contains("layer_types") }
        object["layer_types"] = nil
        object["sliding_window"] = 4096
        #expect(try Self.config(object).llama.seqLen == 128)
        object["architectures"] = ["LlamaForCausalLM"]; object["model_type"] = "llama"; object["sliding_window"] = nil
        object["attention_bias"] = true
        #expect { try Self.config(object) } throws: {
            "\($0)".contains("attention_bias: true is not supported")
        }
    }

    /// A Gemma3ForCausalLM is LLaMA's decoder with GeGLU, its embedding scaled by sqrt(hidden_size), norms on each
    /// block's attention and feed-forward outputs (`post_attention_layernorm` is one of them, the feed-forward's input
    /// norm `pre_feedforward_layernorm`), Qwen3's query/key norms, norms that scale by 1 + weight, an attention scale
    /// of query_pre_attn_scalar^-0.5 and RoPE base 10000 in its sliding-window layers (1e6 in its full one): read
    /// as such (the sliding layers attending through the window), transformers' float64 greedy ids, log-probabilities
    /// and logits agree, batched decode and bfloat16 weights run it, and it writes back as a Gemma3ForCausalLM that reads the
    /// same; llama2.c's files cannot hold it, and softcapping or bidirectional attention stays refused.
    @Test func gemma3RunsItsBlocks() throws {
        let (weights, config) = try HuggingFaceCheckpoint.read(directory: Fixtures.gemma3)
        let c = config.llama
        #expect(c.qkNorm && c.postNorms && c.activation == .geluTanh && c.embeddingScale == Float(32.0.squareRoot()))
        #expect(c.headSize == 16 && c.queryDim == 64 && c.seqLen == 512 && c.sharedClassifier && c.normEps == 1e-6)
        #expect(c.slidingWindow == 48 && c.slidingWindowLayers == [0, 2])
        #expect(c.attentionScale == Float(pow(24.0, -0.5)) && c.ropeTheta == 1_000_000 && c.localRoPETheta == 10000 && c.localRoPELayers == [0, 2])
        #expect(weights.layout.storedTensors.suffix(4) == [.qNorm, .kNorm, .rmsPostAttention, .rmsPostFFN])
        #expect(c.parameterCount == weights.layout.trainableTensors.reduce(0) { $0 + weights.layout.count($1) })
        // The stored norm weights are offsets from 1: the core holds the scale itself.
        let file = try SafetensorsFile(path: Fixtures.gemma3 + "/model.safetensors")
        let stored = FloatBuffer(count: 32, hugePages: false)
        try file.read(file.entries["model.layers.1.post_feedforward_layernorm.weight"]!, columns: 32, into: stored, offset: 0)
        let file32 = stored.array(0..<32), core = Array(weights.values(.rmsPostFFN)[32..<64])
        #expect(zip(core, file32).allSatisfy { $0 == 1 + $1 })
        let reference = try Fixtures.gemma3Reference()
        try Self.expectGreedyAndLogits(weights, reference: reference, name: "gemma3-tiny")
        try Self.expectBatchedAndBFloat16(weights, reference: reference, generated: 31, bfloat16Tokens: 4)
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let written = try Self.expectWrittenBackBitForBit(weights, config: config, to: dir + "/out")
        #expect(written["architectures"] as? [String] == ["Gemma3ForCausalLM"] && written["model_type"] as? String == "gemma3_text")
        #expect(written["hidden_activation"] as? String == "gelu_pytorch_tanh" && written["query_pre_attn_scalar"] as? Double == 24)
        #expect(written["layer_types"] as? [String] == ["sliding_attention", "full_attention", "sliding_attention"])
        #expect(written["sliding_window"] as? Int == 48 && written["max_position_embeddings"] as? Int == 512)
        #expect(written["rope_local_base_freq"] as? Double == 10000 && written["rope_theta"] as? Double == 1_000_000)
        // The file's own norm weights, to float32's rounding of 1 + w - 1.
        let again = try SafetensorsFile(path: dir + "/out/model.safetensors")
        let back = FloatBuffer(count: 32, hugePages: false)
        try again.read(again.entries["model.layers.1.post_feedforward_layernorm.weight"]!, columns: 32, into: back, offset: 0)
        #expect(zip(back.array(0..<32), file32).allSatisfy { abs($0 - $1) <= 1e-7 })
        #expect { try Checkpoint.writeLegacy(weights, to: dir + "/model.bin") } throws: {
            "\($0)".contains("GeGLU") && "\($0)".contains("norms after attention and feed-forward")
        }
        let original = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.gemma3 + "/config.json"))) as! [String: Any]
        for (key, value, message) in [("final_logit_softcapping", 30.0 as Any, "final_logit_softcapping: 30"),
                                      ("attn_logit_softcapping", 50.0, "attn_logit_softcapping: 50"),
                                      ("use_bidirectional_attention", true, "use_bidirectional_attention: true is not supported"),
                                      ("hidden_activation", "gelu", "hidden_activation: \"gelu\" is not supported"),
                                      ("architectures", ["Gemma3ForConditionalGeneration"], "text_config: missing")] {
            var object = original
            object[key] = value
            #expect { try Self.config(object) } throws: { "\($0)".contains(message) }
        }
        // transformers 4's spelling: rope_theta, rope_local_base_freq and the sliding_window_pattern.
        var older = original
        older["rope_parameters"] = nil; older["layer_types"] = nil
        older["rope_theta"] = 1_000_000.0; older["rope_local_base_freq"] = 10000.0; older["sliding_window_pattern"] = 2
        let parsed = try Self.config(older).llama
        #expect(parsed.localRoPELayers == [0, 2] && parsed.localRoPETheta == 10000 && parsed.ropeTheta == 1_000_000)
        #expect(parsed.slidingWindowLayers == [0, 2] && parsed.slidingWindow == 48)
        older["rope_scaling"] = ["rope_type": "linear", "factor": 8.0]
        #expect(try Self.config(older).llama.ropeScaling == .linear(factor: 8))
    }

    /// A Gemma3ForConditionalGeneration (Gemma 3 4B and up) is read as its text model: the config nested as
    /// `text_config` (Gemma3TextConfig's defaults where it leaves a key out, the outer token ids), the text model's
    /// tensors under the Hub's names (`language_model.model.`) or transformers 5's (`model.language_model.`), the
    /// vision tower's and the projector's left; the fixture's text model is the Gemma 3 fixture's, so the same
    /// config and weights bit for bit, and transformers' reference greedy ids and logits. Its chat template is the
    /// processor's `chat_template.json`; it is written back as the Gemma3ForCausalLM it computes.
    @Test(arguments: ["gemma3-mm", "gemma3-mm-modules"])
    func gemma3MultimodalIsReadAsItsTextModel(name: String) throws {
        let directory = Fixtures.gemma3Multimodal(name)
        let (weights, config) = try HuggingFaceCheckpoint.read(directory: directory)
        let (tiny, tinyConfig) = try HuggingFaceCheckpoint.read(directory: Fixtures.gemma3)
        #expect(config.isMultimodal && !tinyConfig.isMultimodal && config.llama == tinyConfig.llama)
        #expect(config.eosTokenIds == [1, 106] && config.bosTokenId == 2)
        #expect(weights.storage.array(0..<weights.storage.count) == tiny.storage.array(0..<tiny.storage.count))
        try Self.expectGreedyAndLogits(weights, reference: try Fixtures.gemma3Reference(), name: name)
        #expect(try ChatFormat.templateSource(directory: directory)?.path == directory + "/chat_template.json")
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let written = try Self.expectWrittenBackBitForBit(weights, config: config, to: dir + "/out")
        #expect(written["architectures"] as? [String] == ["Gemma3ForCausalLM"] && written["text_config"] == nil)
        #expect(try !HuggingFaceCheckpoint.read(directory: dir + "/out").config.isMultimodal)
        // An empty text_config is transformers' Gemma3TextConfig defaults (as Gemma3Config(text_config={}) gives them).
        let bare = try Self.config(["architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "text_config": [String: Any]()]).llama
        #expect(bare.vocabSize == 262_208 && bare.dim == 2304 && bare.hiddenDim == 9216 && bare.nLayers == 26 && bare.nHeads == 8)
        #expect(bare.nKVHeads == 4 && bare.headSize == 256 && bare.seqLen == 131_072 && bare.normEps == 1e-6 && bare.attentionScale == 1.0 / 16)
        #expect(bare.slidingWindow == 4096 && bare.slidingWindowLayers == (0..<26).filter { ($0 + 1) % 6 != 0 } && bare.localRoPELayers == bare.slidingWindowLayers)
        #expect(bare.ropeTheta == 1_000_000 && bare.localRoPETheta == 10000 && bare.activation == .geluTanh && bare.sharedClassifier)
        // Its config beside a text-only model's tensors: the text model it names is missing.
        try FileManager.default.createDirectory(atPath: dir + "/mixed", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: directory + "/config.json", toPath: dir + "/mixed/config.json")
        try FileManager.default.copyItem(atPath: Fixtures.gemma3 + "/model.safetensors", toPath: dir + "/mixed/model.safetensors")
        #expect { try HuggingFaceCheckpoint.read(directory: dir + "/mixed") } throws: {
            "\($0)".contains("a Gemma3ForConditionalGeneration's text model is missing")
        }
    }

    /// A Gemma2ForCausalLM is Gemma 3's decoder without query/key norms or a local RoPE base, with its attention
    /// scores and its logits softcapped (`cap * tanh(x / cap)`): read as such (its sliding layers attending through the window; the
    /// caps 50 and 30 where the keys are absent, none where null), transformers' float64 greedy ids,
    /// log-probabilities and logits agree (the fixture's caps of 2 and 3 bind), batched decode and bfloat16 weights
    /// run it, and it writes back as a Gemma2ForCausalLM that reads the same; llama2.c's files cannot hold it.
    @Test func gemma2RunsWithSoftcapping() throws {
        let (weights, config) = try HuggingFaceCheckpoint.read(directory: Fixtures.gemma2)
        let c = config.llama
        #expect(!c.qkNorm && c.postNorms && c.inputNorms && c.activation == .geluTanh && c.normWeightOffset == 1)
        #expect(c.attentionSoftcap == 2 && c.logitSoftcap == 3 && c.localRoPETheta == nil && c.seqLen == 512 && c.ropeTheta == 10000)
        #expect(c.slidingWindow == 48 && c.slidingWindowLayers == [0, 2])
        #expect(c.attentionScale == Float(pow(24.0, -0.5)) && c.embeddingScale == Float(32.0.squareRoot()) && c.sharedClassifier)
        #expect(c.parameterCount == weights.layout.trainableTensors.reduce(0) { $0 + weights.layout.count($1) })
        let reference = try Fixtures.gemma2Reference()
        try Self.expectGreedyAndLogits(weights, reference: reference, name: "gemma2-softcap")
        try Self.expectBatchedAndBFloat16(weights, reference: reference, generated: 31, bfloat16Tokens: 4)
        let transformer = Transformer(model: LlamaModel(weights: weights))
        #expect(try transformer.prefill([2, 40, 41], cache: transformer.makeCache()).row(0).allSatisfy { abs($0) < 3 }, "capped logits")
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let written = try Self.expectWrittenBackBitForBit(weights, config: config, to: dir + "/out")
        #expect(written["architectures"] as? [String] == ["Gemma2ForCausalLM"] && written["model_type"] as? String == "gemma2")
        #expect(written["attn_logit_softcapping"] as? Double == 2 && written["final_logit_softcapping"] as? Double == 3)
        // Spelled as floats: transformers 5 refuses an integer in a field it types as a float.
        let text = try String(contentsOfFile: dir + "/out/config.json", encoding: .utf8)
        #expect(text.contains("\"attn_logit_softcapping\" : 2.0,") && text.contains("\"final_logit_softcapping\" : 3.0,"), "\(text)")
        #expect { try Checkpoint.writeLegacy(weights, to: dir + "/model.bin") } throws: { "\($0)".contains("softcapping") }
        let original = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.gemma2 + "/config.json"))) as! [String: Any]
        var defaults = original
        defaults["attn_logit_softcapping"] = nil; defaults["final_logit_softcapping"] = nil; defaults["layer_types"] = nil
        let parsed = try Self.config(defaults).llama
        #expect(parsed.attentionSoftcap == 50 && parsed.logitSoftcap == 30 && parsed.slidingWindowLayers == [0, 2])
        var none = original
        none["attn_logit_softcapping"] = NSNull(); none["final_logit_softcapping"] = NSNull()
        let uncapped = try Self.config(none).llama
        #expect(uncapped.attentionSoftcap == nil && uncapped.logitSoftcap == nil)
        none["final_logit_softcapping"] = -1.0
        #expect { try Self.config(none) } throws: { "\($0)".contains("final_logit_softcapping: expected a positive number or null") }
    }

    /// An Olmo2ForCausalLM is LLaMA's decoder whose blocks normalise their attention's and feed-forward's outputs
    /// (`post_attention_layernorm`, `post_feedforward_layernorm`) and not their inputs, with its queries and keys
    /// RMS-normalised each across all heads (`q_norm` of QD, `k_norm` of KVD, their elements permuted as the
    /// projections' rows are): read as such, transformers' float64 greedy ids, log-probabilities and logits agree,
    /// batched decode and bfloat16 weights run it, and it writes back as an Olmo2ForCausalLM, bit for bit;
    /// llama2.c's files cannot hold it.
    @Test func olmo2RunsItsPostNormBlocks() throws {
        let (weights, config) = try HuggingFaceCheckpoint.read(directory: Fixtures.olmo2)
        let c = config.llama
        #expect(c.qkNorm && c.qkNormAcrossHeads && c.postNorms && !c.inputNorms && c.activation == .silu && c.embeddingScale == nil)
        #expect(c.normWeightOffset == 0 && !c.sharedClassifier && c.ropeTheta == 500000 && c.kvDim == 16)
        #expect(ParameterLayout.shape(.qNorm, c) == [2, 32] && ParameterLayout.shape(.kNorm, c) == [2, 16])
        #expect(!weights.layout.storedTensors.contains(.rmsAttention) && !weights.layout.storedTensors.contains(.rmsFFN))
        #expect(c.parameterCount == weights.layout.trainableTensors.reduce(0) { $0 + weights.layout.count($1) })
        let reference = try Fixtures.olmo2Reference()
        try Self.expectGreedyAndLogits(weights, reference: reference, name: "olmo2-postnorm")
        try Self.expectBatchedAndBFloat16(weights, reference: reference, generated: 23, bfloat16Tokens: 3)
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let written = try Self.expectWrittenBackBitForBit(weights, config: config, to: dir + "/out")
        #expect(written["architectures"] as? [String] == ["Olmo2ForCausalLM"] && written["model_type"] as? String == "olmo2")
        let names = try SafetensorsFile(path: dir + "/out/model.safetensors").entries.keys
        #expect(!names.contains { $0.contains("input_layernorm") || $0.contains("pre_feedforward") } && names.contains("model.layers.1.self_attn.q_norm.weight"))
        #expect { try Checkpoint.writeLegacy(weights, to: dir + "/model.bin") } throws: {
            "\($0)".contains("blocks without input norms")
        }
    }

    /// A Qwen3ForCausalLM is LLaMA's decoder with each query and key head RMS-normalised before RoPE, its
    /// head size (16) set apart from hidden_size / heads (8), so its attention is 64 wide at a width of 32:
    /// the norms are read (their elements permuted as a head's rows are), transformers' float64 greedy ids,
    /// log-probabilities and logits agree, batched decode and bfloat16 weights run it, and it writes back
    /// as a Qwen3ForCausalLM, bit for bit; llama2.c's files cannot hold it, and an output bias or a window
    /// stays refused.
    @Test func qwen3RunsWithItsQueryKeyNorms() throws {
        let (weights, config) = try HuggingFaceCheckpoint.read(directory: Fixtures.qwen3)
        let c = config.llama
        #expect(c.qkNorm && !c.attentionBias && c.headSize == 16 && c.queryDim == 64 && c.dim == 32 && c.ropeTheta == 1_000_000)
        #expect(weights.layout.storedTensors.suffix(2) == [.qNorm, .kNorm])
        #expect(ParameterLayout.shape(.wq, c) == [2, 64, 32] && ParameterLayout.shape(.wo, c) == [2, 32, 64])
        #expect(c.parameterCount == weights.layout.trainableTensors.reduce(0) { $0 + weights.layout.count($1) })
        let reference = try Fixtures.qwen3Reference()
        try Self.expectGreedyAndLogits(weights, reference: reference, name: "qwen3-qknorm")
        try Self.expectBatchedAndBFloat16(weights, reference: reference, generated: 23, bfloat16Tokens: 4)
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let written = try Self.expectWrittenBackBitForBit(weights, config: config, to: dir + "/out")
        #expect(written["architectures"] as? [String] == ["Qwen3ForCausalLM"] && written["model_type"] as? String == "qwen3")
        #expect(written["head_dim"] as? Int == 16 && written["attention_bias"] as? Bool == false)
        #expect { try Checkpoint.writeLegacy(weights, to: dir + "/model.bin") } throws: {
            "\($0)".contains("head_dim 16") && "\($0)".contains("query/key norms")
        }
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.qwen3 + "/config.json"))) as! [String: Any]
        object["use_sliding_window"] = true
        #expect { try Self.config(object) } throws: {
            "\($0)".contains("use_sliding_window: true is not supported")
        }
        object["use_sliding_window"] = false
        object["attention_bias"] = true
        #expect { try Self.config(object) } throws: {
            "\($0)".contains("attention_bias: true is not supported")
        }
        // A LLaMA config may set its head size apart too (transformers' LlamaAttention reads head_dim).
        object["attention_bias"] = false
        object["architectures"] = ["LlamaForCausalLM"]; object["model_type"] = "llama"
        let llama = try Self.config(object).llama
        #expect(llama.headSize == 16 && !llama.qkNorm)
    }

    /// A SmolLM3ForCausalLM is LLaMA's decoder whose NoPE layers (here every second, from
    /// `no_rope_layer_interval` with no list; SmolLM3-3B's every fourth) apply no RoPE, its RoPE base 2e6
    /// when the config names none: transformers' float64 greedy ids, log-probabilities and logits agree,
    /// and it writes back as a SmolLM3ForCausalLM with the explicit list, bit for bit; llama2.c's files cannot
    /// hold it; a list that is not of zeros and ones, or too short, and a window are refused by key.
    @Test func smolLM3RunsWithoutRoPEInItsNoPELayers() throws {
        let (weights, config) = try HuggingFaceCheckpoint.read(directory: Fixtures.smollm3)
        let c = config.llama
        #expect(c.layersWithoutRoPE == [1, 3] && c.ropeTheta == 2_000_000 && !c.qkNorm && !c.attentionBias)
        #expect(c.usesRoPE(layer: 0) && !c.usesRoPE(layer: 1) && c.usesRoPE(layer: 2) && !c.usesRoPE(layer: 3))
        try Self.expectGreedyAndLogits(weights, reference: try Fixtures.smollm3Reference(), name: "smollm3-nope")
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let written = try Self.expectWrittenBackBitForBit(weights, config: config, to: dir + "/out")
        #expect(written["architectures"] as? [String] == ["SmolLM3ForCausalLM"] && written["no_rope_layers"] as? [Int] == [1, 0, 1, 0])
        // Its pad_token_id (null here) is written back: left out, transformers would take SmolLM3's default
        // 128004, past this vocabulary, and refuse to load the model.
        #expect(written["pad_token_id"] is NSNull)
        #expect { try Checkpoint.writeLegacy(weights, to: dir + "/model.bin") } throws: { "\($0)".contains("layers without RoPE") }
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.smollm3 + "/config.json"))) as! [String: Any]
        object["no_rope_layers"] = [1, 1, 1, 0]
        #expect(try Self.config(object).llama.layersWithoutRoPE == [3])
        for bad in [[1, 0, 1] as [Any], [1, 2, 1, 0], [true, false, true, false]] {
            object["no_rope_layers"] = bad
            #expect { try Self.config(object) } throws: {
                "\($0)".contains("no_rope_layers: expected a list of at least 4 zeros and ones")
            }
        }
        object["no_rope_layers"] = nil
        object["num_hidden_layers"] = -4
        #expect { try Self.config(object) } throws: {
            "\($0)".contains("n_layers: must be positive, got -4")
        }
        object["num_hidden_layers"] = 4
        object["use_sliding_window"] = true
        #expect { try Self.config(object) } throws: {
            "\($0)".contains("use_sliding_window: true is not supported")
        }
    }

    /// Configs that scale RoPE (LLaMA 3.1's and linear interpolation, spelled as transformers 5 writes them):
    /// the frequencies equal transformers' within float32's rounding, and a 600-token prompt (past the
    /// llama3 fixture's original context of 256) gives transformers' float64 greedy ids, log-probabilities
    /// within 1e-4 and logits within 1e-4 up to its last position.
    @Test(arguments: scaledNames)
    func scaledRoPEMatchesTransformers(name: String) throws {
        let reference = try Fixtures.scaledRoPEReference(name)
        let (weights, format) = try Checkpoint.read(path: Fixtures.scaledRoPE(name))
        #expect(format == .huggingFace)
        #expect(weights.config.ropeScaling?.typeName == String(name.dropFirst("rope-".count)))
        let frequencies = weights.config.ropeFrequencies
        let expected = reference["inv_freq"] as! [Double]
        #expect(frequencies.count == expected.count)
        for (ours, theirs) in zip(frequencies, expected) {
            #expect(abs(ours - theirs) <= 1e-6 * theirs, "frequency \(ours) against transformers' \(theirs)")
        }
        try Self.expectGreedyAndLogits(weights, reference: reference, name: name)
    }

    /// The scaling survives a Hugging Face export and read; llama2.c's header, which has no field for it,
    /// refuses the model by name.
    @Test(arguments: scaledNames)
    func scaledRoPEWritesBackAndLegacyRefuses(name: String) throws {
        let (weights, config) = try HuggingFaceCheckpoint.read(directory: Fixtures.scaledRoPE(name))
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try HuggingFaceCheckpoint.write(weights, config: config, dtype: .float32, to: dir + "/f32")
        let again = try HuggingFaceCheckpoint.read(directory: dir + "/f32").config
        #expect(again.llama == config.llama && again.llama.ropeScaling != nil)
        #expect(!Checkpoint.legacyHolds(config.llama))
        #expect {
            try Checkpoint.writeLegacy(weights, to: dir + "/model.bin")
        } throws: { "\($0)".contains("rope_scaling \(config.llama.ropeScaling!.typeName)") }
        #expect(!FileManager.default.fileExists(atPath: dir + "/model.bin"))
    }

    /// The two spellings of a scaling read alike; where a config gives both and they disagree, it is refused.
    @Test func ropeScalingSpellings() throws {
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Fixtures.scaledRoPE("rope-llama3") + "/config.json"))) as! [String: Any]
        let fromParameters = try Self.config(object).llama
        var parameters = object.removeValue(forKey: "rope_parameters") as! [String: Any]
        object["rope_theta"] = parameters.removeValue(forKey: "rope_theta")
        object["rope_scaling"] = parameters
        let fromScaling = try Self.config(object).llama
        #expect(fromScaling == fromParameters)
        #expect(fromScaling.ropeScaling == .llama3(factor: 8, lowFrequencyFactor: 1, highFrequencyFactor: 4, originalContext: 256))
        #expect(fromScaling.ropeTheta == 500000)
        object["rope_parameters"] = ["rope_type": "linear", "factor": 8.0, "rope_theta": 500000.0]
        #expect {
            try Self.config(object)
        } throws: { "\($0)".contains("rope_parameters: ") && "\($0)".contains("disagrees with rope_scaling") }
    }

    /// A truncated shard, a tensor with a bias, a missing tensor: each named.
    @Test func badWeightsAreNamed() throws {
        let source = Fixtures.huggingFace("hf-bytebpe-gqa")
        let dir = try Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        for file in try FileManager.default.contentsOfDirectory(atPath: source) {
            try FileManager.default.copyItem(atPath: source + "/" + file, toPath: dir + "/" + file)
        }
        let shard = dir + "/model-00003-of-00005.safetensors"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: shard))
        try bytes.prefix(bytes.count - 100).write(to: URL(fileURLWithPath: shard))
        #expect { try Checkpoint.read(path: dir) } throws: { "\($0)".contains("model-00003-of-00005.safetensors: truncated") }
        try bytes.write(to: URL(fileURLWithPath: shard))
        #expect(throws: Never.self) { try Checkpoint.read(path: dir) }
        // An index naming a tensor that no shard has a place for.
        let index = dir + "/model.safetensors.index.json"
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: index))) as! [String: Any]
        var map = object["weight_map"] as! [String: String]
        let name = map.keys.first { $0.hasSuffix("q_proj.weight") }!
        map.removeValue(forKey: name)
        object["weight_map"] = map
        try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: index))
        #expect { try Checkpoint.read(path: dir) } throws: { "\($0)".contains("tensor \(name) is missing") }
    }
}
