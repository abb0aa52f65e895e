// LayerNorm forward, from one thread per row to a warp that holds its row in registers.
//
// For each of the N = B*T rows of C channels (mirrors kernels/layernorm.cu and src/cpu/layernorm.rs):
//   mean = sum(x) / C,  var = sum((x - mean)^2) / C (biased),  rstd = 1 / sqrt(var + 1e-5)
//   out = (x - mean) * rstd * weight + bias;  mean and rstd are kept for the backward pass.
// The work is a few FLOPs per float, so the kernel is bound by memory: the least any version can move is x read
// once and out written once, 2 N*C floats (plus 2 N statistics and 2 C parameters); the versions below are
// judged by how close they come to that, and the GB/s printed is that least traffic divided by the time.
//
//   ./layernorm_forward        every version          ./layernorm_forward 4   version 4 only
// Building (nvcc or the CPU emulator dev/emu): dev/cuda/run.sh, dev/cuda/README.md.
#include "common.h"

// PyTorch's and GPT-2's LayerNorm epsilon.
#define EPS 1e-5f

// ---------------------------------------------------------------------------------------------------------------
// CPU reference: two passes for the statistics, sums in double so the reference is the more accurate side.

// out: (N, C); mean, rstd: (N); inp: (N, C); weight, bias: (C). N = B*T rows.
static void layernorm_forward_cpu(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                  const float* bias, int N, int C) {
    for (int row = 0; row < N; row++) {
        const float* x = inp + (size_t)row * C;
        double sum = 0.0;
        for (int i = 0; i < C; i++) {
            sum += x[i];
        }
        const float m = (float)(sum / C);
        double sum_sq = 0.0;
        for (int i = 0; i < C; i++) {
            const double d = x[i] - m;
            sum_sq += d * d;
        }
        const float s = (float)(1.0 / sqrt(sum_sq / C + EPS));
        for (int i = 0; i < C; i++) {
            out[(size_t)row * C + i] = (x[i] - m) * s * weight[i] + bias[i];
        }
        mean[row] = m;
        rstd[row] = s;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Kernels. All take out: (N, C); mean, rstd: (N); inp: (N, C); weight, bias: (C).

// Version 1: one thread per row, three passes over its row (mean, variance, normalise). The obvious port of the
// CPU loop and slow twice over: the 32 threads of a warp read addresses C floats apart, so every load touches 32
// cache lines (uncoalesced), and N = 8192 rows are only 256 warps, about 2 per SM, too few to hide memory latency.
__global__ void layernorm_forward1(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                   const float* bias, int N, int C) {
    const int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= N) {
        return;
    }
    const float* x = inp + (size_t)row * C;
    float sum = 0.0f;
    for (int i = 0; i < C; i++) {
        sum += x[i];
    }
    const float m = sum / C;
    float sum_sq = 0.0f;
    for (int i = 0; i < C; i++) {
        const float d = x[i] - m;
        sum_sq += d * d;
    }
    const float s = 1.0f / sqrtf(sum_sq / C + EPS);
    float* o = out + (size_t)row * C;
    for (int i = 0; i < C; i++) {
        o[i] = (x[i] - m) * s * weight[i] + bias[i];
    }
    mean[row] = m;
    rstd[row] = s;
}

// Version 2: one warp per row; lane l takes channels l, l + 32, ..., and the row's sums are warp shuffles (the
// five-step butterfly warp_reduce_sum in kernels/common.cuh). A warp's 32 loads now fall on consecutive floats,
// one 128-byte line per instruction (coalesced), and there are 32x more threads to keep the memory busy. Still
// three passes over x; the second and third mostly hit L1. This is the mainline kernel.
__global__ void layernorm_forward2(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                   const float* bias, int N, int C) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;
    if (row >= N) {
        return;  // the whole warp: row is the same for its 32 lanes
    }
    const float* x = inp + (size_t)row * C;
    float sum = 0.0f;
    for (int i = lane; i < C; i += WARP_SIZE) {
        sum += x[i];
    }
    const float m = warp_reduce_sum(sum) / C;
    float sum_sq = 0.0f;
    for (int i = lane; i < C; i += WARP_SIZE) {
        const float d = x[i] - m;
        sum_sq += d * d;
    }
    const float s = 1.0f / sqrtf(warp_reduce_sum(sum_sq) / C + EPS);
    float* o = out + (size_t)row * C;
    for (int i = lane; i < C; i += WARP_SIZE) {
        o[i] = (x[i] - m) * s * weight[i] + bias[i];
    }
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = s;
    }
}

