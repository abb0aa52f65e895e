//! Every fp32 CPU layer in `llmrs::cpu` against a plain f64 reference written here from the textbook definition:
//! full (T, T) attention matrices, triple-loop matmuls, the standard LayerNorm backward formula, PyTorch's AdamW.
//!
//! What is checked, for every layer:
//! - every element of every output and every gradient, within a tolerance stated (and justified) below;
//! - forward passes overwrite their outputs (they start as NaN here);
//! - backward passes ACCUMULATE: gradient buffers start with random values and must end as prefill + gradient;
//! - shapes that are not powers of two or multiples of 8/16/64, and B*T = 1;
//! - the row-parallel layers give bitwise the same result on 1, 2 and 3 threads.
//!
//! The f64 references are themselves checked against central finite differences.
//!
//! Run with `--nocapture` to see the worst error of every comparison.

// The references are written as textbook index loops on purpose: they should read like the formulas.
#![allow(clippy::needless_range_loop)]

use llmrs::cpu::adamw::{adamw_update, AdamWStep};
use llmrs::cpu::attention::{attention_backward, attention_forward};
use llmrs::cpu::classifier::fused_classifier;
use llmrs::cpu::encoder::{encoder_backward, encoder_forward};
use llmrs::cpu::gelu::{gelu_backward, gelu_forward};
use llmrs::cpu::global_norm::{clip_scale, global_norm_squared};
use llmrs::cpu::layernorm::{fused_residual_layernorm_forward, layernorm_backward, layernorm_forward};
use llmrs::cpu::matmul::{matmul_backward, matmul_forward};
use llmrs::cpu::residual::{residual_backward, residual_forward};
use llmrs::rng::Rng;

// ------------------------------------------------------------------------------------------------------------
// Tolerances: an element passes when |got - want| <= abs + rel * |want|, with `want` the f64 reference.
// Inputs are O(1) (standard normals unless a test says otherwise), so `abs` covers results that cancel to ~0.
// ------------------------------------------------------------------------------------------------------------

/// An error bound: |got - want| <= abs + rel * |want|.
#[derive(Clone, Copy, Debug)]
struct Tol {
    abs: f64,
    rel: f64,
}

/// One correctly rounded f32 operation (a + b): the f32 result is the exact value rounded once, so it is within
/// half an ulp, 2^-24 relative.
const ONE_ROUNDING: Tol = Tol { abs: 0.0, rel: f32::EPSILON as f64 / 2.0 };

/// Element-wise transcendental layers (GELU): a few f32 ulps of O(1)-O(5) terms (an ulp is 4.8e-7 at 4), which
/// the accumulation into a random prefill may cancel, hence an `abs` part of that size.
const ELEMENTWISE_TOL: Tol = Tol { abs: 3e-6, rel: 1e-5 };

/// f32 sums of up to a few hundred O(1) terms (matmul, layernorm, encoder backward): the rounding error of a
/// length-n sum grows like sqrt(n) ulps of the sum's magnitude, ~1e-6 here; 10x headroom.
const SUM_TOL: Tol = Tol { abs: 1e-5, rel: 1e-4 };

/// Attention: a softmax (exp of f32 scores, rescaled by an f32 lse) feeding sums over T and HS; the backward
/// recomputes probabilities from the f32 lse. Measured errors stay below 2e-6, so the sum bound holds here too;
/// a GPU port may need to loosen it.
const ATTENTION_TOL: Tol = Tol { abs: 1e-5, rel: 1e-4 };

/// Classifier losses: log(sum of V exps) in f32 with V ~ 400, values ~ log(V) ~ 6.
const LOSS_TOL: Tol = Tol { abs: 1e-5, rel: 1e-5 };

/// Classifier dlogits: (p - onehot) * dloss; p is an f32 exp divided by an f32 sum of V terms (~1e-6 relative),
/// `abs` is far below the smallest dloss / V used here (~6e-5).
const DLOGITS_TOL: Tol = Tol { abs: 1e-8, rel: 1e-5 };

/// AdamW moments after 3 steps: a few roundings per step of terms of size (1 - beta1) |g| ~ 0.04, which may
/// cancel (m = beta1 m + (1 - beta1) g), so `abs` is a few ulps of those terms.
const ADAMW_MOMENT_TOL: Tol = Tol { abs: 2e-8, rel: 1e-5 };

/// AdamW parameters after 3 steps: |p| ~ 1 carries a rounding of ~6e-8 per step, and the f32 bias corrections
/// (1 - beta^step, computed by f32 powi) are ~1e-5 relative, of an update of size lr = 1e-2. A missing bias
/// correction, eps or weight decay term moves a parameter by >= lr * wd = 1e-3.
const ADAMW_PARAM_TOL: Tol = Tol { abs: 1e-6, rel: 1e-6 };

/// Global norm: f64 sums of ~2e5 squares in a different order; n * 2^-53 ~ 2e-11 bounds the difference.
const NORM_TOL: Tol = Tol { abs: 0.0, rel: 1e-10 };

/// Finite differences of the f64 references: central differences with step FD_STEP have truncation error
/// ~ FD_STEP^2 and rounding error ~ 1e-16 / FD_STEP, both ~1e-10 here.
const FD_STEP: f64 = 1e-5;
const FD_TOL: Tol = Tol { abs: 1e-7, rel: 1e-6 };

// ------------------------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------------------------

/// `n` samples of N(0, std²) from `rng`.
fn randn(rng: &mut Rng, n: usize, std: f32) -> Vec<f32> {
    let mut x = vec![0.0; n];
    rng.fill_normal(&mut x, std);
    x
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

/// The expected content of a gradient buffer that started as `prefill` and accumulated `grad`.
fn plus(prefill: &[f32], grad: &[f64]) -> Vec<f64> {
    prefill.iter().zip(grad).map(|(&p, &g)| p as f64 + g).collect()
}

/// Checks every element of `got` against `want` within `tol`, and prints the worst error (seen with --nocapture).
fn check_f64(what: &str, got: &[f64], want: &[f64], tol: Tol) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut failures = 0;
    let mut first_failure = None;
    let (mut worst_err, mut worst_ratio) = (0.0f64, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        let allowed = tol.abs + tol.rel * w.abs();
        // A NaN fails: it is not within any bound.
        let within = err <= allowed;
        if !within {
            failures += 1;
            first_failure.get_or_insert((i, g, w, err, allowed));
        }
        worst_err = worst_err.max(err);
        let ratio = if err == 0.0 { 0.0 } else { err / allowed };
        worst_ratio = worst_ratio.max(ratio);
    }
    if let Some((i, g, w, err, allowed)) = first_failure {
        panic!(
            "{what}: {failures} of {} elements out of tolerance; first at [{i}]: got {g:e}, want {w:e}, \
             |err| {err:e} > allowed {allowed:e}",
            got.len()
        );
    }
    eprintln!("{what}: {} elements, worst |err| {worst_err:.2e}, worst err/allowed {worst_ratio:.3}", got.len());
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: Tol) {
    check_f64(what, &f64s(got), want, tol);
}

