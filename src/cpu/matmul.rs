//! Matmul with bias, the layer every linear projection uses: out = inp · weightᵀ + bias, with PyTorch's
//! (OC, C) weight layout. The products go to the `gemm` crate, which takes row and column strides, so the
//! transposes below are strides, never copies.
//!
//! backward: dinp = dout · weight;  dweight += doutᵀ · inp;  dbias += column sums of dout (the parameter
//! gradients accumulate over micro-batches; dinp has no other writer, so it is overwritten and never needs zeroing).

use super::simd::vectorized;
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// dst (m, n) += lhs (m, k) · rhs (k, n), each operand given by its row stride and column stride in elements.
/// With `accumulate` false, dst is overwritten. Uses every thread of the pool, split by the gemm crate (the
/// emulator's cuBLAS calls; the layers below cut their products into tasks themselves).
#[cfg(feature = "emu")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    dst_cs: usize,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
    accumulate: bool,
) {
    let threads = rayon::current_num_threads();
    sgemm_with(threads, m, n, k, dst, dst_rs, dst_cs, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, accumulate)
}

/// `sgemm` on the calling thread only, for callers that are already one task of a parallel loop.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_serial(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    dst_cs: usize,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
    accumulate: bool,
) {
    sgemm_with(1, m, n, k, dst, dst_rs, dst_cs, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, accumulate)
}

/// `sgemm` split over `threads` threads of the pool (1: on the calling thread).
#[allow(clippy::too_many_arguments)]
fn sgemm_with(
    threads: usize,
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    dst_cs: usize,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
    accumulate: bool,
) {
    let dst = SharedDst::new(dst);
    // SAFETY: `dst` comes from a `&mut` borrow held for this call, so nothing else reads or writes it meanwhile.
    unsafe { sgemm_into(threads, m, n, k, dst, dst_rs, dst_cs, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, accumulate) }
}

/// A matrix that several tasks write at once, each task its own block of elements. A raw pointer rather than
/// slices because a block of columns of a row-major matrix is not a contiguous range: blocks side by side
/// interleave in memory and cannot be split into disjoint `&mut` slices.
#[derive(Clone, Copy)]
struct SharedDst {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: a SharedDst is only dereferenced by `sgemm_into`, whose callers guarantee that no two tasks write the
// same element and that the buffer outlives the tasks.
unsafe impl Send for SharedDst {}
// SAFETY: as for Send.
unsafe impl Sync for SharedDst {}

impl SharedDst {
    fn new(dst: &mut [f32]) -> Self {
        SharedDst { ptr: dst.as_mut_ptr(), len: dst.len() }
    }

    /// Its first `rows` rows of `cols` elements as a slice.
    ///
    /// # Safety
    /// No other code may read or write those elements while the slice lives.
    unsafe fn rows<'a>(self, rows: usize, cols: usize) -> &'a mut [f32] {
        assert!(rows * cols <= self.len, "sgemm: rows out of bounds");
        // SAFETY: in bounds (asserted); exclusive by the caller's guarantee.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, rows * cols) }
    }

