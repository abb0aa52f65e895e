// Error: a block of 48 threads has a second warp of 16 lanes; a full-warp mask there names lanes that do not exist.
#include <cuda_runtime.h>
#include "check.h"

static const int kLine = __LINE__ + 2;
__global__ void partial_warp(float* x) {
    x[threadIdx.x] = __shfl_down_sync(0xffffffffu, float(threadIdx.x), 1);
}

int main() {
    static float x[48];
    LAUNCH_FAILS(kLine, "do not exist", partial_warp, 1, 48, 0, x);
    CHECK(std::strstr(g_err, "thread (32,0,0)") != nullptr, "blames the first lane of the partial warp");
    expect_usable_after_error();
    return finish("err_shfl_missing_lanes");
}
