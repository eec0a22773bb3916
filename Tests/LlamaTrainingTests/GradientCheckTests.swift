import Foundation
import Testing
@testable import LlamaCore
@testable import LlamaTraining

/// Finite differences on a tiny random model, an independent check of every backward path.
@Suite struct GradientCheckTests {
    /// `qwen3`: Qwen3's blocks, query/key norms and a head size (12) set apart from dim / heads (8).
    static func config(shared: Bool, attentionBias: Bool = false, qwen3: Bool = false) -> LlamaConfig {
        LlamaConfig(dim: 32, hiddenDim: 48, nLayers: 2, nHeads: 4, nKVHeads: 2, vocabSize: 23, seqLen: 16, sharedClassifier: shared,
                    attentionBias: attentionBias, headSize: qwen3 ? 12 : nil, qkNorm: qwen3)
    }

    /// Random weights with larger norms than a real init, so that every path carries signal.
    static func model(shared: Bool, attentionBias: Bool = false, qwen3: Bool = false, seed: UInt64 = 3) -> ModelWeights {
        let w = ModelWeights.random(config: config(shared: shared, attentionBias: attentionBias, qwen3: qwen3), seed: seed, std: 0.3)
        var rng = SeededGenerator(seed: seed + 100)
        w.storage.withUnsafeMutableBufferPointer { buf in
            for t in [ParameterTensor.rmsAttention, .rmsFFN, .rmsFinal] + (qwen3 ? [.qNorm, .kNorm] : []) {
                for i in w.layout.range(t) { buf[i] = 1 + Float(rng.nextGaussian() * 0.2) }
            }
        }
        return w
    }

    /// Compares analytic gradients with central differences at the largest-gradient entries of each
    /// tensor. `loss()` recomputes the loss from scratch (it must not touch `trainer.gradients`' use).
    static func check(_ trainer: TrainableTransformer, analytic: FloatBuffer, eps: Float = 3e-3,
                      loss: () throws -> Double) throws {
        let layout = trainer.weights.layout
        for tensor in layout.trainableTensors {
            let range = layout.range(tensor)
            let picks = range.sorted { abs(analytic.baseAddress[$0]) > abs(analytic.baseAddress[$1]) }.prefix(3)
            for i in picks {
                let numeric = try centralDifference(at: trainer.weights.storage.baseAddress + i, eps: eps, loss: loss)
                let exact = Double(analytic.baseAddress[i])
                let error = abs(numeric - exact) / max(abs(exact), abs(numeric), 1e-3)
                #expect(error < 1e-2, "\(tensor.name)[\(i - range.lowerBound)]: analytic \(exact), numeric \(numeric)")
            }
        }
    }

    /// `(loss(p + eps) - loss(p - eps)) / 2 eps`, the value at `p` restored after.
    static func centralDifference(at p: UnsafeMutablePointer<Float>, eps: Float, loss: () throws -> Double) rethrows -> Double {
        let original = p.pointee
        p.pointee = original + eps
        let up = try loss()
        p.pointee = original - eps
        let down = try loss()
        p.pointee = original
        return (up - down) / Double(2 * eps)
    }

    static let sequences: [[Int32]] = [[1, 5, 9, 13, 2, 7], [1, 4, 4, 8], [1, 20, 3, 11, 17, 6, 5, 2]]

    /// With tied and separate classifiers, with Qwen2's attention biases, and with Qwen3's query/key norms
    /// and a head size set apart from dim / heads (with and without biases).
    @Test(arguments: [(true, false, false), (false, false, false), (true, true, false), (true, false, true), (false, true, true)])
    func crossEntropy(shared: Bool, attentionBias: Bool, qwen3: Bool) throws {
        let trainer = TrainableTransformer(weights: GradientCheckTests.model(shared: shared, attentionBias: attentionBias, qwen3: qwen3))
        #expect(trainer.weights.layout.trainableTensors.contains(.bq) == attentionBias)
        #expect(trainer.weights.layout.trainableTensors.contains(.qNorm) == qwen3)
        let mask = GradientCheckTests.sequences.map { s in (0..<(s.count - 1)).map { $0 == 0 ? Float(0) : 1 } }
        _ = try trainer.maskedCrossEntropy(sequences: GradientCheckTests.sequences, mask: mask)
        let analytic = FloatBuffer(count: trainer.gradients.count)
        analytic.set(trainer.gradients.array(0..<trainer.gradients.count), at: 0)
        try GradientCheckTests.check(trainer, analytic: analytic) {
            trainer.zeroGradients()
            return try trainer.maskedCrossEntropy(sequences: GradientCheckTests.sequences, mask: mask)
        }
    }

