//! GELU, tanh approximation (GPT-2's "gelu_new"):
//! gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
//! The backward pass differentiates that formula directly (it needs the input, not the output).

use super::ELEMENTWISE_CHUNK;
use rayon::prelude::*;

const GELU_SCALE: f32 = 0.797_884_6; // sqrt(2 / pi)
const GELU_CUBIC: f32 = 0.044715;

/// out, inp: (N).
pub fn gelu_forward(out: &mut [f32], inp: &[f32], n: usize) {
    out[..n].par_chunks_mut(ELEMENTWISE_CHUNK).zip(inp[..n].par_chunks(ELEMENTWISE_CHUNK)).for_each(|(o, x)| {
        for (o, &x) in o.iter_mut().zip(x) {
            let cube = GELU_CUBIC * x * x * x;
            *o = 0.5 * x * (1.0 + (GELU_SCALE * (x + cube)).tanh());
        }
    });
}

/// dinp accumulates; inp, dout: (N).
pub fn gelu_backward(dinp: &mut [f32], inp: &[f32], dout: &[f32], n: usize) {
    dinp[..n]
        .par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(inp[..n].par_chunks(ELEMENTWISE_CHUNK))
        .zip(dout[..n].par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|((d, x), g)| {
            for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
                let cube = GELU_CUBIC * x * x * x;
                let tanh_arg = GELU_SCALE * (x + cube);
                let tanh_out = tanh_arg.tanh();
                let sech2 = 1.0 - tanh_out * tanh_out;
                let local_grad =
                    0.5 * (1.0 + tanh_out) + x * 0.5 * sech2 * GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * x * x);
                *d += local_grad * g;
            }
        });
}
