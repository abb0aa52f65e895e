// Under -fsanitize=address (run_tests.sh g++ -fsanitize=address): writing one float past the end of dynamic shared
// memory is reported by ASan, at the kernel's line, followed by the emulator's line naming the CUDA thread. The
// faulty launch runs in a forked child, since ASan ends the process. Without ASan there is nothing to check.
#include <cuda_runtime.h>
#include <sys/wait.h>
#include <unistd.h>
#include <string>
#include "check.h"

__global__ void one_past_the_end(int n) {
    EMU_DYNAMIC_SHARED(float, buf);  // (n) floats
    if (threadIdx.x == 3) buf[n] = 1.0f;
}

int main() {
#ifndef EMU_ASAN
    std::printf("asan_catches_overflow: not built with -fsanitize=address, nothing to check\n");
    return 0;
#else
    int fds[2];
    CHECK(pipe(fds) == 0, "pipe");
    pid_t child = fork();
    if (child == 0) {
        dup2(fds[1], 2);
        ::emu::launch("one_past_the_end", one_past_the_end, 2, 32, 16 * sizeof(float), g_err, sizeof g_err, 16);
        _exit(0);  // not reached when ASan sees the overflow
    }
    close(fds[1]);
    std::string report;
    char buf[4096];
    for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) report.append(buf, size_t(n));
    int status = 0;
    waitpid(child, &status, 0);
    CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 0), "the child survived the overflow");
    CHECK(report.find("heap-buffer-overflow") != std::string::npos, "no ASan report:\n%s", report.c_str());
    CHECK(report.find("asan_catches_overflow.cu:12") != std::string::npos, "report lacks the kernel line");
    CHECK(report.find("kernel one_past_the_end block (0,0,0) thread (3,0,0)") != std::string::npos,
          "report lacks the CUDA thread");
    return finish("asan_catches_overflow");
#endif
}
