import CKernels

/// bfloat16 pair panels (`CKernels`): the layout and products of a bfloat16 model's batched decode.
/// A panel holds 16 features as `(ceil(k/2), 16, 2)` bfloat16; inputs are rounded to bfloat16 pairs
/// (`(m, ceil(k/2))` 32-bit words); sums are float32, over k in order, so a row's result does not depend
/// on the rows beside it.
extension Kernels {
    /// Whether this CPU multiplies bfloat16 in hardware (AVX-512 BF16); the portable fallback computes
    /// the same sums otherwise.
    package static var bfloat16Hardware: Bool { rlhf_bf16_hardware() != 0 }

    /// Whether `vdpbf16ps` exists and multiplies at least as fast as float32 FMAs here (AMD Zen 4: 2x;
    /// the Intel Xeons of the class: 0.45x), by a quick probe of a few milliseconds, once per process.
    package static let bfloat16DotProductIsFast: Bool = {
        guard bfloat16Hardware else { return false }
        let peaks = arithmeticPeaks(quick: true)
        return peaks.bfloat16 >= peaks.float32
    }()

    /// How a bfloat16 model's pair panels are multiplied on this CPU. All three give the same sums, but
    /// that `vdpbf16ps` treats subnormal inputs and results as zero.
    package enum PairPanelKernel: String, Sendable {
        /// `vdpbf16ps` on pair words, where it is fast.
        case dotProduct
        /// AVX-512F float32 FMAs of each pair's odd, then even element, inputs as bfloat16 values in
        /// float32: where `vdpbf16ps` is slow or absent.
        case fusedMultiplyAdd
        /// Scalar code on pair words (CPUs without AVX-512).
        case portable

        /// The fastest kernel on this CPU.
        package static let fastest: PairPanelKernel = bfloat16DotProductIsFast ? .dotProduct
            : rlhf_bf16_fma_hardware() != 0 ? .fusedMultiplyAdd : .portable

        /// 32-bit words one `(rows, k)` input takes in this kernel's form: rows rounded to bfloat16 values
        /// in float32 (the FMA kernel) or pair words.
        package func inputWords(rows: Int, k: Int) -> Int {
            self == .fusedMultiplyAdd ? rows * k : pairWords(rows: rows, k: k)
        }

        /// Puts float32 `X (rows, k)` into this kernel's input form at `dst` (`inputWords` words).
        package func packInput(_ dst: UnsafeMutablePointer<UInt32>, _ x: UnsafePointer<Float>, rows: Int, k: Int) {
            if self == .fusedMultiplyAdd {
                roundToBFloat16(UnsafeMutableRawPointer(dst).assumingMemoryBound(to: Float.self), x, rows * k)
            } else {
                packPairRows(dst, x, m: rows, k: k)
            }
        }

        /// `matmulPairPanels` by this kernel on an input packed by `packInput`.
        package func multiply(_ c: UnsafeMutablePointer<Float>, ldc: Int, _ input: UnsafePointer<UInt32>, m: Int,
                              _ packed: UnsafePointer<UInt16>, k: Int, features: Range<Int>, accumulate: Bool) {
            switch self {
            case .fusedMultiplyAdd:
                matmulPairPanels(c, ldc: ldc, rounded: UnsafeRawPointer(input).assumingMemoryBound(to: Float.self), m: m,
                                 packed, k: k, features: features, accumulate: accumulate)
            case .dotProduct, .portable:
                matmulPairPanels(c, ldc: ldc, input, m: m, packed, k: k, features: features, accumulate: accumulate,
                                 portable: self == .portable)
            }
        }
    }

    /// One core's measured arithmetic peak in GFLOP/s: `vdpbf16ps` (0 without AVX-512 BF16) and the
    /// AVX-512 float32 FMA (0 without AVX-512), over about 0.3 s (`quick`: a few milliseconds, enough to
    /// tell which is larger). Which is larger says whether bfloat16 products save time on this CPU or
    /// only memory.
    package static func arithmeticPeaks(quick: Bool = false) -> (bfloat16: Double, float32: Double) {
        quick ? (rlhf_peak_bf16_gflops(1_000_000), rlhf_peak_fma_gflops(2_000_000))
              : (rlhf_peak_bf16_gflops(20_000_000), rlhf_peak_fma_gflops(50_000_000))
    }

