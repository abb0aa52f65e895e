// AdamW as PyTorch defines it (mirrors src/cpu/adamw.rs): bias-corrected moments and decoupled weight decay, in
// one pass over the parameters of one tensor. The gradient is multiplied by grad_scale as it is read, which is how
// clipping by the global norm is applied without a separate pass (see global_norm.cu).
//   g = grad * grad_scale
//   m = beta1 m + (1 - beta1) g;        v = beta2 v + (1 - beta2) g²
//   param -= lr (m / bias_correction1 / (sqrt(v / bias_correction2) + eps) + weight_decay param)
// The bias corrections 1 - beta1^step and 1 - beta2^step are computed by the launcher in f64 and passed as f32,
// exactly as the CPU computes them (beta2^step in f32 drifts by ~1e-5 relative after thousands of steps).
//
// Mixed precision (llm.c's scheme): with bf16 parameters the update is applied to a float master copy, and the
// bf16 parameters the forward pass reads are written from it by stochastic rounding: round up with probability
// equal to the fraction of the bf16 step below the value, so the rounding error averages to zero over steps. An
// update smaller than half a bf16 step (2^-9 of the weight) would otherwise be lost every time by rounding to
// nearest. The random bits are a hash of the element index and a per-step, per-tensor seed from the launcher: the
// same run gives the same parameters. Without a master copy (floatX = float) the parameters are the master.
//
// Thread mapping: one thread per group of GROUP consecutive parameters (4 floats or 8 bf16), moved with 128-bit
// loads and stores (common.cuh load_group/store_group; the float tensors of a bf16 build take two per group; a
// tensor that starts off a 16-byte boundary, and the last group when N % GROUP != 0, take element accesses).
// Elements moved per call: fp32 7 N floats (read params, grads, m, v; write params, m, v); bf16 2 N bf16 + 6 N
// floats (read grads; read and write master, m, v; write params, 8 stochastically rounded bf16 per 128-bit store). params, grads, master, m and v share one layout
// (src/layout.rs), so a tensor's views are aligned alike: packed whenever its offset is a multiple of GROUP.
#include "common.cuh"

// A 32-bit integer hash with good avalanche (Chris Wellons' "lowbias32"): nearby inputs give unrelated outputs.
static __device__ __forceinline__ unsigned int hash32(unsigned int x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

// x rounded to T: float stays as it is; bf16 rounds up in magnitude with probability (x's bits below the bf16
// step) / (the step), using the low 16 bits of `random`. Infinities and NaN round to nearest (they have no step).
template <class T>
static __device__ __forceinline__ T stochastic_round(float x, unsigned int random);
template <>
__device__ __forceinline__ float stochastic_round<float>(float x, unsigned int random) {
    return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 stochastic_round<__nv_bfloat16>(float x, unsigned int random) {
    const unsigned int bits = __float_as_uint(x);
    if ((bits & 0x7f800000u) == 0x7f800000u) {
        return __float2bfloat16_rn(x);
    }
    // Adding r < 2^16 to the low half carries into the kept half with probability (low half) / 2^16; truncating
    // afterwards keeps the sign and moves the magnitude up one bf16 step exactly then.
    return __float2bfloat16_rn(__uint_as_float((bits + (random & 0xffffu)) & 0xffff0000u));
}

// params: (N) updated (floatX); master: (N) float master weights updated in place, or null when floatX is float
// and params are the master; grads: (N) floatX, read; m, v: (N) float, updated in place. seed: the stochastic
// rounding's seed for this tensor and step. grid: CEIL_DIV(N, GROUP * block), block: any (256).
extern "C" __global__ void adamw_update(floatX* params, float* master, const floatX* __restrict__ grads, float* m,
                                        float* v, int N, float lr, float beta1, float beta2, float eps,
                                        float weight_decay, float grad_scale, float bias_correction1,
                                        float bias_correction2, unsigned int seed) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * GROUP;
    if (i >= (size_t)N) {
        return;
    }
    const fgroup grad = load_group(grads, i, N);
    fgroup param = master != nullptr ? load_group(master, i, N) : load_group(params, i, N);
    fgroup m_g = load_group(m, i, N);
    fgroup v_g = load_group(v, i, N);
    for (int k = 0; k < GROUP; k++) {
        const float g = grad.v[k] * grad_scale;
        m_g.v[k] = beta1 * m_g.v[k] + (1.0f - beta1) * g;
        v_g.v[k] = beta2 * v_g.v[k] + (1.0f - beta2) * g * g;
        const float m_hat = m_g.v[k] / bias_correction1;
        const float v_hat = v_g.v[k] / bias_correction2;
        const float p = param.v[k];
        param.v[k] = p - lr * (m_hat / (sqrtf(v_hat) + eps) + weight_decay * p);
    }
    if (master != nullptr) {
        store_group(master, i, N, param);
        // The rounded group: GROUP floatX are 16 bytes, one 128-bit store when aligned and whole. Assembled in an
        // int4 by memcpy, which nvcc keeps in registers (a union indexed element by element went to the stack).
        floatX rounded[GROUP];
        for (int k = 0; k < GROUP; k++) {
            rounded[k] = stochastic_round<floatX>(param.v[k], hash32((unsigned int)(i + k) ^ seed));
        }
        if (i + GROUP <= (size_t)N && is_aligned128(params + i)) {
#ifdef LLMRS_EMU
            emu::check_aligned(params + i, 16);
#endif
            int4 bits;
            memcpy(&bits, rounded, sizeof(bits));
            *reinterpret_cast<int4*>(params + i) = bits;
        } else {
            for (int k = 0; k < GROUP && i + k < (size_t)N; k++) {
                params[i + k] = rounded[k];
            }
        }
    } else {
        store_group(params, i, N, param);
    }
    store_group(m, i, N, m_g);
    store_group(v, i, N, v_g);
}
