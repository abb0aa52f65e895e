// Error: the two halves of a block wait at two different __syncthreads.
#include <cuda_runtime.h>
#include "check.h"

static const int kLine = __LINE__ + 6;  // the __syncthreads reached second (threads 16..63 in fwd order)
__global__ void divergent(float* x) {
    if (threadIdx.x < 16) {
        x[threadIdx.x] = 1;
        __syncthreads();
    } else {
        __syncthreads();
    }
}

int main() {
    static float x[64];
    LAUNCH_FAILS(kLine, "divergent __syncthreads", divergent, 2, 64, 0, x);
    CHECK(std::strstr(g_err, "block (0,0,0) thread (16,0,0)") != nullptr, "blames thread 16 of block 0");
    expect_usable_after_error();
    return finish("err_divergent_syncthreads");
}
