//! The `llmrs` tools on real (tiny) training runs: `runs` (the table of runs) and `sample` (generation).

use std::path::Path;
use std::process::Command;
use tempfile::TempDir;

/// Runs `exe` with `args`; returns (success, stdout, stderr).
fn run(exe: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(exe).args(args).output().expect("the binary starts");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A 4-step run of a tiny model on the built-in data into `out`, with `extra` flags.
fn train(out: &Path, extra: &[&str]) {
    let mut args = vec!["--layers", "1", "--channels", "32", "--heads", "2", "-b", "2", "-t", "8", "--steps", "4"];
    args.extend(["--val-every", "2", "--val-batches", "1", "--sample-every", "0", "--threads", "1", "--out"]);
    args.push(out.to_str().unwrap());
    args.extend(extra);
    let (ok, stdout, stderr) = run(env!("CARGO_BIN_EXE_train_gpt2"), &args);
    assert!(ok, "training failed:\n{stdout}\n{stderr}");
}

/// The lowest val_loss in a run's metrics.jsonl, read here independently of the code under test.
fn best_val(out: &Path) -> f64 {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap().get("val_loss").and_then(|v| v.as_f64()))
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn runs_lists_every_run_sorted_with_the_settings_that_differ() {
    let dir = TempDir::new().unwrap();
    let runs = dir.path();
    train(&runs.join("fast"), &["--lr", "0.003"]);
    train(&runs.join("slow"), &["--lr", "0.0001"]);
    train(&runs.join("wide"), &["--lr", "0.003", "--batch-size", "3"]);
    let (ok, stdout, stderr) = run(env!("CARGO_BIN_EXE_llmrs"), &["runs", runs.to_str().unwrap(), "--sort", "val"]);
    assert!(ok, "{stderr}");
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{stdout}");

    let mut by_val: Vec<(f64, &str)> = ["fast", "slow", "wide"].iter().map(|n| (best_val(&runs.join(n)), *n)).collect();
    by_val.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (row, (val, name)) in rows.iter().zip(&by_val) {
        assert!(row.starts_with(name), "rows sorted by best val loss: {stdout}");
        assert!(row.contains(&format!("{val:.4}")), "{name}'s best val loss {val:.4}: {row}");
        assert!(row.contains(" 4 "), "4 steps: {row}");
        assert!(row.contains("cpu"), "the device: {row}");
    }
    let wide = rows.iter().find(|r| r.starts_with("wide")).unwrap();
    assert!(wide.contains("batch_size=3") && wide.contains("lr=0.003"), "what differs: {wide}");
    assert!(!wide.contains("seq_len="), "settings shared by all runs are not listed: {wide}");
}

#[test]
fn runs_names_what_is_wrong_with_bad_input() {
    let dir = TempDir::new().unwrap();
    let (ok, _, stderr) = run(env!("CARGO_BIN_EXE_llmrs"), &["runs", dir.path().join("missing").to_str().unwrap()]);
    assert!(!ok && stderr.starts_with("error: cannot list runs in") && stderr.contains("missing"), "{stderr}");
    let (ok, _, stderr) = run(env!("CARGO_BIN_EXE_llmrs"), &["runs", dir.path().to_str().unwrap()]);
    assert!(!ok && stderr.contains("no run.json"), "{stderr}");

    let out = dir.path().join("broken");
    train(&out, &[]);
    let metrics = out.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).unwrap();
    std::fs::write(&metrics, format!("{text}not json\n")).unwrap();
    let (ok, _, stderr) = run(env!("CARGO_BIN_EXE_llmrs"), &["runs", out.to_str().unwrap()]);
    let line = text.lines().count() + 1;
    assert!(!ok && stderr.contains("metrics.jsonl") && stderr.contains(&format!("line {line}")), "{stderr}");
    // An unfinished last line is a run being written, not an error.
    std::fs::write(&metrics, format!("{text}{{\"step\": 4, \"tra")).unwrap();
    let (ok, stdout, stderr) = run(env!("CARGO_BIN_EXE_llmrs"), &["runs", out.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("broken"), "{stdout}");
    assert!(!stderr.contains("panicked"));
}

/// The next `n` tokens after `prompt` by always taking the largest logit, computed here with the library's forward
/// pass alone (no sampling code), to check `llmrs sample --temperature 0` against.
fn greedy_tokens(model_path: &Path, prompt: &[u32], n: usize) -> Vec<u32> {
    let (config, params) = llmrs::checkpoint::read_model(model_path).unwrap();
    let mut model = llmrs::model::GPT2::new(config, params).unwrap();
    let mut tokens = prompt.to_vec();
    for _ in 0..n {
        let t = tokens.len();
        model.forward(&tokens, None, 1, t).unwrap();
        let logits = model.logits().unwrap();
        let row = &logits[(t - 1) * config.padded_vocab_size..][..config.vocab_size];
        let best = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b });
        tokens.push(best as u32);
    }
    tokens[prompt.len()..].to_vec()
}

