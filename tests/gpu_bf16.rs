//! The bf16 build of every CUDA kernel against the fp32 CPU reference. Inputs are rounded to bf16 first and the CPU
//! computes on the same rounded values, so what is measured is the kernels' own error: float arithmetic on widened
//! values, then one rounding of each stored bf16 result (8 significant bits: half an ulp is at most 2^-8 of the
//! value). Tolerance, stated once: |gpu - cpu| <= (|cpu| + rms(cpu)) / 64, i.e. about two ulps of the element plus
//! two of the tensor's typical size, which covers a rounded output whose inputs were rounded outputs of the same
//! kernel (the fused residual's sum, the classifier's logits). Statistics kept in f32 (LayerNorm mean and rstd,
//! attention's lse, losses, the global norm, the master weights) are held to the fp32 tests' tolerances.
//!
//! Like tests/gpu_kernels.rs, these run under the emulator (`--features emu`), are ignored in a `cuda`-only build
//! unless run with `--ignored` on a GPU (dev/scripts/gpu_check.sh), and are reported ignored without either.

#[macro_use]
mod common;
use common::bf16::{randn16, rms, round_bf16};
use common::driver;
use llmrs::cpu;
use llmrs::cpu::adamw::AdamWStep;
use llmrs::gpu;
use llmrs::gpu::driver::{DType, DeviceBuffer, DeviceTokens, Driver};
use llmrs::rng::Rng;
use std::rc::Rc;

/// f32 results computed from bf16 inputs, in another order than the CPU's.
const F32_ABS: f32 = 2e-5;
const F32_REL: f32 = 1e-4;

/// (B, T, C, NH): C = 48 and 40 are whole 128-bit groups of 8 bf16 per row; C = 45 puts rows off 16-byte
/// boundaries and ends each in a partial group.
const SHAPES: &[(usize, usize, usize, usize)] = &[(3, 13, 48, 3), (2, 33, 40, 5), (2, 5, 45, 3)];

fn tokens(rng: &mut Rng, n: usize, below: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(below) as u32).collect()
}

fn bf16(d: &Rc<dyn Driver>, data: &[f32]) -> DeviceBuffer {
    DeviceBuffer::from_host_as(d, data, DType::Bf16).unwrap()
}

fn f32s(d: &Rc<dyn Driver>, data: &[f32]) -> DeviceBuffer {
    DeviceBuffer::from_host(d, data).unwrap()
}

/// A fresh output (NaN under the emulator) of `n` elements of `dtype`.
fn fresh(d: &Rc<dyn Driver>, n: usize, dtype: DType) -> DeviceBuffer {
    DeviceBuffer::typed(d, n, dtype).unwrap()
}

fn upload_tokens(d: &Rc<dyn Driver>, data: &[u32]) -> DeviceTokens {
    let buf = DeviceTokens::new(d, data.len()).unwrap();
    buf.write(data).unwrap();
    buf
}

/// A bf16 result within the stated tolerance of the CPU, every element (NaN fails).
fn assert_bf16_close(what: &str, gpu: &DeviceBuffer, cpu: &[f32]) {
    assert_eq!(gpu.dtype(), DType::Bf16, "{what}: a bf16 tensor");
    let got = gpu.read().unwrap();
    assert_eq!(got.len(), cpu.len(), "{what}: length");
    let scale = rms(cpu);
    let max_err = got.iter().zip(cpu).map(|(g, c)| (g - c).abs()).fold(0.0f32, f32::max);
    eprintln!("max |gpu - cpu| {what} (bf16, rms {scale:.3}): {max_err:e}");
    for (i, (g, c)) in got.iter().zip(cpu).enumerate() {
        let tol = (c.abs() + scale) / 64.0;
        assert!((g - c).abs() <= tol, "{what}[{i}]: gpu {g} vs cpu {c} (tolerance {tol})");
    }
}

