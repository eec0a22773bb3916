// CRC-32C with the CPU's crc32 instruction (SSE4.2 on x86-64, the CRC extension on arm64), chosen at
// run time; callers fall back to their table code when it is absent.
#ifndef RLHF_CCHECKSUM_H
#define RLHF_CCHECKSUM_H
#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU has a CRC-32C instruction.
int rlhf_crc32c_hardware(void);

/// Feeds `length` bytes to the running (already inverted) CRC-32C register `state`; returns the new
/// register. Only call when rlhf_crc32c_hardware() is 1.
uint32_t rlhf_crc32c_update(uint32_t state, const void *bytes, size_t length);

#endif
