// Error: a failing assert() inside a kernel is a launch error, not an abort of the process.
#include <cuda_runtime.h>
#include <cassert>
#include "check.h"

static const int kLine = __LINE__ + 2;
__global__ void positive_only(const int* x) {
    assert(x[blockIdx.x * blockDim.x + threadIdx.x] >= 0);
}

int main() {
    static int x[128];
    for (int i = 0; i < 128; i++) x[i] = i == 77 ? -1 : i;
    LAUNCH_FAILS(kLine, "assert(x[blockIdx.x * blockDim.x + threadIdx.x] >= 0) failed", positive_only, 2, 64, 0, x);
    CHECK(std::strstr(g_err, "block (1,0,0) thread (13,0,0)") != nullptr, "names block 1 thread 13");
    expect_usable_after_error();
    return finish("err_assert");
}
