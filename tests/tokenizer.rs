//! GPT-2's BPE round-trips text, llm.c's tokenizer.bin decodes, and bad tokenizer files are refused clearly.

use std::path::{Path, PathBuf};

use llmrs::tokenizer::Tokenizer;

/// An llm.c tokenizer file: header (magic, version, V, EOT), then a length byte and the bytes of each token.
fn llmc_file(dir: &Path, magic: u32, version: u32, eot: u32, tokens: &[&[u8]]) -> PathBuf {
    let mut header = [0u32; 256];
    header[..4].copy_from_slice(&[magic, version, tokens.len() as u32, eot]);
    let mut bytes: Vec<u8> = header.iter().flat_map(|x| x.to_le_bytes()).collect();
    for token in tokens {
        bytes.push(token.len() as u8);
        bytes.extend_from_slice(token);
    }
    let path = dir.join("tokenizer.bin");
    std::fs::write(&path, bytes).unwrap();
    path
}

fn load_error(path: &Path) -> String {
    match Tokenizer::from_llmc_file(path) {
        Ok(_) => panic!("loading {} should fail", path.display()),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "message should mention {part:?}: {message}");
    }
}

const FOUR_TOKENS: &[&[u8]] = &[b"a", b"b", b" c", b"<|end|>"];

#[test]
fn gpt2_encodes_hello_world_as_gpt2_does() {
    let tokenizer = Tokenizer::gpt2().unwrap();
    assert_eq!(tokenizer.encode("Hello world").unwrap(), [15496, 995], "GPT-2's ids for 'Hello' and ' world'");
}

#[test]
fn gpt2_decodes_its_own_encoding() {
    let tokenizer = Tokenizer::gpt2().unwrap();
    let text = "Hello world, ünïcödé and <|endoftext|> as plain text.";
    let tokens = tokenizer.encode(text).unwrap();
    assert_eq!(tokenizer.decode(&tokens), text, "decode(encode(text)) == text");
}

#[test]
fn gpt2_has_gpt2_vocabulary_and_end_of_text() {
    let tokenizer = Tokenizer::gpt2().unwrap();
    assert_eq!(
        (tokenizer.vocab_size(), tokenizer.eot_token(), tokenizer.decode(&[50256])),
        (50257, 50256, "<|endoftext|>".to_string()),
        "V = 50257 with <|endoftext|> last"
    );
}

#[test]
fn unknown_ids_decode_visibly() {
    let tokenizer = Tokenizer::gpt2().unwrap();
    assert_eq!(tokenizer.decode(&[15496, 50300]), "Hello<|unk 50300|>", "a padding-row id must not panic");
}

#[test]
fn llmc_file_decodes_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let tokenizer = Tokenizer::from_llmc_file(&llmc_file(dir.path(), 20240328, 2, 3, FOUR_TOKENS)).unwrap();
    assert_eq!(
        (tokenizer.decode(&[0, 2, 1, 3]), tokenizer.vocab_size(), tokenizer.eot_token()),
        ("a cb<|end|>".to_string(), 4, 3),
        "bytes concatenated; V and EOT from the header"
    );
}

#[test]
fn llmc_version_1_implies_gpt2_end_of_text() {
    let dir = tempfile::tempdir().unwrap();
    let tokens: Vec<&[u8]> = vec![b"x"; 50257];
    let tokenizer = Tokenizer::from_llmc_file(&llmc_file(dir.path(), 20240328, 1, 0, &tokens)).unwrap();
    assert_eq!(tokenizer.eot_token(), 50256, "version 1 has no EOT field; GPT-2's is 50256");
}

#[test]
fn llmc_file_cannot_encode() {
    let dir = tempfile::tempdir().unwrap();
    let path = llmc_file(dir.path(), 20240328, 2, 3, FOUR_TOKENS);
    let err = Tokenizer::from_llmc_file(&path).unwrap().encode("a").unwrap_err().to_string();
    assert_mentions(&err, &["tokenizer.bin", "GPT-2 tokenizer to encode"]);
}

#[test]
fn wrong_magic_says_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = llmc_file(dir.path(), 20240326, 2, 3, FOUR_TOKENS);
    assert_mentions(&load_error(&path), &["tokenizer.bin", "magic", "expected 20240328", "found 20240326"]);
}

#[test]
fn unknown_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = llmc_file(dir.path(), 20240328, 3, 3, FOUR_TOKENS);
    assert_mentions(&load_error(&path), &["tokenizer.bin", "version", "expected 1 or 2", "found 3"]);
}

#[test]
fn truncated_table_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = llmc_file(dir.path(), 20240328, 2, 3, FOUR_TOKENS);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    assert_mentions(&load_error(&path), &["tokenizer.bin", "expected 4 entries", "ends inside entry 3"]);
}

#[test]
fn end_of_text_outside_the_vocabulary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = llmc_file(dir.path(), 20240328, 2, 4, FOUR_TOKENS);
    assert_mentions(&load_error(&path), &["tokenizer.bin", "EOT", "below the vocab size 4", "found 4"]);
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    assert_mentions(&load_error(&dir.path().join("absent.bin")), &["absent.bin", "cannot read"]);
}
