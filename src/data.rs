//! Token shards in llm.c's format, and the loader that cuts them into (inputs, targets) batches.
//!
//! A shard is a header of 256 little-endian int32 followed by its tokens as uint16:
//!
//! ```text
//! header[0] = 20240520 (magic)   header[1] = 1 (version)   header[2] = number of tokens
//! ```
//!
//! Shards are memory-mapped, so a dataset of many gigabytes costs no memory up front and llm.c's data scripts
//! work unchanged. A batch is B*T+1 consecutive tokens starting at a multiple of B*T ("batch slot" k starts at
//! k*B*T, a shard has (ntok - 1) / (B*T) slots): inputs are the first B*T, targets the same window shifted by one.
//!
//! Without shuffling, slots are visited in order, shard after shard, wrapping to the first shard (llm.c's order).
//! With a shuffle seed, every epoch visits the shards in a fresh random order and, within each shard, its slots in
//! a fresh random order. The permutations are derived from (seed, epoch, shard) rather than from a running
//! generator, so the loader's whole position is a few plain numbers (`LoaderState`: epoch, shard, batch, seed)
//! and a run can resume exactly.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rayon::prelude::*;

use crate::checkpoint::{write_atomically, HEADER_BYTES, HEADER_INTS};
use crate::error::{Error, Result};
use crate::rng::Rng;

// The formats are little-endian and are read with byte casts, which only match on a little-endian host.
#[cfg(target_endian = "big")]
compile_error!("llmrs reads llm.c's little-endian files with byte casts; big-endian hosts are not supported");

/// header[0] of every llm.c token shard.
pub const SHARD_MAGIC: i32 = 20240520;
/// header[1] of the shard format this module reads and writes.
pub const SHARD_VERSION: i32 = 1;

/// Writes `tokens` to `path` as an llm.c token shard (atomically: the file appears complete or not at all).
pub fn write_shard(path: &Path, tokens: &[u16]) -> Result<()> {
    let count = i32::try_from(tokens.len()).map_err(|_| {
        Error::format(
            path,
            "tokens in one shard (header[2] is an int32)",
            format!("at most {}", i32::MAX),
            tokens.len(),
        )
    })?;
    let mut header = [0i32; HEADER_INTS];
    header[0] = SHARD_MAGIC;
    header[1] = SHARD_VERSION;
    header[2] = count;
    write_atomically(path, |out| {
        use std::io::Write;
        out.write_all(bytemuck::bytes_of(&header))?;
        out.write_all(bytemuck::cast_slice(tokens))
    })
}

/// Where a shard's tokens live: a memory-mapped file, or memory (the built-in dataset).
enum Tokens {
    /// The whole file; tokens start after the header.
    Mapped(Mmap),
    Owned(Vec<u16>),
}

/// One shard: its name (a path, or the name given to `from_tokens`) and its tokens.
struct Shard {
    path: PathBuf,
    tokens: Tokens,
}

impl Shard {
    /// tokens: (ntok,)
    fn tokens(&self) -> &[u16] {
        match &self.tokens {
            // The map starts page-aligned and the header is 1024 bytes, so the cast is aligned; open() checked
            // that the length after the header is even.
            Tokens::Mapped(map) => bytemuck::cast_slice(&map[HEADER_BYTES as usize..]),
            Tokens::Owned(tokens) => tokens,
        }
    }