    /// The same buffer from element `offset` on.
    fn offset(self, offset: usize) -> Self {
        assert!(offset <= self.len, "sgemm: dst offset out of bounds");
        // SAFETY: offset <= len keeps the pointer inside (or one past the end of) the buffer.
        SharedDst { ptr: unsafe { self.ptr.add(offset) }, len: self.len - offset }
    }
}

/// `sgemm_with` writing through a SharedDst.
///
/// # Safety
/// While this runs, no other code may read or write the elements of `dst` this product writes (the (m, n) block
/// its strides reach), and the buffer must stay alive.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_into(
    threads: usize,
    m: usize,
    n: usize,
    k: usize,
    dst: SharedDst,
    dst_rs: usize,
    dst_cs: usize,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
    accumulate: bool,
) {
    // Bounds of the last element each operand touches, checked so the raw-pointer call below stays in bounds.
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(last(m, n, dst_rs, dst_cs) < dst.len, "sgemm: dst too small");
    assert!(last(m, k, lhs_rs, lhs_cs) < lhs.len(), "sgemm: lhs too small");
    assert!(last(k, n, rhs_rs, rhs_cs) < rhs.len(), "sgemm: rhs too small");
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above keep every element the strides reach inside its buffer; the caller guarantees
    // that nothing else touches the elements of dst written here, so they cannot alias lhs or rhs either.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst_cs as isize,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// out: (B, T, OC); inp: (B, T, C); weight: (OC, C); bias: (OC) or none.
#[allow(clippy::too_many_arguments)]
pub fn matmul_forward(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    b: usize,
    t: usize,
    c: usize,
    oc: usize,
) {
    let n = b * t;
    let out = &mut out[..n * oc];
    // Row blocks, two per thread, taken by whichever thread is free (see matmul_backward): the gemm crate's own
    // split gives each thread a fixed half, and the thread that finishes first waits. Each task starts its rows
    // at the bias and lets the product accumulate on top (one pass over out, not two).
    // out (n, oc) = inp (n, c) · weightᵀ (c, oc); weightᵀ[k][j] = weight[j * c + k].
    let rows = block_size(n, tasks_per_product(rayon::current_num_threads()));
    let out_dst = SharedDst::new(out);
    run_tasks(n.div_ceil(rows), |i| {
        let (r0, r1) = (i * rows, ((i + 1) * rows).min(n));
        let dst = out_dst.offset(r0 * oc);
        if let Some(bias) = bias {
            // SAFETY: rows r0..r1 of out are this task's alone, and out stays borrowed mutably until run_tasks
            // has returned.
            let rows_out = unsafe { dst.rows(r1 - r0, oc) };
            rows_out.chunks_exact_mut(oc).for_each(|row| row.copy_from_slice(&bias[..oc]));
        }
        // SAFETY: as above.
        unsafe { sgemm_into(1, r1 - r0, oc, c, dst, oc, 1, &inp[r0 * c..], c, 1, weight, 1, c, bias.is_some()) };
    });
}

/// dinp: (B, T, C) overwritten; dweight: (OC, C), dbias: (OC) accumulate; dout: (B, T, OC); inp: (B, T, C);
/// weight: (OC, C).
#[allow(clippy::too_many_arguments)]
pub fn matmul_backward(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    b: usize,
    t: usize,
    c: usize,
    oc: usize,
) {
    let n = b * t;
    let (dout, dinp, dweight) = (&dout[..n * oc], &mut dinp[..n * c], &mut dweight[..oc * c]);
    // The backward is three independent jobs: dinp (n, c) = dout (n, oc) · weight (oc, c), dweight (oc, c) +=
    // doutᵀ (oc, n) · inp (n, c) (the same FLOPs as dinp, but 10-20% slower in the gemm crate), and the column sums
    // for dbias. Running each product on all threads in turn loses time in the gemm crate's split of the dweight
    // shape; running them side by side, one thread each, leaves the dinp thread idle for 10-20% of the time
    // (bytes6: 9% of the step). So they are cut into a fixed list of tasks that the threads take in order from a
    // shared counter, largest first: dweight in one block per thread along its longer side (blocks along the
    // shorter side made the products slower), dinp in two row blocks per thread, the column sums last. Every
    // block keeps the whole K of its product, so each output is the same sum in the same order however many
    // threads there are.
    let threads = rayon::current_num_threads();
    let dweight_split = if oc >= c { oc } else { c };
    let dweight_block = block_size(dweight_split, threads);
    let dweight_tasks = dweight_split.div_ceil(dweight_block);
    let dinp_block = block_size(n, tasks_per_product(threads));
    let dinp_tasks = n.div_ceil(dinp_block);
    let (dweight, dinp) = (SharedDst::new(dweight), SharedDst::new(dinp));
    let dbias = Mutex::new(dbias);
    let task = |i: usize| {
        if i < dweight_tasks {
            let (i0, i1) = (i * dweight_block, ((i + 1) * dweight_block).min(dweight_split));
            // SAFETY: each task writes its own block of dweight's rows or columns, and dweight and dinp stay
            // borrowed mutably until every task has finished (the parallel loop below returns after them).
            unsafe {
                if oc >= c {
                    let dst = dweight.offset(i0 * c);
                    sgemm_into(1, i1 - i0, c, n, dst, c, 1, &dout[i0..], 1, oc, inp, c, 1, true);
                } else {
                    let dst = dweight.offset(i0);
                    sgemm_into(1, oc, i1 - i0, n, dst, c, 1, dout, 1, oc, &inp[i0..], c, 1, true);
                }
            }
        } else if i < dweight_tasks + dinp_tasks {
            let j = i - dweight_tasks;
            let (r0, r1) = (j * dinp_block, ((j + 1) * dinp_block).min(n));
            // SAFETY: as above; each task writes its own rows of dinp.
            unsafe {
                sgemm_into(1, r1 - r0, c, oc, dinp.offset(r0 * c), c, 1, &dout[r0 * oc..], oc, 1, weight, c, 1, false)
            };
        } else if let Some(dbias) = dbias.lock().expect("no task panicked").take() {
            column_sums(&mut dbias[..oc], dout);
        }
    };
    run_tasks(dweight_tasks + dinp_tasks + 1, task);
}

/// How many row blocks a product is cut into for `threads` threads: two each, so that a thread that finishes its
/// first block early can take a block the other thread has not started; one block with one thread.
fn tasks_per_product(threads: usize) -> usize {
    if threads > 1 {
        2 * threads
    } else {
        1
    }
}

/// Runs task(0), task(1), ... task(tasks - 1), each once, on all threads of the pool: every thread takes the
/// next task from a shared counter until none is left, so tasks start in order and a thread that is fast (or
/// not descheduled) takes more of them. Allocates nothing (a rayon scope would allocate a job per task).
fn run_tasks(tasks: usize, task: impl Fn(usize) + Sync) {
    let next = AtomicUsize::new(0);
    (0..rayon::current_num_threads().min(tasks)).into_par_iter().for_each(|_| loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= tasks {
            break;
        }
        task(i);
    });
}

/// Blocks of `len` for `parts` tasks: nearly equal, a multiple of 16 (whole vectors) unless `len` is smaller.
fn block_size(len: usize, parts: usize) -> usize {
    len.div_ceil(parts.max(1)).next_multiple_of(16).clamp(1, len.max(1))
}

vectorized! {
    /// db (OC) += the sums over all rows of dout (rows OC apart), row after row: each column is added in row
    /// order, and the rows are read front to back.
    fn column_sums(db: &mut [f32], dout: &[f32]) {
        for row in dout.chunks_exact(db.len()) {
            for (d, &g) in db.iter_mut().zip(row) {
                *d += g;
            }
        }
    }
}
