//! Elementwise float64 math whose results are the same bits on every CPU, instruction set and
//! platform: `exp`, `log`, `log1p`, `expm1`, `sigmoid`, `log_sigmoid`, `tanh`, `erf`, `sin`,
//! `cos`, `gelu`, `gelu_tanh` and `silu` ([`PortableFn`], [`apply`]); and [`grid`], which rounds
//! values onto integer grids with power-of-two scales, so that float64 sums and matrix products
//! of network activations are exact, hence the same in any summation order.
//!
//! Lossless decoding evaluates a network on another machine and needs the very same float
//! results as the encoder. The platform's `exp`, `log`, `tanh`, `erf`, `sin`, ... (libm, or the
//! vector libraries that frameworks use) differ between systems in the last bits, so nothing
//! here calls them. Every function is a fixed sequence of IEEE-754 basic operations per element:
//! `+ - * /`, comparisons and selects, `abs` and `copysign` (sign-bit moves), exact conversions
//! and bit moves (`f64::to_bits` / `from_bits`, integer adds and shifts on the bits). Each of
//! these is correctly rounded (or exact) by IEEE-754, so any conforming hardware gives the same
//! bits. Rust never contracts `a * b + c` into a fused multiply-add unless asked (nothing here
//! asks), never reassociates float operations, and the loop in [`apply`] has no reduction, so
//! autovectorization (SSE2, AVX2, NEON, ...) computes each element exactly like the scalar
//! code. Conditions: round-to-nearest-even with subnormals enabled (the default everywhere;
//! flush-to-zero or denormals-are-zero modes would change results near the underflow range),
//! and a target whose `f64` is IEEE binary64 arithmetic (every Rust target except x87-only
//! ones such as `i586`, whose 80-bit registers round twice).
//!
//! Every NaN result is the canonical quiet NaN `0x7ff8000000000000` (hardware differs in the
//! payload and sign of the NaN it creates), so even NaN outputs are bit-identical.
//!
//! # The methods
//!
//! Integers are rounded to with `n = (t + 1.5*2^52) - 1.5*2^52` (exact for `|t| < 2^51`, ties
//! to even); the low bits of `t + 1.5*2^52` are `n` as an integer. `2^n` is built from its
//! exponent bits (exact), and a result `p * 2^n` is scaled in two steps `(p * 2^(n/2)) *
//! 2^(n - n/2)`, so huge and tiny `n` work and a subnormal result is rounded once. Long
//! polynomials are evaluated by Estrin's scheme (pairs of terms combined with `w^2`, `w^4`,
//! `w^8`), whose short dependency chains let a vectorized loop overlap more elements.
//!
//! * `exp(x)`: `x` clamped to `[-1100, 1100]` (beyond, the result is `inf` or `0` anyway);
//!   `n = round(x * log2(e))`, `r = (x - n*L1) - n*L2` with `ln 2 = L1 + L2` (fdlibm's split:
//!   `L1` has 32 bits, so `n*L1` and `x - n*L1` are exact), `|r| <= 0.347`;
//!   `e^r = 1 + r + r^2 (1/2! + r/3! + ... + r^11/13!)` (Taylor, truncation error below
//!   `2^-60`), where `1 + r` is summed exactly (Fast2Sum) and its rounding error added to the
//!   small terms first, so `e^r` is rounded about once; then `exp(x) = e^r * 2^n`.
//! * `expm1(x)`: the same reduction (`x` clamped to `[-60, 1100]`) and
//!   `((1 - 2^-n) + r + r^2 (...)) * 2^n`, `1 - 2^-n` exact for `|n| <= 53` and summed with `r`
//!   the same way; for `n = 0` this is the series of `e^x - 1` itself, accurate near 0.
//! * `log(x)` (fdlibm `e_log.c`): subnormals are scaled by `2^54`; `x = 2^k m` with `m` in
//!   `[sqrt(2)/2, sqrt(2))` from the bits, `f = m - 1`, `s = f / (2 + f)`, fdlibm's polynomial
//!   `R(s^2)` (`Lg1..Lg7`) and `log(x) = k*L1 - ((f^2/2 - (s (f^2/2 + R) + k*L2)) - f)`.
//! * `log1p(x)`: `u = 1 + x` and its exact rounding error `c` (Fast2Sum), then
//!   `log(u) + c / u`.
//! * `sigmoid(x)`: `e = exp(-|x|)`, `1 / (1 + e)` for `x >= 0`, `e / (1 + e)` otherwise.
//!   `log_sigmoid(x) = min(x, 0) - log1p(exp(-|x|))`; `silu(x) = x * sigmoid(x)`.
//! * `tanh(x) = sign(x) * t / (t + 2)` with `t = expm1(2 min(|x|, 40))`.
//! * `erf` and `erfc` (fdlibm `s_erf.c`, its coefficients): on `|x| < 0.84375`
//!   `x + x P(x^2)/Q(x^2)`; on `[0.84375, 1.25)` `c + P(s)/Q(s)` with `s = |x| - 1`; beyond,
//!   `erfc(|x|) = exp(-z^2 - 0.5625 + (z - |x|)(z + |x|) + R/S) / |x|` where `z` is `|x|` with
//!   its low 32 bits cleared (so `-z^2 - 0.5625` is exact; the exponential takes it and the small
//!   rest as two parts) and `R/S` fdlibm's rational function of `1/x^2`, evaluated as the same
//!   ratio of the reversed polynomials in `x^2` (no division by `x^2`). The four rational
//!   functions share one evaluation whose coefficients are selected per element, so the loop
//!   has no branches. `erf` and `erfc` are combined from these with fdlibm's formulas.
//! * `gelu(x) = x/2 * erfc(-x/sqrt 2)` (equal to `x/2 * (1 + erf(x/sqrt 2))`, torch's default
//!   GELU, without the cancellation of `1 + erf` for negative `x`). `-x/sqrt 2 = v + v'` to about
//!   107 bits (Dekker's product with a two-part `1/sqrt 2`), and `erfc(v + v') = erfc(v) (1 -
//!   2 v v')` to first order for `v > 0`: the relative error of `erfc(v)` is `2 v^2` times that
//!   of `v`, so a rounded `v` alone would cost up to `1e-13` in the tail.
//! * `gelu_tanh(x) = x/2 (1 + tanh(u)) = x * sigmoid(2u)` with
//!   `u = C (x + K x^3)`, `C` and `K` torch's float64 constants (`sqrt(2/pi)`, `0.044715`):
//!   stable for both signs. `u = u + u'` is computed to about 100 bits with Dekker's products and
//!   `sigmoid(2u + 2u') = s (1 + (1 - s) 2u')`, for the same reason as in `gelu`.
//! * `sin`, `cos`: `n = round(x * 2/pi)`, `r = (((x - n P1) - n P2) - n P3) - n P4` with
//!   fdlibm's `pi/2 = P1 + P2 + P3 + P4` (three 33-bit parts and a 53-bit tail: `n Pi` is exact
//!   for `|n| < 2^20`, and the worst cancellation below that, `|r| = 6.2e-19` at `x = 29 pi/2`,
//!   still leaves `r` accurate), then FreeBSD's `k_sin.c` and `k_cos.c` polynomials on
//!   `|r| <= pi/4`, the quadrant `n mod 4` picking sine or cosine and the sign.
//!
//! * [`grid`]: per slice, the largest magnitude `m` (NaNs ignored) by compares only (a maximum
//!   is exact, so its order of evaluation, vectorized or not, does not matter), the scale
//!   `2^(bits + 1022 - E)` built from the exponent field `E` of `m` (integer arithmetic on the
//!   bits), the product by it (exact unless it underflows) and IEEE's roundToIntegral, ties to
//!   even (`f64::round_ties_even`, exact).
//!
//! # Accuracy
//!
//! Measured against mpmath (300 bits; 20,000 random points per range) and against std's
//! functions (glibc; a million points per range, the `accuracy_report` test), the largest
//! relative error is below `1.5e-16` for `exp`, `log`, `expm1` and `erf`, below `3e-16` for
//! `log1p`, `sigmoid`, `log_sigmoid`, `silu`, `tanh`, `sin` and `cos`, and below `4.5e-16` for
//! `gelu` and `gelu_tanh`: `exp` on `[-708, 709.78]`, `log` on all positive normals and
//! subnormals, `expm1`, `log1p`, `tanh`, `erf` and `sin` near 0 too, and the tails of
//! `sigmoid`, `log_sigmoid`, `silu`, `erfc`, `gelu` and `gelu_tanh` down to the underflow of
//! the result. The tests hold every sweep below `1e-14`. Subnormal results carry the absolute
//! error of their spacing (`2^-1074`), so their relative error is larger. `sin` and `cos` are
//! accurate for `|x| < 2^19 pi` (about `1.6e6`, `|n| < 2^20`); beyond, `n P1` is no longer
//! exact and the absolute error grows to about half the spacing of `x` itself (the results stay
//! deterministic and in `[-1, 1]`, also for huge `x` where they mean nothing).
//!
//! # Special values
//!
//! NaN in gives NaN out. `exp(-inf) = 0`, `exp(inf) = inf`, overflow gives `inf` and underflow
//! `0` or a subnormal; `log(0) = -inf`, `log(x < 0) = NaN`, `log(inf) = inf`;
//! `log1p(-1) = -inf`; `expm1(-inf) = -1`; `sigmoid(inf) = 1`, `sigmoid(-inf) = 0`;
//! `tanh(+-inf) = +-1`; `erf(+-inf) = +-1`; `sin` and `cos` of `+-inf` are NaN;
//! `gelu`, `gelu_tanh` and `silu` map `inf` to `inf` and `-inf` to `-0`. `exp`, `log1p`,
//! `expm1`, `tanh`, `erf`, `sin`, `gelu`, `gelu_tanh` and `silu` keep the sign of a zero.
//!
//! # Speed
//!
//! [`apply`] runs one plain loop per function that the compiler vectorizes (with AVX2 where the
//! CPU has it, picked at run time; the same operations, so the same bits). On one core of an
//! AMD EPYC at 2.4 GHz (AVX2), per element: 2.5-3.2 ns for `exp`, `expm1`, `sigmoid`, `silu`,
//! `tanh`, `sin`, `cos` and `log`, 4.4 for `log1p`, 6 for `gelu_tanh`, 7.4 for `log_sigmoid`,
//! 10.5 for `erf` and 12 for `gelu` (torch's own float64 GELU: 11 on the same core).
//! [`grid`] runs the same way (AVX2, else SSE4.1 for `roundpd`, else the baseline loop): about
//! 0.35-0.45 ns per element on one core of an AMD EPYC (AVX2), rows (`inner == 1`) and
//! columns alike.

use crate::error::{CoreError, CoreResult};

/// An elementwise function of this module, by name ([`PortableFn::from_name`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortableFn {
    /// `e^x`.
    Exp,
    /// The natural logarithm.
    Log,
    /// `log(1 + x)`, accurate near 0.
    Log1p,
    /// `e^x - 1`, accurate near 0.
    Expm1,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// `log(sigmoid(x)) = min(x, 0) - log1p(e^-|x|)`.
    LogSigmoid,
    /// The hyperbolic tangent.
    Tanh,
    /// The error function.
    Erf,
    /// The sine.
    Sin,
    /// The cosine.
    Cos,
    /// `x/2 * (1 + erf(x / sqrt 2))`, torch's default GELU.
    Gelu,
    /// `x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`, torch's GELU with `approximate="tanh"`.
    GeluTanh,
    /// `x * sigmoid(x)`.
    Silu,
}

impl PortableFn {
    /// Every function, in the order of [`PortableFn::NAMES`].
    pub const ALL: [PortableFn; 13] = [
        PortableFn::Exp,
        PortableFn::Log,
        PortableFn::Log1p,
        PortableFn::Expm1,
        PortableFn::Sigmoid,
        PortableFn::LogSigmoid,
        PortableFn::Tanh,
        PortableFn::Erf,
        PortableFn::Sin,
        PortableFn::Cos,
        PortableFn::Gelu,
        PortableFn::GeluTanh,
        PortableFn::Silu,
    ];

