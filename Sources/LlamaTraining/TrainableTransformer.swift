import CBLAS
import CKernels
import Foundation
import LlamaCore

/// A LLaMA2 model being trained: its weights (updated in place by the optimizer), a gradient buffer
/// of the same layout, and the forward pass that saves activations and the backward pass through
/// every layer (embedding, RMSNorm, q/k/v/o with RoPE and causal grouped-query attention, SwiGLU,
/// final norm). Losses read the final hidden states (`ForwardTape.hidden`) through the language-model
/// head (`languageModelHead`) or a `ScalarHead`, and hand back `dL/dhidden`.
public final class TrainableTransformer {
    /// The model's hyper-parameters.
    public let config: LlamaConfig
    /// The weights; the optimizer writes them in place.
    public let weights: ModelWeights
    /// `dL/dweights`, laid out like `weights` (the RoPE tables' entries stay zero).
    public let gradients: FloatBuffer
    /// Threads for every product.
    public let pool: ComputePool
    /// The matrix products, in the transformer's precision.
    let products: MatrixProducts
    /// The number format of the matrix products (weights, gradients and everything else stay float32).
    public var precision: WeightPrecision { products.precision }
    /// LoRA adapters: while set, the targeted products add their adapters, the backward pass trains the
    /// adapters and computes no gradient for the base matrices (they are frozen: train
    /// `lora.parameterGroup`).
    public var lora: LoRAAdapters? {
        didSet { scoringProjections = nil }
    }
    /// The projections transposed for forwards that no backward pass follows (`prepareForScoring()`).
    private var scoringProjections: TransposedProjections?
    /// LoRA scratch: `(N, rank)` adapter activations and their gradient, `(N, max(D, H))` dropped inputs.
    private var loraScratch = FloatBuffer(count: 0)
    /// `(S, hs/2)` RoPE tables (the global one, then the local layers' where the config has a local base).
    private let ropeCos: [Float], ropeSin: [Float]
    /// The tape `forward` fills (reused).
    private let tape: ForwardTape
    /// Backward-pass scratch, grown on demand: `(N, D)` dx, dxn; `(N, QD)` datt, dq; `(N, KVD)` dk, dv;
    /// `(N, H)` dg, dh1, dh3; `(N, D)` hidden gradient handed to losses.
    private var scratchRows = 0
    private var dx = FloatBuffer(count: 0), dxn = FloatBuffer(count: 0), datt = FloatBuffer(count: 0)
    private var dq = FloatBuffer(count: 0), dk = FloatBuffer(count: 0), dv = FloatBuffer(count: 0)
    private var dg = FloatBuffer(count: 0), dh1 = FloatBuffer(count: 0), dh3 = FloatBuffer(count: 0)
    private var hiddenGradientBuffer = FloatBuffer(count: 0)
    private var attentionScratch = FloatBuffer(count: 0)
    /// Language-model head scratch: `(chunk, D)` hidden rows and their gradient, `(chunk, V)` logits.
    private var headScratch = FloatBuffer(count: 0)
    /// Loss of each row of a head chunk.
    private var rowLosses = AlignedBuffer<Double>(count: 0)
    /// Per-thread partial sums of a norm weight's gradient, `(threads, D)`.
    private var normPartials = FloatBuffer(count: 0)
    /// Per-thread `(2, size)` blocks for the query/key norms' backward pass (size: a head's `hs`, or a row's
    /// width across heads): the weight's partial gradient and one group's input gradient.
    private var headNormScratch = FloatBuffer(count: 0)
    /// Query rows per causal block of the attention forward.
    static let attentionBlock = 64
    /// Rows of logits materialised at once by `languageModelHead`.
    static let headChunkRows = 512

    private func ensureScratch(rows n: Int) {
        guard n > scratchRows else { return }
        let c = config
        scratchRows = n
        dx = FloatBuffer(count: n * c.dim); dxn = FloatBuffer(count: n * c.dim); datt = FloatBuffer(count: n * c.queryDim)
        dq = FloatBuffer(count: n * c.queryDim); dk = FloatBuffer(count: n * c.kvDim); dv = FloatBuffer(count: n * c.kvDim)
        dg = FloatBuffer(count: n * c.hiddenDim); dh1 = FloatBuffer(count: n * c.hiddenDim); dh3 = FloatBuffer(count: n * c.hiddenDim)
        hiddenGradientBuffer = FloatBuffer(count: n * c.dim)
    }

    /// A zeroed `(N, D)` buffer for `dL/dhidden` of the current tape (reused across steps).
    public func hiddenGradient(for tape: ForwardTape) -> FloatBuffer {
        ensureScratch(rows: tape.batch.rowCount)
        hiddenGradientBuffer.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        return hiddenGradientBuffer
    }

    /// Trains `weights` (not copied: pass `weights.copy()` to keep the original), its matrix products in
    /// `precision` (bfloat16: bfloat16 operands, float32 sums, float32 weights and gradients).
    public init(weights: ModelWeights, pool: ComputePool = .serial, precision: WeightPrecision = .float32) {
        openblas_set_num_threads(1)
        self.config = weights.config
        self.weights = weights
        self.gradients = FloatBuffer(count: weights.layout.totalCount)
        self.pool = pool
        self.products = MatrixProducts(pool: pool, precision: precision)
        let c = weights.config
        (ropeCos, ropeSin) = c.allRoPETables()
        tape = ForwardTape(config: c)
    }

