// common.cuh: what every kernel file shares. Warp and block reductions (fixed shuffle trees, so results are
// deterministic), CEIL_DIV, DYNAMIC_SHARED, the one way to declare dynamic shared memory: `extern __shared__`
// under nvcc, the emulator's per-block buffer when the same source is compiled for the CPU with -DLLMRS_EMU, and
// floatX, the storage type of parameters, activations and their gradients (float, or bf16 when the file is
// compiled with -DLLMRS_BF16: build.rs compiles every kernel file once for each), and load_group/store_group, the
// 128-bit loads and stores of the memory-bound kernels (their alignment rule below).
//
// Reductions assume whole warps: every lane of the warp calls them (blocks are multiples of 32 threads, and a
// kernel that maps one row to one warp lets a warp leave only as a whole).
#pragma once

#ifndef LLMRS_EMU
#include <cuda_bf16.h>
#endif

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

// ---- Storage precision ----------------------------------------------------------------------------------------
// Every kernel file is compiled twice (build.rs): floatX = float, and floatX = bf16 with -DLLMRS_BF16. Tensors of
// floatX are the bulk of memory (parameters, activations, gradients); statistics that bf16's 8-bit mantissa would
// ruin (LayerNorm mean and rstd, attention's log-sum-exp, losses) and the optimizer's master weights and moments
// stay float in both builds. Arithmetic is always float: values are widened as they are loaded (to_float) and
// rounded to nearest even once as they are stored (from_float<T>).
#ifdef LLMRS_BF16
typedef __nv_bfloat16 floatX;
#else
typedef float floatX;
#endif

static __device__ __forceinline__ float to_float(float x) {
    return x;
}
static __device__ __forceinline__ float to_float(__nv_bfloat16 x) {
    return __bfloat162float(x);
}

template <class T>
static __device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) {
    return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

// ---- 128-bit loads and stores ---------------------------------------------------------------------------------
// A group is the GROUP consecutive floatX elements one thread moves with one 128-bit instruction (LDG.E.128 /
// STG.E.128): 4 floats, or 8 bf16. A memory-bound kernel moves the same bytes either way, but issues a quarter (an
// eighth) of the memory instructions and of their index arithmetic, and every instruction has 16 bytes in flight.
// A float tensor read in groups of a bf16 build (AdamW's master weights and moments) takes two 128-bit accesses.
//
// The alignment rule: a 128-bit access must start at a multiple of 16 bytes. A GPU faults on a misaligned one
// ("misaligned address"); under the emulator it is a launch error naming the kernel and thread. Allocations are
// 256-byte aligned, but a tensor is a view at any element offset of one allocation (src/gpu/backend.rs: a per-layer
// slice of (L, C) LayerNorm weights with C = 45 starts at 4-byte alignment), so no pointer may be assumed aligned.
// load_group and store_group check, for each pointer and group: 128 bits at a time when the group is aligned and
// whole, else one element at a time. A kernel whose threads take groups i = 0, GROUP, 2 GROUP, ... gets the same
// answer for a pointer (aligned or not) in every thread, so a warp never diverges on it except in the group holding
// the end.
#define GROUP ((int)(16 / sizeof(floatX)))

// A group widened to float.
struct fgroup {
    float v[GROUP];
};

// Whether p may be read or written 128 bits at a time.
template <class T>
static __device__ __forceinline__ bool is_aligned128(const T* p) {
    return reinterpret_cast<size_t>(p) % 16 == 0;
}

// The group p[i .. i + GROUP) of an array of n elements (float or floatX), widened to float: 128-bit loads when
// p + i is 16-byte aligned and i + GROUP <= n, else one element at a time, with elements at or past n read as 0.
template <class T>
static __device__ __forceinline__ fgroup load_group(const T* p, size_t i, size_t n) {
    fgroup out;
    if (i + GROUP <= n && is_aligned128(p + i)) {
        constexpr int PER_ACCESS = 16 / sizeof(T);
        for (int a = 0; a < GROUP; a += PER_ACCESS) {
#ifdef LLMRS_EMU
            emu::check_aligned(p + i + a, 16);
#endif
            // Bits moved as int4: a 128-bit load whatever the element type, converted element by element after.
            union {
                int4 bits;
                T elems[PER_ACCESS];
            } chunk;
            chunk.bits = *reinterpret_cast<const int4*>(p + i + a);
            for (int k = 0; k < PER_ACCESS; k++) {
                out.v[a + k] = to_float(chunk.elems[k]);
            }
        }
        return out;
    }
    for (int k = 0; k < GROUP; k++) {
        out.v[k] = i + k < n ? to_float(p[i + k]) : 0.0f;
    }
    return out;
}

// v rounded to T into the group p[i .. i + GROUP) of an array of n elements, only the elements below n; 128 bits
// at a time under the same condition as load_group.
template <class T>
static __device__ __forceinline__ void store_group(T* p, size_t i, size_t n, const fgroup& v) {
    if (i + GROUP <= n && is_aligned128(p + i)) {
        constexpr int PER_ACCESS = 16 / sizeof(T);
        for (int a = 0; a < GROUP; a += PER_ACCESS) {
#ifdef LLMRS_EMU
            emu::check_aligned(p + i + a, 16);
#endif
            union {
                int4 bits;
                T elems[PER_ACCESS];
            } chunk;
            for (int k = 0; k < PER_ACCESS; k++) {
                chunk.elems[k] = from_float<T>(v.v[a + k]);
            }
            *reinterpret_cast<int4*>(p + i + a) = chunk.bits;
        }
        return;
    }
    for (int k = 0; k < GROUP; k++) {
        if (i + k < n) {
            p[i + k] = from_float<T>(v.v[k]);
        }
    }
}
