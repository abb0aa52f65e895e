//! The numerical guard: updates whose loss or gradient norm is NaN, infinite, or an outlier against the recent
//! window are skipped and logged; too many in a row stop the run with a clear message.

use llmrs::checkpoint::{write_model, ModelDtype};
use llmrs::data::DataLoader;
use llmrs::model::{AdamWConfig, GPT2};
use llmrs::rng::Rng;
use llmrs::train::{train, Event, OutlierDetector, TrainOptions, OUTLIER_MIN_VALUES, OUTLIER_WINDOW};
use llmrs::GPT2Config;
use std::process::Command;
use tempfile::TempDir;

fn config() -> GPT2Config {
    GPT2Config {
        max_seq_len: 16,
        vocab_size: 64,
        padded_vocab_size: llmrs::config::padded_vocab(64),
        num_layers: 1,
        num_heads: 2,
        channels: 32,
    }
}

fn options(steps: usize, skip_loss_z: f32) -> TrainOptions {
    TrainOptions {
        batch_size: 2,
        seq_len: 8,
        steps,
        lr: 3e-3,
        warmup: 0,
        lr_final_frac: 1.0,
        adamw: AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0 },
        grad_clip: 1.0,
        val_every: 0,
        val_batches: 1,
        sample_every: 0,
        gen_tokens: 0,
        sampling: Default::default(),
        seed: 1,
        checkpoint_every: 0,
        keep_checkpoints: 0,
        inspect: false,
        skip_loss_z,
        skip_grad_z: 0.0,
        max_skips: 10,
    }
}

#[test]
fn the_detector_scores_against_a_bounded_window_once_it_holds_enough() {
    let mut d = OutlierDetector::default();
    for i in 0..OUTLIER_MIN_VALUES - 1 {
        d.push((i % 2) as f64);
    }
    assert_eq!(d.z_score(10.0), None, "too few values for a z-score");
    d.push(1.0);
    // Values 0, 1, 0, 1, ...: mean 0.5, std 0.5.
    assert!((d.z_score(2.0).unwrap() - 3.0).abs() < 1e-12);
    for _ in 0..OUTLIER_WINDOW {
        d.push(7.0);
    }
    assert_eq!(d.z_score(8.0), None, "the old values are forgotten: a flat window has no z-score");
}

#[test]
fn a_loss_spike_is_skipped_and_the_run_goes_on() {
    // 150 steps of a repeating pattern (the loss falls and settles, so the last 128 losses are low and close),
    // then random tokens (the loss jumps). Few enough steps after the jump that the skips stay under --max-skips.
    let (b, t, pattern_steps, steps) = (2, 8, 150, 155);
    let mut tokens: Vec<u16> = (0..pattern_steps * b * t).map(|i| (i % 5) as u16).collect();
    let mut rng = Rng::new(3);
    tokens.extend((0..(steps - pattern_steps + 1) * b * t).map(|_| rng.below(64) as u16));
    let run = |skip_loss_z: f32| {
        let mut loader = DataLoader::from_tokens("spike", tokens.clone(), b, t, None).unwrap();
        let mut model = GPT2::random(config(), 2).unwrap();
        let mut skipped = Vec::new();
        let summary = train(&mut model, &mut loader, None, None, &options(steps, skip_loss_z), None, None, |e| {
            if let Event::Skipped { step, reason } = e {
                skipped.push((step, reason.to_string()));
            }
        })
        .unwrap();
        (summary.train_losses, skipped)
    };
    let (losses, skipped) = run(4.0);
    assert_eq!(losses.len(), steps, "the run went on to the end");
    assert!(!skipped.is_empty(), "the jump to random tokens should be skipped: losses {losses:?}");
    // Batch 149's last target is the first random token; batch 150 is all random.
    assert!((pattern_steps - 1..=pattern_steps).contains(&skipped[0].0), "skipped at the jump: {skipped:?}");
    assert!(skipped[0].1.contains("loss") && skipped[0].1.contains("standard deviations"), "{skipped:?}");
    let (_, unguarded) = run(0.0);
    assert!(unguarded.is_empty(), "with the guard off nothing finite is skipped: {unguarded:?}");
}

#[test]
fn a_model_that_gives_nan_stops_after_max_skips_with_its_reason_logged() {
    let dir = TempDir::new().unwrap();
    let mut model = GPT2::random(config(), 1).unwrap().params().unwrap();
    model[100] = f32::NAN;
    let path = dir.path().join("nan.bin");
    write_model(&path, &config(), &model, ModelDtype::F32).unwrap();
    let shard = dir.path().join("train.bin");
    llmrs::data::write_shard(&shard, &(0..400).map(|i| (i % 64) as u16).collect::<Vec<_>>()).unwrap();
    let out = dir.path().join("run");
    let run = Command::new(env!("CARGO_BIN_EXE_train_gpt2"))
        .args(["-e", path.to_str().unwrap(), "-i", shard.to_str().unwrap(), "-b", "2", "-t", "8"])
        .args(["--steps", "20", "--max-skips", "3", "--sample-every", "0", "--checkpoint-every", "1", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: training stopped: 3 updates in a row skipped"), "{stderr}");
    assert!(stderr.contains("loss is NaN") && stderr.contains("step_000002"), "{stderr}");
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.matches("\"skipped\"").count(), 3, "{metrics}");
    // The checkpoints hold the untouched parameters: the NaN is the model's own, nothing else became NaN.
    let (_, params) = llmrs::checkpoint::read_model(&out.join("checkpoints/step_000002/model.bin")).unwrap();
    assert_eq!(params.iter().filter(|p| p.is_nan()).count(), 1);
}
