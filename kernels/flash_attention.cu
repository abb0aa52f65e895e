// Flash attention: causal multi-head self-attention in tiles, with the inputs, outputs and arithmetic of
// kernels/attention.cu and src/cpu/attention.rs (out and lse from qkv; dqkv accumulated), and no (T, T) buffer.
//
// Algorithm. The T positions of one (b, h) are cut into tiles of TILE = 32. forward: a block owns one query tile
// and walks the key tiles 0..=its own (causal) through shared memory; each query row keeps a running max m, a
// running sum l of exp(s - m) and an output accumulator o, both rescaled by exp(m_old - m_new) when the max grows
// (the online softmax); at the end out = o / l and lse = m + log l. backward (flash-attention-2): probabilities are
// recomputed from the saved lse, p = exp(s - lse), and with D = dout · out per query row, ds = p (dout · v - D) /
// sqrt(HS). One launch holds two kinds of blocks that write disjoint parts of dqkv: a key block (blockIdx.z = 0)
// owns a key tile and walks the query tiles from its own to the last, accumulating dk and dv; a query block
// (blockIdx.z = 1) owns a query tile and walks the key tiles 0..=its own, accumulating dq. No float is written by
// two blocks, so there are no atomics and results are deterministic; the price is that scores and dout · v are
// computed twice (7 tile products instead of the 5 of flash-attention-2 with atomic dq).
//
// Thread mapping. 4 warps per block; warp w owns rows w, w + 4, ..., w + 28 of the block's tile (8 rows,
// interleaved so the masked half of the diagonal tile is shared evenly). Scores: lane j computes the scores of its
// warp's 8 rows against position j of the tile being walked, so each float of that tile read from shared memory
// serves 8 rows. Accumulators (o, dq, dk, dv) live in registers: lane l holds channels l and l + 32 of each of its
// warp's rows, hence HS <= FLASH_MAX_HS = 64 (src/gpu/flash_attention.rs refuses more). A tile read row-per-lane is
// padded to HS + 1 floats a row so the 32 lanes hit 32 banks (for even HS).
//
// Global tensors are floatX (q, k, v, out, dout, dqkv; lse is float); tiles are widened to float as they are
// loaded into shared memory and all arithmetic is float, so a bf16 output is rounded once, as it is stored.
//
// Elements moved per call (reads of a tile by the blocks of one (b, h) mostly hit L2): forward reads q once and
// k, v about T / (2 TILE) times each, ~(1 + T / TILE) B*T*C, and writes B*T*C + B*T*NH. backward: key blocks read
// k, v once and q, dout, out about T / (2 TILE) times each, query blocks q, dout, out once and k, v about
// T / (2 TILE) times, ~(2.5 T / TILE + 5) B*T*C, plus dqkv read and written once (3 B*T*C each way). The clear
// version reads ~1.5 T B*T*C (forward) and ~2.5 T B*T*C (backward).
#include "common.cuh"

// Positions per tile, for queries and keys alike: one per lane when a warp computes scores.
#define TILE WARP_SIZE
// Warps per block; warp w owns rows w, w + FLASH_WARPS, ... of the block's tile.
#define FLASH_WARPS 4
#define FLASH_THREADS (FLASH_WARPS * WARP_SIZE)
#define ROWS_PER_WARP (TILE / FLASH_WARPS)
// The largest head size: each lane accumulates CHANNELS_PER_LANE channels of each of its rows in registers.
#define FLASH_MAX_HS 64
#define CHANNELS_PER_LANE (FLASH_MAX_HS / WARP_SIZE)
// Loops over ROWS_PER_WARP and CHANNELS_PER_LANE have constant trip counts: nvcc unrolls them and keeps the arrays
// they index in registers (ptxas reports 0 bytes of stack frame).

// The row of the block's tile that warp `warp` holds as its r-th row.
static __device__ __forceinline__ int warp_row(int warp, int r) {
    return warp + r * FLASH_WARPS;
}

// dst (TILE, ld) = rows t0 .. t0 + TILE - 1 of the HS channels at src, whose rows are `stride` floats apart. Rows
// at or past T become zeros, so lanes past the end compute on zeros, never on shared memory nobody wrote.
// Every thread of the block takes part; the caller synchronises.
static __device__ void load_tile(float* dst, int ld, const floatX* src, int stride, int t0, int T, int HS) {
    for (int e = threadIdx.x; e < TILE * HS; e += blockDim.x) {
        const int r = e / HS;
        const int c = e % HS;
        dst[r * ld + c] = t0 + r < T ? to_float(src[(size_t)(t0 + r) * stride + c]) : 0.0f;
    }
}