/// An f32 result within the fp32 tests' reduction tolerance.
fn assert_f32_close(what: &str, gpu: &DeviceBuffer, cpu: &[f32]) {
    assert_eq!(gpu.dtype(), DType::F32, "{what}: an f32 tensor");
    let got = gpu.read().unwrap();
    let max_err = got.iter().zip(cpu).map(|(g, c)| (g - c).abs()).fold(0.0f32, f32::max);
    eprintln!("max |gpu - cpu| {what} (f32 from bf16 inputs): {max_err:e}");
    for (i, (g, c)) in got.iter().zip(cpu).enumerate() {
        assert!((g - c).abs() <= F32_ABS + F32_REL * c.abs(), "{what}[{i}]: gpu {g} vs cpu {c}");
    }
}

gpu_test! {
    fn bf16_encoder_forward_and_backward_match_cpu() {
        let d = driver();
        let mut rng = Rng::new(21);
        for &(b, t, c, _) in SHAPES {
            let (vp, max_t) = (7, t + 2); // few tokens, so rows of dwte collect many contributions
            let inp = tokens(&mut rng, b * t, vp);
            let (wte, wpe) = (randn16(&mut rng, vp * c, 1.0), randn16(&mut rng, max_t * c, 1.0));
            let mut out = vec![0.0; b * t * c];
            cpu::encoder::encoder_forward(&mut out, &inp, &wte, &wpe, b, t, c);
            let (g_out, g_inp) = (fresh(&d, b * t * c, DType::Bf16), upload_tokens(&d, &inp));
            let (g_wte, g_wpe) = (bf16(&d, &wte), bf16(&d, &wpe));
            gpu::encoder::encoder_forward(&*d, g_out.slice(), &g_inp, g_wte.slice(), g_wpe.slice(), b, t, c).unwrap();
            assert_bf16_close("encoder out", &g_out, &out);

            let dout = randn16(&mut rng, b * t * c, 1.0);
            let (mut dwte, mut dwpe) = (randn16(&mut rng, vp * c, 1.0), randn16(&mut rng, max_t * c, 1.0));
            let (g_dwte, g_dwpe, g_dout) = (bf16(&d, &dwte), bf16(&d, &dwpe), bf16(&d, &dout));
            let g_order = upload_tokens(&d, &gpu::encoder::token_order(&inp));
            cpu::encoder::encoder_backward(&mut dwte, &mut dwpe, &dout, &inp, b, t, c);
            let (dwte_s, dwpe_s, dout_s) = (g_dwte.slice(), g_dwpe.slice(), g_dout.slice());
            gpu::encoder::encoder_backward(&*d, dwte_s, dwpe_s, dout_s, &g_inp, &g_order, b, t, c).unwrap();
            assert_bf16_close("dwte", &g_dwte, &dwte);
            assert_bf16_close("dwpe", &g_dwpe, &dwpe);
        }
    }
}

gpu_test! {
    /// Adding many small gradients to one bf16 dwte element one at a time stalls once the sum's half-ulp exceeds
    /// them; the kernel sums each token's contributions in f32 and rounds once.
    fn bf16_dwte_of_a_token_repeated_1000_times_is_its_f32_sum_rounded_once() {
        let d = driver();
        let (b, t, c) = (1, 1000, 8);
        let inp = vec![3u32; b * t];
        let dout = vec![round_bf16(1e-3); b * t * c];
        let (g_dwte, g_dwpe) = (bf16(&d, &vec![0.0; 5 * c]), bf16(&d, &vec![0.0; t * c]));
        let (g_dout, g_inp) = (bf16(&d, &dout), upload_tokens(&d, &inp));
        let g_order = upload_tokens(&d, &gpu::encoder::token_order(&inp));
        gpu::encoder::encoder_backward(&*d, g_dwte.slice(), g_dwpe.slice(), g_dout.slice(), &g_inp, &g_order, b, t, c)
            .unwrap();
        let want = round_bf16((0..t).fold(0.0f32, |sum, _| sum + round_bf16(1e-3)));
        let got = g_dwte.read().unwrap();
        assert!(got[3 * c..4 * c].iter().all(|&x| x == want), "row 3 of dwte: {:?}, want {want}", &got[3 * c..4 * c]);
        assert!(got[..3 * c].iter().chain(&got[4 * c..]).all(|&x| x == 0.0), "only token 3's row changes");
    }
}

