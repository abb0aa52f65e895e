//! GPT-2: forward pass, backward pass and AdamW update over the flat buffers of `layout`.
//!
//! The sequence of layers exists once, here. Parameters, gradients, AdamW's m and v are four buffers of the same
//! layout (llm.c's checkpoint order); activations and their gradients are two buffers laid out for the current
//! (B, T). Buffers are allocated when first needed and reused by every later step of the same or smaller shape.

use crate::config::GPT2Config;
use crate::cpu::adamw::{adamw_update, AdamWStep};
use crate::cpu::attention::{attention_backward, attention_forward};
use crate::cpu::classifier::fused_classifier;
use crate::cpu::encoder::{encoder_backward, encoder_forward};
use crate::cpu::gelu::{gelu_backward, gelu_forward};
use crate::cpu::global_norm::global_norm_squared;
use crate::cpu::layernorm::{layernorm_backward, layernorm_forward};
use crate::cpu::matmul::{matmul_backward, matmul_forward};
use crate::cpu::residual::{residual_backward, residual_forward};
use crate::error::{Error, Result};
use crate::layout::{layer, layer_mut, ActTensors, ParamTensors};
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
    pub parameters: usize,
    pub gradients: usize,
    /// AdamW's m and v.
    pub optimizer: usize,
    /// Activations and their gradients for one (B, T).
    pub activations: usize,
}

impl MemoryPlan {
    /// The fp32 plan for training `config` on batches of (B, T). B*T must fit in an i32 and the config must be
    /// valid (both are checked before this is called), which keeps every product below here inside a u64.
    pub fn new(config: &GPT2Config, b: usize, t: usize) -> Self {
        let float = std::mem::size_of::<f32>();
        let params = ParamTensors::sizes(config).total() * float;
        MemoryPlan {
            parameters: params,
            gradients: params,
            optimizer: 2 * params,
            activations: 2 * ActTensors::sizes(config, b, t).total() * float,
        }
    }

    pub fn total(&self) -> usize {
        self.parameters + self.gradients + self.optimizer + self.activations
    }
}

impl std::fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |bytes: usize| bytes as f64 / (1024.0 * 1024.0);
        write!(
            f,
            "{:.0} MiB (parameters {:.0}, gradients {:.0}, AdamW state {:.0}, activations {:.0})",
            mib(self.total()),
            mib(self.parameters),
            mib(self.gradients),
            mib(self.optimizer),
            mib(self.activations)
        )
    }
}

/// A GPT-2 model with everything training needs.
pub struct GPT2 {
    pub config: GPT2Config,
    param_sizes: ParamTensors<usize>,
    /// All parameters, llm.c's checkpoint order.
    pub params: Vec<f32>,
    grads: Vec<f32>,
    /// AdamW first and second moments; empty until the first update.
    m: Vec<f32>,
    v: Vec<f32>,
    acts: Vec<f32>,
    grad_acts: Vec<f32>,
    /// (B, T) of the last forward pass, which decides the activation layout.
    batch: (usize, usize),
    inputs: Vec<u32>,
    targets: Vec<u32>,
    /// Whether the logits buffer holds dlogits of the last forward pass (set by `forward_backward`).
    have_dlogits: bool,
}

impl GPT2 {
    /// A model with the given parameters (llm.c's order, `config.num_parameters()` of them).
    pub fn new(config: GPT2Config, params: Vec<f32>) -> Result<Self> {
        config.validate("model config")?;
        let param_sizes = ParamTensors::sizes(&config);
        if params.len() != param_sizes.total() {
            return Err(Error::config(
                "parameters",
                format!("the config needs {} parameters, {} were given", param_sizes.total(), params.len()),
            ));
        }
        Ok(GPT2 {
            config,
            grads: vec![0.0; params.len()],
            param_sizes,
            params,
            m: Vec::new(),
            v: Vec::new(),
            acts: Vec::new(),
            grad_acts: Vec::new(),
            batch: (0, 0),
            inputs: Vec::new(),
            targets: Vec::new(),
            have_dlogits: false,
        })
    }

    /// GPT-2's random initialisation: weights N(0, 0.02), the two projections that write into the residual stream
    /// (attprojw, fcprojw) scaled by 1/sqrt(2 L), biases 0, LayerNorm weights 1; padding rows of wte stay 0.
    pub fn random(config: GPT2Config, seed: u64) -> Result<Self> {
        config.validate("model config")?;
        let sizes = ParamTensors::sizes(&config);
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
        GPT2::new(config, params)
    }

    pub fn num_parameters(&self) -> usize {
        self.params.len()
    }

