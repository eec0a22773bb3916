// A C peer of the SwiftRLHF wire, built from the same Protos/ with protoc-c: it proves in the tests
// that a program in another language reads and writes our bytes. Not used at run time.
#ifndef WIRE_PEER_H
#define WIRE_PEER_H

#include <stddef.h>
#include <stdint.h>

/// Message kinds the peer knows: the rlhf.v1 MessageType values for bodies, plus the envelope.
enum { WIRE_PEER_ENVELOPE = 100 };

/// Decodes `in` (`len` bytes) as the message of `kind` with protobuf-c, then packs it again into
/// `out`. Returns the packed length; -1 if `in` does not decode, -2 if `cap` is too small, -3 for an
/// unknown kind.
long wire_peer_repack(int kind, const uint8_t *in, size_t len, uint8_t *out, size_t cap);

/// Builds a fixed Register message with protobuf-c (role GENERATOR, worker id "c-peer", protocol 1,
/// build hash "c", policy version 7, capacity 16, host "c-host", pid 4242) and packs it into `out`.
long wire_peer_make_register(uint8_t *out, size_t cap);

#endif
