//! `llmrs prepare`: shards hold exactly the token stream llm.c's scripts would build (the end-of-text token, then
//! each document's tokens), split and cut where promised, round-trip through the written tokenizer file, feed
//! `train_gpt2` directly, and come from a download that works offline against a server on 127.0.0.1. Bad input
//! fails with one line naming the file or flag.
//!
//! Expected token streams are built here from the tokenizer and from documents the test writes itself, never read
//! back from what `prepare` produced. Everything is tiny, so the file takes seconds.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use llmrs::data::DataLoader;
use llmrs::prepare::{self, Documents, Options, Split, Summary, TokenizerKind};
use llmrs::progress::Style;
use llmrs::tokenizer::Tokenizer;
use tempfile::TempDir;

const GPT2_EOT: u16 = 50256;
const BYTES_EOT: u16 = 255;

/// An llm.c shard read independently of the library: header magic, version and count, then uint16 tokens.
fn read_shard(path: &Path) -> Vec<u16> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let int = |i: usize| i32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
    assert_eq!((int(0), int(1)), (20240520, 1), "{}: llm.c shard magic and version", path.display());
    let count = int(2) as usize;
    assert_eq!(bytes.len(), 1024 + 2 * count, "{}: header count matches the file size", path.display());
    bytes[1024..].chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect()
}

/// The shards of `split` in `dir`, in name order, as listed in the directory (not as `prepare` reported them).
fn shard_files(dir: &Path, name: &str, split: Split) -> Vec<PathBuf> {
    let prefix = format!("{name}_{}_", split.name());
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&prefix))
        .collect();
    files.sort();
    files
}

/// All tokens of `split`, shard after shard.
fn split_tokens(dir: &Path, name: &str, split: Split) -> Vec<u16> {
    shard_files(dir, name, split).iter().flat_map(|p| read_shard(p)).collect()
}

/// llm.c's stream: each document preceded by `eot`.
fn with_eot(eot: u16, documents: &[Vec<u16>]) -> Vec<u16> {
    documents.iter().flat_map(|doc| std::iter::once(eot).chain(doc.iter().copied())).collect()
}

fn bytes_of(text: &str) -> Vec<u16> {
    text.bytes().map(u16::from).collect()
}

fn gpt2_of(tokenizer: &Tokenizer, text: &str) -> Vec<u16> {
    tokenizer.encode(text).unwrap().into_iter().map(|t| t as u16).collect()
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
    path.to_path_buf()
}

/// Options for a silent run of `inputs` into `out` as dataset "t", changed by `change`.
fn run_prepare(inputs: &[PathBuf], out: &Path, change: impl FnOnce(&mut Options)) -> llmrs::Result<Summary> {
    let mut opts = Options::new(inputs.to_vec(), out, "t");
    opts.progress = Style::Silent;
    change(&mut opts);
    prepare::prepare(&opts)
}

/// Ten paragraphs of exactly 11 bytes each ("document0\n\n" ...): 110 bytes in all.
fn ten_paragraphs() -> Vec<String> {
    (0..10).map(|i| format!("document{i}\n\n")).collect()
}

#[test]
fn gpt2_shards_hold_end_of_text_then_each_paragraph_as_llmc_tinyshakespeare_does() {
    let dir = TempDir::new().unwrap();
    let paragraphs = [
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\n",
        "All:\nSpeak, speak.\n\n",
        "First Citizen:\nYou are all resolved rather to die than to famish?\n",
    ];
    let input = write(&dir.path().join("in.txt"), paragraphs.concat());
    let out = dir.path().join("out");
    let summary = run_prepare(&[input], &out, |o| o.val_fraction = 0.0).unwrap();

    let gpt2 = Tokenizer::gpt2().unwrap();
    let expected = with_eot(GPT2_EOT, &paragraphs.map(|p| gpt2_of(&gpt2, p)));
    assert_eq!(split_tokens(&out, "t", Split::Train), expected, "EOT, then each paragraph's own tokens");
    assert!(shard_files(&out, "t", Split::Val).is_empty(), "--val-fraction 0 writes no val shard");
    assert_eq!((summary.train.documents, summary.train.tokens), (3, expected.len()));
}

