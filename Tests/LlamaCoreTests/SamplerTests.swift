import Foundation
import Testing
@testable import LlamaCore

@Suite struct SamplerTests {
    func draw(_ logits: [Float], _ settings: SamplingSettings, seed: UInt64, count: Int) throws -> [SampledToken] {
        var sampler = try Sampler(settings: settings)
        var rng = SeededGenerator(seed: seed)
        return logits.withUnsafeBufferPointer { buffer in
            (0..<count).map { _ in sampler.sample(buffer, rng: &rng) }
        }
    }

    let logits: [Float] = (0..<40).map { Float(($0 * 37) % 40) / 8 - 2 }

    @Test func sameSeedSameTokensDifferentSeedDifferentTokens() throws {
        let settings = SamplingSettings(temperature: 1.1, topP: 0.95, topK: 20)
        let a = try draw(logits, settings, seed: 42, count: 64).map(\.id)
        let b = try draw(logits, settings, seed: 42, count: 64).map(\.id)
        let c = try draw(logits, settings, seed: 43, count: 64).map(\.id)
        #expect(a == b)
        #expect(a != c)
    }

    @Test func generatorStreamIsFixed() {
        // The stream is part of the reproducibility contract: these values must never change.
        var rng = SeededGenerator(seed: 1)
        let first = (0..<3).map { _ in rng.next() }
        var again = SeededGenerator(seed: 1)
        #expect(first == (0..<3).map { _ in again.next() })
        #expect(Set(first).count == 3)
        var other = SeededGenerator(seed: 1, stream: 1)
        #expect(other.next() != first[0])
    }

    @Test func greedyIsArgmaxWithLowestIdOnTies() throws {
        let tokens = try draw([0, 3, 1, 3, -1], .greedy, seed: 0, count: 3)
        #expect(tokens.allSatisfy { $0.id == 1 && $0.samplingLogProb == 0 })
    }

    @Test func logProbsAreExactLogSoftmax() throws {
        let maxValue = logits.max()!
        let logZ = Double(maxValue) + log(logits.map { exp(Double($0 - maxValue)) }.reduce(0, +))
        for token in try draw(logits, SamplingSettings(temperature: 0.7), seed: 3, count: 50) {
            let expected = Double(logits[Int(token.id)]) - logZ
            #expect(abs(Double(token.logProb) - expected) < 1e-5)
            // Under temperature T the sampling probability is softmax(logits / T).
            let scaled = logits.map { Double($0) / 0.7 }
            let zT = scaled.max()! + log(scaled.map { exp($0 - scaled.max()!) }.reduce(0, +))
            #expect(abs(Double(token.samplingLogProb) - (scaled[Int(token.id)] - zT)) < 1e-4)
        }
    }

    @Test func topKKeepsOnlyTheKLargest() throws {
        let top3 = Set(logits.enumerated().sorted { $0.element > $1.element }.prefix(3).map { Int32($0.offset) })
        let tokens = try draw(logits, SamplingSettings(temperature: 5, topK: 3), seed: 11, count: 300)
        #expect(Set(tokens.map(\.id)).isSubset(of: top3))
        #expect(Set(tokens.map(\.id)).count == 3)
        for t in tokens {
            // Renormalised over three candidates: probabilities above 1/3 for the best, all below 1.
            #expect(t.samplingLogProb < 0 && t.samplingLogProb > log(0.01))
        }
    }

    @Test func topPKeepsTheNucleus() throws {
        // Probabilities 0.5, 0.3, 0.15, 0.05: top-p 0.8 keeps the first two.
        let probs: [Float] = [0.05, 0.5, 0.15, 0.3]
        let l = probs.map { Foundation.log($0) }
        let tokens = try draw(l, SamplingSettings(temperature: 1, topP: 0.8), seed: 5, count: 400)
        let seen = Set(tokens.map(\.id))
        #expect(seen == [1, 3])
        let share = Double(tokens.filter { $0.id == 1 }.count) / 400
        #expect(abs(share - 0.625) < 0.08)
        for t in tokens where t.id == 1 { #expect(abs(t.samplingLogProb - Foundation.log(0.625)) < 1e-4) }
    }

    @Test func fullSamplingFollowsTheDistribution() throws {
        let probs: [Double] = [0.1, 0.2, 0.7]
        let tokens = try draw(probs.map { Float(Foundation.log($0)) }, .default, seed: 8, count: 3000)
        for (id, p) in probs.enumerated() {
            let share = Double(tokens.filter { $0.id == Int32(id) }.count) / 3000
            #expect(abs(share - p) < 0.03, "token \(id)")
        }
    }

    @Test func invalidSettingsAreRefused() {
        #expect(throws: LlamaError.self) { try Sampler(settings: SamplingSettings(temperature: -1)) }
        #expect(throws: LlamaError.self) { try Sampler(settings: SamplingSettings(topP: 0)) }
        #expect(throws: LlamaError.self) { try Sampler(settings: SamplingSettings(topP: 1.5)) }
        #expect(throws: LlamaError.self) { try Sampler(settings: SamplingSettings(topK: -2)) }
    }

    @Test func vectorExpIsAccurate() {
        var worst = 0.0
        var x: Float = -87
        while x < 88 {
            let got = Double(Kernels.exp(x))
            let want = Foundation.exp(Double(x))
            worst = max(worst, abs(got - want) / want)
            x += 0.173
        }
        #expect(worst < 3e-7)
        #expect(Kernels.exp(-100) == 0)
    }
}

/// The truncated draw as it was before the radix sort (a full comparison sort of the candidates): the
/// reference the fast path must match sample for sample. Sorted once; `draw(u)` walks the CDF.
private struct ReferenceTruncatedDraw {
    let weights: [Float]
    var candidates: [Int]
    var keep: Int
    var mass: Float = 0

