// Atomics on int, unsigned and float from many blocks, once on the calling thread and once spread over 2 OS
// threads (EMU_THREADS=2), where they must be real atomics.
#include <cuda_runtime.h>
#include <cstdlib>
#include "check.h"

__global__ void hammer(int* i, unsigned* u, float* f, int* imax, float* fmax_, int* cas_wins, int* exch) {
    const int g = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(i, 1);
    atomicAdd(u, 2u);
    atomicAdd(f, 0.5f);
    atomicMax(imax, g);
    atomicMax(fmax_, float(g) * 0.25f);
    if (atomicCAS(cas_wins, 0, g + 1) == 0) atomicAdd(cas_wins + 1, 1);  // exactly one thread wins
    atomicExch(exch, 7);
}

int main() {
    for (const char* threads : {"1", "2"}) {
        setenv("EMU_THREADS", threads, 1);
        int i = 0, imax = -1, cas[2] = {0, 0}, exch = 0;
        unsigned u = 0;
        float f = 0, fm = -1;
        LAUNCH_OK(hammer, 16, 128, 0, &i, &u, &f, &imax, &fm, cas, &exch);
        CHECK(i == 2048 && u == 4096 && f == 1024.0f, "EMU_THREADS=%s: sums %d %u %g", threads, i, u, f);
        CHECK(imax == 2047 && fm == 2047 * 0.25f, "EMU_THREADS=%s: max %d %g", threads, imax, fm);
        CHECK(cas[0] >= 1 && cas[1] == 1 && exch == 7, "EMU_THREADS=%s: cas %d %d exch %d", threads, cas[0], cas[1], exch);
    }
    return finish("atomics");
}
