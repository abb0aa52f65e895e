//! The `train_gpt2` binary end to end: tiny runs that must succeed and write what they promise, and bad input that
//! must fail with one clear line naming the file or flag, never with a panic.
//!
//! Every run is tiny (L=1, C=32, B=2, T=8, a few steps on one thread) so the whole file takes seconds.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use llmrs::checkpoint::{read_model, write_model, ModelDtype};
use llmrs::config::padded_vocab;
use llmrs::data::write_shard;
use llmrs::model::GPT2;
use llmrs::GPT2Config;
use serde_json::Value;
use tempfile::TempDir;

/// What a finished run left behind.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args` and waits for it.
fn run<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_train_gpt2"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("the train_gpt2 binary starts");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Size flags that shrink the default preset to L=1, C=32, NH=2 (GPT-2's vocabulary, maxT 1024).
const TINY_MODEL: &[(&str, &str)] = &[("--layers", "1"), ("--channels", "32"), ("--heads", "2")];

/// A run of 3 steps of B=2, T=8 on one thread, evaluating on 1 batch every 2 steps, without samples.
const TINY_RUN: &[(&str, &str)] = &[
    ("--batch-size", "2"),
    ("--seq-len", "8"),
    ("--steps", "3"),
    ("--warmup", "1"),
    ("--val-every", "2"),
    ("--val-batches", "1"),
    ("--sample-every", "0"),
    ("--threads", "1"),
];

/// `base` as command-line words, with each flag of `changes` replacing the base's value or, when new, appended
/// (one value per flag, so a test's command line reads as what it runs).
fn flags(base: &[&[(&str, &str)]], changes: &[(&str, &str)]) -> Vec<String> {
    let mut pairs: Vec<(String, String)> =
        base.iter().flat_map(|b| b.iter()).map(|&(f, v)| (f.to_string(), v.to_string())).collect();
    for &(flag, value) in changes {
        match pairs.iter_mut().find(|(f, _)| f == flag) {
            Some(pair) => pair.1 = value.to_string(),
            None => pairs.push((flag.to_string(), value.to_string())),
        }
    }
    pairs.into_iter().flat_map(|(f, v)| [f, v]).collect()
}

/// A tiny preset run on the built-in data, with `changes` applied.
fn tiny(changes: &[(&str, &str)]) -> Vec<String> {
    flags(&[TINY_MODEL, TINY_RUN], changes)
}

/// A tiny run without size flags (for checkpoint files), with `changes` applied.
fn tiny_run(changes: &[(&str, &str)]) -> Vec<String> {
    flags(&[TINY_RUN], changes)
}

/// Asserts that `run` failed with exit code 1 and one `error:` line containing every one of `needles`.
fn assert_error(run: &Run, needles: &[&str]) {
    let stderr = run.stderr.trim_end();
    assert!(!stderr.contains("panicked"), "the binary panicked:\n{stderr}");
    assert_eq!(run.code, Some(1), "expected exit code 1; stderr:\n{stderr}");
    assert!(stderr.starts_with("error: "), "stderr should start with 'error: ':\n{stderr}");
    assert_eq!(stderr.lines().count(), 1, "the error should be one line:\n{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "stderr should mention {needle:?}:\n{stderr}");
    }
}

/// Asserts that clap refused the command line (exit code 2) with a message containing every one of `needles`.
fn assert_usage_error(run: &Run, needles: &[&str]) {
    assert!(!run.stderr.contains("panicked"), "the binary panicked:\n{}", run.stderr);
    assert_eq!(run.code, Some(2), "expected clap's exit code 2; stderr:\n{}", run.stderr);
    for needle in needles {
        assert!(run.stderr.contains(needle), "stderr should mention {needle:?}:\n{}", run.stderr);
    }
}

fn assert_success(run: &Run) {
    assert_eq!(run.code, Some(0), "expected success; stderr:\n{}\nstdout:\n{}", run.stderr, run.stdout);
}

/// A model small enough to write in every test: maxT 16, V 300 (Vp 384), L 1, NH 2, C 32.
fn small_config() -> GPT2Config {
    GPT2Config {
        max_seq_len: 16,
        vocab_size: 300,
        padded_vocab_size: padded_vocab(300),
        num_layers: 1,
        num_heads: 2,
        channels: 32,
    }
}

/// Writes a randomly initialised `small_config()` model to `dir/model_in.bin`.
fn write_small_model(dir: &Path) -> PathBuf {
    let path = dir.join("model_in.bin");
    let model = GPT2::random(small_config(), 42).unwrap();
    write_model(&path, &model.config, &model.params().unwrap(), ModelDtype::F32).unwrap();
    path
}

/// `n` tokens below `vocab`, in a pattern a model can partly learn.
fn tokens(n: usize, vocab: usize) -> Vec<u16> {
    (0..n).map(|i| ((i * 7 + i / 5) % vocab) as u16).collect()
}

/// Writes a shard of `n` tokens below 300 (the small model's vocabulary) to `dir/name`.
fn write_small_shard(dir: &Path, name: &str, n: usize) -> PathBuf {
    let path = dir.join(name);
    write_shard(&path, &tokens(n, 300)).unwrap();
    path
}

