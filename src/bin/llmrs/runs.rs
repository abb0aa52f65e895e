//! `llmrs runs`: the runs under a directory as one table, so experiments compare side by side.

use llmrs::rundir::{find_runs, RunSummary};
use llmrs::{Error, Result};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SortBy {
    Name,
    Steps,
    /// Best validation loss.
    Val,
    /// Tokens per second.
    Speed,
    /// Training time.
    Time,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run directories (holding run.json), or directories of runs
    #[arg(default_value = "runs")]
    paths: Vec<PathBuf>,
    /// Column to sort by (ascending)
    #[arg(long, value_enum, default_value_t = SortBy::Name)]
    sort: SortBy,
    /// Sort descending
    #[arg(long)]
    reverse: bool,
}

/// Settings that say where a run wrote, not what it was: never listed as a difference.
const NOT_A_DIFFERENCE: &[&str] = &["out", "resume"];

pub fn run(args: &Args) -> Result<()> {
    let mut runs = Vec::new();
    for path in &args.paths {
        for dir in find_runs(path)? {
            runs.push(RunSummary::load(&dir)?);
        }
    }
    if runs.is_empty() {
        let paths: Vec<String> = args.paths.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::config("runs", format!("no run.json in {} or the directories in it", paths.join(", "))));
    }
    let key = |r: &RunSummary| -> f64 {
        match args.sort {
            SortBy::Name => 0.0,
            SortBy::Steps => r.steps as f64,
            SortBy::Val => r.best_val.map_or(f64::INFINITY, |(loss, _)| loss as f64),
            SortBy::Speed => r.tokens_per_sec,
            SortBy::Time => r.train_seconds,
        }
    };
    runs.sort_by(|a, b| key(a).total_cmp(&key(b)).then_with(|| a.dir.cmp(&b.dir)));
    if args.reverse {
        runs.reverse();
    }

    // The settings whose values are not the same in every run.
    let differing: Vec<&String> = runs[0]
        .record
        .args
        .keys()
        .chain(runs.iter().flat_map(|r| r.record.args.keys()))
        .filter(|k| !NOT_A_DIFFERENCE.contains(&k.as_str()))
        .filter(|k| runs.iter().any(|r| r.record.args.get(*k) != runs[0].record.args.get(*k)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();

    println!(
        "{:<24} {:>7} {:>10} {:>16} {:>9} {:>9}  {:<8} {:<6}  differs",
        "run", "steps", "train loss", "best val (step)", "tok/s", "time", "params", "device"
    );
    for r in &runs {
        let name = r.dir.file_name().map_or_else(|| r.dir.display().to_string(), |n| n.to_string_lossy().into_owned());
        let differs: Vec<String> = differing
            .iter()
            .map(|k| {
                let value = r.record.args.get(*k).map_or("-".to_string(), |v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => "-".to_string(),
                    other => other.to_string(),
                });
                format!("{k}={value}")
            })
            .collect();
        println!(
            "{:<24} {:>7} {:>10} {:>16} {:>9.0} {:>9}  {:<8} {:<6}  {}",
            name,
            r.steps,
            r.last_train_loss.map_or("-".to_string(), |l| format!("{l:.4}")),
            r.best_val.map_or("-".to_string(), |(l, s)| format!("{l:.4} ({s})")),
            r.tokens_per_sec,
            duration(r.train_seconds),
            format!("{:.1}M", r.record.parameters as f64 / 1e6),
            // "cpu (2 threads)" -> "cpu": the kind of device of the latest session.
            r.record.sessions.last().and_then(|s| s.device.split_whitespace().next()).unwrap_or("-"),
            differs.join(" ")
        );
    }
    Ok(())
}

/// 42s, 3m05s, 2h07m.
fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}
