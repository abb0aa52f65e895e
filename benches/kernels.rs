//! Every layer on its own at GPT-2 124M shapes (B=8, T=1024, C=768, NH=12, V=50257, Vp=50304): on the CPU
//! always, and on GPU 0 when built with `--features cuda`. Criterion times each; the table printed at the end
//! gives the rate (GB/s for memory-bound layers, GFLOP/s for matmuls and attention) and its share of the
//! device's peak: for a GPU the vendor peaks of `src/mfu.rs`, for the CPU ceilings measured here first (a large
//! copy for bandwidth, a 1024³ sgemm for FLOP/s) since a CPU's paper peak says little about what Rust code reaches.
//! At small `LLMRS_BENCH_BT` the data fits in cache and a layer can beat the copy "ceiling": compare at full size.
//!
//! Run: `cargo bench --bench kernels` (`-- layernorm` for a subset; `LLMRS_BENCH_BT=4,64` for smaller B, T).
//! On a GPU machine: `cargo bench --features cuda --bench kernels` (`LLMRS_BENCH_GPU_ONLY=1` skips the CPU rows,
//! which take minutes at full size).

mod common;

use common::CallTimer;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use llmrs::cpu;
use llmrs::cpu::adamw::AdamWStep;
use llmrs::rng::Rng;
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// GPT-2 124M.
const C: usize = 768;
const NH: usize = 12;
const V: usize = 50257;
const VP: usize = 50304;
/// Parameters of GPT-2 124M (llm.c's count), for AdamW and the global norm.
const PARAMS: usize = 124_475_904;

/// What a layer's rate is measured in.
#[derive(Clone, Copy)]
enum Work {
    Bytes(u64),
    Flops(u64),
}

/// One measured layer: the device, the layer, its work per call, whether it runs in bf16 (its FLOP/s are then
/// compared with the tensor-core peak), and the seconds per call criterion saw.
struct Row {
    device: String,
    name: String,
    work: Work,
    bf16: bool,
    seconds: f64,
}

/// (B, T) from `LLMRS_BENCH_BT`, else (8, 1024).
fn batch() -> (usize, usize) {
    std::env::var("LLMRS_BENCH_BT")
        .ok()
        .and_then(|s| {
            let (b, t) = s.split_once(',')?;
            Some((b.trim().parse().ok()?, t.trim().parse().ok()?))
        })
        .unwrap_or((8, 1024))
}

fn randn(rng: &mut Rng, n: usize) -> Vec<f32> {
    let mut v = vec![0.0; n];
    rng.fill_normal(&mut v, 1.0);
    v
}

/// Times `f` under criterion as `device/name` and records its mean seconds per call for the table.
fn measure(
    c: &mut Criterion,
    rows: &RefCell<Vec<Row>>,
    device: &str,
    name: impl Into<String>,
    work: Work,
    mut f: impl FnMut(),
) {
    let name: String = name.into();
    let bf16 = name.ends_with("(bf16)");
    let mut group = c.benchmark_group(device.split_whitespace().next().unwrap_or(device).to_string());
    group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_millis(500));
    group.throughput(match work {
        Work::Bytes(b) => Throughput::Bytes(b),
        Work::Flops(f) => Throughput::Elements(f),
    });
    let mut timer = CallTimer::default();
    group.bench_function(BenchmarkId::from_parameter(&name), |bencher| timer.iter(bencher, &mut f));
    group.finish();
    if let Some(seconds) = timer.mean_seconds() {
        rows.borrow_mut().push(Row { device: device.to_string(), name, work, bf16, seconds });
    }
}

/// The CPU's measured ceilings: (GB/s of a large copy, GFLOP/s of a 1024³ sgemm).
fn cpu_ceilings() -> (f64, f64) {
    let n = 64 << 20;
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    dst.copy_from_slice(&src);
    let start = Instant::now();
    for _ in 0..5 {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
    }
    let gbps = (5 * 2 * 4 * n) as f64 / start.elapsed().as_secs_f64() / 1e9;
    let m = 1024;
    let (a, b) = (vec![0.5f32; m * m], vec![0.25f32; m * m]);
    let mut out = vec![0.0f32; m * m];
    // out (m, m) = a (m, m) · bᵀ: matmul_forward with B·T = m rows, C = OC = m.
    cpu::matmul::matmul_forward(&mut out, &a, &b, None, 1, m, m, m);
    let start = Instant::now();
    for _ in 0..3 {
        cpu::matmul::matmul_forward(&mut out, &a, &b, None, 1, m, m, m);
    }
    let gflops = (3 * 2 * m * m * m) as f64 / start.elapsed().as_secs_f64() / 1e9;
    (gbps, gflops)
}

