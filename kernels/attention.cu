// Causal multi-head self-attention, row by row, never storing a (T, T) matrix (mirrors src/cpu/attention.rs).
// For batch b, head h, query position t (q, k, v are HS-wide slices of the qkv rows, HS = C / NH):
//   s[t2] = q[t] · k[t2] / sqrt(HS)  for t2 <= t (causal)
//   lse[t] = log(sum exp s)          (kept for the backward pass: one float per row instead of T)
//   out[t] = sum_t2 exp(s[t2] - lse[t]) v[t2]
// Backward, with p = exp(s - lse), dp[t][t2] = dout[t] · v[t2] and D[t] = dout[t] · out[t] (= sum p dp):
//   ds = p (dp - D);  dq[t] += ds k[t2] / sqrt(HS);  dk[t2] += ds q[t] / sqrt(HS);  dv[t2] += p dout[t]
//
// Thread mapping: one warp per (b, t, h) row; lanes stride over the HS channels of the head (lanes past HS hold
// zeros but still take part in the shuffles), and every dot product is a warp reduction. Any HS works; nothing
// is cached in registers or shared memory, the warp accumulates straight into the slice of the output it owns.
// forward: a first pass over the keys finds the max and the sum of exp (online), a second recomputes the scores
// and adds p v[t2] into out[t], as the CPU does. backward: the warp for row r owns dq[r], dk[r], dv[r] of head h,
// as the CPU task does: dq[r] from the keys t2 <= r, dk[r] and dv[r] from the queries tq >= r. No atomics.
// Floats read per call (mostly from cache: the T rows of one (b, h) are shared by T warps): forward reads k twice
// and v once per (query, key) pair, ~1.5 B*NH*T^2*HS, and writes B*T*C + B*T*NH; backward reads k, v per pair as
// a query and q, dout, out per pair as a key, ~2.5 B*NH*T^2*HS, and reads and writes dqkv, 3 B*T*C each way.
#include "common.cuh"

// The dot product of two HS-wide vectors, returned to every lane.
static __device__ __forceinline__ float warp_dot(const float* a, const float* b, int HS, int lane) {
    float sum = 0.0f;
    for (int i = lane; i < HS; i += WARP_SIZE) {
        sum += a[i] * b[i];
    }
    return warp_reduce_sum(sum);
}

// out: (B, T, C); lse: (B, T, NH); qkv: (B, T, 3C) with q, k, v at channel offsets 0, C, 2C.
// grid: CEIL_DIV(B*T*NH, block / 32), block: a multiple of 32 (128). Warp w computes (b, t, h) = (w / NH / T,
// w / NH % T, w % NH).
extern "C" __global__ void attention_forward(float* out, float* lse, const float* __restrict__ qkv, int B, int T,
                                             int C, int NH) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;
    if (row >= B * T * NH) {
        return;  // the whole warp: row is the same for its 32 lanes
    }
    const int h = row % NH;
    const int bt = row / NH;
    const int t = bt % T;
    const int HS = C / NH;
    const float scale = 1.0f / sqrtf((float)HS);
    // qkv row of position t2 of this batch, at the channels of head h: q at +0, k at +C, v at +2C.
    const float* head = qkv + (size_t)(bt - t) * 3 * C + h * HS;
    const float* q = head + (size_t)t * 3 * C;

    float s_max = -INFINITY;
    float sum = 0.0f;  // sum of exp(s - s_max) over the keys seen so far
    for (int t2 = 0; t2 <= t; t2++) {
        const float s = warp_dot(q, head + (size_t)t2 * 3 * C + C, HS, lane) * scale;
        const float new_max = fmaxf(s_max, s);
        sum = sum * expf(s_max - new_max) + expf(s - new_max);
        s_max = new_max;
    }
    const float inv_sum = 1.0f / sum;

    float* o = out + (size_t)bt * C + h * HS;
    for (int i = lane; i < HS; i += WARP_SIZE) {
        o[i] = 0.0f;
    }
    for (int t2 = 0; t2 <= t; t2++) {
        const float* k = head + (size_t)t2 * 3 * C + C;
        const float* v = head + (size_t)t2 * 3 * C + 2 * C;
        const float p = expf(warp_dot(q, k, HS, lane) * scale - s_max) * inv_sum;
        for (int i = lane; i < HS; i += WARP_SIZE) {
            o[i] += p * v[i];
        }
    }
    if (lane == 0) {
        lse[row] = s_max + logf(sum);
    }
}

// dqkv: (B, T, 3C) accumulates; dout, out: (B, T, C); qkv: (B, T, 3C); lse: (B, T, NH).
// grid: CEIL_DIV(B*T*NH, block / 32), block: a multiple of 32 (128). Warp w owns row r = w / NH % T of batch
// b = w / NH / T, head h = w % NH: dq[r], dk[r], dv[r] of that head.
extern "C" __global__ void attention_backward(float* dqkv, const float* __restrict__ dout,
                                              const float* __restrict__ qkv, const float* __restrict__ out,
                                              const float* __restrict__ lse, int B, int T, int C, int NH) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;
    if (row >= B * T * NH) {
        return;  // the whole warp
    }
    const int h = row % NH;
    const int br = row / NH;
    const int r = br % T;
    const int HS = C / NH;
    const float scale = 1.0f / sqrtf((float)HS);
    // Row 0 of this batch at head h: qkv and dqkv rows are 3C apart (q at +0, k at +C, v at +2C), dout, out C apart;
    // lse rows are NH apart.
    const size_t b0 = br - r;
    const float* head = qkv + b0 * 3 * C + h * HS;
    const float* g = dout + b0 * C + h * HS;
    const float* o = out + b0 * C + h * HS;
    const float* l = lse + b0 * NH + h;
    float* dq = dqkv + (size_t)br * 3 * C + h * HS;
    float* dk = dq + C;
    float* dv = dq + 2 * C;
    const float* q_r = head + (size_t)r * 3 * C;
    const float* k_r = q_r + C;
    const float* v_r = q_r + 2 * C;
    const float* g_r = g + (size_t)r * C;

    // r as the query: gradients flow to q[r] from every key it attended to.
    const float d_r = warp_dot(g_r, o + (size_t)r * C, HS, lane);
    for (int t2 = 0; t2 <= r; t2++) {
        const float* k = head + (size_t)t2 * 3 * C + C;
        const float* v = head + (size_t)t2 * 3 * C + 2 * C;
        const float p = expf(warp_dot(q_r, k, HS, lane) * scale - l[(size_t)r * NH]);
        const float ds = p * (warp_dot(g_r, v, HS, lane) - d_r) * scale;
        for (int i = lane; i < HS; i += WARP_SIZE) {
            dq[i] += ds * k[i];
        }
    }
    // r as the key: gradients flow to k[r], v[r] from every later query that attended to it.
    for (int tq = r; tq < T; tq++) {
        const float* q = head + (size_t)tq * 3 * C;
        const float* g_t = g + (size_t)tq * C;
        const float p = expf(warp_dot(q, k_r, HS, lane) * scale - l[(size_t)tq * NH]);
        const float d_t = warp_dot(g_t, o + (size_t)tq * C, HS, lane);
        const float ds = p * (warp_dot(g_t, v_r, HS, lane) - d_t) * scale;
        for (int i = lane; i < HS; i += WARP_SIZE) {
            dk[i] += ds * q[i];
            dv[i] += p * g_t[i];
        }
    }
}
