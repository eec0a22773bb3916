#include "ckernels.h"

// Sixteen floats, loaded and stored unaligned; AVX-512 registers where the CPU has them (the compiler
// splits them elsewhere).
typedef float v16f __attribute__((vector_size(64), aligned(4)));

static inline v16f load16(const float *p) {
    v16f v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

static inline void store16(float *p, v16f v) { __builtin_memcpy(p, &v, sizeof v); }

// x in every lane: a broadcast load where x comes from memory. (`(v16f){0} + x` is not the same: the
// add must turn -0 into +0, so the compiler adds, then broadcasts in a register, on a port the fused
// multiply-adds need: the tiles ran at two thirds of the speed.)
static inline v16f splat16(float x) { return (v16f){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }

// One tile: rows i0 ..< i0 + rows (at most 8) of C, columns j ..< j + 16 * W. The eight row pointers
// are always valid (rows past m repeat row i0), so the loop body has no branches; only `rows` are stored.
#define RLHF_TILE(W)                                                                                     \
    do {                                                                                                 \
        v16f acc[8][W];                                                                                  \
        for (int r = 0; r < 8; r++)                                                                      \
            for (int v = 0; v < W; v++) acc[r][v] = (v16f){0};                                           \
        for (long p = 0; p < k; p++) {                                                                   \
            v16f bv[W];                                                                                  \
            for (int v = 0; v < W; v++) bv[v] = load16(b + p * ldb + j + 16 * v);                        \
            for (int r = 0; r < 8; r++) {                                                                \
                float x = ar[r][p];                                                                      \
                for (int v = 0; v < W; v++) acc[r][v] = __builtin_elementwise_fma(splat16(x), bv[v], acc[r][v]); \
            }                                                                                            \
        }                                                                                                \
        for (int r = 0; r < rows; r++)                                                                   \
            for (int v = 0; v < W; v++) {                                                                \
                float *out = c + (i0 + r) * ldc + j + 16 * v;                                            \
                v16f value = acc[r][v] * alpha;                                                          \
                store16(out, accumulate ? load16(out) + value : value);                                  \
            }                                                                                            \
    } while (0)

void rlhf_small_gemm_nn(float *c, long ldc, const float *a, long lda, const float *b, long ldb, long m, long n,
                        long k, float alpha, int accumulate) {
    for (long i0 = 0; i0 < m; i0 += 8) {
        long rows = m - i0 < 8 ? m - i0 : 8;
        const float *ar[8];
        for (int r = 0; r < 8; r++) ar[r] = a + (i0 + (r < rows ? r : 0)) * lda;
        long j = 0;
        for (; j + 48 <= n; j += 48) RLHF_TILE(3);
        if (n - j >= 32) {
            RLHF_TILE(2);
            j += 32;
        } else if (n - j >= 16) {
            RLHF_TILE(1);
            j += 16;
        }
        // Columns past the last whole vector: the same sums, one at a time.
        for (int r = 0; r < rows; r++)
            for (long jj = j; jj < n; jj++) {
                float acc = 0;
                for (long p = 0; p < k; p++) acc = __builtin_fmaf(ar[r][p], b[p * ldb + jj], acc);
                float *out = c + (i0 + r) * ldc + jj;
                float value = acc * alpha;
                *out = accumulate ? *out + value : value;
            }
    }
}