/// Overwrites the int32 at `index` of the 256-int32 header of an llm.c file.
fn patch_header(path: &Path, index: usize, value: i32) {
    let mut file = OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(4 * index as u64)).unwrap();
    file.write_all(&value.to_le_bytes()).unwrap();
}

/// Writes an llm.c tokenizer file (version 2) of `vocab` one-byte tokens with end-of-text id `eot`.
fn write_tokenizer(path: &Path, vocab: u32, eot: u32) {
    let mut header = [0u32; 256];
    header[..4].copy_from_slice(&[20240328, 2, vocab, eot]);
    let mut bytes: Vec<u8> = header.iter().flat_map(|h| h.to_le_bytes()).collect();
    for id in 0..vocab {
        bytes.extend_from_slice(&[1, b'a' + (id % 26) as u8]);
    }
    std::fs::write(path, bytes).unwrap();
}

/// The lines of `dir/metrics.jsonl`, parsed.
fn read_metrics(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics.jsonl is written");
    text.lines().map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))).collect()
}

/// The keys of a JSON object record.
fn keys(record: &Value) -> BTreeSet<&str> {
    record.as_object().expect("each metrics line is a JSON object").keys().map(String::as_str).collect()
}

/// The value of `key` in every record that has it.
fn column(records: &[Value], key: &str) -> Vec<f64> {
    records.iter().filter_map(|r| r.get(key)).map(|v| v.as_f64().unwrap()).collect()
}

/// The train and val losses of a tiny built-in run with `changes`, from its metrics.jsonl.
fn losses(changes: &[(&str, &str)], extra: &[&str]) -> (Vec<f64>, Vec<f64>) {
    let dir = TempDir::new().unwrap();
    let mut args = tiny(changes);
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--out".to_string(), dir.path().display().to_string()]);
    assert_success(&run(&args));
    let records = read_metrics(dir.path());
    (column(&records, "train_loss"), column(&records, "val_loss"))
}

// ---------------------------------------------------------------------------------------------------------------
// Happy paths
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn help_exits_zero_and_lists_the_main_flags() {
    let out = run(["--help"]);
    assert_success(&out);
    for flag in ["--model", "--train-data", "--batch-size", "--seq-len", "--steps", "--lr"] {
        assert!(out.stdout.contains(flag), "--help should mention {flag}:\n{}", out.stdout);
    }
}

#[test]
fn tiny_run_on_built_in_data_prints_device_model_steps_and_a_sample() {
    let out = run(tiny(&[("--sample-every", "100"), ("--gen-tokens", "4")]));
    assert_success(&out);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("device: cpu"), "first line should be the device: {}", lines[0]);
    #[cfg(not(feature = "cuda"))]
    assert!(lines[0].contains("auto: this build has no CUDA kernels"), "and why auto chose it: {}", lines[0]);

    let config = GPT2Config {
        max_seq_len: 1024,
        vocab_size: 50257,
        padded_vocab_size: 50304,
        num_layers: 1,
        num_heads: 2,
        channels: 32,
    };
    let params = format!("{:.2}M parameters", config.num_parameters() as f64 / 1e6);
    let model_line = lines.iter().find(|l| l.starts_with("model: ")).expect("a model line");
    assert!(model_line.contains(&params), "model line should give {params}: {model_line}");
    assert!(model_line.contains("L=1 C=32 NH=2"), "model line should give the shape: {model_line}");

    let step_lines = lines.iter().filter(|l| l.starts_with("step ") && l.contains("train loss")).count();
    assert_eq!(step_lines, 3, "one train line per step:\n{}", out.stdout);
    assert!(out.stdout.contains("val loss"), "val lines expected:\n{}", out.stdout);
    assert!(out.stdout.contains("--- sample at step 3 ---"), "a final sample expected:\n{}", out.stdout);
}

#[test]
fn out_dir_gets_metrics_jsonl_with_llm_c_step_and_val_records() {
    let dir = TempDir::new().unwrap();
    let out_dir = dir.path().join("run");
    let mut args = tiny(&[("--steps", "5"), ("--val-every", "2")]);
    args.extend(["--out".to_string(), out_dir.display().to_string()]);
    assert_success(&run(&args));

    let records = read_metrics(&out_dir);
    let step_keys = BTreeSet::from(["step", "train_loss", "lr", "grad_norm", "ms", "tokens_per_sec"]);
    let val_keys = BTreeSet::from(["step", "val_loss"]);
    // (step, is_val) in file order: val at s % 2 == 0 and at s = steps, each before that step's update.
    let mut order = Vec::new();
    for record in &records {
        let k = keys(record);
        assert!(k == step_keys || k == val_keys, "unexpected keys {k:?} in {record}");
        for key in &k {
            if *key != "step" {
                assert!(record[key].as_f64().unwrap().is_finite(), "{key} should be finite in {record}");
            }
        }
        order.push((record["step"].as_u64().unwrap(), k == val_keys));
    }
    let expected =
        [(0, true), (0, false), (1, false), (2, true), (2, false), (3, false), (4, true), (4, false), (5, true)];
    assert_eq!(order, expected, "records (step, is_val) in file order");
}

