/// Logits produced by one forward call: `(rows, V)`. The storage belongs to the transformer's
/// workspace and is valid until its next forward call; copy what must outlive it.
public struct Logits {
    /// Number of logit rows.
    public let rows: Int
    /// Vocabulary size `V`.
    public let vocabSize: Int
    let buffer: FloatBuffer

    /// Row `i` as an array (copies).
    public func row(_ i: Int) -> [Float] {
        precondition(i >= 0 && i < rows, "logit row \(i) out of range 0..<\(rows)")
        return buffer.array(i * vocabSize ..< (i + 1) * vocabSize)
    }

    /// Lends row `i` without copying.
    public func withRow<R, E: Error>(_ i: Int, _ body: (UnsafeBufferPointer<Float>) throws(E) -> R) throws(E) -> R {
        precondition(i >= 0 && i < rows, "logit row \(i) out of range 0..<\(rows)")
        return try buffer.withUnsafeBufferPointer { (all) throws(E) in
            try body(UnsafeBufferPointer(rebasing: all[i * vocabSize ..< (i + 1) * vocabSize]))
        }
    }
}

/// Runs a `LlamaModel` forward: batched prefill of a prompt (matrix products), incremental decode
/// with a KV cache (matrix-vector products, float32 or bfloat16 weights), and batched decode of `B`
/// sequences of different lengths (matrix products over the batch).
///
/// A transformer owns a reusable workspace and is used by one caller at a time; many transformers
/// (one per thread or actor) can share one `LlamaModel`.
public final class Transformer {
    /// The shared weights.
    public let model: LlamaModel
    /// The threads that run each parallel region.
    public let pool: ComputePool
    private var workspace: Workspace

    /// What the caches of `makeCache()` store keys and values as.
    public let kvCachePrecision: KVCache.Precision

    /// A transformer over `model` whose kernels run on `pool`, making caches of `kvCache` precision.
    public init(model: LlamaModel, pool: ComputePool = .serial, kvCache: KVCache.Precision = .float32) {
        _ = Kernels.blasSingleThreaded
        self.model = model
        self.pool = pool
        self.kvCachePrecision = kvCache
        self.workspace = Workspace(config: model.config, rows: 1, logitRows: 1, threads: pool.threadCount)
    }

    /// The model's hyper-parameters.
    public var config: LlamaConfig { model.config }

    /// A fresh KV cache for one sequence of this model.
    public func makeCache() -> KVCache { KVCache(config: config, precision: kvCachePrecision) }

    // MARK: - Public entry points

    /// Appends `tokens` to `cache` in one batched pass and returns the logits of the last token
    /// (`(1, V)`), or of every token (`(T, V)`) when `allLogits` is set.
    public func prefill(_ tokens: [Int32], cache: KVCache, allLogits: Bool = false) throws -> Logits {
        guard !tokens.isEmpty else { throw LlamaError.invalidInput("empty prompt: at least one token (usually BOS) is needed") }
        try checkRoom(cache, adding: tokens.count)
        let start = cache.length
        let positions = (0..<tokens.count).map { start + $0 }
        let logitRows = allLogits ? Array(0..<tokens.count) : [tokens.count - 1]
        let logits = try forward(tokens: tokens, caches: [KVCache](repeating: cache, count: tokens.count),
                                 positions: positions, logitRows: logitRows)
        cache.length += tokens.count
        return logits
    }

    /// Appends one token to `cache` and returns its logits `(1, V)`.
    public func decode(_ token: Int32, cache: KVCache) throws -> Logits {
        try checkRoom(cache, adding: 1)
        let logits = try forward(tokens: [token], caches: [cache], positions: [cache.length], logitRows: [0])
        cache.length += 1
        return logits
    }

