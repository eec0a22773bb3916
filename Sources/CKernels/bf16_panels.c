#include "ckernels.h"
#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

long rlhf_bf16_panels(long n) { return (n + 15) / 16 + 3; }

/// float32 to bfloat16, rounding to nearest even; a NaN stays a (quiet) NaN. Branch-free, so the
/// packing loops vectorize.
static inline uint16_t to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint32_t rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16;
    uint32_t nan = (bits >> 16) | 0x40;
    return (uint16_t)((bits & 0x7FFFFFFF) > 0x7F800000 ? nan : rounded);
}

static inline float from_bf16(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/// 16 pair words: one cache line.
typedef uint32_t pair_line __attribute__((vector_size(64), aligned(64)));

/// Orders the non-temporal stores before whatever follows (the pool's barrier, then other threads' reads).
static inline void store_fence(void) {
#if defined(__x86_64__)
    __builtin_ia32_sfence();
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

/// Rows [rb, rb + rows) (rows <= 16) and pairs [i0, i0 + pairs) (pairs <= 16) of a transposed source:
/// each pair's two source rows are read 16 contiguous floats at a time into a 16 x 16 tile of pair words
/// (the conversion vectorizes), and the tile is written out transposed, one destination row at a time.
static inline __attribute__((always_inline)) void pack_rows_tile(uint32_t *dst, const float *src, long rb, long rows, long i0,
                                                                  long pairs, long k, long k2, long row_stride, long k_stride) {
    uint32_t tile[16][16];
    for (long p = 0; p < pairs; p++) {
        long c0 = 2 * (i0 + p);
        const float *a = src + c0 * k_stride + rb * row_stride;
        if (c0 + 1 < k) {
            const float *b = a + k_stride;
            for (long r = 0; r < rows; r++) tile[p][r] = (uint32_t)to_bf16(a[r * row_stride]) | ((uint32_t)to_bf16(b[r * row_stride]) << 16);
        } else {
            for (long r = 0; r < rows; r++) tile[p][r] = to_bf16(a[r * row_stride]);
        }
    }
    for (long r = 0; r < rows; r++) {
        uint32_t *out = dst + (rb + r) * k2 + i0;
        if (pairs == 16 && ((uintptr_t)out & 63) == 0) {
            // A whole cache line of a destination row: stored past the caches, so that it is not read
            // first (the rows are scattered, and a product's packed rows outgrow the caches anyway).
            pair_line line;
            for (long p = 0; p < 16; p++) line[p] = tile[p][r];
            __builtin_nontemporal_store(line, (pair_line *)out);
        } else {
            for (long p = 0; p < pairs; p++) out[p] = tile[p][r];
        }
    }
}

void rlhf_bf16_pack_rows_strided(uint32_t *dst, const float *src, long r0, long r1, long k, long row_stride, long k_stride) {
    long k2 = (k + 1) / 2;
    if (k_stride == 1) {
        // A row's pairs are its elements in memory order: a plain conversion, row by row.
        for (long r = r0; r < r1; r++) {
            const float *row = src + r * row_stride;
            uint32_t *out = dst + r * k2;
            for (long i = 0; i < k / 2; i++) out[i] = (uint32_t)to_bf16(row[2 * i]) | ((uint32_t)to_bf16(row[2 * i + 1]) << 16);
            if (k & 1) out[k2 - 1] = to_bf16(row[k - 1]);
        }
        return;
    }
    // Tiles of 16 rows by 16 pairs; a transposed source (row_stride 1, the weight gradient's left operand)
    // gets its own copy of the tile loop, where the reads are contiguous.
    for (long i0 = 0; i0 < k2; i0 += 16) {
        long pairs = k2 - i0 < 16 ? k2 - i0 : 16;
        for (long rb = r0; rb < r1; rb += 16) {
            long rows = r1 - rb < 16 ? r1 - rb : 16;
            if (row_stride == 1 && rows == 16) pack_rows_tile(dst, src, rb, 16, i0, pairs, k, k2, 1, k_stride);
            else pack_rows_tile(dst, src, rb, rows, i0, pairs, k, k2, row_stride, k_stride);
        }
    }
    store_fence();
}

void rlhf_bf16_pack_panels_strided(uint16_t *dst, const float *src, long n, long j0, long j1, long k, long row_stride, long k_stride) {
    long k2 = (k + 1) / 2;
    for (long j = j0; j < j1; j++) {
        uint32_t *panel = (uint32_t *)(dst + j * 32 * k2);
        for (long f = 0; f < 16; f++) {
            long row = j * 16 + f;
            if (row < n) continue;
            for (long i = 0; i < k2; i++) panel[i * 16 + f] = 0;
        }
        long live = n - j * 16 < 16 ? n - j * 16 : 16;
        if (live <= 0) continue;
        if (k_stride == 1) {
            // Feature rows contiguous: each row's pairs are its elements in memory order.
            for (long f = 0; f < live; f++) {
                const float *row = src + (j * 16 + f) * row_stride;
                for (long i = 0; i < k / 2; i++)
                    panel[i * 16 + f] = (uint32_t)to_bf16(row[2 * i]) | ((uint32_t)to_bf16(row[2 * i + 1]) << 16);
                if (k & 1) panel[(k2 - 1) * 16 + f] = to_bf16(row[k - 1]);
            }
        } else {
            // Transposed: the 16 features of a pair's two elements are contiguous in each source row.
            for (long i = 0; i < k2; i++) {
                const float *a = src + (2 * i) * k_stride + j * 16 * row_stride;
                const float *b = a + k_stride;
                int odd = 2 * i + 1 < k;
                for (long f = 0; f < live; f++) {
                    uint32_t hi = odd ? to_bf16(b[f * row_stride]) : 0;
                    panel[i * 16 + f] = (uint32_t)to_bf16(a[f * row_stride]) | (hi << 16);
                }
            }
        }
    }
}

void rlhf_bf16_pack_panels(uint16_t *dst, const float *w, long n, long k) {
    rlhf_bf16_pack_panels_strided(dst, w, n, 0, rlhf_bf16_panels(n), k, k, 1);
}

void rlhf_bf16_pack_rows(uint32_t *dst, const float *x, long m, long k) {
    rlhf_bf16_pack_rows_strided(dst, x, 0, m, k, k, 1);
}

static inline void put16(float *dst, const float *v, long width, int accumulate) {
    for (long f = 0; f < width; f++) dst[f] = v[f] + (accumulate ? dst[f] : 0);
}

// MARK: - Portable fallback: float32 fused multiply-adds of exact bfloat16 products, odd then even.

/// acc[f] over 16 features of one panel step (32 bf16) and one pair of x.
static inline void dot2_portable(float *acc, const uint16_t *p, uint32_t pair) {
    float lo = from_bf16((uint16_t)pair), hi = from_bf16((uint16_t)(pair >> 16));
    for (int f = 0; f < 16; f++) {
        float a = fmaf(from_bf16(p[2 * f + 1]), hi, acc[f]);
        acc[f] = fmaf(from_bf16(p[2 * f]), lo, a);
    }
}

static void matmul_portable(float *c, long ldc, const uint32_t *x, long m, const uint16_t *packed, long k2,
                            long f0, long f1, int accumulate) {
    for (long f = f0; f < f1; f += 16) {
        const uint16_t *panel = packed + (f / 16) * 32 * k2;
        long width = f1 - f < 16 ? f1 - f : 16;
        for (long b = 0; b < m; b++) {
            float acc[16] = {0};
            const uint32_t *xr = x + b * k2;
            for (long i = 0; i < k2; i++) dot2_portable(acc, panel + i * 32, xr[i]);
            put16(c + b * ldc + f, acc, width, accumulate);
        }
    }
}

// MARK: - AVX-512 BF16

#if defined(__x86_64__)
#define BF16_TARGET __attribute__((target("avx512f,avx512bf16,avx512vl,avx512bw")))
/// AVX-512F alone: the FMA kernel, and what both kernels share.
#define FMA_TARGET __attribute__((target("avx512f")))

BF16_TARGET static inline __m512 dp(__m512 acc, const uint16_t *p, __m512i xb) {
    return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512((const void *)p), (__m512bh)xb);
}

FMA_TARGET static inline void store_v(float *dst, __m512 v, long width, int accumulate) {
    if (width >= 16) {
        if (accumulate) v = _mm512_add_ps(v, _mm512_loadu_ps(dst));
        _mm512_storeu_ps(dst, v);
    } else if (width > 0) {
        float tmp[16];
        _mm512_storeu_ps(tmp, v);
        put16(dst, tmp, width, accumulate);
    }
}

/// Rows b ..< b + valid (at most 4) of the 4 panels starting at p0 (features fbase ..< fbase + width).
/// With `ahead`, also hints the `lines` cache lines at ahead + 64 (i * lines + q) at step i into the
/// caches (the next panels, for the tiles after a block's first: see matmul_bf16_block).
BF16_TARGET static inline void tile4x4(float *c, long ldc, const uint32_t *x, long b, long valid,
                                        const uint16_t *p0, long k2, long fbase, long width, int accumulate,
                                        const char *ahead, long lines) {
    const uint16_t *p1 = p0 + 32 * k2, *p2 = p1 + 32 * k2, *p3 = p2 + 32 * k2;
    const uint32_t *x0 = x + b * k2;
    const uint32_t *x1 = valid > 1 ? x0 + k2 : x0, *x2 = valid > 2 ? x0 + 2 * k2 : x0, *x3 = valid > 3 ? x0 + 3 * k2 : x0;
    __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
    __m512 a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
    for (long i = 0; i < k2; i++) {
        const long o = i * 32;
        if (ahead)
            for (long q = 0; q < lines; q++) __builtin_prefetch(ahead + 64 * (i * lines + q), 0, 1);
        __m512bh v0 = (__m512bh)_mm512_loadu_si512((const void *)(p0 + o));
        __m512bh v1 = (__m512bh)_mm512_loadu_si512((const void *)(p1 + o));
        __m512bh v2 = (__m512bh)_mm512_loadu_si512((const void *)(p2 + o));
        __m512bh v3 = (__m512bh)_mm512_loadu_si512((const void *)(p3 + o));
        __m512bh s = (__m512bh)_mm512_set1_epi32((int)x0[i]);
        a00 = _mm512_dpbf16_ps(a00, v0, s); a01 = _mm512_dpbf16_ps(a01, v1, s);
        a02 = _mm512_dpbf16_ps(a02, v2, s); a03 = _mm512_dpbf16_ps(a03, v3, s);
        s = (__m512bh)_mm512_set1_epi32((int)x1[i]);
        a10 = _mm512_dpbf16_ps(a10, v0, s); a11 = _mm512_dpbf16_ps(a11, v1, s);
        a12 = _mm512_dpbf16_ps(a12, v2, s); a13 = _mm512_dpbf16_ps(a13, v3, s);
        s = (__m512bh)_mm512_set1_epi32((int)x2[i]);
        a20 = _mm512_dpbf16_ps(a20, v0, s); a21 = _mm512_dpbf16_ps(a21, v1, s);
        a22 = _mm512_dpbf16_ps(a22, v2, s); a23 = _mm512_dpbf16_ps(a23, v3, s);
        s = (__m512bh)_mm512_set1_epi32((int)x3[i]);
        a30 = _mm512_dpbf16_ps(a30, v0, s); a31 = _mm512_dpbf16_ps(a31, v1, s);
        a32 = _mm512_dpbf16_ps(a32, v2, s); a33 = _mm512_dpbf16_ps(a33, v3, s);
    }
    __m512 rows[4][4] = {{a00, a01, a02, a03}, {a10, a11, a12, a13}, {a20, a21, a22, a23}, {a30, a31, a32, a33}};
    for (long r = 0; r < valid; r++) {
        float *dst = c + (b + r) * ldc + fbase;
        for (long q = 0; q < 4; q++) store_v(dst + 16 * q, rows[r][q], width - 16 * q, accumulate);
    }
}

/// One row of the 4 panels starting at p0: 4 accumulators.
BF16_TARGET static inline void row1x4(float *c, const uint32_t *xr, const uint16_t *p0, long k2, long width, int accumulate) {
    const uint16_t *p1 = p0 + 32 * k2, *p2 = p1 + 32 * k2, *p3 = p2 + 32 * k2;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (long i = 0; i < k2; i++) {
        __m512i s = _mm512_set1_epi32((int)xr[i]);
        a0 = dp(a0, p0 + i * 32, s); a1 = dp(a1, p1 + i * 32, s);
        a2 = dp(a2, p2 + i * 32, s); a3 = dp(a3, p3 + i * 32, s);
    }
    store_v(c, a0, width, accumulate); store_v(c + 16, a1, width - 16, accumulate);
    store_v(c + 32, a2, width - 32, accumulate); store_v(c + 48, a3, width - 48, accumulate);
}

/// Rows of one panel (a range's last 1-3 panels), 8 rows at a time.
BF16_TARGET static inline void panel8(float *c, long ldc, const uint32_t *x, long m, const uint16_t *p, long k2,
                                       long width, int accumulate) {
    for (long b = 0; b < m; b += 8) {
        long valid = m - b < 8 ? m - b : 8;
        const uint32_t *xr[8];
        for (long r = 0; r < 8; r++) xr[r] = x + (b + (r < valid ? r : 0)) * k2;
        __m512 a[8];
        for (int r = 0; r < 8; r++) a[r] = _mm512_setzero_ps();
        for (long i = 0; i < k2; i++) {
            __m512bh v = (__m512bh)_mm512_loadu_si512((const void *)(p + i * 32));
            for (int r = 0; r < 8; r++) a[r] = _mm512_dpbf16_ps(a[r], v, (__m512bh)_mm512_set1_epi32((int)xr[r][i]));
        }
        for (long r = 0; r < valid; r++) store_v(c + (b + r) * ldc, a[r], width, accumulate);
    }
}

BF16_TARGET static void matmul_bf16_block(float *c, long ldc, const uint32_t *x, long m, const uint16_t *packed, long k2,
                                          long f0, long f1, int accumulate) {
    long j = f0 / 16;
    while (j * 16 < f1) {
        const uint16_t *p0 = packed + j * 32 * k2;
        long fbase = j * 16, width = f1 - fbase < 64 ? f1 - fbase : 64;
        if (width <= 48) {
            for (long q = 0; q * 16 < width; q++) {
                long w = width - 16 * q < 16 ? width - 16 * q : 16;
                panel8(c + fbase + 16 * q, ldc, x, m, p0 + q * 32 * k2, k2, w, accumulate);
            }
            break;
        }
        // With several tiles, the first streams the four panels (4 k2 cache lines) from memory and the
        // others reread them from cache; those others also fetch the next four panels ahead (into L2),
        // so that memory and arithmetic overlap.
        long tiles = (m + 3) / 4, lines = tiles >= 3 ? 2 : 4;
        const char *next = (const char *)(p0 + 4 * 32 * k2);
        for (long b = 0; b < m; b += 4) {
            long valid = m - b < 4 ? m - b : 4;
            long first = (b / 4 - 1) * k2 * lines;
            const char *ahead = b > 0 && first < 4 * k2 ? next + 64 * first : 0;
            if (valid == 1) row1x4(c + b * ldc + fbase, x + b * k2, p0, k2, width, accumulate);
            else tile4x4(c, ldc, x, b, valid, p0, k2, fbase, width, accumulate, ahead, lines);
        }
        j += 4;
    }
}

/// Blocks of 256 features by 64 rows: a block's panels stay in L2 while the rows stream past, block
/// after block (what a batched decode's few rows need as much as a training product's thousands).
/// Each sum still runs over all of k in one pass, so the blocking changes no bits.
BF16_TARGET static void matmul_bf16(float *c, long ldc, const uint32_t *x, long m, const uint16_t *packed, long k2,
                                    long f0, long f1, int accumulate) {
    for (long fb = f0; fb < f1; fb += 256) {
        long fe = fb + 256 < f1 ? fb + 256 : f1;
        for (long b = 0; b < m; b += 64) {
            long rows = m - b < 64 ? m - b : 64;
            matmul_bf16_block(c + b * ldc, ldc, x + b * k2, rows, packed, k2, fb, fe, accumulate);
        }
    }
}

// MARK: - AVX-512F fused multiply-adds over pair panels (the inputs as bfloat16 values in float32)

/// Pair steps a tile takes before the next tile's turn, and how many such chunks ahead the tiles after
/// the first fetch the panels' lines (see rlhf_bf16_matmul_panels_fma).
enum { FMA_CHUNK = 16, FMA_AHEAD = 2 };

/// A panel line's 16 pairs as float32: the odd elements (high halves) and the even ones (low halves).
FMA_TARGET static inline void split_pairs(const uint16_t *p, __m512 *odd, __m512 *even) {
    __m512i v = _mm512_loadu_si512((const void *)p);
    *odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xFFFF0000u)));
    *even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

