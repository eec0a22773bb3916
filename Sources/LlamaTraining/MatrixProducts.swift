import LlamaCore

/// The matrix products of training (forward, input gradient, weight gradient), in float32 (OpenBLAS
/// sgemm) or in bfloat16: operands rounded to bfloat16 as they are packed, products summed in float32
/// (AVX-512 BF16 `vdpbf16ps` where the CPU has it, else a portable fallback with the same sums), the
/// weights and gradients they read and write float32 (mixed precision with float32 master weights, as
/// PyTorch's autocast does on CPU).
public final class MatrixProducts {
    /// Threads for every product.
    public let pool: ComputePool
    /// The number format of the products.
    public let precision: WeightPrecision
    /// bfloat16 pair rows of the left operand and pair panels of the right one, grown on demand.
    private var rows = AlignedBuffer<UInt32>(count: 0)
    private var panels = AlignedBuffer<UInt16>(count: 0)

    /// Bytes the packing buffers hold now.
    var scratchBytes: Int { 4 * rows.count + 2 * panels.count }

    public init(pool: ComputePool, precision: WeightPrecision = .float32) {
        self.pool = pool
        self.precision = precision
    }

    /// `Y (N, out) = X (N, in) W^T` (+ Y when `accumulate`).
    func forward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                 n: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool = false) {
        guard precision == .bfloat16 else {
            return TrainingKernels.forward(y, x, w, n: n, inFeatures: inFeatures, outFeatures: outFeatures, accumulate: accumulate, pool: pool)
        }
        product(y, m: n, features: outFeatures, k: inFeatures, left: Operand(x, rowStride: inFeatures, kStride: 1),
                right: Operand(w, rowStride: inFeatures, kStride: 1), accumulate: accumulate)
    }

    /// `dX (N, in) (+)= dY (N, out) W (out, in)`.
    func backwardInput(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                       n: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool) {
        guard precision == .bfloat16 else {
            return TrainingKernels.backwardInput(dx, dy, w, n: n, inFeatures: inFeatures, outFeatures: outFeatures, accumulate: accumulate, pool: pool)
        }
        // Summed over the output features: W read transposed.
        product(dx, m: n, features: inFeatures, k: outFeatures, left: Operand(dy, rowStride: outFeatures, kStride: 1),
                right: Operand(w, rowStride: 1, kStride: inFeatures), accumulate: accumulate)
    }

    /// `dW (out, in) += dY^T (out, N) X (N, in)`.
    func backwardWeight(_ dw: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
                        n: Int, inFeatures: Int, outFeatures: Int) {
        guard precision == .bfloat16 else {
            return TrainingKernels.backwardWeight(dw, dy, x, n: n, inFeatures: inFeatures, outFeatures: outFeatures, pool: pool)
        }
        // Summed over the rows: both operands read transposed.
        product(dw, m: outFeatures, features: inFeatures, k: n, left: Operand(dy, rowStride: 1, kStride: outFeatures),
                right: Operand(x, rowStride: 1, kStride: inFeatures), accumulate: true)
    }

    /// A float32 matrix read as `(rows, k)`: element `(r, kk)` at `base[r * rowStride + kk * kStride]`.
    struct Operand {
        let base: UnsafePointer<Float>
        let rowStride: Int
        let kStride: Int
        init(_ base: UnsafePointer<Float>, rowStride: Int, kStride: Int) {
            self.base = base
            self.rowStride = rowStride
            self.kStride = kStride
        }
    }

    /// `C (m, features) (+)= L (m, k) R (features, k)^T` in bfloat16: each thread packs its share of the
    /// rows and of the panels, then multiplies its share of the features over every row.
    private func product(_ c: UnsafeMutablePointer<Float>, m: Int, features: Int, k: Int, left: Operand, right: Operand, accumulate: Bool) {
        guard m > 0, features > 0 else { return }
        guard k > 0 else {
            if !accumulate { c.update(repeating: 0, count: m * features) }
            return
        }
        let rowWords = Kernels.pairWords(rows: m, k: k), panelCount = Kernels.pairPanelCount(n: features, k: k)
        if rows.count < rowWords { rows = AlignedBuffer<UInt32>(count: rowWords) }
        if panels.count < panelCount { panels = AlignedBuffer<UInt16>(count: panelCount) }
        let x = rows.baseAddress, packed = panels.baseAddress
        let threads = pool.threadCount
        let panelTotal = Kernels.pairPanels(n: features)
        pool.run { t in
            let r = ComputePool.share(of: m, thread: t, threads: threads, grain: 16)
            Kernels.packPairRows(x, left.base, rows: r, k: k, rowStride: left.rowStride, kStride: left.kStride)
            let j = ComputePool.share(of: panelTotal, thread: t, threads: threads, grain: 1)
            Kernels.packPairPanels(packed, right.base, n: features, panels: j, k: k, rowStride: right.rowStride, kStride: right.kStride)
        }
        pool.run { t in
            let range = ComputePool.share(of: features, thread: t, threads: threads, grain: 16)
            guard !range.isEmpty else { return }
            Kernels.matmulPairPanels(c, ldc: features, x, m: m, packed, k: k, features: range, accumulate: accumulate)
        }
    }

    /// The bytes the bfloat16 packing buffers grow to while a model of `c` trains on `tokens` tokens at
    /// once (every layer product, forward and both backward forms, and the classifier's in chunks of
    /// the language-model head's rows): the largest packed left operand plus the largest packed right one.
    public static func bfloat16ScratchBytes(_ c: LlamaConfig, tokens: Int) -> Int {
        var rowWords = 0, panelElements = 0
        func add(rows n: Int, inFeatures: Int, outFeatures: Int) {
            // (m, features, k) of the forward, the input gradient and the weight gradient.
            for (m, features, k) in [(n, outFeatures, inFeatures), (n, inFeatures, outFeatures), (outFeatures, inFeatures, n)] {
                rowWords = max(rowWords, Kernels.pairWords(rows: m, k: k))
                panelElements = max(panelElements, Kernels.pairPanelCount(n: features, k: k))
            }
        }
        for tensor in [ParameterTensor.wq, .wk, .w1, .w2] {
            let (out, inFeatures) = LlamaModel.matrixShape(tensor, c)
            add(rows: tokens, inFeatures: inFeatures, outFeatures: out)
        }
        add(rows: min(tokens, TrainableTransformer.headChunkRows), inFeatures: c.dim, outFeatures: c.vocabSize)
        return 4 * rowWords + 2 * panelElements
    }
}