fn cpu_benches(c: &mut Criterion, rows: &RefCell<Vec<Row>>) {
    let (b, t) = batch();
    let (bt, btc) = (b * t, b * t * C);
    let device = format!("cpu ({} threads)", rayon::current_num_threads());
    let d = device.as_str();
    let mut rng = Rng::new(1);
    let f4 = 4u64;
    let tokens: Vec<u32> = (0..bt).map(|_| rng.below(V) as u32).collect();
    let (wte, wpe) = (randn(&mut rng, VP * C), randn(&mut rng, t * C));
    let (x, y) = (randn(&mut rng, btc), randn(&mut rng, btc));
    let (w, bias) = (randn(&mut rng, C), randn(&mut rng, C));
    let mut out = vec![0.0f32; btc];
    let (mut mean, mut rstd) = (vec![0.0f32; bt], vec![0.0f32; bt]);

    measure(c, rows, d, "encoder_forward", Work::Bytes(3 * btc as u64 * f4), || {
        cpu::encoder::encoder_forward(&mut out, &tokens, &wte, &wpe, b, t, C)
    });
    measure(c, rows, d, "layernorm_forward", Work::Bytes((2 * btc + 2 * bt) as u64 * f4), || {
        cpu::layernorm::layernorm_forward(&mut out, &mut mean, &mut rstd, &x, &w, &bias, b, t, C)
    });
    let (mut dw, mut db, mut dx) = (vec![0.0f32; C], vec![0.0f32; C], vec![0.0f32; btc]);
    measure(c, rows, d, "layernorm_backward", Work::Bytes((4 * btc + 2 * bt) as u64 * f4), || {
        cpu::layernorm::layernorm_backward(&mut dx, &mut dw, &mut db, &y, &x, &w, &mean, &rstd, b, t, C)
    });
    measure(c, rows, d, "residual_forward", Work::Bytes(3 * btc as u64 * f4), || {
        cpu::residual::residual_forward(&mut out, &x, &y, btc)
    });
    let h = randn(&mut rng, 4 * btc);
    let mut h_out = vec![0.0f32; 4 * btc];
    measure(c, rows, d, "gelu_forward", Work::Bytes(2 * 4 * btc as u64 * f4), || {
        cpu::gelu::gelu_forward(&mut h_out, &h, 4 * btc)
    });
    let mut dh = vec![0.0f32; 4 * btc];
    measure(c, rows, d, "gelu_backward", Work::Bytes(4 * 4 * btc as u64 * f4), || {
        cpu::gelu::gelu_backward(&mut dh, &h, &h_out, 4 * btc)
    });

    // The largest matmul of a block: fc, (B·T, C) · (4C, C)ᵀ.
    let fcw = randn(&mut rng, 4 * C * C);
    let fcb = randn(&mut rng, 4 * C);
    let mut fch = vec![0.0f32; 4 * btc];
    let flops = 2 * (bt * C * 4 * C) as u64;
    measure(c, rows, d, "matmul_forward (fc)", Work::Flops(flops), || {
        cpu::matmul::matmul_forward(&mut fch, &x, &fcw, Some(&fcb), b, t, C, 4 * C)
    });
    let (mut dfcw, mut dfcb) = (vec![0.0f32; 4 * C * C], vec![0.0f32; 4 * C]);
    measure(c, rows, d, "matmul_backward (fc)", Work::Flops(2 * flops), || {
        cpu::matmul::matmul_backward(&mut dx, &mut dfcw, Some(&mut dfcb), &fch, &x, &fcw, b, t, C, 4 * C)
    });

    let qkv = randn(&mut rng, 3 * btc);
    let mut lse = vec![0.0f32; bt * NH];
    // Causal: T(T+1)/2 (query, key) pairs per (b, h), each a q·k and a p·v of HS multiply-adds.
    let pairs = (b * NH * t * (t + 1) / 2) as u64;
    let attention_flops = 2 * 2 * pairs * (C / NH) as u64;
    measure(c, rows, d, "attention_forward", Work::Flops(attention_flops), || {
        cpu::attention::attention_forward(&mut out, &mut lse, &qkv, b, t, C, NH)
    });
    let mut dqkv = vec![0.0f32; 3 * btc];
    measure(c, rows, d, "attention_backward", Work::Flops(2 * 2 * attention_flops), || {
        cpu::attention::attention_backward(&mut dqkv, &y, &qkv, &out, &lse, b, t, C, NH)
    });

    let logits_init = randn(&mut rng, bt * VP);
    let mut logits = logits_init.clone();
    let mut losses = vec![0.0f32; bt];
    measure(c, rows, d, "fused_classifier", Work::Bytes(2 * (bt * VP) as u64 * f4), || {
        // dlogits overwrite the logits; the work is the same whatever the values.
        cpu::classifier::fused_classifier(&mut logits, &mut losses, &tokens, b, t, V, VP, Some(1.0 / bt as f32))
    });

    let mut params = randn(&mut rng, PARAMS);
    let grads = randn(&mut rng, PARAMS);
    let (mut m, mut v) = (vec![0.0f32; PARAMS], vec![0.0f32; PARAMS]);
    let hp = AdamWStep { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, grad_scale: 1.0, step: 1 };
    measure(c, rows, d, "adamw_update (124M)", Work::Bytes(7 * PARAMS as u64 * f4), || {
        cpu::adamw::adamw_update(&mut params, &grads, &mut m, &mut v, &hp)
    });
    measure(c, rows, d, "global_norm (124M)", Work::Bytes(PARAMS as u64 * f4), || {
        std::hint::black_box(cpu::global_norm::global_norm_squared(&grads));
    });
}

