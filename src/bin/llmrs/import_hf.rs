//! `llmrs import-hf`: a Hugging Face GPT-2 (`config.json` + `model.safetensors`) as an llm.c model file, which
//! `train_gpt2 --model` then loads. The conversion and its checks live in `llmrs::hf`.

use std::path::PathBuf;

use llmrs::checkpoint::{write_model, ModelDtype};
use llmrs::hf::{import, HfPaths};
use llmrs::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Dtype {
    /// llm.c version 3: exact.
    F32,
    /// llm.c version 5: half the size, rounded to nearest even.
    Bf16,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A model directory holding config.json and model.safetensors, or those two files (config first).
    #[arg(required = true, num_args = 1..=2, value_name = "DIR | CONFIG WEIGHTS")]
    inputs: Vec<PathBuf>,
    /// The llm.c model file to write (replaced atomically).
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// How the parameters are stored in the output.
    #[arg(long, value_enum, default_value_t = Dtype::F32)]
    dtype: Dtype,
}

pub fn run(args: &Args) -> Result<()> {
    let paths = HfPaths::from_inputs(&args.inputs)?;
    let (config, params) = import(&paths)?;
    println!(
        "config: L={} C={} NH={} HS={} maxT={} V={} Vp={} | {} parameters ({:.2}M, wte padded to Vp rows)",
        config.num_layers,
        config.channels,
        config.num_heads,
        config.head_size(),
        config.max_seq_len,
        config.vocab_size,
        config.padded_vocab_size,
        params.len(),
        params.len() as f64 / 1e6
    );
    let dtype = match args.dtype {
        Dtype::F32 => ModelDtype::F32,
        Dtype::Bf16 => ModelDtype::Bf16,
    };
    write_model(&args.output, &config, &params, dtype)?;
    println!("wrote {} (llm.c model version {})", args.output.display(), dtype.version());
    Ok(())
}
