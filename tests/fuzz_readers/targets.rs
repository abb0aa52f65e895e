//! What fuzzing a file reader checks, shared by the property tests (`tests/fuzz_readers/main.rs`, stable Rust) and
//! the libFuzzer targets (`fuzz/fuzz_targets/`, nightly), so both hold every reader to the same contract:
//!
//! - The input is cut into the target's files (`split`), written into a directory and handed to the reader by
//!   path, as the trainer does. The reader returns Ok, or an error whose message names one of those files; a
//!   format error names the field (a non-empty `what`), and a file's contents are never blamed on the OS (an I/O
//!   error of kind InvalidData, which names no field).
//! - It never panics (`catch_unwind` around the call).
//! - No single allocation during the call exceeds the target's bound, a linear function of the input's size
//!   (`Target::bound`): a header that claims a huge size must be checked against the file before anything is
//!   allocated for it. A counting global allocator records the largest request per thread.
//! - After Ok, the result is used a little the way the trainer uses it (batches drawn, ids decoded), and what the
//!   reader promised is asserted (the parameter count of the header, ...).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use llmrs::checkpoint::{read_model, read_model_header};
use llmrs::data::DataLoader;
use llmrs::hf::{import, HfPaths};
use llmrs::metrics::RunMetrics;
use llmrs::rundir::{read_checkpoint, truncate_metrics, RunSummary};
use llmrs::tokenizer::Tokenizer;
use llmrs::Error;

/// One reader under test.
pub struct Target {
    pub name: &'static str,
    /// The files the reader reads, in the order `split` cuts them from an input.
    pub files: &'static [&'static str],
    /// Largest single allocation allowed: `per_byte` bytes per input byte, plus `FIXED_BYTES`.
    pub per_byte: usize,
    /// Reads the files in the directory, then uses the result a little; panics if the result breaks a promise.
    pub read: fn(&Path) -> llmrs::Result<()>,
}

/// Allocation allowed on top of the per-byte bound: buffers whose size does not depend on the input (paths,
/// messages, a rayon pool's bookkeeping, the loader's (B, T) batch).
pub const FIXED_BYTES: usize = 1 << 20;

/// serde_json's `Value` takes 32 bytes per array element, which can be two bytes of text (`0,`), and a `Vec`
/// doubles as it grows: readers that parse JSON into `Value`s may ask for 32 bytes per input byte at once.
const JSON_VALUE_BYTES_PER_BYTE: usize = 32;

impl Target {
    /// The largest single allocation allowed while reading `input_len` bytes.
    pub fn bound(&self, input_len: usize) -> usize {
        self.per_byte * input_len + FIXED_BYTES
    }
}

/// llm.c model files (v3 fp32, v5 bf16): bf16 parameters are widened to f32, 2 file bytes become 4 in memory.
pub const MODEL: Target = Target { name: "model", files: &["model.bin"], per_byte: 2, read: read_model_file };

/// Token shards, opened as the trainer opens them: a glob over two shards, shuffled. They are memory-mapped; only
/// the slot order (8 bytes per B*T = 8 tokens = 16 file bytes) grows with the file.
pub const SHARD: Target =
    Target { name: "shard", files: &["train_000.bin", "train_001.bin"], per_byte: 1, read: read_shards };

/// llm.c tokenizer files (v1, v2): the file is read whole, and each token (at least 2 file bytes: its length and
/// one byte) takes an 8-byte end offset.
pub const TOKENIZER: Target =
    Target { name: "tokenizer", files: &["tokenizer.bin"], per_byte: 4, read: read_tokenizer };

/// Training checkpoint directories: model.bin, then AdamW's m and v (each half of optimizer.bin), then state.json.
pub const CHECKPOINT: Target = Target {
    name: "checkpoint",
    files: &["model.bin", "optimizer.bin", "state.json"],
    per_byte: 2,
    read: read_checkpoint_dir,
};

/// Hugging Face config.json (parsed into `Value`s) and model.safetensors (read whole; each tensor widened to f32).
pub const HF: Target = Target {
    name: "hf",
    files: &["config.json", "model.safetensors"],
    per_byte: JSON_VALUE_BYTES_PER_BYTE,
    read: read_hf,
};

/// metrics.jsonl, one `Value` per line, then cut as a resume cuts it (which writes the file again).
pub const METRICS: Target =
    Target { name: "metrics", files: &["metrics.jsonl"], per_byte: JSON_VALUE_BYTES_PER_BYTE, read: read_metrics };

/// A run directory as `llmrs runs` reads it: run.json, then metrics.jsonl.
pub const RUN: Target =
    Target { name: "run", files: &["run.json", "metrics.jsonl"], per_byte: JSON_VALUE_BYTES_PER_BYTE, read: read_run };

pub const ALL: &[&Target] = &[&MODEL, &SHARD, &TOKENIZER, &CHECKPOINT, &HF, &METRICS, &RUN];

