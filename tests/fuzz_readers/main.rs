//! Fuzzing every file reader on stable Rust: valid files made by the writers, mutated by proptest (`mutate.rs`),
//! each case checked against the contract in `targets.rs` (Ok or an error naming the file and the field, no
//! panic, no allocation beyond a bound linear in the input's size). A failure is shrunk to the fewest edits and
//! saved as an input file for `tests/fuzz_corpus/<target>/`, which every run replays first.
//!
//! The default run is short (`DEFAULT_CASES` per target, a second or two each); a long one is opt-in:
//!
//! ```text
//! LLMRS_FUZZ_CASES=1000000 LLMRS_FUZZ_SEED=7 cargo test --release --test fuzz_readers -- --nocapture
//! ```
//!
//! `docs/fuzzing.md` has the coverage-guided version (cargo fuzz) and the numbers of past runs.

mod mutate;
mod targets;

use std::path::{Path, PathBuf};
use std::time::Instant;

use llmrs::checkpoint::{write_model, ModelDtype};
use llmrs::data::{write_shard, LoaderState};
use llmrs::rundir::{write_checkpoint, write_run_record, RunRecord, Session, TrainState};
use llmrs::tokenizer::write_llmc_file;
use llmrs::GPT2Config;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

use mutate::{apply, mutation};
use targets::{check, join, split, Outcome, Target};

/// Cases per target when `LLMRS_FUZZ_CASES` is not set: enough to pass every header check with some edits, short
/// enough for the default `cargo test --release`.
const DEFAULT_CASES: u32 = 2000;
/// The generator seed when `LLMRS_FUZZ_SEED` is not set, so the default run is the same run every time.
const DEFAULT_SEED: u64 = 20240326;
/// Most mutations applied to one seed.
const MAX_MUTATIONS: usize = 6;

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.parse().unwrap_or_else(|_| panic!("{name}={value} is not a number")))
}

/// maxT 2, V 3 padded to 4, L 1, NH 2, C 4: 276 parameters, every tensor of a GPT-2 in a 1 KB payload.
fn tiny_config() -> GPT2Config {
    GPT2Config { max_seq_len: 2, vocab_size: 3, padded_vocab_size: 4, num_layers: 1, num_heads: 2, channels: 4 }
}

fn ramp(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.37).sin()).collect()
}

/// The files of a written `name` in `dir`.
fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("cannot read seed {name}: {e}"))
}

fn model_seeds() -> Vec<Vec<Vec<u8>>> {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config();
    let params = ramp(config.num_parameters());
    [ModelDtype::F32, ModelDtype::Bf16]
        .into_iter()
        .map(|dtype| {
            let path = dir.path().join("model.bin");
            write_model(&path, &config, &params, dtype).unwrap();
            vec![std::fs::read(path).unwrap()]
        })
        .collect()
}

fn shard_seeds() -> Vec<Vec<Vec<u8>>> {
    let dir = tempfile::tempdir().unwrap();
    let shard = |name: &str, tokens: Vec<u16>| {
        let path = dir.path().join(name);
        write_shard(&path, &tokens).unwrap();
        std::fs::read(path).unwrap()
    };
    vec![vec![shard("a.bin", (0..40).collect()), shard("b.bin", (0..25).map(|t| 1000 + 7 * t).collect())]]
}

fn tokenizer_seeds() -> Vec<Vec<Vec<u8>>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.bin");
    let mut seeds = Vec::new();
    // A small version-2 vocabulary with multi-byte and non-UTF-8 tokens.
    let small: &[&[u8]] = &[b"a", b"bc", b" the", &[0xe2, 0x82], &[0xac], b"<|endoftext|>"];
    write_llmc_file(&path, small, 5).unwrap();
    seeds.push(vec![std::fs::read(&path).unwrap()]);
    // A byte-level vocabulary (256 bytes + EOT), as `llmrs prepare --tokenizer bytes` writes.
    let bytes: Vec<[u8; 1]> = (0..=255u8).map(|b| [b]).collect();
    let mut byte_level: Vec<&[u8]> = bytes.iter().map(|b| &b[..]).collect();
    byte_level.push(b"<|endoftext|>");
    write_llmc_file(&path, &byte_level, 256).unwrap();
    seeds.push(vec![std::fs::read(&path).unwrap()]);
    // Version 1, which implies GPT-2's 50257 tokens.
    let names: Vec<Vec<u8>> = (0..50257u32).map(|i| format!("{}", i % 10).into_bytes()).collect();
    let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    write_llmc_file(&path, &names, 50256).unwrap();
    let mut v1 = std::fs::read(&path).unwrap();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    v1[12..16].copy_from_slice(&0u32.to_le_bytes());
    seeds.push(vec![v1]);
    seeds
}

