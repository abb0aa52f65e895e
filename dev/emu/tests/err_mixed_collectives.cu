// Error: lanes of one warp meet with the same mask in different collectives (a ballot and a shuffle).
#include <cuda_runtime.h>
#include "check.h"

static const int kLine = __LINE__ + 5;  // the shuffle, reached after the first lanes wait in the ballot
__global__ void mixed(unsigned* out) {
    if (threadIdx.x % 2 == 0) {
        out[threadIdx.x] = __ballot_sync(0xffffffffu, 1);
    } else {
        out[threadIdx.x] = __shfl_sync(0xffffffffu, 1u, 0);
    }
}

int main() {
    static unsigned out[32];
    LAUNCH_FAILS(kLine, "different collectives", mixed, 1, 32, 0, out);
    CHECK(std::strstr(g_err, "thread (1,0,0)") != nullptr, "blames lane 1");
    expect_usable_after_error();
    return finish("err_mixed_collectives");
}
