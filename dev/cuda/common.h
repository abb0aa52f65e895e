// common.h: the host-side plumbing every dev/cuda study shares, so that each study reads top to bottom as CPU
// reference, kernel versions, main.
//
// The same source builds two ways:
//   nvcc -I kernels ...                                    for a GPU: validate every version, then time it;
//   g++ -x c++ -DLLMRS_EMU -I dev/emu/include -I dev/emu -I kernels ...
//                                                          for the CPU, each CUDA thread a fiber of dev/emu:
//                                                          validate every version at small shapes, no timing.
// The two differ in launching (the emulator has no <<<>>>: LAUNCH below hides it) and in timing (no cudaEvent on
// the emulator, and its times would say nothing about a GPU). Device-side helpers (WARP_SIZE, CEIL_DIV, the warp
// and block reductions, DYNAMIC_SHARED) come from the mainline's kernels/common.cuh.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <cuda_runtime.h>

#include "common.cuh"

#ifdef LLMRS_EMU
static constexpr bool ON_EMULATOR = true;
#else
static constexpr bool ON_EMULATOR = false;
#endif

// ---------------------------------------------------------------------------------------------------------------
// Errors: any failing CUDA call ends the program with the call, file and line.

inline void cuda_check(cudaError_t err, const char* call, const char* file, int line) {
    if (err != cudaSuccess) {
        fprintf(stderr, "%s:%d: %s failed: %s\n", file, line, call, cudaGetErrorString(err));
        exit(1);
    }
}
#define cudaCheck(call) cuda_check((call), #call, __FILE__, __LINE__)

// ---------------------------------------------------------------------------------------------------------------
// Launching: LAUNCH(kernel, grid, block, shared_bytes, args...) means kernel<<<grid, block, shared_bytes>>>(args...)
// on a GPU and emu::launch on the emulator. Either way a launch that fails ends the program with the kernel's name
// (on the emulator with its one-line report: block, thread, source line).

