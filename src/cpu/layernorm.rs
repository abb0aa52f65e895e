//! LayerNorm over the channels of each (b, t) row: out = (x - mean) * rstd * weight + bias, with
//! rstd = 1 / sqrt(var + 1e-5) (biased variance, as PyTorch). Mean and rstd are kept for the backward pass.
//!
//! Backward, per row, with norm = (x - mean) * rstd and dnorm = weight * dout:
//!   dinp += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
//!   dweight += sum over rows of norm * dout;  dbias += sum over rows of dout
//! One pass over dout and inp: tasks take PARTIAL_ROWS rows each, write their rows of dinp and add their rows'
//! norm * dout and dout into their own partial sums (2C floats, in L1); the partial sums are then added onto
//! dweight and dbias in task order. The groups are fixed, so the sums do not depend on the number of threads.
//! (A second pass over dout and inp by column chunks, which needed no scratch, was 0.7% of a bytes6 step.)

use super::grown;
use super::simd::{sum, sum_map, vectorized};
use rayon::prelude::*;
use std::cell::RefCell;

/// PyTorch's and GPT-2's LayerNorm epsilon.
pub const LAYERNORM_EPS: f32 = 1e-5;

/// Rows per task of the backward pass, each with its own partial sums of dweight and dbias.
const PARTIAL_ROWS: usize = 64;

thread_local! {
    /// The calling thread's partial sums for `layernorm_backward`: (groups of PARTIAL_ROWS rows, 2, C), grown to
    /// the largest (B, T, C) seen and reused.
    static PARTIALS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Rows per task in the row passes: enough work per task to amortise scheduling and the vector-unit dispatch.
const ROW_BLOCK: usize = 8;

/// The first N rows of a (N, C) tensor in blocks of ROW_BLOCK rows, for a parallel loop.
fn row_blocks(x: &[f32], n: usize, c: usize) -> rayon::slice::Chunks<'_, f32> {
    x[..n * c].par_chunks(ROW_BLOCK * c)
}

/// One row: out = (x - mean) * rstd * weight + bias; returns (mean, rstd). All slices of length C.
#[inline(always)]
fn normalize_row(out: &mut [f32], x: &[f32], weight: &[f32], bias: &[f32]) -> (f32, f32) {
    let c = x.len();
    let (out, weight, bias) = (&mut out[..c], &weight[..c], &bias[..c]);
    let m = sum(x) / c as f32;
    let var = sum_map([x], |[v]| (v - m) * (v - m)) / c as f32;
    let s = 1.0 / (var + LAYERNORM_EPS).sqrt();
    for i in 0..c {
        out[i] = (x[i] - m) * s * weight[i] + bias[i];
    }
    (m, s)
}

/// out: (B, T, C); mean, rstd: (B, T); inp: (B, T, C); weight, bias: (C).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    b: usize,
    t: usize,
    c: usize,
) {
    let n = b * t;
    out[..n * c]
        .par_chunks_mut(ROW_BLOCK * c)
        .zip(mean[..n].par_chunks_mut(ROW_BLOCK))
        .zip(rstd[..n].par_chunks_mut(ROW_BLOCK))
        .zip(row_blocks(inp, n, c))
        .for_each(|(((out, mean), rstd), inp)| normalize_rows(out, mean, rstd, inp, weight, bias, c));
}

vectorized! {
    /// `normalize_row` over a block of rows.
    fn normalize_rows(
        out: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        inp: &[f32],
        weight: &[f32],
        bias: &[f32],
        c: usize,
    ) {
        for (((out_row, mean), rstd), x) in out.chunks_mut(c).zip(mean).zip(rstd).zip(inp.chunks(c)) {
            (*mean, *rstd) = normalize_row(out_row, x, weight, bias);
        }
    }
}

/// The residual add and the LayerNorm after it in one pass over each row (the residual row is normalized while
/// it is in L1): residual = inp1 + inp2, out = layernorm(residual). residual, out, inp1, inp2: (B, T, C);
/// mean, rstd: (B, T).
#[allow(clippy::too_many_arguments)]
pub fn fused_residual_layernorm_forward(
    residual: &mut [f32],
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp1: &[f32],
    inp2: &[f32],
    weight: &[f32],
    bias: &[f32],
    b: usize,
    t: usize,
    c: usize,
) {
    let n = b * t;
    let rows = |x| row_blocks(x, n, c);
    residual[..n * c]
        .par_chunks_mut(ROW_BLOCK * c)
        .zip(out[..n * c].par_chunks_mut(ROW_BLOCK * c))
        .zip(mean[..n].par_chunks_mut(ROW_BLOCK).zip(rstd[..n].par_chunks_mut(ROW_BLOCK)))
        .zip(rows(inp1).zip(rows(inp2)))
        .for_each(|(((residual, out), (mean, rstd)), (inp1, inp2))| {
            add_and_normalize_rows(residual, out, mean, rstd, inp1, inp2, weight, bias, c)
        });
}

