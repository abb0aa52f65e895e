//! GPT-2: forward pass, backward pass and AdamW update over the flat buffers of `layout`.
//!
//! The sequence of layers exists once, here, written against the `Backend` interface: the CPU reference and the
//! GPU (a real one or the emulator) run the same code. Parameters, gradients, AdamW's m and v are four buffers of
//! the same layout (llm.c's checkpoint order); activations and their gradients are two buffers laid out for the
//! current (B, T). Buffers are allocated when first needed and reused by every later step of the same or smaller
//! shape; the activation gradients only once a backward pass runs, so inference never pays for them.

use crate::backend::Backend;
use crate::backend::Precision;
use crate::config::GPT2Config;
use crate::cpu::adamw::AdamWStep;
use crate::cpu::backend::CpuBackend;
use crate::error::{Error, Result};
use crate::layout::{ActStats, ActTensors, Buf, ParamTensors, Recompute, Tensor};
use crate::rng::Rng;

/// Standard deviation of GPT-2's weight initialisation.
const INIT_STD: f32 = 0.02;

/// AdamW's hyper-parameters that stay fixed over a run; the learning rate and step change every update.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Applied to the weight matrices only (see `ParamTensors::is_matrix`).
    pub weight_decay: f32,
}

/// Bytes a training run holds, by role, so a run that cannot fit is refused before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    pub precision: Precision,
    pub parameters: usize,
    /// f32 master weights (bf16 only; fp32 parameters are their own).
    pub master: usize,
    pub gradients: usize,
    /// AdamW's m and v.
    pub optimizer: usize,
    /// Activations for one (B, T) and their gradients (one block's, plus the residual stream's), and the f32
    /// statistics.
    pub activations: usize,
    /// The backend's own scratch memory (cuBLASLt's workspace on a GPU; see `with_workspace`).
    pub workspace: usize,
}

impl MemoryPlan {
    /// The fp32 plan for training `config` on batches of (B, T) with `recompute`.
    pub fn new(config: &GPT2Config, b: usize, t: usize, recompute: Recompute) -> Self {
        MemoryPlan::in_precision(config, b, t, recompute, Precision::Fp32)
    }

    /// The plan for training `config` on batches of (B, T) with `recompute`, storing parameters, activations and
    /// gradients in `precision`. B*T must fit in an i32 and the config must be valid (both are checked before this
    /// is called), which keeps every product below here inside a u64.
    pub fn in_precision(config: &GPT2Config, b: usize, t: usize, recompute: Recompute, precision: Precision) -> Self {
        let (x, float) = (precision.bytes(), std::mem::size_of::<f32>());
        let n = ParamTensors::sizes(config).total();
        MemoryPlan {
            precision,
            parameters: n * x,
            master: if precision == Precision::Fp32 { 0 } else { n * float },
            gradients: n * x,
            optimizer: 2 * n * float,
            activations: (ActTensors::sizes(config, b, t, recompute).total()
                + ActTensors::grad_sizes(config, b, t).total())
                * x
                + ActStats::sizes(config, b, t).total() * float,
            workspace: 0,
        }
    }

    /// The plan with the backend's scratch memory added (`Backend::workspace_bytes`).
    pub fn with_workspace(self, workspace: usize) -> Self {
        MemoryPlan { workspace, ..self }
    }

    pub fn total(&self) -> usize {
        self.parameters + self.master + self.gradients + self.optimizer + self.activations + self.workspace
    }
}

impl std::fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
        write!(f, "{:.0} MiB {} (parameters {:.0}", mib(self.total()), self.precision.name(), mib(self.parameters))?;
        if self.master > 0 {
            write!(f, ", master weights {:.0}", mib(self.master))?;
        }
        write!(
            f,
            ", gradients {:.0}, AdamW state {:.0}, activations {:.0}",
            mib(self.gradients),
            mib(self.optimizer),
            mib(self.activations)
        )?;
        if self.workspace > 0 {
            write!(f, ", workspace {:.0}", mib(self.workspace))?;
        }
        write!(f, ")")
    }
}

/// Mean, standard deviation and largest magnitude of a tensor: enough to see activations or gradients vanish,
/// explode or drift, layer by layer.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TensorStats {
    pub mean: f32,
    pub std: f32,
    pub max_abs: f32,
}

