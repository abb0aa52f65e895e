//! `llmrs plot`: one SVG of the loss, learning rate and gradient norm of one or several training runs.

use std::path::PathBuf;

use llmrs::metrics::RunMetrics;
use llmrs::plot::plot_metrics;
use llmrs::Result;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Runs to plot, overlaid: each a `train_gpt2 --out` directory or its metrics.jsonl.
    #[arg(required = true, value_name = "RUN")]
    runs: Vec<PathBuf>,
    /// The SVG to write (replaced atomically).
    #[arg(short = 'o', long, default_value = "plot.svg")]
    out: PathBuf,
}

pub fn run(args: &Args) -> Result<()> {
    let runs = args.runs.iter().map(|run| RunMetrics::read(run)).collect::<Result<Vec<_>>>()?;
    plot_metrics(&runs, &args.out)?;
    let last_step = runs.iter().filter_map(RunMetrics::last_step).max().unwrap_or(0);
    let plural = if runs.len() == 1 { "" } else { "s" };
    println!("wrote {}: {} run{plural}, up to step {last_step}", args.out.display(), runs.len());
    Ok(())
}
