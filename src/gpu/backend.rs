//! The GPU backend: every flat buffer is one device allocation and each layer method calls the launcher of the
//! same name in src/gpu, with device pointers at the handles' offsets. The same code drives a real GPU (the CUDA
//! driver) and the emulator; only the `Driver` differs. Attention is the one exception to "the same name": it runs
//! the flash attention kernels (src/gpu/flash_attention.rs) for heads of up to 64 channels, every GPT-2 size, and
//! the clear kernels of src/gpu/attention.rs for the shapes flash attention refuses. Both compute the same out, lse
//! and dqkv, so either pass may use either kernel.

use super::driver::{DeviceBuffer, DeviceSlice, DeviceTokens, Driver};
use super::{adamw, attention, classifier, encoder, flash_attention, gelu, global_norm, layernorm, matmul, residual};
use crate::backend::Backend;
use crate::cpu::adamw::AdamWStep;
use crate::error::{Error, Result};
use crate::layout::{Buf, Tensor};
use std::rc::Rc;

/// Device memory for every buffer, the batch's tokens, and the global norm's per-block partial sums.
pub struct GpuBackend {
    driver: Rc<dyn Driver>,
    bufs: [Option<DeviceBuffer>; Buf::COUNT],
    inputs: Option<DeviceTokens>,
    targets: Option<DeviceTokens>,
    norm_partials: DeviceBuffer,
}

impl GpuBackend {
    pub fn new(driver: Rc<dyn Driver>) -> Result<Self> {
        let norm_partials = DeviceBuffer::new(&driver, global_norm::SLICES)?;
        Ok(GpuBackend { driver, bufs: Default::default(), inputs: None, targets: None, norm_partials })
    }

    /// The device address range of `tensor`.
    fn dev(&self, tensor: Tensor) -> DeviceSlice {
        match &self.bufs[tensor.buf.index()] {
            Some(buf) => buf.at(tensor.offset, tensor.len),
            None => panic!("{tensor:?} in a buffer that was never reserved"),
        }
    }

    fn tokens<'a>(tokens: &'a Option<DeviceTokens>, what: &str) -> Result<&'a DeviceTokens> {
        tokens
            .as_ref()
            .ok_or_else(|| Error::config("model", format!("a layer needs the batch's {what}, none were set")))
    }

    /// Grows `slot` to hold `tokens` and copies them in.
    fn upload_tokens(driver: &Rc<dyn Driver>, slot: &mut Option<DeviceTokens>, tokens: &[u32]) -> Result<()> {
        if slot.as_ref().is_none_or(|s| s.len < tokens.len()) {
            *slot = None;
            *slot = Some(DeviceTokens::new(driver, tokens.len())?);
        }
        slot.as_ref().expect("allocated above").write(tokens)
    }
}

impl Backend for GpuBackend {
    fn name(&self) -> String {
        self.driver.name()
    }

    fn memory_available(&self) -> Option<usize> {
        self.driver.memory_available()
    }

    fn reserve(&mut self, buf: Buf, len: usize) -> Result<()> {
        let slot = &mut self.bufs[buf.index()];
        if slot.as_ref().is_none_or(|b| b.len() < len) {
            // Free the old allocation first so the device never holds both.
            *slot = None;
            let fresh = DeviceBuffer::new(&self.driver, len)?;
            fresh.zero()?;
            *slot = Some(fresh);
        }
        Ok(())
    }

    fn load(&mut self, buf: Buf, data: Vec<f32>) -> Result<()> {
        let slot = &mut self.bufs[buf.index()];
        *slot = None;
        *slot = Some(DeviceBuffer::from_host(&self.driver, &data)?);
        Ok(())
    }

    fn read(&self, src: Tensor, dst: &mut [f32]) -> Result<()> {
        assert_eq!(src.len, dst.len(), "reading {src:?} into {} floats", dst.len());
        self.driver.copy_to_host(bytemuck::cast_slice_mut(dst), self.dev(src).ptr)
    }

    fn zero(&mut self, dst: Tensor) -> Result<()> {
        let d = self.dev(dst);
        self.driver.memset_zero(d.ptr, d.len * std::mem::size_of::<f32>())
    }

    fn set_tokens(&mut self, inputs: &[u32], targets: Option<&[u32]>) -> Result<()> {
        Self::upload_tokens(&self.driver, &mut self.inputs, inputs)?;
        if let Some(targets) = targets {
            Self::upload_tokens(&self.driver, &mut self.targets, targets)?;
        }
        Ok(())
    }

