import CBLAS
import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// SIMD loops and BLAS calls behind the transformer. Everything here takes raw pointers; callers lend
/// them from `AlignedBuffer`s. Vectors use 16 lanes (one AVX-512 register, two AVX2 registers).
package enum Kernels {
    package typealias Vec = SIMD16<Float>

    @inline(__always)
    @inlinable package static func load(_ p: UnsafePointer<Float>, _ i: Int) -> Vec {
        UnsafeRawPointer(p + i).loadUnaligned(as: Vec.self)
    }

    @inline(__always)
    @inlinable package static func store(_ v: Vec, _ p: UnsafeMutablePointer<Float>, _ i: Int) {
        UnsafeMutableRawPointer(p + i).storeBytes(of: v, as: Vec.self)
    }

    /// `sum_i a[i] * b[i]` over `n` elements.
    @inline(__always)
    package static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc0 = Vec(), acc1 = Vec()
        var i = 0
        while i + 32 <= n {
            acc0.addProduct(load(a, i), load(b, i))
            acc1.addProduct(load(a, i + 16), load(b, i + 16))
            i += 32
        }
        if i + 16 <= n {
            acc0.addProduct(load(a, i), load(b, i))
            i += 16
        }
        var s = horizontalSum(acc0 + acc1)
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    /// Sum of the 16 lanes as a tree of halves (the standard library's `sum()` adds lanes one after
    /// another, a 16-deep dependency chain).
    @inline(__always)
    @inlinable package static func horizontalSum(_ v: Vec) -> Float {
        let a = v.lowHalf + v.highHalf
        let b = a.lowHalf + a.highHalf
        let c = b.lowHalf + b.highHalf
        return c[0] + c[1]
    }

    /// `y[i] += alpha * x[i]` over `n` elements.
    @inline(__always)
    package static func axpy(_ y: UnsafeMutablePointer<Float>, _ alpha: Float, _ x: UnsafePointer<Float>, _ n: Int) {
        let a = Vec(repeating: alpha)
        var i = 0
        while i + 16 <= n {
            var v = load(UnsafePointer(y), i)
            v.addProduct(a, load(x, i))
            store(v, y, i)
            i += 16
        }
        while i < n { y[i] += alpha * x[i]; i += 1 }
    }

    /// RMSNorm of one row: `out = x * w / sqrt(mean(x^2) + eps)`; `out` may alias `x`.
    @inline(__always)
    package static func rmsnorm(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                        _ n: Int, eps: Float) {
        let ss = dot(x, x, n) / Float(n) + eps
        let scale = 1 / ss.squareRoot()
        let s = Vec(repeating: scale)
        var i = 0
        while i + 16 <= n {
            store(load(x, i) * s * load(w, i), out, i)
            i += 16
        }
        while i < n { out[i] = x[i] * scale * w[i]; i += 1 }
    }

    /// In-place softmax over `n` elements.
    @inline(__always)
    @inlinable package static func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
        let sum = expShifted(x, x, n, shift: maximum(x, n), scale: 1)
        scale(x, n, by: 1 / sum)
    }

    /// `x[i] *= factor` over `n` elements.
    package static func scale(_ x: UnsafeMutablePointer<Float>, _ n: Int, by factor: Float) {
        let f = Vec(repeating: factor)
        var i = 0
        while i + 16 <= n { store(load(x, i) * f, x, i); i += 16 }
        while i < n { x[i] *= factor; i += 1 }
    }

    /// `x[i] += bias[i]` for `i < n` (a projection's bias on one row).
    @inline(__always)
    @inlinable package static func addBias(_ x: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>, _ n: Int) {
        for i in 0..<n { x[i] += bias[i] }
    }

    /// SwiGLU's gate in place: `gate[i] = silu(gate[i]) * up[i]`, `silu(v) = v / (1 + exp(-v))`.
    @inline(__always)
    @inlinable package static func swiglu(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, _ n: Int) {
        swiglu(out: gate, gate: UnsafePointer(gate), up: up, n)
    }

    /// SwiGLU into `out`: `out[i] = silu(gate[i]) * up[i]` (`out` may alias `gate`), the same sums as
    /// the in-place form.
    @inline(__always)
    @inlinable package static func swiglu(out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, _ n: Int) {
        let one = Vec(repeating: 1)
        var i = 0
        while i + 16 <= n {
            let v = load(gate, i)
            store(v / (one + exp(-v)) * load(up, i), out, i)
            i += 16
        }
        while i < n {
            let v = gate[i]
            out[i] = v / (1 + exp(-v)) * up[i]
            i += 1
        }
    }

    /// GeGLU into `out`: `out[i] = gelu_tanh(gate[i]) * up[i]` (`out` may alias `gate`), with GELU's tanh
    /// approximation written as a sigmoid, `gelu_tanh(v) = v (1 + tanh(u)) / 2 = v sigmoid(2u)`,
    /// `u = sqrt(2 / pi) (v + 0.044715 v^3)`.
    @inline(__always)
    @inlinable package static func geglu(out: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>, up: UnsafePointer<Float>, _ n: Int) {
        let one = Vec(repeating: 1), twoK = Vec(repeating: 2 * geluK), cubic = Vec(repeating: geluCubic)
        var i = 0
        while i + 16 <= n {
            let v = load(gate, i)
            store(v / (one + exp(-twoK * (v + cubic * v * v * v))) * load(up, i), out, i)
            i += 16
        }
        while i < n {
            let v = gate[i]
            out[i] = v / (1 + exp(-2 * geluK * (v + geluCubic * v * v * v))) * up[i]
            i += 1
        }
    }

    /// `sqrt(2 / pi)` and the cubic coefficient of GELU's tanh approximation.
    @usableFromInline static let geluK: Float = 0.7978845608028654
    @usableFromInline static let geluCubic: Float = 0.044715

    /// The gated activation of `activation` into `out` (`out` may alias `gate`): `swiglu` or `geglu`.
    @inline(__always)
    @inlinable package static func gatedActivation(_ activation: FeedForwardActivation, out: UnsafeMutablePointer<Float>,
                                                   gate: UnsafePointer<Float>, up: UnsafePointer<Float>, _ n: Int) {
        switch activation {
        case .silu: swiglu(out: out, gate: gate, up: up, n)
        case .geluTanh: geglu(out: out, gate: gate, up: up, n)
        }
    }

    /// The backward of `gatedActivation` over `n` elements (`swigluBackward` or `gegluBackward`).
    package static func gatedActivationBackward(_ activation: FeedForwardActivation, dGate: UnsafeMutablePointer<Float>,
                                                dUp: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>,
                                                up: UnsafePointer<Float>, dOut: UnsafePointer<Float>, _ n: Int) {
        switch activation {
        case .silu: swigluBackward(dGate: dGate, dUp: dUp, gate: gate, up: up, dOut: dOut, n)
        case .geluTanh: gegluBackward(dGate: dGate, dUp: dUp, gate: gate, up: up, dOut: dOut, n)
        }
    }

    /// GeGLU's backward over `n` elements: with `s = sigmoid(2u)`, `dUp = dOut gate s` and
    /// `dGate = dOut up (s + gate s (1 - s) 2 sqrt(2 / pi) (1 + 3 * 0.044715 gate^2))`.
    package static func gegluBackward(dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>,
                                      up: UnsafePointer<Float>, dOut: UnsafePointer<Float>, _ n: Int) {
        let one = Vec(repeating: 1), twoK = Vec(repeating: 2 * geluK), cubic = Vec(repeating: geluCubic), three = Vec(repeating: 3 * geluCubic)
        var i = 0
        while i + 16 <= n {
            let a = load(gate, i), u = load(up, i), d = load(dOut, i)
            let s = one / (one + exp(-twoK * (a + cubic * a * a * a)))
            store(d * a * s, dUp, i)
            store(d * u * (s + a * s * (one - s) * twoK * (one + three * a * a)), dGate, i)
            i += 16
        }
        while i < n {
            let a = gate[i]
            let s = 1 / (1 + exp(-2 * geluK * (a + geluCubic * a * a * a)))
            dUp[i] = dOut[i] * a * s
            dGate[i] = dOut[i] * up[i] * (s + a * s * (1 - s) * 2 * geluK * (1 + 3 * geluCubic * a * a))
            i += 1
        }
    }

    /// Gemma 2's softcapping in place: `x[i] = cap * tanh(x[i] / cap)` for `i < n`, with
    /// `tanh(u) = sign(u) (1 - e^(-2|u|)) / (1 + e^(-2|u|))` in 16 lanes (to a few float32 ulps of `cap`).
    package static func softcap(_ x: UnsafeMutablePointer<Float>, _ n: Int, cap: Float) {
        let c = Vec(repeating: cap), minusTwoOverCap = Vec(repeating: -2 / cap), one = Vec(repeating: 1)
        @inline(__always) func capped(_ v: Vec) -> Vec {
            let e = exp(minusTwoOverCap * pointwiseMax(v, -v))
            let t = c * (one - e) / (one + e)
            return t.replacing(with: -t, where: v .< 0)
        }
        var i = 0
        while i + 16 <= n {
            store(capped(load(x, i)), x, i)
            i += 16
        }
        if i < n {
            var v = Vec(repeating: 0)
            for j in i..<n { v[j - i] = x[j] }
            let t = capped(v)
            for j in i..<n { x[j] = t[j - i] }
        }
    }

    /// SwiGLU's backward over `n` elements: with `s = sigmoid(gate)`, `dUp = dOut silu(gate)` and
    /// `dGate = dOut up s (1 + gate (1 - s))`. (Tails, past the last 16 elements, use the C library's
    /// `expf`.)
    package static func swigluBackward(dGate: UnsafeMutablePointer<Float>, dUp: UnsafeMutablePointer<Float>, gate: UnsafePointer<Float>,
                                       up: UnsafePointer<Float>, dOut: UnsafePointer<Float>, _ n: Int) {
        let one = Vec(repeating: 1)
        var i = 0
        while i + 16 <= n {
            let a = load(gate, i), u = load(up, i), d = load(dOut, i)
            let s = one / (one + exp(-a))
            store(d * a * s, dUp, i)
            store(d * u * s * (one + a * (one - s)), dGate, i)
            i += 16
        }
        while i < n {
            let a = gate[i], s = 1 / (1 + expf(-a))
            dUp[i] = dOut[i] * a * s
            dGate[i] = dOut[i] * up[i] * s * (1 + a * (1 - s))
            i += 1
        }
    }

    /// RoPE on adjacent pairs of `heads` heads of size `hs` in `vec`, at one position whose
    /// `(hs/2)` cos/sin values are `cos` and `sin`.
    @inline(__always)
    package static func rope(_ vec: UnsafeMutablePointer<Float>, heads: Int, hs: Int,
                     cos: UnsafePointer<Float>, sin: UnsafePointer<Float>) {
        for h in 0..<heads {
            let v = vec + h * hs
            var i = 0
            while i < hs {
                let c = cos[i >> 1], s = sin[i >> 1]
                let a = v[i], b = v[i + 1]
                v[i] = a * c - b * s
                v[i + 1] = a * s + b * c
                i += 2
            }
        }
    }

    // MARK: - Matrix-vector products (batch-1 decode)

    /// `out[r] = dot(W[r, :], x)` for `r` in `rows`, `W` row-major `(rows, cols)`, one row at a time
    /// with two accumulators. Bound by memory bandwidth: measured here, streaming rows one by one runs
    /// at the memory probe's speed, while interleaving 2 or 4 rows per pass ran at less than half.
    /// With `accumulate`, adds to `out` instead of overwriting it.
    package static func matvec(_ out: UnsafeMutablePointer<Float>, _ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
                       rows: Range<Int>, cols: Int, accumulate: Bool = false) {
        if accumulate {
            for r in rows { out[r] += dot(w + r * cols, x, cols) }
        } else {
            for r in rows { out[r] = dot(w + r * cols, x, cols) }
        }
    }

    /// Rearranges `x` (cols, a multiple of 32) for `matvecBF16`: within each block of 32, the 16
    /// even-indexed elements, then the 16 odd-indexed ones.
    package static func deinterleaveForBF16(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, cols: Int) {
        var b = 0
        while b < cols {
            for j in 0..<16 {
                out[b + j] = x[b + 2 * j]
                out[b + 16 + j] = x[b + 2 * j + 1]
            }
            b += 32
        }
    }

    /// bfloat16 elements ahead of the current one that `matvecBF16` fetches (4 KB).
    static let bf16PrefetchDistance = 2048

    /// `out[r] = dot(W[r, :], x)` with `W` stored as bfloat16 (`(rows, cols)`, cols a multiple of 32) and
    /// `x` prepared by `deinterleaveForBF16`. A 32-bit word holds elements `2j` (low half) and `2j+1`
    /// (high half); shifting or masking turns each half into an exact float32, accumulated in float32.
    package static func matvecBF16(_ out: UnsafeMutablePointer<Float>, _ w: UnsafePointer<UInt16>,
                           _ xPerm: UnsafePointer<Float>, rows: Range<Int>, cols: Int, accumulate: Bool = false) {
        typealias Words = SIMD16<UInt32>
        let mask = Words(repeating: 0xFFFF_0000)
        @inline(__always) func words(_ p: UnsafePointer<UInt16>, _ c: Int) -> Words {
            UnsafeRawPointer(p + c).loadUnaligned(as: Words.self)
        }
        for r in rows {
            let w0 = w + r * cols
            var e0 = Vec(), o0 = Vec()
            var c = 0
            while c < cols {
                // The line 4 KB ahead (the next rows': rows are contiguous), fetched by hand: this loop's
                // three instructions a line more than float32's keep fewer lines in flight, and on an
                // Intel Xeon of the class it streamed the 110M shape at 61-64% of a read probe of the
                // same bytes without, 83-111% with.
                rlhf_prefetch(w0 + c + bf16PrefetchDistance)
                let p0 = words(w0, c)
                e0.addProduct(unsafeBitCast(p0 &<< 16, to: Vec.self), load(xPerm, c))
                o0.addProduct(unsafeBitCast(p0 & mask, to: Vec.self), load(xPerm, c + 16))
                c += 32
            }
            out[r] = horizontalSum(e0 + o0) + (accumulate ? out[r] : 0)
        }
    }

    /// float32 to bfloat16, rounding to nearest even (NaN stays NaN).
    @inline(__always)
    package static func bfloat16(_ f: Float) -> UInt16 {
        let bits = f.bitPattern
        if f.isNaN { return UInt16(bits >> 16) | 0x40 }
        let rounding = 0x7FFF + ((bits >> 16) & 1)
        return UInt16((bits &+ rounding) >> 16)
    }

    /// bfloat16 to float32 (exact).
    @inline(__always)
    package static func float(bfloat16 h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }

    // MARK: - Matrix products (prefill, batched decode)

    /// `C[:, cols] = A * W[cols, :]^T`: `A` is `(M, K)` row-major, `W` is `(N, K)` row-major (rows are
    /// output features), `C` is `(M, ldc)`; computes output features `features`.
    package static func matmulTransposed(_ c: UnsafeMutablePointer<Float>, ldc: Int, _ a: UnsafePointer<Float>, m: Int,
                                 _ w: UnsafePointer<Float>, features: Range<Int>, k: Int, accumulate: Bool = false) {
        guard !features.isEmpty, m > 0 else { return }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(m), Int32(features.count), Int32(k),
                    1, a, Int32(k), w + features.lowerBound * k, Int32(k),
                    accumulate ? 1 : 0, c + features.lowerBound, Int32(ldc))
    }

    /// Pins OpenBLAS to one thread per call: the core's `ComputePool` owns parallelism.
    package static let blasSingleThreaded: Void = { openblas_set_num_threads(1) }()
}

