//! Matmul with bias, the layer every linear projection uses: out = inp · weightᵀ + bias, with PyTorch's
//! (OC, C) weight layout. The products go to the `gemm` crate, which takes row and column strides, so the
//! transposes below are strides, never copies.
//!
//! backward: dinp = dout · weight;  dweight += doutᵀ · inp;  dbias += column sums of dout (the parameter
//! gradients accumulate over micro-batches; dinp has no other writer, so it is overwritten and never needs zeroing).

use super::simd::vectorized;
use rayon::prelude::*;
use std::ops::Range;
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
    let (threads, dst) = (rayon::current_num_threads(), SharedDst::new(dst));
    // SAFETY: `dst` comes from a `&mut` borrow held for this call, so nothing else reads or writes it meanwhile.
    unsafe { sgemm_into(threads, m, n, k, dst, dst_rs, dst_cs, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, accumulate) }
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
    let dst = SharedDst::new(dst);
    // SAFETY: `dst` comes from a `&mut` borrow held for this call, so nothing else reads or writes it meanwhile.
    unsafe { sgemm_into(1, m, n, k, dst, dst_rs, dst_cs, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs, accumulate) }
}

/// A matrix that several tasks write at once, each task its own block of elements. A raw pointer rather than
/// slices because a block of columns of a row-major matrix is not a contiguous range: blocks side by side
/// interleave in memory and cannot be split into disjoint `&mut` slices.
#[derive(Clone, Copy)]
struct SharedDst {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: a SharedDst is only dereferenced by `sgemm_into` and `slice`, whose callers guarantee that no two tasks
// touch the same element and that the buffer outlives the tasks.
unsafe impl Send for SharedDst {}
// SAFETY: as for Send.
unsafe impl Sync for SharedDst {}

impl SharedDst {
    fn new(dst: &mut [f32]) -> Self {
        SharedDst { ptr: dst.as_mut_ptr(), len: dst.len() }
    }

    /// Its first `len` elements as a slice.
    ///
    /// # Safety
    /// No other code may read or write those elements while the slice lives.
    unsafe fn slice<'a>(self, len: usize) -> &'a mut [f32] {
        assert!(len <= self.len, "sgemm: slice out of bounds");
        // SAFETY: in bounds (asserted); exclusive by the caller's guarantee.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, len) }
    }

