// Encoder: the residual stream starts as token embedding + position embedding (mirrors src/cpu/encoder.rs).
//
// forward:  out[b, t, :] = wte[inp[b, t], :] + wpe[t, :]. One thread per group of channels of one (b, t) row (4
//           floats or 8 bf16, common.cuh load_group/store_group). Groups never straddle rows, so with C % GROUP == 0
//           (every GPT-2) and aligned wte, wpe and out every access is 128-bit; a row that starts off a 16-byte
//           boundary and the last group of a row when C % GROUP != 0 take element accesses. Moves 3 B*T*C elements
//           (read wte and wpe rows, write out) + B*T token ids (each read by every group of its row, from cache
//           after the first).
// backward: dwte[inp[b, t], :] += dout[b, t, :] and dwpe[t, :] += dout[b, t, :], in two kernels and without
//           atomics. Several positions may hold the same token, so a dwte row can receive many contributions: one
//           thread per channel c owns column c of dwte and walks the B*T positions sorted by token (`order`, a
//           stable sort the launcher makes on the host), summing each token's contributions in float and adding
//           the sum to dwte once. One rounding per token keeps a bf16 dwte from stalling (adding 1e-3 a thousand
//           times to a bf16 0.25 would leave it at 0.25), and the order is fixed, so the sums are deterministic.
//           One thread per (t, c) sums dout over b for dwpe.
//           encoder_backward_dwte moves B*T*C elements of dout read and up to 2 B*T*C of dwte + 2 B*T token ids
//           per thread column; encoder_backward_dwpe moves B*T*C + 2 T*C elements.
#include "common.cuh"

// out: (B, T, C); inp: (B, T) token ids < Vp; wte: (Vp, C); wpe: (maxT, C) with T <= maxT.
// grid: CEIL_DIV(B*T*CEIL_DIV(C, GROUP), block), block: any (256).
extern "C" __global__ void encoder_forward(floatX* out, const unsigned int* __restrict__ inp,
                                           const floatX* __restrict__ wte, const floatX* __restrict__ wpe, int B,
                                           int T, int C) {
    const int groups_per_row = CEIL_DIV(C, GROUP);
    const size_t g = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (size_t)B * T * groups_per_row) {
        return;
    }
    const size_t bt = g / groups_per_row;
    const int c = (g % groups_per_row) * GROUP;  // first channel of this thread's group
    const int t = bt % T;
    const fgroup token = load_group(wte + (size_t)inp[bt] * C, c, C);
    const fgroup position = load_group(wpe + (size_t)t * C, c, C);
    fgroup o;
    for (int k = 0; k < GROUP; k++) {
        o.v[k] = token.v[k] + position.v[k];
    }
    store_group(out + bt * C, c, C, o);
}

// dwte: (Vp, C) accumulates; dout: (B, T, C); order: (B*T) the positions sorted by token, stable; inp: (B, T).
// grid: CEIL_DIV(C, block), block: any (256). Thread c owns column c of dwte.
extern "C" __global__ void encoder_backward_dwte(floatX* dwte, const floatX* __restrict__ dout,
                                                 const unsigned int* __restrict__ order,
                                                 const unsigned int* __restrict__ inp, int B, int T, int C) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) {
        return;
    }
    const int BT = B * T;
    float sum = 0.0f;
    for (int i = 0; i < BT; i++) {
        const unsigned int bt = order[i];
        const unsigned int token = inp[bt];
        sum += to_float(dout[(size_t)bt * C + c]);
        if (i + 1 == BT || inp[order[i + 1]] != token) {  // the last position of this token's run
            floatX* d = dwte + (size_t)token * C + c;
            *d = from_float<floatX>(to_float(*d) + sum);
            sum = 0.0f;
        }
    }
}

// dwpe: (maxT, C) accumulates (rows 0..T); dout: (B, T, C).
// grid: CEIL_DIV(T*C, block), block: any (256). Thread (t, c) owns dwpe[t, c].
extern "C" __global__ void encoder_backward_dwpe(floatX* dwpe, const floatX* __restrict__ dout, int B, int T, int C) {
    const int tc = blockIdx.x * blockDim.x + threadIdx.x;
    if (tc >= T * C) {
        return;
    }
    float sum = to_float(dwpe[tc]);
    for (int b = 0; b < B; b++) {
        sum += to_float(dout[(size_t)b * T * C + tc]);
    }
    dwpe[tc] = from_float<floatX>(sum);
}
