//! Everything a run keeps in its `--out` directory, and how it survives a restart:
//!
//! ```text
//! out/metrics.jsonl                  one JSON object per step, evaluation and resume
//! out/checkpoints/step_000100/       a training checkpoint after 100 updates:
//!     model.bin                        the parameters, an llm.c model file (v3, fp32)
//!     optimizer.bin                    AdamW's m and v: a 256-int32 header, then m and v as f32
//!     state.json                       the step, the data loader's position, the sampling generator
//! out/model.bin                      the final parameters
//! ```
//!
//! A checkpoint is written into `step_NNNNNN.tmp/`, every file synced, then the directory is renamed: a crash
//! leaves either a complete checkpoint or a `.tmp` directory that is never taken for one. Deleting one renames it
//! to `.deleting` first, so a crash mid-delete cannot leave a half checkpoint under a checkpoint's name either.
//! Reading checks every header and size, so a checkpoint damaged anyway (a disk, a user) is reported and skipped
//! in favour of the previous one.

use crate::checkpoint::{read_model, write_atomically, write_model, ModelDtype, HEADER_BYTES, HEADER_INTS};
use crate::config::GPT2Config;
use crate::data::LoaderState;
use crate::error::{Error, Result};
use crate::metrics::{RunMetrics, METRICS_FILE};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// header[0] of an optimizer-state file (llmrs's own format: llm.c's state file holds other things).
pub const OPTIMIZER_MAGIC: i32 = 20261128;
/// header[1] of the optimizer-state format this module reads and writes.
pub const OPTIMIZER_VERSION: i32 = 1;

/// Everything besides parameters and AdamW's moments that a run needs to continue exactly where it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// AdamW updates completed: the resumed run continues with step `step` (counting from 0).
    pub step: usize,
    /// The training loader's position (the validation loader restarts at every evaluation).
    pub loader: LoaderState,
    /// The sampling generator's state.
    pub rng: u64,
    /// Seconds spent training so far, over all sessions of the run.
    pub elapsed_s: f64,
    /// The outlier detectors' windows (loss, gradient norm).
    #[serde(default)]
    pub detectors: [crate::train::OutlierDetector; 2],
}

/// A training checkpoint read back from disk.
pub struct TrainCheckpoint {
    pub dir: PathBuf,
    pub config: GPT2Config,
    pub params: Vec<f32>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub state: TrainState,
}

/// `out/checkpoints`.
pub fn checkpoints_dir(out: &Path) -> PathBuf {
    out.join("checkpoints")
}

fn step_dir(out: &Path, step: usize) -> PathBuf {
    checkpoints_dir(out).join(format!("step_{step:06}"))
}

/// Writes a checkpoint of the run in `out` after `state.step` updates; returns its directory.
pub fn write_checkpoint(
    out: &Path,
    config: &GPT2Config,
    params: &[f32],
    (m, v): (&[f32], &[f32]),
    state: &TrainState,
) -> Result<PathBuf> {
    let root = checkpoints_dir(out);
    std::fs::create_dir_all(&root).map_err(|e| Error::io("cannot create checkpoint directory", &root, e))?;
    let dir = step_dir(out, state.step);
    let mut tmp = dir.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash mid-write: never a checkpoint, safe to replace.
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io("cannot remove unfinished checkpoint", &tmp, e))?;
    }
    std::fs::create_dir(&tmp).map_err(|e| Error::io("cannot create checkpoint directory", &tmp, e))?;

    write_model(&tmp.join("model.bin"), config, params, ModelDtype::F32)?;
    let optimizer = tmp.join("optimizer.bin");
    if m.len() != params.len() || v.len() != params.len() {
        return Err(Error::format(
            &optimizer,
            "AdamW moments to write",
            params.len(),
            format!("{} and {}", m.len(), v.len()),
        ));
    }
    let mut header = [0i32; HEADER_INTS];
    header[0] = OPTIMIZER_MAGIC;
    header[1] = OPTIMIZER_VERSION;
    // validate() bounds the parameter count by i32::MAX.
    header[2] = params.len() as i32;
    write_atomically(&optimizer, |out| {
        out.write_all(bytemuck::bytes_of(&header))?;
        out.write_all(bytemuck::cast_slice(m))?;
        out.write_all(bytemuck::cast_slice(v))
    })?;
    let json = serde_json::to_string_pretty(state).expect("the train state serializes");
    write_atomically(&tmp.join("state.json"), |out| out.write_all(json.as_bytes()))?;

    // Replacing a checkpoint of the same step (a run resumed from an older one) needs the old one out of the way;
    // the previous checkpoints stay meanwhile.
    if dir.exists() {
        remove_checkpoint(&dir)?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| Error::io("cannot rename finished checkpoint to", &dir, e))?;
    sync_dir(&root)?;
    Ok(dir)
}

/// Makes renames inside `dir` durable (Unix: a directory can be opened and synced).
fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("cannot sync directory", dir, e))?;
    Ok(())
}