gpu_test! {
    fn bf16_layernorm_forward_backward_and_fused_residual_match_cpu() {
        let d = driver();
        let mut rng = Rng::new(22);
        for &(b, t, c, _) in SHAPES {
            let n = b * t;
            let (inp, w, bias) = (randn16(&mut rng, n * c, 1.0), randn16(&mut rng, c, 1.0), randn16(&mut rng, c, 0.5));
            let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            cpu::layernorm::layernorm_forward(&mut out, &mut mean, &mut rstd, &inp, &w, &bias, b, t, c);
            let (g_out, g_mean, g_rstd) = (fresh(&d, n * c, DType::Bf16), fresh(&d, n, DType::F32), fresh(&d, n, DType::F32));
            let (g_inp, g_w, g_b) = (bf16(&d, &inp), bf16(&d, &w), bf16(&d, &bias));
            let s = |x: &DeviceBuffer| x.slice();
            gpu::layernorm::layernorm_forward(&*d, s(&g_out), s(&g_mean), s(&g_rstd), s(&g_inp), s(&g_w), s(&g_b), b, t, c)
                .unwrap();
            assert_bf16_close("layernorm out", &g_out, &out);
            assert_f32_close("layernorm mean", &g_mean, &mean);
            assert_f32_close("layernorm rstd", &g_rstd, &rstd);

            let dout = randn16(&mut rng, n * c, 1.0);
            let (mut dinp, mut dw, mut db) = (randn16(&mut rng, n * c, 1.0), randn16(&mut rng, c, 1.0), randn16(&mut rng, c, 1.0));
            let (g_dinp, g_dw, g_db, g_dout) = (bf16(&d, &dinp), bf16(&d, &dw), bf16(&d, &db), bf16(&d, &dout));
            cpu::layernorm::layernorm_backward(&mut dinp, &mut dw, &mut db, &dout, &inp, &w, &mean, &rstd, b, t, c);
            gpu::layernorm::layernorm_backward(
                &*d, s(&g_dinp), s(&g_dw), s(&g_db), s(&g_dout), s(&g_inp), s(&g_w), s(&g_mean), s(&g_rstd), b, t, c,
            )
            .unwrap();
            assert_bf16_close("layernorm dinp", &g_dinp, &dinp);
            assert_bf16_close("layernorm dweight", &g_dw, &dw);
            assert_bf16_close("layernorm dbias", &g_db, &db);

            // The fused kernel rounds the residual to bf16 and normalises what it stored, as the backward pass will
            // see it: the CPU reference normalises the rounded residual too.
            let other = randn16(&mut rng, n * c, 1.0);
            let residual: Vec<f32> = inp.iter().zip(&other).map(|(a, b)| round_bf16(a + b)).collect();
            let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            cpu::layernorm::layernorm_forward(&mut out, &mut mean, &mut rstd, &residual, &w, &bias, b, t, c);
            let (g_res, g_other) = (fresh(&d, n * c, DType::Bf16), bf16(&d, &other));
            gpu::layernorm::fused_residual_layernorm_forward(
                &*d, s(&g_res), s(&g_out), s(&g_mean), s(&g_rstd), s(&g_inp), s(&g_other), s(&g_w), s(&g_b), b, t, c,
            )
            .unwrap();
            assert_bf16_close("fused residual", &g_res, &residual);
            assert_bf16_close("fused layernorm out", &g_out, &out);
            assert_f32_close("fused layernorm rstd", &g_rstd, &rstd);
        }
    }
}