    /// Opens, checks and maps the shard at `path`.
    fn open(path: &Path) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::io("cannot open data shard", path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io("cannot read metadata of data shard", path, e))?.len();
        if file_len < HEADER_BYTES {
            return Err(Error::format(
                path,
                "file size (an llm.c data shard header is 256 int32)",
                format!("at least {HEADER_BYTES} bytes"),
                format!("{file_len} bytes"),
            ));
        }
        let mut header = [0i32; HEADER_INTS];
        file.read_exact(bytemuck::bytes_of_mut(&mut header))
            .map_err(|e| Error::io("cannot read data shard", path, e))?;
        if header[0] != SHARD_MAGIC {
            return Err(Error::format(path, "magic number (header[0]) of an llm.c data shard", SHARD_MAGIC, header[0]));
        }
        if header[1] != SHARD_VERSION {
            return Err(Error::format(path, "version (header[1])", SHARD_VERSION, header[1]));
        }
        let ntok = u64::try_from(header[2])
            .map_err(|_| Error::format(path, "number of tokens (header[2])", "a non-negative number", header[2]))?;
        let expected_len = HEADER_BYTES + 2 * ntok;
        if file_len != expected_len {
            return Err(Error::format(
                path,
                format!("file size for the {ntok} uint16 tokens its header (header[2]) promises"),
                format!("{expected_len} bytes"),
                format!("{file_len} bytes"),
            ));
        }
        // SAFETY: the file is opened read-only and the map is only read. As with every memory-mapped reader
        // (llm.c's included), soundness relies on no other process truncating or rewriting the shard while it is
        // mapped; write_shard never does that, it replaces files by renaming a new one over them.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("cannot memory-map data shard", path, e))?;
        Ok(Shard { path: path.to_path_buf(), tokens: Tokens::Mapped(map) })
    }
}

/// The loader's position, as plain data: save it with a checkpoint, `restore` it to continue exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoaderState {
    /// Full passes over all shards completed.
    pub epoch: u64,
    /// Position in this epoch's shard order (not the shard's number when shuffling).
    pub shard_index: usize,
    /// Position in the current shard's slot order: batches already taken from it.
    pub batch_index: usize,
    /// The seed every permutation derives from, or None when not shuffling; with `epoch` and the shard number it
    /// fully determines the random state, so no generator state needs saving.
    pub shuffle_seed: Option<u64>,
    /// B and T the positions refer to; restoring into a loader with other sizes is refused.
    pub batch_size: usize,
    pub seq_len: usize,
}

/// Cuts token shards into batches of B sequences of T tokens. Buffers are allocated once; `next_batch` never
/// allocates.
pub struct DataLoader {
    shards: Vec<Shard>,
    /// B
    batch_size: usize,
    /// T
    seq_len: usize,
    shuffle_seed: Option<u64>,
    /// Largest token over all shards.
    max_token: u16,
    epoch: u64,
    /// Position in `shard_order`.
    shard_index: usize,
    /// Position in `slot_order`.
    batch_index: usize,
    /// This epoch's shard numbers in visiting order: (num_shards,)
    shard_order: Vec<usize>,
    /// The current shard's slot numbers in visiting order: (slots of that shard,)
    slot_order: Vec<usize>,
    /// inputs: (B, T)
    inputs: Vec<u32>,
    /// targets: (B, T), inputs shifted by one token
    targets: Vec<u32>,
}

impl DataLoader {
    /// Opens every shard matching `pattern` (a path, or a glob such as `data/train_*.bin`; matches are visited
    /// sorted by name) for batches of `batch_size` (B) sequences of `seq_len` (T) tokens, shuffled when
    /// `shuffle_seed` is given.
    pub fn open(pattern: &str, batch_size: usize, seq_len: usize, shuffle_seed: Option<u64>) -> Result<Self> {
        check_sizes(batch_size, seq_len)?;
        let shards = shard_paths(pattern)?.iter().map(|path| Shard::open(path)).collect::<Result<Vec<_>>>()?;
        Self::new(shards, batch_size, seq_len, shuffle_seed)
    }

    /// A loader over one in-memory shard named `name` (the name appears in messages), e.g. the built-in dataset.
    pub fn from_tokens(
        name: &str,
        tokens: Vec<u16>,
        batch_size: usize,
        seq_len: usize,
        shuffle_seed: Option<u64>,
    ) -> Result<Self> {
        check_sizes(batch_size, seq_len)?;
        let shard = Shard { path: PathBuf::from(name), tokens: Tokens::Owned(tokens) };
        Self::new(vec![shard], batch_size, seq_len, shuffle_seed)
    }

