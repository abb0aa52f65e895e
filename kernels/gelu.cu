// GELU, tanh approximation (GPT-2's "gelu_new"), mirrors src/cpu/gelu.rs:
//   gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
// The backward pass differentiates that formula directly (it needs the input, not the output) and accumulates.
//
// Thread mapping: one thread per element. Floats moved per call: forward 2 N (read inp, write out); backward 4 N
// (read inp, dout and dinp, write dinp).
#include "common.cuh"

#define GELU_SCALE 0.7978846f  // sqrt(2 / pi)
#define GELU_CUBIC 0.044715f

// out, inp: (N). grid: CEIL_DIV(N, block), block: any (256).
extern "C" __global__ void gelu_forward(float* out, const float* __restrict__ inp, int N) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N) {
        return;
    }
    const float x = inp[i];
    const float cube = GELU_CUBIC * x * x * x;
    out[i] = 0.5f * x * (1.0f + tanhf(GELU_SCALE * (x + cube)));
}

// dinp: (N) accumulates; inp, dout: (N). grid: CEIL_DIV(N, block), block: any (256).
extern "C" __global__ void gelu_backward(float* dinp, const float* __restrict__ inp, const float* __restrict__ dout,
                                         int N) {
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)N) {
        return;
    }
    const float x = inp[i];
    const float cube = GELU_CUBIC * x * x * x;
    const float tanh_out = tanhf(GELU_SCALE * (x + cube));
    const float sech2 = 1.0f - tanh_out * tanh_out;
    const float local_grad =
        0.5f * (1.0f + tanh_out) + x * 0.5f * sech2 * GELU_SCALE * (1.0f + 3.0f * GELU_CUBIC * x * x);
    dinp[i] += local_grad * dout[i];
}