    /// Appends `tokens[b]` to `caches[b]` for each of `B` sequences (each at its own length) in one
    /// pass and returns their logits `(B, V)`. A row's logits are the same bits whatever rows share the
    /// pass, and however many (every product runs the panel kernels, which sum each feature over k in
    /// one order): a sequence samples the same tokens in any batch or slot of a continuous batch.
    /// (A model loaded without `batchedDecode` has no panels and gives this up.)
    public func decode(_ tokens: [Int32], caches: [KVCache]) throws -> Logits {
        guard tokens.count == caches.count, !tokens.isEmpty else {
            throw LlamaError.invalidInput("batched decode needs one token per cache, got \(tokens.count) tokens for \(caches.count) caches")
        }
        var seen = Set<ObjectIdentifier>()
        for cache in caches {
            guard seen.insert(ObjectIdentifier(cache)).inserted else {
                throw LlamaError.invalidInput("batched decode got the same cache twice")
            }
            try checkRoom(cache, adding: 1)
        }
        let logits = try forward(tokens: tokens, caches: caches, positions: caches.map(\.length),
                                 logitRows: Array(0..<tokens.count), rowInvariant: true)
        for cache in caches { cache.length += 1 }
        return logits
    }

    private func checkRoom(_ cache: KVCache, adding count: Int) throws {
        guard cache.config == config else { throw LlamaError.invalidInput("KV cache belongs to a model of another config") }
        if cache.length + count > config.seqLen {
            throw LlamaError.invalidInput("sequence of \(cache.length + count) tokens (\(cache.length) cached + \(count) new) exceeds seq_len \(config.seqLen)")
        }
    }

    // MARK: - The forward pass