impl TensorStats {
    /// The statistics of `xs`, summed in f64.
    pub fn of(xs: &[f32]) -> Self {
        let n = xs.len().max(1) as f64;
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let max_abs = xs.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
        TensorStats { mean: mean as f32, std: var.sqrt() as f32, max_abs }
    }
}

/// One transformer block's statistics after a training pass, by tensor name.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LayerStats {
    pub layer: usize,
    /// Activations: LayerNorm output, queries/keys/values, attention output, GELU output, the block's output.
    pub activations: std::collections::BTreeMap<&'static str, TensorStats>,
    /// Gradients of the four weight matrices, and of the block's output (the residual stream).
    pub gradients: std::collections::BTreeMap<&'static str, TensorStats>,
}

/// A GPT-2 model with everything training needs, on one backend.
pub struct GPT2 {
    pub config: GPT2Config,
    param_sizes: ParamTensors<usize>,
    backend: Box<dyn Backend>,
    /// (B, T) of the last forward pass, which decides the activation layout.
    batch: (usize, usize),
    /// Whether AdamW's m and v exist on the backend (they are created, zeroed, by the first update).
    have_optimizer_state: bool,
    /// Host copy of the per-position losses of the last pass with targets.
    losses: Vec<f32>,
    /// Whether the logits buffer holds dlogits of the last forward pass (set by `forward_backward`).
    have_dlogits: bool,
    /// What the backward pass recomputes rather than keeps (see `Recompute`).
    recompute: Recompute,
}

impl GPT2 {
    /// A model on the CPU with the given parameters (llm.c's order, `config.num_parameters()` of them).
    pub fn new(config: GPT2Config, params: Vec<f32>) -> Result<Self> {
        GPT2::with_backend(config, params, Box::new(CpuBackend::new()))
    }

    /// A model on `backend` with the given parameters (llm.c's order).
    pub fn with_backend(config: GPT2Config, params: Vec<f32>, mut backend: Box<dyn Backend>) -> Result<Self> {
        config.validate("model config")?;
        let param_sizes = ParamTensors::sizes(&config);
        if params.len() != param_sizes.total() {
            return Err(Error::config(
                "parameters",
                format!("the config needs {} parameters, {} were given", param_sizes.total(), params.len()),
            ));
        }
        let n = params.len();
        backend.load(Buf::Params, params)?;
        backend.reserve(Buf::Grads, n)?;
        backend.zero(Tensor { buf: Buf::Grads, offset: 0, len: n })?;
        Ok(GPT2 {
            config,
            param_sizes,
            backend,
            batch: (0, 0),
            have_optimizer_state: false,
            losses: Vec::new(),
            have_dlogits: false,
            recompute: Recompute::Nothing,
        })
    }

    /// GPT-2's random initialisation: weights N(0, 0.02), the two projections that write into the residual stream
    /// (attprojw, fcprojw) scaled by 1/sqrt(2 L), biases 0, LayerNorm weights 1; padding rows of wte stay 0.
    pub fn init_params(config: &GPT2Config, seed: u64) -> Result<Vec<f32>> {
        config.validate("model config")?;
        let sizes = ParamTensors::sizes(config);
        let mut params = vec![0.0f32; sizes.total()];
        let mut rng = Rng::new(seed);
        let residual_std = INIT_STD / (2.0 * config.num_layers as f32).sqrt();
        let p = sizes.split_mut(&mut params);
        rng.fill_normal(&mut p.wte[..config.vocab_size * config.channels], INIT_STD);
        rng.fill_normal(p.wpe, INIT_STD);
        rng.fill_normal(p.qkvw, INIT_STD);
        rng.fill_normal(p.attprojw, residual_std);
        rng.fill_normal(p.fcw, INIT_STD);
        rng.fill_normal(p.fcprojw, residual_std);
        for ones in [p.ln1w, p.ln2w, p.lnfw] {
            ones.fill(1.0);
        }
        Ok(params)
    }

    /// A randomly initialised model on the CPU (see `init_params`).
    pub fn random(config: GPT2Config, seed: u64) -> Result<Self> {
        let params = GPT2::init_params(&config, seed)?;
        GPT2::new(config, params)
    }