    fn new(shards: Vec<Shard>, batch_size: usize, seq_len: usize, shuffle_seed: Option<u64>) -> Result<Self> {
        let needed = batch_size * seq_len + 1;
        for shard in &shards {
            let have = shard.tokens().len();
            if have < needed {
                return Err(Error::format(
                    &shard.path,
                    "tokens in the shard",
                    format!(
                        "at least {needed} (one batch: batch size {batch_size} x sequence length {seq_len}, plus 1 \
                         for the last target)"
                    ),
                    format!("{have}; use a smaller --batch-size or --seq-len"),
                ));
            }
        }
        let max_token = shards.iter().map(|s| s.tokens().par_iter().copied().max().unwrap_or(0)).max().unwrap_or(0);
        let bt = batch_size * seq_len;
        let mut loader = DataLoader {
            shard_order: Vec::with_capacity(shards.len()),
            shards,
            batch_size,
            seq_len,
            shuffle_seed,
            max_token,
            epoch: 0,
            shard_index: 0,
            batch_index: 0,
            slot_order: Vec::new(),
            inputs: vec![0; bt],
            targets: vec![0; bt],
        };
        loader.reset();
        Ok(loader)
    }

    /// The next batch: (inputs (B*T), targets (B*T)), targets[i] being the token after inputs[i]. Advances to the
    /// next shard, and after the last shard to the next epoch, when the current one has no whole batch left.
    pub fn next_batch(&mut self) -> (&[u32], &[u32]) {
        let bt = self.batch_size * self.seq_len;
        let shard = &self.shards[self.shard_order[self.shard_index]];
        let start = self.slot_order[self.batch_index] * bt;
        // window: (B*T + 1,) tokens; inputs are window[..B*T], targets window[1..].
        let window = &shard.tokens()[start..start + bt + 1];
        for (dst, &tok) in self.inputs.iter_mut().zip(&window[..bt]) {
            *dst = u32::from(tok);
        }
        for (dst, &tok) in self.targets.iter_mut().zip(&window[1..]) {
            *dst = u32::from(tok);
        }

        self.batch_index += 1;
        if self.batch_index == self.slot_order.len() {
            self.batch_index = 0;
            self.shard_index += 1;
            if self.shard_index == self.shards.len() {
                self.shard_index = 0;
                self.epoch += 1;
                self.order_shards();
            }
            self.order_slots();
        }
        (&self.inputs, &self.targets)
    }

    /// Back to the first batch of epoch 0, as right after opening.
    pub fn reset(&mut self) {
        self.epoch = 0;
        self.shard_index = 0;
        self.batch_index = 0;
        self.order_shards();
        self.order_slots();
    }

    /// The position to save, so that `restore` continues with the same batches.
    pub fn state(&self) -> LoaderState {
        LoaderState {
            epoch: self.epoch,
            shard_index: self.shard_index,
            batch_index: self.batch_index,
            shuffle_seed: self.shuffle_seed,
            batch_size: self.batch_size,
            seq_len: self.seq_len,
        }
    }

    /// Continues from a position saved by `state` on a loader opened with the same shards, sizes and seed.
    pub fn restore(&mut self, state: &LoaderState) -> Result<()> {
        let mismatch = |what: &str, expected: String, found: String| {
            Error::config("loader state", format!("{what}: this loader has {expected}, the saved state has {found}"))
        };
        if (state.batch_size, state.seq_len) != (self.batch_size, self.seq_len) {
            return Err(mismatch(
                "batch size x sequence length",
                format!("{} x {}", self.batch_size, self.seq_len),
                format!("{} x {}", state.batch_size, state.seq_len),
            ));
        }
        if state.shuffle_seed != self.shuffle_seed {
            return Err(mismatch(
                "shuffle seed",
                format!("{:?}", self.shuffle_seed),
                format!("{:?}", state.shuffle_seed),
            ));
        }
        if state.shard_index >= self.shards.len() {
            return Err(mismatch(
                "shard index",
                format!("{} shards", self.shards.len()),
                format!("index {}", state.shard_index),
            ));
        }
        let previous = self.state();
        self.epoch = state.epoch;
        self.shard_index = state.shard_index;
        self.order_shards();
        self.order_slots();
        if state.batch_index >= self.slot_order.len() {
            let err = mismatch(
                &format!("batch index in {}", self.current_shard().display()),
                format!("{} batches", self.slot_order.len()),
                format!("index {}", state.batch_index),
            );
            // Leave the loader where it was.
            self.epoch = previous.epoch;
            self.shard_index = previous.shard_index;
            self.order_shards();
            self.order_slots();
            self.batch_index = previous.batch_index;
            return Err(err);
        }
        self.batch_index = state.batch_index;
        Ok(())
    }

