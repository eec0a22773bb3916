/// A round's bookkeeping, apart from the I/O: the KL of sampled responses to the reference, and each
/// prompt's best-scored sample (best-of-K).
public enum RoundSummary {
    /// Mean over sequences of `sum_t (log pi(t) - log ref(t))`: the Monte Carlo KL(pi || ref) of the sampled responses.
    public static func meanSequenceKL(policy: [[Float]], reference: [[Float]]) -> Double {
        let pairs = zip(policy, reference).filter { $0.0.count == $0.1.count }
        guard !pairs.isEmpty else { return 0 }
        return pairs.reduce(0.0) { sum, pair in sum + zip(pair.0, pair.1).reduce(0.0) { $0 + Double($1.0 - $1.1) } } / Double(pairs.count)
    }

    /// A figure as a table of three decimals shows it: what rounds to zero is 0 (a KL of the reference
    /// against itself, a few ulps below zero, would print as "-0.000").
    public static func shown(_ value: Double) -> Double {
        abs(value) < 0.0005 ? 0 : value
    }

    /// For each prompt (in first-seen order), the index of its highest-scored sample (the first on ties).
    public static func bestPerPrompt(promptIDs: [UInt64], scores: [Float]) -> [Int] {
        var best: [UInt64: Int] = [:], order: [UInt64] = []
        for (i, id) in promptIDs.enumerated() {
            if let b = best[id] {
                if scores[i] > scores[b] { best[id] = i }
            } else {
                best[id] = i
                order.append(id)
            }
        }
        return order.map { best[$0]! }
    }
}
