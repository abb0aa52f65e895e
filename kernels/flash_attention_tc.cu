// Flash attention on tensor cores: the causal attention of kernels/flash_attention.cu (same inputs, outputs and
// layout: out and lse from qkv, dqkv accumulated; no (T, T) buffer, no atomics, deterministic), with every tile
// product done by WMMA on bf16 operands with float accumulation (m16n16k16, sm_80 and newer). The bf16 build only:
// in the fp32 build the entry points exist (build.rs compiles every file for both) but trap, and
// src/gpu/flash_attention_tc.rs refuses f32 tensors before launching. HS must be a multiple of 16, at most 64.
//
// Algorithm. A block owns a tile of OWN_ROWS = 64 positions of one (b, h), 16 rows per warp. forward: the block owns
// 64 queries and walks key tiles of FWD_KEYS = 64 up to its own (causal), staged in shared memory as bf16. Warp w
// computes S (16, 64) = Q_w K^T with its queries held in fragments, stores S to its float scratch, and there, one
// row at a time with lane j holding keys j and j + 32, runs the online softmax of flash_attention.cu (running max m,
// running sum l of exp(s - m) from the float p, accumulator o rescaled when m grows), writing p as bf16. Then
// P V (16, HS) goes through the same scratch and is added to o, which lives in registers in the SIMT layout (lane
// holds channels lane and lane + 32 of each row): WMMA leaves the element-to-lane mapping of an accumulator
// unspecified, so a per-row rescale can only be done outside the fragments. out = o / l, lse = m + log l.
// backward (flash-attention-2, p recomputed from lse, D = dout . out, ds = p (dp - D) / sqrt(HS)), one launch of
// two kinds of blocks writing disjoint parts of dqkv, as in flash_attention.cu: a key block (blockIdx.z = 0) owns 64
// keys and walks query tiles of BWD_WALK = 32 from its own to the last; warp w, its keys' k and v in fragments,
// computes S^T = K_w Q^T and dP^T = V_w dout^T (16, 32), turns them in its scratch into P^T and dS^T (bf16), and
// accumulates dV_w += P^T dout and dK_w += dS^T Q in accumulator fragments held across the walk (no rescale is
// needed there). A query block (blockIdx.z = 1) owns 64 queries and walks key tiles of 32 up to its own: S = Q_w
// K^T, dP = dout_w V^T, dS, dQ_w += dS K. Accumulators go to dqkv through the warp's scratch at the end. Seven tile
// products per (query, key) tile pair, S and dP being computed by both kinds of block.
//
// Precision: products of bf16 values are exact in float and summed in float; the bf16 roundings beyond the stored
// outputs are p (forward, and backward for dV) and ds (backward) as they enter a product, relative 2^-9 each; m, l,
// lse and D are float.
//
// Shared memory (bytes, ld = HS + 8 bf16 a row): forward 2 * 64 ld * 2 (k, v) + 4 warps * (16 * 68 * 4 float scratch
// + 16 * 72 * 2 bf16 p) = 44 KiB at HS = 64; backward 2 * 32 ld * 2 (walked tiles) + 2 * 64 * 4 (lse, D) + 4 warps *
// (2 * 16 * 36 * 4 float s, dp + 2 * 16 * 40 * 2 bf16 p, ds) = 37.5 KiB; both under the 48 KB a block gets without
// opting in. Every row is padded to a multiple of 16 bytes (wmma's ldm rule) and every tile starts on 32 bytes
// (wmma's pointer rule); the dynamic shared memory is the block's only shared memory, so it starts aligned.
//
// Elements moved per call (tiles re-read by the blocks of one (b, h) mostly hit L2): forward reads q once and k, v
// about T / 128 times each, ~(1 + T / 64) B*T*C, writes B*T*C + B*T*NH; backward: key blocks read k, v once and q,
// dout, out about T / 128 times, query blocks q, dout, out once and k, v about T / 128 times, ~(5 T / 128 + 5) B*T*C,
// plus dqkv read and written once (3 B*T*C each way): half of flash_attention.cu's traffic, its tiles being 32.
#include "common.cuh"
#include <assert.h>

