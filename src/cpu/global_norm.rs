//! The global gradient norm, sqrt(sum of all gradients squared), for clipping: when it exceeds the limit,
//! every gradient is scaled by limit / norm (applied inside the AdamW pass through its `grad_scale`).
//!
//! Squares are summed in f64 over fixed-size chunks, then the chunk sums in order, so the result does not depend
//! on the number of threads.

use rayon::prelude::*;

const CHUNK: usize = 64 * 1024;

/// sum of squares of grads: (N), in f64.
pub fn global_norm_squared(grads: &[f32]) -> f64 {
    grads
        .par_chunks(CHUNK)
        .map(|chunk| chunk.iter().map(|&g| (g as f64) * (g as f64)).sum::<f64>())
        .collect::<Vec<f64>>()
        .into_iter()
        .sum()
}

/// The factor that clips gradients of global norm `norm` to at most `clip` (`clip` <= 0 disables clipping).
pub fn clip_scale(norm: f32, clip: f32) -> f32 {
    if clip > 0.0 && norm > clip {
        clip / norm
    } else {
        1.0
    }
}