    /// Sets every trained gradient to zero (before accumulating a new step's micro-batches): the
    /// model's, or with `lora` set only the adapters' (the frozen base's buffer is scratch then, never read).
    public func zeroGradients() {
        scoringProjections = nil
        if let lora { lora.zeroGradients() } else { gradients.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
    }

    /// Makes forwards faster for a model that will only score (the reward-model, safety-model and
    /// reference-policy workers, which build a transformer for each version they install): keeps its
    /// projection matrices transposed in column panels, which `forward` then multiplies by with
    /// `rlhf_small_gemm_nn` (no packing per call, no zeroing of each output first: 8% less time than
    /// sgemm on the 15M shape; the panels scored the 110M shape 1.7x as fast as whole transposed
    /// matrices, on an Intel Xeon of the class). Costs a copy of
    /// the projections' memory (`TransposedProjections.bytes`). The copy is of the weights as they are
    /// now: training this transformer (`zeroGradients`, a training forward, `backward`) or setting `lora`
    /// drops it, and after changing `weights` any other way, call this again. Float32 products only; with
    /// bfloat16 ones or LoRA adapters it does nothing.
    public func prepareForScoring() {
        scoringProjections = precision == .float32 && lora == nil ? TransposedProjections(weights: weights, pool: pool) : nil
    }

    /// Whether forwards use the transposed projections of `prepareForScoring()`.
    public var isPreparedForScoring: Bool { scoringProjections != nil }

    /// Bytes `prepareForScoring()` keeps for a model of `config`.
    public static func scoringCopyBytes(_ config: LlamaConfig) -> Int { TransposedProjections.bytes(config) }

    /// What an optimizer updates: the model's trainable tensors, or with `lora` set only the adapters.
    public var trainedGroups: [ParameterGroup] { lora.map { [$0.parameterGroup] } ?? [ParameterGroup(model: self)] }

    private var w: UnsafeMutablePointer<Float> { weights.storage.baseAddress }
    private var dw: UnsafeMutablePointer<Float> { gradients.baseAddress }
    private func offset(_ t: ParameterTensor, _ l: Int = 0) -> Int { weights.layout.offset(t, layer: l) }

    // MARK: - Forward

    /// Runs `batch` through the trunk and keeps what the backward pass needs. The returned tape is
    /// this transformer's, reused: it is valid until the next call.
    public func forward(_ batch: TokenBatch) -> ForwardTape {
        forward(batch, lastLayerRows: nil)
    }

    /// A forward whose tape the backward pass will use: LoRA's dropout (if any) applies.
    func trainingForward(_ batch: TokenBatch) -> ForwardTape {
        scoringProjections = nil
        return forward(batch, lastLayerRows: nil, training: true)
    }

    /// Runs `batch` through the trunk for the hidden states of `rows` alone (a reward model's scores
    /// at each sequence's last token). Every layer but the last runs on all rows, whose keys and values
    /// the asked rows attend to; the last computes its queries, attention, output projection and
    /// feed-forward for `rows` only, which saves about `1 / nLayers` of the work. The tape's `hidden`
    /// holds `rows` (other rows are not computed), and it has no backward pass.
    public func forward(_ batch: TokenBatch, onlyRows rows: [Int]) -> ForwardTape {
        precondition(rows.allSatisfy { (0..<batch.rowCount).contains($0) }, "rows must be rows of the batch")
        return forward(batch, lastLayerRows: rows)
    }

    private func forward(_ batch: TokenBatch, lastLayerRows: [Int]?, training: Bool = false) -> ForwardTape {
        let c = config
        tape.reset(for: batch)
        if training, let lora, lora.settings.dropout > 0 {
            tape.loraDropoutSeed = lora.nextDropoutSeed
            lora.nextDropoutSeed &+= 1
        } else {
            tape.loraDropoutSeed = nil
        }
        let seed = tape.loraDropoutSeed
        let n = batch.rowCount, D = c.dim, QD = c.queryDim, KVD = c.kvDim, H = c.hiddenDim
        let input = tape.layers[0].xIn.baseAddress, embedding = w + offset(.tokenEmbedding)
        batch.tokens.withUnsafeBufferPointer { tokens in
            pool.parallelFor(n, grain: 64) { range, _ in
                for r in range { (input + r * D).update(from: embedding + Int(tokens[r]) * D, count: D) }
                if let scale = c.embeddingScale {
                    for i in range.lowerBound * D ..< range.upperBound * D { input[i] *= scale }
                }
            }
        }
        for (l, saved) in tape.layers.enumerated() {
            let x = saved.xIn
            if l == c.nLayers - 1, let rows = lastLayerRows {
                lastLayer(saved, batch: batch, rows: rows)
                tape.onlyRows = rows
                break
            }
            inputNorm(.rmsAttention, l, out: saved.xn1, inverse: saved.rms1, input: x, rows: n)
            project(.wq, l, saved.q.baseAddress, saved.xn1.baseAddress, n: n, inFeatures: D, outFeatures: QD, seed: seed)
            project(.wk, l, saved.k.baseAddress, saved.xn1.baseAddress, n: n, inFeatures: D, outFeatures: KVD, seed: seed)
            project(.wv, l, saved.v.baseAddress, saved.xn1.baseAddress, n: n, inFeatures: D, outFeatures: KVD, seed: seed)
            addBias(.bq, l, to: saved.q.baseAddress, rows: n, width: QD)
            addBias(.bk, l, to: saved.k.baseAddress, rows: n, width: KVD)
            addBias(.bv, l, to: saved.v.baseAddress, rows: n, width: KVD)
            normHeads(.qNorm, l, saved.q.baseAddress, rows: n, heads: c.nHeads, raw: saved.qRaw.baseAddress, inverse: saved.qInverse.baseAddress)
            normHeads(.kNorm, l, saved.k.baseAddress, rows: n, heads: c.nKVHeads, raw: saved.kRaw.baseAddress, inverse: saved.kInverse.baseAddress)
            if c.usesRoPE(layer: l) { rotate(queries: saved.q, keys: saved.k, batch: batch, layer: l, sign: 1) }
            attentionForward(saved, batch: batch, tape: tape, forBackward: lastLayerRows == nil, layer: l)
            if c.postNorms {
                // x_mid = x_in + rmsnorm(Wo att): the output saved before its norm.
                project(.wo, l, saved.attOut.baseAddress, saved.att.baseAddress, n: n, inFeatures: QD, outFeatures: D, seed: seed)
                normRows(out: saved.xMid, inverse: saved.rmsPostAttention, input: saved.attOut, weight: w + offset(.rmsPostAttention, l), rows: n)
                add(x.baseAddress, into: saved.xMid.baseAddress, count: n * D)
            } else {
                copy(saved.xMid.baseAddress, from: x.baseAddress, count: n * D)
                project(.wo, l, saved.xMid.baseAddress, saved.att.baseAddress, n: n, inFeatures: QD, outFeatures: D, accumulate: true, seed: seed)
            }
            inputNorm(.rmsFFN, l, out: saved.xn2, inverse: saved.rms2, input: saved.xMid, rows: n)
            project(.w1, l, saved.h1.baseAddress, saved.xn2.baseAddress, n: n, inFeatures: D, outFeatures: H, seed: seed)
            project(.w3, l, saved.h3.baseAddress, saved.xn2.baseAddress, n: n, inFeatures: D, outFeatures: H, seed: seed)
            let h1 = saved.h1.baseAddress, h3 = saved.h3.baseAddress, g = saved.g.baseAddress
            pool.parallelFor(n * H, grain: 1024) { range, _ in
                Kernels.gatedActivation(c.activation, out: g + range.lowerBound, gate: h1 + range.lowerBound, up: h3 + range.lowerBound, range.count)
            }
            let next = tape.output(ofLayer: l)
            if c.postNorms {
                project(.w2, l, saved.ffnOut.baseAddress, g, n: n, inFeatures: H, outFeatures: D, seed: seed)
                normRows(out: next, inverse: saved.rmsPostFFN, input: saved.ffnOut, weight: w + offset(.rmsPostFFN, l), rows: n)
                add(saved.xMid.baseAddress, into: next.baseAddress, count: n * D)
            } else {
                copy(next.baseAddress, from: saved.xMid.baseAddress, count: n * D)
                project(.w2, l, next.baseAddress, g, n: n, inFeatures: H, outFeatures: D, accumulate: true, seed: seed)
            }
        }
        let x = tape.xFinal
        if let rows = lastLayerRows {
            let hidden = tape.hidden.baseAddress, inverse = tape.rmsFinal.baseAddress, xf = x.baseAddress
            for r in rows {
                inverse[r] = TrainingKernels.rmsnorm(hidden + r * D, xf + r * D, w + offset(.rmsFinal), D, eps: c.normEps)
            }
        } else {
            normRows(out: tape.hidden, inverse: tape.rmsFinal, input: x, weight: w + offset(.rmsFinal), rows: n)
        }
        return tape
    }

    /// The last layer for `rows` only (`forward(_:onlyRows:)`): keys and values of every row, then the
    /// asked rows' queries, attention, output projection and feed-forward, computed compactly in the
    /// first `rows.count` rows of the layer's buffers and written to `rows` of `xFinal`.
    private func lastLayer(_ saved: ForwardTape.Layer, batch: TokenBatch, rows: [Int]) {
        let c = config, l = c.nLayers - 1
        let n = batch.rowCount, m = rows.count, D = c.dim, QD = c.queryDim, KVD = c.kvDim, H = c.hiddenDim, hs = c.headSize, half = hs / 2
        let seed: UInt64? = nil  // a scoring forward: no dropout
        inputNorm(.rmsAttention, l, out: saved.xn1, inverse: saved.rms1, input: saved.xIn, rows: n)
        project(.wk, l, saved.k.baseAddress, saved.xn1.baseAddress, n: n, inFeatures: D, outFeatures: KVD, seed: seed)
        project(.wv, l, saved.v.baseAddress, saved.xn1.baseAddress, n: n, inFeatures: D, outFeatures: KVD, seed: seed)
        addBias(.bk, l, to: saved.k.baseAddress, rows: n, width: KVD)
        addBias(.bv, l, to: saved.v.baseAddress, rows: n, width: KVD)
        normHeads(.kNorm, l, saved.k.baseAddress, rows: n, heads: c.nKVHeads, raw: nil, inverse: nil)
        // The asked rows' normed inputs, gathered into xn2's first rows.
        let gathered = saved.xn2.baseAddress, xn1 = saved.xn1.baseAddress
        for (i, r) in rows.enumerated() { (gathered + i * D).update(from: xn1 + r * D, count: D) }
        let q = saved.q.baseAddress, k = saved.k.baseAddress, v = saved.v.baseAddress, att = saved.att.baseAddress
        project(.wq, l, q, gathered, n: m, inFeatures: D, outFeatures: QD, seed: seed)
        addBias(.bq, l, to: q, rows: m, width: QD)
        normHeads(.qNorm, l, q, rows: m, heads: c.nHeads, raw: nil, inverse: nil)
        // Each asked row's sequence (rows are given in any order).
        let sequenceOfRow = rows.map { r in batch.offsets.lastIndex { $0 <= r }! }
        ropeCos.withUnsafeBufferPointer { cosT in
            ropeSin.withUnsafeBufferPointer { sinT in
                batch.positions.withUnsafeBufferPointer { positions in
                    if c.usesRoPE(layer: l) {
                        let tableStart = c.ropeTableOffset(layer: l)
                        pool.parallelFor(n, grain: 16) { range, _ in
                            for r in range {
                                let table = tableStart + positions[r] * half
                                TrainingKernels.rope(k + r * KVD, heads: c.nKVHeads, hs: hs, cos: cosT.baseAddress! + table, sin: sinT.baseAddress! + table)
                            }
                        }
                        for (i, r) in rows.enumerated() {
                            let table = tableStart + positions[r] * half
                            TrainingKernels.rope(q + i * QD, heads: c.nHeads, hs: hs, cos: cosT.baseAddress! + table, sin: sinT.baseAddress! + table)
                        }
                    }
                    // Attention of each asked row over its sequence up to its position (the last W positions
                    // in a sliding-window layer).
                    let window = c.attentionWindow(layer: l)
                    let stride = batch.sequences.map(\.count).max() ?? 1
                    var scratch = [Float](repeating: 0, count: pool.threadCount * c.nHeads * stride)
                    scratch.withUnsafeMutableBufferPointer { scratch in
                        pool.parallelFor(m) { range, thread in
                            let scores = scratch.baseAddress! + thread * c.nHeads * stride
                            for i in range {
                                let r = rows[i], first = LlamaConfig.firstAttendedKey(position: positions[r], window: window)
                                let start = batch.offsets[sequenceOfRow[i]] + first
                                Kernels.attend(out: att + i * QD, query: q + i * QD, keys: k + start * KVD, values: v + start * KVD,
                                               rowStride: KVD, count: positions[r] + 1 - first, heads: 0..<c.nHeads, groupSize: c.kvGroupSize,
                                               headSize: hs, scale: c.attentionScale, softcap: c.attentionSoftcap, scores: scores, scoreStride: stride)
                            }
                        }
                    }
                }
            }
        }
        let xIn = saved.xIn.baseAddress, xMid = saved.xMid.baseAddress
        for (i, r) in rows.enumerated() { (xMid + i * D).update(from: xIn + r * D, count: D) }
        addBlockOutput(.wo, l, input: att, inFeatures: QD, to: xMid, rows: m, postNorm: .rmsPostAttention,
                       scratch: saved.attOut, inverse: saved.rmsPostAttention)
        inputNorm(.rmsFFN, l, out: saved.xn2, inverse: saved.rms2, input: saved.xMid, rows: m)
        let h1 = saved.h1.baseAddress, h3 = saved.h3.baseAddress, g = saved.g.baseAddress
        project(.w1, l, h1, saved.xn2.baseAddress, n: m, inFeatures: D, outFeatures: H, seed: seed)
        project(.w3, l, h3, saved.xn2.baseAddress, n: m, inFeatures: D, outFeatures: H, seed: seed)
        Kernels.gatedActivation(c.activation, out: g, gate: h1, up: h3, m * H)
        // The layer's output rows, computed compactly in xn1 (free now), then placed.
        let out = xn1, final = tape.xFinal.baseAddress
        out.update(from: xMid, count: m * D)
        addBlockOutput(.w2, l, input: g, inFeatures: H, to: out, rows: m, postNorm: .rmsPostFFN, scratch: saved.ffnOut, inverse: saved.rmsPostFFN)
        for (i, r) in rows.enumerated() { (final + r * D).update(from: out + i * D, count: D) }
    }

    /// A scoring forward's block output for `m` rows: `residual += W input` (`tensor` of layer `l`), or with post
    /// norms `residual += rmsnorm(W input)` (`postNorm`'s weight), the product and its norm made in `scratch`.
    private func addBlockOutput(_ tensor: ParameterTensor, _ l: Int, input: UnsafePointer<Float>, inFeatures: Int,
                                to residual: UnsafeMutablePointer<Float>, rows m: Int, postNorm: ParameterTensor,
                                scratch: FloatBuffer, inverse: FloatBuffer) {
        let D = config.dim
        guard config.postNorms else {
            return project(tensor, l, residual, input, n: m, inFeatures: inFeatures, outFeatures: D, accumulate: true, seed: nil)
        }
        let out = scratch.baseAddress
        project(tensor, l, out, input, n: m, inFeatures: inFeatures, outFeatures: D, seed: nil)
        normRows(out: scratch, inverse: inverse, input: scratch, weight: w + offset(postNorm, l), rows: m)
        for i in 0..<m * D { residual[i] += out[i] }
    }

    /// Causal attention of each sequence with itself; saves the probabilities, with zeros above the
    /// diagonal where the backward pass will read them (`forBackward`; a scoring forward has none, and
    /// zeroes only what its own products read). In a sliding-window layer a row's keys before its last `W`
    /// positions get probability 0 too (the backward pass then gives them no gradient). A scoring forward
    /// whose head size is a multiple of 16 goes through `blockAttention`; the rest through BLAS products on
    /// blocks of 64 query rows.
    private func attentionForward(_ saved: ForwardTape.Layer, batch: TokenBatch, tape: ForwardTape, forBackward: Bool, layer l: Int) {
        let c = config, QD = c.queryDim, KVD = c.kvDim, hs = c.headSize, group = c.kvGroupSize
        let window = c.attentionWindow(layer: l)
        if !forBackward && hs % 16 == 0 {
            blockAttention(saved, batch: batch, window: window)
            return
        }
        let scale = c.attentionScale
        let q = saved.q.baseAddress, k = saved.k.baseAddress, v = saved.v.baseAddress
        let att = saved.att.baseAddress, probs = saved.probs.baseAddress
        let pairs = batch.sequences.count * c.nHeads, threads = pool.threadCount
        pool.run { t in
            for index in stride(from: t, to: pairs, by: threads) {
                let b = index / c.nHeads, h = index % c.nHeads, kvh = h / group
                let T = batch.sequences[b].count, row = batch.offsets[b]
                let P = probs + tape.probOffsets[b] + h * T * T
                let qh = q + row * QD + h * hs, kh = k + row * KVD + kvh * hs, vh = v + row * KVD + kvh * hs
                // Causal blocks of query rows: rows [r0, r1) only see keys [0, r1), so the products skip
                // the upper triangle's blocks (about half the work at T = 256).
                var r0 = 0
                while r0 < T {
                    let r1 = min(T, r0 + TrainableTransformer.attentionBlock)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(r1 - r0), Int32(r1), Int32(hs), scale,
                                qh + r0 * QD, Int32(QD), kh, Int32(KVD), 0, P + r0 * T, Int32(T))
                    // The product below reads columns [0, r1) of these rows; the backward pass all T.
                    let width = forBackward ? T : r1
                    for i in r0..<r1 {
                        let p = P + i * T, first = LlamaConfig.firstAttendedKey(position: i, window: window)
                        if let cap = c.attentionSoftcap { Kernels.softcap(p + first, i + 1 - first, cap: cap) }
                        Kernels.softmax(p + first, i + 1 - first)
                        p.update(repeating: 0, count: first)
                        (p + i + 1).update(repeating: 0, count: width - i - 1)
                    }
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(r1 - r0), Int32(hs), Int32(r1), 1,
                                P + r0 * T, Int32(T), vh, Int32(KVD), 0, att + (row + r0) * QD + h * hs, Int32(QD))
                    r0 = r1
                }
            }
        }
    }

    /// Query rows per block of `blockAttention`: the tile height of `rlhf_small_gemm_nn`.
    private static let attentionRowBlock = 8

    /// Causal attention for a scoring forward (no probabilities kept) where the head size is a multiple
    /// of 16: per sequence and head, the keys transposed once `(hs, T)`, then blocks of 8 query rows:
    /// their scores against the keys up to the block's last row, each row's `exp(score - max)` up to its
    /// own position, those weights times the values, and each output row divided by its weights' sum; all
    /// in a thread's scratch that stays in cache (BLAS calls on blocks this small cost more than their
    /// arithmetic at a head size of 48: this takes 10% less time than `attentionForward`'s blocks on the
    /// 15M shape).
    private func blockAttention(_ saved: ForwardTape.Layer, batch: TokenBatch, window: Int?) {
        let c = config, QD = c.queryDim, KVD = c.kvDim, hs = c.headSize, group = c.kvGroupSize
        let scale = c.attentionScale, block = TrainableTransformer.attentionRowBlock
        let longest = batch.sequences.map(\.count).max() ?? 0
        let padded = (longest + 15) / 16 * 16
        let perThread = (hs + block) * padded
        let threads = pool.threadCount, pairs = batch.sequences.count * c.nHeads
        if attentionScratch.count < threads * perThread { attentionScratch = FloatBuffer(count: threads * perThread) }
        let q = saved.q.baseAddress, k = saved.k.baseAddress, v = saved.v.baseAddress, att = saved.att.baseAddress
        let scratch = attentionScratch.baseAddress
        pool.run { t in
            let keysT = scratch + t * perThread, scores = keysT + hs * padded
            var inverseSums = [Float](repeating: 0, count: block)
            for index in stride(from: t, to: pairs, by: threads) {
                let b = index / c.nHeads, h = index % c.nHeads, kvh = h / group
                let T = batch.sequences[b].count, row = batch.offsets[b]
                let qh = q + row * QD + h * hs, kh = k + row * KVD + kvh * hs, vh = v + row * KVD + kvh * hs
                // keysT (hs, padded): column j is key j, zero past T (scores there are never read).
                for d in 0..<hs {
                    let out = keysT + d * padded
                    for j in 0..<T { out[j] = kh[j * KVD + d] }
                    (out + T).update(repeating: 0, count: padded - T)
                }
                var r0 = 0
                while r0 < T {
                    let rows = min(block, T - r0), keyCount = r0 + rows
                    let width = (keyCount + 15) / 16 * 16
                    rlhf_small_gemm_nn(scores, padded, qh + r0 * QD, QD, keysT, padded, rows, width, hs, scale, 0)
                    for r in 0..<rows {
                        let p = scores + r * padded, i = r0 + r
                        let first = LlamaConfig.firstAttendedKey(position: i, window: window), seen = p + first
                        if let cap = c.attentionSoftcap { Kernels.softcap(seen, i + 1 - first, cap: cap) }
                        inverseSums[r] = 1 / Kernels.expShifted(seen, seen, i + 1 - first, shift: Kernels.maximum(seen, i + 1 - first), scale: 1)
                        p.update(repeating: 0, count: first)
                        (p + i + 1).update(repeating: 0, count: keyCount - i - 1)
                    }
                    let out = att + (row + r0) * QD + h * hs
                    rlhf_small_gemm_nn(out, QD, scores, padded, vh, KVD, rows, hs, keyCount, 1, 0)
                    for r in 0..<rows {
                        let o = out + r * QD
                        for d in 0..<hs { o[d] *= inverseSums[r] }
                    }
                    r0 += rows
                }
            }
        }
    }

    /// RoPE on every row's queries `(N, QD)` and keys `(N, KVD)` at the row's position in its sequence
    /// (`sign` -1 rotates back: the backward pass); rows in parallel.
    private func rotate(queries: FloatBuffer, keys: FloatBuffer, batch: TokenBatch, layer l: Int, sign: Float) {
        let c = config, QD = c.queryDim, KVD = c.kvDim, hs = c.headSize, half = hs / 2, tableStart = c.ropeTableOffset(layer: l)
        let q = queries.baseAddress, k = keys.baseAddress
        ropeCos.withUnsafeBufferPointer { cosT in
            ropeSin.withUnsafeBufferPointer { sinT in
                batch.positions.withUnsafeBufferPointer { positions in
                    pool.parallelFor(batch.rowCount, grain: 16) { range, _ in
                        for r in range {
                            let table = tableStart + positions[r] * half
                            TrainingKernels.rope(q + r * QD, heads: c.nHeads, hs: hs, cos: cosT.baseAddress! + table,
                                                 sin: sinT.baseAddress! + table, sign: sign)
                            TrainingKernels.rope(k + r * KVD, heads: c.nKVHeads, hs: hs, cos: cosT.baseAddress! + table,
                                                 sin: sinT.baseAddress! + table, sign: sign)
                        }
                    }
                }
            }
        }
    }

    /// `destination[i] += source[i]` for `count` floats, in parallel (a residual add).
    private func add(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, count: Int) {
        pool.parallelFor(count, grain: 1 << 14) { range, _ in
            for i in range { destination[i] += source[i] }
        }
    }

    /// `count` floats from `source` to `destination`, in parallel (a residual stream's copy).
    private func copy(_ destination: UnsafeMutablePointer<Float>, from source: UnsafePointer<Float>, count: Int) {
        pool.parallelFor(count, grain: 1 << 14) { range, _ in
            (destination + range.lowerBound).update(from: source + range.lowerBound, count: range.count)
        }
    }

    /// RMSNorm of `rows` rows of `input (N, D)` into `out`, saving each row's inverse RMS; rows in parallel.
    private func normRows(out: FloatBuffer, inverse: FloatBuffer, input: FloatBuffer, weight: UnsafeMutablePointer<Float>, rows n: Int) {
        let D = config.dim, eps = config.normEps
        let o = out.baseAddress, inv = inverse.baseAddress, x = input.baseAddress
        pool.parallelFor(n, grain: 16) { range, _ in
            for r in range { inv[r] = TrainingKernels.rmsnorm(o + r * D, x + r * D, weight, D, eps: eps) }
        }
    }

    /// A block's input norm (`tensor` of layer `l`) of `rows` rows of `input` into `out`, or a copy where the blocks
    /// have no input norms (OLMo 2's).
    private func inputNorm(_ tensor: ParameterTensor, _ l: Int, out: FloatBuffer, inverse: FloatBuffer, input: FloatBuffer, rows n: Int) {
        if config.inputNorms {
            normRows(out: out, inverse: inverse, input: input, weight: w + offset(tensor, l), rows: n)
        } else {
            copy(out.baseAddress, from: input.baseAddress, count: n * config.dim)
        }
    }

    /// Backward of `inputNorm`: adds `dL/dinput` to `dx` from `dy`, the gradient of its output.
    private func inputNormBackward(_ tensor: ParameterTensor, _ l: Int, dx: FloatBuffer, dy: FloatBuffer, input: FloatBuffer,
                                   inverse: FloatBuffer, rows n: Int) {
        if config.inputNorms {
            normBackwardRows(dx: dx, weightGradient: dw + offset(tensor, l), dy: dy, input: input, weight: w + offset(tensor, l),
                             inverse: inverse, rows: n)
        } else {
            add(dy.baseAddress, into: dx.baseAddress, count: n * config.dim)
        }
    }

    /// Backward of `normRows`: adds `dL/dinput` to `dx`; each thread sums its rows' weight gradient
    /// apart, then the partial sums are added to `weightGradient`.
    private func normBackwardRows(dx: FloatBuffer, weightGradient: UnsafeMutablePointer<Float>, dy: FloatBuffer,
                                  input: FloatBuffer, weight: UnsafeMutablePointer<Float>, inverse: FloatBuffer, rows n: Int) {
        let D = config.dim, threads = pool.threadCount
        if normPartials.count < threads * D { normPartials = FloatBuffer(count: threads * D) }
        let partials = normPartials.baseAddress
        partials.update(repeating: 0, count: threads * D)
        let dxp = dx.baseAddress, dyp = dy.baseAddress, x = input.baseAddress, inv = inverse.baseAddress
        pool.run { t in
            let range = ComputePool.share(of: n, thread: t, threads: threads)
            for r in range {
                TrainingKernels.rmsnormBackward(dx: dxp + r * D, dw: partials + t * D, dy: dyp + r * D, x: x + r * D,
                                                w: weight, inv: inv[r], D)
            }
        }
        for t in 0..<threads { for i in 0..<D { weightGradient[i] += partials[t * D + i] } }
    }

    // MARK: - Projections with LoRA adapters

    /// `out (n, outF) (+)= x (n, inF) W^T` for `tensor` of layer `l`, plus its LoRA adapter's
    /// `scale (x A^T) B^T` when it has one (`seed`: the training forward's dropout masks).
    private func project(_ tensor: ParameterTensor, _ l: Int, _ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                         n: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool = false, seed: UInt64?) {
        if let transposed = scoringProjections {
            // Prepared for scoring: float32 and no adapters (a training forward has dropped the copy).
            return TrainingKernels.forwardTransposed(out, x, transposed.matrix(tensor, l), n: n, inFeatures: inFeatures,
                                                     outFeatures: outFeatures, accumulate: accumulate, pool: pool)
        }
        products.forward(out, x, w + offset(tensor, l), n: n, inFeatures: inFeatures, outFeatures: outFeatures, accumulate: accumulate)
        guard let lora, let (a, b) = lora.adapter(tensor, l), n > 0 else { return }
        let r = lora.settings.rank, values = lora.values.baseAddress
        let (u, _, _) = adapterActivations(lora, tensor, l, x, n: n, inFeatures: inFeatures, a: a, seed: seed)
        // out += scale u B^T.
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(outFeatures), Int32(r), lora.scale,
                    u, Int32(r), values + b, Int32(r), 1, out, Int32(outFeatures))
    }

    /// Backward of `project`: the base matrix's gradient (unless adapters freeze it), `dx (n, inF)
    /// (+)= dy W`, and the adapter's gradients and share of `dx`.
    private func projectBackward(_ tensor: ParameterTensor, _ l: Int, dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
                                 x: UnsafePointer<Float>, n: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool, seed: UInt64?) {
        if lora == nil {
            products.backwardWeight(dw + offset(tensor, l), dy, x, n: n, inFeatures: inFeatures, outFeatures: outFeatures)
        }
        products.backwardInput(dx, dy, w + offset(tensor, l), n: n, inFeatures: inFeatures, outFeatures: outFeatures, accumulate: accumulate)
        guard let lora, let (a, b) = lora.adapter(tensor, l), n > 0 else { return }
        let r = lora.settings.rank, values = lora.values.baseAddress, grads = lora.gradients.baseAddress, scale = lora.scale
        // u = input A^T (recomputed); dB += scale dy^T u; du = scale dy B; dA += du^T input.
        let (u, input, dropped) = adapterActivations(lora, tensor, l, x, n: n, inFeatures: inFeatures, a: a, seed: seed)
        let du = u + n * r
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(outFeatures), Int32(r), Int32(n), scale,
                    dy, Int32(outFeatures), u, Int32(r), 1, grads + b, Int32(r))
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(r), Int32(outFeatures), scale,
                    dy, Int32(outFeatures), values + b, Int32(r), 0, du, Int32(r))
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(r), Int32(inFeatures), Int32(n), 1,
                    du, Int32(r), input, Int32(inFeatures), 1, grads + a, Int32(inFeatures))
        // dx += du A, through the dropout mask when there is one.
        if let seed {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(inFeatures), Int32(r), 1,
                        du, Int32(r), values + a, Int32(inFeatures), 0, dropped, Int32(inFeatures))
            let masked = dropped
            lora.dropped(UnsafePointer(masked), into: masked, count: n * inFeatures, seed: seed, tensor: tensor, layer: l)
            for i in 0..<(n * inFeatures) { dx[i] += masked[i] }
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(inFeatures), Int32(r), 1,
                        du, Int32(r), values + a, Int32(inFeatures), 1, dx, Int32(inFeatures))
        }
    }

    /// The adapter's activations `u (n, r) = input A^T`, where `input` is `x` or, in a training forward
    /// with dropout, `x` through its mask (left in `dropped`); returns `u` (followed by room for its
    /// gradient), `input` and the `(n, inFeatures)` scratch `dropped`.
    private func adapterActivations(_ lora: LoRAAdapters, _ tensor: ParameterTensor, _ l: Int, _ x: UnsafePointer<Float>, n: Int,
                                    inFeatures: Int, a: Int, seed: UInt64?)
        -> (u: UnsafeMutablePointer<Float>, input: UnsafePointer<Float>, dropped: UnsafeMutablePointer<Float>) {
        let r = lora.settings.rank
        let (u, dropped) = loraBuffers(rows: n, inFeatures: inFeatures, rank: r)
        var input = x
        if let seed {
            lora.dropped(x, into: dropped, count: n * inFeatures, seed: seed, tensor: tensor, layer: l)
            input = UnsafePointer(dropped)
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(r), Int32(inFeatures), 1,
                    input, Int32(inFeatures), lora.values.baseAddress + a, Int32(inFeatures), 0, u, Int32(r))
        return (u, input, dropped)
    }

    /// `(n, r)` u and du, then `(n, inFeatures)` room for dropped inputs.
    private func loraBuffers(rows n: Int, inFeatures: Int, rank r: Int) -> (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) {
        let needed = 2 * n * r + n * max(config.dim, config.queryDim, config.hiddenDim)
        if loraScratch.count < needed { loraScratch = FloatBuffer(count: needed) }
        return (loraScratch.baseAddress, loraScratch.baseAddress + 2 * n * r)
    }

    /// Adds layer `l`'s `bias` (Qwen2's `bq`, `bk`, `bv`) to each of `rows` rows of `width` in `x`; nothing
    /// where the model has no attention biases.
    private func addBias(_ bias: ParameterTensor, _ l: Int, to x: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
        guard config.attentionBias else { return }
        let b = w + offset(bias, l)
        pool.parallelFor(rows, grain: 64) { range, _ in
            for r in range { Kernels.addBias(x + r * width, b, width) }
        }
    }

    /// Backward of `addBias`: the bias's gradient is the sum of `dy (rows, width)`'s rows (frozen under
    /// adapters, like the matrices). Each thread sums a slice of the columns over every row.
    private func biasBackward(_ bias: ParameterTensor, _ l: Int, dy: UnsafePointer<Float>, rows: Int, width: Int) {
        guard config.attentionBias, lora == nil else { return }
        let db = dw + offset(bias, l)
        pool.parallelFor(width, grain: 64) { columns, _ in
            for r in 0..<rows {
                let row = dy + r * width
                for i in columns { db[i] += row[i] }
            }
        }
    }

    /// The query/key norms: RMS-normalises each of `heads` heads (of `hs`; Qwen3's and Gemma 3's) or each row's
    /// `heads * hs` values at once (OLMo 2's, `qkNormAcrossHeads`) in each of `rows` rows of `x` in place with
    /// layer `l`'s `tensor` (`qNorm` or `kNorm`), first keeping the rows in `raw` and each group's inverse RMS in
    /// `inverse (rows, groups)` where given (for the backward pass). Nothing where the model has no such norms.
    private func normHeads(_ tensor: ParameterTensor, _ l: Int, _ x: UnsafeMutablePointer<Float>, rows: Int, heads: Int,
                           raw: UnsafeMutablePointer<Float>?, inverse: UnsafeMutablePointer<Float>?) {
        guard config.qkNorm else { return }
        let (groups, size) = config.qkNormGroups(heads: heads)
        let eps = config.normEps, weight = w + offset(tensor, l), width = heads * config.headSize
        pool.parallelFor(rows, grain: 16) { range, _ in
            for r in range {
                raw?.advanced(by: r * width).update(from: x + r * width, count: width)
                for g in 0..<groups {
                    let group = x + r * width + g * size
                    let inv = TrainingKernels.rmsnorm(group, group, weight, size, eps: eps)
                    inverse?[r * groups + g] = inv
                }
            }
        }
    }

    /// Backward of `normHeads`: turns `dy (rows, heads * hs)`, the gradient of the normed heads, into that
    /// of the heads before the norm, in place, and adds the norm weight's gradient (frozen under adapters).
    private func normHeadsBackward(_ tensor: ParameterTensor, _ l: Int, _ dy: UnsafeMutablePointer<Float>, raw: UnsafePointer<Float>,
                                   inverse: UnsafePointer<Float>, rows n: Int, heads: Int) {
        guard config.qkNorm else { return }
        let (groups, size) = config.qkNormGroups(heads: heads)
        let width = heads * config.headSize, threads = pool.threadCount
        if headNormScratch.count < threads * 2 * size { headNormScratch = FloatBuffer(count: threads * 2 * size) }
        let scratch = headNormScratch.baseAddress, weight = w + offset(tensor, l)
        scratch.update(repeating: 0, count: threads * 2 * size)
        pool.run { t in
            let partial = scratch + t * 2 * size, dx = partial + size
            for r in ComputePool.share(of: n, thread: t, threads: threads) {
                for g in 0..<groups {
                    let at = r * width + g * size
                    dx.update(repeating: 0, count: size)
                    TrainingKernels.rmsnormBackward(dx: dx, dw: partial, dy: dy + at, x: raw + at, w: weight, inv: inverse[r * groups + g], size)
                    (dy + at).update(from: dx, count: size)
                }
            }
        }
        guard lora == nil else { return }
        let dweight = dw + offset(tensor, l)
        for t in 0..<threads { for i in 0..<size { dweight[i] += scratch[t * 2 * size + i] } }
    }

    // MARK: - Backward

    /// Back-propagates `dL/dhidden (N, D)` through the trunk, adding every weight's gradient to
    /// `gradients` (the classifier's comes from `languageModelHead`).
    public func backward(_ tape: ForwardTape, hiddenGradient dHidden: FloatBuffer) {
        scoringProjections = nil
        let c = config
        let batch: TokenBatch = tape.batch
        let n = batch.rowCount, D = c.dim, QD = c.queryDim, KVD = c.kvDim, H = c.hiddenDim
        precondition(tape.onlyRows == nil, "a scoring forward (onlyRows) has no backward pass")
        precondition(dHidden.count >= n * D, "hidden gradient must be (N, D)")
        ensureScratch(rows: n)
        let seed = tape.loraDropoutSeed
        let dx = self.dx, dxn = self.dxn, dg = self.dg, dh1 = self.dh1, dh3 = self.dh3
        let dq = self.dq, dk = self.dk, dv = self.dv, datt = self.datt
        dx.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        normBackwardRows(dx: dx, weightGradient: dw + offset(.rmsFinal), dy: dHidden, input: tape.xFinal,
                         weight: w + offset(.rmsFinal), inverse: tape.rmsFinal, rows: n)
        for l in stride(from: c.nLayers - 1, through: 0, by: -1) {
            let saved = tape.layers[l]
            // FFN: x_out = x_mid + W2 g (with post norms, x_mid + rmsnorm(W2 g)), g = act(W1 xn2) * (W3 xn2),
            // xn2 = rmsnorm(x_mid). With post norms the output's gradient goes through its norm into dxn
            // (free until W1's backward overwrites it).
            let dOut = c.postNorms ? postNormBackward(.rmsPostFFN, l, dy: dx, input: saved.ffnOut, inverse: saved.rmsPostFFN, rows: n) : dx
            projectBackward(.w2, l, dx: dg.baseAddress, dy: dOut.baseAddress, x: saved.g.baseAddress, n: n, inFeatures: H, outFeatures: D,
                            accumulate: false, seed: seed)
            let h1 = saved.h1.baseAddress, h3 = saved.h3.baseAddress, g = dg.baseAddress
            let d1 = dh1.baseAddress, d3 = dh3.baseAddress
            pool.parallelFor(n * H, grain: 1024) { range, _ in
                Kernels.gatedActivationBackward(c.activation, dGate: d1 + range.lowerBound, dUp: d3 + range.lowerBound, gate: h1 + range.lowerBound,
                                                up: h3 + range.lowerBound, dOut: g + range.lowerBound, range.count)
            }
            projectBackward(.w1, l, dx: dxn.baseAddress, dy: d1, x: saved.xn2.baseAddress, n: n, inFeatures: D, outFeatures: H,
                            accumulate: false, seed: seed)
            projectBackward(.w3, l, dx: dxn.baseAddress, dy: d3, x: saved.xn2.baseAddress, n: n, inFeatures: D, outFeatures: H,
                            accumulate: true, seed: seed)
            inputNormBackward(.rmsFFN, l, dx: dx, dy: dxn, input: saved.xMid, inverse: saved.rms2, rows: n)
            // Attention: x_mid = x_in + Wo att (with post norms, x_in + rmsnorm(Wo att)).
            let dAttOut = c.postNorms
                ? postNormBackward(.rmsPostAttention, l, dy: dx, input: saved.attOut, inverse: saved.rmsPostAttention, rows: n) : dx
            projectBackward(.wo, l, dx: datt.baseAddress, dy: dAttOut.baseAddress, x: saved.att.baseAddress, n: n, inFeatures: QD, outFeatures: D,
                            accumulate: false, seed: seed)
            attentionBackward(saved, batch: batch, tape: tape, datt: datt, dq: dq, dk: dk, dv: dv)
            if c.usesRoPE(layer: l) { rotate(queries: dq, keys: dk, batch: batch, layer: l, sign: -1) }
            normHeadsBackward(.qNorm, l, dq.baseAddress, raw: saved.qRaw.baseAddress, inverse: saved.qInverse.baseAddress, rows: n, heads: c.nHeads)
            normHeadsBackward(.kNorm, l, dk.baseAddress, raw: saved.kRaw.baseAddress, inverse: saved.kInverse.baseAddress, rows: n, heads: c.nKVHeads)
            biasBackward(.bq, l, dy: dq.baseAddress, rows: n, width: QD)
            biasBackward(.bk, l, dy: dk.baseAddress, rows: n, width: KVD)
            biasBackward(.bv, l, dy: dv.baseAddress, rows: n, width: KVD)
            let xn1 = saved.xn1.baseAddress
            projectBackward(.wq, l, dx: dxn.baseAddress, dy: dq.baseAddress, x: xn1, n: n, inFeatures: D, outFeatures: QD, accumulate: false, seed: seed)
            projectBackward(.wk, l, dx: dxn.baseAddress, dy: dk.baseAddress, x: xn1, n: n, inFeatures: D, outFeatures: KVD, accumulate: true, seed: seed)
            projectBackward(.wv, l, dx: dxn.baseAddress, dy: dv.baseAddress, x: xn1, n: n, inFeatures: D, outFeatures: KVD, accumulate: true, seed: seed)
            inputNormBackward(.rmsAttention, l, dx: dx, dy: dxn, input: saved.xIn, inverse: saved.rms1, rows: n)
        }
        // Embedding rows (serial: a token may repeat), times the embedding's scale where it has one.
        let embedding = dw + offset(.tokenEmbedding), scale = c.embeddingScale ?? 1
        for (b, s) in batch.sequences.enumerated() {
            for (p, token) in s.enumerated() {
                let row = dx.baseAddress + (batch.offsets[b] + p) * D
                let dst = embedding + Int(token) * D
                if c.embeddingScale == nil {
                    for i in 0..<D { dst[i] += row[i] }
                } else {
                    for i in 0..<D { dst[i] += scale * row[i] }
                }
            }
        }
    }

    /// Backward of a block output's post norm (`x_next = x + rmsnorm(out) * weight`): `dL/dout` from
    /// `dy = dL/dx_next` into `dxn` (returned), the norm weight's gradient added to `tensor`'s.
    private func postNormBackward(_ tensor: ParameterTensor, _ l: Int, dy: FloatBuffer, input: FloatBuffer, inverse: FloatBuffer,
                                  rows n: Int) -> FloatBuffer {
        dxn.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        normBackwardRows(dx: dxn, weightGradient: dw + offset(tensor, l), dy: dy, input: input,
                         weight: w + offset(tensor, l), inverse: inverse, rows: n)
        return dxn
    }

    /// Backward of causal attention: fills `dq (N, QD)`, `dk`, `dv (N, KVD)` from `datt (N, QD)`.
    /// Work is split by (sequence, kv head) so that the query heads sharing a kv head add into its
    /// gradient on one thread.
    private func attentionBackward(_ saved: ForwardTape.Layer, batch: TokenBatch, tape: ForwardTape,
                                   datt: FloatBuffer, dq: FloatBuffer, dk: FloatBuffer, dv: FloatBuffer) {
        let c = config, QD = c.queryDim, KVD = c.kvDim, hs = c.headSize, group = c.kvGroupSize
        let scale = c.attentionScale
        let q = saved.q.baseAddress, k = saved.k.baseAddress, v = saved.v.baseAddress, probs = saved.probs.baseAddress
        let dQ = dq.baseAddress, dK = dk.baseAddress, dV = dv.baseAddress, dO = datt.baseAddress
        dk.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        dv.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
        let maxT = batch.sequences.map(\.count).max()!
        let threads = pool.threadCount
        // With softcapping, a second (T, T) block per thread: the capped scores, recomputed, whose tanh the
        // gradient goes back through.
        let blocks = c.attentionSoftcap == nil ? 1 : 2
        if attentionScratch.count < threads * blocks * maxT * maxT { attentionScratch = FloatBuffer(count: threads * blocks * maxT * maxT) }
        let scratch = attentionScratch
        let units = batch.sequences.count * c.nKVHeads
        pool.run { t in
            let dS = scratch.baseAddress + t * blocks * maxT * maxT, capped = dS + maxT * maxT
            for unit in stride(from: t, to: units, by: threads) {
                let b = unit / c.nKVHeads, kvh = unit % c.nKVHeads
                let T = batch.sequences[b].count, row = batch.offsets[b]
                let kh = k + row * KVD + kvh * hs, vh = v + row * KVD + kvh * hs
                let dkh = dK + row * KVD + kvh * hs, dvh = dV + row * KVD + kvh * hs
                for h in (kvh * group)..<((kvh + 1) * group) {
                    let P = probs + tape.probOffsets[b] + h * T * T
                    let qh = q + row * QD + h * hs, doh = dO + row * QD + h * hs, dqh = dQ + row * QD + h * hs
                    // dV += P^T dO
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(T), Int32(hs), Int32(T), 1,
                                P, Int32(T), doh, Int32(QD), 1, dvh, Int32(KVD))
                    // dP = dO V^T, then dS = P * (dP - rowsum(dP * P)) * scale
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(T), Int32(T), Int32(hs), 1,
                                doh, Int32(QD), vh, Int32(KVD), 0, dS, Int32(T))
                    if let cap = c.attentionSoftcap {
                        // s = scale q.k capped to cap tanh(s / cap): ds = dcapped (1 - tanh^2).
                        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(T), Int32(T), Int32(hs), scale,
                                    qh, Int32(QD), kh, Int32(KVD), 0, capped, Int32(T))
                        for i in 0..<T { Kernels.softcap(capped + i * T, i + 1, cap: cap) }
                    }
                    for i in 0..<T {
                        let p = P + i * T, d = dS + i * T
                        var dotRow: Float = 0
                        for j in 0...i { dotRow += d[j] * p[j] }
                        if let cap = c.attentionSoftcap {
                            let u = capped + i * T
                            for j in 0...i {
                                let tanh = u[j] / cap
                                d[j] = p[j] * (d[j] - dotRow) * scale * (1 - tanh * tanh)
                            }
                        } else {
                            for j in 0...i { d[j] = p[j] * (d[j] - dotRow) * scale }
                        }
                        for j in (i + 1)..<T { d[j] = 0 }
                    }
                    // dQ = dS K ; dK += dS^T Q
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(T), Int32(hs), Int32(T), 1,
                                dS, Int32(T), kh, Int32(KVD), 0, dqh, Int32(QD))
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(T), Int32(hs), Int32(T), 1,
                                dS, Int32(T), qh, Int32(QD), 1, dkh, Int32(KVD))
                }
            }
        }
    }

    // MARK: - Language-model head

    /// Computes logits `(rows, V)` for `rows` of the tape in chunks, lets `loss(i, logits)` turn row
    /// `i`'s logits into `dL/dlogits` in place (returning its loss contribution), then back-propagates:
    /// adds the classifier's gradient and returns `dL/dhidden (N, D)` (zero on other rows) and the
    /// summed loss. Without `computeGradients` the logits are only read (no gradient, zero `dhidden`).
    /// `loss` is called for several rows at once from the pool's threads: it may write only state
    /// that belongs to its row index.
    public func languageModelHead(_ tape: ForwardTape, rows: [Int], computeGradients: Bool = true,
                                  loss: (_ index: Int, _ logits: UnsafeMutableBufferPointer<Float>) -> Double)
        -> (loss: Double, hiddenGradient: FloatBuffer) {
        let c = config, D = c.dim, V = c.vocabSize
        let dHidden = hiddenGradient(for: tape)
        // Softcapped logits (Gemma 2) keep their capped values beside the loss's gradient: half the rows at once,
        // the same memory.
        let capped = c.logitSoftcap != nil
        let chunk = capped ? TrainableTransformer.headChunkRows / 2 : TrainableTransformer.headChunkRows
        let scratchCount = chunk * (2 * D + V * (capped ? 2 : 1))
        if headScratch.count < scratchCount { headScratch = FloatBuffer(count: scratchCount) }
        if rowLosses.count < chunk { rowLosses = AlignedBuffer<Double>(count: chunk) }
        let h = headScratch.baseAddress, dh = h + chunk * D
        let logits = dh + chunk * D
        let wcls = w + offset(.classifier), dwcls = dw + offset(.classifier)
        var total = 0.0
        var start = 0
        while start < rows.count {
            let m = min(chunk, rows.count - start)
            for i in 0..<m {
                (h + i * D).update(from: tape.hidden.baseAddress + rows[start + i] * D, count: D)
            }
            products.forward(logits, h, wcls, n: m, inFeatures: D, outFeatures: V)
            let cappedLogits = logits + chunk * V
            if let cap = c.logitSoftcap {
                Kernels.softcap(logits, m * V, cap: cap)
                cappedLogits.update(from: logits, count: m * V)
            }
            // Rows are independent: the loss runs on them in parallel (it must only write per-index state).
            let chunkStart = start
            let losses = rowLosses.baseAddress
            withoutActuallyEscaping(loss) { loss in
                pool.parallelFor(m) { range, _ in
                    for i in range {
                        losses[i] = loss(chunkStart + i, UnsafeMutableBufferPointer(start: logits + i * V, count: V))
                    }
                }
            }
            for i in 0..<m { total += losses[i] }
            if !computeGradients {
                start += m
                continue
            }
            if let cap = c.logitSoftcap {
                // dL/dlogit = dL/dcapped (1 - tanh^2), tanh = capped / cap.
                pool.parallelFor(m * V, grain: 1 << 14) { range, _ in
                    for i in range {
                        let tanh = cappedLogits[i] / cap
                        logits[i] *= 1 - tanh * tanh
                    }
                }
            }
            // A model with LoRA adapters keeps its classifier frozen.
            if lora == nil { products.backwardWeight(dwcls, logits, h, n: m, inFeatures: D, outFeatures: V) }
            products.backwardInput(dh, logits, wcls, n: m, inFeatures: D, outFeatures: V,
                                          accumulate: false)
            for i in 0..<m {
                let dst = dHidden.baseAddress + rows[start + i] * D, src = dh + i * D
                for j in 0..<D { dst[j] += src[j] }
            }
            start += m
        }
        return (total, dHidden)
    }
}
