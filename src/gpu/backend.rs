//! The GPU backend: every flat buffer is one device allocation and each layer method calls the launcher of the
//! same name in src/gpu, with device pointers at the handles' offsets. The same code drives a real GPU (the CUDA
//! driver) and the emulator; only the `Driver` differs. Attention is the one exception to "the same name": in bf16
//! it runs the tensor-core flash attention (src/gpu/flash_attention_tc.rs, WMMA) for heads of 16, 32, 48 or 64
//! channels, every GPT-2 size; otherwise the SIMT flash attention (src/gpu/flash_attention.rs) for heads of up to
//! 64 channels, and the clear kernels of src/gpu/attention.rs for the shapes flash attention refuses. All compute
//! the same out, lse and dqkv, so either pass may use either kernel.
//!
//! Precision: parameters, gradients, activations and their gradients are stored in the backend's `floatX` (f32 or
//! bf16, every kernel compiled for both); statistics and AdamW's moments are always f32. With bf16 the backend
//! also keeps f32 master weights: `load` of the parameters keeps the given values there (the bf16 copy is rounded
//! from them), AdamW updates them and writes the bf16 copy by stochastic rounding, and `read` of the parameters
//! returns them, so checkpoints are exact f32 whichever precision trains.

use super::driver::{DType, DeviceBuffer, DeviceSlice, DeviceTokens, Driver};
use super::{
    adamw, attention, classifier, encoder, flash_attention, flash_attention_tc, gelu, global_norm, layernorm, matmul,
    residual,
};
use crate::backend::{Backend, Precision};
use crate::cpu::adamw::AdamWStep;
use crate::error::{Error, Result};
use crate::layout::{Buf, Tensor};
use std::rc::Rc;

/// Device memory for every buffer, the master weights (bf16), the batch's tokens (and the input positions sorted
/// by token, for the encoder's backward pass), and the global norm's per-block partial sums.
pub struct GpuBackend {
    driver: Rc<dyn Driver>,
    precision: Precision,
    bufs: [Option<DeviceBuffer>; Buf::COUNT],
    /// f32 master weights, Params' layout; only with bf16 parameters.
    master: Option<DeviceBuffer>,
    inputs: Option<DeviceTokens>,
    /// The batch's inputs on the host, and whether `input_order` holds their order yet: only a backward pass
    /// needs it, so forward-only passes (evaluation, sampling a token at a time) never sort or upload it.
    host_inputs: Vec<u32>,
    input_order_current: bool,
    input_order: Option<DeviceTokens>,
    targets: Option<DeviceTokens>,
    norm_partials: DeviceBuffer,
}

impl GpuBackend {
    pub fn new(driver: Rc<dyn Driver>, precision: Precision) -> Result<Self> {
        let norm_partials = DeviceBuffer::new(&driver, global_norm::SLICES)?;
        Ok(GpuBackend {
            driver,
            precision,
            bufs: Default::default(),
            master: None,
            inputs: None,
            host_inputs: Vec::new(),
            input_order_current: false,
            input_order: None,
            targets: None,
            norm_partials,
        })
    }

    /// The element type of `buf` at this precision.
    fn dtype(&self, buf: Buf) -> DType {
        match (buf, self.precision) {
            (Buf::AdamM | Buf::AdamV | Buf::Stats, _) | (_, Precision::Fp32) => DType::F32,
            (Buf::Params | Buf::Grads | Buf::Acts | Buf::GradActs, Precision::Bf16) => DType::Bf16,
        }
    }

    /// The device address range of `tensor`.
    fn dev(&self, tensor: Tensor) -> DeviceSlice {
        match &self.bufs[tensor.buf.index()] {
            Some(buf) => buf.at(tensor.offset, tensor.len),
            None => panic!("{tensor:?} in a buffer that was never reserved"),
        }
    }