#[test]
fn val_takes_whole_documents_from_the_start_until_its_share_of_the_bytes() {
    let dir = TempDir::new().unwrap();
    let docs = ten_paragraphs();
    let input = write(&dir.path().join("in.txt"), docs.concat());
    let out = dir.path().join("out");
    // 25% of 110 bytes is 27.5: the documents starting at bytes 0, 11 and 22 go to val.
    let summary = run_prepare(&[input], &out, |o| {
        o.tokenizer = TokenizerKind::Bytes;
        o.val_fraction = 0.25;
    })
    .unwrap();

    let encoded: Vec<Vec<u16>> = docs.iter().map(|d| bytes_of(d)).collect();
    assert_eq!(split_tokens(&out, "t", Split::Val), with_eot(BYTES_EOT, &encoded[..3]), "val: documents 0..3");
    assert_eq!(split_tokens(&out, "t", Split::Train), with_eot(BYTES_EOT, &encoded[3..]), "train: documents 3..10");
    assert_eq!((summary.val.documents, summary.train.documents), (3, 7));
}

#[test]
fn shards_are_cut_every_shard_size_tokens_across_documents_and_named_as_llmc() {
    let dir = TempDir::new().unwrap();
    let docs = ten_paragraphs();
    let input = write(&dir.path().join("in.txt"), docs.concat());
    let out = dir.path().join("out");
    run_prepare(&[input], &out, |o| {
        o.tokenizer = TokenizerKind::Bytes;
        o.val_fraction = 0.25;
        o.shard_size = 7;
    })
    .unwrap();

    // val: 3 documents of 12 tokens = 36 = 5 x 7 + 1; train: 7 x 12 = 84 = 12 x 7.
    let val_sizes: Vec<usize> = shard_files(&out, "t", Split::Val).iter().map(|p| read_shard(p).len()).collect();
    let train_sizes: Vec<usize> = shard_files(&out, "t", Split::Train).iter().map(|p| read_shard(p).len()).collect();
    assert_eq!(val_sizes, [7, 7, 7, 7, 7, 1], "val shards");
    assert_eq!(train_sizes, [7; 12], "train shards");
    let encoded: Vec<Vec<u16>> = docs.iter().map(|d| bytes_of(d)).collect();
    assert_eq!(split_tokens(&out, "t", Split::Train), with_eot(BYTES_EOT, &encoded[3..]), "no token lost at cuts");

    let mut names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let mut expected: Vec<String> = (0..6).map(|i| format!("t_val_{i:06}.bin")).collect();
    expected.extend((0..12).map(|i| format!("t_train_{i:06}.bin")));
    expected.push("t_tokenizer.bin".to_string());
    expected.sort();
    assert_eq!(names, expected, "exactly llm.c-style shard names and the tokenizer file, nothing else");
}

#[test]
fn shard_size_one_writes_one_token_per_shard() {
    let dir = TempDir::new().unwrap();
    let input = write(&dir.path().join("in.txt"), "ab\n\ncd");
    let out = dir.path().join("out");
    run_prepare(&[input], &out, |o| {
        o.tokenizer = TokenizerKind::Bytes;
        o.val_fraction = 0.0;
        o.shard_size = 1;
    })
    .unwrap();
    let shards: Vec<Vec<u16>> = shard_files(&out, "t", Split::Train).iter().map(|p| read_shard(p)).collect();
    let expected = with_eot(BYTES_EOT, &[bytes_of("ab\n\n"), bytes_of("cd")]);
    assert_eq!(shards, expected.iter().map(|&t| vec![t]).collect::<Vec<_>>(), "one shard per token, in order");
}

#[test]
fn directories_give_their_txt_files_depth_first_in_name_order_skipping_hidden_ones() {
    let dir = TempDir::new().unwrap();
    let root = dir.path().join("corpus");
    write(&root.join("b.txt"), "B");
    write(&root.join("a/z.txt"), "Z");
    write(&root.join("a/y.md"), "Y");
    write(&root.join("c.TXT"), "C");
    write(&root.join(".hidden.txt"), "H");
    write(&root.join(".git/x.txt"), "X");
    write(&root.join("empty.txt"), "");
    let out = dir.path().join("out");
    let summary = run_prepare(&[root], &out, |o| {
        o.tokenizer = TokenizerKind::Bytes;
        o.documents = Documents::Files;
        o.val_fraction = 0.0;
    })
    .unwrap();
    assert_eq!(
        split_tokens(&out, "t", Split::Train),
        with_eot(BYTES_EOT, &[bytes_of("Z"), bytes_of("B"), bytes_of("C")]),
        "a/z.txt, b.txt, c.TXT; not .md, hidden or empty files"
    );
    assert_eq!(summary.files, 4, "a/z.txt, b.txt, c.TXT and the empty one");
}

