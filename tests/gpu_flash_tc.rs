//! The tensor-core flash attention (kernels/flash_attention_tc.cu, bf16 tensors only) against the fp32 CPU reference
//! (src/cpu/attention.rs). As in tests/gpu_bf16.rs, inputs are rounded to bf16 first and the CPU computes on the same
//! rounded values, so what is measured is the kernels' own error.
//!
//! Tolerances, with tests/gpu_bf16.rs's bf16 tolerance written tol(k) = (|cpu| + rms(cpu)) / k:
//! - lse is f32, from exact products of bf16 values summed in f32: the fp32 tests' reduction tolerance.
//! - out: tol(64), as every bf16 kernel. p enters P V rounded to bf16 (relative 2^-9), which the SIMT kernel
//!   (kernels/flash_attention.cu) does not do, but a row's output is a convex combination and those errors average
//!   out: measured at most 0.42 tol(64) over 10 seeds at the shapes below (the SIMT kernel: 0.19).
//! - dqkv: tol(32) against the reference. The backward pass rounds p (for dV) and ds = p (dp - D) (for dQ and dK) to
//!   bf16 as they enter a product, as flash-attention-2 does in bf16; a gradient that sums large terms of both signs
//!   (sharp softmax rows) then errs by a few of its own ulps. Measured over 10 seeds: up to 1.23 tol(64) at std 3
//!   inputs (the SIMT kernel: 0.21). That this is those two roundings and nothing else is checked against a CPU
//!   model that rounds p and ds the same way ([`rounded_backward`]), at tol(64): measured at most 0.22 tol(64).
//!
//! Like tests/gpu_bf16.rs, these run under the emulator (`--features emu`), are ignored in a `cuda`-only build unless
//! run with `--ignored` on a GPU (dev/scripts/gpu_check.sh), and are reported ignored without either.

#[macro_use]
mod common;
use common::bf16::{randn16, rms, round_bf16};
use common::driver;
use llmrs::cpu;
use llmrs::gpu::driver::{DType, DeviceBuffer, DeviceSlice, Driver};
use llmrs::gpu::flash_attention_tc as tc;
use llmrs::rng::Rng;
use std::rc::Rc;

/// f32 results computed from bf16 inputs, in another order than the CPU's.
const F32_ABS: f32 = 2e-5;
const F32_REL: f32 = 1e-4;

/// (B, T, C, NH, std of q, k, v): every head size the kernels take (HS = 16, 32, 48, 64), T = 1, T inside one tile
/// (13, the trainer test's shape), exactly one tile (64), past a tile (70), several tiles and not a multiple of either
/// tile size (130, 200), several heads and batches. std 2 gives sharper softmax rows.
const SHAPES: &[(usize, usize, usize, usize, f32)] = &[
    (1, 1, 64, 1, 1.0),
    (3, 13, 48, 3, 1.0),
    (1, 64, 64, 2, 1.0),
    (2, 70, 128, 2, 1.0),
    (2, 33, 48, 1, 2.0),
    (1, 130, 64, 4, 2.0),
    (1, 200, 96, 3, 1.0),
];

/// `data` as bf16 on the device, starting `offset` elements into its allocation (an offset that is not a multiple of
/// 8 puts rows off 16-byte boundaries, as a tensor inside a flat buffer may be). Returns the allocation and the view.
fn bf16_at(d: &Rc<dyn Driver>, data: &[f32], offset: usize) -> (DeviceBuffer, DeviceSlice) {
    let mut padded = vec![f32::NAN; offset];
    padded.extend_from_slice(data);
    let buf = DeviceBuffer::from_host_as(d, &padded, DType::Bf16).unwrap();
    let view = buf.at(offset, data.len());
    (buf, view)
}

/// A device tensor widened to f32.
fn read(d: &Rc<dyn Driver>, slice: DeviceSlice) -> Vec<f32> {
    let mut out = vec![0.0; slice.len];
    slice.read_into(&**d, &mut out).unwrap();
    out
}

