import LlamaCore

/// Activations of one training forward pass, kept for the backward pass.
public final class ForwardTape {
    /// The batch that was run.
    public let batch: TokenBatch

    /// Per-layer saved tensors (all `N` rows).
    final class Layer {
        /// `(N, D)` residual stream entering the layer.
        let xIn: FloatBuffer
        /// `(N)` inverse RMS of `xIn`.
        let rms1: FloatBuffer
        /// `(N, D)` normed input of the attention projections.
        let xn1: FloatBuffer
        /// `(N, D)` queries after RoPE.
        let q: FloatBuffer
        /// `(N, KVD)` keys after RoPE and values.
        let k: FloatBuffer, v: FloatBuffer
        /// Attention probabilities, per sequence and head a causal `(T, T)` block (zeros above the diagonal).
        let probs: FloatBuffer
        /// `(N, D)` attention output (input of `wo`).
        let att: FloatBuffer
        /// `(N, D)` residual stream after attention.
        let xMid: FloatBuffer
        /// `(N)` inverse RMS of `xMid`.
        let rms2: FloatBuffer
        /// `(N, D)` normed input of the FFN.
        let xn2: FloatBuffer
        /// `(N, H)` gate and up pre-activations, and the gated product (input of `w2`).
        let h1: FloatBuffer, h3: FloatBuffer, g: FloatBuffer

        init(n: Int, config c: LlamaConfig, probCount: Int) {
            xIn = FloatBuffer(count: n * c.dim)
            rms1 = FloatBuffer(count: n)
            xn1 = FloatBuffer(count: n * c.dim)
            q = FloatBuffer(count: n * c.dim)
            k = FloatBuffer(count: n * c.kvDim)
            v = FloatBuffer(count: n * c.kvDim)
            probs = FloatBuffer(count: probCount)
            att = FloatBuffer(count: n * c.dim)
            xMid = FloatBuffer(count: n * c.dim)
            rms2 = FloatBuffer(count: n)
            xn2 = FloatBuffer(count: n * c.dim)
            h1 = FloatBuffer(count: n * c.hiddenDim)
            h3 = FloatBuffer(count: n * c.hiddenDim)
            g = FloatBuffer(count: n * c.hiddenDim)
        }
    }

    let layers: [Layer]
    /// Offset of sequence `b`, head `h`'s probability block: `probOffsets[b] + h * T_b^2`.
    let probOffsets: [Int]
    /// `(N, D)` residual stream after the last layer.
    let xFinal: FloatBuffer
    /// `(N)` inverse RMS of `xFinal`.
    let rmsFinal: FloatBuffer
    /// `(N, D)` final-normed hidden states: what the classifier and the scalar heads read.
    public let hidden: FloatBuffer

    init(batch: TokenBatch, config c: LlamaConfig) {
        self.batch = batch
        var offsets: [Int] = []
        var total = 0
        for s in batch.sequences {
            offsets.append(total)
            total += c.nHeads * s.count * s.count
        }
        probOffsets = offsets
        let n = batch.rowCount
        layers = (0..<c.nLayers).map { _ in Layer(n: n, config: c, probCount: total) }
        xFinal = FloatBuffer(count: n * c.dim)
        rmsFinal = FloatBuffer(count: n)
        hidden = FloatBuffer(count: n * c.dim)
    }

    /// Row `r` of the final hidden states (copies; for tests and small heads).
    public func hiddenRow(_ r: Int) -> [Float] {
        let d = hidden.count / batch.rowCount
        return hidden.array(r * d ..< (r + 1) * d)
    }
}
