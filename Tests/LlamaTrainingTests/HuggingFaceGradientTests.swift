import Foundation
import Testing
import TestKit
@testable import LlamaCore
@testable import LlamaTraining

/// The attention of the Hugging Face families beyond LLaMA's trains as PyTorch's does: on the Qwen2
/// fixture (query, key and value biases), the Qwen3 fixture (per-head query/key norms, attention wider
/// than the model) and the SmolLM3 fixture (layers without RoPE), the masked cross-entropy and its
/// gradient for every attention tensor the reference lists agree with PyTorch's float64 autograd
/// (transformers' classes, `hf-*/generate.py`), the file's rows mapped to the core's as the reader maps them.
/// On the Gemma 3 fixture every tensor's gradient is compared (its scaled embedding, GeGLU, post norms, norms
/// stored as offsets from 1, local and global RoPE bases and attention scale touch them all), and on the OLMo 2
/// fixture (output norms without input norms, query/key norms across heads), and on the Gemma 2 fixture (softcapped
/// attention scores and logits). Past the sliding window (`*-window`: 100-token sequences, a window of 48) every
/// tensor's gradient of the Mistral, Gemma 3 and Gemma 2 fixtures is compared too.
@Suite struct HuggingFaceGradientTests {
    /// The core tensor of a reference gradient's name (after `self_attn.`), and its row length in the file.
    static func tensor(_ suffix: String, _ c: LlamaConfig) -> (ParameterTensor, columns: Int)? {
        switch suffix {
        case "q_proj.weight": return (.wq, c.dim)
        case "k_proj.weight": return (.wk, c.dim)
        case "v_proj.weight": return (.wv, c.dim)
        case "o_proj.weight": return (.wo, c.queryDim)
        case "q_proj.bias": return (.bq, 1)
        case "k_proj.bias": return (.bk, 1)
        case "v_proj.bias": return (.bv, 1)
        case "q_norm.weight": return (.qNorm, 1)
        case "k_norm.weight": return (.kNorm, 1)
        default: return nil
        }
    }

    /// The fixture directory and reference of `model`.
    static func fixture(_ model: String) throws -> (directory: String, reference: [String: Any]) {
        switch model {
        case "qwen2": return (Fixtures.qwen2, try Fixtures.qwen2Reference())
        case "qwen3": return (Fixtures.qwen3, try Fixtures.qwen3Reference())
        case "gemma3": return (Fixtures.gemma3, try Fixtures.gemma3Reference())
        case "olmo2": return (Fixtures.olmo2, try Fixtures.olmo2Reference())
        case "gemma2": return (Fixtures.gemma2, try Fixtures.gemma2Reference())
        case "mistral-window": return (Fixtures.mistral, try Fixtures.beyondWindowReference("mistral"))
        case "gemma3-window": return (Fixtures.gemma3, try Fixtures.beyondWindowReference("gemma3"))
        case "gemma2-window": return (Fixtures.gemma2, try Fixtures.beyondWindowReference("gemma2"))
        default: return (Fixtures.smollm3, try Fixtures.smollm3Reference())
        }
    }

    /// The models whose reference lists every tensor's gradient.
    static let everyTensor: Set<String> = ["gemma3", "olmo2", "gemma2", "mistral-window", "gemma3-window", "gemma2-window"]

