//! Where every tensor sits in its ONE flat buffer.
//!
//! Parameters (and, with the same layout, gradients and AdamW's m and v) are one flat buffer in llm.c's checkpoint
//! order, so a checkpoint is one read. Activations are a second flat buffer sized for one (B, T), their statistics
//! a third (always f32, while a GPU may store the rest in bf16). Offsets and lengths count elements, whatever their
//! type. A tensor is a view at an offset: `ParamTensors::sizes(config)` gives the lengths, `tensors(buf)` turns
//! them into `Tensor` handles (buffer, offset, length) that the model hands to its backend, and `split`/`split_mut`
//! cut a host buffer into disjoint slices (safe Rust: the views borrow disjoint parts, so a layer can read one and
//! write another).

use crate::config::GPT2Config;
use std::ops::Range;

/// The flat buffers a model keeps on its backend (host memory on the CPU, device memory on a GPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Buf {
    /// Parameters, llm.c's checkpoint order.
    Params,
    /// Their gradients, same layout.
    Grads,
    /// AdamW's first moments, same layout.
    AdamM,
    /// AdamW's second moments, same layout.
    AdamV,
    /// Activations for one (B, T) (`ActTensors`).
    Acts,
    /// Gradients of the activations, same layout.
    GradActs,
    /// The activation statistics the backward pass and the loss need in f32 whatever the storage precision
    /// (`ActStats`): LayerNorm means and reciprocal deviations, attention's log-sum-exp, the per-position losses.
    Stats,
}

impl Buf {
    pub const COUNT: usize = 7;
    pub const ALL: [Buf; Buf::COUNT] =
        [Buf::Params, Buf::Grads, Buf::AdamM, Buf::AdamV, Buf::Acts, Buf::GradActs, Buf::Stats];

    /// Position in `ALL`, for backends that keep their buffers in an array.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A tensor as a backend sees it: `len` floats from element `offset` of one flat buffer. A handle, not a borrow,
/// so the model's layer sequence is the same code whether the floats live in host or in device memory; each
/// backend turns handles into slices or device pointers, checking that the ones a layer writes are disjoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tensor {
    pub buf: Buf,
    pub offset: usize,
    pub len: usize,
}

impl Tensor {
    /// Layer `l`'s part of a tensor stacked over layers, `per_layer` elements each.
    pub fn layer(self, l: usize, per_layer: usize) -> Tensor {
        assert!((l + 1) * per_layer <= self.len, "layer {l} of {per_layer} outside a tensor of {}", self.len);
        Tensor { buf: self.buf, offset: self.offset + l * per_layer, len: per_layer }
    }

    /// The first `len` elements.
    pub fn prefix(self, len: usize) -> Tensor {
        assert!(len <= self.len, "{len} elements of a tensor of {}", self.len);
        Tensor { len, ..self }
    }

    /// Element range in its buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// Declares a struct of named tensors, generic over what each field holds: a size (`usize`), an offset, or a slice
/// of a flat buffer. The field order is the buffer order.
macro_rules! tensor_struct {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name<S> {
            $($(#[$fmeta])* pub $field: S,)*
        }

        impl<S> $name<S> {
            /// Field names in buffer order (the names llm.c uses).
            pub const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];

            /// The fields in buffer order.
            pub fn into_vec(self) -> Vec<S> {
                vec![$(self.$field),*]
            }

            /// The fields in buffer order, without allocating.
            pub fn iter(&self) -> impl Iterator<Item = &S> {
                [$(&self.$field),*].into_iter()
            }
        }

        impl $name<usize> {
            /// Elements in the whole buffer.
            pub fn total(&self) -> usize {
                0 $(+ self.$field)*
            }

            /// Where each tensor starts in the buffer.
            pub fn offsets(&self) -> $name<usize> {
                let mut next = 0;
                $(let $field = next; next += self.$field;)*
                let _ = next;
                $name { $($field),* }
            }

            /// Each tensor's element range in the buffer, in buffer order.
            pub fn ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> {
                let mut start = 0;
                [$(self.$field),*].into_iter().map(move |len| {
                    start += len;
                    start - len..start
                })
            }

            /// Each tensor as a handle into the flat buffer `buf`, for a backend to resolve.
            pub fn tensors(&self, buf: Buf) -> $name<Tensor> {
                let mut offset = 0;
                $(let $field = Tensor { buf, offset, len: self.$field }; offset += self.$field;)*
                let _ = offset;
                $name { $($field),* }
            }

            /// Cuts `buf` (at least `total()` long) into one read-only view per tensor.
            pub fn split<'a, E>(&self, buf: &'a [E]) -> $name<&'a [E]> {
                assert!(buf.len() >= self.total(), "buffer of {} for a layout of {}", buf.len(), self.total());
                let rest = buf;
                $(let ($field, rest) = rest.split_at(self.$field);)*
                let _ = rest;
                $name { $($field),* }
            }

            /// Cuts `buf` (at least `total()` long) into one mutable view per tensor.
            pub fn split_mut<'a, E>(&self, buf: &'a mut [E]) -> $name<&'a mut [E]> {
                assert!(buf.len() >= self.total(), "buffer of {} for a layout of {}", buf.len(), self.total());
                let rest = buf;
                $(let ($field, rest) = rest.split_at_mut(self.$field);)*
                let _ = rest;
                $name { $($field),* }
            }
        }
    };
}