fn train_state(step: usize) -> TrainState {
    TrainState {
        step,
        loader: LoaderState {
            epoch: 1,
            shard_index: 0,
            batch_index: 3,
            shuffle_seed: Some(42),
            batch_size: 4,
            seq_len: 64,
        },
        rng: 1337,
        elapsed_s: 12.5,
        detectors: Default::default(),
    }
}

fn checkpoint_seeds() -> Vec<Vec<Vec<u8>>> {
    let out = tempfile::tempdir().unwrap();
    let config = tiny_config();
    let n = config.num_parameters();
    let (params, m, v) = (ramp(n), ramp(n).iter().map(|x| x * 0.1).collect::<Vec<_>>(), vec![1e-4; n]);
    let dir = write_checkpoint(out.path(), &config, &params, (&m, &v), &train_state(100)).unwrap();
    vec![targets::CHECKPOINT.files.iter().map(|name| read(&dir, name)).collect()]
}

/// A Hugging Face GPT-2 of `tiny_config()`'s shape: every tensor named as transformers names it (`prefix`
/// before each), stored as `dtype`, plus the mask buffers and a tied lm_head when `extras`.
fn safetensors_file(prefix: &str, dtype: Dtype, extras: bool) -> Vec<u8> {
    let config = tiny_config();
    let (v, t, c) = (config.vocab_size, config.max_seq_len, config.channels);
    let mut shapes: Vec<(String, Vec<usize>)> =
        vec![(format!("{prefix}wte.weight"), vec![v, c]), (format!("{prefix}wpe.weight"), vec![t, c])];
    for (name, shape) in [
        ("ln_1.weight", vec![c]),
        ("ln_1.bias", vec![c]),
        ("attn.c_attn.weight", vec![c, 3 * c]),
        ("attn.c_attn.bias", vec![3 * c]),
        ("attn.c_proj.weight", vec![c, c]),
        ("attn.c_proj.bias", vec![c]),
        ("ln_2.weight", vec![c]),
        ("ln_2.bias", vec![c]),
        ("mlp.c_fc.weight", vec![c, 4 * c]),
        ("mlp.c_fc.bias", vec![4 * c]),
        ("mlp.c_proj.weight", vec![4 * c, c]),
        ("mlp.c_proj.bias", vec![c]),
    ] {
        shapes.push((format!("{prefix}h.0.{name}"), shape));
    }
    shapes.push((format!("{prefix}ln_f.weight"), vec![c]));
    shapes.push((format!("{prefix}ln_f.bias"), vec![c]));
    if extras {
        shapes.push((format!("{prefix}h.0.attn.bias"), vec![1, 1, t, t]));
        shapes.push(("lm_head.weight".to_string(), vec![v, c]));
    }
    let data: Vec<(String, Vec<usize>, Vec<u8>)> = shapes
        .into_iter()
        .map(|(name, shape)| {
            let count: usize = shape.iter().product();
            // lm_head repeats wte's values (tied), which ramp(count) from the same start does.
            let values = ramp(count);
            let bytes = match dtype {
                Dtype::F32 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
                Dtype::F16 => values.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
                _ => values.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
            };
            (name, shape, bytes)
        })
        .collect();
    let views = data.iter().map(|(name, shape, bytes)| {
        (name.clone(), TensorView::new(dtype, shape.clone(), bytes).expect("a consistent seed tensor"))
    });
    safetensors::serialize(views, None).unwrap()
}