// The tensor-core path: bf16 operands (the bf16 build) on sm_80 or newer, or the emulator's WMMA.
#if defined(LLMRS_BF16) && (defined(LLMRS_EMU) || __CUDA_ARCH__ >= 800)
#define FLASH_TC 1
#include <mma.h>
#endif

// Warps per block; warp w owns rows 16 w .. 16 w + 15 of the block's tile.
#define TC_WARPS 4
#define TC_THREADS (TC_WARPS * WARP_SIZE)
// m = n = k of every WMMA tile product, and the rows a warp owns.
#define WMMA_DIM 16
// Positions a block owns: queries (forward, query blocks) or keys (key blocks).
#define OWN_ROWS (TC_WARPS * WMMA_DIM)
// Keys per tile the forward pass walks, and positions per tile the backward pass walks.
#define FWD_KEYS 64
#define BWD_WALK 32
static_assert(FWD_KEYS == OWN_ROWS, "the forward pass's diagonal key tile is the block's own query tile");
static_assert(FWD_KEYS == 2 * WARP_SIZE, "a lane holds keys lane and lane + 32 of a forward key tile");
static_assert(BWD_WALK == WARP_SIZE, "a lane holds position lane of a backward walked tile");
// The largest head size, in k steps of WMMA_DIM channels: loops over MAX_K_STEPS have constant trip counts, so nvcc
// unrolls them and keeps the fragment arrays they index in registers; steps past HS are skipped.
#define TC_MAX_HS 64
#define MAX_K_STEPS (TC_MAX_HS / WMMA_DIM)
// Padding per shared row, in elements: keeps rows a multiple of 16 bytes (wmma's ldm rule) and staggers banks.
#define BF16_PAD 8
#define F32_PAD 4
// Leading dimensions of the per-warp buffers: forward scratch (16, SC_LD) float and p (16, FP_LD) bf16; backward s, dp
// (16, BS_LD) float and p, ds (16, BP_LD) bf16.
#define SC_LD (FWD_KEYS + F32_PAD)
#define FP_LD (FWD_KEYS + BF16_PAD)
#define BS_LD (BWD_WALK + F32_PAD)
#define BP_LD (BWD_WALK + BF16_PAD)

// The dynamic shared memory, declared with wmma's 32-byte alignment.
struct __align__(32) SharedChunk {
    float f[8];
};

#ifdef FLASH_TC
namespace wmma = nvcuda::wmma;
typedef __nv_bfloat16 bf16;
// a (16 rows, 16 k) row major; b (16 k, 16 columns) row major, or column major (the transpose of a row-major tile);
// c (16, 16) float.
typedef wmma::fragment<wmma::matrix_a, WMMA_DIM, WMMA_DIM, WMMA_DIM, bf16, wmma::row_major> FragA;
typedef wmma::fragment<wmma::matrix_b, WMMA_DIM, WMMA_DIM, WMMA_DIM, bf16, wmma::row_major> FragB;
typedef wmma::fragment<wmma::matrix_b, WMMA_DIM, WMMA_DIM, WMMA_DIM, bf16, wmma::col_major> FragBT;
typedef wmma::fragment<wmma::accumulator, WMMA_DIM, WMMA_DIM, WMMA_DIM, float> FragC;

// dst (rows, ld) = rows t0 .. t0 + rows - 1 of the HS channels at src, whose rows are `stride` elements apart; rows
// at or past T become zeros, so products over them add nothing and never read shared memory nobody wrote. Done by
// `n` threads of which this is number `i`, 16 bytes at a time when every source row is 16-byte aligned (shared rows
// always are: HS is a multiple of 16). The caller synchronises.
static __device__ void load_rows(bf16* dst, int ld, const bf16* src, int stride, int t0, int rows, int T, int HS,
                                 int i, int n) {
    if (is_aligned128(src) && stride % GROUP == 0) {
        const int groups = HS / GROUP;
        for (int e = i; e < rows * groups; e += n) {
            const int r = e / groups;
            const int c = e % groups * GROUP;
            int4 bits = make_int4(0, 0, 0, 0);
            if (t0 + r < T) {
                bits = *reinterpret_cast<const int4*>(src + (size_t)(t0 + r) * stride + c);
            }
            *reinterpret_cast<int4*>(dst + r * ld + c) = bits;
        }
    } else {
        for (int e = i; e < rows * HS; e += n) {
            const int r = e / HS;
            const int c = e % HS;
            dst[r * ld + c] = t0 + r < T ? src[(size_t)(t0 + r) * stride + c] : from_float<bf16>(0.0f);
        }
    }
}

