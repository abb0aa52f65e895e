//! `llmrs presets`: the ladder of model presets with their parameters, memory plans and estimated time per step
//! on this device (the same table as `train_gpt2 --list presets`).

use llmrs::backend::Device;
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
}

pub fn run(args: &Args) -> Result<()> {
    print!("{}", llmrs::presets::preset_table(args.device, args.batch_size, args.seq_len)?);
    Ok(())
}
