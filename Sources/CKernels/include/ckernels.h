// bfloat16 matrix products for batched decode and training: AVX-512 BF16 (vdpbf16ps) where the CPU has
// it, chosen at run time, and a portable fallback that computes the same sums.
//
// Layouts (all row-major):
// - pair panels of W (n, k): panel j (of rlhf_bf16_panels(n)) holds features 16j ..< 16j+16 as
//   (k2, 16, 2) bfloat16, k2 = (k + 1) / 2: element [i][f][h] = bf16(W[16j + f][2i + h]); features past n
//   and the odd k's last element are zero. Three zero panels at the end let a tile of four start at any
//   panel.
// - pair rows of X (m, k): (m, k2) 32-bit words, word [b][i] = bf16(X[b][2i]) | bf16(X[b][2i+1]) << 16.
//
// Every sum C[b][f] runs over i in order, adding the odd element's product, then the even one's (the
// order vdpbf16ps uses): a row's result does not depend on the other rows of its call or on the
// feature range a thread computes.
#ifndef RLHF_CKERNELS_H
#define RLHF_CKERNELS_H
#include <stdint.h>

/// Stops OpenBLAS's idle server threads where the loaded build has them (its `blas_thread_shutdown_`):
/// a threaded OpenBLAS starts one per further core when it loads, and each spins on sched_yield for
/// ~100 ms before sleeping, on a core the process's own threads want. Call it only while no other
/// thread can be inside a BLAS call, with OpenBLAS pinned to one thread (it would start them again
/// for a threaded call). Returns OpenBLAS's result, or -1 where the build has no server threads.
int rlhf_blas_stop_server_threads(void);

/// Asks the CPU to bring the cache line holding p into its caches ahead of use: a hint, which never
/// faults, whatever the address.
static inline void rlhf_prefetch(const void *p) { __builtin_prefetch(p, 0, 1); }

/// 16 float lanes: Swift's SIMD16<Float>.
typedef float rlhf_float16x __attribute__((ext_vector_type(16)));

/// 16 bfloat16 values at p (any alignment) widened exactly to float32 (each the bits shifted up 16):
/// inline, so a Swift loop that reads a bfloat16 KV cache gets one widening instruction per 16 values.
static inline rlhf_float16x rlhf_load_bf16x16(const uint16_t *p) {
    typedef uint16_t halves __attribute__((ext_vector_type(16)));
    typedef uint32_t words __attribute__((ext_vector_type(16)));
    halves h;
    __builtin_memcpy(&h, p, sizeof h);
    words w = __builtin_convertvector(h, words) << 16;
    rlhf_float16x f;
    __builtin_memcpy(&f, &w, sizeof f);
    return f;
}

/// 1 when this CPU has AVX-512 BF16 (vdpbf16ps), which rlhf_bf16_matmul_panels then uses.
int rlhf_bf16_hardware(void);

/// Panels (including the three zero ones) of the pair-panel layout of an (n, k) matrix.
long rlhf_bf16_panels(long n);

/// Packs float32 W (n, k) into pair panels at dst (rlhf_bf16_panels(n) * 16 * 2 * ((k + 1) / 2)
/// elements), rounding to nearest even.
void rlhf_bf16_pack_panels(uint16_t *dst, const float *w, long n, long k);

/// Packs float32 X (m, k) into pair rows at dst ((m, (k + 1) / 2) words), rounding to nearest even.
void rlhf_bf16_pack_rows(uint32_t *dst, const float *x, long m, long k);

/// Packs rows [r0, r1) of the float32 (m, k) matrix whose element (r, kk) is src[r * row_stride + kk *
/// k_stride] (a transposed operand has row_stride 1) into pair rows at dst (row r at dst + r * k2).
void rlhf_bf16_pack_rows_strided(uint32_t *dst, const float *src, long r0, long r1, long k, long row_stride, long k_stride);

/// Packs panels [j0, j1) of the pair-panel layout of the float32 (n, k) matrix whose element (f, kk) is
/// src[f * row_stride + kk * k_stride] (features past n and the odd k's last element zero).
void rlhf_bf16_pack_panels_strided(uint16_t *dst, const float *src, long n, long j0, long j1, long k, long row_stride, long k_stride);

