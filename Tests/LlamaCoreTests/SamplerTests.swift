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
