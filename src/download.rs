//! Fetching a public dataset once into a local cache, for `llmrs prepare --download`.
//!
//! llm.c's data scripts download their text on first use and keep it next to the shards; we do the same, but in
//! a per-user cache (`$XDG_CACHE_HOME/llmrs`, else `~/.cache/llmrs`, or `--cache-dir`), so every checkout and
//! every output directory shares one copy. A dataset's file is `CACHE/NAME/FILE` (for example
//! `~/.cache/llmrs/tinyshakespeare/input.txt`); when it is there it is used as is, whatever URL is given: delete
//! it to fetch again. It is written atomically (a `.tmp` sibling renamed into place once complete), so an
//! interrupted or failed download never leaves a truncated file that later runs would take for the real one.
//!
//! A body shorter than its `Content-Length`, an HTTP error status or no connection at all is an error naming the
//! URL. The URL can be overridden (a mirror, or a server on 127.0.0.1 in the tests, which run offline).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::checkpoint::write_atomically;
use crate::error::{Error, Result};
use crate::progress::{Progress, Style, Unit};

/// A dataset `--download` knows: where its text lives and the file name it is cached under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dataset {
    /// What `--download` takes, and the name of its cache folder and (by default) of its shards.
    pub name: &'static str,
    pub url: &'static str,
    pub file_name: &'static str,
}

/// The datasets `--download` knows.
pub const DATASETS: &[Dataset] = &[Dataset {
    // karpathy's char-rnn copy of the works of Shakespeare, 1.1 MB: the text llm.c's tinyshakespeare.py uses.
    name: "tinyshakespeare",
    url: "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    file_name: "input.txt",
}];

/// Giving up on a server that does not accept the connection within this time.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Giving up on a connection that delivers nothing for this long (a stalled download), however long the whole
/// download takes.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes read from the connection per write to the file.
const CHUNK_BYTES: usize = 64 * 1024;

/// The dataset called `name`, or an error listing the known ones.
pub fn find_dataset(name: &str) -> Result<&'static Dataset> {
    DATASETS.iter().find(|d| d.name == name).ok_or_else(|| {
        let known: Vec<&str> = DATASETS.iter().map(|d| d.name).collect();
        Error::config("--download", format!("unknown dataset {name:?}; known: {}", known.join(", ")))
    })
}

/// `$XDG_CACHE_HOME/llmrs`, else `$HOME/.cache/llmrs`.
pub fn default_cache_dir() -> Result<PathBuf> {
    let non_empty = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from);
    non_empty("XDG_CACHE_HOME")
        .or_else(|| non_empty("HOME").map(|home| home.join(".cache")))
        .map(|cache| cache.join("llmrs"))
        .ok_or_else(|| Error::config("--cache-dir", "neither XDG_CACHE_HOME nor HOME is set; give a directory"))
}

/// Where `dataset` is cached under `cache_dir`.
pub fn cached_path(dataset: &Dataset, cache_dir: &Path) -> PathBuf {
    cache_dir.join(dataset.name).join(dataset.file_name)
}

/// The path of `dataset`'s text in `cache_dir`, downloading it from `url` (default: the dataset's own URL) when
/// it is not there yet. Also says whether it was downloaded now (true) or reused from the cache (false).
pub fn fetch(dataset: &Dataset, url: Option<&str>, cache_dir: &Path, style: Style) -> Result<(PathBuf, bool)> {
    let path = cached_path(dataset, cache_dir);
    if path.is_file() {
        return Ok((path, false));
    }
    let folder = path.parent().unwrap_or(cache_dir);
    std::fs::create_dir_all(folder).map_err(|e| Error::io("cannot create cache directory", folder, e))?;
    download(url.unwrap_or(dataset.url), &path, style)?;
    Ok((path, true))
}

/// Downloads `url` to `dest` atomically, showing progress; returns the number of bytes received.
pub fn download(url: &str, dest: &Path, style: Style) -> Result<u64> {
    let fail = |message: String| Error::Download { url: url.to_string(), message };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(READ_TIMEOUT))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| fail(describe(e)))?;
    let expected = response.body().content_length();
    let progress = Progress::with_style("download", expected, Unit::Bytes, style);
    progress.println(format!("download: {url} -> {}", dest.display()));
    let mut body = response.body_mut().as_reader();

    // A failure of the connection must not be reported as a failure to write the file: the closure records it
    // here and aborts the write, which removes the temporary file.
    let mut network_error = None;
    let mut received = 0u64;
    let written = write_atomically(dest, |out| {
        use std::io::Write;
        let mut chunk = vec![0u8; CHUNK_BYTES];
        let mut abort = |message: String| {
            network_error = Some(fail(message));
            std::io::Error::other("download failed")
        };
        loop {
            let n = match body.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(abort(format!("the connection failed after {received} bytes: {e}"))),
            };
            out.write_all(&chunk[..n])?;
            received += n as u64;
            progress.inc(n as u64);
        }
        match expected {
            Some(expected) if received != expected => Err(abort(format!(
                "the body ended after {received} of the {expected} bytes its Content-Length promised"
            ))),
            _ => Ok(()),
        }
    });
    match (network_error, written) {
        (Some(e), _) | (None, Err(e)) => Err(e),
        (None, Ok(())) => {
            progress.finish();
            Ok(received)
        }
    }
}

/// ureq's error in words, with the reason phrase for HTTP statuses ("HTTP 404 Not Found").
fn describe(error: ureq::Error) -> String {
    match error {
        ureq::Error::StatusCode(code) => {
            let reason = ureq::http::StatusCode::from_u16(code).ok().and_then(|s| s.canonical_reason());
            format!("the server answered HTTP {code}{}", reason.map(|r| format!(" {r}")).unwrap_or_default())
        }
        other => other.to_string(),
    }
}
