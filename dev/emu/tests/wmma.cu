// nvcuda::wmma: m16n16k16 bf16 products with float accumulation against a CPU reference, every layout of every
// operand, leading dimensions wider than the tile, chained products over K = 64 from shared memory in 4 warps,
// element-wise work on x[], fill_fragment, and a fragment that nobody filled reading as NaN.
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <mma.h>
#include <cmath>
#include "check.h"
using namespace nvcuda;

constexpr int N = 16;
// Leading dimensions wider than the tile (whole 16 bytes, as wmma requires).
constexpr int LDA = 24, LDB = 40, LDC = 20, LDD = 28;

// d = a b + c for one 16x16 tile; a row major, b in the layout LB, c and d in the layouts given at run time.
template <class LB>
__global__ void one_tile(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b, const float* c, int c_col_major,
                         int d_col_major) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, LB> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::load_matrix_sync(fa, a, LDA);
    wmma::load_matrix_sync(fb, b, LDB);
    wmma::load_matrix_sync(acc, c, LDC, c_col_major ? wmma::mem_col_major : wmma::mem_row_major);
    wmma::mma_sync(acc, fa, fb, acc);
    wmma::store_matrix_sync(d, acc, LDD, d_col_major ? wmma::mem_col_major : wmma::mem_row_major);
}

// out (32, 32) = 0.5 a (32, 64) b (64, 32), all row major; 4 warps, warp w computes the 16x16 tile (w / 2, w % 2) with
// 4 chained products, its operands staged in dynamic shared memory.
__global__ void chained(float* out, const __nv_bfloat16* a, const __nv_bfloat16* b) {
    EMU_DYNAMIC_SHARED(__nv_bfloat16, smem);
    __nv_bfloat16* a_s = smem;            // (32, 64)
    __nv_bfloat16* b_s = smem + 32 * 64;  // (64, 32)
    for (int i = threadIdx.x; i < 32 * 64; i += blockDim.x) {
        a_s[i] = a[i];
        b_s[i] = b[i];
    }
    __syncthreads();
    const int warp = threadIdx.x / 32, tr = warp / 2, tc = warp % 2;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    for (int k = 0; k < 64; k += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
        wmma::load_matrix_sync(fa, a_s + tr * 16 * 64 + k, 64);
        wmma::load_matrix_sync(fb, b_s + k * 32 + tc * 16, 32);
        wmma::mma_sync(acc, fa, fb, acc);
    }
    for (int i = 0; i < acc.num_elements; i++) acc.x[i] *= 0.5f;
    wmma::store_matrix_sync(out + tr * 16 * 32 + tc * 16, acc, 32, wmma::mem_row_major);
}

// A filled fragment stores its value everywhere; one nobody filled stores NaN.
__global__ void fill_and_unfilled(float* filled, float* unfilled, int* num_elements) {
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> f, g;
    wmma::fill_fragment(f, 2.5f);
    wmma::store_matrix_sync(filled, f, 16, wmma::mem_row_major);
    wmma::store_matrix_sync(unfilled, g, 16, wmma::mem_row_major);
    if (threadIdx.x == 0) *num_elements = f.num_elements;
}

static float bf(float x) { return float(__nv_bfloat16(x)); }

template <class LB>
static void check_one_tile(bool b_col_major) {
    alignas(32) static __nv_bfloat16 a[N * LDA], b[N * LDB];
    alignas(32) static float c[N * LDC], d[N * LDD];
    float ra[N][N], rb[N][N], rc[N][N];
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            ra[i][j] = bf(std::sin(0.37f * float(i * N + j)));
            rb[i][j] = bf(std::cos(0.23f * float(i * N + j)) * 2.0f);
            rc[i][j] = 0.01f * float(i - j);
            a[i * LDA + j] = ra[i][j];
            b[b_col_major ? j * LDB + i : i * LDB + j] = rb[i][j];
        }
    for (int c_col = 0; c_col < 2; c_col++)
        for (int d_col = 0; d_col < 2; d_col++) {
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++) c[c_col ? j * LDC + i : i * LDC + j] = rc[i][j];
            for (float& x : d) x = -1.0f;
            LAUNCH_OK(one_tile<LB>, 1, 32, 0, d, a, b, c, c_col, d_col);
            for (int i = 0; i < N; i++)
                for (int j = 0; j < N; j++) {
                    float want = rc[i][j];
                    for (int k = 0; k < N; k++) want += ra[i][k] * rb[k][j];
                    const float got = d[d_col ? j * LDD + i : i * LDD + j];
                    CHECK(std::fabs(got - want) <= 1e-5f, "b %s, c %s, d %s: d[%d][%d] = %g, want %g",
                          b_col_major ? "col" : "row", c_col ? "col" : "row", d_col ? "col" : "row", i, j, got, want);
                }
            // Padding between rows (or columns) of d is left alone.
            CHECK(d[16] == -1.0f && d[N * LDD - 1] == -1.0f, "store wrote outside the tile");
        }
}

int main() {
    check_one_tile<wmma::row_major>(false);
    check_one_tile<wmma::col_major>(true);

    static __nv_bfloat16 a[32 * 64], b[64 * 32];
    static float out[32 * 32];
    for (int i = 0; i < 32 * 64; i++) {
        a[i] = bf(0.01f * float(i % 97) - 0.4f);
        b[i] = bf(0.02f * float(i % 89) - 0.8f);
    }
    LAUNCH_OK(chained, 1, 128, (32 * 64 + 64 * 32) * sizeof(__nv_bfloat16), out, a, b);
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < 32; j++) {
            float want = 0.0f;
            for (int k = 0; k < 64; k++) want += float(a[i * 64 + k]) * float(b[k * 32 + j]);
            want *= 0.5f;
            CHECK(std::fabs(out[i * 32 + j] - want) <= 1e-4f, "chained out[%d][%d] = %g, want %g", i, j,
                  out[i * 32 + j], want);
        }

    alignas(32) static float filled[256], unfilled[256];
    static int num_elements = 0;
    LAUNCH_OK(fill_and_unfilled, 1, 32, 0, filled, unfilled, &num_elements);
    CHECK(num_elements == 256, "num_elements = %d: every lane holds the whole tile", num_elements);
    for (int i = 0; i < 256; i++) {
        CHECK(filled[i] == 2.5f, "filled[%d] = %g", i, filled[i]);
        CHECK(std::isnan(unfilled[i]), "unfilled[%d] = %g, want NaN", i, unfilled[i]);
    }
    return finish("wmma");
}
