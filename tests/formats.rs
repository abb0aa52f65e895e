//! llm.c model files: what is written reads back, and every malformed file is refused with a message that names
//! the file and says what was expected and what was found.

use std::path::{Path, PathBuf};

use llmrs::checkpoint::{read_model, read_model_header, write_model, ModelDtype};
use llmrs::GPT2Config;

/// maxT 8, V 10 padded to 16, L 1, NH 2, C 4: a few hundred parameters.
fn tiny_config() -> GPT2Config {
    GPT2Config { max_seq_len: 8, vocab_size: 10, padded_vocab_size: 16, num_layers: 1, num_heads: 2, channels: 4 }
}

/// Distinct, non-round values, so a misplaced or mis-converted parameter shows.
fn ramp(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i as f32 * 0.731).sin() * 3.0 + 1e-3 * i as f32).collect()
}

/// An llm.c model header: magic, version, then maxT, V, L, NH, C, Vp.
fn header(magic: i32, version: i32, c: &GPT2Config) -> Vec<u8> {
    let mut h = [0i32; 256];
    h[..8].copy_from_slice(&[
        magic,
        version,
        c.max_seq_len as i32,
        c.vocab_size as i32,
        c.num_layers as i32,
        c.num_heads as i32,
        c.channels as i32,
        c.padded_vocab_size as i32,
    ]);
    h.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A file of `header` followed by `payload_bytes` zero bytes.
fn write_raw(dir: &Path, name: &str, header: Vec<u8>, payload_bytes: usize) -> PathBuf {
    let path = dir.join(name);
    let mut bytes = header;
    bytes.resize(bytes.len() + payload_bytes, 0);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The error message of reading `path`, which must fail.
fn read_error(path: &Path) -> String {
    match read_model(path) {
        Ok(_) => panic!("reading {} should fail", path.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "message should mention {part:?}: {message}");
    }
}

#[test]
fn fp32_model_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    let config = tiny_config();
    let params = ramp(config.num_parameters());
    write_model(&path, &config, &params, ModelDtype::F32).unwrap();
    let (read_config, read_params) = read_model(&path).unwrap();
    assert_eq!((read_config, read_params), (config, params), "v3 file must read back bit for bit");
}

#[test]
fn header_fields_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    let config = tiny_config();
    write_model(&path, &config, &ramp(config.num_parameters()), ModelDtype::Bf16).unwrap();
    assert_eq!(
        read_model_header(&path).unwrap(),
        (config, ModelDtype::Bf16),
        "header must hold the config and the bf16 version"
    );
}

#[test]
fn fp32_file_is_header_plus_four_bytes_per_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    let config = tiny_config();
    write_model(&path, &config, &ramp(config.num_parameters()), ModelDtype::F32).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let expected_header = header(20240326, 3, &config);
    assert_eq!(
        (bytes.len(), &bytes[..1024]),
        (1024 + 4 * config.num_parameters(), &expected_header[..]),
        "llm.c's v3 layout: 256 int32 header, then fp32 parameters"
    );
}

#[test]
fn bf16_model_round_trips_within_bf16_rounding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    let config = tiny_config();
    let params = ramp(config.num_parameters());
    write_model(&path, &config, &params, ModelDtype::Bf16).unwrap();
    let (_, read_params) = read_model(&path).unwrap();
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    assert_eq!(len, 1024 + 2 * params.len(), "v5 stores 2 bytes per parameter");
    // bf16 keeps 8 significant bits: round to nearest is off by at most half a unit in the last place, 2^-8.
    let worst = params.iter().zip(&read_params).map(|(&x, &y)| ((x - y) / x).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1.0 / 256.0, "relative error {worst} exceeds bf16's half ulp 2^-8");
}

#[test]
fn bf16_rounds_to_nearest_even() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    let config = tiny_config();
    // Around 1.0 the bf16 step is 2^-7.
    let step = 2f32.powi(-7);
    let cases = [
        // (value, expected bf16 value)
        (1.0 + step / 2.0, 1.0),                         // a tie rounds to the even neighbour 1.0
        (1.0 + 3.0 * step / 2.0, 1.0 + 2.0 * step),      // a tie rounds to the even neighbour 1 + 2 steps
        (1.0 + step / 2.0 + 2f32.powi(-20), 1.0 + step), // just above the tie rounds up
        (1.0 + step / 2.0 - 2f32.powi(-20), 1.0),        // just below the tie rounds down
        (-(1.0 + step / 2.0), -1.0),                     // ties to even for negatives too
    ];
    let mut params = vec![0.0f32; config.num_parameters()];
    for (p, &(value, _)) in params.iter_mut().zip(&cases) {
        *p = value;
    }
    write_model(&path, &config, &params, ModelDtype::Bf16).unwrap();
    let (_, read_params) = read_model(&path).unwrap();
    let expected: Vec<f32> = cases.iter().map(|&(_, e)| e).collect();
    assert_eq!(&read_params[..cases.len()], &expected[..], "round to nearest, ties to even");
}

