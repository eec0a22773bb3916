#if canImport(Glibc)
import Glibc
#endif

/// How tokens are drawn from the logits.
public struct SamplingSettings: Codable, Sendable, Equatable {
    /// Softmax temperature; 0 means greedy (argmax).
    public var temperature: Float
    /// Nucleus sampling: keep the most likely tokens whose probabilities add up to `topP` (1 = off).
    public var topP: Float
    /// Keep only the `topK` most likely tokens (0 = off).
    public var topK: Int

    /// Settings with the given knobs.
    public init(temperature: Float = 1, topP: Float = 1, topK: Int = 0) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
    }

    /// Plain sampling at temperature 1 from the full distribution.
    public static let `default` = SamplingSettings()
    /// Argmax decoding.
    public static let greedy = SamplingSettings(temperature: 0)

    /// Refuses out-of-range settings with a message naming the field.
    public func validate() throws {
        guard temperature >= 0, temperature.isFinite else {
            throw LlamaError.invalidInput("temperature must be a finite number >= 0, got \(temperature)")
        }
        guard topP > 0, topP <= 1 else { throw LlamaError.invalidInput("top_p must be in (0, 1], got \(topP)") }
        guard topK >= 0 else { throw LlamaError.invalidInput("top_k must be >= 0, got \(topK)") }
    }
}

/// One drawn token with its log-probabilities.
public struct SampledToken: Sendable, Equatable, Codable {
    /// The token id.
    public var id: Int32
    /// `log p(id)` under the model's distribution at temperature 1 (what PPO's ratios use).
    public var logProb: Float
    /// `log q(id)` under the distribution actually sampled from (temperature, top-k, top-p applied;
    /// 0 for greedy).
    public var samplingLogProb: Float
}

/// Draws tokens from logits. Reuses its scratch buffers; one sampler per decoding thread.
public struct Sampler {
    /// The settings every draw uses.
    public let settings: SamplingSettings
    private var probs: [Float] = []
    /// Scratch of the truncated draw: candidates' sort keys, the sort's buffer and bucket counts, and
    /// the running sums.
    private var keys: [UInt64] = []
    private var sortScratch: [UInt64] = []
    private var bucketCounts: [Int32] = []
    private var prefix: [Float] = []

    /// A sampler with validated settings.
    public init(settings: SamplingSettings) throws {
        try settings.validate()
        self.settings = settings
    }

    /// Draws one token from `logits (V)` with `rng`. Ties in greedy mode go to the lowest id.
    public mutating func sample(_ logits: UnsafeBufferPointer<Float>, rng: inout SeededGenerator) -> SampledToken {
        let n = logits.count
        let base = logits.baseAddress!
        if probs.count < n { probs = [Float](repeating: 0, count: n) }
        let maxValue = Kernels.maximum(base, n)
        let temperature = settings.temperature
        var scratch: [Float] = []
        swap(&scratch, &probs)
        defer { swap(&scratch, &probs) }
        return scratch.withUnsafeMutableBufferPointer { probsBuffer -> SampledToken in
            let p = probsBuffer.baseAddress!
            // log-partition at temperature 1, for the model log-probability.
            let sum1 = Kernels.expShifted(p, base, n, shift: maxValue, scale: 1)
            let logZ1 = maxValue + logf(sum1)
            if temperature == 0 {
                var best = 0
                for i in 1..<n where logits[i] > logits[best] { best = i }
                return SampledToken(id: Int32(best), logProb: logits[best] - logZ1, samplingLogProb: 0)
            }
            let sumT = temperature == 1 ? sum1 : Kernels.expShifted(p, base, n, shift: maxValue, scale: 1 / temperature)
            let u = rng.nextUnitFloat()
            let topK = settings.topK > 0 && settings.topK < n ? settings.topK : n
            let id: Int, q: Float
            if topK == n && settings.topP >= 1 {
                (id, q) = Sampler.drawFull(p, n, total: sumT, u: u)
            } else {
                (id, q) = drawTruncated(p, n, total: sumT, topK: topK, topP: settings.topP, u: u)
            }
            return SampledToken(id: Int32(id), logProb: logits[id] - logZ1, samplingLogProb: logf(q))
        }
    }

