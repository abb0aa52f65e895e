// The fused classifier (llm.c's idea), mirrors src/cpu/classifier.rs: softmax, cross-entropy and the gradient of
// the logits in one kernel per row, so the (B, T, Vp) probabilities are never stored; with write_dlogits the
// logits buffer is overwritten by dlogits. Per row, over the V real columns only (padding columns V..Vp never
// enter the softmax and get zero gradient):
//   p = softmax(logits[:V]);  loss = log(sum exp logits) - logits[target];  dlogits = (p - onehot(target)) dloss
//
// Logits and dlogits are floatX, losses float; the softmax is computed in float.
//
// Thread mapping: one block per (b, t) row; threads stride over the columns. The row's max and sum of exp come from
// ONE read of the logits (the online softmax: each thread keeps a running max m and a sum s of exp(x - m), rescaled
// by exp(m_old - m_new) when the max grows; the block then merges the (m, s) pairs), and the gradient pass reads
// them a second time, from L2 (a 50257-wide row is 100-200 KB). Elements moved per call: B*T*V read once for the
// loss, once more and B*T*Vp written with write_dlogits; B*T losses and targets.
#include "common.cuh"

// A running softmax normaliser: the max m of the values seen, and the sum s of exp(value - m).
struct Normaliser {
    float m;
    float s;
};

// The normaliser of the union of the values a and b have seen.
static __device__ __forceinline__ Normaliser merge(Normaliser a, Normaliser b) {
    const float m = fmaxf(a.m, b.m);
    if (m == -INFINITY) {
        return a;  // neither has seen a value
    }
    return Normaliser{m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
}

// The block's merged normaliser, returned to every thread. blockDim.x: a multiple of 32, at most 1024; every thread
// of the block must call it (two __syncthreads). scratch: (32) shared.
static __device__ __forceinline__ Normaliser block_merge(Normaliser v, Normaliser* scratch) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) {
        const Normaliser other{__shfl_xor_sync(FULL_MASK, v.m, offset), __shfl_xor_sync(FULL_MASK, v.s, offset)};
        v = merge(v, other);
    }
    if (lane == 0) {
        scratch[warp] = v;
    }
    __syncthreads();
    v = lane < (int)(blockDim.x / WARP_SIZE) ? scratch[lane] : Normaliser{-INFINITY, 0.0f};
    for (int offset = WARP_SIZE / 2; offset > 0; offset /= 2) {
        const Normaliser other{__shfl_xor_sync(FULL_MASK, v.m, offset), __shfl_xor_sync(FULL_MASK, v.s, offset)};
        v = merge(v, other);
    }
    __syncthreads();
    return v;
}

// logits: (B, T, Vp), overwritten with dlogits when write_dlogits != 0; losses: (B, T); targets: (B, T) < V.
// dloss: d(mean loss)/d(loss of one position), 1 / (B T) for a mean over the batch (unused without write_dlogits).
// grid: B*T, block: a multiple of 32, at most 1024 (512).
extern "C" __global__ void fused_classifier(floatX* logits, float* losses, const unsigned int* __restrict__ targets,
                                            int B, int T, int V, int Vp, float dloss, int write_dlogits) {
    __shared__ Normaliser scratch[WARP_SIZE];
    const int row = blockIdx.x;
    if (row >= B * T) {
        return;  // the whole block
    }
    floatX* x = logits + (size_t)row * Vp;
    const int target = targets[row];
    // Read before any thread overwrites the row: the block reduction below holds barriers.
    const float target_logit = to_float(x[target]);

    Normaliser n{-INFINITY, 0.0f};
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        const float xi = to_float(x[i]);
        if (xi > n.m) {  // a new max: rescale what was summed (to nothing while n.m is still -inf)
            n.s = n.s * expf(n.m - xi) + 1.0f;
            n.m = xi;
        } else if (xi != -INFINITY) {  // a -inf logit adds nothing; NaN falls through and poisons the loss
            n.s += expf(xi - n.m);
        }
    }
    n = block_merge(n, scratch);
    if (threadIdx.x == 0) {
        losses[row] = n.m + logf(n.s) - target_logit;
    }
    if (write_dlogits) {
        const float inv_sum = 1.0f / n.s;
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            const float p_dloss = expf(to_float(x[i]) - n.m) * inv_sum * dloss;
            x[i] = from_float<floatX>(i == target ? p_dloss - dloss : p_dloss);
        }
        for (int i = V + threadIdx.x; i < Vp; i += blockDim.x) {
            x[i] = from_float<floatX>(0.0f);
        }
    }
}
