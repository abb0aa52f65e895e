//! Launchers for kernels/classifier.cu (mirrors src/cpu/classifier.rs): one block per (b, t) row.

use super::driver::{Arg, DeviceSlice, DeviceTokens, Driver};
use super::BLOCK_SIZE;
use crate::error::Result;

/// logits: (B, T, Vp), overwritten with dlogits when `dloss` is given; losses: (B, T); targets: (B, T) < V.
#[allow(clippy::too_many_arguments)]
pub fn fused_classifier(
    driver: &dyn Driver,
    logits: DeviceSlice,
    losses: DeviceSlice,
    targets: &DeviceTokens,
    b: usize,
    t: usize,
    v: usize,
    vp: usize,
    dloss: Option<f32>,
) -> Result<()> {
    let args = [
        logits.arg(),
        losses.arg(),
        targets.arg(),
        Arg::I32(b as i32),
        Arg::I32(t as i32),
        Arg::I32(v as i32),
        Arg::I32(vp as i32),
        Arg::F32(dloss.unwrap_or(0.0)),
        Arg::I32(dloss.is_some() as i32),
    ];
    losses.expect_f32("fused_classifier", "losses")?;
    driver.launch("fused_classifier", logits.dtype, ((b * t) as u32, 1, 1), (BLOCK_SIZE, 1, 1), 0, &args)
}
