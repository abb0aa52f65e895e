//! The token-shard loader: llm.c's batch order without shuffling, a deterministic permutation of every batch slot
//! with it, exact resume, and clear refusals of malformed shards.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use llmrs::data::{write_shard, DataLoader};

/// Tokens first, first + 1, ..., so every window's position is readable from its values.
fn counting(first: u16, n: usize) -> Vec<u16> {
    (0..n).map(|i| first + i as u16).collect()
}

fn shard(dir: &Path, name: &str, tokens: &[u16]) -> PathBuf {
    let path = dir.join(name);
    write_shard(&path, tokens).unwrap();
    path
}

/// (inputs, targets) of the next `n` batches.
fn take(loader: &mut DataLoader, n: usize) -> Vec<(Vec<u32>, Vec<u32>)> {
    (0..n)
        .map(|_| {
            let (x, y) = loader.next_batch();
            (x.to_vec(), y.to_vec())
        })
        .collect()
}

/// The first input token of each of the next `n` batches: identifies the window each batch came from.
fn starts(loader: &mut DataLoader, n: usize) -> Vec<u32> {
    (0..n).map(|_| loader.next_batch().0[0]).collect()
}

fn range(lo: u32, hi: u32) -> Vec<u32> {
    (lo..hi).collect()
}

/// A header of 256 int32 (magic, version, count) followed by `token_bytes` zero bytes.
fn raw_shard(dir: &Path, name: &str, magic: i32, version: i32, count: i32, token_bytes: usize) -> PathBuf {
    let mut header = [0i32; 256];
    header[..3].copy_from_slice(&[magic, version, count]);
    let mut bytes: Vec<u8> = header.iter().flat_map(|x| x.to_le_bytes()).collect();
    bytes.resize(bytes.len() + token_bytes, 0);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn open_error(pattern: &str, b: usize, t: usize) -> String {
    match DataLoader::open(pattern, b, t, None) {
        Ok(_) => panic!("opening {pattern} should fail"),
        Err(e) => e.to_string(),
    }
}

fn assert_mentions(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "message should mention {part:?}: {message}");
    }
}

#[test]
fn batches_are_consecutive_windows_with_targets_shifted_by_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = shard(dir.path(), "s.bin", &counting(0, 20));
    // B = 2, T = 3: windows of 7 tokens starting at 0, 6, 12.
    let mut loader = DataLoader::open(path.to_str().unwrap(), 2, 3, None).unwrap();
    let expected = vec![(range(0, 6), range(1, 7)), (range(6, 12), range(7, 13)), (range(12, 18), range(13, 19))];
    assert_eq!(take(&mut loader, 3), expected, "llm.c's unshuffled order");
}

#[test]
fn wraps_to_start_when_batch_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    // 10 tokens, B*T = 4: windows at 0 and 4; at 8 the window needs tokens up to 12 and does not fit.
    let path = shard(dir.path(), "s.bin", &counting(0, 10));
    let mut loader = DataLoader::open(path.to_str().unwrap(), 1, 4, None).unwrap();
    assert_eq!(starts(&mut loader, 4), [0, 4, 0, 4], "a single shard wraps to its start");
}

#[test]
fn glob_visits_shards_in_name_order_then_wraps() {
    let dir = tempfile::tempdir().unwrap();
    // Written out of order: the loader sorts by name, not by creation.
    shard(dir.path(), "train_001.bin", &counting(200, 9));
    shard(dir.path(), "train_000.bin", &counting(100, 9));
    shard(dir.path(), "val_000.bin", &counting(900, 9));
    let pattern = dir.path().join("train_*.bin");
    let mut loader = DataLoader::open(pattern.to_str().unwrap(), 2, 2, None).unwrap();
    // 9 tokens, B*T = 4: two batches per shard.
    assert_eq!(starts(&mut loader, 5), [100, 104, 200, 204, 100], "shard 000, then 001, then 000 again");
}