#[test]
fn bytes_mode_round_trips_through_its_tokenizer_file() {
    let dir = TempDir::new().unwrap();
    let text = "héllo wörld ✓\n\nzweite Zeile\n\nend";
    let input = write(&dir.path().join("in.txt"), text);
    let out = dir.path().join("out");
    let summary = run_prepare(&[input], &out, |o| {
        o.tokenizer = TokenizerKind::Bytes;
        o.val_fraction = 0.3;
        o.shard_size = 5;
    })
    .unwrap();
    let mut tokens = split_tokens(&out, "t", Split::Val);
    tokens.extend(split_tokens(&out, "t", Split::Train));
    assert!(summary.val.documents > 0, "some documents went to val");

    let raw: Vec<u8> = tokens.iter().filter(|&&t| t != BYTES_EOT).map(|&t| t as u8).collect();
    assert_eq!(raw, text.as_bytes(), "val then train, without separators, is the input byte for byte");
    let tokenizer = Tokenizer::from_llmc_file(&out.join("t_tokenizer.bin")).unwrap();
    assert_eq!((tokenizer.vocab_size(), tokenizer.eot_token()), (256, 255));
    let decoded = tokenizer.decode(&tokens.iter().map(|&t| u32::from(t)).collect::<Vec<_>>());
    assert_eq!(
        decoded, "<|endoftext|>héllo wörld ✓\n\n<|endoftext|>zweite Zeile\n\n<|endoftext|>end",
        "the tokenizer file decodes bytes, and the separator as GPT-2's end of text"
    );
}

#[test]
fn gpt2_tokenizer_file_holds_gpt2s_vocabulary() {
    let dir = TempDir::new().unwrap();
    let input = write(&dir.path().join("in.txt"), "Hello world");
    let out = dir.path().join("out");
    run_prepare(&[input], &out, |o| o.val_fraction = 0.0).unwrap();
    let written = Tokenizer::from_llmc_file(&out.join("t_tokenizer.bin")).unwrap();
    let builtin = Tokenizer::gpt2().unwrap();
    assert_eq!((written.vocab_size(), written.eot_token()), (50257, 50256));
    let differ = (0..50257).find(|&id| written.token_bytes(id) != builtin.token_bytes(id));
    assert_eq!(differ, None, "every token's bytes equal the built-in GPT-2 tokenizer's");
}

#[test]
fn the_data_loader_reads_prepared_shards_through_a_glob() {
    let dir = TempDir::new().unwrap();
    let docs = ten_paragraphs();
    let input = write(&dir.path().join("in.txt"), docs.concat());
    let out = dir.path().join("out");
    let summary = run_prepare(&[input], &out, |o| {
        o.tokenizer = TokenizerKind::Bytes;
        o.val_fraction = 0.0;
        o.shard_size = 60;
    })
    .unwrap();
    let pattern = out.join("t_train_*.bin");
    let mut loader = DataLoader::open(pattern.to_str().unwrap(), 1, 59, None).unwrap();
    assert_eq!(loader.num_tokens(), summary.train.tokens, "the loader sees every token written");
    assert_eq!(loader.shard_paths().len(), 2, "120 tokens in shards of 60");
    let encoded: Vec<Vec<u16>> = docs.iter().map(|d| bytes_of(d)).collect();
    let expected: Vec<u32> = with_eot(BYTES_EOT, &encoded)[..59].iter().map(|&t| u32::from(t)).collect();
    assert_eq!(loader.next_batch().0, expected, "the first batch is the first 59 tokens");
}

#[test]
fn a_rerun_replaces_the_shards_of_the_same_name_and_keeps_others() {
    let dir = TempDir::new().unwrap();
    let input = write(&dir.path().join("in.txt"), ten_paragraphs().concat());
    let out = dir.path().join("out");
    let other = write(&out.join("other_train_000005.bin"), "not ours");
    run_prepare(std::slice::from_ref(&input), &out, |o| {
        o.tokenizer = TokenizerKind::Bytes;
        o.shard_size = 5;
    })
    .unwrap();
    assert!(shard_files(&out, "t", Split::Train).len() > 2);
    run_prepare(&[input], &out, |o| {
        o.tokenizer = TokenizerKind::Bytes;
        o.shard_size = 1000;
    })
    .unwrap();
    assert_eq!(shard_files(&out, "t", Split::Train).len(), 1, "the first run's extra train shards are gone");
    assert_eq!(shard_files(&out, "t", Split::Val).len(), 1, "the first run's extra val shards are gone");
    assert!(other.exists(), "another dataset's shard is left alone");
    let hidden = std::fs::read_dir(&out).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with('.'));
    assert!(!hidden, "no staging folder is left behind");
}