gpu_test! {
    fn bf16_matmul_forward_and_backward_match_cpu() {
        let d = driver();
        let mut rng = Rng::new(23);
        for &(b, t, c, _) in SHAPES {
            let (n, oc) = (b * t, 3 * c + 1);
            let (inp, w, bias) = (randn16(&mut rng, n * c, 1.0), randn16(&mut rng, oc * c, 0.2), randn16(&mut rng, oc, 1.0));
            let mut out = vec![0.0; n * oc];
            cpu::matmul::matmul_forward(&mut out, &inp, &w, Some(&bias), b, t, c, oc);
            let (g_out, g_inp, g_w, g_bias) = (fresh(&d, n * oc, DType::Bf16), bf16(&d, &inp), bf16(&d, &w), bf16(&d, &bias));
            gpu::matmul::matmul_forward(&*d, g_out.slice(), g_inp.slice(), g_w.slice(), Some(g_bias.slice()), b, t, c, oc)
                .unwrap();
            assert_bf16_close("matmul out", &g_out, &out);

            let dout = randn16(&mut rng, n * oc, 1.0);
            let (mut dinp, mut dw, mut db) = (randn16(&mut rng, n * c, 1.0), randn16(&mut rng, oc * c, 1.0), randn16(&mut rng, oc, 1.0));
            let (g_dinp, g_dw, g_db, g_dout) = (bf16(&d, &dinp), bf16(&d, &dw), bf16(&d, &db), bf16(&d, &dout));
            cpu::matmul::matmul_backward(&mut dinp, &mut dw, Some(&mut db), &dout, &inp, &w, b, t, c, oc);
            gpu::matmul::matmul_backward(
                &*d, g_dinp.slice(), g_dw.slice(), Some(g_db.slice()), g_dout.slice(), g_inp.slice(), g_w.slice(), b, t, c, oc,
            )
            .unwrap();
            assert_bf16_close("matmul dinp", &g_dinp, &dinp);
            assert_bf16_close("matmul dweight", &g_dw, &dw);
            assert_bf16_close("matmul dbias", &g_db, &db);
        }
    }
}

gpu_test! {
    fn bf16_attention_flash_and_clear_match_cpu() {
        let d = driver();
        let mut rng = Rng::new(24);
        for &(b, t, c, nh) in SHAPES.iter().chain(&[(1, 70, 128, 2)]) {
            let qkv = randn16(&mut rng, b * t * 3 * c, 1.0);
            let (mut out, mut lse) = (vec![0.0; b * t * c], vec![0.0; b * t * nh]);
            cpu::attention::attention_forward(&mut out, &mut lse, &qkv, b, t, c, nh);
            // The backward pass reads the stored (rounded) output: the CPU reference reads the same.
            let out16: Vec<f32> = out.iter().map(|&x| round_bf16(x)).collect();
            let dout = randn16(&mut rng, b * t * c, 1.0);
            let dqkv0 = randn16(&mut rng, b * t * 3 * c, 1.0);
            let mut dqkv = dqkv0.clone();
            cpu::attention::attention_backward(&mut dqkv, &dout, &qkv, &out16, &lse, b, t, c, nh);
            for flash in [true, false] {
                let kind = if flash { "flash attention" } else { "attention" };
                let (g_out, g_lse, g_qkv) = (fresh(&d, b * t * c, DType::Bf16), fresh(&d, b * t * nh, DType::F32), bf16(&d, &qkv));
                if flash {
                    gpu::flash_attention::flash_attention_forward(&*d, g_out.slice(), g_lse.slice(), g_qkv.slice(), b, t, c, nh)
                } else {
                    gpu::attention::attention_forward(&*d, g_out.slice(), g_lse.slice(), g_qkv.slice(), b, t, c, nh)
                }
                .unwrap();
                assert_bf16_close(&format!("{kind} out"), &g_out, &out);
                assert_f32_close(&format!("{kind} lse"), &g_lse, &lse);

                let (g_dqkv, g_dout, g_out16, g_lse) = (bf16(&d, &dqkv0), bf16(&d, &dout), bf16(&d, &out16), f32s(&d, &lse));
                let args = (g_dqkv.slice(), g_dout.slice(), g_qkv.slice(), g_out16.slice(), g_lse.slice());
                if flash {
                    gpu::flash_attention::flash_attention_backward(&*d, args.0, args.1, args.2, args.3, args.4, b, t, c, nh)
                } else {
                    gpu::attention::attention_backward(&*d, args.0, args.1, args.2, args.3, args.4, b, t, c, nh)
                }
                .unwrap();
                assert_bf16_close(&format!("{kind} dqkv"), &g_dqkv, &dqkv);
            }
        }
    }
}

