// common.cuh: what every kernel file shares. Warp and block reductions (fixed shuffle trees, so results are
// deterministic), CEIL_DIV, and DYNAMIC_SHARED, the one way to declare dynamic shared memory: `extern __shared__`
// under nvcc, the emulator's per-block buffer when the same source is compiled for the CPU with -DLLMRS_EMU.
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
