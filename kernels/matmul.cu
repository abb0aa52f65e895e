// Matmul: only the bias parts live here (mirroring src/cpu/matmul.rs); the products out = inp · weightᵀ,
// dinp += dout · weight and dweight += doutᵀ · inp go to cuBLAS (or the CPU GEMM under the emulator).
//   forward:  out[row, o] = bias[o] before the GEMM accumulates the product on top (as the CPU does)
//   backward: dbias[o] += sum over the B*T rows of dout[row, o]
//
// Thread mapping: the broadcast has one thread per output element; the bias gradient one thread per output
// column o, walking the rows in order, so each float of dbias has one owner (deterministic, no atomics); a warp
// reads 32 neighbouring floats of a row at a time.
// Elements (floatX; sums in float) moved per call: broadcast B*T*OC written + OC read; bias gradient B*T*OC read + 2 OC.
#include "common.cuh"

// out: (B, T, OC) = bias broadcast over rows; bias: (OC). grid: CEIL_DIV(B*T*OC, block), block: any (256).
extern "C" __global__ void matmul_bias_broadcast(floatX* out, const floatX* __restrict__ bias, int B, int T, int OC) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)B * T * OC) {
        return;
    }
    out[i] = bias[i % OC];
}

// dbias: (OC) accumulates; dout: (B, T, OC). grid: CEIL_DIV(OC, block), block: any (256).
extern "C" __global__ void matmul_backward_bias(floatX* dbias, const floatX* __restrict__ dout, int B, int T, int OC) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= OC) {
        return;
    }
    float sum = to_float(dbias[o]);
    for (int row = 0; row < B * T; row++) {
        sum += to_float(dout[(size_t)row * OC + o]);
    }
    dbias[o] = from_float<floatX>(sum);
}
