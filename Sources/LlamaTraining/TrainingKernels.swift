import CBLAS
import CKernels
import LlamaCore
#if canImport(Glibc)
import Glibc
#endif

/// Loops and BLAS calls of the backward pass. Matrices are row-major; `(N, in)` activations times
/// `(out, in)` weights, as in the forward pass.
enum TrainingKernels {
    typealias Vec = SIMD16<Float>

    @inline(__always) static func load(_ p: UnsafePointer<Float>, _ i: Int) -> Vec {
        UnsafeRawPointer(p + i).loadUnaligned(as: Vec.self)
    }

    @inline(__always) static func store(_ v: Vec, _ p: UnsafeMutablePointer<Float>, _ i: Int) {
        UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: Vec.self)
    }

    /// One AdamW step of `count` values at `p` with moments `m`, `v` and gradients `g` (scaled by
    /// `scale`, the clipping): 16 lanes at a time, each operation rounded on its own.
    static func adamWUpdate(_ p: UnsafeMutablePointer<Float>, _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>,
                            _ g: UnsafePointer<Float>, count: Int, scale: Float, settings s: AdamWSettings, lr: Float, decay: Float,
                            correction1: Float, correction2: Float) {
        rlhf_adamw_update(p, m, v, g, count, scale, s.beta1, s.beta2, lr, decay, s.eps, correction1, correction2)
    }

    @inline(__always) static func hsum(_ v: Vec) -> Float {
        let a = v.lowHalf + v.highHalf
        let b = a.lowHalf + a.highHalf
        let c = b.lowHalf + b.highHalf
        return c[0] + c[1]
    }

    @inline(__always) static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = Vec()
        var i = 0
        while i + 16 <= n { acc.addProduct(load(a, i), load(b, i)); i += 16 }
        var s = hsum(acc)
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    // MARK: - Matrix products, split over the pool's threads

    // Each thread's sgemm packs the whole of the operand it shares with the others, so work is split
    // along the dimension that leaves the smaller operand shared: rows of the activations when the
    // weight matrix is the smaller (the layers), features when the activations are (the classifier).

    /// `Y (N, out) = X (N, in) W^T` (+ Y when `accumulate`).
    static func forward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                        n: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool = false, pool: ComputePool) {
        guard n > 0 else { return }
        let threads = pool.threadCount
        let byRows = threads > 1 && outFeatures < n
        pool.run { t in
            if byRows {
                let rows = ComputePool.share(of: n, thread: t, threads: threads, grain: 16)
                guard !rows.isEmpty else { return }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows.count), Int32(outFeatures), Int32(inFeatures), 1,
                            x + rows.lowerBound * inFeatures, Int32(inFeatures), w, Int32(inFeatures),
                            accumulate ? 1 : 0, y + rows.lowerBound * outFeatures, Int32(outFeatures))
            } else {
                let r = ComputePool.share(of: outFeatures, thread: t, threads: threads, grain: 16)
                guard !r.isEmpty else { return }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(n), Int32(r.count), Int32(inFeatures), 1,
                            x, Int32(inFeatures), w + r.lowerBound * inFeatures, Int32(inFeatures),
                            accumulate ? 1 : 0, y + r.lowerBound, Int32(outFeatures))
            }
        }
    }

    /// `Y (N, out) = X (N, in) Wt (in, out)` (+ Y when `accumulate`), `Wt` in the column panels of
    /// `TransposedProjections`, through `rlhf_small_gemm_nn`: rows shared out over the threads; each
    /// thread takes a block of panels (about 512 KB, kept in the core's L2) at a time, and under it
    /// chunks of 128 rows (their inputs kept in cache too) through every panel of the block. Every
    /// output is one sum over `in` in order, however the work is cut.
    static func forwardTransposed(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ wt: UnsafePointer<Float>,
                                  n: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool, pool: ComputePool) {
        guard n > 0, outFeatures > 0 else { return }
        let threads = pool.threadCount
        let width = TransposedProjections.panelWidth
        let block = max(1, (1 << 17) / max(1, inFeatures * width)) * width
        let rowChunk = 128
        pool.run { t in
            let rows = ComputePool.share(of: n, thread: t, threads: threads, grain: 8)
            guard !rows.isEmpty else { return }
            for j0 in stride(from: 0, to: outFeatures, by: block) {
                for r0 in stride(from: rows.lowerBound, to: rows.upperBound, by: rowChunk) {
                    let count = min(rowChunk, rows.upperBound - r0)
                    for j in stride(from: j0, to: min(j0 + block, outFeatures), by: width) {
                        let panelWidth = min(width, outFeatures - j)
                        rlhf_small_gemm_nn(y + r0 * outFeatures + j, outFeatures, x + r0 * inFeatures, inFeatures,
                                           wt + j * inFeatures, panelWidth, count, panelWidth, inFeatures, 1, accumulate ? 1 : 0)
                    }
                }
            }
        }
    }

    /// `dX (N, in) (+)= dY (N, out) W (out, in)`.
    static func backwardInput(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                              n: Int, inFeatures: Int, outFeatures: Int, accumulate: Bool, pool: ComputePool) {
        guard n > 0 else { return }
        let threads = pool.threadCount
        let byRows = threads > 1 && inFeatures < n
        pool.run { t in
            if byRows {
                let rows = ComputePool.share(of: n, thread: t, threads: threads, grain: 16)
                guard !rows.isEmpty else { return }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows.count), Int32(inFeatures), Int32(outFeatures), 1,
                            dy + rows.lowerBound * outFeatures, Int32(outFeatures), w, Int32(inFeatures),
                            accumulate ? 1 : 0, dx + rows.lowerBound * inFeatures, Int32(inFeatures))
            } else {
                let r = ComputePool.share(of: inFeatures, thread: t, threads: threads, grain: 16)
                guard !r.isEmpty else { return }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(r.count), Int32(outFeatures), 1,
                            dy, Int32(outFeatures), w + r.lowerBound, Int32(inFeatures),
                            accumulate ? 1 : 0, dx + r.lowerBound, Int32(inFeatures))
            }
        }
    }

    /// `dW (out, in) += dY^T (out, N) X (N, in)`: split over output features when `dY` is the wider
    /// operand, else over input features.
    static func backwardWeight(_ dw: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
                               n: Int, inFeatures: Int, outFeatures: Int, pool: ComputePool) {
        guard n > 0 else { return }
        let threads = pool.threadCount
        let byOut = outFeatures >= inFeatures
        pool.run { t in
            if byOut {
                let r = ComputePool.share(of: outFeatures, thread: t, threads: threads, grain: 16)
                guard !r.isEmpty else { return }
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(r.count), Int32(inFeatures), Int32(n), 1,
                            dy + r.lowerBound, Int32(outFeatures), x, Int32(inFeatures),
                            1, dw + r.lowerBound * inFeatures, Int32(inFeatures))
            } else {
                let r = ComputePool.share(of: inFeatures, thread: t, threads: threads, grain: 16)
                guard !r.isEmpty else { return }
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(outFeatures), Int32(r.count), Int32(n), 1,
                            dy, Int32(outFeatures), x + r.lowerBound, Int32(inFeatures),
                            1, dw + r.lowerBound, Int32(inFeatures))
            }
        }
    }

    // MARK: - RMSNorm

    /// `y = x * w / sqrt(mean(x^2) + eps)` for one row; returns the inverse RMS (saved for backward).
    @inline(__always)
    static func rmsnorm(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                        _ n: Int, eps: Float) -> Float {
        let inv = 1 / (dot(x, x, n) / Float(n) + eps).squareRoot()
        let s = Vec(repeating: inv)
        var i = 0
        while i + 16 <= n { store(load(x, i) * s * load(w, i), y, i); i += 16 }
        while i < n { y[i] = x[i] * inv * w[i]; i += 1 }
        return inv
    }

    /// Backward of `rmsnorm` for one row: adds `dL/dx` to `dx` and `dL/dw` to `dw`.
    /// `dx_i = r (dy_i w_i) - r^3 x_i sum_j(dy_j w_j x_j) / n`, `dw_i = dy_i x_i r`.
    @inline(__always)
    static func rmsnormBackward(dx: UnsafeMutablePointer<Float>, dw: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>,
                                x: UnsafePointer<Float>, w: UnsafePointer<Float>, inv r: Float, _ n: Int) {
        var dot3: Float = 0
        for i in 0..<n { dot3 += dy[i] * w[i] * x[i] }
        let c = r * r * r * dot3 / Float(n)
        for i in 0..<n {
            dx[i] += r * dy[i] * w[i] - c * x[i]
            dw[i] += dy[i] * x[i] * r
        }
    }

    // MARK: - RoPE

    /// Rotates adjacent pairs of `heads` heads by the angles of one position (`sign` -1 undoes it,
    /// which is the backward pass of the rotation).
    @inline(__always)
    static func rope(_ v: UnsafeMutablePointer<Float>, heads: Int, hs: Int, cos: UnsafePointer<Float>,
                     sin: UnsafePointer<Float>, sign: Float = 1) {
        for h in 0..<heads {
            let p = v + h * hs
            var i = 0
            while i < hs {
                let c = cos[i >> 1], s = sign * sin[i >> 1]
                let a = p[i], b = p[i + 1]
                p[i] = a * c - b * s
                p[i + 1] = a * s + b * c
                i += 2
            }
        }
    }
}