    /// Recompute `what` in the backward pass instead of keeping it (from the next pass on; results are bitwise the
    /// same, the activation memory smaller).
    pub fn set_recompute(&mut self, what: Recompute) {
        self.recompute = what;
    }

    /// The backend's name, e.g. "cpu (2 threads, AVX-512)".
    pub fn backend_name(&self) -> String {
        self.backend.name()
    }

    pub fn num_parameters(&self) -> usize {
        self.param_sizes.total()
    }

    /// A whole parameter-layout buffer copied to the host.
    fn read_buf(&self, buf: Buf) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; self.num_parameters()];
        self.backend.read(Tensor { buf, offset: 0, len: out.len() }, &mut out)?;
        Ok(out)
    }

    /// The parameters, llm.c's checkpoint order, copied to the host.
    pub fn params(&self) -> Result<Vec<f32>> {
        self.read_buf(Buf::Params)
    }

    /// The gradients (valid after `forward_backward`), same order, copied to the host.
    pub fn grads(&self) -> Result<Vec<f32>> {
        self.read_buf(Buf::Grads)
    }

    /// AdamW's first and second moments, copied to the host; None before the first update.
    pub fn optimizer_state(&self) -> Result<Option<(Vec<f32>, Vec<f32>)>> {
        if !self.have_optimizer_state {
            return Ok(None);
        }
        Ok(Some((self.read_buf(Buf::AdamM)?, self.read_buf(Buf::AdamV)?)))
    }

    /// Replaces AdamW's moments (from a training checkpoint), each `num_parameters()` long.
    pub fn set_optimizer_state(&mut self, m: Vec<f32>, v: Vec<f32>) -> Result<()> {
        let n = self.num_parameters();
        if m.len() != n || v.len() != n {
            return Err(Error::config(
                "optimizer state",
                format!("the model has {n} parameters, the state holds {} and {} moments", m.len(), v.len()),
            ));
        }
        self.backend.load(Buf::AdamM, m)?;
        self.backend.load(Buf::AdamV, v)?;
        self.have_optimizer_state = true;
        Ok(())
    }

    /// The activation handles for the current (B, T).
    fn acts(&self, buf: Buf) -> ActTensors<Tensor> {
        let (b, t) = self.batch;
        ActTensors::sizes(&self.config, b, t, self.recompute).tensors(buf)
    }

    /// The activation-statistics handles for the current (B, T).
    fn stats(&self) -> ActStats<Tensor> {
        let (b, t) = self.batch;
        ActStats::sizes(&self.config, b, t).tensors(Buf::Stats)
    }

    /// The activation-gradient handles for the current (B, T) (see `ActTensors::grad_sizes`).
    fn grad_acts(&self) -> ActTensors<Tensor> {
        let (b, t) = self.batch;
        ActTensors::grad_sizes(&self.config, b, t).tensors(Buf::GradActs)
    }

    /// The (B, T, Vp) logits of the last `forward` (not after `forward_backward`, which overwrites them).
    pub fn logits(&self) -> Result<Vec<f32>> {
        let logits = self.acts(Buf::Acts).logits;
        let mut out = vec![0.0f32; logits.len];
        self.backend.read(logits, &mut out)?;
        Ok(out)
    }

    /// The first `out.len()` (at most Vp) logits of position `row` (b * T + t) of the last `forward`: what
    /// sampling needs, without copying the whole (B, T, Vp) tensor off a GPU.
    pub fn read_logits_row(&self, row: usize, out: &mut [f32]) -> Result<()> {
        let vp = self.config.padded_vocab_size;
        assert!(out.len() <= vp, "{} logits of a row of {vp}", out.len());
        let logits = self.acts(Buf::Acts).logits;
        let cell = Tensor { offset: logits.offset + row * vp, len: out.len(), ..logits };
        assert!(cell.offset + cell.len <= logits.offset + logits.len, "row {row} outside the logits");
        self.backend.read(cell, out)
    }

    /// Per-block statistics of the activations and gradients of the last `forward_backward` (copied off the
    /// device tensor by tensor, so this costs a read of each; for inspection, not for every step of a fast run).
    pub fn layer_stats(&self) -> Result<Vec<LayerStats>> {
        let (b, t) = self.batch;
        let c = self.config.channels;
        let (btc, cc) = (b * t * c, c * c);
        let (a, d) = (self.acts(Buf::Acts), self.grad_acts());
        let g = self.param_sizes.tensors(Buf::Grads);
        let mut scratch = Vec::new();
        let mut stats = |tensor: Tensor| -> Result<TensorStats> {
            scratch.resize(tensor.len, 0.0);
            self.backend.read(tensor, &mut scratch)?;
            Ok(TensorStats::of(&scratch))
        };
        (0..self.config.num_layers)
            .map(|l| {
                // Recomputed tensors hold one layer at a time: there is nothing per layer to report of them.
                let activations = [
                    (!self.recompute.layernorm()).then(|| ("ln1", a.ln1.layer(l, btc))),
                    Some(("qkv", a.qkv.layer(l, 3 * btc))),
                    Some(("atty", a.atty.layer(l, btc))),
                    (!self.recompute.gelu()).then(|| ("fch_gelu", a.fch_gelu.layer(l, 4 * btc))),
                    Some(("residual3", a.residual3.layer(l, btc))),
                ];
                let gradients = [
                    ("qkvw", g.qkvw.layer(l, 3 * cc)),
                    ("attprojw", g.attprojw.layer(l, cc)),
                    ("fcw", g.fcw.layer(l, 4 * cc)),
                    ("fcprojw", g.fcprojw.layer(l, 4 * cc)),
                    ("residual3", d.residual3.layer(l, btc)),
                ];
                let mut layer = LayerStats { layer: l, activations: Default::default(), gradients: Default::default() };
                for (name, tensor) in activations.into_iter().flatten() {
                    layer.activations.insert(name, stats(tensor)?);
                }
                for (name, tensor) in gradients {
                    layer.gradients.insert(name, stats(tensor)?);
                }
                Ok(layer)
            })
            .collect()
    }

    /// The attention probabilities (T, T) of head `head` of layer `layer` for sequence `b` of the last forward
    /// pass: row i is query position i's softmax over key positions 0..=i (zero above the diagonal). Recomputed
    /// from the saved q, k and log-sum-exp, which is all attention keeps.
    pub fn attention_map(&self, b: usize, layer: usize, head: usize) -> Result<Vec<f32>> {
        let (batch, t) = self.batch;
        let cfg = &self.config;
        let (c, nh) = (cfg.channels, cfg.num_heads);
        let hs = c / nh;
        for (name, value, limit) in [("sequence", b, batch), ("layer", layer, cfg.num_layers), ("head", head, nh)] {
            if value >= limit {
                return Err(Error::config(name, format!("expected 0..{limit}, found {value}")));
            }
        }
        let (a, st) = (self.acts(Buf::Acts), self.stats());
        let mut qkv = vec![0.0f32; t * 3 * c];
        let qkv_layer = a.qkv.layer(layer, batch * t * 3 * c);
        self.backend
            .read(Tensor { offset: qkv_layer.offset + b * t * 3 * c, len: t * 3 * c, ..qkv_layer }, &mut qkv)?;
        let mut lse = vec![0.0f32; t * nh];
        let lse_layer = st.att_lse.layer(layer, batch * t * nh);
        self.backend.read(Tensor { offset: lse_layer.offset + b * t * nh, len: t * nh, ..lse_layer }, &mut lse)?;
        let scale = 1.0 / (hs as f32).sqrt();
        let mut map = vec![0.0f32; t * t];
        for i in 0..t {
            let q = &qkv[i * 3 * c + head * hs..][..hs];
            for j in 0..=i {
                let k = &qkv[j * 3 * c + c + head * hs..][..hs];
                let score = q.iter().zip(k).map(|(x, y)| x * y).sum::<f32>() * scale;
                map[i * t + j] = (score - lse[i * nh + head]).exp();
            }
        }
        Ok(map)
    }

    /// Checks the shapes and token ids of one batch before any layer touches them.
    fn check_batch(&self, inputs: &[u32], targets: Option<&[u32]>, b: usize, t: usize) -> Result<()> {
        let cfg = &self.config;
        if b == 0 || t == 0 {
            return Err(Error::config("batch", format!("B and T must be positive, found B={b} T={t}")));
        }
        if t > cfg.max_seq_len {
            return Err(Error::config(
                "--seq-len",
                format!("T={t} is longer than the model's maximum sequence length {}", cfg.max_seq_len),
            ));
        }
        for (name, tokens) in [("inputs", Some(inputs)), ("targets", targets)] {
            let Some(tokens) = tokens else { continue };
            if tokens.len() != b * t {
                return Err(Error::config(name, format!("expected B*T = {} tokens, found {}", b * t, tokens.len())));
            }
            if let Some(&bad) = tokens.iter().find(|&&x| x as usize >= cfg.vocab_size) {
                return Err(Error::config(
                    name,
                    format!("token id {bad} is outside the model's vocabulary of {}", cfg.vocab_size),
                ));
            }
        }
        Ok(())
    }

    /// Starts a pass over `inputs` (B, T): checks the batch, sizes the activation buffers (growing them only when
    /// a larger shape arrives, the gradients' only when `backward` will run) and hands the tokens to the backend.
    fn begin_pass(
        &mut self,
        inputs: &[u32],
        targets: Option<&[u32]>,
        b: usize,
        t: usize,
        backward: bool,
    ) -> Result<()> {
        self.check_batch(inputs, targets, b, t)?;
        let total = ActTensors::sizes(&self.config, b, t, self.recompute).total();
        self.backend.reserve(Buf::Acts, total)?;
        self.backend.reserve(Buf::Stats, ActStats::sizes(&self.config, b, t).total())?;
        if backward {
            self.backend.reserve(Buf::GradActs, ActTensors::grad_sizes(&self.config, b, t).total())?;
        }
        self.backend.set_tokens(inputs, targets)?;
        self.batch = (b, t);
        self.have_dlogits = false;
        Ok(())
    }

    /// Runs the model on `inputs` (B, T). With `targets`, returns the mean cross-entropy loss; the logits
    /// stay readable through `logits()`.
    pub fn forward(&mut self, inputs: &[u32], targets: Option<&[u32]>, b: usize, t: usize) -> Result<Option<f32>> {
        self.begin_pass(inputs, targets, b, t, false)?;
        self.run_layers()?;
        match targets {
            Some(_) => Ok(Some(self.classify(false)?)),
            None => Ok(None),
        }
    }

    /// One training pass: forward with targets, then backward, ACCUMULATING into the gradients (call
    /// `zero_grad` first unless accumulating over several batches). Returns the mean loss of this batch.
    pub fn forward_backward(&mut self, inputs: &[u32], targets: &[u32], b: usize, t: usize) -> Result<f32> {
        self.begin_pass(inputs, Some(targets), b, t, true)?;
        self.run_layers()?;
        let loss = self.classify(true)?;
        self.have_dlogits = true;
        self.backward()?;
        Ok(loss)
    }

    /// Every layer from the token embedding to the logits.
    fn run_layers(&mut self) -> Result<()> {
        let cfg = self.config;
        let (b, t) = self.batch;
        let (c, l_count, nh, vp) = (cfg.channels, cfg.num_layers, cfg.num_heads, cfg.padded_vocab_size);
        let (bt, btc) = (b * t, b * t * c);
        let p = self.param_sizes.tensors(Buf::Params);
        let (a, st) = (self.acts(Buf::Acts), self.stats());
        let be = &mut *self.backend;

        be.encoder_forward(a.encoded, p.wte, p.wpe, b, t, c)?;
        let recompute = self.recompute;
        for l in 0..l_count {
            // Recomputed tensors live in a one-layer buffer that every layer reuses.
            let ln_l = if recompute.layernorm() { 0 } else { l };
            let gelu_l = if recompute.gelu() { 0 } else { l };
            // The block's input: the embeddings for the first block, the previous block's output after that.
            let residual = if l == 0 { a.encoded } else { a.residual3.layer(l - 1, btc) };
            let ln1 = a.ln1.layer(ln_l, btc);
            let qkv = a.qkv.layer(l, 3 * btc);
            let atty = a.atty.layer(l, btc);
            let attproj = a.attproj.layer(l, btc);
            let residual2 = a.residual2.layer(l, btc);
            let ln2 = a.ln2.layer(ln_l, btc);
            let fch = a.fch.layer(l, 4 * btc);
            let fch_gelu = a.fch_gelu.layer(gelu_l, 4 * btc);
            let fcproj = a.fcproj.layer(l, btc);
            let (ln1_mean, ln1_rstd) = (st.ln1_mean.layer(l, bt), st.ln1_rstd.layer(l, bt));
            let (ln2_mean, ln2_rstd) = (st.ln2_mean.layer(l, bt), st.ln2_rstd.layer(l, bt));

            be.layernorm_forward(ln1, ln1_mean, ln1_rstd, residual, p.ln1w.layer(l, c), p.ln1b.layer(l, c), b, t, c)?;
            be.matmul_forward(qkv, ln1, p.qkvw.layer(l, 3 * c * c), Some(p.qkvb.layer(l, 3 * c)), b, t, c, 3 * c)?;
            be.attention_forward(atty, st.att_lse.layer(l, bt * nh), qkv, b, t, c, nh)?;
            be.matmul_forward(attproj, atty, p.attprojw.layer(l, c * c), Some(p.attprojb.layer(l, c)), b, t, c, c)?;
            // residual2 = residual + attproj and its LayerNorm in one pass over each row.
            let (ln2w, ln2b) = (p.ln2w.layer(l, c), p.ln2b.layer(l, c));
            be.fused_residual_layernorm_forward(
                residual2, ln2, ln2_mean, ln2_rstd, residual, attproj, ln2w, ln2b, b, t, c,
            )?;
            be.matmul_forward(fch, ln2, p.fcw.layer(l, 4 * c * c), Some(p.fcb.layer(l, 4 * c)), b, t, c, 4 * c)?;
            be.gelu_forward(fch_gelu, fch, 4 * btc)?;
            let (fcprojw, fcprojb) = (p.fcprojw.layer(l, 4 * c * c), p.fcprojb.layer(l, c));
            be.matmul_forward(fcproj, fch_gelu, fcprojw, Some(fcprojb), b, t, 4 * c, c)?;
            be.residual_forward(a.residual3.layer(l, btc), residual2, fcproj, btc)?;
        }
        let last_residual = a.residual3.layer(l_count - 1, btc);
        be.layernorm_forward(a.lnf, st.lnf_mean, st.lnf_rstd, last_residual, p.lnfw, p.lnfb, b, t, c)?;
        // The classifier shares its weights with the token embedding (weight tying): logits = lnf · wteᵀ.
        be.matmul_forward(a.logits, a.lnf, p.wte, None, b, t, c, vp)
    }

    /// Softmax + cross-entropy over the logits of the last forward pass; with `with_grad`, also overwrites the
    /// logits with d(mean loss)/d(logits). Returns the mean loss.
    fn classify(&mut self, with_grad: bool) -> Result<f32> {
        let cfg = self.config;
        let (b, t) = self.batch;
        let (a, st) = (self.acts(Buf::Acts), self.stats());
        let dloss = with_grad.then_some(1.0 / (b * t) as f32);
        self.backend.fused_classifier(a.logits, st.losses, b, t, cfg.vocab_size, cfg.padded_vocab_size, dloss)?;
        self.losses.resize(b * t, 0.0);
        self.backend.read(st.losses, &mut self.losses)?;
        // Summed in f64 so the mean does not depend on B*T's size.
        Ok((self.losses.iter().map(|&x| x as f64).sum::<f64>() / (b * t) as f64) as f32)
    }

    /// Every layer's backward pass, last to first. Expects dlogits in the logits buffer.
    fn backward(&mut self) -> Result<()> {
        debug_assert!(self.have_dlogits, "backward needs dlogits from forward_backward");
        let cfg = self.config;
        let (b, t) = self.batch;
        let (c, l_count, nh, vp) = (cfg.channels, cfg.num_layers, cfg.num_heads, cfg.padded_vocab_size);
        let (bt, btc) = (b * t, b * t * c);
        let p = self.param_sizes.tensors(Buf::Params);
        let g = self.param_sizes.tensors(Buf::Grads);
        let (a, st) = (self.acts(Buf::Acts), self.stats());
        let d = self.grad_acts();
        let be = &mut *self.backend;
        // Activation gradients are overwritten by their first writer (matmul's, GELU's and the residual's backward)
        // and accumulated into by a second (LayerNorm's backward adds onto the residual stream's); only the last
        // block's output, whose one writer is the final LayerNorm, and each block's dqkv (attention accumulates)
        // start from zero. Zeroing all of them, as before, cost 2-4% of a CPU step in memory traffic.
        be.matmul_backward(d.lnf, g.wte, None, a.logits, a.lnf, p.wte, b, t, c, vp)?;
        let last_residual = a.residual3.layer(l_count - 1, btc);
        let dlast_residual = d.residual3.layer(l_count - 1, btc);
        be.zero(dlast_residual)?;
        be.layernorm_backward(
            dlast_residual,
            g.lnfw,
            g.lnfb,
            d.lnf,
            last_residual,
            p.lnfw,
            st.lnf_mean,
            st.lnf_rstd,
            b,
            t,
            c,
        )?;

        let recompute = self.recompute;
        for l in (0..l_count).rev() {
            let ln_l = if recompute.layernorm() { 0 } else { l };
            let gelu_l = if recompute.gelu() { 0 } else { l };
            // This layer's parameters, their gradients, its saved activations, and their gradients.
            let (ln1w, ln2w) = (p.ln1w.layer(l, c), p.ln2w.layer(l, c));
            let qkvw = p.qkvw.layer(l, 3 * c * c);
            let attprojw = p.attprojw.layer(l, c * c);
            let fcw = p.fcw.layer(l, 4 * c * c);
            let fcprojw = p.fcprojw.layer(l, 4 * c * c);
            let (dln1w, dln1b) = (g.ln1w.layer(l, c), g.ln1b.layer(l, c));
            let (dqkvw, dqkvb) = (g.qkvw.layer(l, 3 * c * c), g.qkvb.layer(l, 3 * c));
            let (dattprojw, dattprojb) = (g.attprojw.layer(l, c * c), g.attprojb.layer(l, c));
            let (dln2w, dln2b) = (g.ln2w.layer(l, c), g.ln2b.layer(l, c));
            let (dfcw, dfcb) = (g.fcw.layer(l, 4 * c * c), g.fcb.layer(l, 4 * c));
            let (dfcprojw, dfcprojb) = (g.fcprojw.layer(l, 4 * c * c), g.fcprojb.layer(l, c));

            let residual = if l == 0 { a.encoded } else { a.residual3.layer(l - 1, btc) };
            let ln1 = a.ln1.layer(ln_l, btc);
            let (ln1_mean, ln1_rstd) = (st.ln1_mean.layer(l, bt), st.ln1_rstd.layer(l, bt));
            let qkv = a.qkv.layer(l, 3 * btc);
            let atty = a.atty.layer(l, btc);
            let lse = st.att_lse.layer(l, bt * nh);
            let residual2 = a.residual2.layer(l, btc);
            let ln2 = a.ln2.layer(ln_l, btc);
            let (ln2_mean, ln2_rstd) = (st.ln2_mean.layer(l, bt), st.ln2_rstd.layer(l, bt));
            let fch = a.fch.layer(l, 4 * btc);
            let fch_gelu = a.fch_gelu.layer(gelu_l, 4 * btc);

            let dresidual3 = d.residual3.layer(l, btc);
            // The block's input gradient: of the embeddings for the first block, of the previous block's output after.
            let dresidual = if l == 0 { d.encoded } else { d.residual3.layer(l - 1, btc) };
            let dresidual2 = d.residual2.layer(0, btc);
            let dfcproj = d.fcproj.layer(0, btc);
            let dfch_gelu = d.fch_gelu.layer(0, 4 * btc);
            let dfch = d.fch.layer(0, 4 * btc);
            let dln2 = d.ln2.layer(0, btc);
            let dattproj = d.attproj.layer(0, btc);
            let datty = d.atty.layer(0, btc);
            let dqkv = d.qkv.layer(0, 3 * btc);
            let dln1 = d.ln1.layer(0, btc);

            // The forward pass in reverse: MLP, then attention, each ending in its residual branch. A recomputed
            // input is rebuilt just before the matmul whose weight gradient needs it (bitwise as in forward).
            be.residual_backward(dresidual2, dfcproj, dresidual3, btc)?;
            if recompute.gelu() {
                be.gelu_forward(fch_gelu, fch, 4 * btc)?;
            }
            be.matmul_backward(dfch_gelu, dfcprojw, Some(dfcprojb), dfcproj, fch_gelu, fcprojw, b, t, 4 * c, c)?;
            be.gelu_backward(dfch, fch, dfch_gelu, 4 * btc)?;
            if recompute.layernorm() {
                let ln2b = p.ln2b.layer(l, c);
                be.layernorm_forward(ln2, ln2_mean, ln2_rstd, residual2, ln2w, ln2b, b, t, c)?;
            }
            be.matmul_backward(dln2, dfcw, Some(dfcb), dfch, ln2, fcw, b, t, c, 4 * c)?;
            be.layernorm_backward(dresidual2, dln2w, dln2b, dln2, residual2, ln2w, ln2_mean, ln2_rstd, b, t, c)?;
            be.residual_backward(dresidual, dattproj, dresidual2, btc)?;
            be.matmul_backward(datty, dattprojw, Some(dattprojb), dattproj, atty, attprojw, b, t, c, c)?;
            be.zero(dqkv)?;
            be.attention_backward(dqkv, datty, qkv, atty, lse, b, t, c, nh)?;
            if recompute.layernorm() {
                let ln1b = p.ln1b.layer(l, c);
                be.layernorm_forward(ln1, ln1_mean, ln1_rstd, residual, ln1w, ln1b, b, t, c)?;
            }
            be.matmul_backward(dln1, dqkvw, Some(dqkvb), dqkv, ln1, qkvw, b, t, c, 3 * c)?;
            be.layernorm_backward(dresidual, dln1w, dln1b, dln1, residual, ln1w, ln1_mean, ln1_rstd, b, t, c)?;
        }
        be.encoder_backward(g.wte, g.wpe, d.encoded, b, t, c)
    }

    /// The whole gradient buffer as one tensor.
    fn all_grads(&self) -> Tensor {
        Tensor { buf: Buf::Grads, offset: 0, len: self.num_parameters() }
    }

    /// Sets every parameter gradient to zero.
    pub fn zero_grad(&mut self) -> Result<()> {
        let grads = self.all_grads();
        self.backend.zero(grads)
    }

    /// sqrt of the sum of all squared gradients.
    pub fn grad_norm(&mut self) -> Result<f32> {
        let grads = self.all_grads();
        Ok(self.backend.global_norm_squared(grads)?.sqrt() as f32)
    }

    /// One AdamW update (`step` counts from 1) with gradients multiplied by `grad_scale` (clipping).
    /// Weight decay applies to the weight matrices only.
    pub fn update(&mut self, adamw: &AdamWConfig, lr: f32, grad_scale: f32, step: u32) -> Result<()> {
        let n = self.num_parameters();
        if !self.have_optimizer_state {
            // A fresh buffer reads as zero: AdamW's moments start there.
            self.backend.reserve(Buf::AdamM, n)?;
            self.backend.reserve(Buf::AdamV, n)?;
            self.have_optimizer_state = true;
        }
        let [params, grads, m, v] =
            [Buf::Params, Buf::Grads, Buf::AdamM, Buf::AdamV].map(|buf| self.param_sizes.tensors(buf));
        let per_tensor = params.iter().zip(grads.iter()).zip(m.iter()).zip(v.iter());
        for (i, (((&p, &g), &m), &v)) in per_tensor.enumerate() {
            let weight_decay = if ParamTensors::<usize>::is_matrix(i) { adamw.weight_decay } else { 0.0 };
            let hp = AdamWStep {
                lr,
                beta1: adamw.beta1,
                beta2: adamw.beta2,
                eps: adamw.eps,
                weight_decay,
                grad_scale,
                step,
            };
            self.backend.adamw_update(p, g, m, v, &hp)?;
        }
        Ok(())
    }
}