/// Rows b ..< b + valid (at most 4; rows past them reuse row b) of the 4 panels at p0, pairs i0 ..< i1,
/// adding to the 16 sums at acc ([row][panel]). x is (rows, k) float32. Each step adds the odd
/// element's product, then the even one's (what vdpbf16ps and the portable fallback do). Tiles `t` of
/// 1 ... fetching also fetch the lines FMA_AHEAD chunks ahead, sharing the steps: tile t at steps
/// i0 + t - 1, i0 + t - 1 + fetching, ...
///
/// The loop body is kept free of anything but loads, the pair split and the FMAs (each input a
/// broadcast load): the fetch step is a compare against a running step, not a division, and the last
/// pair of an odd k (its odd input 0) is a step of its own after the loop. (A `%` and a select per step
/// here compiled to a division, register broadcasts and register shuffles: a third more instructions
/// per step, and 8% less speed.)
FMA_TARGET static inline __attribute__((always_inline))
void fma_tile4x4(__m512 *acc, const float *x, long k, long b, long valid, const uint16_t *p0, long k2,
                 long i0, long i1, long t, long fetching) {
    const uint16_t *p1 = p0 + 32 * k2, *p2 = p1 + 32 * k2, *p3 = p2 + 32 * k2;
    const float *x0 = x + b * k;
    const float *x1 = valid > 1 ? x0 + k : x0, *x2 = valid > 2 ? x0 + 2 * k : x0, *x3 = valid > 3 ? x0 + 3 * k : x0;
    __m512 a00 = acc[0], a01 = acc[1], a02 = acc[2], a03 = acc[3], a10 = acc[4], a11 = acc[5], a12 = acc[6], a13 = acc[7];
    __m512 a20 = acc[8], a21 = acc[9], a22 = acc[10], a23 = acc[11], a30 = acc[12], a31 = acc[13], a32 = acc[14], a33 = acc[15];
    const long ahead = FMA_AHEAD * FMA_CHUNK * 32;
    // Steps past this fetch nothing: their lines ahead lie past the panels.
    const long fetch_end = k2 - FMA_AHEAD * FMA_CHUNK;
    long next_fetch = fetching > 0 && t >= 1 && t <= fetching ? i0 + t - 1 : i1;
    // Pairs whose odd element lies past k (odd k: the last pair) read an odd input of 0.
    const long full = k / 2, whole = i1 < full ? i1 : full;
    __m512 o0, e0, o1, e1, o2, e2, o3, e3;
#define FMA_FETCH(i) \
        if ((i) == next_fetch) { \
            if ((i) < fetch_end) { \
                __builtin_prefetch(p0 + (i) * 32 + ahead, 0, 1); __builtin_prefetch(p1 + (i) * 32 + ahead, 0, 1); \
                __builtin_prefetch(p2 + (i) * 32 + ahead, 0, 1); __builtin_prefetch(p3 + (i) * 32 + ahead, 0, 1); \
            } \
            next_fetch += fetching; \
        }
#define FMA_SPLIT(i) \
        split_pairs(p0 + (i) * 32, &o0, &e0); split_pairs(p1 + (i) * 32, &o1, &e1); \
        split_pairs(p2 + (i) * 32, &o2, &e2); split_pairs(p3 + (i) * 32, &o3, &e3);
#define FMA_ROW(odd, even, r0, r1, r2, r3) { \
            __m512 s = odd; \
            r0 = _mm512_fmadd_ps(o0, s, r0); r1 = _mm512_fmadd_ps(o1, s, r1); \
            r2 = _mm512_fmadd_ps(o2, s, r2); r3 = _mm512_fmadd_ps(o3, s, r3); \
            s = even; \
            r0 = _mm512_fmadd_ps(e0, s, r0); r1 = _mm512_fmadd_ps(e1, s, r1); \
            r2 = _mm512_fmadd_ps(e2, s, r2); r3 = _mm512_fmadd_ps(e3, s, r3); }
    for (long i = i0; i < whole; i++) {
        FMA_FETCH(i)
        FMA_SPLIT(i)
        FMA_ROW(_mm512_set1_ps(x0[2 * i + 1]), _mm512_set1_ps(x0[2 * i]), a00, a01, a02, a03)
        FMA_ROW(_mm512_set1_ps(x1[2 * i + 1]), _mm512_set1_ps(x1[2 * i]), a10, a11, a12, a13)
        FMA_ROW(_mm512_set1_ps(x2[2 * i + 1]), _mm512_set1_ps(x2[2 * i]), a20, a21, a22, a23)
        FMA_ROW(_mm512_set1_ps(x3[2 * i + 1]), _mm512_set1_ps(x3[2 * i]), a30, a31, a32, a33)
    }
    for (long i = whole > i0 ? whole : i0; i < i1; i++) {
        FMA_FETCH(i)
        FMA_SPLIT(i)
        const __m512 zero = _mm512_setzero_ps();
        FMA_ROW(zero, _mm512_set1_ps(x0[2 * i]), a00, a01, a02, a03)
        FMA_ROW(zero, _mm512_set1_ps(x1[2 * i]), a10, a11, a12, a13)
        FMA_ROW(zero, _mm512_set1_ps(x2[2 * i]), a20, a21, a22, a23)
        FMA_ROW(zero, _mm512_set1_ps(x3[2 * i]), a30, a31, a32, a33)
    }