fn read_model_file(dir: &Path) -> llmrs::Result<()> {
    let path = dir.join("model.bin");
    let (config, dtype) = read_model_header(&path)?;
    let (config_again, params) = read_model(&path)?;
    assert_eq!(config, config_again, "read_model_header and read_model disagree on {}", path.display());
    assert_eq!(params.len(), config.num_parameters(), "parameters of {config:?} read from a {dtype:?} file");
    Ok(())
}

/// B and T of the fuzzed loader: small, so a shard of a few dozen tokens holds several batches.
const FUZZ_B: usize = 2;
const FUZZ_T: usize = 4;
/// Batches drawn at most after opening (enough to wrap around the seeds' shards).
const MAX_BATCHES: usize = 1000;

fn read_shards(dir: &Path) -> llmrs::Result<()> {
    let pattern = dir.join("train_*.bin");
    let mut loader = DataLoader::open(&pattern.to_string_lossy(), FUZZ_B, FUZZ_T, Some(7))?;
    let max_token = u32::from(loader.max_token());
    for _ in 0..(loader.batches_per_epoch() + 1).min(MAX_BATCHES) {
        let (inputs, targets) = loader.next_batch();
        assert_eq!((inputs.len(), targets.len()), (FUZZ_B * FUZZ_T, FUZZ_B * FUZZ_T), "batch shape");
        assert!(inputs.iter().chain(targets).all(|&t| t <= max_token), "a token above max_token {max_token}");
    }
    Ok(())
}

fn read_tokenizer(dir: &Path) -> llmrs::Result<()> {
    let tokenizer = Tokenizer::from_llmc_file(&dir.join("tokenizer.bin"))?;
    let vocab = tokenizer.vocab_size() as u32;
    assert!(tokenizer.eot_token() < vocab, "EOT {} outside a vocabulary of {vocab}", tokenizer.eot_token());
    for id in 0..=vocab {
        assert_eq!(tokenizer.token_bytes(id).is_some(), id < vocab, "token {id} of {vocab}");
    }
    let _ = tokenizer.decode(&[0, tokenizer.eot_token(), vocab, u32::MAX]);
    let _ = tokenizer.is_byte_level();
    Ok(())
}

fn read_checkpoint_dir(dir: &Path) -> llmrs::Result<()> {
    let checkpoint = read_checkpoint(dir)?;
    let n = checkpoint.config.num_parameters();
    assert_eq!((checkpoint.params.len(), checkpoint.m.len(), checkpoint.v.len()), (n, n, n), "checkpoint sizes");
    Ok(())
}

fn read_hf(dir: &Path) -> llmrs::Result<()> {
    let (config, params) = import(&HfPaths::in_dir(dir))?;
    assert_eq!(params.len(), config.num_parameters(), "imported parameters of {config:?}");
    Ok(())
}

/// Read as `llmrs plot` reads it, then as a resume from step 1 treats it: records from step 1 on are cut, then
/// the resumed run appends its own. What was readable must stay readable.
fn read_metrics(dir: &Path) -> llmrs::Result<()> {
    let path = dir.join("metrics.jsonl");
    let metrics = RunMetrics::read(&path)?;
    let _ = (metrics.last_step(), metrics.last_eval(), metrics.is_empty());

    truncate_metrics(&path, 1)?;
    let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("the truncated file opens");
    writeln!(file, r#"{{"step":1,"train_loss":2.5}}"#).expect("a line appends");
    let resumed = RunMetrics::read(&path)
        .unwrap_or_else(|e| panic!("readable metrics became unreadable after a resume from step 1: {e}"));
    assert!(resumed.steps.iter().all(|s| s.step < 1 || s.train_loss == 2.5), "a step from 1 on survived the cut");
    Ok(())
}

fn read_run(dir: &Path) -> llmrs::Result<()> {
    RunSummary::load(dir).map(|_| ())
}

/// Cuts an input into `count` files: each but the last is a little-endian u32 length and that many bytes (fewer
/// when the input ends first), the last is the rest. Any byte string is a valid input.
pub fn split(mut input: &[u8], count: usize) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(count);
    for _ in 1..count {
        let Some((len, rest)) = input.split_first_chunk::<4>() else {
            parts.push(input);
            input = &[];
            continue;
        };
        let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
        parts.push(&rest[..len]);
        input = &rest[len..];
    }
    parts.push(input);
    parts
}

/// The input `split` cuts into `parts`.
pub fn join(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut input = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        if i + 1 < parts.len() {
            input.extend_from_slice(&(part.len() as u32).to_le_bytes());
        }
        input.extend_from_slice(part);
    }
    input
}

/// A directory for a target's input files: in memory (/dev/shm) where there is one, because the metrics target
/// rewrites its file with fsync as a resume does, else in the system's temporary directory. Callers remove it
/// after a run that passes; a run that fails or aborts leaves the input that did it there.
pub fn work_dir(target: &Target) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let root = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    let dir = root.join(format!("llmrs-fuzz-readers-{}", std::process::id())).join(target.name);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// libFuzzer's entry point (`fuzz/fuzz_targets/`): checks one input and panics when the contract is broken, which
/// libFuzzer reports as a crash, saving the input. The directory is made and removed around each input, so a
/// run leaves nothing behind unless it crashes.
#[allow(dead_code)] // the stable harness calls `check` itself
pub fn fuzz_one(target: &Target, input: &[u8]) {
    let dir = work_dir(target);
    if let Err(why) = check(target, &dir, &split(input, target.files.len())) {
        panic!("{}: {why}", target.name);
    }
    remove_work_dir(&dir);
}