gpu_test! {
    fn bf16_gelu_and_residual_match_cpu() {
        let d = driver();
        let mut rng = Rng::new(25);
        for n in [1, 7, 8, 9, 2 * 256 * 8 + 5] {
            let (x, y) = (randn16(&mut rng, n, 2.0), randn16(&mut rng, n, 1.0));
            let mut out = vec![0.0; n];
            cpu::gelu::gelu_forward(&mut out, &x, n);
            let (g_out, g_x, g_y) = (fresh(&d, n, DType::Bf16), bf16(&d, &x), bf16(&d, &y));
            gpu::gelu::gelu_forward(&*d, g_out.slice(), g_x.slice(), n).unwrap();
            assert_bf16_close("gelu out", &g_out, &out);
            let mut dinp = randn16(&mut rng, n, 1.0);
            let g_dinp = bf16(&d, &dinp);
            cpu::gelu::gelu_backward(&mut dinp, &x, &y, n);
            gpu::gelu::gelu_backward(&*d, g_dinp.slice(), g_x.slice(), g_y.slice(), n).unwrap();
            assert_bf16_close("gelu dinp", &g_dinp, &dinp);

            cpu::residual::residual_forward(&mut out, &x, &y, n);
            gpu::residual::residual_forward(&*d, g_out.slice(), g_x.slice(), g_y.slice(), n).unwrap();
            assert_bf16_close("residual out", &g_out, &out);
            let (mut d1, mut d2) = (randn16(&mut rng, n, 1.0), randn16(&mut rng, n, 1.0));
            let (g_d1, g_d2) = (bf16(&d, &d1), bf16(&d, &d2));
            cpu::residual::residual_backward(&mut d1, &mut d2, &x, n);
            gpu::residual::residual_backward(&*d, g_d1.slice(), g_d2.slice(), g_x.slice(), n).unwrap();
            assert_bf16_close("residual dinp1", &g_d1, &d1);
            assert_bf16_close("residual dinp2", &g_d2, &d2);
        }
    }
}

gpu_test! {
    fn bf16_classifier_and_global_norm_match_cpu() {
        let d = driver();
        let mut rng = Rng::new(26);
        let (b, t, v, vp) = (2, 5, 97, 128);
        let n = b * t;
        let targets = tokens(&mut rng, n, v);
        let logits = randn16(&mut rng, n * vp, 2.0);
        for dloss in [None, Some(1.0 / n as f32)] {
            let (mut cpu_logits, mut losses) = (logits.clone(), vec![0.0; n]);
            cpu::classifier::fused_classifier(&mut cpu_logits, &mut losses, &targets, b, t, v, vp, dloss);
            let (g_logits, g_losses, g_targets) = (bf16(&d, &logits), fresh(&d, n, DType::F32), upload_tokens(&d, &targets));
            gpu::classifier::fused_classifier(&*d, g_logits.slice(), g_losses.slice(), &g_targets, b, t, v, vp, dloss)
                .unwrap();
            assert_f32_close("classifier losses", &g_losses, &losses);
            if dloss.is_some() {
                assert_bf16_close("classifier dlogits", &g_logits, &cpu_logits);
            }
        }
        let grads = randn16(&mut rng, 100_003, 0.1);
        let partials = DeviceBuffer::new(&d, gpu::global_norm::SLICES).unwrap();
        let want = cpu::global_norm::global_norm_squared(&grads);
        let got = gpu::global_norm::global_norm_squared(&*d, &partials, bf16(&d, &grads).slice()).unwrap();
        eprintln!("global norm² bf16 grads: gpu {got} cpu {want}");
        assert!((got - want).abs() <= 1e-5 * want, "gpu {got} vs cpu {want}");
    }
}

/// The two bf16 values around x (equal when x is one).
fn bf16_neighbours(x: f32) -> (f32, f32) {
    let down = f32::from_bits(x.to_bits() & 0xffff_0000);
    let up = f32::from_bits((x.to_bits() & 0xffff_0000) + 0x1_0000);
    if down == x {
        (x, x)
    } else if x > 0.0 {
        (down, up)
    } else {
        (up, down)
    }
}