// out: (B, T, C); lse: (B, T, NH); qkv: (B, T, 3C). Block (x, y) owns queries of tile CEIL_DIV(T, OWN_ROWS) - 1 - x
// (the longest walks start first) of (b, h) = (y / NH, y % NH).
static __device__ void forward_tc(floatX* out, float* lse, const floatX* qkv, int T, int C, int NH, float* smem) {
    const int HS = C / NH;
    const int ld = HS + BF16_PAD;
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int qt = gridDim.x - 1 - blockIdx.x;
    const int q0 = qt * OWN_ROWS;
    const int row0 = q0 + warp * WMMA_DIM;  // the warp's first query
    const int b = blockIdx.y / NH;
    const int h = blockIdx.y % NH;
    const float scale = 1.0f / sqrtf((float)HS);
    const bf16* q_g = qkv + (size_t)b * T * 3 * C + h * HS;  // k at +C, v at +2C; positions 3C apart
    bf16* k_s = reinterpret_cast<bf16*>(smem);               // (FWD_KEYS, ld)
    bf16* v_s = k_s + FWD_KEYS * ld;                         // (FWD_KEYS, ld)
    float* sc_s = reinterpret_cast<float*>(v_s + FWD_KEYS * ld) +
                  warp * (WMMA_DIM * SC_LD + WMMA_DIM * FP_LD / 2);  // (16, SC_LD): this warp's S, then P V
    bf16* p_s = reinterpret_cast<bf16*>(sc_s + WMMA_DIM * SC_LD);    // (16, FP_LD): this warp's p

    // The warp's queries as matrix_a fragments, staged as bf16 (16, ld) through its scratch.
    bf16* stage = reinterpret_cast<bf16*>(sc_s);
    load_rows(stage, ld, q_g, 3 * C, row0, WMMA_DIM, T, HS, lane, WARP_SIZE);
    __syncwarp();
    FragA q_f[MAX_K_STEPS];
    for (int kk = 0; kk < MAX_K_STEPS; kk++) {
        if (kk * WMMA_DIM < HS) {
            wmma::load_matrix_sync(q_f[kk], stage + kk * WMMA_DIM, ld);
        }
    }

    float o[WMMA_DIM][2];  // channels lane and lane + 32 of the warp's rows
    float m[WMMA_DIM];     // the row's running max, the same in every lane
    float l[WMMA_DIM];     // this lane's share of the row's sum of exp(s - m): its keys only
    for (int r = 0; r < WMMA_DIM; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
        o[r][0] = 0.0f;
        o[r][1] = 0.0f;
    }
    for (int kt = 0; kt <= qt; kt++) {  // FWD_KEYS = OWN_ROWS: key tile qt is the diagonal one
        const int k0 = kt * FWD_KEYS;
        __syncthreads();  // every warp is done with the previous key tile
        load_rows(k_s, ld, q_g + C, 3 * C, k0, FWD_KEYS, T, HS, threadIdx.x, TC_THREADS);
        load_rows(v_s, ld, q_g + 2 * C, 3 * C, k0, FWD_KEYS, T, HS, threadIdx.x, TC_THREADS);
        __syncthreads();

        // S (16, FWD_KEYS) = Q_w K^T: the key tile read column major is K^T.
        for (int n = 0; n < FWD_KEYS / WMMA_DIM; n++) {
            FragC s;
            wmma::fill_fragment(s, 0.0f);
            for (int kk = 0; kk < MAX_K_STEPS; kk++) {
                if (kk * WMMA_DIM < HS) {
                    FragBT k_f;
                    wmma::load_matrix_sync(k_f, k_s + n * WMMA_DIM * ld + kk * WMMA_DIM, ld);
                    wmma::mma_sync(s, q_f[kk], k_f, s);
                }
            }
            wmma::store_matrix_sync(sc_s + n * WMMA_DIM, s, SC_LD, wmma::mem_row_major);
        }
        __syncwarp();

        // Online softmax, lane holding keys k0 + lane and k0 + lane + 32. Key 0 is visible to every row, so m is
        // finite from the first tile on, and every later tile holds a visible key for each row: exp(-inf - m) = 0
        // for masked keys and for the first tile's rescale.
        for (int r = 0; r < WMMA_DIM; r++) {
            const int query = row0 + r;
            const float s0 = k0 + lane <= query ? sc_s[r * SC_LD + lane] * scale : -INFINITY;
            const float s1 = k0 + lane + WARP_SIZE <= query ? sc_s[r * SC_LD + lane + WARP_SIZE] * scale : -INFINITY;
            const float m_new = fmaxf(m[r], warp_reduce_max(fmaxf(s0, s1)));
            const float rescale = expf(m[r] - m_new);
            const float p0 = expf(s0 - m_new);
            const float p1 = expf(s1 - m_new);
            l[r] = l[r] * rescale + p0 + p1;
            o[r][0] *= rescale;
            o[r][1] *= rescale;
            m[r] = m_new;
            p_s[r * FP_LD + lane] = from_float<bf16>(p0);
            p_s[r * FP_LD + lane + WARP_SIZE] = from_float<bf16>(p1);
        }
        __syncwarp();  // the warp's p rows are written; S is consumed, so the scratch is free

        // P V (16, HS): p as matrix_a fragments of 16 keys each, the value tile's rows as matrix_b.
        FragA p_f[FWD_KEYS / WMMA_DIM];
        for (int kk = 0; kk < FWD_KEYS / WMMA_DIM; kk++) {
            wmma::load_matrix_sync(p_f[kk], p_s + kk * WMMA_DIM, FP_LD);
        }
        for (int j = 0; j < MAX_K_STEPS; j++) {
            if (j * WMMA_DIM < HS) {
                FragC pv;
                wmma::fill_fragment(pv, 0.0f);
                for (int kk = 0; kk < FWD_KEYS / WMMA_DIM; kk++) {
                    FragB v_f;
                    wmma::load_matrix_sync(v_f, v_s + kk * WMMA_DIM * ld + j * WMMA_DIM, ld);
                    wmma::mma_sync(pv, p_f[kk], v_f, pv);
                }
                wmma::store_matrix_sync(sc_s + j * WMMA_DIM, pv, SC_LD, wmma::mem_row_major);
            }
        }
        __syncwarp();
        for (int r = 0; r < WMMA_DIM; r++) {
            for (int i = 0; i < 2; i++) {
                const int c = lane + i * WARP_SIZE;
                if (c < HS) {
                    o[r][i] += sc_s[r * SC_LD + c];
                }
            }
        }
    }

    for (int r = 0; r < WMMA_DIM; r++) {
        const int t = row0 + r;
        const float sum = warp_reduce_sum(l[r]);
        if (t < T) {  // the whole warp: rows past T computed on zeros and are dropped
            floatX* o_g = out + ((size_t)b * T + t) * C + h * HS;
            for (int i = 0; i < 2; i++) {
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
    const bf16* q;     // q of position 0; k at +C, v at +2C; positions 3C apart
    const bf16* dout;  // dout of position 0; positions C apart
    const bf16* out;   // out of position 0; positions C apart
    const float* lse;  // lse of position 0; positions NH apart
    bf16* dq;          // dq of position 0; dk at +C, dv at +2C; positions 3C apart
    int T, C, NH, HS;
    float scale;
};

// The backward pass's shared memory, one layout for both kinds of block: the walked tiles of two tensors (BWD_WALK, ld)
// bf16 each; lse and D of up to OWN_ROWS queries (float); and per warp its s, dp (16, BS_LD) float and p, ds
// (16, BP_LD) bf16. A warp first stages its own 16 rows of two tensors, (16, ld) bf16 each, over its s and dp, and at
// the end its (16, HS + F32_PAD) float accumulators.
struct BackwardShared {
    bf16 *walk_a, *walk_b;
    float *lse, *d;
    float *s, *dp;
    bf16 *p, *ds;
    __device__ BackwardShared(float* smem, int ld, int warp) {
        walk_a = reinterpret_cast<bf16*>(smem);
        walk_b = walk_a + BWD_WALK * ld;
        lse = reinterpret_cast<float*>(walk_b + BWD_WALK * ld);
        d = lse + OWN_ROWS;
        s = d + OWN_ROWS + warp * (2 * WMMA_DIM * BS_LD + WMMA_DIM * BP_LD);
        dp = s + WMMA_DIM * BS_LD;
        p = reinterpret_cast<bf16*>(dp + WMMA_DIM * BS_LD);
        ds = p + WMMA_DIM * BP_LD;
    }
};

// lse_s, d_s (rows) = lse and D = dout . out of queries q0 .. q0 + rows - 1, zeros past T; TC_THREADS / rows threads
// (a power of two dividing 32) share each row. Every thread of the block takes part; the caller synchronises after.
static __device__ void load_lse_and_d(float* lse_s, float* d_s, const Head& hd, int q0, int rows) {
    const int per_row = TC_THREADS / rows;
    const int row = threadIdx.x / per_row;
    const int part = threadIdx.x % per_row;
    const int q = q0 + row;
    float d = 0.0f;
    if (q < hd.T) {
        const bf16* g = hd.dout + (size_t)q * hd.C;
        const bf16* o = hd.out + (size_t)q * hd.C;
        for (int c = part; c < hd.HS; c += per_row) {
            d += to_float(g[c]) * to_float(o[c]);
        }
    }
    for (int offset = per_row / 2; offset > 0; offset /= 2) {
        d += __shfl_xor_sync(FULL_MASK, d, offset);
    }
    if (part == 0) {
        lse_s[row] = q < hd.T ? hd.lse[(size_t)q * hd.NH] : 0.0f;
        d_s[row] = d;
    }
}

// dst rows row0 .. row0 + 15 below T, `stride` elements apart, += the (16, HS) accumulator fragments acc, passed
// through the warp's scratch (16, HS + F32_PAD). The whole warp calls it.
static __device__ __forceinline__ void add_rows(bf16* dst, int stride, int row0, const Head& hd, const FragC* acc,
                                                float* scratch) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int ld = hd.HS + F32_PAD;
    __syncwarp();  // the warp is done with what the scratch held
    for (int j = 0; j < MAX_K_STEPS; j++) {
        if (j * WMMA_DIM < hd.HS) {
            wmma::store_matrix_sync(scratch + j * WMMA_DIM, acc[j], ld, wmma::mem_row_major);
        }
    }
    __syncwarp();
    for (int r = 0; r < WMMA_DIM; r++) {
        const int t = row0 + r;
        if (t < hd.T) {  // the whole warp
            bf16* row = dst + (size_t)t * stride;
            for (int i = 0; i < 2; i++) {
                const int c = lane + i * WARP_SIZE;
                if (c < hd.HS) {
                    row[c] = from_float<bf16>(to_float(row[c]) + scratch[r * ld + c]);
                }
            }
        }
    }
}

// A key block: dk, dv of keys k0 .. k0 + OWN_ROWS - 1 from the query tiles q0 = k0, k0 + BWD_WALK, ... below T.
static __device__ void backward_key_tile(const Head& hd, const BackwardShared& sh, int kt) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int HS = hd.HS, C = hd.C, T = hd.T;
    const int ld = HS + BF16_PAD;
    const int key0 = kt * OWN_ROWS + warp * WMMA_DIM;  // the warp's first key
    bf16* q_s = sh.walk_a;  // (BWD_WALK, ld)
    bf16* g_s = sh.walk_b;  // (BWD_WALK, ld): dout

    // The warp's keys and values as matrix_a fragments, staged as bf16 (16, ld) each over its s and dp.
    bf16* k_stage = reinterpret_cast<bf16*>(sh.s);
    bf16* v_stage = k_stage + WMMA_DIM * ld;
    load_rows(k_stage, ld, hd.q + C, 3 * C, key0, WMMA_DIM, T, HS, lane, WARP_SIZE);
    load_rows(v_stage, ld, hd.q + 2 * C, 3 * C, key0, WMMA_DIM, T, HS, lane, WARP_SIZE);
    __syncwarp();
    FragA k_f[MAX_K_STEPS], v_f[MAX_K_STEPS];
    FragC dk[MAX_K_STEPS], dv[MAX_K_STEPS];
    for (int kk = 0; kk < MAX_K_STEPS; kk++) {
        if (kk * WMMA_DIM < HS) {
            wmma::load_matrix_sync(k_f[kk], k_stage + kk * WMMA_DIM, ld);
            wmma::load_matrix_sync(v_f[kk], v_stage + kk * WMMA_DIM, ld);
        }
        wmma::fill_fragment(dk[kk], 0.0f);
        wmma::fill_fragment(dv[kk], 0.0f);
    }

    for (int q0 = kt * OWN_ROWS; q0 < T; q0 += BWD_WALK) {
        __syncthreads();  // every warp is done with the previous query tile
        load_rows(q_s, ld, hd.q, 3 * C, q0, BWD_WALK, T, HS, threadIdx.x, TC_THREADS);
        load_rows(g_s, ld, hd.dout, C, q0, BWD_WALK, T, HS, threadIdx.x, TC_THREADS);
        load_lse_and_d(sh.lse, sh.d, hd, q0, BWD_WALK);
        __syncthreads();

        // S^T = K_w Q^T and dP^T = V_w dout^T, (16 keys, BWD_WALK queries): the walked tiles read column major are
        // Q^T and dout^T.
        for (int n = 0; n < BWD_WALK / WMMA_DIM; n++) {
            FragC st, dpt;
            wmma::fill_fragment(st, 0.0f);
            wmma::fill_fragment(dpt, 0.0f);
            for (int kk = 0; kk < MAX_K_STEPS; kk++) {
                if (kk * WMMA_DIM < HS) {
                    FragBT b_f;
                    wmma::load_matrix_sync(b_f, q_s + n * WMMA_DIM * ld + kk * WMMA_DIM, ld);
                    wmma::mma_sync(st, k_f[kk], b_f, st);
                    wmma::load_matrix_sync(b_f, g_s + n * WMMA_DIM * ld + kk * WMMA_DIM, ld);
                    wmma::mma_sync(dpt, v_f[kk], b_f, dpt);
                }
            }
            wmma::store_matrix_sync(sh.s + n * WMMA_DIM, st, BS_LD, wmma::mem_row_major);
            wmma::store_matrix_sync(sh.dp + n * WMMA_DIM, dpt, BS_LD, wmma::mem_row_major);
        }
        __syncwarp();

        // P^T and dS^T, lane holding query q0 + lane. Queries past T have zero q and dout but must not count.
        const int query = q0 + lane;
        const float lse_q = sh.lse[lane];
        const float d_q = sh.d[lane];
        for (int r = 0; r < WMMA_DIM; r++) {
            const bool visible = query < T && query >= key0 + r;
            const float p = visible ? expf(sh.s[r * BS_LD + lane] * hd.scale - lse_q) : 0.0f;
            sh.p[r * BP_LD + lane] = from_float<bf16>(p);
            sh.ds[r * BP_LD + lane] = from_float<bf16>(p * (sh.dp[r * BS_LD + lane] - d_q) * hd.scale);
        }
        __syncwarp();

        // dV_w += P^T dout, dK_w += dS^T Q: (16, BWD_WALK) by (BWD_WALK, HS), the walked tiles' rows as matrix_b.
        for (int kk = 0; kk < BWD_WALK / WMMA_DIM; kk++) {
            FragA p_f, ds_f;
            wmma::load_matrix_sync(p_f, sh.p + kk * WMMA_DIM, BP_LD);
            wmma::load_matrix_sync(ds_f, sh.ds + kk * WMMA_DIM, BP_LD);
            for (int j = 0; j < MAX_K_STEPS; j++) {
                if (j * WMMA_DIM < HS) {
                    FragB b_f;
                    wmma::load_matrix_sync(b_f, g_s + kk * WMMA_DIM * ld + j * WMMA_DIM, ld);
                    wmma::mma_sync(dv[j], p_f, b_f, dv[j]);
                    wmma::load_matrix_sync(b_f, q_s + kk * WMMA_DIM * ld + j * WMMA_DIM, ld);
                    wmma::mma_sync(dk[j], ds_f, b_f, dk[j]);
                }
            }
        }
    }

    add_rows(hd.dq + C, 3 * C, key0, hd, dk, sh.s);
    add_rows(hd.dq + 2 * C, 3 * C, key0, hd, dv, sh.s);
}

// A query block: dq of queries q0 .. q0 + OWN_ROWS - 1 from the key tiles k0 = 0, BWD_WALK, ... up to the last query
// and below T.
static __device__ void backward_query_tile(const Head& hd, const BackwardShared& sh, int qt) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int HS = hd.HS, C = hd.C, T = hd.T;
    const int ld = HS + BF16_PAD;
    const int q0 = qt * OWN_ROWS;
    const int row0 = q0 + warp * WMMA_DIM;  // the warp's first query
    bf16* k_s = sh.walk_a;  // (BWD_WALK, ld)
    bf16* v_s = sh.walk_b;  // (BWD_WALK, ld)
    const float* lse_w = sh.lse + warp * WMMA_DIM;  // lse and D of the warp's queries
    const float* d_w = sh.d + warp * WMMA_DIM;
    load_lse_and_d(sh.lse, sh.d, hd, q0, OWN_ROWS);  // read after the walk's first __syncthreads

    // The warp's queries and their dout as matrix_a fragments, staged as bf16 (16, ld) each over its s and dp.
    bf16* q_stage = reinterpret_cast<bf16*>(sh.s);
    bf16* g_stage = q_stage + WMMA_DIM * ld;
    load_rows(q_stage, ld, hd.q, 3 * C, row0, WMMA_DIM, T, HS, lane, WARP_SIZE);
    load_rows(g_stage, ld, hd.dout, C, row0, WMMA_DIM, T, HS, lane, WARP_SIZE);
    __syncwarp();
    FragA q_f[MAX_K_STEPS], g_f[MAX_K_STEPS];
    FragC dq[MAX_K_STEPS];
    for (int kk = 0; kk < MAX_K_STEPS; kk++) {
        if (kk * WMMA_DIM < HS) {
            wmma::load_matrix_sync(q_f[kk], q_stage + kk * WMMA_DIM, ld);
            wmma::load_matrix_sync(g_f[kk], g_stage + kk * WMMA_DIM, ld);
        }
        wmma::fill_fragment(dq[kk], 0.0f);
    }

    const int last = min(q0 + OWN_ROWS, T);  // keys below both the block's last query + 1 and T
    for (int k0 = 0; k0 < last; k0 += BWD_WALK) {
        __syncthreads();  // every warp is done with the previous key tile (and lse, D are written)
        load_rows(k_s, ld, hd.q + C, 3 * C, k0, BWD_WALK, T, HS, threadIdx.x, TC_THREADS);
        load_rows(v_s, ld, hd.q + 2 * C, 3 * C, k0, BWD_WALK, T, HS, threadIdx.x, TC_THREADS);
        __syncthreads();

        // S = Q_w K^T and dP = dout_w V^T, (16 queries, BWD_WALK keys).
        for (int n = 0; n < BWD_WALK / WMMA_DIM; n++) {
            FragC s, dp;
            wmma::fill_fragment(s, 0.0f);
            wmma::fill_fragment(dp, 0.0f);
            for (int kk = 0; kk < MAX_K_STEPS; kk++) {
                if (kk * WMMA_DIM < HS) {
                    FragBT b_f;
                    wmma::load_matrix_sync(b_f, k_s + n * WMMA_DIM * ld + kk * WMMA_DIM, ld);
                    wmma::mma_sync(s, q_f[kk], b_f, s);
                    wmma::load_matrix_sync(b_f, v_s + n * WMMA_DIM * ld + kk * WMMA_DIM, ld);
                    wmma::mma_sync(dp, g_f[kk], b_f, dp);
                }
            }
            wmma::store_matrix_sync(sh.s + n * WMMA_DIM, s, BS_LD, wmma::mem_row_major);
            wmma::store_matrix_sync(sh.dp + n * WMMA_DIM, dp, BS_LD, wmma::mem_row_major);
        }
        __syncwarp();

        // dS, lane holding key k0 + lane. Rows past T see zeros (lse = D = 0, zero q and dout), so their ds is 0.
        for (int r = 0; r < WMMA_DIM; r++) {
            const float p = k0 + lane <= row0 + r ? expf(sh.s[r * BS_LD + lane] * hd.scale - lse_w[r]) : 0.0f;
            sh.ds[r * BP_LD + lane] = from_float<bf16>(p * (sh.dp[r * BS_LD + lane] - d_w[r]) * hd.scale);
        }
        __syncwarp();

        // dQ_w += dS K: (16, BWD_WALK) by (BWD_WALK, HS), the key tile's rows as matrix_b.
        for (int kk = 0; kk < BWD_WALK / WMMA_DIM; kk++) {
            FragA ds_f;
            wmma::load_matrix_sync(ds_f, sh.ds + kk * WMMA_DIM, BP_LD);
            for (int j = 0; j < MAX_K_STEPS; j++) {
                if (j * WMMA_DIM < HS) {
                    FragB k_f;
                    wmma::load_matrix_sync(k_f, k_s + kk * WMMA_DIM * ld + j * WMMA_DIM, ld);
                    wmma::mma_sync(dq[j], ds_f, k_f, dq[j]);
                }
            }
        }
    }

    add_rows(hd.dq, 3 * C, row0, hd, dq, sh.s);
}
#endif  // FLASH_TC

