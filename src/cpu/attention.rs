//! Causal multi-head self-attention, computed row by row without ever storing a (T, T) matrix.
//!
//! For batch b, head h, query position t (q, k, v are HS-wide slices of the qkv rows):
//!   s[t2] = q[t] · k[t2] / sqrt(HS)  for t2 <= t (causal)
//!   lse[t] = log(sum exp s)          (kept for the backward pass: one float per row instead of T)
//!   out[t] = sum_t2 exp(s[t2] - lse[t]) v[t2]
//!
//! Backward, with p = exp(s - lse), dp[t][t2] = dout[t] · v[t2] and D[t] = dout[t] · out[t] (= sum p dp):
//!   ds = p (dp - D);  dq[t] += ds k[t2] / sqrt(HS);  dk[t2] += ds q[t] / sqrt(HS);  dv[t2] += p dout[t]
//! One task owns one (b, r) row of dqkv and computes dq[r] (r as the query) and dk[r], dv[r] (r as the key), so
//! no two tasks write the same float. Each (t, t2) score is thus recomputed twice; a row does T + 1 pairs either
//! way, so the work is balanced.

use rayon::prelude::*;
use std::cell::RefCell;

thread_local! {
    /// One row of scores per worker thread, grown once to T and reused every step.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// out: (B, T, C); lse: (B, T, NH); qkv: (B, T, 3C) with q, k, v at channel offsets 0, C, 2C.
#[allow(clippy::too_many_arguments)]
pub fn attention_forward(out: &mut [f32], lse: &mut [f32], qkv: &[f32], b: usize, t: usize, c: usize, nh: usize) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    out[..b * t * c].par_chunks_mut(c).zip(lse[..b * t * nh].par_chunks_mut(nh)).enumerate().for_each(
        |(bt, (out_row, lse_row))| {
            let (bi, ti) = (bt / t, bt % t);
            let row = |pos: usize| &qkv[(bi * t + pos) * 3 * c..][..3 * c];
            SCORES.with_borrow_mut(|scores| {
                if scores.len() < t {
                    scores.resize(t, 0.0);
                }
                for h in 0..nh {
                    let q = &row(ti)[h * hs..][..hs];
                    let mut max = f32::NEG_INFINITY;
                    for (t2, s) in scores[..=ti].iter_mut().enumerate() {
                        *s = dot(q, &row(t2)[c + h * hs..][..hs]) * scale;
                        max = max.max(*s);
                    }
                    let mut sum = 0.0f32;
                    for s in &mut scores[..=ti] {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    let inv_sum = 1.0 / sum;
                    let o = &mut out_row[h * hs..][..hs];
                    o.fill(0.0);
                    for (t2, &e) in scores[..=ti].iter().enumerate() {
                        let p = e * inv_sum;
                        for (o, &vv) in o.iter_mut().zip(&row(t2)[2 * c + h * hs..][..hs]) {
                            *o += p * vv;
                        }
                    }
                    lse_row[h] = max + sum.ln();
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
    dqkv[..b * t * 3 * c].par_chunks_mut(3 * c).enumerate().for_each(|(br, drow)| {
        let (bi, r) = (br / t, br % t);
        let at = |pos: usize| bi * t + pos;
        let q = |pos: usize, h: usize| &qkv[at(pos) * 3 * c + h * hs..][..hs];
        let k = |pos: usize, h: usize| &qkv[at(pos) * 3 * c + c + h * hs..][..hs];
        let v = |pos: usize, h: usize| &qkv[at(pos) * 3 * c + 2 * c + h * hs..][..hs];
        let g = |pos: usize, h: usize| &dout[at(pos) * c + h * hs..][..hs];
        let o = |pos: usize, h: usize| &out[at(pos) * c + h * hs..][..hs];
        let l = |pos: usize, h: usize| lse[at(pos) * nh + h];
        let (dq_row, dkv_row) = drow.split_at_mut(c);
        let (dk_row, dv_row) = dkv_row.split_at_mut(c);
        for h in 0..nh {
            // r as the query: gradients flow to q[r] from every key it attended to.
            let dq = &mut dq_row[h * hs..][..hs];
            let d_r = dot(g(r, h), o(r, h));
            for t2 in 0..=r {
                let p = (dot(q(r, h), k(t2, h)) * scale - l(r, h)).exp();
                let ds = p * (dot(g(r, h), v(t2, h)) - d_r) * scale;
                for (d, &kk) in dq.iter_mut().zip(k(t2, h)) {
                    *d += ds * kk;
                }
            }
            // r as the key: gradients flow to k[r], v[r] from every later query that attended to it.
            let dk = &mut dk_row[h * hs..][..hs];
            let dv = &mut dv_row[h * hs..][..hs];
            for tq in r..t {
                let p = (dot(q(tq, h), k(r, h)) * scale - l(tq, h)).exp();
                let d_t = dot(g(tq, h), o(tq, h));
                let ds = p * (dot(g(tq, h), v(r, h)) - d_t) * scale;
                for ((dk, dv), (&qq, &gg)) in dk.iter_mut().zip(dv.iter_mut()).zip(q(tq, h).iter().zip(g(tq, h))) {
                    *dk += ds * qq;
                    *dv += p * gg;
                }
            }
        }
    });
}
