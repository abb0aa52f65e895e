// The fused classifier (llm.c's idea), mirrors src/cpu/classifier.rs: softmax, cross-entropy and the gradient of
// the logits in one kernel per row, so the (B, T, Vp) probabilities are never stored; with write_dlogits the
// logits buffer is overwritten by dlogits. Per row, over the V real columns only (padding columns V..Vp never
// enter the softmax and get zero gradient):
//   p = softmax(logits[:V]);  loss = log(sum exp logits) - logits[target];  dlogits = (p - onehot(target)) dloss
//
// Logits and dlogits are floatX, losses float; the softmax is computed in float.
//
// Thread mapping: one block per (b, t) row; threads stride over the columns, and the row's max and sum of exp are
// block reductions. Elements moved per call: B*T*V read twice (max, then sum of exp: the row stays in L2), and with
// write_dlogits once more plus B*T*Vp written; B*T losses and targets.
#include "common.cuh"

// logits: (B, T, Vp), overwritten with dlogits when write_dlogits != 0; losses: (B, T); targets: (B, T) < V.
// dloss: d(mean loss)/d(loss of one position), 1 / (B T) for a mean over the batch (unused without write_dlogits).
// grid: B*T, block: a multiple of 32, at most 1024 (512).
extern "C" __global__ void fused_classifier(floatX* logits, float* losses, const unsigned int* __restrict__ targets,
                                            int B, int T, int V, int Vp, float dloss, int write_dlogits) {
    __shared__ float warp_scratch[WARP_SIZE];
    const int row = blockIdx.x;
    if (row >= B * T) {
        return;  // the whole block
    }
    floatX* x = logits + (size_t)row * Vp;
    const int target = targets[row];
    // Read before any thread overwrites the row: the block reductions below hold barriers.
    const float target_logit = to_float(x[target]);

    float row_max = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        row_max = fmaxf(row_max, to_float(x[i]));
    }
    row_max = block_reduce_max(row_max, warp_scratch);
    float sum = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) {
        sum += expf(to_float(x[i]) - row_max);
    }
    sum = block_reduce_sum(sum, warp_scratch);
    if (threadIdx.x == 0) {
        losses[row] = row_max + logf(sum) - target_logit;
    }
    if (write_dlogits) {
        const float inv_sum = 1.0f / sum;
        for (int i = threadIdx.x; i < V; i += blockDim.x) {
            const float p_dloss = expf(to_float(x[i]) - row_max) * inv_sum * dloss;
            x[i] = from_float<floatX>(i == target ? p_dloss - dloss : p_dloss);
        }
        for (int i = V + threadIdx.x; i < Vp; i += blockDim.x) {
            x[i] = from_float<floatX>(0.0f);
        }
    }
}
