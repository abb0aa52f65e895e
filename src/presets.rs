//! The preset ladder with what each rung costs here: parameters, the memory a run holds, and the time a training
//! step would take on this device, so a user picks a model that fits before starting a run that cannot.
//!
//! The time is an estimate: a few real training steps of the smallest preset are timed on the device, giving the
//! FLOP/s it reaches, and each preset's FLOPs per step (6 per parameter per token plus attention, llm.c's count)
//! are divided by that. Larger models keep matmul units busier, so for them the estimate errs on the slow side.

use crate::backend::{self, Device, Precision};
use crate::config::{GPT2Config, PRESETS};
use crate::error::Result;
use crate::layout::Recompute;
use crate::model::{AdamWConfig, MemoryPlan, GPT2};
use crate::rng::Rng;
use std::time::Instant;

/// Untimed steps before the timed ones (allocation, caches, lazy kernel loading).
const WARMUP_STEPS: usize = 1;
/// Timed steps of the probe.
const TIMED_STEPS: usize = 2;
/// A warm-up step slower than this (large B*T on a CPU) is timing enough: one timed step follows, not more.
const SLOW_STEP_SECONDS: f64 = 1.0;

/// One rung of the ladder.
pub struct PresetCost {
    pub name: &'static str,
    pub config: GPT2Config,
    pub plan: MemoryPlan,
    /// Whether the plan fits the device's free memory (None when the device cannot tell).
    pub fits: Option<bool>,
    /// At T cut to the preset's maxT.
    pub flops_per_step: f64,
    pub seconds_per_step: f64,
}

/// The whole ladder at one (B, T) on one device.
pub struct PresetTable {
    pub device: String,
    pub batch_size: usize,
    pub seq_len: usize,
    /// FLOP/s the probe reached.
    pub flops_per_sec: f64,
    pub rows: Vec<PresetCost>,
}

/// FLOP/s a training step of `config` reaches at (B, T) on `device`, from timing a few steps on random tokens.
pub fn measure_training_flops(
    device: Device,
    precision: Option<Precision>,
    config: GPT2Config,
    b: usize,
    t: usize,
) -> Result<f64> {
    let (backend, _) = backend::open(device, precision)?;
    let params = GPT2::init_params(&config, 1)?;
    let mut model = GPT2::with_backend(config, params, backend)?;
    let mut rng = Rng::new(2);
    let tokens: Vec<u32> = (0..b * t + 1).map(|_| rng.below(config.vocab_size) as u32).collect();
    let adamw = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0 };
    let mut step = |i: usize| -> Result<()> {
        model.zero_grad()?;
        model.forward_backward(&tokens[..b * t], &tokens[1..], b, t)?;
        model.grad_norm()?;
        model.update(&adamw, 1e-4, 1.0, i as u32 + 1)
    };
    let warmup = Instant::now();
    for i in 0..WARMUP_STEPS {
        step(i)?;
    }
    let timed_steps = if warmup.elapsed().as_secs_f64() > SLOW_STEP_SECONDS { 1 } else { TIMED_STEPS };
    let start = Instant::now();
    for i in 0..timed_steps {
        step(WARMUP_STEPS + i)?;
    }
    let seconds = start.elapsed().as_secs_f64() / timed_steps as f64;
    Ok(config.flops_per_token(t) * (b * t) as f64 / seconds)
}

/// The ladder at (B, T) with `recompute` on `device` in `precision` (None: the device's default; T is cut to each
/// preset's maxT).
pub fn preset_table(
    device: Device,
    precision: Option<Precision>,
    b: usize,
    t: usize,
    recompute: Recompute,
) -> Result<PresetTable> {
    crate::data::check_sizes(b, t)?;
    let (backend, _) = backend::open(device, precision)?;
    let (name, available, precision) = (backend.name(), backend.memory_available(), backend.precision());
    let workspace = backend.workspace_bytes();
    drop(backend);
    let smallest = GPT2Config::preset(PRESETS[0].0).expect("listed presets exist");
    let flops_per_sec = measure_training_flops(device, Some(precision), smallest, b, t.min(smallest.max_seq_len))?;
    let rows = PRESETS
        .iter()
        .map(|&(name, ..)| {
            let config = GPT2Config::preset(name).expect("listed presets exist");
            let t = t.min(config.max_seq_len);
            let plan = MemoryPlan::in_precision(&config, b, t, recompute, precision).with_workspace(workspace);
            let flops_per_step = config.flops_per_token(t) * (b * t) as f64;
            PresetCost {
                name,
                config,
                plan,
                fits: available.map(|free| plan.total() <= free),
                flops_per_step,
                seconds_per_step: flops_per_step / flops_per_sec,
            }
        })
        .collect();
    Ok(PresetTable { device: name, batch_size: b, seq_len: t, flops_per_sec, rows })
}

impl std::fmt::Display for PresetTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "presets at B={} T={} on {} (measured {:.1} GFLOP/s on a training step of the smallest)",
            self.batch_size,
            self.seq_len,
            self.device,
            self.flops_per_sec / 1e9
        )?;
        writeln!(
            f,
            "{:<6} {:>3} {:>5} {:>3} {:>9} {:>11} {:>12}  memory plan",
            "preset", "L", "C", "NH", "params", "GFLOP/step", "est. s/step"
        )?;
        for row in &self.rows {
            let c = &row.config;
            writeln!(
                f,
                "{:<6} {:>3} {:>5} {:>3} {:>8.1}M {:>11.1} {:>12.3}  {}{}",
                row.name,
                c.num_layers,
                c.channels,
                c.num_heads,
                c.num_parameters() as f64 / 1e6,
                row.flops_per_step / 1e9,
                row.seconds_per_step,
                row.plan,
                match row.fits {
                    Some(false) => " -- does not fit the free memory",
                    _ => "",
                }
            )?;
        }
        Ok(())
    }
}