/// Every kernel on GPU 0, in fp32 and then in bf16 (the bf16 rows are named "... (bf16)").
#[cfg(feature = "cuda")]
fn gpu_benches(c: &mut Criterion, rows: &RefCell<Vec<Row>>) {
    use llmrs::gpu::driver::{DType, Driver};
    let driver: std::rc::Rc<dyn Driver> = match llmrs::gpu::cuda::CudaDriver::new(0) {
        Ok(d) => std::rc::Rc::new(d),
        Err(e) => {
            eprintln!("GPU benches skipped: {e}");
            return;
        }
    };
    for dtype in [DType::F32, DType::Bf16] {
        gpu_benches_in(c, rows, &driver, dtype);
    }
}

/// The GPU rows with `floatX` = `dtype` (statistics, master weights and moments stay f32).
#[cfg(feature = "cuda")]
fn gpu_benches_in(
    c: &mut Criterion,
    rows: &RefCell<Vec<Row>>,
    driver: &std::rc::Rc<dyn llmrs::gpu::driver::Driver>,
    dtype: llmrs::gpu::driver::DType,
) {
    use llmrs::gpu;
    use llmrs::gpu::driver::{DType, DeviceBuffer, DeviceTokens};
    let (b, t) = batch();
    let (bt, btc) = (b * t, b * t * C);
    let device = driver.name();
    let d = device.as_str();
    let dr = &**driver;
    let mut rng = Rng::new(1);
    // Bytes of a floatX element and of an f32 one, for the GB/s of each kernel.
    let (x, f4) = (dtype.size() as u64, 4u64);
    let name = |layer: &str| match dtype {
        DType::F32 => layer.to_string(),
        DType::Bf16 => format!("{layer} (bf16)"),
    };
    let up = |v: Vec<f32>| DeviceBuffer::from_host_as(driver, &v, dtype).expect("device memory");
    let up32 = |v: Vec<f32>| DeviceBuffer::from_host(driver, &v).expect("device memory");
    let tokens: Vec<u32> = (0..bt).map(|_| rng.below(V) as u32).collect();
    let inp = DeviceTokens::new(driver, bt).expect("device memory");
    inp.write(&tokens).expect("copy");
    let (wte, wpe) = (up(randn(&mut rng, VP * C)), up(randn(&mut rng, t * C)));
    let (xs, y) = (up(randn(&mut rng, btc)), up(randn(&mut rng, btc)));
    let (w, bias) = (up(randn(&mut rng, C)), up(randn(&mut rng, C)));
    let out = up(vec![0.0; btc]);
    let (mean, rstd) = (up32(vec![0.0; bt]), up32(vec![0.0; bt]));
    // Every timed call ends with a synchronize, so the time is the kernel's, not its launch's.
    let sync = || dr.synchronize().expect("kernel runs");

    measure(c, rows, d, name("encoder_forward"), Work::Bytes(3 * btc as u64 * x), || {
        gpu::encoder::encoder_forward(dr, out.slice(), &inp, wte.slice(), wpe.slice(), b, t, C).unwrap();
        sync()
    });
    measure(c, rows, d, name("layernorm_forward"), Work::Bytes(2 * btc as u64 * x + 2 * bt as u64 * f4), || {
        let (o, m, r) = (out.slice(), mean.slice(), rstd.slice());
        gpu::layernorm::layernorm_forward(dr, o, m, r, xs.slice(), w.slice(), bias.slice(), b, t, C).unwrap();
        sync()
    });
    let (dw, db, dx) = (up(vec![0.0; C]), up(vec![0.0; C]), up(vec![0.0; btc]));
    measure(c, rows, d, name("layernorm_backward"), Work::Bytes(4 * btc as u64 * x + 2 * bt as u64 * f4), || {
        let (m, r) = (mean.slice(), rstd.slice());
        let (dx, dw, db, dout) = (dx.slice(), dw.slice(), db.slice(), y.slice());
        gpu::layernorm::layernorm_backward(dr, dx, dw, db, dout, xs.slice(), w.slice(), m, r, b, t, C).unwrap();
        sync()
    });
    measure(c, rows, d, name("residual_forward"), Work::Bytes(3 * btc as u64 * x), || {
        gpu::residual::residual_forward(dr, out.slice(), xs.slice(), y.slice(), btc).unwrap();
        sync()
    });
    let (h, h_out, dh) = (up(randn(&mut rng, 4 * btc)), up(vec![0.0; 4 * btc]), up(vec![0.0; 4 * btc]));
    measure(c, rows, d, name("gelu_forward"), Work::Bytes(2 * 4 * btc as u64 * x), || {
        gpu::gelu::gelu_forward(dr, h_out.slice(), h.slice(), 4 * btc).unwrap();
        sync()
    });
    measure(c, rows, d, name("gelu_backward"), Work::Bytes(4 * 4 * btc as u64 * x), || {
        gpu::gelu::gelu_backward(dr, dh.slice(), h.slice(), h_out.slice(), 4 * btc).unwrap();
        sync()
    });
    let (fcw, fcb) = (up(randn(&mut rng, 4 * C * C)), up(randn(&mut rng, 4 * C)));
    let flops = 2 * (bt * C * 4 * C) as u64;
    measure(c, rows, d, name("matmul_forward (fc)"), Work::Flops(flops), || {
        gpu::matmul::matmul_forward(dr, h_out.slice(), xs.slice(), fcw.slice(), Some(fcb.slice()), b, t, C, 4 * C)
            .unwrap();
        sync()
    });
    let (dfcw, dfcb) = (up(vec![0.0; 4 * C * C]), up(vec![0.0; 4 * C]));
    measure(c, rows, d, name("matmul_backward (fc)"), Work::Flops(2 * flops), || {
        let (dfcw, dfcb) = (dfcw.slice(), Some(dfcb.slice()));
        gpu::matmul::matmul_backward(
            dr,
            dx.slice(),
            dfcw,
            dfcb,
            h_out.slice(),
            xs.slice(),
            fcw.slice(),
            b,
            t,
            C,
            4 * C,
        )
        .unwrap();
        sync()
    });
    let (qkv, lse, dqkv) = (up(randn(&mut rng, 3 * btc)), up32(vec![0.0; bt * NH]), up(vec![0.0; 3 * btc]));
    let pairs = (b * NH * t * (t + 1) / 2) as u64;
    let attention_flops = 2 * 2 * pairs * (C / NH) as u64;
    measure(c, rows, d, name("flash_attention_forward"), Work::Flops(attention_flops), || {
        gpu::flash_attention::flash_attention_forward(dr, out.slice(), lse.slice(), qkv.slice(), b, t, C, NH).unwrap();
        sync()
    });
    measure(c, rows, d, name("flash_attention_backward"), Work::Flops(2 * 2 * attention_flops), || {
        let (dq, dout, q, o, l) = (dqkv.slice(), y.slice(), qkv.slice(), out.slice(), lse.slice());
        gpu::flash_attention::flash_attention_backward(dr, dq, dout, q, o, l, b, t, C, NH).unwrap();
        sync()
    });
    measure(c, rows, d, name("attention_forward (clear)"), Work::Flops(attention_flops), || {
        gpu::attention::attention_forward(dr, out.slice(), lse.slice(), qkv.slice(), b, t, C, NH).unwrap();
        sync()
    });
    measure(c, rows, d, name("attention_backward (clear)"), Work::Flops(2 * 2 * attention_flops), || {
        let (dq, dout, q, o, l) = (dqkv.slice(), y.slice(), qkv.slice(), out.slice(), lse.slice());
        gpu::attention::attention_backward(dr, dq, dout, q, o, l, b, t, C, NH).unwrap();
        sync()
    });
    let (logits, losses) = (up(randn(&mut rng, bt * VP)), up32(vec![0.0; bt]));
    let targets = DeviceTokens::new(driver, bt).expect("device memory");
    targets.write(&tokens).expect("copy");
    measure(c, rows, d, name("fused_classifier"), Work::Bytes(2 * (bt * VP) as u64 * x), || {
        let dloss = Some(1.0 / bt as f32);
        gpu::classifier::fused_classifier(dr, logits.slice(), losses.slice(), &targets, b, t, V, VP, dloss).unwrap();
        sync()
    });
    let (params, grads) = (up(randn(&mut rng, PARAMS)), up(randn(&mut rng, PARAMS)));
    let master = (dtype == DType::Bf16).then(|| up32(randn(&mut rng, PARAMS)));
    let (m, v) = (up32(vec![0.0; PARAMS]), up32(vec![0.0; PARAMS]));
    let hp = AdamWStep { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, grad_scale: 1.0, step: 1 };
    // fp32: read grads, read and write params, m and v. bf16: read grads and write params (bf16), read and write
    // the master weights, m and v (f32).
    let adamw_bytes = PARAMS as u64 * if master.is_some() { 2 * x + 6 * f4 } else { 3 * x + 4 * f4 };
    measure(c, rows, d, name("adamw_update (124M)"), Work::Bytes(adamw_bytes), || {
        let master = master.as_ref().map(|m| m.slice());
        gpu::adamw::adamw_update(dr, params.slice(), master, grads.slice(), m.slice(), v.slice(), &hp, 1).unwrap();
        sync()
    });
    let partials = up32(vec![0.0; gpu::global_norm::SLICES]);
    measure(c, rows, d, name("global_norm (124M)"), Work::Bytes(PARAMS as u64 * x), || {
        std::hint::black_box(gpu::global_norm::global_norm_squared(dr, &partials, grads.slice()).unwrap());
    });
}

