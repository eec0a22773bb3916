import Foundation

/// The precision of a model's matrix products in inference.
public enum WeightPrecision: String, Sendable, Codable, CaseIterable {
    /// Full float32 (exact against the reference fixtures).
    case float32
    /// bfloat16 matrices, float32 sums: half the bytes per decoded token. A model prepared for batched
    /// decode packs its matrices as bfloat16 pair panels, and every product of 1 to 64 rows (batched decode,
    /// short prompts; any row count where rows must not change each other's bits) rounds its input to
    /// bfloat16 too and multiplies with the fastest kernel of `Kernels.PairPanelKernel` on the CPU:
    /// AVX-512 BF16 (`vdpbf16ps`) where it does at least a float32 FMA's multiply-adds (AMD Zen 4: twice),
    /// AVX-512F FMAs on the split pairs where it does not (the Intel Xeons of the class), or a portable
    /// fallback; all three give the same sums. A model without batched decode keeps a row-major bfloat16 copy for
    /// batch-1 products on float32 inputs. Longer products (prefill) use the float32 matrices.
    case bfloat16
}

/// Immutable, shareable inference state of one model: its weights plus what is derived from them
/// once (the RoPE table, optional bfloat16 matrices). One per process, shared by every session.
public final class LlamaModel: Sendable {
    /// The float32 weights.
    public let weights: ModelWeights
    /// bfloat16 copies laid out like `weights.layout` (matrices only), for batch-1 products of a
    /// bfloat16 model without batched decode.
    let bf16: AlignedBuffer<UInt16>?
    /// Panel-packed float32 copies of the projection and classifier matrices for batched products
    /// (`Kernels.packPanels`) of a float32 model prepared for batched decode.
    let panels: FloatBuffer?
    /// Pair-panel bfloat16 copies (`rlhf_bf16_pack_panels`) of the same matrices, for a bfloat16 model
    /// prepared for batched decode.
    let bf16Panels: AlignedBuffer<UInt16>?
    /// Each tensor-layer's offset in `panels` or `bf16Panels` (in elements).
    let panelOffsets: [ParameterTensor: [Int]]
    /// `(S, hs/2)` RoPE cosines and sines, computed in double precision (after them, the local layers'
    /// where the config has a local base: `LlamaConfig.ropeTableOffset(layer:)`).
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
        let ropeCos = FloatBuffer(count: c.ropeTableCount * c.seqLen * half)
        let ropeSin = FloatBuffer(count: c.ropeTableCount * c.seqLen * half)
        self.ropeCos = ropeCos
        self.ropeSin = ropeSin
        let tables = c.allRoPETables()
        ropeCos.set(tables.cos, at: 0)
        ropeSin.set(tables.sin, at: 0)
        var offsets: [ParameterTensor: [Int]] = [:]
        if batchedDecode {
            var total = 0
            for tensor in LlamaModel.projectionTensors {
                let (n, k) = LlamaModel.matrixShape(tensor, c)
                let count = LlamaModel.panelCount(n: n, k: k, precision: precision)
                let layers = tensor == .classifier ? 1 : c.nLayers
                offsets[tensor] = (0..<layers).map { total + $0 * count }
                total += layers * count
            }
            let source = weights.storage.baseAddress
            /// Every matrix packed into `buffer` at its offset by `pack(dst, W, n, k)`.
            func packed<Element>(_ buffer: AlignedBuffer<Element>,
                                 _ pack: (UnsafeMutablePointer<Element>, UnsafePointer<Float>, Int, Int) -> Void) -> AlignedBuffer<Element> {
                for (tensor, layers) in offsets {
                    let (n, k) = LlamaModel.matrixShape(tensor, c)
                    for (layer, offset) in layers.enumerated() {
                        pack(buffer.baseAddress + offset, source + weights.layout.offset(tensor, layer: layer), n, k)
                    }
                }
                return buffer
            }
            if precision == .bfloat16 {
                bf16Panels = packed(AlignedBuffer<UInt16>(count: total)) { Kernels.packPairPanels($0, $1, n: $2, k: $3) }
                panels = nil
            } else {
                panels = packed(FloatBuffer(count: total)) { Kernels.packPanels($0, $1, n: $2, k: $3) }
                bf16Panels = nil
            }
        } else {
            panels = nil
            bf16Panels = nil
        }
        panelOffsets = offsets
        if precision == .bfloat16 && !batchedDecode {
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
    public static func panelBytes(_ c: LlamaConfig, precision: WeightPrecision = .float32) -> Int {
        projectionTensors.reduce(0) { total, tensor in
            let (n, k) = matrixShape(tensor, c)
            let bytes = precision == .bfloat16 ? 2 : 4
            return total + (tensor == .classifier ? 1 : c.nLayers) * panelCount(n: n, k: k, precision: precision) * bytes
        }
    }

    /// Elements of one panel-packed `(n, k)` matrix in `precision`.
    static func panelCount(n: Int, k: Int, precision: WeightPrecision) -> Int {
        precision == .bfloat16 ? Kernels.pairPanelCount(n: n, k: k) : Kernels.panelCount(n: n, k: k)
    }

    /// The matrices of the forward pass.
    static let projectionTensors: [ParameterTensor] = [.wq, .wk, .wv, .wo, .w1, .w2, .w3, .classifier]

    /// `(out features, in features)` of a projection matrix.
    package static func matrixShape(_ tensor: ParameterTensor, _ c: LlamaConfig) -> (Int, Int) {
        switch tensor {
        case .wq: return (c.queryDim, c.dim)
        case .wo: return (c.dim, c.queryDim)
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
            tensors += [.wq, .wk, .wv, .w1, .w3, c.sharedClassifier ? .tokenEmbedding : .classifier]
        }
        if c.queryDim % 32 == 0 { tensors.append(.wo) }
        if c.hiddenDim % 32 == 0 { tensors.append(.w2) }
        return tensors
    }

    /// Whether batch-1 products with `tensor` read the row-major bfloat16 copy.
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
            bytes += count * (usesBF16(t) || bf16Panels != nil ? 2 : 4)
        }
        return bytes + (2 * c.nLayers + 1) * c.dim * 4 + c.dim * 4
    }
}

