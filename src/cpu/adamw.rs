//! AdamW as PyTorch defines it: bias-corrected moments and decoupled weight decay, fused into one pass over the
//! parameters. The gradient is multiplied by `grad_scale` as it is read, which is how gradient clipping by the
//! global norm is applied without a separate pass (see `global_norm`).
//!
//!   g = grad * grad_scale
//!   m = beta1 m + (1 - beta1) g;        v = beta2 v + (1 - beta2) g²
//!   param -= lr (m / (1 - beta1^step) / (sqrt(v / (1 - beta2^step)) + eps) + weight_decay param)

use super::simd::vectorized;
use super::ELEMENTWISE_CHUNK;
use rayon::prelude::*;

/// The hyper-parameters of one update.
#[derive(Debug, Clone, Copy)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Multiplies every gradient (clip / norm when clipping, else 1).
    pub grad_scale: f32,
    /// 1 for the first update: the bias corrections divide by 1 - beta^step.
    pub step: u32,
}

impl AdamWStep {
    /// 1 - beta1^step and 1 - beta2^step, in f64 as PyTorch computes them (beta2^step in f32 drifts by ~1e-5
    /// relative after thousands of steps), returned as the f32 divisors the update uses. The GPU launcher passes
    /// these same two numbers to its kernel.
    pub fn bias_corrections(&self) -> (f32, f32) {
        let correction = |beta: f32| (1.0 - (beta as f64).powi(self.step as i32)) as f32;
        (correction(self.beta1), correction(self.beta2))
    }
}

/// params, m, v updated in place; grads read. All (N).
pub fn adamw_update(params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], hp: &AdamWStep) {
    let (bias_correction1, bias_correction2) = hp.bias_corrections();
    params
        .par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(grads.par_chunks(ELEMENTWISE_CHUNK))
        .zip(m.par_chunks_mut(ELEMENTWISE_CHUNK))
        .zip(v.par_chunks_mut(ELEMENTWISE_CHUNK))
        .for_each(|(((p, g), m), v)| update_chunk(p, g, m, v, hp, bias_correction1, bias_correction2));
}

vectorized! {
    fn update_chunk(
        params: &mut [f32],
        grads: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        hp: &AdamWStep,
        bias_correction1: f32,
        bias_correction2: f32,
    ) {
        for (((p, &g), m), v) in params.iter_mut().zip(grads).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = g * hp.grad_scale;
            *m = hp.beta1 * *m + (1.0 - hp.beta1) * g;
            *v = hp.beta2 * *v + (1.0 - hp.beta2) * g * g;
            let m_hat = *m / bias_correction1;
            let v_hat = *v / bias_correction2;
            *p -= hp.lr * (m_hat / (v_hat.sqrt() + hp.eps) + hp.weight_decay * *p);
        }
    }
}