    /// The names that [`PortableFn::from_name`] accepts, in the order of [`PortableFn::ALL`].
    pub const NAMES: [&'static str; 13] = [
        "exp",
        "log",
        "log1p",
        "expm1",
        "sigmoid",
        "log_sigmoid",
        "tanh",
        "erf",
        "sin",
        "cos",
        "gelu",
        "gelu_tanh",
        "silu",
    ];

    /// The function's name (`"exp"`, `"log_sigmoid"`, `"gelu_tanh"`, ...).
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The function called `name` (one of [`PortableFn::NAMES`]); anything else is an error
    /// that lists the accepted names.
    ///
    /// ```
    /// use ardm_core::portable::PortableFn;
    /// assert_eq!(PortableFn::from_name("gelu").unwrap(), PortableFn::Gelu);
    /// assert!(PortableFn::from_name("softplus").is_err());
    /// ```
    pub fn from_name(name: &str) -> CoreResult<Self> {
        Self::NAMES
            .iter()
            .position(|&n| n == name)
            .map(|i| Self::ALL[i])
            .ok_or_else(|| {
                CoreError::new(format!(
                    "unknown portable function {name:?}; expected one of: {}",
                    Self::NAMES.join(", ")
                ))
            })
    }

    /// The function at one point; the same bits as [`apply`] gives for that element.
    pub fn eval(self, x: f64) -> f64 {
        let mut one = [x];
        apply_with(self, &mut one);
        one[0]
    }
}

/// Replaces every element of `values` by `func` of it, in place. The result of each element
/// depends on that element only, and equals [`PortableFn::eval`] bit for bit.
///
/// ```
/// use ardm_core::portable::{apply, PortableFn};
/// let mut v = [0.0, 1.0, f64::NEG_INFINITY];
/// apply(PortableFn::Exp, &mut v);
/// assert_eq!(v, [1.0, std::f64::consts::E, 0.0]);
/// ```
pub fn apply(func: PortableFn, values: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            unsafe { apply_avx2(func, values) };
            return;
        }
    }
    apply_with(func, values)
}

/// [`apply`] to float32 values, in place: each is widened to float64 (exactly), `func` applied,
/// and the result rounded to float32 (to nearest, ties to even; the canonical NaN becomes
/// float32's canonical NaN), the same bits as widening the whole array, [`apply`] and
/// narrowing it, in blocks that stay in the cache.
///
/// ```
/// use ardm_core::portable::{apply_f32, PortableFn};
/// let mut v = [0.0f32, 1.0];
/// apply_f32(PortableFn::Exp, &mut v);
/// assert_eq!(v, [1.0, std::f64::consts::E as f32]);
/// ```
pub fn apply_f32(func: PortableFn, values: &mut [f32]) {
    const BLOCK: usize = 512;
    let mut wide = [0.0f64; BLOCK];
    for chunk in values.chunks_mut(BLOCK) {
        let wide = &mut wide[..chunk.len()];
        for (w, &v) in wide.iter_mut().zip(chunk.iter()) {
            *w = f64::from(v);
        }
        apply(func, wide);
        for (v, &w) in chunk.iter_mut().zip(wide.iter()) {
            *v = w as f32;
        }
    }
}

/// [`apply_with`] compiled with AVX2 enabled (wider vectors; the same operations per element,
/// so the same bits: the AVX2 feature does not include FMA, and nothing asks for it anyway).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn apply_avx2(func: PortableFn, values: &mut [f64]) {
    apply_with(func, values)
}

/// The loop of [`apply`]: one plain loop per function, each kernel inlined into it.
#[inline(always)]
fn apply_with(func: PortableFn, values: &mut [f64]) {
    // A macro, not a function taking the kernel as a closure: the kernels must be inlined into
    // the loop (whatever their size) for it to be vectorized.
    macro_rules! map {
        ($kernel:ident) => {
            for v in values.iter_mut() {
                *v = canonical($kernel(*v));
            }
        };
    }
    match func {
        PortableFn::Exp => map!(exp_k),
        PortableFn::Log => map!(log_k),
        PortableFn::Log1p => map!(log1p_k),
        PortableFn::Expm1 => map!(expm1_k),
        PortableFn::Sigmoid => map!(sigmoid_k),
        PortableFn::LogSigmoid => map!(log_sigmoid_k),
        PortableFn::Tanh => map!(tanh_k),
        PortableFn::Erf => map!(erf_only_k),
        PortableFn::Sin => map!(sin_k),
        PortableFn::Cos => map!(cos_k),
        PortableFn::Gelu => map!(gelu_k),
        PortableFn::GeluTanh => map!(gelu_tanh_k),
        PortableFn::Silu => map!(silu_k),
    }
}

/// `e^x`.
pub fn exp(x: f64) -> f64 {
    canonical(exp_k(x))
}

/// The natural logarithm.
pub fn log(x: f64) -> f64 {
    canonical(log_k(x))
}

/// `log(1 + x)`.
pub fn log1p(x: f64) -> f64 {
    canonical(log1p_k(x))
}

/// `e^x - 1`.
pub fn expm1(x: f64) -> f64 {
    canonical(expm1_k(x))
}

/// `1 / (1 + e^-x)`.
pub fn sigmoid(x: f64) -> f64 {
    canonical(sigmoid_k(x))
}

/// `log(sigmoid(x))`.
pub fn log_sigmoid(x: f64) -> f64 {
    canonical(log_sigmoid_k(x))
}

/// The hyperbolic tangent.
pub fn tanh(x: f64) -> f64 {
    canonical(tanh_k(x))
}

/// The error function.
pub fn erf(x: f64) -> f64 {
    canonical(erf_only_k(x))
}

/// The complementary error function `1 - erf(x)`, accurate in its tail (not a [`PortableFn`];
/// it is what [`gelu`] is built on).
pub fn erfc(x: f64) -> f64 {
    canonical(erf_k(x).1)
}

/// The sine (accurate for `|x| < 2^19 pi`, see the module docs).
pub fn sin(x: f64) -> f64 {
    canonical(sin_k(x))
}

/// The cosine (accurate for `|x| < 2^19 pi`, see the module docs).
pub fn cos(x: f64) -> f64 {
    canonical(cos_k(x))
}

/// `x/2 * (1 + erf(x / sqrt 2))`.
pub fn gelu(x: f64) -> f64 {
    canonical(gelu_k(x))
}

/// `x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
pub fn gelu_tanh(x: f64) -> f64 {
    canonical(gelu_tanh_k(x))
}

/// `x * sigmoid(x)`.
pub fn silu(x: f64) -> f64 {
    canonical(silu_k(x))
}

// ---- shared pieces ------------------------------------------------------------------------------

const CANONICAL_NAN: f64 = f64::from_bits(0x7ff8_0000_0000_0000);
const INF: f64 = f64::INFINITY;
/// `1.5 * 2^52`: adding and subtracting it rounds to an integer; the sum's low bits hold it.
const MAGIC: f64 = 6_755_399_441_055_744.0;
const MAGIC_BITS: u64 = 0x4338_0000_0000_0000;

/// Every NaN as the one canonical quiet NaN.
#[inline(always)]
pub(crate) fn canonical(y: f64) -> f64 {
    if y.is_nan() {
        CANONICAL_NAN
    } else {
        y
    }
}

/// `x` limited to `[lo, hi]`; a NaN stays NaN (unlike `f64::clamp`, no panic, no min/max).
#[inline(always)]
fn clamp(x: f64, lo: f64, hi: f64) -> f64 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// `t` rounded to the nearest integer (ties to even), as a float and as a two's complement
/// integer in a `u64`; exact for `|t| < 2^51` (meaningless but harmless beyond, and for NaN).
#[inline(always)]
fn round_int(t: f64) -> (f64, u64) {
    let m = t + MAGIC;
    (m - MAGIC, m.to_bits().wrapping_sub(MAGIC_BITS))
}

/// The integer `k` (two's complement, `|k| < 2^51`) as a float, exactly.
#[inline(always)]
fn int_to_f64(k: u64) -> f64 {
    f64::from_bits(MAGIC_BITS.wrapping_add(k)) - MAGIC
}

/// `2^k` for an integer `k` in `[-1022, 1023]` (two's complement), built from its bits.
#[inline(always)]
fn pow2(k: u64) -> f64 {
    f64::from_bits(k.wrapping_add(1023) << 52)
}

/// `p * 2^k` for an integer `k` in `[-2044, 2046]`: `(p * 2^(k/2)) * 2^(k - k/2)` (`k/2`
/// rounded down). For `p` near 1 the first product is exact, so the result is rounded once.
#[inline(always)]
fn scale(p: f64, k: u64) -> f64 {
    let k1 = (k.wrapping_add(2048) >> 1).wrapping_sub(1024);
    let k2 = k.wrapping_sub(k1);
    p * pow2(k1) * pow2(k2)
}

/// `a + b = s + e` exactly (Knuth's TwoSum, any order of magnitudes), barring overflow.
#[inline(always)]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// Dekker's split of `a` (`|a| < 2^996`) into a 26-bit high part and the rest.
#[inline(always)]
fn split(a: f64) -> (f64, f64) {
    let t = 134_217_729.0 * a; // 2^27 + 1
    let hi = t - (t - a);
    (hi, a - hi)
}

/// `a * b = p + e` exactly (Dekker's product, no FMA), barring overflow and underflow.
#[inline(always)]
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    let (ah, al) = split(a);
    let (bh, bl) = split(b);
    let e = ((ah * bh - p) + ah * bl + al * bh) + al * bl;
    (p, e)
}

// ---- exp, expm1 ---------------------------------------------------------------------------------

/// `ln 2 = LN2_HI + LN2_LO` (fdlibm): `LN2_HI` has 32 significant bits.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
const LOG2_E: f64 = std::f64::consts::LOG2_E;
// 1/j! rounded to float64.
const E2: f64 = 1.0 / 2.0;
const E3: f64 = 1.0 / 6.0;
const E4: f64 = 1.0 / 24.0;
const E5: f64 = 1.0 / 120.0;
const E6: f64 = 1.0 / 720.0;
const E7: f64 = 1.0 / 5040.0;
const E8: f64 = 1.0 / 40320.0;
const E9: f64 = 1.0 / 362_880.0;
const E10: f64 = 1.0 / 3_628_800.0;
const E11: f64 = 1.0 / 39_916_800.0;
const E12: f64 = 1.0 / 479_001_600.0;
const E13: f64 = 1.0 / 6_227_020_800.0;

/// `e^r - 1 - r` for `|r| <= 0.35`: the Taylor series from `r^2` to `r^13`, evaluated by
/// Estrin's scheme (pairs of terms combined with `r^2`, `r^4`, `r^8`: a short dependency
/// chain, so vectorized loops overlap more elements).
#[inline(always)]
fn expm1_tail(r: f64) -> f64 {
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let a = (E2 + E3 * r) + (E4 + E5 * r) * r2;
    let b = (E6 + E7 * r) + (E8 + E9 * r) * r2;
    let c = (E10 + E11 * r) + (E12 + E13 * r) * r2;
    r2 * ((a + b * r4) + c * r8)
}

/// `a + r + tail` where `|a| >= |r|` or `a == 0`: `a + r` is summed exactly (Fast2Sum) and its
/// rounding error added to `tail` first, so the result is rounded about once.
#[inline(always)]
fn add3(a: f64, r: f64, tail: f64) -> f64 {
    let s = a + r;
    s + (((a - s) + r) + tail)
}

#[inline(always)]
pub(crate) fn exp_k(x: f64) -> f64 {
    let x = clamp(x, -1100.0, 1100.0);
    let (kf, k) = round_int(x * LOG2_E);
    let r = (x - kf * LN2_HI) - kf * LN2_LO;
    scale(add3(1.0, r, expm1_tail(r)), k)
}

