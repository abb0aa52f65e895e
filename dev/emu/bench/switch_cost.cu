// switch_cost.cu: what the emulator costs per CUDA thread, per __syncthreads and per shuffle (ns, per thread).
//   g++ -std=c++17 -O2 -I dev/emu/include -I dev/emu -DLLMRS_EMU -x c++ dev/emu/bench/switch_cost.cu -o /tmp/sc && /tmp/sc
#include <cuda_runtime.h>
#include <chrono>
#include <cstdio>

__global__ void empty(int* out) {
    if (threadIdx.x == 1000000) out[0] = 1;  // never true; keeps the kernel from being trivial
}
__global__ void barriers(int* out, int n) {
    for (int i = 0; i < n; i++) __syncthreads();
    if (threadIdx.x == 1000000) out[0] = 1;
}
__global__ void shuffles(int* out, int n) {
    int v = threadIdx.x;
    for (int i = 0; i < n; i++) v += __shfl_xor_sync(0xffffffffu, v, 1);
    if (v == 1) out[0] = v;
}

// Median of 5 runs of f, in ns.
template <class F>
static double time_ns(F f) {
    double t[5];
    for (double& x : t) {
        auto a = std::chrono::steady_clock::now();
        f();
        x = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - a).count();
    }
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++)
            if (t[j] < t[i]) std::swap(t[i], t[j]);
    return t[2];
}

int main() {
    static int out[1];
    static char err[512];
    const int blocks = 256, threads = 256, n = 100;
    const double nthreads = double(blocks) * threads;
    const double base = time_ns([&] { emu::launch("empty", empty, blocks, threads, 0, err, sizeof err, out); });
    const double bar = time_ns([&] { emu::launch("barriers", barriers, blocks, threads, 0, err, sizeof err, out, n); });
    const double shf = time_ns([&] { emu::launch("shuffles", shuffles, blocks, threads, 0, err, sizeof err, out, n); });
    std::printf("run a thread (empty kernel):   %6.1f ns per thread\n", base / nthreads);
    std::printf("__syncthreads:                 %6.1f ns per thread per barrier\n", (bar - base) / nthreads / n);
    std::printf("__shfl_xor_sync:               %6.1f ns per thread per shuffle\n", (shf - base) / nthreads / n);
    return 0;
}