    /// Tokens in all shards.
    pub fn num_tokens(&self) -> usize {
        self.shards.iter().map(|s| s.tokens().len()).sum()
    }

    /// The largest token id in any shard, so a model whose vocabulary is too small can be refused up front.
    pub fn max_token(&self) -> u16 {
        self.max_token
    }

    /// Batches in one pass over all shards (each shard contributes (ntok - 1) / (B*T)).
    pub fn batches_per_epoch(&self) -> usize {
        (0..self.shards.len()).map(|s| self.slots(s)).sum()
    }

    /// B
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// T
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The shards in their sorted (unshuffled) order: file paths, or the name given to `from_tokens`.
    pub fn shard_paths(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// The shard the next batch comes from.
    pub fn current_shard(&self) -> &Path {
        &self.shards[self.shard_order[self.shard_index]].path
    }

    /// Batch slots of shard number `shard`.
    fn slots(&self, shard: usize) -> usize {
        (self.shards[shard].tokens().len() - 1) / (self.batch_size * self.seq_len)
    }

    /// Fills `shard_order` for the current epoch: 0..n, shuffled when a seed is set.
    fn order_shards(&mut self) {
        self.shard_order.clear();
        self.shard_order.extend(0..self.shards.len());
        if let Some(seed) = self.shuffle_seed {
            let mut rng = derive_rng(&[seed, self.epoch, u64::MAX]);
            rng.shuffle(&mut self.shard_order);
        }
    }

    /// Fills `slot_order` for the current shard of the current epoch: 0..slots, shuffled when a seed is set.
    fn order_slots(&mut self) {
        let shard = self.shard_order[self.shard_index];
        let slots = self.slots(shard);
        self.slot_order.clear();
        self.slot_order.extend(0..slots);
        if let Some(seed) = self.shuffle_seed {
            let mut rng = derive_rng(&[seed, self.epoch, shard as u64]);
            rng.shuffle(&mut self.slot_order);
        }
    }
}

/// B and T must be positive (a zero would make every shard "long enough" and every batch empty) and a batch of
/// B*T+1 tokens must be indexable by an i32, as the kernels index it.
pub fn check_sizes(batch_size: usize, seq_len: usize) -> Result<()> {
    if batch_size == 0 {
        return Err(Error::config("--batch-size", "must be positive, found 0"));
    }
    if seq_len == 0 {
        return Err(Error::config("--seq-len", "must be positive, found 0"));
    }
    // A batch reads B*T+1 tokens and buffers B*T of them; refuse sizes whose product does not fit in memory indexing.
    if batch_size.checked_mul(seq_len).and_then(|n| n.checked_add(1)).is_none_or(|n| n > i32::MAX as usize) {
        return Err(Error::config(
            "--batch-size",
            format!("B={batch_size} times T={seq_len} tokens per batch is more than {} supported", i32::MAX),
        ));
    }
    Ok(())
}

/// The files `pattern` names: itself when it has no glob characters, else its matches sorted by name.
fn shard_paths(pattern: &str) -> Result<Vec<PathBuf>> {
    if !pattern.contains(['*', '?', '[']) {
        return Ok(vec![PathBuf::from(pattern)]);
    }
    let matches = glob::glob(pattern)
        .map_err(|e| Error::config("data pattern", format!("{pattern} is not a valid glob: {e}")))?;
    let mut paths = matches
        .map(|entry| {
            entry.map_err(|e| {
                let path = e.path().to_path_buf();
                Error::io("cannot list", path, e.into())
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if paths.is_empty() {
        return Err(Error::format(pattern, "files matching the data pattern", "at least one", "none"));
    }
    paths.sort();
    Ok(paths)
}

/// A generator whose stream depends on every value of `parts` (seed, epoch, shard): each part is folded into the
/// state and stirred by one SplitMix64 step, so nearby epochs or shards still get unrelated streams.
fn derive_rng(parts: &[u64]) -> Rng {
    let mut rng = Rng::new(0);
    for &part in parts {
        rng.state ^= part;
        rng.state = rng.next_u64();
    }
    rng
}