// out: (B, T, C); lse: (B, T, NH); qkv: (B, T, 3C) with q, k, v at channel offsets 0, C, 2C. HS = C / NH <= 64.
// grid: (CEIL_DIV(T, TILE), B*NH), block: FLASH_THREADS, dynamic shared memory: (3 TILE HS + TILE + TILE^2) floats.
// Block (x, y) owns query tile CEIL_DIV(T, TILE) - 1 - x (the longest walks start first) of (b, h) = (y / NH, y % NH).
extern "C" __global__ void __launch_bounds__(FLASH_THREADS)
    flash_attention_forward(floatX* out, float* lse, const floatX* __restrict__ qkv, int B, int T, int C, int NH) {
    DYNAMIC_SHARED(float, smem);
    const int HS = C / NH;
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int qt = gridDim.x - 1 - blockIdx.x;
    const int q0 = qt * TILE;
    const int b = blockIdx.y / NH;
    const int h = blockIdx.y % NH;
    const float scale = 1.0f / sqrtf((float)HS);
    // q of position 0 of batch b at head h; k at +C, v at +2C; positions 3C apart.
    const floatX* q_g = qkv + (size_t)b * T * 3 * C + h * HS;
    float* q_s = smem;                  // (TILE, HS): the block's queries, read by a whole warp at once
    float* k_s = q_s + TILE * HS;       // (TILE, HS + 1): the key tile, row j read by lane j
    float* v_s = k_s + TILE * (HS + 1); // (TILE, HS): the value tile, channel c read by lane c % 32
    float* p_s = v_s + TILE * HS;       // (TILE, TILE): p of query row r against key j at r * TILE + j

    load_tile(q_s, HS, q_g, 3 * C, q0, T, HS);
    float o[ROWS_PER_WARP][CHANNELS_PER_LANE];
    float m[ROWS_PER_WARP];  // the row's running max, the same in every lane
    float l[ROWS_PER_WARP];  // this lane's share of the row's sum of exp(s - m): its keys only
    for (int r = 0; r < ROWS_PER_WARP; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        for (int i = 0; i < CHANNELS_PER_LANE; i++) {
            o[r][i] = 0.0f;
        }
    }
    for (int kt = 0; kt <= qt; kt++) {
        const int k0 = kt * TILE;
        __syncthreads();  // every warp is done with the previous key tile
        load_tile(k_s, HS + 1, q_g + C, 3 * C, k0, T, HS);
        load_tile(v_s, HS, q_g + 2 * C, 3 * C, k0, T, HS);
        __syncthreads();

        // Scores of the warp's rows against key k0 + lane.
        float s[ROWS_PER_WARP];
        for (int r = 0; r < ROWS_PER_WARP; r++) {
            s[r] = 0.0f;
        }
        for (int c = 0; c < HS; c++) {
            const float k = k_s[lane * (HS + 1) + c];
            for (int r = 0; r < ROWS_PER_WARP; r++) {
                s[r] += q_s[warp_row(warp, r) * HS + c] * k;
            }
        }
        // Online softmax. Key 0 is visible to every row, so m is finite from the first tile on, and every later tile
        // the block walks holds a visible key for each row: exp(-inf - m) = 0 for masked keys and the rescale of the
        // first tile.
        for (int r = 0; r < ROWS_PER_WARP; r++) {
            const int row = warp_row(warp, r);
            const float score = k0 + lane <= q0 + row ? s[r] * scale : -INFINITY;
            const float m_new = fmaxf(m[r], warp_reduce_max(score));
            const float rescale = expf(m[r] - m_new);
            const float p = expf(score - m_new);
            l[r] = l[r] * rescale + p;
            for (int i = 0; i < CHANNELS_PER_LANE; i++) {
                o[r][i] *= rescale;
            }
            m[r] = m_new;
            p_s[row * TILE + lane] = p;
        }
        __syncwarp();  // the warp's p rows are written; only this warp reads them

        // o += p v, lane holding channels lane + 32 i.
        for (int j = 0; j < TILE; j++) {
            for (int i = 0; i < CHANNELS_PER_LANE; i++) {
                const int c = lane + i * WARP_SIZE;
                if (c < HS) {
                    const float v = v_s[j * HS + c];
                    for (int r = 0; r < ROWS_PER_WARP; r++) {
                        o[r][i] += p_s[warp_row(warp, r) * TILE + j] * v;
                    }
                }
            }
        }
    }

    for (int r = 0; r < ROWS_PER_WARP; r++) {
        const int t = q0 + warp_row(warp, r);
        const float sum = warp_reduce_sum(l[r]);
        if (t < T) {  // the whole warp: rows past T computed on zeros and are dropped
            floatX* o_g = out + ((size_t)b * T + t) * C + h * HS;
            for (int i = 0; i < CHANNELS_PER_LANE; i++) {
                const int c = lane + i * WARP_SIZE;
                if (c < HS) {
                    o_g[c] = from_float<floatX>(o[r][i] / sum);
                }
            }
            if (lane == 0) {
                lse[((size_t)b * T + t) * NH + h] = m[r] + logf(sum);
            }
        }
    }
}