fn assert_bitwise_eq(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "{what}: element [{i}] differs: {x:e} vs {y:e}");
    }
}

/// Runs `f` on a fresh rayon pool of `threads` threads.
fn on_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(f)
}

/// Thread counts whose results must agree bitwise with one thread's.
const MORE_THREADS: [usize; 2] = [2, 3];

/// d/dx of sum(f(x) .* w), by central differences: the gradient a backward pass given dout = w must produce.
fn numerical_gradient(x: &[f64], w: &[f64], f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    let loss = |x: &[f64]| f(x).iter().zip(w).map(|(y, w)| y * w).sum::<f64>();
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let x0 = x[i];
            x[i] = x0 + FD_STEP;
            let up = loss(&x);
            x[i] = x0 - FD_STEP;
            let down = loss(&x);
            x[i] = x0;
            (up - down) / (2.0 * FD_STEP)
        })
        .collect()
}

// ------------------------------------------------------------------------------------------------------------
// f64 references
// ------------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
struct AttnShape {
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
}

/// q, k, v of batch `bi`, head `h`, position `pos`: HS-wide slices of the (B, T, 3C) qkv rows.
fn qkv_slice(qkv: &[f64], s: AttnShape, which: usize, bi: usize, pos: usize, h: usize) -> &[f64] {
    let hs = s.c / s.nh;
    &qkv[(bi * s.t + pos) * 3 * s.c + which * s.c + h * hs..][..hs]
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// For batch `bi`, head `h`: the full (T, T) matrix of probabilities softmax(q k^T / sqrt(HS)) under the causal
/// mask (scores above the diagonal are -inf, so their probability is exactly 0), and the (T) log-sum-exp of the
/// scaled, masked scores of each row.
fn attention_probs_ref(qkv: &[f64], s: AttnShape, bi: usize, h: usize) -> (Vec<f64>, Vec<f64>) {
    let t = s.t;
    let scale = 1.0 / ((s.c / s.nh) as f64).sqrt();
    let mut scores = vec![f64::NEG_INFINITY; t * t];
    for i in 0..t {
        for j in 0..=i {
            scores[i * t + j] = dot(qkv_slice(qkv, s, 0, bi, i, h), qkv_slice(qkv, s, 1, bi, j, h)) * scale;
        }
    }
    let mut probs = vec![0.0; t * t];
    let mut lse = vec![0.0; t];
    for i in 0..t {
        let row = &scores[i * t..][..t];
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        lse[i] = max + row.iter().map(|&x| (x - max).exp()).sum::<f64>().ln();
        for j in 0..t {
            probs[i * t + j] = (row[j] - lse[i]).exp();
        }
    }
    (probs, lse)
}

/// out: (B, T, C) = P v per head; lse: (B, T, NH).
fn attention_forward_ref(qkv: &[f64], s: AttnShape) -> (Vec<f64>, Vec<f64>) {
    let AttnShape { b, t, c, nh } = s;
    let hs = c / nh;
    let mut out = vec![0.0; b * t * c];
    let mut lse = vec![0.0; b * t * nh];
    for bi in 0..b {
        for h in 0..nh {
            let (p, l) = attention_probs_ref(qkv, s, bi, h);
            for i in 0..t {
                lse[(bi * t + i) * nh + h] = l[i];
                for d in 0..hs {
                    out[(bi * t + i) * c + h * hs + d] =
                        (0..t).map(|j| p[i * t + j] * qkv_slice(qkv, s, 2, bi, j, h)[d]).sum();
                }
            }
        }
    }
    (out, lse)
}

/// dqkv: (B, T, 3C), the gradient of sum(out .* dout), through the full matrices:
/// dP = dout v^T, dv = P^T dout, dS = P .* (dP - rowsum(P .* dP)) (softmax Jacobian), dq = dS k / sqrt(HS),
/// dk = dS^T q / sqrt(HS).
fn attention_backward_ref(dout: &[f64], qkv: &[f64], s: AttnShape) -> Vec<f64> {
    let AttnShape { b, t, c, nh } = s;
    let hs = c / nh;
    let scale = 1.0 / (hs as f64).sqrt();
    let mut dqkv = vec![0.0; b * t * 3 * c];
    for bi in 0..b {
        for h in 0..nh {
            let (p, _) = attention_probs_ref(qkv, s, bi, h);
            let g = |i: usize| &dout[(bi * t + i) * c + h * hs..][..hs];
            let (q, k, v) = (
                |i: usize| qkv_slice(qkv, s, 0, bi, i, h),
                |i: usize| qkv_slice(qkv, s, 1, bi, i, h),
                |i: usize| qkv_slice(qkv, s, 2, bi, i, h),
            );
            let mut dp = vec![0.0; t * t];
            for i in 0..t {
                for j in 0..t {
                    dp[i * t + j] = dot(g(i), v(j));
                }
            }
            let mut ds = vec![0.0; t * t];
            for i in 0..t {
                let row_dot: f64 = (0..t).map(|j| p[i * t + j] * dp[i * t + j]).sum();
                for j in 0..t {
                    ds[i * t + j] = p[i * t + j] * (dp[i * t + j] - row_dot);
                }
            }
            for i in 0..t {
                for d in 0..hs {
                    let base = (bi * t + i) * 3 * c + h * hs + d;
                    dqkv[base] = scale * (0..t).map(|j| ds[i * t + j] * k(j)[d]).sum::<f64>();
                    dqkv[base + c] = scale * (0..t).map(|j| ds[j * t + i] * q(j)[d]).sum::<f64>();
                    dqkv[base + 2 * c] = (0..t).map(|j| p[j * t + i] * g(j)[d]).sum::<f64>();
                }
            }
        }
    }
    dqkv
}

const LN_EPS: f64 = 1e-5;

/// out: (N, C) = (x - mean) * rstd * weight + bias; mean, rstd: (N), biased variance.
fn layernorm_forward_ref(inp: &[f64], weight: &[f64], bias: &[f64], c: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = inp.len() / c;
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    for r in 0..n {
        let x = &inp[r * c..][..c];
        let m = x.iter().sum::<f64>() / c as f64;
        let var = x.iter().map(|xi| (xi - m) * (xi - m)).sum::<f64>() / c as f64;
        let s = 1.0 / (var + LN_EPS).sqrt();
        for i in 0..c {
            out[r * c + i] = (x[i] - m) * s * weight[i] + bias[i];
        }
        mean[r] = m;
        rstd[r] = s;
    }
    (out, mean, rstd)
}

/// dinp: (N, C), dweight, dbias: (C). Standard formula, with xhat = (x - mean) rstd and dxhat = weight dout:
/// dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)); dweight = sum xhat dout; dbias = sum dout.
fn layernorm_backward_ref(dout: &[f64], inp: &[f64], weight: &[f64], c: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = inp.len() / c;
    let (_, mean, rstd) = layernorm_forward_ref(inp, weight, &vec![0.0; c], c);
    let (mut dinp, mut dweight, mut dbias) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
    for r in 0..n {
        let xhat: Vec<f64> = (0..c).map(|i| (inp[r * c + i] - mean[r]) * rstd[r]).collect();
        let dxhat: Vec<f64> = (0..c).map(|i| weight[i] * dout[r * c + i]).collect();
        let mean_dxhat = dxhat.iter().sum::<f64>() / c as f64;
        let mean_dxhat_xhat = (0..c).map(|i| dxhat[i] * xhat[i]).sum::<f64>() / c as f64;
        for i in 0..c {
            dinp[r * c + i] = rstd[r] * (dxhat[i] - mean_dxhat - xhat[i] * mean_dxhat_xhat);
            dweight[i] += xhat[i] * dout[r * c + i];
            dbias[i] += dout[r * c + i];
        }
    }
    (dinp, dweight, dbias)
}

/// sqrt(2 / pi) and the cubic coefficient of GPT-2's tanh GELU.
const GELU_SCALE: f64 = 0.797_884_560_802_865_4;
const GELU_CUBIC: f64 = 0.044715;

fn gelu_ref(x: f64) -> f64 {
    0.5 * x * (1.0 + (GELU_SCALE * (x + GELU_CUBIC * x * x * x)).tanh())
}

/// d gelu / dx, by the product and chain rules: 0.5 (1 + tanh u) + 0.5 x (1 - tanh² u) u', u' = s (1 + 3 a x²).
fn gelu_grad_ref(x: f64) -> f64 {
    let th = (GELU_SCALE * (x + GELU_CUBIC * x * x * x)).tanh();
    0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * x * x)
}