/// C[b][f] = sum_i X[b][i] . P[f][i] (bfloat16 products, float32 sums) for b < m and features f in
/// [f0, f1), f0 a multiple of 16; x is (m, k2) pair rows, packed the pair panels of a matrix with k2
/// pairs per feature, C is (m, ldc). With accumulate, adds to C. With portable, the fallback runs even
/// where the CPU has AVX-512 BF16 (for tests).
void rlhf_bf16_matmul_panels(float *c, long ldc, const uint32_t *x, long m, const uint16_t *packed, long k2,
                             long f0, long f1, int accumulate, int portable);

/// One AdamW step (PyTorch's semantics) of the n values p with moments m, v and gradients g: grad = g *
/// scale; m = beta1 m + (1 - beta1) grad; v = beta2 v + (1 - beta2) grad^2; p = p decay - lr (m /
/// correction1) / (sqrt(v / correction2) + eps), each operation rounded to float32 on its own.
void rlhf_adamw_update(float *p, float *m, float *v, const float *g, long n, float scale, float beta1, float beta2,
                       float lr, float decay, float eps, float correction1, float correction2);

/// 1 when this CPU has AVX-512F, which rlhf_bf16_matmul_panels_fma then uses.
int rlhf_bf16_fma_hardware(void);

/// The product of rlhf_bf16_matmul_panels with X given as float32 (m, k) values already rounded to
/// bfloat16 (not pair words) and k its length: float32 fused multiply-adds of each pair's odd element's
/// product, then the even one's: the same sums as vdpbf16ps (but for its flushing of subnormals to
/// zero) and the portable fallback. Where vdpbf16ps runs at less than half a float32 FMA's rate
/// (the Intel Xeons of the class: 0.45x), this is the faster kernel. `portable` forces the fallback.
void rlhf_bf16_matmul_panels_fma(float *c, long ldc, const float *x, long m, const uint16_t *packed, long k,
                                 long f0, long f1, int accumulate, int portable);

/// One core's arithmetic peak in GFLOP/s over `iterations` rounds of twelve independent accumulators in
/// registers: vdpbf16ps (0 without AVX-512 BF16) and the AVX-512 float32 FMA (0 without AVX-512).
double rlhf_peak_bf16_gflops(long iterations);
double rlhf_peak_fma_gflops(long iterations);

/// The weights of the m sort keys at keys (each `~float bits << 32 | id`), in units of `1 / scale` (a
/// power of two) rounded to nearest, summed: adding the weights one by one to a float32 sum whose unit
/// in the last place is that unit, and which stays in its binade, adds exactly this many units in any
/// order. Sets *inexact (and returns 0) where a weight lies half-way between two units (its rounding
/// would depend on the sum's last bit) or is 2^24 units or more.
long rlhf_weight_units(const uint64_t *keys, long m, float scale, int *inexact);

/// Writes the sort key `~float bits << 32 | i` of every candidate, each i < n whose weight is >= floor,
/// in ascending order of i to keys (which holds n), and returns how many; *lowest and *highest receive
/// the smallest and largest of their high halves (UINT32_MAX and 0 where none). Ids are below 2^32.
long rlhf_candidate_keys(const float *weights, long n, float floor, uint64_t *keys, uint32_t *lowest,
                         uint32_t *highest);

/// C (m, n) = alpha A (m, k) B (k, n), plus C where `accumulate`; row-major with leading dimensions
/// lda, ldb, ldc. Tiles of 8 rows and 48 columns in registers (columns past the last multiple of 16 one
/// at a time), each product a fused multiply-add, summed over k in order: no packing, so it suits the
/// small products of attention (a head's queries against its keys, probabilities times values), where a
/// BLAS call costs more than its arithmetic, and products whose B is already laid out (k, n) and stays
/// in a core's cache (a scoring forward's transposed weights, a block of columns at a time).
void rlhf_small_gemm_nn(float *c, long ldc, const float *a, long lda, const float *b, long ldb, long m, long n,
                        long k, float alpha, int accumulate);

#endif