#[test]
fn out_dir_gets_a_model_bin_with_the_run_config_a_record_and_a_plot() {
    let dir = TempDir::new().unwrap();
    let mut args = tiny(&[]);
    args.extend(["-o".to_string(), dir.path().display().to_string()]);
    let out = run(&args);
    assert_success(&out);
    let svg = std::fs::read_to_string(dir.path().join("plot.svg")).expect("the run ends with a plot");
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "an SVG with lines: {}", &svg[..svg.len().min(200)]);
    assert!(out.stdout.contains("plot.svg"), "{}", out.stdout);

    let (config, params) = read_model(&dir.path().join("model.bin")).expect("model.bin reads back");
    let expected = GPT2Config {
        max_seq_len: 1024,
        vocab_size: 50257,
        padded_vocab_size: 50304,
        num_layers: 1,
        num_heads: 2,
        channels: 32,
    };
    assert_eq!(config, expected);
    assert_eq!(params.len(), expected.num_parameters());
    let record: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("run.json")).unwrap()).unwrap();
    assert_eq!(record["args"]["batch_size"], 2, "run.json holds the settings: {record}");
    assert_eq!(record["parameters"], expected.num_parameters(), "{record}");
    assert!(record["sessions"][0]["device"].as_str().unwrap().starts_with("cpu"), "{record}");
    assert!(params.iter().all(|p| p.is_finite()), "trained parameters should be finite");
    let init = GPT2::random(expected, 1337).unwrap();
    assert_ne!(params, init.params().unwrap(), "model.bin should hold the trained, not the initial, parameters");
}

#[test]
fn checkpoint_and_user_shards_train_with_one_letter_flags() {
    let dir = TempDir::new().unwrap();
    let model = write_small_model(dir.path());
    write_small_shard(dir.path(), "train_000.bin", 300);
    write_small_shard(dir.path(), "train_001.bin", 200);
    let val = write_small_shard(dir.path(), "val.bin", 100);
    let out_dir = dir.path().join("out");
    let train_glob = dir.path().join("train_*.bin");
    let paths = [model.as_os_str(), train_glob.as_os_str(), val.as_os_str(), out_dir.as_os_str()];
    let mut args: Vec<&OsStr> =
        ["-e", "-i", "-j", "-o"].iter().zip(paths).flat_map(|(flag, path)| [OsStr::new(flag), path]).collect();
    let sizes = "-b 2 -t 8 -x 4 -u 1 -v 2 -m 2 -l 3e-3 --threads 1";
    args.extend(sizes.split(' ').map(OsStr::new));
    let out = run(&args);
    assert_success(&out);
    assert!(out.stdout.contains("train: 500 tokens"), "both shards should be read:\n{}", out.stdout);
    assert!(out.stdout.contains("V=300 Vp=384"), "the checkpoint's shape should be used:\n{}", out.stdout);
    let records = read_metrics(&out_dir);
    assert_eq!(column(&records, "train_loss").len(), 4);
    assert_eq!(column(&records, "val_loss").len(), 3, "val at steps 0, 2, 4");
    let (config, _) = read_model(&out_dir.join("model.bin")).unwrap();
    assert_eq!(config, small_config());
}

#[test]
fn bf16_checkpoint_trains() {
    let dir = TempDir::new().unwrap();
    let model = dir.path().join("model_bf16.bin");
    let init = GPT2::random(small_config(), 42).unwrap();
    write_model(&model, &init.config, &init.params().unwrap(), ModelDtype::Bf16).unwrap();
    let out = run_from_checkpoint(dir.path(), &model);
    assert_success(&out);
    assert!(out.stdout.contains("V=300 Vp=384"), "the checkpoint's shape should be used:\n{}", out.stdout);
}

#[test]
fn no_shuffle_runs_are_identical() {
    let first = losses(&[], &["--no-shuffle"]);
    let second = losses(&[], &["--no-shuffle"]);
    assert_eq!(first.0.len(), 3);
    assert_eq!(first, second, "two --no-shuffle runs should give the same losses");
}

#[test]
fn same_seed_gives_identical_shuffled_runs() {
    let first = losses(&[("--seed", "7")], &[]);
    let second = losses(&[("--seed", "7")], &[]);
    assert_eq!(first.0.len(), 3);
    assert_eq!(first, second, "two runs with --seed 7 should give the same losses");
    let other = losses(&[("--seed", "8")], &[]);
    assert_ne!(first.0, other.0, "another seed should give other losses");
}

// ---------------------------------------------------------------------------------------------------------------
// Bad data files
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn missing_train_data_file_is_named() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("nope.bin");
    let out = run(tiny(&[("--train-data", &missing.display().to_string())]));
    assert_error(&out, &["nope.bin", "cannot open"]);
}

#[test]
fn train_data_glob_matching_nothing_is_named() {
    let dir = TempDir::new().unwrap();
    let pattern = dir.path().join("train_*.bin");
    let out = run(tiny(&[("--train-data", &pattern.display().to_string())]));
    assert_error(&out, &["train_*.bin", "none"]);
}

#[test]
fn shard_with_wrong_magic_is_refused() {
    let dir = TempDir::new().unwrap();
    let shard = write_small_shard(dir.path(), "train.bin", 100);
    patch_header(&shard, 0, 12345);
    let out = run(tiny(&[("--train-data", &shard.display().to_string())]));
    assert_error(&out, &["train.bin", "magic", "20240520", "12345"]);
}