    /// Runs `R` token rows; row `r` is token `tokens[r]` at `positions[r]` of `caches[r]`. Keys and
    /// values of every row are written before attention, so rows of one cache at consecutive positions
    /// (a prompt) attend causally to each other. Logits are computed for `logitRows` only.
    /// With `rowInvariant`, every product goes through the panel kernels, whatever the number of rows.
    func forward(tokens: [Int32], caches: [KVCache], positions: [Int], logitRows: [Int], rowInvariant: Bool = false) throws -> Logits {
        let c = config
        for token in tokens where token < 0 || Int(token) >= c.vocabSize {
            throw LlamaError.invalidInput("token id \(token) outside the vocabulary 0..<\(c.vocabSize)")
        }
        let rows = tokens.count
        workspace.ensure(rows: rows, logitRows: logitRows.count)
        let ws = workspace
        let D = c.dim, QD = c.queryDim, KVD = c.kvDim, H = c.hiddenDim, hs = c.headSize, half = hs / 2
        let layout = model.weights.layout
        let w = model.weights.storage.baseAddress
        let x = ws.x.baseAddress, xb = ws.xb.baseAddress, q = ws.q.baseAddress
        let k = ws.k.baseAddress, v = ws.v.baseAddress, att = ws.att.baseAddress
        let h1 = ws.h1.baseAddress, h3 = ws.h3.baseAddress
        let ropeCos = model.ropeCos.baseAddress, ropeSin = model.ropeSin.baseAddress

        if let bf16 = model.bf16, model.usesBF16(.tokenEmbedding) {
            // A shared classifier stored in bfloat16 is also the embedding the model reads.
            let table = bf16.baseAddress + layout.offset(.tokenEmbedding)
            for r in 0..<rows {
                let row = table + Int(tokens[r]) * D
                for i in 0..<D { x[r * D + i] = Kernels.float(bfloat16: row[i]) }
            }
        } else {
            for r in 0..<rows {
                (x + r * D).update(from: w + layout.offset(.tokenEmbedding) + Int(tokens[r]) * D, count: D)
            }
        }
        if let scale = c.embeddingScale {
            for i in 0..<rows * D { x[i] *= scale }
        }
        for l in 0..<c.nLayers {
            inputNorm(.rmsAttention, l, into: xb, from: x, rows: rows)
            project([Projection(.wq, l, xb, q, QD, D), Projection(.wk, l, xb, k, KVD, D),
                     Projection(.wv, l, xb, v, KVD, D)], rows: rows, rowInvariant: rowInvariant)
            if c.attentionBias {
                // Qwen2: q, k and v add their biases before RoPE.
                let bq = w + layout.offset(.bq, layer: l), bk = w + layout.offset(.bk, layer: l), bv = w + layout.offset(.bv, layer: l)
                for r in 0..<rows {
                    Kernels.addBias(q + r * QD, bq, QD)
                    Kernels.addBias(k + r * KVD, bk, KVD)
                    Kernels.addBias(v + r * KVD, bv, KVD)
                }
            }
            if c.qkNorm {
                // Qwen3 and Gemma 3: each query and key head RMS-normalised (in place) before RoPE; OLMo 2: each
                // row's queries and keys normalised whole.
                let qNorm = w + layout.offset(.qNorm, layer: l), kNorm = w + layout.offset(.kNorm, layer: l)
                let (qGroups, qSize) = c.qkNormGroups(heads: c.nHeads), (kGroups, kSize) = c.qkNormGroups(heads: c.nKVHeads)
                for r in 0..<rows {
                    for g in 0..<qGroups { Kernels.rmsnorm(q + r * QD + g * qSize, q + r * QD + g * qSize, qNorm, qSize, eps: c.normEps) }
                    for g in 0..<kGroups { Kernels.rmsnorm(k + r * KVD + g * kSize, k + r * KVD + g * kSize, kNorm, kSize, eps: c.normEps) }
                }
            }
            let rotates = c.usesRoPE(layer: l), tableStart = c.ropeTableOffset(layer: l)
            for r in 0..<rows {
                let table = tableStart + positions[r] * half
                if rotates {
                    Kernels.rope(q + r * QD, heads: c.nHeads, hs: hs, cos: ropeCos + table, sin: ropeSin + table)
                    Kernels.rope(k + r * KVD, heads: c.nKVHeads, hs: hs, cos: ropeCos + table, sin: ropeSin + table)
                }
                caches[r].store(layer: l, position: positions[r], key: k + r * KVD, value: v + r * KVD)
            }
            attention(layer: l, rows: rows, caches: caches, positions: positions)
            // Residual connections are fused: the projections add straight into x (with post norms, the
            // output is normalised in xb first).
            if c.postNorms {
                project([Projection(.wo, l, att, xb, D, QD)], rows: rows, rowInvariant: rowInvariant)
                addNormalised(xb, to: x, weight: w + layout.offset(.rmsPostAttention, layer: l), rows: rows)
            } else {
                project([Projection(.wo, l, att, x, D, QD, accumulate: true)], rows: rows, rowInvariant: rowInvariant)
            }

            inputNorm(.rmsFFN, l, into: xb, from: x, rows: rows)
            project([Projection(.w1, l, xb, h1, H, D), Projection(.w3, l, xb, h3, H, D)], rows: rows, rowInvariant: rowInvariant) { features in
                // Each thread gates the hidden features it just computed.
                for r in 0..<rows {
                    let gate = h1 + r * H + features.lowerBound
                    Kernels.gatedActivation(c.activation, out: gate, gate: gate, up: h3 + r * H + features.lowerBound, features.count)
                }
            }
            if c.postNorms {
                project([Projection(.w2, l, h1, xb, D, H)], rows: rows, rowInvariant: rowInvariant)
                addNormalised(xb, to: x, weight: w + layout.offset(.rmsPostFFN, layer: l), rows: rows)
            } else {
                project([Projection(.w2, l, h1, x, D, H, accumulate: true)], rows: rows, rowInvariant: rowInvariant)
            }
        }
        let rmsFinal = w + layout.offset(.rmsFinal)
        for (i, r) in logitRows.enumerated() {
            Kernels.rmsnorm(xb + i * D, x + r * D, rmsFinal, D, eps: c.normEps)
        }
        project([Projection(.classifier, 0, xb, ws.logits.baseAddress, c.vocabSize, D)], rows: logitRows.count,
                rowInvariant: rowInvariant)
        if let cap = c.logitSoftcap {
            // Gemma 2: every logit capped (what the sampler and every log-probability read).
            Kernels.softcap(ws.logits.baseAddress, logitRows.count * c.vocabSize, cap: cap)
        }
        return Logits(rows: logitRows.count, vocabSize: c.vocabSize, buffer: ws.logits)
    }

    /// A block's input norm of `x (R, D)` into `out`: RMSNorm with `tensor`'s weight, or a copy where the
    /// blocks have no input norms (OLMo 2's).
    private func inputNorm(_ tensor: ParameterTensor, _ l: Int, into out: UnsafeMutablePointer<Float>, from x: UnsafeMutablePointer<Float>, rows: Int) {
        let D = config.dim
        guard config.inputNorms else {
            out.update(from: x, count: rows * D)
            return
        }
        let weight = model.weights.storage.baseAddress + model.weights.layout.offset(tensor, layer: l)
        for r in 0..<rows { Kernels.rmsnorm(out + r * D, x + r * D, weight, D, eps: config.normEps) }
    }