    /// The same buffer from element `offset` on.
    fn offset(self, offset: usize) -> Self {
        assert!(offset <= self.len, "sgemm: dst offset out of bounds");
        // SAFETY: offset <= len keeps the pointer inside (or one past the end of) the buffer.
        SharedDst { ptr: unsafe { self.ptr.add(offset) }, len: self.len - offset }
    }
}

/// dst (m, n) += lhs (m, k) · rhs (k, n) as in `sgemm`, split over `threads` threads of the pool (1: on the
/// calling thread), writing through a SharedDst.
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
    // out (n, oc) = inp (n, c) · weightᵀ (c, oc); weightᵀ[k][j] = weight[j * c + k]. In BLOCKS blocks taken by
    // whichever thread is free (see matmul_backward): the gemm crate's own split gives each thread a fixed share,
    // and the thread that finishes first waits. Each task starts its block at the bias and lets the product
    // accumulate on top (one pass over out, not two).
    let product = Product {
        m: n,
        n: oc,
        k: c,
        dst: SharedDst::new(&mut out[..n * oc]),
        dst_rs: oc,
        lhs: Operand { data: inp, rs: c, cs: 1 },
        rhs: Operand { data: weight, rs: 1, cs: c },
        accumulate: bias.is_some(),
        blocks: BLOCKS,
    };
    run_tasks(product.tasks(), |i| {
        let (rows, cols) = product.block(i);
        if let Some(bias) = bias {
            for r in rows {
                // SAFETY: row r's columns `cols` belong to this task's block alone (a column block's rows share
                // their other columns with other tasks, so the slice covers the block's columns only), and out
                // stays borrowed mutably until run_tasks has returned.
                let row = unsafe { product.dst.offset(r * oc + cols.start).slice(cols.len()) };
                row.copy_from_slice(&bias[cols.clone()]);
            }
        }
        // SAFETY: block i's elements are this task's alone, and out stays borrowed mutably until run_tasks has
        // returned.
        unsafe { product.run(i) };
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
    let dout = &dout[..n * oc];
    // The backward is three independent jobs: dinp (n, c) = dout (n, oc) · weight (oc, c), dweight (oc, c) +=
    // doutᵀ (oc, n) · inp (n, c) (the same FLOPs as dinp, but 10-20% slower in the gemm crate), and the column sums
    // for dbias. Running each product on all threads in turn loses time in the gemm crate's split of the dweight
    // shape; running them side by side, one thread each, leaves the dinp thread idle for 10-20% of the time
    // (bytes6: 9% of the step). So they are cut into a fixed list of tasks that the threads take in order from a
    // shared counter, largest first: dweight in DWEIGHT_BLOCKS blocks (smaller blocks made it slower), dinp in
    // BLOCKS, the column sums last.
    let dweight = Product {
        m: oc,
        n: c,
        k: n,
        dst: SharedDst::new(&mut dweight[..oc * c]),
        dst_rs: c,
        lhs: Operand { data: dout, rs: 1, cs: oc },
        rhs: Operand { data: inp, rs: c, cs: 1 },
        accumulate: true,
        blocks: DWEIGHT_BLOCKS,
    };
    let dinp = Product {
        m: n,
        n: c,
        k: oc,
        dst: SharedDst::new(&mut dinp[..n * c]),
        dst_rs: c,
        lhs: Operand { data: dout, rs: oc, cs: 1 },
        rhs: Operand { data: weight, rs: c, cs: 1 },
        accumulate: false,
        blocks: BLOCKS,
    };
    let dbias = Mutex::new(dbias);
    let (dweight_tasks, dinp_tasks) = (dweight.tasks(), dinp.tasks());
    run_tasks(dweight_tasks + dinp_tasks + 1, |i| {
        if i < dweight_tasks {
            // SAFETY: every task writes its own block of dweight or dinp, and both stay borrowed mutably until
            // run_tasks has returned.
            unsafe { dweight.run(i) };
        } else if i < dweight_tasks + dinp_tasks {
            // SAFETY: as for dweight.
            unsafe { dinp.run(i - dweight_tasks) };
        } else if let Some(dbias) = dbias.lock().expect("no task panicked").take() {
            column_sums(&mut dbias[..oc], dout);
        }
    });
}

/// A read-only matrix operand: element (i, j) at data[i rs + j cs].
struct Operand<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

/// dst (m, n), row-major with rows dst_rs apart, = (or += with `accumulate`) lhs (m, k) · rhs (k, n), cut along
/// the longer side of dst into blocks in the proportions `blocks`. Every block keeps the whole K. How a product
/// is cut depends on its shape only, never on the thread count: the gemm crate picks its kernel and its K
/// blocking by the shape it is given (a block of 16 x 16 outputs is summed by another kernel, in another order,
/// than the whole), so the same cut on any number of threads is what keeps the results bitwise independent of
/// it. With more threads than blocks, each block is split further by the gemm crate, which sums the same way on
/// any number of threads. Cutting along the longer side means the operand that every block needs whole (and the
/// gemm crate packs again for each block) is the one along the shorter side: cut by rows, every block packs all
/// of rhs (k, n), by columns all of lhs (m, k). (d12's lm head made that matter: row blocks of its 256 x 50304
/// logits each packed the whole 50304 x 768 weight.)
struct Product<'a> {
    m: usize,
    n: usize,
    k: usize,
    dst: SharedDst,
    dst_rs: usize,
    lhs: Operand<'a>,
    rhs: Operand<'a>,
    accumulate: bool,
    blocks: &'static [usize],
}

impl Product<'_> {
    fn tasks(&self) -> usize {
        self.blocks.len()
    }

