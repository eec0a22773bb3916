#include "ckernels.h"
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

long rlhf_candidate_keys(const float *weights, long n, float floor, uint64_t *keys, uint32_t *lowest,
                         uint32_t *highest) {
    long count = 0, i = 0;
    uint32_t low = UINT32_MAX, high = 0;
#if defined(__AVX512F__)
    const __m512 threshold = _mm512_set1_ps(floor);
    const __m512i ones = _mm512_set1_epi32(-1);
    __m512i lows = ones, highs = _mm512_setzero_si512();
    __m512i ids = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i step = _mm512_set1_epi32(16);
    // Each block writes its candidates' keys, packed, as whole vectors at the count so far (at most i):
    // the lanes past the candidates are overwritten by the next block or lie below i + 16 <= n.
    for (; i + 16 <= n; i += 16) {
        __m512 w = _mm512_loadu_ps(weights + i);
        __mmask16 candidate = _mm512_cmp_ps_mask(w, threshold, _CMP_GE_OQ);
        __m512i inverted = _mm512_xor_si512(_mm512_castps_si512(w), ones);
        lows = _mm512_mask_min_epu32(lows, candidate, lows, inverted);
        highs = _mm512_mask_max_epu32(highs, candidate, highs, inverted);
        __m512i lowKeys = _mm512_or_si512(_mm512_slli_epi64(_mm512_cvtepu32_epi64(_mm512_castsi512_si256(inverted)), 32),
                                          _mm512_cvtepu32_epi64(_mm512_castsi512_si256(ids)));
        __m512i highKeys = _mm512_or_si512(_mm512_slli_epi64(_mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(inverted, 1)), 32),
                                           _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(ids, 1)));
        __mmask8 first = (__mmask8)candidate, second = (__mmask8)(candidate >> 8);
        _mm512_storeu_si512(keys + count, _mm512_maskz_compress_epi64(first, lowKeys));
        count += __builtin_popcount(first);
        _mm512_storeu_si512(keys + count, _mm512_maskz_compress_epi64(second, highKeys));
        count += __builtin_popcount(second);
        ids = _mm512_add_epi32(ids, step);
    }
    low = _mm512_reduce_min_epu32(lows);
    high = _mm512_reduce_max_epu32(highs);
#endif
    for (; i < n; i++) {
        uint32_t bits;
        __builtin_memcpy(&bits, weights + i, 4);
        uint32_t inverted = ~bits;
        int candidate = weights[i] >= floor;
        keys[count] = (uint64_t)inverted << 32 | (uint64_t)i;
        count += candidate;
        if (candidate) {
            low = inverted < low ? inverted : low;
            high = inverted > high ? inverted : high;
        }
    }
    *lowest = low;
    *highest = high;
    return count;
}