#[test]
fn a_failed_run_leaves_the_output_directory_as_it_was() {
    let dir = TempDir::new().unwrap();
    let good = write(&dir.path().join("good.txt"), ten_paragraphs().concat());
    let bad = write(&dir.path().join("bad.txt"), b"ok\xff");
    let out = dir.path().join("out");
    run_prepare(std::slice::from_ref(&good), &out, |o| o.tokenizer = TokenizerKind::Bytes).unwrap();
    let snapshot = |out: &Path| {
        let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| {
                let contents = std::fs::read(&p).unwrap();
                (p, contents)
            })
            .collect();
        files.sort();
        files
    };
    let before = snapshot(&out);
    // The good file is tokenized into many shards before the bad one is reached.
    let err = run_prepare(&[good, bad], &out, |o| {
        o.tokenizer = TokenizerKind::Bytes;
        o.shard_size = 3;
    })
    .unwrap_err();
    assert!(err.to_string().contains("bad.txt"), "{err}");
    assert!(snapshot(&out) == before, "the earlier run's files are untouched and nothing was added");
}

// ---- The binary: progress, summary and bad input ----

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run_bin<S: AsRef<OsStr>>(bin: &str, args: impl IntoIterator<Item = S>) -> Run {
    let out = Command::new(bin).args(args).env_remove("RUST_BACKTRACE").output().expect("the binary starts");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `llmrs prepare ARGS` in `dir` (relative paths resolve there), with `-q` when `quiet`.
fn llmrs_prepare(dir: &Path, args: &[&str], quiet: bool) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_llmrs"))
        .arg("prepare")
        .args(args)
        .args(quiet.then_some("-q"))
        .current_dir(dir)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("llmrs starts");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `llmrs prepare ARGS -q` in `dir`.
fn prepare_in(dir: &Path, args: &[&str]) -> Run {
    llmrs_prepare(dir, args, true)
}

/// The run failed with exit code 1 and exactly one line on stderr, "error: ...", mentioning every one of `parts`.
fn assert_one_line_error(run: &Run, parts: &[&str]) {
    assert_eq!(run.code, Some(1), "exit code 1; stderr: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "a panic: {}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {}", run.stderr);
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    for part in parts {
        assert!(lines[0].contains(part), "should mention {part:?}: {}", lines[0]);
    }
}

#[test]
fn progress_goes_to_stderr_as_plain_lines_and_quiet_silences_it() {
    let dir = TempDir::new().unwrap();
    write(&dir.path().join("in.txt"), ten_paragraphs().concat());
    // stderr is a pipe here, not a terminal: plain lines.
    let loud = llmrs_prepare(dir.path(), &["in.txt", "--tokenizer", "bytes"], false);
    let (stdout, stderr) = (&loud.stdout, &loud.stderr);
    assert_eq!(loud.code, Some(0), "{stderr}");
    assert!(stderr.lines().any(|l| l.starts_with("prepare: done, 110 B in ")), "final progress line: {stderr}");
    assert!(!stdout.contains("prepare: done"), "progress stays off stdout: {stdout}");
    assert!(stdout.contains("train: 9 documents, 108 tokens in 1 shard"), "summary on stdout: {stdout}");
    assert!(
        stdout
            .contains("train_gpt2 --train-data 'data/in_train_*.bin' --val-data 'data/in_val_*.bin' --vocab-size 256"),
        "the command to train on it: {stdout}"
    );

    let quiet = prepare_in(dir.path(), &["in.txt", "--tokenizer", "bytes"]);
    assert_eq!((quiet.code, quiet.stderr.as_str()), (Some(0), ""), "--quiet prints nothing on stderr");
}

#[test]
fn a_missing_input_is_named() {
    let dir = TempDir::new().unwrap();
    assert_one_line_error(&prepare_in(dir.path(), &["nope.txt"]), &["nope.txt"]);
}

#[test]
fn empty_input_is_refused() {
    let dir = TempDir::new().unwrap();
    write(&dir.path().join("empty.txt"), "");
    assert_one_line_error(&prepare_in(dir.path(), &["empty.txt"]), &["empty.txt", "empty"]);
}

#[test]
fn a_directory_without_matching_files_names_it_and_the_ext_flag() {
    let dir = TempDir::new().unwrap();
    write(&dir.path().join("corpus/notes.md"), "text");
    assert_one_line_error(&prepare_in(dir.path(), &["corpus"]), &["corpus", "--ext", ".txt"]);
    let md = prepare_in(dir.path(), &["corpus", "--ext", "md", "--val-fraction", "0"]);
    assert_eq!(md.code, Some(0), "--ext md takes it: {}", md.stderr);
}

#[test]
fn non_utf8_text_is_refused_naming_the_file_and_offset() {
    let dir = TempDir::new().unwrap();
    write(&dir.path().join("latin1.txt"), b"caf\xe9\n");
    for tokenizer in ["gpt2", "bytes"] {
        let run = prepare_in(dir.path(), &["latin1.txt", "--tokenizer", tokenizer]);
        assert_one_line_error(&run, &["latin1.txt", "UTF-8", "offset 3"]);
    }
}

#[test]
fn an_out_dir_that_is_a_file_is_refused() {
    let dir = TempDir::new().unwrap();
    write(&dir.path().join("in.txt"), "text");
    write(&dir.path().join("out"), "a file");
    assert_one_line_error(&prepare_in(dir.path(), &["in.txt", "--out-dir", "out"]), &["--out-dir", "out"]);
}

#[test]
fn shard_size_zero_is_refused() {
    let dir = TempDir::new().unwrap();
    write(&dir.path().join("in.txt"), "text");
    assert_one_line_error(&prepare_in(dir.path(), &["in.txt", "--shard-size", "0"]), &["--shard-size", "0"]);
}

#[test]
fn val_fraction_outside_zero_to_one_is_refused() {
    let dir = TempDir::new().unwrap();
    write(&dir.path().join("in.txt"), ten_paragraphs().concat());
    for bad in ["1", "1.5", "-0.1", "NaN"] {
        let run = prepare_in(dir.path(), &["in.txt", "--val-fraction", bad]);
        assert_one_line_error(&run, &["--val-fraction", bad]);
    }
}

#[test]
fn one_document_cannot_be_split() {
    let dir = TempDir::new().unwrap();
    write(&dir.path().join("in.txt"), ten_paragraphs().concat());
    let run = prepare_in(dir.path(), &["in.txt", "--documents", "files"]);
    assert_one_line_error(&run, &["--val-fraction", "one document", "--documents paragraphs"]);
    assert!(!dir.path().join("data/in_train_000000.bin").exists(), "nothing is written");
}

#[test]
fn an_unknown_dataset_is_refused_listing_the_known_ones() {
    let dir = TempDir::new().unwrap();
    assert_one_line_error(&prepare_in(dir.path(), &["--download", "nope"]), &["--download", "tinyshakespeare"]);
}

// ---- Download, against a one-shot HTTP server on 127.0.0.1 ----

/// Serves `response` (raw HTTP) to the first connection on a fresh port, then stops; returns the URL.
fn serve_once(response: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/input.txt", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else { return };
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut request = Vec::new();
        let mut chunk = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = stream.write_all(&response);
        // Dropping the stream closes the connection: that ends a body cut short.
    });
    url
}

