//! Launchers for kernels/adamw.cu (mirrors src/cpu/adamw.rs). One thread per group of parameters (4 floats or 8
//! bf16).

use super::driver::{Arg, DType, DeviceSlice, Driver};
use super::{blocks_for, group, BLOCK, BLOCK_SIZE};
use crate::cpu::adamw::AdamWStep;
use crate::error::{Error, Result};

/// params, m, v updated in place; grads read. All (N). The bias corrections are the CPU's own
/// (`AdamWStep::bias_corrections`), passed to the kernel as floats.
///
/// With bf16 params, `master` (f32, the same layout) holds the weights the update is applied to, and the bf16
/// params are written from it by stochastic rounding with random bits from `seed` (one per tensor and step); with
/// f32 params there is no master (None) and the params are updated in place.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(
    driver: &dyn Driver,
    params: DeviceSlice,
    master: Option<DeviceSlice>,
    grads: DeviceSlice,
    m: DeviceSlice,
    v: DeviceSlice,
    hp: &AdamWStep,
    seed: u32,
) -> Result<()> {
    let kernel = "adamw_update";
    let n = params.len;
    let floatx = DeviceSlice::common_dtype(kernel, &[params, grads])?;
    m.expect_f32(kernel, "m")?;
    v.expect_f32(kernel, "v")?;
    let master_arg = match (floatx, master) {
        (DType::F32, None) => Arg::Ptr(0),
        (DType::Bf16, Some(master)) => {
            master.expect_f32(kernel, "master weights")?;
            master.arg()
        }
        (DType::F32, Some(_)) => return Err(Error::config(kernel, "f32 parameters are their own master weights")),
        (DType::Bf16, None) => return Err(Error::config(kernel, "bf16 parameters need f32 master weights")),
    };
    let (bias_correction1, bias_correction2) = hp.bias_corrections();
    let args = [
        params.arg(),
        master_arg,
        grads.arg(),
        m.arg(),
        v.arg(),
        Arg::I32(n as i32),
        Arg::F32(hp.lr),
        Arg::F32(hp.beta1),
        Arg::F32(hp.beta2),
        Arg::F32(hp.eps),
        Arg::F32(hp.weight_decay),
        Arg::F32(hp.grad_scale),
        Arg::F32(bias_correction1),
        Arg::F32(bias_correction2),
        Arg::I32(seed as i32),
    ];
    let grid = (blocks_for(n, group(floatx) * BLOCK), 1, 1);
    driver.launch(kernel, floatx, grid, (BLOCK_SIZE, 1, 1), 0, &args)
}
