//! The global gradient norm, sqrt(sum of all gradients squared), for clipping: when it exceeds the limit,
//! every gradient is scaled by limit / norm (applied inside the AdamW pass through its `grad_scale`).
//!
//! Squares are summed in f64 over a fixed number of slices, then the slice sums in order, so the result does not
//! depend on the number of threads, and no buffer is allocated.

use super::simd::vectorized;
use rayon::prelude::*;

/// Slices summed in parallel: enough tasks for any CPU, few enough to live on the stack.
const SLICES: usize = 64;

/// sum of squares of grads: (N), in f64.
pub fn global_norm_squared(grads: &[f32]) -> f64 {
    let slice_len = grads.len().div_ceil(SLICES).max(1);
    let mut partials = [0.0f64; SLICES];
    partials.par_iter_mut().zip(grads.par_chunks(slice_len)).for_each(|(partial, slice)| {
        *partial = sum_of_squares(slice);
    });
    partials.iter().sum()
}

vectorized! {
    /// Σ x² in f64, in 8 interleaved partial sums (one AVX-512 register of f64) so the loop vectorizes.
    fn sum_of_squares(x: &[f32]) -> f64 {
        const LANES: usize = 8;
        let mut acc = [0.0f64; LANES];
        let chunks = x.chunks_exact(LANES);
        let tail: f64 = chunks.remainder().iter().map(|&g| (g as f64) * (g as f64)).sum();
        for chunk in chunks {
            for (a, &g) in acc.iter_mut().zip(chunk) {
                *a += (g as f64) * (g as f64);
            }
        }
        acc.iter().sum::<f64>() + tail
    }
}

/// The factor that clips gradients of global norm `norm` to at most `clip` (`clip` <= 0 disables clipping).
pub fn clip_scale(norm: f32, clip: f32) -> f32 {
    if clip > 0.0 && norm > clip {
        clip / norm
    } else {
        1.0
    }
}