/// `e^(hi + lo)` for `|lo| < 1` and `hi` in `[-1100, 1100]` a multiple of `2^-40` (so that
/// `hi - n*LN2_HI`, a multiple of `2^-40` below 1 in magnitude, is exact).
#[inline(always)]
fn exp_hi_lo(hi: f64, lo: f64) -> f64 {
    let (kf, k) = round_int((hi + lo) * LOG2_E);
    let r = (hi - kf * LN2_HI) + (lo - kf * LN2_LO);
    scale(add3(1.0, r, expm1_tail(r)), k)
}

#[inline(always)]
fn expm1_k(x: f64) -> f64 {
    let xc = clamp(x, -60.0, 1100.0);
    let (kf, k) = round_int(xc * LOG2_E);
    let r = (xc - kf * LN2_HI) - kf * LN2_LO;
    // 1 - 2^-k: exact for |k| <= 53; for k > 53 it rounds to 1 whatever the clamp.
    let kc = if kf > 60.0 { 60.0 } else { kf };
    let (_, biased) = round_int(1023.0 - kc);
    let t = 1.0 - f64::from_bits(biased << 52);
    let y = scale(add3(t, r, expm1_tail(r)), k);
    if x == 0.0 {
        x
    } else {
        y
    }
}

// ---- log, log1p ---------------------------------------------------------------------------------

const LG1: f64 = f64::from_bits(0x3fe5_5555_5555_5593);
const LG2: f64 = f64::from_bits(0x3fd9_9999_9997_fa04);
const LG3: f64 = f64::from_bits(0x3fd2_4924_9422_9359);
const LG4: f64 = f64::from_bits(0x3fcc_71c5_1d8e_78af);
const LG5: f64 = f64::from_bits(0x3fc7_4664_96cb_03de);
const LG6: f64 = f64::from_bits(0x3fc3_9a09_d078_c69f);
const LG7: f64 = f64::from_bits(0x3fc2_f112_df3e_5244);
const TWO54: f64 = 18_014_398_509_481_984.0;

#[inline(always)]
fn log_k(x: f64) -> f64 {
    let sub = x < f64::MIN_POSITIVE;
    let xs = if sub { x * TWO54 } else { x };
    let bits = xs.to_bits();
    // m = x / 2^k in [sqrt(2)/2, sqrt(2)): mantissa with exponent 0, or -1 when the mantissa's
    // top 20 bits are at least those of sqrt(2) (fdlibm's 0x95f64 trick).
    let i = (((bits >> 32) & 0x000f_ffff) + 0x95f64) & 0x0010_0000;
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | ((i ^ 0x3ff0_0000) << 32));
    let bias = if sub { 1023 + 54 } else { 1023 };
    let k = (((bits >> 52) & 0x7ff) + (i >> 20)).wrapping_sub(bias);
    let dk = int_to_f64(k);
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = t2 + t1;
    let hfsq = 0.5 * f * f;
    let y = dk * LN2_HI - ((hfsq - (s * (hfsq + r) + dk * LN2_LO)) - f);
    if x > 0.0 && x < INF {
        y
    } else if x == 0.0 {
        -INF
    } else if x == INF {
        INF
    } else {
        CANONICAL_NAN
    }
}

/// `log(1 + x)` for `x > -1` or NaN (no other special values).
#[inline(always)]
fn log1p_core(x: f64) -> f64 {
    let u = 1.0 + x;
    // The rounding error of u (Fast2Sum, the larger operand first): u + c == 1 + x exactly.
    let c = if x.abs() <= 1.0 {
        x - (u - 1.0)
    } else {
        1.0 - (u - x)
    };
    log_k(u) + c / u
}

#[inline(always)]
fn log1p_k(x: f64) -> f64 {
    let y = log1p_core(x);
    if x == 0.0 {
        x
    } else if x == -1.0 {
        -INF
    } else if x == INF {
        INF
    } else {
        y
    }
}

// ---- sigmoid, log_sigmoid, silu, tanh -----------------------------------------------------------

#[inline(always)]
fn sigmoid_k(x: f64) -> f64 {
    let e = exp_k(-x.abs());
    let num = if x >= 0.0 { 1.0 } else { e };
    num / (1.0 + e)
}

#[inline(always)]
fn log_sigmoid_k(x: f64) -> f64 {
    let e = exp_k(-x.abs());
    let low = if x < 0.0 { x } else { 0.0 };
    low - log1p_core(e)
}

#[inline(always)]
fn silu_k(x: f64) -> f64 {
    let y = x * sigmoid_k(x);
    if x == -INF {
        -0.0
    } else {
        y
    }
}

#[inline(always)]
fn tanh_k(x: f64) -> f64 {
    let a = x.abs();
    // tanh(40) rounds to 1 (so does tanh(19.1)), and e^80 is far from overflow.
    let a = if a > 40.0 { 40.0 } else { a };
    let t = expm1_k(2.0 * a);
    (t / (t + 2.0)).copysign(x)
}

// ---- erf, erfc, gelu, gelu_tanh -----------------------------------------------------------------

/// fdlibm's `erx`: `erf(1)` rounded to float32.
const ERX: f64 = f64::from_bits(0x3feb_0ac1_6000_0000);
/// The boundary of fdlibm's two tail approximations, `1/0.35`.
const ERF_TAIL_SPLIT: f64 = 1.0 / 0.35;

/// `P = sum_j ERF_P[j][g] w^j` and `Q = sum_j ERF_Q[j][g] w^j` for the four ranges `g` of
/// `a = |x|`: `[0, 0.84375)` (`w = a^2`, fdlibm's `pp`/`qq`), `[0.84375, 1.25)` (`w = a - 1`,
/// `pa`/`qa`), `[1.25, 1/0.35)` (`w = a^2`, `ra`/`sa` reversed: `a^16 R(1/a^2)`, `a^16 S(1/a^2)`)
/// and `[1/0.35, 28]` (`w = a^2`, `rb`/`sb` reversed with `a^14`).
const ERF_P: [[f64; 4]; 9] = {
    let pp = [
        0x3fc0_6eba_8214_db68u64,
        0xbfd4_cd7d_691c_b913,
        0xbf9d_2a51_dbd7_194f,
        0xbf77_a291_2366_68e4,
        0xbef8_ead6_1200_16ac,
    ];
    let pa = [
        0xbf63_59b8_bef7_7538u64,
        0x3fda_8d00_ad92_b34d,
        0xbfd7_d240_fbb8_c3f1,
        0x3fd4_5fca_8051_20e4,
        0xbfbc_6398_3d3e_28ec,
        0x3fa2_2a36_5997_95eb,
        0xbf61_bf38_0a96_073f,
    ];
    let ra = [
        0xbf84_3412_600d_6435u64,
        0xbfe6_3416_e4ba_7360,
        0xc025_1e04_41b0_e726,
        0xc04f_300a_e4cb_a38d,
        0xc064_4cb1_8428_2266,
        0xc067_135c_ebcc_abb2,
        0xc054_5265_57e4_d2f2,
        0xc023_a0ef_c69a_c25c,
    ];
    let rb = [
        0xbf84_3412_39e8_6f4au64,
        0xbfe9_93ba_70c2_85de,
        0xc031_c209_555f_995a,
        0xc064_145d_43c5_ed98,
        0xc083_ec88_1375_f228,
        0xc090_0461_6a2e_5992,
        0xc07e_384e_9bdc_383f,
    ];
    let mut t = [[0.0f64; 4]; 9];
    let mut i = 0;
    while i < 9 {
        if i < pp.len() {
            t[i][0] = f64::from_bits(pp[i]);
        }
        if i < pa.len() {
            t[i][1] = f64::from_bits(pa[i]);
        }
        if i < ra.len() {
            t[8 - i][2] = f64::from_bits(ra[i]);
        }
        if i < rb.len() {
            t[7 - i][3] = f64::from_bits(rb[i]);
        }
        i += 1;
    }
    t
};

/// See [`ERF_P`]; every `Q` has the constant or leading coefficient 1 of fdlibm's.
const ERF_Q: [[f64; 4]; 9] = {
    let qq = [
        0x3ff0_0000_0000_0000u64,
        0x3fd9_7779_cdda_dc09,
        0x3fb0_a54c_5536_ceba,
        0x3f74_d022_c4d3_6b0f,
        0x3f21_5dc9_221c_1a10,
        0xbed0_9c43_42a2_6120,
    ];
    let qa = [
        0x3ff0_0000_0000_0000u64,
        0x3fbb_3e66_18ee_e323,
        0x3fe1_4af0_92eb_6f33,
        0x3fb2_635c_d99f_e9a7,
        0x3fc0_2660_e763_351f,
        0x3f8b_edc2_6b51_dd1c,
        0x3f88_8b54_5735_151d,
    ];
    let sa = [
        0x3ff0_0000_0000_0000u64,
        0x4033_a6b9_bd70_7687,
        0x4061_350c_526a_e721,
        0x407b_290d_d58a_1a71,
        0x4084_2b19_21ec_2868,
        0x407a_d021_5770_0314,
        0x405b_28a3_ee48_ae2c,
        0x401a_47ef_8e48_4a93,
        0xbfae_eff2_ee74_9a62,
    ];
    let sb = [
        0x3ff0_0000_0000_0000u64,
        0x403e_568b_261d_5190,
        0x4074_5cae_221b_9f0a,
        0x4098_02eb_189d_5118,
        0x40a8_ffb7_688c_246a,
        0x40a3_f219_cedf_3be6,
        0x407d_a874_e79f_e763,
        0xc036_70e2_4271_2d62,
    ];
    let mut t = [[0.0f64; 4]; 9];
    let mut i = 0;
    while i < 9 {
        if i < qq.len() {
            t[i][0] = f64::from_bits(qq[i]);
        }
        if i < qa.len() {
            t[i][1] = f64::from_bits(qa[i]);
        }
        t[8 - i][2] = f64::from_bits(sa[i]);
        if i < sb.len() {
            t[7 - i][3] = f64::from_bits(sb[i]);
        }
        i += 1;
    }
    t
};

/// Which of the four ranges of [`ERF_P`] an element lies in (`a >= 0.84375`, `a >= 1.25`,
/// `a >= 1/0.35`).
#[derive(Clone, Copy)]
struct Range {
    g1: bool,
    g2: bool,
    g3: bool,
}

impl Range {
    /// The coefficient of this range.
    #[inline(always)]
    fn pick(self, c: [f64; 4]) -> f64 {
        if self.g3 {
            c[3]
        } else if self.g2 {
            c[2]
        } else if self.g1 {
            c[1]
        } else {
            c[0]
        }
    }
}

/// `w, w^2, w^4, w^8`.
#[derive(Clone, Copy)]
struct Powers(f64, f64, f64, f64);

impl Powers {
    #[inline(always)]
    fn of(w: f64) -> Self {
        let w2 = w * w;
        let w4 = w2 * w2;
        Powers(w, w2, w4, w4 * w4)
    }

    /// `sum_j c[j] w^j` with the coefficients of `range`, by Estrin's scheme (see
    /// [`expm1_tail`]). The table comes by value, so that after inlining every coefficient is
    /// an immediate constant (a reference would let the compiler turn the selects into
    /// loads from selected addresses, one lane at a time).
    #[inline(always)]
    fn estrin(self, c: [[f64; 4]; 9], range: Range) -> f64 {
        let Powers(w, w2, w4, w8) = self;
        let [c0, c1, c2, c3, c4, c5, c6, c7, c8] = c.map(|ci| range.pick(ci));
        let lo = (c0 + c1 * w) + (c2 + c3 * w) * w2;
        let hi = (c4 + c5 * w) + (c6 + c7 * w) * w2;
        (lo + hi * w4) + c8 * w8
    }
}

