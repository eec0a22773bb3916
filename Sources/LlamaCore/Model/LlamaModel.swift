import Foundation

/// How a model stores the matrices it uses for batch-1 generation.
public enum WeightPrecision: String, Sendable, Codable, CaseIterable {
    /// Full float32 (exact against the reference fixtures).
    case float32
    /// bfloat16 copies of the projection and classifier matrices, float32 accumulation: half the bytes
    /// per decoded token. Batch-1 products read the copies (and a shared embedding is looked up from
    /// its copy); products over several rows (prefill, batched decode) use the float32 matrices.
    case bfloat16
}

/// Immutable, shareable inference state of one model: its weights plus what is derived from them
/// once (the RoPE table, optional bfloat16 matrices). One per process, shared by every session.
public final class LlamaModel: Sendable {
    /// The float32 weights.
    public let weights: ModelWeights
    /// bfloat16 copies laid out like `weights.layout` (matrices only), when requested.
    let bf16: AlignedBuffer<UInt16>?
    /// Panel-packed copies of the projection and classifier matrices for batched products
    /// (`Kernels.packPanels`), with each tensor-layer's offset; nil when not requested.
    let panels: FloatBuffer?
    let panelOffsets: [ParameterTensor: [Int]]
    /// `(S, hs/2)` RoPE cosines and sines, computed in double precision.
    let ropeCos: FloatBuffer
    let ropeSin: FloatBuffer

    /// The model's hyper-parameters.
    public var config: LlamaConfig { weights.config }
    /// The precision used for batch-1 matrix-vector products.
    public let precision: WeightPrecision

    /// Prepares `weights` for inference in `precision`. With `batchedDecode`, the matrices are also
    /// packed into panels (one more float32 copy) so that products over 2 to 64 rows (batched decode,
    /// short prompts) run at compute speed instead of re-packing the weights on every call.
    public init(weights: ModelWeights, precision: WeightPrecision = .float32, batchedDecode: Bool = true) {
        self.weights = weights
        self.precision = precision
        let c = weights.config
        let half = c.headSize / 2
        let ropeCos = FloatBuffer(count: c.seqLen * half)
        let ropeSin = FloatBuffer(count: c.seqLen * half)
        self.ropeCos = ropeCos
        self.ropeSin = ropeSin
        ropeCos.withUnsafeMutableBufferPointer { cosBuf in
            ropeSin.withUnsafeMutableBufferPointer { sinBuf in
                for t in 0..<c.seqLen {
                    for i in 0..<half {
                        let freq = 1.0 / pow(Double(c.ropeTheta), Double(2 * i) / Double(c.headSize))
                        let angle = Double(t) * freq
                        cosBuf[t * half + i] = Float(cos(angle))
                        sinBuf[t * half + i] = Float(sin(angle))
                    }
                }
            }
        }
        if batchedDecode {
            var offsets: [ParameterTensor: [Int]] = [:]
            var total = 0
            let matrices = LlamaModel.projectionTensors
            for tensor in matrices {
                let (n, k) = LlamaModel.matrixShape(tensor, c)
                let layers = tensor == .classifier ? 1 : c.nLayers
                offsets[tensor] = (0..<layers).map { total + $0 * Kernels.panelCount(n: n, k: k) }
                total += layers * Kernels.panelCount(n: n, k: k)
            }
            let buffer = FloatBuffer(count: total)
            for tensor in matrices {
                let (n, k) = LlamaModel.matrixShape(tensor, c)
                for (layer, offset) in offsets[tensor]!.enumerated() {
                    Kernels.packPanels(buffer.baseAddress + offset,
                                       weights.storage.baseAddress + weights.layout.offset(tensor, layer: layer), n: n, k: k)
                }
            }
            panels = buffer
            panelOffsets = offsets
        } else {
            panels = nil
            panelOffsets = [:]
        }
        if precision == .bfloat16 {
            let layout = weights.layout
            let buffer = AlignedBuffer<UInt16>(count: layout.totalCount)
            buffer.withUnsafeMutableBufferPointer { dst in
                weights.storage.withUnsafeBufferPointer { src in
                    for tensor in LlamaModel.bf16Tensors(c) {
                        for i in layout.range(tensor) { dst[i] = Kernels.bfloat16(src[i]) }
                    }
                }
            }
            bf16 = buffer
        } else {
            bf16 = nil
        }
    }