    /// `x (R, D) += rmsnorm(out) * weight` row by row (a block output's post norm, then the residual add);
    /// `out` is normalised in place.
    private func addNormalised(_ out: UnsafeMutablePointer<Float>, to x: UnsafeMutablePointer<Float>, weight: UnsafeMutablePointer<Float>, rows: Int) {
        let D = config.dim
        for r in 0..<rows {
            Kernels.rmsnorm(out + r * D, out + r * D, weight, D, eps: config.normEps)
            for i in 0..<D { x[r * D + i] += out[r * D + i] }
        }
    }

    /// Causal (grouped-query) attention of every row over its cache, `att (R, QD)`: over the keys up to its
    /// position, or in a sliding-window layer the last `W` of them.
    private func attention(layer l: Int, rows: Int, caches: [KVCache], positions: [Int]) {
        let c = config
        let QD = c.queryDim, KVD = c.kvDim, S = c.seqLen
        let window = c.attentionWindow(layer: l)
        let ws = workspace
        let q = ws.q.baseAddress, att = ws.att.baseAddress, scoresBase = ws.scores.baseAddress
        let scale = c.attentionScale
        let threads = pool.threadCount
        // A work item is one row's attention over a group of its heads. With rows enough to keep every
        // thread busy each row is one item (all its heads served from one pass over its cache);
        // fewer rows are split into one group of heads per thread.
        let groups = rows >= 2 * threads ? 1 : min(c.nHeads, threads)
        let items = rows * groups
        let layerOffset = l * S * KVD
        caches.withUnsafeBufferPointer { caches in
            positions.withUnsafeBufferPointer { positions in
                // Rows differ in length, so items are dealt out round-robin rather than in
                // contiguous blocks.
                pool.run { thread in
                    let scores = scoresBase + thread * c.nHeads * S
                    for index in stride(from: thread, to: items, by: threads) {
                        let r = index / groups, g = index % groups
                        let heads = g * c.nHeads / groups ..< (g + 1) * c.nHeads / groups
                        let cache = caches[r]
                        let first = LlamaConfig.firstAttendedKey(position: positions[r], window: window)
                        /// This item's attention over the layer's keys and values, stored as `E`.
                        func attend<E: KVElement>(_ keys: UnsafePointer<E>, _ values: UnsafePointer<E>) {
                            let start = layerOffset + first * KVD
                            Kernels.attend(out: att + r * QD, query: q + r * QD, keys: keys + start, values: values + start,
                                           rowStride: KVD, count: positions[r] + 1 - first, heads: heads,
                                           groupSize: c.kvGroupSize, headSize: c.headSize, scale: scale, softcap: c.attentionSoftcap,
                                           scores: scores, scoreStride: S)
                        }
                        switch cache.precision {
                        case .float32: attend(cache.keys.baseAddress, cache.values.baseAddress)
                        case .bfloat16: attend(cache.keys16.baseAddress, cache.values16.baseAddress)
                        }
                    }
                }
            }
        }
    }

    /// Up to this many rows, products use the panel-packed weights; beyond it OpenBLAS's sgemm, whose
    /// per-call packing is then amortised.
    static let panelRowLimit = 64

    /// One matrix product of a parallel region: `output (R, outFeatures) = input (R, inFeatures) W^T`.
    struct Projection {
        let tensor: ParameterTensor
        let layer: Int
        let input: UnsafeMutablePointer<Float>
        let output: UnsafeMutablePointer<Float>
        let outFeatures: Int
        let inFeatures: Int
        /// Add the product to `output` (a residual connection) instead of overwriting it.
        let accumulate: Bool

        init(_ tensor: ParameterTensor, _ layer: Int, _ input: UnsafeMutablePointer<Float>,
             _ output: UnsafeMutablePointer<Float>, _ outFeatures: Int, _ inFeatures: Int, accumulate: Bool = false) {
            self.tensor = tensor
            self.layer = layer
            self.input = input
            self.output = output
            self.outFeatures = outFeatures
            self.inFeatures = inFeatures
            self.accumulate = accumulate
        }
    }

