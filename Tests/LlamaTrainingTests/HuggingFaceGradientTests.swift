import Foundation
import Testing
import TestKit
@testable import LlamaCore
@testable import LlamaTraining

/// Qwen2's attention biases train: on the Qwen2 fixture the masked cross-entropy and its gradient for
/// every query, key and value projection and bias agree with PyTorch's float64 autograd (transformers'
/// Qwen2ForCausalLM, `hf-qwen2/generate.py`), the file's rows mapped to the core's as the reader maps them.
@Suite struct AttentionBiasTests {
    @Test(arguments: [1, 2])
    func qwen2GradientsAreTorchs(threads: Int) throws {
        let reference = try Fixtures.qwen2Reference()
        let sft = reference["sft"] as! [String: Any]
        let tokens = (sft["tokens"] as! [[Int]]).map { $0.map(Int32.init) }
        let mask = (sft["mask"] as! [[Double]]).map { $0.map(Float.init) }
        let (weights, _) = try HuggingFaceCheckpoint.read(directory: Fixtures.qwen2)
        let pool = ComputePool(threads: threads)
        defer { pool.shutdown() }
        let trainer = TrainableTransformer(weights: weights, pool: pool)
        trainer.zeroGradients()
        let loss = try trainer.maskedCrossEntropy(sequences: tokens, mask: mask)
        #expect(abs(loss - (sft["loss"] as! Double)) < 1e-5 * abs(sft["loss"] as! Double), "loss \(loss)")
        let c = weights.config
        let gradients = trainer.gradients.array(0 ..< trainer.gradients.count)
        let names: [(String, ParameterTensor, Int)] = [("q_proj.weight", .wq, c.dim), ("k_proj.weight", .wk, c.dim), ("v_proj.weight", .wv, c.dim),
                                                       ("q_proj.bias", .bq, 1), ("k_proj.bias", .bk, 1), ("v_proj.bias", .bv, 1)]
        let all = sft["gradients"] as! [String: [Double]]
        for l in 0..<c.nLayers {
            for (suffix, tensor, columns) in names {
                let expected = try #require(all["model.layers.\(l).self_attn.\(suffix)"], "\(suffix)")
                let row = HuggingFaceCheckpoint.coreRow(tensor, c)
                let base = weights.layout.offset(tensor, layer: l)
                var worst = 0.0
                for (i, value) in expected.enumerated() {
                    let ours = Double(gradients[base + row(i / columns) * columns + i % columns])
                    worst = max(worst, abs(ours - value))
                }
                let scale = expected.map(abs).max()!
                #expect(scale > 0 && worst <= 1e-4 * scale, "layer \(l) \(suffix): max difference \(worst) against a largest gradient of \(scale)")
            }
        }
    }
}
