import Foundation

/// Hyper-parameters of a LLaMA2 transformer, as in llama2.c's checkpoint header plus what the header leaves
/// implicit (norm epsilon, RoPE theta and RoPE scaling).
///
/// Shape letters used across LlamaCore: `B` sequences in a batch, `T` tokens, `D = dim`,
/// `H = hiddenDim`, `L = nLayers`, `V = vocabSize`, `S = seqLen`, `hs = headSize`,
/// `QD = nHeads * headSize` (the queries' and the attention output's width: `D` unless the head size is
/// set apart from it), `KVD = nKVHeads * headSize`.
public struct LlamaConfig: Codable, Sendable, Equatable {
    /// Model width `D`.
    public var dim: Int
    /// SwiGLU hidden width `H`.
    public var hiddenDim: Int
    /// Number of transformer blocks `L`.
    public var nLayers: Int
    /// Number of query heads.
    public var nHeads: Int
    /// Number of key/value heads (grouped-query attention when smaller than `nHeads`).
    public var nKVHeads: Int
    /// Vocabulary size `V`.
    public var vocabSize: Int
    /// Maximum sequence length `S` (size of the KV cache and of the RoPE table).
    public var seqLen: Int
    /// True when the classifier shares the token-embedding matrix.
    public var sharedClassifier: Bool
    /// RMSNorm epsilon (LLaMA2: 1e-5).
    public var normEps: Float
    /// RoPE base (LLaMA2: 10000).
    public var ropeTheta: Float
    /// How RoPE's frequencies are stretched (nil: LLaMA2's unscaled RoPE).
    public var ropeScaling: RoPEScaling?
    /// True when the query, key and value projections add a bias (Qwen2's blocks: `bq`, `bk`, `bv`);
    /// LLaMA2's have none.
    public var attentionBias: Bool
    /// A head size set apart from `dim / nHeads` (Qwen3's `head_dim`: 128 at a width of 1024 with 16
    /// heads); nil: `dim / nHeads`, as LLaMA2's. Never equal to `dim / nHeads` (the initialiser drops it).
    public private(set) var explicitHeadSize: Int?
    /// True when queries and keys are RMS-normalised per head (weights `qNorm`, `kNorm` of `hs` each)
    /// after their projection and before RoPE (Qwen3's blocks); LLaMA2's are not.
    public var qkNorm: Bool
    /// With `qkNorm`: each row's queries and keys normalised whole, over `QD` and `KVD` (weights of those widths),
    /// rather than head by head (OLMo 2's blocks).
    public var qkNormAcrossHeads: Bool
    /// The layers whose attention applies no RoPE to queries and keys (SmolLM3's "NoPE" layers, every
    /// fourth), in ascending order; empty: every layer rotates, as LLaMA2's.
    public var layersWithoutRoPE: [Int]
    /// The gated feed-forward's activation: SiLU (LLaMA's SwiGLU) or GELU's tanh approximation (Gemma's GeGLU).
    public var activation: FeedForwardActivation
    /// A factor on every token embedding the model reads (Gemma: `sqrt(D)`, rounded to float32); nil: none,
    /// as LLaMA2's. The classifier (shared or not) reads no factor.
    public var embeddingScale: Float?
    /// True when each block also RMS-normalises its attention's and its feed-forward's outputs before adding
    /// them to the residual stream (Gemma 2 and 3's "sandwich" norms: weights `rmsPostAttention`, `rmsPostFFN`).
    public var postNorms: Bool
    /// Attention's score scale when it is not `1 / sqrt(hs)` (Gemma's `query_pre_attn_scalar^-0.5`); nil: `1 / sqrt(hs)`.
    public var explicitAttentionScale: Float?
    /// A second RoPE base for the layers in `localRoPELayers` (Gemma 3's sliding-window layers rotate with
    /// 10000 where its global layers use 1e6), unscaled; nil: every layer rotates with `ropeTheta` and `ropeScaling`.
    public var localRoPETheta: Float?
    /// The layers that rotate with `localRoPETheta`, in ascending order (empty without it).
    public var localRoPELayers: [Int]
    /// True (LLaMA's pre-norm blocks) when each block RMS-normalises the inputs of its attention and feed-forward
    /// (weights `rmsAttention`, `rmsFFN`); false when they read the residual stream as it is (OLMo 2's blocks,
    /// which normalise the outputs instead: `postNorms`).
    public var inputNorms: Bool
    /// What the checkpoint's family stores a norm's weight offset by: Gemma's norms scale by `1 + weight`, so its
    /// files hold the core's scale minus 1 (read adds it, writing subtracts it, weight decay pulls toward it); 0
    /// for the others.
    public var normWeightOffset: Float
    /// Gemma 2's softcapping of the attention scores: each scaled score `s` becomes `cap * tanh(s / cap)` before the
    /// softmax (`attn_logit_softcapping`); nil: none.
    public var attentionSoftcap: Float?
    /// Gemma 2's softcapping of the logits, `cap * tanh(logit / cap)` (`final_logit_softcapping`); nil: none.
    public var logitSoftcap: Float?
    /// Sliding-window attention (Mistral's, Phi-3's, Gemma 2's and 3's `sliding_window`): in the layers of
    /// `slidingWindowLayers` the query at position `i` attends to the keys at `j` with `i - W < j <= i` only;
    /// nil: every layer attends to all earlier positions.
    public var slidingWindow: Int?
    /// The layers that attend through `slidingWindow`, in ascending order (every layer for Mistral and Phi-3,
    /// Gemma's `sliding_attention` layers); empty without a window.
    public var slidingWindowLayers: [Int]

