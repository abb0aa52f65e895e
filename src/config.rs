//! GPT-2 hyper-parameters and the presets of the model ladder.
//!
//! The letters used across the project: maxT (max_seq_len), V (vocab_size), Vp (padded_vocab_size, V rounded up
//! to a multiple of 128 so matmuls stay aligned), L (num_layers), NH (num_heads), C (channels), HS = C / NH.

use crate::error::{Error, Result};

/// The shape of a GPT-2 model, the same six numbers an llm.c checkpoint header holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GPT2Config {
    /// maxT: the longest sequence the position table covers.
    pub max_seq_len: usize,
    /// V: tokens the tokenizer can produce.
    pub vocab_size: usize,
    /// Vp: rows of the token table; rows V..Vp are padding that never wins the softmax.
    pub padded_vocab_size: usize,
    /// L: transformer blocks.
    pub num_layers: usize,
    /// NH: attention heads.
    pub num_heads: usize,
    /// C: width of the residual stream.
    pub channels: usize,
}

/// GPT-2's tokenizer vocabulary and its padded size in llm.c's checkpoints.
pub const GPT2_VOCAB_SIZE: usize = 50257;
pub const GPT2_PADDED_VOCAB_SIZE: usize = 50304;

/// The named presets, a ladder from a laptop CPU to a GPU: `tiny` (5M) and `d4` (16M, the default) for a loss
/// curve in minutes on a CPU, `small` (30M), then llm.c's GPT-2 sizes by depth `dN`.
pub const PRESETS: &[(&str, usize, usize, usize)] = &[
    // (name, L, C, NH)
    ("tiny", 4, 96, 3),
    ("d4", 4, 256, 4),
    ("small", 6, 384, 6),
    ("d12", 12, 768, 12),
    ("d24", 24, 1024, 16),
    ("d36", 36, 1280, 20),
    ("d48", 48, 1600, 25),
];

/// Vp for a vocabulary of `vocab_size` tokens: rounded up to a multiple of 128, as llm.c pads 50257 to 50304
/// (which is a multiple of 128 too).
pub fn padded_vocab(vocab_size: usize) -> usize {
    vocab_size.div_ceil(128) * 128
}

impl GPT2Config {
    /// A preset by name (see `PRESETS`; `d6` is another name for `small`) with GPT-2's vocabulary and maxT = 1024.
    pub fn preset(name: &str) -> Option<Self> {
        let name = if name == "d6" { "small" } else { name };
        PRESETS.iter().find(|p| p.0 == name).map(|&(_, num_layers, channels, num_heads)| GPT2Config {
            max_seq_len: 1024,
            vocab_size: GPT2_VOCAB_SIZE,
            padded_vocab_size: GPT2_PADDED_VOCAB_SIZE,
            num_layers,
            num_heads,
            channels,
        })
    }

    /// HS: channels per head.
    pub fn head_size(&self) -> usize {
        self.channels / self.num_heads
    }

    /// Checks the relations the layers rely on; `source` names where the numbers came from (a file, a flag).
    pub fn validate(&self, source: &str) -> Result<()> {
        let positive = [
            ("max_seq_len", self.max_seq_len),
            ("vocab_size", self.vocab_size),
            ("padded_vocab_size", self.padded_vocab_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("channels", self.channels),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::config(source, format!("{name} must be positive, found 0")));
            }
        }
        if self.channels % self.num_heads != 0 {
            return Err(Error::config(
                source,
                format!("channels ({}) must be a multiple of num_heads ({})", self.channels, self.num_heads),
            ));
        }
        if self.padded_vocab_size < self.vocab_size {
            return Err(Error::config(
                source,
                format!(
                    "padded vocab size ({}) is smaller than the vocab size ({})",
                    self.padded_vocab_size, self.vocab_size
                ),
            ));
        }
        // Keep every buffer index inside i32 so the same layout serves CUDA kernels later.
        let params = self.num_parameters_wide();
        if params > i32::MAX as u128 {
            return Err(Error::config(
                source,
                format!("{params} parameters is more than this trainer supports ({})", i32::MAX),
            ));
        }
        Ok(())
    }

    /// The parameter count computed in u128, so a header with absurd sizes cannot overflow before it is refused.
    fn num_parameters_wide(&self) -> u128 {
        let (vp, c, l, t) =
            (self.padded_vocab_size as u128, self.channels as u128, self.num_layers as u128, self.max_seq_len as u128);
        // wte, wpe; per layer 12 C² weights (qkv 3, attproj 1, fc 4, fcproj 4) and 13 C biases/norms; lnf.
        (vp + t) * c + l * (12 * c * c + 13 * c) + 2 * c
    }

    /// Parameters in the checkpoint (padding rows of wte included, as llm.c counts them).
    pub fn num_parameters(&self) -> usize {
        crate::layout::ParamTensors::sizes(self).total()
    }

    /// Training FLOPs per token at sequence length `seq_len`: 6 per parameter (forward 2, backward 4) plus the
    /// attention scores and their weighted sum, which touch no parameter (6 * L * C * T, llm.c's estimate).
    pub fn flops_per_token(&self, seq_len: usize) -> f64 {
        6.0 * self.num_parameters() as f64 + 6.0 * (self.num_layers * self.channels * seq_len) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_124m_has_llm_c_parameter_count() {
        let config = GPT2Config::preset("d12").unwrap();
        assert_eq!(config.num_parameters(), 124_475_904);
    }

    #[test]
    fn padded_vocab_is_llm_c_padding() {
        assert_eq!(padded_vocab(50257), 50304);
        assert_eq!(padded_vocab(256), 256);
        assert_eq!(padded_vocab(257), 384);
    }

    #[test]
    fn wide_parameter_count_agrees_with_the_layout() {
        let odd = GPT2Config {
            max_seq_len: 24,
            vocab_size: 389,
            padded_vocab_size: 512,
            num_layers: 3,
            num_heads: 3,
            channels: 48,
        };
        let presets = PRESETS.iter().map(|p| GPT2Config::preset(p.0).unwrap());
        for config in presets.chain([odd]) {
            let total = crate::layout::ParamTensors::sizes(&config).total();
            assert_eq!(config.num_parameters_wide(), total as u128, "{config:?}");
        }
    }

    #[test]
    fn absurd_sizes_are_refused_without_overflow() {
        let mut config = GPT2Config::preset("d4").unwrap();
        config.num_layers = 1 << 30;
        config.channels = 1 << 30;
        config.num_heads = 1;
        let err = config.validate("header").unwrap_err().to_string();
        assert!(err.contains("more than this trainer supports"), "{err}");
    }

    #[test]
    fn rejects_channels_not_divisible_by_heads() {
        let mut config = GPT2Config::preset("d4").unwrap();
        config.num_heads = 3;
        let err = config.validate("--heads").unwrap_err().to_string();
        assert!(err.contains("multiple of num_heads"), "{err}");
    }
}