    /// `out[i] = x[i]` rounded to the nearest bfloat16 value (ties to even; NaN stays NaN), kept in float32
    /// (`out` may alias `x`): what `bfloat16(_:)` then `float(bfloat16:)` give, 16 at a time.
    package static func roundToBFloat16(_ out: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int) {
        typealias Words = SIMD16<UInt32>
        var i = 0
        while i + 16 <= n {
            let v = load(x, i)
            let bits = unsafeBitCast(v, to: Words.self)
            let roundedBits = (bits &+ (Words(repeating: 0x7FFF) &+ ((bits &>> 16) & 1))) & Words(repeating: 0xFFFF_0000)
            let quietNaN = (bits | Words(repeating: 0x0040_0000)) & Words(repeating: 0xFFFF_0000)
            let result = roundedBits.replacing(with: quietNaN, where: v .!= v)
            store(unsafeBitCast(result, to: Vec.self), out, i)
            i += 16
        }
        while i < n { out[i] = float(bfloat16: bfloat16(x[i])); i += 1 }
    }

    /// 32-bit pair words one `(rows, k)` input takes.
    package static func pairWords(rows: Int, k: Int) -> Int { rows * ((k + 1) / 2) }

    /// bfloat16 elements a pair-panel-packed `(n, k)` matrix takes.
    package static func pairPanelCount(n: Int, k: Int) -> Int { rlhf_bf16_panels(n) * 32 * ((k + 1) / 2) }

    /// Packs row-major float32 `W (n, k)` into pair panels, rounding to nearest even.
    package static func packPairPanels(_ dst: UnsafeMutablePointer<UInt16>, _ w: UnsafePointer<Float>, n: Int, k: Int) {
        rlhf_bf16_pack_panels(dst, w, n, k)
    }

    /// Panels (including the zero ones at the end) of a pair-panel-packed matrix of `n` features.
    package static func pairPanels(n: Int) -> Int { rlhf_bf16_panels(n) }

    /// Packs panels `panels` of the float32 `(n, k)` matrix whose element `(f, kk)` is
    /// `w[f * rowStride + kk * kStride]` into pair panels at `dst`, rounding to nearest even.
    package static func packPairPanels(_ dst: UnsafeMutablePointer<UInt16>, _ w: UnsafePointer<Float>, n: Int, panels: Range<Int>, k: Int,
                                       rowStride: Int, kStride: Int) {
        rlhf_bf16_pack_panels_strided(dst, w, n, panels.lowerBound, panels.upperBound, k, rowStride, kStride)
    }

    /// Packs rows `rows` of the float32 `(m, k)` matrix whose element `(r, kk)` is
    /// `x[r * rowStride + kk * kStride]` into pair words (row `r` at `dst + r * ceil(k/2)`).
    package static func packPairRows(_ dst: UnsafeMutablePointer<UInt32>, _ x: UnsafePointer<Float>, rows: Range<Int>, k: Int,
                                     rowStride: Int, kStride: Int) {
        rlhf_bf16_pack_rows_strided(dst, x, rows.lowerBound, rows.upperBound, k, rowStride, kStride)
    }

    /// Rounds float32 `X (m, k)` into bfloat16 pair words `(m, ceil(k/2))`.
    package static func packPairRows(_ dst: UnsafeMutablePointer<UInt32>, _ x: UnsafePointer<Float>, m: Int, k: Int) {
        rlhf_bf16_pack_rows(dst, x, m, k)
    }

    /// `matmulPairPanels` with `X (m, k)` given as bfloat16 values in float32 (`roundToBFloat16`): float32
    /// FMAs of each pair's odd element's product, then the even one's (AVX-512F; `portable` or a CPU
    /// without it: scalar code with the same sums).
    package static func matmulPairPanels(_ c: UnsafeMutablePointer<Float>, ldc: Int, rounded x: UnsafePointer<Float>, m: Int,
                                         _ packed: UnsafePointer<UInt16>, k: Int, features: Range<Int>,
                                         accumulate: Bool = false, portable: Bool = false) {
        rlhf_bf16_matmul_panels_fma(c, ldc, x, m, packed, k, features.lowerBound, features.upperBound,
                                    accumulate ? 1 : 0, portable ? 1 : 0)
    }

    /// `C[b, f] = sum_k X[b, k] W[f, k]` for `b < m` and features `f` in `features` (bounds multiples of
    /// 16 except the end at `n`), `X` as pair words, `W` as pair panels, `C` `(m, ldc)`. With
    /// `accumulate`, adds to `C`; with `portable`, the fallback runs even on AVX-512 BF16 hardware.
    package static func matmulPairPanels(_ c: UnsafeMutablePointer<Float>, ldc: Int, _ x: UnsafePointer<UInt32>, m: Int,
                                         _ packed: UnsafePointer<UInt16>, k: Int, features: Range<Int>,
                                         accumulate: Bool = false, portable: Bool = false) {
        rlhf_bf16_matmul_panels(c, ldc, x, m, packed, (k + 1) / 2, features.lowerBound, features.upperBound,
                                accumulate ? 1 : 0, portable ? 1 : 0)
    }
}
