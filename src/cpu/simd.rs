//! Loops the compiler can vectorize, and a way to run them with the widest vector unit the CPU has.
//!
//! The crate is built for baseline x86-64 (SSE2), so a plain loop gets 4-wide vectors at best, and a call to
//! libm's `expf` or `tanhf` inside a loop stops vectorization altogether (tanh alone was a quarter of a training
//! step on a byte-level model). Two fixes, used by every element-wise CPU layer:
//! - `vectorized!` defines a function whose body is compiled three times, for AVX-512, for AVX2+FMA and for the
//!   baseline, and which calls the widest version the CPU supports (`level()`, decided once; the trainer's
//!   device line shows it, and `LLMRS_SIMD=avx2` or `baseline` caps it: CI runs the layer tests at all three);
//! - `exp`, `sum_map` (with `sum` and `dot` built on it) and `max` are written so that a loop calling them
//!   vectorizes: `exp` is a branch-free polynomial instead of a libm call, and the reductions keep `LANES`
//!   independent partial results instead of one serial chain (which also makes them a little more accurate than
//!   a left-to-right sum).
//!
//! The versions are whole functions, not closures handed to a dispatcher (`pulp::Arch::dispatch`, used here
//! before): a closure body that is not small is compiled once, outside the AVX-512 function that calls it, and
//! ran as SSE2 (LayerNorm, attention's softmax and the classifier did, found in the disassembly). The body of a
//! `#[target_feature]` function, the closures written inside it and the `#[inline(always)]` helpers it calls are
//! compiled with its features. The results do not depend on the version: no version contracts a * b + c into an
//! FMA (Rust never does implicitly) and the reductions add in the same order at every width.

/// Independent accumulators in the reductions: one AVX-512 register of f32.
const LANES: usize = 16;

/// `vectorized! { fn name(arg: Type, ...) -> Ret { body } }` defines `name`, which runs `body` compiled for
/// AVX-512 (x86-64-v4), AVX2+FMA (x86-64-v3) or baseline x86-64, as `level()` says. The loops in `body` must be
/// inlined into it to benefit: keep them in the body or in `#[inline(always)]` helpers such as the ones below.
/// The function takes no generic parameters (elided lifetimes are fine).
macro_rules! vectorized {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512cd,avx512dq,avx512vl")]
                #[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt,movbe,popcnt")]
                #[allow(clippy::too_many_arguments)]
                fn v4($($arg: $ty),*) $(-> $ret)? $body
                #[target_feature(enable = "avx2,fma,bmi1,bmi2,lzcnt,movbe,popcnt")]
                #[allow(clippy::too_many_arguments)]
                fn v3($($arg: $ty),*) $(-> $ret)? $body
                match $crate::cpu::simd::level() {
                    // SAFETY: `level()` is Avx512 only on a CPU with every feature v4 is compiled for.
                    $crate::cpu::simd::Level::Avx512 => return unsafe { v4($($arg),*) },
                    // SAFETY: `level()` is Avx2 or more only on a CPU with every feature v3 is compiled for.
                    $crate::cpu::simd::Level::Avx2 => return unsafe { v3($($arg),*) },
                    $crate::cpu::simd::Level::Baseline => {}
                }
            }
            $body
        }
    };
}
pub(crate) use vectorized;

/// The instruction sets `vectorized!` functions are compiled for, narrowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// x86-64 as the crate is built (SSE2), or any other architecture.
    Baseline,
    /// x86-64-v3: AVX2, FMA, BMI1/2, LZCNT, MOVBE.
    Avx2,
    /// x86-64-v4: v3 plus AVX-512 F, BW, CD, DQ, VL.
    Avx512,
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Level::Baseline if cfg!(target_arch = "x86_64") => "SSE2",
            Level::Baseline => "baseline",
            Level::Avx2 => "AVX2",
            Level::Avx512 => "AVX-512",
        })
    }
}

/// The environment variable that caps `level()`: `avx512`, `avx2` or `baseline`. For comparing the versions'
/// speed and for testing the narrower ones on a CPU that has the wider (CI runs the layer tests at all three).
pub const LLMRS_SIMD: &str = "LLMRS_SIMD";

/// The version `vectorized!` functions run: the widest this CPU has, capped by `LLMRS_SIMD` when it is set.
/// Decided once per process. A value of the variable that is not one of the three is reported on stderr and
/// ignored here; programs call `check_env` at start-up to stop on it instead.
pub fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = check_env().unwrap_or_else(|e| {
            eprintln!("warning: {e}; ignored");
            Level::Avx512
        });
        cpu_level().min(cap)
    })
}

/// The cap `LLMRS_SIMD` sets (Avx512, no cap, when it is unset or empty), or an error naming the variable, what
/// it may be and what it is.
pub fn check_env() -> crate::error::Result<Level> {
    parse_cap(std::env::var(LLMRS_SIMD).ok().as_deref())
        .map_err(|message| crate::error::Error::Config { name: LLMRS_SIMD.to_string(), message })
}

fn parse_cap(value: Option<&str>) -> Result<Level, String> {
    match value.map(str::trim) {
        None | Some("") | Some("avx512") => Ok(Level::Avx512),
        Some("avx2") => Ok(Level::Avx2),
        Some("baseline") => Ok(Level::Baseline),
        Some(other) => Err(format!("expected avx512, avx2 or baseline, found {other:?}")),
    }
}

