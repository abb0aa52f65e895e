//! Looking inside a model: per-layer statistics (`--inspect`) and attention maps (`llmrs attention`).

use llmrs::layout::ParamTensors;
use llmrs::model::{TensorStats, GPT2};
use llmrs::rng::Rng;
use llmrs::GPT2Config;
use std::process::Command;
use tempfile::TempDir;

fn small() -> GPT2Config {
    GPT2Config {
        max_seq_len: 16,
        vocab_size: 97,
        padded_vocab_size: llmrs::config::padded_vocab(97),
        num_layers: 2,
        num_heads: 3,
        channels: 48,
    }
}

fn batch(b: usize, t: usize) -> Vec<u32> {
    let mut rng = Rng::new(4);
    (0..b * t + 1).map(|_| rng.below(97) as u32).collect()
}

#[test]
fn tensor_stats_are_mean_std_and_largest_magnitude() {
    let s = TensorStats::of(&[1.0, -4.0, 3.0, 4.0]);
    assert_eq!(s.mean, 1.0);
    // deviations 0, -5, 2, 3: variance 38 / 4
    assert!((s.std - 9.5f32.sqrt()).abs() < 1e-6, "{s:?}");
    assert_eq!(s.max_abs, 4.0);
}

#[test]
fn layer_stats_report_each_layers_gradients_and_normalised_activations() {
    let config = small();
    let (b, t) = (2, 11);
    let mut model = GPT2::random(config, 3).unwrap();
    let tokens = batch(b, t);
    model.forward_backward(&tokens[..b * t], &tokens[1..], b, t).unwrap();
    let stats = model.layer_stats().unwrap();
    assert_eq!(stats.len(), config.num_layers);

    // Gradient statistics agree with the gradients themselves.
    let grads = model.grads().unwrap();
    let g = ParamTensors::sizes(&config).split(&grads);
    let c = config.channels;
    for (l, layer) in stats.iter().enumerate() {
        assert_eq!(layer.layer, l);
        let expected = TensorStats::of(&g.fcw[l * 4 * c * c..(l + 1) * 4 * c * c]);
        assert_eq!(layer.gradients["fcw"], expected, "layer {l} fcw");
        assert!(layer.gradients["residual3"].max_abs > 0.0, "the residual stream gets gradient");
        // At initialisation LayerNorm's weight is 1 and its bias 0: every row of ln1 has mean 0 and std 1, a
        // little less where the row's own variance is not large next to eps = 1e-5 (embeddings of std 0.02 have
        // variance 4e-4: std sqrt(4e-4 / (4e-4 + 1e-5)) = 0.988).
        let ln1 = layer.activations["ln1"];
        assert!(ln1.mean.abs() < 1e-5 && (ln1.std - 1.0).abs() < 0.015, "layer {l} ln1 {ln1:?}");
        for name in ["qkv", "atty", "fch_gelu", "residual3"] {
            assert!(layer.activations[name].std > 0.0, "{name} of layer {l}");
        }
    }
}

#[test]
fn attention_map_is_causal_rows_of_probabilities_and_uniform_without_queries() {
    let config = small();
    let t = 9;
    let mut params = GPT2::init_params(&config, 5).unwrap();
    // Zero layer 1's query weights and biases: every score is 0, so query i spreads 1/(i+1) over keys 0..=i.
    let sizes = ParamTensors::sizes(&config);
    let offsets = sizes.offsets();
    let c = config.channels;
    for row in 0..c {
        let start = offsets.qkvw + 3 * c * c + row * c;
        params[start..start + c].fill(0.0);
    }
    params[offsets.qkvb + 3 * c..offsets.qkvb + 3 * c + c].fill(0.0);
    let mut model = GPT2::new(config, params).unwrap();
    let tokens = batch(1, t);
    model.forward(&tokens[..t], None, 1, t).unwrap();

    for head in 0..config.num_heads {
        let uniform = model.attention_map(0, 1, head).unwrap();
        for i in 0..t {
            for j in 0..t {
                let expected = if j <= i { 1.0 / (i + 1) as f32 } else { 0.0 };
                assert!((uniform[i * t + j] - expected).abs() < 1e-6, "head {head} ({i}, {j}): {}", uniform[i * t + j]);
            }
        }
    }
    let learned = model.attention_map(0, 0, 2).unwrap();
    for i in 0..t {
        let row = &learned[i * t..(i + 1) * t];
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "row {i} sums to 1: {row:?}");
        assert!(row[i + 1..].iter().all(|&p| p == 0.0), "nothing above the diagonal");
    }
    let err = model.attention_map(0, 2, 0).unwrap_err().to_string();
    assert!(err.contains("layer") && err.contains("0..2") && err.contains("found 2"), "{err}");
}

#[test]
fn train_gpt2_inspect_logs_every_layer_of_every_step() {
    let dir = TempDir::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_train_gpt2"))
        .args(["--layers", "2", "--channels", "32", "--heads", "2", "-b", "2", "-t", "8", "--steps", "3"])
        .args(["--val-every", "0", "--sample-every", "0", "--threads", "1", "--inspect", "-o"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    let inspected: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r.get("inspect").is_some())
        .collect();
    assert_eq!(inspected.len(), 3, "one per step:\n{text}");
    for (step, record) in inspected.iter().enumerate() {
        assert_eq!(record["step"], step);
        let layers = record["inspect"].as_array().unwrap();
        assert_eq!(layers.len(), 2);
        assert!(layers[1]["gradients"]["qkvw"]["std"].as_f64().unwrap() > 0.0, "{record}");
    }
}

#[test]
fn llmrs_attention_draws_a_cell_per_query_key_pair_and_names_bad_flags() {
    let dir = TempDir::new().unwrap();
    let config = GPT2Config { vocab_size: 50257, padded_vocab_size: 50304, ..small() };
    let model = GPT2::random(config, 1).unwrap();
    let path = dir.path().join("model.bin");
    llmrs::checkpoint::write_model(&path, &config, &model.params().unwrap(), llmrs::checkpoint::ModelDtype::F32)
        .unwrap();
    let svg = dir.path().join("att.svg");
    let prompt = "Once upon a time";
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_llmrs"))
            .args(["attention", path.to_str().unwrap(), "-p", prompt, "-o", svg.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--layer", "1", "--head", "2"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = llmrs::tokenizer::Tokenizer::gpt2().unwrap().encode(prompt).unwrap().len();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(text.matches("<rect").count(), 1 + t * t, "a background and one cell per (query, key)");
    assert!(text.contains("upon"), "tokens label the axes");
    let out = run(&["--layer", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("--layer") && stderr.contains("found 2"), "{stderr}");
}
