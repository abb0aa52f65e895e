// Causal multi-head self-attention forward, from three kernels over a stored (B, NH, T, T) matrix to flash-style
// tiles of keys in shared memory.
//
// qkv: (B, T, 3C) holds q, k, v at channel offsets 0, C, 2C, and head h uses channels h*HS .. h*HS + HS-1 of each
// (HS = C / NH). For batch b, head h, query position t (mirrors kernels/attention.cu and src/cpu/attention.rs):
//   s[t2] = q[t] · k[t2] / sqrt(HS)   for t2 <= t (causal)
//   lse[t] = log(sum over t2 of exp s[t2])         kept for the backward pass, one float per row
//   out[t] = sum over t2 of exp(s[t2] - lse[t]) v[t2]
// out: (B, T, C); lse: (B, T, NH).
// Work: B*NH*T(T+1)/2 (query, key) pairs at 4 HS FLOPs each (the dot product and the weighted sum of v), 12.9
// GFLOP at GPT-2 124M; the least memory traffic is qkv read once and out written once, ~100 MB. So a good kernel
// is limited by arithmetic and by how often it fetches k and v again; GFLOP/s printed counts those useful FLOPs.
//
//   ./attention_forward        every version          ./attention_forward 3   version 3 only
// Building (nvcc or the CPU emulator dev/emu): dev/cuda/run.sh, dev/cuda/README.md.
#include "common.h"

// The head size versions 3 to 5 are compiled for (their per-lane arrays are sized by it): GPT-2's at every size.
#define HS_FIXED 64

// ---------------------------------------------------------------------------------------------------------------
// CPU reference: scores of one row, a max for stability, then the weighted sum; sums in double.

// out: (B, T, C); lse: (B, T, NH); qkv: (B, T, 3C).
static void attention_forward_cpu(float* out, float* lse, const float* qkv, int B, int T, int C, int NH) {
    const int HS = C / NH;
    const double scale = 1.0 / sqrt((double)HS);
    std::vector<double> s(T), acc(HS);  // one row's scores, then its output
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < NH; h++) {
                const float* q = qkv + ((size_t)b * T + t) * 3 * C + h * HS;
                double max = -INFINITY;
                for (int t2 = 0; t2 <= t; t2++) {
                    const float* k = qkv + ((size_t)b * T + t2) * 3 * C + C + h * HS;
                    double dot = 0.0;
                    for (int i = 0; i < HS; i++) {
                        dot += (double)q[i] * k[i];
                    }
                    s[t2] = dot * scale;
                    max = std::max(max, s[t2]);
                }
                double sum = 0.0;
                for (int t2 = 0; t2 <= t; t2++) {
                    s[t2] = exp(s[t2] - max);
                    sum += s[t2];
                }
                std::fill(acc.begin(), acc.end(), 0.0);
                for (int t2 = 0; t2 <= t; t2++) {
                    const float* v = qkv + ((size_t)b * T + t2) * 3 * C + 2 * C + h * HS;
                    for (int i = 0; i < HS; i++) {
                        acc[i] += s[t2] * v[i];
                    }
                }
                float* o = out + ((size_t)b * T + t) * C + h * HS;
                for (int i = 0; i < HS; i++) {
                    o[i] = (float)(acc[i] / sum);
                }
                lse[((size_t)b * T + t) * NH + h] = (float)(max + log(sum));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Kernels. All take out: (B, T, C); lse: (B, T, NH); qkv: (B, T, 3C).

// Version 1: the formula as three kernels, one thread per element of each result, with the scores and the
// probabilities stored as (B, NH, T, T) matrices (only t2 <= t is ever written or read). Simple, and it moves a
// lot: 400 MB per matrix at GPT-2 124M, written and read back twice, where q, k, v and out are 100 MB in all. Each
// score thread also reads whole q and k rows on its own: neighbouring threads read rows 3C floats apart.
__global__ void attention_scores1(float* preatt, const float* qkv, int B, int T, int C, int NH) {
    // preatt: (B, NH, T, T); thread (b, h, t, t2) computes preatt[b][h][t][t2]
    const size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * NH * T * T) {
        return;
    }
    const int t2 = idx % T;
    const int t = idx / T % T;
    const int h = idx / T / T % NH;
    const int b = idx / T / T / NH;
    if (t2 > t) {
        return;
    }
    const int HS = C / NH;
    const float* q = qkv + ((size_t)b * T + t) * 3 * C + h * HS;
    const float* k = qkv + ((size_t)b * T + t2) * 3 * C + C + h * HS;
    float dot = 0.0f;
    for (int i = 0; i < HS; i++) {
        dot += q[i] * k[i];
    }
    preatt[idx] = dot / sqrtf((float)HS);
}

