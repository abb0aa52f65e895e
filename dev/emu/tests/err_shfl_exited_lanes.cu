// Error: a full-warp shuffle after half of the warp has returned, in both orders: the mask names lanes that have
// already exited, or a lane exits while the others already wait for it.
#include <cuda_runtime.h>
#include "check.h"

static const int kLine = __LINE__ + 3;
__global__ void half_warp_returns(float* x) {
    if (threadIdx.x >= 16) return;
    x[threadIdx.x] = __shfl_xor_sync(0xffffffffu, x[threadIdx.x], 1);
}

int main() {
    static float x[32];
    // rev order: lanes 31..16 exit first, then lane 15 shuffles with a full mask
    setenv("EMU_SCHED", "rev", 1);
    LAUNCH_FAILS(kLine, "names lanes that have exited", half_warp_returns, 1, 32, 0, x);
    CHECK(std::strstr(g_err, "thread (15,0,0)") != nullptr, "blames lane 15");
    expect_usable_after_error();
    // fwd order: lanes 0..15 wait in the shuffle, then lane 16 exits
    setenv("EMU_SCHED", "fwd", 1);
    LAUNCH_FAILS(kLine, "thread exited while other lanes wait for it", half_warp_returns, 1, 32, 0, x);
    CHECK(std::strstr(g_err, "thread (16,0,0)") != nullptr, "blames lane 16");
    expect_usable_after_error();
    return finish("err_shfl_exited_lanes");
}