// ------------------------------------------------------------------------------------------------------------
// The references are right: gradients by finite differences
// ------------------------------------------------------------------------------------------------------------

#[test]
fn attention_reference_backward_matches_finite_differences() {
    // B 2, T 4, C 6, NH 2: HS 3, 144 qkv inputs.
    let s = AttnShape { b: 2, t: 4, c: 6, nh: 2 };
    let mut rng = Rng::new(101);
    let qkv = f64s(&randn(&mut rng, s.b * s.t * 3 * s.c, 1.0));
    let dout = f64s(&randn(&mut rng, s.b * s.t * s.c, 1.0));
    let numerical = numerical_gradient(&qkv, &dout, |x| attention_forward_ref(x, s).0);
    check_f64("attention ref dqkv vs finite differences", &attention_backward_ref(&dout, &qkv, s), &numerical, FD_TOL);
}

#[test]
fn layernorm_and_gelu_reference_backwards_match_finite_differences() {
    let (n, c) = (3, 7);
    let mut rng = Rng::new(102);
    let inp = f64s(&randn(&mut rng, n * c, 2.0));
    let weight = f64s(&randn(&mut rng, c, 1.0));
    let bias = f64s(&randn(&mut rng, c, 1.0));
    let dout = f64s(&randn(&mut rng, n * c, 1.0));
    let (dinp, dweight, dbias) = layernorm_backward_ref(&dout, &inp, &weight, c);
    let num_dinp = numerical_gradient(&inp, &dout, |x| layernorm_forward_ref(x, &weight, &bias, c).0);
    let num_dweight = numerical_gradient(&weight, &dout, |w| layernorm_forward_ref(&inp, w, &bias, c).0);
    let num_dbias = numerical_gradient(&bias, &dout, |bb| layernorm_forward_ref(&inp, &weight, bb, c).0);
    check_f64("layernorm ref dinp vs finite differences", &dinp, &num_dinp, FD_TOL);
    check_f64("layernorm ref dweight vs finite differences", &dweight, &num_dweight, FD_TOL);
    check_f64("layernorm ref dbias vs finite differences", &dbias, &num_dbias, FD_TOL);

    let x = f64s(&randn(&mut rng, 64, 3.0));
    let ones = vec![1.0; x.len()];
    let analytic: Vec<f64> = x.iter().map(|&x| gelu_grad_ref(x)).collect();
    let numerical = numerical_gradient(&x, &ones, |x| x.iter().map(|&x| gelu_ref(x)).collect());
    check_f64("gelu ref grad vs finite differences", &analytic, &numerical, FD_TOL);
}

// ------------------------------------------------------------------------------------------------------------
// encoder
// ------------------------------------------------------------------------------------------------------------

