//! `train_gpt2`: train a GPT-2 model, llm.c-style. With no flags it trains a small model on the built-in
//! generated stories, on the CPU, and prints losses and samples as it goes.

use clap::Parser;
use llmrs::backend::{Backend, Device, Precision};
use llmrs::checkpoint::{read_model, read_model_header, write_model, ModelDtype};
use llmrs::config::{GPT2Config, PRESETS};
use llmrs::corpus;
use llmrs::data::DataLoader;
use llmrs::error::{Error, Result};
use llmrs::layout::Recompute;
use llmrs::model::{AdamWConfig, MemoryPlan, GPT2};
use llmrs::progress::{Progress, Style, Unit};
use llmrs::rundir::{self, RunRecord, Session, TrainCheckpoint};
use llmrs::sample::SamplingOptions;
use llmrs::tokenizer::Tokenizer;
use llmrs::train::{train, Event, TrainOptions};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Stories generated for the built-in dataset (about 110 tokens each).
const BUILTIN_STORIES: usize = 4000;
/// Every tenth built-in story goes to the validation split.
const BUILTIN_VAL_EVERY: usize = 10;

/// What `--list` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Listing {
    Presets,
}

/// Train GPT-2 from scratch (or from an llm.c checkpoint) on llm.c token shards.
///
/// With no flags, trains the d4 preset on built-in generated stories on the CPU. One-letter flags are llm.c's.
#[derive(Debug, Parser, serde::Serialize)]
// A flag given twice takes its last value: `--resume` appends this session's flags to the run's own.
#[command(name = "train_gpt2", version, max_term_width = 110, args_override_self = true)]
struct Args {
    /// Model: an llm.c checkpoint (.bin, version 3 or 5) or a preset for random init:
    /// tiny (5M), d4 (16M), small or d6 (30M), d12 (GPT-2 124M), d24 (355M), d36 (774M), d48 (1.56B);
    /// `--list presets` shows their memory and time per step here
    #[arg(short = 'e', long, default_value = "d4", help_heading = "Model")]
    model: String,
    /// Override the preset's number of layers (L)
    #[arg(long, help_heading = "Model")]
    layers: Option<usize>,
    /// Override the preset's width (C)
    #[arg(long, help_heading = "Model")]
    channels: Option<usize>,
    /// Override the preset's attention heads (NH)
    #[arg(long, help_heading = "Model")]
    heads: Option<usize>,
    /// Override the preset's vocabulary size (V; padded to a multiple of 128)
    #[arg(long, help_heading = "Model")]
    vocab_size: Option<usize>,
    /// Override the preset's maximum sequence length (maxT)
    #[arg(long, help_heading = "Model")]
    max_seq_len: Option<usize>,

    /// Training tokens: an llm.c shard or a glob over shards (default: built-in generated stories)
    #[arg(short = 'i', long, help_heading = "Data")]
    train_data: Option<String>,
    /// Validation tokens: an llm.c shard or a glob (default: none, or the built-in split)
    #[arg(short = 'j', long, help_heading = "Data")]
    val_data: Option<String>,
    /// Read training batches in file order instead of llm.c-style shuffled order
    #[arg(long, help_heading = "Data")]
    no_shuffle: bool,
    /// llm.c tokenizer .bin used to print samples (default: GPT-2 BPE built in)
    #[arg(long, help_heading = "Data")]
    tokenizer: Option<PathBuf>,