    init(_ weights: [Float], total: Float, topK: Int, topP: Float) {
        self.weights = weights
        let n = weights.count
        let floor = topP < 1 ? (1 - topP) / Float(n - 1) * total : 0
        candidates = (0..<n).filter { weights[$0] >= floor }
        if candidates.isEmpty { candidates = Array(0..<n) }
        candidates.sort { weights[$0] != weights[$1] ? weights[$0] > weights[$1] : $0 < $1 }
        if topK < candidates.count { candidates.removeSubrange(topK...) }
        keep = candidates.count
        for (j, c) in candidates.enumerated() {
            mass += weights[c]
            if topP < 1 && mass >= topP * total { keep = j + 1; break }
        }
        if keep < candidates.count { mass = candidates[..<keep].reduce(0) { $0 + weights[$1] } }
    }

    func draw(_ u: Float) -> (Int, Float) {
        let target = u * mass
        var cdf: Float = 0
        for c in candidates[..<keep] {
            cdf += weights[c]
            if target < cdf { return (c, weights[c] / mass) }
        }
        return (candidates[keep - 1], weights[candidates[keep - 1]] / mass)
    }
}

@Suite struct TruncatedSamplingTests {
    /// Logits of `n` tokens: `spread` scales a Gaussian (0.02 is a random-weight model's flat
    /// distribution, 3 a peaked one); `ties` repeats values so that equal weights occur.
    func logits(_ n: Int, spread: Double, ties: Bool, seed: UInt64) -> [Float] {
        var rng = SeededGenerator(seed: seed)
        return (0..<n).map { _ in
            let value = Float(rng.nextGaussian() * spread)
            return ties ? (value * 4).rounded() / 4 : value
        }
    }

    @Test(arguments: [(0.02, false), (0.5, false), (3.0, false), (1.0, true), (0.0, false)])
    func fastDrawMatchesTheFullSortSampleForSample(spread: Double, ties: Bool) throws {
        for (n, seed) in [(32000, UInt64(1)), (512, 2), (37, 3), (2, 4)] {
            let row = logits(n, spread: spread, ties: ties, seed: seed)
            for settings in [SamplingSettings(temperature: 1, topP: 0.9), SamplingSettings(temperature: 0.7, topP: 0.5),
                             SamplingSettings(temperature: 1.3, topP: 0.99, topK: 50), SamplingSettings(temperature: 1, topK: 5),
                             SamplingSettings(temperature: 1, topP: 0.05), SamplingSettings(temperature: 1, topP: 0.95, topK: 3000)] {
                var sampler = try Sampler(settings: settings)
                var rng = SeededGenerator(seed: seed &+ 10), referenceRng = rng
                // The weights the sampler draws from: exp((logit - max) / T), as Kernels computes them.
                var weights = [Float](repeating: 0, count: n)
                let maxValue = row.max()!
                let total = row.withUnsafeBufferPointer { l in
                    weights.withUnsafeMutableBufferPointer { w in
                        Kernels.expShifted(w.baseAddress!, l.baseAddress!, n, shift: maxValue, scale: 1 / settings.temperature)
                    }
                }
                let topK = settings.topK > 0 && settings.topK < n ? settings.topK : n
                let reference = ReferenceTruncatedDraw(weights, total: total, topK: topK, topP: settings.topP)
                for _ in 0..<200 {
                    let drawn = row.withUnsafeBufferPointer { sampler.sample($0, rng: &rng) }
                    let (id, q) = reference.draw(referenceRng.nextUnitFloat())
                    #expect(Int(drawn.id) == id, "n \(n), spread \(spread), \(settings)")
                    #expect(drawn.samplingLogProb == logf(q))
                }
            }
        }
    }