__global__ void attention_softmax1(float* att, float* lse, const float* preatt, int B, int T, int NH) {
    // att: (B, NH, T, T), lse: (B, T, NH); preatt: (B, NH, T, T); thread (b, h, t) normalises row t of head h
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * NH * T) {
        return;
    }
    const int t = idx % T;
    const int h = idx / T % NH;
    const int b = idx / T / NH;
    const float* s = preatt + (size_t)idx * T;
    float* p = att + (size_t)idx * T;
    float max = -INFINITY;
    for (int t2 = 0; t2 <= t; t2++) {
        max = fmaxf(max, s[t2]);
    }
    float sum = 0.0f;
    for (int t2 = 0; t2 <= t; t2++) {
        p[t2] = expf(s[t2] - max);
        sum += p[t2];
    }
    for (int t2 = 0; t2 <= t; t2++) {
        p[t2] /= sum;
    }
    lse[((size_t)b * T + t) * NH + h] = max + logf(sum);
}

__global__ void attention_values1(float* out, const float* att, const float* qkv, int B, int T, int C, int NH) {
    // out: (B, T, C); att: (B, NH, T, T); thread (b, t, c) computes out[b][t][c], channel c of head c / HS
    const size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * T * C) {
        return;
    }
    const int c = idx % C;
    const int t = idx / C % T;
    const int b = idx / C / T;
    const int h = c / (C / NH);
    const float* p = att + (((size_t)b * NH + h) * T + t) * T;
    float acc = 0.0f;
    for (int t2 = 0; t2 <= t; t2++) {
        acc += p[t2] * qkv[((size_t)b * T + t2) * 3 * C + 2 * C + c];
    }
    out[idx] = acc;
}

// Version 2: one warp per (b, t, h) row and nothing stored: the scores are recomputed when needed. A first pass over
// the keys finds the max and the sum of exp (online: the sum is rescaled when the max grows), a second recomputes
// each score and adds p v[t2] into out. Every dot product is a warp reduction over HS (lanes stride the channels,
// coalesced). No (T, T) traffic at all, but k is read twice and v once per (query, key) pair, from L1/L2, and out
// is read and written once per pair. This is the mainline kernel.
__global__ void attention_forward2(float* out, float* lse, const float* qkv, int B, int T, int C, int NH) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;  // (b, t, h) = (row / NH / T, ...)
    if (row >= B * T * NH) {
        return;  // the whole warp: row is the same for its 32 lanes
    }
    const int h = row % NH;
    const int bt = row / NH;
    const int t = bt % T;
    const int HS = C / NH;
    const float scale = 1.0f / sqrtf((float)HS);
    // row t2 of this batch at head h: head + t2 * 3C, k at +C, v at +2C
    const float* head = qkv + (size_t)(bt - t) * 3 * C + h * HS;
    const float* q = head + (size_t)t * 3 * C;

    float max = -INFINITY;
    float sum = 0.0f;  // sum of exp(s - max) over the keys seen so far
    for (int t2 = 0; t2 <= t; t2++) {
        const float* k = head + (size_t)t2 * 3 * C + C;
        float dot = 0.0f;
        for (int i = lane; i < HS; i += WARP_SIZE) {
            dot += q[i] * k[i];
        }
        const float s = warp_reduce_sum(dot) * scale;
        const float new_max = fmaxf(max, s);
        sum = sum * expf(max - new_max) + expf(s - new_max);
        max = new_max;
    }
    float* o = out + (size_t)bt * C + h * HS;
    for (int i = lane; i < HS; i += WARP_SIZE) {
        o[i] = 0.0f;
    }
    for (int t2 = 0; t2 <= t; t2++) {
        const float* k = head + (size_t)t2 * 3 * C + C;
        const float* v = head + (size_t)t2 * 3 * C + 2 * C;
        float dot = 0.0f;
        for (int i = lane; i < HS; i += WARP_SIZE) {
            dot += q[i] * k[i];
        }
        const float p = expf(warp_reduce_sum(dot) * scale - max) / sum;
        for (int i = lane; i < HS; i += WARP_SIZE) {
            o[i] += p * v[i];
        }
    }
    if (lane == 0) {
        lse[row] = max + logf(sum);
    }
}