#[test]
fn shard_with_wrong_version_is_refused() {
    let dir = TempDir::new().unwrap();
    let shard = write_small_shard(dir.path(), "train.bin", 100);
    patch_header(&shard, 1, 7);
    let out = run(tiny(&[("--train-data", &shard.display().to_string())]));
    assert_error(&out, &["train.bin", "version", "found 7"]);
}

#[test]
fn shard_header_claiming_more_tokens_than_the_file_holds_is_refused() {
    let dir = TempDir::new().unwrap();
    let shard = write_small_shard(dir.path(), "train.bin", 100);
    patch_header(&shard, 2, 150);
    let out = run(tiny(&[("--train-data", &shard.display().to_string())]));
    // 1024 header bytes + 2 * 150 = 1324 expected, 1024 + 2 * 100 = 1224 found.
    assert_error(&out, &["train.bin", "150", "1324 bytes", "1224 bytes"]);
}

#[test]
fn shard_shorter_than_one_batch_is_refused() {
    let dir = TempDir::new().unwrap();
    let shard = write_small_shard(dir.path(), "train.bin", 10);
    let out = run(tiny(&[("--train-data", &shard.display().to_string())]));
    // B=2, T=8 needs 2 * 8 + 1 = 17 tokens.
    assert_error(&out, &["train.bin", "at least 17", "found 10"]);
}

#[test]
fn val_shard_shorter_than_one_batch_is_refused() {
    let dir = TempDir::new().unwrap();
    let train = write_small_shard(dir.path(), "train.bin", 100);
    let val = write_small_shard(dir.path(), "val.bin", 10);
    let out = run(tiny(&[("--train-data", &train.display().to_string()), ("--val-data", &val.display().to_string())]));
    assert_error(&out, &["val.bin", "at least 17", "found 10"]);
}

// ---------------------------------------------------------------------------------------------------------------
// Bad checkpoints
// ---------------------------------------------------------------------------------------------------------------

/// A tiny run from the checkpoint at `model` on a fresh 100-token shard in `dir`.
fn run_from_checkpoint(dir: &Path, model: &Path) -> Run {
    let shard = write_small_shard(dir, "train.bin", 100);
    run(tiny_run(&[("--model", &model.display().to_string()), ("--train-data", &shard.display().to_string())]))
}

#[test]
fn checkpoint_with_wrong_magic_is_refused() {
    let dir = TempDir::new().unwrap();
    let model = write_small_model(dir.path());
    patch_header(&model, 0, 777);
    let out = run_from_checkpoint(dir.path(), &model);
    assert_error(&out, &["model_in.bin", "magic", "20240326", "777"]);
}

#[test]
fn truncated_checkpoint_is_refused() {
    let dir = TempDir::new().unwrap();
    let model = write_small_model(dir.path());
    let len = std::fs::metadata(&model).unwrap().len();
    OpenOptions::new().write(true).open(&model).unwrap().set_len(len - 4).unwrap();
    let out = run_from_checkpoint(dir.path(), &model);
    assert_error(&out, &["model_in.bin", "file size", &format!("{len} bytes"), &format!("{} bytes", len - 4)]);
}

#[test]
fn checkpoint_shorter_than_its_header_is_refused() {
    let dir = TempDir::new().unwrap();
    let model = dir.path().join("model_in.bin");
    std::fs::write(&model, [0u8; 100]).unwrap();
    let out = run_from_checkpoint(dir.path(), &model);
    assert_error(&out, &["model_in.bin", "1024 bytes", "100 bytes"]);
}

#[test]
fn checkpoint_with_unsupported_version_is_refused() {
    let dir = TempDir::new().unwrap();
    let model = write_small_model(dir.path());
    patch_header(&model, 1, 4);
    let out = run_from_checkpoint(dir.path(), &model);
    assert_error(&out, &["model_in.bin", "version", "found 4"]);
}

#[test]
fn checkpoint_with_heads_not_dividing_channels_is_refused() {
    let dir = TempDir::new().unwrap();
    let model = write_small_model(dir.path());
    patch_header(&model, 5, 3); // NH = 3 with C = 32
    let out = run_from_checkpoint(dir.path(), &model);
    assert_error(&out, &["model_in.bin", "multiple of num_heads"]);
}

#[test]
fn checkpoint_with_absurd_sizes_is_refused() {
    let dir = TempDir::new().unwrap();
    let model = write_small_model(dir.path());
    patch_header(&model, 4, 1 << 30); // L
    patch_header(&model, 6, 1 << 30); // C
    let out = run_from_checkpoint(dir.path(), &model);
    assert_error(&out, &["model_in.bin", "parameters is more than this trainer supports"]);
}

#[test]
fn missing_checkpoint_file_is_named() {
    let dir = TempDir::new().unwrap();
    let out = run_from_checkpoint(dir.path(), &dir.path().join("absent.bin"));
    assert_error(&out, &["absent.bin", "cannot open"]);
}

// ---------------------------------------------------------------------------------------------------------------
// Data that does not fit the model
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn train_tokens_outside_the_model_vocabulary_are_refused() {
    let dir = TempDir::new().unwrap();
    let model = write_small_model(dir.path());
    let shard = dir.path().join("train.bin");
    let mut data = tokens(100, 300);
    data[50] = 300; // V = 300: ids 0..=299
    write_shard(&shard, &data).unwrap();
    let out =
        run(tiny_run(&[("--model", &model.display().to_string()), ("--train-data", &shard.display().to_string())]));
    assert_error(&out, &["--train-data", "train.bin", "token id 300", "300 tokens"]);
}