    /// Views of the parameters by name.
    pub fn param_tensors(&self) -> ParamTensors<&[f32]> {
        self.param_sizes.split(&self.params)
    }

    /// Views of the gradients by name (valid after `forward_backward`).
    pub fn grad_tensors(&self) -> ParamTensors<&[f32]> {
        self.param_sizes.split(&self.grads)
    }

    /// The (B, T, Vp) logits of the last `forward` (not after `forward_backward`, which overwrites them).
    pub fn logits(&self) -> &[f32] {
        let (b, t) = self.batch;
        let sizes = ActTensors::sizes(&self.config, b, t);
        sizes.split(&self.acts).logits
    }

    /// AdamW's first and second moments (empty before the first update).
    pub fn optimizer_state(&self) -> (&[f32], &[f32]) {
        (&self.m, &self.v)
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

    /// Starts a forward pass over `inputs` (B, T): sizes the activation buffers (growing them only when a larger
    /// shape arrives) and keeps the inputs for the encoder's backward pass.
    fn begin_pass(&mut self, inputs: &[u32], b: usize, t: usize) {
        self.inputs.clear();
        self.inputs.extend_from_slice(inputs);
        let total = ActTensors::sizes(&self.config, b, t).total();
        if self.acts.len() < total {
            self.acts.resize(total, 0.0);
            self.grad_acts.resize(total, 0.0);
        }
        self.batch = (b, t);
    }

    /// Runs the model on `inputs` (B, T). With `targets`, returns the mean cross-entropy loss; the logits
    /// stay readable through `logits()`.
    pub fn forward(&mut self, inputs: &[u32], targets: Option<&[u32]>, b: usize, t: usize) -> Result<Option<f32>> {
        self.check_batch(inputs, targets, b, t)?;
        self.begin_pass(inputs, b, t);
        self.run_layers();
        self.have_dlogits = false;
        Ok(targets.map(|targets| self.classify(targets, false)))
    }

    /// One training pass: forward with targets, then backward, ACCUMULATING into the gradients (call
    /// `zero_grad` first unless accumulating over several batches). Returns the mean loss of this batch.
    pub fn forward_backward(&mut self, inputs: &[u32], targets: &[u32], b: usize, t: usize) -> Result<f32> {
        self.check_batch(inputs, Some(targets), b, t)?;
        self.begin_pass(inputs, b, t);
        self.run_layers();
        let loss = self.classify(targets, true);
        self.have_dlogits = true;
        self.backward();
        Ok(loss)
    }

    /// Every layer from the token embedding to the logits.
    fn run_layers(&mut self) {
        let cfg = self.config;
        let (b, t) = self.batch;
        let (c, l_count, nh, vp) = (cfg.channels, cfg.num_layers, cfg.num_heads, cfg.padded_vocab_size);
        let btc = b * t * c;
        let p = self.param_sizes.split(&self.params);
        let a = ActTensors::sizes(&cfg, b, t).split_mut(&mut self.acts);

        encoder_forward(a.encoded, &self.inputs, p.wte, p.wpe, b, t, c);
        for l in 0..l_count {
            // The block's input: the embeddings for the first block, the previous block's output after that.
            let residual = if l == 0 { &*a.encoded } else { layer(a.residual3, l - 1, btc) };
            let ln1 = layer_mut(a.ln1, l, btc);
            let ln1_mean = layer_mut(a.ln1_mean, l, b * t);
            let ln1_rstd = layer_mut(a.ln1_rstd, l, b * t);
            let qkv = layer_mut(a.qkv, l, 3 * btc);
            let atty = layer_mut(a.atty, l, btc);
            let lse = layer_mut(a.att_lse, l, b * t * nh);
            let attproj = layer_mut(a.attproj, l, btc);
            let residual2 = layer_mut(a.residual2, l, btc);
            let ln2 = layer_mut(a.ln2, l, btc);
            let ln2_mean = layer_mut(a.ln2_mean, l, b * t);
            let ln2_rstd = layer_mut(a.ln2_rstd, l, b * t);
            let fch = layer_mut(a.fch, l, 4 * btc);
            let fch_gelu = layer_mut(a.fch_gelu, l, 4 * btc);
            let fcproj = layer_mut(a.fcproj, l, btc);

            layernorm_forward(ln1, ln1_mean, ln1_rstd, residual, layer(p.ln1w, l, c), layer(p.ln1b, l, c), b, t, c);
            matmul_forward(qkv, ln1, layer(p.qkvw, l, 3 * c * c), Some(layer(p.qkvb, l, 3 * c)), b, t, c, 3 * c);
            attention_forward(atty, lse, qkv, b, t, c, nh);
            matmul_forward(attproj, atty, layer(p.attprojw, l, c * c), Some(layer(p.attprojb, l, c)), b, t, c, c);
            residual_forward(residual2, residual, attproj, btc);
            layernorm_forward(ln2, ln2_mean, ln2_rstd, residual2, layer(p.ln2w, l, c), layer(p.ln2b, l, c), b, t, c);
            matmul_forward(fch, ln2, layer(p.fcw, l, 4 * c * c), Some(layer(p.fcb, l, 4 * c)), b, t, c, 4 * c);
            gelu_forward(fch_gelu, fch, 4 * btc);
            let (fcprojw, fcprojb) = (layer(p.fcprojw, l, 4 * c * c), layer(p.fcprojb, l, c));
            matmul_forward(fcproj, fch_gelu, fcprojw, Some(fcprojb), b, t, 4 * c, c);
            // residual3[l] is written while residual3[l - 1] was read above: split the stacked tensor to say so.
            let (_, residual3) = a.residual3.split_at_mut(l * btc);
            residual_forward(&mut residual3[..btc], residual2, fcproj, btc);
        }
        let last_residual = layer(a.residual3, l_count - 1, btc);
        layernorm_forward(a.lnf, a.lnf_mean, a.lnf_rstd, last_residual, p.lnfw, p.lnfb, b, t, c);
        // The classifier shares its weights with the token embedding (weight tying): logits = lnf · wteᵀ.
        matmul_forward(a.logits, a.lnf, p.wte, None, b, t, c, vp);
    }

    /// Softmax + cross-entropy over the logits of the last forward pass; with `with_grad`, also overwrites the
    /// logits with d(mean loss)/d(logits). Returns the mean loss.
    fn classify(&mut self, targets: &[u32], with_grad: bool) -> f32 {
        let cfg = self.config;
        let (b, t) = self.batch;
        self.targets.clear();
        self.targets.extend_from_slice(targets);
        let a = ActTensors::sizes(&cfg, b, t).split_mut(&mut self.acts);
        let dloss = with_grad.then_some(1.0 / (b * t) as f32);
        fused_classifier(a.logits, a.losses, targets, b, t, cfg.vocab_size, cfg.padded_vocab_size, dloss);
        // Summed in f64 so the mean does not depend on B*T's size.
        (a.losses.iter().map(|&x| x as f64).sum::<f64>() / (b * t) as f64) as f32
    }

    /// Every layer's backward pass, last to first. Expects dlogits in the logits buffer.
    fn backward(&mut self) {
        debug_assert!(self.have_dlogits, "backward needs dlogits from forward_backward");
        let cfg = self.config;
        let (b, t) = self.batch;
        let (c, l_count, nh, vp) = (cfg.channels, cfg.num_layers, cfg.num_heads, cfg.padded_vocab_size);
        let btc = b * t * c;
        let act_sizes = ActTensors::sizes(&cfg, b, t);
        let p = self.param_sizes.split(&self.params);
        let g = self.param_sizes.split_mut(&mut self.grads);
        let a = act_sizes.split(&self.acts);
        // Activation gradients accumulate (the residual stream gets two contributions), so start from zero.
        self.grad_acts[..act_sizes.total()].fill(0.0);
        let d = act_sizes.split_mut(&mut self.grad_acts);

        matmul_backward(d.lnf, g.wte, None, a.logits, a.lnf, p.wte, b, t, c, vp);
        let last_residual = layer(a.residual3, l_count - 1, btc);
        let dlast_residual = layer_mut(d.residual3, l_count - 1, btc);
        layernorm_backward(
            dlast_residual,
            g.lnfw,
            g.lnfb,
            d.lnf,
            last_residual,
            p.lnfw,
            a.lnf_mean,
            a.lnf_rstd,
            b,
            t,
            c,
        );

        for l in (0..l_count).rev() {
            // This layer's parameters, their gradients, its saved activations, and their gradients.
            let (ln1w, ln2w) = (layer(p.ln1w, l, c), layer(p.ln2w, l, c));
            let qkvw = layer(p.qkvw, l, 3 * c * c);
            let attprojw = layer(p.attprojw, l, c * c);
            let fcw = layer(p.fcw, l, 4 * c * c);
            let fcprojw = layer(p.fcprojw, l, 4 * c * c);
            let dln1w = layer_mut(g.ln1w, l, c);
            let dln1b = layer_mut(g.ln1b, l, c);
            let dqkvw = layer_mut(g.qkvw, l, 3 * c * c);
            let dqkvb = layer_mut(g.qkvb, l, 3 * c);
            let dattprojw = layer_mut(g.attprojw, l, c * c);
            let dattprojb = layer_mut(g.attprojb, l, c);
            let dln2w = layer_mut(g.ln2w, l, c);
            let dln2b = layer_mut(g.ln2b, l, c);
            let dfcw = layer_mut(g.fcw, l, 4 * c * c);
            let dfcb = layer_mut(g.fcb, l, 4 * c);
            let dfcprojw = layer_mut(g.fcprojw, l, 4 * c * c);
            let dfcprojb = layer_mut(g.fcprojb, l, c);

            let residual = if l == 0 { a.encoded } else { layer(a.residual3, l - 1, btc) };
            let ln1 = layer(a.ln1, l, btc);
            let (ln1_mean, ln1_rstd) = (layer(a.ln1_mean, l, b * t), layer(a.ln1_rstd, l, b * t));
            let qkv = layer(a.qkv, l, 3 * btc);
            let atty = layer(a.atty, l, btc);
            let lse = layer(a.att_lse, l, b * t * nh);
            let residual2 = layer(a.residual2, l, btc);
            let ln2 = layer(a.ln2, l, btc);
            let (ln2_mean, ln2_rstd) = (layer(a.ln2_mean, l, b * t), layer(a.ln2_rstd, l, b * t));
            let fch = layer(a.fch, l, 4 * btc);
            let fch_gelu = layer(a.fch_gelu, l, 4 * btc);

            // dresidual3[l] is read while the block's input gradient (dresidual3[l - 1] or dencoded) is written.
            let (dprev, dcur) = d.residual3.split_at_mut(l * btc);
            let dresidual3 = &dcur[..btc];
            let dresidual = if l == 0 { &mut *d.encoded } else { layer_mut(dprev, l - 1, btc) };
            let dresidual2 = layer_mut(d.residual2, l, btc);
            let dfcproj = layer_mut(d.fcproj, l, btc);
            let dfch_gelu = layer_mut(d.fch_gelu, l, 4 * btc);
            let dfch = layer_mut(d.fch, l, 4 * btc);
            let dln2 = layer_mut(d.ln2, l, btc);
            let dattproj = layer_mut(d.attproj, l, btc);
            let datty = layer_mut(d.atty, l, btc);
            let dqkv = layer_mut(d.qkv, l, 3 * btc);
            let dln1 = layer_mut(d.ln1, l, btc);

            // The forward pass in reverse: MLP, then attention, each ending in its residual branch.
            residual_backward(dresidual2, dfcproj, dresidual3, btc);
            matmul_backward(dfch_gelu, dfcprojw, Some(dfcprojb), dfcproj, fch_gelu, fcprojw, b, t, 4 * c, c);
            gelu_backward(dfch, fch, dfch_gelu, 4 * btc);
            matmul_backward(dln2, dfcw, Some(dfcb), dfch, ln2, fcw, b, t, c, 4 * c);
            layernorm_backward(dresidual2, dln2w, dln2b, dln2, residual2, ln2w, ln2_mean, ln2_rstd, b, t, c);
            residual_backward(dresidual, dattproj, dresidual2, btc);
            matmul_backward(datty, dattprojw, Some(dattprojb), dattproj, atty, attprojw, b, t, c, c);
            attention_backward(dqkv, datty, qkv, atty, lse, b, t, c, nh);
            matmul_backward(dln1, dqkvw, Some(dqkvb), dqkv, ln1, qkvw, b, t, c, 3 * c);
            layernorm_backward(dresidual, dln1w, dln1b, dln1, residual, ln1w, ln1_mean, ln1_rstd, b, t, c);
        }
        encoder_backward(g.wte, g.wpe, d.encoded, &self.inputs, b, t, c);
    }

    /// Sets every parameter gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grads.fill(0.0);
    }

    /// sqrt of the sum of all squared gradients.
    pub fn grad_norm(&self) -> f32 {
        global_norm_squared(&self.grads).sqrt() as f32
    }

    /// One AdamW update (`step` counts from 1) with gradients multiplied by `grad_scale` (clipping).
    /// Weight decay applies to the weight matrices only.
    pub fn update(&mut self, adamw: &AdamWConfig, lr: f32, grad_scale: f32, step: u32) {
        if self.m.is_empty() {
            self.m = vec![0.0; self.params.len()];
            self.v = vec![0.0; self.params.len()];
        }
        for (i, range) in self.param_sizes.ranges().enumerate() {
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
            adamw_update(
                &mut self.params[range.clone()],
                &self.grads[range.clone()],
                &mut self.m[range.clone()],
                &mut self.v[range],
                &hp,
            );
        }
    }
}
