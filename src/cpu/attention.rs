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
//! Each (b, h) works through its query rows in blocks of QUERY_BLOCK. Block [i0, i1) attends to keys 0..i1 only,
//! so its scores are one GEMM, S = Q[i0..i1] K[0..i1]ᵀ, turned into the softmax's numerators in place (1 / sqrt(HS)
//! folded into the exponentials), and its output one more, out[i0..i1] = P V[0..i1], then divided by the row sums
//! (HS multiplies per row instead of one per key); backward recomputes P, then dP = dout Vᵀ, dQ += dS K,
//! dK += dSᵀ Q, dV += Pᵀ dout, all on the GEMM kernels of src/cpu/matmul.rs. Skipping the keys after i1 skips most
//! of the masked upper triangle: at T = 256 the products do 62.5% of the work of the full (T, T) ones. The
//! (QUERY_BLOCK, T) blocks of P and dP live in a per-thread scratch reused by every block, head and step
//! (2 x 64 x T floats, in L2), never in the activations: the backward pass recomputes them from q, k and lse.
//! Tasks are the B sequences (a task owns its rows of out, lse and dqkv); the GEMMs inside run on the task's
//! thread.

use super::grown;
use super::matmul::sgemm_serial;
use super::simd::{dot, exp, max, sum, vectorized};
use rayon::prelude::*;
use std::cell::RefCell;

/// Query rows per block. Smaller blocks skip more of the masked triangle but make smaller, slower GEMMs.
const QUERY_BLOCK: usize = 64;

thread_local! {
    /// Per worker thread: a (QUERY_BLOCK, T) block of scores, then probabilities, and one of their gradients;
    /// grown to the largest T seen and reused.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The query blocks [i0, i1) of a sequence of length T.
fn blocks(t: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..t).step_by(QUERY_BLOCK).map(move |i0| (i0, (i0 + QUERY_BLOCK).min(t)))
}

/// p (i1 - i0, T), row r for query i0 + r, columns 0..i1: head h's raw scores q · k, not yet scaled by 1 / sqrt(HS)
/// (the callers fold the scale into their exponentials and zero the entries right of the diagonal). qkv: (T, 3C)
/// of this sequence.
#[allow(clippy::too_many_arguments)]
fn scores(p: &mut [f32], qkv: &[f32], t: usize, c: usize, hs: usize, h: usize, i0: usize, i1: usize) {
    // S (i1 - i0, i1) = Q[i0..i1] (i1 - i0, HS) · K[0..i1]ᵀ (HS, i1): K's row j, channel i is qkv[j 3C + C + h HS + i].
    let q = &qkv[i0 * 3 * c + h * hs..];
    sgemm_serial(i1 - i0, i1, hs, p, t, 1, q, 3 * c, 1, &qkv[c + h * hs..], 1, 3 * c, false);
}

vectorized! {
    /// Rows 0..i1 - i0 of p (T apart) from raw scores s to e^(scale (s - max)) up to the diagonal and 0 right of
    /// it up to i1: the softmax's numerators. The rows are not divided by their sums here; the caller scales the
    /// output rows by inv_sum[r] instead (HS multiplies per row rather than one per key). Each row's
    /// log-sum-exp of the scaled scores goes to lse_b[(i0 + r) NH + h].
    #[allow(clippy::too_many_arguments)]
    fn softmax_rows(
        p: &mut [f32],
        lse_b: &mut [f32],
        inv_sum: &mut [f32],
        t: usize,
        nh: usize,
        h: usize,
        i0: usize,
        i1: usize,
        scale: f32,
    ) {
        for (r, row) in p.chunks_mut(t).take(i1 - i0).enumerate() {
            let (seen, future) = row[..i1].split_at_mut(i0 + r + 1);
            let max = max(seen);
            seen.iter_mut().for_each(|s| *s = exp((*s - max) * scale));
            let sum = sum(seen);
            inv_sum[r] = 1.0 / sum;
            lse_b[(i0 + r) * nh + h] = max * scale + sum.ln();
            future.fill(0.0);
        }
    }
}

vectorized! {
    /// Rows 0..inv_sum.len() of out_h (C apart, HS wide) times inv_sum: the softmax's division, after P V.
    fn scale_rows(out_h: &mut [f32], inv_sum: &[f32], c: usize, hs: usize) {
        for (r, &s) in inv_sum.iter().enumerate() {
            out_h[r * c..][..hs].iter_mut().for_each(|x| *x *= s);
        }
    }
}

vectorized! {
    /// Backward: rows 0..i1 - i0 of p (T apart) from raw scores to probabilities e^(scale s - lse) up to the
    /// diagonal, with the forward pass's lse, and 0 right of it up to i1.
    #[allow(clippy::too_many_arguments)]
    fn probabilities(p: &mut [f32], lse_b: &[f32], t: usize, nh: usize, h: usize, i0: usize, i1: usize, scale: f32) {
        for (r, row) in p.chunks_mut(t).take(i1 - i0).enumerate() {
            let l = lse_b[(i0 + r) * nh + h];
            let (seen, future) = row[..i1].split_at_mut(i0 + r + 1);
            seen.iter_mut().for_each(|s| *s = exp(*s * scale - l));
            future.fill(0.0);
        }
    }
}