// Version 3: one pass over the keys (online softmax, as in flash attention): the output accumulates under the running
// max and is rescaled by exp(old max - new max) when the max grows, so each score is computed once. q and the
// output live in registers (lane l holds channels l, l + 32, ...: HS / 32 floats each); out is written once at the
// end. Per (query, key) pair: k and v read once each (v2: k twice, v once, out read and written), one reduction.
template <int HS>
__global__ void attention_forward3(float* out, float* lse, const float* qkv, int B, int T, int C, int NH) {
    static_assert(HS % WARP_SIZE == 0, "lanes own HS / 32 channels each");
    constexpr int PER_LANE = HS / WARP_SIZE;
    const int lane = threadIdx.x % WARP_SIZE;
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;
    if (row >= B * T * NH) {
        return;  // the whole warp
    }
    const int h = row % NH;
    const int bt = row / NH;
    const int t = bt % T;
    const float* head = qkv + (size_t)(bt - t) * 3 * C + h * HS;
    float q[PER_LANE], o[PER_LANE];
    for (int j = 0; j < PER_LANE; j++) {
        q[j] = head[(size_t)t * 3 * C + lane + j * WARP_SIZE] / sqrtf((float)HS);  // scaled once, not per key
        o[j] = 0.0f;
    }
    float max = -INFINITY;
    float sum = 0.0f;
    for (int t2 = 0; t2 <= t; t2++) {
        const float* k = head + (size_t)t2 * 3 * C + C;
        const float* v = head + (size_t)t2 * 3 * C + 2 * C;
        float dot = 0.0f;
        for (int j = 0; j < PER_LANE; j++) {
            dot += q[j] * k[lane + j * WARP_SIZE];
        }
        const float s = warp_reduce_sum(dot);
        const float new_max = fmaxf(max, s);
        const float rescale = expf(max - new_max);  // 0 at the first key, where max is -inf
        const float p = expf(s - new_max);
        sum = sum * rescale + p;
        for (int j = 0; j < PER_LANE; j++) {
            o[j] = o[j] * rescale + p * v[lane + j * WARP_SIZE];
        }
        max = new_max;
    }
    float* out_row = out + (size_t)bt * C + h * HS;
    for (int j = 0; j < PER_LANE; j++) {
        out_row[lane + j * WARP_SIZE] = o[j] / sum;
    }
    if (lane == 0) {
        lse[row] = max + logf(sum);
    }
}

// Keys per tile in versions 4 and 5: one per lane.
#define KEYS_PER_TILE WARP_SIZE
// Version 4: queries per block, one per warp.
#define QUERIES4 8

