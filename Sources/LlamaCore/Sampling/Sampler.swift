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
    private var candidates: [Int32] = []

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
    /// `topK` and at cumulative mass `topP`, renormalised.
    private mutating func drawTruncated(_ p: UnsafeMutablePointer<Float>, _ n: Int, total: Float, topK: Int,
                                        topP: Float, u: Float) -> (Int, Float) {
        candidates.removeAll(keepingCapacity: true)
        // Tokens below this weight cannot be in a nucleus of mass topP (llama2.c's observation), so they
        // are not sorted.
        let floor = topP < 1 ? (1 - topP) / Float(n - 1) * total : 0
        for i in 0..<n where p[i] >= floor { candidates.append(Int32(i)) }
        if candidates.isEmpty { for i in 0..<n { candidates.append(Int32(i)) } }
        let before: (Int32, Int32) -> Bool = { a, b in
            p[Int(a)] != p[Int(b)] ? p[Int(a)] > p[Int(b)] : a < b
        }
        if topK < candidates.count {
            Sampler.selectTop(&candidates, topK, by: before)
        }
        candidates.sort(by: before)
        var mass: Float = 0
        var keep = candidates.count
        let limit = topP * total
        for (j, c) in candidates.enumerated() {
            mass += p[Int(c)]
            if topP < 1 && mass >= limit { keep = j + 1; break }
        }
        if keep < candidates.count { mass = candidates[..<keep].reduce(0) { $0 + p[Int($1)] } }
        let target = u * mass
        var cdf: Float = 0
        for c in candidates[..<keep] {
            cdf += p[Int(c)]
            if target < cdf { return (Int(c), p[Int(c)] / mass) }
        }
        let last = Int(candidates[keep - 1])
        return (last, p[last] / mass)
    }

    /// Keeps the `k` elements of `items` that come first under `before` (in no particular order),
    /// in expected linear time.
    private static func selectTop(_ items: inout [Int32], _ k: Int, by before: (Int32, Int32) -> Bool) {
        var lo = 0, hi = items.count - 1
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        while lo < hi {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let pivot = items[lo + Int((state >> 33) % UInt64(hi - lo + 1))]
            var i = lo, j = hi
            while i <= j {
                while before(items[i], pivot) { i += 1 }
                while before(pivot, items[j]) { j -= 1 }
                if i <= j { items.swapAt(i, j); i += 1; j -= 1 }
            }
            if k - 1 <= j { hi = j } else if k - 1 >= i { lo = i } else { break }
        }
        items.removeSubrange(k...)
    }
}