tensor_struct! {
    /// The 16 parameter tensors in llm.c's checkpoint order. Per-layer tensors are stacked over L.
    ParamTensors {
        /// (Vp, C) token embeddings, also the classifier weights (tied).
        wte,
        /// (maxT, C) position embeddings.
        wpe,
        /// (L, C)
        ln1w,
        /// (L, C)
        ln1b,
        /// (L, 3C, C)
        qkvw,
        /// (L, 3C)
        qkvb,
        /// (L, C, C)
        attprojw,
        /// (L, C)
        attprojb,
        /// (L, C)
        ln2w,
        /// (L, C)
        ln2b,
        /// (L, 4C, C)
        fcw,
        /// (L, 4C)
        fcb,
        /// (L, C, 4C)
        fcprojw,
        /// (L, C)
        fcprojb,
        /// (C)
        lnfw,
        /// (C)
        lnfb,
    }
}

impl ParamTensors<usize> {
    /// Element counts of every parameter tensor of `config`.
    pub fn sizes(config: &GPT2Config) -> Self {
        let (vp, c, l, max_t) = (config.padded_vocab_size, config.channels, config.num_layers, config.max_seq_len);
        ParamTensors {
            wte: vp * c,
            wpe: max_t * c,
            ln1w: l * c,
            ln1b: l * c,
            qkvw: l * 3 * c * c,
            qkvb: l * 3 * c,
            attprojw: l * c * c,
            attprojb: l * c,
            ln2w: l * c,
            ln2b: l * c,
            fcw: l * 4 * c * c,
            fcb: l * 4 * c,
            fcprojw: l * c * 4 * c,
            fcprojb: l * c,
            lnfw: c,
            lnfb: c,
        }
    }
}

impl<S> ParamTensors<S> {
    /// Whether the tensor at buffer position `index` is a weight matrix (wte, wpe, qkvw, attprojw, fcw, fcprojw):
    /// these get weight decay; biases and LayerNorm parameters do not.
    pub fn is_matrix(index: usize) -> bool {
        matches!(Self::NAMES[index], "wte" | "wpe" | "qkvw" | "attprojw" | "fcw" | "fcprojw")
    }
}

tensor_struct! {
    /// Everything the forward pass keeps for the backward pass, for one (B, T), in the storage precision (f32 on
    /// the CPU, bf16 or f32 on a GPU); the statistics are in `ActStats`. Per-layer tensors are stacked over L.
    ActTensors {
        /// (B, T, C) token + position embedding.
        encoded,
        /// (L, B, T, C)
        ln1,
        /// (L, B, T, 3C) queries, keys, values.
        qkv,
        /// (L, B, T, C) attention output before its projection.
        atty,
        /// (L, B, T, C)
        attproj,
        /// (L, B, T, C) residual after attention.
        residual2,
        /// (L, B, T, C)
        ln2,
        /// (L, B, T, 4C)
        fch,
        /// (L, B, T, 4C)
        fch_gelu,
        /// (L, B, T, C)
        fcproj,
        /// (L, B, T, C) residual after the MLP.
        residual3,
        /// (B, T, C)
        lnf,
        /// (B, T, Vp) logits; the backward pass overwrites them with dlogits.
        logits,
    }
}

