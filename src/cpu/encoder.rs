//! Encoder: the residual stream starts as token embedding + position embedding.
//!
//! forward:  out[b, t, :] = wte[inp[b, t], :] + wpe[t, :]
//! backward: dwte[inp[b, t], :] += dout[b, t, :];  dwpe[t, :] += dout[b, t, :]

use rayon::prelude::*;

/// out: (B, T, C); inp: (B, T) token ids < Vp; wte: (Vp, C); wpe: (maxT, C) with T <= maxT.
#[allow(clippy::too_many_arguments)]
pub fn encoder_forward(out: &mut [f32], inp: &[u32], wte: &[f32], wpe: &[f32], b: usize, t: usize, c: usize) {
    out[..b * t * c].par_chunks_mut(c).zip(inp[..b * t].par_iter()).enumerate().for_each(|(bt, (out_row, &ix))| {
        let pos = bt % t;
        let wte_row = &wte[ix as usize * c..][..c];
        let wpe_row = &wpe[pos * c..][..c];
        for ((o, &e), &p) in out_row.iter_mut().zip(wte_row).zip(wpe_row) {
            *o = e + p;
        }
    });
}

/// dwte: (Vp, C) and dwpe: (maxT, C) accumulate; dout: (B, T, C); inp: (B, T).
///
/// Sequential on purpose: several positions may hold the same token, so rows of dwte collide, and the whole pass
/// moves only B*T*C floats.
pub fn encoder_backward(dwte: &mut [f32], dwpe: &mut [f32], dout: &[f32], inp: &[u32], b: usize, t: usize, c: usize) {
    for (bt, dout_row) in dout[..b * t * c].chunks_exact(c).enumerate() {
        let ix = inp[bt] as usize;
        let pos = bt % t;
        for (d, &g) in dwte[ix * c..][..c].iter_mut().zip(dout_row) {
            *d += g;
        }
        for (d, &g) in dwpe[pos * c..][..c].iter_mut().zip(dout_row) {
            *d += g;
        }
    }
}
