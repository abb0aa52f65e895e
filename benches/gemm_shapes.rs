//! llmrs's matmul layer (the `gemm` crate underneath) at the GEMM shapes of issue 6's three configs: the
//! counterpart of `dev/bench/torch_matmul.py`, which times PyTorch's products at the same shapes.
//! `dev/bench/compare.sh --gemm` runs the two alternately and prints their ratio per round.
//!
//! Per layer shape (C -> 3C, C -> C, C -> 4C, 4C -> C, and the LM head C -> Vp) it times one matmul_forward
//! (with the bias, as the model calls it) and one matmul_backward (dinp, dweight and dbias: the three products and
//! the column sums of a training step), median of 7 calls after 2 warm-up calls. The last line sums them as a
//! training step calls them (L x every layer shape + the LM head once) and gives that as JSON:
//!   {"framework": "llmrs", "config": "bytes6", "threads": 2, "step_ms": ...}
//!
//! Run: `cargo bench --bench gemm_shapes` (about a minute on 2 cores) or `-- bytes6` for one config. Threads:
//! rayon's global pool (`RAYON_NUM_THREADS`).

use llmrs::cpu::matmul::{matmul_backward, matmul_forward};
use llmrs::rng::Rng;
use std::hint::black_box;
use std::time::Instant;

const WARMUP: usize = 2;
const TIMED: usize = 7;

/// (name, L, B*T, C, Vp): issue 6's configs as torch_matmul.py lists them.
const CONFIGS: &[(&str, usize, usize, usize, usize)] =
    &[("d12", 12, 4 * 64, 768, 50304), ("d4", 4, 8 * 256, 256, 50304), ("bytes6", 6, 16 * 256, 384, 256)];

/// Median seconds of TIMED calls of f, after WARMUP untimed ones.
fn median_seconds(mut f: impl FnMut()) -> f64 {
    for _ in 0..WARMUP {
        f();
    }
    let mut times: Vec<f64> = (0..TIMED)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[TIMED / 2]
}

/// Normal random values: the timing does not depend on them, but zeros or subnormals could.
fn randn(rng: &mut Rng, len: usize) -> Vec<f32> {
    let mut v = vec![0.0; len];
    rng.fill_normal(&mut v, 1.0);
    v
}

/// Forward and backward seconds of one layer shape: inp (n, c) -> out (n, oc), with a bias when `bias`.
fn time_shape(n: usize, c: usize, oc: usize, bias: bool) -> (f64, f64) {
    let mut rng = Rng::new(42);
    let (inp, weight, dout) = (randn(&mut rng, n * c), randn(&mut rng, oc * c), randn(&mut rng, n * oc));
    let b = bias.then(|| randn(&mut rng, oc));
    let (mut out, mut dinp, mut dweight, mut dbias) =
        (vec![0.0; n * oc], vec![0.0; n * c], vec![0.0; oc * c], vec![0.0; oc]);
    // B = 1, T = n: the layer only sees their product.
    let forward = median_seconds(|| {
        matmul_forward(black_box(&mut out), &inp, &weight, b.as_deref(), 1, n, c, oc);
    });
    let backward = median_seconds(|| {
        let dbias = if bias { Some(&mut dbias[..]) } else { None };
        matmul_backward(black_box(&mut dinp), &mut dweight, dbias, &dout, &inp, &weight, 1, n, c, oc);
    });
    (forward, backward)
}

fn main() {
    // cargo bench passes `--bench`; any other argument filters the configs by name.
    let filters: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let threads = rayon::current_num_threads();
    for &(name, layers, n, c, vp) in CONFIGS {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        println!("{name} B*T={n} C={c} L={layers}, {threads} threads (ms per call, GFLOP/s)");
        let mut step_s = 0.0;
        // (C_in, OC, calls per step, bias): every layer's four matmuls, then the LM head (no bias).
        let shapes = [
            (c, 3 * c, layers, true),
            (c, c, layers, true),
            (c, 4 * c, layers, true),
            (4 * c, c, layers, true),
            (c, vp, 1, false),
        ];
        for (cin, oc, count, bias) in shapes {
            let (forward, backward) = time_shape(n, cin, oc, bias);
            let flops = 2.0 * (n * cin * oc) as f64;
            println!(
                "  {n}x{cin} -> {oc:<6} forward {:8.2} ms {:6.1} | backward {:8.2} ms {:6.1}",
                forward * 1e3,
                flops / forward / 1e9,
                backward * 1e3,
                2.0 * flops / backward / 1e9
            );
            step_s += count as f64 * (forward + backward);
        }
        println!("  per training step: {:.1} ms", step_s * 1e3);
        println!(
            "{{\"framework\": \"llmrs\", \"config\": \"{name}\", \"threads\": {threads}, \"step_ms\": {:.2}}}",
            step_s * 1e3
        );
    }
}
