//! `llmrs prepare`: text files, directories or a downloaded dataset into llm.c token shards for `train_gpt2`.
//! The work is `llmrs::prepare` (and `llmrs::download`); this file maps flags onto it and prints the summary on
//! stdout (progress goes to stderr).

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use llmrs::download;
use llmrs::prepare::{self, Documents, Options, SplitSummary, Summary, TokenizerKind};
use llmrs::progress::Style;
use llmrs::Result;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TokenizerArg {
    /// GPT-2's BPE: 50257 tokens, <|endoftext|> = 50256
    Gpt2,
    /// One token per byte: 256 tokens, end of text = 255 (never a byte of UTF-8), for tiny models
    Bytes,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DocumentsArg {
    /// A document ends after each blank line and at the end of each file (llm.c's tinyshakespeare)
    Paragraphs,
    /// Each file is one document
    Files,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Text files (UTF-8) and directories (searched recursively for --ext files)
    #[arg(required_unless_present = "download", conflicts_with = "download")]
    inputs: Vec<PathBuf>,
    /// Download a known dataset (tinyshakespeare) into the cache, or reuse it from there, and prepare it
    #[arg(long, value_name = "DATASET")]
    download: Option<String>,
    /// Fetch the --download dataset from this URL instead of its public one (a mirror, a local server)
    #[arg(long, value_name = "URL", requires = "download")]
    download_url: Option<String>,
    /// Where downloads are kept and reused [default: $XDG_CACHE_HOME/llmrs, else ~/.cache/llmrs]
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Directory for the shards and the tokenizer file (created if missing)
    #[arg(short = 'o', long, value_name = "DIR", default_value = "data")]
    out_dir: PathBuf,
    /// Shards are NAME_val_000000.bin, NAME_train_000000.bin, ... [default: the dataset, or the first input's name]
    #[arg(long)]
    name: Option<String>,
    /// Vocabulary
    #[arg(long, value_enum, default_value_t = TokenizerArg::Gpt2)]
    tokenizer: TokenizerArg,
    /// Where documents end; each is preceded by the end-of-text token
    #[arg(long, value_enum, default_value_t = DocumentsArg::Paragraphs)]
    documents: DocumentsArg,
    /// File extensions taken from directories, comma-separated; '*' takes every file
    #[arg(long, value_delimiter = ',', default_value = "txt")]
    ext: Vec<String>,
    /// Share of the input bytes, in [0, 1), for validation: whole documents from the start (0: no val shards)
    #[arg(long, default_value_t = prepare::DEFAULT_VAL_FRACTION, allow_negative_numbers = true)]
    val_fraction: f64,
    /// Tokens per shard (llm.c: 100M)
    #[arg(long, default_value_t = prepare::DEFAULT_SHARD_SIZE)]
    shard_size: usize,
    /// No progress on stderr
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let style = if args.quiet { Style::Silent } else { Style::Auto };
    let (inputs, default_name, source) = match &args.download {
        Some(name) => {
            let dataset = download::find_dataset(name)?;
            let cache_dir = match &args.cache_dir {
                Some(dir) => dir.clone(),
                None => download::default_cache_dir()?,
            };
            let url = args.download_url.as_deref().unwrap_or(dataset.url);
            let (path, downloaded) = download::fetch(dataset, Some(url), &cache_dir, style)?;
            let how = if downloaded {
                format!("downloaded from {url}")
            } else {
                "cached; delete it to download again".into()
            };
            let source = format!("{} ({how})", path.display());
            (vec![path], dataset.name.to_string(), Some(source))
        }
        None => (args.inputs.clone(), prepare::default_name(&args.inputs), None),
    };
    let mut opts = Options::new(inputs, &args.out_dir, args.name.clone().unwrap_or(default_name));
    opts.tokenizer = match args.tokenizer {
        TokenizerArg::Gpt2 => TokenizerKind::Gpt2,
        TokenizerArg::Bytes => TokenizerKind::Bytes,
    };
    opts.documents = match args.documents {
        DocumentsArg::Paragraphs => Documents::Paragraphs,
        DocumentsArg::Files => Documents::Files,
    };
    opts.extensions = args.ext.clone();
    opts.val_fraction = args.val_fraction;
    opts.shard_size = args.shard_size;
    opts.progress = style;
    let summary = prepare::prepare(&opts)?;
    if let Some(source) = source {
        println!("source: {source}");
    }
    print_summary(&summary, &opts);
    Ok(())
}

fn print_summary(summary: &Summary, opts: &Options) {
    let documents = match opts.documents {
        Documents::Paragraphs => "paragraphs",
        Documents::Files => "files",
    };
    println!(
        "input: {}, {} bytes, {} ({documents})",
        count(summary.files, "file"),
        summary.bytes,
        count(summary.val.documents + summary.train.documents, "document")
    );
    print_split("val", &summary.val);
    print_split("train", &summary.train);
    let vocab = match opts.tokenizer {
        TokenizerKind::Gpt2 => "GPT-2 BPE",
        TokenizerKind::Bytes => "bytes",
    };
    println!(
        "tokenizer: {vocab}, V={} EOT={}: {}",
        summary.vocab_size,
        summary.eot_token,
        summary.tokenizer_file.display()
    );
    println!(
        "done: {} tokens in {:.2} s ({:.0} tokens/s)",
        summary.tokens(),
        summary.seconds,
        summary.tokens() as f64 / summary.seconds.max(1e-9)
    );
    let glob = |split: &str| shell_quote(&opts.out_dir.join(format!("{}_{split}_*.bin", opts.name)));
    let mut command = format!("train_gpt2 --train-data {}", glob("train"));
    if !summary.val.shards.is_empty() {
        command += &format!(" --val-data {}", glob("val"));
    }
    if opts.tokenizer == TokenizerKind::Bytes {
        command += &format!(" --vocab-size {}", summary.vocab_size);
    }
    command += &format!(" --tokenizer {}", shell_quote(&summary.tokenizer_file));
    println!("train on it: {command}");
}

/// `val: 12 documents, 3,456 tokens in 1 shard: out/x_val_000000.bin` (first .. last when several).
fn print_split(label: &str, split: &SplitSummary) {
    let files = match split.shards.as_slice() {
        [] => String::new(),
        [only] => format!(": {}", only.path.display()),
        [first, .., last] => format!(": {} .. {}", first.path.display(), last.path.display()),
    };
    println!(
        "{label}: {}, {} in {}{files}",
        count(split.documents, "document"),
        count(split.tokens, "token"),
        count(split.shards.len(), "shard")
    );
}

/// "1 shard", "2 shards".
fn count(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// `path` in single quotes for a shell (globs must reach train_gpt2 unexpanded).
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