#[test]
fn val_tokens_outside_the_model_vocabulary_are_refused() {
    let dir = TempDir::new().unwrap();
    let model = write_small_model(dir.path());
    let train = write_small_shard(dir.path(), "train.bin", 100);
    let val = dir.path().join("val.bin");
    let mut data = tokens(100, 300);
    data[3] = 1000;
    write_shard(&val, &data).unwrap();
    let out = run(tiny_run(&[
        ("--model", &model.display().to_string()),
        ("--train-data", &train.display().to_string()),
        ("--val-data", &val.display().to_string()),
    ]));
    assert_error(&out, &["--val-data", "val.bin", "token id 1000"]);
}

#[test]
fn vocab_size_below_gpt2_is_refused_on_built_in_data() {
    let out = run(tiny(&[("--vocab-size", "1000")]));
    assert_error(&out, &["token id 50256", "1000 tokens"]);
}

#[test]
fn seq_len_above_the_checkpoint_max_seq_len_is_refused() {
    let dir = TempDir::new().unwrap();
    let model = write_small_model(dir.path());
    let shard = write_small_shard(dir.path(), "train.bin", 100);
    let out = run(tiny_run(&[
        ("--model", &model.display().to_string()),
        ("--train-data", &shard.display().to_string()),
        ("--seq-len", "32"),
    ]));
    assert_error(&out, &["--seq-len", "32", "16"]);
}

#[test]
fn seq_len_above_the_preset_max_seq_len_is_refused() {
    let out = run(tiny(&[("--max-seq-len", "4")]));
    assert_error(&out, &["--seq-len", "8", "4"]);
}

#[test]
fn tokenizer_whose_eot_is_outside_the_model_vocabulary_is_refused_up_front() {
    let dir = TempDir::new().unwrap();
    let model = write_small_model(dir.path());
    let shard = write_small_shard(dir.path(), "train.bin", 100);
    let tokenizer = dir.path().join("tok.bin");
    write_tokenizer(&tokenizer, 512, 511); // the model has V = 300
    let out = run(tiny_run(&[
        ("--model", &model.display().to_string()),
        ("--train-data", &shard.display().to_string()),
        ("--tokenizer", &tokenizer.display().to_string()),
        ("--sample-every", "100"),
        ("--gen-tokens", "2"),
    ]));
    assert_error(&out, &["--tokenizer", "tok.bin", "512 tokens", "vocabulary has 300"]);
    assert!(!out.stdout.contains("train loss"), "should fail before training:\n{}", out.stdout);
}

// ---------------------------------------------------------------------------------------------------------------
// Bad flags
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn batch_size_zero_is_refused() {
    assert_error(&run(tiny(&[("--batch-size", "0")])), &["--batch-size", "found 0"]);
}

#[test]
fn seq_len_zero_is_refused() {
    assert_error(&run(tiny(&[("--seq-len", "0")])), &["--seq-len", "found 0"]);
}

#[test]
fn steps_zero_is_refused() {
    assert_error(&run(tiny(&[("--steps", "0"), ("--warmup", "0")])), &["--steps", "found 0"]);
}

#[test]
fn val_batches_zero_is_refused() {
    assert_error(&run(tiny(&[("--val-batches", "0")])), &["--val-batches", "found 0"]);
}

#[test]
fn batch_size_so_large_that_b_times_t_overflows_is_refused() {
    // 2^54 * 1024 = 2^64 wraps to 0 in B*T.
    let out = run(tiny(&[("--batch-size", "18014398509481984"), ("--seq-len", "1024")]));
    assert_error(&out, &["--batch-size", "B=18014398509481984 times T=1024", "more than 2147483647"]);
}

#[test]
fn lr_zero_is_refused() {
    assert_error(&run(tiny(&[("--lr", "0")])), &["--lr", "positive", "found 0"]);
}

#[test]
fn lr_negative_is_refused() {
    // Written with '=' here; negative_values_after_a_space_reach_the_range_check covers "--lr -1".
    let args: Vec<String> = tiny(&[]).into_iter().chain(["--lr=-1".to_string()]).collect();
    assert_error(&run(args), &["--lr", "found -1"]);
}

#[test]
fn lr_nan_is_refused() {
    assert_error(&run(tiny(&[("--lr", "nan")])), &["--lr", "found NaN"]);
}

#[test]
fn lr_infinite_is_refused() {
    assert_error(&run(tiny(&[("--lr", "inf")])), &["--lr", "found inf"]);
}

#[test]
fn negative_values_after_a_space_reach_the_range_check() {
    assert_error(&run(tiny(&[("--lr", "-1")])), &["--lr", "found -1"]);
    assert_error(&run(tiny(&[("--grad-clip", "-1")])), &["--grad-clip", "found -1"]);
}

#[test]
fn beta1_of_one_and_a_half_is_refused() {
    assert_error(&run(tiny(&[("--beta1", "1.5")])), &["--beta1", "0..1", "found 1.5"]);
}

#[test]
fn beta2_of_one_is_refused() {
    assert_error(&run(tiny(&[("--beta2", "1")])), &["--beta2", "0..1", "found 1"]);
}

