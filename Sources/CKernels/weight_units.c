#include "ckernels.h"

typedef uint64_t keys8 __attribute__((vector_size(64), aligned(8)));
typedef uint32_t bits8 __attribute__((vector_size(32), aligned(4)));
typedef float floats8 __attribute__((vector_size(32), aligned(4)));
typedef int32_t mask8 __attribute__((vector_size(32), aligned(4)));
typedef int64_t units8 __attribute__((vector_size(64), aligned(8)));

long rlhf_weight_units(const uint64_t *keys, long m, float scale, int *inexact) {
    units8 sum = {0};
    mask8 bad = {0};
    long i = 0;
    for (; i + 8 <= m; i += 8) {
        bits8 high = __builtin_convertvector(*(const keys8 *)(keys + i) >> 32, bits8);
        floats8 x = (floats8)(~high) * scale;
        floats8 r = __builtin_elementwise_roundeven(x);
        floats8 d = x - r;
        // A weight of 2^24 units or more leaves the binade (this also catches infinities and NaNs, whose
        // lanes are zeroed before the conversion to integers); a half-way case rounds by the running
        // sum's last bit.
        mask8 outside = (x >= 16777216.0f) | (x != x);
        bad |= outside | (d == 0.5f) | (d == -0.5f);
        r = (floats8)((mask8)r & ~outside);
        sum += __builtin_convertvector(r, units8);
    }
    long total = 0;
    for (int l = 0; l < 8; l++) total += sum[l];
    int failed = 0;
    for (int l = 0; l < 8; l++) failed |= bad[l];
    for (; i < m; i++) {
        uint32_t high = ~(uint32_t)(keys[i] >> 32);
        float w;
        __builtin_memcpy(&w, &high, 4);
        float x = w * scale;
        if (!(x < 16777216.0f)) {
            failed = 1;
            continue;
        }
        float r = __builtin_roundevenf(x);
        float d = x - r;
        failed |= (d == 0.5f) | (d == -0.5f);
        total += (long)r;
    }
    *inexact = failed != 0;
    return failed ? 0 : total;
}
