// AdamW as PyTorch defines it (mirrors src/cpu/adamw.rs): bias-corrected moments and decoupled weight decay, in
// one pass over the parameters of one tensor. The gradient is multiplied by grad_scale as it is read, which is how
// clipping by the global norm is applied without a separate pass (see global_norm.cu).
//   g = grad * grad_scale
//   m = beta1 m + (1 - beta1) g;        v = beta2 v + (1 - beta2) g²
//   param -= lr (m / bias_correction1 / (sqrt(v / bias_correction2) + eps) + weight_decay param)
// The bias corrections 1 - beta1^step and 1 - beta2^step are computed by the launcher in f64 and passed as f32,
// exactly as the CPU computes them (beta2^step in f32 drifts by ~1e-5 relative after thousands of steps).
//
// Thread mapping: one thread per group of 4 consecutive parameters, moved with 128-bit loads and stores (common.cuh
// load4/store4; a tensor that starts off a 16-byte boundary, and the last group when N % 4 != 0, take 32-bit
// accesses). Floats moved per call: 7 N (read params, grads, m, v; write params, m, v), the most of any kernel per
// element: 7 128-bit instructions per 4 parameters instead of 28 32-bit ones. params, grads, m and v share one
// layout (src/layout.rs), so a tensor's four views are aligned alike: packed whenever its offset is a multiple of 4.
#include "common.cuh"

// params, m, v: (N) updated in place; grads: (N) read. grid: CEIL_DIV(N, 4 * block), block: any (256).
extern "C" __global__ void adamw_update(float* params, const float* __restrict__ grads, float* m, float* v, int N,
                                        float lr, float beta1, float beta2, float eps, float weight_decay,
                                        float grad_scale, float bias_correction1, float bias_correction2) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * F128_FLOATS;
    if (i >= (size_t)N) {
        return;
    }
    const f128 grad4 = load4(grads, i, N);
    f128 param4 = load4(params, i, N);
    f128 m4 = load4(m, i, N);
    f128 v4 = load4(v, i, N);
    for (int k = 0; k < F128_FLOATS; k++) {
        const float g = grad4.v[k] * grad_scale;
        m4.v[k] = beta1 * m4.v[k] + (1.0f - beta1) * g;
        v4.v[k] = beta2 * v4.v[k] + (1.0f - beta2) * g * g;
        const float m_hat = m4.v[k] / bias_correction1;
        const float v_hat = v4.v[k] / bias_correction2;
        const float p = param4.v[k];
        param4.v[k] = p - lr * (m_hat / (sqrtf(v_hat) + eps) + weight_decay * p);
    }
    store4(params, i, N, param4);
    store4(m, i, N, m4);
    store4(v, i, N, v4);
}
