import ClusterRuntime
import Foundation
import LlamaCore
import LlamaTraining
import Recipe
import Synchronization
import Transport
import Wire
import Workers

/// `rlhf bench train`: training-step throughput (forward, backward, AdamW) and reward-model forward,
/// against PyTorch measured in the same run.
public struct TrainBenchmark: Sendable {

    /// Config: 15M, gqa or 110M.
    public var config: String
    /// Thread counts to measure, comma-separated.
    public var threads: [Int]
    /// Steps per figure; the best is reported.
    public var repeats: Int
    /// Sequences per training batch.
    public var batch: Int
    /// Sequences per reward-model batch.
    public var rmBatch: Int
    /// Tokens per sequence.
    public var length: Int
    /// Measure only the reward-model forward.
    public var rewardModelOnly: Bool
    /// The rank of a LoRA step measured beside full fine-tuning (0: none).
    public var loraRank: Int
    /// The baselines measured beside ours.
    public var baselines: Baselines



    public init(config: String = "15M", threads: [Int], repeats: Int = 3, batch: Int = 8, rmBatch: Int = 16, length: Int = 256, rewardModelOnly: Bool = false, loraRank: Int = 0, baselines: Baselines) {
        self.config = config
        self.threads = threads
        self.repeats = repeats
        self.batch = batch
        self.rmBatch = rmBatch
        self.length = length
        self.rewardModelOnly = rewardModelOnly
        self.loraRank = loraRank
        self.baselines = baselines
    }

