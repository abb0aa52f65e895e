//! Text to llm.c token shards: the job of llm.c's Python data scripts (`dev/data/tinyshakespeare.py`,
//! `fineweb.py`) as a library function behind `llmrs prepare`, so that training on your own text needs no Python.
//!
//! **Inputs.** Files and directories. A file named directly is always read. A directory is searched recursively,
//! depth first and sorted by name within each directory, for files whose extension is one of `extensions`
//! (default `txt`, case-insensitive; `*` takes every file); names starting with '.' are skipped and symbolic links
//! to directories are not followed. Text must be UTF-8: a file that is not is refused, naming the offset of the
//! first bad byte, rather than read lossily into U+FFFD characters the model would then learn. Each file is read
//! whole, so the largest file must fit in memory; the number of files is not limited.
//!
//! **Documents.** With `Documents::Paragraphs` (the default) a document ends after each blank line ("\n\n") and
//! at the end of each file, which is how llm.c's tinyshakespeare.py cuts its text ("every person's statement in
//! the dialog"); with `Documents::Files` each file is one document. As in llm.c, each document is preceded by the
//! end-of-text token, so the model learns where one ends and the next begins. A document is tokenized on its own:
//! no token spans two documents, and literal "<|endoftext|>" text is encoded as ordinary text.
//!
//! **Byte-level vocabulary.** `TokenizerKind::Bytes` makes each byte of the text a token (V = 256), for models too
//! small for GPT-2's 50257-token embedding. Its end-of-text token is 255: the byte 0xFF never occurs in UTF-8, so
//! the separator cannot be confused with text (one more reason to refuse non-UTF-8 input).
//!
//! **Split.** Validation takes whole documents from the start of the input until it holds `val_fraction` of the
//! input's bytes (a document goes to val when it starts before that point), never the last document, so the train
//! split is never empty. It is deterministic, a contiguous head as in llm.c's tinyshakespeare.py (whose first
//! 32,768 tokens are val; a head keeps neighbouring, near-duplicate paragraphs out of both splits at once), and
//! needs one pass: the split point is known from the file sizes before anything is read.
//!
//! **Output.** llm.c's shard format (see `data`), `shard_size` tokens per shard (only the last of each split is
//! shorter), documents running on across shard boundaries as in llm.c's fineweb.py, named as llm.c names them:
//! `NAME_val_000000.bin`, ..., then `NAME_train_000000.bin`, ..., plus `NAME_tokenizer.bin`, an llm.c tokenizer
//! file that `train_gpt2 --tokenizer` reads to decode samples.
//!
//! **All or nothing.** Everything is written into a hidden staging folder in the output directory and moved into
//! place only once complete; then the shards of an earlier run with the same NAME that this run did not rewrite are
//! removed. A failed run leaves the directory as it was, and a glob over NAME's shards never mixes two runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::HumanCount;
use rayon::prelude::*;

use crate::data::write_shard;
use crate::error::{Error, Result};
use crate::progress::{Progress, Style, Unit};
use crate::tokenizer::{self, Tokenizer};

/// Tokens per shard unless told otherwise: llm.c's fineweb.py writes shards of 10^8 tokens (200 MB).
pub const DEFAULT_SHARD_SIZE: usize = 100_000_000;
/// Share of the input's bytes that goes to validation unless told otherwise (llm.c's tinyshakespeare: ~10%).
pub const DEFAULT_VAL_FRACTION: f64 = 0.1;
/// V of the byte-level vocabulary.
pub const BYTES_VOCAB_SIZE: usize = 256;
/// The byte-level vocabulary's end-of-text token: 0xFF never occurs in UTF-8 text.
pub const BYTES_EOT_TOKEN: u32 = 255;
/// What the byte-level tokenizer file decodes the end-of-text token to, as GPT-2's does.
const EOT_TEXT: &[u8] = b"<|endoftext|>";
/// Documents are encoded in parallel in batches of about this many bytes of text, one progress update each.
const BATCH_BYTES: usize = 1 << 20;
/// The highest shard size: header[2] of a shard, its token count, is an int32.
const MAX_SHARD_SIZE: usize = i32::MAX as usize;

/// Which vocabulary the text is tokenized with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenizerKind {
    /// GPT-2's BPE (V = 50257, end of text 50256).
    Gpt2,
    /// One token per byte (V = 256, end of text 255).
    Bytes,
}

