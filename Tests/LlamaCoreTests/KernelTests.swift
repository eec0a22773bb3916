import Foundation
import Testing
@testable import LlamaCore

/// The SIMD kernels against plain loops, on awkward sizes (tails, partial tiles, odd splits).
@Suite struct KernelTests {
    func randomArray(_ n: Int, seed: UInt64) -> [Float] {
        var rng = SeededGenerator(seed: seed)
        return (0..<n).map { _ in Float(rng.nextGaussian()) }
    }

    /// Sizes with whole and partial 4-row tiles and 64-feature tiles; with accumulation, the products are
    /// added to outputs that hold 1. Every split of the features gives the same bits: a feature's sum
    /// does not depend on whether a 64-feature tile or a single-panel tile computed it.
    @Test(arguments: [(1, 7, 5, false), (3, 33, 17, false), (4, 64, 48, false), (5, 100, 96, false), (16, 288, 288, false),
                      (9, 70, 130, false), (18, 70, 40, false), (35, 45, 19, false), (16, 50, 33, true), (21, 64, 30, true)])
    func panelProductMatchesNaive(m: Int, n: Int, k: Int, accumulate: Bool) {
        let x = randomArray(m * k, seed: 1), w = randomArray(n * k, seed: 2)
        let packed = FloatBuffer(count: Kernels.panelCount(n: n, k: k))
        let out = FloatBuffer(count: m * n)
        w.withUnsafeBufferPointer { w in Kernels.packPanels(packed.baseAddress, w.baseAddress!, n: n, k: k) }
        // Split the features the way two and three threads do.
        var unsplit: [Float] = []
        for threads in [1, 2, 3] {
            for i in 0..<(m * n) { out.baseAddress[i] = accumulate ? 1 : .nan }
            for t in 0..<threads {
                let range = ComputePool.share(of: n, thread: t, threads: threads, grain: 16)
                if range.isEmpty { continue }
                x.withUnsafeBufferPointer { x in
                    Kernels.matmulPanels(out.baseAddress, ldc: n, x.baseAddress!, m: m, packed.baseAddress, n: n, k: k, features: range,
                                         accumulate: accumulate)
                }
            }
            var worst: Float = 0
            for b in 0..<m {
                for f in 0..<n {
                    var s: Double = 0
                    for i in 0..<k { s += Double(x[b * k + i]) * Double(w[f * k + i]) }
                    if accumulate { s += 1 }
                    let error = abs(out.baseAddress[b * n + f] - Float(s))
                    worst = error.isNaN ? .infinity : max(worst, error)
                }
            }
            #expect(worst < 1e-3, "m \(m) n \(n) k \(k) threads \(threads): \(worst)")
            let result = Array(UnsafeBufferPointer(start: out.baseAddress, count: m * n))
            if threads == 1 { unsplit = result } else { #expect(result == unsplit, "m \(m) n \(n) k \(k) threads \(threads)") }
        }
    }

    /// Grouped-query attention over rows with padding past the heads: four query heads read two
    /// key/value heads; a call for heads 1..<4 (which crosses a group boundary) matches a
    /// double-precision reference for each of them and leaves head 0 untouched.
    @Test(arguments: [8, 16, 24, 48, 64, 80, 128])
    func attentionMatchesNaive(headSize hs: Int) {
        let count = 37, nHeads = 4, groupSize = 2, stride = 2 * hs + 5, scoreStride = count + 3
        let q = randomArray(nHeads * hs, seed: 3)
        let keys = randomArray(count * stride, seed: 4), values = randomArray(count * stride, seed: 5)
        let out = FloatBuffer(count: nHeads * hs), scores = FloatBuffer(count: nHeads * scoreStride)
        out.baseAddress.update(repeating: 7, count: nHeads * hs)
        let scale = 1 / Float(hs).squareRoot()
        let heads = 1..<nHeads
        q.withUnsafeBufferPointer { q in
            keys.withUnsafeBufferPointer { k in
                values.withUnsafeBufferPointer { v in
                    Kernels.attend(out: out.baseAddress, query: q.baseAddress!, keys: k.baseAddress!, values: v.baseAddress!,
                                   rowStride: stride, count: count, heads: heads, groupSize: groupSize, headSize: hs,
                                   scale: scale, scores: scores.baseAddress, scoreStride: scoreStride)
                }
            }
        }
        for d in 0..<hs { #expect(out.baseAddress[d] == 7, "head 0 was not asked for") }
        for h in heads {
            let kv = h / groupSize * hs
            var logits = (0..<count).map { t in
                (0..<hs).reduce(0.0) { $0 + Double(q[h * hs + $1]) * Double(keys[t * stride + kv + $1]) } * Double(scale)
            }
            let top = logits.max()!
            logits = logits.map { Foundation.exp($0 - top) }
            let z = logits.reduce(0, +)
            for d in 0..<hs {
                let expected = (0..<count).reduce(0.0) { $0 + logits[$1] / z * Double(values[$1 * stride + kv + d]) }
                #expect(abs(Double(out.baseAddress[h * hs + d]) - expected) < 1e-5, "head size \(hs), head \(h), element \(d)")
            }
        }
    }

    @Test(arguments: [32, 64, 288])
    func bfloat16MatvecMatchesRoundedWeights(cols: Int) {
        let rows = 19
        let w = randomArray(rows * cols, seed: 6), x = randomArray(cols, seed: 7)
        let w16 = w.map(Kernels.bfloat16)
        let xPerm = FloatBuffer(count: cols), out = FloatBuffer(count: rows)
        x.withUnsafeBufferPointer { x in Kernels.deinterleaveForBF16(xPerm.baseAddress, x.baseAddress!, cols: cols) }
        w16.withUnsafeBufferPointer { w16 in
            Kernels.matvecBF16(out.baseAddress, w16.baseAddress!, xPerm.baseAddress, rows: 0..<rows, cols: cols)
        }
        for r in 0..<rows {
            let expected = (0..<cols).reduce(0.0) { $0 + Double(Kernels.float(bfloat16: w16[r * cols + $1])) * Double(x[$1]) }
            #expect(abs(Double(out.baseAddress[r]) - expected) < 1e-4)
        }
    }
}

@Suite struct CRC32CTests {
    @Test func knownVectorsAndSplitting() {
        // The standard check value of CRC-32C.
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([]) == 0)
        // Feeding in pieces (any alignment) gives the same value as at once.
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        for cut in [0, 1, 3, 8, 13, 999] {
            var crc = CRC32C()
            crc.update(Array(data[..<cut]))
            crc.update(Array(data[cut...]))
            #expect(crc.value == CRC32C.checksum(data))
            // And the checksums of the two pieces combine into it.
            let combined = CRC32C.combine(CRC32C.checksum(Array(data[..<cut])), CRC32C.checksum(Array(data[cut...])),
                                          lengthOfB: data.count - cut)
            #expect(combined == CRC32C.checksum(data))
        }
    }

    @Test func hardwareAndTablePathsAgree() {
        var rng = SeededGenerator(seed: 5)
        let data = (0..<4099).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        data.withUnsafeBytes { raw in
            for (start, length) in [(0, 0), (0, 1), (1, 7), (3, 8), (5, 31), (7, 33), (0, 4099), (13, 4000)] {
                var table = CRC32C()
                table.updateWithTables(raw.baseAddress! + start, length)
                var fast = CRC32C()
                fast.update(UnsafeRawBufferPointer(rebasing: raw[start ..< start + length]))
                #expect(fast.value == table.value, "bytes \(start)..<\(start + length)")
            }
        }
    }
}
