//! `llmrs`: the tools around training (`train_gpt2` trains). One subcommand per job, each in its own file here;
//! the work itself lives in the library so tests can call it directly.

mod attention;
mod import_hf;
mod plot;
mod prepare;
mod presets;
mod runs;
mod sample;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Tools around llmrs training runs: model presets, ...
#[derive(Debug, Parser)]
#[command(name = "llmrs", version, max_term_width = 110)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the model presets with their sizes and memory plans.
    Presets(presets::Args),
    /// Compare runs: a table of their steps, losses, speed and the settings that differ.
    Runs(runs::Args),
    /// Continue a prompt with a trained model, streaming the text.
    Sample(sample::Args),
    /// Draw what one attention head attends to on a prompt, as an SVG heat map.
    Attention(attention::Args),
    /// Convert a Hugging Face GPT-2 (config.json + model.safetensors) into an llm.c model file.
    ImportHf(import_hf::Args),
    /// Plot the loss, learning rate and gradient norm of training runs into one SVG.
    Plot(plot::Args),
    /// Tokenize text files, directories or a downloaded dataset into llm.c token shards.
    Prepare(prepare::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Presets(args) => presets::run(args),
        Command::Runs(args) => runs::run(args),
        Command::Sample(args) => sample::run(args),
        Command::Attention(args) => attention::run(args),
        Command::ImportHf(args) => import_hf::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Prepare(args) => prepare::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
