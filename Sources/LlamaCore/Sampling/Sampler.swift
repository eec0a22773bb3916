import CKernels
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

/// The buffers of a draw, each sized to the vocabulary once and then reused: the weights, the truncated
/// draw's sort keys and their second buffer (20 bytes a token), and the buckets' ends, running sums and
/// digit counts. One per drawing thread: a batch's rows share their thread's, so that its buffers stay
/// in the core's cache from one row to the next, however many sequences the batch holds.
public struct SamplingScratch {
    var probs: [Float] = []
    var keys: [UInt64] = []
    var sortScratch: [UInt64] = []
    var bucketCounts: [Int32] = []
    var bucketEnds: [Int32] = []
    var bucketSums: [Float] = []

    /// Empty buffers (allocated by the first draw).
    public init() {}

    /// Lends the buffers at `first` and `second`, each grown to at least `count` elements, to `body`,
    /// with the rest of the scratch (they are moved out meanwhile, so that `body` may use both).
    mutating func lending<A: Numeric, B: Numeric, R>(_ first: WritableKeyPath<SamplingScratch, [A]>,
                                                     _ second: WritableKeyPath<SamplingScratch, [B]>, count: Int,
                                                     _ body: (UnsafeMutablePointer<A>, UnsafeMutablePointer<B>, inout SamplingScratch) -> R) -> R {
        var a: [A] = [], b: [B] = []
        swap(&a, &self[keyPath: first])
        swap(&b, &self[keyPath: second])
        defer {
            swap(&a, &self[keyPath: first])
            swap(&b, &self[keyPath: second])
        }
        if a.count < count { a = [A](repeating: 0, count: count) }
        if b.count < count { b = [B](repeating: 0, count: count) }
        return a.withUnsafeMutableBufferPointer { a in
            b.withUnsafeMutableBufferPointer { b in body(a.baseAddress!, b.baseAddress!, &self) }
        }
    }
}

/// Draws tokens from logits with fixed settings.
public struct Sampler {
    /// The settings every draw uses.
    public let settings: SamplingSettings
    /// The buffers of `sample(_:rng:)`.
    private var scratch = SamplingScratch()

    /// A sampler with validated settings.
    public init(settings: SamplingSettings) throws {
        try settings.validate()
        self.settings = settings
    }

    /// Draws one token from `logits (V)` with `rng`, in the sampler's own buffers. Ties in greedy mode
    /// go to the lowest id.
    public mutating func sample(_ logits: UnsafeBufferPointer<Float>, rng: inout SeededGenerator) -> SampledToken {
        var buffers = SamplingScratch()
        swap(&buffers, &scratch)
        defer { swap(&buffers, &scratch) }
        return sample(logits, rng: &rng, scratch: &buffers)
    }