// Version 4: a block takes QUERIES4 consecutive queries of one (b, h), one per warp, and walks the keys in tiles of
// 32 that its threads load together into shared memory: each k and v row comes from L2 once per block instead of
// once per query (8x less L2 traffic than version 3). Within a tile the roles turn: lane j computes the whole score
// of key j by itself, so a tile costs two warp reductions (its max and its sum) instead of one per key, and
// the online softmax rescales once per tile. p reaches the lanes that own the output channels by shuffles.
// k rows in shared memory are padded to HS + 1 floats so that the 32 lanes reading 32 rows hit 32 different banks.
template <int HS>
__global__ void attention_forward4(float* out, float* lse, const float* qkv, int B, int T, int C, int NH) {
    constexpr int PER_LANE = HS / WARP_SIZE;
    __shared__ float q_s[QUERIES4][HS];             // the block's queries, pre-scaled by 1 / sqrt(HS)
    __shared__ float k_s[KEYS_PER_TILE][HS + 1];    // the tile's keys
    __shared__ float v_s[KEYS_PER_TILE][HS];        // the tile's values
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int b = blockIdx.y / NH;
    const int h = blockIdx.y % NH;
    const int t = blockIdx.x * QUERIES4 + warp;  // this warp's query
    const bool has_query = t < T;                // the last block may have fewer than QUERIES4
    const int last_key = min((int)(blockIdx.x + 1) * QUERIES4, T) - 1;  // the block's last query sees up to here
    const float* head = qkv + (size_t)b * T * 3 * C + h * HS;
    for (int i = lane; i < HS; i += WARP_SIZE) {
        q_s[warp][i] = has_query ? head[(size_t)t * 3 * C + i] / sqrtf((float)HS) : 0.0f;
    }
    float max = -INFINITY;
    float sum = 0.0f;
    float o[PER_LANE] = {};
    for (int t0 = 0; t0 <= last_key; t0 += KEYS_PER_TILE) {
        __syncthreads();  // the previous tile is used up (and, the first time, q_s is written)
        for (int idx = threadIdx.x; idx < KEYS_PER_TILE * HS; idx += blockDim.x) {
            const int j = idx / HS;
            const int i = idx % HS;
            const float* kv = head + (size_t)(t0 + j) * 3 * C;
            const bool needed = t0 + j <= last_key;
            k_s[j][i] = needed ? kv[C + i] : 0.0f;
            v_s[j][i] = needed ? kv[2 * C + i] : 0.0f;
        }
        __syncthreads();
        if (has_query && t0 <= t) {  // the same for the whole warp
            float s = -INFINITY;     // lane j: the score of key t0 + j, -inf after t
            if (t0 + lane <= t) {
                s = 0.0f;
                for (int i = 0; i < HS; i++) {
                    s += q_s[warp][i] * k_s[lane][i];
                }
            }
            const float new_max = fmaxf(max, warp_reduce_max(s));  // finite: key t0 <= t is in the tile
            const float rescale = expf(max - new_max);
            const float p = expf(s - new_max);
            sum = sum * rescale + warp_reduce_sum(p);
            for (int jj = 0; jj < PER_LANE; jj++) {
                o[jj] *= rescale;
            }
            const int keys = min(KEYS_PER_TILE, t - t0 + 1);
            for (int j = 0; j < keys; j++) {
                const float p_j = __shfl_sync(FULL_MASK, p, j);
                for (int jj = 0; jj < PER_LANE; jj++) {
                    o[jj] += p_j * v_s[j][lane + jj * WARP_SIZE];
                }
            }
            max = new_max;
        }
    }
    if (has_query) {
        float* out_row = out + ((size_t)b * T + t) * C + h * HS;
        for (int jj = 0; jj < PER_LANE; jj++) {
            out_row[lane + jj * WARP_SIZE] = o[jj] / sum;
        }
        if (lane == 0) {
            lse[((size_t)b * T + t) * NH + h] = max + logf(sum);
        }
    }
}

// Version 5: queries per warp, and per block (8 warps).
#define QUERIES_PER_WARP5 4
#define QUERIES5 (8 * QUERIES_PER_WARP5)