/// Where documents end (each one is preceded by the end-of-text token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Documents {
    /// After each blank line ("\n\n") and at the end of each file, as llm.c's tinyshakespeare.py.
    Paragraphs,
    /// At the end of each file.
    Files,
}

/// What `prepare` does; `Options::new` fills in llm.c's defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// Files and directories, read in this order.
    pub inputs: Vec<PathBuf>,
    /// Created when missing.
    pub out_dir: PathBuf,
    /// Shards are `NAME_val_000000.bin`, `NAME_train_000000.bin`, ...
    pub name: String,
    pub tokenizer: TokenizerKind,
    pub documents: Documents,
    /// Extensions taken from directories (without the dot); "*" takes every file.
    pub extensions: Vec<String>,
    /// Share of the input's bytes, in [0, 1), that goes to validation (whole documents from the start).
    pub val_fraction: f64,
    /// Tokens per shard (> 0).
    pub shard_size: usize,
    pub progress: Style,
}

impl Options {
    /// GPT-2 BPE, paragraphs, `.txt` files, 10% val, 10^8-token shards, progress on stderr.
    pub fn new(inputs: Vec<PathBuf>, out_dir: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        Options {
            inputs,
            out_dir: out_dir.into(),
            name: name.into(),
            tokenizer: TokenizerKind::Gpt2,
            documents: Documents::Paragraphs,
            extensions: vec!["txt".to_string()],
            val_fraction: DEFAULT_VAL_FRACTION,
            shard_size: DEFAULT_SHARD_SIZE,
            progress: Style::Auto,
        }
    }
}

/// Validation or training data; val is written first, as llm.c does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Val,
    Train,
}

impl Split {
    /// The word in shard names.
    pub fn name(self) -> &'static str {
        match self {
            Split::Val => "val",
            Split::Train => "train",
        }
    }
}

/// One written shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    pub path: PathBuf,
    pub tokens: usize,
}

/// What went into one split.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitSummary {
    pub documents: usize,
    /// Including one end-of-text token per document.
    pub tokens: usize,
    /// In order.
    pub shards: Vec<ShardInfo>,
}

/// What `prepare` read and wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Input files read, and their bytes.
    pub files: usize,
    pub bytes: u64,
    pub val: SplitSummary,
    pub train: SplitSummary,
    /// The llm.c tokenizer file written next to the shards.
    pub tokenizer_file: PathBuf,
    /// V and the end-of-text id of the vocabulary used.
    pub vocab_size: usize,
    pub eot_token: u32,
    /// Wall time of the whole preparation.
    pub seconds: f64,
}

impl Summary {
    /// Tokens in both splits.
    pub fn tokens(&self) -> usize {
        self.val.tokens + self.train.tokens
    }
}

/// `dir/NAME_SPLIT_INDEX.bin`, INDEX with six digits as in llm.c.
pub fn shard_path(dir: &Path, name: &str, split: Split, index: usize) -> PathBuf {
    dir.join(format!("{name}_{}_{index:06}.bin", split.name()))
}

/// `dir/NAME_tokenizer.bin`.
pub fn tokenizer_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}_tokenizer.bin"))
}

/// A dataset name for `inputs`: the first input's file stem ("input" for input.txt) or directory name, else "data".
pub fn default_name(inputs: &[PathBuf]) -> String {
    let name = inputs.first().and_then(|input| {
        // "." and ".." have no file name of their own; their absolute form does.
        let input = if input.file_name().is_none() { input.canonicalize().ok()? } else { input.clone() };
        let name = if input.is_dir() { input.file_name() } else { input.file_stem() };
        Some(name?.to_string_lossy().into_owned())
    });
    name.filter(|n| check_name(n).is_ok()).unwrap_or_else(|| "data".to_string())
}