// out: (B, T, C); lse: (B, T, NH); qkv: (B, T, 3C) with q, k, v at channel offsets 0, C, 2C. HS = C / NH, a multiple
// of 16 and at most 64. grid: (CEIL_DIV(T, OWN_ROWS), B*NH), block: TC_THREADS, dynamic shared memory:
// 2 FWD_KEYS (HS + BF16_PAD) bf16 + TC_WARPS (16 SC_LD float + 16 FP_LD bf16).
extern "C" __global__ void __launch_bounds__(TC_THREADS)
    flash_attention_tc_forward(floatX* out, float* lse, const floatX* __restrict__ qkv, int B, int T, int C, int NH) {
#ifdef FLASH_TC
    DYNAMIC_SHARED(SharedChunk, chunks);
    forward_tc(out, lse, qkv, T, C, NH, reinterpret_cast<float*>(chunks));
#else
    // This build has no tensor-core path: the fp32 build has no bf16 operands (and GPUs before sm_80 no bf16 WMMA).
    // src/gpu/flash_attention_tc.rs refuses f32 tensors before launching, so only a launcher bug gets here.
    assert(0 && "flash_attention_tc_forward exists only for bf16 tensors on sm_80 or newer");
    __trap();
#endif
}

// dqkv: (B, T, 3C) accumulates; dout, out: (B, T, C); qkv: (B, T, 3C); lse: (B, T, NH). HS as in the forward pass.
// grid: (CEIL_DIV(T, OWN_ROWS), B*NH, 2), block: TC_THREADS, dynamic shared memory: 2 BWD_WALK (HS + BF16_PAD) bf16 +
// 2 OWN_ROWS float + TC_WARPS (2 * 16 BS_LD float + 2 * 16 BP_LD bf16). Block (x, y, 0) owns dk, dv of key tile x,
// block (x, y, 1) dq of query tile CEIL_DIV(T, OWN_ROWS) - 1 - x (the longest walks start first), both of (b, h) =
// (y / NH, y % NH).
extern "C" __global__ void __launch_bounds__(TC_THREADS)
    flash_attention_tc_backward(floatX* dqkv, const floatX* __restrict__ dout, const floatX* __restrict__ qkv,
                                const floatX* __restrict__ out, const float* __restrict__ lse, int B, int T, int C,
                                int NH) {
#ifdef FLASH_TC
    DYNAMIC_SHARED(SharedChunk, chunks);
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
    const BackwardShared sh(reinterpret_cast<float*>(chunks), hd.HS + BF16_PAD, threadIdx.x / WARP_SIZE);
    if (blockIdx.z == 0) {  // the whole block
        backward_key_tile(hd, sh, blockIdx.x);
    } else {
        backward_query_tile(hd, sh, gridDim.x - 1 - blockIdx.x);
    }
#else
    // As in flash_attention_tc_forward: no tensor-core path in this build, and the launcher never gets here.
    assert(0 && "flash_attention_tc_backward exists only for bf16 tensors on sm_80 or newer");
    __trap();
#endif
}
