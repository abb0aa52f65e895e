// Matmul: only the bias gradient lives here (mirroring src/cpu/matmul.rs); the products out = inp · weightᵀ + bias
// (the bias added by cuBLASLt's epilogue), dinp += dout · weight and dweight += doutᵀ · inp go to cuBLASLt (or the
// CPU GEMM under the emulator).
//   backward: dbias[o] += sum over the B*T rows of dout[row, o]
//
// Thread mapping: one thread per output column o, walking the rows in order, so each element of dbias has one
// owner (deterministic, no atomics) and is rounded once; a warp reads 32 neighbouring elements of a row at a time.
// Elements (floatX; sums in float) moved per call: B*T*OC read + 2 OC.
#include "common.cuh"

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