#[cfg(not(feature = "cuda"))]
fn gpu_benches(_: &mut Criterion, _: &RefCell<Vec<Row>>) {
    eprintln!("GPU benches: not in this build (cargo bench --features cuda --bench kernels on a GPU machine)");
}

fn main() {
    let (b, t) = batch();
    let (cpu_gbps, cpu_gflops) = cpu_ceilings();
    let rows = RefCell::new(Vec::new());
    let mut c = Criterion::default().configure_from_args();
    if std::env::var_os("LLMRS_BENCH_GPU_ONLY").is_none() {
        cpu_benches(&mut c, &rows);
    }
    gpu_benches(&mut c, &rows);
    c.final_summary();

    println!("\nkernels at B={b} T={t} C={C} NH={NH} Vp={VP}; CPU ceilings measured here: {cpu_gbps:.1} GB/s copy, {cpu_gflops:.1} GFLOP/s sgemm");
    println!("{:<34} {:<28} {:>10} {:>14} {:>9}", "device", "layer", "ms", "rate", "of peak");
    for row in rows.borrow().iter() {
        let peak = llmrs::mfu::lookup(&row.device);
        let (rate, share) = match row.work {
            Work::Bytes(bytes) => {
                let gbps = bytes as f64 / row.seconds / 1e9;
                let peak = peak.map_or(cpu_gbps, |p| p.memory_gbps);
                (format!("{gbps:.1} GB/s"), gbps / peak)
            }
            Work::Flops(flops) => {
                let gflops = flops as f64 / row.seconds / 1e9;
                let peak = peak.map_or(cpu_gflops, |p| if row.bf16 { p.bf16_tflops } else { p.fp32_tflops } * 1e3);
                (format!("{gflops:.1} GFLOP/s"), gflops / peak)
            }
        };
        println!(
            "{:<34} {:<28} {:>10.3} {:>14} {:>8.1}%",
            row.device,
            row.name,
            row.seconds * 1e3,
            rate,
            100.0 * share
        );
    }
}
