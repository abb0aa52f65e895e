//! llmrs's own code allocates nothing in a CPU training step once the model has run one: parameters, gradients,
//! AdamW state, activations and attention's per-thread scratch are all reused. Checked with a global allocator
//! that, while the flag is set, records a backtrace of every allocation (on any thread: the rayon workers run the
//! layers) and the test fails on any that does not come from one of two dependencies, whose allocations it
//! counts and prints instead:
//! - `gemm::gemm` (0.19) allocates its packing buffers inside every call, and its API takes no caller memory;
//! - rayon's global job queue allocates a block (1.5 KB) per 63 jobs sent to the pool from a thread outside it,
//!   which is how the model's host thread starts every parallel layer.
//!
//! Both are recycled by the system allocator's free lists from the second step on.

use llmrs::config::GPT2Config;
use llmrs::cpu::global_norm::clip_scale;
use llmrs::model::{AdamWConfig, GPT2};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
/// Allocations (and their bytes) made inside the gemm crate and rayon's job queue, and the backtraces of any
/// made elsewhere.
static GEMM_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static GEMM_BYTES: AtomicUsize = AtomicUsize::new(0);
static RAYON_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static OTHERS: Mutex<Vec<String>> = Mutex::new(Vec::new());

thread_local! {
    /// Set while this thread is inside `record`, whose own allocations (the backtrace) must not be recorded.
    static RECORDING: Cell<bool> = const { Cell::new(false) };
}

/// Classifies one allocation made while counting, by the frames of its backtrace.
fn record(bytes: usize) {
    if RECORDING.with(|r| r.replace(true)) {
        return;
    }
    let trace = std::backtrace::Backtrace::force_capture().to_string();
    if trace.contains("gemm_common::gemm::gemm_basic_generic") {
        GEMM_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        GEMM_BYTES.fetch_add(bytes, Ordering::Relaxed);
    } else if trace.contains("rayon_core::registry::Registry::inject") {
        RAYON_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    } else {
        OTHERS.lock().unwrap().push(format!("{bytes} bytes at\n{trace}"));
    }
    RECORDING.with(|r| r.set(false));
}

// SAFETY: every call goes to the system allocator; `record` only runs outside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            record(layout.size());
        }
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            record(new_size);
        }
        // SAFETY: `ptr` came from `System.alloc` with `layout`; the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn llmrs_allocates_nothing_in_a_cpu_training_step() {
    // A small model with every kind of layer, at a T where attention's scratch and the matmuls are non-trivial.
    let mut config = GPT2Config::preset("d4").expect("preset exists");
    config.vocab_size = 256;
    config.padded_vocab_size = llmrs::config::padded_vocab(256);
    let (b, t) = (4, 128);
    let mut model = GPT2::random(config, 7).expect("valid config");
    let tokens: Vec<u32> = (0..b * t + 1).map(|i| (i * 31 % 256) as u32).collect();
    let (inputs, targets) = (&tokens[..b * t], &tokens[1..]);
    let adamw = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let step = |model: &mut GPT2, n: u32| {
        model.zero_grad().unwrap();
        let loss = model.forward_backward(inputs, targets, b, t).unwrap();
        let norm = model.grad_norm().unwrap();
        model.update(&adamw, 1e-3, clip_scale(norm, 1.0), n).unwrap();
        loss
    };
    step(&mut model, 1);
    step(&mut model, 2);
    COUNTING.store(true, Ordering::SeqCst);
    let loss = step(&mut model, 3);
    COUNTING.store(false, Ordering::SeqCst);
    assert!(loss.is_finite());
    let others = OTHERS.lock().unwrap();
    assert!(others.is_empty(), "{} allocations by llmrs in a step; the first: {}", others.len(), others[0]);
    let gemm = GEMM_ALLOCATIONS.load(Ordering::SeqCst);
    println!(
        "in one step: the gemm crate's packing buffers {gemm} allocations, {:.1} MB; rayon's job queue {}",
        GEMM_BYTES.load(Ordering::SeqCst) as f64 / 1e6,
        RAYON_ALLOCATIONS.load(Ordering::SeqCst)
    );
    // The recorder must have seen the GEMMs' allocations, or it recorded nothing and the test proves nothing.
    assert!(gemm > 0, "no allocation recorded at all: is the counting allocator in place?");
}
