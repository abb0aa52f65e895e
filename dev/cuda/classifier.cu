// The fused classifier: softmax, cross-entropy loss and the gradient of the logits in one kernel, from one thread
// per row to vectorised blocks that read each row as few times as they can.
//
// Per (b, t) row of logits, over the V real columns only (mirrors kernels/classifier.cu and src/cpu/classifier.rs;
// the padding columns V..Vp never enter the softmax and get zero gradient):
//   p = softmax(logits[:V]);  loss = log(sum exp logits) - logits[target];  dlogits = (p - onehot(target)) dloss
// and dlogits overwrites the logits, so the (B, T, Vp) probabilities are never stored.
// logits: (B, T, Vp); losses: (B, T); targets: (B, T), each < V. dloss = 1 / (B*T), the mean loss's gradient.
// Bound by memory: the least any version can move is each row read once and written once, 2 B*T*Vp floats (3.3 GB
// at GPT-2 124M); the GB/s printed is that least traffic divided by the time. Every extra read of a row costs
// another 1.65 GB wherever the row has left L2 (201 KB per row at Vp = 50304; 50 MB of L2 on an H100).
//
//   ./classifier        every version          ./classifier 4   version 4 only
// Building (nvcc or the CPU emulator dev/emu): dev/cuda/run.sh, dev/cuda/README.md.
#include "common.h"

// ---------------------------------------------------------------------------------------------------------------
// CPU reference: three passes per row (max, sum of exp, write), sums in double.

static void classifier_cpu(float* logits, float* losses, const unsigned* targets, int N, int V, int Vp,
                           float dloss) {
    for (int row = 0; row < N; row++) {
        float* x = logits + (size_t)row * Vp;
        double max = -INFINITY;
        for (int i = 0; i < V; i++) {
            max = std::max(max, (double)x[i]);
        }
        double sum = 0.0;
        for (int i = 0; i < V; i++) {
            sum += exp(x[i] - max);
        }
        losses[row] = (float)(max + log(sum) - x[targets[row]]);
        for (int i = 0; i < Vp; i++) {
            const double p = i < V ? exp(x[i] - max) / sum : 0.0;
            x[i] = (float)((p - (i == (int)targets[row])) * dloss);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Kernels. All take logits: (N, Vp), overwritten with dlogits; losses: (N); targets: (N). N = B*T rows.

// Version 1: one thread per row, three passes over its row (max, sum of exp, write dlogits), like the CPU. The
// neighbouring threads of a warp read addresses Vp floats apart, so no load is coalesced, and 8192 rows make 256
// warps, ~2 per SM: the memory system is barely used. Three reads and a write of every row.
__global__ void classifier1(float* logits, float* losses, const unsigned* targets, int N, int V, int Vp,
                            float dloss) {
    const int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= N) {
        return;
    }
    float* x = logits + (size_t)row * Vp;
    const int target = targets[row];
    float max = -INFINITY;
    for (int i = 0; i < V; i++) {
        max = fmaxf(max, x[i]);
    }
    float sum = 0.0f;
    for (int i = 0; i < V; i++) {
        sum += expf(x[i] - max);
    }
    losses[row] = max + logf(sum) - x[target];
    for (int i = 0; i < Vp; i++) {
        x[i] = i < V ? (expf(x[i] - max) / sum - (i == target)) * dloss : 0.0f;
    }
}

// Version 2: one block per row; threads stride the columns (coalesced) and the max and the sum are block
// reductions (shuffles within each warp, then across warps through shared memory: block_reduce_* in
// kernels/common.cuh). Thousands of warps keep the memory busy. Still three passes: a row's second and third reads
// hit L2 only while it is still there. This is the mainline kernel.
__global__ void classifier2(float* logits, float* losses, const unsigned* targets, int N, int V, int Vp,
                            float dloss) {
    __shared__ float scratch[WARP_SIZE];
    const int row = blockIdx.x;
    if (row >= N) {
        return;  // the whole block
    }
    float* x = logits + (size_t)row * Vp;
    const int target = targets[row];
    const float target_logit = x[target];  // read before any thread overwrites the row, after the reductions
    float max = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        max = fmaxf(max, x[i]);
    }
    max = block_reduce_max(max, scratch);
    float sum = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        sum += expf(x[i] - max);
    }
    sum = block_reduce_sum(sum, scratch);
    if (threadIdx.x == 0) {
        losses[row] = max + logf(sum) - target_logit;
    }
    for (int i = threadIdx.x; i < Vp; i += blockDim.x) {
        x[i] = i < V ? (expf(x[i] - max) / sum - (i == target)) * dloss : 0.0f;
    }
}