// The backward pass's view of one (b, h): where its rows start and how far apart they are.
struct Head {
    const floatX* q;     // q of position 0; k at +C, v at +2C; positions 3C apart
    const floatX* dout;  // dout of position 0; positions C apart
    const floatX* out;   // out of position 0; positions C apart
    const float* lse;    // lse of position 0; positions NH apart
    floatX* dq;          // dq of position 0; dk at +C, dv at +2C; positions 3C apart
    int T, C, NH, HS;
    float scale;
};

// The backward pass's shared memory, one layout for both kinds of block (floats): the block's own tile of two
// tensors, (TILE, HS) each, read by a whole warp at once; the walked tile of two tensors, (TILE, HS + 1) each, row j
// read by lane j; lse and D of the query tile in hand, TILE each; p and ds of the warp rows against the walked
// tile, (TILE, TILE) each (query blocks use no p). (4 TILE HS + 4 TILE + 2 TILE^2) floats in all.
struct BackwardShared {
    float *own_a, *own_b, *walked_a, *walked_b, *lse, *d, *p, *ds;
    __device__ BackwardShared(float* smem, int HS) {
        own_a = smem;
        own_b = own_a + TILE * HS;
        walked_a = own_b + TILE * HS;
        walked_b = walked_a + TILE * (HS + 1);
        lse = walked_b + TILE * (HS + 1);
        d = lse + TILE;
        p = d + TILE;
        ds = p + TILE * TILE;
    }
};

// lse_s, d_s (TILE) = lse and D = dout · out of query rows q0 .. q0 + TILE - 1, with dout already in g_s (TILE, ld);
// zeros past T. Every thread of the block takes part; the caller synchronises before and after.
static __device__ void load_lse_and_d(float* lse_s, float* d_s, const float* g_s, int ld, const Head& hd, int q0) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int i = threadIdx.x;
    if (i < TILE) {
        lse_s[i] = q0 + i < hd.T ? hd.lse[(size_t)(q0 + i) * hd.NH] : 0.0f;
    }
    for (int r = 0; r < ROWS_PER_WARP; r++) {
        const int row = warp_row(warp, r);
        float d = 0.0f;
        if (q0 + row < hd.T) {
            const floatX* o = hd.out + (size_t)(q0 + row) * hd.C;
            for (int c = lane; c < hd.HS; c += WARP_SIZE) {
                d += g_s[row * ld + c] * to_float(o[c]);
            }
        }
        d = warp_reduce_sum(d);
        if (lane == 0) {
            d_s[row] = d;
        }
    }
}

