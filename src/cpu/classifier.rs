//! The fused classifier (llm.c's idea): softmax, cross-entropy and the gradient of the logits in one pass over
//! each row, so the (B, T, Vp) probabilities are never stored: the logits buffer is overwritten by dlogits.
//!
//! Per row, over the V real columns only (padding columns V..Vp never enter the softmax and get zero gradient):
//!   p = softmax(logits[:V]);  loss = log(sum exp logits) - logits[target];  dlogits = (p - onehot(target)) dloss

use super::simd::{exp, max, sum, vectorized};
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
            row_loss(row, loss, target, v, dloss);
        },
    );
}

vectorized! {
    /// One position: the loss from its logits row (Vp wide, the first V real), and with `dloss` the row replaced
    /// by its gradient, (softmax - one_hot(target)) dloss, padding zeroed.
    fn row_loss(row: &mut [f32], loss: &mut f32, target: usize, v: usize, dloss: Option<f32>) {
        let max = max(&row[..v]);
        match dloss {
            // Evaluation: the logits must survive, so the exponentials are summed on the fly.
            None => {
                let sum = row[..v].iter().fold(0.0, |s, &x| s + exp(x - max));
                *loss = max + sum.ln() - row[target];
            }
            // Training: e^(logit - max) is stored in place once, summed, then scaled into p dloss.
            Some(dloss) => {
                let logit = row[target];
                row[..v].iter_mut().for_each(|x| *x = exp(*x - max));
                let sum = sum(&row[..v]);
                *loss = max + sum.ln() - logit;
                let scale = dloss / sum;
                row[..v].iter_mut().for_each(|x| *x *= scale);
                row[target] -= dloss;
                row[v..].fill(0.0);
            }
        }
    }
}
