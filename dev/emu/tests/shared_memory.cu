// Dynamic shared memory through EMU_DYNAMIC_SHARED (what kernels/common.cuh's DYNAMIC_SHARED expands to): one
// buffer per block, shared by its threads, poisoned with NaN at block start (EMU_POISON=0 turns that off), and
// separate for blocks running at the same time on different OS threads.
#include <cuda_runtime.h>
#include <cmath>
#include <cstdlib>
#include "check.h"
#define DYNAMIC_SHARED(T, name) EMU_DYNAMIC_SHARED(T, name)

__global__ void reverse_rows(float* out, const float* in, int n) {
    DYNAMIC_SHARED(float, buf);  // (n) floats
    const float* row = in + blockIdx.x * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = row[i];
    __syncthreads();
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[blockIdx.x * n + i] = buf[n - 1 - i];
}

// reads shared memory that nobody wrote: NaN under poisoning
__global__ void read_unwritten(float* out) {
    DYNAMIC_SHARED(float, buf);
    __shared__ float fixed[32];
    fixed[threadIdx.x] = 1.0f;
    __syncthreads();
    out[threadIdx.x] = buf[threadIdx.x] + fixed[31 - threadIdx.x];
}

int main() {
    const int rows = 8, n = 300;
    static float in[rows * n], out[rows * n];
    for (int i = 0; i < rows * n; i++) in[i] = float(i);
    for (const char* threads : {"1", "2"}) {
        setenv("EMU_THREADS", threads, 1);
        LAUNCH_OK(reverse_rows, rows, 64, n * sizeof(float), out, in, n);
        int bad = 0;
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < n; i++) bad += out[r * n + i] != in[r * n + n - 1 - i];
        CHECK(bad == 0, "EMU_THREADS=%s: %d wrong", threads, bad);
    }
    unsetenv("EMU_THREADS");

    static float u[32];
    LAUNCH_OK(read_unwritten, 1, 32, 32 * sizeof(float), u);
    CHECK(std::isnan(u[0]) && std::isnan(u[31]), "poisoned: %g %g", u[0], u[31]);
    setenv("EMU_POISON", "0", 1);
    LAUNCH_OK(read_unwritten, 1, 32, 32 * sizeof(float), u);
    CHECK(!std::isnan(u[0]), "EMU_POISON=0: %g", u[0]);
    unsetenv("EMU_POISON");
    return finish("shared_memory");
}
