//! The fused classifier (llm.c's idea): softmax, cross-entropy and the gradient of the logits in one pass over
//! each row, so the (B, T, Vp) probabilities are never stored: the logits buffer is overwritten by dlogits.
//!
//! Per row, over the V real columns only (padding columns V..Vp never enter the softmax and get zero gradient):
//!   p = softmax(logits[:V]);  loss = log(sum exp logits) - logits[target];  dlogits = (p - onehot(target)) dloss

use rayon::prelude::*;

/// logits: (B, T, Vp), overwritten with dlogits when `dloss` is given; losses: (B, T); targets: (B, T) < V.
/// `dloss` is d(mean loss)/d(loss of one position), 1 / (B T) for a mean over the batch.
#[allow(clippy::too_many_arguments)]
pub fn fused_classifier(
    logits: &mut [f32],
    losses: &mut [f32],
    targets: &[u32],
    b: usize,
    t: usize,
    v: usize,
    vp: usize,
    dloss: Option<f32>,
) {
    let n = b * t;
    logits[..n * vp].par_chunks_mut(vp).zip(losses[..n].par_iter_mut()).zip(targets[..n].par_iter()).for_each(
        |((row, loss), &target)| {
            let target = target as usize;
            debug_assert!(target < v, "target {target} outside the vocab of {v}");
            let max = row[..v].iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let sum: f32 = row[..v].iter().map(|&x| (x - max).exp()).sum();
            *loss = max + sum.ln() - row[target];
            if let Some(dloss) = dloss {
                let inv_sum = 1.0 / sum;
                for x in &mut row[..v] {
                    *x = (*x - max).exp() * inv_sum * dloss;
                }
                row[target] -= dloss;
                row[v..].fill(0.0);
            }
        },
    );
}