#[test]
fn sample_at_temperature_zero_prints_the_greedy_continuation() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("run");
    train(&out, &["--lr", "0.003"]);
    let prompt = "Once upon a time";
    let (ok, stdout, stderr) = run(
        env!("CARGO_BIN_EXE_llmrs"),
        &["sample", out.to_str().unwrap(), "-p", prompt, "-n", "6", "--temperature", "0"],
    );
    assert!(ok, "{stderr}");
    let tokenizer = llmrs::tokenizer::Tokenizer::gpt2().unwrap();
    let expected = greedy_tokens(&out.join("model.bin"), &tokenizer.encode(prompt).unwrap(), 6);
    assert_eq!(stdout, format!("{prompt}{}\n", tokenizer.decode(&expected)));
}

#[test]
fn sample_is_reproducible_from_its_seed() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("run");
    train(&out, &[]);
    let sample = |seed: &str| {
        let (ok, stdout, stderr) =
            run(env!("CARGO_BIN_EXE_llmrs"), &["sample", out.to_str().unwrap(), "-n", "12", "--seed", seed]);
        assert!(ok, "{stderr}");
        stdout
    };
    assert_eq!(sample("5"), sample("5"));
    assert_ne!(sample("5"), sample("6"), "an untrained model at temperature 1 should give other text for another seed");
}

#[test]
fn sample_names_what_is_wrong_with_bad_input() {
    let dir = TempDir::new().unwrap();
    let llmrs = env!("CARGO_BIN_EXE_llmrs");
    let (ok, _, stderr) = run(llmrs, &["sample", dir.path().to_str().unwrap()]);
    assert!(!ok && stderr.contains("neither model.bin nor a checkpoint"), "{stderr}");
    let out = dir.path().join("run");
    train(&out, &[]);
    let (ok, _, stderr) = run(llmrs, &["sample", out.to_str().unwrap(), "--temperature", "-1"]);
    assert!(!ok && stderr.contains("--temperature") && stderr.contains("found -1"), "{stderr}");
    let (ok, _, stderr) = run(llmrs, &["sample", out.to_str().unwrap(), "--context", "0"]);
    assert!(!ok && stderr.contains("--context") && stderr.contains("found 0"), "{stderr}");
    // A model whose vocabulary is not GPT-2's needs its tokenizer.
    let small = llmrs::GPT2Config {
        max_seq_len: 16,
        vocab_size: 300,
        padded_vocab_size: llmrs::config::padded_vocab(300),
        num_layers: 1,
        num_heads: 2,
        channels: 32,
    };
    let path = dir.path().join("small.bin");
    let model = llmrs::model::GPT2::random(small, 1).unwrap();
    llmrs::checkpoint::write_model(&path, &small, &model.params().unwrap(), llmrs::checkpoint::ModelDtype::F32)
        .unwrap();
    let (ok, _, stderr) = run(llmrs, &["sample", path.to_str().unwrap()]);
    assert!(!ok && stderr.contains("--tokenizer") && stderr.contains("300"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn sample_encodes_prompts_for_a_byte_level_model_with_its_tokenizer_file() {
    let dir = TempDir::new().unwrap();
    let config = llmrs::GPT2Config {
        max_seq_len: 32,
        vocab_size: 256,
        padded_vocab_size: 256,
        num_layers: 1,
        num_heads: 2,
        channels: 32,
    };
    let model_path = dir.path().join("bytes.bin");
    let model = llmrs::model::GPT2::random(config, 9).unwrap();
    llmrs::checkpoint::write_model(&model_path, &config, &model.params().unwrap(), llmrs::checkpoint::ModelDtype::F32)
        .unwrap();
    // Token i is byte i; 255 (never in UTF-8) ends a document.
    let singles: Vec<[u8; 1]> = (0..=255u8).map(|b| [b]).collect();
    let mut tokens: Vec<&[u8]> = singles.iter().map(|b| &b[..]).collect();
    tokens[255] = b"<|endoftext|>";
    let tokenizer_path = dir.path().join("tokenizer.bin");
    llmrs::tokenizer::write_llmc_file(&tokenizer_path, &tokens, 255).unwrap();

    let args = ["sample", model_path.to_str().unwrap(), "--tokenizer", tokenizer_path.to_str().unwrap()];
    let (ok, stdout, stderr) =
        run(env!("CARGO_BIN_EXE_llmrs"), &[&args[..], &["-p", "ab", "-n", "5", "--temperature", "0"]].concat());
    assert!(ok, "{stderr}");
    let expected = greedy_tokens(&model_path, &[u32::from(b'a'), u32::from(b'b')], 5);
    let tokenizer = llmrs::tokenizer::Tokenizer::from_llmc_file(&tokenizer_path).unwrap();
    assert_eq!(stdout, format!("ab{}\n", tokenizer.decode(&expected)));
}