tensor_struct! {
    /// The activation statistics, for one (B, T): always f32, because bf16's 8-bit mantissa would ruin them (an
    /// rstd or lse off by 0.4% scales whole rows; a loss read back in bf16 is not worth plotting). Per-layer
    /// tensors are stacked over L. Attention keeps one log-sum-exp per score row instead of the (T, T) matrices:
    /// the backward pass recomputes the scores, so memory grows with T, not T².
    ActStats {
        /// (L, B, T)
        ln1_mean,
        /// (L, B, T)
        ln1_rstd,
        /// (L, B, T, NH) log-sum-exp of each row of scaled scores.
        att_lse,
        /// (L, B, T)
        ln2_mean,
        /// (L, B, T)
        ln2_rstd,
        /// (B, T)
        lnf_mean,
        /// (B, T)
        lnf_rstd,
        /// (B, T) per-position cross-entropy.
        losses,
    }
}

impl ActStats<usize> {
    /// Element counts of every statistics tensor of `config` at batch `b` and sequence length `t`.
    pub fn sizes(config: &GPT2Config, b: usize, t: usize) -> Self {
        let (l, nh, bt) = (config.num_layers, config.num_heads, b * t);
        ActStats {
            ln1_mean: l * bt,
            ln1_rstd: l * bt,
            att_lse: l * bt * nh,
            ln2_mean: l * bt,
            ln2_rstd: l * bt,
            lnf_mean: bt,
            lnf_rstd: bt,
            losses: bt,
        }
    }
}

impl ActTensors<usize> {
    /// Element counts of the activation GRADIENTS at (B, T). The backward pass finishes with one block before it
    /// starts the next, so every per-layer gradient lives in a one-layer slot that each block reuses, except the
    /// residual stream's (`residual3`), which carries a block's input gradient to the block below. At GPT-2 124M,
    /// B=16, T=1024 this is 1.5 GB instead of 14 GB.
    pub fn grad_sizes(config: &GPT2Config, b: usize, t: usize) -> Self {
        let one_layer = GPT2Config { num_layers: 1, ..*config };
        let mut sizes = ActTensors::sizes(&one_layer, b, t, Recompute::Nothing);
        sizes.residual3 *= config.num_layers;
        // dlogits overwrite the logits in the activations (the fused classifier), so no slot is needed here:
        // (B, T, Vp) is the largest activation of a small model.
        sizes.logits = 0;
        sizes
    }
}

/// What the backward pass recomputes instead of keeping from the forward pass (llm.c's `-r` levels). A
/// recomputed tensor is stored for one layer at a time instead of all L, trading a cheap elementwise pass for
/// memory: at GPT-2 124M, B=16, T=1024, GELU's output is 2.4 GB of activations and as much again of their
/// gradients, the LayerNorm outputs half that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
pub enum Recompute {
    /// Keep everything (level 0).
    #[default]
    Nothing,
    /// Recompute GELU's output from its input (level 1).
    Gelu,
    /// Also recompute both LayerNorms' outputs from their inputs and saved mean and rstd (level 2).
    GeluAndLayerNorm,
}

impl Recompute {
    /// llm.c's level: 0, 1 or 2.
    pub fn from_level(level: u8) -> Option<Self> {
        [Recompute::Nothing, Recompute::Gelu, Recompute::GeluAndLayerNorm].get(level as usize).copied()
    }

    pub fn gelu(self) -> bool {
        self >= Recompute::Gelu
    }

    pub fn layernorm(self) -> bool {
        self >= Recompute::GeluAndLayerNorm
    }
}

