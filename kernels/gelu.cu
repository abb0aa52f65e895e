// GELU, tanh approximation (GPT-2's "gelu_new"), mirrors src/cpu/gelu.rs:
//   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// The backward pass differentiates that formula directly (it needs the input, not the output) and overwrites dinp
// (its only writer).
//
// Thread mapping: one thread per group of GROUP consecutive elements (4 floats or 8 bf16), moved with 128-bit
// loads and stores (common.cuh load_group/store_group; a view that starts off a 16-byte boundary, and the last
// group when N % GROUP != 0, take element accesses); arithmetic in float. Elements moved per call: forward 2 N
// (read inp, write out); backward 3 N (read inp and dout, write dinp): one 128-bit instruction per group of each.
#include "common.cuh"

#define GELU_SCALE 0.7978846f  // sqrt(2 / pi)
#define GELU_CUBIC 0.044715f

static __device__ __forceinline__ float gelu(float x) {
    const float cube = GELU_CUBIC * x * x * x;
    return 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + cube)));
}

// d gelu(x) / dx, through 0.5 (1 + tanh(u)) = s = sigmoid(2u) as src/cpu/gelu.rs: s + 2 x s (1 - s) du/dx, with
// 1 - s = e^(-2u) s. The tanh form's 1 + tanh(u) and 1 - tanh(u)^2 cancel in the tails (x < -4: an absolute error
// of 1e-6 on a gradient of 1e-5, which showed once dinp stopped being added to larger values). The exponent is
// clamped so that e^(-2u) stays finite (s then underflows towards 0 and 1 - s stays 1, not inf * 0).
static __device__ __forceinline__ float gelu_grad(float x) {
    const float u = GELU_SCALE * (x + GELU_CUBIC * x * x * x);
    const float e = expf(fminf(-2.0f * u, 88.0f));
    const float s = 1.0f / (1.0f + e);
    const float du_dx = GELU_SCALE * (1.0f + 3.0f * GELU_CUBIC * x * x);
    return s + 2.0f * x * s * (e * s) * du_dx;
}

// out, inp: (N). grid: CEIL_DIV(N, GROUP * block), block: any (256).
extern "C" __global__ void gelu_forward(floatX* out, const floatX* __restrict__ inp, int N) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * GROUP;
    if (i >= (size_t)N) {
        return;
    }
    const fgroup x = load_group(inp, i, N);
    fgroup o;
    for (int k = 0; k < GROUP; k++) {
        o.v[k] = gelu(x.v[k]);
    }
    store_group(out, i, N, o);
}

// dinp: (N) overwritten; inp, dout: (N). grid: CEIL_DIV(N, GROUP * block), block: any (256).
extern "C" __global__ void gelu_backward(floatX* dinp, const floatX* __restrict__ inp, const floatX* __restrict__ dout,
                                         int N) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * GROUP;
    if (i >= (size_t)N) {
        return;
    }
    const fgroup x = load_group(inp, i, N);
    const fgroup g = load_group(dout, i, N);
    fgroup d;
    for (int k = 0; k < GROUP; k++) {
        d.v[k] = gelu_grad(x.v[k]) * g.v[k];
    }
    store_group(dinp, i, N, d);
}