#[test]
fn counts_cover_all_shards() {
    let dir = tempfile::tempdir().unwrap();
    shard(dir.path(), "a_0.bin", &counting(0, 9));
    shard(dir.path(), "a_1.bin", &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 700]);
    let pattern = dir.path().join("a_*.bin");
    let loader = DataLoader::open(pattern.to_str().unwrap(), 1, 4, None).unwrap();
    assert_eq!(
        (loader.num_tokens(), loader.max_token(), loader.batches_per_epoch(), loader.shard_paths().len()),
        (23, 700, 2 + 3, 2),
        "tokens summed, max over every shard, (ntok - 1) / (B*T) batches per shard"
    );
}

#[test]
fn in_memory_tokens_load_like_a_shard() {
    let mut loader = DataLoader::from_tokens("builtin", counting(0, 9), 1, 4, None).unwrap();
    assert_eq!(take(&mut loader, 1), [(range(0, 4), range(1, 5))], "first window of the in-memory shard");
}

#[test]
fn batches_reuse_the_same_buffers() {
    let mut loader = DataLoader::from_tokens("builtin", counting(0, 100), 2, 4, None).unwrap();
    let first = loader.next_batch().0.as_ptr();
    let later: Vec<_> = (0..20).map(|_| loader.next_batch().0.as_ptr()).collect();
    assert!(later.iter().all(|&p| p == first), "next_batch must not allocate a new buffer");
}

/// Three shards of 8 batch slots each (B*T = 4), token values unique across shards.
fn shuffled_loader(dir: &Path, seed: u64) -> DataLoader {
    for s in 0..3u16 {
        let path = dir.join(format!("shard_{s}.bin"));
        if !path.exists() {
            write_shard(&path, &counting(1000 * s, 8 * 4 + 1)).unwrap();
        }
    }
    let pattern = dir.join("shard_*.bin");
    DataLoader::open(pattern.to_str().unwrap(), 2, 2, Some(seed)).unwrap()
}

/// Every (shard, slot) window start of the 3 x 8 layout above.
fn all_slots() -> BTreeSet<u32> {
    (0..3).flat_map(|s| (0..8).map(move |k| 1000 * s + 4 * k)).collect()
}

#[test]
fn shuffle_is_deterministic_for_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let a = starts(&mut shuffled_loader(dir.path(), 7), 60);
    let b = starts(&mut shuffled_loader(dir.path(), 7), 60);
    assert_eq!(a, b, "the same seed must give the same batches");
}

#[test]
fn shuffle_differs_between_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let a = starts(&mut shuffled_loader(dir.path(), 1), 24);
    let b = starts(&mut shuffled_loader(dir.path(), 2), 24);
    assert_ne!(a, b, "different seeds should give different orders");
}

#[test]
fn shuffle_is_not_the_sequential_order() {
    let dir = tempfile::tempdir().unwrap();
    let shuffled = starts(&mut shuffled_loader(dir.path(), 3), 24);
    let sorted: Vec<u32> = all_slots().into_iter().collect();
    assert_ne!(shuffled, sorted, "a shuffled epoch should not be the unshuffled order");
}

#[test]
fn shuffle_visits_every_batch_slot_exactly_once_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut loader = shuffled_loader(dir.path(), 42);
    let per_epoch = loader.batches_per_epoch();
    for epoch in 0..3 {
        let mut seen = starts(&mut loader, per_epoch);
        seen.sort_unstable();
        let expected: Vec<u32> = all_slots().into_iter().collect();
        assert_eq!(seen, expected, "epoch {epoch} must visit each of the 24 slots once");
    }
}

#[test]
fn each_epoch_gets_a_fresh_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut loader = shuffled_loader(dir.path(), 5);
    let first = starts(&mut loader, 24);
    let second = starts(&mut loader, 24);
    assert_ne!(first, second, "epoch 1 should not repeat epoch 0's order");
}

