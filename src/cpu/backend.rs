//! The CPU backend: the flat buffers are host vectors and each layer method calls the reference in src/cpu.
//!
//! A layer reads some tensors and writes others, often in the same buffer (the activations). `views` turns the
//! handles of one call into disjoint slices with `split_at_mut` alone, so the borrow checker is satisfied without
//! `unsafe`; two handles of one call that overlap are a bug in the model's layer sequence and stop it loudly.

use super::adamw::{adamw_update, AdamWStep};
use super::attention::{attention_backward, attention_forward};
use super::classifier::fused_classifier;
use super::encoder::{encoder_backward, encoder_forward};
use super::gelu::{gelu_backward, gelu_forward};
use super::global_norm::global_norm_squared;
use super::layernorm::{fused_residual_layernorm_forward, layernorm_backward, layernorm_forward};
use super::matmul::{matmul_backward, matmul_forward};
use super::residual::{residual_backward, residual_forward};
use super::ELEMENTWISE_CHUNK;
use crate::backend::{Backend, Precision};
use crate::error::{Error, Result};
use crate::layout::{Buf, Tensor};
use rayon::prelude::*;

/// Host memory for every buffer, plus the batch's tokens.
#[derive(Default)]
pub struct CpuBackend {
    bufs: [Vec<f32>; Buf::COUNT],
    inputs: Vec<u32>,
    targets: Vec<u32>,
}

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend::default()
    }
}