/// A bf16 result within tol(k) = (|cpu| + rms(cpu)) / k of the CPU, every element (NaN fails).
fn assert_bf16_close(what: &str, got: &[f32], cpu: &[f32], k: f32) {
    assert_eq!(got.len(), cpu.len(), "{what}: length");
    let scale = rms(cpu);
    let max_err = got.iter().zip(cpu).map(|(g, c)| (g - c).abs()).fold(0.0f32, f32::max);
    let worst = got.iter().zip(cpu).map(|(g, c)| (g - c).abs() / ((c.abs() + scale) / k)).fold(0.0f32, f32::max);
    eprintln!("max |gpu - cpu| {what} (bf16, rms {scale:.3}): {max_err:e} ({worst:.2} of tol({k}) at worst)");
    for (i, (g, c)) in got.iter().zip(cpu).enumerate() {
        let tol = (c.abs() + scale) / k;
        assert!((g - c).abs() <= tol, "{what}[{i}]: gpu {g} vs cpu {c} (tolerance {tol})");
    }
}

/// An f32 result within the fp32 tests' reduction tolerance.
fn assert_f32_close(what: &str, got: &[f32], cpu: &[f32]) {
    assert_eq!(got.len(), cpu.len(), "{what}: length");
    let max_err = got.iter().zip(cpu).map(|(g, c)| (g - c).abs()).fold(0.0f32, f32::max);
    eprintln!("max |gpu - cpu| {what} (f32 from bf16 inputs): {max_err:e}");
    for (i, (g, c)) in got.iter().zip(cpu).enumerate() {
        assert!((g - c).abs() <= F32_ABS + F32_REL * c.abs(), "{what}[{i}]: gpu {g} vs cpu {c}");
    }
}

/// The CPU's out, lse and dqkv (accumulated onto `dqkv0`) for bf16-rounded inputs, and dqkv from
/// [`rounded_backward`]. The backward pass reads the stored (rounded) output, so the CPU reference reads the same.
struct Reference {
    out: Vec<f32>,
    lse: Vec<f32>,
    out16: Vec<f32>,
    dqkv: Vec<f32>,
    dqkv_rounded: Vec<f32>,
}

#[allow(clippy::too_many_arguments)]
fn reference(qkv: &[f32], dout: &[f32], dqkv0: &[f32], b: usize, t: usize, c: usize, nh: usize) -> Reference {
    let (mut out, mut lse) = (vec![0.0; b * t * c], vec![0.0; b * t * nh]);
    cpu::attention::attention_forward(&mut out, &mut lse, qkv, b, t, c, nh);
    let out16: Vec<f32> = out.iter().map(|&x| round_bf16(x)).collect();
    let mut dqkv = dqkv0.to_vec();
    cpu::attention::attention_backward(&mut dqkv, dout, qkv, &out16, &lse, b, t, c, nh);
    let mut dqkv_rounded = dqkv0.to_vec();
    rounded_backward(&mut dqkv_rounded, dout, qkv, &out16, &lse, b, t, c, nh);
    Reference { out, lse, out16, dqkv, dqkv_rounded }
}

/// src/cpu/attention.rs's backward pass with the two roundings of the tensor-core kernel: p and ds rounded to bf16
/// before they multiply dout (dv), k (dq) and q (dk). Everything else as the reference: f32 sums, D = dout . out.
#[allow(clippy::too_many_arguments)]
fn rounded_backward(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    out: &[f32],
    lse: &[f32],
    b: usize,
    t: usize,
    c: usize,
    nh: usize,
) {
    let hs = c / nh;
    let scale = 1.0 / (hs as f32).sqrt();
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f32>();
    for bi in 0..b {
        let row = |pos: usize| (bi * t + pos) * 3 * c; // where position pos's q, k, v start (k at +C, v at +2C)
        for h in 0..nh {
            for tq in 0..t {
                let q = qkv[row(tq) + h * hs..][..hs].to_vec();
                let g = &dout[(bi * t + tq) * c + h * hs..][..hs];
                let d = dot(g, &out[(bi * t + tq) * c + h * hs..][..hs]);
                for tk in 0..=tq {
                    let k = qkv[row(tk) + c + h * hs..][..hs].to_vec();
                    let v = &qkv[row(tk) + 2 * c + h * hs..][..hs];
                    let p = (dot(&q, &k) * scale - lse[(bi * t + tq) * nh + h]).exp();
                    let ds = round_bf16(p * (dot(g, v) - d) * scale);
                    let p = round_bf16(p);
                    for i in 0..hs {
                        dqkv[row(tq) + h * hs + i] += ds * k[i];
                        dqkv[row(tk) + c + h * hs + i] += ds * q[i];
                        dqkv[row(tk) + 2 * c + h * hs + i] += p * g[i];
                    }
                }
            }
        }
    }
}

