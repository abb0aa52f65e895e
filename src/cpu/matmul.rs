//! Matmul with bias, the layer every linear projection uses: out = inp · weightᵀ + bias, with PyTorch's
//! (OC, C) weight layout. The products go to the `gemm` crate, which takes row and column strides, so the
//! transposes below are strides, never copies.
//!
//! backward: dinp = dout · weight;  dweight += doutᵀ · inp;  dbias += column sums of dout (the parameter
//! gradients accumulate over micro-batches; dinp has no other writer, so it is overwritten and never needs zeroing).

use super::simd::vectorized;
use rayon::prelude::*;

/// dst (m, n) += lhs (m, k) · rhs (k, n), each operand given by its row stride and column stride in elements.
/// With `accumulate` false, dst is overwritten. Uses every thread of the pool.
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
    // Bounds of the last element each operand touches, checked so the raw-pointer call below stays in bounds.
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(last(m, n, dst_rs, dst_cs) < dst.len(), "sgemm: dst too small");
    assert!(last(m, k, lhs_rs, lhs_cs) < lhs.len(), "sgemm: lhs too small");
    assert!(last(k, n, rhs_rs, rhs_cs) < rhs.len(), "sgemm: rhs too small");
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the asserts above keep every element the strides reach inside its slice; dst is borrowed mutably
    // and so cannot alias lhs or rhs.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
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
    // Start every output row at the bias and let the product accumulate on top: one pass over out, not two.
    if let Some(bias) = bias {
        out[..n * oc].par_chunks_mut(oc).for_each(|row| row.copy_from_slice(&bias[..oc]));
    }
    // out (n, oc) = inp (n, c) · weightᵀ (c, oc); weightᵀ[k][j] = weight[j * c + k].
    sgemm(n, oc, c, out, oc, 1, inp, c, 1, weight, 1, c, bias.is_some());
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
    // dinp (n, c) = dout (n, oc) · weight (oc, c)
    let mut dinp_product = |threads| sgemm_with(threads, n, c, oc, dinp, c, 1, dout, oc, 1, weight, c, 1, false);
    // dweight (oc, c) += doutᵀ (oc, n) · inp (n, c); doutᵀ[j][i] = dout[i * oc + j].
    let mut dweight_product = |threads| sgemm_with(threads, oc, c, n, dweight, c, 1, dout, 1, oc, inp, c, 1, true);
    // dbias (oc) += the column sums of dout: one pass on one thread, run beside the products (below).
    let dbias_sums = || {
        if let Some(dbias) = dbias {
            column_sums(&mut dbias[..oc], dout);
        }
    };
    // The two products are independent and the same size (2 n c oc FLOPs each), so with an even number of
    // threads each runs on half of them, side by side. That beats running them one after the other on all threads
    // (bytes6, 2 threads: steps ~5% faster): each thread then runs one product from start to end, with no
    // hand-offs between the threads inside it, and the dweight product (a small output summed over K = B*T)
    // splits badly in the gemm crate. The column sums wait behind the dweight product, where the thread that
    // finishes dinp first takes them (rayon's work stealing), so they fill the time one side would otherwise
    // wait for the other. With an odd thread count the halves would be unequal, so the products take turns and
    // the column sums go to whichever thread is free.
    let threads = rayon::current_num_threads();
    if threads % 2 == 0 {
        rayon::join(|| dinp_product(threads / 2), || rayon::join(|| dweight_product(threads / 2), dbias_sums));
    } else {
        rayon::join(
            || {
                dinp_product(threads);
                dweight_product(threads);
            },
            dbias_sums,
        );
    }
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
