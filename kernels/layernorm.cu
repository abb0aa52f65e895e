// LayerNorm over the channels of each (b, t) row (mirrors src/cpu/layernorm.rs):
//   out = (x - mean) * rstd * weight + bias,  rstd = 1 / sqrt(var + 1e-5) (biased variance, two passes over x).
// Backward, per row, with norm = (x - mean) * rstd and dnorm = weight * dout:
//   dinp += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
//   dweight += sum over rows of norm * dout;  dbias += sum over rows of dout
//
// Thread mapping. forward and backward_dinp: one warp per row; lane l takes the groups of GROUP channels (4 floats
// or 8 bf16) that start at GROUP l, GROUP (l + 32), ..., and the row statistics come from warp reductions. A group
// moves with one 128-bit load or store per tensor (common.cuh load_group/store_group) when C % GROUP == 0 (every
// GPT-2) and the tensor's start is 16-byte aligned; rows that start off a 16-byte boundary (a misaligned view, or
// weight and bias sliced from (L, C) parameters at l * C) and the last group when C % GROUP != 0 take element
// accesses. backward_dparams: one thread per channel, walking the B*T rows in order, so every element of dweight
// and dbias has one owner (deterministic, no atomics) and is rounded once; its loads are columns, 32 consecutive
// elements per warp. Statistics (mean, rstd) are float in both precisions; all arithmetic is float.
// Elements moved per call (N = B*T rows; x is read three times, but a warp's row stays in cache after the first):
// forward reads x and writes out, 2 N*C (+ 2C parameters, 2N statistics); backward_dinp reads dout and x and
// reads and writes dinp, 4 N*C; backward_dparams reads x and dout, 2 N*C (+ 2N statistics, 4C parameters).
#include "common.cuh"

// PyTorch's and GPT-2's LayerNorm epsilon.
#define LAYERNORM_EPS 1e-5f

// Channels one warp covers per step of its loop over a row: 32 lanes, a group each.
#define ROW_STRIDE (WARP_SIZE * GROUP)

// One warp normalises row `row` of x into o and writes its statistics. Every lane reads only the groups it owns
// (channels GROUP lane .. GROUP (lane + 1) - 1, then ROW_STRIDE further on, ...), so a row the same warp has just written needs no
// barrier. load_group reads the channels past C of a last partial group as 0, which leaves the sum as it is.
static __device__ __forceinline__ void layernorm_row(floatX* o, float* mean, float* rstd, const floatX* x,
                                                     const floatX* __restrict__ weight,
                                                     const floatX* __restrict__ bias, int row, int C, int lane) {
    float sum = 0.0f;
    for (int i = lane * GROUP; i < C; i += ROW_STRIDE) {
        const fgroup xi = load_group(x, i, C);
        for (int k = 0; k < GROUP; k++) {
            sum += xi.v[k];
        }
    }
    const float m = warp_reduce_sum(sum) / C;
    float sum_sq = 0.0f;
    for (int i = lane * GROUP; i < C; i += ROW_STRIDE) {
        const fgroup xi = load_group(x, i, C);
        for (int k = 0; k < GROUP && i + k < C; k++) {
            const float d = xi.v[k] - m;
            sum_sq += d * d;
        }
    }
    const float s = 1.0f / sqrtf(warp_reduce_sum(sum_sq) / C + LAYERNORM_EPS);
    for (int i = lane * GROUP; i < C; i += ROW_STRIDE) {
        const fgroup xi = load_group(x, i, C);
        const fgroup w = load_group(weight, i, C);
        const fgroup b = load_group(bias, i, C);
        fgroup out;
        for (int k = 0; k < GROUP; k++) {
            out.v[k] = (xi.v[k] - m) * s * w.v[k] + b.v[k];
        }
        store_group(o, i, C, out);
    }
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = s;
    }
}

// out: (B, T, C); mean, rstd: (B, T); inp: (B, T, C); weight, bias: (C).
// grid: CEIL_DIV(B*T, block / 32), block: a multiple of 32 (256).
extern "C" __global__ void layernorm_forward(floatX* out, float* mean, float* rstd, const floatX* __restrict__ inp,
                                             const floatX* __restrict__ weight, const floatX* __restrict__ bias, int B,
                                             int T, int C) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;
    if (row >= B * T) {
        return;  // the whole warp: row is the same for its 32 lanes
    }
    layernorm_row(out + (size_t)row * C, mean, rstd, inp + (size_t)row * C, weight, bias, row, C, lane);
}