/// Runs forward and backward at every shape with the tensors `offset` elements into their allocations.
fn forward_and_backward_match_cpu(offset: usize, seed: u64) {
    let d = driver();
    let mut rng = Rng::new(seed);
    for &(b, t, c, nh, std) in SHAPES {
        let shape = format!("B={b} T={t} C={c} NH={nh} HS={} offset {offset}", c / nh);
        assert!(tc::supports(b, t, c, nh), "{shape}");
        let qkv = randn16(&mut rng, b * t * 3 * c, std);
        let dout = randn16(&mut rng, b * t * c, 1.0);
        let dqkv0 = randn16(&mut rng, b * t * 3 * c, 1.0);
        let cpu = reference(&qkv, &dout, &dqkv0, b, t, c, nh);

        let (_out_buf, g_out) = bf16_at(&d, &vec![f32::NAN; b * t * c], offset);
        let g_lse = DeviceBuffer::typed(&d, b * t * nh, DType::F32).unwrap();
        let (_qkv_buf, g_qkv) = bf16_at(&d, &qkv, offset);
        tc::flash_attention_tc_forward(&*d, g_out, g_lse.slice(), g_qkv, b, t, c, nh).unwrap();
        assert_bf16_close(&format!("tc out {shape}"), &read(&d, g_out), &cpu.out, 64.0);
        assert_f32_close(&format!("tc lse {shape}"), &g_lse.read().unwrap(), &cpu.lse);

        let (_dqkv_buf, g_dqkv) = bf16_at(&d, &dqkv0, offset);
        let (_dout_buf, g_dout) = bf16_at(&d, &dout, offset);
        let (_out16_buf, g_out16) = bf16_at(&d, &cpu.out16, offset);
        let g_lse = DeviceBuffer::from_host(&d, &cpu.lse).unwrap();
        tc::flash_attention_tc_backward(&*d, g_dqkv, g_dout, g_qkv, g_out16, g_lse.slice(), b, t, c, nh).unwrap();
        let dqkv = read(&d, g_dqkv);
        assert_bf16_close(&format!("tc dqkv {shape}"), &dqkv, &cpu.dqkv, 32.0);
        assert_bf16_close(&format!("tc dqkv vs p, ds rounded {shape}"), &dqkv, &cpu.dqkv_rounded, 64.0);
    }
}

gpu_test! {
    fn tc_flash_attention_forward_and_backward_match_cpu() {
        forward_and_backward_match_cpu(0, 31);
    }
}

gpu_test! {
    /// Views 3 elements into their allocations: rows start off 16-byte boundaries, so tiles are loaded element by
    /// element instead of 16 bytes at a time.
    fn tc_flash_attention_matches_cpu_on_tensors_off_16_byte_boundaries() {
        forward_and_backward_match_cpu(3, 32);
    }
}

