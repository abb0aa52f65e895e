//! What the bench targets share. Each target is its own crate, so they include this file with `mod common;`.

use criterion::Bencher;
use std::time::{Duration, Instant};

/// The calls a benchmark made over all of criterion's samples and the time they took, for the mean time per call
/// that the benches print in their own tables (criterion reports its estimates but does not return them).
#[derive(Default)]
pub struct CallTimer {
    calls: u64,
    elapsed: Duration,
}

impl CallTimer {
    /// Criterion's `iter_custom` on `f`: times each sample's calls together and counts them here too.
    pub fn iter(&mut self, bencher: &mut Bencher, mut f: impl FnMut()) {
        bencher.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            let elapsed = start.elapsed();
            self.calls += iters;
            self.elapsed += elapsed;
            elapsed
        })
    }

    /// Mean seconds per call; None when nothing ran (the benchmark was filtered out).
    pub fn mean_seconds(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.elapsed.as_secs_f64() / self.calls as f64)
    }
}