    /// Creates a config; call `validate()` (checkpoint readers do) before using it. `headSize`: the size
    /// of one attention head when it is not `dim / nHeads`.
    public init(dim: Int, hiddenDim: Int, nLayers: Int, nHeads: Int, nKVHeads: Int, vocabSize: Int,
                seqLen: Int, sharedClassifier: Bool = true, normEps: Float = 1e-5, ropeTheta: Float = 10000,
                ropeScaling: RoPEScaling? = nil, attentionBias: Bool = false, headSize: Int? = nil, qkNorm: Bool = false,
                layersWithoutRoPE: [Int] = [], activation: FeedForwardActivation = .silu, embeddingScale: Float? = nil,
                postNorms: Bool = false, attentionScale: Float? = nil, localRoPETheta: Float? = nil, localRoPELayers: [Int] = [],
                qkNormAcrossHeads: Bool = false, inputNorms: Bool = true, normWeightOffset: Float = 0,
                attentionSoftcap: Float? = nil, logitSoftcap: Float? = nil, slidingWindow: Int? = nil, slidingWindowLayers: [Int] = []) {
        self.dim = dim
        self.hiddenDim = hiddenDim
        self.nLayers = nLayers
        self.nHeads = nHeads
        self.nKVHeads = nKVHeads
        self.vocabSize = vocabSize
        self.seqLen = seqLen
        self.sharedClassifier = sharedClassifier
        self.normEps = normEps
        self.ropeTheta = ropeTheta
        self.ropeScaling = ropeScaling
        self.attentionBias = attentionBias
        let implied = nHeads > 0 && dim % nHeads == 0 ? dim / nHeads : nil
        self.explicitHeadSize = headSize == implied ? nil : headSize
        self.qkNorm = qkNorm
        self.layersWithoutRoPE = layersWithoutRoPE
        self.activation = activation
        self.embeddingScale = embeddingScale
        self.postNorms = postNorms
        self.explicitAttentionScale = attentionScale
        self.localRoPETheta = localRoPETheta
        self.localRoPELayers = localRoPELayers
        self.qkNormAcrossHeads = qkNormAcrossHeads
        self.inputNorms = inputNorms
        self.normWeightOffset = normWeightOffset
        self.attentionSoftcap = attentionSoftcap
        self.logitSoftcap = logitSoftcap
        self.slidingWindow = slidingWindow
        self.slidingWindowLayers = slidingWindowLayers
    }

    private enum CodingKeys: String, CodingKey {
        case dim, hiddenDim, nLayers, nHeads, nKVHeads, vocabSize, seqLen, sharedClassifier, normEps, ropeTheta, ropeScaling, attentionBias
        case headSize, qkNorm, layersWithoutRoPE
        case activation, embeddingScale, postNorms, attentionScale, localRoPETheta, localRoPELayers
        case qkNormAcrossHeads, inputNorms, normWeightOffset, attentionSoftcap, logitSoftcap
        case slidingWindow, slidingWindowLayers
    }

