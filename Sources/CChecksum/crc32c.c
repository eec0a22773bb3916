#include "cchecksum.h"
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>

int rlhf_crc32c_hardware(void) { return __builtin_cpu_supports("sse4.2") ? 1 : 0; }

__attribute__((target("sse4.2")))
uint32_t rlhf_crc32c_update(uint32_t state, const void *bytes, size_t length) {
    const unsigned char *p = bytes;
    uint64_t c = state;
    while (length > 0 && ((uintptr_t)p & 7) != 0) { c = _mm_crc32_u8((uint32_t)c, *p++); length--; }
    while (length >= 32) {
        uint64_t w0, w1, w2, w3;
        memcpy(&w0, p, 8); memcpy(&w1, p + 8, 8); memcpy(&w2, p + 16, 8); memcpy(&w3, p + 24, 8);
        c = _mm_crc32_u64(c, w0); c = _mm_crc32_u64(c, w1); c = _mm_crc32_u64(c, w2); c = _mm_crc32_u64(c, w3);
        p += 32; length -= 32;
    }
    while (length >= 8) { uint64_t w; memcpy(&w, p, 8); c = _mm_crc32_u64(c, w); p += 8; length -= 8; }
    while (length > 0) { c = _mm_crc32_u8((uint32_t)c, *p++); length--; }
    return (uint32_t)c;
}

#elif defined(__aarch64__) && defined(__ARM_FEATURE_CRC32)
#include <arm_acle.h>

int rlhf_crc32c_hardware(void) { return 1; }

uint32_t rlhf_crc32c_update(uint32_t state, const void *bytes, size_t length) {
    const unsigned char *p = bytes;
    uint32_t c = state;
    while (length >= 8) { uint64_t w; memcpy(&w, p, 8); c = __crc32cd(c, w); p += 8; length -= 8; }
    while (length > 0) { c = __crc32cb(c, *p++); length--; }
    return c;
}

#else

int rlhf_crc32c_hardware(void) { return 0; }
uint32_t rlhf_crc32c_update(uint32_t state, const void *bytes, size_t length) { (void)bytes; (void)length; return state; }

#endif
