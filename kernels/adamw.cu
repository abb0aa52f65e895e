// AdamW as PyTorch defines it (mirrors src/cpu/adamw.rs): bias-corrected moments and decoupled weight decay, in
// one pass over the parameters of one tensor. The gradient is multiplied by grad_scale as it is read, which is how
// clipping by the global norm is applied without a separate pass (see global_norm.cu).
//   g = grad * grad_scale
//   m = beta1 m + (1 - beta1) g;        v = beta2 v + (1 - beta2) g²
//   param -= lr (m / bias_correction1 / (sqrt(v / bias_correction2) + eps) + weight_decay param)
// The bias corrections 1 - beta1^step and 1 - beta2^step are computed by the launcher in f64 and passed as f32,
// exactly as the CPU computes them (beta2^step in f32 drifts by ~1e-5 relative after thousands of steps).
//
// Thread mapping: one thread per parameter. Floats moved per call: 7 N (read params, grads, m, v; write params,
// m, v).
#include "common.cuh"

// params, m, v: (N) updated in place; grads: (N) read. grid: CEIL_DIV(N, block), block: any (256).
extern "C" __global__ void adamw_update(float* params, const float* __restrict__ grads, float* m, float* v, int N,
                                        float lr, float beta1, float beta2, float eps, float weight_decay,
                                        float grad_scale, float bias_correction1, float bias_correction2) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N) {
        return;
    }
    const float g = grads[i] * grad_scale;
    const float m_new = beta1 * m[i] + (1.0f - beta1) * g;
    const float v_new = beta2 * v[i] + (1.0f - beta2) * g * g;
    const float m_hat = m_new / bias_correction1;
    const float v_hat = v_new / bias_correction2;
    const float p = params[i];
    params[i] = p - lr * (m_hat / (sqrtf(v_hat) + eps) + weight_decay * p);
    m[i] = m_new;
    v[i] = v_new;
}
