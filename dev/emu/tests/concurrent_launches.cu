// Launches from several host threads at once (as the Rust test harness does): each runs its blocks on its own OS
// thread, static __shared__ arrays are per OS thread, and an error in one thread's launch leaves the others alone.
#include <cuda_runtime.h>
#include <thread>
#include <vector>
#include "check.h"

__global__ void block_sum(int* out, int bias) {
    __shared__ int partial[128];
    partial[threadIdx.x] = int(threadIdx.x) + bias;
    __syncthreads();
    for (int stride = 64; stride > 0; stride /= 2) {
        if (int(threadIdx.x) < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
    if (bias < 0 && blockIdx.x == 2) __trap();  // the failing host thread's launches
}

int main() {
    const int host_threads = 4, launches = 30, blocks = 8;
    std::vector<int> bad(host_threads, 0);
    std::vector<std::thread> pool;
    for (int h = 0; h < host_threads; h++) {
        pool.emplace_back([h, &bad] {
            char err[512];
            std::vector<int> out(blocks);
            const int bias = h == 3 ? -1 : h;  // host thread 3's launches all fail
            for (int i = 0; i < launches; i++) {
                int rc = ::emu::launch("block_sum", block_sum, blocks, 128, 0, err, sizeof err, out.data(), bias);
                if ((rc != 0) != (bias < 0)) bad[h]++;
                if (rc == 0)
                    for (int b = 0; b < blocks; b++) bad[h] += out[b] != 127 * 128 / 2 + 128 * bias;
            }
        });
    }
    for (auto& t : pool) t.join();
    for (int h = 0; h < host_threads; h++) CHECK(bad[h] == 0, "host thread %d: %d wrong", h, bad[h]);
    return finish("concurrent_launches");
}