/// What a KV cache stores a value as: float32, or bfloat16 widened exactly on reading.
package protocol KVElement: BitwiseCopyable {
    /// Elements `i ..< i + 16` of `p` as float32.
    static func load16(_ p: UnsafePointer<Self>, _ i: Int) -> Kernels.Vec
    /// `sum_i q[i] * x[i]` over `n` elements.
    static func dot(_ q: UnsafePointer<Float>, _ x: UnsafePointer<Self>, _ n: Int) -> Float
    /// `y[i] += alpha * x[i]` over `n` elements.
    static func axpy(_ y: UnsafeMutablePointer<Float>, _ alpha: Float, _ x: UnsafePointer<Self>, _ n: Int)
}

extension Float: KVElement {
    @inline(__always) package static func load16(_ p: UnsafePointer<Float>, _ i: Int) -> Kernels.Vec { Kernels.load(p, i) }
    @inline(__always) package static func dot(_ q: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) -> Float {
        Kernels.dot(q, x, n)
    }
    @inline(__always) package static func axpy(_ y: UnsafeMutablePointer<Float>, _ alpha: Float, _ x: UnsafePointer<Float>, _ n: Int) {
        Kernels.axpy(y, alpha, x, n)
    }
}

/// bfloat16 bits.
extension UInt16: KVElement {
    @inline(__always) package static func load16(_ p: UnsafePointer<UInt16>, _ i: Int) -> Kernels.Vec {
        // A C inline function: the standard library's widening conversion stayed an out-of-line call
        // per 16 values here.
        rlhf_load_bf16x16(p + i)
    }
    @inline(__always) package static func dot(_ q: UnsafePointer<Float>, _ x: UnsafePointer<UInt16>, _ n: Int) -> Float {
        var acc = Kernels.Vec()
        var i = 0
        while i + 16 <= n { acc.addProduct(Kernels.load(q, i), load16(x, i)); i += 16 }
        var s = Kernels.horizontalSum(acc)
        while i < n { s += q[i] * Kernels.float(bfloat16: x[i]); i += 1 }
        return s
    }
    @inline(__always) package static func axpy(_ y: UnsafeMutablePointer<Float>, _ alpha: Float, _ x: UnsafePointer<UInt16>, _ n: Int) {
        let a = Kernels.Vec(repeating: alpha)
        var i = 0
        while i + 16 <= n {
            var v = Kernels.load(UnsafePointer(y), i)
            v.addProduct(a, load16(x, i))
            Kernels.store(v, y, i)
            i += 16
        }
        while i < n { y[i] += alpha * Kernels.float(bfloat16: x[i]); i += 1 }
    }
}

