//! The fp32 reference: one file per layer, mirroring `kernels/` name for name.
//!
//! Conventions (llm.c's): outputs first, then inputs, then sizes. Forward passes overwrite their outputs.
//! Backward passes ACCUMULATE (`+=`) into parameter gradients, which add up over micro-batches. Activation
//! gradients are overwritten by a layer that is their first or only writer (matmul's dinp, GELU's, both of the
//! residual's) and accumulated into by LayerNorm and attention: the residual stream's gradient gets a second
//! contribution from LayerNorm's backward, and attention sums dqkv over its query blocks. The model zeroes only
//! what is accumulated into first. Work is split over rows with rayon; each task writes a disjoint part of every
//! output, so the results do not depend on the number of threads.

pub mod adamw;
pub mod attention;
pub mod backend;
pub mod classifier;
pub mod encoder;
pub mod gelu;
pub mod global_norm;
pub mod layernorm;
pub mod matmul;
pub mod residual;
pub mod simd;

/// Elements per rayon task for element-wise loops: large enough that scheduling costs nothing next to the work.
pub(crate) const ELEMENTWISE_CHUNK: usize = 16 * 1024;

/// The first `len` floats of a reused scratch buffer, grown (zero-filled) when it is shorter: it allocates the
/// first time a larger shape comes along, never in the training steps after.
pub(crate) fn grown(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}