/// `(erf(x), erfc(x))` (fdlibm's method, see the module docs). Both come from the same
/// rational function and exponential; an unused one costs only its final selects.
#[inline(always)]
fn erf_k(x: f64) -> (f64, f64) {
    let a = x.abs();
    // erfc(28) underflows to 0 and erf(28) rounds to 1: larger |x| gives the same.
    let a = if a > 28.0 { 28.0 } else { a };
    let g1 = a >= 0.84375;
    let g2 = a >= 1.25;
    let g3 = a >= ERF_TAIL_SPLIT;
    let range = Range { g1, g2, g3 };
    let w = if g1 && !g2 { a - 1.0 } else { a * a };
    let ws = Powers::of(w);
    let p = ws.estrin(ERF_P, range);
    let q = ws.estrin(ERF_Q, range);
    let ratio = p / q;
    // The tail: exp(-a^2 - 0.5625 + R/S) / a. For a >= 1.25, z is a multiple of 2^-20 below
    // 2^5, so -z^2 - 0.5625 is exact and a multiple of 2^-40, as `exp_hi_lo` needs.
    let z = f64::from_bits(a.to_bits() & 0xffff_ffff_0000_0000);
    let tail = exp_hi_lo(-z * z - 0.5625, (z - a) * (z + a) + ratio) / a;
    let positive = x > 0.0;
    let (erf, erfc) = if g2 {
        (
            (1.0 - tail).copysign(x),
            if positive { tail } else { 2.0 - tail },
        )
    } else if g1 {
        (
            (ERX + ratio).copysign(x),
            if positive {
                (1.0 - ERX) - ratio
            } else {
                1.0 + (ERX + ratio)
            },
        )
    } else {
        let y = x * ratio;
        (
            x + y,
            if x < 0.25 {
                1.0 - (x + y)
            } else {
                0.5 - (y + (x - 0.5))
            },
        )
    };
    (erf, erfc)
}

#[inline(always)]
fn erf_only_k(x: f64) -> f64 {
    erf_k(x).0
}

/// `1/sqrt(2) = FRAC_1_SQRT_2 + FRAC_1_SQRT_2_LO` to about 107 bits.
const FRAC_1_SQRT_2: f64 = std::f64::consts::FRAC_1_SQRT_2;
const FRAC_1_SQRT_2_LO: f64 = f64::from_bits(0xbc8b_dd34_13b2_6456);

#[inline(always)]
fn gelu_k(x: f64) -> f64 {
    // gelu(64) == 64 and gelu(-64) underflows to -0: the clamp only keeps Dekker's split finite.
    let xc = clamp(x, -64.0, 64.0);
    // -x/sqrt(2) = v + v_lo to about 107 bits (the constant's own rounding matters: it is
    // 7e-17 relative, and the tail of erfc multiplies relative errors of v by 2v^2).
    let (v, e1) = two_prod(xc, -FRAC_1_SQRT_2);
    let v_lo = e1 - xc * FRAC_1_SQRT_2_LO;
    let e = erf_k(v).1;
    // erfc(v + v_lo) = erfc(v) (1 - d v_lo) with d = -erfc'(v)/erfc(v), close to 2v for v > 0;
    // for v <= 0 the correction is below an ulp.
    let d = if v > 0.0 { 2.0 * v } else { 0.0 };
    let y = (0.5 * x) * (e - e * (d * v_lo));
    if x == -INF {
        -0.0
    } else {
        y
    }
}

/// `sqrt(2/pi)` (equal to torch's `M_SQRT2 * M_2_SQRTPI * 0.5`).
const SQRT_2_OVER_PI: f64 = f64::from_bits(0x3fe9_8845_33d4_3651);
const GELU_KAPPA: f64 = 0.044715;

#[inline(always)]
fn gelu_tanh_k(x: f64) -> f64 {
    // sigmoid(2u) is 1 for x > 8.3 and underflows to 0 for x < -21.9: the clamp changes no
    // result and keeps the exact products below finite.
    let xc = clamp(x, -30.0, 30.0);
    // u = SQRT_2_OVER_PI * (xc + GELU_KAPPA * xc^3) = u + u_lo to about 100 bits (in the
    // negative tail, sigmoid(2u) multiplies the absolute error of u by 2).
    let (x2, x2_lo) = two_prod(xc, xc);
    let (x3, e) = two_prod(x2, xc);
    let x3_lo = e + x2_lo * xc;
    let (m, e) = two_prod(GELU_KAPPA, x3);
    let m_lo = e + GELU_KAPPA * x3_lo;
    let (t, e) = two_sum(xc, m);
    let t_lo = e + m_lo;
    let (u, e) = two_prod(SQRT_2_OVER_PI, t);
    let u_lo = e + SQRT_2_OVER_PI * t_lo;
    // sigmoid(2u + 2u_lo) = s (1 + (1 - s) 2u_lo) to first order.
    let s = sigmoid_k(2.0 * u);
    let y = x * (s + s * ((1.0 - s) * (2.0 * u_lo)));
    if x == -INF {
        -0.0
    } else {
        y
    }
}

// ---- sin, cos -----------------------------------------------------------------------------------

const FRAC_2_PI: f64 = std::f64::consts::FRAC_2_PI;
/// `pi/2 = PIO2_1 + PIO2_2 + PIO2_3 + PIO2_3T` (fdlibm): three 33-bit parts and a tail.
const PIO2_1: f64 = f64::from_bits(0x3ff9_21fb_5440_0000);
const PIO2_2: f64 = f64::from_bits(0x3dd0_b461_1a60_0000);
const PIO2_3: f64 = f64::from_bits(0x3ba3_198a_2e00_0000);
const PIO2_3T: f64 = f64::from_bits(0x397b_839a_2520_49c1);
const S1: f64 = f64::from_bits(0xbfc5_5555_5555_5549);
const S2: f64 = f64::from_bits(0x3f81_1111_1110_f8a6);
const S3: f64 = f64::from_bits(0xbf2a_01a0_19c1_61d5);
const S4: f64 = f64::from_bits(0x3ec7_1de3_57b1_fe7d);
const S5: f64 = f64::from_bits(0xbe5a_e5e6_8a2b_9ceb);
const S6: f64 = f64::from_bits(0x3de5_d93a_5acf_d57c);
const C1: f64 = f64::from_bits(0x3fa5_5555_5555_554c);
const C2: f64 = f64::from_bits(0xbf56_c16c_16c1_5177);
const C3: f64 = f64::from_bits(0x3efa_01a0_19cb_1590);
const C4: f64 = f64::from_bits(0xbe92_7e4f_809c_52ad);
const C5: f64 = f64::from_bits(0x3e21_ee9e_bdb4_b1c4);
const C6: f64 = f64::from_bits(0xbda8_fae9_be88_38d4);

/// `(sin(x), cos(x))`.
#[inline(always)]
fn sincos_k(x: f64) -> (f64, f64) {
    let (nf, n) = round_int(x * FRAC_2_PI);
    let r = (((x - nf * PIO2_1) - nf * PIO2_2) - nf * PIO2_3) - nf * PIO2_3T;
    // |r| <= pi/4 (plus rounding) in the accurate range; the clamp keeps the results of huge
    // |x| (where n itself is lost) finite and in [-1, 1].
    let r = clamp(r, -1.0, 1.0);
    let z = r * r;
    let w = z * z;
    // FreeBSD k_sin.c and k_cos.c with no tail (y = 0).
    let rs = S2 + z * (S3 + z * S4) + z * w * (S5 + z * S6);
    let s = r + z * r * (S1 + z * rs);
    let rc = z * (C1 + z * (C2 + z * C3)) + w * w * (C4 + z * (C5 + z * C6));
    let hz = 0.5 * z;
    let one_hz = 1.0 - hz;
    let c = one_hz + (((1.0 - one_hz) - hz) + z * rc);
    // Quadrant n mod 4: sin = s, c, -s, -c; cos = c, -s, -c, s.
    let (bs, bc) = if n & 1 == 0 { (s, c) } else { (c, s) };
    let sin = if n & 2 == 0 { bs } else { -bs };
    let cos = if n.wrapping_add(1) & 2 == 0 { bc } else { -bc };
    if x.abs() < INF {
        (if x == 0.0 { x } else { sin }, cos)
    } else {
        (CANONICAL_NAN, CANONICAL_NAN)
    }
}

#[inline(always)]
fn sin_k(x: f64) -> f64 {
    sincos_k(x).0
}

#[inline(always)]
fn cos_k(x: f64) -> f64 {
    sincos_k(x).1
}

// ---- grid ---------------------------------------------------------------------------------------

/// `t` rounded to the nearest integer, ties to even (IEEE-754 roundToIntegralTiesToEven, an
/// exact operation: `roundsd`/`vroundpd` with SSE4.1 or AVX2, `frintn` on ARM, a library call
/// on x86-64 without SSE4.1); a NaN becomes the canonical NaN.
#[inline(always)]
pub(crate) fn round_even(t: f64) -> f64 {
    canonical(t.round_ties_even())
}

/// The larger of `m` and `|v|`; a NaN `v` leaves `m` (`m` is never NaN). A compare and select
/// (one `maxpd` on x86) for maxima kept in registers.
#[inline(always)]
fn abs_max(m: f64, v: f64) -> f64 {
    let a = v.abs();
    if a > m {
        a
    } else {
        m
    }
}

/// The grid scale of a slice whose largest magnitude is `m` (`m >= 0`, not NaN): the float with
/// exponent field `2045 + bits - E` (clamped to `[1, 2046]`), `E` the exponent field of `m`.
#[inline(always)]
pub(crate) fn grid_scale(m: f64, bits: u32) -> f64 {
    let e = ((m.to_bits() >> 52) & 0x7ff) as i64;
    let field = (2045 + bits as i64 - e).clamp(1, 2046);
    f64::from_bits((field as u64) << 52)
}

/// The largest `|v|` of a row, NaNs ignored (0 for an empty or all-NaN row). Sixteen
/// independent maxima, so the loop vectorizes; the maximum does not depend on the order.
#[inline(always)]
pub(crate) fn row_abs_max(row: &[f64]) -> f64 {
    let (chunks, rest) = row.as_chunks::<16>();
    let mut acc = [0.0f64; 16];
    for chunk in chunks {
        for (m, &v) in acc.iter_mut().zip(chunk) {
            *m = abs_max(*m, v);
        }
    }
    acc.iter().chain(rest).fold(0.0, |m, &v| abs_max(m, v))
}

/// Rounds `values` onto integer grids, one power-of-two scale per slice: the values are viewed
/// as an array of shape `(outer, reduce, inner)` in C order, and for every `(o, i)` the slice
/// `v[o, :, i]` gets the scale `s[o, i] = 2^(bits + 1022 - E)`, `E` the biased exponent field
/// (`(m.to_bits() >> 52) & 0x7ff`, 0 for a zero or subnormal `m`) of the slice's largest
/// magnitude `m`, so that `|v * s| < 2^bits` (`m < 2^(E - 1022)`). The returned `ints` (shape
/// `(outer, reduce, inner)`) are `round_ties_even(v * s)`, so `|ints| <= 2^bits`, and `scales`
/// (shape `(outer, 1, inner)`) the `s`. The scale is built as the float whose exponent field is
/// `2045 + bits - E` clamped to `[1, 2046]`, so it is always a normal power of two (`2^1023`
/// for a zero slice, whose ints are 0) and the product by it is exact unless it underflows.
/// The one case where the clamp raises the scale above `2^(bits + 1022 - E)`: `bits = 1` and
/// `m >= 2^1023` (`E = 2046`), scale `2^-1022` and `|ints| <= 4` (and an infinite `m`).
/// Integers of at most `bits` bits make float64 sums and matrix products of the grid values
/// exact (for `bits` small enough for the number of terms), hence the same in any order.
///
/// This equals bit for bit torch's `largest = x.abs().amax(dim=1, keepdim=True); exponent =
/// largest.view(int64) >> 52; scale = ((2045 + bits - exponent).clamp(1, 2046) << 52)
/// .view(float64); ints = (x * scale).round()` for inputs without NaN. A NaN is ignored for the
/// maximum (the scale comes from the other values of its slice) and is the canonical NaN in
/// `ints`; an infinity gives `E = 2047` and stays infinite. `bits` must be in `1..=52` and
/// `values` must have `outer * reduce * inner` elements; anything else is an error. The work is
/// basic IEEE operations only (abs, compares, products by powers of two, bit moves and the
/// rounding of [`round_even`]), so the results are the same bits on every CPU.
///
/// ```
/// use ardm_core::portable::grid;
/// // Two slices of three (inner = 1): largest 3.0 (E = 1024, scale 2^(4 + 1022 - 1024) = 4)
/// // and 0.0 (scale 2^1023).
/// let (ints, scales) = grid(&[0.625, -3.0, 1.0, 0.0, -0.0, 0.0], 2, 3, 1, 4).unwrap();
/// assert_eq!(ints, [2.0, -12.0, 4.0, 0.0, -0.0, 0.0]); // 2.5 rounds to even
/// assert_eq!(scales, [4.0, 2f64.powi(1023)]);
/// assert!(grid(&[1.0], 1, 1, 1, 53).is_err());
/// ```
pub fn grid(
    values: &[f64],
    outer: usize,
    reduce: usize,
    inner: usize,
    bits: u32,
) -> CoreResult<(Vec<f64>, Vec<f64>)> {
    let (len, slices) = grid_sizes(outer, reduce, inner)?;
    if values.len() != len {
        return Err(grid_len_error(
            "values",
            values.len(),
            len,
            outer,
            reduce,
            inner,
        ));
    }
    let mut ints = crate::error::try_with_capacity(len, "the grid integers")?;
    ints.extend_from_slice(values);
    let mut scales = vec![0.0; slices];
    grid_in_place(&mut ints, &mut scales, outer, reduce, inner, bits)?;
    Ok((ints, scales))
}

