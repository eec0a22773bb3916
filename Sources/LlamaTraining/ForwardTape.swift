import LlamaCore

/// Activations of one training forward pass, kept for the backward pass.
public final class ForwardTape {
    /// The batch that was run. A transformer reuses its tape: it is valid until the next `forward`.
    public private(set) var batch: TokenBatch!
    /// The rows a scoring forward computed (`forward(_:onlyRows:)`), nil after a full forward. Such a
    /// tape's last layer and `hidden` hold these rows only, so it has no backward pass.
    public internal(set) var onlyRows: [Int]?
    /// The LoRA dropout masks' seed of a training forward (nil: no dropout).
    var loraDropoutSeed: UInt64?

    /// Per-layer saved tensors (all `N` rows).
    final class Layer {
        /// `(N, D)` residual stream entering the layer.
        let xIn: FloatBuffer
        /// `(N)` inverse RMS of `xIn`.
        let rms1: FloatBuffer
        /// `(N, D)` normed input of the attention projections.
        let xn1: FloatBuffer
        /// `(N, QD)` queries after RoPE.
        let q: FloatBuffer
        /// `(N, KVD)` keys after RoPE and values.
        let k: FloatBuffer, v: FloatBuffer
        /// Attention probabilities, per sequence and head a causal `(T, T)` block (zeros above the diagonal).
        let probs: FloatBuffer
        /// `(N, QD)` attention output (input of `wo`).
        let att: FloatBuffer
        /// `(N, D)` residual stream after attention.
        let xMid: FloatBuffer
        /// `(N)` inverse RMS of `xMid`.
        let rms2: FloatBuffer
        /// `(N, D)` normed input of the FFN.
        let xn2: FloatBuffer
        /// `(N, H)` gate and up pre-activations, and the gated product (input of `w2`).
        let h1: FloatBuffer, h3: FloatBuffer, g: FloatBuffer
        /// With query/key norms (Qwen3, Gemma 3, OLMo 2): `(N, QD)` queries and `(N, KVD)` keys before them, and
        /// `(N, nHeads)`, `(N, nKVHeads)` each head's inverse RMS (`(N, 1)` used across heads); empty otherwise.
        let qRaw: FloatBuffer, kRaw: FloatBuffer, qInverse: FloatBuffer, kInverse: FloatBuffer
        /// With post norms (Gemma): `(N, D)` the attention's and the feed-forward's outputs before their
        /// norms, and `(N)` each one's inverse RMS; empty otherwise.
        let attOut: FloatBuffer, ffnOut: FloatBuffer, rmsPostAttention: FloatBuffer, rmsPostFFN: FloatBuffer

        init(n: Int, config c: LlamaConfig, probCount: Int) {
            xIn = FloatBuffer(count: n * c.dim)
            rms1 = FloatBuffer(count: n)
            xn1 = FloatBuffer(count: n * c.dim)
            q = FloatBuffer(count: n * c.queryDim)
            k = FloatBuffer(count: n * c.kvDim)
            v = FloatBuffer(count: n * c.kvDim)
            probs = FloatBuffer(count: probCount)
            att = FloatBuffer(count: n * c.queryDim)
            xMid = FloatBuffer(count: n * c.dim)
            rms2 = FloatBuffer(count: n)
            xn2 = FloatBuffer(count: n * c.dim)
            h1 = FloatBuffer(count: n * c.hiddenDim)
            h3 = FloatBuffer(count: n * c.hiddenDim)
            g = FloatBuffer(count: n * c.hiddenDim)
            let norms = c.qkNorm ? n : 0
            qRaw = FloatBuffer(count: norms * c.queryDim)
            kRaw = FloatBuffer(count: norms * c.kvDim)
            qInverse = FloatBuffer(count: norms * c.nHeads)
            kInverse = FloatBuffer(count: norms * c.nKVHeads)
            let post = c.postNorms ? n : 0
            attOut = FloatBuffer(count: post * c.dim)
            ffnOut = FloatBuffer(count: post * c.dim)
            rmsPostAttention = FloatBuffer(count: post)
            rmsPostFFN = FloatBuffer(count: post)
        }
    }

    private(set) var layers: [Layer]
    /// Offset of sequence `b`, head `h`'s probability block: `probOffsets[b] + h * T_b^2`.
    private(set) var probOffsets: [Int]
    /// `(N, D)` residual stream after the last layer.
    private(set) var xFinal: FloatBuffer
    /// `(N)` inverse RMS of `xFinal`.
    private(set) var rmsFinal: FloatBuffer
    /// `(N, D)` final-normed hidden states: what the classifier and the scalar heads read.
    public private(set) var hidden: FloatBuffer
    /// Rows and probability floats the buffers can hold.
    private var rowCapacity = 0, probCapacity = 0
    private let config: LlamaConfig

    init(config c: LlamaConfig) {
        self.config = c
        batch = nil
        layers = []
        probOffsets = []
        xFinal = FloatBuffer(count: 0)
        rmsFinal = FloatBuffer(count: 0)
        hidden = FloatBuffer(count: 0)
    }

    /// Prepares the tape for `batch`, growing its buffers when needed (they are reused across steps:
    /// fresh hundreds of megabytes per step cost more in page faults than the step's arithmetic).
    func reset(for batch: TokenBatch) {
        self.batch = batch
        onlyRows = nil
        var offsets: [Int] = []
        var total = 0
        for s in batch.sequences {
            offsets.append(total)
            total += config.nHeads * s.count * s.count
        }
        probOffsets = offsets
        let n = batch.rowCount
        if n > rowCapacity || total > probCapacity {
            rowCapacity = max(n, rowCapacity)
            probCapacity = max(total, probCapacity)
            layers = (0..<config.nLayers).map { _ in Layer(n: rowCapacity, config: config, probCount: probCapacity) }
            xFinal = FloatBuffer(count: rowCapacity * config.dim)
            rmsFinal = FloatBuffer(count: rowCapacity)
            hidden = FloatBuffer(count: rowCapacity * config.dim)
        }
    }

    /// Input of layer `l`'s successor: the next layer's `xIn`, or `xFinal` after the last.
    func output(ofLayer l: Int) -> FloatBuffer { l + 1 < layers.count ? layers[l + 1].xIn : xFinal }
}
