// Errors: wmma misuse a GPU would fault on or silently miscompute, each reported as a launch error naming the
// planted line: a pointer off the 32-byte alignment, an ldm of a bf16 matrix that is not a multiple of 8, lanes passing
// different pointers, half a warp at one load and half at another, half a warp leaving before an mma, lane-dependent
// changes to x[] before a store, and a block whose last warp is partial.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <mma.h>
#include "check.h"
using namespace nvcuda;

typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> FragA;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> FragB;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> Acc;

static const int kMisaligned = __LINE__ + 3;
__global__ void misaligned(const __nv_bfloat16* a) {
    FragA f;
    wmma::load_matrix_sync(f, a + 8, 16);  // 16 bytes past a 32-byte boundary
}

static const int kBadLdm = __LINE__ + 3;
__global__ void bad_ldm(const __nv_bfloat16* a) {
    FragA f;
    wmma::load_matrix_sync(f, a, 20);  // 40 bytes between rows
}

static const int kLanePointer = __LINE__ + 3;
__global__ void lane_pointer(const __nv_bfloat16* a) {
    FragA f;
    wmma::load_matrix_sync(f, a + (threadIdx.x / 16) * 16, 32);
}

static const int kSecondLoad = __LINE__ + 6;
__global__ void two_loads(const __nv_bfloat16* a) {
    FragA f;
    if (threadIdx.x < 16) {
        wmma::load_matrix_sync(f, a, 16);
    } else {
        wmma::load_matrix_sync(f, a, 16);
    }
}

static const int kHalfMma = __LINE__ + 8;
__global__ void half_warp_mma(float* out) {
    FragA a;
    FragB b;
    Acc c;
    wmma::fill_fragment(a, 1.0f);
    wmma::fill_fragment(b, 1.0f);
    wmma::fill_fragment(c, 0.0f);
    if (threadIdx.x < 16) wmma::mma_sync(c, a, b, c);
    out[threadIdx.x] = c.x[0];
}

static const int kLaneStore = __LINE__ + 5;
__global__ void lane_dependent_store(float* out) {
    Acc c;
    wmma::fill_fragment(c, 0.0f);
    c.x[threadIdx.x] = 1.0f;  // relies on lane l holding element l: CUDA promises no such mapping
    wmma::store_matrix_sync(out, c, 16, wmma::mem_row_major);
}

static const int kPartial = __LINE__ + 4;
__global__ void partial_warp(float* out) {
    Acc c;
    wmma::fill_fragment(c, 0.0f);
    wmma::store_matrix_sync(out, c, 16, wmma::mem_row_major);
}

int main() {
    alignas(32) static __nv_bfloat16 a[16 * 64];
    alignas(32) static float out[16 * 16];
    LAUNCH_FAILS(kMisaligned, "not 256-bit (32-byte) aligned", misaligned, 1, 32, 0, a);
    expect_usable_after_error();
    LAUNCH_FAILS(kBadLdm, "ldm 20 is not a multiple of 8 elements", bad_ldm, 1, 32, 0, a);
    expect_usable_after_error();
    LAUNCH_FAILS(kLanePointer, "every lane of the warp must pass the same", lane_pointer, 1, 32, 0, a);
    expect_usable_after_error();
    LAUNCH_FAILS(kSecondLoad, "lane 0 is in another wmma call", two_loads, 1, 32, 0, a);
    expect_usable_after_error();
    LAUNCH_FAILS(kHalfMma, "thread exited while other lanes wait for it in wmma::mma_sync", half_warp_mma, 1, 32, 0,
                 out);
    expect_usable_after_error();
    LAUNCH_FAILS(kLaneStore, "hold different stored fragments", lane_dependent_store, 1, 32, 0, out);
    expect_usable_after_error();
    LAUNCH_FAILS(kPartial, "names lanes that do not exist", partial_warp, 1, 48, 0, out);
    expect_usable_after_error();
    return finish("err_wmma");
}