    /// Runs the benchmark, printing its figures and ratios.
    public func run() throws {
        let c = try benchConfig(config)
        guard length <= c.seqLen else { throw BenchmarkError("--length must be in 2...\(c.seqLen) for config \(config), got \(length)") }
        let threadCounts = threads
        let weights = ModelWeights.random(config: c, seed: 1)
        let directory = try benchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        printMachine()
        if baselines.llama2c != nil { print("note: llama2.c does not train; --llama2c is ignored here") }
        var torch: TorchBaseline?
        if let python = baselines.torch {
            let checkpoint = directory.appendingPathComponent("model.bin").path
            try Checkpoint.writeLegacy(weights, to: checkpoint)
            torch = try TorchBaseline(python: python, checkpoint: checkpoint, workDirectory: directory)
            print("PyTorch \(torch!.version), same weights")
        } else {
            print("skipped: PyTorch (give --torch PYTHON, a Python with torch)")
        }
        defer { torch?.stop() }
        var rng = SeededGenerator(seed: 2)
        func sequences(_ count: Int) -> [[Int32]] {
            (0..<count).map { _ in [Int32(1)] + (1..<length).map { _ in Int32(3 + rng.next() % UInt64(c.vocabSize - 3)) } }
        }
        // FLOPs per token: 2 per weight of every matrix product forward (classifier included), plus causal
        // attention (QK^T and PV over T/2 positions on average); a training step is 3x the forward.
        let matrixWeights = Double(c.nLayers * (2 * c.dim * c.dim + 2 * c.kvDim * c.dim + 3 * c.dim * c.hiddenDim) + c.vocabSize * c.dim)
        let attention = Double(c.nLayers) * 2 * 2 * Double(length) / 2 * Double(c.dim)
        let forwardFlops = 2 * matrixWeights + attention
        // The reward model's forward has no classifier.
        let scoringFlops = forwardFlops - 2 * Double(c.vocabSize * c.dim)
        print("config \(config): dim \(c.dim), hidden \(c.hiddenDim), \(c.nLayers) layers, vocab \(c.vocabSize); training batch \(batch)x\(length), reward-model batch \(rmBatch)x\(length)")
        let data = sequences(batch), rmData = sequences(rmBatch)
        let mask = data.map { [Float](repeating: 1, count: $0.count - 1) }
        let head = ScalarHead(dim: c.dim, seed: 3)
        for t in threadCounts {
            let pool = ComputePool(threads: t)
            defer { pool.shutdown() }
            _ = try torch?.call(["op": "threads", "n": t])
            let trainer = TrainableTransformer(weights: weights.copy(), pool: pool)
            let optimizer = AdamW(groupSizes: [trainer.weights.storage.count])
            // Mixed precision: bfloat16 products on float32 master weights, gradients and AdamW state.
            let bf16Trainer = TrainableTransformer(weights: weights.copy(), pool: pool, precision: .bfloat16)
            let bf16Optimizer = AdamW(groupSizes: [bf16Trainer.weights.storage.count])
            // LoRA: adapters on the attention projections, the base frozen (no gradient for its matrices).
            let loraTrainer = TrainableTransformer(weights: weights.copy(), pool: pool)
            let adapters = loraRank > 0
                ? try LoRAAdapters(config: c, settings: LoRASettings(rank: loraRank, alpha: Double(2 * loraRank)), seed: 1) : nil
            loraTrainer.lora = adapters
            let loraOptimizer = adapters.map { AdamW(groupSizes: [$0.values.count]) }
            // The reward model scores as the reward-model worker does: its transformer prepared for scoring
            // once (when a version is installed), not timed.
            let scorer = TrainableTransformer(weights: weights.copy(), pool: pool)
            scorer.prepareForScoring()
            var best = BestOf()
            for round in 0..<repeats {
                if !rewardModelOnly {
                    for (key, model, adamw) in [("train", trainer, optimizer), ("train-bf16", bf16Trainer, bf16Optimizer)] {
                        let start = Date()
                        model.zeroGradients()
                        _ = try model.maskedCrossEntropy(sequences: data, mask: mask)
                        adamw.update([ParameterGroup(model: model)], lr: 1e-4, pool: pool)
                        best.record(key, Double(batch * (length - 1)) / Date().timeIntervalSince(start))
                    }
                    if let adapters, let loraOptimizer {
                        let start = Date()
                        adapters.zeroGradients()
                        _ = try loraTrainer.maskedCrossEntropy(sequences: data, mask: mask)
                        loraOptimizer.update([adapters.parameterGroup], lr: 1e-4, pool: pool)
                        best.record("train-lora", Double(batch * (length - 1)) / Date().timeIntervalSince(start))
                    }
                    if let torch {
                        best.record("torch-train", try torch.figure(["op": "train", "batch": batch, "length": length, "seed": round], "tps"))
                        best.record("torch-train-autocast", try torch.figure(["op": "train", "batch": batch, "length": length, "seed": round,
                                                                             "autocast": true], "tps"))
                    }
                }
                let start = Date()
                let scoringBatch = try TokenBatch(rmData, config: c)
                _ = head.scores(scorer.forward(scoringBatch, onlyRows: scoringBatch.lastRows), rows: scoringBatch.lastRows)
                best.record("rm", Double(rmBatch * length) / Date().timeIntervalSince(start))
                if let torch {
                    best.record("torch-rm", try torch.figure(["op": "rm", "batch": rmBatch, "length": length, "seed": round], "tps"))
                }
            }
            let label = "[\(t) thread\(t == 1 ? "" : "s")]"
            if let tps = best["train"] {
                print(String(format: "%@ training step: %.2f s, %.0f tok/s, %.1f GFLOP/s  vs PyTorch %@: %@", label,
                             Double(batch * (length - 1)) / tps, tps, 3 * forwardFlops * tps / 1e9,
                             figure(best["torch-train"]), ratio(tps, best["torch-train"]) + best.roundRatios("train", "torch-train")))
            }
            if let tps = best["train-bf16"] {
                print(String(format: "%@ training step, bfloat16 products: %.2f s, %.0f tok/s, %.1f GFLOP/s  vs float32: %@  vs PyTorch float32 %@: %@  vs PyTorch bfloat16 autocast %@: %@",
                             label, Double(batch * (length - 1)) / tps, tps, 3 * forwardFlops * tps / 1e9, ratio(tps, best["train"]),
                             figure(best["torch-train"]), ratio(tps, best["torch-train"]) + best.roundRatios("train-bf16", "torch-train"),
                             figure(best["torch-train-autocast"]),
                             ratio(tps, best["torch-train-autocast"]) + best.roundRatios("train-bf16", "torch-train-autocast")))
            }
            if let tps = best["train-lora"], let adapters {
                let full = c.parameterCount, trained = adapters.values.count
                print(String(format: "%@ training step, LoRA rank %d on wq, wk, wv, wo: %.2f s, %.0f tok/s  vs full fine-tuning: %@; trains %d values (full: %d, %.0fx fewer): AdamW state %.1f MB (full: %.0f MB), a weight sync of the adapters %.1f MB (full weights: %.0f MB)",
                             label, loraRank, Double(batch * (length - 1)) / tps, tps, ratio(tps, best["train"]), trained, full,
                             Double(full) / Double(trained), Double(8 * trained) / 1e6, Double(8 * full) / 1e6,
                             Double(4 * trained) / 1e6, Double(4 * full) / 1e6))
            }
            print(String(format: "%@ reward-model forward (scores at each last token): %.0f tok/s, %.1f GFLOP/s of a full forward  vs PyTorch %@: %@", label, best["rm"]!,
                         scoringFlops * best["rm"]! / 1e9,
                         figure(best["torch-rm"]), ratio(best["rm"], best["torch-rm"]) + best.roundRatios("rm", "torch-rm")))
        }
        print(String(format: "peak resident memory: %.0f MB", Double(MemoryProbe.peakResidentBytes()) / 1e6))
    }
}