vectorized! {
    /// dS = P (dP - D) / sqrt(HS) in place of dP, rows 0..i1 - i0 (T apart), zero right of the diagonal; D is
    /// dout · out of the row's query, head h (HS channels at h HS of rows C apart).
    #[allow(clippy::too_many_arguments)]
    fn softmax_backward_rows(
        dp: &mut [f32],
        p: &[f32],
        dout_b: &[f32],
        out_b: &[f32],
        t: usize,
        c: usize,
        hs: usize,
        h: usize,
        i0: usize,
        i1: usize,
        scale: f32,
    ) {
        for r in 0..i1 - i0 {
            let ti = i0 + r;
            let d = dot(&dout_b[ti * c + h * hs..][..hs], &out_b[ti * c + h * hs..][..hs]);
            let (ds, pp) = (&mut dp[r * t..][..i1], &p[r * t..][..=ti]);
            for (ds, &pp) in ds.iter_mut().zip(pp) {
                *ds = pp * (*ds - d) * scale;
            }
            ds[ti + 1..].fill(0.0);
        }
    }
}

/// out: (B, T, C); lse: (B, T, NH); qkv: (B, T, 3C) with q, k, v at channel offsets 0, C, 2C.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(out: &mut [f32], lse: &mut [f32], qkv: &[f32], b: usize, t: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    out[..b * t * c].par_chunks_mut(t * c).zip(lse[..b * t * nh].par_chunks_mut(t * nh)).enumerate().for_each(
        |(bi, (out_b, lse_b))| {
            let qkv_b = &qkv[bi * t * 3 * c..][..t * 3 * c];
            SCRATCH.with_borrow_mut(|(p, _)| {
                let p = grown(p, QUERY_BLOCK * t);
                let mut inv_sum = [0.0f32; QUERY_BLOCK];
                for h in 0..nh {
                    for (i0, i1) in blocks(t) {
                        let inv_sum = &mut inv_sum[..i1 - i0];
                        scores(p, qkv_b, t, c, hs, h, i0, i1);
                        softmax_rows(p, lse_b, inv_sum, t, nh, h, i0, i1, scale);
                        // out[i0..i1] (i1 - i0, HS) = P (i1 - i0, i1) · V[0..i1] (i1, HS) / row sums, rows C apart.
                        let (v, out_h) = (&qkv_b[2 * c + h * hs..], &mut out_b[i0 * c + h * hs..]);
                        sgemm_serial(i1 - i0, hs, i1, out_h, c, 1, p, t, 1, v, 3 * c, 1, false);
                        scale_rows(out_h, inv_sum, c, hs);
                    }
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
            let (p, dp) = (grown(p, QUERY_BLOCK * t), grown(dp, QUERY_BLOCK * t));
            for h in 0..nh {
                for (i0, i1) in blocks(t) {
                    let rows = i1 - i0;
                    // P recomputed from the scores and the forward pass's lse; zero right of the diagonal.
                    scores(p, qkv_b, t, c, hs, h, i0, i1);
                    probabilities(p, lse_b, t, nh, h, i0, i1, scale);
                    // dP (rows, i1) = dout[i0..i1] (rows, HS) · V[0..i1]ᵀ (HS, i1).
                    let (g, v) = (&dout_b[i0 * c + h * hs..], &qkv_b[2 * c + h * hs..]);
                    sgemm_serial(rows, i1, hs, dp, t, 1, g, c, 1, v, 1, 3 * c, false);
                    softmax_backward_rows(dp, p, dout_b, out_b, t, c, hs, h, i0, i1, scale);
                    let (q, k) = (&qkv_b[i0 * 3 * c + h * hs..], &qkv_b[c + h * hs..]);
                    // dQ[i0..i1] += dS (rows, i1) · K[0..i1]; dK[0..i1] += dSᵀ · Q[i0..i1]; dV[0..i1] += Pᵀ · dout[i0..i1].
                    let dq = &mut dqkv_b[i0 * 3 * c + h * hs..];
                    sgemm_serial(rows, hs, i1, dq, 3 * c, 1, dp, t, 1, k, 3 * c, 1, true);
                    sgemm_serial(i1, hs, rows, &mut dqkv_b[c + h * hs..], 3 * c, 1, dp, 1, t, q, 3 * c, 1, true);
                    sgemm_serial(i1, hs, rows, &mut dqkv_b[2 * c + h * hs..], 3 * c, 1, p, 1, t, g, c, 1, true);
                }
            }
        });
    });
}