    /// Draws one token per logit row: row `r` belongs to sequence `sequences[r]`, which samples with
    /// `samplers[sequences[r]]` and `rngs[sequences[r]]`. Sequences are independent, so rows are drawn
    /// in parallel on `pool`; the result does not depend on the pool's size.
    public static func sample(_ logits: Logits, sequences: [Int], samplers: inout [Sampler],
                              rngs: inout [SeededGenerator], pool: ComputePool) -> [SampledToken] {
        precondition(sequences.count == logits.rows, "one sequence per logit row")
        var drawn = [SampledToken](repeating: SampledToken(id: 0, logProb: 0, samplingLogProb: 0), count: logits.rows)
        drawn.withUnsafeMutableBufferPointer { drawn in
            samplers.withUnsafeMutableBufferPointer { samplers in
                rngs.withUnsafeMutableBufferPointer { rngs in
                    pool.parallelFor(sequences.count) { range, _ in
                        for row in range {
                            let i = sequences[row]
                            drawn[row] = logits.withRow(row) { samplers[i].sample($0, rng: &rngs[i]) }
                        }
                    }
                }
            }
        }
        return drawn
    }

    /// Inverse-CDF draw over unnormalised weights `p` (sum `total`); returns the id and its probability.
    private static func drawFull(_ p: UnsafeMutablePointer<Float>, _ n: Int, total: Float, u: Float) -> (Int, Float) {
        let target = u * total
        var cdf: Float = 0
        var i = 0
        // Skip whole blocks of 16 while the target lies beyond them, then walk the block.
        while i + 16 <= n {
            let block = Kernels.horizontalSum(Kernels.load(p, i))
            if cdf + block > target { break }
            cdf += block
            i += 16
        }
        while i < n {
            cdf += p[i]
            if target < cdf { return (i, p[i] / total) }
            i += 1
        }
        var last = n - 1
        while last > 0 && p[last] == 0 { last -= 1 }
        return (last, p[last] / total)
    }

    /// Draw from the top-k / top-p truncation of `p`: candidates sorted by weight (ties by id), cut at
    /// `topK` and at cumulative mass `topP` (summed in that order), renormalised; the inverse-CDF walk
    /// goes in the same order.
    ///
    /// Sorting is the cost: a flat distribution (a young model, a high temperature) leaves tens of
    /// thousands of candidates. They are sorted as 64-bit keys (`~weight bits` then id, so ascending
    /// keys are descending weights with ties by ascending id) by one counting pass over buckets of the
    /// key range and an insertion sort within each bucket, in linear expected time. The running sums
    /// are kept, so the draw is a binary search instead of a second walk. Every sum is taken in the
    /// same order as a full comparison sort would give, so the samples are those of that sort.
    private mutating func drawTruncated(_ p: UnsafeMutablePointer<Float>, _ n: Int, total: Float, topK: Int,
                                        topP: Float, u: Float) -> (Int, Float) {
        // Tokens below this weight cannot be in a nucleus of mass topP (llama2.c's observation), so they
        // are not sorted.
        let floor = topP < 1 ? (1 - topP) / Float(n - 1) * total : 0
        keys.removeAll(keepingCapacity: true)
        for i in 0..<n where p[i] >= floor { keys.append(Sampler.key(weight: p[i], id: i)) }
        if keys.isEmpty { for i in 0..<n { keys.append(Sampler.key(weight: p[i], id: i)) } }
        if topK < keys.count { Sampler.selectSmallest(&keys, topK) }
        Sampler.sortKeys(&keys, scratch: &sortScratch, counts: &bucketCounts)
        // Running sums in sorted order; the nucleus ends at the first sum that reaches topP of the mass.
        let count = keys.count
        if prefix.count < count { prefix = [Float](repeating: 0, count: max(count, 1024)) }
        var mass: Float = 0
        var keep = count
        let limit = topP * total
        let cutAtMass = topP < 1
        prefix.withUnsafeMutableBufferPointer { sums in
            keys.withUnsafeBufferPointer { keys in
                for j in 0..<count {
                    mass += p[Int(truncatingIfNeeded: keys[j] & 0xFFFF_FFFF)]
                    sums[j] = mass
                    if cutAtMass && mass >= limit { keep = j + 1; break }
                }
            }
        }
        // The first running sum above the target (sums never decrease).
        let target = u * mass
        var lo = 0, hi = keep
        while lo < hi {
            let mid = (lo + hi) / 2
            if target < prefix[mid] { hi = mid } else { lo = mid + 1 }
        }
        let id = Int(truncatingIfNeeded: keys[min(lo, keep - 1)] & 0xFFFF_FFFF)
        return (id, p[id] / mass)
    }