// Adds x to a running pair (max, sum of exp(y - max) over the y seen so far): when x is the new max, the sum so far
// is rescaled to it. At the first x, max is -inf and the sum becomes 1.
static __device__ __forceinline__ void online_add(float& max, float& sum, float x) {
    if (x > max) {
        sum = sum * expf(max - x) + 1.0f;
        max = x;
    } else {
        sum += expf(x - max);
    }
}

// The row's max and sum of exp from every thread's own pair: each sum is rescaled to the block's max, then added.
// Every thread of the block must call it (block reductions hold barriers).
static __device__ __forceinline__ void block_combine(float& max, float& sum, float* scratch) {
    const float block_max = block_reduce_max(max, scratch);
    sum = block_reduce_sum(sum * expf(max - block_max), scratch);  // a thread with no column adds 0 * 0
    max = block_max;
}

// Version 3: max and sum of exp in a single read (the online softmax: online_add above), one block reduction of the
// (max, sum) pairs, then the write pass. Two reads and a write of each row instead of three reads and a write. The
// extra exp when the max moves is rare after a thread's first few columns.
__global__ void classifier3(float* logits, float* losses, const unsigned* targets, int N, int V, int Vp,
                            float dloss) {
    __shared__ float scratch[WARP_SIZE];
    const int row = blockIdx.x;
    if (row >= N) {
        return;  // the whole block
    }
    float* x = logits + (size_t)row * Vp;
    const int target = targets[row];
    const float target_logit = x[target];
    float max = -INFINITY;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        online_add(max, sum, x[i]);
    }
    block_combine(max, sum, scratch);
    if (threadIdx.x == 0) {
        losses[row] = max + logf(sum) - target_logit;
    }
    for (int i = threadIdx.x; i < Vp; i += blockDim.x) {
        x[i] = i < V ? (expf(x[i] - max) / sum - (i == target)) * dloss : 0.0f;
    }
}

// dlogits of the four columns c .. c+3 held in v (zero past V; minus dloss at the target), as one float4.
static __device__ __forceinline__ float4 dlogits4(float4 v, int c, float max, float inv_sum, int V, int target,
                                                  float dloss) {
    float d[4] = {v.x, v.y, v.z, v.w};
    for (int k = 0; k < 4; k++) {
        d[k] = c + k < V ? (expf(d[k] - max) * inv_sum - (c + k == target)) * dloss : 0.0f;
    }
    return make_float4(d[0], d[1], d[2], d[3]);
}