#[test]
fn eps_zero_is_refused() {
    assert_error(&run(tiny(&[("--eps", "0")])), &["--eps", "found 0"]);
}

#[test]
fn lr_final_frac_of_two_is_refused() {
    assert_error(&run(tiny(&[("--lr-final-frac", "2")])), &["--lr-final-frac", "0..=1", "found 2"]);
}

#[test]
fn negative_grad_clip_is_refused() {
    let args: Vec<String> = tiny(&[]).into_iter().chain(["--grad-clip=-1".to_string()]).collect();
    assert_error(&run(args), &["--grad-clip", "found -1"]);
}

#[test]
fn negative_weight_decay_is_refused() {
    let args: Vec<String> = tiny(&[]).into_iter().chain(["--weight-decay=-0.1".to_string()]).collect();
    assert_error(&run(args), &["--weight-decay", "found -0.1"]);
}

#[test]
fn warmup_longer_than_the_run_ramps_the_lr_through_every_step() {
    let dir = TempDir::new().unwrap();
    let out_dir = dir.path().join("out");
    let out = run(tiny(&[("--warmup", "6"), ("--lr", "0.006"), ("--out", &out_dir.display().to_string())]));
    assert_eq!(out.code, Some(0), "stderr:\n{}", out.stderr);
    let lrs: Vec<f64> = read_metrics(&out_dir).iter().filter_map(|r| r.get("lr").and_then(Value::as_f64)).collect();
    // Warmup 6 over a 3-step run: lr * (s + 1) / 6 for s = 0, 1, 2.
    let want = [0.001, 0.002, 0.003];
    assert_eq!(lrs.len(), want.len(), "{lrs:?}");
    for (got, want) in lrs.iter().zip(want) {
        assert!((got - want).abs() < 1e-9, "lr {got} vs {want}");
    }
}

#[test]
fn max_skips_zero_is_refused() {
    assert_error(&run(tiny(&[("--max-skips", "0")])), &["--max-skips", "found 0"]);
}

#[test]
fn negative_skip_loss_z_is_refused() {
    let args: Vec<String> = tiny(&[]).into_iter().chain(["--skip-loss-z=-1".to_string()]).collect();
    assert_error(&run(args), &["--skip-loss-z", ">= 0", "found -1"]);
}

#[test]
fn recompute_level_three_is_a_usage_error() {
    assert_usage_error(&run(tiny(&[("--recompute", "3")])), &["--recompute", "0..=2"]);
}

#[test]
fn bf16_on_the_cpu_is_refused_naming_the_flag() {
    let out = run(tiny(&[("--device", "cpu"), ("--precision", "bf16")]));
    assert_error(&out, &["--precision", "bf16 needs a GPU", "fp32 only"]);
}

#[test]
fn an_unknown_precision_is_a_usage_error() {
    assert_usage_error(&run(tiny(&[("--precision", "fp16")])), &["--precision", "fp16", "fp32, bf16"]);
}

#[test]
fn checkpoint_every_without_out_is_refused() {
    assert_error(&run(tiny(&[("--checkpoint-every", "2")])), &["--checkpoint-every", "needs --out"]);
}

#[test]
fn threads_zero_is_refused() {
    assert_error(&run(tiny(&[("--threads", "0")])), &["--threads", "found 0"]);
}

#[test]
fn unknown_preset_is_refused_with_the_list_of_presets() {
    assert_error(&run(tiny_run(&[("--model", "d5")])), &["--model", "'d5'", "d4", "d12"]);
}

#[test]
fn size_flags_with_a_checkpoint_file_are_refused() {
    let dir = TempDir::new().unwrap();
    let model = write_small_model(dir.path());
    let out = run(tiny_run(&[("--model", &model.display().to_string()), ("--layers", "2")]));
    assert_error(&out, &["--layers", "checkpoint"]);
}

#[test]
fn heads_not_dividing_channels_is_refused() {
    assert_error(&run(tiny(&[("--heads", "3")])), &["channels (32)", "num_heads (3)", "multiple"]);
}

#[test]
fn zero_layers_is_refused() {
    assert_error(&run(tiny(&[("--layers", "0")])), &["num_layers", "found 0"]);
}

#[cfg(not(feature = "cuda"))]
#[test]
fn device_cuda_in_a_build_without_kernels_says_how_to_get_them() {
    assert_error(&run(tiny(&[("--device", "cuda")])), &["--device", "cuda", "no CUDA kernels", "--features cuda"]);
}

#[cfg(not(feature = "emu"))]
#[test]
fn device_emu_in_a_build_without_the_emulator_says_how_to_get_it() {
    assert_error(&run(tiny(&[("--device", "emu")])), &["--device", "emu", "no emulator", "--features emu"]);
}

#[test]
fn missing_tokenizer_file_is_named() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("tokenizer.bin");
    let out = run(tiny(&[("--tokenizer", &missing.display().to_string())]));
    assert_error(&out, &["tokenizer.bin", "cannot read tokenizer file"]);
}

#[test]
fn val_data_without_train_data_is_refused() {
    let dir = TempDir::new().unwrap();
    let val = write_small_shard(dir.path(), "val.bin", 100);
    let out = run(tiny(&[("--val-data", &val.display().to_string())]));
    assert_error(&out, &["--val-data", "--train-data"]);
}

