//! Out of memory on the GPU path, through the `train_gpt2` binary on the emulator: a run whose plan does not fit
//! the device, or whose allocation fails mid-run, must end with one error line that gives the memory plan and
//! what to try, never a panic. The emulated device gets a memory size from `LLMRS_EMU_MEMORY` (src/gpu/emu.rs),
//! in bytes as these tests compute them from the plan. Only the emulator can be told its size, so without
//! `--features emu` the tests are reported as ignored.
//!
//! The CPU's counterpart, a run of absurd size refused with its plan before anything is allocated, is
//! `tests/cli.rs::a_run_larger_than_memory_is_refused_with_its_plan_before_allocating`.

use llmrs::backend::Precision;
use llmrs::layout::Recompute;
use llmrs::model::MemoryPlan;
use llmrs::GPT2Config;
use std::path::Path;
use std::process::Command;
use tempfile::TempDir;

/// The model and batch every test runs: big enough that its plan reads as whole MiB in the messages (about 25 in
/// bf16, the emulator's default precision), small enough to train a step on the emulator in a second or two.
const LAYERS: usize = 2;
const CHANNELS: usize = 128;
const HEADS: usize = 4;
const VOCAB: usize = 97;
const MAX_T: usize = 64;
const B: usize = 16;
const T: usize = 64;

fn config() -> GPT2Config {
    GPT2Config {
        max_seq_len: MAX_T,
        vocab_size: VOCAB,
        padded_vocab_size: llmrs::config::padded_vocab(VOCAB),
        num_layers: LAYERS,
        num_heads: HEADS,
        channels: CHANNELS,
    }
}

/// The plan the trainer makes on the emulator, whose default precision is a GPU's: bf16.
fn plan(recompute: Recompute) -> MemoryPlan {
    MemoryPlan::in_precision(&config(), B, T, recompute, Precision::Bf16)
}

/// What a finished run left behind.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Trains the model above on the emulator for 2 steps with `LLMRS_EMU_MEMORY=memory`, on a shard in `dir`.
fn run_emu(dir: &Path, memory: &str) -> Run {
    let shard = dir.join("train.bin");
    let tokens: Vec<u16> = (0..4000).map(|i| ((i * 7 + i / 5) % VOCAB) as u16).collect();
    llmrs::data::write_shard(&shard, &tokens).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_train_gpt2"))
        .env("LLMRS_EMU_MEMORY", memory)
        .env_remove("RUST_BACKTRACE")
        .args(["--device", "emu", "--train-data"])
        .arg(&shard)
        .arg("--val-data")
        .arg(&shard)
        .args(["--layers", &LAYERS.to_string(), "--channels", &CHANNELS.to_string(), "--heads", &HEADS.to_string()])
        .args(["--vocab-size", &VOCAB.to_string(), "--max-seq-len", &MAX_T.to_string()])
        .args(["-b", &B.to_string(), "-t", &T.to_string(), "--steps", "2", "--val-every", "5", "--val-batches", "1"])
        .args(["--sample-every", "0", "--gen-tokens", "4", "--threads", "2"])
        .output()
        .expect("the train_gpt2 binary starts");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts that `run` failed with exit code 1, without a panic, and one `error:` line containing every needle.
fn assert_error(run: &Run, needles: &[&str]) {
    let stderr = run.stderr.trim_end();
    assert!(!stderr.contains("panicked"), "the binary panicked:\n{stderr}");
    assert_eq!(run.code, Some(1), "expected exit code 1; stderr:\n{stderr}\nstdout:\n{}", run.stdout);
    assert!(stderr.starts_with("error: "), "stderr should start with 'error: ':\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "the error should be one line:\n{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "stderr should mention {needle:?}:\n{stderr}");
    }
}

#[test]
#[cfg_attr(not(feature = "emu"), ignore = "needs the emulator (--features emu)")]
fn a_plan_that_fits_only_with_recompute_2_is_refused_with_the_plan_and_that_suggestion() {
    let (full, slim) = (plan(Recompute::Nothing), plan(Recompute::GeluAndLayerNorm));
    assert!(slim.total() + (1 << 20) < full.total(), "the test needs --recompute 2 to save a MiB: {slim} vs {full}");
    let dir = TempDir::new().unwrap();
    let run = run_emu(dir.path(), &((full.total() + slim.total()) / 2).to_string());
    let plan = full.to_string();
    assert_error(&run, &["not enough memory", "training needs", &plan, "on emu", "--recompute 2 would need"]);
    assert!(!run.stdout.contains("step"), "refused before training:\n{}", run.stdout);
}

#[test]
#[cfg_attr(not(feature = "emu"), ignore = "needs the emulator (--features emu)")]
fn a_plan_that_does_not_fit_even_with_recompute_2_suggests_a_smaller_batch() {
    let (full, slim) = (plan(Recompute::Nothing), plan(Recompute::GeluAndLayerNorm));
    let dir = TempDir::new().unwrap();
    // In KiB, so the size suffix is exercised too.
    let run = run_emu(dir.path(), &format!("{}K", slim.total() / 2 / 1024));
    assert_error(&run, &["not enough memory", &full.to_string(), "a smaller --batch-size or --seq-len"]);
    assert!(!run.stderr.contains("--recompute 2 would"), "--recompute 2 would not fit either:\n{}", run.stderr);
}

#[test]
#[cfg_attr(not(feature = "emu"), ignore = "needs the emulator (--features emu)")]
fn an_allocation_that_fails_mid_run_ends_with_the_plan_and_a_suggestion_not_a_panic() {
    // The device cannot tell its free memory (",hidden"), so the plan check passes; parameters, gradients,
    // activations and AdamW's m fit, and the first update's allocation of v does not.
    let full = plan(Recompute::Nothing);
    let dir = TempDir::new().unwrap();
    let run = run_emu(dir.path(), &format!("{},hidden", full.total() - full.optimizer / 4));
    let plan = format!("the run's plan is {full}");
    assert_error(
        &run,
        &["not enough memory", "the emulator could not allocate", &plan, "--recompute 2", "--batch-size"],
    );
    // Mid-run: the first evaluation ran on the device before the failing allocation.
    assert!(run.stdout.contains("val loss"), "the run should fail after its first evaluation:\n{}", run.stdout);
}

#[test]
#[cfg_attr(not(feature = "emu"), ignore = "needs the emulator (--features emu)")]
fn a_device_with_just_the_planned_memory_runs_to_the_end() {
    // The plan is what the run allocates: with it and a few KiB for the batch's tokens, 2 steps complete.
    let full = plan(Recompute::Nothing);
    let dir = TempDir::new().unwrap();
    let run = run_emu(dir.path(), &(full.total() + 16 * 1024).to_string());
    assert_eq!(run.code, Some(0), "the run should fit:\n{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("done: 2 steps"), "{}", run.stdout);
}

#[test]
#[cfg_attr(not(feature = "emu"), ignore = "needs the emulator (--features emu)")]
fn a_malformed_emulator_memory_size_is_an_error_naming_the_variable() {
    let dir = TempDir::new().unwrap();
    let run = run_emu(dir.path(), "12X");
    assert_error(&run, &["invalid LLMRS_EMU_MEMORY", "\"12X\"", "K, M or G"]);
}