gpu_test! {
    fn bf16_adamw_updates_f32_master_weights_as_the_cpu_and_rounds_params_to_a_neighbour() {
        let d = driver();
        let mut rng = Rng::new(27);
        let n = 1003;
        let mut master = randn16(&mut rng, n, 1.0).iter().map(|x| x * 1.001).collect::<Vec<f32>>();
        let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
        let (g_params, g_master, g_m, g_v) = (bf16(&d, &master), f32s(&d, &master), f32s(&d, &m), f32s(&d, &v));
        for step in 1..=3 {
            let grads = randn16(&mut rng, n, 0.5);
            let hp = AdamWStep { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, grad_scale: 0.37, step };
            cpu::adamw::adamw_update(&mut master, &grads, &mut m, &mut v, &hp);
            let g_grads = bf16(&d, &grads);
            gpu::adamw::adamw_update(&*d, g_params.slice(), Some(g_master.slice()), g_grads.slice(), g_m.slice(), g_v.slice(), &hp, step)
                .unwrap();
            let got_master = g_master.read().unwrap();
            for (i, (g, c)) in got_master.iter().zip(&master).enumerate() {
                assert!((g - c).abs() <= 1e-6 + 1e-6 * c.abs(), "master[{i}]: gpu {g} vs cpu {c}");
            }
            for (i, (p, w)) in g_params.read().unwrap().iter().zip(&got_master).enumerate() {
                let (lo, hi) = bf16_neighbours(*w);
                assert!(*p == lo || *p == hi, "params[{i}] = {p} is not a bf16 neighbour of its master {w}");
            }
        }
        // f32 parameters have no master; bf16 ones need one.
        let err = gpu::adamw::adamw_update(
            &*d, g_params.slice(), None, g_params.slice(), g_m.slice(), g_v.slice(),
            &AdamWStep { lr: 0.0, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0, grad_scale: 1.0, step: 1 }, 0,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("master"), "{err}");
    }
}

gpu_test! {
    /// Stochastic rounding is unbiased: 1 + 0.25 ulp written many times averages to 1 + 0.25 ulp, where rounding to
    /// nearest would give exactly 1 every time and lose every update smaller than half an ulp.
    fn bf16_adamw_stochastic_rounding_is_unbiased() {
        let d = driver();
        let n = 100_000;
        let ulp = 2f32.powi(-7);
        let x = 1.0 + 0.25 * ulp;
        let (g_params, g_master) = (bf16(&d, &vec![x; n]), f32s(&d, &vec![x; n]));
        let (g_grads, g_m, g_v) = (bf16(&d, &vec![0.0; n]), f32s(&d, &vec![0.0; n]), f32s(&d, &vec![0.0; n]));
        // lr 0: the master weights stay x, and the params are x rounded once per element.
        let hp = AdamWStep { lr: 0.0, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0, grad_scale: 1.0, step: 1 };
        gpu::adamw::adamw_update(&*d, g_params.slice(), Some(g_master.slice()), g_grads.slice(), g_m.slice(), g_v.slice(), &hp, 99)
            .unwrap();
        let params = g_params.read().unwrap();
        let ups = params.iter().filter(|&&p| p == 1.0 + ulp).count();
        assert_eq!(ups + params.iter().filter(|&&p| p == 1.0).count(), n, "every value is 1 or 1 + ulp");
        let mean = params.iter().map(|&p| p as f64).sum::<f64>() / n as f64;
        // Binomial: the fraction rounded up has standard deviation sqrt(0.25 * 0.75 / n) ≈ 0.0014; allow 5 of them.
        let fraction = ups as f64 / n as f64;
        eprintln!("stochastic rounding: {fraction:.4} of {n} rounded up (expected 0.25), mean {mean:.7} vs {x:.7}");
        assert!((fraction - 0.25).abs() < 5.0 * (0.25f64 * 0.75 / n as f64).sqrt(), "fraction rounded up {fraction}");
    }
}

