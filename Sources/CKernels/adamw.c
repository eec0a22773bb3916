#include "ckernels.h"

// Every multiply and add rounds on its own (no fused multiply-add), as the scalar formula does: the
// vector lanes and the tail give each element the same result, and the same as before this kernel.
#pragma clang fp contract(off)

typedef float lanes16 __attribute__((vector_size(64), aligned(4)));

static inline void adamw_lanes(lanes16 *p, lanes16 *m, lanes16 *v, lanes16 g, float scale, float beta1, float beta2,
                               float lr, float decay, float eps, float correction1, float correction2) {
    lanes16 grad = g * scale;
    *m = beta1 * *m + (1.0f - beta1) * grad;
    *v = beta2 * *v + (1.0f - beta2) * grad * grad;
    lanes16 m_hat = *m / correction1, v_hat = *v / correction2;
    *p = *p * decay - lr * m_hat / (__builtin_elementwise_sqrt(v_hat) + eps);
}

void rlhf_adamw_update(float *p, float *m, float *v, const float *g, long n, float scale, float beta1, float beta2,
                       float lr, float decay, float eps, float correction1, float correction2) {
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        lanes16 pp = *(lanes16 *)(p + i), mm = *(lanes16 *)(m + i), vv = *(lanes16 *)(v + i);
        adamw_lanes(&pp, &mm, &vv, *(const lanes16 *)(g + i), scale, beta1, beta2, lr, decay, eps, correction1, correction2);
        *(lanes16 *)(p + i) = pp;
        *(lanes16 *)(m + i) = mm;
        *(lanes16 *)(v + i) = vv;
    }
    if (i < n) {
        // The last 1-15 elements, through the same lanes (zeros past the end, results dropped).
        lanes16 pp = {0}, mm = {0}, vv = {0}, gg = {0};
        for (long j = 0; i + j < n; j++) { pp[j] = p[i + j]; mm[j] = m[i + j]; vv[j] = v[i + j]; gg[j] = g[i + j]; }
        adamw_lanes(&pp, &mm, &vv, gg, scale, beta1, beta2, lr, decay, eps, correction1, correction2);
        for (long j = 0; i + j < n; j++) { p[i + j] = pp[j]; m[i + j] = mm[j]; v[i + j] = vv[j]; }
    }
}