    /// The master weights of the parameter tensor `params`, when there are any.
    fn master(&self, params: Tensor) -> Option<DeviceSlice> {
        debug_assert_eq!(params.buf, Buf::Params);
        self.master.as_ref().map(|m| m.at(params.offset, params.len))
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

    fn precision(&self) -> Precision {
        self.precision
    }

    fn workspace_bytes(&self) -> usize {
        self.driver.workspace_bytes()
    }

    fn reserve(&mut self, buf: Buf, len: usize) -> Result<()> {
        let dtype = self.dtype(buf);
        let slot = &mut self.bufs[buf.index()];
        if slot.as_ref().is_none_or(|b| b.len() < len) {
            // Free the old allocation first so the device never holds both.
            *slot = None;
            let fresh = DeviceBuffer::typed(&self.driver, len, dtype)?;
            fresh.zero()?;
            *slot = Some(fresh);
        }
        Ok(())
    }

    fn load(&mut self, buf: Buf, data: Vec<f32>) -> Result<()> {
        let dtype = self.dtype(buf);
        if buf == Buf::Params && dtype != DType::F32 {
            self.master = None;
            self.master = Some(DeviceBuffer::from_host(&self.driver, &data)?);
        }
        let slot = &mut self.bufs[buf.index()];
        *slot = None;
        *slot = Some(DeviceBuffer::from_host_as(&self.driver, &data, dtype)?);
        Ok(())
    }

    fn read(&self, src: Tensor, dst: &mut [f32]) -> Result<()> {
        let slice = match src.buf {
            Buf::Params => self.master(src).unwrap_or_else(|| self.dev(src)),
            _ => self.dev(src),
        };
        slice.read_into(&*self.driver, dst)
    }

    fn zero(&mut self, dst: Tensor) -> Result<()> {
        self.dev(dst).zero(&*self.driver)
    }

    fn set_tokens(&mut self, inputs: &[u32], targets: Option<&[u32]>) -> Result<()> {
        Self::upload_tokens(&self.driver, &mut self.inputs, inputs)?;
        self.host_inputs.clear();
        self.host_inputs.extend_from_slice(inputs);
        self.input_order_current = false;
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
        if !self.input_order_current {
            let order = encoder::token_order(&self.host_inputs);
            Self::upload_tokens(&self.driver, &mut self.input_order, &order)?;
            self.input_order_current = true;
        }
        let inputs = Self::tokens(&self.inputs, "inputs")?;
        let order = Self::tokens(&self.input_order, "inputs")?;
        let (dwte, dwpe, dout) = (self.dev(dwte), self.dev(dwpe), self.dev(dout));
        encoder::encoder_backward(&*self.driver, dwte, dwpe, dout, inputs, order, b, t, c)
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
        // bf16 heads of whole 16-channel tiles up to 64 (every GPT-2 size): tensor cores; else the SIMT flash kernels
        // (heads up to 64, f32 or bf16); else the clear ones. attention_backward chooses the same way, though any pair
        // would do: all three compute the same out and lse.
        if self.precision == Precision::Bf16 && flash_attention_tc::supports(b, t, c, nh) {
            flash_attention_tc::flash_attention_tc_forward(&*self.driver, out, lse, qkv, b, t, c, nh)
        } else if flash_attention::supports(b, t, c, nh) {
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
        if self.precision == Precision::Bf16 && flash_attention_tc::supports(b, t, c, nh) {
            flash_attention_tc::flash_attention_tc_backward(&*self.driver, dqkv, dout, qkv, out, lse, b, t, c, nh)
        } else if flash_attention::supports(b, t, c, nh) {
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
        // The stochastic rounding's seed differs by step and by tensor, and is the same in every run.
        let seed = (hp.step as u64).wrapping_mul(0x9E37_79B9).wrapping_add(params.offset as u64) as u32;
        let d = |x| self.dev(x);
        adamw::adamw_update(&*self.driver, d(params), self.master(params), d(grads), d(m), d(v), hp, seed)
    }
}
