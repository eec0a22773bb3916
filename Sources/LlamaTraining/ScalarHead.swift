import LlamaCore

/// A scalar head on the final-normed hidden state: `score = dot(h, weight) + bias`. The reward models
/// read it at each sequence's last token, the value model at every token.
public struct ScalarHead: Codable, Sendable, Equatable {
    /// `(D)` weights.
    public var weight: [Float]
    /// The bias.
    public var bias: Float

    /// A head of width `dim`, weights drawn from N(0, std^2) with `seed`, bias 0.
    public init(dim: Int, seed: UInt64, std: Double = 0.02) {
        var rng = SeededGenerator(seed: seed)
        weight = (0..<dim).map { _ in Float(rng.nextGaussian() * std) }
        bias = 0
    }

    /// A head with given parameters.
    public init(weight: [Float], bias: Float) {
        self.weight = weight
        self.bias = bias
    }

    /// Scores of `rows` of the tape's hidden states.
    public func scores(_ tape: ForwardTape, rows: [Int]) -> [Float] {
        let d = weight.count
        return rows.map { r in
            var s = bias
            let h = tape.hidden.baseAddress + r * d
            for i in 0..<d { s += h[i] * weight[i] }
            return s
        }
    }

    /// Gradients of the head given `dL/dscore` for each of `rows`; also fills `dL/dhidden (N, D)`
    /// (from `model.hiddenGradient(for:)`, zero on other rows).
    public func backward(_ tape: ForwardTape, rows: [Int], dScores: [Float], model: TrainableTransformer)
        -> (hiddenGradient: FloatBuffer, dWeight: [Float], dBias: Float) {
        let d = weight.count
        let dHidden = model.hiddenGradient(for: tape)
        var dWeight = [Float](repeating: 0, count: d)
        var dBias: Float = 0
        for (r, g) in zip(rows, dScores) {
            let h = tape.hidden.baseAddress + r * d, dh = dHidden.baseAddress + r * d
            for i in 0..<d {
                dWeight[i] += g * h[i]
                dh[i] += g * weight[i]
            }
            dBias += g
        }
        return (dHidden, dWeight, dBias)
    }
}