// Version 3: the statistics in a single pass, var = E[x^2] - E[x]^2: sum and sum of squares accumulate side by
// side and their two reductions are independent, so their shuffles overlap. Two passes over x instead of three,
// and one round of reduction latency instead of two. The price is precision: when |mean| is much larger than the
// spread, E[x^2] and E[x]^2 are close and their difference loses bits (fp32 keeps ~7 digits; mean/std = 100 costs
// ~4 of them). Fine for this test's inputs and typical LayerNorm inputs; version 4 gets one read without it.
__global__ void layernorm_forward3(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                   const float* bias, int N, int C) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;
    if (row >= N) {
        return;  // the whole warp
    }
    const float* x = inp + (size_t)row * C;
    float sum = 0.0f;
    float sum_sq = 0.0f;
    for (int i = lane; i < C; i += WARP_SIZE) {
        const float xi = x[i];
        sum += xi;
        sum_sq += xi * xi;
    }
    const float m = warp_reduce_sum(sum) / C;
    const float var = fmaxf(warp_reduce_sum(sum_sq) / C - m * m, 0.0f);  // rounding can push it below zero
    const float s = 1.0f / sqrtf(var + EPS);
    float* o = out + (size_t)row * C;
    for (int i = lane; i < C; i += WARP_SIZE) {
        o[i] = (x[i] - m) * s * weight[i] + bias[i];
    }
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = s;
    }
}

// The largest C versions 4 and 5 accept (GPT-2 124M's): they keep a lane's share of the row in registers, so the
// register arrays are sized at compile time. Lane l holds the float4s l, l + 32, ...: F4_PER_LANE of them.
#define C_MAX 768
#define F4_PER_LANE (C_MAX / (4 * WARP_SIZE))

// Version 4: the row is read from memory exactly once, into registers, with 128-bit loads (float4: a quarter of
// the load instructions); mean and variance then take two passes over the registers, as exact as version 2 at
// the cost of version 3's single read. x is loaded with __ldcs and out stored with __stcs (streaming: used once,
// evict first), which keeps L2 for the weight and bias every warp re-reads. Needs C % 4 == 0 and C <= C_MAX.
__global__ void layernorm_forward4(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                   const float* bias, int N, int C) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE;
    if (row >= N) {
        return;  // the whole warp
    }
    const int C4 = C / 4;  // float4s per row
    const float4* x4 = reinterpret_cast<const float4*>(inp + (size_t)row * C);
    float4 x[F4_PER_LANE];
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < F4_PER_LANE; j++) {
        const int i = lane + j * WARP_SIZE;
        x[j] = i < C4 ? __ldcs(x4 + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        sum += (x[j].x + x[j].y) + (x[j].z + x[j].w);
    }
    const float m = warp_reduce_sum(sum) / C;
    float sum_sq = 0.0f;
#pragma unroll
    for (int j = 0; j < F4_PER_LANE; j++) {
        if (lane + j * WARP_SIZE < C4) {  // the zero padding would add m^2 per missing channel
            const float dx = x[j].x - m, dy = x[j].y - m, dz = x[j].z - m, dw = x[j].w - m;
            sum_sq += (dx * dx + dy * dy) + (dz * dz + dw * dw);
        }
    }
    const float s = 1.0f / sqrtf(warp_reduce_sum(sum_sq) / C + EPS);
    const float4* w4 = reinterpret_cast<const float4*>(weight);
    const float4* b4 = reinterpret_cast<const float4*>(bias);
    float4* o4 = reinterpret_cast<float4*>(out + (size_t)row * C);
#pragma unroll
    for (int j = 0; j < F4_PER_LANE; j++) {
        const int i = lane + j * WARP_SIZE;
        if (i < C4) {
            const float4 w = w4[i], b = b4[i];
            __stcs(o4 + i, make_float4((x[j].x - m) * s * w.x + b.x, (x[j].y - m) * s * w.y + b.y,
                                       (x[j].z - m) * s * w.z + b.z, (x[j].w - m) * s * w.w + b.w));
        }
    }
    if (lane == 0) {
        mean[row] = m;
        rstd[row] = s;
    }
}