fn hf_seeds() -> Vec<Vec<Vec<u8>>> {
    let config = tiny_config();
    let full = serde_json::json!({
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "vocab_size": config.vocab_size,
        "n_positions": config.max_seq_len,
        "n_embd": config.channels,
        "n_layer": config.num_layers,
        "n_head": config.num_heads,
        "n_inner": null,
        "layer_norm_epsilon": 1e-5,
        "scale_attn_weights": true,
        "tie_word_embeddings": true,
        "architectures": ["GPT2LMHeadModel"]
    });
    let sizes_only = serde_json::json!({
        "vocab_size": config.vocab_size,
        "n_positions": config.max_seq_len,
        "n_embd": config.channels,
        "n_layer": config.num_layers,
        "n_head": config.num_heads
    });
    vec![
        vec![serde_json::to_vec_pretty(&full).unwrap(), safetensors_file("transformer.", Dtype::F32, false)],
        vec![serde_json::to_vec(&sizes_only).unwrap(), safetensors_file("", Dtype::F16, true)],
        vec![serde_json::to_vec(&sizes_only).unwrap(), safetensors_file("transformer.", Dtype::BF16, true)],
    ]
}

/// metrics.jsonl as the trainer writes it: steps, evaluations, a resume line, a diverged (null) loss, and a last
/// line still being written.
fn metrics_file() -> Vec<u8> {
    [
        r#"{"event":"start","step":0}"#,
        r#"{"step":0,"train_loss":10.9,"lr":0.0006,"grad_norm":4.2,"ms":120.5,"tokens_per_sec":4096.0}"#,
        r#"{"step":0,"val_loss":10.8}"#,
        r#"{"step":1,"train_loss":null,"lr":0.0006,"grad_norm":null,"ms":118.0,"tokens_per_sec":4100.0}"#,
        "",
        r#"{"event":"resume","step":1}"#,
        r#"{"step":1,"train_loss":9.7,"lr":0.0005,"grad_norm":2.0,"ms":119.0,"tokens_per_sec":4110.0}"#,
        r#"{"step":2,"val_l"#,
    ]
    .join("\n")
    .into_bytes()
}

fn metrics_seeds() -> Vec<Vec<Vec<u8>>> {
    vec![vec![metrics_file()], vec![b"{\"step\":3,\"val_loss\":1.5}\n".to_vec()]]
}

fn run_seeds() -> Vec<Vec<Vec<u8>>> {
    let out = tempfile::tempdir().unwrap();
    let config = tiny_config();
    let mut args = serde_json::Map::new();
    args.insert("batch_size".into(), 4.into());
    args.insert("lr".into(), 6e-4.into());
    let record = RunRecord {
        argv: vec!["--preset".into(), "tiny".into()],
        args,
        model: config,
        parameters: config.num_parameters(),
        sessions: vec![Session {
            started: 1_700_000_000,
            from_step: 0,
            device: "cpu".into(),
            git_commit: Some("0123456789ab+dirty".into()),
        }],
    };
    write_run_record(out.path(), &record).unwrap();
    vec![vec![read(out.path(), "run.json"), metrics_file()]]
}

/// The seeds of `target`, as its files.
fn seeds(target: &Target) -> Vec<Vec<Vec<u8>>> {
    match target.name {
        "model" => model_seeds(),
        "shard" => shard_seeds(),
        "tokenizer" => tokenizer_seeds(),
        "checkpoint" => checkpoint_seeds(),
        "hf" => hf_seeds(),
        "metrics" => metrics_seeds(),
        "run" => run_seeds(),
        other => panic!("no seeds for target {other}"),
    }
}

fn corpus_dir(target: &Target) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_corpus").join(target.name)
}

