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
    /// With a bfloat16 cache, the reference reads the keys and values rounded to bfloat16.
    @Test(arguments: [8, 16, 24, 48, 64, 80, 128], KVCache.Precision.allCases)
    func attentionMatchesNaive(headSize hs: Int, cache: KVCache.Precision) {
        let count = 37, nHeads = 4, groupSize = 2, stride = 2 * hs + 5, scoreStride = count + 3
        let q = randomArray(nHeads * hs, seed: 3)
        var keys = randomArray(count * stride, seed: 4), values = randomArray(count * stride, seed: 5)
        let keys16 = keys.map(Kernels.bfloat16), values16 = values.map(Kernels.bfloat16)
        if cache == .bfloat16 {
            keys = keys16.map { Kernels.float(bfloat16: $0) }
            values = values16.map { Kernels.float(bfloat16: $0) }
        }
        let out = FloatBuffer(count: nHeads * hs), scores = FloatBuffer(count: nHeads * scoreStride)
        out.baseAddress.update(repeating: 7, count: nHeads * hs)
        let scale = 1 / Float(hs).squareRoot()
        let heads = 1..<nHeads
        func attend<E: KVElement>(_ keys: [E], _ values: [E]) {
            q.withUnsafeBufferPointer { q in
                keys.withUnsafeBufferPointer { k in
                    values.withUnsafeBufferPointer { v in
                        Kernels.attend(out: out.baseAddress, query: q.baseAddress!, keys: k.baseAddress!, values: v.baseAddress!,
                                       rowStride: stride, count: count, heads: heads, groupSize: groupSize, headSize: hs,
                                       scale: scale, scores: scores.baseAddress, scoreStride: scoreStride)
                    }
                }
            }
        }
        if cache == .bfloat16 { attend(keys16, values16) } else { attend(keys, values) }
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

/// The bfloat16 pair-panel kernels (`CKernels`): against float64 sums of the rounded operands, hardware
/// against the portable fallback bit for bit, and independent of the feature split.
@Suite struct BFloat16PanelKernelTests {
    func randomArray(_ n: Int, seed: UInt64) -> [Float] {
        var rng = SeededGenerator(seed: seed)
        return (0..<n).map { _ in Float(rng.nextGaussian()) }
    }

    /// `C (m, n)` by the pair-panel kernel on pair words (or with `rounded`, the FMA kernel on rows rounded
    /// to bfloat16 values), features split at `cut` (a multiple of 16) into two calls.
    func product(_ x: [Float], _ w: [Float], m: Int, n: Int, k: Int, cut: Int, accumulate: Bool, portable: Bool,
                 rounded: Bool = false) -> [Float] {
        let packed = AlignedBuffer<UInt16>(count: Kernels.pairPanelCount(n: n, k: k))
        let pairs = AlignedBuffer<UInt32>(count: Kernels.pairWords(rows: m, k: k))
        let roundedRows = FloatBuffer(count: m * k)
        let out = FloatBuffer(count: m * n)
        for i in 0..<(m * n) { out.baseAddress[i] = accumulate ? 1 : .nan }
        w.withUnsafeBufferPointer { Kernels.packPairPanels(packed.baseAddress, $0.baseAddress!, n: n, k: k) }
        x.withUnsafeBufferPointer {
            Kernels.packPairRows(pairs.baseAddress, $0.baseAddress!, m: m, k: k)
            Kernels.roundToBFloat16(roundedRows.baseAddress, $0.baseAddress!, m * k)
        }
        for range in [0..<min(cut, n), min(cut, n)..<n] where !range.isEmpty {
            if rounded {
                Kernels.matmulPairPanels(out.baseAddress, ldc: n, rounded: roundedRows.baseAddress, m: m, packed.baseAddress, k: k,
                                         features: range, accumulate: accumulate, portable: portable)
            } else {
                Kernels.matmulPairPanels(out.baseAddress, ldc: n, pairs.baseAddress, m: m, packed.baseAddress, k: k,
                                         features: range, accumulate: accumulate, portable: portable)
            }
        }
        return Array(UnsafeBufferPointer(start: out.baseAddress, count: m * n))
    }

    /// Shapes with odd k, partial panels, lone rows, partial 4-row tiles and 1-3 panel tails.
    @Test(arguments: [(1, 7, 5, 0, false), (3, 33, 17, 16, false), (4, 64, 48, 32, false), (5, 100, 96, 64, false),
                      (16, 288, 288, 144, false), (9, 70, 131, 48, true), (1, 130, 64, 64, true), (13, 200, 33, 96, false),
                      (16, 300, 77, 256, true), (70, 130, 40, 64, false)])
    func pairPanelProductMatchesRoundedFloat64(m: Int, n: Int, k: Int, cut: Int, accumulate: Bool) {
        let x = randomArray(m * k, seed: 11), w = randomArray(n * k, seed: 12)
        let fast = product(x, w, m: m, n: n, k: k, cut: cut, accumulate: accumulate, portable: false)
        let portable = product(x, w, m: m, n: n, k: k, cut: cut, accumulate: accumulate, portable: true)
        // Each sum adds exact products of bfloat16 values in float32 in the same order, odd element
        // before even: the instruction, the FMA kernel and the fallbacks agree to the bit.
        #expect(fast.map(\.bitPattern) == portable.map(\.bitPattern), "hardware \(Kernels.bfloat16Hardware)")
        for portableFMA in [false, true] {
            let fma = product(x, w, m: m, n: n, k: k, cut: cut, accumulate: accumulate, portable: portableFMA, rounded: true)
            #expect(fma.map(\.bitPattern) == portable.map(\.bitPattern), "FMA kernel, portable \(portableFMA)")
        }
        // One split of the features or another gives the same bits.
        #expect(product(x, w, m: m, n: n, k: k, cut: 0, accumulate: accumulate, portable: false).map(\.bitPattern)
                == fast.map(\.bitPattern))
        let round = { (v: Float) in Double(Kernels.float(bfloat16: Kernels.bfloat16(v))) }
        for b in 0..<m {
            for f in 0..<n {
                let expected = (0..<k).reduce(accumulate ? 1.0 : 0.0) { $0 + round(x[b * k + $1]) * round(w[f * k + $1]) }
                #expect(abs(Double(fast[b * n + f]) - expected) < 1e-5 * Double(k), "row \(b), feature \(f)")
            }
        }
    }

    /// The vector rounding to bfloat16 values is the scalar one, element for element: ties both ways,
    /// infinities, NaNs, tiny and huge values, a tail shorter than a vector, in place too.
    @Test func roundingToBFloat16MatchesTheScalarForm() {
        var rng = SeededGenerator(seed: 5)
        var x: [Float] = [0, -0, 1, -1, .infinity, -.infinity, .nan, -.nan, .leastNonzeroMagnitude, .greatestFiniteMagnitude,
                          Float(bitPattern: 0x3F80_8000), Float(bitPattern: 0x3F81_8000), Float(bitPattern: 0x7F7F_FFFF),
                          Float(bitPattern: 0x7F80_0001), Float(bitPattern: 0xFFC0_1234)]
        x += (0..<1000).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) }
        x += (0..<37).map { _ in Float(rng.nextGaussian()) }
        var out = [Float](repeating: 7, count: x.count)
        x.withUnsafeBufferPointer { xs in
            out.withUnsafeMutableBufferPointer { Kernels.roundToBFloat16($0.baseAddress!, xs.baseAddress!, xs.count) }
        }
        var inPlace = x
        inPlace.withUnsafeMutableBufferPointer { Kernels.roundToBFloat16($0.baseAddress!, UnsafePointer($0.baseAddress!), $0.count) }
        for (i, v) in x.enumerated() {
            let expected = Kernels.float(bfloat16: Kernels.bfloat16(v)).bitPattern
            #expect(out[i].bitPattern == expected, "element \(i): \(v.bitPattern)")
            #expect(inPlace[i].bitPattern == expected, "element \(i) in place")
        }
    }

    /// A row's results do not depend on the other rows of the call (the batched decode's promise).
    @Test func aRowGetsTheSameBitsInAnyCompany() {
        let n = 150, k = 96
        let x = randomArray(7 * k, seed: 21), w = randomArray(n * k, seed: 22)
        for rounded in [false, true] {
            let all = product(x, w, m: 7, n: n, k: k, cut: 64, accumulate: false, portable: false, rounded: rounded)
            for b in 0..<7 {
                let alone = product(Array(x[(b * k)..<((b + 1) * k)]), w, m: 1, n: n, k: k, cut: 64, accumulate: false,
                                    portable: false, rounded: rounded)
                #expect(alone.map(\.bitPattern) == all[(b * n)..<((b + 1) * n)].map(\.bitPattern), "row \(b), rounded \(rounded)")
            }
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