/// Tokenizes `opts.inputs` into shards in `opts.out_dir` (see the module doc), showing progress on stderr.
pub fn prepare(opts: &Options) -> Result<Summary> {
    let started = Instant::now();
    check_options(opts)?;
    let files = list_inputs(&opts.inputs, &opts.extensions)?;
    let total_bytes: u64 = files.iter().map(|(_, size)| size).sum();
    if total_bytes == 0 {
        let what = match files.as_slice() {
            [(path, _)] => format!("{} is empty", path.display()),
            [(first, _), ..] => format!("all {} input files are empty (the first: {})", files.len(), first.display()),
            [] => "no input files".to_string(),
        };
        return Err(Error::config("input", format!("{what}: no text to prepare")));
    }
    let vocab = Vocab::new(opts.tokenizer)?;
    create_out_dir(&opts.out_dir)?;
    let staging = Staging::new(&opts.out_dir, &opts.name)?;
    let progress = Progress::with_style("prepare", Some(total_bytes), Unit::Bytes, opts.progress);
    let mut writer = ShardWriter::new(staging.dir.clone(), &opts.name, opts.shard_size);

    // Documents starting before this byte offset of the whole input go to val.
    let val_end = opts.val_fraction * total_bytes as f64;
    let mut offset = 0u64;
    for (path, size) in &files {
        let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read input", path, e))?;
        if bytes.len() as u64 != *size {
            // The split point was computed from the sizes listed before reading.
            return Err(Error::format(
                path,
                "size",
                format!("the {size} bytes it had when the inputs were listed"),
                format!("{} bytes: it changed while being prepared", bytes.len()),
            ));
        }
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            Error::format(
                path,
                "text encoding",
                "UTF-8 (convert other encodings first, e.g. with iconv)",
                format!("a byte that is not UTF-8 at offset {}", e.valid_up_to()),
            )
        })?;
        let documents = split_documents(text, opts.documents);
        let mut rest = documents.as_slice();
        while !rest.is_empty() {
            let (batch, later) = rest.split_at(batch_len(rest));
            rest = later;
            // Documents are independent, so they are encoded in parallel and written in order.
            let encoded = batch.par_iter().map(|doc| vocab.encode_document(doc)).collect::<Result<Vec<_>>>()?;
            for (doc, tokens) in batch.iter().zip(&encoded) {
                let (start, end) = (offset, offset + doc.len() as u64);
                if opts.val_fraction > 0.0 && start == 0 && end == total_bytes {
                    return Err(one_document_error(opts));
                }
                let split = if (start as f64) < val_end && end < total_bytes { Split::Val } else { Split::Train };
                writer.push(split, tokens)?;
                offset = end;
            }
            progress.inc(batch.iter().map(|doc| doc.len() as u64).sum());
            progress.set_message(format!("{} tokens", HumanCount(writer.tokens() as u64)));
        }
    }
    let (val, train) = writer.finish()?;
    let tokenizer_name = tokenizer_path(Path::new(""), &opts.name);
    vocab.write_llmc_file(&staging.dir.join(&tokenizer_name))?;
    staging.commit(&opts.out_dir, &opts.name)?;
    progress.finish();

    // The shards now live in the output directory, under the names they had in the staging folder.
    let moved = |mut split: SplitSummary| {
        for shard in &mut split.shards {
            shard.path = opts.out_dir.join(shard.path.file_name().unwrap_or_default());
        }
        split
    };
    Ok(Summary {
        files: files.len(),
        bytes: total_bytes,
        val: moved(val),
        train: moved(train),
        tokenizer_file: opts.out_dir.join(tokenizer_name),
        vocab_size: vocab.vocab_size(),
        eot_token: vocab.eot_token(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Refuses options that cannot work, naming the flag.
fn check_options(opts: &Options) -> Result<()> {
    if opts.inputs.is_empty() {
        return Err(Error::config("input", "no input files or directories given"));
    }
    if opts.shard_size == 0 {
        return Err(Error::config("--shard-size", "must be positive, found 0"));
    }
    if opts.shard_size > MAX_SHARD_SIZE {
        return Err(Error::config(
            "--shard-size",
            format!(
                "{} is more than the {MAX_SHARD_SIZE} tokens a shard can hold (its count is an int32)",
                opts.shard_size
            ),
        ));
    }
    // Written so that NaN fails too.
    if !(0.0..1.0).contains(&opts.val_fraction) {
        return Err(Error::config(
            "--val-fraction",
            format!("must be at least 0 and below 1, found {}", opts.val_fraction),
        ));
    }
    if opts.extensions.iter().all(|e| e.trim_start_matches('.').is_empty()) {
        return Err(Error::config("--ext", "no extension given; use e.g. txt, or * for every file"));
    }
    check_name(&opts.name)
}

/// A name is one plain file-name part: shards are written as `NAME_...` inside the output directory.
fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
        return Err(Error::config(
            "--name",
            format!("{name:?} cannot start shard file names; use letters, digits, '_' or '-'"),
        ));
    }
    Ok(())
}

/// The error for a split asked of a single document.
fn one_document_error(opts: &Options) -> Error {
    let how = match opts.documents {
        Documents::Files => "one file is one document; use --documents paragraphs, more files, or --val-fraction 0",
        Documents::Paragraphs => "it has no blank line; use more files or --val-fraction 0",
    };
    Error::config(
        "--val-fraction",
        format!("{} needs at least 2 documents to split, but the input is one document ({how})", opts.val_fraction),
    )
}

/// The files to read, in order, with their sizes: see the module doc for which.
fn list_inputs(inputs: &[PathBuf], extensions: &[String]) -> Result<Vec<(PathBuf, u64)>> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| Error::io("cannot read input", input, e))?;
        if meta.is_file() {
            files.push((input.clone(), meta.len()));
        } else if meta.is_dir() {
            let before = files.len();
            walk(input, extensions, &mut files)?;
            if files.len() == before {
                let wanted: Vec<String> =
                    extensions.iter().map(|e| format!(".{}", e.trim_start_matches('.'))).collect();
                return Err(Error::config(
                    "--ext",
                    format!(
                        "{} holds no {} files (searched recursively, skipping names that start with '.'); \
                         pass --ext with the extensions to take, or --ext '*' for every file",
                        input.display(),
                        wanted.join(" or ")
                    ),
                ));
            }
        } else {
            return Err(Error::config("input", format!("{} is neither a file nor a directory", input.display())));
        }
    }
    Ok(files)
}