// Version 5: persistent warps. The grid is sized to what the GPU holds at once (a few blocks per SM) and each warp
// walks rows row, row + all warps, ...; a lane touches the same channels in every row, so it loads its share of
// weight and bias into registers once instead of once per row. Per row that removes 2 C floats of L1/L2 traffic
// (6 KB at C = 768, twice the row itself) and their load instructions, and no block is ever launched twice.
__global__ void layernorm_forward5(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                                   const float* bias, int N, int C) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int warps_in_grid = gridDim.x * blockDim.x / WARP_SIZE;
    const int C4 = C / 4;
    const float4* w4 = reinterpret_cast<const float4*>(weight);
    const float4* b4 = reinterpret_cast<const float4*>(bias);
    float4 w[F4_PER_LANE], b[F4_PER_LANE];
#pragma unroll
    for (int j = 0; j < F4_PER_LANE; j++) {
        const int i = lane + j * WARP_SIZE;
        w[j] = i < C4 ? w4[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        b[j] = i < C4 ? b4[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    // row is the same for the 32 lanes, so a warp leaves the loop as a whole
    for (int row = (blockIdx.x * blockDim.x + threadIdx.x) / WARP_SIZE; row < N; row += warps_in_grid) {
        const float4* x4 = reinterpret_cast<const float4*>(inp + (size_t)row * C);
        float4 x[F4_PER_LANE];
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < F4_PER_LANE; j++) {
            const int i = lane + j * WARP_SIZE;
            x[j] = i < C4 ? __ldcs(x4 + i) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            sum += (x[j].x + x[j].y) + (x[j].z + x[j].w);
        }
        const float m = warp_reduce_sum(sum) / C;
        float sum_sq = 0.0f;
#pragma unroll
        for (int j = 0; j < F4_PER_LANE; j++) {
            if (lane + j * WARP_SIZE < C4) {
                const float dx = x[j].x - m, dy = x[j].y - m, dz = x[j].z - m, dw = x[j].w - m;
                sum_sq += (dx * dx + dy * dy) + (dz * dz + dw * dw);
            }
        }
        const float s = 1.0f / sqrtf(warp_reduce_sum(sum_sq) / C + EPS);
        float4* o4 = reinterpret_cast<float4*>(out + (size_t)row * C);
#pragma unroll
        for (int j = 0; j < F4_PER_LANE; j++) {
            const int i = lane + j * WARP_SIZE;
            if (i < C4) {
                __stcs(o4 + i, make_float4((x[j].x - m) * s * w[j].x + b[j].x, (x[j].y - m) * s * w[j].y + b[j].y,
                                           (x[j].z - m) * s * w[j].z + b[j].z, (x[j].w - m) * s * w[j].w + b[j].w));
            }
        }
        if (lane == 0) {
            mean[row] = m;
            rstd[row] = s;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Launchers: the grid and block of each version.

// Threads per block: 128 for version 1 (64 blocks of 128 reach more SMs than 32 of 256), 256 (8 rows) otherwise.
#define BLOCK1 128
#define BLOCK 256
// Version 5: blocks per SM, all resident at once: at ~100 registers per thread (ptxas, sm_89 and sm_90) an SM's
// 64K registers hold 2 blocks of 256 threads.
#define BLOCKS_PER_SM5 2

static void layernorm_forward(int version, float* out, float* mean, float* rstd, const float* inp,
                              const float* weight, const float* bias, int N, int C) {
    const int rows_per_block = BLOCK / WARP_SIZE;
    switch (version) {
    case 1:
        LAUNCH(layernorm_forward1, CEIL_DIV(N, BLOCK1), BLOCK1, 0, out, mean, rstd, inp, weight, bias, N, C);
        break;
    case 2:
        LAUNCH(layernorm_forward2, CEIL_DIV(N, rows_per_block), BLOCK, 0, out, mean, rstd, inp, weight, bias, N, C);
        break;
    case 3:
        LAUNCH(layernorm_forward3, CEIL_DIV(N, rows_per_block), BLOCK, 0, out, mean, rstd, inp, weight, bias, N, C);
        break;
    case 4:
        LAUNCH(layernorm_forward4, CEIL_DIV(N, rows_per_block), BLOCK, 0, out, mean, rstd, inp, weight, bias, N, C);
        break;
    case 5: {
        const int blocks = std::min(CEIL_DIV(N, rows_per_block), sm_count() * BLOCKS_PER_SM5);
        LAUNCH(layernorm_forward5, blocks, BLOCK, 0, out, mean, rstd, inp, weight, bias, N, C);
        break;
    }
    }
}
#define NUM_VERSIONS 5

// ---------------------------------------------------------------------------------------------------------------

int main(int argc, char** argv) {
#ifdef LLMRS_EMU
    // Each CUDA thread costs ~65 ns on the emulator: 40 rows, and a C that is not a multiple of 128, so that the
    // float4 versions run a partial last float4 column per lane.
    const int B = 2, T = 20, C = 400;
#else
    const int B = 8, T = 1024, C = 768;  // GPT-2 124M
#endif
    const int N = B * T;
    const int only = selected_version(argc, argv, NUM_VERSIONS);
    if (C % 4 != 0 || C > C_MAX) {
        fprintf(stderr, "versions 4 and 5 need C %% 4 == 0 and C <= C_MAX (%d); C is %d\n", C_MAX, C);
        return 2;
    }
    printf("layernorm_forward: B %d, T %d, C %d%s\n", B, T, C, ON_EMULATOR ? " (on the emulator: no timing)" : "");

    Rng rng(42);
    // inp: (B, T, C); weight, bias: (C)
    const std::vector<float> inp = random_floats(rng, (size_t)N * C, -1.0f, 1.0f);
    const std::vector<float> weight = random_floats(rng, C, -1.0f, 1.0f);
    const std::vector<float> bias = random_floats(rng, C, -1.0f, 1.0f);
    std::vector<float> out_cpu((size_t)N * C), mean_cpu(N), rstd_cpu(N);
    layernorm_forward_cpu(out_cpu.data(), mean_cpu.data(), rstd_cpu.data(), inp.data(), weight.data(), bias.data(),
                          N, C);

    float* d_inp = to_device(inp);
    float* d_weight = to_device(weight);
    float* d_bias = to_device(bias);
    float* d_out = device_alloc<float>((size_t)N * C);
    float* d_mean = device_alloc<float>(N);
    float* d_rstd = device_alloc<float>(N);

    // Tolerance: |out| is at most ~3 here; fp32 sums of C terms in another order differ by ~1e-6 of that.
    const float atol = 1e-5f, rtol = 1e-5f;
    // Least traffic: x read once, out written once, statistics written, parameters read once.
    const double gbytes = (2.0 * N * C + 2.0 * N + 2.0 * C) * sizeof(float) * 1e-9;
    const int repeats = 20;
    int failed = 0, ran = 0;
    for (int version = 1; version <= NUM_VERSIONS; version++) {
        if (only != 0 && version != only) {
            continue;
        }
        printf("version %d\n", version);
        // Poison the outputs, so that a version that skips an element cannot pass on an earlier one's result.
        cudaCheck(cudaMemset(d_out, 0xff, (size_t)N * C * sizeof(float)));
        cudaCheck(cudaMemset(d_mean, 0xff, N * sizeof(float)));
        cudaCheck(cudaMemset(d_rstd, 0xff, N * sizeof(float)));
        layernorm_forward(version, d_out, d_mean, d_rstd, d_inp, d_weight, d_bias, N, C);
        bool ok = validate("out", d_out, out_cpu.data(), (size_t)N * C, atol, rtol);
        ok &= validate("mean", d_mean, mean_cpu.data(), N, atol, rtol);
        ok &= validate("rstd", d_rstd, rstd_cpu.data(), N, atol, rtol);
        failed += !ok;
        ran++;
        const float ms = time_ms(
            repeats, [] {},
            [&] { layernorm_forward(version, d_out, d_mean, d_rstd, d_inp, d_weight, d_bias, N, C); });
        print_time(ms, gbytes, "GB/s");
    }
    cudaCheck(cudaFree(d_inp));
    cudaCheck(cudaFree(d_weight));
    cudaCheck(cudaFree(d_bias));
    cudaCheck(cudaFree(d_out));
    cudaCheck(cudaFree(d_mean));
    cudaCheck(cudaFree(d_rstd));
    return report("layernorm_forward", failed, ran);
}
