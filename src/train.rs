//! The training loop, with llm.c's semantics: at step s (0 <= s < steps) the validation loss, when due, is taken
//! before that step's update; the train loss of step s is its forward loss before its update; a last evaluation
//! and sample follow the final update. The loop reports through a callback so the library never prints.

use crate::cpu::global_norm::clip_scale;
use crate::data::DataLoader;
use crate::error::{Error, Result};
use crate::model::{AdamWConfig, LayerStats, GPT2};
use crate::rng::Rng;
use crate::rundir::{self, TrainState};
use crate::sample::{generate, SamplingOptions};
use crate::tokenizer::Tokenizer;
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything that shapes a run besides the model and the data.
#[derive(Debug, Clone, Serialize)]
pub struct TrainOptions {
    pub batch_size: usize,
    pub seq_len: usize,
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Steps of linear warmup from lr / warmup to lr.
    pub warmup: usize,
    /// The cosine decay ends at lr * lr_final_frac on the last step.
    pub lr_final_frac: f32,
    pub adamw: AdamWConfig,
    /// Clip the global gradient norm to this (0 = no clipping).
    pub grad_clip: f32,
    /// Evaluate every this many steps (0 = never).
    pub val_every: usize,
    /// Batches averaged per evaluation.
    pub val_batches: usize,
    /// Generate a sample every this many steps (0 = never).
    pub sample_every: usize,
    /// Tokens per sample.
    pub gen_tokens: usize,
    /// Temperature and top-k of the samples.
    pub sampling: SamplingOptions,
    /// Seed for sampling.
    pub seed: u64,
    /// Write a training checkpoint into the output directory every this many steps, and after the last
    /// (0 = never).
    pub checkpoint_every: usize,
    /// Keep only the newest this many checkpoints (0 = all).
    pub keep_checkpoints: usize,
    /// Log per-layer activation and gradient statistics of every step to metrics.jsonl.
    pub inspect: bool,
    /// Skip the update of a step whose loss lies this many standard deviations above the recent mean (0 = never;
    /// a loss or gradient norm that is NaN or infinite is always skipped).
    pub skip_loss_z: f32,
    /// The same for the gradient norm.
    pub skip_grad_z: f32,
    /// Stop the run after this many skipped updates in a row.
    pub max_skips: usize,
}

/// Values a z-score is taken against: the last `OUTLIER_WINDOW` losses or gradient norms of updates that ran.
pub const OUTLIER_WINDOW: usize = 128;
/// No z-score (so no outlier skip) before the window holds this many values.
pub const OUTLIER_MIN_VALUES: usize = 32;

/// llm.c's outlier detector: the z-score of a new value against a moving window of accepted ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct OutlierDetector {
    window: std::collections::VecDeque<f64>,
}

impl OutlierDetector {
    /// (x - mean) / std of the window, or None while the window is short or flat.
    pub fn z_score(&self, x: f64) -> Option<f64> {
        let n = self.window.len();
        if n < OUTLIER_MIN_VALUES {
            return None;
        }
        let mean = self.window.iter().sum::<f64>() / n as f64;
        let std = (self.window.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        (std > 0.0).then(|| (x - mean) / std)
    }

    /// Adds an accepted value, forgetting the oldest beyond the window.
    pub fn push(&mut self, x: f64) {
        if self.window.len() == OUTLIER_WINDOW {
            self.window.pop_front();
        }
        self.window.push_back(x);
    }
}

/// Why a step's update was skipped, or None to apply it.
fn skip_reason(loss: f32, norm: f32, detectors: &[OutlierDetector; 2], opts: &TrainOptions) -> Option<String> {
    if !loss.is_finite() {
        return Some(format!("loss is {loss}"));
    }
    if !norm.is_finite() {
        return Some(format!("gradient norm is {norm}"));
    }
    for ((name, value, limit), detector) in
        [("loss", loss, opts.skip_loss_z), ("gradient norm", norm, opts.skip_grad_z)].into_iter().zip(detectors)
    {
        if let Some(z) = detector.z_score(value as f64).filter(|&z| limit > 0.0 && z > limit as f64) {
            return Some(format!(
                "{name} {value} is {z:.1} standard deviations above the last {}",
                detector.window.len()
            ));
        }
    }
    None
}

/// One line of metrics.jsonl for a step whose update was skipped.
#[derive(Debug, Clone, Serialize)]
struct SkipRecord {
    step: usize,
    skipped: String,
}

/// One line of metrics.jsonl with a step's per-layer statistics (`--inspect`).
#[derive(Debug, Clone, Serialize)]
struct InspectRecord {
    step: usize,
    inspect: Vec<LayerStats>,
}

/// llm.c's schedule: linear warmup over `warmup` steps, then cosine decay from `lr` to `lr * final_frac` at the
/// last step. With warmup 0 and final_frac 1 the rate is constant.
pub fn learning_rate(step: usize, steps: usize, lr: f32, warmup: usize, final_frac: f32) -> f32 {
    if step < warmup {
        return lr * (step + 1) as f32 / warmup as f32;
    }
    let decay_ratio = if steps > warmup { (step - warmup) as f64 / (steps - warmup) as f64 } else { 0.0 };
    let coeff = 0.5 * (1.0 + (std::f64::consts::PI * decay_ratio).cos());
    let lr_min = lr as f64 * final_frac as f64;
    (lr_min + coeff * (lr as f64 - lr_min)) as f32
}

/// One line of metrics.jsonl for a training step.
#[derive(Debug, Clone, Serialize)]
pub struct StepMetrics {
    pub step: usize,
    pub train_loss: f32,
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    pub ms: f64,
    pub tokens_per_sec: f64,
}

/// One line of metrics.jsonl for an evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct ValMetrics {
    pub step: usize,
    pub val_loss: f32,
}