#[test]
fn out_path_that_is_a_file_is_refused() {
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("taken");
    std::fs::write(&file, "x").unwrap();
    let out = run(tiny(&[("--out", &file.display().to_string())]));
    assert_error(&out, &["taken", "output directory"]);
}

#[test]
fn non_numeric_steps_is_a_usage_error() {
    assert_usage_error(&run(tiny(&[("--steps", "abc")])), &["--steps", "abc", "invalid value"]);
}

#[test]
fn unknown_device_is_a_usage_error() {
    assert_usage_error(&run(tiny(&[("--device", "tpu")])), &["--device", "tpu"]);
}

#[test]
fn a_mistyped_simd_cap_is_an_error_naming_the_variable() {
    let out = Command::new(env!("CARGO_BIN_EXE_train_gpt2"))
        .args(tiny(&[]))
        .env("LLMRS_SIMD", "sse4")
        .output()
        .expect("the train_gpt2 binary starts");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let out = Run { code: out.status.code(), stdout: String::new(), stderr };
    assert_error(&out, &["invalid LLMRS_SIMD", "avx512, avx2 or baseline", "\"sse4\""]);
}

#[test]
fn a_run_larger_than_memory_is_refused_with_its_plan_before_allocating() {
    // 100k sequences of 1024 tokens need tens of terabytes of logits: more than any test machine has.
    let out = run(tiny(&[("--batch-size", "100000"), ("--seq-len", "1024"), ("--max-seq-len", "1024")]));
    assert_error(&out, &["not enough memory", "training needs", "parameters", "activations", "--batch-size"]);
}

#[test]
fn a_model_larger_than_the_trainer_supports_is_refused_before_allocating() {
    // A million layers: 12.7 billion parameters, past the i32 element offsets llm.c's layout uses.
    let out = run(tiny(&[("--layers", "1000000")]));
    assert_error(&out, &["model size", "--layers", "12705642560 parameters", "more than this trainer supports"]);
}

/// A tiny run of 12 steps on the built-in (shuffled) data, checkpointing every 4 steps into `out`.
fn checkpointed_run(out: &Path, changes: &[(&str, &str)]) -> Vec<String> {
    let mut args = tiny(&[("--steps", "12"), ("--checkpoint-every", "4"), ("--val-every", "3")]);
    args.extend(flags(&[], changes));
    args.extend(["--out".to_string(), out.display().to_string()]);
    args
}

/// The metrics.jsonl records of `out` without their timings (which differ between any two runs).
fn records_without_timings(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut record: Value = serde_json::from_str(line).unwrap();
            let map = record.as_object_mut().unwrap();
            map.remove("ms");
            map.remove("tokens_per_sec");
            record
        })
        .collect()
}

/// `dir` copied to `to`, recursively (a run directory as a crash would have left it).
fn copy_dir(dir: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn a_resumed_run_reproduces_the_uninterrupted_one_bit_for_bit() {
    let dir = TempDir::new().unwrap();
    let (whole, resumed) = (dir.path().join("whole"), dir.path().join("resumed"));
    assert_success(&run(checkpointed_run(&whole, &[])));
    // A run that stopped after its checkpoint at step 4: everything past it is gone except what a crash between
    // checkpoints leaves (metrics of steps 4..12, which the resume must drop and redo).
    copy_dir(&whole, &resumed);
    for step in ["step_000008", "step_000012"] {
        std::fs::remove_dir_all(resumed.join("checkpoints").join(step)).unwrap();
    }
    std::fs::remove_file(resumed.join("model.bin")).unwrap();
    let out = run(["--out", resumed.to_str().unwrap(), "--resume"]);
    assert_success(&out);
    assert!(out.stdout.contains("resume:") && out.stdout.contains("step_000004"), "{}", out.stdout);

    let mut expected = records_without_timings(&whole);
    let got = records_without_timings(&resumed);
    let marker = got.iter().position(|r| r.get("event").is_some()).expect("a resume marker in metrics.jsonl");
    assert_eq!(got[marker], serde_json::json!({"event": "resume", "step": 4}));
    expected.insert(marker, got[marker].clone());
    assert_eq!(got, expected, "losses, lr and grad norms after resuming must equal the uninterrupted run's");
    let (_, whole_params) = read_model(&whole.join("model.bin")).unwrap();
    let (_, resumed_params) = read_model(&resumed.join("model.bin")).unwrap();
    assert!(whole_params == resumed_params, "the final parameters must be bitwise equal");
}

#[test]
fn resume_skips_a_damaged_newest_checkpoint_and_ignores_unfinished_ones() {
    let dir = TempDir::new().unwrap();
    let out_dir = dir.path().join("run");
    assert_success(&run(checkpointed_run(&out_dir, &[("--steps", "8")])));
    let checkpoints = out_dir.join("checkpoints");
    // The newest checkpoint's optimizer state lost its tail; a .tmp directory is a write that never finished.
    let optimizer = checkpoints.join("step_000008").join("optimizer.bin");
    let len = std::fs::metadata(&optimizer).unwrap().len();
    OpenOptions::new().write(true).open(&optimizer).unwrap().set_len(len - 4).unwrap();
    std::fs::create_dir(checkpoints.join("step_000012.tmp")).unwrap();
    let out = run(["--out", out_dir.to_str().unwrap(), "--resume", "--steps", "10"]);
    assert_success(&out);
    assert!(out.stderr.contains("warning: skipping a damaged checkpoint"), "{}", out.stderr);
    assert!(out.stderr.contains("optimizer.bin"), "the warning names the damaged file: {}", out.stderr);
    assert!(out.stdout.contains("step_000004"), "resumes from the previous checkpoint: {}", out.stdout);
}

#[test]
fn keep_checkpoints_deletes_all_but_the_newest() {
    let dir = TempDir::new().unwrap();
    let out_dir = dir.path().join("run");
    assert_success(&run(checkpointed_run(&out_dir, &[("--keep-checkpoints", "2")])));
    let mut names: Vec<String> = std::fs::read_dir(out_dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["step_000008", "step_000012"]);
}

#[test]
fn resume_refuses_a_changed_setting_and_names_it() {
    let dir = TempDir::new().unwrap();
    let out_dir = dir.path().join("run");
    assert_success(&run(checkpointed_run(&out_dir, &[("--steps", "4")])));
    let out = run(["--out", out_dir.to_str().unwrap(), "--resume", "--steps", "8", "--lr", "0.01"]);
    assert_error(&out, &["--lr", "0.01", "keeps its settings"]);
}

#[test]
fn resume_of_a_finished_run_asks_for_more_steps_and_then_extends_it() {
    let dir = TempDir::new().unwrap();
    let out_dir = dir.path().join("run");
    assert_success(&run(checkpointed_run(&out_dir, &[("--steps", "4")])));
    assert_error(&run(["--out", out_dir.to_str().unwrap(), "--resume"]), &["--steps", "already at step 4"]);
    assert_success(&run(["--out", out_dir.to_str().unwrap(), "--resume", "--steps", "6"]));
    let record: Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("run.json")).unwrap()).unwrap();
    let sessions = record["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "run.json records both sessions: {record}");
    assert_eq!(sessions[1]["from_step"], 4);
}