    fn encoder_forward(&mut self, out: Tensor, wte: Tensor, wpe: Tensor, b: usize, t: usize, c: usize) -> Result<()> {
        let inputs = Self::tokens(&self.inputs, "inputs")?;
        encoder::encoder_forward(&*self.driver, self.dev(out), inputs, self.dev(wte), self.dev(wpe), b, t, c)
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
        let inputs = Self::tokens(&self.inputs, "inputs")?;
        encoder::encoder_backward(&*self.driver, self.dev(dwte), self.dev(dwpe), self.dev(dout), inputs, b, t, c)
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
        let d = |x| self.dev(x);
        layernorm::layernorm_forward(&*self.driver, d(out), d(mean), d(rstd), d(inp), d(weight), d(bias), b, t, c)
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
        let d = |x| self.dev(x);
        let (residual, out, mean, rstd) = (d(residual), d(out), d(mean), d(rstd));
        let (inp1, inp2, weight, bias) = (d(inp1), d(inp2), d(weight), d(bias));
        layernorm::fused_residual_layernorm_forward(
            &*self.driver,
            residual,
            out,
            mean,
            rstd,
            inp1,
            inp2,
            weight,
            bias,
            b,
            t,
            c,
        )
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
        let d = |x| self.dev(x);
        let (dinp, dweight, dbias, dout) = (d(dinp), d(dweight), d(dbias), d(dout));
        let (inp, weight, mean, rstd) = (d(inp), d(weight), d(mean), d(rstd));
        layernorm::layernorm_backward(&*self.driver, dinp, dweight, dbias, dout, inp, weight, mean, rstd, b, t, c)
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
        let d = |x| self.dev(x);
        matmul::matmul_forward(&*self.driver, d(out), d(inp), d(weight), bias.map(d), b, t, c, oc)
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
        let d = |x| self.dev(x);
        let (dinp, dweight, dbias, dout, inp, weight) = (d(dinp), d(dweight), dbias.map(d), d(dout), d(inp), d(weight));
        matmul::matmul_backward(&*self.driver, dinp, dweight, dbias, dout, inp, weight, b, t, c, oc)
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
        let (out, lse, qkv) = (self.dev(out), self.dev(lse), self.dev(qkv));
        if flash_attention::supports(b, t, c, nh) {
            flash_attention::flash_attention_forward(&*self.driver, out, lse, qkv, b, t, c, nh)
        } else {
            attention::attention_forward(&*self.driver, out, lse, qkv, b, t, c, nh)
        }
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
        let d = |x| self.dev(x);
        let (dqkv, dout, qkv, out, lse) = (d(dqkv), d(dout), d(qkv), d(out), d(lse));
        if flash_attention::supports(b, t, c, nh) {
            flash_attention::flash_attention_backward(&*self.driver, dqkv, dout, qkv, out, lse, b, t, c, nh)
        } else {
            attention::attention_backward(&*self.driver, dqkv, dout, qkv, out, lse, b, t, c, nh)
        }
    }

    fn gelu_forward(&mut self, out: Tensor, inp: Tensor, n: usize) -> Result<()> {
        gelu::gelu_forward(&*self.driver, self.dev(out), self.dev(inp), n)
    }

    fn gelu_backward(&mut self, dinp: Tensor, inp: Tensor, dout: Tensor, n: usize) -> Result<()> {
        gelu::gelu_backward(&*self.driver, self.dev(dinp), self.dev(inp), self.dev(dout), n)
    }

    fn residual_forward(&mut self, out: Tensor, inp1: Tensor, inp2: Tensor, n: usize) -> Result<()> {
        residual::residual_forward(&*self.driver, self.dev(out), self.dev(inp1), self.dev(inp2), n)
    }

    fn residual_backward(&mut self, dinp1: Tensor, dinp2: Tensor, dout: Tensor, n: usize) -> Result<()> {
        residual::residual_backward(&*self.driver, self.dev(dinp1), self.dev(dinp2), self.dev(dout), n)
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
        let targets = Self::tokens(&self.targets, "targets")?;
        classifier::fused_classifier(&*self.driver, self.dev(logits), self.dev(losses), targets, b, t, v, vp, dloss)
    }

    fn global_norm_squared(&mut self, grads: Tensor) -> Result<f64> {
        global_norm::global_norm_squared(&*self.driver, &self.norm_partials, self.dev(grads))
    }

    fn adamw_update(&mut self, params: Tensor, grads: Tensor, m: Tensor, v: Tensor, hp: &AdamWStep) -> Result<()> {
        let d = |x| self.dev(x);
        adamw::adamw_update(&*self.driver, d(params), d(grads), d(m), d(v), hp)
    }
}