template <class... P, class... A>
inline void launch_kernel(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t shared_bytes,
                          A... args) {
#ifdef LLMRS_EMU
    char err[1024];
    if (emu::launch(name, kernel, grid, block, shared_bytes, err, sizeof err, args...) != 0) {
        fprintf(stderr, "launch of %s failed: %s\n", name, err);
        exit(1);
    }
#else
    kernel<<<grid, block, shared_bytes>>>(args...);
    cuda_check(cudaGetLastError(), name, __FILE__, __LINE__);
#endif
}
#define LAUNCH(kernel, grid, block, shared_bytes, ...) \
    launch_kernel(#kernel, kernel, grid, block, shared_bytes, __VA_ARGS__)

// Streaming multiprocessors, for kernels that size their grid to what the GPU holds at once. The emulator
// pretends to have 2, so that such a kernel's grid-stride loop goes round more than once even at small shapes.
inline int sm_count() {
#ifdef LLMRS_EMU
    return 2;
#else
    int device = 0, count = 0;
    cudaCheck(cudaGetDevice(&device));
    cudaCheck(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
    return count;
#endif
}

// ---------------------------------------------------------------------------------------------------------------
// Inputs: a small deterministic generator (xorshift64*), so every run and both builds see the same numbers.

struct Rng {
    uint64_t state;
    explicit Rng(uint64_t seed) : state(seed * 0x9E3779B97F4A7C15ull + 1) {}
    uint32_t next_u32() {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        return (uint32_t)((state * 0x2545F4914F6CDD1Dull) >> 32);
    }
    // Uniform in [lo, hi): the top 24 bits (a float's mantissa) times 2^-24.
    float uniform(float lo, float hi) { return lo + (hi - lo) * (next_u32() >> 8) * (1.0f / 16777216.0f); }
};

inline std::vector<float> random_floats(Rng& rng, size_t n, float lo, float hi) {
    std::vector<float> v(n);
    for (float& x : v) {
        x = rng.uniform(lo, hi);
    }
    return v;
}

// ---------------------------------------------------------------------------------------------------------------
// Device memory.

template <class T>
inline T* device_alloc(size_t n) {
    T* p = nullptr;
    cudaCheck(cudaMalloc(&p, n * sizeof(T)));
    return p;
}

template <class T>
inline T* to_device(const std::vector<T>& host) {
    T* p = device_alloc<T>(host.size());
    cudaCheck(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
    return p;
}

// ---------------------------------------------------------------------------------------------------------------
// Validation: every element of a device buffer against the CPU reference. An element passes when
// |gpu - cpu| <= atol + rtol * |cpu| (a NaN never does). Prints the largest error, and the first few failures;
// returns whether all passed.

inline bool validate(const char* what, const float* device, const float* reference, size_t n, float atol,
                     float rtol) {
    std::vector<float> got(n);
    cudaCheck(cudaDeviceSynchronize());
    cudaCheck(cudaMemcpy(got.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost));
    const int max_reported = 5;
    size_t failures = 0;
    double max_err = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double err = fabs((double)got[i] - (double)reference[i]);
        const bool ok = err <= atol + rtol * fabs((double)reference[i]);
        if (!ok) {
            if (failures < (size_t)max_reported) {
                printf("    %s[%zu]: gpu %.9g, cpu %.9g\n", what, i, got[i], reference[i]);
            }
            failures++;
        }
        if (!(err <= max_err)) {
            max_err = err;  // a NaN error sticks, so it shows in the summary
        }
    }
    printf("  %-8s max |gpu - cpu| %-10.3g tolerance %.0e + %.0e |cpu|  %s", what, max_err, atol, rtol,
           failures == 0 ? "ok\n" : "FAILED");
    if (failures != 0) {
        printf(" (%zu of %zu elements)\n", failures, n);
    }
    return failures == 0;
}

// ---------------------------------------------------------------------------------------------------------------
// Timing: the mean time of `repeats` runs of run() in ms, each timed alone with CUDA events after prepare() (which
// restores inputs a kernel overwrote) and after flushing the L2 cache, so that a kernel whose inputs are smaller
// than L2 (H100: 50 MB) is not credited with bandwidth it would not have in training. NaN on the emulator.

#ifndef LLMRS_EMU
inline void flush_l2() {
    static char* buffer = nullptr;
    static size_t bytes = 0;
    if (buffer == nullptr) {
        int device = 0, l2 = 0;
        cudaCheck(cudaGetDevice(&device));
        cudaCheck(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device));
        bytes = 2 * (size_t)l2;  // writing twice the L2 size leaves none of the kernel's data there
        buffer = device_alloc<char>(bytes);
    }
    cudaCheck(cudaMemset(buffer, 0, bytes));
}
#endif

template <class Prepare, class Run>
inline float time_ms(int repeats, Prepare prepare, Run run) {
#ifdef LLMRS_EMU
    (void)repeats;
    (void)prepare;
    (void)run;
    return NAN;
#else
    cudaEvent_t start, stop;
    cudaCheck(cudaEventCreate(&start));
    cudaCheck(cudaEventCreate(&stop));
    float total_ms = 0.0f;
    for (int i = 0; i < repeats; i++) {
        prepare();
        flush_l2();
        cudaCheck(cudaEventRecord(start));
        run();
        cudaCheck(cudaEventRecord(stop));
        cudaCheck(cudaEventSynchronize(stop));
        float ms = 0.0f;
        cudaCheck(cudaEventElapsedTime(&ms, start, stop));
        total_ms += ms;
    }
    cudaCheck(cudaEventDestroy(start));
    cudaCheck(cudaEventDestroy(stop));
    return total_ms / repeats;
#endif
}

// One line of the benchmark: the time, and the rate in `unit` (GB/s or GFLOP/s) given `amount_g` (GB or GFLOP) per
// run. Nothing on the emulator, whose studies say "(on the emulator: no timing)" in their first line.
inline void print_time(float ms, double amount_g, const char* unit) {
    if (!std::isnan(ms)) {
        printf("  time     %.4f ms  %.1f %s\n", ms, amount_g / (ms * 1e-3), unit);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The command line: `./study` runs every version, `./study 3` only version 3.

inline int selected_version(int argc, char** argv, int num_versions) {
    if (argc < 2) {
        return 0;
    }
    char* end = nullptr;
    const long v = strtol(argv[1], &end, 10);
    if (argc > 2 || *end != '\0' || v < 1 || v > num_versions) {
        fprintf(stderr, "usage: %s [version 1..%d]  (without a version: all of them)\n", argv[0], num_versions);
        exit(2);
    }
    return (int)v;
}

// The last line of every study, and its exit status: 0 when every version that ran matched the CPU.
inline int report(const char* study, int failed, int ran) {
    if (failed == 0) {
        printf("%s: %d of %d versions match the CPU reference\n", study, ran, ran);
        return 0;
    }
    printf("%s: FAILED, %d of %d versions differ from the CPU reference\n", study, failed, ran);
    return 1;
}
