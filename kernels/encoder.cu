// Encoder: the residual stream starts as token embedding + position embedding (mirrors src/cpu/encoder.rs).
//
// forward:  out[b, t, :] = wte[inp[b, t], :] + wpe[t, :]. One thread per element of out.
//           Moves 3 B*T*C floats (read wte and wpe rows, write out) + B*T token ids.
// backward: dwte[inp[b, t], :] += dout[b, t, :] and dwpe[t, :] += dout[b, t, :], in two kernels and without
//           atomics. Several positions may hold the same token, so a dwte row can receive many contributions: one
//           thread per channel c walks the B*T positions in order and owns column c of dwte (the CPU's order, so
//           the sums are deterministic). One thread per (t, c) sums dout over b for dwpe.
//           encoder_backward_dwte moves 3 B*T*C floats (read dout, read+write dwte) + B*T token ids per thread
//           column; encoder_backward_dwpe moves B*T*C + 2 T*C floats.
#include "common.cuh"

// out: (B, T, C); inp: (B, T) token ids < Vp; wte: (Vp, C); wpe: (maxT, C) with T <= maxT.
// grid: CEIL_DIV(B*T*C, block), block: any (256).
extern "C" __global__ void encoder_forward(float* out, const unsigned int* __restrict__ inp,
                                           const float* __restrict__ wte, const float* __restrict__ wpe, int B, int T,
                                           int C) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)B * T * C) {
        return;
    }
    const size_t bt = i / C;
    const int c = i % C;
    const int t = bt % T;
    out[i] = wte[(size_t)inp[bt] * C + c] + wpe[(size_t)t * C + c];
}

// dwte: (Vp, C) accumulates; dout: (B, T, C); inp: (B, T).
// grid: CEIL_DIV(C, block), block: any (256). Thread c owns column c of dwte.
extern "C" __global__ void encoder_backward_dwte(float* dwte, const float* __restrict__ dout,
                                                 const unsigned int* __restrict__ inp, int B, int T, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) {
        return;
    }
    for (int bt = 0; bt < B * T; bt++) {
        dwte[(size_t)inp[bt] * C + c] += dout[(size_t)bt * C + c];
    }
}

// dwpe: (maxT, C) accumulates (rows 0..T); dout: (B, T, C).
// grid: CEIL_DIV(T*C, block), block: any (256). Thread (t, c) owns dwpe[t, c].
extern "C" __global__ void encoder_backward_dwpe(float* dwpe, const float* __restrict__ dout, int B, int T, int C) {
    const int tc = blockIdx.x * blockDim.x + threadIdx.x;
    if (tc >= T * C) {
        return;
    }
    float sum = dwpe[tc];
    for (int b = 0; b < B; b++) {
        sum += dout[(size_t)b * T * C + tc];
    }
    dwpe[tc] = sum;
}
