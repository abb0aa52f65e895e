//! `llmrs presets`: the ladder of model presets, with parameter counts and memory plans.

use llmrs::config::{GPT2Config, PRESETS};
use llmrs::model::MemoryPlan;
use llmrs::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Batch size the memory plans are computed for.
    #[arg(short = 'b', long, default_value_t = 4)]
    batch_size: usize,
    /// Sequence length the memory plans are computed for.
    #[arg(short = 't', long, default_value_t = 64)]
    seq_len: usize,
}

pub fn run(args: &Args) -> Result<()> {
    llmrs::data::check_sizes(args.batch_size, args.seq_len)?;
    println!(
        "{:<6} {:>4} {:>5} {:>4} {:>10}  memory for B={} T={}",
        "preset", "L", "C", "NH", "params", args.batch_size, args.seq_len
    );
    for &(name, ..) in PRESETS {
        let config = GPT2Config::preset(name).expect("listed presets exist");
        let plan = MemoryPlan::new(&config, args.batch_size, args.seq_len.min(config.max_seq_len));
        println!(
            "{:<6} {:>4} {:>5} {:>4} {:>9.1}M  {plan}",
            name,
            config.num_layers,
            config.channels,
            config.num_heads,
            config.num_parameters() as f64 / 1e6
        );
    }
    Ok(())
}
