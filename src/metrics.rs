//! Reading a run's `metrics.jsonl` (what `train_gpt2 --out DIR` writes, one JSON object per line), for the plots and
//! the `runs` table. Lines with `train_loss` are steps (`lr`, `grad_norm`, `ms`, `tokens_per_sec` beside it), lines
//! with `val_loss` are evaluations; every other key and kind of line is ignored, so the trainer can log more
//! without breaking old readers. A number logged as `null` (serde_json's spelling of NaN and infinity, i.e. a
//! diverged loss) reads as NaN. A last line without its newline is one the trainer is still writing (or a crash cut
//! short): it is skipped when it does not parse yet.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{Error, Result};

/// The file a run directory holds its metrics in (`train_gpt2 --out DIR` writes it).
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Characters of a bad line quoted in an error message.
const QUOTED_CHARS: usize = 40;

/// One training step as logged: a value the run logged as `null` or did not log is NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepPoint {
    pub step: usize,
    pub train_loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// Wall time of the step in milliseconds.
    pub ms: f64,
    pub tokens_per_sec: f64,
}

/// One evaluation as logged (`val_loss` NaN when logged as `null`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalPoint {
    pub step: usize,
    pub val_loss: f64,
}

/// What one run's metrics.jsonl holds, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct RunMetrics {
    /// The run directory's name (or the file's stem when the file is not called metrics.jsonl).
    pub name: String,
    /// The metrics file that was read.
    pub path: PathBuf,
    pub steps: Vec<StepPoint>,
    pub evals: Vec<EvalPoint>,
}

impl RunMetrics {
    /// Reads a run given as its `--out` directory or as its metrics file.
    pub fn read(run: &Path) -> Result<Self> {
        let path = if run.is_dir() { run.join(METRICS_FILE) } else { run.to_path_buf() };
        let bytes = std::fs::read(&path).map_err(|e| Error::io("cannot read run metrics", &path, e))?;
        let mut metrics = RunMetrics::parse(&path, &bytes)?;
        metrics.name = run_name(&path);
        Ok(metrics)
    }

    /// Parses the contents of a metrics file; `path` names it in errors (and in the result, with its stem as the
    /// name until [`RunMetrics::read`] sets the run's).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        let mut run = RunMetrics {
            name: path.file_stem().unwrap_or_default().to_string_lossy().into_owned(),
            path: path.to_path_buf(),
            steps: Vec::new(),
            evals: Vec::new(),
        };
        let lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        let unterminated = lines.len() - 1; // index of the text after the last newline (empty when there is none)
        for (index, line) in lines.iter().enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let at = |what: &str| format!("line {}: {what}", index + 1);
            let object = match serde_json::from_slice::<Value>(line) {
                Ok(Value::Object(object)) => object,
                Err(_) if index == unterminated => continue, // still being written
                _ => return Err(Error::format(path, format!("line {}", index + 1), "a JSON object", quote(line))),
            };
            let number =
                |key: &str| number(&object, key).map_err(|found| Error::format(path, at(key), "a number", found));
            let (train_loss, val_loss) = (number("train_loss")?, number("val_loss")?);
            if train_loss.is_none() && val_loss.is_none() {
                continue; // a kind of line the plot does not know
            }
            let step = object.get("step").and_then(Value::as_u64).and_then(|s| usize::try_from(s).ok());
            let step = step.ok_or_else(|| {
                let found = object.get("step").map_or("nothing".to_string(), Value::to_string);
                Error::format(path, at("step"), "a non-negative integer", found)
            })?;
            if let Some(train_loss) = train_loss {
                let (lr, grad_norm) = (number("lr")?, number("grad_norm")?);
                let (ms, tokens_per_sec) = (number("ms")?, number("tokens_per_sec")?);
                run.steps.push(StepPoint {
                    step,
                    train_loss,
                    lr: lr.unwrap_or(f64::NAN),
                    grad_norm: grad_norm.unwrap_or(f64::NAN),
                    ms: ms.unwrap_or(f64::NAN),
                    tokens_per_sec: tokens_per_sec.unwrap_or(f64::NAN),
                });
            }
            if let Some(val_loss) = val_loss {
                run.evals.push(EvalPoint { step, val_loss });
            }
        }
        Ok(run)
    }

    /// True when the run has logged neither a step nor an evaluation yet.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.evals.is_empty()
    }

    /// The largest step the run has logged.
    pub fn last_step(&self) -> Option<usize> {
        let steps = self.steps.iter().map(|p| p.step);
        steps.chain(self.evals.iter().map(|p| p.step)).max()
    }

    /// The last evaluation with a finite loss.
    pub fn last_eval(&self) -> Option<EvalPoint> {
        self.evals.iter().rev().find(|p| p.val_loss.is_finite()).copied()
    }
}

/// `key` of a metrics line: absent -> None, `null` -> NaN, a number -> itself; anything else is returned as the
/// text to report.
fn number(object: &Map<String, Value>, key: &str) -> std::result::Result<Option<f64>, String> {
    match object.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(f64::NAN)),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(other.to_string()),
    }
}

/// The start of a bad line, quoted for an error message.
fn quote(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    match text.char_indices().nth(QUOTED_CHARS) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// A run's name: its directory's name for `DIR/metrics.jsonl`, else the file's stem.
fn run_name(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == METRICS_FILE) {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
        if let Some(name) = dir.file_name() {
            return name.to_string_lossy().into_owned();
        }
    }
    path.file_stem().unwrap_or(path.as_os_str()).to_string_lossy().into_owned()
}
