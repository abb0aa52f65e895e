// cuda_emu.h: run CUDA C++ kernels on the CPU, for tests on machines without a GPU.
//
// Model (README.md has the long version):
//   - one CUDA thread = one fiber: its own small stack and a hand-written context switch;
//   - all fibers of one block run on ONE OS thread, so block-wide state (static __shared__ arrays, the barrier
//     counters) needs no locking and `thread_local` can stand in for `__shared__`;
//   - a fiber runs until it reaches a collective (__syncthreads, __syncwarp, a shuffle, a vote, a cg::reduce)
//     or exits; a collective completes when every thread it names has arrived, and the last one to arrive
//     computes everybody's result. Whatever cannot complete (a divergent barrier, a mask naming exited lanes,
//     a cycle of waits) is an error, reported with kernel, block, thread and source line;
//   - errors do not abort: emu::launch_packed returns non-zero with one line of text, and the failed launch's
//     fibers are simply abandoned (never resumed, no destructors run, their stacks reused by the next launch).
//
// Env (read at every launch): EMU_THREADS=n  OS threads that share a launch's blocks (default 1)
//                             EMU_SCHED=fwd|rev  order in which runnable fibers are resumed (default fwd)
//                             EMU_POISON=0  do not fill dynamic shared memory / cudaMalloc with 0xFF (NaN)
//                             EMU_STACK_KB=n  fiber stack size (default 64, 256 under ASan), read once
//
// x86-64 Linux, C++17, g++ >= 12 or clang++ >= 14; -fsanitize=address works (fiber switches are annotated).
#pragma once
#if !defined(__x86_64__) || !defined(__linux__)
#error "cuda_emu.h: x86-64 Linux only (the context switch is hand-written assembly)"
#endif

#include <atomic>
#include <cfloat>
#include <cmath>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>
#include <math.h>
#include <pthread.h>
#include <sys/mman.h>

#if !defined(EMU_ASAN) && defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#endif
#if !defined(EMU_ASAN) && defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// =====================================================================================================================
// CUDA types that kernels and their launchers name
// =====================================================================================================================
struct __attribute__((aligned(8))) float2 { float x, y; };
struct float3 { float x, y, z; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) int2 { int x, y; };
struct int3 { int x, y, z; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
struct __attribute__((aligned(8))) uint2 { unsigned x, y; };
struct uint3 { unsigned x, y, z; };
struct __attribute__((aligned(16))) uint4 { unsigned x, y, z, w; };
struct __attribute__((aligned(16))) double2 { double x, y; };
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return {x, y, z}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }

// bf16, kept minimal: storage is the top 16 bits of a float, conversion from float rounds to nearest even,
// arithmetic happens in float. NVIDIA's own cuda_bf16.h also works on the host (see README) if more is needed.
struct __nv_bfloat16 {
    uint16_t __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : __x(round_from(f)) {}
    operator float() const {
        uint32_t u = uint32_t(__x) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
    static uint16_t round_from(float f) {
        uint32_t u;
        std::memcpy(&u, &f, 4);
        if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN: keep it a (quiet) NaN
        u += 0x7fffu + ((u >> 16) & 1u);                                       // ties go to the even neighbour
        return uint16_t(u >> 16);
    }
};
struct __attribute__((aligned(4))) __nv_bfloat162 { __nv_bfloat16 x, y; };
typedef __nv_bfloat16 nv_bfloat16;
typedef __nv_bfloat162 nv_bfloat162;
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return float(b); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__nv_bfloat16(a), __nv_bfloat16(b)}; }
inline __nv_bfloat162 __float22bfloat162_rn(float2 f) { return {__nv_bfloat16(f.x), __nv_bfloat16(f.y)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 b) { return {float(b.x), float(b.y)}; }
inline float __low2float(__nv_bfloat162 b) { return float(b.x); }
inline float __high2float(__nv_bfloat162 b) { return float(b.y); }
inline __nv_bfloat16 operator+(__nv_bfloat16 a, __nv_bfloat16 b) { return float(a) + float(b); }
inline __nv_bfloat16 operator-(__nv_bfloat16 a, __nv_bfloat16 b) { return float(a) - float(b); }
inline __nv_bfloat16 operator*(__nv_bfloat16 a, __nv_bfloat16 b) { return float(a) * float(b); }
inline __nv_bfloat16 operator/(__nv_bfloat16 a, __nv_bfloat16 b) { return float(a) / float(b); }

typedef enum cudaError { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorMemoryAllocation = 2 } cudaError_t;
struct CUstream_st;
typedef CUstream_st* cudaStream_t;
enum cudaMemcpyKind {
    cudaMemcpyHostToHost,
    cudaMemcpyHostToDevice,
    cudaMemcpyDeviceToHost,
    cudaMemcpyDeviceToDevice,
    cudaMemcpyDefault
};

// Qualifiers: functions are ordinary C++ functions; __shared__ variables live once per OS thread, and since a
// block never leaves its OS thread, once per running block. (__noinline__ is left alone on purpose: defining it
// breaks libstdc++ headers that spell __attribute__((__noinline__)).)
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __grid_constant__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ thread_local /* at block scope thread_local implies static */
// What `extern __shared__ T name[];` means; kernels reach it through their own DYNAMIC_SHARED macro.
#define EMU_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::emu::detail::dynamic_smem())
static constexpr int warpSize = 32;

// =====================================================================================================================
// Context switch. Saves only the callee-saved integer registers: the compiler already treats everything else as
// clobbered by a call. MXCSR and the x87 control word are not switched (that made switches 2-2.5x dearer in the
// prototype); all fibers of an OS thread share them, copied from the launching thread (FTZ, rounding mode).
// Weak symbols, so every translation unit that includes this header may carry a copy.
// =====================================================================================================================
extern "C" void emu_ctx_switch(void** save_sp, void* new_sp);
extern "C" void emu_ctx_trampoline();
__asm__(
    ".pushsection .text\n"
    ".weak emu_ctx_switch\n.type emu_ctx_switch,@function\nemu_ctx_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n  ret\n"
    ".size emu_ctx_switch, .-emu_ctx_switch\n"
    // a new fiber's first switch "returns" here with its entry function in r13 and the argument in r12
    ".weak emu_ctx_trampoline\n.type emu_ctx_trampoline,@function\nemu_ctx_trampoline:\n"
    "  movq %r12, %rdi\n  callq *%r13\n  ud2\n"
    ".size emu_ctx_trampoline, .-emu_ctx_trampoline\n"
    ".popsection\n");

namespace emu {
namespace detail {

// The most dynamic shared memory any GPU grants one block (227 KiB on H100/H200, opt-in); more is a launch error.
constexpr size_t kMaxDynamicSmem = 227 * 1024;
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr size_t kMessageLen = 512;

enum State : int { RUNNABLE, WAIT_WARP, WAIT_BLOCK, DONE };
enum Coll : int { SHFL, SHFL_UP, SHFL_DOWN, SHFL_XOR, BALLOT, ALL, ANY, SYNCWARP, WMMA_LOAD, WMMA_STORE, WMMA_MMA };
inline const char* coll_name(int k) {
    static const char* const names[] = {"__shfl_sync",  "__shfl_up_sync", "__shfl_down_sync",
                                        "__shfl_xor_sync", "__ballot_sync", "__all_sync",
                                        "__any_sync",   "__syncwarp",     "wmma::load_matrix_sync",
                                        "wmma::store_matrix_sync", "wmma::mma_sync"};
    return names[k];
}

struct Fiber {
    void* sp = nullptr;          // saved stack pointer while suspended
    char* stack_lo = nullptr;    // usable stack is [stack_lo, stack_lo + stack_size), a guard page below
    size_t stack_size = 0;
    void* asan_fake = nullptr;   // ASan's fake-stack handle, kept across switches
    uint3 tid{};
    unsigned linear = 0, lane = 0, warp = 0;
    int state = DONE;
    bool exited = true;          // ran to its end last time (false: abandoned by a failed launch, or never run)
    // a collective's operand and result; 16 bytes covers every shuffled type up to float4
    alignas(16) unsigned char in[16], out[16];
    int arg = 0, width = 32;
    // where the fiber waits, for error reports
    int wait_line = 0;
    const char* wait_file = nullptr;
};

// A warp collective that some of its lanes have reached. Lanes are matched by mask: on Volta and later the two
// sides of a branch may each run their own collective with their own mask, so several can be pending at once.
struct Pending {
    unsigned mask, arrived;
    int kind, line;
    const char* file;
};
struct Warp {
    unsigned exist = 0;  // lanes that exist (the last warp of a block may be partial)
    unsigned live = 0;   // lanes that have not exited
    Pending pending[32];
    int npending = 0;
};

struct Launch {
    const char* name;
    dim3 grid, block;
    size_t smem;
    void (*invoke)(const void* closure);  // calls the kernel with the launch's arguments
    const void* closure;
    bool poison, reverse;
    uint32_t mxcsr;
    uint16_t fpucw;
    std::atomic<uint64_t> next_block{0};
    std::atomic<bool> failed{false};
    std::mutex message_mutex;
    char message[kMessageLen] = {0};  // the first error of the launch, one line
};

// Everything one OS thread needs to run blocks: the fibers (stacks kept from block to block and launch to launch)
// and the state of the block it is running.
struct Worker {
    std::vector<Fiber> fibers;
    std::vector<Warp> warps;
    std::vector<unsigned> order;     // resume order of the fibers (fwd or rev)
    Launch* launch = nullptr;
    uint3 block_idx{};
    unsigned nthreads = 0, live = 0;
    // __syncthreads: arrivals so far, predicate count, the barrier's source line (to catch divergence)
    unsigned arrived = 0, pred_count = 0;
    int bar_line = 0;
    const char* bar_file = nullptr;
    unsigned pos = 0;                // position in `order` of the fiber running in the current pass
    unsigned char* smem = nullptr;   // dynamic shared memory of the running block
    void* sched_sp = nullptr;        // the scheduler's own context (the OS thread's stack)
    void* sched_fake = nullptr;
    const void* sched_stack_lo = nullptr;
    size_t sched_stack_size = 0;
    bool failed = false;
    char message[kMessageLen] = {0};
    ~Worker() {
        for (Fiber& f : fibers)
            if (f.stack_lo) munmap(f.stack_lo - 4096, f.stack_size + 4096);
    }
};

inline thread_local Fiber* cur = nullptr;      // the fiber running on this OS thread, nullptr in the scheduler
inline thread_local Worker* tworker = nullptr;
inline thread_local uint3 t_blockIdx{};
inline thread_local dim3 t_blockDim, t_gridDim;

inline int env_int(const char* name, int fallback) {
    const char* s = getenv(name);
    return s && *s ? atoi(s) : fallback;
}
inline size_t stack_bytes() {
#ifdef EMU_ASAN
    static const size_t bytes = size_t(env_int("EMU_STACK_KB", 256)) << 10;  // ASan frames are much larger
#else
    static const size_t bytes = size_t(env_int("EMU_STACK_KB", 64)) << 10;
#endif
    return bytes;
}

inline void* dynamic_smem() { return tworker->smem; }

// --------------------------------------------------------------------------------------------------------------------
// Switching. A fiber that blocks hands control straight to the next runnable fiber of the scheduler's current pass,
// and only goes back to the scheduler when the pass is exhausted: half the switches of always going through it.
// --------------------------------------------------------------------------------------------------------------------
inline void jump(void** save_sp, void** save_fake, bool leaving_for_good, Fiber* to /* nullptr: scheduler */) {
    Worker& w = *tworker;
    cur = to;
#ifdef EMU_ASAN
    // A fiber that never comes back passes no fake-stack slot, so ASan releases its fake stack.
    __sanitizer_start_switch_fiber(leaving_for_good ? nullptr : save_fake,
                                   to ? static_cast<const void*>(to->stack_lo) : w.sched_stack_lo,
                                   to ? to->stack_size : w.sched_stack_size);
#else
    (void)save_fake;
    (void)leaving_for_good;
#endif
    emu_ctx_switch(save_sp, to ? to->sp : w.sched_sp);
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(*save_fake, nullptr, nullptr);
#endif
}
inline Fiber* next_runnable(Worker& w) {
    for (unsigned k = w.pos + 1; k < w.nthreads; k++) {
        Fiber* g = &w.fibers[w.order[k]];
        if (g->state == RUNNABLE) {
            w.pos = k;
            return g;
        }
    }
    return nullptr;
}
inline void yield_fiber(Fiber* f, bool leaving_for_good) {
    jump(&f->sp, &f->asan_fake, leaving_for_good, next_runnable(*tworker));
}

// --------------------------------------------------------------------------------------------------------------------
// Errors. The message is written once, then the failing fiber leaves for good; the scheduler sees `failed` and
// abandons the block. Nothing below the failing call runs, which is why no destructor runs either.
// --------------------------------------------------------------------------------------------------------------------
[[noreturn]] inline void fail(const char* file, int line, const char* fmt, ...) {
    char what[kMessageLen / 2];  // half, so the whole line surely fits in kMessageLen
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    Worker* w = tworker;
    Fiber* f = cur;
    if (!w || !w->launch || !f) {  // a device function called outside any launch: nobody to return an error to
        fprintf(stderr, "[cuda_emu] %s:%d: %s (outside a kernel launch)\n", file ? file : "?", line, what);
        abort();
    }
    snprintf(w->message, sizeof w->message, "kernel %s block (%u,%u,%u) thread (%u,%u,%u) at %s:%d: %s",
             w->launch->name, w->block_idx.x, w->block_idx.y, w->block_idx.z, f->tid.x, f->tid.y, f->tid.z,
             file ? file : "?", line, what);
    w->failed = true;
    jump(&f->sp, &f->asan_fake, true, nullptr);
    __builtin_unreachable();
}
[[noreturn]] inline void assert_failed(const char* expr, const char* file, int line) {
    if (!cur) {  // host code: behave like the C library's assert
        fprintf(stderr, "%s:%d: Assertion `%s' failed.\n", file, line, expr);
        abort();
    }
    fail(file, line, "assert(%s) failed", expr);
}

// --------------------------------------------------------------------------------------------------------------------
// __syncthreads. Threads that have exited no longer count, as on Volta and later.
// --------------------------------------------------------------------------------------------------------------------
inline void release_block(Worker& w) {
    unsigned result[2] = {w.pred_count, w.arrived};  // threads whose predicate held, threads that took part
    for (unsigned i = 0; i < w.nthreads; i++) {
        Fiber& g = w.fibers[i];
        if (g.state == WAIT_BLOCK) {
            g.state = RUNNABLE;
            std::memcpy(g.out, result, sizeof result);
        }
    }
    w.arrived = 0;
    w.pred_count = 0;
}
// Returns {threads whose predicate was true, threads that took part}.
inline std::pair<unsigned, unsigned> block_barrier(int pred, int line, const char* file) {
    Fiber* f = cur;
    Worker& w = *tworker;
    // All threads must wait at the same __syncthreads; two different source lines is the classic divergent
    // barrier (it happens to work on some GPUs and hangs or corrupts on others).
    if (w.arrived == 0) {
        w.bar_line = line;
        w.bar_file = file;
    } else if (w.bar_line != line || std::strcmp(w.bar_file, file) != 0) {
        fail(file, line, "divergent __syncthreads: other threads of the block wait at %s:%d", w.bar_file,
             w.bar_line);
    }
    w.pred_count += pred != 0;
    w.arrived++;
    f->state = WAIT_BLOCK;
    f->wait_line = line;
    f->wait_file = file;
    if (w.arrived == w.live)
        release_block(w);
    else
        yield_fiber(f, false);
    unsigned result[2];
    std::memcpy(result, f->out, sizeof result);
    return {result[0], result[1]};
}

// --------------------------------------------------------------------------------------------------------------------
// Warp collectives: each lane deposits its operand and waits; the last lane to arrive computes every result.
// --------------------------------------------------------------------------------------------------------------------
inline void resolve(Worker& w, unsigned warp, const Pending& p) {
    Fiber* lanes = &w.fibers[warp * 32];
    unsigned votes = 0;
    for (unsigned l = 0; l < 32; l++) {
        if (!(p.mask >> l & 1)) continue;
        int v;
        std::memcpy(&v, lanes[l].in, 4);
        if (v) votes |= 1u << l;
    }
    for (unsigned l = 0; l < 32; l++) {
        if (!(p.mask >> l & 1)) continue;
        Fiber& g = lanes[l];
        unsigned width = unsigned(g.width), segment = l & ~(width - 1), src = l;
        switch (p.kind) {
            case SHFL: src = segment + (unsigned(g.arg) & (width - 1)); break;
            case SHFL_UP: src = (l - segment) >= unsigned(g.arg) ? l - unsigned(g.arg) : l; break;
            case SHFL_DOWN: src = (l - segment) + unsigned(g.arg) < width ? l + unsigned(g.arg) : l; break;
            case SHFL_XOR: src = (l ^ unsigned(g.arg)) < segment + width ? l ^ unsigned(g.arg) : l; break;
            case BALLOT: std::memcpy(g.out, &votes, 4); break;
            case ALL: { int r = votes == p.mask; std::memcpy(g.out, &r, 4); } break;
            case ANY: { int r = votes != 0; std::memcpy(g.out, &r, 4); } break;
            default: break;
        }
        if (p.kind <= SHFL_XOR) {
            // Reading a lane outside the mask is undefined on a GPU; hand back NaN bytes so a use shows.
            if (src < 32 && (p.mask >> src & 1))
                std::memcpy(g.out, lanes[src].in, 16);
            else
                std::memset(g.out, 0xff, 16);
        }
        g.state = RUNNABLE;
    }
}
// A wmma call (nvcuda::wmma below) is a warp collective too. Each lane deposits a pointer to one of these in its
// `in` bytes; the last lane to arrive checks that the warp made one call together and does the call's work once for
// the whole warp (`op`, which reads every lane's fragments and writes every lane's result).
struct WmmaCall {
    void (*op)(Fiber* lanes, const WmmaCall& call);  // the same function in every lane of one call
    const void* mem;     // load, store: the matrix in memory
    unsigned ldm;        // load, store: elements between rows (row major) or columns (column major)
    int layout;          // load, store: 0 row major, 1 column major
    void* dst;           // load, mma: this lane's result fragment
    const void* src[3];  // store: this lane's fragment; mma: its a, b and c
    int line;
    const char* file;
};
inline const WmmaCall& wmma_call(const Fiber& f) {
    const WmmaCall* c;
    std::memcpy(&c, f.in, sizeof c);
    return *c;
}
// CUDA requires every lane of the warp at the same wmma call with the same pointer, ldm and layout.
inline void wmma_complete(Fiber* lanes, const char* name) {
    const WmmaCall& first = wmma_call(lanes[0]);
    for (unsigned l = 1; l < 32; l++) {
        const WmmaCall& c = wmma_call(lanes[l]);
        if (c.op != first.op || c.line != first.line || std::strcmp(c.file, first.file) != 0)
            fail(c.file, c.line, "%s: lane %u is here but lane 0 is in another wmma call at %s:%d; the whole warp must "
                 "make each call together", name, l, first.file, first.line);
        if (c.mem != first.mem || c.ldm != first.ldm || c.layout != first.layout)
            fail(c.file, c.line, "%s: lane %u passes pointer %p, ldm %u, layout %d but lane 0 passes %p, %u, %d; every "
                 "lane of the warp must pass the same", name, l, c.mem, c.ldm, c.layout, first.mem, first.ldm,
                 first.layout);
    }
    first.op(lanes, first);
}

inline void warp_collective(int kind, unsigned mask, int line, const char* file) {
    Fiber* f = cur;
    Worker& w = *tworker;
    Warp& W = w.warps[f->warp];
    unsigned bit = 1u << f->lane;
    const char* name = coll_name(kind);
    if (!(mask & bit)) fail(file, line, "%s: the calling lane %u is not in mask 0x%08x", name, f->lane, mask);
    if (mask & ~W.exist)
        fail(file, line, "%s: mask 0x%08x names lanes that do not exist in this block (lanes 0x%08x do)",
             name, mask, W.exist);
    if (mask & ~W.live)
        fail(file, line, "%s: mask 0x%08x names lanes that have exited (still running: 0x%08x)", name,
             mask, W.live);
    Pending* p = nullptr;
    for (int i = 0; i < W.npending; i++)
        if (W.pending[i].mask == mask) p = &W.pending[i];
    // Overlapping but different masks may legally be pending together; a real cycle among them ends in the
    // scheduler's deadlock report.
    if (!p) {
        p = &W.pending[W.npending++];
        *p = Pending{mask, 0, kind, line, file};
    }
    if (p->kind != kind)
        fail(file, line, "lanes of one warp are in different collectives: %s here, %s at %s:%d", name,
             coll_name(p->kind), p->file, p->line);
    p->arrived |= bit;
    f->state = WAIT_WARP;
    f->wait_line = line;
    f->wait_file = file;
    if (p->arrived == p->mask) {
        Pending done = *p;
        *p = W.pending[--W.npending];
        if (done.kind >= WMMA_LOAD) wmma_complete(&w.fibers[f->warp * 32], coll_name(done.kind));
        resolve(w, f->warp, done);
    } else {
        yield_fiber(f, false);
    }
}
template <class T>
inline T warp_op(int kind, unsigned mask, T v, int arg, int width, int line, const char* file) {
    static_assert(sizeof(T) <= 16 && std::is_trivially_copyable<T>::value,
                  "a shuffled type must be trivially copyable and at most 16 bytes");
    if (width <= 0 || width > 32 || (width & (width - 1)))
        fail(file, line, "%s: width %d is not a power of two in 1..32", coll_name(kind), width);
    Fiber* f = cur;
    std::memset(f->in, 0, sizeof f->in);
    std::memcpy(f->in, &v, sizeof(T));
    f->arg = arg;
    f->width = width;
    warp_collective(kind, mask, line, file);
    T r;
    std::memcpy(&r, f->out, sizeof(T));
    return r;
}

// --------------------------------------------------------------------------------------------------------------------
// A fiber's life: run the kernel, then leave the block.
// --------------------------------------------------------------------------------------------------------------------
inline void thread_exit(Fiber* f) {
    Worker& w = *tworker;
    Warp& W = w.warps[f->warp];
    for (int i = 0; i < W.npending; i++)
        if (W.pending[i].mask >> f->lane & 1)
            fail(W.pending[i].file, W.pending[i].line,
                 "thread exited while other lanes wait for it in %s (mask 0x%08x)", coll_name(W.pending[i].kind),
                 W.pending[i].mask);
    f->state = DONE;
    w.live--;
    W.live &= ~(1u << f->lane);
    if (w.arrived && w.arrived == w.live) release_block(w);  // it was the last one a __syncthreads waited for
}
inline void fiber_main(Fiber* f) {
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
    tworker->launch->invoke(tworker->launch->closure);
    thread_exit(f);
    f->exited = true;
    yield_fiber(f, true);
    __builtin_unreachable();
}
// (Re)starts a fiber at fiber_main. Stacks are allocated once and reused, also after an abandoned launch.
inline bool init_fiber(Fiber& f) {
    if (!f.stack_lo) {
        const size_t page = 4096, size = stack_bytes();
        char* p = static_cast<char*>(
            mmap(nullptr, size + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
        if (p == MAP_FAILED) return false;
        mprotect(p, page, PROT_NONE);  // guard page: a stack overflow faults instead of corrupting a neighbour
        f.stack_lo = p + page;
        f.stack_size = size;
    }
#ifdef EMU_ASAN
    // Frames that never returned leave their redzones poisoned, and the next user of the stack would get false
    // reports. After a clean exit that is only fiber_main's few frames at the top; after an abandoned launch it may
    // be anything. (Unpoisoning all 256 KiB every time made each CUDA thread cost ~2.5 us instead of ~0.3 us.)
    const size_t top_frames = 16 << 10;
    if (f.exited && f.stack_size > top_frames)
        __asan_unpoison_memory_region(f.stack_lo + f.stack_size - top_frames, top_frames);
    else
        __asan_unpoison_memory_region(f.stack_lo, f.stack_size);
#endif
    f.exited = false;
    // The initial frame as emu_ctx_switch pops it: r15 r14 r13 r12 rbx rbp, then the return address. After the
    // `ret` into the trampoline and its `call`, fiber_main starts with the 16-byte stack alignment the ABI wants.
    uintptr_t top = (uintptr_t(f.stack_lo) + f.stack_size) & ~uintptr_t(15);
    uint64_t* sp = reinterpret_cast<uint64_t*>(top - 128 - 8);
    sp[0] = 0;
    sp[1] = 0;
    sp[2] = uint64_t(uintptr_t(&fiber_main));
    sp[3] = uint64_t(uintptr_t(&f));
    sp[4] = 0;
    sp[5] = 0;
    sp[6] = uint64_t(uintptr_t(&emu_ctx_trampoline));
    f.sp = sp;
    f.asan_fake = nullptr;
    return true;
}

// --------------------------------------------------------------------------------------------------------------------
// Running one block on this OS thread. Returns false with w.message set when the block failed.
// --------------------------------------------------------------------------------------------------------------------
inline bool run_block(Worker& w, Launch& L, uint3 bid) {
    const unsigned n = L.block.x * L.block.y * L.block.z, bx = L.block.x, by = L.block.y;
    t_blockIdx = bid;
    t_blockDim = L.block;
    t_gridDim = L.grid;
    w.block_idx = bid;
    w.failed = false;
    if (w.fibers.size() < n) w.fibers.resize(n);  // no fiber is suspended here, so moving them is safe
    const unsigned nwarps = (n + 31) / 32;
    w.warps.assign(nwarps, Warp{});
    for (unsigned i = 0; i < nwarps; i++) {
        unsigned lanes = n - i * 32 < 32 ? n - i * 32 : 32;
        w.warps[i].exist = w.warps[i].live = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    }
    w.nthreads = w.live = n;
    w.arrived = w.pred_count = 0;
    w.order.resize(n);
    for (unsigned i = 0; i < n; i++) {
        Fiber& f = w.fibers[i];
        if (!init_fiber(f)) {
            snprintf(w.message, sizeof w.message, "kernel %s block (%u,%u,%u): out of memory for fiber stacks", L.name,
                     bid.x, bid.y, bid.z);
            return false;
        }
        f.tid = uint3{i % bx, (i / bx) % by, i / (bx * by)};
        f.linear = i;
        f.lane = i % 32;
        f.warp = i / 32;
        f.state = RUNNABLE;
        w.order[i] = L.reverse ? n - 1 - i : i;
    }
    // Exact size, so under ASan the first byte past the end is a redzone.
    void* smem = nullptr;
    if (posix_memalign(&smem, 128, L.smem ? L.smem : 1) != 0) {
        snprintf(w.message, sizeof w.message,
                 "kernel %s block (%u,%u,%u): out of memory for %zu bytes of dynamic shared memory", L.name, bid.x,
                 bid.y, bid.z, L.smem);
        return false;
    }
    w.smem = static_cast<unsigned char*>(smem);
    if (L.poison) std::memset(w.smem, 0xff, L.smem);

    bool ok = true;
    while (w.live > 0) {
        // One pass: start the first runnable fiber; it hands on to the later ones itself (see jump()).
        unsigned k = 0;
        while (k < n && w.fibers[w.order[k]].state != RUNNABLE) k++;
        if (k == n) {  // nothing can run, yet threads are left: they wait for each other
            const Fiber* f = nullptr;
            for (unsigned i = 0; i < n && !f; i++)
                if (w.fibers[w.order[i]].state != DONE) f = &w.fibers[w.order[i]];
            snprintf(w.message, sizeof w.message,
                     "kernel %s block (%u,%u,%u) thread (%u,%u,%u) at %s:%d: deadlock: %u of %u threads wait and none "
                     "can proceed; this one waits in %s",
                     L.name, bid.x, bid.y, bid.z, f->tid.x, f->tid.y, f->tid.z, f->wait_file ? f->wait_file : "?",
                     f->wait_line, w.live, n, f->state == WAIT_BLOCK ? "__syncthreads" : "a warp collective");
            ok = false;
            break;
        }
        w.pos = k;
        jump(&w.sched_sp, &w.sched_fake, false, &w.fibers[w.order[k]]);
        if (w.failed) {
            ok = false;
            break;
        }
    }
    cur = nullptr;
    free(w.smem);
    w.smem = nullptr;
    return ok;
}

inline Worker& this_worker() {
    static thread_local Worker w;
    if (!w.sched_stack_size) {  // ASan needs the bounds of the stack the scheduler runs on
        pthread_attr_t a;
        void* lo = nullptr;
        size_t size = 0;
        pthread_getattr_np(pthread_self(), &a);
        pthread_attr_getstack(&a, &lo, &size);
        pthread_attr_destroy(&a);
        w.sched_stack_lo = lo;
        w.sched_stack_size = size;
    }
    return w;
}

// Takes blocks from the launch until none are left or one has failed.
inline void run_blocks(Launch& L) {
    Worker& w = this_worker();
    tworker = &w;
    uint32_t mxcsr = L.mxcsr;
    uint16_t fpucw = L.fpucw;
    __asm__ volatile("ldmxcsr %0\n\tfldcw %1" : : "m"(mxcsr), "m"(fpucw));
    w.launch = &L;
    const uint64_t total = uint64_t(L.grid.x) * L.grid.y * L.grid.z;
    while (!L.failed.load(std::memory_order_relaxed)) {
        uint64_t b = L.next_block.fetch_add(1);
        if (b >= total) break;
        uint3 bid{unsigned(b % L.grid.x), unsigned(b / L.grid.x % L.grid.y), unsigned(b / (uint64_t(L.grid.x) * L.grid.y))};
        if (!run_block(w, L, bid)) {
            std::lock_guard<std::mutex> g(L.message_mutex);
            if (!L.failed.exchange(true)) std::memcpy(L.message, w.message, kMessageLen);
            break;
        }
    }
    w.launch = nullptr;
    tworker = nullptr;
}

// Helper OS threads for EMU_THREADS > 1. They join the calling thread on one launch at a time.
struct Pool {
    std::mutex launch_mutex;  // one launch at a time uses the pool
    std::mutex m;
    std::condition_variable wake, done;
    std::vector<std::thread> threads;
    Launch* job = nullptr;
    uint64_t generation = 0;
    int busy = 0;
    bool stop = false;
    ~Pool() {
        {
            std::lock_guard<std::mutex> g(m);
            stop = true;
        }
        wake.notify_all();
        for (auto& t : threads) t.join();
    }
    void helper_loop() {
        uint64_t seen = 0;
        std::unique_lock<std::mutex> g(m);
        for (;;) {
            wake.wait(g, [&] { return stop || generation != seen; });
            if (stop) return;
            seen = generation;
            Launch* L = job;
            g.unlock();
            run_blocks(*L);
            g.lock();
            if (--busy == 0) done.notify_all();
        }
    }
    void run(Launch& L, int helpers) {
        std::lock_guard<std::mutex> one_launch(launch_mutex);
        std::unique_lock<std::mutex> g(m);
        while (int(threads.size()) < helpers) threads.emplace_back([this] { helper_loop(); });
        job = &L;
        busy = int(threads.size());
        generation++;
        g.unlock();
        wake.notify_all();
        run_blocks(L);
        g.lock();
        done.wait(g, [&] { return busy == 0; });
    }
};
inline Pool& pool() {
    static Pool p;
    return p;
}

#ifdef EMU_ASAN
// An ASan report shows the host stack of the fiber; this adds which CUDA thread that was.
inline void report_cuda_thread_on_death() {
    if (cur && tworker && tworker->launch)
        fprintf(stderr, "[cuda_emu] the report above happened in kernel %s block (%u,%u,%u) thread (%u,%u,%u)\n",
                tworker->launch->name, t_blockIdx.x, t_blockIdx.y, t_blockIdx.z, cur->tid.x, cur->tid.y, cur->tid.z);
}
#endif

// Checks the launch configuration as the CUDA driver would, then runs every block. 0 on success; 1 with one line
// in err otherwise.
inline int run_grid(Launch& L, char* err, size_t err_len) {
    auto reject = [&](const char* fmt, auto... a) {
        if (err && err_len) snprintf(err, err_len, fmt, a...);
        return 1;
    };
    const uint64_t nthreads = uint64_t(L.block.x) * L.block.y * L.block.z;
    if (nthreads == 0 || nthreads > kMaxThreadsPerBlock || L.block.z > 64)
        return reject("kernel %s: invalid block size (%u,%u,%u) = %llu threads; CUDA allows 1..1024 (z <= 64)",
                      L.name, L.block.x, L.block.y, L.block.z, (unsigned long long)nthreads);
    if (L.grid.x == 0 || L.grid.y == 0 || L.grid.z == 0 || L.grid.y > 65535 || L.grid.z > 65535)
        return reject("kernel %s: invalid grid size (%u,%u,%u); CUDA allows x >= 1, 1 <= y, z <= 65535", L.name,
                      L.grid.x, L.grid.y, L.grid.z);
    if (L.smem > kMaxDynamicSmem)
        return reject("kernel %s: %zu bytes of dynamic shared memory requested; no GPU grants a block more than %zu",
                      L.name, L.smem, kMaxDynamicSmem);
#ifdef EMU_ASAN
    static const bool death_callback = (__sanitizer_set_death_callback(report_cuda_thread_on_death), true);
    (void)death_callback;
#endif
    const char* sched = getenv("EMU_SCHED");
    L.reverse = sched && !strcmp(sched, "rev");
    L.poison = env_int("EMU_POISON", 1) != 0;
    __asm__ volatile("stmxcsr %0\n\tfnstcw %1" : "=m"(L.mxcsr), "=m"(L.fpucw));
    const uint64_t nblocks = uint64_t(L.grid.x) * L.grid.y * L.grid.z;
    const int want = env_int("EMU_THREADS", 1);
    const int helpers = int(std::min<uint64_t>(uint64_t(want > 1 ? want : 1), nblocks)) - 1;
    if (helpers > 0)
        pool().run(L, helpers);
    else
        run_blocks(L);
    if (!L.failed) return 0;
    return reject("%s", L.message);
}

template <class Closure>
void invoke_closure(const void* p) {
    const Closure* c = static_cast<const Closure*>(p);
    std::apply(c->kernel, c->args);  // by value: each CUDA thread gets its own copy of the arguments
}
template <class... P, size_t... I>
int launch_unpacked(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, void** args,
                    char* err, size_t err_len, std::index_sequence<I...>) {
    struct Closure {
        void (*kernel)(P...);
        std::tuple<std::decay_t<P>...> args;
    } closure{kernel, std::tuple<std::decay_t<P>...>(*static_cast<std::decay_t<P>*>(args[I])...)};
    (void)args;
    Launch L;
    L.name = name;
    L.grid = grid;
    L.block = block;
    L.smem = smem;
    L.invoke = &invoke_closure<Closure>;
    L.closure = &closure;
    return run_grid(L, err, err_len);
}
}  // namespace detail

// Runs kernel<<<grid, block, dynamic_smem_bytes>>> with the arguments packed as cuLaunchKernel takes them: args[i]
// points at the value of the kernel's i-th parameter. Returns 0 when every thread ran to the end; otherwise 1, and
// err (if not null) holds one line: kernel, block, thread, file:line where known, and what went wrong. The emulator
// stays usable after a failed launch. Safe to call from several OS threads at once.
template <class... P>
int launch_packed(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t dynamic_smem_bytes,
                  void** args, char* err, size_t err_len) {
    if (err && err_len) err[0] = '\0';
    return detail::launch_unpacked(name, kernel, grid, block, dynamic_smem_bytes, args, err, err_len,
                                   std::index_sequence_for<P...>{});
}

// The same from C++ with ordinary arguments (tests, dev/ programs): each argument converts to its parameter's type.
template <class... P, class... A>
int launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t dynamic_smem_bytes, char* err,
           size_t err_len, A&&... a) {
    static_assert(sizeof...(P) == sizeof...(A), "wrong number of kernel arguments");
    std::tuple<std::decay_t<P>...> values(std::forward<A>(a)...);
    void* packed[sizeof...(P) + 1];
    std::apply([&](auto&... v) {
        size_t i = 0;
        ((packed[i++] = static_cast<void*>(&v)), ...);
    }, values);
    return launch_packed(name, kernel, grid, block, dynamic_smem_bytes, packed, err, err_len);
}
}  // namespace emu

// =====================================================================================================================
// Device built-ins
// =====================================================================================================================
#define threadIdx (static_cast<const uint3&>(::emu::detail::cur->tid))
#define blockIdx (static_cast<const uint3&>(::emu::detail::t_blockIdx))
#define blockDim (static_cast<const dim3&>(::emu::detail::t_blockDim))
#define gridDim (static_cast<const dim3&>(::emu::detail::t_gridDim))

// Collectives take the caller's source position as defaulted trailing arguments, so reports name kernel lines.
#define EMU_WHERE int line = __builtin_LINE(), const char* file = __builtin_FILE()
inline void __syncthreads(EMU_WHERE) { ::emu::detail::block_barrier(1, line, file); }
inline int __syncthreads_count(int p, EMU_WHERE) { return int(::emu::detail::block_barrier(p, line, file).first); }
inline int __syncthreads_and(int p, EMU_WHERE) {
    auto r = ::emu::detail::block_barrier(p, line, file);
    return r.first == r.second;
}
inline int __syncthreads_or(int p, EMU_WHERE) { return ::emu::detail::block_barrier(p, line, file).first != 0; }
inline void __syncwarp(unsigned mask = 0xffffffffu, EMU_WHERE) {
    ::emu::detail::warp_op(::emu::detail::SYNCWARP, mask, 0, 0, 32, line, file);
}
// T comes from the value alone; the lane, offset and width are plain ints as in CUDA's declarations.
template <class T>
inline T __shfl_sync(unsigned m, T v, int src, int width = 32, EMU_WHERE) {
    return ::emu::detail::warp_op(::emu::detail::SHFL, m, v, src, width, line, file);
}
template <class T>
inline T __shfl_up_sync(unsigned m, T v, unsigned delta, int width = 32, EMU_WHERE) {
    return ::emu::detail::warp_op(::emu::detail::SHFL_UP, m, v, int(delta), width, line, file);
}
template <class T>
inline T __shfl_down_sync(unsigned m, T v, unsigned delta, int width = 32, EMU_WHERE) {
    return ::emu::detail::warp_op(::emu::detail::SHFL_DOWN, m, v, int(delta), width, line, file);
}
template <class T>
inline T __shfl_xor_sync(unsigned m, T v, int lane_mask, int width = 32, EMU_WHERE) {
    return ::emu::detail::warp_op(::emu::detail::SHFL_XOR, m, v, lane_mask, width, line, file);
}
inline unsigned __ballot_sync(unsigned m, int p, EMU_WHERE) {
    return ::emu::detail::warp_op<int>(::emu::detail::BALLOT, m, p != 0, 0, 32, line, file);
}
inline int __all_sync(unsigned m, int p, EMU_WHERE) {
    return ::emu::detail::warp_op<int>(::emu::detail::ALL, m, p != 0, 0, 32, line, file);
}
inline int __any_sync(unsigned m, int p, EMU_WHERE) {
    return ::emu::detail::warp_op<int>(::emu::detail::ANY, m, p != 0, 0, 32, line, file);
}
// Approximate: the lanes of the warp that have not exited. The emulator has no notion of which lanes are
// converged at this instruction, so inside a divergent branch this says more lanes than a GPU would.
inline unsigned __activemask() { return ::emu::detail::tworker->warps[::emu::detail::cur->warp].live; }
inline unsigned __lanemask_lt() { return (1u << ::emu::detail::cur->lane) - 1; }

[[noreturn]] inline void __trap(EMU_WHERE) { ::emu::detail::fail(file, line, "__trap() called"); }
// A block's fibers run one at a time and atomics are sequentially consistent: every fence is already implied.
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() {}
inline long long clock64() { return (long long)__builtin_ia32_rdtsc(); }

// A GPU faults on an access whose address is not a multiple of its size ("misaligned address",
// cudaErrorMisalignedAddress), e.g. a float4 load from a float that is not 16-byte aligned. A plain dereference
// cannot be watched here, and x86 may even perform it, so code that casts a pointer to a wider type calls this
// first (kernels/common.cuh's 128-bit helpers do); the cache-hinted loads and stores below check their own.
namespace emu {
inline void check_aligned(const void* p, size_t bytes, EMU_WHERE) {
    if (reinterpret_cast<uintptr_t>(p) % bytes != 0) {
        ::emu::detail::fail(file, line, "misaligned address %p for a %zu-byte access (a GPU faults here)", p, bytes);
    }
}
}  // namespace emu

// Cache-hinted loads and stores are plain memory operations here, after the alignment check a GPU makes. The stored
// value's type is not deduced, so `__stcs(float_ptr, 1.0)` converts as the CUDA overloads would.
namespace emu { namespace detail { template <class T> struct identity { using type = T; }; } }
#define EMU_CHECKED_LOAD(name)                                                                                      \
    template <class T> inline T name(const T* p, EMU_WHERE) {                                                      \
        ::emu::check_aligned(p, alignof(T), line, file);                                                           \
        return *p;                                                                                                  \
    }
#define EMU_CHECKED_STORE(name)                                                                                     \
    template <class T> inline void name(T* p, typename ::emu::detail::identity<T>::type v, EMU_WHERE) {            \
        ::emu::check_aligned(p, alignof(T), line, file);                                                           \
        *p = v;                                                                                                     \
    }
EMU_CHECKED_LOAD(__ldg)
EMU_CHECKED_LOAD(__ldcs)
EMU_CHECKED_LOAD(__ldcg)
EMU_CHECKED_LOAD(__ldca)
EMU_CHECKED_LOAD(__ldlu)
EMU_CHECKED_STORE(__stcs)
EMU_CHECKED_STORE(__stcg)
EMU_CHECKED_STORE(__stwb)
#undef EMU_CHECKED_LOAD
#undef EMU_CHECKED_STORE

// Atomics are real atomics: with EMU_THREADS > 1 blocks run on different OS threads. Floats go through CAS.
#define EMU_ATOMIC_INT(T)                                                                                           \
    inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }                            \
    inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }                            \
    inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }                          \
    inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }                            \
    inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }                              \
    inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }                            \
    inline T atomicCAS(T* p, T expected, T v) {                                                                     \
        __atomic_compare_exchange_n(p, &expected, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                    \
        return expected;                                                                                            \
    }                                                                                                               \
    inline T atomicMax(T* p, T v) {                                                                                 \
        T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);                                                               \
        while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {     \
        }                                                                                                           \
        return old;                                                                                                 \
    }                                                                                                               \
    inline T atomicMin(T* p, T v) {                                                                                 \
        T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);                                                               \
        while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {     \
        }                                                                                                           \
        return old;                                                                                                 \
    }