// The residual add and the next LayerNorm in one pass over the row (mirrors
// src/cpu/layernorm.rs fused_residual_layernorm_forward): residual = inp1 + inp2, out = layernorm(residual).
// Saves re-reading the residual from memory: 3 N*C floats read and written for the add, then the row is in cache.
// residual, out: (B, T, C); mean, rstd: (B, T); inp1, inp2: (B, T, C); weight, bias: (C).
// grid: CEIL_DIV(B*T, block / 32), block: a multiple of 32 (256).
extern "C" __global__ void fused_residual_layernorm_forward(floatX* residual, floatX* out, float* mean, float* rstd,
                                                            const floatX* __restrict__ inp1,
                                                            const floatX* __restrict__ inp2,
                                                            const floatX* __restrict__ weight,
                                                            const floatX* __restrict__ bias, int B, int T, int C) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;
    if (row >= B * T) {
        return;  // the whole warp: row is the same for its 32 lanes
    }
    floatX* r = residual + (size_t)row * C;
    for (int i = lane * GROUP; i < C; i += ROW_STRIDE) {
        const fgroup a = load_group(inp1 + (size_t)row * C, i, C);
        const fgroup b = load_group(inp2 + (size_t)row * C, i, C);
        fgroup sum;
        for (int k = 0; k < GROUP; k++) {
            sum.v[k] = a.v[k] + b.v[k];
        }
        store_group(r, i, C, sum);
    }
    layernorm_row(out + (size_t)row * C, mean, rstd, r, weight, bias, row, C, lane);
}

// dinp: (B, T, C) accumulates; dout, inp: (B, T, C); weight: (C); mean, rstd: (B, T).
// grid: CEIL_DIV(B*T, block / 32), block: a multiple of 32 (256).
extern "C" __global__ void layernorm_backward_dinp(floatX* dinp, const floatX* __restrict__ dout,
                                                   const floatX* __restrict__ inp, const floatX* __restrict__ weight,
                                                   const float* __restrict__ mean, const float* __restrict__ rstd,
                                                   int B, int T, int C) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;
    if (row >= B * T) {
        return;  // the whole warp
    }
    const floatX* x = inp + (size_t)row * C;
    const floatX* g = dout + (size_t)row * C;
    const float m = mean[row];
    const float s = rstd[row];
    float dnorm_sum = 0.0f;
    float dnorm_norm_sum = 0.0f;
    // Channels past C of a last partial group read as 0: their dnorm is 0, so they add nothing to either sum.
    for (int i = lane * GROUP; i < C; i += ROW_STRIDE) {
        const fgroup xi = load_group(x, i, C);
        const fgroup gi = load_group(g, i, C);
        const fgroup w = load_group(weight, i, C);
        for (int k = 0; k < GROUP; k++) {
            const float norm = (xi.v[k] - m) * s;
            const float dnorm = w.v[k] * gi.v[k];
            dnorm_sum += dnorm;
            dnorm_norm_sum += dnorm * norm;
        }
    }
    const float dnorm_mean = warp_reduce_sum(dnorm_sum) / C;
    const float dnorm_norm_mean = warp_reduce_sum(dnorm_norm_sum) / C;
    floatX* d = dinp + (size_t)row * C;
    for (int i = lane * GROUP; i < C; i += ROW_STRIDE) {
        const fgroup xi = load_group(x, i, C);
        const fgroup gi = load_group(g, i, C);
        const fgroup w = load_group(weight, i, C);
        fgroup di = load_group(d, i, C);
        for (int k = 0; k < GROUP; k++) {
            const float norm = (xi.v[k] - m) * s;
            const float dnorm = w.v[k] * gi.v[k];
            di.v[k] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
        }
        store_group(d, i, C, di);
    }
}

// dweight, dbias: (C) accumulate; dout, inp: (B, T, C); mean, rstd: (B, T).
// grid: CEIL_DIV(C, block), block: any (256). Thread c owns dweight[c] and dbias[c].
extern "C" __global__ void layernorm_backward_dparams(floatX* dweight, floatX* dbias, const floatX* __restrict__ dout,
                                                      const floatX* __restrict__ inp, const float* __restrict__ mean,
                                                      const float* __restrict__ rstd, int B, int T, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) {
        return;
    }
    float dw = to_float(dweight[c]);
    float db = to_float(dbias[c]);
    for (int row = 0; row < B * T; row++) {
        const float g = to_float(dout[(size_t)row * C + c]);
        dw += (to_float(inp[(size_t)row * C + c]) - mean[row]) * rstd[row] * g;
        db += g;
    }
    dweight[c] = from_float<floatX>(dw);
    dbias[c] = from_float<floatX>(db);
}