    /// Decodes a config; one written before `attentionBias`, `headSize`, `qkNorm`, `layersWithoutRoPE`,
    /// Gemma's and OLMo 2's fields (`activation` to `logitSoftcap`) or the sliding window existed has none of
    /// them (LLaMA2's).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(dim: try c.decode(Int.self, forKey: .dim), hiddenDim: try c.decode(Int.self, forKey: .hiddenDim),
                  nLayers: try c.decode(Int.self, forKey: .nLayers), nHeads: try c.decode(Int.self, forKey: .nHeads),
                  nKVHeads: try c.decode(Int.self, forKey: .nKVHeads), vocabSize: try c.decode(Int.self, forKey: .vocabSize),
                  seqLen: try c.decode(Int.self, forKey: .seqLen), sharedClassifier: try c.decode(Bool.self, forKey: .sharedClassifier),
                  normEps: try c.decode(Float.self, forKey: .normEps), ropeTheta: try c.decode(Float.self, forKey: .ropeTheta),
                  ropeScaling: try c.decodeIfPresent(RoPEScaling.self, forKey: .ropeScaling),
                  attentionBias: try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false,
                  headSize: try c.decodeIfPresent(Int.self, forKey: .headSize),
                  qkNorm: try c.decodeIfPresent(Bool.self, forKey: .qkNorm) ?? false,
                  layersWithoutRoPE: try c.decodeIfPresent([Int].self, forKey: .layersWithoutRoPE) ?? [],
                  activation: try c.decodeIfPresent(FeedForwardActivation.self, forKey: .activation) ?? .silu,
                  embeddingScale: try c.decodeIfPresent(Float.self, forKey: .embeddingScale),
                  postNorms: try c.decodeIfPresent(Bool.self, forKey: .postNorms) ?? false,
                  attentionScale: try c.decodeIfPresent(Float.self, forKey: .attentionScale),
                  localRoPETheta: try c.decodeIfPresent(Float.self, forKey: .localRoPETheta),
                  localRoPELayers: try c.decodeIfPresent([Int].self, forKey: .localRoPELayers) ?? [],
                  qkNormAcrossHeads: try c.decodeIfPresent(Bool.self, forKey: .qkNormAcrossHeads) ?? false,
                  inputNorms: try c.decodeIfPresent(Bool.self, forKey: .inputNorms) ?? true,
                  normWeightOffset: try c.decodeIfPresent(Float.self, forKey: .normWeightOffset) ?? 0,
                  attentionSoftcap: try c.decodeIfPresent(Float.self, forKey: .attentionSoftcap),
                  logitSoftcap: try c.decodeIfPresent(Float.self, forKey: .logitSoftcap),
                  slidingWindow: try c.decodeIfPresent(Int.self, forKey: .slidingWindow),
                  slidingWindowLayers: try c.decodeIfPresent([Int].self, forKey: .slidingWindowLayers) ?? [])
    }

    /// Encodes a config; the head size, the query/key norms, the layers without RoPE, Gemma's fields and the
    /// sliding window only where they are set (a LLaMA2 config encodes as before they existed).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(dim, forKey: .dim)
        try c.encode(hiddenDim, forKey: .hiddenDim)
        try c.encode(nLayers, forKey: .nLayers)
        try c.encode(nHeads, forKey: .nHeads)
        try c.encode(nKVHeads, forKey: .nKVHeads)
        try c.encode(vocabSize, forKey: .vocabSize)
        try c.encode(seqLen, forKey: .seqLen)
        try c.encode(sharedClassifier, forKey: .sharedClassifier)
        try c.encode(normEps, forKey: .normEps)
        try c.encode(ropeTheta, forKey: .ropeTheta)
        try c.encodeIfPresent(ropeScaling, forKey: .ropeScaling)
        try c.encode(attentionBias, forKey: .attentionBias)
        try c.encodeIfPresent(explicitHeadSize, forKey: .headSize)
        if qkNorm { try c.encode(qkNorm, forKey: .qkNorm) }
        if !layersWithoutRoPE.isEmpty { try c.encode(layersWithoutRoPE, forKey: .layersWithoutRoPE) }
        if activation != .silu { try c.encode(activation, forKey: .activation) }
        try c.encodeIfPresent(embeddingScale, forKey: .embeddingScale)
        if postNorms { try c.encode(postNorms, forKey: .postNorms) }
        try c.encodeIfPresent(explicitAttentionScale, forKey: .attentionScale)
        try c.encodeIfPresent(localRoPETheta, forKey: .localRoPETheta)
        if !localRoPELayers.isEmpty { try c.encode(localRoPELayers, forKey: .localRoPELayers) }
        if qkNormAcrossHeads { try c.encode(qkNormAcrossHeads, forKey: .qkNormAcrossHeads) }
        if !inputNorms { try c.encode(inputNorms, forKey: .inputNorms) }
        if normWeightOffset != 0 { try c.encode(normWeightOffset, forKey: .normWeightOffset) }
        try c.encodeIfPresent(attentionSoftcap, forKey: .attentionSoftcap)
        try c.encodeIfPresent(logitSoftcap, forKey: .logitSoftcap)
        try c.encodeIfPresent(slidingWindow, forKey: .slidingWindow)
        if !slidingWindowLayers.isEmpty { try c.encode(slidingWindowLayers, forKey: .slidingWindowLayers) }
    }

    /// How the query/key norms split a row of `heads` heads: `groups` normalised apart, `size` values each
    /// (`heads` of `hs` per head, or one of `heads * hs` across heads).
    @inline(__always)
    public func qkNormGroups(heads: Int) -> (groups: Int, size: Int) {
        qkNormAcrossHeads ? (1, heads * headSize) : (heads, headSize)
    }

    /// Attention's score scale: `1 / sqrt(hs)`, or the one set apart from it.
    public var attentionScale: Float { explicitAttentionScale ?? 1 / Float(headSize).squareRoot() }

    /// Whether layer `l` rotates with the local RoPE base (`localRoPETheta`).
    @inline(__always)
    public func usesLocalRoPE(layer l: Int) -> Bool { !localRoPELayers.isEmpty && localRoPELayers.contains(l) }

    /// Where layer `l`'s rows start in `ropeTables(local:)`'s concatenation as the models keep it
    /// (`ropeTableCount` tables of `(S, hs / 2)`, the global one first).
    @inline(__always)
    public func ropeTableOffset(layer l: Int) -> Int { usesLocalRoPE(layer: l) ? seqLen * (headSize / 2) : 0 }

    /// Layer `l`'s sliding window `W` (its queries attend to the last `W` positions, their own included), or
    /// nil where the layer attends to every earlier position.
    @inline(__always)
    public func attentionWindow(layer l: Int) -> Int? {
        guard let slidingWindow, slidingWindowLayers.contains(l) else { return nil }
        return slidingWindow
    }

    /// The first key position a query at `position` attends to through `window` (`attentionWindow(layer:)`).
    @inline(__always)
    public static func firstAttendedKey(position: Int, window: Int?) -> Int {
        guard let window else { return 0 }
        return max(0, position - window + 1)
    }

    /// How many RoPE tables the layers read: 2 with a local base, else 1.
    public var ropeTableCount: Int { localRoPETheta == nil ? 1 : 2 }

    /// Whether layer `l`'s attention rotates its queries and keys (RoPE).
    @inline(__always)
    public func usesRoPE(layer l: Int) -> Bool { layersWithoutRoPE.isEmpty || !layersWithoutRoPE.contains(l) }

    /// Size of one attention head: `hs = D / nHeads`, or the size set apart from it.
    public var headSize: Int { explicitHeadSize ?? (nHeads > 0 ? dim / nHeads : 0) }
    /// Width of the queries and of the attention's output, `QD = nHeads * hs` (`D` for LLaMA2's shapes).
    public var queryDim: Int { nHeads * headSize }
    /// Width of the key and value projections, `KVD = nKVHeads * hs`.
    public var kvDim: Int { nKVHeads * headSize }
    /// Query heads that share one key/value head.
    public var kvGroupSize: Int { nHeads / nKVHeads }

    /// Checks every field and the relations between them; the error names the offending field.
    public func validate() throws {
        func positive(_ value: Int, _ field: String) throws {
            if value <= 0 { throw LlamaError.invalidConfig(field: field, reason: "must be positive, got \(value)") }
        }
        try positive(dim, "dim")
        try positive(hiddenDim, "hidden_dim")
        try positive(nLayers, "n_layers")
        try positive(nHeads, "n_heads")
        try positive(nKVHeads, "n_kv_heads")
        try positive(vocabSize, "vocab_size")
        try positive(seqLen, "seq_len")
        if let explicitHeadSize {
            try positive(explicitHeadSize, "head_dim")
        } else if dim % nHeads != 0 {
            throw LlamaError.invalidConfig(field: "n_heads", reason: "dim \(dim) is not a multiple of n_heads \(nHeads)")
        }
        if nKVHeads > nHeads || nHeads % nKVHeads != 0 {
            throw LlamaError.invalidConfig(field: "n_kv_heads",
                                 reason: "n_heads \(nHeads) is not a multiple of n_kv_heads \(nKVHeads)")
        }
        if headSize % 2 != 0 {
            throw explicitHeadSize == nil
                ? LlamaError.invalidConfig(field: "n_heads", reason: "head size dim/n_heads = \(headSize) is odd; RoPE rotates pairs")
                : LlamaError.invalidConfig(field: "head_dim", reason: "head size \(headSize) is odd; RoPE rotates pairs")
        }
        if !(normEps > 0) || !normEps.isFinite {
            throw LlamaError.invalidConfig(field: "norm_eps", reason: "must be a positive finite number, got \(normEps)")
        }
        if !(ropeTheta > 1) || !ropeTheta.isFinite {
            throw LlamaError.invalidConfig(field: "rope_theta", reason: "must be a finite number above 1, got \(ropeTheta)")
        }
        try ropeScaling?.validate()
        if let wrong = layersWithoutRoPE.first(where: { !(0..<nLayers).contains($0) }) {
            throw LlamaError.invalidConfig(field: "no_rope_layers", reason: "layer \(wrong) is not one of the \(nLayers) layers")
        }
        if layersWithoutRoPE != Array(Set(layersWithoutRoPE)).sorted() {
            throw LlamaError.invalidConfig(field: "no_rope_layers", reason: "the layers without RoPE must be listed once each, in order")
        }
        if let scale = embeddingScale, !(scale > 0) || !scale.isFinite {
            throw LlamaError.invalidConfig(field: "embedding_scale", reason: "must be a positive finite number, got \(scale)")
        }
        if let scale = explicitAttentionScale, !(scale > 0) || !scale.isFinite {
            throw LlamaError.invalidConfig(field: "attention_scale", reason: "must be a positive finite number, got \(scale)")
        }
        if let theta = localRoPETheta, !(theta > 1) || !theta.isFinite {
            throw LlamaError.invalidConfig(field: "local_rope_theta", reason: "must be a finite number above 1, got \(theta)")
        }
        if qkNormAcrossHeads && !qkNorm {
            throw LlamaError.invalidConfig(field: "qk_norm", reason: "norms across heads need query/key norms")
        }
        if !inputNorms && !postNorms {
            throw LlamaError.invalidConfig(field: "post_norms", reason: "a block without input norms needs norms on its outputs")
        }
        for (cap, field) in [(attentionSoftcap, "attn_logit_softcapping"), (logitSoftcap, "final_logit_softcapping")] {
            if let cap, !(cap > 0) || !cap.isFinite {
                throw LlamaError.invalidConfig(field: field, reason: "must be a positive finite number, got \(cap)")
            }
        }
        if !normWeightOffset.isFinite {
            throw LlamaError.invalidConfig(field: "norm_weight_offset", reason: "must be finite, got \(normWeightOffset)")
        }
        if localRoPETheta == nil && !localRoPELayers.isEmpty {
            throw LlamaError.invalidConfig(field: "local_rope_layers", reason: "layers are listed but no local RoPE base is given")
        }
        if let wrong = localRoPELayers.first(where: { !(0..<nLayers).contains($0) }) {
            throw LlamaError.invalidConfig(field: "local_rope_layers", reason: "layer \(wrong) is not one of the \(nLayers) layers")
        }
        if localRoPELayers != Array(Set(localRoPELayers)).sorted() {
            throw LlamaError.invalidConfig(field: "local_rope_layers", reason: "the layers must be listed once each, in order")
        }
        if let window = slidingWindow, window < 1 {
            throw LlamaError.invalidConfig(field: "sliding_window", reason: "must be a positive integer, got \(window)")
        }
        if (slidingWindow == nil) != slidingWindowLayers.isEmpty {
            throw LlamaError.invalidConfig(field: "sliding_window_layers", reason: slidingWindow == nil
                ? "layers are listed but no sliding window is given" : "a sliding window is given but no layer attends through it")
        }
        if let wrong = slidingWindowLayers.first(where: { !(0..<nLayers).contains($0) }) {
            throw LlamaError.invalidConfig(field: "sliding_window_layers", reason: "layer \(wrong) is not one of the \(nLayers) layers")
        }
        if slidingWindowLayers != Array(Set(slidingWindowLayers)).sorted() {
            throw LlamaError.invalidConfig(field: "sliding_window_layers", reason: "the layers must be listed once each, in order")
        }
        let limit = 1 << 24
        for (value, field) in [(dim, "dim"), (hiddenDim, "hidden_dim"), (vocabSize, "vocab_size"),
                               (seqLen, "seq_len"), (nLayers, "n_layers"), (headSize, "head_dim")] where value > limit {
            throw LlamaError.invalidConfig(field: field, reason: "\(value) is implausibly large (limit \(limit))")
        }
        // Each dimension within its limit can still multiply past any memory (or past Int): the
        // tensors' sizes are summed with overflow checks and bounded by 2^44 floats (64 TiB).
        var elements = 0
        for tensor in ParameterTensor.allCases {
            var count = 1
            for extent in ParameterLayout.shape(tensor, self) {
                let (product, overflow) = count.multipliedReportingOverflow(by: extent)
                count = overflow ? Int.max : product
            }
            let (sum, overflow) = elements.addingReportingOverflow(count)
            guard !overflow, sum <= 1 << 44 else {
                throw LlamaError.invalidConfig(field: "size",
                                               reason: "the weights would hold more than 2^44 floats (\(tensor) alone is \(ParameterLayout.shape(tensor, self).map(String.init).joined(separator: " x ")))")
            }
            elements = sum
        }
    }

    /// RoPE's angular frequency for each of a head's `hs / 2` rotated pairs: `theta^(-2i / hs)`, stretched
    /// by `ropeScaling`. Position `t` turns pair `i` by `t * ropeFrequencies[i]` radians.
    public var ropeFrequencies: [Double] {
        let hs = headSize
        let plain = (0..<hs / 2).map { 1.0 / pow(Double(ropeTheta), Double(2 * $0) / Double(hs)) }
        return ropeScaling.map { scaling in plain.map(scaling.stretch) } ?? plain
    }

    /// The local layers' frequencies (`localRoPETheta`, unscaled), as `ropeFrequencies`; nil without a local base.
    public var localRoPEFrequencies: [Double]? {
        localRoPETheta.map { theta in (0..<headSize / 2).map { 1.0 / pow(Double(theta), Double(2 * $0) / Double(headSize)) } }
    }

    /// Every RoPE table the layers read, concatenated: `ropeTables()`, then `ropeTables(local: true)` where
    /// there is a local base (`ropeTableOffset(layer:)` says where each layer's starts).
    public func allRoPETables() -> (cos: [Float], sin: [Float]) {
        let global = ropeTables()
        guard localRoPETheta != nil else { return global }
        let local = ropeTables(local: true)
        return (global.cos + local.cos, global.sin + local.sin)
    }

    /// The RoPE tables `(S, hs / 2)`, row-major: `cos` and `sin` of `t * ropeFrequencies[i]` at
    /// `t * hs / 2 + i`, computed in float64 (`local`: of `localRoPEFrequencies`).
    public func ropeTables(local: Bool = false) -> (cos: [Float], sin: [Float]) {
        let frequencies = local ? localRoPEFrequencies ?? ropeFrequencies : ropeFrequencies, half = frequencies.count
        var cosines = [Float](repeating: 0, count: seqLen * half), sines = cosines
        for t in 0..<seqLen {
            for (i, frequency) in frequencies.enumerated() {
                let angle = Double(t) * frequency
                cosines[t * half + i] = Float(cos(angle))
                sines[t * half + i] = Float(sin(angle))
            }
        }
        return (cosines, sines)
    }

    /// Number of trainable parameters (embedding, blocks, final norm, classifier if separate).
    public var parameterCount: Int {
        let perLayer = (inputNorms ? 2 * dim : 0) + queryDim * dim * 2 + kvDim * dim * 2 + 3 * dim * hiddenDim
            + (attentionBias ? queryDim + 2 * kvDim : 0) + (qkNorm ? (qkNormAcrossHeads ? queryDim + kvDim : 2 * headSize) : 0)
            + (postNorms ? 2 * dim : 0)
        return vocabSize * dim + nLayers * perLayer + dim + (sharedClassifier ? 0 : vocabSize * dim)
    }

    /// llama2.c's "stories15M" shape, the benchmark's first config.
    public static let stories15M = LlamaConfig(dim: 288, hiddenDim: 768, nLayers: 6, nHeads: 6, nKVHeads: 6,
                                               vocabSize: 32000, seqLen: 256)
    /// A grouped-query shape (4 query heads per kv head), the benchmark's second config.
    public static let gqa = LlamaConfig(dim: 512, hiddenDim: 1376, nLayers: 8, nHeads: 8, nKVHeads: 2,
                                        vocabSize: 32000, seqLen: 512)
    /// llama2.c's "stories110M" shape (dim 768, hidden 2048, 12 layers and heads), the 100M-class reference.
    public static let llama110M = LlamaConfig(dim: 768, hiddenDim: 2048, nLayers: 12, nHeads: 12, nKVHeads: 12,
                                              vocabSize: 32000, seqLen: 1024)
}