/// Reads and checks the checkpoint in `dir`.
pub fn read_checkpoint(dir: &Path) -> Result<TrainCheckpoint> {
    let (config, params) = read_model(&dir.join("model.bin"))?;
    let path = dir.join("optimizer.bin");
    let mut file = File::open(&path).map_err(|e| Error::io("cannot open optimizer state", &path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io("cannot read metadata of", &path, e))?.len();
    let expected_len = HEADER_BYTES + 2 * 4 * params.len() as u64;
    if file_len != expected_len {
        return Err(Error::format(
            &path,
            format!("file size for the AdamW moments of {} parameters", params.len()),
            format!("{expected_len} bytes"),
            format!("{file_len} bytes"),
        ));
    }
    let mut header = [0i32; HEADER_INTS];
    file.read_exact(bytemuck::bytes_of_mut(&mut header)).map_err(|e| Error::io("cannot read", &path, e))?;
    if header[0] != OPTIMIZER_MAGIC {
        return Err(Error::format(&path, "magic number (header[0]) of an optimizer state", OPTIMIZER_MAGIC, header[0]));
    }
    if header[1] != OPTIMIZER_VERSION {
        return Err(Error::format(&path, "version (header[1])", OPTIMIZER_VERSION, header[1]));
    }
    if header[2] as i64 != params.len() as i64 {
        return Err(Error::format(
            &path,
            "parameter count (header[2]) of model.bin beside it",
            params.len(),
            header[2],
        ));
    }
    let mut m = vec![0.0f32; params.len()];
    let mut v = vec![0.0f32; params.len()];
    file.read_exact(bytemuck::cast_slice_mut(&mut m)).map_err(|e| Error::io("cannot read", &path, e))?;
    file.read_exact(bytemuck::cast_slice_mut(&mut v)).map_err(|e| Error::io("cannot read", &path, e))?;

    let path = dir.join("state.json");
    // Bytes, not a String: invalid UTF-8 is a damaged file, which serde_json reports with its line and column.
    let bytes = std::fs::read(&path).map_err(|e| Error::io("cannot read", &path, e))?;
    let state: TrainState = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(&path, "training state", "the JSON llmrs writes", e.to_string()))?;
    Ok(TrainCheckpoint { dir: dir.to_path_buf(), config, params, m, v, state })
}

/// The finished checkpoints of the run in `out`, oldest first, as (step, directory).
pub fn list_checkpoints(out: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let root = checkpoints_dir(out);
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot list checkpoints in", &root, e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("cannot list checkpoints in", &root, e))?;
        let name = entry.file_name();
        // step_NNNNNN only: a .tmp suffix marks a write that never finished.
        let step = name.to_str().and_then(|n| n.strip_prefix("step_")).and_then(|s| s.parse::<usize>().ok());
        if let Some(step) = step {
            found.push((step, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest checkpoint of the run in `out` that reads back whole, and the newer ones that did not (with why).
pub fn latest_checkpoint(out: &Path) -> Result<(Option<TrainCheckpoint>, Vec<Error>)> {
    let mut damaged = Vec::new();
    for (_, dir) in list_checkpoints(out)?.into_iter().rev() {
        match read_checkpoint(&dir) {
            Ok(checkpoint) => return Ok((Some(checkpoint), damaged)),
            Err(e) => damaged.push(e),
        }
    }
    Ok((None, damaged))
}

/// Deletes all but the newest `keep` checkpoints (0 keeps all).
pub fn prune_checkpoints(out: &Path, keep: usize) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let all = list_checkpoints(out)?;
    for (_, dir) in &all[..all.len().saturating_sub(keep)] {
        remove_checkpoint(dir)?;
    }
    Ok(())
}

/// Deletes a checkpoint directory so that no crash can leave a half-deleted one under a checkpoint's name: it is
/// renamed to `<name>.deleting` first (atomic), which `list_checkpoints` never reads, then removed. A leftover of
/// an earlier crash goes first.
fn remove_checkpoint(dir: &Path) -> Result<()> {
    let mut doomed = dir.as_os_str().to_owned();
    doomed.push(".deleting");
    let doomed = PathBuf::from(doomed);
    if doomed.exists() {
        std::fs::remove_dir_all(&doomed).map_err(|e| Error::io("cannot delete old checkpoint", &doomed, e))?;
    }
    std::fs::rename(dir, &doomed).map_err(|e| Error::io("cannot delete old checkpoint", dir, e))?;
    std::fs::remove_dir_all(&doomed).map_err(|e| Error::io("cannot delete old checkpoint", &doomed, e))
}

/// Cuts `out/metrics.jsonl` back to the records of steps before `step` (a run resumed from a checkpoint redoes
/// the steps after it), atomically. Lines that are not JSON objects with a `step` are kept, except a last line
/// without its newline that is not JSON: the crash being resumed from cut it short, and once the resumed run
/// appends after it, it would be a bad line in the middle of the file that the metrics reader refuses.
pub fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("cannot read", path, e)),
    };
    let mut kept = Vec::with_capacity(bytes.len());
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let (line, terminated) = match line.strip_suffix(b"\n") {
            Some(line) => (line, true),
            None => (line, false),
        };
        let record = serde_json::from_slice::<serde_json::Value>(line).ok();
        if record.is_none() && !terminated {
            continue;
        }
        let record_step = record.and_then(|record| record.get("step").and_then(|s| s.as_u64()));
        if record_step.is_none_or(|s| (s as usize) < step) {
            kept.extend_from_slice(line);
            kept.push(b'\n');
        }
    }
    write_atomically(path, |out| out.write_all(&kept))
}