/// Memory this machine can still give (Linux's MemAvailable), or None where that cannot be read.
pub fn host_memory_available() -> Option<usize> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The slices of `tensors`, in the order given, cut from `bufs`. Panics if two of them overlap or one lies
/// outside its buffer: the model computes every handle from `layout`, so either is a bug there.
fn views<const N: usize>(bufs: &mut [Vec<f32>; Buf::COUNT], tensors: [Tensor; N]) -> [&mut [f32]; N] {
    let mut order: [usize; N] = std::array::from_fn(|i| i);
    order.sort_by_key(|&i| (tensors[i].buf, tensors[i].offset));
    // What is left of each buffer after the views cut so far, and the element where that rest starts.
    let mut rest: [&mut [f32]; Buf::COUNT] = bufs.each_mut().map(|v| v.as_mut_slice());
    let mut start = [0usize; Buf::COUNT];
    let mut out: [&mut [f32]; N] = std::array::from_fn(|_| <&mut [f32]>::default());
    for i in order {
        let tensor = tensors[i];
        let k = tensor.buf.index();
        let skip = tensor.offset.checked_sub(start[k]).unwrap_or_else(|| panic!("overlapping tensors {tensors:?}"));
        assert!(skip + tensor.len <= rest[k].len(), "{tensor:?} outside its buffer of {}", start[k] + rest[k].len());
        let (_, after) = std::mem::take(&mut rest[k]).split_at_mut(skip);
        let (view, after) = after.split_at_mut(tensor.len);
        rest[k] = after;
        start[k] = tensor.offset + tensor.len;
        out[i] = view;
    }
    out
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        format!("cpu ({} threads, {})", rayon::current_num_threads(), super::simd::level())
    }

    fn memory_available(&self) -> Option<usize> {
        host_memory_available()
    }

    fn precision(&self) -> Precision {
        Precision::Fp32
    }

    fn reserve(&mut self, buf: Buf, len: usize) -> Result<()> {
        let vec = &mut self.bufs[buf.index()];
        if vec.len() < len {
            vec.clear();
            vec.try_reserve_exact(len).map_err(|_| {
                Error::OutOfMemory(format!("cannot allocate {} MiB of host memory for the {buf:?} buffer", len >> 18))
            })?;
            vec.resize(len, 0.0);
        }
        Ok(())
    }

    fn load(&mut self, buf: Buf, data: Vec<f32>) -> Result<()> {
        self.bufs[buf.index()] = data;
        Ok(())
    }

    fn read(&self, src: Tensor, dst: &mut [f32]) -> Result<()> {
        dst.copy_from_slice(&self.bufs[src.buf.index()][src.range()]);
        Ok(())
    }

    fn zero(&mut self, dst: Tensor) -> Result<()> {
        // In parallel: one core's memset reaches about half of what two do here.
        self.bufs[dst.buf.index()][dst.range()].par_chunks_mut(ELEMENTWISE_CHUNK).for_each(|chunk| chunk.fill(0.0));
        Ok(())
    }

    fn set_tokens(&mut self, inputs: &[u32], targets: Option<&[u32]>) -> Result<()> {
        self.inputs.clear();
        self.inputs.extend_from_slice(inputs);
        self.targets.clear();
        self.targets.extend_from_slice(targets.unwrap_or_default());
        Ok(())
    }

    fn encoder_forward(&mut self, out: Tensor, wte: Tensor, wpe: Tensor, b: usize, t: usize, c: usize) -> Result<()> {
        let [out, wte, wpe] = views(&mut self.bufs, [out, wte, wpe]);
        encoder_forward(out, &self.inputs, wte, wpe, b, t, c);
        Ok(())
    }

    fn encoder_backward(
        &mut self,
        dwte: Tensor,
        dwpe: Tensor,
        dout: Tensor,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        let [dwte, dwpe, dout] = views(&mut self.bufs, [dwte, dwpe, dout]);
        encoder_backward(dwte, dwpe, dout, &self.inputs, b, t, c);
        Ok(())
    }

    fn layernorm_forward(
        &mut self,
        out: Tensor,
        mean: Tensor,
        rstd: Tensor,
        inp: Tensor,
        weight: Tensor,
        bias: Tensor,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        let [out, mean, rstd, inp, weight, bias] = views(&mut self.bufs, [out, mean, rstd, inp, weight, bias]);
        layernorm_forward(out, mean, rstd, inp, weight, bias, b, t, c);
        Ok(())
    }

    fn fused_residual_layernorm_forward(
        &mut self,
        residual: Tensor,
        out: Tensor,
        mean: Tensor,
        rstd: Tensor,
        inp1: Tensor,
        inp2: Tensor,
        weight: Tensor,
        bias: Tensor,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        let [residual, out, mean, rstd, inp1, inp2, weight, bias] =
            views(&mut self.bufs, [residual, out, mean, rstd, inp1, inp2, weight, bias]);
        fused_residual_layernorm_forward(residual, out, mean, rstd, inp1, inp2, weight, bias, b, t, c);
        Ok(())
    }

    fn layernorm_backward(
        &mut self,
        dinp: Tensor,
        dweight: Tensor,
        dbias: Tensor,
        dout: Tensor,
        inp: Tensor,
        weight: Tensor,
        mean: Tensor,
        rstd: Tensor,
        b: usize,
        t: usize,
        c: usize,
    ) -> Result<()> {
        let [dinp, dweight, dbias, dout, inp, weight, mean, rstd] =
            views(&mut self.bufs, [dinp, dweight, dbias, dout, inp, weight, mean, rstd]);
        layernorm_backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, b, t, c);
        Ok(())
    }

    fn matmul_forward(
        &mut self,
        out: Tensor,
        inp: Tensor,
        weight: Tensor,
        bias: Option<Tensor>,
        b: usize,
        t: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        match bias {
            Some(bias) => {
                let [out, inp, weight, bias] = views(&mut self.bufs, [out, inp, weight, bias]);
                matmul_forward(out, inp, weight, Some(bias), b, t, c, oc);
            }
            None => {
                let [out, inp, weight] = views(&mut self.bufs, [out, inp, weight]);
                matmul_forward(out, inp, weight, None, b, t, c, oc);
            }
        }
        Ok(())
    }

    fn matmul_backward(
        &mut self,
        dinp: Tensor,
        dweight: Tensor,
        dbias: Option<Tensor>,
        dout: Tensor,
        inp: Tensor,
        weight: Tensor,
        b: usize,
        t: usize,
        c: usize,
        oc: usize,
    ) -> Result<()> {
        match dbias {
            Some(dbias) => {
                let [dinp, dweight, dbias, dout, inp, weight] =
                    views(&mut self.bufs, [dinp, dweight, dbias, dout, inp, weight]);
                matmul_backward(dinp, dweight, Some(dbias), dout, inp, weight, b, t, c, oc);
            }
            None => {
                let [dinp, dweight, dout, inp, weight] = views(&mut self.bufs, [dinp, dweight, dout, inp, weight]);
                matmul_backward(dinp, dweight, None, dout, inp, weight, b, t, c, oc);
            }
        }
        Ok(())
    }

    fn attention_forward(
        &mut self,
        out: Tensor,
        lse: Tensor,
        qkv: Tensor,
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
    ) -> Result<()> {
        let [out, lse, qkv] = views(&mut self.bufs, [out, lse, qkv]);
        attention_forward(out, lse, qkv, b, t, c, nh);
        Ok(())
    }

    fn attention_backward(
        &mut self,
        dqkv: Tensor,
        dout: Tensor,
        qkv: Tensor,
        out: Tensor,
        lse: Tensor,
        b: usize,
        t: usize,
        c: usize,
        nh: usize,
    ) -> Result<()> {
        let [dqkv, dout, qkv, out, lse] = views(&mut self.bufs, [dqkv, dout, qkv, out, lse]);
        attention_backward(dqkv, dout, qkv, out, lse, b, t, c, nh);
        Ok(())
    }

    fn gelu_forward(&mut self, out: Tensor, inp: Tensor, n: usize) -> Result<()> {
        let [out, inp] = views(&mut self.bufs, [out, inp]);
        gelu_forward(out, inp, n);
        Ok(())
    }

    fn gelu_backward(&mut self, dinp: Tensor, inp: Tensor, dout: Tensor, n: usize) -> Result<()> {
        let [dinp, inp, dout] = views(&mut self.bufs, [dinp, inp, dout]);
        gelu_backward(dinp, inp, dout, n);
        Ok(())
    }

    fn residual_forward(&mut self, out: Tensor, inp1: Tensor, inp2: Tensor, n: usize) -> Result<()> {
        let [out, inp1, inp2] = views(&mut self.bufs, [out, inp1, inp2]);
        residual_forward(out, inp1, inp2, n);
        Ok(())
    }

    fn residual_backward(&mut self, dinp1: Tensor, dinp2: Tensor, dout: Tensor, n: usize) -> Result<()> {
        let [dinp1, dinp2, dout] = views(&mut self.bufs, [dinp1, dinp2, dout]);
        residual_backward(dinp1, dinp2, dout, n);
        Ok(())
    }

    fn fused_classifier(
        &mut self,
        logits: Tensor,
        losses: Tensor,
        b: usize,
        t: usize,
        v: usize,
        vp: usize,
        dloss: Option<f32>,
    ) -> Result<()> {
        let [logits, losses] = views(&mut self.bufs, [logits, losses]);
        fused_classifier(logits, losses, &self.targets, b, t, v, vp, dloss);
        Ok(())
    }

    fn global_norm_squared(&mut self, grads: Tensor) -> Result<f64> {
        Ok(global_norm_squared(&self.bufs[grads.buf.index()][grads.range()]))
    }

    fn adamw_update(&mut self, params: Tensor, grads: Tensor, m: Tensor, v: Tensor, hp: &AdamWStep) -> Result<()> {
        let [params, grads, m, v] = views(&mut self.bufs, [params, grads, m, v]);
        adamw_update(params, grads, m, v, hp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(buf: Buf, offset: usize, len: usize) -> Tensor {
        Tensor { buf, offset, len }
    }

    #[test]
    fn views_are_the_requested_ranges_in_the_requested_order() {
        let mut bufs: [Vec<f32>; Buf::COUNT] = Default::default();
        bufs[Buf::Acts.index()] = (0..10).map(|x| x as f32).collect();
        bufs[Buf::Params.index()] = vec![-1.0, -2.0];
        let [a, b, p] = views(&mut bufs, [t(Buf::Acts, 6, 3), t(Buf::Acts, 1, 2), t(Buf::Params, 1, 1)]);
        assert_eq!(a, [6.0, 7.0, 8.0]);
        assert_eq!(b, [1.0, 2.0]);
        assert_eq!(p, [-2.0]);
    }

    #[test]
    #[should_panic(expected = "overlapping")]
    fn overlapping_views_are_refused() {
        let mut bufs: [Vec<f32>; Buf::COUNT] = Default::default();
        bufs[Buf::Acts.index()] = vec![0.0; 10];
        views(&mut bufs, [t(Buf::Acts, 0, 4), t(Buf::Acts, 3, 2)]);
    }

    #[test]
    #[should_panic(expected = "outside its buffer")]
    fn views_past_the_end_are_refused() {
        let mut bufs: [Vec<f32>; Buf::COUNT] = Default::default();
        bufs[Buf::Grads.index()] = vec![0.0; 4];
        views(&mut bufs, [t(Buf::Grads, 2, 3)]);
    }
}