EMU_ATOMIC_INT(int)
EMU_ATOMIC_INT(unsigned)
EMU_ATOMIC_INT(unsigned long long)
#undef EMU_ATOMIC_INT
namespace emu {
namespace detail {
// Replaces *p by op(*p) atomically, returns the old value.
template <class F, class U, class Op>
inline F atomic_float(F* p, Op op) {
    static_assert(sizeof(F) == sizeof(U), "float and integer image must have the same size");
    U* q = reinterpret_cast<U*>(p);
    U old = __atomic_load_n(q, __ATOMIC_SEQ_CST), next;
    for (;;) {
        F f;
        std::memcpy(&f, &old, sizeof f);
        F g = op(f);
        std::memcpy(&next, &g, sizeof g);
        if (__atomic_compare_exchange_n(q, &old, next, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) return f;
    }
}
}  // namespace detail
}  // namespace emu
inline float atomicAdd(float* p, float v) {
    return ::emu::detail::atomic_float<float, uint32_t>(p, [v](float a) { return a + v; });
}
inline double atomicAdd(double* p, double v) {
    return ::emu::detail::atomic_float<double, uint64_t>(p, [v](double a) { return a + v; });
}
inline float atomicExch(float* p, float v) {
    return ::emu::detail::atomic_float<float, uint32_t>(p, [v](float) { return v; });
}
inline float atomicMax(float* p, float v) {
    return ::emu::detail::atomic_float<float, uint32_t>(p, [v](float a) { return fmaxf(a, v); });
}
inline float atomicMin(float* p, float v) {
    return ::emu::detail::atomic_float<float, uint32_t>(p, [v](float a) { return fminf(a, v); });
}

// Math intrinsics without a C library name. The fast variants (__expf, __fdividef...) are exact here, so a
// kernel that relies on their lower precision matches the CPU reference better than it will on a GPU.
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanhf(float x) { return tanhf(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __saturatef(float x) { return x < 0.f ? 0.f : (x > 1.f ? 1.f : x); }
inline int __float2int_rn(float x) { return int(nearbyintf(x)); }
inline int __float_as_int(float x) { int i; std::memcpy(&i, &x, 4); return i; }
inline unsigned __float_as_uint(float x) { unsigned i; std::memcpy(&i, &x, 4); return i; }
inline float __int_as_float(int i) { float x; std::memcpy(&x, &i, 4); return x; }
inline float __uint_as_float(unsigned i) { float x; std::memcpy(&x, &i, 4); return x; }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(unsigned x) { return x ? __builtin_clz(x) : 32; }
inline int __ffs(unsigned x) { return __builtin_ffs(int(x)); }
// CUDA's global min/max overloads.
inline float max(float a, float b) { return fmaxf(a, b); }
inline float min(float a, float b) { return fminf(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }

// =====================================================================================================================
// cooperative_groups: the subset kernels here use
// =====================================================================================================================
namespace cooperative_groups {
struct thread_block {
    void sync(EMU_WHERE) const { ::emu::detail::block_barrier(1, line, file); }
    unsigned thread_rank() const { return ::emu::detail::cur->linear; }
    unsigned size() const { return blockDim.x * blockDim.y * blockDim.z; }
    unsigned num_threads() const { return size(); }
    dim3 group_index() const { return dim3(blockIdx); }
    dim3 thread_index() const { return dim3(threadIdx); }
    dim3 group_dim() const { return blockDim; }
};
inline thread_block this_thread_block() { return {}; }

template <unsigned N>
struct thread_block_tile {
    static_assert(N >= 1 && N <= 32 && (N & (N - 1)) == 0, "tile size must be a power of two <= 32");
    unsigned mask_;  // the lanes of the calling warp that form this tile
    explicit thread_block_tile(unsigned mask) : mask_(mask) {}
    static constexpr unsigned size() { return N; }
    static constexpr unsigned num_threads() { return N; }
    unsigned thread_rank() const { return ::emu::detail::cur->linear % N; }
    unsigned meta_group_rank() const { return ::emu::detail::cur->linear / N; }
    unsigned meta_group_size() const { return (blockDim.x * blockDim.y * blockDim.z + N - 1) / N; }
    void sync(EMU_WHERE) const { __syncwarp(mask_, line, file); }
    template <class T> T shfl(T v, int src, EMU_WHERE) const { return __shfl_sync(mask_, v, src, N, line, file); }
    template <class T> T shfl_xor(T v, int m, EMU_WHERE) const { return __shfl_xor_sync(mask_, v, m, N, line, file); }
    template <class T> T shfl_down(T v, unsigned d, EMU_WHERE) const {
        return __shfl_down_sync(mask_, v, d, N, line, file);
    }
    template <class T> T shfl_up(T v, unsigned d, EMU_WHERE) const { return __shfl_up_sync(mask_, v, d, N, line, file); }
    unsigned ballot(int p, EMU_WHERE) const {
        return __ballot_sync(mask_, p, line, file) >> (::emu::detail::cur->lane & ~(N - 1));
    }
    int any(int p, EMU_WHERE) const { return __any_sync(mask_, p, line, file); }
    int all(int p, EMU_WHERE) const { return __all_sync(mask_, p, line, file); }
};
// CUDA requires the block to split evenly into tiles; a partial tile would shuffle with lanes that do not exist.
template <unsigned N, class Parent>
inline thread_block_tile<N> tiled_partition(const Parent&, EMU_WHERE) {
    const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    if (threads % N != 0)
        ::emu::detail::fail(file, line, "tiled_partition<%u>: block of %u threads is not a multiple of %u",
                            N, threads, N);
    const unsigned first = ::emu::detail::cur->lane & ~(N - 1);
    return thread_block_tile<N>((N == 32 ? 0xffffffffu : (1u << N) - 1) << first);
}

template <class T> struct plus { T operator()(T a, T b) const { return a + b; } };
template <class T> struct less { T operator()(T a, T b) const { return b < a ? b : a; } };
template <class T> struct greater { T operator()(T a, T b) const { return a < b ? b : a; } };
template <class T> struct bit_and { T operator()(T a, T b) const { return a & b; } };
template <class T> struct bit_or { T operator()(T a, T b) const { return a | b; } };
template <class T> struct bit_xor { T operator()(T a, T b) const { return a ^ b; } };

// A butterfly: every lane ends with the result. The order of operations is not the GPU's, so float sums may
// differ from a GPU's in the last bits.
template <unsigned N, class T, class Op>
inline T reduce(const thread_block_tile<N>& g, T v, Op op, EMU_WHERE) {
    for (unsigned offset = N / 2; offset > 0; offset /= 2) v = op(v, g.shfl_xor(v, int(offset), line, file));
    return v;
}
}  // namespace cooperative_groups

// =====================================================================================================================
// nvcuda::wmma (<mma.h>): warp-wide matrix multiply-accumulate on tensor cores, the subset kernels here use: the
// m16n16k16 shape, matrix_a/matrix_b fragments of __nv_bfloat16 (row_major or col_major), float accumulators.
// CUDA leaves unspecified which elements of a tile each lane holds, so here EVERY lane holds the whole 16x16 tile
// (num_elements = 256, x[16 r + c] is element (r, c) whatever the layout): element-wise code over x[] gives every
// lane the same values, as portable code must. The *_sync calls are warp collectives, as a GPU requires the whole
// warp converged at each: the last lane to arrive checks the warp made one call with one pointer, ldm and layout,
// that the pointer and ldm are what a GPU accepts, and that the fragments read are the same in every lane (lanes
// differ only after lane-dependent changes to x[], which rely on the unspecified mapping); then it does the work
// once: one load into every lane, one product (bf16 values widened, products summed in float in k order onto c),
// one store. A fragment starts as NaN, as a GPU's registers hold garbage. README.md, "wmma", has the limits.
// =====================================================================================================================
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
    static_assert(M == 16 && N == 16 && K == 16, "cuda_emu: wmma has only the m16n16k16 shape here");
    static_assert(std::is_same<Use, accumulator>::value
                      ? std::is_same<T, float>::value && std::is_void<Layout>::value
                      : std::is_same<T, __nv_bfloat16>::value &&
                            (std::is_same<Layout, row_major>::value || std::is_same<Layout, col_major>::value),
                  "cuda_emu: wmma fragments here are matrix_a/matrix_b of __nv_bfloat16 with row_major or col_major, "
                  "and accumulators of float");
    typedef T element_type;
    typedef T storage_element_type;
    enum { num_elements = 16 * 16 };
    T x[num_elements];
    fragment() { std::memset(x, 0xff, sizeof x); }
};
}  // namespace wmma
}  // namespace nvcuda

namespace emu {
namespace detail {
constexpr int kWmmaDim = 16;  // m = n = k
constexpr int kWmmaAlign = 32;  // bytes: the 256-bit alignment wmma's memory pointer needs

// What a GPU requires of the memory operand: a 256-bit aligned pointer, a leading dimension of whole 16 bytes.
template <class T>
inline void wmma_check_memory(const WmmaCall& c, const char* name) {
    if (reinterpret_cast<uintptr_t>(c.mem) % kWmmaAlign != 0)
        fail(c.file, c.line, "%s: pointer %p is not 256-bit (32-byte) aligned, as wmma requires", name, c.mem);
    if (c.ldm * sizeof(T) % 16 != 0)
        fail(c.file, c.line, "%s: ldm %u is not a multiple of %zu elements (16 bytes), as wmma requires", name, c.ldm,
             16 / sizeof(T));
}
// Fragment src[which] is the same in every lane (see the wmma comment above).
template <class Frag>
inline void wmma_check_uniform(Fiber* lanes, int which, const char* name, const char* operand) {
    const WmmaCall& first = wmma_call(lanes[0]);
    for (unsigned l = 1; l < 32; l++)
        if (std::memcmp(wmma_call(lanes[l]).src[which], first.src[which], sizeof(Frag)) != 0)
            fail(first.file, first.line, "%s: lanes 0 and %u hold different %s fragments: every lane holds the whole "
                 "tile here, so the kernel changed x[] differently in different lanes, which relies on CUDA's "
                 "unspecified element-to-lane mapping", name, l, operand);
}
template <class Frag>
void wmma_load(Fiber* lanes, const WmmaCall& c) {
    using T = typename Frag::element_type;
    wmma_check_memory<T>(c, "wmma::load_matrix_sync");
    const T* p = static_cast<const T*>(c.mem);
    Frag& f = *static_cast<Frag*>(c.dst);  // lane 0's, copied to the others
    for (int r = 0; r < kWmmaDim; r++)
        for (int col = 0; col < kWmmaDim; col++)
            f.x[r * kWmmaDim + col] = c.layout == 0 ? p[size_t(r) * c.ldm + col] : p[size_t(col) * c.ldm + r];
    for (unsigned l = 1; l < 32; l++) std::memcpy(wmma_call(lanes[l]).dst, &f, sizeof f);
}
template <class Frag>
void wmma_store(Fiber* lanes, const WmmaCall& c) {
    wmma_check_memory<float>(c, "wmma::store_matrix_sync");
    wmma_check_uniform<Frag>(lanes, 0, "wmma::store_matrix_sync", "stored");
    float* p = static_cast<float*>(const_cast<void*>(c.mem));
    const Frag& f = *static_cast<const Frag*>(c.src[0]);
    for (int r = 0; r < kWmmaDim; r++)
        for (int col = 0; col < kWmmaDim; col++)
            (c.layout == 0 ? p[size_t(r) * c.ldm + col] : p[size_t(col) * c.ldm + r]) = f.x[r * kWmmaDim + col];
}
template <class D, class A, class B, class C>
void wmma_mma(Fiber* lanes, const WmmaCall& call) {
    wmma_check_uniform<A>(lanes, 0, "wmma::mma_sync", "a");
    wmma_check_uniform<B>(lanes, 1, "wmma::mma_sync", "b");
    wmma_check_uniform<C>(lanes, 2, "wmma::mma_sync", "c");
    const A& a = *static_cast<const A*>(call.src[0]);
    const B& b = *static_cast<const B*>(call.src[1]);
    const C& c = *static_cast<const C*>(call.src[2]);
    float d[kWmmaDim * kWmmaDim];  // d may be c: compute it whole before writing any lane
    for (int i = 0; i < kWmmaDim; i++)
        for (int j = 0; j < kWmmaDim; j++) {
            float sum = c.x[i * kWmmaDim + j];
            for (int k = 0; k < kWmmaDim; k++) sum += float(a.x[i * kWmmaDim + k]) * float(b.x[k * kWmmaDim + j]);
            d[i * kWmmaDim + j] = sum;
        }
    for (unsigned l = 0; l < 32; l++) std::memcpy(static_cast<D*>(wmma_call(lanes[l]).dst)->x, d, sizeof d);
}
// Deposits this lane's call and waits for the warp; the last lane runs call.op.
inline void wmma_collective(int kind, const WmmaCall& call) {
    Fiber* f = cur;
    const WmmaCall* p = &call;
    std::memset(f->in, 0, sizeof f->in);
    std::memcpy(f->in, &p, sizeof p);
    warp_collective(kind, 0xffffffffu, call.line, call.file);
}
}  // namespace detail
}  // namespace emu

namespace nvcuda {
namespace wmma {
template <class Use, int M, int N, int K, class T, class L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, const typename ::emu::detail::identity<T>::type& v) {
    for (T& e : f.x) e = v;
}
template <class T, class L>
inline void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, L>& f, const T* p, unsigned ldm, EMU_WHERE) {
    using F = fragment<matrix_a, 16, 16, 16, T, L>;
    ::emu::detail::wmma_collective(::emu::detail::WMMA_LOAD, {&::emu::detail::wmma_load<F>, p, ldm,
                                   std::is_same<L, col_major>::value, &f, {}, line, file});
}
template <class T, class L>
inline void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, L>& f, const T* p, unsigned ldm, EMU_WHERE) {
    using F = fragment<matrix_b, 16, 16, 16, T, L>;
    ::emu::detail::wmma_collective(::emu::detail::WMMA_LOAD, {&::emu::detail::wmma_load<F>, p, ldm,
                                   std::is_same<L, col_major>::value, &f, {}, line, file});
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned ldm,
                             layout_t layout, EMU_WHERE) {
    using F = fragment<accumulator, 16, 16, 16, float>;
    ::emu::detail::wmma_collective(::emu::detail::WMMA_LOAD, {&::emu::detail::wmma_load<F>, p, ldm,
                                   layout == mem_col_major, &f, {}, line, file});
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout, EMU_WHERE) {
    using F = fragment<accumulator, 16, 16, 16, float>;
    ::emu::detail::wmma_collective(::emu::detail::WMMA_STORE, {&::emu::detail::wmma_store<F>, p, ldm,
                                   layout == mem_col_major, nullptr, {&f}, line, file});
}
template <class T, class LA, class LB>
inline void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LA>& a,
                     const fragment<matrix_b, 16, 16, 16, T, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c,
                     EMU_WHERE) {
    using Acc = fragment<accumulator, 16, 16, 16, float>;
    using A = fragment<matrix_a, 16, 16, 16, T, LA>;
    using B = fragment<matrix_b, 16, 16, 16, T, LB>;
    ::emu::detail::wmma_collective(::emu::detail::WMMA_MMA, {&::emu::detail::wmma_mma<Acc, A, B, Acc>, nullptr, 0,
                                   0, &d, {&a, &b, &c}, line, file});
}
}  // namespace wmma
}  // namespace nvcuda

