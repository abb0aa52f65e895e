// Error: __trap() in one thread of one block out of many, on the calling thread and with blocks spread over
// 2 OS threads; the report names the block and thread, and the other blocks stop being started.
#include <cuda_runtime.h>
#include <cstdlib>
#include "check.h"

static const int kLine = __LINE__ + 3;
__global__ void trap_in_block_5(int* out) {
    __syncthreads();
    if (blockIdx.x == 5 && threadIdx.x == 37) __trap();
    out[blockIdx.x * blockDim.x + threadIdx.x] = 1;
}

int main() {
    static int out[64 * 64];
    for (const char* threads : {"1", "2"}) {
        setenv("EMU_THREADS", threads, 1);
        LAUNCH_FAILS(kLine, "__trap() called", trap_in_block_5, 64, 64, 0, out);
        CHECK(std::strstr(g_err, "block (5,0,0) thread (37,0,0)") != nullptr, "EMU_THREADS=%s: names block 5 thread 37", threads);
        expect_usable_after_error();
    }
    return finish("err_trap");
}