    /// The sort key of token `id` with weight `weight >= 0`: ascending keys are descending weights, ties
    /// by ascending id (the bit patterns of non-negative floats order as the floats do).
    @inline(__always)
    static func key(weight: Float, id: Int) -> UInt64 {
        UInt64(~weight.bitPattern) << 32 | UInt64(id)
    }

    /// Sorts `keys` ascending: a counting pass into about one bucket per key over the range of their
    /// high halves (the weights), then an insertion sort of each bucket (a handful of keys each; a
    /// bucket of many equal weights is sorted by the standard library instead).
    static func sortKeys(_ keys: inout [UInt64], scratch: inout [UInt64], counts: inout [Int32]) {
        let n = keys.count
        guard n > 32 else {
            keys.withUnsafeMutableBufferPointer { insertionSort($0) }
            return
        }
        var lowest = UInt32.max, highest = UInt32.min
        for k in keys {
            let h = UInt32(truncatingIfNeeded: k >> 32)
            lowest = min(lowest, h)
            highest = max(highest, h)
        }
        let span = UInt64(highest - lowest)
        var buckets = 1
        while buckets < n && buckets < 1 << 16 { buckets <<= 1 }
        var shift: UInt64 = 0
        while span >> shift >= UInt64(buckets) { shift += 1 }
        if counts.count < buckets + 1 { counts = [Int32](repeating: 0, count: buckets + 1) }
        if scratch.count < n { scratch = [UInt64](repeating: 0, count: n) }
        counts.withUnsafeMutableBufferPointer { counts in
            scratch.withUnsafeMutableBufferPointer { sorted in
                keys.withUnsafeMutableBufferPointer { keys in
                    for b in 0...buckets { counts[b] = 0 }
                    @inline(__always) func bucket(_ k: UInt64) -> Int {
                        Int(truncatingIfNeeded: (UInt64(UInt32(truncatingIfNeeded: k >> 32) - lowest)) >> shift)
                    }
                    for k in keys { counts[bucket(k) + 1] += 1 }
                    for b in 0..<buckets { counts[b + 1] += counts[b] }
                    // counts[b] is now bucket b's start; each placement advances it, leaving its end.
                    for k in keys {
                        let b = bucket(k)
                        sorted[Int(counts[b])] = k
                        counts[b] += 1
                    }
                    var start = 0
                    for b in 0..<buckets {
                        let end = Int(counts[b])
                        if end - start > 64 {
                            // Many equal weights (a constant or quantised distribution) share a bucket:
                            // an insertion sort would be quadratic there.
                            var bucket = UnsafeMutableBufferPointer(rebasing: sorted[start..<end])
                            bucket.sort()
                        } else if end - start > 1 {
                            insertionSort(UnsafeMutableBufferPointer(rebasing: sorted[start..<end]))
                        }
                        start = end
                    }
                    keys.baseAddress!.update(from: sorted.baseAddress!, count: n)
                }
            }
        }
    }

    /// Sorts `keys` ascending in place (for a handful of keys).
    static func insertionSort(_ keys: UnsafeMutableBufferPointer<UInt64>) {
        guard keys.count > 1 else { return }
        for i in 1..<keys.count {
            let k = keys[i]
            var j = i
            while j > 0 && keys[j - 1] > k { keys[j] = keys[j - 1]; j -= 1 }
            keys[j] = k
        }
    }

    /// Keeps the `k` smallest of `items` (in no particular order), in expected linear time.
    static func selectSmallest(_ items: inout [UInt64], _ k: Int) {
        var lo = 0, hi = items.count - 1
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        while lo < hi {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let pivot = items[lo + Int((state >> 33) % UInt64(hi - lo + 1))]
            var i = lo, j = hi
            while i <= j {
                while items[i] < pivot { i += 1 }
                while pivot < items[j] { j -= 1 }
                if i <= j { items.swapAt(i, j); i += 1; j -= 1 }
            }
            if k - 1 <= j { hi = j } else if k - 1 >= i { lo = i } else { break }
        }
        items.removeSubrange(k...)
    }
}