#undef FMA_FETCH
#undef FMA_SPLIT
#undef FMA_ROW
    acc[0] = a00; acc[1] = a01; acc[2] = a02; acc[3] = a03; acc[4] = a10; acc[5] = a11; acc[6] = a12; acc[7] = a13;
    acc[8] = a20; acc[9] = a21; acc[10] = a22; acc[11] = a23; acc[12] = a30; acc[13] = a31; acc[14] = a32; acc[15] = a33;
}

/// Rows of one panel (a range's last 1-3 panels), 8 rows at a time, all pairs in one pass.
FMA_TARGET static void fma_panel8(float *c, long ldc, const float *x, long k, long m, const uint16_t *p, long k2,
                                  long width, int accumulate) {
    const long full = k / 2;
    for (long b = 0; b < m; b += 8) {
        long valid = m - b < 8 ? m - b : 8;
        const float *xr[8];
        for (long r = 0; r < 8; r++) xr[r] = x + (b + (r < valid ? r : 0)) * k;
        __m512 a[8];
        for (int r = 0; r < 8; r++) a[r] = _mm512_setzero_ps();
        for (long i = 0; i < k2; i++) {
            __m512 odd, even;
            split_pairs(p + i * 32, &odd, &even);
            const int whole = i < full;
            for (int r = 0; r < 8; r++) {
                a[r] = _mm512_fmadd_ps(odd, _mm512_set1_ps(whole ? xr[r][2 * i + 1] : 0.0f), a[r]);
                a[r] = _mm512_fmadd_ps(even, _mm512_set1_ps(xr[r][2 * i]), a[r]);
            }
        }
        for (long r = 0; r < valid; r++) store_v(c + (b + r) * ldc, a[r], width, accumulate);
    }
}

