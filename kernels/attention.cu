// Causal multi-head self-attention, row by row, never storing a (T, T) matrix (mirrors src/cpu/attention.rs).
// For batch b, head h, query position t (q, k, v are HS-wide slices of the qkv rows, HS = C / NH):
//   s[t2] = q[t] · k[t2] / sqrt(HS)  for t2 <= t (causal)
//   lse[t] = log(sum exp s)          (kept for the backward pass: one float per row instead of T)
//   out[t] = sum_t2 exp(s[t2] - lse[t]) v[t2]
// Backward, with p = exp(s - lse), dp[t][t2] = dout[t] · v[t2] and D[t] = dout[t] · out[t] (= sum p dp):
//   ds = p (dp - D);  dq[t] += ds k[t2] / sqrt(HS);  dk[t2] += ds q[t] / sqrt(HS);  dv[t2] += p dout[t]
//
// Thread mapping: one warp per (b, t, h) row; lanes stride over the HS channels of the head (lanes past HS hold
// zeros but still take part in the shuffles), and every dot product is a warp reduction. Any HS works: outputs are
// accumulated in float registers for a chunk of CHUNK = 128 channels at a time (4 per lane), each chunk walking
// the keys again, so a bf16 output is rounded once, not once per key; a head of up to 128 channels (every
// GPT-2 shape this fallback meets) is one chunk. Nothing is kept in shared memory.
// forward: a first pass over the keys finds the max and the sum of exp (online), a second recomputes the scores
// and adds p v[t2] into out[t], as the CPU does. backward: the warp for row r owns dq[r], dk[r], dv[r] of head h,
// as the CPU task does: dq[r] from the keys t2 <= r, dk[r] and dv[r] from the queries tq >= r. No atomics.
// Elements read per call (mostly from cache: the T rows of one (b, h) are shared by T warps): forward reads k twice
// and v once per (query, key) pair, ~1.5 B*NH*T^2*HS, and writes B*T*C + B*T*NH; backward reads k, v per pair as
// a query and q, dout, out per pair as a key, ~2.5 B*NH*T^2*HS, and reads and writes dqkv, 3 B*T*C each way.
#include "common.cuh"

// Channels a warp accumulates in registers per walk over the keys: ACC per lane.
#define ACC 4
#define CHUNK (WARP_SIZE * ACC)

// The dot product of two HS-wide vectors, returned to every lane.
static __device__ __forceinline__ float warp_dot(const floatX* a, const floatX* b, int HS, int lane) {
    float sum = 0.0f;
    for (int i = lane; i < HS; i += WARP_SIZE) {
        sum += to_float(a[i]) * to_float(b[i]);
    }
    return warp_reduce_sum(sum);
}

// out: (B, T, C); lse: (B, T, NH); qkv: (B, T, 3C) with q, k, v at channel offsets 0, C, 2C.
// grid: CEIL_DIV(B*T*NH, block / 32), block: a multiple of 32 (128). Warp w computes (b, t, h) = (w / NH / T,
// w / NH % T, w % NH).
extern "C" __global__ void attention_forward(floatX* out, float* lse, const floatX* __restrict__ qkv, int B, int T,
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
    const floatX* head = qkv + (size_t)(bt - t) * 3 * C + h * HS;
    const floatX* q = head + (size_t)t * 3 * C;

    float s_max = -INFINITY;
    float sum = 0.0f;  // sum of exp(s - s_max) over the keys seen so far
    for (int t2 = 0; t2 <= t; t2++) {
        const float s = warp_dot(q, head + (size_t)t2 * 3 * C + C, HS, lane) * scale;
        const float new_max = fmaxf(s_max, s);
        sum = sum * expf(s_max - new_max) + expf(s - new_max);
        s_max = new_max;
    }
    const float inv_sum = 1.0f / sum;

    floatX* o = out + (size_t)bt * C + h * HS;
    for (int c0 = 0; c0 < HS; c0 += CHUNK) {
        float acc[ACC] = {};
        for (int t2 = 0; t2 <= t; t2++) {
            const floatX* k = head + (size_t)t2 * 3 * C + C;
            const floatX* v = head + (size_t)t2 * 3 * C + 2 * C;
            const float p = expf(warp_dot(q, k, HS, lane) * scale - s_max) * inv_sum;
            for (int a = 0; a < ACC; a++) {
                const int i = c0 + lane + a * WARP_SIZE;
                if (i < HS) {
                    acc[a] += p * to_float(v[i]);
                }
            }
        }
        for (int a = 0; a < ACC; a++) {
            const int i = c0 + lane + a * WARP_SIZE;
            if (i < HS) {
                o[i] = from_float<floatX>(acc[a]);
            }
        }
    }
    if (lane == 0) {
        lse[row] = s_max + logf(sum);
    }
}