#[test]
fn restored_state_continues_identically() {
    let dir = tempfile::tempdir().unwrap();
    let mut original = shuffled_loader(dir.path(), 9);
    starts(&mut original, 29); // into the second epoch, mid-shard
    let state = original.state();
    let expected = take(&mut original, 30);

    let mut resumed = shuffled_loader(dir.path(), 9);
    resumed.restore(&state).unwrap();
    assert_eq!(take(&mut resumed, 30), expected, "a restored loader yields the same batches");
}

#[test]
fn reset_returns_to_the_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut loader = shuffled_loader(dir.path(), 11);
    let first = starts(&mut loader, 30);
    loader.reset();
    assert_eq!(starts(&mut loader, 30), first, "reset starts epoch 0 over");
}

#[test]
fn restore_refuses_a_state_from_another_seed() {
    let dir = tempfile::tempdir().unwrap();
    let state = shuffled_loader(dir.path(), 1).state();
    let err = shuffled_loader(dir.path(), 2).restore(&state).unwrap_err().to_string();
    assert_mentions(&err, &["shuffle seed", "Some(2)", "Some(1)"]);
}

#[test]
fn glob_without_matches_names_the_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = dir.path().join("nothing_*.bin");
    let pattern = pattern.to_str().unwrap();
    assert_mentions(&open_error(pattern, 1, 1), &[pattern, "expected at least one", "found none"]);
}

#[test]
fn missing_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.bin");
    assert_mentions(&open_error(path.to_str().unwrap(), 1, 1), &["absent.bin", "cannot open"]);
}

#[test]
fn wrong_magic_says_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = raw_shard(dir.path(), "s.bin", 20240326, 1, 10, 20);
    assert_mentions(
        &open_error(path.to_str().unwrap(), 1, 1),
        &["s.bin", "magic", "expected 20240520", "found 20240326"],
    );
}

#[test]
fn wrong_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = raw_shard(dir.path(), "s.bin", 20240520, 2, 10, 20);
    assert_mentions(&open_error(path.to_str().unwrap(), 1, 1), &["s.bin", "version", "expected 1", "found 2"]);
}

#[test]
fn header_claiming_more_tokens_than_the_file_holds_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = raw_shard(dir.path(), "s.bin", 20240520, 1, 10, 18);
    assert_mentions(
        &open_error(path.to_str().unwrap(), 1, 1),
        &["s.bin", "10 uint16 tokens", "expected 1044 bytes", "found 1042 bytes"],
    );
}

#[test]
fn trailing_bytes_after_the_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = raw_shard(dir.path(), "s.bin", 20240520, 1, 10, 22);
    assert_mentions(&open_error(path.to_str().unwrap(), 1, 1), &["s.bin", "expected 1044 bytes", "found 1046 bytes"]);
}

#[test]
fn shard_shorter_than_one_batch_says_how_many_tokens_it_needs() {
    let dir = tempfile::tempdir().unwrap();
    let path = shard(dir.path(), "small.bin", &counting(0, 8));
    // B = 2, T = 4 needs 2 * 4 + 1 = 9 tokens.
    assert_mentions(
        &open_error(path.to_str().unwrap(), 2, 4),
        &["small.bin", "expected at least 9", "found 8", "--batch-size", "--seq-len"],
    );
}

#[test]
fn zero_batch_size_or_sequence_length_is_refused() {
    let tokens = counting(0, 10);
    let messages: Vec<String> = [(0, 4), (1, 0)]
        .iter()
        .map(|&(b, t)| match DataLoader::from_tokens("builtin", tokens.clone(), b, t, None) {
            Ok(_) => panic!("B = {b}, T = {t} should be refused"),
            Err(e) => e.to_string(),
        })
        .collect();
    assert_mentions(&messages.join("\n"), &["--batch-size", "--seq-len", "must be positive"]);
}
