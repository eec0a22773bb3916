import Foundation
import Testing
@testable import LlamaCore
@testable import LlamaTraining

/// Training's matrix products in bfloat16: each product against float64 sums of the rounded operands
/// (transposed operands included), and whole steps close to float32's.
@Suite struct BFloat16TrainingTests {
    func randomArray(_ n: Int, seed: UInt64) -> [Float] {
        var rng = SeededGenerator(seed: seed)
        return (0..<n).map { _ in Float(rng.nextGaussian()) }
    }

    func round(_ v: Float) -> Double { Double(Kernels.float(bfloat16: Kernels.bfloat16(v))) }

    /// forward, backwardInput and backwardWeight on awkward shapes (odd sizes, partial panels and
    /// tiles, more rows than a block), each element within float32 rounding of the float64 sum of the
    /// bfloat16-rounded operands; with accumulation, added to what was there.
    /// (96, 40, 70): 48 pairs a row, so whole 16-pair tiles of the weight gradient's transposed left
    /// operand fill whole cache lines (the packing's streaming stores) beside a partial tile of rows.
    /// Both routes: pair panels (`vdpbf16ps` or its portable fallback) and rounded float32 through sgemm.
    @Test(arguments: [(1, 7, 5), (33, 19, 40), (70, 130, 33), (130, 48, 96), (96, 40, 70)],
          [(1, MatrixProducts.BFloat16Route.pairPanels), (2, .pairPanels), (1, .roundedFloat32), (2, .roundedFloat32)])
    func productsMatchRoundedFloat64(shape: (Int, Int, Int), setting: (threads: Int, route: MatrixProducts.BFloat16Route)) {
        let (n, inF, outF) = shape
        let pool = ComputePool(threads: setting.threads)
        defer { pool.shutdown() }
        let products = MatrixProducts(pool: pool, precision: .bfloat16, route: setting.route)
        let x = randomArray(n * inF, seed: 1), w = randomArray(outF * inF, seed: 2), dy = randomArray(n * outF, seed: 3)
        let tolerance = { (terms: Int) in 2e-6 * Double(terms) + 1e-5 }
        // Y = X W^T, accumulated onto ones.
        var y = [Float](repeating: 1, count: n * outF)
        y.withUnsafeMutableBufferPointer { y in
            products.forward(y.baseAddress!, x, w, n: n, inFeatures: inF, outFeatures: outF, accumulate: true)
        }
        for r in 0..<n {
            for f in 0..<outF {
                let expected = 1 + (0..<inF).reduce(0.0) { $0 + round(x[r * inF + $1]) * round(w[f * inF + $1]) }
                #expect(abs(Double(y[r * outF + f]) - expected) < tolerance(inF), "forward (\(r), \(f))")
            }
        }
        // dX = dY W.
        var dx = [Float](repeating: .nan, count: n * inF)
        dx.withUnsafeMutableBufferPointer { dx in
            products.backwardInput(dx.baseAddress!, dy, w, n: n, inFeatures: inF, outFeatures: outF, accumulate: false)
        }
        for r in 0..<n {
            for i in 0..<inF {
                let expected = (0..<outF).reduce(0.0) { $0 + round(dy[r * outF + $1]) * round(w[$1 * inF + i]) }
                #expect(abs(Double(dx[r * inF + i]) - expected) < tolerance(outF), "backwardInput (\(r), \(i))")
            }
        }
        // dW += dY^T X, onto twos.
        var dw = [Float](repeating: 2, count: outF * inF)
        dw.withUnsafeMutableBufferPointer { dw in
            products.backwardWeight(dw.baseAddress!, dy, x, n: n, inFeatures: inF, outFeatures: outF)
        }
        for o in 0..<outF {
            for i in 0..<inF {
                let expected = 2 + (0..<n).reduce(0.0) { $0 + round(dy[$1 * outF + o]) * round(x[$1 * inF + i]) }
                #expect(abs(Double(dw[o * inF + i]) - expected) < tolerance(n), "backwardWeight (\(o), \(i))")
            }
        }
    }

    /// A cross-entropy step of the shipped chat model in bfloat16: the loss within 1% of float32's and the
    /// gradient pointing the same way (cosine above 0.99, norm within 5%).
    @Test func aBFloat16StepStaysCloseToFloat32() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../models/chat-world/sft.bin").standardized.path
        let weights = try Checkpoint.read(path: path).weights
        let sequences: [[Int32]] = (0..<4).map { (s: Int) -> [Int32] in
            [Int32(1)] + (0..<40).map { (t: Int) -> Int32 in Int32(3 + (t * 7 + s * 13) % 250) }
        }
        let mask = sequences.map { [Float](repeating: 1, count: $0.count - 1) }
        let f32 = TrainableTransformer(weights: weights.copy())
        let bf16 = TrainableTransformer(weights: weights.copy(), precision: .bfloat16)
        #expect(bf16.precision == .bfloat16)
        let a = try f32.maskedCrossEntropy(sequences: sequences, mask: mask)
        let b = try bf16.maskedCrossEntropy(sequences: sequences, mask: mask)
        #expect(abs(a - b) < 0.01 * abs(a), "loss \(a) vs \(b)")
        let g = f32.gradients.array(0..<f32.gradients.count).map(Double.init), h = bf16.gradients.array(0..<bf16.gradients.count).map(Double.init)
        let dot = zip(g, h).reduce(0) { $0 + $1.0 * $1.1 }
        let ng = g.reduce(0) { $0 + $1 * $1 }.squareRoot(), nh = h.reduce(0) { $0 + $1 * $1 }.squareRoot()
        #expect(dot / (ng * nh) > 0.99, "cosine \(dot / (ng * nh))")
        #expect(abs(ng - nh) < 0.05 * ng, "norms \(ng) vs \(nh)")
        #expect(g != h, "the bfloat16 products were not used")
        // The packing buffers grew to what the memory estimate counts for these tokens.
        let tokens = sequences.reduce(0) { $0 + $1.count - 1 }
        #expect(bf16.products.scratchBytes == MatrixProducts.bfloat16ScratchBytes(weights.config, tokens: tokens))
    }
}