// A key block: dk, dv of keys k0 .. k0 + TILE - 1 from the query tiles qt = kt .. last. Own tiles: k, v; walked
// tiles: q, dout.
static __device__ void backward_key_tile(const Head& hd, const BackwardShared& sh, int kt) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int HS = hd.HS, C = hd.C, T = hd.T;
    const int k0 = kt * TILE;
    float* k_s = sh.own_a;
    float* v_s = sh.own_b;
    float* q_s = sh.walked_a;
    float* g_s = sh.walked_b;
    load_tile(k_s, HS, hd.q + C, 3 * C, k0, T, HS);
    load_tile(v_s, HS, hd.q + 2 * C, 3 * C, k0, T, HS);
    float dk[ROWS_PER_WARP][CHANNELS_PER_LANE];
    float dv[ROWS_PER_WARP][CHANNELS_PER_LANE];
    for (int r = 0; r < ROWS_PER_WARP; r++) {
        for (int i = 0; i < CHANNELS_PER_LANE; i++) {
            dk[r][i] = 0.0f;
            dv[r][i] = 0.0f;
        }
    }
    for (int qt = kt; qt * TILE < T; qt++) {
        const int q0 = qt * TILE;
        __syncthreads();  // every warp is done with the previous query tile
        load_tile(q_s, HS + 1, hd.q, 3 * C, q0, T, HS);
        load_tile(g_s, HS + 1, hd.dout, C, q0, T, HS);
        __syncthreads();
        load_lse_and_d(sh.lse, sh.d, g_s, HS + 1, hd, q0);
        __syncthreads();

        // Scores and dout · v of the warp's keys (rows) against query q0 + lane.
        float s[ROWS_PER_WARP], dp[ROWS_PER_WARP];
        for (int r = 0; r < ROWS_PER_WARP; r++) {
            s[r] = 0.0f;
            dp[r] = 0.0f;
        }
        for (int c = 0; c < HS; c++) {
            const float q = q_s[lane * (HS + 1) + c];
            const float g = g_s[lane * (HS + 1) + c];
            for (int r = 0; r < ROWS_PER_WARP; r++) {
                s[r] += q * k_s[warp_row(warp, r) * HS + c];
                dp[r] += g * v_s[warp_row(warp, r) * HS + c];
            }
        }
        const float lse_q = sh.lse[lane];
        const float d_q = sh.d[lane];
        for (int r = 0; r < ROWS_PER_WARP; r++) {
            const int row = warp_row(warp, r);
            const bool visible = q0 + lane < T && q0 + lane >= k0 + row;
            const float p = visible ? expf(s[r] * hd.scale - lse_q) : 0.0f;
            sh.p[row * TILE + lane] = p;
            sh.ds[row * TILE + lane] = p * (dp[r] - d_q) * hd.scale;
        }
        __syncwarp();  // the warp's p and ds rows are written; only this warp reads them

        // dv += p dout, dk += ds q, lane holding channels lane + 32 i.
        for (int j = 0; j < TILE; j++) {
            for (int i = 0; i < CHANNELS_PER_LANE; i++) {
                const int c = lane + i * WARP_SIZE;
                if (c < HS) {
                    const float q = q_s[j * (HS + 1) + c];
                    const float g = g_s[j * (HS + 1) + c];
                    for (int r = 0; r < ROWS_PER_WARP; r++) {
                        const int row = warp_row(warp, r);
                        dv[r][i] += sh.p[row * TILE + j] * g;
                        dk[r][i] += sh.ds[row * TILE + j] * q;
                    }
                }
            }
        }
    }

    for (int r = 0; r < ROWS_PER_WARP; r++) {
        const int t = k0 + warp_row(warp, r);
        if (t < T) {  // the whole warp
            floatX* dk_g = hd.dq + (size_t)t * 3 * C + C;
            floatX* dv_g = dk_g + C;
            for (int i = 0; i < CHANNELS_PER_LANE; i++) {
                const int c = lane + i * WARP_SIZE;
                if (c < HS) {
                    dk_g[c] = from_float<floatX>(to_float(dk_g[c]) + dk[r][i]);
                    dv_g[c] = from_float<floatX>(to_float(dv_g[c]) + dv[r][i]);
                }
            }
        }
    }
}