    /// Directory for the run: run.json, metrics.jsonl, checkpoints/ and the final model.bin
    #[arg(short = 'o', long, help_heading = "Output")]
    out: Option<PathBuf>,
    /// Write a training checkpoint (model, AdamW state, data position) into --out every N steps and after the
    /// last step (0 = never)
    #[arg(short = 'n', long, default_value_t = 0, help_heading = "Output")]
    checkpoint_every: usize,
    /// Keep only the newest K checkpoints (0 = keep all)
    #[arg(long, default_value_t = 0, help_heading = "Output")]
    keep_checkpoints: usize,
    /// Continue the run in --out from its latest checkpoint, with its own settings; flags given now may change
    /// only --steps and the output, evaluation, sampling and system flags
    #[arg(long, help_heading = "Output")]
    resume: bool,
    /// Evaluate the validation loss every N steps (0 = never)
    #[arg(short = 'v', long, default_value_t = 20, help_heading = "Output")]
    val_every: usize,
    /// Batches averaged per evaluation
    #[arg(short = 'm', long, default_value_t = 10, help_heading = "Output")]
    val_batches: usize,
    /// Print a generated sample every N steps and after the last step (0 = never)
    #[arg(short = 's', long, default_value_t = 100, help_heading = "Output")]
    sample_every: usize,
    /// Tokens per generated sample
    #[arg(short = 'g', long, default_value_t = 64, help_heading = "Output")]
    gen_tokens: usize,
    /// Sampling temperature (0 = always the most likely token)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, help_heading = "Output")]
    temperature: f32,
    /// Sample among the k most likely tokens only (0 = all)
    #[arg(long, default_value_t = 0, help_heading = "Output")]
    top_k: usize,
    /// Add per-layer activation and gradient statistics (mean, std, max |x|) of every step to metrics.jsonl
    #[arg(long, help_heading = "Output")]
    inspect: bool,

    /// Sequences per batch (B)
    #[arg(short = 'b', long, default_value_t = 4, help_heading = "Optimisation")]
    batch_size: usize,
    /// Tokens per sequence (T)
    #[arg(short = 't', long, default_value_t = 64, help_heading = "Optimisation")]
    seq_len: usize,
    /// Optimizer steps
    #[arg(short = 'x', long, default_value_t = 200, help_heading = "Optimisation")]
    steps: usize,
    /// Peak learning rate
    #[arg(short = 'l', long, default_value_t = 1e-3, allow_negative_numbers = true, help_heading = "Optimisation")]
    lr: f32,
    /// Linear warmup steps
    #[arg(short = 'u', long, default_value_t = 10, help_heading = "Optimisation")]
    warmup: usize,
    /// Cosine decay ends at lr * this (1.0 with --warmup 0 = constant lr)
    #[arg(short = 'q', long, default_value_t = 0.1, allow_negative_numbers = true, help_heading = "Optimisation")]
    lr_final_frac: f32,
    /// AdamW beta1
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true, help_heading = "Optimisation")]
    beta1: f32,
    /// AdamW beta2
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true, help_heading = "Optimisation")]
    beta2: f32,
    /// AdamW epsilon
    #[arg(long, default_value_t = 1e-8, allow_negative_numbers = true, help_heading = "Optimisation")]
    eps: f32,
    /// AdamW weight decay (weight matrices only)
    #[arg(short = 'c', long, default_value_t = 0.0, allow_negative_numbers = true, help_heading = "Optimisation")]
    weight_decay: f32,
    /// Recompute in the backward pass instead of keeping: 0 nothing, 1 GELU's output, 2 also the LayerNorm
    /// outputs (less activation memory, a little more compute, bitwise the same results)
    #[arg(short = 'r', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2), help_heading = "Optimisation")]
    recompute: u8,
    /// Skip the update of a step whose loss is this many standard deviations above the mean of the last 128
    /// (0 = off; NaN or infinite losses and gradient norms are always skipped)
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, help_heading = "Optimisation")]
    skip_loss_z: f32,
    /// The same for the gradient norm
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true, help_heading = "Optimisation")]
    skip_grad_z: f32,
    /// Stop the run after this many skipped updates in a row
    #[arg(long, default_value_t = 10, help_heading = "Optimisation")]
    max_skips: usize,
    /// Clip the global gradient norm to this (0 = off)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, help_heading = "Optimisation")]
    grad_clip: f32,

    /// Seed for initialisation, shuffling and sampling
    #[arg(long, default_value_t = 1337, help_heading = "System")]
    seed: u64,
    /// CPU threads (default: all cores)
    #[arg(long, help_heading = "System")]
    threads: Option<usize>,
    /// Where to train
    #[arg(long, value_enum, default_value_t = Device::Auto, help_heading = "System")]
    device: Device,
    /// Storage precision of parameters, activations and gradients on a GPU: bf16 (the default there; f32 master
    /// weights and AdamW state, f32 accumulation) or fp32. The CPU computes in fp32 only.
    #[arg(long, value_enum, help_heading = "System")]
    precision: Option<Precision>,
    /// Print a list and exit: `presets` (parameters, memory and estimated time per step at -b/-t on --device)
    #[arg(long, value_enum, help_heading = "System")]
    list: Option<Listing>,
}

