import Foundation
import Testing
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
}