gpu_test! {
    /// No atomics and a fixed order of every sum: two runs give the same bits.
    fn tc_flash_attention_is_deterministic() {
        let d = driver();
        let mut rng = Rng::new(33);
        let (b, t, c, nh) = (2, 100, 128, 2);
        let qkv = randn16(&mut rng, b * t * 3 * c, 1.0);
        let dout = randn16(&mut rng, b * t * c, 1.0);
        let run = || {
            let (_q, g_qkv) = bf16_at(&d, &qkv, 0);
            let (_o, g_out) = bf16_at(&d, &vec![0.0; b * t * c], 0);
            let g_lse = DeviceBuffer::typed(&d, b * t * nh, DType::F32).unwrap();
            tc::flash_attention_tc_forward(&*d, g_out, g_lse.slice(), g_qkv, b, t, c, nh).unwrap();
            let (_dq, g_dqkv) = bf16_at(&d, &vec![0.0; b * t * 3 * c], 0);
            let (_g, g_dout) = bf16_at(&d, &dout, 0);
            tc::flash_attention_tc_backward(&*d, g_dqkv, g_dout, g_qkv, g_out, g_lse.slice(), b, t, c, nh).unwrap();
            (read(&d, g_out), g_lse.read().unwrap(), read(&d, g_dqkv))
        };
        let (first, second) = (run(), run());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(&first.0) == bits(&second.0), "out differs between two runs");
        assert!(bits(&first.1) == bits(&second.1), "lse differs between two runs");
        assert!(bits(&first.2) == bits(&second.2), "dqkv differs between two runs");
    }
}

gpu_test! {
    /// Tensor cores take no f32 operands: the launchers refuse f32 tensors (and mixed ones) before launching, and
    /// shapes the kernels cannot do, with the reason.
    fn tc_flash_attention_refuses_f32_tensors_and_unsupported_heads() {
        let d = driver();
        let (b, t, c, nh) = (1, 8, 64, 2);
        let f32s = |n: usize| DeviceBuffer::from_host(&d, &vec![0.0; n]).unwrap();
        let bf16s = |n: usize| DeviceBuffer::from_host_as(&d, &vec![0.0; n], DType::Bf16).unwrap();
        let (out, lse, qkv) = (f32s(b * t * c), f32s(b * t * nh), f32s(b * t * 3 * c));
        let err = tc::flash_attention_tc_forward(&*d, out.slice(), lse.slice(), qkv.slice(), b, t, c, nh)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bf16 only") && err.contains("f32"), "{err}");
        let (dqkv, dout) = (f32s(b * t * 3 * c), f32s(b * t * c));
        let err = tc::flash_attention_tc_backward(
            &*d, dqkv.slice(), dout.slice(), qkv.slice(), out.slice(), lse.slice(), b, t, c, nh,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bf16 only"), "{err}");
        let out16 = bf16s(b * t * c);
        let err = tc::flash_attention_tc_forward(&*d, out16.slice(), lse.slice(), qkv.slice(), b, t, c, nh)
            .unwrap_err()
            .to_string();
        assert!(err.contains("must share a type"), "{err}");
        let (out16, qkv16) = (bf16s(b * t * 40), bf16s(b * t * 3 * 40));
        let err = tc::flash_attention_tc_forward(&*d, out16.slice(), lse.slice(), qkv16.slice(), b, t, 40, 5)
            .unwrap_err()
            .to_string();
        assert!(err.contains("HS = C / NH = 40 / 5 = 8") && err.contains("multiple of 16"), "{err}");
    }
}

/// The fp32 build of kernels/flash_attention_tc.cu has no tensor-core path; reached past the launcher, it reports
/// the misuse instead of computing garbage. Emulator only: on a GPU the trap would end the process's CUDA context.
#[cfg(feature = "emu")]
#[test]
fn the_emulator_reports_a_launch_of_the_fp32_tc_kernels() {
    use llmrs::gpu::driver::Arg;
    let d = driver();
    let (b, t, c, nh) = (1, 8, 64, 2);
    let (out, lse, qkv) = (
        DeviceBuffer::new(&d, b * t * c).unwrap(),
        DeviceBuffer::new(&d, b * t * nh).unwrap(),
        DeviceBuffer::from_host(&d, &vec![0.0; b * t * 3 * c]).unwrap(),
    );
    let sizes = [b, t, c, nh].map(|n| Arg::I32(n as i32));
    let args = [[out.slice().arg(), lse.slice().arg(), qkv.slice().arg()].as_slice(), &sizes].concat();
    let shared = tc::forward_shared_bytes(c / nh) as u32;
    let grid = (1, (b * nh) as u32, 1);
    let err =
        d.launch("flash_attention_tc_forward", DType::F32, grid, (128, 1, 1), shared, &args).unwrap_err().to_string();
    assert!(err.contains("flash_attention_tc_forward exists only for bf16 tensors"), "{err}");
}