/// The widest level this CPU supports. The features checked here are the ones `vectorized!`'s v4 and v3 copies
/// are compiled with (its `target_feature` attributes): the SAFETY of calling those copies rests on the two
/// lists agreeing, so change them together.
fn cpu_level() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let v3 = has!("avx2")
            && has!("fma")
            && has!("bmi1")
            && has!("bmi2")
            && has!("lzcnt")
            && has!("movbe")
            && has!("popcnt");
        let v4 = v3 && has!("avx512f") && has!("avx512bw") && has!("avx512cd") && has!("avx512dq") && has!("avx512vl");
        if v4 {
            return Level::Avx512;
        }
        if v3 {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

/// e^x within 2 ulp of the exact value for x in [-87.3, 88.3]; 0 below, e^88.3 above, NaN for NaN.
///
/// Cephes' `expf`: x = n ln2 + r with n = round(x / ln2) and |r| <= ln2 / 2, e^r by a degree-7 polynomial,
/// 2^n by building the float's exponent field. Written without branches or libm calls so loops vectorize.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln2 split in two so that n * LN2_HI is exact for the n that occur (|n| <= 127).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to the nearest integer and leaves that integer in the low mantissa bits.
    const ROUNDER: f32 = 12_582_912.0;
    const LOW: f32 = -87.3;
    let xc = x.clamp(LOW, 88.3);
    let shifted = xc * LOG2E + ROUNDER;
    let n = shifted - ROUNDER;
    let n_int = shifted.to_bits() as i32 - ROUNDER.to_bits() as i32;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    let two_n = f32::from_bits(((n_int + 127) << 23) as u32);
    if x < LOW {
        0.0
    } else {
        e_r * two_n
    }
}

/// The sum of f(x0[i], x1[i], ...) over the elements of the slices `xs` (up to the shortest), in `LANES`
/// interleaved partial sums. Each block of `LANES` elements is cut from every slice once, as a fixed-size array,
/// so the loop over a block has no bounds checks and vectorizes. (Indexing the slices element by element from a
/// computed position did not: the compiler could not prove the positions in bounds, kept a check per element,
/// and ran the loop on scalars.)
#[inline(always)]
pub(crate) fn sum_map<const K: usize>(xs: [&[f32]; K], f: impl Fn([f32; K]) -> f32) -> f32 {
    let n = xs.iter().map(|x| x.len()).min().unwrap_or(0);
    let mut acc = [0.0f32; LANES];
    let blocks = n / LANES;
    for block in 0..blocks {
        let chunks: [&[f32; LANES]; K] = xs.map(|x| x[block * LANES..][..LANES].try_into().unwrap());
        for (j, a) in acc.iter_mut().enumerate() {
            *a += f(chunks.map(|chunk| chunk[j]));
        }
    }
    let tail: f32 = (blocks * LANES..n).map(|i| f(xs.map(|x| x[i]))).sum();
    acc.iter().sum::<f32>() + tail
}

/// The sum of `x`, in `LANES` interleaved partial sums.
#[inline(always)]
pub(crate) fn sum(x: &[f32]) -> f32 {
    sum_map([x], |[v]| v)
}

/// The dot product of `a` and `b` (the shorter length), in `LANES` interleaved partial sums.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    sum_map([a, b], |[a, b]| a * b)
}

/// The largest element of `x` (-inf when empty; NaNs are skipped, as f32::max does).
#[inline(always)]
pub(crate) fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = a.max(v);
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite floats of the same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value_over_its_range() {
        let mut worst = (0, 0.0f32);
        let mut x = -87.3f32;
        while x < 88.3 {
            let exact = (x as f64).exp() as f32;
            let d = ulps(exp(x), exact);
            if d > worst.0 {
                worst = (d, x);
            }
            x += 0.000_37;
        }
        assert!(worst.0 <= 2, "exp({}) is {} ulp from e^x", worst.1, worst.0);
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(200.0).is_finite() && exp(200.0) > 1e38);
        // The vectorized build must agree with the scalar one element for element.
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.17).collect();
        let mut ys = vec![0.0; xs.len()];
        vectorized! {
            fn exp_all(ys: &mut [f32], xs: &[f32]) {
                ys.iter_mut().zip(xs).for_each(|(y, &x)| *y = exp(x));
            }
        }
        exp_all(&mut ys, &xs);
        for (&x, &y) in xs.iter().zip(&ys) {
            assert_eq!(y.to_bits(), exp(x).to_bits(), "x = {x}");
        }
    }

    #[test]
    fn simd_cap_values() {
        assert_eq!(parse_cap(None), Ok(Level::Avx512));
        assert_eq!(parse_cap(Some("")), Ok(Level::Avx512));
        assert_eq!(parse_cap(Some("avx2")), Ok(Level::Avx2));
        assert_eq!(parse_cap(Some(" baseline ")), Ok(Level::Baseline));
        let err = parse_cap(Some("sse4")).unwrap_err();
        assert!(err.contains("\"sse4\"") && err.contains("avx2"), "{err}");
        // Narrowest first, so that min() caps.
        assert!(Level::Baseline < Level::Avx2 && Level::Avx2 < Level::Avx512);
    }

    #[test]
    fn reductions_match_f64_references() {
        for n in [0, 1, 15, 16, 17, 100, 1027] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 89) as f32 - 44.0) / 9.0).collect();
            let s64: f64 = a.iter().map(|&x| x as f64).sum();
            let d64: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            assert!((sum(&a) as f64 - s64).abs() <= 1e-5 * (1.0 + s64.abs()), "sum, n = {n}");
            assert!((dot(&a, &b) as f64 - d64).abs() <= 1e-5 * (1.0 + d64.abs()), "dot, n = {n}");
            let m = a.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&a), m, "max, n = {n}");
        }
    }
}