// dqkv: (B, T, 3C) accumulates; dout, out: (B, T, C); qkv: (B, T, 3C); lse: (B, T, NH).
// grid: CEIL_DIV(B*T*NH, block / 32), block: a multiple of 32 (128). Warp w owns row r = w / NH % T of batch
// b = w / NH / T, head h = w % NH: dq[r], dk[r], dv[r] of that head.
extern "C" __global__ void attention_backward(floatX* dqkv, const floatX* __restrict__ dout,
                                              const floatX* __restrict__ qkv, const floatX* __restrict__ out,
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
    const floatX* head = qkv + b0 * 3 * C + h * HS;
    const floatX* g = dout + b0 * C + h * HS;
    const floatX* o = out + b0 * C + h * HS;
    const float* l = lse + b0 * NH + h;
    floatX* dq = dqkv + (size_t)br * 3 * C + h * HS;
    floatX* dk = dq + C;
    floatX* dv = dq + 2 * C;
    const floatX* q_r = head + (size_t)r * 3 * C;
    const floatX* k_r = q_r + C;
    const floatX* v_r = q_r + 2 * C;
    const floatX* g_r = g + (size_t)r * C;

    const float d_r = warp_dot(g_r, o + (size_t)r * C, HS, lane);
    for (int c0 = 0; c0 < HS; c0 += CHUNK) {
        // r as the query: gradients flow to q[r] from every key it attended to.
        float dq_acc[ACC] = {};
        for (int t2 = 0; t2 <= r; t2++) {
            const floatX* k = head + (size_t)t2 * 3 * C + C;
            const floatX* v = head + (size_t)t2 * 3 * C + 2 * C;
            const float p = expf(warp_dot(q_r, k, HS, lane) * scale - l[(size_t)r * NH]);
            const float ds = p * (warp_dot(g_r, v, HS, lane) - d_r) * scale;
            for (int a = 0; a < ACC; a++) {
                const int i = c0 + lane + a * WARP_SIZE;
                if (i < HS) {
                    dq_acc[a] += ds * to_float(k[i]);
                }
            }
        }
        // r as the key: gradients flow to k[r], v[r] from every later query that attended to it.
        float dk_acc[ACC] = {}, dv_acc[ACC] = {};
        for (int tq = r; tq < T; tq++) {
            const floatX* q = head + (size_t)tq * 3 * C;
            const floatX* g_t = g + (size_t)tq * C;
            const float p = expf(warp_dot(q, k_r, HS, lane) * scale - l[(size_t)tq * NH]);
            const float d_t = warp_dot(g_t, o + (size_t)tq * C, HS, lane);
            const float ds = p * (warp_dot(g_t, v_r, HS, lane) - d_t) * scale;
            for (int a = 0; a < ACC; a++) {
                const int i = c0 + lane + a * WARP_SIZE;
                if (i < HS) {
                    dk_acc[a] += ds * to_float(q[i]);
                    dv_acc[a] += p * to_float(g_t[i]);
                }
            }
        }
        for (int a = 0; a < ACC; a++) {
            const int i = c0 + lane + a * WARP_SIZE;
            if (i < HS) {
                dq[i] = from_float<floatX>(to_float(dq[i]) + dq_acc[a]);
                dk[i] = from_float<floatX>(to_float(dk[i]) + dk_acc[a]);
                dv[i] = from_float<floatX>(to_float(dv[i]) + dv_acc[a]);
            }
        }
    }
}
