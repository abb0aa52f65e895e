//! Residual: the stream adds each block's output to its input.
//!
//! forward: out = inp1 + inp2; backward: dinp1 = dout, dinp2 = dout (the gradient flows to both branches; this is
//! the first write to either in the backward pass, so both are overwritten, not accumulated into).

use super::ELEMENTWISE_CHUNK;
use rayon::prelude::*;

/// out, inp1, inp2: (N) with N = B * T * C.
pub fn residual_forward(out: &mut [f32], inp1: &[f32], inp2: &[f32], n: usize) {
    out[..n]
        .par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(inp1[..n].par_chunks(ELEMENTWISE_CHUNK))
        .zip(inp2[..n].par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|((o, a), b)| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = a + b;
            }
        });
}

/// dinp1, dinp2: (N), overwritten with dout (N): the gradient flows to both branches unchanged.
pub fn residual_backward(dinp1: &mut [f32], dinp2: &mut [f32], dout: &[f32], n: usize) {
    dinp1[..n]
        .par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(dinp2[..n].par_chunks_mut(ELEMENTWISE_CHUNK))
        .zip(dout[..n].par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|((d1, d2), g)| {
            for ((d1, d2), &g) in d1.iter_mut().zip(d2.iter_mut()).zip(g) {
                *d1 = g;
                *d2 = g;
            }
        });
}