// A query block: dq of queries q0 .. q0 + TILE - 1 from the key tiles 0 .. qt. Own tiles: q, dout; walked tiles:
// k, v.
static __device__ void backward_query_tile(const Head& hd, const BackwardShared& sh, int qt) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int HS = hd.HS, C = hd.C, T = hd.T;
    const int q0 = qt * TILE;
    float* q_s = sh.own_a;
    float* g_s = sh.own_b;
    float* k_s = sh.walked_a;
    float* v_s = sh.walked_b;
    load_tile(q_s, HS, hd.q, 3 * C, q0, T, HS);
    load_tile(g_s, HS, hd.dout, C, q0, T, HS);
    __syncthreads();
    load_lse_and_d(sh.lse, sh.d, g_s, HS, hd, q0);
    float dq[ROWS_PER_WARP][CHANNELS_PER_LANE];
    for (int r = 0; r < ROWS_PER_WARP; r++) {
        for (int i = 0; i < CHANNELS_PER_LANE; i++) {
            dq[r][i] = 0.0f;
        }
    }
    for (int kt = 0; kt <= qt; kt++) {
        const int k0 = kt * TILE;
        __syncthreads();  // every warp is done with the previous key tile (and lse, D are written)
        load_tile(k_s, HS + 1, hd.q + C, 3 * C, k0, T, HS);
        load_tile(v_s, HS + 1, hd.q + 2 * C, 3 * C, k0, T, HS);
        __syncthreads();

        // Scores and dout · v of the warp's queries (rows) against key k0 + lane.
        float s[ROWS_PER_WARP], dp[ROWS_PER_WARP];
        for (int r = 0; r < ROWS_PER_WARP; r++) {
            s[r] = 0.0f;
            dp[r] = 0.0f;
        }
        for (int c = 0; c < HS; c++) {
            const float k = k_s[lane * (HS + 1) + c];
            const float v = v_s[lane * (HS + 1) + c];
            for (int r = 0; r < ROWS_PER_WARP; r++) {
                s[r] += q_s[warp_row(warp, r) * HS + c] * k;
                dp[r] += g_s[warp_row(warp, r) * HS + c] * v;
            }
        }
        // Rows past T see zeros (lse = D = 0, zero q and dout) and are never written.
        for (int r = 0; r < ROWS_PER_WARP; r++) {
            const int row = warp_row(warp, r);
            const float p = k0 + lane <= q0 + row ? expf(s[r] * hd.scale - sh.lse[row]) : 0.0f;
            sh.ds[row * TILE + lane] = p * (dp[r] - sh.d[row]) * hd.scale;
        }
        __syncwarp();  // the warp's ds rows are written; only this warp reads them

        // dq += ds k, lane holding channels lane + 32 i.
        for (int j = 0; j < TILE; j++) {
            for (int i = 0; i < CHANNELS_PER_LANE; i++) {
                const int c = lane + i * WARP_SIZE;
                if (c < HS) {
                    const float k = k_s[j * (HS + 1) + c];
                    for (int r = 0; r < ROWS_PER_WARP; r++) {
                        dq[r][i] += sh.ds[warp_row(warp, r) * TILE + j] * k;
                    }
                }
            }
        }
    }

    for (int r = 0; r < ROWS_PER_WARP; r++) {
        const int t = q0 + warp_row(warp, r);
        if (t < T) {  // the whole warp
            floatX* dq_g = hd.dq + (size_t)t * 3 * C;
            for (int i = 0; i < CHANNELS_PER_LANE; i++) {
                const int c = lane + i * WARP_SIZE;
                if (c < HS) {
                    dq_g[c] = from_float<floatX>(to_float(dq_g[c]) + dq[r][i]);
                }
            }
        }
    }
}

// dqkv: (B, T, 3C) accumulates; dout, out: (B, T, C); qkv: (B, T, 3C); lse: (B, T, NH). HS = C / NH <= 64.
// grid: (CEIL_DIV(T, TILE), B*NH, 2), block: FLASH_THREADS, dynamic shared memory: (4 TILE HS + 4 TILE + 2 TILE^2)
// floats. Block (x, y, 0) owns dk, dv of key tile x, block (x, y, 1) dq of query tile CEIL_DIV(T, TILE) - 1 - x (the
// longest walks start first), both of (b, h) = (y / NH, y % NH).
extern "C" __global__ void __launch_bounds__(FLASH_THREADS)
    flash_attention_backward(floatX* dqkv, const floatX* __restrict__ dout, const floatX* __restrict__ qkv,
                             const floatX* __restrict__ out, const float* __restrict__ lse, int B, int T, int C,
                             int NH) {
    DYNAMIC_SHARED(float, smem);
    const int b = blockIdx.y / NH;
    const int h = blockIdx.y % NH;
    Head hd;
    hd.T = T;
    hd.C = C;
    hd.NH = NH;
    hd.HS = C / NH;
    hd.scale = 1.0f / sqrtf((float)hd.HS);
    hd.q = qkv + (size_t)b * T * 3 * C + h * hd.HS;
    hd.dout = dout + (size_t)b * T * C + h * hd.HS;
    hd.out = out + (size_t)b * T * C + h * hd.HS;
    hd.lse = lse + (size_t)b * T * NH + h;
    hd.dq = dqkv + (size_t)b * T * 3 * C + h * hd.HS;
    const BackwardShared sh(smem, hd.HS);
    if (blockIdx.z == 0) {  // the whole block
        backward_key_tile(hd, sh, blockIdx.x);
    } else {
        backward_query_tile(hd, sh, gridDim.x - 1 - blockIdx.x);
    }
}
