// The global gradient norm, sqrt(sum of all gradients squared), for clipping (mirrors src/cpu/global_norm.rs).
// As on the CPU, the N gradients are cut into gridDim.x = 64 slices of CEIL_DIV(N, 64) (slices past the end are
// empty), each slice's squares are summed in f64, and the launcher adds the 64 partials in order, in f64, on the
// host: the result does not depend on timing, and no atomics are needed. Gradients are floatX (bf16 gradients are
// widened exactly); partials are float.
//
// Thread mapping: one block per slice; threads stride over the slice, accumulate in f64, and a block reduction
// (f64) gives the slice's sum, written as one float. Elements moved per call: N read, 64 written.
#include "common.cuh"

// partials: (gridDim.x), one sum of squares per slice; grads: (N).
// grid: 64 (the CPU's SLICES; any grid works, the slices follow it), block: a multiple of 32, at most 1024 (512).
extern "C" __global__ void global_norm_squared(float* partials, const floatX* __restrict__ grads, int N) {
    __shared__ double warp_scratch[WARP_SIZE];
    const long long slice_len = CEIL_DIV((long long)N, (long long)gridDim.x);
    const long long start = blockIdx.x * slice_len;
    const long long end = min(start + slice_len, (long long)N);
    double sum = 0.0;
    for (long long i = start + threadIdx.x; i < end; i += blockDim.x) {
        const double g = to_float(grads[i]);
        sum += g * g;
    }
    sum = block_reduce_sum(sum, warp_scratch);
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = (float)sum;
    }
}