/// One session of a run: its start, or a resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Seconds since the Unix epoch.
    pub started: u64,
    /// The step it started from (0, or a checkpoint's).
    pub from_step: usize,
    pub device: String,
    /// The llmrs source it ran (`git rev-parse`, with "+dirty" for uncommitted changes), when known.
    pub git_commit: Option<String>,
}

/// `out/run.json`: what the run is, for resuming it and for the `runs` table. Written when the run starts, and
/// again (a session added) at each resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The trainer's command line, after the program name: a resume re-reads it so the run keeps its settings.
    pub argv: Vec<String>,
    /// Every setting after parsing, flag name -> value, so runs compare without parsing command lines.
    pub args: serde_json::Map<String, serde_json::Value>,
    pub model: GPT2Config,
    pub parameters: usize,
    pub sessions: Vec<Session>,
}

/// `out/run.json`.
pub fn run_record_path(out: &Path) -> PathBuf {
    out.join("run.json")
}

/// Reads `out/run.json`.
pub fn read_run_record(out: &Path) -> Result<RunRecord> {
    let path = run_record_path(out);
    let bytes = std::fs::read(&path).map_err(|e| Error::io("cannot read run record", &path, e))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(&path, "run record", "the JSON llmrs writes", e.to_string()))
}

/// Writes `out/run.json` atomically.
pub fn write_run_record(out: &Path, record: &RunRecord) -> Result<()> {
    let json = serde_json::to_string_pretty(record).expect("the run record serializes");
    write_atomically(&run_record_path(out), |w| w.write_all(json.as_bytes()))
}

/// The commit of the llmrs source tree this binary was built from, with "+dirty" when it has uncommitted
/// changes; None where git or the tree is not available (an installed binary).
pub fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{commit}+dirty") } else { commit })
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What the `runs` table shows of one run, from its run.json and metrics.jsonl.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub dir: PathBuf,
    pub record: RunRecord,
    /// Training steps recorded (the last step's number + 1).
    pub steps: usize,
    pub last_train_loss: Option<f32>,
    /// The lowest validation loss and its step.
    pub best_val: Option<(f32, usize)>,
    /// Seconds spent in training steps (evaluation and sampling excluded).
    pub train_seconds: f64,
    /// Tokens trained per second of `train_seconds`.
    pub tokens_per_sec: f64,
}

impl RunSummary {
    /// Reads the run in `dir` (see `metrics::RunMetrics` for what is read of metrics.jsonl).
    pub fn load(dir: &Path) -> Result<Self> {
        let record = read_run_record(dir)?;
        let metrics = if dir.join(METRICS_FILE).exists() { Some(RunMetrics::read(dir)?) } else { None };
        let steps = metrics.as_ref().map_or(&[][..], |m| &m.steps[..]);
        let evals = metrics.as_ref().map_or(&[][..], |m| &m.evals[..]);
        let train_seconds: f64 = steps.iter().map(|s| s.ms / 1e3).filter(|s| s.is_finite()).sum();
        let tokens: f64 = steps.iter().map(|s| s.tokens_per_sec * s.ms / 1e3).filter(|t| t.is_finite()).sum();
        let best_val = evals
            .iter()
            .filter(|e| e.val_loss.is_finite())
            .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss))
            .map(|e| (e.val_loss as f32, e.step));
        Ok(RunSummary {
            dir: dir.to_path_buf(),
            steps: steps.iter().map(|s| s.step.saturating_add(1)).max().unwrap_or(0),
            last_train_loss: steps.last().map(|s| s.train_loss as f32),
            best_val,
            train_seconds,
            tokens_per_sec: if train_seconds > 0.0 { tokens / train_seconds } else { 0.0 },
            record,
        })
    }
}

/// The run directories under `path`: `path` itself when it holds a run.json, else its subdirectories that do.
pub fn find_runs(path: &Path) -> Result<Vec<PathBuf>> {
    if run_record_path(path).exists() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| Error::io("cannot list runs in", path, e))?;
    let mut runs = Vec::new();
    for entry in entries {
        let dir = entry.map_err(|e| Error::io("cannot list runs in", path, e))?.path();
        if run_record_path(&dir).exists() {
            runs.push(dir);
        }
    }
    runs.sort();
    Ok(runs)
}