    /// Candidate weights of `n` tokens: 0 a random-weight model's flat distribution, 1 a peaked one over
    /// many binades, 2 three values (long runs of equal weights), 3 odd multiples of 2^-12 (half-way
    /// between two units of a sum in [2^12, 2^13), where the rounding depends on the sum's last bit),
    /// 4 a few zeros among tiny and large weights.
    func weights(_ n: Int, shape: Int, rng: inout SeededGenerator) -> [Float] {
        (0..<n).map { _ in
            switch shape {
            case 0: return Float(Foundation.exp(rng.nextGaussian() * 0.3))
            case 1: return Float(Foundation.exp(rng.nextGaussian() * 4))
            case 2: return Float(rng.next() % 3 + 1)
            case 3: return Float(2 * (rng.next() % 4096) + 1) / 4096
            default: return [0, 1e-30, 1, 3e5][Int(rng.next() % 4)]
            }
        }
    }

    @Test func sortedWalkMatchesSummingInSortedOrder() {
        var rng = SeededGenerator(seed: 21)
        var scratch = SamplingScratch()
        for n in [1, 2, 17, 49, 300, 5000, 32000] {
            for shape in 0..<5 {
                let w = weights(n, shape: shape, rng: &rng)
                let total = w.reduce(0, +)
                for idsAscending in [true, false] {
                    var keys = w.enumerated().map { Sampler.key(weight: $0.element, id: $0.offset) }
                    if !idsAscending { keys.shuffle(using: &rng) }
                    let sorted = keys.sorted()
                    for limit in [nil, total * 0.9, total * 0.3] as [Float?] {
                        // The reference: every key in order, summed one by one.
                        var mass: Float = 0, keep = n
                        var running: [Float] = []
                        for (j, key) in sorted.enumerated() {
                            mass += Sampler.weight(ofKey: key)
                            running.append(mass)
                            if let limit, mass >= limit { keep = j + 1; break }
                        }
                        for u in [0, 0.3, 0.5, 0.999, 1 - Float.ulpOfOne / 2] + (0..<20).map({ _ in rng.nextUnitFloat() }) {
                            let drawn = running.firstIndex { u * mass < $0 } ?? keep - 1
                            var work = keys, spare = keys
                            let (key, walkedMass) = work.withUnsafeMutableBufferPointer { work in
                                spare.withUnsafeMutableBufferPointer { spare in
                                    Sampler.walkSorted(work.baseAddress!, spare.baseAddress!, n, limit: limit, u: u,
                                                       lowHalvesAscending: idsAscending, scratch: &scratch)
                                }
                            }
                            let label = "n \(n), shape \(shape), ids ascending \(idsAscending), limit \(String(describing: limit)), u \(u)"
                            #expect(walkedMass == mass, "\(label)")
                            #expect(key == sorted[drawn], "\(label)")
                        }
                    }
                }
            }
        }
    }

    @Test func candidateKeysAreTheTokensAtOrAboveTheFloorInIdOrder() {
        var rng = SeededGenerator(seed: 5)
        for n in [1, 7, 15, 16, 17, 31, 32, 33, 1000] {
            // Weights with zeros, ties at the floor, infinities and NaNs among them.
            let weights: [Float] = (0..<n).map { _ in
                switch rng.next() % 8 {
                case 0: return 0
                case 1: return 0.5
                case 2: return .infinity
                case 3: return .nan
                default: return rng.nextUnitFloat()
                }
            }
            for floor: Float in [0, 0.5, 0.9, 2] {
                let expected = weights.enumerated().filter { $0.element >= floor }.map { Sampler.key(weight: $0.element, id: $0.offset) }
                var keys = [UInt64](repeating: 0, count: n)
                let (count, lowest, highest) = weights.withUnsafeBufferPointer { p in
                    keys.withUnsafeMutableBufferPointer { Sampler.candidateKeys(p.baseAddress!, n, floor: floor, $0.baseAddress!) }
                }
                #expect(Array(keys.prefix(count)) == expected, "n \(n), floor \(floor)")
                let highs = expected.map { UInt32(truncatingIfNeeded: $0 >> 32) }
                #expect(lowest == highs.min() ?? .max && highest == highs.max() ?? 0, "n \(n), floor \(floor)")
            }
        }
    }

    @Test func radixSortOrdersAnyKeys() {
        var rng = SeededGenerator(seed: 9)
        var scratch: [UInt64] = [], counts: [Int32] = []
        for n in [0, 1, 5, 33, 1000, 40000] {
            for clustered in [false, true] {
                // Clustered: few distinct high halves (one digit pass), many equal ones, low halves in random order.
                var keys = (0..<n).map { _ in clustered ? UInt64(0x3F00_0000 + rng.next() % 64) << 32 | rng.next() % 100_000 : rng.next() }
                let expected = keys.sorted()
                Sampler.sortKeys(&keys, scratch: &scratch, counts: &counts)
                #expect(keys == expected, "n \(n), clustered \(clustered)")
            }
        }
    }
}