/// Appends the matching files under `dir` to `files`, depth first, sorted by name within each directory.
fn walk(dir: &Path, extensions: &[String], files: &mut Vec<(PathBuf, u64)>) -> Result<()> {
    let list_error = |e| Error::io("cannot list directory", dir, e);
    let mut entries =
        std::fs::read_dir(dir).map_err(list_error)?.collect::<std::io::Result<Vec<_>>>().map_err(list_error)?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| Error::io("cannot read input", &path, e))?;
        if kind.is_dir() {
            walk(&path, extensions, files)?;
        } else if has_extension(&path, extensions) {
            // Links to files count as files (metadata follows them); links to directories were not entered above.
            let meta = std::fs::metadata(&path).map_err(|e| Error::io("cannot read input", &path, e))?;
            if meta.is_file() {
                files.push((path, meta.len()));
            }
        }
    }
    Ok(())
}

/// Whether `path` ends in one of `extensions` (case-insensitive, with or without the dot; "*" matches all).
fn has_extension(path: &Path, extensions: &[String]) -> bool {
    let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
    extensions.iter().any(|wanted| {
        let wanted = wanted.trim_start_matches('.');
        wanted == "*" || ext.as_deref().is_some_and(|ext| ext.eq_ignore_ascii_case(wanted))
    })
}

/// `text` cut into documents (never empty ones); paragraphs keep their "\n\n", as llm.c's tinyshakespeare.py.
fn split_documents(text: &str, documents: Documents) -> Vec<&str> {
    match documents {
        Documents::Paragraphs => text.split_inclusive("\n\n").collect(),
        Documents::Files if text.is_empty() => Vec::new(),
        Documents::Files => vec![text],
    }
}

/// How many of `documents` (at least one) make the next batch of about `BATCH_BYTES`.
fn batch_len(documents: &[&str]) -> usize {
    let mut bytes = 0;
    let mut n = 0;
    while n < documents.len() && (n == 0 || bytes < BATCH_BYTES) {
        bytes += documents[n].len();
        n += 1;
    }
    n
}

/// The vocabulary text is encoded with.
enum Vocab {
    Gpt2(Box<Tokenizer>),
    Bytes,
}

impl Vocab {
    fn new(kind: TokenizerKind) -> Result<Self> {
        Ok(match kind {
            TokenizerKind::Gpt2 => Vocab::Gpt2(Box::new(Tokenizer::gpt2()?)),
            TokenizerKind::Bytes => Vocab::Bytes,
        })
    }

    fn eot_token(&self) -> u32 {
        match self {
            Vocab::Gpt2(tokenizer) => tokenizer.eot_token(),
            Vocab::Bytes => BYTES_EOT_TOKEN,
        }
    }

