// Arithmetic peak probes: what one core's vector units do on independent accumulators in registers, so
// that a benchmark can say which number format the CPU is fast in (on some CPUs with AVX-512 BF16,
// vdpbf16ps issues at half the rate of a float32 FMA or less, and bfloat16 products then save memory
// traffic, not time).
#include "ckernels.h"
#include <time.h>
#include <immintrin.h>

static double seconds_now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

// Twelve independent chains: enough to cover either instruction's latency at its throughput. The empty
// asm keeps each accumulator in a register and every instruction in the loop.
#define PEAK_CHAINS 12

__attribute__((target("avx512f,avx512bf16,avx512vl,avx512bw")))
static double dpbf16_gflops(long iterations) {
    __m512 acc[PEAK_CHAINS];
    for (int j = 0; j < PEAK_CHAINS; j++) acc[j] = _mm512_setzero_ps();
    const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3f80), y = (__m512bh)_mm512_set1_epi16(0x3c00);
    const double start = seconds_now();
    for (long i = 0; i < iterations; i++) {
        for (int j = 0; j < PEAK_CHAINS; j++) {
            acc[j] = _mm512_dpbf16_ps(acc[j], x, y);
            __asm__ volatile("" : "+v"(acc[j]));
        }
    }
    const double elapsed = seconds_now() - start;
    // 16 lanes x 2 products x (multiply + add) per instruction.
    return (double)iterations * PEAK_CHAINS * 64 / elapsed / 1e9;
}

__attribute__((target("avx512f")))
static double fma_gflops(long iterations) {
    __m512 acc[PEAK_CHAINS];
    for (int j = 0; j < PEAK_CHAINS; j++) acc[j] = _mm512_setzero_ps();
    const __m512 x = _mm512_set1_ps(1.0f), y = _mm512_set1_ps(1e-9f);
    const double start = seconds_now();
    for (long i = 0; i < iterations; i++) {
        for (int j = 0; j < PEAK_CHAINS; j++) {
            acc[j] = _mm512_fmadd_ps(x, y, acc[j]);
            __asm__ volatile("" : "+v"(acc[j]));
        }
    }
    const double elapsed = seconds_now() - start;
    // 16 lanes x (multiply + add) per instruction.
    return (double)iterations * PEAK_CHAINS * 32 / elapsed / 1e9;
}

double rlhf_peak_bf16_gflops(long iterations) {
    return __builtin_cpu_supports("avx512bf16") ? dpbf16_gflops(iterations) : 0;
}

double rlhf_peak_fma_gflops(long iterations) {
    return __builtin_cpu_supports("avx512f") ? fma_gflops(iterations) : 0;
}
