// Encoder: the residual stream starts as token embedding + position embedding (mirrors src/cpu/encoder.rs).
//
// forward:  out[b, t, :] = wte[inp[b, t], :] + wpe[t, :]. One thread per group of 4 channels of one (b, t) row,
//           moved with 128-bit loads and stores (common.cuh load4/store4). Groups never straddle rows, so with
//           C % 4 == 0 (every GPT-2) and aligned wte, wpe and out every access is 128-bit; a row that starts off a
//           16-byte boundary (C % 4 != 0, or a misaligned view) and the last group of a row when C % 4 != 0 take
//           32-bit accesses. Moves 3 B*T*C floats (read wte and wpe rows, write out) + B*T token ids (each read by every group of
//           its row, from cache after the first).
// backward: dwte[inp[b, t], :] += dout[b, t, :] and dwpe[t, :] += dout[b, t, :], in two kernels and without
//           atomics. Several positions may hold the same token, so a dwte row can receive many contributions: one
//           thread per channel c walks the B*T positions in order and owns column c of dwte (the CPU's order, so
//           the sums are deterministic). One thread per (t, c) sums dout over b for dwpe.
//           encoder_backward_dwte moves 3 B*T*C floats (read dout, read+write dwte) + B*T token ids per thread
//           column; encoder_backward_dwpe moves B*T*C + 2 T*C floats.
#include "common.cuh"

// out: (B, T, C); inp: (B, T) token ids < Vp; wte: (Vp, C); wpe: (maxT, C) with T <= maxT.
// grid: CEIL_DIV(B*T*CEIL_DIV(C, 4), block), block: any (256).
extern "C" __global__ void encoder_forward(float* out, const unsigned int* __restrict__ inp,
                                           const float* __restrict__ wte, const float* __restrict__ wpe, int B, int T,
                                           int C) {
    const int groups_per_row = CEIL_DIV(C, F128_FLOATS);
    const size_t g = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (size_t)B * T * groups_per_row) {
        return;
    }
    const size_t bt = g / groups_per_row;
    const int c = (g % groups_per_row) * F128_FLOATS;  // first channel of this thread's group
    const int t = bt % T;
    const f128 token = load4(wte + (size_t)inp[bt] * C, c, C);
    const f128 position = load4(wpe + (size_t)t * C, c, C);
    f128 o;
    for (int k = 0; k < F128_FLOATS; k++) {
        o.v[k] = token.v[k] + position.v[k];
    }
    store4(out + bt * C, c, C, o);
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
