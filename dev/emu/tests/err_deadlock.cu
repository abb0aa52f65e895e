// Error: a cycle of waits. Lanes 0-15 wait in a full-warp __syncwarp, lanes 16-31 in a __syncthreads that
// lanes 0-15 never reach. Nothing is wrong at any single call; only the scheduler can see it.
#include <cuda_runtime.h>
#include "check.h"

static const int kLine = __LINE__ + 3;  // where thread 0 waits
__global__ void cycle(int* out) {
    if (threadIdx.x < 16) {
        __syncwarp();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}

int main() {
    static int out[32];
    LAUNCH_FAILS(kLine, "deadlock", cycle, 1, 32, 0, out);
    CHECK(std::strstr(g_err, "thread (0,0,0)") != nullptr, "names thread 0");
    expect_usable_after_error();
    return finish("err_deadlock");
}
