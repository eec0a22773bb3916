/// The tensors of a LLaMA2 checkpoint, in llama2.c's legacy file order.
public enum ParameterTensor: Int, CaseIterable, Sendable, Codable {
    /// `(V, D)` token embedding (also the classifier when shared).
    case tokenEmbedding
    /// `(L, D)` RMSNorm weight before attention (absent without `inputNorms`, as `rmsFFN`).
    case rmsAttention
    /// `(L, QD, D)` query projection (rows are output features).
    case wq
    /// `(L, KVD, D)` key projection.
    case wk
    /// `(L, KVD, D)` value projection.
    case wv
    /// `(L, D, QD)` attention output projection.
    case wo
    /// `(L, D)` RMSNorm weight before the FFN.
    case rmsFFN
    /// `(L, H, D)` SwiGLU gate projection.
    case w1
    /// `(L, D, H)` SwiGLU down projection.
    case w2
    /// `(L, H, D)` SwiGLU up projection.
    case w3
    /// `(D)` final RMSNorm weight.
    case rmsFinal
    /// `(S, hs/2)` legacy-format RoPE cosine table, unused by the math (RoPE is recomputed) but kept so
    /// that a legacy checkpoint reads and writes back byte-identically.
    case freqCisReal
    /// `(S, hs/2)` legacy-format RoPE sine table, kept like `freqCisReal`.
    case freqCisImag
    /// `(V, D)` separate classifier; absent when the classifier is shared.
    case classifier
    /// `(L, QD)` query bias (Qwen2's blocks; absent without `attentionBias`, and in llama2.c files).
    case bq
    /// `(L, KVD)` key bias, as `bq`.
    case bk
    /// `(L, KVD)` value bias, as `bq`.
    case bv
    /// `(L, hs)` RMSNorm weight of each query head (Qwen3's blocks; `(L, QD)` across heads, OLMo 2's; absent
    /// without `qkNorm`).
    case qNorm
    /// `(L, hs)` RMSNorm weight of each key head, as `qNorm`.
    case kNorm
    /// `(L, D)` RMSNorm weight of the attention's output before the residual add (Gemma's
    /// `post_attention_layernorm`; absent without `postNorms`).
    case rmsPostAttention
    /// `(L, D)` RMSNorm weight of the feed-forward's output before the residual add, as `rmsPostAttention`.
    case rmsPostFFN

    /// Whether this is one of the attention biases (`bq`, `bk`, `bv`).
    public var isAttentionBias: Bool { self == .bq || self == .bk || self == .bv }
    /// Whether this is one of the query/key norms (`qNorm`, `kNorm`).
    public var isQueryKeyNorm: Bool { self == .qNorm || self == .kNorm }
    /// Whether this is one of the norms of a block's inputs (`rmsAttention`, `rmsFFN`).
    public var isInputNorm: Bool { self == .rmsAttention || self == .rmsFFN }
    /// Whether this is one of the norms of a block's outputs (`rmsPostAttention`, `rmsPostFFN`).
    public var isPostNorm: Bool { self == .rmsPostAttention || self == .rmsPostFFN }
    /// Whether this is an RMSNorm weight (multiplies normalised activations; 1 in a fresh model).
    public var isNormWeight: Bool {
        [.rmsAttention, .rmsFFN, .rmsFinal, .qNorm, .kNorm, .rmsPostAttention, .rmsPostFFN].contains(self)
    }

    /// The name llama2.c and PyTorch exports use.
    public var name: String {
        switch self {
        case .tokenEmbedding: return "tok_embeddings"
        case .rmsAttention: return "attention_norm"
        case .wq: return "wq"
        case .wk: return "wk"
        case .wv: return "wv"
        case .wo: return "wo"
        case .rmsFFN: return "ffn_norm"
        case .w1: return "w1"
        case .w2: return "w2"
        case .w3: return "w3"
        case .rmsFinal: return "norm"
        case .freqCisReal: return "freq_cis_real"
        case .freqCisImag: return "freq_cis_imag"
        case .classifier: return "output"
        case .bq: return "bq"
        case .bk: return "bk"
        case .bv: return "bv"
        case .qNorm: return "q_norm"
        case .kNorm: return "k_norm"
        case .rmsPostAttention: return "post_attention_norm"
        case .rmsPostFFN: return "post_ffn_norm"
        }
    }
}