vectorized! {
    /// The fused pass over a block of rows.
    #[allow(clippy::too_many_arguments)]
    fn add_and_normalize_rows(
        residual: &mut [f32],
        out: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        inp1: &[f32],
        inp2: &[f32],
        weight: &[f32],
        bias: &[f32],
        c: usize,
    ) {
        let rows = residual.chunks_mut(c).zip(out.chunks_mut(c)).zip(mean.iter_mut().zip(rstd));
        for (((res_row, out_row), (mean, rstd)), (a, b)) in rows.zip(inp1.chunks(c).zip(inp2.chunks(c))) {
            for ((r, &a), &b) in res_row.iter_mut().zip(a).zip(b) {
                *r = a + b;
            }
            (*mean, *rstd) = normalize_row(out_row, res_row, weight, bias);
        }
    }
}

/// dinp: (B, T, C), dweight, dbias: (C) accumulate; dout, inp: (B, T, C); weight: (C); mean, rstd: (B, T).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    b: usize,
    t: usize,
    c: usize,
) {
    let n = b * t;
    let groups = n.div_ceil(PARTIAL_ROWS);
    PARTIALS.with_borrow_mut(|partials| {
        let partials = grown(partials, groups * 2 * c);
        dinp[..n * c]
            .par_chunks_mut(PARTIAL_ROWS * c)
            .zip(partials.par_chunks_mut(2 * c))
            .zip(dout[..n * c].par_chunks(PARTIAL_ROWS * c).zip(inp[..n * c].par_chunks(PARTIAL_ROWS * c)))
            .zip(mean[..n].par_chunks(PARTIAL_ROWS).zip(rstd[..n].par_chunks(PARTIAL_ROWS)))
            .for_each(|(((dinp, part), (dout, inp)), (mean, rstd))| {
                backward_rows(dinp, part, dout, inp, weight, mean, rstd, c)
            });
        add_partials(&mut dweight[..c], &mut dbias[..c], partials);
    });
}

vectorized! {
    /// dinp += the row part of the backward pass over a group of rows; part (2, C) = the group's sums of
    /// norm * dout and of dout.
    #[allow(clippy::too_many_arguments)]
    fn backward_rows(
        dinp: &mut [f32],
        part: &mut [f32],
        dout: &[f32],
        inp: &[f32],
        weight: &[f32],
        mean: &[f32],
        rstd: &[f32],
        c: usize,
    ) {
        let (dw, db) = part.split_at_mut(c);
        dw.fill(0.0);
        db.fill(0.0);
        let rows = dinp.chunks_mut(c).zip(dout.chunks(c)).zip(inp.chunks(c));
        for (((dinp_row, g), x), (&m, &s)) in rows.zip(mean.iter().zip(rstd)) {
            let (dinp_row, w, g, x) = (&mut dinp_row[..c], &weight[..c], &g[..c], &x[..c]);
            let dnorm_mean = sum_map([w, g], |[w, g]| w * g) / c as f32;
            let dnorm_norm_mean = sum_map([w, g, x], |[w, g, x]| w * g * (x - m) * s) / c as f32;
            for i in 0..c {
                let norm = (x[i] - m) * s;
                dinp_row[i] += (w[i] * g[i] - dnorm_mean - norm * dnorm_norm_mean) * s;
                dw[i] += norm * g[i];
                db[i] += g[i];
            }
        }
    }
}

vectorized! {
    /// dweight, dbias (C) += the groups' partial sums (groups, 2, C), in group order.
    fn add_partials(dweight: &mut [f32], dbias: &mut [f32], partials: &[f32]) {
        let c = dweight.len();
        for part in partials.chunks_exact(2 * c) {
            let (dw, db) = part.split_at(c);
            dweight.iter_mut().zip(dw).for_each(|(d, &x)| *d += x);
            dbias.iter_mut().zip(db).for_each(|(d, &x)| *d += x);
        }
    }
}
