//! `llmrs attention`: what one attention head looks at, on a prompt, as an SVG heat map.

use llmrs::backend::Device;
use llmrs::checkpoint::read_model;
use llmrs::model::GPT2;
use llmrs::tokenizer::Tokenizer;
use llmrs::{Error, Result};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A model file (llm.c .bin), or a run directory (its final model.bin, else its newest checkpoint)
    model: PathBuf,
    /// The text whose tokens attend to each other
    #[arg(short, long)]
    prompt: String,
    /// Layer (0-based)
    #[arg(long, default_value_t = 0)]
    layer: usize,
    /// Head (0-based)
    #[arg(long, default_value_t = 0)]
    head: usize,
    /// Where to write the SVG
    #[arg(short, long, default_value = "attention.svg")]
    out: PathBuf,
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
    /// Storage precision on a GPU (default bf16; the CPU computes in fp32).
    #[arg(long, value_enum)]
    precision: Option<llmrs::backend::Precision>,
}

pub fn run(args: &Args) -> Result<()> {
    let path = crate::sample::model_file(&args.model)?;
    let (config, params) = read_model(&path)?;
    if config.vocab_size != llmrs::config::GPT2_VOCAB_SIZE {
        return Err(Error::config(
            "MODEL",
            format!("{} does not use GPT-2's vocabulary, which prompts are encoded with", path.display()),
        ));
    }
    let tokenizer = Tokenizer::gpt2()?;
    let tokens = tokenizer.encode(&args.prompt)?;
    if tokens.is_empty() || tokens.len() > config.max_seq_len {
        return Err(Error::config(
            "--prompt",
            format!("expected 1 to {} tokens (the model's maxT), found {}", config.max_seq_len, tokens.len()),
        ));
    }
    let (backend, _) = llmrs::backend::open(args.device, args.precision)?;
    let mut model = GPT2::with_backend(config, params, backend)?;
    model.forward(&tokens, None, 1, tokens.len())?;
    let map = model.attention_map(0, args.layer, args.head).map_err(|e| match e {
        Error::Config { name, message } => Error::config(format!("--{name}"), message),
        other => other,
    })?;
    let labels: Vec<String> = tokens.iter().map(|&id| tokenizer.decode(&[id])).collect();
    let title = format!("{}: layer {} head {}", path.display(), args.layer, args.head);
    llmrs::plot::attention_svg(&labels, &map, &title, &args.out)?;
    println!("wrote {} ({} tokens)", args.out.display(), tokens.len());
    Ok(())
}
