import CKernels
import Testing
@testable import LlamaCore

/// `rlhf_small_gemm_nn` (attention's products and the projections of a scoring forward) against float64
/// loops: whole and partial 8-row tiles, each column tiling (48, 32 and 16 wide remainders, and columns
/// past the last multiple of 16), leading dimensions wider than the operands, with and without
/// accumulation.
@Suite struct SmallProductTests {
    @Test(arguments: [(1, 16, 1, false), (3, 32, 5, false), (8, 48, 48, false), (13, 64, 16, false), (8, 80, 48, true),
                      (17, 96, 7, true), (5, 256, 48, false), (9, 16, 256, true),
                      (3, 5, 9, false), (10, 41, 12, true), (8, 77, 20, false), (4, 130, 33, true)])
    func smallProductMatchesFloat64(m: Int, n: Int, k: Int, accumulate: Bool) {
        var rng = SeededGenerator(seed: UInt64(m * 1000 + n * 10 + k))
        let lda = k + 3, ldb = n + 16, ldc = n + 5
        let a = (0..<(m * lda)).map { _ in Float(rng.nextGaussian()) }
        let b = (0..<(k * ldb)).map { _ in Float(rng.nextGaussian()) }
        var c = (0..<(m * ldc)).map { _ in Float(rng.nextGaussian()) }
        let before = c, alpha: Float = 0.375
        a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                c.withUnsafeMutableBufferPointer { c in
                    rlhf_small_gemm_nn(c.baseAddress!, ldc, a.baseAddress!, lda, b.baseAddress!, ldb, m, n, k, alpha, accumulate ? 1 : 0)
                }
            }
        }
        for i in 0..<m {
            for j in 0..<ldc {
                guard j < n else {
                    #expect(c[i * ldc + j] == before[i * ldc + j], "column \(j) past n was written")
                    continue
                }
                var sum = 0.0, magnitude = 0.0
                for p in 0..<k {
                    sum += Double(a[i * lda + p]) * Double(b[p * ldb + j])
                    magnitude += abs(Double(a[i * lda + p]) * Double(b[p * ldb + j]))
                }
                var expected = Double(alpha) * sum
                if accumulate { expected += Double(before[i * ldc + j]) }
                // A float32 sum of k fused products, scaled and added once: at most k + 2 roundings.
                let tolerance = Double(Float.ulpOfOne) * (Double(k + 2) * Double(alpha) * magnitude + abs(expected))
                #expect(abs(Double(c[i * ldc + j]) - expected) <= tolerance, "row \(i), column \(j)")
            }
        }
    }
}