/// What the loop reports as it goes.
#[derive(Debug)]
pub enum Event<'a> {
    Step(&'a StepMetrics),
    Val(&'a ValMetrics),
    /// An evaluation at `step` has averaged `done` of its `total` batches.
    EvalBatch {
        step: usize,
        done: usize,
        total: usize,
    },
    Sample {
        step: usize,
        text: &'a str,
    },
    /// A training checkpoint after `step` updates was written to `dir`.
    Checkpoint {
        step: usize,
        dir: &'a Path,
    },
    /// Step `step`'s update was not applied, for `reason`.
    Skipped {
        step: usize,
        reason: &'a str,
    },
}

/// One line of metrics.jsonl marking where a resumed run picked up.
#[derive(Debug, Clone, Serialize)]
struct ResumeRecord {
    event: &'static str,
    step: usize,
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub train_losses: Vec<f32>,
    pub val_losses: Vec<(usize, f32)>,
    /// Mean over the steps after the first (which pays for warm-up allocations).
    pub tokens_per_sec: f64,
}

/// Appends JSON lines to `metrics.jsonl`, flushed after each line so a run can be watched with `tail -f`.
struct MetricsFile {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsFile {
    /// A new file, or with `append` the end of an existing one (a resumed run).
    fn open(path: PathBuf, append: bool) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&path)
            .map_err(|e| Error::io("cannot create", &path, e))?;
        Ok(MetricsFile { path, out: BufWriter::new(file) })
    }

    fn write(&mut self, record: &impl Serialize) -> Result<()> {
        let line = serde_json::to_string(record).expect("metrics records serialize");
        writeln!(self.out, "{line}")
            .and_then(|_| self.out.flush())
            .map_err(|e| Error::io("cannot write", &self.path, e))
    }
}

/// Mean loss over the first `batches` batches of `loader` (from its start); `on_batch` hears how many are done.
pub fn evaluate(
    model: &mut GPT2,
    loader: &mut DataLoader,
    batches: usize,
    mut on_batch: impl FnMut(usize),
) -> Result<f32> {
    loader.reset();
    let (b, t) = (loader.batch_size(), loader.seq_len());
    let mut sum = 0.0f64;
    for done in 1..=batches {
        let (inputs, targets) = loader.next_batch();
        sum += model.forward(inputs, Some(targets), b, t)?.expect("targets given") as f64;
        on_batch(done);
    }
    Ok((sum / batches as f64) as f32)
}