/// println! that ignores a closed stdout (`train_gpt2 | head`): the run goes on and still writes its files,
/// where println! would panic on the broken pipe.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let args = Args::parse_from(&argv);
    match with_resumed_settings(args, &argv).and_then(|args| run(&args, &argv)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Settings a resumed run may change: how long it runs, what it reports, where it runs. Anything else would make
/// the continuation a different run than its checkpoints and metrics describe.
const CHANGEABLE_ON_RESUME: &[&str] = &[
    "steps",
    "out",
    "checkpoint_every",
    "keep_checkpoints",
    "resume",
    "val_every",
    "val_batches",
    "sample_every",
    "gen_tokens",
    "temperature",
    "top_k",
    "inspect",
    "recompute",
    "tokenizer",
    "threads",
    "device",
    "precision",
];

/// Every setting by field name, as run.json keeps them. Through text, so an f32 such as 0.01 stays 0.01 (a direct
/// conversion widens it to 0.009999999776482582).
fn args_map(args: &Args) -> serde_json::Map<String, serde_json::Value> {
    let text = serde_json::to_string(args).expect("the arguments serialize");
    match serde_json::from_str(&text).expect("serde_json reads its own output") {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("a struct serializes to an object"),
    }
}

/// The command line after the program name, as the strings run.json keeps.
fn argv_strings(argv: &[OsString]) -> Result<Vec<String>> {
    argv.iter()
        .skip(1)
        .map(|a| {
            a.clone().into_string().map_err(|a| Error::config("command line", format!("{a:?} is not valid UTF-8")))
        })
        .collect()
}

/// With --resume: the run's own command line from run.json with this session's flags appended (the later value
/// wins), refusing a flag that would change the run itself. Without it, `args` as given.
fn with_resumed_settings(args: Args, argv: &[OsString]) -> Result<Args> {
    if !args.resume {
        return Ok(args);
    }
    let out = args.out.as_deref().ok_or_else(|| Error::config("--resume", "needs --out, the run to continue"))?;
    let record = rundir::read_run_record(out)?;
    let program = argv.first().cloned().unwrap_or_default();
    let parse = |extra: &[OsString]| {
        let line =
            std::iter::once(program.clone()).chain(record.argv.iter().map(OsString::from)).chain(extra.iter().cloned());
        Args::try_parse_from(line).map_err(|e| {
            Error::config("--resume", format!("the run's command line in run.json no longer parses: {}", e.kind()))
        })
    };
    let original = parse(&[])?;
    let merged = parse(&argv[1..])?;
    let (before, after) = (args_map(&original), args_map(&merged));
    for (name, value) in &after {
        if !CHANGEABLE_ON_RESUME.contains(&name.as_str()) && before.get(name) != Some(value) {
            return Err(Error::config(
                format!("--{}", name.replace('_', "-")),
                format!(
                    "the run in {} was started with {}, found {value}; a resumed run keeps its settings \
                     (start a new --out to change them)",
                    out.display(),
                    before.get(name).unwrap_or(&serde_json::Value::Null)
                ),
            ));
        }
    }
    Ok(merged)
}

/// `--recompute` as the model takes it.
fn recompute(args: &Args) -> Recompute {
    Recompute::from_level(args.recompute).expect("clap checks the range")
}

/// Rejects flag values no run can use, naming the flag.
fn check_flags(args: &Args) -> Result<()> {
    let positive = [
        ("--batch-size", args.batch_size),
        ("--seq-len", args.seq_len),
        ("--steps", args.steps),
        ("--val-batches", args.val_batches),
    ];
    for (flag, value) in positive {
        if value == 0 {
            return Err(Error::config(flag, "must be at least 1, found 0"));
        }
    }
    let in_range = |flag: &str, value: f32, ok: bool, expected: &str| {
        if ok && value.is_finite() {
            Ok(())
        } else {
            Err(Error::config(flag, format!("expected {expected}, found {value}")))
        }
    };
    in_range("--lr", args.lr, args.lr > 0.0, "a positive number")?;
    in_range("--lr-final-frac", args.lr_final_frac, (0.0..=1.0).contains(&args.lr_final_frac), "0..=1")?;
    in_range("--beta1", args.beta1, (0.0..1.0).contains(&args.beta1), "0..1")?;
    in_range("--beta2", args.beta2, (0.0..1.0).contains(&args.beta2), "0..1")?;
    in_range("--eps", args.eps, args.eps > 0.0, "a positive number")?;
    in_range("--weight-decay", args.weight_decay, args.weight_decay >= 0.0, "a number >= 0")?;
    in_range("--grad-clip", args.grad_clip, args.grad_clip >= 0.0, "a number >= 0 (0 = off)")?;
    in_range("--skip-loss-z", args.skip_loss_z, args.skip_loss_z >= 0.0, "a number >= 0 (0 = off)")?;
    in_range("--skip-grad-z", args.skip_grad_z, args.skip_grad_z >= 0.0, "a number >= 0 (0 = off)")?;
    if args.max_skips == 0 {
        return Err(Error::config("--max-skips", "must be at least 1, found 0"));
    }
    SamplingOptions { temperature: args.temperature, top_k: args.top_k }.check("--temperature")?;
    if args.threads == Some(0) {
        return Err(Error::config("--threads", "must be at least 1, found 0"));
    }
    Ok(())
}

/// Whether any flag changes the preset's shape.
fn has_size_flags(args: &Args) -> bool {
    [args.layers, args.channels, args.heads, args.vocab_size, args.max_seq_len].iter().any(Option::is_some)
}

/// Where the model comes from.
enum ModelSource<'a> {
    /// A preset, resized by the size flags, initialised at random.
    Random(GPT2Config),
    Checkpoint(&'a Path),
    /// The latest training checkpoint of the run being resumed.
    Resumed,
}

/// The model `--model` names and its config, read from the header only so memory can be planned before loading.
fn resolve_model(args: &Args) -> Result<(GPT2Config, ModelSource<'_>)> {
    let overrides = [
        ("--layers", args.layers),
        ("--channels", args.channels),
        ("--heads", args.heads),
        ("--vocab-size", args.vocab_size),
        ("--max-seq-len", args.max_seq_len),
    ];
    if let Some(mut config) = GPT2Config::preset(&args.model) {
        let [layers, channels, heads, vocab, max_t] = overrides.map(|(_, v)| v);
        config.num_layers = layers.unwrap_or(config.num_layers);
        config.channels = channels.unwrap_or(config.channels);
        config.num_heads = heads.unwrap_or(config.num_heads);
        config.max_seq_len = max_t.unwrap_or(config.max_seq_len);
        if let Some(v) = vocab {
            config.vocab_size = v;
            config.padded_vocab_size = llmrs::config::padded_vocab(v);
        }
        config.validate("model size (--model, --layers, --channels, --heads, --vocab-size, --max-seq-len)")?;
        return Ok((config, ModelSource::Random(config)));
    }
    let path = Path::new(&args.model);
    if !path.exists() && !args.model.ends_with(".bin") && !args.model.contains(std::path::MAIN_SEPARATOR) {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
        return Err(Error::config(
            "--model",
            format!("'{}' is neither a file nor a preset (presets: {})", args.model, names.join(", ")),
        ));
    }
    if let Some((flag, _)) = overrides.iter().find(|(_, v)| v.is_some()) {
        return Err(Error::config(*flag, "size flags apply to presets, not to a checkpoint file"));
    }
    let (config, _) = read_model_header(path)?;
    Ok((config, ModelSource::Checkpoint(path)))
}

fn build_model(source: ModelSource, seed: u64, backend: Box<dyn Backend>) -> Result<GPT2> {
    let (config, params) = match source {
        ModelSource::Random(config) => (config, GPT2::init_params(&config, seed)?),
        ModelSource::Checkpoint(path) => read_model(path)?,
        ModelSource::Resumed => unreachable!("a resumed model comes from its checkpoint"),
    };
    GPT2::with_backend(config, params, backend)
}

/// Refuses a plan larger than the memory `backend` has available, before allocating any of it, suggesting
/// `--recompute 2` when that alone would make it fit.
fn check_memory(plan: &MemoryPlan, backend: &dyn Backend, cfg: &GPT2Config, args: &Args) -> Result<()> {
    let Some(available) = backend.memory_available().filter(|&free| plan.total() > free) else { return Ok(()) };
    let slim =
        MemoryPlan::in_precision(cfg, args.batch_size, args.seq_len, Recompute::GeluAndLayerNorm, plan.precision)
            .with_workspace(plan.workspace);
    let suggestion = if args.recompute < 2 && slim.total() <= available {
        format!("--recompute 2 would need {:.0} MiB and fit", slim.total() as f64 / (1024.0 * 1024.0))
    } else {
        "try a smaller --batch-size or --seq-len, or a smaller model".to_string()
    };
    Err(Error::OutOfMemory(format!(
        "training needs {plan}, but only {:.0} MiB is available on {}; {suggestion}",
        available as f64 / (1024.0 * 1024.0),
        backend.name()
    )))
}

/// An allocation that failed although the plan passed `check_memory` (another process took the memory, or the
/// device could not tell what it had): the error gets the plan and what to try.
fn explain_oom(e: Error, plan: &MemoryPlan) -> Error {
    match e {
        Error::OutOfMemory(what) => Error::OutOfMemory(format!(
            "{what}; the run's plan is {plan}; try --recompute 2, a smaller --batch-size or --seq-len, or a smaller \
             model"
        )),
        other => other,
    }
}

/// The training and validation loaders: the user's shards, or the built-in stories split 90/10.
fn load_data(args: &Args, shuffle: Option<u64>) -> Result<(DataLoader, Option<DataLoader>)> {
    let (b, t) = (args.batch_size, args.seq_len);
    if let Some(pattern) = &args.train_data {
        let train = DataLoader::open(pattern, b, t, shuffle)?;
        let val = args.val_data.as_deref().map(|p| DataLoader::open(p, b, t, None)).transpose()?;
        return Ok((train, val));
    }
    if args.val_data.is_some() {
        return Err(Error::config("--val-data", "needs --train-data as well"));
    }
    let bpe = Tokenizer::gpt2()?;
    let (mut train_docs, mut val_docs) = (Vec::new(), Vec::new());
    for (i, story) in corpus::stories(args.seed, BUILTIN_STORIES).iter().enumerate() {
        let doc = bpe.encode(story)?;
        if i % BUILTIN_VAL_EVERY == 0 { &mut val_docs } else { &mut train_docs }.push(doc);
    }
    let eot = bpe.eot_token();
    let train =
        DataLoader::from_tokens("built-in stories (train)", corpus::join_documents(&train_docs, eot), b, t, shuffle)?;
    let val = DataLoader::from_tokens("built-in stories (val)", corpus::join_documents(&val_docs, eot), b, t, None)?;
    Ok((train, Some(val)))
}

/// Refuses data whose token ids do not fit the model's vocabulary, before any step runs.
fn check_vocab(loader: &DataLoader, config: &GPT2Config, flag: &str) -> Result<()> {
    let max = loader.max_token() as usize;
    if max >= config.vocab_size {
        return Err(Error::config(
            flag,
            format!(
                "{} holds token id {max}, but the model's vocabulary has {} tokens (ids 0..{})",
                loader.current_shard().display(),
                config.vocab_size,
                config.vocab_size - 1
            ),
        ));
    }
    Ok(())
}

/// A new run refuses an --out that already holds one, rather than overwriting its metrics and checkpoints.
fn check_fresh_out(out: &Path) -> Result<()> {
    let taken = ["run.json", "metrics.jsonl", "checkpoints"].into_iter().find(|name| out.join(name).exists());
    match taken {
        Some(name) => Err(Error::config(
            "--out",
            format!(
                "{} already holds a run ({name}); continue it with --resume, or choose another directory",
                out.display()
            ),
        )),
        None => Ok(()),
    }
}

/// The newest checkpoint of the run in `out` that reads back whole; newer damaged ones are named and skipped.
fn find_checkpoint(out: &Path, steps: usize) -> Result<TrainCheckpoint> {
    let (checkpoint, damaged) = rundir::latest_checkpoint(out)?;
    for e in &damaged {
        eprintln!("warning: skipping a damaged checkpoint: {e}");
    }
    let checkpoint = checkpoint.ok_or_else(|| {
        Error::config(
            "--resume",
            format!(
                "{} has no complete checkpoint to continue from{} (write them with --checkpoint-every)",
                rundir::checkpoints_dir(out).display(),
                if damaged.is_empty() { "" } else { ", only damaged ones" }
            ),
        )
    })?;
    if checkpoint.state.step >= steps {
        return Err(Error::config(
            "--steps",
            format!(
                "the run is already at step {} of --steps {steps}; pass a larger --steps to continue it",
                checkpoint.state.step
            ),
        ));
    }
    Ok(checkpoint)
}

fn run(args: &Args, argv: &[OsString]) -> Result<()> {
    check_flags(args)?;
    if let Some(Listing::Presets) = args.list {
        say!(
            "{}",
            llmrs::presets::preset_table(args.device, args.precision, args.batch_size, args.seq_len, recompute(args))?
        );
        return Ok(());
    }
    match (&args.out, args.resume) {
        (None, _) if args.checkpoint_every > 0 => {
            return Err(Error::config("--checkpoint-every", "needs --out, the directory to write checkpoints into"))
        }
        (Some(out), false) => check_fresh_out(out)?,
        _ => {}
    }
    let checkpoint = match (&args.out, args.resume) {
        (Some(out), true) => Some(find_checkpoint(out, args.steps)?),
        _ => None,
    };
    if let Some(threads) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .map_err(|e| Error::config("--threads", e.to_string()))?;
    }
    // A mistyped LLMRS_SIMD stops the run here rather than being ignored with a warning.
    llmrs::cpu::simd::check_env()?;
    let (backend, why) = llmrs::backend::open(args.device, args.precision)?;
    say!("device: {}{}{why}", backend.name(), if why.is_empty() { "" } else { " | " });

    let (cfg, source) = match &checkpoint {
        Some(c) => (c.config, ModelSource::Resumed),
        None => resolve_model(args)?,
    };
    if args.seq_len > cfg.max_seq_len {
        return Err(Error::config(
            "--seq-len",
            format!("{} is longer than the model's max sequence length {}", args.seq_len, cfg.max_seq_len),
        ));
    }
    // B*T must fit an i32 before the plan multiplies it by the model's sizes.
    llmrs::data::check_sizes(args.batch_size, args.seq_len)?;
    let plan = MemoryPlan::in_precision(&cfg, args.batch_size, args.seq_len, recompute(args), backend.precision())
        .with_workspace(backend.workspace_bytes());
    check_memory(&plan, &*backend, &cfg, args)?;
    let shuffle = (!args.no_shuffle).then_some(args.seed);
    let (mut train_loader, mut val_loader) = load_data(args, shuffle)?;
    let train_flag = match args.train_data {
        Some(_) => "--train-data",
        None => "--vocab-size (the built-in stories use GPT-2's 50257 tokens)",
    };
    check_vocab(&train_loader, &cfg, train_flag)?;
    if let Some(val) = &val_loader {
        check_vocab(val, &cfg, "--val-data")?;
    }
    let tokenizer = match &args.tokenizer {
        Some(path) => {
            let tokenizer = Tokenizer::from_llmc_file(path)?;
            // Checked now, not at the first sample: a mismatch found after training would lose the run.
            if tokenizer.vocab_size() != cfg.vocab_size {
                return Err(Error::config(
                    "--tokenizer",
                    format!(
                        "{} has {} tokens, but the model's vocabulary has {}",
                        path.display(),
                        tokenizer.vocab_size(),
                        cfg.vocab_size
                    ),
                ));
            }
            Some(tokenizer)
        }
        None if cfg.vocab_size == llmrs::config::GPT2_VOCAB_SIZE => Some(Tokenizer::gpt2()?),
        None => None,
    };
    let device = backend.name();
    let (mut model, resume_state) = match checkpoint {
        Some(c) => {
            let mut model = GPT2::with_backend(c.config, c.params, backend).map_err(|e| explain_oom(e, &plan))?;
            model.set_optimizer_state(c.m, c.v).map_err(|e| explain_oom(e, &plan))?;
            train_loader.restore(&c.state.loader)?;
            say!("resume: {} (step {} of {})", c.dir.display(), c.state.step, args.steps);
            (model, Some(c.state))
        }
        None => (build_model(source, args.seed, backend).map_err(|e| explain_oom(e, &plan))?, None),
    };
    model.set_recompute(recompute(args));
    let val_batches = val_loader.as_ref().map_or(0, |v| args.val_batches.min(v.batches_per_epoch()));

    say!(
        "model: {}{} | L={} C={} NH={} HS={} maxT={} V={} Vp={} | {:.2}M parameters",
        args.model,
        if has_size_flags(args) { " (resized by flags)" } else { "" },
        cfg.num_layers,
        cfg.channels,
        cfg.num_heads,
        cfg.head_size(),
        cfg.max_seq_len,
        cfg.vocab_size,
        cfg.padded_vocab_size,
        model.num_parameters() as f64 / 1e6
    );
    say!(
        "train: {} tokens ({} batches of B={} T={}, {}) | val: {}",
        train_loader.num_tokens(),
        train_loader.batches_per_epoch(),
        args.batch_size,
        args.seq_len,
        if args.no_shuffle { "in order" } else { "shuffled" },
        match &val_loader {
            Some(v) => format!("{} tokens, {val_batches} batches per evaluation", v.num_tokens()),
            None => "none".to_string(),
        }
    );
    say!(
        "memory: {plan}{}",
        match args.recompute {
            0 => "",
            1 => " | recomputing GELU",
            _ => " | recomputing GELU and LayerNorm",
        }
    );
    say!(
        "steps: {} | lr {:e} (warmup {}, cosine to {}x) | weight decay {} | grad clip {} | {:.1} GFLOP per step",
        args.steps,
        args.lr,
        args.warmup,
        args.lr_final_frac,
        args.weight_decay,
        args.grad_clip,
        cfg.flops_per_token(args.seq_len) * (args.batch_size * args.seq_len) as f64 / 1e9
    );

    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).map_err(|e| Error::io("cannot create output directory", out, e))?;
        let session = Session {
            started: rundir::now(),
            from_step: resume_state.as_ref().map_or(0, |s| s.step),
            device: device.clone(),
            git_commit: rundir::git_commit(),
        };
        let record = match &resume_state {
            Some(_) => {
                let mut record = rundir::read_run_record(out)?;
                record.sessions.push(session);
                record
            }
            None => RunRecord {
                argv: argv_strings(argv)?,
                args: args_map(args),
                model: cfg,
                parameters: model.num_parameters(),
                sessions: vec![session],
            },
        };
        rundir::write_run_record(out, &record)?;
    }
    let opts = TrainOptions {
        batch_size: args.batch_size,
        seq_len: args.seq_len,
        steps: args.steps,
        lr: args.lr,
        warmup: args.warmup,
        lr_final_frac: args.lr_final_frac,
        adamw: AdamWConfig { beta1: args.beta1, beta2: args.beta2, eps: args.eps, weight_decay: args.weight_decay },
        grad_clip: args.grad_clip,
        val_every: if val_loader.is_some() { args.val_every } else { 0 },
        val_batches,
        sample_every: args.sample_every,
        gen_tokens: args.gen_tokens,
        sampling: SamplingOptions { temperature: args.temperature, top_k: args.top_k },
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        keep_checkpoints: args.keep_checkpoints,
        inspect: args.inspect,
        skip_loss_z: args.skip_loss_z,
        skip_grad_z: args.skip_grad_z,
        max_skips: args.max_skips,
    };
    let steps = args.steps;
    let flops_per_step = cfg.flops_per_token(args.seq_len) * (args.batch_size * args.seq_len) as f64;
    // MFU where the device's peak is known (GPUs: against the tensor-core peak in bf16, the CUDA-core peak in
    // fp32), else GFLOP/s.
    let peak = llmrs::mfu::lookup(&device);
    let bf16 = plan.precision == Precision::Bf16;
    let speed = |ms: f64| {
        let flops_per_sec = flops_per_step / (ms / 1e3);
        match peak {
            Some(peak) => format!("MFU {:.1}%", 100.0 * llmrs::mfu::mfu(peak, flops_per_sec, bf16)),
            None => format!("{:.1} GFLOP/s", flops_per_sec / 1e9),
        }
    };
    // A bar with ETA on an interactive terminal; elsewhere the step lines on stdout are the progress.
    let interactive = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let style = if interactive { Style::Bar } else { Style::Silent };
    let progress = Progress::with_style("train", Some(steps as u64), Unit::Items("steps"), style);
    progress.inc(resume_state.as_ref().map_or(0, |s| s.step) as u64);
    let summary = train(
        &mut model,
        &mut train_loader,
        val_loader.as_mut(),
        tokenizer.as_ref(),
        &opts,
        args.out.as_deref(),
        resume_state.as_ref(),
        |event| match event {
            Event::Step(m) => {
                progress.suspend(|| {
                    say!(
                        "step {:>5}/{steps} | train loss {:.4} | lr {:.2e} | norm {:.3} | {:.1} ms | {:.0} tok/s | {}",
                        m.step + 1,
                        m.train_loss,
                        m.lr,
                        m.grad_norm,
                        m.ms,
                        m.tokens_per_sec,
                        speed(m.ms)
                    )
                });
                progress.inc(1);
                progress.set_message(format!("loss {:.4}", m.train_loss));
            }
            Event::EvalBatch { done, total, .. } => progress.set_message(format!("evaluating {done}/{total}")),
            Event::Val(m) => {
                progress.suspend(|| say!("step {:>5}/{steps} | val loss {:.4}", m.step, m.val_loss));
                progress.set_message(format!("val loss {:.4}", m.val_loss));
            }
            Event::Sample { step, text } => {
                progress.suspend(|| say!("--- sample at step {step} ---\n{}\n---", text.trim_end()))
            }
            Event::Skipped { step, reason } => {
                progress.suspend(|| say!("step {:>5}/{steps} | update skipped: {reason}", step + 1))
            }
            Event::Checkpoint { step, dir } => {
                progress.suspend(|| say!("step {step:>5}/{steps} | checkpoint {}", dir.display()))
            }
        },
    )
    .map_err(|e| explain_oom(e, &plan))?;
    progress.finish();
    say!("done: {} steps, {:.0} tokens/s on average", steps, summary.tokens_per_sec);
    if let Some(dir) = &args.out {
        let path = dir.join("model.bin");
        write_model(&path, &cfg, &model.params()?, ModelDtype::F32)?;
        say!("wrote {} and {}", path.display(), dir.join("metrics.jsonl").display());
        // The run is saved; a plot that cannot be drawn is worth a warning, not a failed run.
        let plot = dir.join("plot.svg");
        match llmrs::plot::plot_runs(&[dir], &plot) {
            Ok(()) => say!("plot: {}", plot.display()),
            Err(e) => eprintln!("warning: no plot: {e}"),
        }
    }
    Ok(())
}