fn http_ok(body: &[u8]) -> Vec<u8> {
    let mut response =
        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).into_bytes();
    response.extend_from_slice(body);
    response
}

/// Shakespeare-like text: 60 short speeches separated by blank lines.
fn play() -> String {
    (0..60).map(|i| format!("Speaker {}:\nLine {i} of the play, with words.\n\n", ["A", "B", "C"][i % 3])).collect()
}

fn download_args<'a>(url: &'a str, out: &'a str) -> Vec<&'a str> {
    vec!["--download", "tinyshakespeare", "--download-url", url, "--cache-dir", "cache", "--out-dir", out]
}

#[test]
fn download_caches_the_text_and_its_shards_decode_to_what_was_served() {
    let dir = TempDir::new().unwrap();
    let text = play();
    let url = serve_once(http_ok(text.as_bytes()));
    let run = prepare_in(dir.path(), &download_args(&url, "out"));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains(&format!("downloaded from {url}")), "{}", run.stdout);
    let cached = dir.path().join("cache/tinyshakespeare/input.txt");
    assert_eq!(std::fs::read_to_string(&cached).unwrap(), text, "the cache holds the served text");

    let out = dir.path().join("out");
    let mut tokens = split_tokens(&out, "tinyshakespeare", Split::Val);
    assert!(!tokens.is_empty(), "10% went to val");
    tokens.extend(split_tokens(&out, "tinyshakespeare", Split::Train));
    let text_tokens: Vec<u32> = tokens.iter().filter(|&&t| t != GPT2_EOT).map(|&t| u32::from(t)).collect();
    assert_eq!(Tokenizer::gpt2().unwrap().decode(&text_tokens), text, "shards decode to the served text");
    assert_eq!(tokens.iter().filter(|&&t| t == GPT2_EOT).count(), 60, "one end-of-text per speech");

    // The server is gone: a second run must use the cache.
    let again = prepare_in(dir.path(), &download_args(&url, "out2"));
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(again.stdout.contains("(cached"), "{}", again.stdout);
    assert_eq!(
        read_shard(&dir.path().join("out2/tinyshakespeare_val_000000.bin")),
        split_tokens(&out, "tinyshakespeare", Split::Val)
    );
}