/// Up to 64 rows (x, c already offset to them) and the features f0 ..< f1: blocks of 4 panels, whose
/// tiles of 4 rows take turns over the pairs in chunks of FMA_CHUNK, their sums kept in `spill` between
/// turns (unchanged floats: every sum still runs over the pairs in order). The first tile of a chunk
/// reads the panels' lines from memory, the others from L1 and fetch the lines ahead, so that the
/// panels stream in all the time.
FMA_TARGET static void matmul_fma_rows(float *c, long ldc, const float *x, long k, long m, const uint16_t *packed, long k2,
                                       long f0, long f1, int accumulate) {
    __m512 spill[16 * 16];
    long j = f0 / 16;
    while (j * 16 < f1) {
        const uint16_t *p0 = packed + j * 32 * k2;
        long fbase = j * 16, width = f1 - fbase < 64 ? f1 - fbase : 64;
        if (width <= 48) {
            for (long q = 0; q * 16 < width; q++) {
                long w = width - 16 * q < 16 ? width - 16 * q : 16;
                fma_panel8(c + fbase + 16 * q, ldc, x, k, m, p0 + q * 32 * k2, k2, w, accumulate);
            }
            break;
        }
        long tiles = (m + 3) / 4;
        long fetching = tiles - 1 < 3 ? tiles - 1 : 3;
        for (long q = 0; q < 16 * tiles; q++) spill[q] = _mm512_setzero_ps();
        for (long i0 = 0; i0 < k2; i0 += FMA_CHUNK) {
            long i1 = i0 + FMA_CHUNK < k2 ? i0 + FMA_CHUNK : k2;
            for (long t = 0; t < tiles; t++) {
                long b = 4 * t, valid = m - b < 4 ? m - b : 4;
                fma_tile4x4(spill + 16 * t, x, k, b, valid, p0, k2, i0, i1, t, fetching);
            }
        }
        for (long b = 0; b < m; b++) {
            float *dst = c + b * ldc + fbase;
            const __m512 *sums = spill + 16 * (b / 4) + 4 * (b % 4);
            for (long q = 0; q < 4; q++) store_v(dst + 16 * q, sums[q], width - 16 * q, accumulate);
        }
        j += 4;
    }
}

