//! A small seeded random number generator, so runs are reproducible from a seed with no extra dependency:
//! SplitMix64 for the stream, Box-Muller for normals. Its whole state is one u64, which a checkpoint can store.

/// SplitMix64 (Steele, Lea, Flood 2014): passes BigCrush, one u64 of state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    pub state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 24 bits of precision (every value exactly representable in f32).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform integer in [0, n), n > 0 (Lemire's multiply-shift; the bias is below 2^-32 for any usize n here).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Fills `out` with samples of N(0, std²) by the Box-Muller transform.
    pub fn fill_normal(&mut self, out: &mut [f32], std: f32) {
        for pair in out.chunks_mut(2) {
            // 1 - u keeps the logarithm's argument in (0, 1].
            let u1 = 1.0 - (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let radius = (-2.0 * u1.ln()).sqrt() * std as f64;
            let angle = 2.0 * std::f64::consts::PI * u2;
            pair[0] = (radius * angle.cos()) as f32;
            if let Some(second) = pair.get_mut(1) {
                *second = (radius * angle.sin()) as f32;
            }
        }
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_samples_have_the_requested_moments() {
        let mut rng = Rng::new(7);
        let mut xs = vec![0.0f32; 100_001];
        rng.fill_normal(&mut xs, 0.02);
        let n = xs.len() as f64;
        let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 1e-3 * 0.02 * 10.0, "mean {mean}");
        assert!((var.sqrt() - 0.02).abs() < 0.02 * 0.01, "std {}", var.sqrt());
    }

    #[test]
    fn below_stays_in_range_and_hits_every_value() {
        let mut rng = Rng::new(1);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            seen[rng.below(7)] = true;
        }
        assert!(seen.iter().all(|&s| s), "{seen:?}");
    }
}