#[test]
fn encoder_forward_adds_token_and_position_rows_and_backward_accumulates_repeated_tokens() {
    // (B, T, C, Vp, maxT): Vp 7 with 39 tokens forces repeated tokens; T < maxT leaves rows of wpe unused.
    for &(b, t, c, vp, max_t) in &[(3, 13, 48, 7, 16), (1, 1, 5, 3, 4), (2, 9, 33, 389, 9)] {
        let tag = format!("B{b} T{t} C{c} Vp{vp} maxT{max_t}");
        let mut rng = Rng::new(1);
        let inp: Vec<u32> = (0..b * t).map(|_| rng.below(vp) as u32).collect();
        let wte = randn(&mut rng, vp * c, 1.0);
        let wpe = randn(&mut rng, max_t * c, 1.0);
        let mut out = vec![f32::NAN; b * t * c];
        encoder_forward(&mut out, &inp, &wte, &wpe, b, t, c);
        let mut want = vec![0.0; b * t * c];
        for bt in 0..b * t {
            for i in 0..c {
                want[bt * c + i] = wte[inp[bt] as usize * c + i] as f64 + wpe[(bt % t) * c + i] as f64;
            }
        }
        assert_close(&format!("encoder out {tag}"), &out, &want, ONE_ROUNDING);

        let dout = randn(&mut rng, b * t * c, 1.0);
        let dwte_prefill = randn(&mut rng, vp * c, 1.0);
        let dwpe_prefill = randn(&mut rng, max_t * c, 1.0);
        let (mut dwte, mut dwpe) = (dwte_prefill.clone(), dwpe_prefill.clone());
        encoder_backward(&mut dwte, &mut dwpe, &dout, &inp, b, t, c);
        let (mut want_dwte, mut want_dwpe) = (vec![0.0; vp * c], vec![0.0; max_t * c]);
        for bt in 0..b * t {
            for i in 0..c {
                want_dwte[inp[bt] as usize * c + i] += dout[bt * c + i] as f64;
                want_dwpe[(bt % t) * c + i] += dout[bt * c + i] as f64;
            }
        }
        // Rows no position touched get exactly +0 and so keep their prefill, which SUM_TOL checks as well.
        assert_close(&format!("encoder dwte {tag}"), &dwte, &plus(&dwte_prefill, &want_dwte), SUM_TOL);
        assert_close(&format!("encoder dwpe {tag}"), &dwpe, &plus(&dwpe_prefill, &want_dwpe), SUM_TOL);
        assert_bitwise_eq(&format!("encoder unused dwpe rows {tag}"), &dwpe[t * c..], &dwpe_prefill[t * c..]);
    }
}

// ------------------------------------------------------------------------------------------------------------
// layernorm
// ------------------------------------------------------------------------------------------------------------

/// (B, T, C): C not a multiple of a vector (130), and B*T = 140 rows: three of the CPU backward pass's 64-row
/// groups of partial parameter sums, the last one partial.
const LAYERNORM_SHAPES: [(usize, usize, usize); 4] = [(3, 13, 48), (1, 1, 48), (2, 5, 130), (2, 70, 48)];

/// Inputs with a per-row offset and spread, so the mean and the variance both matter.
fn layernorm_inputs(rng: &mut Rng, n: usize, c: usize) -> Vec<f32> {
    (0..n)
        .flat_map(|_| {
            let (offset, spread) = (rng.next_f32() * 4.0 - 2.0, 0.5 + rng.next_f32() * 2.0);
            randn(rng, c, spread).into_iter().map(move |x| x + offset)
        })
        .collect()
}

#[test]
fn layernorm_forward_matches_f64_with_mean_and_rstd() {
    for (b, t, c) in LAYERNORM_SHAPES {
        let tag = format!("B{b} T{t} C{c}");
        let n = b * t;
        let mut rng = Rng::new(2);
        let inp = layernorm_inputs(&mut rng, n, c);
        let weight = randn(&mut rng, c, 1.0);
        let bias = randn(&mut rng, c, 1.0);
        let (mut out, mut mean, mut rstd) = (vec![f32::NAN; n * c], vec![f32::NAN; n], vec![f32::NAN; n]);
        layernorm_forward(&mut out, &mut mean, &mut rstd, &inp, &weight, &bias, b, t, c);
        let (want_out, want_mean, want_rstd) = layernorm_forward_ref(&f64s(&inp), &f64s(&weight), &f64s(&bias), c);
        assert_close(&format!("layernorm out {tag}"), &out, &want_out, SUM_TOL);
        assert_close(&format!("layernorm mean {tag}"), &mean, &want_mean, SUM_TOL);
        assert_close(&format!("layernorm rstd {tag}"), &rstd, &want_rstd, SUM_TOL);
    }
}

#[test]
fn fused_residual_layernorm_is_the_residual_then_the_layernorm_bitwise() {
    for (b, t, c) in LAYERNORM_SHAPES {
        let n = b * t;
        let mut rng = Rng::new(3);
        let (inp1, inp2) = (layernorm_inputs(&mut rng, n, c), randn(&mut rng, n * c, 1.0));
        let (weight, bias) = (randn(&mut rng, c, 1.0), randn(&mut rng, c, 1.0));
        let (mut residual, mut out) = (vec![f32::NAN; n * c], vec![f32::NAN; n * c]);
        let (mut mean, mut rstd) = (vec![f32::NAN; n], vec![f32::NAN; n]);
        fused_residual_layernorm_forward(
            &mut residual,
            &mut out,
            &mut mean,
            &mut rstd,
            &inp1,
            &inp2,
            &weight,
            &bias,
            b,
            t,
            c,
        );
        let mut want_residual = vec![f32::NAN; n * c];
        residual_forward(&mut want_residual, &inp1, &inp2, n * c);
        let (mut want_out, mut want_mean, mut want_rstd) =
            (vec![f32::NAN; n * c], vec![f32::NAN; n], vec![f32::NAN; n]);
        layernorm_forward(&mut want_out, &mut want_mean, &mut want_rstd, &want_residual, &weight, &bias, b, t, c);
        let tag = format!("B{b} T{t} C{c}");
        assert_bitwise_eq(&format!("fused residual {tag}"), &residual, &want_residual);
        assert_bitwise_eq(&format!("fused layernorm out {tag}"), &out, &want_out);
        assert_bitwise_eq(&format!("fused mean {tag}"), &mean, &want_mean);
        assert_bitwise_eq(&format!("fused rstd {tag}"), &rstd, &want_rstd);
    }
}