/// The activation of a block's gated feed-forward, `W2 (act(W1 x) * W3 x)`.
public enum FeedForwardActivation: String, Codable, Sendable {
    /// `silu(v) = v / (1 + exp(-v))`: LLaMA's SwiGLU.
    case silu
    /// `gelu_tanh(v) = v / 2 (1 + tanh(sqrt(2 / pi) (v + 0.044715 v^3)))`: Gemma's GeGLU (transformers'
    /// `gelu_pytorch_tanh`).
    case geluTanh
}

/// A stretch of RoPE's frequencies for contexts longer than a model was first trained on, as Hugging Face
/// configs give it (`rope_scaling`, or `rope_parameters` in transformers 5). Neither changes attention's
/// scale (transformers' attention factor is 1 for both).
public enum RoPEScaling: Codable, Sendable, Equatable {
    /// Position interpolation (transformers' "linear"): every frequency divided by `factor`.
    case linear(factor: Double)
    /// LLaMA 3.1's ("llama3"): pairs whose wavelength `2 pi / frequency` exceeds
    /// `originalContext / lowFrequencyFactor` turn `factor` times slower, those under
    /// `originalContext / highFrequencyFactor` keep their frequency, and those between are interpolated
    /// by `s = (originalContext / wavelength - lowFrequencyFactor) / (highFrequencyFactor - lowFrequencyFactor)`:
    /// `(1 - s) * frequency / factor + s * frequency`.
    case llama3(factor: Double, lowFrequencyFactor: Double, highFrequencyFactor: Double, originalContext: Int)