static int fma_hardware(void) { return __builtin_cpu_supports("avx512f") ? 1 : 0; }

int rlhf_bf16_hardware(void) { return __builtin_cpu_supports("avx512bf16") ? 1 : 0; }
#else
int rlhf_bf16_hardware(void) { return 0; }
#endif

void rlhf_bf16_matmul_panels(float *c, long ldc, const uint32_t *x, long m, const uint16_t *packed, long k2,
                             long f0, long f1, int accumulate, int portable) {
    if (m <= 0 || f1 <= f0) return;
#if defined(__x86_64__)
    if (!portable && rlhf_bf16_hardware()) { matmul_bf16(c, ldc, x, m, packed, k2, f0, f1, accumulate); return; }
#endif
    matmul_portable(c, ldc, x, m, packed, k2, f0, f1, accumulate);
}

/// The portable form of the float-input product: the same sums as dot2_portable.
static void matmul_fma_portable(float *c, long ldc, const float *x, long k, long m, const uint16_t *packed, long k2,
                                long f0, long f1, int accumulate) {
    for (long f = f0; f < f1; f += 16) {
        const uint16_t *panel = packed + (f / 16) * 32 * k2;
        long width = f1 - f < 16 ? f1 - f : 16;
        for (long b = 0; b < m; b++) {
            float acc[16] = {0};
            const float *xr = x + b * k;
            for (long i = 0; i < k2; i++) {
                float hi = 2 * i + 1 < k ? xr[2 * i + 1] : 0.0f, lo = xr[2 * i];
                const uint16_t *p = panel + i * 32;
                for (int q = 0; q < 16; q++) {
                    float a = fmaf(from_bf16(p[2 * q + 1]), hi, acc[q]);
                    acc[q] = fmaf(from_bf16(p[2 * q]), lo, a);
                }
            }
            put16(c + b * ldc + f, acc, width, accumulate);
        }
    }
}

int rlhf_bf16_fma_hardware(void) {
#if defined(__x86_64__)
    return fma_hardware();
#else
    return 0;
#endif
}

void rlhf_bf16_matmul_panels_fma(float *c, long ldc, const float *x, long m, const uint16_t *packed, long k,
                                 long f0, long f1, int accumulate, int portable) {
    long k2 = (k + 1) / 2;
    if (m <= 0 || f1 <= f0) return;
#if defined(__x86_64__)
    if (!portable && fma_hardware()) {
        // Blocks of 256 features by 64 rows, as in matmul_bf16.
        for (long fb = f0; fb < f1; fb += 256) {
            long fe = fb + 256 < f1 ? fb + 256 : f1;
            for (long b = 0; b < m; b += 64) {
                long rows = m - b < 64 ? m - b : 64;
                matmul_fma_rows(c + b * ldc, ldc, x + b * k, k, rows, packed, k2, fb, fe, accumulate);
            }
        }
        return;
    }
#endif
    matmul_fma_portable(c, ldc, x, k, m, packed, k2, f0, f1, accumulate);
}
