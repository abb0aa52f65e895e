// Error: launch configurations CUDA refuses (no thread ever runs, so the report names only the kernel): blocks of
// 0 or 1025 threads, an empty grid, more dynamic shared memory than any GPU grants.
#include <cuda_runtime.h>
#include "check.h"

__global__ void noop(int* x) { x[0] = 1; }

static void expect_refused(dim3 grid, dim3 block, size_t smem, const char* what) {
    int x = 0;
    int rc = ::emu::launch("noop", noop, grid, block, smem, g_err, sizeof g_err, &x);
    std::printf("  report: %s\n", g_err);
    CHECK(rc != 0 && rc != -1, "rc %d", rc);
    CHECK(std::strncmp(g_err, "kernel noop: ", 13) == 0, "report names the kernel");
    CHECK(std::strstr(g_err, what) != nullptr, "report says '%s'", what);
    CHECK(x == 0, "no thread ran");
}

int main() {
    expect_refused(1, 0, 0, "invalid block size");
    expect_refused(1, 1025, 0, "invalid block size");
    expect_refused(1, dim3(32, 32, 2), 0, "invalid block size");
    expect_refused(dim3(0, 1, 1), 32, 0, "invalid grid size");
    expect_refused(1, 32, 300 * 1024, "dynamic shared memory");
    expect_usable_after_error();
    int x = 0;
    LAUNCH_OK(noop, 1, 1024, 227 * 1024, &x);
    return finish("err_launch_config");
}
