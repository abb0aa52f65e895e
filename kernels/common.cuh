// common.cuh: what every kernel file shares. Warp and block reductions (fixed shuffle trees, so results are
// deterministic), CEIL_DIV, DYNAMIC_SHARED, the one way to declare dynamic shared memory: `extern __shared__`
// under nvcc, the emulator's per-block buffer when the same source is compiled for the CPU with -DLLMRS_EMU, and
// f128 with load4/store4, the 128-bit loads and stores of the memory-bound kernels (their alignment rule below).
//
// Reductions assume whole warps: every lane of the warp calls them (blocks are multiples of 32 threads, and a
// kernel that maps one row to one warp lets a warp leave only as a whole).
#pragma once

#define WARP_SIZE 32
// Every lane of the warp takes part in the shuffles below.
#define FULL_MASK 0xffffffffu
// Blocks needed to cover n items with blocks of b (both non-negative).
#define CEIL_DIV(n, b) (((n) + (b) - 1) / (b))

#ifdef LLMRS_EMU
#define DYNAMIC_SHARED(T, name) EMU_DYNAMIC_SHARED(T, name)
#else
#define DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

// The sum of v over the 32 lanes, returned to every lane.
template <class T>
static __device__ __forceinline__ T warp_reduce_sum(T v) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) {
        v += __shfl_xor_sync(FULL_MASK, v, offset);
    }
    return v;
}

// The max of v over the 32 lanes, returned to every lane.
static __device__ __forceinline__ float warp_reduce_max(float v) {
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) {
        v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, offset));
    }
    return v;
}

// The sum of v over the block, returned to every thread. blockDim.x: a multiple of 32, at most 1024.
// warp_sums: (32) shared scratch. Holds two __syncthreads, so every thread of the block must call it; the scratch
// may be reused as soon as it returns.
template <class T>
static __device__ __forceinline__ T block_reduce_sum(T v, T* warp_sums) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int num_warps = blockDim.x / WARP_SIZE;
    v = warp_reduce_sum(v);
    if (lane == 0) {
        warp_sums[warp] = v;
    }
    __syncthreads();
    v = warp_reduce_sum(lane < num_warps ? warp_sums[lane] : T(0));
    __syncthreads();
    return v;
}

// The max of v over the block, returned to every thread; same contract as block_reduce_sum.
static __device__ __forceinline__ float block_reduce_max(float v, float* warp_maxes) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int num_warps = blockDim.x / WARP_SIZE;
    v = warp_reduce_max(v);
    if (lane == 0) {
        warp_maxes[warp] = v;
    }
    __syncthreads();
    v = warp_reduce_max(lane < num_warps ? warp_maxes[lane] : -INFINITY);
    __syncthreads();
    return v;
}

// ---- 128-bit loads and stores ---------------------------------------------------------------------------------
// f128 is four floats that one thread moves with one 128-bit instruction (LDG.E.128 / STG.E.128) instead of four
// 32-bit ones. A memory-bound kernel moves the same bytes either way, but issues a quarter of the memory
// instructions (and of their index arithmetic), and every instruction has 16 bytes in flight instead of 4.
//
// The alignment rule: a 128-bit access must start at a multiple of 16 bytes. A GPU faults on a misaligned one
// ("misaligned address"); under the emulator it is a launch error naming the kernel and thread. Allocations are
// 256-byte aligned, but a tensor is a view at any float offset of one allocation (src/gpu/backend.rs: a per-layer
// slice of (L, C) LayerNorm weights with C = 45 starts at 4-byte alignment), so no pointer may be assumed aligned.
// load4 and store4 check, for each pointer and group of four: 128 bits at once when the group is aligned and
// whole, else one float at a time. A kernel whose threads take groups i = 0, 4, 8, ... gets the same answer for a
// pointer (aligned or not) in every thread, so a warp never diverges on it except in the group holding the end.
#define F128_FLOATS 4

struct alignas(16) f128 {
    float v[F128_FLOATS];
};

// Whether p may be read or written 128 bits at a time.
static __device__ __forceinline__ bool is_aligned128(const float* p) {
    return reinterpret_cast<size_t>(p) % sizeof(f128) == 0;
}

// p[0 .. 4) in one 128-bit load. p: 16-byte aligned.
static __device__ __forceinline__ f128 load128(const float* p) {
#ifdef LLMRS_EMU
    emu::check_aligned(p, sizeof(f128));
#endif
    const float4 q = *reinterpret_cast<const float4*>(p);
    return f128{{q.x, q.y, q.z, q.w}};
}

// v into p[0 .. 4) in one 128-bit store. p: 16-byte aligned.
static __device__ __forceinline__ void store128(float* p, f128 v) {
#ifdef LLMRS_EMU
    emu::check_aligned(p, sizeof(f128));
#endif
    *reinterpret_cast<float4*>(p) = make_float4(v.v[0], v.v[1], v.v[2], v.v[3]);
}

// The group p[i .. i + 4) of an array of n floats: one 128-bit load when p + i is 16-byte aligned and i + 4 <= n,
// else one float at a time, with the floats at or past n read as 0.
static __device__ __forceinline__ f128 load4(const float* p, size_t i, size_t n) {
    if (i + F128_FLOATS <= n && is_aligned128(p + i)) {
        return load128(p + i);
    }
    f128 v;
    for (int k = 0; k < F128_FLOATS; k++) {
        v.v[k] = i + k < n ? p[i + k] : 0.0f;
    }
    return v;
}

// v into the group p[i .. i + 4) of an array of n floats, only the floats below n; 128 bits at once under the
// same condition as load4.
static __device__ __forceinline__ void store4(float* p, size_t i, size_t n, f128 v) {
    if (i + F128_FLOATS <= n && is_aligned128(p + i)) {
        store128(p + i, v);
        return;
    }
    for (int k = 0; k < F128_FLOATS; k++) {
        if (i + k < n) {
            p[i + k] = v.v[k];
        }
    }
}