/// [`grid`] in place: `data` holds the values of shape `(outer, reduce, inner)` and receives
/// the ints; `scales` (`outer * inner` elements, shape `(outer, 1, inner)`) receives the scales.
/// The same bits as [`grid`].
pub fn grid_in_place(
    data: &mut [f64],
    scales: &mut [f64],
    outer: usize,
    reduce: usize,
    inner: usize,
    bits: u32,
) -> CoreResult<()> {
    if !(1..=52).contains(&bits) {
        return Err(CoreError::new(format!(
            "grid bits must be in 1..=52, got {bits}"
        )));
    }
    let (len, slices) = grid_sizes(outer, reduce, inner)?;
    if data.len() != len {
        return Err(grid_len_error(
            "data",
            data.len(),
            len,
            outer,
            reduce,
            inner,
        ));
    }
    if scales.len() != slices {
        return Err(CoreError::new(format!(
            "grid scales must have outer * inner = {slices} elements, got {}",
            scales.len()
        )));
    }
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2.
            unsafe { grid_avx2(data, scales, reduce, inner, bits) };
            return Ok(());
        }
        if std::arch::is_x86_feature_detected!("sse4.1") {
            // SAFETY: the CPU has SSE4.1.
            unsafe { grid_sse41(data, scales, reduce, inner, bits) };
            return Ok(());
        }
    }
    grid_with(data, scales, reduce, inner, bits);
    Ok(())
}

/// The number of values and of slices of shape `(outer, reduce, inner)`, or an overflow error.
fn grid_sizes(outer: usize, reduce: usize, inner: usize) -> CoreResult<(usize, usize)> {
    let slices = outer.checked_mul(inner);
    let len = slices.and_then(|s| s.checked_mul(reduce));
    match (len, slices) {
        (Some(len), Some(slices)) => Ok((len, slices)),
        _ => Err(CoreError::new(format!(
            "grid shape ({outer}, {reduce}, {inner}) is too large"
        ))),
    }
}

fn grid_len_error(
    what: &str,
    got: usize,
    len: usize,
    outer: usize,
    reduce: usize,
    inner: usize,
) -> CoreError {
    CoreError::new(format!(
        "grid {what} must have {len} elements for shape ({outer}, {reduce}, {inner}), got {got}"
    ))
}

/// [`grid_with`] compiled with AVX2 enabled (the same operations, so the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn grid_avx2(data: &mut [f64], scales: &mut [f64], reduce: usize, inner: usize, bits: u32) {
    grid_with(data, scales, reduce, inner, bits)
}

/// [`grid_with`] compiled with SSE4.1 enabled (`roundpd` instead of a library call for the
/// rounding; the same operations, so the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.1")]
fn grid_sse41(data: &mut [f64], scales: &mut [f64], reduce: usize, inner: usize, bits: u32) {
    grid_with(data, scales, reduce, inner, bits)
}