    /// Block i's rows and columns of dst.
    fn block(&self, i: usize) -> (Range<usize>, Range<usize>) {
        let side = self.m.max(self.n);
        let part = block_range(side, self.blocks, i);
        if self.m >= self.n {
            (part, 0..self.n)
        } else {
            (0..self.m, part)
        }
    }

    /// Computes block i.
    ///
    /// # Safety
    /// No other code may touch block i's elements of dst meanwhile, and dst's buffer must stay alive.
    unsafe fn run(&self, i: usize) {
        let (rows, cols) = self.block(i);
        if rows.is_empty() || cols.is_empty() || self.k == 0 {
            return;
        }
        let (lhs, rhs) = (&self.lhs, &self.rhs);
        let dst = self.dst.offset(rows.start * self.dst_rs + cols.start);
        let lhs_block = &lhs.data[rows.start * lhs.rs..];
        let rhs_block = &rhs.data[cols.start * rhs.cs..];
        let (m, n) = (rows.len(), cols.len());
        // More threads than blocks (4 blocks, or 2 + 4 in the backward, run at a time): the gemm crate splits each
        // block among a share of them.
        let threads = (rayon::current_num_threads() / self.blocks.len()).max(1);
        // SAFETY: the caller's guarantee, for exactly the block's elements (the (m, n) block at its offset).
        unsafe {
            sgemm_into(
                threads,
                m,
                n,
                self.k,
                dst,
                self.dst_rs,
                1,
                lhs_block,
                lhs.rs,
                lhs.cs,
                rhs_block,
                rhs.rs,
                rhs.cs,
                self.accumulate,
            )
        };
    }
}

/// The forward product's and dinp's blocks, as proportions of the side they cut. Four, so that packing the operand
/// every block needs whole costs little (bytes6's products alone, one thread: 4 blocks 1.03x the time of one call,
/// 8 blocks 1.05x); two large ones first and two small ones last, so that the thread that finishes first waits
/// for at most a small block. With four equal blocks one CPU sat idle, while the other finished a last block, in
/// 4.3-6.6% of a bytes6 run's steady steps (perf -a); with these, 1.5-3.6%.
const BLOCKS: &[usize] = &[4, 4, 1, 1];
/// dweight's blocks: two halves. Its K (B*T) is long, and 4 blocks cost it 1.1x the time of one call; the dinp
/// blocks queued behind them even the threads out.
const DWEIGHT_BLOCKS: &[usize] = &[1, 1];

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

/// Block i of `len` cut in the proportions `weights`: its start and end are rounded up to a multiple of 16
/// (whole vectors), so late blocks may be empty when `len` is small.
fn block_range(len: usize, weights: &[usize], i: usize) -> Range<usize> {
    let total: usize = weights.iter().sum();
    let bound = |j: usize| {
        let before: usize = weights[..j].iter().sum();
        (len * before).div_ceil(total).next_multiple_of(16).min(len)
    };
    bound(i)..bound(i + 1)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocks of a side tile it exactly (each element written by one task, none left out), in order, each
    /// starting at a multiple of 16 or at the end.
    #[test]
    fn blocks_tile_the_side() {
        for weights in [BLOCKS, DWEIGHT_BLOCKS, &[1][..], &[3, 1, 2][..]] {
            for len in 0..600 {
                let mut next = 0;
                for i in 0..weights.len() {
                    let r = block_range(len, weights, i);
                    assert_eq!(r.start, next, "len {len}, weights {weights:?}: block {i} starts at {}", r.start);
                    assert!(r.start <= r.end && r.end <= len, "len {len}, weights {weights:?}: block {i} is {r:?}");
                    assert!(r.start % 16 == 0 || r.start == len, "len {len}: block {i} starts at {}", r.start);
                    next = r.end;
                }
                assert_eq!(next, len, "len {len}, weights {weights:?}: the blocks end at {next}");
            }
        }
        // bytes6's rows: 1648 + 1632 + 416 + 400.
        let sizes: Vec<usize> = (0..4).map(|i| block_range(4096, BLOCKS, i).len()).collect();
        assert_eq!(sizes, [1648, 1632, 416, 400]);
    }
}