    @Test(arguments: ["qwen2", "qwen3", "smollm3", "gemma3", "olmo2", "gemma2", "mistral-window", "gemma3-window", "gemma2-window"], [1, 2])
    func gradientsAreTorchs(model: String, threads: Int) throws {
        let (directory, reference) = try Self.fixture(model)
        let sft = reference["sft"] as! [String: Any]
        let tokens = (sft["tokens"] as! [[Int]]).map { $0.map(Int32.init) }
        let mask = (sft["mask"] as! [[Double]]).map { $0.map(Float.init) }
        let (weights, _) = try HuggingFaceCheckpoint.read(directory: directory)
        let pool = ComputePool(threads: threads)
        defer { pool.shutdown() }
        let trainer = TrainableTransformer(weights: weights, pool: pool)
        trainer.zeroGradients()
        let loss = try trainer.maskedCrossEntropy(sequences: tokens, mask: mask)
        #expect(abs(loss - (sft["loss"] as! Double)) < 1e-5 * abs(sft["loss"] as! Double), "loss \(loss)")
        let c = weights.config
        let gradients = trainer.gradients.array(0 ..< trainer.gradients.count)
        let all = sft["gradients"] as! [String: [Double]]
        var compared = Set<ParameterTensor>()
        // Every tensor of the file as the reader places it (Gemma's reference lists them all).
        let places = Dictionary(uniqueKeysWithValues: HuggingFaceCheckpoint.tensors(c).map { ($0.name, $0) })
        for (name, expected) in all.sorted(by: { $0.key < $1.key }) {
            let tensor: ParameterTensor, columns: Int, base: Int
            if Self.everyTensor.contains(model) {
                let place = try #require(places[name], "\(name) has no core tensor")
                tensor = place.tensor
                columns = HuggingFaceCheckpoint.movesByElement(tensor) ? 1 : place.shape.last!
                base = [.tokenEmbedding, .rmsFinal].contains(tensor) ? weights.layout.offset(tensor) : weights.layout.offset(tensor, layer: place.layer)
            } else {
                // model.layers.L.self_attn.SUFFIX
                let parts = name.split(separator: ".", maxSplits: 4)
                let l = try #require(Int(parts[2])), suffix = String(parts[4])
                (tensor, columns) = try #require(Self.tensor(suffix, c), "\(name) has no core tensor")
                base = weights.layout.offset(tensor, layer: l)
            }
            compared.insert(tensor)
            let row = HuggingFaceCheckpoint.coreRow(tensor, c)
            var worst = 0.0
            for (i, value) in expected.enumerated() {
                let ours = Double(gradients[base + row(i / columns) * columns + i % columns])
                worst = max(worst, abs(ours - value))
            }
            let scale = expected.map(abs).max()!
            #expect(scale > 0 && worst <= 1e-4 * scale, "\(name): max difference \(worst) against a largest gradient of \(scale)")
        }
        let attention: Set<ParameterTensor> = model == "qwen2" ? [.wq, .wk, .wv, .bq, .bk, .bv]
            : model == "qwen3" ? [.wq, .wk, .wv, .wo, .qNorm, .kNorm] : Self.everyTensor.contains(model) ? Set(weights.layout.trainableTensors)
            : [.wq, .wk, .wv, .wo]
        #expect(compared == attention)
    }

    /// A Gemma3TextForSequenceClassification, a Gemma2ForSequenceClassification and an Olmo2ForSequenceClassification
    /// score as transformers' float64 does, through the scoring forward (`forward(_:onlyRows:)`, the last layer for the
    /// scored rows only, post norms, OLMo 2's missing input norms and Gemma 2's softcapped attention included), with
    /// and without the transposed projections the reward-model workers prepare; the Gemmas also on 100-token
    /// sequences, past their sliding window (`*-window`).
    @Test(arguments: ["gemma3", "gemma2", "olmo2", "gemma3-window", "gemma2-window"], [false, true])
    func postNormRewardModelsScoreAsTorch(model: String, prepared: Bool) throws {
        let (reference, directory) = switch model {
        case "gemma3": (try Fixtures.gemma3Reference(), Fixtures.gemma3Reward)
        case "gemma2": (try Fixtures.gemma2Reference(), Fixtures.gemma2Reward)
        case "gemma3-window": (try Fixtures.beyondWindowReference("gemma3"), Fixtures.gemma3Reward)
        case "gemma2-window": (try Fixtures.beyondWindowReference("gemma2"), Fixtures.gemma2Reward)
        default: (try Fixtures.olmo2Reference(), Fixtures.olmo2Reward)
        }
        let sequences = ((reference["sft"] as! [String: Any])["tokens"] as! [[Int]]).map { $0.map(Int32.init) }
        let expected = reference["reward_scores"] as! [Double]
        let (weights, config, head) = try HuggingFaceCheckpoint.readRewardModel(directory: directory)
        #expect(config.isSequenceClassifier && config.llama.postNorms)
        let pool = ComputePool(threads: 2)
        defer { pool.shutdown() }
        let model = TrainableTransformer(weights: weights, pool: pool)
        if prepared { model.prepareForScoring() }
        let scores = try Trainers.scores(model, head: ScalarHead(weight: head, bias: 0), sequences: sequences)
        for (ours, theirs) in zip(scores, expected) { #expect(abs(Double(ours) - theirs) < 1e-4, "score \(ours) against \(theirs)") }
    }
}