/// The keys and values of one sequence, `(L, S, KVD)` each (position-major, so that attention reads a
/// layer's history for all heads as one sequential stream), and how many positions are filled.
public final class KVCache {
    /// What a cache stores its keys and values as.
    public enum Precision: String, Sendable, Codable, CaseIterable {
        /// float32 (exact).
        case float32
        /// bfloat16, rounded to nearest even on writing and widened exactly on reading: half the memory
        /// and half the bytes attention streams per decoded token.
        case bfloat16
    }

    /// The config the cache was sized for.
    public let config: LlamaConfig
    /// What the cache stores values as.
    public let precision: Precision
    /// float32 keys and values (empty when `precision` is bfloat16).
    let keys: FloatBuffer
    let values: FloatBuffer
    /// bfloat16 keys and values (empty when `precision` is float32).
    let keys16: AlignedBuffer<UInt16>
    let values16: AlignedBuffer<UInt16>
    /// Number of positions written (the next token goes at `length`).
    public internal(set) var length: Int = 0

    /// A cache for one sequence of up to `config.seqLen` tokens.
    public init(config: LlamaConfig, precision: Precision = .float32) {
        self.config = config
        self.precision = precision
        // Small pages: a layer's block is resident only as far as the sequence reached (a huge page would
        // fault in 2 MiB of it at the first position).
        let count = config.nLayers * config.seqLen * config.kvDim
        keys = FloatBuffer(count: precision == .float32 ? count : 0, hugePages: false)
        values = FloatBuffer(count: precision == .float32 ? count : 0, hugePages: false)
        keys16 = AlignedBuffer<UInt16>(count: precision == .bfloat16 ? count : 0, hugePages: false)
        values16 = AlignedBuffer<UInt16>(count: precision == .bfloat16 ? count : 0, hugePages: false)
    }

    /// Bytes a cache of `precision` takes per value.
    public static func bytesPerValue(_ precision: Precision) -> Int { precision == .float32 ? 4 : 2 }

    /// Stores `(KVD)` key `k` and value `v` at `position` of `layer`.
    func store(layer: Int, position: Int, key k: UnsafePointer<Float>, value v: UnsafePointer<Float>) {
        let kvd = config.kvDim
        let slot = (layer * config.seqLen + position) * kvd
        switch precision {
        case .float32:
            (keys.baseAddress + slot).update(from: k, count: kvd)
            (values.baseAddress + slot).update(from: v, count: kvd)
        case .bfloat16:
            let k16 = keys16.baseAddress + slot, v16 = values16.baseAddress + slot
            for i in 0..<kvd {
                k16[i] = Kernels.bfloat16(k[i])
                v16[i] = Kernels.bfloat16(v[i])
            }
        }
    }

    /// Forgets the sequence (keeps the memory).
    public func reset() { length = 0 }

    /// Drops positions from `newLength` on (for re-generation from a shared prefix).
    public func truncate(to newLength: Int) {
        precondition(newLength >= 0 && newLength <= length, "truncate beyond the cached length")
        length = newLength
    }
}