extension Kernels {
    /// Causal attention of one query's heads `heads` over `count` cached positions. For each query
    /// head `h`, reading key/value head `g = h / groupSize`: `scores[t] = scale * q_h . K[t, g]`, a
    /// softmax over `t`, then `out_h = sum_t scores[t] V[t, g]`.
    ///
    /// `query` and `out` are `(nHeads, hs)`; only the heads in `heads` are read or written. `keys` and
    /// `values` are `(count, rowStride)` float32 or bfloat16, head `g` of row `t` starting at
    /// `t * rowStride + g * hs`. Each pass walks the positions in order and serves every head from one
    /// row, so the cache is read as one long sequential stream rather than one short stream per head.
    /// `scores` has room for `heads.count` rows of `scoreStride >= count` floats.
    package static func attend<E: KVElement>(out: UnsafeMutablePointer<Float>, query: UnsafePointer<Float>,
                               keys: UnsafePointer<E>, values: UnsafePointer<E>, rowStride: Int, count: Int,
                               heads: Range<Int>, groupSize: Int, headSize hs: Int, scale: Float, softcap: Float? = nil,
                               scores: UnsafeMutablePointer<Float>, scoreStride: Int) {
        guard !heads.isEmpty else { return }
        let kvHeads = heads.lowerBound / groupSize ..< (heads.upperBound - 1) / groupSize + 1
        /// The query heads of `heads` that read key/value head `g`.
        @inline(__always) func queryHeads(_ g: Int) -> Range<Int> {
            max(heads.lowerBound, g * groupSize) ..< min(heads.upperBound, (g + 1) * groupSize)
        }
        let vectorized = hs % 16 == 0
        for t in 0..<count {
            let row = keys + t * rowStride
            for g in kvHeads {
                let k = row + g * hs
                for h in queryHeads(g) {
                    let qh = query + h * hs
                    let score: Float
                    if vectorized {
                        var acc = load(qh, 0) * E.load16(k, 0)
                        var c = 16
                        while c < hs { acc.addProduct(load(qh, c), E.load16(k, c)); c += 16 }
                        score = horizontalSum(acc)
                    } else {
                        score = E.dot(qh, k, hs)
                    }
                    scores[(h - heads.lowerBound) * scoreStride + t] = score * scale
                }
            }
        }
        for i in 0..<heads.count {
            if let softcap { Kernels.softcap(scores + i * scoreStride, count, cap: softcap) }
            softmax(scores + i * scoreStride, count)
        }
        (out + heads.lowerBound * hs).update(repeating: 0, count: heads.count * hs)
        for t in 0..<count {
            let row = values + t * rowStride
            for g in kvHeads {
                for h in queryHeads(g) {
                    E.axpy(out + h * hs, scores[(h - heads.lowerBound) * scoreStride + t], row + g * hs, hs)
                }
            }
        }
    }
}
