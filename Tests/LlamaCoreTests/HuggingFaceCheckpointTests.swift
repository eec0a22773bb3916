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
        let prompt = (reference["prompt_ids"] as! [Int]).map(Int32.init)
        let greedy = (reference["greedy_ids"] as! [Int]).map(Int32.init)
        let logProbs = reference["greedy_logprobs"] as! [Double]
        let generator = TextGenerator(transformer: Transformer(model: LlamaModel(weights: weights)))
        let result = try generator.generate(GenerationRequest(promptIds: prompt, maxNewTokens: greedy.count, sampling: .greedy, stopToken: nil))
        #expect(result.ids == greedy)
        let worst = zip(result.logProbs, logProbs).map { abs(Double($0) - $1) }.max() ?? .infinity
        #expect(worst < 1e-4, "log-probability difference \(worst)")

        let transformer = Transformer(model: LlamaModel(weights: weights))
        let all = prompt + greedy
        let logits = try transformer.prefill(all, cache: transformer.makeCache(), allLogits: true)
        for (key, value) in reference["logits_at"] as! [String: [Double]] {
            let p = Int(key)!
            let row = logits.row(p)
            let diff = zip(row, value).map { abs(Double($0) - $1) }.max()!
            #expect(diff < 1e-4, "\(name) logits at \(p): max difference \(diff)")
        }
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
            ("rope_scaling", ["rope_type": "linear", "factor": 2.0], "rope_scaling: {\"factor\":2,\"rope_type\":\"linear\"}"),
            ("architectures", ["MistralForCausalLM"], "architectures: [\"MistralForCausalLM\"]"),
            ("hidden_act", "gelu", "hidden_act: \"gelu\""),
            ("head_dim", 32, "head_dim: 32"),
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