    fn vocab_size(&self) -> usize {
        match self {
            Vocab::Gpt2(tokenizer) => tokenizer.vocab_size(),
            Vocab::Bytes => BYTES_VOCAB_SIZE,
        }
    }

    /// The end-of-text token, then the tokens of `text`. Every id fits a u16: both vocabularies are below 65536.
    fn encode_document(&self, text: &str) -> Result<Vec<u16>> {
        let eot = self.eot_token() as u16;
        Ok(match self {
            Vocab::Gpt2(tokenizer) => {
                let tokens = tokenizer.encode(text)?;
                std::iter::once(eot).chain(tokens.into_iter().map(|t| t as u16)).collect()
            }
            Vocab::Bytes => std::iter::once(eot).chain(text.bytes().map(u16::from)).collect(),
        })
    }

    /// Writes the vocabulary as an llm.c tokenizer file; the end-of-text token decodes to "<|endoftext|>".
    fn write_llmc_file(&self, path: &Path) -> Result<()> {
        let table: Vec<Vec<u8>> = match self {
            Vocab::Gpt2(tokenizer) => (0..tokenizer.vocab_size() as u32)
                // Every id below vocab_size has bytes; the fallback only keeps this total.
                .map(|id| tokenizer.token_bytes(id).unwrap_or(EOT_TEXT).to_vec())
                .collect(),
            Vocab::Bytes => (0..=u8::MAX)
                .map(|byte| if u32::from(byte) == BYTES_EOT_TOKEN { EOT_TEXT.to_vec() } else { vec![byte] })
                .collect(),
        };
        let tokens: Vec<&[u8]> = table.iter().map(Vec::as_slice).collect();
        tokenizer::write_llmc_file(path, &tokens, self.eot_token())
    }
}

/// Appends documents' tokens to the current split's shard and writes each shard once it holds `shard_size`
/// tokens. Val documents all come before train documents (see `Split`), so one buffer serves both.
struct ShardWriter<'a> {
    dir: PathBuf,
    name: &'a str,
    shard_size: usize,
    /// The split `buffer` belongs to.
    split: Split,
    /// The shard being filled: (at most shard_size,)
    buffer: Vec<u16>,
    val: SplitSummary,
    train: SplitSummary,
}

impl<'a> ShardWriter<'a> {
    fn new(dir: PathBuf, name: &'a str, shard_size: usize) -> Self {
        ShardWriter {
            dir,
            name,
            shard_size,
            split: Split::Val,
            buffer: Vec::new(),
            val: SplitSummary::default(),
            train: SplitSummary::default(),
        }
    }

    /// Tokens pushed so far, both splits.
    fn tokens(&self) -> usize {
        self.val.tokens + self.train.tokens
    }

