//! GELU, tanh approximation (GPT-2's "gelu_new"):
//! gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
//!
//! Computed through the identity 0.5 (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + e^(-2u)): one vectorizable `exp`
//! and one division per element instead of a libm `tanhf` call, which kept the loop scalar. The backward pass
//! differentiates the same formula (it needs the input, not the output): with s = sigmoid(2u),
//!   d gelu / dx = s + 2 x s (1 - s) du/dx,  du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
//! (the tanh form's 0.5 x sech^2(u) du/dx, since sech^2(u) = 4 s (1 - s)).

use super::simd::{exp, vectorized};
use super::ELEMENTWISE_CHUNK;
use rayon::prelude::*;

const GELU_SCALE: f32 = 0.797_884_6; // sqrt(2 / pi)
const GELU_CUBIC: f32 = 0.044715;

/// (s, 1 - s) with s = sigmoid(2u) = 0.5 (1 + tanh(u)) for the x at hand. 1 - s is computed as e^(-2u) s, not
/// by subtracting, so it keeps its precision where s is close to 1.
#[inline(always)]
fn sigmoid_2u(x: f32) -> (f32, f32) {
    let u = GELU_SCALE * (x + GELU_CUBIC * x * x * x);
    let e = exp(-2.0 * u);
    let s = 1.0 / (1.0 + e);
    (s, e * s)
}

/// out, inp: (N).
pub fn gelu_forward(out: &mut [f32], inp: &[f32], n: usize) {
    out[..n]
        .par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(inp[..n].par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|(o, x)| forward_chunk(o, x));
}

vectorized! {
    fn forward_chunk(out: &mut [f32], inp: &[f32]) {
        for (o, &x) in out.iter_mut().zip(inp) {
            *o = x * sigmoid_2u(x).0;
        }
    }
}

/// dinp: (N), overwritten; inp, dout: (N).
pub fn gelu_backward(dinp: &mut [f32], inp: &[f32], dout: &[f32], n: usize) {
    dinp[..n]
        .par_chunks_mut(ELEMENTWISE_CHUNK)
        .zip(inp[..n].par_chunks(ELEMENTWISE_CHUNK))
        .zip(dout[..n].par_chunks(ELEMENTWISE_CHUNK))
        .for_each(|((d, x), g)| backward_chunk(d, x, g));
}

vectorized! {
    fn backward_chunk(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
        for ((d, &x), &g) in dinp.iter_mut().zip(inp).zip(dout) {
            let (s, one_minus_s) = sigmoid_2u(x);
            let du_dx = GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * x * x);
            *d = (s + 2.0 * x * s * one_minus_s * du_dx) * g;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tanh form, in f64, as PyTorch's `gelu(approximate="tanh")` writes it.
    fn gelu_f64(x: f64) -> (f64, f64) {
        let (a, c) = (GELU_SCALE as f64, GELU_CUBIC as f64);
        let th = (a * (x + c * x * x * x)).tanh();
        let grad = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * a * (1.0 + 3.0 * c * x * x);
        (0.5 * x * (1.0 + th), grad)
    }

    #[test]
    fn sigmoid_form_matches_the_tanh_form() {
        let xs: Vec<f32> = (0..20_001).map(|i| (i as f32 - 10_000.0) * 1e-3).chain([-60.0, 60.0]).collect();
        let n = xs.len();
        let (mut out, mut dinp) = (vec![0.0; n], vec![f32::NAN; n]);
        gelu_forward(&mut out, &xs, n);
        gelu_backward(&mut dinp, &xs, &vec![1.0; n], n);
        for ((&x, &o), &d) in xs.iter().zip(&out).zip(&dinp) {
            let (want, want_grad) = gelu_f64(x as f64);
            assert!((o as f64 - want).abs() <= 2e-7 * (1.0 + want.abs()), "gelu({x}) = {o}, want {want}");
            let grad = d as f64;
            assert!(
                (grad - want_grad).abs() <= 2e-7 * (1.0 + want_grad.abs()),
                "gelu'({x}) = {grad}, want {want_grad}"
            );
        }
    }
}