// Version 4: 128-bit accesses: each thread reads and writes a float4 (4 columns) at a time, a quarter of the load
// and store instructions and full 512-byte runs per warp (needs Vp % 4 == 0, so rows stay 16-byte aligned; the
// float4 straddling V masks its padding columns). The second read and the write carry streaming hints (__ldcs,
// __stcs: last use, evict first), so the row that is done leaves L2 first and the rows still between their two
// reads keep their place. Also one division per row instead of one per column.
__global__ void classifier4(float* logits, float* losses, const unsigned* targets, int N, int V, int Vp,
                            float dloss) {
    __shared__ float scratch[WARP_SIZE];
    const int row = blockIdx.x;
    if (row >= N) {
        return;  // the whole block
    }
    float* x = logits + (size_t)row * Vp;
    float4* x4 = reinterpret_cast<float4*>(x);
    const int V4 = CEIL_DIV(V, 4);  // float4s holding a real column
    const int target = targets[row];
    const float target_logit = x[target];
    float max = -INFINITY;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < V4; i += blockDim.x) {
        const float4 v = x4[i];
        const float c[4] = {v.x, v.y, v.z, v.w};
        for (int k = 0; k < 4; k++) {
            if (4 * i + k < V) {
                online_add(max, sum, c[k]);
            }
        }
    }
    block_combine(max, sum, scratch);
    if (threadIdx.x == 0) {
        losses[row] = max + logf(sum) - target_logit;
    }
    const float inv_sum = 1.0f / sum;
    for (int i = threadIdx.x; i < Vp / 4; i += blockDim.x) {
        __stcs(x4 + i, dlogits4(__ldcs(x4 + i), 4 * i, max, inv_sum, V, target, dloss));
    }
}

