//! `llmrs sample`: load a model, continue a prompt, stream the text as it is generated.

use llmrs::backend::Device;
use llmrs::checkpoint::read_model;
use llmrs::model::GPT2;
use llmrs::rng::Rng;
use llmrs::sample::{generate, SamplingOptions, StreamDecoder};
use llmrs::tokenizer::Tokenizer;
use llmrs::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A model file (llm.c .bin), or a run directory: its final model.bin, else its newest checkpoint
    model: PathBuf,
    /// Text to continue (default: start a new document, after <|endoftext|>)
    #[arg(short, long, default_value = "")]
    prompt: String,
    /// Tokens to generate
    #[arg(short = 'n', long, default_value_t = 128)]
    tokens: usize,
    /// Sampling temperature (0 = always the most likely token)
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Sample among the k most likely tokens only (0 = all)
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Tokens of context the model sees (default: the model's maxT)
    #[arg(long)]
    context: Option<usize>,
    /// llm.c tokenizer .bin for models whose vocabulary is not GPT-2's
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    device: Device,
    /// Storage precision on a GPU (default bf16; the CPU computes in fp32).
    #[arg(long, value_enum)]
    precision: Option<llmrs::backend::Precision>,
}

/// The model file `path` names: the file itself, or in a run directory the final model or the newest checkpoint.
pub fn model_file(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let last = path.join("model.bin");
    if last.exists() {
        return Ok(last);
    }
    match llmrs::rundir::list_checkpoints(path)?.pop() {
        Some((_, dir)) => Ok(dir.join("model.bin")),
        None => Err(Error::config("MODEL", format!("{} holds neither model.bin nor a checkpoint", path.display()))),
    }
}

pub fn run(args: &Args) -> Result<()> {
    let sampling = SamplingOptions { temperature: args.temperature, top_k: args.top_k };
    sampling.check("--temperature")?;
    let path = model_file(&args.model)?;
    let (config, params) = read_model(&path)?;
    let tokenizer = match &args.tokenizer {
        Some(file) => Tokenizer::from_llmc_file(file)?,
        None if config.vocab_size == llmrs::config::GPT2_VOCAB_SIZE => Tokenizer::gpt2()?,
        None => {
            return Err(Error::config(
                "--tokenizer",
                format!(
                    "{} has a vocabulary of {} tokens, not GPT-2's {}: give its llm.c tokenizer.bin",
                    path.display(),
                    config.vocab_size,
                    llmrs::config::GPT2_VOCAB_SIZE
                ),
            ))
        }
    };
    if tokenizer.vocab_size() != config.vocab_size {
        return Err(Error::config(
            "--tokenizer",
            format!(
                "{} has {} tokens, the model {}",
                tokenizer.source().display(),
                tokenizer.vocab_size(),
                config.vocab_size
            ),
        ));
    }
    let mut prompt = vec![tokenizer.eot_token()];
    if !args.prompt.is_empty() {
        prompt = tokenizer.encode(&args.prompt)?;
    }
    let context = args.context.unwrap_or(config.max_seq_len);
    if context == 0 {
        return Err(Error::config("--context", "must be at least 1, found 0"));
    }
    let (backend, _) = llmrs::backend::open(args.device, args.precision)?;
    eprintln!("{}: {:.2}M parameters on {}", path.display(), config.num_parameters() as f64 / 1e6, backend.name());
    let mut model = GPT2::with_backend(config, params, backend)?;

    let mut stdout = std::io::stdout().lock();
    // A closed stdout (`| head`) ends the output, not the program with a panic.
    let _ = write!(stdout, "{}", args.prompt);
    let mut decoder = StreamDecoder::new(&tokenizer);
    let mut rng = Rng::new(args.seed);
    generate(&mut model, &prompt, args.tokens, context, &sampling, &mut rng, |id| {
        let _ = write!(stdout, "{}", decoder.push(id));
        let _ = stdout.flush();
    })?;
    let _ = writeln!(stdout, "{}", decoder.finish());
    Ok(())
}