/// Trains `model` up to `opts.steps` AdamW steps on `train`, evaluating on `val` and sampling through `tokenizer`
/// when given. With an output directory `out`, writes metrics.jsonl and checkpoints there (see `rundir`).
/// With `resume` (read from a checkpoint whose parameters and moments the model and `train` already hold),
/// continues from its step and appends to metrics.jsonl, dropping the records of the steps it redoes.
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &mut GPT2,
    train: &mut DataLoader,
    mut val: Option<&mut DataLoader>,
    tokenizer: Option<&Tokenizer>,
    opts: &TrainOptions,
    out: Option<&Path>,
    resume: Option<&TrainState>,
    mut on_event: impl FnMut(Event),
) -> Result<Summary> {
    let (b, t) = (opts.batch_size, opts.seq_len);
    let first_step = resume.map_or(0, |r| r.step);
    let mut metrics = match out {
        Some(out) => {
            let path = out.join("metrics.jsonl");
            if resume.is_some() {
                rundir::truncate_metrics(&path, first_step)?;
            }
            let mut metrics = MetricsFile::open(path, resume.is_some())?;
            if resume.is_some() {
                metrics.write(&ResumeRecord { event: "resume", step: first_step })?;
            }
            Some(metrics)
        }
        None => None,
    };
    let mut rng = Rng::new(resume.map_or(opts.seed, |r| r.rng));
    let mut elapsed_s = resume.map_or(0.0, |r| r.elapsed_s);
    // Loss and gradient-norm windows; restored on resume so skip decisions match an uninterrupted run.
    let mut detectors = resume.map_or_else(Default::default, |r| r.detectors.clone());
    let mut skips_in_a_row = 0usize;
    let mut summary = Summary::default();
    let mut timed_ms = 0.0f64;
    let mut timed_steps = 0usize;
    for step in first_step..=opts.steps {
        let last = step == opts.steps;
        if let Some(val) = val.as_deref_mut() {
            if opts.val_every > 0 && (step % opts.val_every == 0 || last) {
                let total = opts.val_batches;
                let val_loss = evaluate(model, val, total, |done| on_event(Event::EvalBatch { step, done, total }))?;
                let record = ValMetrics { step, val_loss };
                summary.val_losses.push((step, record.val_loss));
                if let Some(m) = metrics.as_mut() {
                    m.write(&record)?;
                }
                on_event(Event::Val(&record));
            }
        }
        if let Some(tokenizer) = tokenizer {
            if opts.sample_every > 0 && opts.gen_tokens > 0 && ((step > 0 && step % opts.sample_every == 0) || last) {
                let prompt = [tokenizer.eot_token()];
                let tokens = generate(model, &prompt, opts.gen_tokens, t, &opts.sampling, &mut rng, |_| {})?;
                on_event(Event::Sample { step, text: &tokenizer.decode(&tokens) });
            }
        }
        if last {
            break;
        }

        let start = Instant::now();
        model.zero_grad()?;
        let (inputs, targets) = train.next_batch();
        let train_loss = model.forward_backward(inputs, targets, b, t)?;
        // Read before the update, while activations and gradients are this step's; not timed.
        let inspect_start = Instant::now();
        let inspected = if opts.inspect { Some(model.layer_stats()?) } else { None };
        let inspect_time = inspect_start.elapsed();
        let grad_norm = model.grad_norm()?;
        let lr = learning_rate(step, opts.steps, opts.lr, opts.warmup, opts.lr_final_frac);
        let skipped = skip_reason(train_loss, grad_norm, &detectors, opts);
        match &skipped {
            None => {
                model.update(&opts.adamw, lr, clip_scale(grad_norm, opts.grad_clip), step as u32 + 1)?;
                detectors[0].push(train_loss as f64);
                detectors[1].push(grad_norm as f64);
                skips_in_a_row = 0;
            }
            Some(_) => skips_in_a_row += 1,
        }
        let ms = (start.elapsed() - inspect_time).as_secs_f64() * 1e3;
        elapsed_s += ms / 1e3;
        // The first step of a session pays for allocations and warm-up: leave it out of the average.
        if step > first_step {
            timed_ms += ms;
            timed_steps += 1;
        }
        let record = StepMetrics { step, train_loss, lr, grad_norm, ms, tokens_per_sec: (b * t) as f64 / ms * 1e3 };
        summary.train_losses.push(train_loss);
        if let Some(m) = metrics.as_mut() {
            m.write(&record)?;
            if let Some(inspect) = inspected {
                m.write(&InspectRecord { step, inspect })?;
            }
            if let Some(reason) = &skipped {
                m.write(&SkipRecord { step, skipped: reason.clone() })?;
            }
        }
        on_event(Event::Step(&record));
        if let Some(reason) = &skipped {
            on_event(Event::Skipped { step, reason });
            if skips_in_a_row >= opts.max_skips {
                let last = out.and_then(|out| rundir::list_checkpoints(out).ok()?.pop());
                return Err(Error::Training(format!(
                    "{skips_in_a_row} updates in a row skipped (the last at step {}: {reason}); the parameters are \
                     those of the last good update{}",
                    step + 1,
                    match last {
                        Some((step, dir)) => format!(", and the newest checkpoint (step {step}) is {}", dir.display()),
                        None => String::new(),
                    }
                )));
            }
        }

        let done = step + 1;
        if let Some(out) = out {
            if opts.checkpoint_every > 0 && (done % opts.checkpoint_every == 0 || done == opts.steps) {
                // Before any update ran (all skipped), AdamW's moments are still their starting zeros.
                let n = model.num_parameters();
                let (m, v) = model.optimizer_state()?.unwrap_or_else(|| (vec![0.0; n], vec![0.0; n]));
                let state = TrainState {
                    step: done,
                    loader: train.state(),
                    rng: rng.state,
                    elapsed_s,
                    detectors: detectors.clone(),
                };
                let dir = rundir::write_checkpoint(out, &model.config, &model.params()?, (&m, &v), &state)?;
                rundir::prune_checkpoints(out, opts.keep_checkpoints)?;
                on_event(Event::Checkpoint { step: done, dir: &dir });
            }
        }
    }
    if timed_steps > 0 {
        summary.tokens_per_sec = (timed_steps * b * t) as f64 / timed_ms * 1e3;
    }
    Ok(summary)
}
