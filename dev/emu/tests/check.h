// check.h: the few helpers the emulator's self-tests share. A test is a small program: it launches kernels through
// emu::launch (the same path as emu::launch_packed), checks results with CHECK, and exits non-zero on any failure.
#pragma once
#include <cstdio>
#include <cstring>
#include <cuda_runtime.h>

static int g_failures = 0;
#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            g_failures++;                                                  \
            std::printf("  %s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            std::printf(__VA_ARGS__);                                      \
            std::printf("\n");                                             \
        }                                                                  \
    } while (0)

static char g_err[512];

// Launches a kernel that must succeed.
#define LAUNCH_OK(kernel, grid, block, smem, ...)                                                         \
    do {                                                                                                  \
        int rc_ = ::emu::launch(#kernel, kernel, grid, block, smem, g_err, sizeof g_err, __VA_ARGS__);   \
        CHECK(rc_ == 0, "launch of %s returned %d: %s", #kernel, rc_, g_err);                             \
    } while (0)

// Launches a kernel that must fail, and checks that the one-line report names the kernel, a block, a thread,
// `file:line` (line > 0 means a source line of this test is expected) and contains `what`.
#define LAUNCH_FAILS(line, what, kernel, grid, block, smem, ...)                                          \
    do {                                                                                                  \
        int rc_ = ::emu::launch(#kernel, kernel, grid, block, smem, g_err, sizeof g_err, __VA_ARGS__);   \
        expect_report(rc_, #kernel, __FILE__, line, what);                                                          \
    } while (0)

inline void expect_report(int rc, const char* kernel, const char* file, int line, const char* what) {
    std::printf("  report: %s\n", g_err);
    CHECK(rc != 0 && rc != -1, "launch of %s returned %d, wanted a positive error code", kernel, rc);
    char want[128];
    std::snprintf(want, sizeof want, "kernel %s block (", kernel);
    CHECK(std::strstr(g_err, want) != nullptr, "report does not start with '%s'", want);
    CHECK(std::strstr(g_err, ") thread (") != nullptr, "report names no thread");
    if (line > 0) {
        std::snprintf(want, sizeof want, "%s:%d:", file, line);
        CHECK(std::strstr(g_err, want) != nullptr, "report does not name %s", want);
    }
    CHECK(std::strstr(g_err, what) != nullptr, "report does not say '%s'", what);
    CHECK(std::strchr(g_err, '\n') == nullptr, "report is more than one line");
}

// A kernel that must run fine after any failed launch: each thread writes its global index.
__global__ void after_error_ok(int* out) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    __syncthreads();
    out[i] = __shfl_xor_sync(0xffffffffu, i, 1) ^ 1;
}
inline void expect_usable_after_error() {
    static int out[4 * 64];
    LAUNCH_OK(after_error_ok, 4, 64, 0, out);
    for (int i = 0; i < 4 * 64; i++) CHECK(out[i] == i, "after an error: out[%d] = %d", i, out[i]);
}

inline int finish(const char* name) {
    std::printf("%s: %s\n", name, g_failures ? "FAIL" : "ok");
    return g_failures != 0;
}
