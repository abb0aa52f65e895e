//! Text generation: next-token sampling with temperature and top-k, and a decoder that streams text as tokens
//! arrive even when a character's UTF-8 bytes are split across tokens (GPT-2's byte-level BPE does that).
//!
//! There is no key/value cache: each new token runs the model over the whole context (at most maxT tokens), which
//! is simple and fast enough for the small models trained here.

use crate::error::{Error, Result};
use crate::model::GPT2;
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;

/// How the next token is drawn from the model's logits.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SamplingOptions {
    /// Logits are divided by this before the softmax: below 1 sharper, above 1 flatter, 0 = always the most
    /// likely token (greedy).
    pub temperature: f32,
    /// Sample among the k most likely tokens only (0 = all).
    pub top_k: usize,
}

impl Default for SamplingOptions {
    /// llm.c's sampling: the full softmax at temperature 1.
    fn default() -> Self {
        SamplingOptions { temperature: 1.0, top_k: 0 }
    }
}

impl SamplingOptions {
    /// Refuses a temperature that is negative or not finite, naming `flag`.
    pub fn check(&self, flag: &str) -> Result<()> {
        if self.temperature.is_finite() && self.temperature >= 0.0 {
            Ok(())
        } else {
            Err(Error::config(flag, format!("expected a number >= 0 (0 = greedy), found {}", self.temperature)))
        }
    }
}

/// Draws one token id from `logits` (V,) with `opts`, using `probs` (V,) as scratch.
pub fn sample_token(logits: &[f32], opts: &SamplingOptions, probs: &mut [f32], rng: &mut Rng) -> u32 {
    let v = logits.len();
    let argmax = || logits.iter().enumerate().fold(0, |best, (i, &x)| if x > logits[best] { i } else { best });
    if opts.temperature == 0.0 || opts.top_k == 1 {
        return argmax() as u32;
    }
    // Tokens below the k-th largest logit get probability 0.
    let threshold = if opts.top_k > 0 && opts.top_k < v {
        probs.copy_from_slice(logits);
        let (_, kth, _) = probs.select_nth_unstable_by(opts.top_k - 1, |a, b| b.total_cmp(a));
        *kth
    } else {
        f32::NEG_INFINITY
    };
    let max = logits[argmax()];
    let inv_temperature = 1.0 / opts.temperature;
    let mut sum = 0.0f32;
    for (p, &x) in probs.iter_mut().zip(logits) {
        *p = if x >= threshold { ((x - max) * inv_temperature).exp() } else { 0.0 };
        sum += *p;
    }
    // Inverse-CDF sampling; the most likely token catches rounding at the top of the cumulative sum.
    let target = rng.next_f32() * sum;
    let mut cumulative = 0.0f32;
    probs
        .iter()
        .position(|&p| {
            cumulative += p;
            p > 0.0 && cumulative > target
        })
        .unwrap_or_else(argmax) as u32
}

/// Generates `count` tokens after `prompt` (at least one token), calling `on_token` with each as it is drawn.
/// The context is cut to the last `max_context` tokens (at most the model's maxT).
pub fn generate(
    model: &mut GPT2,
    prompt: &[u32],
    count: usize,
    max_context: usize,
    opts: &SamplingOptions,
    rng: &mut Rng,
    mut on_token: impl FnMut(u32),
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(Error::config("prompt", "needs at least one token to start from"));
    }
    let v = model.config.vocab_size;
    let max_context = max_context.min(model.config.max_seq_len).max(1);
    let mut tokens = prompt.to_vec();
    let mut logits = vec![0.0f32; v];
    let mut probs = vec![0.0f32; v];
    for _ in 0..count {
        let context = &tokens[tokens.len().saturating_sub(max_context)..];
        let t = context.len();
        model.forward(context, None, 1, t)?;
        model.read_logits_row(t - 1, &mut logits)?;
        let next = sample_token(&logits, opts, &mut probs, rng);
        on_token(next);
        tokens.push(next);
    }
    Ok(tokens[prompt.len()..].to_vec())
}

/// Turns a stream of token ids into text pieces that are always whole UTF-8 characters: bytes of a character
/// split across tokens wait for the rest.
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        StreamDecoder { tokenizer, pending: Vec::new() }
    }

    /// The text that `id` completes (possibly empty).
    pub fn push(&mut self, id: u32) -> String {
        match self.tokenizer.token_bytes(id) {
            Some(bytes) => self.pending.extend_from_slice(bytes),
            None => self.pending.extend_from_slice(format!("<|unk {id}|>").as_bytes()),
        }
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            // An error with no length is an incomplete character at the end: keep those bytes for later. Bytes
            // that can never become valid are replaced now.
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => {
                let text = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                return text;
            }
        };
        let text = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
        self.pending.drain(..valid);
        text
    }

    /// Whatever is left (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_top_1_pick_the_largest_logit() {
        let logits = [0.1, 2.0, -1.0, 1.9];
        let mut probs = [0.0; 4];
        let mut rng = Rng::new(1);
        for opts in [SamplingOptions { temperature: 0.0, top_k: 0 }, SamplingOptions { temperature: 1.0, top_k: 1 }] {
            assert_eq!(sample_token(&logits, &opts, &mut probs, &mut rng), 1);
        }
    }

    #[test]
    fn top_k_never_draws_outside_the_k_largest() {
        let logits = [3.0, 0.0, 2.9, 0.1, 2.8, -5.0];
        let mut probs = [0.0; 6];
        let mut rng = Rng::new(7);
        let opts = SamplingOptions { temperature: 5.0, top_k: 3 };
        let mut seen = [0usize; 6];
        for _ in 0..3000 {
            seen[sample_token(&logits, &opts, &mut probs, &mut rng) as usize] += 1;
        }
        assert_eq!((seen[1], seen[3], seen[5]), (0, 0, 0), "{seen:?}");
        assert!(seen[0] > 800 && seen[2] > 800 && seen[4] > 800, "a hot temperature spreads over all three: {seen:?}");
    }

    #[test]
    fn temperature_one_follows_the_softmax() {
        // softmax([ln 1, ln 3]) = [0.25, 0.75]
        let logits = [0.0f32, 3.0f32.ln()];
        let mut probs = [0.0; 2];
        let mut rng = Rng::new(3);
        let n = 20000;
        let ones =
            (0..n).filter(|_| sample_token(&logits, &SamplingOptions::default(), &mut probs, &mut rng) == 1).count();
        let share = ones as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.015, "drew token 1 {share} of the time, expected 0.75");
    }

    #[test]
    fn stream_decoder_holds_back_split_characters() {
        let tokenizer = Tokenizer::gpt2().unwrap();
        // "é" is two bytes; find tokens that are its halves on their own (GPT-2 has all 256 bytes as tokens).
        let byte_token = |b: u8| (0..256u32).find(|&id| tokenizer.token_bytes(id) == Some(&[b][..])).unwrap();
        let mut decoder = StreamDecoder::new(&tokenizer);
        assert_eq!(decoder.push(byte_token(0xC3)), "");
        assert_eq!(decoder.push(byte_token(0xA9)), "é");
        assert_eq!(decoder.push(byte_token(0xC3)), "");
        assert_eq!(decoder.finish(), "\u{FFFD}");
    }
}