/// Replays the corpus, checks that every seed is accepted, then runs the mutation cases.
fn fuzz(target: &Target) {
    let dir = targets::work_dir(target);
    let seeds = seeds(target);

    let corpus = corpus_dir(target);
    let mut replayed = 0;
    if let Ok(entries) = std::fs::read_dir(&corpus) {
        let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let input = std::fs::read(&file).unwrap();
            if let Err(why) = check(target, &dir, &split(&input, target.files.len())) {
                panic!("{}: corpus input {} breaks the contract: {why}", target.name, file.display());
            }
            replayed += 1;
        }
    }
    for (i, seed) in seeds.iter().enumerate() {
        let parts: Vec<&[u8]> = seed.iter().map(Vec::as_slice).collect();
        assert_eq!(check(target, &dir, &parts), Ok(Outcome::Accepted), "{} seed {i} must read back", target.name);
    }

    let cases = env_number("LLMRS_FUZZ_CASES").map_or(DEFAULT_CASES, |n| n as u32);
    let rng_seed = env_number("LLMRS_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let config = Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(rng_seed),
        max_shrink_iters: 10_000,
        ..Config::default()
    };
    let strategy = (0..seeds.len(), proptest::collection::vec(mutation(target.files.len()), 1..=MAX_MUTATIONS));
    let accepted = std::cell::Cell::new(0u64);
    let start = Instant::now();
    let result = TestRunner::new(config).run(&strategy, |(seed, mutations)| {
        let parts = apply(&seeds[seed], &mutations);
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        match check(target, &dir, &parts) {
            Ok(Outcome::Accepted) => {
                accepted.set(accepted.get() + 1);
                Ok(())
            }
            Ok(Outcome::Refused) => Ok(()),
            Err(why) => Err(TestCaseError::fail(why)),
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    if result.is_ok() {
        targets::remove_work_dir(&dir);
    }
    match result {
        Ok(()) => println!(
            "fuzz {}: {cases} cases (seed {rng_seed}) in {seconds:.1} s, {:.0} cases/s, {} accepted, {} refused; {} \
             seeds, {replayed} corpus inputs replayed",
            target.name,
            cases as f64 / seconds,
            accepted.get(),
            cases as u64 - accepted.get(),
            seeds.len(),
        ),
        Err(TestError::Fail(why, (seed, mutations))) => {
            let input = join(&apply(&seeds[seed], &mutations));
            let saved = dir.join("failure.bin");
            std::fs::write(&saved, &input).unwrap();
            panic!(
                "{}: {why}\n  seed {seed} with mutations {mutations:#?}\n  input saved to {} (copy it into {} \
                 once fixed)",
                target.name,
                saved.display(),
                corpus.display()
            );
        }
        Err(TestError::Abort(why)) => panic!("{}: proptest aborted: {why}", target.name),
    }
}

#[test]
fn model_files_are_read_or_refused_naming_file_and_field() {
    fuzz(&targets::MODEL);
}

#[test]
fn token_shards_are_read_or_refused_naming_file_and_field() {
    fuzz(&targets::SHARD);
}

#[test]
fn tokenizer_files_are_read_or_refused_naming_file_and_field() {
    fuzz(&targets::TOKENIZER);
}

#[test]
fn checkpoints_are_read_or_refused_naming_file_and_field() {
    fuzz(&targets::CHECKPOINT);
}

#[test]
fn hugging_face_models_are_read_or_refused_naming_file_and_field() {
    fuzz(&targets::HF);
}

#[test]
fn metrics_files_are_read_or_refused_naming_file_and_field() {
    fuzz(&targets::METRICS);
}

#[test]
fn run_directories_are_read_or_refused_naming_file_and_field() {
    fuzz(&targets::RUN);
}

#[test]
fn split_undoes_join() {
    let parts = vec![b"abc".to_vec(), Vec::new(), b"defg".to_vec()];
    let input = join(&parts);
    assert_eq!(split(&input, 3), parts.iter().map(Vec::as_slice).collect::<Vec<_>>());
}

/// Writes the seeds of every target into `tests/fuzz_corpus/` (inputs of at most `MAX_CORPUS_INPUT` bytes), the
/// starting corpus of `cargo fuzz`: `cargo test --release --test fuzz_readers -- --ignored write_seed_corpus`.
#[test]
#[ignore]
fn write_seed_corpus() {
    const MAX_CORPUS_INPUT: usize = 8 << 10;
    for target in targets::ALL {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in seeds(target).iter().enumerate() {
            let input = join(seed);
            if input.len() <= MAX_CORPUS_INPUT {
                std::fs::write(dir.join(format!("seed-{i}")), input).unwrap();
            }
        }
    }
}

/// Checks one input against the contract (allocation bound included), as a named regression test.
fn assert_keeps_contract(target: &Target, parts: &[&[u8]]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    check(target, dir.path(), parts).unwrap_or_else(|why| panic!("{}: {why}", target.name))
}

#[test]
fn tokenizer_header_claiming_millions_of_tokens_allocates_nothing_for_them() {
    // The vocab size in header[2] once sized the table of token ends before any token was read: 8 bytes per
    // claimed token, 34 GB for 0xFFFFFFFF (an abort). 2^28 asks for 2 GB, which a lazy allocation grants, so
    // the bound reports it instead of the process dying.
    let mut file = tokenizer_seeds().swap_remove(0).swap_remove(0);
    file[8..12].copy_from_slice(&(1u32 << 28).to_le_bytes());
    assert_eq!(assert_keeps_contract(&targets::TOKENIZER, &[&file]), Outcome::Refused);
}

#[test]
fn hugging_face_config_claiming_thousands_of_layers_allocates_nothing_for_them() {
    // n_layer in config.json once sized the list of expected tensors (12 per layer) before the weights were
    // looked at: 58 MB for n_layer 65536, gigabytes for the 8.8 million layers a C=4 model may claim.
    let [config, weights] = <[Vec<u8>; 2]>::try_from(hf_seeds().swap_remove(0)).unwrap();
    let mut config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    config["n_layer"] = 65536.into();
    let config = serde_json::to_vec(&config).unwrap();
    assert_eq!(assert_keeps_contract(&targets::HF, &[&config, &weights]), Outcome::Refused);
}

#[test]
fn checkpoint_state_that_is_not_utf8_is_a_format_error_naming_the_field() {
    // A state.json holding a byte that is not UTF-8 was reported as the OS's "stream did not contain valid UTF-8"
    // (an I/O error, naming no field) instead of as a damaged training state.
    let mut files = checkpoint_seeds().swap_remove(0);
    files[2][0] = 0xff;
    let parts: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    assert_eq!(assert_keeps_contract(&targets::CHECKPOINT, &parts), Outcome::Refused);
}

#[test]
fn run_record_that_is_not_utf8_is_a_format_error_naming_the_field() {
    // The same for run.json, read by `llmrs runs` and by a resume.
    let mut files = run_seeds().swap_remove(0);
    files[0].push(0xff);
    let parts: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    assert_eq!(assert_keeps_contract(&targets::RUN, &parts), Outcome::Refused);
}

#[test]
fn metrics_cut_short_by_a_crash_stay_readable_after_a_resume() {
    // A metrics.jsonl whose last line a crash cut short (`{"step":2,"val_l`, no newline) reads fine, but a resume
    // kept that line and terminated it, and the resumed run appended after it: the file then had a bad line in
    // the middle, and `llmrs plot` and `llmrs runs` refused it for good.
    let file = b"{\"step\":0,\"train_loss\":3.0}\n{\"step\":2,\"val_l".to_vec();
    assert_eq!(assert_keeps_contract(&targets::METRICS, &[&file]), Outcome::Accepted);
}

#[test]
fn run_summary_of_a_step_at_u64_max_saturates_instead_of_overflowing() {
    // A metrics line with "step": 18446744073709551615 (u64::MAX) made the `runs` summary count steps as
    // step + 1: an overflow panic with overflow checks (the fuzz build), a wrap to "0 steps" without.
    let mut files = run_seeds().swap_remove(0);
    files[1] = b"{\"step\":18446744073709551615,\"train_loss\":1.0}\n".to_vec();
    let parts: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    assert_eq!(assert_keeps_contract(&targets::RUN, &parts), Outcome::Accepted);

    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in targets::RUN.files.iter().zip(&files) {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let summary = llmrs::rundir::RunSummary::load(dir.path()).unwrap();
    assert_eq!(summary.steps, usize::MAX, "steps recorded by a run whose last step is u64::MAX");
}
