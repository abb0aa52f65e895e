// __syncthreads and its counting forms, a block reduction through static __shared__ memory in a 3-D block,
// threads that exit before a barrier (they no longer count), and the same results in EMU_SCHED=rev order.
#include <cuda_runtime.h>
#include <cstdlib>
#include "check.h"

__global__ void block_sum(int* out) {
    __shared__ int partial[256];
    const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);  // 0..255
    partial[t] = t + int(blockIdx.x);
    __syncthreads();
    for (int stride = 128; stride > 0; stride /= 2) {
        if (t < stride) partial[t] += partial[t + stride];
        __syncthreads();
    }
    const int count = __syncthreads_count(t % 3 == 0);
    const int all = __syncthreads_and(t < 256);
    const int any = __syncthreads_or(t == 255);
    if (t == 0) {
        out[blockIdx.x * 4 + 0] = partial[0];
        out[blockIdx.x * 4 + 1] = count;
        out[blockIdx.x * 4 + 2] = all;
        out[blockIdx.x * 4 + 3] = any;
    }
}

__global__ void early_exit(float* x, int n) {
    __shared__ float s[64];
    if (int(threadIdx.x) >= n) return;  // these threads never reach the barrier
    s[threadIdx.x] = float(threadIdx.x);
    __syncthreads();
    x[threadIdx.x] = s[n - 1 - threadIdx.x];
}

int main() {
    for (const char* sched : {"fwd", "rev"}) {
        setenv("EMU_SCHED", sched, 1);
        static int out[3 * 4];
        LAUNCH_OK(block_sum, 3, dim3(8, 4, 8), 0, out);
        for (int b = 0; b < 3; b++) {
            CHECK(out[b * 4] == 255 * 256 / 2 + 256 * b, "%s: block %d sum %d", sched, b, out[b * 4]);
            CHECK(out[b * 4 + 1] == 86 && out[b * 4 + 2] == 1 && out[b * 4 + 3] == 1, "%s: count/and/or %d %d %d",
                  sched, out[b * 4 + 1], out[b * 4 + 2], out[b * 4 + 3]);
        }
        static float x[64];
        LAUNCH_OK(early_exit, 1, 64, 0, x, 40);
        CHECK(x[0] == 39 && x[39] == 0, "%s: early exit %g %g", sched, x[0], x[39]);
    }
    unsetenv("EMU_SCHED");
    return finish("barriers");
}