    /// Appends one document's `tokens` to `split`, which may only move from val to train.
    fn push(&mut self, split: Split, tokens: &[u16]) -> Result<()> {
        if split != self.split {
            // The last, short val shard.
            self.flush()?;
            self.split = split;
        }
        let summary = self.summary();
        summary.documents += 1;
        summary.tokens += tokens.len();
        let mut rest = tokens;
        while !rest.is_empty() {
            let room = self.shard_size - self.buffer.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.buffer.extend_from_slice(now);
            rest = later;
            if self.buffer.len() == self.shard_size {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Writes the last shards; returns (val, train).
    fn finish(mut self) -> Result<(SplitSummary, SplitSummary)> {
        self.flush()?;
        Ok((self.val, self.train))
    }

    /// Writes `buffer` as the current split's next shard, if it holds anything.
    fn flush(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let index = self.summary().shards.len();
        let path = shard_path(&self.dir, self.name, self.split, index);
        write_shard(&path, &self.buffer)?;
        let tokens = self.buffer.len();
        self.summary().shards.push(ShardInfo { path, tokens });
        self.buffer.clear();
        Ok(())
    }

    fn summary(&mut self) -> &mut SplitSummary {
        match self.split {
            Split::Val => &mut self.val,
            Split::Train => &mut self.train,
        }
    }
}

/// Creates `dir` when missing; refuses a path that exists but is not a directory.
fn create_out_dir(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::config("--out-dir", format!("{} exists and is not a directory", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io("cannot create output directory", dir, e))
}

/// The hidden folder `OUT/.NAME.prepare` that a run writes into; removed when dropped uncommitted.
struct Staging {
    dir: PathBuf,
    committed: bool,
}

impl Staging {
    fn new(out_dir: &Path, name: &str) -> Result<Self> {
        let dir = out_dir.join(format!(".{name}.prepare"));
        if dir.exists() {
            // Left by a run that was killed: it only ever holds that run's incomplete output.
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io("cannot remove leftover staging folder", &dir, e))?;
        }
        std::fs::create_dir(&dir).map_err(|e| Error::io("cannot create staging folder", &dir, e))?;
        Ok(Staging { dir, committed: false })
    }

    /// Moves every staged file into `out_dir`, then removes NAME's shards there that this run did not write.
    fn commit(mut self, out_dir: &Path, name: &str) -> Result<()> {
        let list_error = |e| Error::io("cannot list directory", &self.dir, e);
        let mut staged = BTreeSet::new();
        for entry in std::fs::read_dir(&self.dir).map_err(list_error)? {
            staged.insert(entry.map_err(list_error)?.file_name());
        }
        for file in &staged {
            let (from, to) = (self.dir.join(file), out_dir.join(file));
            std::fs::rename(&from, &to).map_err(|e| Error::io("cannot move shard into place", &to, e))?;
        }
        let list_error = |e| Error::io("cannot list directory", out_dir, e);
        for entry in std::fs::read_dir(out_dir).map_err(list_error)? {
            let file = entry.map_err(list_error)?.file_name();
            if !staged.contains(&file) && is_shard_name(name, &file.to_string_lossy()) {
                let path = out_dir.join(&file);
                std::fs::remove_file(&path).map_err(|e| Error::io("cannot remove old shard", &path, e))?;
            }
        }
        std::fs::remove_dir(&self.dir).map_err(|e| Error::io("cannot remove staging folder", &self.dir, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the error that got us here is what the user needs to see.
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether `file` is one of NAME's shards: `NAME_val_DDDDDD.bin` or `NAME_train_DDDDDD.bin` (six or more digits).
fn is_shard_name(name: &str, file: &str) -> bool {
    let Some(rest) = file.strip_prefix(name).and_then(|r| r.strip_prefix('_')) else { return false };
    let Some(digits) = rest.strip_prefix("val_").or_else(|| rest.strip_prefix("train_")) else { return false };
    digits.strip_suffix(".bin").is_some_and(|d| d.len() >= 6 && d.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_end_after_each_blank_line_as_in_llmc() {
        // llm.c: text.replace('\n\n', '\n\n<|endoftext|>'), so a third newline starts the next document.
        assert_eq!(split_documents("a\n\nb\n\n\nc\n", Documents::Paragraphs), ["a\n\n", "b\n\n", "\nc\n"]);
        assert_eq!(split_documents("", Documents::Paragraphs), Vec::<&str>::new());
        assert_eq!(split_documents("a\n\nb", Documents::Files), ["a\n\nb"]);
    }

    #[test]
    fn shard_names_of_other_datasets_are_not_taken_for_ours() {
        assert!(is_shard_name("tiny", "tiny_val_000000.bin"));
        assert!(is_shard_name("tiny", "tiny_train_1234567.bin"));
        assert!(!is_shard_name("tiny", "tiny_tokenizer.bin"));
        assert!(!is_shard_name("tiny", "tiny_train_val_000000.bin"), "dataset tiny_train");
        assert!(!is_shard_name("tiny", "tinier_val_000000.bin"));
        assert!(!is_shard_name("tiny", "tiny_val_00000.bin"));
    }

    #[test]
    fn extensions_match_case_insensitively_with_or_without_the_dot() {
        let txt = ["txt".to_string(), ".md".to_string()];
        assert!(has_extension(Path::new("a/B.TXT"), &txt));
        assert!(has_extension(Path::new("a/b.md"), &txt));
        assert!(!has_extension(Path::new("a/b.bin"), &txt));
        assert!(!has_extension(Path::new("a/txt"), &txt));
        assert!(has_extension(Path::new("a/README"), &["*".to_string()]));
    }

    #[test]
    fn batches_hold_at_least_one_document() {
        let big = "x".repeat(BATCH_BYTES + 1);
        assert_eq!(batch_len(&[&big, "y"]), 1);
        assert_eq!(batch_len(&["a", "b", "c"]), 3);
    }
}