/// The loops of [`grid_in_place`] (sizes checked): for `inner == 1` each slice is a contiguous
/// row; otherwise the maxima of `inner` slices are taken together (`i` innermost), in `scales`.
#[inline(always)]
fn grid_with(data: &mut [f64], scales: &mut [f64], reduce: usize, inner: usize, bits: u32) {
    if reduce == 0 || data.is_empty() {
        scales.fill(grid_scale(0.0, bits));
        return;
    }
    if inner == 1 {
        for (row, s) in data.chunks_exact_mut(reduce).zip(scales.iter_mut()) {
            let scale = grid_scale(row_abs_max(row), bits);
            *s = scale;
            for v in row.iter_mut() {
                *v = round_even(*v * scale);
            }
        }
        return;
    }
    for (block, sc) in data
        .chunks_exact_mut(reduce * inner)
        .zip(scales.chunks_exact_mut(inner))
    {
        // The maxima in `scales`, `i` innermost. `f64::max` (IEEE maxNum, the same result as
        // `abs_max`: a NaN operand gives the other one), not a compare and select, which LLVM
        // turns into masked stores here (microcoded and slow on AMD).
        sc.fill(0.0);
        for row in block.chunks_exact(inner) {
            for (m, &v) in sc.iter_mut().zip(row) {
                *m = m.max(v.abs());
            }
        }
        for s in sc.iter_mut() {
            *s = grid_scale(*s, bits);
        }
        for row in block.chunks_exact_mut(inner) {
            for (v, &s) in row.iter_mut().zip(sc.iter()) {
                *v = round_even(*v * s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- references (std's functions; erf and erfc from a series, Craig's integral and a
    // continued fraction) ----

    /// `e^-(x^2)` with `x^2` taken exactly (Dekker), from std's `exp`.
    fn exp_neg_sq(x: f64) -> f64 {
        let (h, l) = two_prod(x, x);
        (-h).exp() * (1.0 - l)
    }

    /// `erfc(x)` for `x >= 3`: the continued fraction
    /// `e^-x^2 / sqrt(pi) * 1 / (x + (1/2) / (x + 1 / (x + (3/2) / (x + ...))))` (Lentz).
    fn erfc_cf(x: f64) -> f64 {
        let tiny = 1e-300;
        let mut f = x;
        let mut c = x;
        let mut d = 0.0;
        for k in 1..3000 {
            let a = k as f64 / 2.0;
            d = x + a * d;
            if d == 0.0 {
                d = tiny;
            }
            c = x + a / c;
            if c == 0.0 {
                c = tiny;
            }
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-17 {
                break;
            }
        }
        exp_neg_sq(x) / (f * std::f64::consts::PI.sqrt())
    }

    /// `erf(x)` for `0 <= x <= 1.5` from the series of positive terms
    /// `2/sqrt(pi) e^-x^2 sum_n 2^n x^(2n+1) / (1*3*...*(2n+1))` (compensated sum).
    fn erf_series(x: f64) -> f64 {
        let x2 = 2.0 * x * x;
        let mut term = x;
        let (mut sum, mut comp) = (0.0f64, 0.0f64);
        for n in 0..500 {
            // Kahan-Babuska summation.
            let t = sum + term;
            comp += if sum.abs() >= term.abs() {
                (sum - t) + term
            } else {
                (term - t) + sum
            };
            sum = t;
            term *= x2 / (2 * n + 3) as f64;
            if term < 1e-18 * sum {
                break;
            }
        }
        std::f64::consts::FRAC_2_SQRT_PI * exp_neg_sq(x) * (sum + comp)
    }

    /// `erfc(x)` for `x >= 0` by Craig's formula `2/pi int_0^(pi/2) exp(-x^2 / sin^2 t) dt`,
    /// the trapezoidal rule (the integrand is flat at both ends, so it converges
    /// geometrically: 256 nodes give full precision for `x >= 0.5`).
    fn erfc_craig(x: f64) -> f64 {
        let n = 256;
        let h = std::f64::consts::FRAC_PI_2 / n as f64;
        let x2 = x * x;
        let mut sum = 0.0;
        for i in 1..=n {
            let s = (i as f64 * h).sin();
            let w = if i == n { 0.5 } else { 1.0 };
            sum += w * (-x2 / (s * s)).exp();
        }
        std::f64::consts::FRAC_2_PI * h * sum
    }

    fn erfc_pos(x: f64) -> f64 {
        if x >= 3.0 {
            erfc_cf(x)
        } else {
            erfc_craig(x)
        }
    }

    fn erf_ref(x: f64) -> f64 {
        let a = x.abs();
        let y = if a <= 1.5 {
            erf_series(a)
        } else {
            1.0 - erfc_pos(a)
        };
        y.copysign(x)
    }

    fn erfc_ref(x: f64) -> f64 {
        if x >= 0.5 {
            erfc_pos(x)
        } else {
            1.0 - erf_ref(x)
        }
    }

    /// `gelu` with `-x/sqrt 2` as an exact pair and the first-order correction of `erfc`.
    fn gelu_ref(x: f64) -> f64 {
        let (v, e1) = two_prod(x, -FRAC_1_SQRT_2);
        let v_lo = e1 - x * FRAC_1_SQRT_2_LO;
        let e = erfc_ref(v);
        let de = std::f64::consts::FRAC_2_SQRT_PI * exp_neg_sq(v);
        0.5 * x * (e - de * v_lo)
    }

    fn sigmoid_ref(x: f64) -> f64 {
        if x >= 0.0 {
            1.0 / (1.0 + (-x).exp())
        } else {
            let e = x.exp();
            e / (1.0 + e)
        }
    }

    /// `gelu_tanh` with `u` as an exact pair from std's fused multiply-add (an independent
    /// way to the same pair) and the first-order correction of the sigmoid.
    fn gelu_tanh_ref(x: f64) -> f64 {
        let prod = |a: f64, b: f64| (a * b, a.mul_add(b, -(a * b)));
        let (x2, x2_lo) = prod(x, x);
        let (x3, e) = prod(x2, x);
        let x3_lo = e + x2_lo * x;
        let (m, e) = prod(GELU_KAPPA, x3);
        let m_lo = e + GELU_KAPPA * x3_lo;
        let t = x + m;
        let t_lo = if x.abs() >= m.abs() {
            (x - t) + m
        } else {
            (m - t) + x
        } + m_lo;
        let (u, e) = prod(SQRT_2_OVER_PI, t);
        let u_lo = e + SQRT_2_OVER_PI * t_lo;
        let s = sigmoid_ref(2.0 * u);
        x * s * (1.0 + (1.0 - s) * 2.0 * u_lo)
    }

    // ---- helpers ------------------------------------------------------------------------------

    /// SplitMix64 (deterministic inputs).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform in `[lo, hi)`.
        fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
            lo + (hi - lo) * ((self.next() >> 11) as f64 / (1u64 << 53) as f64)
        }

        /// `|x|` in `[2^e, 2^(e+1))` with `e` uniform in `lo..hi` (`lo >= -1074`, `hi <= 1024`)
        /// and a random mantissa; a random sign if `signed`.
        fn log_uniform(&mut self, lo: i32, hi: i32, signed: bool) -> f64 {
            let e = lo + (self.next() % (hi - lo) as u64) as i32;
            let bits = if e >= -1022 {
                ((e + 1023) as u64) << 52 | (self.next() >> 12)
            } else {
                let top = 1u64 << (e + 1074);
                top | (self.next() & (top - 1))
            };
            let x = f64::from_bits(bits);
            if signed && self.next() & 1 == 1 {
                -x
            } else {
                x
            }
        }
    }

    fn rel_err(got: f64, want: f64) -> f64 {
        if got == want {
            0.0
        } else {
            ((got - want) / want).abs()
        }
    }

    /// The largest relative error of `f` against `reference` over `xs`, with the worst input.
    fn max_rel_err(
        xs: &[f64],
        f: impl Fn(f64) -> f64,
        reference: impl Fn(f64) -> f64,
    ) -> (f64, f64) {
        let mut worst = (0.0, f64::NAN);
        for &x in xs {
            let e = rel_err(f(x), reference(x));
            assert!(
                !e.is_nan(),
                "NaN error at x = {x:e}: {} vs {}",
                f(x),
                reference(x)
            );
            if e > worst.0 {
                worst = (e, x);
            }
        }
        worst
    }

    fn sweep(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        let mut rng = Rng(seed);
        (0..n).map(|_| rng.uniform(lo, hi)).collect()
    }

    fn log_sweep(seed: u64, n: usize, lo: i32, hi: i32, signed: bool) -> Vec<f64> {
        let mut rng = Rng(seed);
        (0..n).map(|_| rng.log_uniform(lo, hi, signed)).collect()
    }

    type Scalar = fn(f64) -> f64;

    /// One accuracy sweep: a name, the inputs, the function and its reference.
    struct Case {
        name: &'static str,
        xs: Vec<f64>,
        f: Scalar,
        reference: Box<dyn Fn(f64) -> f64>,
    }

    /// The doubles closest to multiples of pi/2 below 2^20 pi/2, found by an exhaustive search:
    /// 29 pi/2 (|r| = 6.2e-19) and its doublings, and 204551 pi/2; with 3 neighbours each side
    /// and both signs.
    fn hard_sin_inputs() -> Vec<f64> {
        let hard: [f64; 8] = [
            45.553_093_477_052,
            91.106_186_954_104,
            182.212_373_908_208,
            364.424_747_816_416,
            728.849_495_632_832,
            1_457.698_991_265_664,
            2_915.397_982_531_328,
            321_307.959_442_222_9,
        ];
        let mut xs = Vec::new();
        for x in hard {
            for d in -3i64..=3 {
                let y = f64::from_bits((x.to_bits() as i64 + d) as u64);
                xs.extend([y, -y]);
            }
        }
        xs
    }

    /// Every accuracy sweep, `n` points each.
    fn cases(n: usize) -> Vec<Case> {
        fn case(
            name: &'static str,
            xs: Vec<f64>,
            f: Scalar,
            reference: impl Fn(f64) -> f64 + 'static,
        ) -> Case {
            Case {
                name,
                xs,
                f,
                reference: Box::new(reference),
            }
        }
        let near1: Vec<f64> = log_sweep(11, n, -60, -1, true)
            .iter()
            .map(|d| 1.0 + d)
            .collect();
        let near_m1: Vec<f64> = log_sweep(15, n, -53, -1, false)
            .iter()
            .map(|d| d - 1.0)
            .collect();
        let ls_ref = |x: f64| x.min(0.0) - (-x.abs()).exp().ln_1p();
        let silu_ref = |x: f64| x * sigmoid_ref(x);
        let gelu_textbook = |x: f64| 0.5 * x * (1.0 + erf_ref(x * FRAC_1_SQRT_2));
        vec![
            case(
                "exp [-708, 709.78]",
                sweep(1, n, -708.0, 709.78),
                exp,
                f64::exp,
            ),
            case("exp [-1, 1]", sweep(2, n, -1.0, 1.0), exp, f64::exp),
            case(
                "exp |x| in [2^-1074, 1/2]",
                log_sweep(3, n, -1074, -1, true),
                exp,
                f64::exp,
            ),
            case(
                "expm1 [-50, 709]",
                sweep(5, n, -50.0, 709.0),
                expm1,
                f64::exp_m1,
            ),
            case("expm1 [-2, 2]", sweep(6, n, -2.0, 2.0), expm1, f64::exp_m1),
            case(
                "expm1 |x| in [2^-1074, 1/2]",
                log_sweep(7, n, -1074, -1, true),
                expm1,
                f64::exp_m1,
            ),
            case(
                "log normals",
                log_sweep(8, n, -1022, 1024, false),
                log,
                f64::ln,
            ),
            case(
                "log subnormals",
                log_sweep(9, n, -1074, -1022, false),
                log,
                f64::ln,
            ),
            case("log [0.5, 2]", sweep(10, n, 0.5, 2.0), log, f64::ln),
            case("log 1 +- [2^-60, 1/2]", near1, log, f64::ln),
            case(
                "log1p [-1, 10]",
                sweep(12, n, -1.0, 10.0),
                log1p,
                f64::ln_1p,
            ),
            case(
                "log1p |x| in [2^-1074, 1]",
                log_sweep(13, n, -1074, 0, true),
                log1p,
                f64::ln_1p,
            ),
            case(
                "log1p [1, 2^1024)",
                log_sweep(14, n, 0, 1024, false),
                log1p,
                f64::ln_1p,
            ),
            case("log1p -1 + [2^-53, 1/2]", near_m1, log1p, f64::ln_1p),
            case(
                "sigmoid [-700, 40]",
                sweep(16, n, -700.0, 40.0),
                sigmoid,
                sigmoid_ref,
            ),
            case(
                "sigmoid |x| in [2^-1074, 32]",
                log_sweep(17, n, -1074, 5, true),
                sigmoid,
                sigmoid_ref,
            ),
            case(
                "log_sigmoid [-800, 700]",
                sweep(18, n, -800.0, 700.0),
                log_sigmoid,
                ls_ref,
            ),
            case(
                "log_sigmoid [-5, 5]",
                sweep(19, n, -5.0, 5.0),
                log_sigmoid,
                ls_ref,
            ),
            case(
                "silu [-700, 60]",
                sweep(20, n, -700.0, 60.0),
                silu,
                silu_ref,
            ),
            case(
                "silu |x| in [2^-1000, 32]",
                log_sweep(21, n, -1000, 5, true),
                silu,
                silu_ref,
            ),
            case("tanh [-25, 25]", sweep(22, n, -25.0, 25.0), tanh, f64::tanh),
            case(
                "tanh |x| in [2^-1074, 4]",
                log_sweep(23, n, -1074, 2, true),
                tanh,
                f64::tanh,
            ),
            case("erf [-7, 7]", sweep(24, n, -7.0, 7.0), erf, erf_ref),
            case(
                "erf |x| in [2^-1020, 2]",
                log_sweep(25, n, -1020, 1, true),
                erf,
                erf_ref,
            ),
            case("erf [0.8, 3]", sweep(26, n, 0.8, 3.0), erf, erf_ref),
            case("erfc [-6, 26.5]", sweep(27, n, -6.0, 26.5), erfc, erfc_ref),
            case(
                "erfc |x| in [2^-60, 2]",
                log_sweep(28, n, -60, 1, true),
                erfc,
                erfc_ref,
            ),
            case("gelu [-37, 10]", sweep(29, n, -37.0, 10.0), gelu, gelu_ref),
            case(
                "gelu |x| in [2^-1000, 8]",
                log_sweep(30, n, -1000, 3, true),
                gelu,
                gelu_ref,
            ),
            case(
                "gelu [0, 10] vs 1 + erf",
                sweep(33, n, 0.0, 10.0),
                gelu,
                gelu_textbook,
            ),
            case(
                "gelu_tanh [-21, 12]",
                sweep(31, n, -21.0, 12.0),
                gelu_tanh,
                gelu_tanh_ref,
            ),
            case(
                "gelu_tanh |x| in [2^-1000, 8]",
                log_sweep(32, n, -1000, 3, true),
                gelu_tanh,
                gelu_tanh_ref,
            ),
            case("sin [-1e5, 1e5]", sweep(34, n, -1e5, 1e5), sin, f64::sin),
            case("cos [-1e5, 1e5]", sweep(35, n, -1e5, 1e5), cos, f64::cos),
            case(
                "sin |x| in [2^-1074, 8]",
                log_sweep(36, n, -1074, 3, true),
                sin,
                f64::sin,
            ),
            case(
                "cos |x| in [2^-1074, 8]",
                log_sweep(37, n, -1074, 3, true),
                cos,
                f64::cos,
            ),
            case(
                "sin [-1.6e6, 1.6e6]",
                sweep(38, n, -1.6e6, 1.6e6),
                sin,
                f64::sin,
            ),
            case(
                "cos [-1.6e6, 1.6e6]",
                sweep(39, n, -1.6e6, 1.6e6),
                cos,
                f64::cos,
            ),
            case(
                "sin near multiples of pi/2",
                hard_sin_inputs(),
                sin,
                f64::sin,
            ),
            case(
                "cos near multiples of pi/2",
                hard_sin_inputs(),
                cos,
                f64::cos,
            ),
        ]
    }

    #[test]
    fn accuracy_against_references() {
        // The references themselves: a few values from mpmath (30 digits, rounded).
        assert!(rel_err(erf_ref(0.5), 0.520_499_877_813_046_5) < 2e-16);
        assert!(rel_err(erf_ref(2.0), 0.995_322_265_018_952_7) < 2e-16);
        assert!(rel_err(erfc_ref(5.0), 1.537_459_794_428_034_8e-12) < 1e-15);
        assert!(rel_err(erfc_ref(20.0), 5.395_865_611_607_9e-176) < 1e-14);
        let mut failures = Vec::new();
        for c in cases(20_000) {
            let (e, x) = max_rel_err(&c.xs, c.f, &c.reference);
            if e >= 1e-14 {
                failures.push(format!("{}: relative error {e:e} at x = {x:e}", c.name));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// The accuracy table of the docs: `cargo test --release --lib portable -- --ignored
    /// --nocapture accuracy_report` (a million points per sweep).
    #[test]
    #[ignore]
    fn accuracy_report() {
        for c in cases(1_000_000) {
            let (e, x) = max_rel_err(&c.xs, c.f, &c.reference);
            println!("{:34} max relative error {e:9.2e} at x = {x:e}", c.name);
        }
    }

    /// Values from mpmath (300 bits, rounded to float64): independent of the references above.
    #[test]
    fn high_precision_values() {
        let gelu_exact = [
            (-37.0, -2.118_461_352_334_093_5e-298),
            (-20.0, -5.507_248_237_212_468e-88),
            (-10.0, -7.619_853_024_160_526e-23),
            (-5.0, -1.433_257_859_395_969_5e-6),
            (-1.5, -0.100_210_801_903_287_1),
            (-0.5, -0.154_268_769_362_993_44),
            (0.7, 0.530_625_443_443_848_9),
            (3.0, 2.995_950_305_905_11),
        ];
        for (x, want) in gelu_exact {
            assert!(rel_err(gelu(x), want) < 5e-16, "gelu({x}) = {:e}", gelu(x));
        }
        let erfc_exact = [
            (26.155, 1.736_346_011_694_073_8e-299),
            (20.0, 5.395_865_611_607_901e-176),
            (10.0, 2.088_487_583_762_545e-45),
            (6.5, 3.842_148_327_120_647_5e-20),
        ];
        for (x, want) in erfc_exact {
            assert!(rel_err(erfc(x), want) < 5e-16, "erfc({x}) = {:e}", erfc(x));
        }
        // x / (1 + exp(-2u)) with u from the float64 constants, exactly.
        let gelu_tanh_exact = [
            (-20.0, -3.375_450_956_310_934_8e-261),
            (-10.0, -1.204_092_348_209_803_6e-37),
            (-5.0, -2.291_796_196_629_504_7e-7),
            (-1.0, -0.158_808_009_391_723_3),
            (0.5, 0.345_714_009_825_143_94),
            (3.0, 2.996_362_607_918_227),
        ];
        for (x, want) in gelu_tanh_exact {
            assert!(
                rel_err(gelu_tanh(x), want) < 5e-16,
                "gelu_tanh({x}) = {:e}",
                gelu_tanh(x)
            );
        }
    }

    #[test]
    fn exp_subnormal_results_within_one_spacing() {
        for x in sweep(4, 20_000, -745.1, -708.4) {
            let (a, b) = (exp(x).to_bits() as i64, x.exp().to_bits() as i64);
            assert!(
                (a - b).abs() <= 1,
                "exp({x:e}) = {:e}, std {:e}",
                exp(x),
                x.exp()
            );
        }
    }

    #[test]
    fn fdlibm_constants_match_their_decimal_values() {
        let pairs: [(f64, &str); 12] = [
            (LN2_HI, "6.93147180369123816490e-01"),
            (LN2_LO, "1.90821492927058770002e-10"),
            (LG1, "6.666666666666735130e-01"),
            (LG7, "1.479819860511658591e-01"),
            (ERX, "8.45062911510467529297e-01"),
            (ERF_P[0][0], "1.28379167095512558561e-01"),
            (ERF_P[8][2], "-9.86494403484714822705e-03"),
            (ERF_Q[0][2], "-6.04244152148580987438e-02"),
            (ERF_P[7][3], "-9.86494292470009928597e-03"),
            (ERF_Q[0][3], "-2.24409524465858183362e+01"),
            (PIO2_3T, "8.47842766036889956997e-32"),
            (C6, "-1.13596475577881948265e-11"),
        ];
        for (c, s) in pairs {
            assert_eq!(c, s.parse::<f64>().unwrap(), "{s}");
        }
        assert_eq!(FRAC_2_PI.to_bits(), 0x3fe4_5f30_6dc9_c883); // fdlibm's invpio2
        assert_eq!(SQRT_2_OVER_PI, (2.0 / std::f64::consts::PI).sqrt());
        assert_eq!(ERF_Q[8], [0.0, 0.0, 1.0, 0.0]);
        assert_eq!(ERF_Q[7][3], 1.0);
    }

    // ---- special values -----------------------------------------------------------------------

    fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn special_values() {
        let nan = f64::NAN;
        let cases: &[(PortableFn, f64, f64)] = &[
            (PortableFn::Exp, -INF, 0.0),
            (PortableFn::Exp, INF, INF),
            (PortableFn::Exp, 710.0, INF),
            (PortableFn::Exp, 1e300, INF),
            (PortableFn::Exp, -746.0, 0.0),
            (PortableFn::Exp, -1e300, 0.0),
            (PortableFn::Exp, 0.0, 1.0),
            (PortableFn::Exp, -0.0, 1.0),
            (PortableFn::Exp, 1.0, std::f64::consts::E),
            (PortableFn::Exp, -745.0, 5e-324),
            (PortableFn::Log, 0.0, -INF),
            (PortableFn::Log, -0.0, -INF),
            (PortableFn::Log, -1.0, nan),
            (PortableFn::Log, -INF, nan),
            (PortableFn::Log, INF, INF),
            (PortableFn::Log, 1.0, 0.0),
            (PortableFn::Log, 5e-324, (5e-324f64).ln()),
            (PortableFn::Log1p, -1.0, -INF),
            (PortableFn::Log1p, -2.0, nan),
            (PortableFn::Log1p, INF, INF),
            (PortableFn::Log1p, -INF, nan),
            (PortableFn::Log1p, 0.0, 0.0),
            (PortableFn::Log1p, -0.0, -0.0),
            (PortableFn::Expm1, -INF, -1.0),
            (PortableFn::Expm1, INF, INF),
            (PortableFn::Expm1, 710.0, INF),
            (PortableFn::Expm1, 0.0, 0.0),
            (PortableFn::Expm1, -0.0, -0.0),
            (PortableFn::Expm1, -100.0, -1.0),
            (PortableFn::Sigmoid, INF, 1.0),
            (PortableFn::Sigmoid, -INF, 0.0),
            (PortableFn::Sigmoid, 0.0, 0.5),
            (PortableFn::Sigmoid, 800.0, 1.0),
            (PortableFn::LogSigmoid, INF, 0.0),
            (PortableFn::LogSigmoid, -INF, -INF),
            (PortableFn::LogSigmoid, 0.0, -std::f64::consts::LN_2),
            (PortableFn::LogSigmoid, -1e300, -1e300),
            (PortableFn::Tanh, INF, 1.0),
            (PortableFn::Tanh, -INF, -1.0),
            (PortableFn::Tanh, 0.0, 0.0),
            (PortableFn::Tanh, -0.0, -0.0),
            (PortableFn::Tanh, 20.0, 1.0),
            (PortableFn::Erf, INF, 1.0),
            (PortableFn::Erf, -INF, -1.0),
            (PortableFn::Erf, 0.0, 0.0),
            (PortableFn::Erf, -0.0, -0.0),
            (PortableFn::Erf, 6.0, 1.0),
            (PortableFn::Sin, INF, nan),
            (PortableFn::Sin, -INF, nan),
            (PortableFn::Sin, 0.0, 0.0),
            (PortableFn::Sin, -0.0, -0.0),
            (PortableFn::Cos, INF, nan),
            (PortableFn::Cos, -INF, nan),
            (PortableFn::Cos, 0.0, 1.0),
            (PortableFn::Cos, -0.0, 1.0),
            (PortableFn::Gelu, INF, INF),
            (PortableFn::Gelu, -INF, -0.0),
            (PortableFn::Gelu, 0.0, 0.0),
            (PortableFn::Gelu, -0.0, -0.0),
            (PortableFn::Gelu, 100.0, 100.0),
            (PortableFn::Gelu, -100.0, -0.0),
            (PortableFn::Gelu, 1e300, 1e300),
            (PortableFn::GeluTanh, INF, INF),
            (PortableFn::GeluTanh, -INF, -0.0),
            (PortableFn::GeluTanh, -0.0, -0.0),
            (PortableFn::GeluTanh, 1e300, 1e300),
            (PortableFn::GeluTanh, -1e300, -0.0),
            (PortableFn::Silu, INF, INF),
            (PortableFn::Silu, -INF, -0.0),
            (PortableFn::Silu, -0.0, -0.0),
            (PortableFn::Silu, -1e300, -0.0),
        ];
        for &(f, x, want) in cases {
            let got = f.eval(x);
            assert!(
                same(got, want),
                "{}({x:e}) = {got:e}, want {want:e}",
                f.name()
            );
        }
        for f in PortableFn::ALL {
            for x in [nan, -nan, f64::from_bits(0x7ff0_0000_0000_0001)] {
                assert_eq!(f.eval(x).to_bits(), CANONICAL_NAN.to_bits(), "{}", f.name());
            }
        }
        // Huge arguments of sin and cos stay finite and in [-1, 1].
        for x in [1e7, 1e16, 1e300, f64::MAX, -f64::MAX, 2f64.powi(52) + 2.0] {
            for y in [sin(x), cos(x)] {
                assert!((-1.0..=1.0).contains(&y), "{x:e} -> {y:e}");
            }
        }
        // Monotone and bounded at the borders of erf's ranges.
        for b in [0.84375f64, 1.25, ERF_TAIL_SPLIT, 6.0, 28.0] {
            let lo = f64::from_bits(b.to_bits() - 1);
            assert!(erf(lo) <= erf(b) && erf(b) <= 1.0, "erf at {b}");
            assert!(erfc(lo) >= erfc(b), "erfc at {b}");
        }
    }

    #[test]
    fn names_round_trip() {
        for f in PortableFn::ALL {
            assert_eq!(PortableFn::from_name(f.name()).unwrap(), f);
        }
        let err = PortableFn::from_name("relu").unwrap_err();
        assert!(
            err.0.contains("\"relu\"") && err.0.contains("gelu_tanh"),
            "{}",
            err.0
        );
    }

    // ---- determinism ------------------------------------------------------------------------------

    /// A fixed set of 4096 inputs: special values, every scale and sign, uniform ranges.
    fn golden_inputs() -> Vec<f64> {
        let mut xs = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            -0.5,
            0.25,
            0.84375,
            1.25,
            ERF_TAIL_SPLIT,
            6.0,
            28.0,
            709.782_712_893_384,
            -745.133_219_101_941_1,
            -745.2,
            f64::MAX,
            -f64::MAX,
            f64::MIN_POSITIVE,
            -f64::MIN_POSITIVE,
            5e-324,
            -5e-324,
            INF,
            -INF,
            f64::NAN,
            std::f64::consts::FRAC_PI_2,
            std::f64::consts::PI,
            45.553_093_477_052,
            1.6e6,
            1e20,
        ];
        let mut rng = Rng(0x5eed);
        let ranges = [1.0, 4.0, 10.0, 40.0, 800.0, 1e5];
        while xs.len() < 4096 {
            let x = match xs.len() % 8 {
                0 | 1 => rng.log_uniform(-1074, 1024, true),
                2 => rng.log_uniform(-40, 10, true),
                _ => {
                    let r = ranges[(rng.next() % ranges.len() as u64) as usize];
                    rng.uniform(-r, r)
                }
            };
            xs.push(x);
        }
        xs
    }

    fn fnv1a(values: &[f64]) -> u64 {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for v in values {
            for b in v.to_bits().to_le_bytes() {
                h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }

    /// Hashes of every function's outputs on [`golden_inputs`]. They pin the results: any
    /// change of any bit of any output (on any platform) fails here.
    const GOLDEN: [(PortableFn, u64); 13] = [
        (PortableFn::Exp, 0xc192_3c03_7086_c0e1),
        (PortableFn::Log, 0xe171_dece_c229_71b7),
        (PortableFn::Log1p, 0x1053_fc5d_d321_bc0b),
        (PortableFn::Expm1, 0x7363_b817_5245_3441),
        (PortableFn::Sigmoid, 0x569f_5cd5_9e11_ea35),
        (PortableFn::LogSigmoid, 0x1fad_79cf_6d1a_4fa8),
        (PortableFn::Tanh, 0xeaed_107e_29f5_ac98),
        (PortableFn::Erf, 0xfc9e_d441_37f0_b1a3),
        (PortableFn::Sin, 0x43ae_7447_eceb_3241),
        (PortableFn::Cos, 0xade0_0b24_a143_b004),
        (PortableFn::Gelu, 0xdd2b_6f20_8dd3_6d53),
        (PortableFn::GeluTanh, 0x43d3_a983_4222_3276),
        (PortableFn::Silu, 0x3ea7_494e_e7cf_f68f),
    ];

    #[test]
    fn golden_hashes() {
        let xs = golden_inputs();
        let mut failures = Vec::new();
        for (f, want) in GOLDEN {
            let mut v = xs.clone();
            apply(f, &mut v);
            let got = fnv1a(&v);
            if got != want {
                failures.push(format!("(PortableFn::{f:?}, {got:#018x}),"));
            }
        }
        assert!(
            failures.is_empty(),
            "changed results:\n{}",
            failures.join("\n")
        );
    }

    /// Vector bodies and remainders, the AVX2 and the baseline loop, and one element at a time
    /// all give the same bits.
    #[test]
    fn slices_match_single_elements() {
        let xs = golden_inputs();
        for f in PortableFn::ALL {
            let single: Vec<u64> = xs.iter().map(|&x| f.eval(x).to_bits()).collect();
            for len in [0, 1, 2, 3, 5, 7, 8, 9, 31, 33, 1000] {
                for start in [0, 1, 3] {
                    let mut v = xs[start..start + len].to_vec();
                    apply(f, &mut v);
                    let mut b = xs[start..start + len].to_vec();
                    apply_with(f, &mut b);
                    for i in 0..len {
                        let x = xs[start + i];
                        assert_eq!(v[i].to_bits(), single[start + i], "{} {x:e}", f.name());
                        assert_eq!(b[i].to_bits(), single[start + i], "{} {x:e}", f.name());
                    }
                }
            }
            let mut all = xs.clone();
            apply(f, &mut all);
            assert!(all.iter().zip(&single).all(|(a, &s)| a.to_bits() == s));
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                let mut v = xs.clone();
                // SAFETY: the CPU has AVX2.
                unsafe { apply_avx2(f, &mut v) };
                assert!(v.iter().zip(&single).all(|(a, &s)| a.to_bits() == s));
            }
        }
    }

    /// The scalar functions are the `PortableFn`s.
    #[test]
    fn scalar_functions_match_eval() {
        let pairs: [(PortableFn, Scalar); 13] = [
            (PortableFn::Exp, exp),
            (PortableFn::Log, log),
            (PortableFn::Log1p, log1p),
            (PortableFn::Expm1, expm1),
            (PortableFn::Sigmoid, sigmoid),
            (PortableFn::LogSigmoid, log_sigmoid),
            (PortableFn::Tanh, tanh),
            (PortableFn::Erf, erf),
            (PortableFn::Sin, sin),
            (PortableFn::Cos, cos),
            (PortableFn::Gelu, gelu),
            (PortableFn::GeluTanh, gelu_tanh),
            (PortableFn::Silu, silu),
        ];
        for x in golden_inputs() {
            for (f, g) in pairs {
                assert_eq!(f.eval(x).to_bits(), g(x).to_bits(), "{} {x:e}", f.name());
            }
        }
    }

    // ---- grid ---------------------------------------------------------------------------------

    /// [`grid`] the plain way: one slice at a time, the scale from `powi`, std's rounding.
    fn grid_reference(
        values: &[f64],
        outer: usize,
        reduce: usize,
        inner: usize,
        bits: u32,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut ints = vec![0.0; values.len()];
        let mut scales = vec![0.0; outer * inner];
        for o in 0..outer {
            for i in 0..inner {
                let at = |r: usize| (o * reduce + r) * inner + i;
                let m = (0..reduce)
                    .map(|r| values[at(r)].abs())
                    .filter(|a| !a.is_nan())
                    .fold(0.0, f64::max);
                let e = ((m.to_bits() >> 52) & 0x7ff) as i32;
                let scale = 2f64.powi((bits as i32 + 1022 - e).clamp(-1022, 1023));
                scales[o * inner + i] = scale;
                for r in 0..reduce {
                    ints[at(r)] = canonical((values[at(r)] * scale).round_ties_even());
                }
            }
        }
        (ints, scales)
    }

    /// `n` values over many magnitudes (subnormals to huge), with zeros and some slices of one
    /// scale only.
    fn grid_inputs(rng: &mut Rng, n: usize) -> Vec<f64> {
        let lo = [-1074, -60, -3, 0, 300][(rng.next() % 5) as usize];
        let hi = lo + 1 + (rng.next() % 40) as i32;
        (0..n)
            .map(|k| match rng.next() % 16 {
                0 => 0.0,
                1 => -0.0,
                2 => rng.log_uniform(-1074, 1024, true),
                3 if k % 2 == 0 => rng.uniform(-1.0, 1.0),
                _ => rng.log_uniform(lo, hi.min(1024), true),
            })
            .collect()
    }

    fn assert_same_bits(got: &[f64], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{what} [{k}]: {g:e} vs {w:e}");
        }
    }

    /// Rows (`inner == 1`) and columns (`inner > 1`), every length of the vectorized bodies and
    /// remainders, against the reference; the baseline and the AVX2 loops alike.
    #[test]
    fn grid_matches_reference() {
        let mut rng = Rng(0x9a1d);
        let shapes = [
            (3, 300, 1),
            (1, 7, 1),
            (4, 1, 1),
            (2, 16, 1),
            (2, 17, 1),
            (5, 33, 1),
            (1, 0, 1),
            (0, 5, 1),
            (2, 64, 40),
            (3, 5, 2),
            (1, 1, 7),
            (2, 9, 3),
            (1, 0, 4),
            (2, 3, 0),
        ];
        for (outer, reduce, inner) in shapes {
            for bits in [1, 2, 7, 26, 51, 52] {
                let values = grid_inputs(&mut rng, outer * reduce * inner);
                let (want_i, want_s) = grid_reference(&values, outer, reduce, inner, bits);
                let what = format!("({outer}, {reduce}, {inner}) bits {bits}");
                let (ints, scales) = grid(&values, outer, reduce, inner, bits).unwrap();
                assert_same_bits(&ints, &want_i, &what);
                assert_same_bits(&scales, &want_s, &what);
                let mut data = values.clone();
                let mut sc = vec![0.0; outer * inner];
                grid_with(&mut data, &mut sc, reduce, inner, bits);
                assert_same_bits(&data, &want_i, &what);
                assert_same_bits(&sc, &want_s, &what);
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    let mut data = values.clone();
                    // SAFETY: the CPU has AVX2.
                    unsafe { grid_avx2(&mut data, &mut sc, reduce, inner, bits) };
                    assert_same_bits(&data, &want_i, &what);
                    assert_same_bits(&sc, &want_s, &what);
                }
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("sse4.1") {
                    let mut data = values.clone();
                    // SAFETY: the CPU has SSE4.1.
                    unsafe { grid_sse41(&mut data, &mut sc, reduce, inner, bits) };
                    assert_same_bits(&data, &want_i, &what);
                    assert_same_bits(&sc, &want_s, &what);
                }
            }
        }
    }

    /// `|ints| <= 2^bits` (but for the clamp at `bits = 1`), the ints are integers, and
    /// `ints / scale` is within half a step of the value, for every `bits`.
    #[test]
    fn grid_bound_and_accuracy() {
        let mut rng = Rng(0xb0b);
        for bits in 1..=52 {
            for (outer, reduce, inner) in [(4, 50, 1), (2, 20, 6)] {
                let values = grid_inputs(&mut rng, outer * reduce * inner);
                let (ints, scales) = grid(&values, outer, reduce, inner, bits).unwrap();
                for (k, (&q, &v)) in ints.iter().zip(&values).enumerate() {
                    let s = scales[k / (reduce * inner) * inner + k % inner];
                    // The clamp from below: bits = 1 and a maximum >= 2^1023.
                    let limit = if bits == 1 && s == f64::MIN_POSITIVE {
                        4.0
                    } else {
                        2f64.powi(bits as i32)
                    };
                    assert!(q.abs() <= limit, "bits {bits}: {v:e} -> {q:e}");
                    assert_eq!(q, q.round_ties_even());
                    assert!((q - v * s).abs() <= 0.5, "bits {bits}: {v:e} -> {q:e}");
                    // A power of two, a normal number.
                    assert_eq!(s.to_bits() & ((1 << 52) - 1), 0);
                    assert!(s >= f64::MIN_POSITIVE && s.is_finite());
                }
            }
        }
        // The largest value of a slice reaches 2^bits when it rounds up there.
        let (ints, _) = grid(&[f64::from_bits(0x3fff_ffff_ffff_ffff), 0.5], 1, 2, 1, 3).unwrap();
        assert_eq!(ints, [8.0, 2.0]);
        // bits = 1 and a maximum >= 2^1023: the scale 2^-1023 is clamped to 2^-1022.
        let (ints, scales) = grid(&[f64::MAX, 2f64.powi(1023), 1.0], 1, 3, 1, 1).unwrap();
        assert_eq!(scales, [f64::MIN_POSITIVE]);
        assert_eq!(ints, [4.0, 2.0, 0.0]);
        let (ints, _) = grid(&[f64::MAX, 2f64.powi(1023)], 1, 2, 1, 2).unwrap();
        assert_eq!(ints, [4.0, 2.0]);
    }

    #[test]
    fn grid_zero_and_subnormal_slices() {
        let big = 2f64.powi(1023);
        let (ints, scales) = grid(&[0.0, -0.0, 0.0, 0.0], 2, 2, 1, 10).unwrap();
        assert_same_bits(&ints, &[0.0, -0.0, 0.0, 0.0], "zeros");
        assert_eq!(scales, [big, big]);
        let (ints, scales) = grid(&[0.0; 6], 1, 2, 3, 52).unwrap();
        assert_eq!(ints, [0.0; 6]);
        assert_eq!(scales, [big; 3]);
        // Subnormal maxima have E = 0, so the scale is 2^1023 too (v * 2^1023 < 2).
        let tiny = 5e-324;
        let half_min = f64::MIN_POSITIVE / 2.0; // 2^-1023
        let top = f64::from_bits(0x000f_ffff_ffff_ffff); // the largest subnormal
        let three_quarters = f64::from_bits(0x000c_0000_0000_0000); // 1.5 * 2^-1023
        for bits in [1, 5, 52] {
            let (ints, scales) =
                grid(&[tiny, -half_min, top, -three_quarters], 1, 4, 1, bits).unwrap();
            assert_same_bits(&ints, &[0.0, -1.0, 2.0, -2.0], "subnormals");
            assert_eq!(scales, [big]);
        }
        // Near the underflow the clamp holds the scale at 2^1023 for larger maxima too: the
        // ints stay below 2^bits, on a coarser grid.
        let (ints, scales) = grid(&[f64::MIN_POSITIVE, half_min, tiny], 1, 3, 1, 52).unwrap();
        assert_eq!(scales, [big]);
        assert_eq!(ints, [2.0, 1.0, 0.0]);
        // A larger maximum next to subnormals: they scale exactly, and round (0.5 to even).
        let values = [2f64.powi(-971), half_min, three_quarters];
        let (ints, scales) = grid(&values, 1, 3, 1, 52).unwrap();
        assert_eq!(scales, [2f64.powi(1022)]);
        assert_eq!(ints, [2f64.powi(51), 0.0, 1.0]);
    }

    #[test]
    fn grid_ties_to_even() {
        // Largest 3.0: E = 1024, scale 2^(4 + 1022 - 1024) = 4.
        let values = [0.625, 0.875, -0.625, -0.875, 0.375, 0.125, -0.125, 3.0];
        let (ints, scales) = grid(&values, 1, 8, 1, 4).unwrap();
        assert_same_bits(&ints, &[2.0, 4.0, -2.0, -4.0, 2.0, 0.0, -0.0, 12.0], "ties");
        assert_eq!(scales, [4.0]);
        assert_eq!(round_even(f64::NAN).to_bits(), CANONICAL_NAN.to_bits());
    }

    #[test]
    fn grid_nan_and_infinity() {
        let nan = -f64::from_bits(0x7ff0_0000_0000_0001);
        // A NaN is ignored for the maximum (3.0 sets the scale 4) and is canonical in the ints.
        let (ints, scales) = grid(&[nan, 0.625, 3.0, nan], 1, 4, 1, 4).unwrap();
        assert_eq!(scales, [4.0]);
        assert_eq!(ints[0].to_bits(), CANONICAL_NAN.to_bits());
        assert_eq!(ints[3].to_bits(), CANONICAL_NAN.to_bits());
        assert_eq!(ints[1..3], [2.0, 12.0]);
        let (ints, scales) = grid(&[nan, nan], 1, 1, 2, 4).unwrap();
        assert_eq!(scales, [2f64.powi(1023); 2]);
        assert!(ints.iter().all(|q| q.to_bits() == CANONICAL_NAN.to_bits()));
        // An infinity: E = 2047, the exponent field clamps to 1 (bits <= 3).
        let (ints, scales) = grid(&[-INF, 1e300, 0.0], 1, 3, 1, 2).unwrap();
        assert_eq!(scales, [f64::MIN_POSITIVE]);
        assert_same_bits(&ints, &[-INF, 0.0, 0.0], "infinity");
    }

    #[test]
    fn grid_errors() {
        for bits in [0, 53, 64, u32::MAX] {
            let err = grid(&[1.0], 1, 1, 1, bits).unwrap_err();
            assert!(err.0.contains("1..=52"), "{}", err.0);
        }
        assert!(grid(&[1.0, 2.0], 1, 3, 1, 8)
            .unwrap_err()
            .0
            .contains("3 elements"));
        assert!(grid(&[], usize::MAX, 2, 2, 8)
            .unwrap_err()
            .0
            .contains("too large"));
        let mut data = [1.0; 6];
        let err = grid_in_place(&mut data, &mut [0.0; 2], 1, 2, 3, 8).unwrap_err();
        assert!(err.0.contains("scales"), "{}", err.0);
        assert!(grid_in_place(&mut data, &mut [0.0; 3], 1, 2, 3, 8).is_ok());
    }
}