#[test]
fn download_http_404_names_the_url_and_caches_nothing() {
    let dir = TempDir::new().unwrap();
    let url = serve_once(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found".to_vec());
    let run = prepare_in(dir.path(), &download_args(&url, "out"));
    assert_one_line_error(&run, &[&url, "404"]);
    assert!(!dir.path().join("cache/tinyshakespeare/input.txt").exists());
}

#[test]
fn download_cut_short_names_the_url_and_leaves_no_file() {
    let dir = TempDir::new().unwrap();
    let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n".to_vec();
    response.extend_from_slice(&[b'x'; 100]);
    let url = serve_once(response);
    let run = prepare_in(dir.path(), &download_args(&url, "out"));
    assert_one_line_error(&run, &[&url]);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("cache/tinyshakespeare")).unwrap().collect();
    assert!(left.is_empty(), "no partial file, not even a .tmp: {left:?}");
}

#[test]
fn download_without_a_server_names_the_url() {
    let dir = TempDir::new().unwrap();
    // A port that was free a moment ago: nothing listens there now.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/input.txt");
    assert_one_line_error(&prepare_in(dir.path(), &download_args(&url, "out")), &[&url]);
}

// ---- End to end ----

#[test]
fn prepared_byte_shards_train_with_train_gpt2() {
    let dir = TempDir::new().unwrap();
    write(&dir.path().join("play.txt"), play());
    let prep =
        prepare_in(dir.path(), &["play.txt", "--tokenizer", "bytes", "--val-fraction", "0.2", "--shard-size", "1000"]);
    assert_eq!(prep.code, Some(0), "{}", prep.stderr);
    let d = dir.path().display();
    let train = run_bin(
        env!("CARGO_BIN_EXE_train_gpt2"),
        [
            "--train-data".to_string(),
            format!("{d}/data/play_train_*.bin"),
            "--val-data".to_string(),
            format!("{d}/data/play_val_*.bin"),
            "--tokenizer".to_string(),
            format!("{d}/data/play_tokenizer.bin"),
        ]
        .into_iter()
        .chain(
            [
                "--vocab-size",
                "256",
                "--layers",
                "1",
                "--channels",
                "32",
                "--heads",
                "2",
                "--batch-size",
                "2",
                "--seq-len",
                "8",
                "--steps",
                "3",
                "--warmup",
                "1",
                "--val-every",
                "2",
                "--val-batches",
                "1",
                "--sample-every",
                "3",
                "--gen-tokens",
                "8",
                "--threads",
                "1",
            ]
            .map(String::from),
        ),
    );
    assert_eq!(train.code, Some(0), "train_gpt2 trains on the prepared shards: {}", train.stderr);
    assert!(train.stdout.contains("V=256"), "{}", train.stdout);
    assert!(train.stdout.contains("val loss"), "{}", train.stdout);
    assert!(train.stdout.contains("--- sample at step 3 ---"), "{}", train.stdout);
}
