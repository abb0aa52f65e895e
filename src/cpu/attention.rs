//! Causal multi-head self-attention, one (b, h) at a time as matrix products.
//!
//! For batch b, head h, query position t (q, k, v are HS-wide slices of the qkv rows):
//!   s[t2] = q[t] · k[t2] / sqrt(HS)  for t2 <= t (causal)
//!   lse[t] = log(sum exp s)          (kept for the backward pass: one float per row)
//!   out[t] = sum_t2 exp(s[t2] - lse[t]) v[t2]
//!
//! Backward, with p = exp(s - lse), dp[t][t2] = dout[t] · v[t2] and D[t] = dout[t] · out[t] (= sum p dp):
//!   ds = p (dp - D) / sqrt(HS);  dq[t] += ds k[t2];  dk[t2] += ds q[t];  dv[t2] += p dout[t]
//!
//! Each (b, h) computes its (T, T) scores with one GEMM (S = Q Kᵀ), turns them into probabilities in place, and
//! finishes with GEMMs (out = P V; backward dP = dout Vᵀ, then dQ += dS K, dK += dSᵀ Q, dV += Pᵀ dout), on the
//! GEMM kernels of src/cpu/matmul.rs. The (T, T) matrices live in a per-thread scratch reused by every head and
//! step (2 T² floats; 8 MB at T = 1024), never in the activations: the backward pass recomputes them from q, k
//! and lse. Tasks are the B sequences (a task owns its rows of out, lse and dqkv); the GEMMs inside run on the
//! task's thread. Computing the full T × T product and masking wastes the upper triangle, about half the
//! attention FLOPs, but a GEMM runs more than ten times faster than the dot product per pair it replaces.

use super::matmul::sgemm_serial;
use super::simd::{dot, exp, max, sum, vectorized};
use rayon::prelude::*;
use std::cell::RefCell;

thread_local! {
    /// Per worker thread: a (T, T) matrix of scores, then probabilities, and one of their gradients; grown to the
    /// largest T seen and reused.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// p (T, T) = the causal scores of head h of one sequence: s[t][t2] = q[t] · k[t2] / sqrt(HS) for t2 <= t, 0 above
/// the diagonal (the callers turn row t's first t + 1 entries into probabilities). qkv: (T, 3C) of this sequence.
fn scores(p: &mut [f32], qkv: &[f32], t: usize, c: usize, hs: usize, h: usize) {
    let scale = 1.0 / (hs as f32).sqrt();
    // S (T, T) = Q (T, HS) · Kᵀ (HS, T): K's row j, channel i is qkv[j * 3C + C + h HS + i].
    sgemm_serial(t, t, hs, p, t, 1, &qkv[h * hs..], 3 * c, 1, &qkv[c + h * hs..], 1, 3 * c, false);
    for (ti, row) in p[..t * t].chunks_exact_mut(t).enumerate() {
        let (seen, future) = row.split_at_mut(ti + 1);
        seen.iter_mut().for_each(|s| *s *= scale);
        future.fill(0.0);
    }
}

/// out: (B, T, C); lse: (B, T, NH); qkv: (B, T, 3C) with q, k, v at channel offsets 0, C, 2C.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(out: &mut [f32], lse: &mut [f32], qkv: &[f32], b: usize, t: usize, c: usize, nh: usize) {
    let hs = c / nh;
    out[..b * t * c].par_chunks_mut(t * c).zip(lse[..b * t * nh].par_chunks_mut(t * nh)).enumerate().for_each(
        |(bi, (out_b, lse_b))| {
            let qkv_b = &qkv[bi * t * 3 * c..][..t * 3 * c];
            SCRATCH.with_borrow_mut(|(p, _)| {
                if p.len() < t * t {
                    p.resize(t * t, 0.0);
                }
                for h in 0..nh {
                    scores(p, qkv_b, t, c, hs, h);
                    vectorized(|| {
                        for (ti, row) in p[..t * t].chunks_exact_mut(t).enumerate() {
                            let seen = &mut row[..=ti];
                            let max = max(seen);
                            seen.iter_mut().for_each(|s| *s = exp(*s - max));
                            let sum = sum(seen);
                            let inv_sum = 1.0 / sum;
                            seen.iter_mut().for_each(|s| *s *= inv_sum);
                            lse_b[ti * nh + h] = max + sum.ln();
                        }
                    });
                    // out_h (T, HS) = P (T, T) · V (T, HS), rows C apart in out.
                    let v = &qkv_b[2 * c + h * hs..];
                    sgemm_serial(t, hs, t, &mut out_b[h * hs..], c, 1, p, t, 1, v, 3 * c, 1, false);
                }
            });
        },
    );
}

/// dqkv: (B, T, 3C) accumulates; dout, out: (B, T, C); qkv: (B, T, 3C); lse: (B, T, NH).
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    dqkv[..b * t * 3 * c].par_chunks_mut(t * 3 * c).enumerate().for_each(|(bi, dqkv_b)| {
        let qkv_b = &qkv[bi * t * 3 * c..][..t * 3 * c];
        let (dout_b, out_b) = (&dout[bi * t * c..][..t * c], &out[bi * t * c..][..t * c]);
        let lse_b = &lse[bi * t * nh..][..t * nh];
        SCRATCH.with_borrow_mut(|(p, dp)| {
            for m in [&mut *p, &mut *dp] {
                if m.len() < t * t {
                    m.resize(t * t, 0.0);
                }
            }
            for h in 0..nh {
                // P recomputed from the scores and the forward pass's lse; zero above the diagonal.
                scores(p, qkv_b, t, c, hs, h);
                vectorized(|| {
                    for (ti, row) in p[..t * t].chunks_exact_mut(t).enumerate() {
                        let l = lse_b[ti * nh + h];
                        row[..=ti].iter_mut().for_each(|s| *s = exp(*s - l));
                    }
                });
                // dP (T, T) = dout_h (T, HS) · Vᵀ (HS, T).
                let (g, v) = (&dout_b[h * hs..], &qkv_b[2 * c + h * hs..]);
                sgemm_serial(t, t, hs, dp, t, 1, g, c, 1, v, 1, 3 * c, false);
                // dS = P (dP - D) / sqrt(HS), in place of dP (zero above the diagonal, where P is).
                vectorized(|| {
                    for ti in 0..t {
                        let d = dot(&dout_b[ti * c + h * hs..][..hs], &out_b[ti * c + h * hs..][..hs]);
                        for (ds, &pp) in dp[ti * t..][..=ti].iter_mut().zip(&p[ti * t..][..=ti]) {
                            *ds = pp * (*ds - d) * scale;
                        }
                        dp[ti * t + ti + 1..][..t - ti - 1].fill(0.0);
                    }
                });
                let (q, k) = (&qkv_b[h * hs..], &qkv_b[c + h * hs..]);
                // dQ (T, HS) += dS (T, T) · K (T, HS); dK += dSᵀ · Q; dV += Pᵀ · dout.
                sgemm_serial(t, hs, t, &mut dqkv_b[h * hs..], 3 * c, 1, dp, t, 1, k, 3 * c, 1, true);
                sgemm_serial(t, hs, t, &mut dqkv_b[c + h * hs..], 3 * c, 1, dp, 1, t, q, 3 * c, 1, true);
                sgemm_serial(t, hs, t, &mut dqkv_b[2 * c + h * hs..], 3 * c, 1, p, 1, t, g, c, 1, true);
            }
        });
    });
}
