// Residual: the stream adds each block's output to its input (mirrors src/cpu/residual.rs).
//   forward: out = inp1 + inp2;  backward: dinp1 += dout, dinp2 += dout (the gradient flows to both branches).
//
// Thread mapping: one thread per group of 4 consecutive elements, moved with 128-bit loads and stores (common.cuh
// load4/store4; a view that starts off a 16-byte boundary, and the last group when N % 4 != 0, take 32-bit
// accesses). Floats moved per call: forward 3 N; backward 5 N (read dout, read and write dinp1 and dinp2): one
// 128-bit instruction per 4 floats of each.
#include "common.cuh"

// out, inp1, inp2: (N) with N = B * T * C. grid: CEIL_DIV(N, 4 * block), block: any (256).
extern "C" __global__ void residual_forward(float* out, const float* __restrict__ inp1,
                                            const float* __restrict__ inp2, int N) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * F128_FLOATS;
    if (i >= (size_t)N) {
        return;
    }
    const f128 a = load4(inp1, i, N);
    const f128 b = load4(inp2, i, N);
    f128 o;
    for (int k = 0; k < F128_FLOATS; k++) {
        o.v[k] = a.v[k] + b.v[k];
    }
    store4(out, i, N, o);
}

// dinp1, dinp2: (N) accumulate; dout: (N). grid: CEIL_DIV(N, 4 * block), block: any (256).
extern "C" __global__ void residual_backward(float* dinp1, float* dinp2, const float* __restrict__ dout, int N) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * F128_FLOATS;
    if (i >= (size_t)N) {
        return;
    }
    const f128 g = load4(dout, i, N);
    f128 d1 = load4(dinp1, i, N);
    f128 d2 = load4(dinp2, i, N);
    for (int k = 0; k < F128_FLOATS; k++) {
        d1.v[k] += g.v[k];
        d2.v[k] += g.v[k];
    }
    store4(dinp1, i, N, d1);
    store4(dinp2, i, N, d2);
}
