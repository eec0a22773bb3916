import Foundation
import Testing
import TestKit
@testable import LlamaCore
@testable import LlamaTraining

/// AdamW's vectorized update: the same bits as the scalar formula for every element, whatever the
/// group's ranges, tails and thread split.
@Suite struct AdamWTests {
    /// PyTorch's AdamW for one element, each operation rounded to float32 (the definition the kernel keeps).
    static func reference(p: inout Float, m: inout Float, v: inout Float, g: Float, scale: Float, s: AdamWSettings, lr: Float, step: Int) {
        let correction1 = 1 - pow(s.beta1, Float(step)), correction2 = 1 - pow(s.beta2, Float(step))
        let decay = 1 - lr * s.weightDecay
        let grad = g * scale
        m = s.beta1 * m + (1 - s.beta1) * grad
        v = s.beta2 * v + (1 - s.beta2) * grad * grad
        let mHat = m / correction1, vHat = v / correction2
        p = p * decay - lr * mHat / (vHat.squareRoot() + s.eps)
    }

    @Test(arguments: [1, 3])
    func theUpdateIsTheScalarFormulaBitForBit(threads: Int) {
        let pool = ComputePool(threads: threads)
        defer { pool.shutdown() }
        let count = 5000
        let values = FloatBuffer(count: count), gradients = FloatBuffer(count: count)
        var rng = SeededGenerator(seed: 4)
        for i in 0..<count {
            values.baseAddress[i] = Float(rng.nextGaussian())
            // Magnitudes from 1e-4 to 100 and some zeros; with one large gradient below, clipping scales them all.
            gradients.baseAddress[i] = i % 97 == 0 ? 0 : Float(rng.nextGaussian() * pow(10, Double(i % 7) - 4))
        }
        gradients.baseAddress[17] = 40
        // Ranges with tails of 1-15 elements and a gap the optimizer must not touch.
        let ranges = [0..<1, 3..<20, 21..<1040, 1100..<4999]
        let group = ParameterGroup(values: values, gradients: gradients, ranges: ranges)
        let settings = AdamWSettings()
        let optimizer = AdamW(settings: settings, groupSizes: [count])
        var p = values.array(0..<count), m = [Float](repeating: 0, count: count), v = m
        for step in 1...3 {
            let norm = optimizer.update([group], lr: 3e-3, pool: pool)
            let scale = Float(min(1, Double(settings.clipNorm!) / (norm + 1e-6)))
            #expect(scale < 1, "clipping is exercised")
            for range in ranges {
                for i in range {
                    AdamWTests.reference(p: &p[i], m: &m[i], v: &v[i], g: gradients.baseAddress[i], scale: scale, s: settings, lr: 3e-3, step: step)
                }
            }
            for (name, buffer, expected) in [("values", values, p), ("first moments", optimizer.firstMoments[0], m),
                                             ("second moments", optimizer.secondMoments[0], v)] {
                let got = buffer.array(0..<count)
                let mismatch = (0..<count).first { got[$0].bitPattern != expected[$0].bitPattern }
                #expect(mismatch == nil, "\(name) after step \(step) differ first at \(mismatch ?? -1): \(mismatch.map { got[$0] } ?? 0) vs \(mismatch.map { expected[$0] } ?? 0)")
            }
        }
    }

    /// A range stored offset from the parameter a framework decays (Gemma's norm scales, `1 + weight`) decays
    /// toward its center: the stored value moves as PyTorch's `weight` would, offset by the center, and a
    /// Gemma model's groups give its norms the center 1 and every other tensor 0.
    @Test func weightDecayPullsTowardTheRangesCenter() throws {
        let count = 40
        let values = FloatBuffer(count: count), gradients = FloatBuffer(count: count)
        var rng = SeededGenerator(seed: 9)
        for i in 0..<count {
            values.baseAddress[i] = 1 + Float(rng.nextGaussian()) * 0.3
            gradients.baseAddress[i] = Float(rng.nextGaussian()) * 0.01
        }
        let settings = AdamWSettings()
        // The same values offset by -1 (what PyTorch holds) and decayed toward 0.
        let shifted = FloatBuffer(count: count)
        for i in 0..<count { shifted.baseAddress[i] = values.baseAddress[i] - 1 }
        let optimizer = AdamW(settings: settings, groupSizes: [count]), plain = AdamW(settings: settings, groupSizes: [count])
        for _ in 1...3 {
            optimizer.update([ParameterGroup(values: values, gradients: gradients, ranges: [0..<count], decayCenters: [1])], lr: 0.05)
            plain.update([ParameterGroup(values: shifted, gradients: gradients, ranges: [0..<count])], lr: 0.05)
        }
        let worst = (0..<count).map { abs(Double(values.baseAddress[$0] - 1) - Double(shifted.baseAddress[$0])) }.max()!
        #expect(worst < 1e-6, "the offset values moved apart by \(worst)")
        // Without the center the stored values would drift by lr * wd per step each: 0.015 over three steps.
        let (weights, _) = try HuggingFaceCheckpoint.read(directory: Fixtures.gemma3)
        let group = ParameterGroup(model: TrainableTransformer(weights: weights))
        let centers = Dictionary(uniqueKeysWithValues: zip(weights.layout.trainableTensors, group.decayCenters))
        #expect(centers.allSatisfy { $0.key.isNormWeight ? $0.value == 1 : $0.value == 0 })
        let (llama, _) = try HuggingFaceCheckpoint.read(directory: Fixtures.qwen3)
        #expect(ParameterGroup(model: TrainableTransformer(weights: llama)).decayCenters.allSatisfy { $0 == 0 })
    }
}