    /// Runs `jobs` (which share nothing but the pool) in one parallel region, each split by output
    /// features. A bfloat16 model with panels: the bfloat16 pair-panel kernels up to 64 rows. Otherwise one
    /// row: matrix-vector kernels (bfloat16 where the model has the row-major copy); 2 to 64 rows: the
    /// panel kernels. More rows: sgemm. `rowInvariant` takes the panel kernels for any number of rows.
    ///
    /// `epilogue(features)` runs on each thread after its share of every job, with that share's
    /// feature range (the same for jobs of equal width): element-wise work on fresh outputs stays on the
    /// thread that wrote them.
    private func project(_ jobs: [Projection], rows: Int, rowInvariant: Bool = false, epilogue: ((Range<Int>) -> Void)? = nil) {
        guard rows > 0 else { return }
        let layout = model.weights.layout
        let w = model.weights.storage.baseAddress
        let threads = pool.threadCount
        if let packed = model.bf16Panels?.baseAddress, rows <= Transformer.panelRowLimit || rowInvariant {
            // bfloat16 pair panels: each distinct input (jobs of a region share theirs) is rounded to
            // bfloat16 once, in the form the CPU's kernel reads, then every thread multiplies its share of
            // every matrix.
            let kernel = Kernels.PairPanelKernel.fastest
            // Each job's packed input (an offset in the workspace's words) and the jobs that pack one.
            var inputOffsets: [Int] = [], packing: [Int] = []
            var words = 0
            for (i, job) in jobs.enumerated() {
                if let first = packing.first(where: { jobs[$0].input == job.input }) {
                    inputOffsets.append(inputOffsets[first])
                } else {
                    packing.append(i)
                    inputOffsets.append(words)
                    words += kernel.inputWords(rows: rows, k: job.inFeatures)
                }
            }
            let pairs = workspace.pairWords(words)
            for i in packing { kernel.packInput(pairs + inputOffsets[i], jobs[i].input, rows: rows, k: jobs[i].inFeatures) }
            pool.run { t in
                for (i, job) in jobs.enumerated() {
                    let range = ComputePool.share(of: job.outFeatures, thread: t, threads: threads, grain: 16)
                    guard !range.isEmpty else { continue }
                    kernel.multiply(job.output, ldc: job.outFeatures, pairs + inputOffsets[i], m: rows,
                                    packed + model.panelOffsets[job.tensor]![job.layer], k: job.inFeatures,
                                    features: range, accumulate: job.accumulate)
                }
                epilogue?(ComputePool.share(of: jobs[0].outFeatures, thread: t, threads: threads, grain: 16))
            }
        } else if rows == 1 && !(rowInvariant && model.panels != nil) {
            let xPerm = workspace.xPerm.baseAddress
            // Jobs of one region share their input (q/k/v, w1/w3), so it is rearranged once.
            var prepared: UnsafeMutablePointer<Float>? = nil
            for job in jobs where model.usesBF16(job.tensor) && prepared != job.input {
                Kernels.deinterleaveForBF16(xPerm, job.input, cols: job.inFeatures)
                prepared = job.input
            }
            let bf = model.bf16?.baseAddress
            func run(_ job: Projection, _ range: Range<Int>) {
                let offset = layout.offset(job.tensor, layer: job.layer)
                if let bf, model.usesBF16(job.tensor) {
                    Kernels.matvecBF16(job.output, bf + offset, xPerm, rows: range, cols: job.inFeatures,
                                       accumulate: job.accumulate)
                } else {
                    Kernels.matvec(job.output, w + offset, job.input, rows: range, cols: job.inFeatures,
                                   accumulate: job.accumulate)
                }
            }
            if threads == 1 {
                for job in jobs { run(job, 0..<job.outFeatures) }
                epilogue?(0..<jobs[0].outFeatures)
                return
            }
            // Each thread streams the same contiguous share of every matrix, token after token: what a
            // core's caches keep of its share serves the next token. (Shares handed out in 64-row chunks
            // from a shared counter, as before, ran 15-25% slower on 2 threads, measured alternately
            // against llama2.c: 0.92-1.03x against 1.12-1.13x on the 15M shape.)
            precondition(epilogue == nil || jobs.allSatisfy { $0.outFeatures == jobs[0].outFeatures },
                         "an epilogue needs jobs of equal width")
            pool.run { t in
                for job in jobs {
                    run(job, ComputePool.share(of: job.outFeatures, thread: t, threads: threads, grain: 16))
                }
                epilogue?(ComputePool.share(of: jobs[0].outFeatures, thread: t, threads: threads, grain: 16))
            }
        } else if rows <= Transformer.panelRowLimit || rowInvariant, let panels = model.panels {
            let packed = panels.baseAddress
            pool.run { t in
                for job in jobs {
                    let range = ComputePool.share(of: job.outFeatures, thread: t, threads: threads, grain: 16)
                    guard !range.isEmpty else { continue }
                    let offset = model.panelOffsets[job.tensor]![job.layer]
                    Kernels.matmulPanels(job.output, ldc: job.outFeatures, job.input, m: rows, packed + offset,
                                         n: job.outFeatures, k: job.inFeatures, features: range, accumulate: job.accumulate)
                }
                epilogue?(ComputePool.share(of: jobs[0].outFeatures, thread: t, threads: threads, grain: 16))
            }
        } else {
            pool.run { t in
                for job in jobs {
                    let range = ComputePool.share(of: job.outFeatures, thread: t, threads: threads, grain: 16)
                    Kernels.matmulTransposed(job.output, ldc: job.outFeatures, job.input, m: rows,
                                             w + layout.offset(job.tensor, layer: job.layer),
                                             features: range, k: job.inFeatures, accumulate: job.accumulate)
                }
                epilogue?(ComputePool.share(of: jobs[0].outFeatures, thread: t, threads: threads, grain: 16))
            }
        }
    }
}