#[test]
fn write_replaces_an_existing_file_and_leaves_no_temporary_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    let config = tiny_config();
    write_model(&path, &config, &vec![1.0; config.num_parameters()], ModelDtype::F32).unwrap();
    write_model(&path, &config, &vec![2.0; config.num_parameters()], ModelDtype::F32).unwrap();
    let names: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let (_, params) = read_model(&path).unwrap();
    assert_eq!(
        (names, params[0]),
        (vec!["model.bin".to_string()], 2.0),
        "the second write replaces the first and the .tmp sibling is gone"
    );
}

#[test]
fn failed_write_leaves_the_previous_file_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    let config = tiny_config();
    let params = ramp(config.num_parameters());
    write_model(&path, &config, &params, ModelDtype::F32).unwrap();
    let _ = write_model(&path, &config, &params[1..], ModelDtype::F32);
    assert_eq!(read_model(&path).unwrap().1, params, "a refused write must not touch the file");
}

#[test]
fn write_refuses_a_parameter_count_that_does_not_match_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    let config = tiny_config();
    let n = config.num_parameters();
    let err = write_model(&path, &config, &vec![0.0; n - 1], ModelDtype::F32).unwrap_err().to_string();
    assert_mentions(&err, &["model.bin", &format!("expected {n}"), &format!("found {}", n - 1)]);
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_error(&dir.path().join("nowhere.bin"));
    assert_mentions(&err, &["nowhere.bin", "cannot open"]);
}

#[test]
fn wrong_magic_says_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config();
    let path = write_raw(dir.path(), "m.bin", header(12345, 3, &config), 4 * config.num_parameters());
    assert_mentions(&read_error(&path), &["m.bin", "magic", "expected 20240326", "found 12345"]);
}

#[test]
fn unsupported_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config();
    let path = write_raw(dir.path(), "m.bin", header(20240326, 4, &config), 4 * config.num_parameters());
    assert_mentions(&read_error(&path), &["m.bin", "version", "3 (fp32) or 5 (bf16)", "found 4"]);
}

#[test]
fn header_with_inconsistent_shape_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = GPT2Config { num_heads: 3, ..tiny_config() };
    let path = write_raw(dir.path(), "m.bin", header(20240326, 3, &config), 0);
    assert_mentions(&read_error(&path), &["m.bin", "channels (4) must be a multiple of num_heads (3)"]);
}

#[test]
fn negative_header_field_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config();
    let mut bytes = header(20240326, 3, &config);
    bytes[4 * 6..4 * 7].copy_from_slice(&(-4i32).to_le_bytes()); // C
    let path = write_raw(dir.path(), "m.bin", bytes, 0);
    assert_mentions(&read_error(&path), &["m.bin", "C (header[6])", "non-negative", "found -4"]);
}

#[test]
fn file_shorter_than_its_parameters_says_expected_and_found_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config();
    let n = config.num_parameters();
    let path = write_raw(dir.path(), "m.bin", header(20240326, 3, &config), 4 * n - 4);
    let expected = format!("expected {} bytes", 1024 + 4 * n);
    let found = format!("found {} bytes", 1024 + 4 * n - 4);
    assert_mentions(&read_error(&path), &["m.bin", &expected, &found]);
}

#[test]
fn file_longer_than_its_parameters_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config();
    let n = config.num_parameters();
    let path = write_raw(dir.path(), "m.bin", header(20240326, 5, &config), 2 * n + 2);
    let expected = format!("expected {} bytes", 1024 + 2 * n);
    let found = format!("found {} bytes", 1024 + 2 * n + 2);
    assert_mentions(&read_error(&path), &["m.bin", "bf16", &expected, &found]);
}

#[test]
fn file_shorter_than_a_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bin");
    std::fs::write(&path, [0u8; 10]).unwrap();
    assert_mentions(&read_error(&path), &["m.bin", "expected at least 1024 bytes", "found 10 bytes"]);
}
