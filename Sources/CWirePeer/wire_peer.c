#include "wire_peer.h"
#include <string.h>
#include "rlhf/v1/envelope.pb-c.h"
#include "rlhf/v1/control.pb-c.h"
#include "rlhf/v1/work.pb-c.h"

static const ProtobufCMessageDescriptor *descriptor_for(int kind) {
    switch (kind) {
    case WIRE_PEER_ENVELOPE: return &rlhf__v1__envelope__descriptor;
    case RLHF__V1__MESSAGE_TYPE__REGISTER: return &rlhf__v1__register__descriptor;
    case RLHF__V1__MESSAGE_TYPE__REGISTER_ACK: return &rlhf__v1__register_ack__descriptor;
    case RLHF__V1__MESSAGE_TYPE__HEARTBEAT: return &rlhf__v1__heartbeat__descriptor;
    case RLHF__V1__MESSAGE_TYPE__STATUS_REQUEST: return &rlhf__v1__status_request__descriptor;
    case RLHF__V1__MESSAGE_TYPE__STATUS_REPLY: return &rlhf__v1__status_reply__descriptor;
    case RLHF__V1__MESSAGE_TYPE__SHUTDOWN: return &rlhf__v1__shutdown__descriptor;
    case RLHF__V1__MESSAGE_TYPE__ERROR: return &rlhf__v1__error__descriptor;
    case RLHF__V1__MESSAGE_TYPE__HEARTBEAT_ACK: return &rlhf__v1__heartbeat_ack__descriptor;
    case RLHF__V1__MESSAGE_TYPE__GENERATE_REQUEST: return &rlhf__v1__generate_request__descriptor;
    case RLHF__V1__MESSAGE_TYPE__GENERATE_RESULT: return &rlhf__v1__generate_result__descriptor;
    case RLHF__V1__MESSAGE_TYPE__SCORE_REQUEST: return &rlhf__v1__score_request__descriptor;
    case RLHF__V1__MESSAGE_TYPE__SCORE_RESULT: return &rlhf__v1__score_result__descriptor;
    case RLHF__V1__MESSAGE_TYPE__REFERENCE_LOGPROB_REQUEST: return &rlhf__v1__reference_log_prob_request__descriptor;
    case RLHF__V1__MESSAGE_TYPE__REFERENCE_LOGPROB_RESULT: return &rlhf__v1__reference_log_prob_result__descriptor;
    case RLHF__V1__MESSAGE_TYPE__TRAIN_BATCH: return &rlhf__v1__train_batch__descriptor;
    case RLHF__V1__MESSAGE_TYPE__TRAIN_STATS: return &rlhf__v1__train_stats__descriptor;
    case RLHF__V1__MESSAGE_TYPE__WEIGHT_ANNOUNCE: return &rlhf__v1__weight_announce__descriptor;
    case RLHF__V1__MESSAGE_TYPE__WEIGHT_CHUNK_REQUEST: return &rlhf__v1__weight_chunk_request__descriptor;
    case RLHF__V1__MESSAGE_TYPE__WEIGHT_CHUNK: return &rlhf__v1__weight_chunk__descriptor;
    case RLHF__V1__MESSAGE_TYPE__REMOTE_CALL: return &rlhf__v1__remote_call__descriptor;
    case RLHF__V1__MESSAGE_TYPE__REMOTE_REPLY: return &rlhf__v1__remote_reply__descriptor;
    default: return NULL;
    }
}

long wire_peer_repack(int kind, const uint8_t *in, size_t len, uint8_t *out, size_t cap) {
    const ProtobufCMessageDescriptor *d = descriptor_for(kind);
    if (d == NULL) return -3;
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, in);
    if (m == NULL) return -1;
    size_t size = protobuf_c_message_get_packed_size(m);
    long result = -2;
    if (size <= cap) result = (long)protobuf_c_message_pack(m, out);
    protobuf_c_message_free_unpacked(m, NULL);
    return result;
}

long wire_peer_make_register(uint8_t *out, size_t cap) {
    Rlhf__V1__Register m = RLHF__V1__REGISTER__INIT;
    m.role = RLHF__V1__ROLE__GENERATOR;
    m.worker_id = "c-peer";
    m.protocol_version = 1;
    m.build_hash = "c";
    m.policy_version = 7;
    m.capacity = 16;
    m.host = "c-host";
    m.pid = 4242;
    size_t size = rlhf__v1__register__get_packed_size(&m);
    if (size > cap) return -2;
    return (long)rlhf__v1__register__pack(&m, out);
}
