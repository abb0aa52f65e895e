//! LayerNorm over the channels of each (b, t) row: out = (x - mean) * rstd * weight + bias, with
//! rstd = 1 / sqrt(var + 1e-5) (biased variance, as PyTorch). Mean and rstd are kept for the backward pass.
//!
//! Backward, per row, with norm = (x - mean) * rstd and dnorm = weight * dout:
//!   dinp += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
//!   dweight += sum over rows of norm * dout;  dbias += sum over rows of dout
//! The row part runs in parallel over rows; the parameter sums run in parallel over column chunks, so no two
//! tasks write the same float and no scratch buffer is needed.

use rayon::prelude::*;

/// PyTorch's and GPT-2's LayerNorm epsilon.
pub const LAYERNORM_EPS: f32 = 1e-5;

/// Columns per task in the parameter-gradient pass.
const COLUMN_CHUNK: usize = 64;

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
        .par_chunks_mut(c)
        .zip(mean[..n].par_iter_mut())
        .zip(rstd[..n].par_iter_mut())
        .zip(inp[..n * c].par_chunks(c))
        .for_each(|(((out_row, mean), rstd), x)| {
            let m = x.iter().sum::<f32>() / c as f32;
            let var = x.iter().map(|&xi| (xi - m) * (xi - m)).sum::<f32>() / c as f32;
            let s = 1.0 / (var + LAYERNORM_EPS).sqrt();
            for (((o, &xi), &w), &bb) in out_row.iter_mut().zip(x).zip(weight).zip(bias) {
                *o = (xi - m) * s * w + bb;
            }
            *mean = m;
            *rstd = s;
        });
}

/// The residual add and the LayerNorm after it, as one call (the GPU fuses them into one pass over each row):
/// residual = inp1 + inp2, out = layernorm(residual). residual, out, inp1, inp2: (B, T, C); mean, rstd: (B, T).
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
    super::residual::residual_forward(residual, inp1, inp2, b * t * c);
    layernorm_forward(out, mean, rstd, residual, weight, bias, b, t, c);
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
    dinp[..n * c]
        .par_chunks_mut(c)
        .zip(dout[..n * c].par_chunks(c))
        .zip(inp[..n * c].par_chunks(c))
        .zip(mean[..n].par_iter().zip(rstd[..n].par_iter()))
        .for_each(|(((dinp_row, g), x), (&m, &s))| {
            let mut dnorm_mean = 0.0f32;
            let mut dnorm_norm_mean = 0.0f32;
            for ((&xi, &gi), &w) in x.iter().zip(g).zip(weight) {
                let norm = (xi - m) * s;
                let dnorm = w * gi;
                dnorm_mean += dnorm;
                dnorm_norm_mean += dnorm * norm;
            }
            dnorm_mean /= c as f32;
            dnorm_norm_mean /= c as f32;
            for (((d, &xi), &gi), &w) in dinp_row.iter_mut().zip(x).zip(g).zip(weight) {
                let norm = (xi - m) * s;
                let dnorm = w * gi;
                *d += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
            }
        });

    dweight[..c].par_chunks_mut(COLUMN_CHUNK).zip(dbias[..c].par_chunks_mut(COLUMN_CHUNK)).enumerate().for_each(
        |(chunk, (dw, db))| {
            let c0 = chunk * COLUMN_CHUNK;
            for row in 0..n {
                let (m, s) = (mean[row], rstd[row]);
                let x = &inp[row * c + c0..][..dw.len()];
                let g = &dout[row * c + c0..][..dw.len()];
                for (((dw, db), &xi), &gi) in dw.iter_mut().zip(db.iter_mut()).zip(x).zip(g) {
                    *dw += (xi - m) * s * gi;
                    *db += gi;
                }
            }
        },
    );
}
