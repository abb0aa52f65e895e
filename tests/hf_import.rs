//! Hugging Face GPT-2 import (`llmrs::hf`, `llmrs import-hf`) against transformers itself.
//!
//! `tests/fixtures/hf_tiny/` is a random GPT2LMHeadModel saved by `save_pretrained`, with transformers' logits on
//! saved inputs (see `tools/make_hf_fixture.py`). The imported model must reproduce those logits, and every way a
//! checkpoint can be wrong or unrepresentable must be refused with a message naming the file and the field.
//! Bad inputs are made here from the fixture: its tensors re-saved with one change, or its config.json edited.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use half::{bf16, f16};
use llmrs::checkpoint::{read_model, write_model, ModelDtype};
use llmrs::hf::{import, HfPaths};
use llmrs::model::GPT2;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use tempfile::TempDir;

/// Largest difference allowed between llmrs's f32 logits and transformers' (computed in f64).
const LOGITS_TOLERANCE: f32 = 1e-4;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_tiny")
}

/// The saved inputs (B, T) and transformers' logits (B, T, V) on them.
struct Reference {
    b: usize,
    t: usize,
    v: usize,
    inputs: Vec<u32>,
    logits: Vec<f32>,
}

fn reference() -> Reference {
    let dir = fixture();
    let json: Value = serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
    let size = |key: &str| json[key].as_u64().unwrap() as usize;
    let (b, t, v) = (size("B"), size("T"), size("V"));
    let inputs: Vec<u32> = json["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32))
        .collect();
    let bytes = std::fs::read(dir.join(json["logits"].as_str().unwrap())).unwrap();
    let logits: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(inputs.len(), b * t, "reference.json inputs");
    assert_eq!(logits.len(), b * t * v, "logits.f32 length");
    Reference { b, t, v, inputs, logits }
}

/// The fixture's tensors, owned, so a test can change them and save them again.
type TensorMap = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

fn fixture_tensors() -> TensorMap {
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.iter()
        .map(|(name, view)| (name.to_string(), (view.dtype(), view.shape().to_vec(), view.data().to_vec())))
        .collect()
}

fn save_tensors(tensors: &TensorMap, path: &Path) {
    let views = tensors.iter().map(|(name, (dtype, shape, data))| {
        (name.clone(), TensorView::new(*dtype, shape.clone(), data).expect("consistent test tensor"))
    });
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn f32_values(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A model directory in a temp dir: the fixture's config.json with `edit` applied, and `tensors`.
fn model_dir(tensors: &TensorMap, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> (TempDir, HfPaths) {
    let dir = TempDir::new().unwrap();
    let paths = HfPaths::in_dir(dir.path());
    let mut config: Value = serde_json::from_slice(&std::fs::read(fixture().join("config.json")).unwrap()).unwrap();
    edit(config.as_object_mut().unwrap());
    std::fs::write(&paths.config, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    save_tensors(tensors, &paths.weights);
    (dir, paths)
}

/// The import's error message, which must not be a success.
fn import_error(paths: &HfPaths) -> String {
    match import(paths) {
        Ok(_) => panic!("importing {paths:?} succeeded; it must be refused"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "message does not mention {part:?}: {message}");
    }
}

#[test]
fn imported_fixture_matches_transformers_logits() {
    let r = reference();
    let (config, params) = import(&HfPaths::in_dir(&fixture())).unwrap();
    assert_eq!(config.vocab_size, r.v);
    let vp = config.padded_vocab_size;
    let mut model = GPT2::new(config, params).unwrap();
    model.forward(&r.inputs, None, r.b, r.t).unwrap();
    let logits = model.logits().unwrap(); // (B, T, Vp)
    let mut max_err = 0.0f32;
    for (row, expected) in r.logits.chunks_exact(r.v).enumerate() {
        for (x, y) in logits[row * vp..row * vp + r.v].iter().zip(expected) {
            max_err = max_err.max((x - y).abs());
        }
    }
    println!("max |llmrs - transformers| logit error: {max_err:.3e} over (B, T, V) = ({}, {}, {})", r.b, r.t, r.v);
    assert!(max_err <= LOGITS_TOLERANCE, "logits differ from transformers' by {max_err:e} > {LOGITS_TOLERANCE:e}");
}

#[test]
fn wte_padding_rows_are_zero() {
    let (config, params) = import(&HfPaths::in_dir(&fixture())).unwrap();
    let c = config.channels;
    let wte = &params[..config.padded_vocab_size * c];
    assert!(config.padded_vocab_size > config.vocab_size, "the fixture's V must need padding");
    assert!(wte[config.vocab_size * c..].iter().all(|&x| x == 0.0), "rows V..Vp of wte must be zero");
    assert!(wte[(config.vocab_size - 1) * c..config.vocab_size * c].iter().any(|&x| x != 0.0), "row V-1 is data");
}

#[test]
fn imported_model_round_trips_through_llm_c_files() {
    let (config, params) = import(&HfPaths::in_dir(&fixture())).unwrap();
    let dir = TempDir::new().unwrap();
    // The fixture's values are bf16-representable, so even the bf16 file holds them exactly.
    for dtype in [ModelDtype::F32, ModelDtype::Bf16] {
        let path = dir.path().join(format!("model_{dtype:?}.bin"));
        write_model(&path, &config, &params, dtype).unwrap();
        let (read_config, read_params) = read_model(&path).unwrap();
        assert_eq!(read_config, config, "{dtype:?}");
        assert!(read_params == params, "{dtype:?}: parameters changed on the way through the file");
    }
}

#[test]
fn f16_and_bf16_tensors_import_to_the_same_parameters() {
    let (_, expected) = import(&HfPaths::in_dir(&fixture())).unwrap();
    for dtype in [Dtype::F16, Dtype::BF16] {
        let mut tensors = fixture_tensors();
        for (d, _, data) in tensors.values_mut() {
            let values = f32_values(data);
            *data = match dtype {
                Dtype::F16 => values.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(),
                _ => values.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect(),
            };
            *d = dtype;
        }
        let (_dir, paths) = model_dir(&tensors, |_| {});
        let (_, params) = import(&paths).unwrap();
        assert!(params == expected, "{dtype:?} import differs from the f32 import");
    }
}

#[test]
fn names_without_prefix_mask_buffers_and_tied_lm_head_are_accepted() {
    let (_, expected) = import(&HfPaths::in_dir(&fixture())).unwrap();
    let mut tensors: TensorMap = fixture_tensors()
        .into_iter()
        .map(|(name, t)| (name.strip_prefix("transformer.").unwrap_or(&name).to_string(), t))
        .collect();
    let max_t = 32;
    let mask = f32_bytes(&vec![1.0; max_t * max_t]);
    tensors.insert("h.0.attn.bias".into(), (Dtype::F32, vec![1, 1, max_t, max_t], mask));
    tensors.insert("h.1.attn.masked_bias".into(), (Dtype::F32, vec![], f32_bytes(&[-1e4])));
    let wte = tensors["wte.weight"].clone();
    tensors.insert("lm_head.weight".into(), wte);
    let (_dir, paths) = model_dir(&tensors, |_| {});
    let (_, params) = import(&paths).unwrap();
    assert!(params == expected, "the unprefixed import differs from the fixture's");
}

#[test]
fn config_with_only_the_sizes_takes_transformers_defaults() {
    // Older config.json files (the hub's gpt2) lack the newer keys; their defaults are llm.c's GPT-2.
    let sizes = ["vocab_size", "n_positions", "n_embd", "n_layer", "n_head"];
    let (_dir, paths) = model_dir(&fixture_tensors(), |config| config.retain(|key, _| sizes.contains(&key.as_str())));
    let (_, params) = import(&paths).unwrap();
    let (_, expected) = import(&HfPaths::in_dir(&fixture())).unwrap();
    assert!(params == expected);
}

#[test]
fn truncated_safetensors_is_refused_naming_the_file() {
    let (_dir, paths) = model_dir(&fixture_tensors(), |_| {});
    let bytes = std::fs::read(&paths.weights).unwrap();
    for keep in [bytes.len() - 1, bytes.len() / 2, 100, 8, 3, 0] {
        std::fs::write(&paths.weights, &bytes[..keep]).unwrap();
        let message = import_error(&paths);
        assert_mentions(&message, &[&paths.weights.display().to_string(), "safetensors", &format!("{keep} bytes")]);
    }
}

#[test]
fn safetensors_header_claiming_more_than_the_file_is_refused() {
    let (_dir, paths) = model_dir(&fixture_tensors(), |_| {});
    for header_len in [u64::MAX, 1 << 40, 1000] {
        let mut bytes = header_len.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(&paths.weights, &bytes).unwrap();
        assert_mentions(&import_error(&paths), &[&paths.weights.display().to_string(), "safetensors"]);
    }
}

#[test]
fn missing_tensor_is_named() {
    let mut tensors = fixture_tensors();
    tensors.remove("transformer.h.1.mlp.c_fc.weight").unwrap();
    let (_dir, paths) = model_dir(&tensors, |_| {});
    let message = import_error(&paths);
    assert_mentions(&message, &[&paths.weights.display().to_string(), "transformer.h.1.mlp.c_fc.weight", "missing"]);
}

#[test]
fn config_with_more_layers_than_the_weights_names_the_first_missing_tensor() {
    // n_layer 40000 beside the fixture's 2 layers (2 billion parameters, within llm.c's limit): refused by the
    // first tensor of layer 2, found without listing the 480000 tensors such a model would have.
    let (_dir, paths) = model_dir(&fixture_tensors(), |config| {
        config.insert("n_layer".into(), 40_000.into());
    });
    assert_mentions(&import_error(&paths), &[&paths.weights.display().to_string(), "transformer.h.2.", "missing"]);
}

#[test]
fn tensor_of_wrong_shape_says_expected_and_found() {
    let mut tensors = fixture_tensors();
    // c_attn stored (out, in) = (3C, C) instead of Conv1D's (in, out) = (C, 3C).
    tensors.get_mut("transformer.h.0.attn.c_attn.weight").unwrap().1 = vec![192, 64];
    let (_dir, paths) = model_dir(&tensors, |_| {});
    let message = import_error(&paths);
    assert_mentions(
        &message,
        &[&paths.weights.display().to_string(), "transformer.h.0.attn.c_attn.weight", "[64, 192]", "[192, 64]"],
    );
}

#[test]
fn unsupported_dtype_is_refused() {
    let mut tensors = fixture_tensors();
    let (dtype, _, data) = tensors.get_mut("transformer.ln_f.bias").unwrap();
    *data = f32_values(data).iter().flat_map(|&x| f64::from(x).to_le_bytes()).collect();
    *dtype = Dtype::F64;
    let (_dir, paths) = model_dir(&tensors, |_| {});
    assert_mentions(&import_error(&paths), &["transformer.ln_f.bias", "F32, F16 or BF16", "F64"]);
}

#[test]
fn extra_tensor_is_refused() {
    let mut tensors = fixture_tensors();
    // A third layer that config.json (n_layer 2) does not know about.
    let ln = tensors["transformer.h.1.ln_1.weight"].clone();
    tensors.insert("transformer.h.2.ln_1.weight".into(), ln);
    let (_dir, paths) = model_dir(&tensors, |_| {});
    assert_mentions(&import_error(&paths), &[&paths.weights.display().to_string(), "transformer.h.2.ln_1.weight"]);
}

#[test]
fn untied_lm_head_is_refused() {
    let mut tensors = fixture_tensors();
    let (dtype, shape, data) = tensors["transformer.wte.weight"].clone();
    let mut values = f32_values(&data);
    values[3 * 64 + 5] += 0.5;
    tensors.insert("lm_head.weight".into(), (dtype, shape, f32_bytes(&values)));
    let (_dir, paths) = model_dir(&tensors, |_| {});
    let message = import_error(&paths);
    assert_mentions(&message, &[&paths.weights.display().to_string(), "lm_head.weight", "equal to", "row 3, column 5"]);
}

#[test]
fn unsupported_activation_is_refused() {
    let (_dir, paths) = model_dir(&fixture_tensors(), |config| {
        config.insert("activation_function".into(), "relu".into());
    });
    let message = import_error(&paths);
    assert_mentions(&message, &[&paths.config.display().to_string(), "activation_function", "gelu_new", "\"relu\""]);
}

#[test]
fn settings_llm_c_cannot_compute_are_refused_naming_the_key() {
    let cases: &[(&str, Value, &str)] = &[
        ("n_inner", 100.into(), "100"),
        ("layer_norm_epsilon", 1e-6.into(), "0.000001"),
        ("scale_attn_weights", false.into(), "false"),
        ("scale_attn_by_inverse_layer_idx", true.into(), "true"),
        ("reorder_and_upcast_attn", true.into(), "true"),
        ("tie_word_embeddings", false.into(), "false"),
        ("add_cross_attention", true.into(), "true"),
        ("n_embd", 66.into(), "66"),
        ("model_type", "gpt_neo".into(), "gpt_neo"),
    ];
    for (key, value, found) in cases {
        let (_dir, paths) = model_dir(&fixture_tensors(), |config| {
            config.insert(key.to_string(), value.clone());
        });
        let message = import_error(&paths);
        assert_mentions(&message, &[&paths.config.display().to_string(), &format!("`{key}`"), found]);
    }
}

#[test]
fn missing_or_mistyped_config_key_is_named() {
    let (_dir, paths) = model_dir(&fixture_tensors(), |config| {
        config.remove("n_layer");
    });
    assert_mentions(&import_error(&paths), &[&paths.config.display().to_string(), "`n_layer`", "no such key"]);
    let (_dir, paths) = model_dir(&fixture_tensors(), |config| {
        config.insert("n_head".into(), "4".into());
    });
    assert_mentions(&import_error(&paths), &[&paths.config.display().to_string(), "`n_head`", "positive integer"]);
}

#[test]
fn config_that_is_not_json_is_refused() {
    let (_dir, paths) = model_dir(&fixture_tensors(), |_| {});
    std::fs::write(&paths.config, "{\"n_layer\": 2,").unwrap();
    assert_mentions(&import_error(&paths), &[&paths.config.display().to_string(), "JSON"]);
    std::fs::write(&paths.config, "[1, 2]").unwrap();
    assert_mentions(&import_error(&paths), &[&paths.config.display().to_string(), "a JSON object", "an array"]);
}

#[test]
fn config_sizes_the_weights_do_not_back_are_refused_before_allocating() {
    // A config.json claiming a 2-billion-parameter model next to the tiny weights: refused by the first tensor
    // check, not by an attempt to allocate 8 GB.
    let (_dir, paths) = model_dir(&fixture_tensors(), |config| {
        config.insert("n_layer".into(), 48.into());
        config.insert("n_embd".into(), 1600.into());
        config.insert("n_head".into(), 25.into());
        config.insert("vocab_size".into(), 50257.into());
    });
    assert_mentions(&import_error(&paths), &["transformer.wte.weight", "[50257, 1600]", "[389, 64]"]);
}

/// Runs `llmrs` with `args`.
fn llmrs(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_llmrs")).args(args).output().expect("the llmrs binary starts");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_writes_the_imported_model_from_a_directory_or_two_files() {
    let (config, params) = import(&HfPaths::in_dir(&fixture())).unwrap();
    let dir = TempDir::new().unwrap();
    let fixture = fixture();
    let (config_json, weights) = (fixture.join("config.json"), fixture.join("model.safetensors"));
    let inputs: [Vec<&Path>; 2] = [vec![&fixture], vec![&config_json, &weights]];
    for (i, input) in inputs.iter().enumerate() {
        let out = dir.path().join(format!("model{i}.bin"));
        let mut args: Vec<&str> = vec!["import-hf"];
        args.extend(input.iter().map(|p| p.to_str().unwrap()));
        args.extend(["-o", out.to_str().unwrap()]);
        let (code, stdout, stderr) = llmrs(&args);
        assert_eq!(code, Some(0), "stdout: {stdout}\nstderr: {stderr}");
        assert_mentions(&stdout, &["L=2 C=64 NH=4 HS=16 maxT=32 V=389 Vp=512", &params.len().to_string()]);
        let (read_config, read_params) = read_model(&out).unwrap();
        assert_eq!(read_config, config);
        assert!(read_params == params);
    }
}

#[test]
fn cli_bf16_output_is_a_version_5_file() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("model.bin");
    let (code, _, stderr) =
        llmrs(&["import-hf", fixture().to_str().unwrap(), "-o", out.to_str().unwrap(), "--dtype", "bf16"]);
    assert_eq!(code, Some(0), "{stderr}");
    let header = std::fs::read(&out).unwrap();
    assert_eq!(i32::from_le_bytes([header[4], header[5], header[6], header[7]]), 5);
}

#[test]
fn cli_reports_bad_input_in_one_line_and_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let out = dir.path().join("model.bin");
    let (code, _, stderr) = llmrs(&["import-hf", dir.path().to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_mentions(&stderr, &["error:", "config.json"]);
    assert!(!out.exists(), "nothing may be written when the import fails");
}

#[test]
fn sharded_weights_are_refused_naming_the_index() {
    let dir = TempDir::new().unwrap();
    std::fs::copy(fixture().join("config.json"), dir.path().join("config.json")).unwrap();
    std::fs::write(dir.path().join("model.safetensors.index.json"), "{}").unwrap();
    let out = dir.path().join("model.bin");
    let (code, _, stderr) = llmrs(&["import-hf", dir.path().to_str().unwrap(), "-o", out.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_mentions(&stderr, &["error:", "weights", "model.safetensors.index.json", "does not merge"]);
    assert!(!out.exists(), "nothing may be written when the import fails");
}
