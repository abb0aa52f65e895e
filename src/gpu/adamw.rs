//! Launchers for kernels/adamw.cu (mirrors src/cpu/adamw.rs). One thread per group of 4 parameters.

use super::driver::{Arg, DeviceSlice, Driver};
use super::{blocks_for, BLOCK, BLOCK_SIZE, F128_FLOATS};
use crate::cpu::adamw::AdamWStep;
use crate::error::Result;

/// params, m, v updated in place; grads read. All (N). The bias corrections are the CPU's own
/// (`AdamWStep::bias_corrections`), passed to the kernel as floats.
pub fn adamw_update(
    driver: &dyn Driver,
    params: DeviceSlice,
    grads: DeviceSlice,
    m: DeviceSlice,
    v: DeviceSlice,
    hp: &AdamWStep,
) -> Result<()> {
    let n = params.len;
    let (bias_correction1, bias_correction2) = hp.bias_corrections();
    let args = [
        params.arg(),
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
    ];
    driver.launch("adamw_update", (blocks_for(n, F128_FLOATS * BLOCK), 1, 1), (BLOCK_SIZE, 1, 1), 0, &args)
}
