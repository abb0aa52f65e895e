//! Crash safety: a training process killed (SIGKILL) at arbitrary moments — between steps, while writing metrics,
//! in the middle of a checkpoint — and resumed each time, ends with exactly the run an uninterrupted process
//! produces, and no damaged file is ever taken for a checkpoint.

use llmrs::rng::Rng;
use llmrs::rundir::{list_checkpoints, read_checkpoint};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

const STEPS: usize = 40;

/// The trainer on a tiny model (vocabulary 97, shards next to `out`) with a checkpoint after every step, into
/// `out`, with `extra` flags.
fn trainer(out: &Path, extra: &[&str]) -> Command {
    let data = out.parent().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_train_gpt2"));
    cmd.args(["--layers", "1", "--channels", "32", "--heads", "2", "-b", "2", "-t", "8", "--threads", "1"])
        .args(["--vocab-size", "97", "--max-seq-len", "16", "--train-data"])
        .arg(data.join("train.bin"))
        .arg("--val-data")
        .arg(data.join("val.bin"))
        .args(["--steps", &STEPS.to_string(), "--val-every", "7", "--val-batches", "1", "--sample-every", "0"])
        .args(["--checkpoint-every", "1", "--keep-checkpoints", "3", "--out"])
        .arg(out)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Train-step lines in `out`'s metrics.jsonl so far (0 when there is none yet).
fn train_steps_logged(out: &Path) -> usize {
    std::fs::read_to_string(out.join("metrics.jsonl")).map_or(0, |text| text.matches("\"train_loss\"").count())
}

/// The train losses in metrics.jsonl, by step, as written (bit patterns of the JSON text).
fn train_losses(out: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("every line of a finished run is JSON");
            Some((v.get("step")?.as_u64()?, v.get("train_loss")?.to_string()))
        })
        .collect()
}

#[test]
fn a_run_killed_at_random_moments_and_resumed_equals_the_uninterrupted_run() {
    let dir = TempDir::new().unwrap();
    let (whole, crashed) = (dir.path().join("whole"), dir.path().join("crashed"));
    for (name, n) in [("train.bin", 3000), ("val.bin", 500)] {
        let tokens: Vec<u16> = (0..n).map(|i| ((i * 7 + i / 5) % 97) as u16).collect();
        llmrs::data::write_shard(&dir.path().join(name), &tokens).unwrap();
    }
    let start = std::time::Instant::now();
    assert!(trainer(&whole, &[]).status().unwrap().success());
    // One step with its metrics line and checkpoint, on this machine now: the kills below wait a random part of it.
    let step_us = (start.elapsed().as_micros() as usize / STEPS).max(1);

    // Kill at random moments tied to progress, not to the clock (a loaded machine would make a timed kill miss):
    // wait until a random later step has been logged, then a random part of one step's time more, which lands
    // anywhere in the next step, its metrics line or its checkpoint write.
    let mut rng = Rng::new(2026);
    let (mut kills, mut torn_checkpoints) = (0, 0);
    while kills < 6 {
        let fresh = !crashed.join("run.json").exists();
        let done = if fresh { 0 } else { train_steps_logged(&crashed) };
        let target = done + 1 + rng.below(5);
        if target >= STEPS {
            break;
        }
        let mut child = trainer(&crashed, if fresh { &[] } else { &["--resume"] }).spawn().unwrap();
        while train_steps_logged(&crashed) < target && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_micros(rng.below(step_us) as u64));
        if let Some(status) = child.try_wait().unwrap() {
            // A fast machine can finish the last few steps inside the extra milliseconds: then the run is complete
            // and there is nothing left to kill.
            let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
            assert!(status.success(), "the trainer failed before it was killed: {stderr}");
            break;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        // A .tmp directory left behind means the kill landed inside a checkpoint write.
        torn_checkpoints += std::fs::read_dir(crashed.join("checkpoints"))
            .map(|d| d.filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".tmp"))).count())
            .unwrap_or(0);
        // Whatever the moment of the kill, every finished checkpoint reads back whole.
        for (step, ckpt) in list_checkpoints(&crashed).unwrap() {
            let read = read_checkpoint(&ckpt).unwrap_or_else(|e| panic!("checkpoint {step} is damaged: {e}"));
            assert_eq!(read.state.step, step);
        }
    }
    eprintln!("killed the trainer {kills} times, {torn_checkpoints} of them inside a checkpoint write");
    assert!(kills >= 3, "only {kills} kills landed before the run ended; the test needs several");
    if !crashed.join("model.bin").exists() {
        let out = trainer(&crashed, &["--resume"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("no complete checkpoint") || stderr.contains("cannot read run record") {
            std::fs::remove_dir_all(&crashed).unwrap();
            assert!(trainer(&crashed, &[]).status().unwrap().success());
        } else {
            assert!(out.status.success(), "{stderr}");
        }
    }
    assert_eq!(train_losses(&crashed), train_losses(&whole), "the crashed and resumed run's losses, step by step");
    let (_, a) = llmrs::checkpoint::read_model(&whole.join("model.bin")).unwrap();
    let (_, b) = llmrs::checkpoint::read_model(&crashed.join("model.bin")).unwrap();
    assert!(a == b, "final parameters bitwise equal");
}