// =====================================================================================================================
// A little of the host runtime, for dev/ programs: device memory is host memory.
// =====================================================================================================================
// Fresh "device" memory is filled with 0xFF bytes (NaN as float) unless EMU_POISON=0, so reads of never-written
// memory show.
inline cudaError_t cudaMalloc(void** p, size_t n) {
    if (posix_memalign(p, 256, n ? n : 1) != 0) return cudaErrorMemoryAllocation;
    if (::emu::detail::env_int("EMU_POISON", 1)) std::memset(*p, 0xff, n);
    return cudaSuccess;
}
template <class T>
inline cudaError_t cudaMalloc(T** p, size_t n) {
    return cudaMalloc(reinterpret_cast<void**>(p), n);
}
inline cudaError_t cudaFree(void* p) {
    free(p);
    return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t n, cudaMemcpyKind) {
    std::memmove(dst, src, n);
    return cudaSuccess;
}
inline cudaError_t cudaMemset(void* dst, int v, size_t n) {
    std::memset(dst, v, n);
    return cudaSuccess;
}
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "cuda_emu error"; }

// assert() inside a kernel becomes a launch error instead of an abort (include/assert.h and include/cassert
// re-apply this after the C library's definition when a kernel includes them later).
#if defined(assert) && !defined(NDEBUG)
#undef assert
#define assert(e) ((e) ? (void)0 : ::emu::detail::assert_failed(#e, __FILE__, __LINE__))
#endif
