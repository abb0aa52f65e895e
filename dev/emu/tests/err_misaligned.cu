// Error: a 128-bit access at an address that is not 16-byte aligned, which a GPU faults on. Checked both through
// emu::check_aligned before a float4 cast (what kernels/common.cuh's helpers do) and through __ldcs / __stcs;
// the same accesses at aligned addresses run.
#include <cuda_runtime.h>
#include "check.h"

static const int kCastLine = __LINE__ + 3;
__global__ void float4_load_at(float* out, const float* in, int offset) {
    const float* p = in + offset + 4 * threadIdx.x;
    emu::check_aligned(p, sizeof(float4));
    const float4 v = *reinterpret_cast<const float4*>(p);
    out[threadIdx.x] = v.x + v.y + v.z + v.w;
}

static const int kLdcsLine = __LINE__ + 2;
__global__ void ldcs_at(float* out, const float* in, int offset) {
    const float4 v = __ldcs(reinterpret_cast<const float4*>(in + offset) + threadIdx.x);
    out[threadIdx.x] = v.x + v.y + v.z + v.w;
}

static const int kStcsLine = __LINE__ + 2;
__global__ void stcs_at(float* out, int offset) {
    __stcs(reinterpret_cast<float4*>(out + offset) + threadIdx.x, make_float4(1.0f, 2.0f, 3.0f, 4.0f));
}

int main() {
    alignas(16) static float in[4 * 32 + 4];
    alignas(16) static float out[4 * 32 + 4];
    for (int i = 0; i < 4 * 32 + 4; i++) in[i] = 1.0f;
    for (int offset = 1; offset < 4; offset++) {
        LAUNCH_FAILS(kCastLine, "misaligned address", float4_load_at, 1, 32, 0, out, in, offset);
        LAUNCH_FAILS(kLdcsLine, "misaligned address", ldcs_at, 1, 32, 0, out, in, offset);
        LAUNCH_FAILS(kStcsLine, "misaligned address", stcs_at, 1, 32, 0, out, offset);
        CHECK(std::strstr(g_err, "16-byte access") != nullptr, "the report names the access width: %s", g_err);
        expect_usable_after_error();
    }
    LAUNCH_OK(float4_load_at, 1, 32, 0, out, in, 4);
    CHECK(out[31] == 4.0f, "aligned float4 load: %g", out[31]);
    LAUNCH_OK(ldcs_at, 1, 32, 0, out, in, 0);
    CHECK(out[0] == 4.0f, "aligned __ldcs: %g", out[0]);
    LAUNCH_OK(stcs_at, 1, 32, 0, out, 4);
    CHECK(out[4] == 1.0f && out[4 * 32 + 3] == 4.0f, "aligned __stcs: %g %g", out[4], out[4 * 32 + 3]);
    return finish("err_misaligned");
}