gpu_test! {
    /// Checkpoints hold the f32 master weights, so a model trained in bf16 saves and loads in either precision:
    /// an fp32 file read back into a bf16 model gives the same parameters bit for bit (and a loss within 1e-3: the
    /// bf16 copy is rounded to nearest on load, stochastically in training), the CPU (fp32) computes nearly the
    /// same loss from them, and a bf16 (v5) file of them loads into either too.
    fn a_bf16_model_saves_and_loads_in_either_precision() {
        use llmrs::backend::Precision;
        use llmrs::checkpoint::{read_model, write_model, ModelDtype};
        use llmrs::gpu::backend::GpuBackend;
        use llmrs::model::{AdamWConfig, GPT2};
        let config = llmrs::GPT2Config {
            max_seq_len: 16,
            vocab_size: 97,
            padded_vocab_size: llmrs::config::padded_vocab(97),
            num_layers: 2,
            num_heads: 3,
            channels: 48,
        };
        let (b, t) = (3, 13);
        let bf16_model = |params: Vec<f32>| {
            GPT2::with_backend(config, params, Box::new(GpuBackend::new(driver(), Precision::Bf16).unwrap())).unwrap()
        };
        let mut model = bf16_model(GPT2::init_params(&config, 5).unwrap());
        let mut rng = Rng::new(28);
        let adamw = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
        for step in 1..=5 {
            let batch = tokens(&mut rng, b * t + 1, config.vocab_size);
            model.zero_grad().unwrap();
            model.forward_backward(&batch[..b * t], &batch[1..], b, t).unwrap();
            model.update(&adamw, 1e-2, 1.0, step).unwrap();
        }
        let trained = model.params().unwrap();
        assert!(trained.iter().any(|&p| round_bf16(p) != p), "the master weights hold more than bf16 values");
        let dir = tempfile::TempDir::new().unwrap();
        let (fp32_file, bf16_file) = (dir.path().join("fp32.bin"), dir.path().join("bf16.bin"));
        write_model(&fp32_file, &config, &trained, ModelDtype::F32).unwrap();
        write_model(&bf16_file, &config, &trained, ModelDtype::Bf16).unwrap();

        let batch = tokens(&mut rng, b * t + 1, config.vocab_size);
        let (inputs, targets) = (&batch[..b * t], &batch[1..]);
        let want = model.forward(inputs, Some(targets), b, t).unwrap().unwrap();
        let (_, from_fp32) = read_model(&fp32_file).unwrap();
        let mut reloaded = bf16_model(from_fp32.clone());
        assert!(reloaded.params().unwrap() == trained, "an fp32 checkpoint reloads into bf16 bit for bit");
        // Not bit for bit the same loss: training wrote the bf16 copy by stochastic rounding, loading rounds the
        // master weights to nearest. Either copy is within half a bf16 step of the same weights.
        let again = reloaded.forward(inputs, Some(targets), b, t).unwrap().unwrap();
        assert!((again - want).abs() < 1e-3, "reloaded bf16 loss {again} vs {want}");
        let cpu_loss = GPT2::new(config, from_fp32).unwrap().forward(inputs, Some(targets), b, t).unwrap().unwrap();
        eprintln!("loss of the bf16-trained model: bf16 {want}, fp32 cpu {cpu_loss}");
        assert!((cpu_loss - want).abs() < 0.05, "fp32 cpu loss {cpu_loss} vs bf16 {want}");
        let (_, from_bf16) = read_model(&bf16_file).unwrap();
        assert!(from_bf16.iter().zip(&trained).all(|(&r, &p)| r == round_bf16(p)), "v5 holds the rounded weights");
        assert!(bf16_model(from_bf16.clone()).params().unwrap() == from_bf16, "a v5 file loads into bf16 as it is");
        let cpu_loss = GPT2::new(config, from_bf16).unwrap().forward(inputs, Some(targets), b, t).unwrap().unwrap();
        assert!((cpu_loss - want).abs() < 0.05, "fp32 cpu loss of the v5 file {cpu_loss} vs bf16 {want}");
    }
}
