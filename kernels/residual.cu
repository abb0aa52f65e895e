// Residual: the stream adds each block's output to its input (mirrors src/cpu/residual.rs).
//   forward: out = inp1 + inp2;  backward: dinp1 += dout, dinp2 += dout (the gradient flows to both branches).
//
// Thread mapping: one thread per element. Floats moved per call: forward 3 N; backward 5 N (read dout, read and
// write dinp1 and dinp2).
#include "common.cuh"

// out, inp1, inp2: (N) with N = B * T * C. grid: CEIL_DIV(N, block), block: any (256).
extern "C" __global__ void residual_forward(float* out, const float* __restrict__ inp1,
                                            const float* __restrict__ inp2, int N) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N) {
        return;
    }
    out[i] = inp1[i] + inp2[i];
}

// dinp1, dinp2: (N) accumulate; dout: (N). grid: CEIL_DIV(N, block), block: any (256).
extern "C" __global__ void residual_backward(float* dinp1, float* dinp2, const float* __restrict__ dout, int N) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N) {
        return;
    }
    const float g = dout[i];
    dinp1[i] += g;
    dinp2[i] += g;
}