    /// Loads a checkpoint file (legacy or version 1) and prepares it.
    public convenience init(checkpoint path: String, precision: WeightPrecision = .float32) throws {
        self.init(weights: try Checkpoint.read(path: path).weights, precision: precision)
    }

    /// Bytes of the panel-packed copies a model prepared for batched decode holds (`batchedDecode`).
    public static func panelBytes(_ c: LlamaConfig) -> Int {
        projectionTensors.reduce(0) { total, tensor in
            let (n, k) = matrixShape(tensor, c)
            return total + (tensor == .classifier ? 1 : c.nLayers) * Kernels.panelCount(n: n, k: k) * 4
        }
    }

    /// The matrices of the forward pass.
    static let projectionTensors: [ParameterTensor] = [.wq, .wk, .wv, .wo, .w1, .w2, .w3, .classifier]

    /// `(out features, in features)` of a projection matrix.
    static func matrixShape(_ tensor: ParameterTensor, _ c: LlamaConfig) -> (Int, Int) {
        switch tensor {
        case .wq, .wo: return (c.dim, c.dim)
        case .wk, .wv: return (c.kvDim, c.dim)
        case .w1, .w3: return (c.hiddenDim, c.dim)
        case .w2: return (c.dim, c.hiddenDim)
        default: return (c.vocabSize, c.dim)
        }
    }

    /// Matrices stored in bfloat16: those whose input width is a multiple of 32 (the kernel's block).
    static func bf16Tensors(_ c: LlamaConfig) -> [ParameterTensor] {
        var tensors: [ParameterTensor] = []
        if c.dim % 32 == 0 {
            tensors += [.wq, .wk, .wv, .wo, .w1, .w3, c.sharedClassifier ? .tokenEmbedding : .classifier]
        }
        if c.hiddenDim % 32 == 0 { tensors.append(.w2) }
        return tensors
    }

    /// Whether batch-1 products with `tensor` read bfloat16.
    func usesBF16(_ tensor: ParameterTensor) -> Bool {
        guard bf16 != nil else { return false }
        let resolved = tensor == .classifier && config.sharedClassifier ? .tokenEmbedding : tensor
        return LlamaModel.bf16Tensors(config).contains(resolved)
    }

    /// Bytes of weights one batch-1 decode step streams from memory (matrices in the precision used,
    /// one embedding row, norms).
    public var bytesPerDecodedToken: Int {
        let c = config
        var bytes = 0
        let matrices: [ParameterTensor] = [.wq, .wk, .wv, .wo, .w1, .w2, .w3, .classifier]
        for t in matrices {
            let count = t == .classifier ? c.vocabSize * c.dim : ParameterLayout.shape(t, c).reduce(1, *)
            bytes += count * (usesBF16(t) ? 2 : 4)
        }
        return bytes + (2 * c.nLayers + 1) * c.dim * 4 + c.dim * 4
    }
}

/// The keys and values of one sequence, `(L, S, KVD)` each (position-major, so that attention reads a
/// layer's history for all heads as one sequential stream), and how many positions are filled.
public final class KVCache {
    /// The config the cache was sized for.
    public let config: LlamaConfig
    let keys: FloatBuffer
    let values: FloatBuffer
    /// Number of positions written (the next token goes at `length`).
    public internal(set) var length: Int = 0

    /// A cache for one sequence of up to `config.seqLen` tokens.
    public init(config: LlamaConfig) {
        self.config = config
        // Small pages: a layer's block is resident only as far as the sequence reached (a huge page would
        // fault in 2 MiB of it at the first position).
        keys = FloatBuffer(count: config.nLayers * config.seqLen * config.kvDim, hugePages: false)
        values = FloatBuffer(count: config.nLayers * config.seqLen * config.kvDim, hugePages: false)
    }

    /// Forgets the sequence (keeps the memory).
    public func reset() { length = 0 }

    /// Drops positions from `newLength` on (for re-generation from a shared prefix).
    public func truncate(to newLength: Int) {
        precondition(newLength >= 0 && newLength <= length, "truncate beyond the cached length")
        length = newLength
    }
}