#[test]
fn layernorm_backward_matches_f64_and_accumulates() {
    for (b, t, c) in LAYERNORM_SHAPES {
        let tag = format!("B{b} T{t} C{c}");
        let n = b * t;
        let mut rng = Rng::new(3);
        let inp = layernorm_inputs(&mut rng, n, c);
        let weight = randn(&mut rng, c, 1.0);
        let bias = randn(&mut rng, c, 1.0);
        let dout = randn(&mut rng, n * c, 1.0);
        let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        layernorm_forward(&mut out, &mut mean, &mut rstd, &inp, &weight, &bias, b, t, c);

        let dinp_prefill = randn(&mut rng, n * c, 1.0);
        let dweight_prefill = randn(&mut rng, c, 1.0);
        let dbias_prefill = randn(&mut rng, c, 1.0);
        let (mut dinp, mut dweight, mut dbias) = (dinp_prefill.clone(), dweight_prefill.clone(), dbias_prefill.clone());
        layernorm_backward(&mut dinp, &mut dweight, &mut dbias, &dout, &inp, &weight, &mean, &rstd, b, t, c);

        let (want_dinp, want_dweight, want_dbias) =
            layernorm_backward_ref(&f64s(&dout), &f64s(&inp), &f64s(&weight), c);
        assert_close(&format!("layernorm dinp {tag}"), &dinp, &plus(&dinp_prefill, &want_dinp), SUM_TOL);
        assert_close(&format!("layernorm dweight {tag}"), &dweight, &plus(&dweight_prefill, &want_dweight), SUM_TOL);
        assert_close(&format!("layernorm dbias {tag}"), &dbias, &plus(&dbias_prefill, &want_dbias), SUM_TOL);
    }
}

#[test]
fn layernorm_is_bitwise_independent_of_thread_count() {
    // 195 rows: four groups of partial parameter sums, which must be added in the same order at any thread count.
    let (b, t, c) = (3, 65, 130);
    let n = b * t;
    let mut rng = Rng::new(4);
    let inp = layernorm_inputs(&mut rng, n, c);
    let weight = randn(&mut rng, c, 1.0);
    let bias = randn(&mut rng, c, 1.0);
    let dout = randn(&mut rng, n * c, 1.0);
    let dinp_prefill = randn(&mut rng, n * c, 1.0);
    let dweight_prefill = randn(&mut rng, c, 1.0);
    let dbias_prefill = randn(&mut rng, c, 1.0);
    let run = || {
        let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        layernorm_forward(&mut out, &mut mean, &mut rstd, &inp, &weight, &bias, b, t, c);
        let (mut dinp, mut dweight, mut dbias) = (dinp_prefill.clone(), dweight_prefill.clone(), dbias_prefill.clone());
        layernorm_backward(&mut dinp, &mut dweight, &mut dbias, &dout, &inp, &weight, &mean, &rstd, b, t, c);
        [out, mean, rstd, dinp, dweight, dbias]
    };
    let reference = on_threads(1, run);
    for threads in MORE_THREADS {
        let got = on_threads(threads, run);
        for (name, (x, y)) in ["out", "mean", "rstd", "dinp", "dweight", "dbias"].iter().zip(got.iter().zip(&reference))
        {
            assert_bitwise_eq(&format!("layernorm {name}, {threads} threads vs 1"), x, y);
        }
    }
}

// ------------------------------------------------------------------------------------------------------------
// matmul
// ------------------------------------------------------------------------------------------------------------

/// (B, T, C, OC): OC 389 and 70 are not multiples of the vector width, B*T = 1 in the second.
const MATMUL_SHAPES: [(usize, usize, usize, usize); 3] = [(3, 13, 48, 17), (1, 1, 48, 389), (2, 5, 130, 70)];

#[test]
fn matmul_forward_matches_triple_loop_with_and_without_bias() {
    for (b, t, c, oc) in MATMUL_SHAPES {
        let n = b * t;
        let mut rng = Rng::new(5);
        let inp = randn(&mut rng, n * c, 1.0);
        let weight = randn(&mut rng, oc * c, 1.0);
        let bias = randn(&mut rng, oc, 1.0);
        for with_bias in [true, false] {
            let tag = format!("B{b} T{t} C{c} OC{oc} bias {with_bias}");
            let mut out = vec![f32::NAN; n * oc];
            let bias = with_bias.then_some(&bias[..]);
            matmul_forward(&mut out, &inp, &weight, bias, b, t, c, oc);
            let mut want = vec![0.0; n * oc];
            for i in 0..n {
                for j in 0..oc {
                    let mut sum = bias.map_or(0.0, |bias| bias[j] as f64);
                    for k in 0..c {
                        sum += inp[i * c + k] as f64 * weight[j * c + k] as f64;
                    }
                    want[i * oc + j] = sum;
                }
            }
            assert_close(&format!("matmul out {tag}"), &out, &want, SUM_TOL);
        }
    }
}

#[test]
fn matmul_backward_matches_triple_loop_overwrites_dinp_and_accumulates_the_rest_with_and_without_bias() {
    for (b, t, c, oc) in MATMUL_SHAPES {
        let n = b * t;
        let mut rng = Rng::new(6);
        let inp = randn(&mut rng, n * c, 1.0);
        let weight = randn(&mut rng, oc * c, 1.0);
        let dout = randn(&mut rng, n * oc, 1.0);
        // dinp is overwritten: a NaN left in it, or read from it, fails the comparison.
        let dinp_prefill = vec![f32::NAN; n * c];
        let dweight_prefill = randn(&mut rng, oc * c, 1.0);
        let dbias_prefill = randn(&mut rng, oc, 1.0);

        let (mut want_dinp, mut want_dweight, mut want_dbias) = (vec![0.0; n * c], vec![0.0; oc * c], vec![0.0; oc]);
        for i in 0..n {
            for j in 0..oc {
                let g = dout[i * oc + j] as f64;
                for k in 0..c {
                    want_dinp[i * c + k] += g * weight[j * c + k] as f64;
                    want_dweight[j * c + k] += g * inp[i * c + k] as f64;
                }
                want_dbias[j] += g;
            }
        }

        for with_bias in [true, false] {
            let tag = format!("B{b} T{t} C{c} OC{oc} bias {with_bias}");
            let (mut dinp, mut dweight, mut dbias) =
                (dinp_prefill.clone(), dweight_prefill.clone(), dbias_prefill.clone());
            let dbias_arg = with_bias.then_some(&mut dbias[..]);
            matmul_backward(&mut dinp, &mut dweight, dbias_arg, &dout, &inp, &weight, b, t, c, oc);
            assert_close(&format!("matmul dinp {tag}"), &dinp, &want_dinp, SUM_TOL);
            assert_close(&format!("matmul dweight {tag}"), &dweight, &plus(&dweight_prefill, &want_dweight), SUM_TOL);
            if with_bias {
                assert_close(&format!("matmul dbias {tag}"), &dbias, &plus(&dbias_prefill, &want_dbias), SUM_TOL);
            } else {
                assert_bitwise_eq(&format!("matmul dbias untouched {tag}"), &dbias, &dbias_prefill);
            }
        }
    }
}