    /// The stretched frequency of a pair whose unscaled frequency is `frequency`.
    public func stretch(_ frequency: Double) -> Double {
        switch self {
        case let .linear(factor):
            return frequency / factor
        case let .llama3(factor, low, high, original):
            let wavelength = 2 * Double.pi / frequency
            let context = Double(original)
            if wavelength < context / high { return frequency }
            if wavelength > context / low { return frequency / factor }
            let s = (context / wavelength - low) / (high - low)
            return (1 - s) * frequency / factor + s * frequency
        }
    }

    /// Hugging Face's name of the scaling (`rope_type`).
    public var typeName: String {
        switch self {
        case .linear: return "linear"
        case .llama3: return "llama3"
        }
    }

    /// The keys and values of Hugging Face's `rope_scaling` object (without `rope_theta`).
    public var huggingFaceParameters: [String: Any] {
        switch self {
        case let .linear(factor):
            return ["rope_type": "linear", "factor": factor]
        case let .llama3(factor, low, high, original):
            return ["rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
                    "original_max_position_embeddings": original]
        }
    }

    /// Checks the parameters (transformers' own checks): a finite factor of at least 1; for llama3, finite
    /// frequency factors with `low < high` and a positive original context.
    public func validate() throws {
        func fail(_ field: String, _ reason: String) -> LlamaError {
            LlamaError.invalidConfig(field: "rope_scaling.\(field)", reason: reason)
        }
        switch self {
        case let .linear(factor):
            guard factor.isFinite, factor >= 1 else { throw fail("factor", "must be a finite number >= 1, got \(factor)") }
        case let .llama3(factor, low, high, original):
            guard factor.isFinite, factor >= 1 else { throw fail("factor", "must be a finite number >= 1, got \(factor)") }
            guard low.isFinite, low > 0 else { throw fail("low_freq_factor", "must be a positive finite number, got \(low)") }
            guard high.isFinite, high > low else {
                throw fail("high_freq_factor", "must be a finite number above low_freq_factor \(low), got \(high)")
            }
            guard original > 0 else {
                throw fail("original_max_position_embeddings", "must be positive, got \(original)")
            }
        }
    }
}