/// Activation buffers of one transformer, grown on demand and reused across calls.
final class Workspace {
    let config: LlamaConfig
    private(set) var rows: Int = 0
    private(set) var logitRows: Int = 0
    let threads: Int
    /// `(R, D)` residual stream and normed input; `(R, QD)` queries and attention output.
    var x, xb, q, att: FloatBuffer
    /// `(R, KVD)` keys and values of the current rows.
    var k, v: FloatBuffer
    /// `(R, H)` SwiGLU gate and up activations.
    var h1, h3: FloatBuffer
    /// `(max(D, QD, H))` input rearranged for the bfloat16 kernel.
    let xPerm: FloatBuffer
    /// `(threads, nHeads, S)` attention scores, one block per thread.
    let scores: FloatBuffer
    /// `(Rl, V)` logits.
    var logits: FloatBuffer
    /// Inputs of a bfloat16 product rounded to bfloat16 pairs, grown on demand.
    private var pairs = AlignedBuffer<UInt32>(count: 0)

    /// At least `count` words of pair storage (its contents are not kept).
    func pairWords(_ count: Int) -> UnsafeMutablePointer<UInt32> {
        if pairs.count < count { pairs = AlignedBuffer<UInt32>(count: count) }
        return pairs.baseAddress
    }

    init(config: LlamaConfig, rows: Int, logitRows: Int, threads: Int) {
        self.config = config
        self.threads = threads
        let empty = FloatBuffer(count: 0)
        x = empty; xb = empty; q = empty; att = empty; k = empty; v = empty; h1 = empty; h3 = empty
        logits = empty
        xPerm = FloatBuffer(count: max(config.dim, config.queryDim, config.hiddenDim) + 32)
        scores = FloatBuffer(count: threads * config.nHeads * config.seqLen)
        ensure(rows: rows, logitRows: logitRows)
    }

    func ensure(rows needed: Int, logitRows neededLogits: Int) {
        let c = config
        if needed > rows {
            rows = needed
            x = FloatBuffer(count: needed * c.dim)
            xb = FloatBuffer(count: needed * c.dim)
            q = FloatBuffer(count: needed * c.queryDim)
            att = FloatBuffer(count: needed * c.queryDim)
            k = FloatBuffer(count: needed * c.kvDim)
            v = FloatBuffer(count: needed * c.kvDim)
            h1 = FloatBuffer(count: needed * c.hiddenDim)
            h3 = FloatBuffer(count: needed * c.hiddenDim)
        }
        if neededLogits > logitRows {
            logitRows = neededLogits
            logits = FloatBuffer(count: neededLogits * c.vocabSize)
        }
    }
}