// Version 5: each warp takes 4 consecutive queries (32 per block), which pays twice. Every k element read from
// shared memory feeds 4 FMAs instead of 1 (register blocking: 5 shared loads per 4 FMAs instead of 2 per 1), and
// every k and v row is fetched from L2 once per 32 queries instead of 8. And causal blocks are unequal (the last
// query tile reads T / 32 key tiles, the first one), so the grid is laid out (b*h, query tile) and the tiles run
// from the last to the first: the long blocks start first and the short ones fill the end instead of a few long
// ones running alone.
template <int HS>
__global__ void attention_forward5(float* out, float* lse, const float* qkv, int B, int T, int C, int NH) {
    constexpr int PER_LANE = HS / WARP_SIZE;
    constexpr int R = QUERIES_PER_WARP5;
    __shared__ float q_s[QUERIES5][HS];
    __shared__ float k_s[KEYS_PER_TILE][HS + 1];
    __shared__ float v_s[KEYS_PER_TILE][HS];
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int b = blockIdx.x / NH;
    const int h = blockIdx.x % NH;
    const int first = (gridDim.y - 1 - blockIdx.y) * QUERIES5;  // the block's first query: last tiles first
    const int last_key = min(first + QUERIES5, T) - 1;
    const int t_first = first + warp * R;                        // this warp's queries: t_first .. t_first + R - 1
    const int t_last = min(t_first + R, T) - 1;             // its last real one
    const float* head = qkv + (size_t)b * T * 3 * C + h * HS;
    for (int idx = threadIdx.x; idx < QUERIES5 * HS; idx += blockDim.x) {
        const int r = idx / HS;
        const int i = idx % HS;
        q_s[r][i] = first + r < T ? head[(size_t)(first + r) * 3 * C + i] / sqrtf((float)HS) : 0.0f;
    }
    float max[R], sum[R], o[R][PER_LANE];
    for (int r = 0; r < R; r++) {
        max[r] = -INFINITY;
        sum[r] = 0.0f;
        for (int jj = 0; jj < PER_LANE; jj++) {
            o[r][jj] = 0.0f;
        }
    }
    for (int t0 = 0; t0 <= last_key; t0 += KEYS_PER_TILE) {
        __syncthreads();
        for (int idx = threadIdx.x; idx < KEYS_PER_TILE * HS; idx += blockDim.x) {
            const int j = idx / HS;
            const int i = idx % HS;
            const float* kv = head + (size_t)(t0 + j) * 3 * C;
            const bool needed = t0 + j <= last_key;
            k_s[j][i] = needed ? kv[C + i] : 0.0f;
            v_s[j][i] = needed ? kv[2 * C + i] : 0.0f;
        }
        __syncthreads();
        // The same for the whole warp. Tiles start at multiples of 32 and a warp's queries at multiples of 4, so a
        // tile this warp needs holds key t0 <= t for every one of its queries: no row of the tile is all masked.
        if (t_first <= t_last && t0 <= t_last) {
            float s[R] = {};
            for (int i = 0; i < HS; i++) {
                const float k = k_s[lane][i];
                for (int r = 0; r < R; r++) {
                    s[r] += q_s[warp * R + r][i] * k;
                }
            }
            float p[R];
            for (int r = 0; r < R; r++) {
                const int t = min(t_first + r, t_last);  // a query past T computes a copy of the last one
                if (t0 + lane > t) {
                    s[r] = -INFINITY;
                }
                const float new_max = fmaxf(max[r], warp_reduce_max(s[r]));
                const float rescale = expf(max[r] - new_max);
                p[r] = expf(s[r] - new_max);
                sum[r] = sum[r] * rescale + warp_reduce_sum(p[r]);
                for (int jj = 0; jj < PER_LANE; jj++) {
                    o[r][jj] *= rescale;
                }
                max[r] = new_max;
            }
            const int keys = min(KEYS_PER_TILE, t_last - t0 + 1);
            for (int j = 0; j < keys; j++) {
                float v[PER_LANE];
                for (int jj = 0; jj < PER_LANE; jj++) {
                    v[jj] = v_s[j][lane + jj * WARP_SIZE];
                }
                for (int r = 0; r < R; r++) {
                    const float p_j = __shfl_sync(FULL_MASK, p[r], j);
                    for (int jj = 0; jj < PER_LANE; jj++) {
                        o[r][jj] += p_j * v[jj];
                    }
                }
            }
        }
    }
    for (int r = 0; r < R; r++) {
        const int t = t_first + r;
        if (t < T) {
            float* out_row = out + ((size_t)b * T + t) * C + h * HS;
            for (int jj = 0; jj < PER_LANE; jj++) {
                out_row[lane + jj * WARP_SIZE] = o[r][jj] / sum[r];
            }
            if (lane == 0) {
                lse[((size_t)b * T + t) * NH + h] = max[r] + logf(sum[r]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Launchers: the grid and block of each version. preatt, att: (B, NH, T, T) scratch for version 1.

#define BLOCK 256

static void attention_forward(int version, float* out, float* lse, float* preatt, float* att, const float* qkv,
                              int B, int T, int C, int NH) {
    const int rows_per_block = BLOCK / WARP_SIZE;
    switch (version) {
    case 1:
        LAUNCH(attention_scores1, (unsigned)CEIL_DIV((size_t)B * NH * T * T, BLOCK), BLOCK, 0, preatt, qkv, B, T, C,
               NH);
        LAUNCH(attention_softmax1, CEIL_DIV(B * NH * T, BLOCK), BLOCK, 0, att, lse, preatt, B, T, NH);
        LAUNCH(attention_values1, (unsigned)CEIL_DIV((size_t)B * T * C, BLOCK), BLOCK, 0, out, att, qkv, B, T, C, NH);
        break;
    case 2:
        LAUNCH(attention_forward2, CEIL_DIV(B * T * NH, rows_per_block), BLOCK, 0, out, lse, qkv, B, T, C, NH);
        break;
    case 3:
        LAUNCH(attention_forward3<HS_FIXED>, CEIL_DIV(B * T * NH, rows_per_block), BLOCK, 0, out, lse, qkv, B, T, C,
               NH);
        break;
    case 4:
        LAUNCH(attention_forward4<HS_FIXED>, dim3(CEIL_DIV(T, QUERIES4), B * NH), QUERIES4 * WARP_SIZE, 0, out, lse,
               qkv, B, T, C, NH);
        break;
    case 5:
        LAUNCH(attention_forward5<HS_FIXED>, dim3(B * NH, CEIL_DIV(T, QUERIES5)),
               QUERIES5 / QUERIES_PER_WARP5 * WARP_SIZE, 0, out, lse, qkv, B, T, C, NH);
        break;
    }
}
#define NUM_VERSIONS 5

// ---------------------------------------------------------------------------------------------------------------

int main(int argc, char** argv) {
#ifdef LLMRS_EMU
    // Each CUDA thread costs ~65 ns on the emulator. T = 75 is a multiple of none of the tilings (8 and 32 queries
    // per block, 4 per warp, 32 keys per tile), so every partial-tile guard runs.
    const int B = 2, T = 75, C = 128, NH = 2;
#else
    const int B = 8, T = 1024, C = 768, NH = 12;  // GPT-2 124M
#endif
    const int only = selected_version(argc, argv, NUM_VERSIONS);
    if (C % NH != 0 || C / NH != HS_FIXED) {
        fprintf(stderr, "versions 3 to 5 are compiled for HS = %d; C / NH is %d / %d\n", HS_FIXED, C, NH);
        return 2;
    }
    printf("attention_forward: B %d, T %d, C %d, NH %d%s\n", B, T, C, NH,
           ON_EMULATOR ? " (on the emulator: no timing)" : "");

    Rng rng(42);
    // qkv: (B, T, 3C). Scores then spread with a standard deviation of ~1.3, so the softmax is far from uniform.
    const std::vector<float> qkv = random_floats(rng, (size_t)B * T * 3 * C, -2.0f, 2.0f);
    std::vector<float> out_cpu((size_t)B * T * C), lse_cpu((size_t)B * T * NH);
    attention_forward_cpu(out_cpu.data(), lse_cpu.data(), qkv.data(), B, T, C, NH);

    float* d_qkv = to_device(qkv);
    float* d_out = device_alloc<float>((size_t)B * T * C);
    float* d_lse = device_alloc<float>((size_t)B * T * NH);
    float* d_preatt = device_alloc<float>((size_t)B * NH * T * T);
    float* d_att = device_alloc<float>((size_t)B * NH * T * T);

    // Tolerance: out is a weighted mean of values in [-2, 2]; fp32 sums over T keys in another order than the
    // (double) reference differ by ~1e-6 of that.
    const float atol = 1e-5f, rtol = 1e-5f;
    const double gflop = 4.0 * (C / NH) * ((double)B * NH * T * (T + 1) / 2) * 1e-9;
    const int repeats = 10;
    int failed = 0, ran = 0;
    for (int version = 1; version <= NUM_VERSIONS; version++) {
        if (only != 0 && version != only) {
            continue;
        }
        printf("version %d\n", version);
        cudaCheck(cudaMemset(d_out, 0xff, (size_t)B * T * C * sizeof(float)));
        cudaCheck(cudaMemset(d_lse, 0xff, (size_t)B * T * NH * sizeof(float)));
        attention_forward(version, d_out, d_lse, d_preatt, d_att, d_qkv, B, T, C, NH);
        bool ok = validate("out", d_out, out_cpu.data(), (size_t)B * T * C, atol, rtol);
        ok &= validate("lse", d_lse, lse_cpu.data(), (size_t)B * T * NH, atol, rtol);
        failed += !ok;
        ran++;
        const float ms = time_ms(
            repeats, [] {}, [&] { attention_forward(version, d_out, d_lse, d_preatt, d_att, d_qkv, B, T, C, NH); });
        print_time(ms, gflop, "GFLOP/s");
    }
    cudaCheck(cudaFree(d_qkv));
    cudaCheck(cudaFree(d_out));
    cudaCheck(cudaFree(d_lse));
    cudaCheck(cudaFree(d_preatt));
    cudaCheck(cudaFree(d_att));
    return report("attention_forward", failed, ran);
}