/// Removes a directory made by `work_dir`, and its parent once no other target's is left in it.
pub fn remove_work_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
}

/// How a reader answered an input that kept the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Refused,
}

/// Writes `parts` as the target's files into `dir`, runs the reader on them and checks the contract; Err says
/// how the reader broke it.
pub fn check(target: &Target, dir: &Path, parts: &[&[u8]]) -> Result<Outcome, String> {
    assert_eq!(parts.len(), target.files.len(), "one part per file of {}", target.name);
    for (name, bytes) in target.files.iter().zip(parts) {
        let path = dir.join(name);
        // A fresh file rather than a truncated one: ext4 flushes a file rewritten after truncation when it is
        // closed (auto_da_alloc), which made each case wait milliseconds for the disk.
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write fuzz input {}: {e}", path.display()));
    }
    let input_len: usize = parts.iter().map(|p| p.len()).sum();
    let bound = target.bound(input_len);

    RUNNING.set(target.name);
    INPUT_DIR.with_borrow_mut(|input_dir| {
        input_dir.as_mut_os_string().clear();
        input_dir.push(dir);
    });
    LIMIT.set(bound);
    PEAK.set(0);
    ARMED.set(true);
    let result = catch_unwind(AssertUnwindSafe(|| (target.read)(dir)));
    ARMED.set(false);
    let peak = PEAK.get();

    let result = result.map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a non-string payload");
        format!("the reader panicked: {message}")
    })?;
    if peak > bound {
        return Err(format!(
            "the reader asked for {peak} bytes at once, more than the bound of {bound} for {input_len} input bytes"
        ));
    }
    match result {
        Ok(()) => Ok(Outcome::Accepted),
        Err(error) => check_error(target, dir, &error).map(|()| Outcome::Refused),
    }
}

/// An error keeps the contract when its message names one of the target's files and says what is wrong in it.
fn check_error(target: &Target, dir: &Path, error: &Error) -> Result<(), String> {
    let message = error.to_string();
    let names_a_file = target.files.iter().any(|name| message.contains(&*dir.join(name).to_string_lossy()));
    if !names_a_file {
        return Err(format!("the error does not name the file it is about: {message}"));
    }
    match error {
        Error::Format { what, expected, .. } if what.trim().is_empty() || expected.trim().is_empty() => {
            Err(format!("the format error does not say which field, or what it should be: {message}"))
        }
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidData => {
            Err(format!("the file's contents are reported as an I/O error, naming no field: {message}"))
        }
        Error::Format { .. } | Error::Io { .. } | Error::Config { .. } => Ok(()),
        other => Err(format!("a reader returned an error of an unexpected kind: {other:?}")),
    }
}

thread_local! {
    /// Whether allocations on this thread are being recorded (only while a reader runs).
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// The largest single allocation recorded since `check` started the reader.
    static PEAK: Cell<usize> = const { Cell::new(0) };
    /// The bound of the running case and its target, to report a request past it before it can abort the process.
    static LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
    static RUNNING: Cell<&'static str> = const { Cell::new("") };
    static INPUT_DIR: std::cell::RefCell<PathBuf> = std::cell::RefCell::new(PathBuf::new());
}

/// Requests this large may fail outright, which aborts the process before `check` can report them.
const REPORT_AT_ONCE_BYTES: usize = 1 << 30;

/// A global allocator that forwards to the system's and records the largest single request per thread.
pub struct PeakAllocator;

fn record(size: usize) {
    // try_with: a thread being torn down has no thread-locals left, and allocates nothing we test.
    let armed = ARMED.try_with(Cell::get).unwrap_or(false);
    if !armed {
        return;
    }
    let _ = PEAK.try_with(|peak| peak.set(peak.get().max(size)));
    let limit = LIMIT.try_with(Cell::get).unwrap_or(usize::MAX);
    if size > limit && size >= REPORT_AT_ONCE_BYTES {
        // Disarmed first: printing may allocate.
        let _ = ARMED.try_with(|armed| armed.set(false));
        let target = RUNNING.try_with(Cell::get).unwrap_or("");
        let _ = INPUT_DIR.try_with(|dir| {
            let dir = dir.try_borrow().map_or(String::new(), |dir| dir.display().to_string());
            // Straight to stderr: the test harness's capture of eprintln! is lost when the process aborts.
            let _ = writeln!(
                std::io::stderr(),
                "fuzz: the {target} reader asks for {size} bytes at once (bound {limit}); input files in {dir}"
            );
        });
    }
}

// SAFETY: every call forwards to `System` with the caller's arguments unchanged; `record` only touches
// thread-locals without destructors, so it neither allocates (while armed) nor unwinds.
unsafe impl GlobalAlloc for PeakAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: PeakAllocator = PeakAllocator;
