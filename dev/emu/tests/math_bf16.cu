// Math intrinsics the ML kernels use, FLT_MAX/INFINITY, cache-hinted loads and stores, and bf16 conversion
// (round to nearest, ties to even; NaN stays NaN).
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cfloat>
#include <cmath>
#include "check.h"

__global__ void intrinsics(float* out, const float* in) {
    const float x = __ldg(in + threadIdx.x);
    float r = __expf(x) + expf(-x) + logf(x + 2.0f) + tanhf(x) + rsqrtf(x + 1.0f) + sqrtf(x + 1.0f);
    r += fmaxf(x, -FLT_MAX) - fminf(x, INFINITY) + __fdividef(x, 2.0f) + __ldcs(in + threadIdx.x);
    __stcs(out + threadIdx.x, r);
}

__global__ void to_bf16(__nv_bfloat16* out, const float* in) { out[threadIdx.x] = __float2bfloat16(in[threadIdx.x]); }

int main() {
    static float in[32], out[32];
    for (int i = 0; i < 32; i++) in[i] = float(i) * 0.1f;
    LAUNCH_OK(intrinsics, 1, 32, 0, out, in);
    for (int i = 0; i < 32; i++) {
        const float x = in[i];
        const float want = expf(x) + expf(-x) + logf(x + 2) + tanhf(x) + 1 / sqrtf(x + 1) + sqrtf(x + 1) + x / 2 + x;
        CHECK(std::fabs(out[i] - want) <= 1e-5f * std::fabs(want), "i=%d got %g want %g", i, out[i], want);
    }

    // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0); 1 + 3*2^-8 rounds up.
    static float v[4] = {1.0f + 1.0f / 256, 1.0f + 3.0f / 256, -2.5f, NAN};
    static __nv_bfloat16 b[4];
    LAUNCH_OK(to_bf16, 1, 4, 0, b, v);
    CHECK(__bfloat162float(b[0]) == 1.0f, "tie to even: %g", __bfloat162float(b[0]));
    CHECK(__bfloat162float(b[1]) == 1.0f + 4.0f / 256, "round up: %g", __bfloat162float(b[1]));
    CHECK(__bfloat162float(b[2]) == -2.5f, "exact: %g", __bfloat162float(b[2]));
    CHECK(std::isnan(__bfloat162float(b[3])), "NaN: %g", __bfloat162float(b[3]));
    __nv_bfloat162 pair = __floats2bfloat162_rn(0.5f, 3.0f);
    CHECK(__low2float(pair) == 0.5f && __high2float(pair) == 3.0f, "bfloat162");
    return finish("math_bf16");
}
