import LlamaCore

/// The matrix products of training (forward, input gradient, weight gradient), in float32 (OpenBLAS
/// sgemm) or in bfloat16: operands rounded to bfloat16, every product of two bfloat16 values exact in
/// float32 and summed in float32, the weights and gradients they read and write float32 (mixed
/// precision with float32 master weights, as PyTorch's autocast does on CPU). Two routes compute the
/// bfloat16 products (`BFloat16Route`); each process takes the faster one on its CPU.
public final class MatrixProducts {
    /// How bfloat16 products are computed.
    public enum BFloat16Route: String, Sendable {
        /// Operands packed as bfloat16 pairs and multiplied by `vdpbf16ps` (AVX-512 BF16), or by a
        /// portable fallback with the same sums: half the bytes, and where the instruction is fast
        /// (AMD Zen 4: twice a float32 FMA's multiply-adds) half the time.
        case pairPanels
        /// Operands rounded to bfloat16 values kept in float32 and multiplied by sgemm: the same
        /// products, summed in sgemm's order. Where `vdpbf16ps` is slower than float32 FMAs (the Intel
        /// Xeons of the class without AMX: 0.45x) or absent, this is the fast route.
        case roundedFloat32

        /// The faster route on this CPU: pair panels where `vdpbf16ps` exists and measures at least a
        /// float32 FMA's arithmetic rate (a probe of a few milliseconds, once per process).
        public static let fastest: BFloat16Route = Kernels.bfloat16DotProductIsFast ? .pairPanels : .roundedFloat32
    }

    /// Threads for every product.
    public let pool: ComputePool
    /// The number format of the products.
    public let precision: WeightPrecision
    /// The route of bfloat16 products.
    public let route: BFloat16Route
    /// bfloat16 pair rows of the left operand and pair panels of the right one (pair panels), or the
    /// two operands rounded (rounded float32), grown on demand.
    private var rows = AlignedBuffer<UInt32>(count: 0)
    private var panels = AlignedBuffer<UInt16>(count: 0)
    private var roundedLeft = FloatBuffer(count: 0)
    private var roundedRight = FloatBuffer(count: 0)

    /// Bytes the packing buffers hold now.
    var scratchBytes: Int { 4 * rows.count + 2 * panels.count + 4 * (roundedLeft.count + roundedRight.count) }

    /// Products in `precision`; bfloat16 ones by `route` (by default the faster on this CPU).
    public init(pool: ComputePool, precision: WeightPrecision = .float32, route: BFloat16Route = .fastest) {
        self.pool = pool
        self.precision = precision
        self.route = route
    }

    /// `source` (`count` floats) rounded to bfloat16 values into a float32 buffer of at least `count`
    /// (`buffer`, grown on demand); in parallel.
    private func rounded(_ source: UnsafePointer<Float>, count: Int, into buffer: inout FloatBuffer) -> UnsafePointer<Float> {
        if buffer.count < count { buffer = FloatBuffer(count: count) }
        let out = buffer.baseAddress
        pool.parallelFor(count, grain: 1 << 14) { range, _ in
            Kernels.roundToBFloat16(out + range.lowerBound, source + range.lowerBound, range.count)
        }
        return UnsafePointer(out)
    }

    /// `Y (N, out) = X (N, in) W^T` (+ Y when `accumulate`).
    func forward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                 n: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool = false) {
        guard precision == .bfloat16 else {
            return TrainingKernels.forward(y, x, w, n: n, inFeatures: inFeatures, outFeatures: outFeatures, accumulate: accumulate, pool: pool)
        }
        if route == .roundedFloat32 {
            let xr = rounded(x, count: n * inFeatures, into: &roundedLeft), wr = rounded(w, count: outFeatures * inFeatures, into: &roundedRight)
            return TrainingKernels.forward(y, xr, wr, n: n, inFeatures: inFeatures, outFeatures: outFeatures, accumulate: accumulate, pool: pool)
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
        if route == .roundedFloat32 {
            let dyr = rounded(dy, count: n * outFeatures, into: &roundedLeft), wr = rounded(w, count: outFeatures * inFeatures, into: &roundedRight)
            return TrainingKernels.backwardInput(dx, dyr, wr, n: n, inFeatures: inFeatures, outFeatures: outFeatures, accumulate: accumulate, pool: pool)
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
        if route == .roundedFloat32 {
            let dyr = rounded(dy, count: n * outFeatures, into: &roundedLeft), xr = rounded(x, count: n * inFeatures, into: &roundedRight)
            return TrainingKernels.backwardWeight(dw, dyr, xr, n: n, inFeatures: inFeatures, outFeatures: outFeatures, pool: pool)
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
    /// the language-model head's rows): the largest packed left operand plus the largest packed right
    /// one, on `route` (by default this CPU's).
    public static func bfloat16ScratchBytes(_ c: LlamaConfig, tokens: Int, route: BFloat16Route = .fastest) -> Int {
        var rowWords = 0, panelElements = 0, left = 0, right = 0
        func add(rows n: Int, inFeatures: Int, outFeatures: Int) {
            // (m, features, k) of the forward, the input gradient and the weight gradient.
            for (m, features, k) in [(n, outFeatures, inFeatures), (n, inFeatures, outFeatures), (outFeatures, inFeatures, n)] {
                rowWords = max(rowWords, Kernels.pairWords(rows: m, k: k))
                panelElements = max(panelElements, Kernels.pairPanelCount(n: features, k: k))
            }
            // The rounded copies: the forward's and input gradient's (x or dy, then w), the weight
            // gradient's (dy, then x).
            left = max(left, n * inFeatures, n * outFeatures)
            right = max(right, outFeatures * inFeatures, n * inFeatures)
        }
        for tensor in [ParameterTensor.wq, .wk, .wo, .w1, .w2] {
            let (out, inFeatures) = LlamaModel.matrixShape(tensor, c)
            add(rows: tokens, inFeatures: inFeatures, outFeatures: out)
        }
        add(rows: min(tokens, TrainableTransformer.headChunkRows), inFeatures: c.dim, outFeatures: c.vocabSize)
        return route == .pairPanels ? 4 * rowWords + 2 * panelElements : 4 * (left + right)
    }
}