/// Where each tensor of a config lives inside one `FloatBuffer`, in legacy file order. Every tensor
/// starts on a 64-byte boundary; per-layer slices are contiguous `(rows, cols)` matrices.
public struct ParameterLayout: Sendable, Equatable {
    /// The config the layout was computed for.
    public let config: LlamaConfig
    /// Offsets (in floats) of each present tensor, indexed by `ParameterTensor.rawValue`.
    private let offsets: [Int]
    /// Element counts of each tensor (0 when absent).
    private let counts: [Int]
    /// Total floats the buffer needs, padding included.
    public let totalCount: Int

    /// Computes the layout of `config`.
    public init(config: LlamaConfig) {
        self.config = config
        var offsets = [Int](repeating: 0, count: ParameterTensor.allCases.count)
        var counts = [Int](repeating: 0, count: ParameterTensor.allCases.count)
        var cursor = 0
        for tensor in ParameterTensor.allCases {
            let n = ParameterLayout.elementCount(tensor, config)
            counts[tensor.rawValue] = n
            offsets[tensor.rawValue] = cursor
            cursor += (n + 15) / 16 * 16
        }
        if config.sharedClassifier { offsets[ParameterTensor.classifier.rawValue] = offsets[0] }
        self.offsets = offsets
        self.counts = counts
        self.totalCount = cursor
    }

    /// The shape of one tensor (layer dimension first for per-layer tensors).
    public static func shape(_ tensor: ParameterTensor, _ c: LlamaConfig) -> [Int] {
        switch tensor {
        case .tokenEmbedding: return [c.vocabSize, c.dim]
        case .rmsAttention, .rmsFFN: return c.inputNorms ? [c.nLayers, c.dim] : [0]
        case .wq: return [c.nLayers, c.queryDim, c.dim]
        case .wo: return [c.nLayers, c.dim, c.queryDim]
        case .wk, .wv: return [c.nLayers, c.kvDim, c.dim]
        case .w1, .w3: return [c.nLayers, c.hiddenDim, c.dim]
        case .w2: return [c.nLayers, c.dim, c.hiddenDim]
        case .rmsFinal: return [c.dim]
        case .freqCisReal, .freqCisImag: return [c.seqLen, c.headSize / 2]
        case .classifier: return c.sharedClassifier ? [0] : [c.vocabSize, c.dim]
        case .bq: return c.attentionBias ? [c.nLayers, c.queryDim] : [0]
        case .bk, .bv: return c.attentionBias ? [c.nLayers, c.kvDim] : [0]
        case .qNorm: return c.qkNorm ? [c.nLayers, c.qkNormGroups(heads: c.nHeads).size] : [0]
        case .kNorm: return c.qkNorm ? [c.nLayers, c.qkNormGroups(heads: c.nKVHeads).size] : [0]
        case .rmsPostAttention, .rmsPostFFN: return c.postNorms ? [c.nLayers, c.dim] : [0]
        }
    }

    static func elementCount(_ tensor: ParameterTensor, _ c: LlamaConfig) -> Int {
        shape(tensor, c).reduce(1, *)
    }

    /// Number of elements stored for `tensor` (0 for a shared classifier).
    public func count(_ tensor: ParameterTensor) -> Int { counts[tensor.rawValue] }

    /// Offset of `tensor`'s first element. A shared classifier resolves to the token embedding.
    public func offset(_ tensor: ParameterTensor) -> Int { offsets[tensor.rawValue] }

    /// Element range of `tensor` (the stored elements; empty for a shared classifier).
    public func range(_ tensor: ParameterTensor) -> Range<Int> {
        offsets[tensor.rawValue] ..< offsets[tensor.rawValue] + counts[tensor.rawValue]
    }

    /// Offset of layer `layer`'s slice of a per-layer tensor.
    public func offset(_ tensor: ParameterTensor, layer: Int) -> Int {
        let shape = ParameterLayout.shape(tensor, config)
        return offsets[tensor.rawValue] + layer * shape.dropFirst().reduce(1, *)
    }

    /// The tensors a checkpoint with this config stores, in legacy file order (then the attention
    /// biases, the query/key norms and the post norms, where the config has them).
    public var storedTensors: [ParameterTensor] {
        ParameterTensor.allCases.filter {
            ($0 != .classifier || !config.sharedClassifier) && (!$0.isAttentionBias || config.attentionBias)
                && (!$0.isQueryKeyNorm || config.qkNorm) && (!$0.isPostNorm || config.postNorms) && (!$0.isInputNorm || config.inputNorms)
        }
    }

    /// The trainable tensors (everything but the legacy RoPE tables).
    public var trainableTensors: [ParameterTensor] {
        storedTensors.filter { $0 != .freqCisReal && $0 != .freqCisImag }
    }
}