    /// Draws one token from `logits (V)` with `rng`, in the buffers `scratch`. Ties in greedy mode go to
    /// the lowest id.
    public func sample(_ logits: UnsafeBufferPointer<Float>, rng: inout SeededGenerator, scratch: inout SamplingScratch) -> SampledToken {
        let n = logits.count
        let base = logits.baseAddress!
        let maxValue = Kernels.maximum(base, n)
        let temperature = settings.temperature
        var probs: [Float] = []
        swap(&probs, &scratch.probs)
        defer { swap(&probs, &scratch.probs) }
        if probs.count < n { probs = [Float](repeating: 0, count: n) }
        return probs.withUnsafeMutableBufferPointer { probsBuffer -> SampledToken in
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
                (id, q) = Sampler.drawTruncated(p, n, total: sumT, topK: topK, topP: settings.topP, u: u, scratch: &scratch)
            }
            return SampledToken(id: Int32(id), logProb: logits[id] - logZ1, samplingLogProb: logf(q))
        }
    }

    /// Draws one token per logit row: row `r` belongs to sequence `sequences[r]`, which samples with
    /// `samplers[sequences[r]]` and `rngs[sequences[r]]`. Sequences are independent, so rows are drawn
    /// in parallel on `pool`, thread `t` in `scratch[t]` (one per thread of the pool); the result does
    /// not depend on the pool's size.
    public static func sample(_ logits: Logits, sequences: [Int], samplers: [Sampler], rngs: inout [SeededGenerator],
                              pool: ComputePool, scratch: inout [SamplingScratch]) -> [SampledToken] {
        precondition(sequences.count == logits.rows, "one sequence per logit row")
        precondition(scratch.count >= pool.threadCount, "one scratch per thread of the pool")
        var drawn = [SampledToken](repeating: SampledToken(id: 0, logProb: 0, samplingLogProb: 0), count: logits.rows)
        drawn.withUnsafeMutableBufferPointer { drawn in
            rngs.withUnsafeMutableBufferPointer { rngs in
                scratch.withUnsafeMutableBufferPointer { scratch in
                    pool.parallelFor(sequences.count) { range, thread in
                        for row in range {
                            let i = sequences[row]
                            drawn[row] = logits.withRow(row) { samplers[i].sample($0, rng: &rngs[i], scratch: &scratch[thread]) }
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
    /// `topK` and at cumulative mass `topP` (summed in float32, in that order), renormalised; the
    /// inverse-CDF walk goes in the same order. Candidates are 64-bit keys (`~weight bits` then id:
    /// ascending keys are descending weights with ties by ascending id) gathered in id order;
    /// `walkSorted` finds the nucleus and the drawn token without sorting most of them.
    private static func drawTruncated(_ p: UnsafeMutablePointer<Float>, _ n: Int, total: Float, topK: Int,
                                      topP: Float, u: Float, scratch: inout SamplingScratch) -> (Int, Float) {
        // Tokens below this weight cannot be in a nucleus of mass topP (llama2.c's observation), so they
        // are not candidates.
        let floor = topP < 1 ? (1 - topP) / Float(n - 1) * total : 0
        return scratch.lending(\.keys, \.sortScratch, count: n) { keys, spare, scratch in
            let candidates = Sampler.candidateKeys(p, n, floor: floor, keys)
            var count = candidates.count
            var bounds: (UInt32, UInt32)? = (candidates.lowest, candidates.highest)
            if count == 0 {
                // No weight reaches the floor (NaNs): every token is a candidate.
                for i in 0..<n { keys[i] = Sampler.key(weight: p[i], id: i) }
                count = n
                bounds = nil
            }
            var idsAscending = true
            if topK < count {
                Sampler.selectSmallest(keys, count, topK)
                count = topK
                idsAscending = false
                bounds = nil
            }
            let (key, mass) = Sampler.walkSorted(keys, spare, count, limit: topP < 1 ? topP * total : nil, u: u,
                                                 lowHalvesAscending: idsAscending, highHalves: bounds, scratch: &scratch)
            let id = Int(truncatingIfNeeded: key & 0xFFFF_FFFF)
            return (id, p[id] / mass)
        }
    }

    /// Writes the key of every token `i < n` whose weight `p[i]` is at least `floor` to `keys` (which
    /// holds `n`), in ascending order of `i`; returns how many, and the smallest and largest of their high
    /// halves (`UInt32.max` and 0 where none). AVX-512 where the CPU has it.
    static func candidateKeys(_ p: UnsafePointer<Float>, _ n: Int, floor: Float,
                              _ keys: UnsafeMutablePointer<UInt64>) -> (count: Int, lowest: UInt32, highest: UInt32) {
        var lowest = UInt32.max, highest = UInt32.min
        let count = rlhf_candidate_keys(p, n, floor, keys, &lowest, &highest)
        return (count, lowest, highest)
    }

    /// Bits of the bucket digit in `walkSorted`: 512 buckets, about 60 keys each for a flat distribution
    /// of 32,000 tokens. The scatter into 4,096 cost more than their smaller sorted buckets saved (the
    /// draw took 1.5x as long on the Intel Xeon of the machine class; 256 and 1,024 are as good as 512).
    private static let bucketDigitBits = 9

    /// The inverse-CDF draw over the `n` distinct candidate keys at `keys` in ascending order: their
    /// weights summed one by one in float32 until the sum reaches `limit` (nil: all of them) make the
    /// mass; the drawn key is the first whose running sum exceeds `u * mass` (the last summed where none
    /// does). Returns the drawn key and the mass. `spare` holds `n` keys; `lowHalvesAscending` says the
    /// keys come in ascending order of their low halves; `highHalves`, where given, are the smallest and
    /// largest of their high halves.
    ///
    /// The result is that of sorting all keys and summing in that order, without sorting most of them.
    /// One most-significant-digit pass groups the keys into buckets by their high halves, so that the
    /// buckets come in sorted order. While a float32 sum stays within one binade, adding a weight adds
    /// the weight rounded to the sum's unit in the last place, a whole number of units that does not
    /// depend on the sum or on the order: a bucket whose weights round without a half-way case and
    /// leave the sum in its binade (`rlhf_weight_units`) is added as a count of units, unsorted. Only
    /// the buckets where the sum crosses into the next binade (once each time it doubles), where the
    /// nucleus ends and where the draw lands are sorted and summed key by key.
    static func walkSorted(_ keys: UnsafeMutablePointer<UInt64>, _ spare: UnsafeMutablePointer<UInt64>, _ n: Int,
                           limit: Float?, u: Float, lowHalvesAscending: Bool, highHalves: (UInt32, UInt32)? = nil,
                           scratch: inout SamplingScratch) -> (key: UInt64, mass: Float) {
        var (lowest, highest) = highHalves ?? (UInt32.max, UInt32.min)
        if highHalves == nil {
            for j in 0..<n {
                let high = UInt32(truncatingIfNeeded: keys[j] >> 32)
                lowest = min(lowest, high)
                highest = max(highest, high)
            }
        }
        // A handful of keys make one bucket (two where the high halves span all 32 bits).
        let bits = UInt32.bitWidth - (highest &- lowest).leadingZeroBitCount
        let shift = UInt32(min(31, bits - min(bits, n <= 48 ? 0 : bucketDigitBits)))
        let bucketCount = Int((highest &- lowest) >> shift) + 1
        return scratch.lending(\.bucketEnds, \.bucketSums, count: 1 << bucketDigitBits) { ends, sums, scratch in
            @inline(__always) func bucket(_ key: UInt64) -> Int {
                Int(truncatingIfNeeded: (UInt32(truncatingIfNeeded: key >> 32) &- lowest) &>> shift)
            }
            // A stable scatter into `spare`, after which ends[b] is where bucket b ends.
            _ = countingScatter(keys, spare, n, ends: ends, buckets: bucketCount, skipUniform: false, digit: bucket)
            @inline(__always) func bounds(_ b: Int) -> (Int, Int) {
                (b == 0 ? 0 : Int(truncatingIfNeeded: ends[b - 1]), Int(truncatingIfNeeded: ends[b]))
            }
            /// Sorts bucket `b` in place in `spare` (`keys` is free after the scatter).
            func sortBucket(_ b: Int, counts: inout [Int32]) {
                let (lo, hi) = bounds(b)
                let sorted = radixSort(spare + lo, keys + lo, hi - lo, counts: &counts, lowHalvesAscending: lowHalvesAscending)
                if sorted != spare + lo { (spare + lo).update(from: sorted, count: hi - lo) }
            }
            // The mass: each bucket added whole where its units are exact, else key by key; sums[b]
            // is the running sum after bucket b.
            var sum: Float = 0
            var keep = n, last = bucketCount - 1
            walk: for b in 0..<bucketCount {
                let (lo, hi) = bounds(b)
                if lo < hi, sum.isNormal {
                    var inexact: Int32 = 0
                    let units = rlhf_weight_units(spare + lo, hi - lo, 1 / sum.ulp, &inexact)
                    // The sum in units of its last place, below 2^24: the binade holds it.
                    let after = Int(sum / sum.ulp) + units
                    if inexact == 0 && after < 1 << 24 {
                        let end = Float(after) * sum.ulp
                        if limit.map({ end < $0 }) ?? true {
                            sum = end
                            sums[b] = sum
                            continue
                        }
                    }
                }
                if hi - lo > 1 { sortBucket(b, counts: &scratch.bucketCounts) }
                for j in lo..<hi {
                    sum += weight(ofKey: spare[j])
                    if let limit, sum >= limit {
                        keep = j + 1
                        sums[b] = sum
                        last = b
                        break walk
                    }
                }
                sums[b] = sum
            }
            // The draw: the first bucket whose running sum passes the target, walked key by key
            // (sorted again where it was added whole; sorting sorted keys is cheap).
            let target = u * sum
            var drawnBucket = last
            for b in 0...last where target < sums[b] {
                drawnBucket = b
                break
            }
            let (lo, hi) = bounds(drawnBucket)
            let end = drawnBucket == last ? keep : hi
            if end - lo > 1 { sortBucket(drawnBucket, counts: &scratch.bucketCounts) }
            var running: Float = drawnBucket == 0 ? 0 : sums[drawnBucket - 1]
            for j in lo..<end {
                running += weight(ofKey: spare[j])
                if target < running { return (spare[j], sum) }
            }
            return (spare[end - 1], sum)
        }
    }

    /// The sort key of token `id` with weight `weight >= 0`: ascending keys are descending weights, ties
    /// by ascending id (the bit patterns of non-negative floats order as the floats do).
    @inline(__always)
    static func key(weight: Float, id: Int) -> UInt64 {
        UInt64(~weight.bitPattern) << 32 | UInt64(id)
    }

    /// The weight whose key `key` is (the inverse of `key(weight:id:)`'s high half).
    @inline(__always)
    static func weight(ofKey key: UInt64) -> Float {
        Float(bitPattern: ~UInt32(truncatingIfNeeded: key >> 32))
    }

    /// Sorts `keys` ascending (any 64-bit values); the array form of `radixSort` (for tests and callers
    /// without buffers of their own).
    static func sortKeys(_ keys: inout [UInt64], scratch: inout [UInt64], counts: inout [Int32]) {
        let n = keys.count
        guard n > 1 else { return }
        if scratch.count < n { scratch = [UInt64](repeating: 0, count: n) }
        keys.withUnsafeMutableBufferPointer { keys in
            scratch.withUnsafeMutableBufferPointer { scratch in
                let base = keys.baseAddress!
                let sorted = radixSort(base, scratch.baseAddress!, n, counts: &counts, lowHalvesAscending: false)
                if sorted != base { base.update(from: sorted, count: n) }
            }
        }
    }

    /// Digits of 11 bits: a pass's counts (2,048 of them, 8 KB) stay in L1.
    private static let digitBits = 11

    /// Sorts the `n` keys at `keys` ascending by a stable least-significant-digit radix sort, ping-ponging
    /// between `keys` and `scratch` (each holding `n`); returns whichever of the two holds the result.
    /// Only the bits in which the keys differ are sorted: those of the low halves (skipped when
    /// `lowHalvesAscending`: the keys are already in ascending order of their low halves, which a
    /// stable sort keeps among equal high halves), then those of the high halves above their minimum.
    /// A pass whose digit is the same for every key moves nothing. A handful of keys are insertion-sorted.
    static func radixSort(_ keys: UnsafeMutablePointer<UInt64>, _ scratch: UnsafeMutablePointer<UInt64>, _ n: Int,
                          counts: inout [Int32], lowHalvesAscending: Bool) -> UnsafeMutablePointer<UInt64> {
        if n <= 48 {
            insertionSort(UnsafeMutableBufferPointer(start: keys, count: n))
            return keys
        }
        var lowest = UInt32.max, highest = UInt32.min, largestLow = UInt32.min
        for j in 0..<n {
            let key = keys[j]
            let high = UInt32(truncatingIfNeeded: key >> 32)
            lowest = min(lowest, high)
            highest = max(highest, high)
            largestLow = max(largestLow, UInt32(truncatingIfNeeded: key))
        }
        let buckets = 1 << digitBits
        if counts.count < buckets { counts = [Int32](repeating: 0, count: buckets) }
        var sorted = keys, spare = scratch
        counts.withUnsafeMutableBufferPointer { counts in
            if !lowHalvesAscending {
                radixPasses(&sorted, &spare, n, counts: counts.baseAddress!,
                            bits: UInt32.bitWidth - largestLow.leadingZeroBitCount, fieldShift: 0, offset: 0)
            }
            radixPasses(&sorted, &spare, n, counts: counts.baseAddress!,
                        bits: UInt32.bitWidth - (highest &- lowest).leadingZeroBitCount, fieldShift: 32, offset: lowest)
        }
        return sorted
    }

    /// Stable counting passes over the low `bits` bits of the field `UInt32(key >> fieldShift) - offset`,
    /// in balanced digits of at most `digitBits`, each moving the `n` keys from `sorted` to `spare` and
    /// swapping the two.
    private static func radixPasses(_ sorted: inout UnsafeMutablePointer<UInt64>, _ spare: inout UnsafeMutablePointer<UInt64>, _ n: Int,
                                    counts: UnsafeMutablePointer<Int32>, bits: Int, fieldShift: UInt64, offset: UInt32) {
        guard bits > 0 else { return }
        let passes = (bits + digitBits - 1) / digitBits
        let width = (bits + passes - 1) / passes
        let mask = UInt32(1 << width - 1)
        for pass in 0..<passes {
            let source = sorted, destination = spare
            let shift = UInt32(pass * width)
            @inline(__always) func digit(_ key: UInt64) -> Int {
                Int(truncatingIfNeeded: (UInt32(truncatingIfNeeded: key &>> fieldShift) &- offset) &>> shift & mask)
            }
            // A pass whose digit every key shares moves nothing (and leaves the keys where they are).
            if countingScatter(source, destination, n, ends: counts, buckets: 1 << width, skipUniform: true, digit: digit) {
                (sorted, spare) = (destination, source)
            }
        }
    }

    /// One stable counting pass: counts the `n` keys at `source` by `digit` (0 ..< `buckets`), then moves
    /// them to `destination` grouped by digit, in their order within a group, leaving `ends[d]` where
    /// group d ends. Where `skipUniform` and every key has the same digit, moves nothing and returns
    /// false.
    @inline(__always)
    private static func countingScatter(_ source: UnsafeMutablePointer<UInt64>, _ destination: UnsafeMutablePointer<UInt64>, _ n: Int,
                                        ends: UnsafeMutablePointer<Int32>, buckets: Int, skipUniform: Bool,
                                        digit: (UInt64) -> Int) -> Bool {
        ends.initialize(repeating: 0, count: buckets)
        for j in 0..<n { ends[digit(source[j])] &+= 1 }
        if skipUniform && ends[digit(source[0])] == Int32(n) { return false }
        var start: Int32 = 0
        for d in 0..<buckets {
            let size = ends[d]
            ends[d] = start
            start &+= size
        }
        for j in 0..<n {
            let key = source[j]
            let d = digit(key)
            destination[Int(truncatingIfNeeded: ends[d])] = key
            ends[d] &+= 1
        }
        return true
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

    /// Moves the `k` smallest of the `n` keys at `items` to its front (in no particular order), in
    /// expected linear time.
    static func selectSmallest(_ items: UnsafeMutablePointer<UInt64>, _ n: Int, _ k: Int) {
        var lo = 0, hi = n - 1
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        while lo < hi {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let pivot = items[lo + Int((state >> 33) % UInt64(hi - lo + 1))]
            var i = lo, j = hi
            while i <= j {
                while items[i] < pivot { i += 1 }
                while pivot < items[j] { j -= 1 }
                if i <= j { (items[i], items[j]) = (items[j], items[i]); i += 1; j -= 1 }
            }
            if k - 1 <= j { hi = j } else if k - 1 >= i { lo = i } else { break }
        }
    }
}
