//! `llmrs presets`: the ladder of model presets with their parameters, memory plans and estimated time per step
//! on this device (the same table as `train_gpt2 --list presets`).

use llmrs::backend::{Device, Precision};
use llmrs::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Batch size the memory plans and times are for.
    #[arg(short = 'b', long, default_value_t = 4)]
    batch_size: usize,
    /// Sequence length the memory plans and times are for (cut to each preset's maxT).
    #[arg(short = 't', long, default_value_t = 64)]
    seq_len: usize,
    /// Device to estimate for.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    device: Device,
    /// Storage precision of parameters, activations and gradients (default: bf16 on a GPU, fp32 on the CPU).
    #[arg(long, value_enum)]
    precision: Option<Precision>,
    /// Plans with recomputation in the backward pass: 0 none, 1 GELU, 2 GELU and LayerNorm
    #[arg(short = 'r', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    recompute: u8,
}

pub fn run(args: &Args) -> Result<()> {
    let recompute = llmrs::layout::Recompute::from_level(args.recompute).expect("clap checks the range");
    print!("{}", llmrs::presets::preset_table(args.device, args.precision, args.batch_size, args.seq_len, recompute)?);
    Ok(())
}
