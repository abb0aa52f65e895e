// Residual: the stream adds each block's output to its input (mirrors src/cpu/residual.rs).
//   forward: out = inp1 + inp2;  backward: dinp1 = dout, dinp2 = dout (the gradient flows to both branches; this
//   is the first write to either in the backward pass, so both are overwritten, not accumulated into).
//
// Thread mapping: one thread per group of GROUP consecutive elements (4 floats or 8 bf16), moved with 128-bit
// loads and stores (common.cuh load_group/store_group; a view that starts off a 16-byte boundary, and the last
// group when N % GROUP != 0, take element accesses); arithmetic in float. Elements moved per call: forward 3 N;
// backward 3 N (read dout, write dinp1 and dinp2): one 128-bit instruction per group of each.
#include "common.cuh"

// out, inp1, inp2: (N) with N = B * T * C. grid: CEIL_DIV(N, GROUP * block), block: any (256).
extern "C" __global__ void residual_forward(floatX* out, const floatX* __restrict__ inp1,
                                            const floatX* __restrict__ inp2, int N) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * GROUP;
    if (i >= (size_t)N) {
        return;
    }
    const fgroup a = load_group(inp1, i, N);
    const fgroup b = load_group(inp2, i, N);
    fgroup o;
    for (int k = 0; k < GROUP; k++) {
        o.v[k] = a.v[k] + b.v[k];
    }
    store_group(out, i, N, o);
}

// dinp1, dinp2: (N) overwritten; dout: (N). grid: CEIL_DIV(N, GROUP * block), block: any (256).
extern "C" __global__ void residual_backward(floatX* dinp1, floatX* dinp2, const floatX* __restrict__ dout, int N) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * GROUP;
    if (i >= (size_t)N) {
        return;
    }
    const fgroup g = load_group(dout, i, N);
    store_group(dinp1, i, N, g);
    store_group(dinp2, i, N, g);
}