// Version 5: the write pass walks the row backwards. The first pass ends at the row's last columns, so those are
// the freshest in L2 (least recently used goes first); starting the second pass there reads from L2 what version 4
// fetches again from memory, the further into the row the less, until the rest went the way of the other rows'
// traffic. With 512-thread blocks ~4 rows per SM are in flight, ~100 MB of rows on an H100 against 50 MB of L2:
// about half of each row can still be there. Reasoned, to be measured.
__global__ void classifier5(float* logits, float* losses, const unsigned* targets, int N, int V, int Vp,
                            float dloss) {
    __shared__ float scratch[WARP_SIZE];
    const int row = blockIdx.x;
    if (row >= N) {
        return;  // the whole block
    }
    float* x = logits + (size_t)row * Vp;
    float4* x4 = reinterpret_cast<float4*>(x);
    const int V4 = CEIL_DIV(V, 4);
    const int target = targets[row];
    const float target_logit = x[target];
    float max = -INFINITY;
    float sum = 0.0f;
    for (int i = threadIdx.x; i < V4; i += blockDim.x) {
        const float4 v = x4[i];
        const float c[4] = {v.x, v.y, v.z, v.w};
        for (int k = 0; k < 4; k++) {
            if (4 * i + k < V) {
                online_add(max, sum, c[k]);
            }
        }
    }
    block_combine(max, sum, scratch);
    if (threadIdx.x == 0) {
        losses[row] = max + logf(sum) - target_logit;
    }
    const float inv_sum = 1.0f / sum;
    for (int i = Vp / 4 - 1 - threadIdx.x; i >= 0; i -= blockDim.x) {
        __stcs(x4 + i, dlogits4(__ldcs(x4 + i), 4 * i, max, inv_sum, V, target, dloss));
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Launchers: version 1 takes a thread per row in blocks of 128 (64 blocks reach more SMs than 32 of 256); the
// others a block of 512 threads per row (the mainline's choice).

#define BLOCK1 128
#define BLOCK 512

static void classifier(int version, float* logits, float* losses, const unsigned* targets, int N, int V, int Vp,
                       float dloss) {
    switch (version) {
    case 1:
        LAUNCH(classifier1, CEIL_DIV(N, BLOCK1), BLOCK1, 0, logits, losses, targets, N, V, Vp, dloss);
        break;
    case 2:
        LAUNCH(classifier2, N, BLOCK, 0, logits, losses, targets, N, V, Vp, dloss);
        break;
    case 3:
        LAUNCH(classifier3, N, BLOCK, 0, logits, losses, targets, N, V, Vp, dloss);
        break;
    case 4:
        LAUNCH(classifier4, N, BLOCK, 0, logits, losses, targets, N, V, Vp, dloss);
        break;
    case 5:
        LAUNCH(classifier5, N, BLOCK, 0, logits, losses, targets, N, V, Vp, dloss);
        break;
    }
}
#define NUM_VERSIONS 5

// ---------------------------------------------------------------------------------------------------------------

int main(int argc, char** argv) {
#ifdef LLMRS_EMU
    // Each CUDA thread costs ~65 ns on the emulator: 16 rows of a vocabulary whose V is not a multiple of 4, so the
    // float4 at V mixes real and padding columns.
    const int B = 2, T = 8, V = 1001, Vp = 1024;
#else
    const int B = 8, T = 1024, V = 50257, Vp = 50304;  // GPT-2 124M
#endif
    const int N = B * T;
    const int only = selected_version(argc, argv, NUM_VERSIONS);
    if (Vp % 4 != 0 || Vp < V) {
        fprintf(stderr, "versions 4 and 5 need Vp %% 4 == 0 and Vp >= V; Vp is %d, V %d\n", Vp, V);
        return 2;
    }
    printf("classifier: B %d, T %d, V %d, Vp %d%s\n", B, T, V, Vp, ON_EMULATOR ? " (on the emulator: no timing)" : "");

    Rng rng(42);
    // logits: (B, T, Vp); the padding columns hold random values too, which must not count. targets: (B, T),
    // with the first and last real columns among them.
    const std::vector<float> logits = random_floats(rng, (size_t)N * Vp, -4.0f, 4.0f);
    std::vector<unsigned> targets(N);
    for (int row = 0; row < N; row++) {
        targets[row] = rng.next_u32() % V;
    }
    targets[0] = 0;
    targets[N - 1] = V - 1;
    const float dloss = 1.0f / N;
    std::vector<float> dlogits_cpu = logits, losses_cpu(N);
    classifier_cpu(dlogits_cpu.data(), losses_cpu.data(), targets.data(), N, V, Vp, dloss);

    float* d_logits_in = to_device(logits);  // pristine, copied over d_logits before every run
    float* d_logits = device_alloc<float>((size_t)N * Vp);
    float* d_losses = device_alloc<float>(N);
    unsigned* d_targets = to_device(targets);
    const auto restore = [&] {
        cudaCheck(cudaMemcpy(d_logits, d_logits_in, (size_t)N * Vp * sizeof(float), cudaMemcpyDeviceToDevice));
    };

    // Tolerances. losses (~12): a few fp32 ulps, plus version 1's sum of V floats one after another (relative
    // rounding up to ~1e-5). dlogits: relative, for the same reason; the absolute part is a millionth of dloss.
    const float loss_atol = 1e-5f, loss_rtol = 1e-5f;
    const float dlogits_atol = 1e-6f * dloss, dlogits_rtol = 1e-4f;
    const double gbytes = (2.0 * N * Vp * sizeof(float) + 2.0 * N * sizeof(float)) * 1e-9;
    const int repeats = 10;
    int failed = 0, ran = 0;
    for (int version = 1; version <= NUM_VERSIONS; version++) {
        if (only != 0 && version != only) {
            continue;
        }
        printf("version %d\n", version);
        restore();
        cudaCheck(cudaMemset(d_losses, 0xff, N * sizeof(float)));
        classifier(version, d_logits, d_losses, d_targets, N, V, Vp, dloss);
        bool ok = validate("losses", d_losses, losses_cpu.data(), N, loss_atol, loss_rtol);
        ok &= validate("dlogits", d_logits, dlogits_cpu.data(), (size_t)N * Vp, dlogits_atol, dlogits_rtol);
        failed += !ok;
        ran++;
        const float ms =
            time_ms(repeats, restore, [&] { classifier(version, d_logits, d_losses, d_targets, N, V, Vp, dloss); });
        print_time(ms, gbytes, "GB/s");
    }
    cudaCheck(cudaFree(d_logits_in));
    cudaCheck(cudaFree(d_logits));
    cudaCheck(cudaFree(d_losses));
    cudaCheck(cudaFree(d_targets));
    return report("classifier", failed, ran);
}
