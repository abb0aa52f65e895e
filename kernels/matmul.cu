// Matmul: only the bias gradient lives here (mirrors the dbias part of src/cpu/matmul.rs); the products
// out = inp · weightᵀ, dinp += dout · weight and dweight += doutᵀ · inp go to cuBLAS (or the CPU GEMM).
//   dbias[o] += sum over the B*T rows of dout[row, o]
//
// Thread mapping: one thread per output column o, walking the rows in order, so each float of dbias has one owner
// (deterministic, no atomics); a warp reads 32 neighbouring floats of a row at a time.
// Floats moved per call: B*T*OC (read dout) + 2 OC.
#include "common.cuh"

// dbias: (OC) accumulates; dout: (B, T, OC). grid: CEIL_DIV(OC, block), block: any (256).
extern "C" __global__ void matmul_backward_bias(float* dbias, const float* __restrict__ dout, int B, int T, int OC) {
    const int o = blockIdx.x * blockDim.x + threadIdx.x;
    if (o >= OC) {
        return;
    }
    float sum = dbias[o];
    for (int row = 0; row < B * T; row++) {
        sum += dout[(size_t)row * OC + o];
    }
    dbias[o] = sum;
}