#[test]
fn matmul_is_bitwise_independent_of_thread_count() {
    // The CPU matmul cuts each product into a fixed number of blocks along the longer side of its output: out
    // (n, OC), dinp (n, C) and dweight (OC, C) by columns in the first shape; out by columns, dinp and dweight by
    // rows in the second; out and dinp by rows, dweight by columns in the third; partial blocks at the ends. The
    // fourth is a tiny model's attention projection: out (16, 32), whose 16 x 16 blocks the gemm crate sums with
    // another kernel than a 16 x 32 product (so the cut must not depend on the thread count).
    for (b, t, c, oc) in [(2, 64, 768, 200), (3, 37, 96, 300), (4, 50, 64, 40), (2, 8, 32, 32)] {
        let n = b * t;
        let mut rng = Rng::new(17);
        let inp = randn(&mut rng, n * c, 1.0);
        let weight = randn(&mut rng, oc * c, 1.0);
        let bias = randn(&mut rng, oc, 1.0);
        let dout = randn(&mut rng, n * oc, 1.0);
        let run = || {
            let mut out = vec![0.0; n * oc];
            matmul_forward(&mut out, &inp, &weight, Some(&bias), b, t, c, oc);
            let (mut dinp, mut dweight, mut dbias) = (vec![0.0; n * c], vec![0.0; oc * c], vec![0.0; oc]);
            matmul_backward(&mut dinp, &mut dweight, Some(&mut dbias), &dout, &inp, &weight, b, t, c, oc);
            [out, dinp, dweight, dbias]
        };
        let reference = on_threads(1, run);
        // 8 threads: more than the blocks, so the gemm crate splits each block too.
        for threads in MORE_THREADS.into_iter().chain([8]) {
            let got = on_threads(threads, run);
            for (name, (x, y)) in ["out", "dinp", "dweight", "dbias"].iter().zip(got.iter().zip(&reference)) {
                assert_bitwise_eq(&format!("matmul C{c} OC{oc} {name}, {threads} threads vs 1"), x, y);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------------------
// attention
// ------------------------------------------------------------------------------------------------------------

/// HS 16, 16 with B*T = 1, 4 (NH 5), 18 (T 33), and T 150: three query blocks of the CPU kernel, the last partial.
const ATTENTION_SHAPES: [AttnShape; 5] = [
    AttnShape { b: 3, t: 13, c: 48, nh: 3 },
    AttnShape { b: 1, t: 1, c: 48, nh: 3 },
    AttnShape { b: 2, t: 7, c: 20, nh: 5 },
    AttnShape { b: 1, t: 33, c: 36, nh: 2 },
    AttnShape { b: 2, t: 150, c: 32, nh: 2 },
];

#[test]
fn attention_forward_matches_full_causal_softmax_in_f64_including_lse() {
    for s in ATTENTION_SHAPES {
        let AttnShape { b, t, c, nh } = s;
        let tag = format!("{s:?}");
        let mut rng = Rng::new(7);
        let qkv = randn(&mut rng, b * t * 3 * c, 1.0);
        let (mut out, mut lse) = (vec![f32::NAN; b * t * c], vec![f32::NAN; b * t * nh]);
        attention_forward(&mut out, &mut lse, &qkv, b, t, c, nh);
        let (want_out, want_lse) = attention_forward_ref(&f64s(&qkv), s);
        assert_close(&format!("attention out {tag}"), &out, &want_out, ATTENTION_TOL);
        assert_close(&format!("attention lse {tag}"), &lse, &want_lse, ATTENTION_TOL);
    }
}

#[test]
fn attention_backward_matches_textbook_softmax_backward_and_accumulates() {
    for s in ATTENTION_SHAPES {
        let AttnShape { b, t, c, nh } = s;
        let tag = format!("{s:?}");
        let mut rng = Rng::new(8);
        let qkv = randn(&mut rng, b * t * 3 * c, 1.0);
        let dout = randn(&mut rng, b * t * c, 1.0);
        let (mut out, mut lse) = (vec![0.0; b * t * c], vec![0.0; b * t * nh]);
        attention_forward(&mut out, &mut lse, &qkv, b, t, c, nh);
        let dqkv_prefill = randn(&mut rng, b * t * 3 * c, 1.0);
        let mut dqkv = dqkv_prefill.clone();
        attention_backward(&mut dqkv, &dout, &qkv, &out, &lse, b, t, c, nh);
        let want = attention_backward_ref(&f64s(&dout), &f64s(&qkv), s);
        assert_close(&format!("attention dqkv {tag}"), &dqkv, &plus(&dqkv_prefill, &want), ATTENTION_TOL);
    }
}

#[test]
fn attention_is_bitwise_independent_of_thread_count() {
    let s = AttnShape { b: 2, t: 33, c: 48, nh: 3 };
    let AttnShape { b, t, c, nh } = s;
    let mut rng = Rng::new(9);
    let qkv = randn(&mut rng, b * t * 3 * c, 1.0);
    let dout = randn(&mut rng, b * t * c, 1.0);
    let dqkv_prefill = randn(&mut rng, b * t * 3 * c, 1.0);
    let run = || {
        let (mut out, mut lse) = (vec![0.0; b * t * c], vec![0.0; b * t * nh]);
        attention_forward(&mut out, &mut lse, &qkv, b, t, c, nh);
        let mut dqkv = dqkv_prefill.clone();
        attention_backward(&mut dqkv, &dout, &qkv, &out, &lse, b, t, c, nh);
        [out, lse, dqkv]
    };
    let reference = on_threads(1, run);
    for threads in MORE_THREADS {
        let got = on_threads(threads, run);
        for (name, (x, y)) in ["out", "lse", "dqkv"].iter().zip(got.iter().zip(&reference)) {
            assert_bitwise_eq(&format!("attention {name}, {threads} threads vs 1"), x, y);
        }
    }
}

// ------------------------------------------------------------------------------------------------------------
// gelu and residual
// ------------------------------------------------------------------------------------------------------------

/// Two full 16K-element rayon chunks and a partial one; and a single element.
const ELEMENTWISE_LENGTHS: [usize; 2] = [2 * 16 * 1024 + 77, 1];

#[test]
fn gelu_forward_and_backward_match_f64_and_backward_overwrites() {
    for n in ELEMENTWISE_LENGTHS {
        let mut rng = Rng::new(10);
        // std 3 reaches both tails, where tanh saturates.
        let inp = randn(&mut rng, n, 3.0);
        let mut out = vec![f32::NAN; n];
        gelu_forward(&mut out, &inp, n);
        let want: Vec<f64> = inp.iter().map(|&x| gelu_ref(x as f64)).collect();
        assert_close(&format!("gelu out N{n}"), &out, &want, ELEMENTWISE_TOL);

        let dout = randn(&mut rng, n, 1.0);
        let mut dinp = vec![f32::NAN; n];
        gelu_backward(&mut dinp, &inp, &dout, n);
        let want: Vec<f64> = inp.iter().zip(&dout).map(|(&x, &g)| gelu_grad_ref(x as f64) * g as f64).collect();
        assert_close(&format!("gelu dinp N{n}"), &dinp, &want, ELEMENTWISE_TOL);
    }
}

#[test]
fn residual_forward_adds_and_backward_copies_into_both_branches() {
    for n in ELEMENTWISE_LENGTHS {
        let mut rng = Rng::new(11);
        let (inp1, inp2) = (randn(&mut rng, n, 1.0), randn(&mut rng, n, 1.0));
        let mut out = vec![f32::NAN; n];
        residual_forward(&mut out, &inp1, &inp2, n);
        let want: Vec<f64> = inp1.iter().zip(&inp2).map(|(&a, &b)| a as f64 + b as f64).collect();
        assert_close(&format!("residual out N{n}"), &out, &want, ONE_ROUNDING);

        let dout = randn(&mut rng, n, 1.0);
        let (mut dinp1, mut dinp2) = (vec![f32::NAN; n], vec![f32::NAN; n]);
        residual_backward(&mut dinp1, &mut dinp2, &dout, n);
        assert_eq!(dinp1, dout, "residual dinp1 N{n}");
        assert_eq!(dinp2, dout, "residual dinp2 N{n}");
    }
}

// ------------------------------------------------------------------------------------------------------------
// fused classifier
// ------------------------------------------------------------------------------------------------------------

/// (B, T, V, Vp): padded as GPT-2's 50257 -> 50304, B*T = 1, and no padding at all.
const CLASSIFIER_SHAPES: [(usize, usize, usize, usize); 3] = [(3, 13, 389, 512), (1, 1, 389, 512), (2, 3, 17, 17)];

/// Logits (B*T, Vp) ~ N(0, 2²) with `padding` in columns V..Vp, and targets that include 0 and V - 1.
fn classifier_inputs(rng: &mut Rng, n: usize, v: usize, vp: usize, padding: f32) -> (Vec<f32>, Vec<u32>) {
    let mut logits = randn(rng, n * vp, 2.0);
    for row in logits.chunks_mut(vp) {
        row[v..].fill(padding);
    }
    let mut targets: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
    targets[0] = 0;
    targets[n - 1] = v as u32 - 1;
    (logits, targets)
}

/// Per row: the softmax over the first V columns (f64) and the loss -log softmax[target].
fn classifier_ref(logits: &[f32], targets: &[u32], v: usize, vp: usize) -> (Vec<Vec<f64>>, Vec<f64>) {
    let mut probs = Vec::new();
    let mut losses = Vec::new();
    for (row, &target) in logits.chunks(vp).zip(targets) {
        let row = f64s(&row[..v]);
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = row.iter().map(|&x| (x - max).exp()).sum();
        let p: Vec<f64> = row.iter().map(|&x| (x - max).exp() / sum).collect();
        losses.push(-p[target as usize].ln());
        probs.push(p);
    }
    (probs, losses)
}

#[test]
fn fused_classifier_without_dloss_computes_losses_and_leaves_logits_untouched() {
    for (b, t, v, vp) in CLASSIFIER_SHAPES {
        let tag = format!("B{b} T{t} V{v} Vp{vp}");
        let n = b * t;
        let mut rng = Rng::new(12);
        let (logits_in, targets) = classifier_inputs(&mut rng, n, v, vp, 0.0);
        let mut logits = logits_in.clone();
        let mut losses = vec![f32::NAN; n];
        fused_classifier(&mut logits, &mut losses, &targets, b, t, v, vp, None);
        let (_, want_losses) = classifier_ref(&logits_in, &targets, v, vp);
        assert_close(&format!("classifier losses {tag}"), &losses, &want_losses, LOSS_TOL);
        assert_bitwise_eq(&format!("classifier logits untouched {tag}"), &logits, &logits_in);
    }
}

#[test]
fn fused_classifier_with_dloss_writes_softmax_minus_onehot_and_zeroes_padding() {
    for (b, t, v, vp) in CLASSIFIER_SHAPES {
        let tag = format!("B{b} T{t} V{v} Vp{vp}");
        let n = b * t;
        let dloss = 1.0 / n as f32;
        let mut rng = Rng::new(13);
        let (logits_in, targets) = classifier_inputs(&mut rng, n, v, vp, 1.0);
        let mut logits = logits_in.clone();
        let mut losses = vec![f32::NAN; n];
        fused_classifier(&mut logits, &mut losses, &targets, b, t, v, vp, Some(dloss));
        let (probs, want_losses) = classifier_ref(&logits_in, &targets, v, vp);
        assert_close(&format!("classifier losses (dloss) {tag}"), &losses, &want_losses, LOSS_TOL);

        let mut want_dlogits = vec![0.0; n * vp];
        for (r, p) in probs.iter().enumerate() {
            for i in 0..v {
                let onehot = if i == targets[r] as usize { 1.0 } else { 0.0 };
                want_dlogits[r * vp + i] = (p[i] - onehot) * dloss as f64;
            }
        }
        assert_close(&format!("classifier dlogits {tag}"), &logits, &want_dlogits, DLOGITS_TOL);
        for (r, row) in logits.chunks(vp).enumerate() {
            assert!(row[v..].iter().all(|&x| x == 0.0), "{tag}: padding of row {r} is not exactly 0");
        }
    }
}

#[test]
fn fused_classifier_ignores_huge_values_in_padding_columns() {
    let (b, t, v, vp) = (3, 13, 389, 512);
    let n = b * t;
    let dloss = 1.0 / n as f32;
    let mut rng = Rng::new(14);
    let (clean, targets) = classifier_inputs(&mut rng, n, v, vp, 0.0);
    let mut huge = clean.clone();
    for row in huge.chunks_mut(vp) {
        row[v..].fill(1e4);
    }
    for d in [None, Some(dloss)] {
        let (mut clean_logits, mut huge_logits) = (clean.clone(), huge.clone());
        let (mut clean_losses, mut huge_losses) = (vec![0.0; n], vec![0.0; n]);
        fused_classifier(&mut clean_logits, &mut clean_losses, &targets, b, t, v, vp, d);
        fused_classifier(&mut huge_logits, &mut huge_losses, &targets, b, t, v, vp, d);
        assert_bitwise_eq(&format!("losses, padding 1e4 vs 0, dloss {d:?}"), &huge_losses, &clean_losses);
        assert_close(
            &format!("losses, padding 1e4, dloss {d:?}"),
            &huge_losses,
            &classifier_ref(&clean, &targets, v, vp).1,
            LOSS_TOL,
        );
        if d.is_some() {
            assert_bitwise_eq("dlogits, padding 1e4 vs 0", &huge_logits, &clean_logits);
        }
    }
}

// ------------------------------------------------------------------------------------------------------------
// AdamW, global norm, clipping
// ------------------------------------------------------------------------------------------------------------

#[test]
fn adamw_update_matches_pytorch_adamw_in_f64_over_three_steps_with_grad_scale() {
    // Two full 16K-element rayon chunks and a partial one.
    let n = 2 * 16 * 1024 + 77;
    let (lr, beta1, beta2, eps, weight_decay, grad_scale) = (1e-2f32, 0.9f32, 0.95f32, 1e-8f32, 0.1f32, 0.37f32);
    let mut rng = Rng::new(15);
    let mut params = randn(&mut rng, n, 1.0);
    let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
    let (mut p64, mut m64, mut v64) = (f64s(&params), vec![0.0f64; n], vec![0.0f64; n]);
    let (b1, b2) = (beta1 as f64, beta2 as f64);

    for step in 1..=3u32 {
        let mut grads = randn(&mut rng, n, 1.0);
        // Exact zeros (update is weight decay only) and gradients so small that eps dominates the denominator.
        for i in (0..n).step_by(97) {
            grads[i] = 0.0;
        }
        for i in (50..n).step_by(89) {
            grads[i] *= 1e-8;
        }
        let hp = AdamWStep { lr, beta1, beta2, eps, weight_decay, grad_scale, step };
        adamw_update(&mut params, &grads, &mut m, &mut v, &hp);

        // PyTorch's AdamW, in f64 from the same f32 hyper-parameters.
        let (bc1, bc2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
        for i in 0..n {
            let g = grads[i] as f64 * grad_scale as f64;
            m64[i] = b1 * m64[i] + (1.0 - b1) * g;
            v64[i] = b2 * v64[i] + (1.0 - b2) * g * g;
            let (m_hat, v_hat) = (m64[i] / bc1, v64[i] / bc2);
            p64[i] -= lr as f64 * (m_hat / (v_hat.sqrt() + eps as f64) + weight_decay as f64 * p64[i]);
        }
        assert_close(&format!("adamw m, step {step}"), &m, &m64, ADAMW_MOMENT_TOL);
        assert_close(&format!("adamw v, step {step}"), &v, &v64, ADAMW_MOMENT_TOL);
        assert_close(&format!("adamw params, step {step}"), &params, &p64, ADAMW_PARAM_TOL);
    }
}

#[test]
fn global_norm_squared_matches_f64_sum_and_is_independent_of_thread_count() {
    // Three full 64K chunks and a partial one; and one element; and no element.
    for n in [3 * 64 * 1024 + 5, 1, 0] {
        let mut rng = Rng::new(16);
        let grads = randn(&mut rng, n, 1e-2);
        let want: f64 = grads.iter().map(|&g| g as f64 * g as f64).sum();
        let got = on_threads(1, || global_norm_squared(&grads));
        check_f64(&format!("global norm² N{n}"), &[got], &[want], NORM_TOL);
        for threads in MORE_THREADS {
            let again = on_threads(threads, || global_norm_squared(&grads));
            assert_eq!(again.to_bits(), got.to_bits(), "global norm² N{n}: {threads} threads vs 1");
        }
    }
    // Squares are taken in f64: 1e20² overflows f32 but not f64.
    let got = global_norm_squared(&[1e20, -1e20, 3.0]);
    check_f64("global norm² beyond f32 range", &[got], &[2.0 * (1e20f32 as f64).powi(2) + 9.0], NORM_TOL);
}

#[test]
fn clip_scale_is_one_unless_clipping_is_enabled_and_the_norm_exceeds_it() {
    assert_eq!(clip_scale(5.0, 0.0), 1.0, "clip 0 disables clipping");
    assert_eq!(clip_scale(5.0, -1.0), 1.0, "negative clip disables clipping");
    assert_eq!(clip_scale(0.5, 1.0), 1.0, "norm below clip");
    assert_eq!(clip_scale(1.0, 1.0), 1.0, "norm equal to clip");
    assert_eq!(clip_scale(0.0, 1.0), 1.0, "zero norm");
    assert_eq!(clip_scale(4.0, 1.0), 0.25, "norm above clip: clip / norm");
    assert_eq!(clip_scale(3.0, 1.5), 1.5 / 3.0, "norm above clip: clip / norm");
    assert_eq!(clip_scale(1e30, 1.0), 1.0 / 1e30, "huge norm");
}