#[test]
fn resume_without_checkpoints_or_run_is_refused() {
    let dir = TempDir::new().unwrap();
    let out_dir = dir.path().join("run");
    assert_error(&run(["--out", out_dir.to_str().unwrap(), "--resume"]), &["run.json", "cannot read run record"]);
    assert_success(&run(flags(&[TINY_MODEL, TINY_RUN], &[("--out", out_dir.to_str().unwrap())])));
    assert_error(&run(["--out", out_dir.to_str().unwrap(), "--resume"]), &["--resume", "no complete checkpoint"]);
    assert_error(&run(["--resume"]), &["--resume", "needs --out"]);
}

#[test]
fn a_new_run_refuses_an_out_dir_that_holds_one() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().display().to_string();
    assert_success(&run(tiny(&[("--out", &out)])));
    assert_error(&run(tiny(&[("--out", &out)])), &["--out", "already holds a run", "--resume"]);
}

#[test]
fn list_presets_shows_the_ladder_with_sizes_memory_and_times_that_scale_with_flops() {
    let out = run(["--list", "presets", "-b", "2", "-t", "8", "--threads", "1"]);
    assert_success(&out);
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .filter(|r: &Vec<&str>| !r.is_empty())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(names, ["tiny", "d4", "small", "d12", "d24", "d36", "d48"], "{}", out.stdout);
    let mut per_gflop = Vec::new();
    for row in &rows {
        let config = GPT2Config::preset(row[0]).unwrap();
        assert_eq!(row[4], format!("{:.1}M", config.num_parameters() as f64 / 1e6), "{row:?}");
        let plan = llmrs::model::MemoryPlan::new(&config, 2, 8, llmrs::layout::Recompute::Nothing);
        assert!(row.join(" ").contains(&format!("{plan}")), "the memory plan of {}: {row:?}", row[0]);
        let (gflop, seconds): (f64, f64) = (row[5].parse().unwrap(), row[6].parse().unwrap());
        assert!(seconds > 0.0, "{row:?}");
        per_gflop.push(seconds / gflop);
    }
    // One measured rate for all: seconds per GFLOP agree up to the table's rounding.
    let (min, max) = per_gflop.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    assert!(max / min < 1.5, "time per GFLOP should be one rate: {per_gflop:?}\n{}", out.stdout);
    assert!(GPT2Config::preset("tiny").unwrap().num_parameters() < 6_000_000);
    assert_eq!(GPT2Config::preset("d6"), GPT2Config::preset("small"), "d6 is another name for small");
}

#[test]
fn the_same_seed_gives_identical_runs_across_runs_and_thread_counts() {
    let dir = TempDir::new().unwrap();
    let mut outs = Vec::new();
    for (name, threads) in [("a", "1"), ("b", "2"), ("c", "2")] {
        let out = dir.path().join(name);
        let mut args = tiny(&[("--threads", threads), ("--steps", "6"), ("--val-every", "3")]);
        args.extend(["--out".to_string(), out.display().to_string()]);
        assert_success(&run(&args));
        outs.push(records_without_timings(&out));
    }
    assert!(outs[0].iter().any(|r| r.get("val_loss").is_some()), "evaluations are compared too");
    assert_eq!(outs[1], outs[2], "two runs with the same seed");
    assert_eq!(outs[0], outs[1], "1 thread and 2 threads");
}