impl ActTensors<usize> {
    /// Element counts of every activation tensor of `config` at batch `b` and sequence length `t`, with the
    /// tensors `recompute` names kept for one layer instead of L.
    pub fn sizes(config: &GPT2Config, b: usize, t: usize, recompute: Recompute) -> Self {
        let (vp, c, l) = (config.padded_vocab_size, config.channels, config.num_layers);
        let bt = b * t;
        let ln_layers = if recompute.layernorm() { 1 } else { l };
        let gelu_layers = if recompute.gelu() { 1 } else { l };
        ActTensors {
            encoded: bt * c,
            ln1: ln_layers * bt * c,
            qkv: l * bt * 3 * c,
            atty: l * bt * c,
            attproj: l * bt * c,
            residual2: l * bt * c,
            ln2: ln_layers * bt * c,
            fch: l * bt * 4 * c,
            fch_gelu: gelu_layers * bt * 4 * c,
            fcproj: l * bt * c,
            residual3: l * bt * c,
            lnf: bt * c,
            logits: bt * vp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_follow_checkpoint_order() {
        let config = GPT2Config::preset("d4").unwrap();
        let sizes = ParamTensors::sizes(&config);
        let offsets = sizes.offsets();
        assert_eq!(offsets.wte, 0);
        assert_eq!(offsets.wpe, sizes.wte);
        assert_eq!(offsets.lnfb + sizes.lnfb, sizes.total());
    }

    #[test]
    fn split_views_are_disjoint_and_cover_the_buffer() {
        let config = GPT2Config::preset("d4").unwrap();
        let sizes = ParamTensors::sizes(&config);
        let buf: Vec<u32> = (0..sizes.total() as u32).collect();
        let views = sizes.split(&buf);
        assert_eq!(views.wpe[0] as usize, sizes.wte);
        assert_eq!(*views.lnfb.last().unwrap() as usize, sizes.total() - 1);
    }

    #[test]
    fn tensor_handles_match_the_split_views() {
        let config = GPT2Config::preset("d4").unwrap();
        let sizes = ActTensors::sizes(&config, 2, 5, Recompute::Nothing);
        let buf: Vec<u32> = (0..sizes.total() as u32).collect();
        let views = sizes.split(&buf).into_vec();
        let handles = sizes.tensors(Buf::Acts).into_vec();
        for (view, handle) in views.iter().zip(&handles) {
            assert_eq!(handle.buf, Buf::Acts);
            assert_eq!(*view, &buf[handle.range()]);
        }
        let fch = sizes.tensors(Buf::Acts).fch;
        let per_layer = fch.len / config.num_layers;
        assert_eq!(fch.layer(1, per_layer).range(), fch.offset + per_layer..fch.offset + 2 * per_layer);
    }

    #[test]
    fn recompute_keeps_one_layer_of_what_it_recomputes() {
        let config = GPT2Config::preset("d12").unwrap();
        let all = ActTensors::sizes(&config, 16, 1024, Recompute::Nothing);
        let gelu = ActTensors::sizes(&config, 16, 1024, Recompute::Gelu);
        let both = ActTensors::sizes(&config, 16, 1024, Recompute::GeluAndLayerNorm);
        let (bt, c, l) = (16 * 1024, 768, 12);
        assert_eq!(all.total() - gelu.total(), (l - 1) * bt * 4 * c);
        assert_eq!(gelu.total() - both.total(), 2 * (l - 1) * bt * c);
        assert_eq!((both.fch, both.qkv), (all.fch, all.qkv), "inputs of the recomputed layers are kept");
        assert_eq!(Recompute::from_level(2), Some(Recompute::GeluAndLayerNorm));
        assert_eq!(Recompute::from_level(3), None);
    }

    #[test]
    fn activation_gradients_keep_one_layer_except_the_residual_stream() {
        let config = GPT2Config::preset("d12").unwrap();
        let acts = ActTensors::sizes(&config, 2, 8, Recompute::Nothing);
        let grads = ActTensors::grad_sizes(&config, 2, 8);
        assert_eq!(grads.residual3, acts.residual3);
        assert_eq!(grads.fch * 12, acts.fch);
        assert_eq!(grads.ln1 * 12, acts.ln1);
        assert_eq!(ActStats::sizes(&config, 2, 8).att_lse, 12 * 2 * 8 * 12);
    }

    #[test]
    fn only_weight_matrices_are_decayed() {
        let decayed: Vec<&str> =
            (0..16).filter(|&i| ParamTensors::<usize>::is_matrix(i)).map(|i| ParamTensors::<usize>::NAMES[i]).collect();
        assert_eq!(decayed, ["wte", "wpe", "qkvw", "attprojw", "fcw", "fcprojw"]);
    }
}