    @Test func rankingLossWithMargins() throws {
        let trainer = TrainableTransformer(weights: GradientCheckTests.model(shared: false))
        let head = ScalarHead(dim: 32, seed: 9, std: 0.5)
        let chosen: [[Int32]] = [[1, 5, 9, 13], [1, 4, 4, 8, 2]], rejected: [[Int32]] = [[1, 6, 9], [1, 7, 3, 3, 3, 2]]
        let margins = [MarginTable.small.margin(.significantlyBetter), MarginTable.small.margin(.slightlyBetter)]
        let result = try trainer.rankingLoss(chosen: chosen, rejected: rejected, margins: margins, head: head)
        let analytic = FloatBuffer(count: trainer.gradients.count)
        analytic.set(trainer.gradients.array(0..<trainer.gradients.count), at: 0)
        try GradientCheckTests.check(trainer, analytic: analytic) {
            try trainer.rankingLoss(chosen: chosen, rejected: rejected, margins: margins, head: head).loss
        }
        // The head's own gradient.
        var moved = head
        let eps: Float = 1e-2
        for i in [0, 7, 31] {
            moved.weight[i] = head.weight[i] + eps
            let up = try trainer.rankingLoss(chosen: chosen, rejected: rejected, margins: margins, head: moved).loss
            moved.weight[i] = head.weight[i] - eps
            let down = try trainer.rankingLoss(chosen: chosen, rejected: rejected, margins: margins, head: moved).loss
            moved.weight[i] = head.weight[i]
            let numeric = (up - down) / Double(2 * eps)
            #expect(abs(numeric - Double(result.dHeadWeight[i])) < 2e-2 * max(1e-2, abs(numeric)), "head weight \(i)")
        }
    }

    @Test func ppoPolicyLoss() throws {
        let trainer = TrainableTransformer(weights: GradientCheckTests.model(shared: true))
        let seqs = GradientCheckTests.sequences
        let mask = seqs.map { s in (0..<(s.count - 1)).map { $0 >= 2 ? Float(1) : 0 } }
        // Old log-probabilities near the current ones (some ratios inside the clip range, some outside).
        var rng = SeededGenerator(seed: 4)
        let current = try trainer.tokenLogProbs(sequences: seqs)
        let old = current.map { $0.map { $0 + Float(rng.nextGaussian() * 0.3) } }
        let advantages = seqs.map { s in (0..<(s.count - 1)).map { _ in Float(rng.nextGaussian()) } }
        let stats = try trainer.ppoPolicyLoss(sequences: seqs, responseMask: mask, oldLogProbs: old, advantages: advantages)
        #expect(stats.clipFraction > 0 && stats.clipFraction < 1)
        let analytic = FloatBuffer(count: trainer.gradients.count)
        analytic.set(trainer.gradients.array(0..<trainer.gradients.count), at: 0)
        try GradientCheckTests.check(trainer, analytic: analytic, eps: 1e-3) {
            try trainer.ppoPolicyLoss(sequences: seqs, responseMask: mask, oldLogProbs: old, advantages: advantages).loss
        }
    }

    @Test func clippedValueLoss() throws {
        let trainer = TrainableTransformer(weights: GradientCheckTests.model(shared: false))
        let head = ScalarHead(dim: 32, seed: 2, std: 0.5)
        let seqs = GradientCheckTests.sequences
        let mask = seqs.map { s in (0..<(s.count - 1)).map { $0 >= 1 ? Float(1) : 0 } }
        var rng = SeededGenerator(seed: 6)
        let returns = seqs.map { s in (0..<(s.count - 1)).map { _ in Float(rng.nextGaussian()) } }
        let zero = seqs.map { s in [Float](repeating: 0, count: s.count - 1) }
        let first = try trainer.valueLoss(sequences: seqs, responseMask: mask, oldValues: zero, returns: returns, head: head)
        // Old values near the current ones, so that some are clipped.
        let old = first.values.map { $0.map { $0 + Float(rng.nextGaussian() * 0.3) } }
        trainer.zeroGradients()
        let result = try trainer.valueLoss(sequences: seqs, responseMask: mask, oldValues: old, returns: returns, head: head)
        #expect(result.clipFraction > 0 && result.clipFraction < 1)
        let analytic = FloatBuffer(count: trainer.gradients.count)
        analytic.set(trainer.gradients.array(0..<trainer.gradients.count), at: 0)
        try GradientCheckTests.check(trainer, analytic: analytic, eps: 1e-3) {
            try trainer.valueLoss(sequences: seqs, responseMask: mask, oldValues: old, returns: returns, head: head).loss
        }
    }
}
