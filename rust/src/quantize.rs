//! Logits (or probabilities) -> integer frequency tables, a pure function of the float32 bits.
//!
//! The entropy coder ([`crate::ans`]) needs, for every coded variable, integer frequencies
//! `f_0..f_{K-1}` with `f_i >= 1` (every symbol stays codable) and `sum f_i == TOTAL == 2^24`.
//! Encoder and decoder must compute exactly the same table from the same network outputs, on
//! every platform, so nothing here calls the platform's `exp` (libm results differ between
//! systems). Only IEEE-754 basic operations (`+ - * /`, comparisons, exact conversions and bit
//! moves) are used, each in a fixed order. Rust never contracts `a * b + c` into a fused
//! multiply-add unless asked, so the compiled code performs exactly the roundings written here.
//! The kernels are written once over 8 lanes ([`Lanes`]): AVX2 registers where the CPU has
//! them, plain arrays otherwise ([`simd_dispatch`] picks at run time); lane `j` of a vector is
//! element `8 v + j` of the row in both, and the summation order is fixed by the algorithm, not
//! by the hardware, so both give the same bits.
//!
//! # The algorithm (one row of `K` logits `l_0..l_{K-1}`, all float32)
//!
//! 1. Reject the row if `K < 2`, `K > MAX_SYMBOLS` or any `l_i` is NaN or infinite.
//!    `m = max_i l_i`; `a` = the lowest index with `l_a == m` (the argmax).
//! 2. Weights, in float32: `w_i = exp2(max((l_i - m) * LOG2_E, -100))` where `exp2(t)` for
//!    `t` in `[-100, 0]` is computed as:
//!    `r = t + 1.5*2^23` (rounds `t` to the nearest integer, ties to even), `n = r - 1.5*2^23`,
//!    `g = t - n` (in `[-0.5, 0.5]`), `p = ((C3*g + C2)*g + C1)*g + 1`
//!    (the Taylor coefficients `ln2^j / j!` rounded to float32), and `w = p * 2^n` where `2^n`
//!    is built from its bits (exact). `w_a == 1` exactly. The relative error against the true
//!    exponential is below `1e-3`; its cost in compression is below `1e-6` bits per symbol, and
//!    a short polynomial keeps this, the hot loop of the coder, fast.
//! 3. Sum, deterministically: the weights are cut into blocks of 256 (the last one may be
//!    shorter); inside a block element `i` is added, in index order, to float32 lane `i % 8`;
//!    each block's 8 lanes are converted to float64 and added in lane order to a float64 total
//!    `S` (blocks in order).
//! 4. `scale = float32(float64(TOTAL - K) * (1 - 2^-16) / S)` (float64 product and quotient,
//!    then rounded to float32).
//! 5. `q_i = trunc(float32(w_i * scale))`, `f_i = q_i + 1`, and the leftover
//!    `TOTAL - sum_i f_i` is added to `f_a`.
//!
//! The factor `1 - 2^-16` bounds the rounding of steps 2-5 (relative error of the block sums is
//! below `40 * 2^-24`), so `sum_i q_i <= TOTAL - K` always holds and the leftover is never
//! negative; it is small (about `K / 2 + TOTAL * 2^-16`), so the table stays close to the
//! softmax. Step 2 never produces subnormal numbers, so flush-to-zero modes do not change the
//! result either.
//!
//! Probabilities take the same path with `w_i = p_i` (no exponential): they must be finite and
//! non-negative with a positive sum (not necessarily 1); the argmax is the lowest index of the
//! largest probability, and a zero probability still gets frequency 1.
//!
//! The frequency tables are what [`quantize_logits`] returns. The coder reads a row twice
//! ([`Quantizer::prepare`]: the max and min, then weights and sum in one pass) and then works on
//! the stored weights: [`Quantizer::locate`] gives `(cumulative, frequency)` of one symbol and
//! [`Quantizer::find`] finds the symbol of a slot (for `K <= 64` through the whole cumulative
//! table, otherwise by a binary search over vectors of 8). The argmax is searched for only as far
//! as needed (the encoder only needs to know whether it lies before, at or after the symbol).
//! Rows of `K <= 8` take [`small_freqs`], unrolled for their `K`, and the coder has loops
//! compiled for `K` = 16, 32, 64 and 256; all give the same tables.

use crate::error::{CoreError, CoreResult};

/// Bits of frequency precision: every table sums to `2^PRECISION`.
pub const PRECISION: u32 = 24;
/// The sum of every frequency table.
pub const TOTAL: u32 = 1 << PRECISION;
/// The smallest supported alphabet.
pub const MIN_SYMBOLS: usize = 2;
/// The largest supported alphabet (each symbol needs frequency >= 1 out of `TOTAL`).
pub const MAX_SYMBOLS: usize = 1 << 20;

const LANES: usize = 8;
const BLOCK: usize = 256;
const SLACK: f64 = 1.0 - 1.0 / 65536.0;
const EXP2_FLOOR: f32 = -100.0;
const ROUND_MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
const LOG2_E: f32 = std::f32::consts::LOG2_E;
// ln(2)^j / j!, rounded to float32.
const C1: f32 = std::f32::consts::LN_2;
const C2: f32 = 0.240_226_5;
const C3: f32 = 0.055_504_11;

/// Which kind of float rows are being quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Unnormalized log-probabilities (softmax inputs).
    Logits,
    /// Non-negative probabilities (any positive sum).
    Probs,
}

/// Rows of at most this many symbols take [`small_freqs`]: scalar code, unrolled for each `K`,
/// that builds the whole table (the same operations, so the same results).
pub(crate) const SMALL_K: usize = 8;

/// Calls `$body` with `$K` a constant equal to `$k` (which must lie in `2..=SMALL_K`).
macro_rules! with_small_k {
    ($k:expr, $K:ident => $body:expr) => {
        match $k {
            2 => {
                const $K: usize = 2;
                $body
            }
            3 => {
                const $K: usize = 3;
                $body
            }
            4 => {
                const $K: usize = 4;
                $body
            }
            5 => {
                const $K: usize = 5;
                $body
            }
            6 => {
                const $K: usize = 6;
                $body
            }
            7 => {
                const $K: usize = 7;
                $body
            }
            8 => {
                const $K: usize = 8;
                $body
            }
            _ => unreachable!("small rows have 2..=8 symbols"),
        }
    };
}
pub(crate) use with_small_k;

fn non_finite_error(input: Input) -> CoreError {
    CoreError::new(match input {
        Input::Logits => "logits contain NaN or infinity",
        Input::Probs => "probabilities contain NaN or infinity",
    })
}

fn negative_error() -> CoreError {
    CoreError::new("probabilities must be non-negative")
}

fn zero_sum_error() -> CoreError {
    CoreError::new("probabilities must have a positive sum (at least 2^-64)")
}

/// Step 4.
#[inline(always)]
fn scale_of(k: usize, total: f64) -> f32 {
    ((TOTAL as usize - k) as f64 * SLACK / total) as f32
}

/// The whole frequency table of a row of `K <= SMALL_K` symbols (steps 1-5 in scalar code).
/// With at most 8 symbols, lane `i % 8` is lane `i` and holds one weight, so the block sum of
/// step 3 is the float64 sum of the weights in index order (the unused lanes add `+0.0`).
#[inline(always)]
pub(crate) fn small_freqs<const K: usize>(row: &[f32; K], input: Input) -> CoreResult<[u32; K]> {
    let mut finite = true;
    let (mut m, mut argmax) = (row[0], 0);
    for (i, &v) in row.iter().enumerate() {
        finite &= v.abs() <= f32::MAX;
        if v > m {
            m = v;
            argmax = i;
        }
    }
    if !finite {
        return Err(non_finite_error(input));
    }
    let mut w = *row;
    match input {
        Input::Logits => {
            for wi in &mut w {
                *wi = exp_nonpositive(*wi - m);
            }
        }
        Input::Probs => {
            if row.iter().any(|&p| p < 0.0) {
                return Err(negative_error());
            }
        }
    }
    let mut total = 0.0f64;
    for &wi in &w {
        total += wi as f64;
    }
    if input == Input::Probs && total < MIN_PROB_SUM {
        return Err(zero_sum_error());
    }
    let scale = scale_of(K, total);
    let mut freqs = [0u32; K];
    let mut quanta_sum = 0;
    for (f, &wi) in freqs.iter_mut().zip(&w) {
        let q = quantum(wi, scale);
        quanta_sum += q;
        *f = q + 1;
    }
    freqs[argmax] += leftover(K, quanta_sum);
    Ok(freqs)
}

/// `(cumulative frequency, frequency)` of `symbol` in a small table.
#[inline(always)]
pub(crate) fn small_locate<const K: usize>(freqs: &[u32; K], symbol: usize) -> (u32, u32) {
    let mut cum = 0;
    for (i, &f) in freqs.iter().enumerate() {
        cum += if i < symbol { f } else { 0 };
    }
    (cum, freqs[symbol])
}

/// `(symbol, cumulative frequency, frequency)` of the symbol whose interval holds `slot`.
#[inline(always)]
pub(crate) fn small_find<const K: usize>(freqs: &[u32; K], slot: u32) -> (usize, u32, u32) {
    // The number of interval ends at or below `slot` (the last end, TOTAL, never is).
    let (mut end, mut below, mut symbol) = (0u32, 0u32, 0usize);
    for &f in &freqs[..K - 1] {
        end += f;
        let passed = end <= slot;
        symbol += passed as usize;
        below = if passed { end } else { below };
    }
    (symbol, below, freqs[symbol])
}

/// Reusable scratch for rows of more than [`SMALL_K`] symbols: the weights of the last
/// prepared row (padded with zeros to whole vectors of 8) and, for [`Quantizer::find`], the
/// per-lane running sums of their quanta. No allocation after the first row of a size.
/// The storage is growable vectors (any `K`) or, for loops compiled for one `K`, arrays on the
/// stack ([`Quantizer::fixed`]), whose sizes the compiler then knows.
#[derive(Clone, Debug)]
pub(crate) struct Quantizer<W = Vec<[f32; LANES]>, P = Vec<[i32; LANES]>> {
    weights: W,
    prefix: P,
    /// `K`, the maximum and the scale (step 4) of the prepared row.
    num_symbols: usize,
    max: f32,
    scale: f32,
}

impl Default for Quantizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Quantizer {
    pub fn new() -> Self {
        Quantizer {
            weights: Vec::new(),
            prefix: Vec::new(),
            num_symbols: 0,
            max: 0.0,
            scale: 0.0,
        }
    }

    /// Makes room for rows of `k` symbols.
    pub fn reserve(&mut self, k: usize) {
        let nv = k.div_ceil(LANES);
        if self.weights.len() < nv {
            self.weights.resize(nv, [0.0; LANES]);
            self.prefix.resize(nv, [0; LANES]);
        }
    }
}

impl<const N: usize> Quantizer<[[f32; LANES]; N], [[i32; LANES]; N]> {
    /// Room for rows of up to `8 N` symbols, on the stack.
    pub fn fixed() -> Self {
        Quantizer {
            weights: [[0.0; LANES]; N],
            prefix: [[0; LANES]; N],
            num_symbols: 0,
            max: 0.0,
            scale: 0.0,
        }
    }
}

impl<W, P> Quantizer<W, P>
where
    W: AsRef<[[f32; LANES]]> + AsMut<[[f32; LANES]]>,
    P: AsRef<[[i32; LANES]]> + AsMut<[[i32; LANES]]>,
{
    /// Steps 1-4 for one row of logits or probabilities (any `K >= 1`; the coder uses it for
    /// `K > SMALL_K`) in two passes over the row: the maximum, then the weights and their sum.
    /// The argmax is found later, by [`Quantizer::locate`] and [`Quantizer::find`], only as far
    /// as they need it.
    #[inline(always)]
    pub fn prepare<L: Lanes>(&mut self, lanes: L, row: &[f32], input: Input) -> CoreResult<()> {
        let k = row.len();
        let nv = k.div_ceil(LANES);
        let (chunks, tail) = row.as_chunks::<LANES>();
        // The last partial vector, padded with a copy of one of its values (which changes no
        // maximum or minimum); its padded weights are masked to 0.
        let mut pad = [0.0; LANES];
        let pad = if tail.is_empty() {
            None
        } else {
            for (i, p) in pad.iter_mut().enumerate() {
                *p = tail[i.min(tail.len() - 1)];
            }
            Some((&pad, tail.len()))
        };
        // Infinities show in the max or min, NaNs in the sum.
        let (m, lo) = kernels::max_min(lanes, chunks, pad);
        if !(m.abs() <= f32::MAX && lo.abs() <= f32::MAX) {
            return Err(non_finite_error(input));
        }
        let weights = &mut self.weights.as_mut()[..nv];
        let total = match input {
            Input::Logits => kernels::weights::<L, true>(lanes, chunks, pad, m, weights),
            Input::Probs => {
                if row.iter().any(|p| p.is_nan()) {
                    return Err(non_finite_error(input));
                }
                if lo < 0.0 {
                    return Err(negative_error());
                }
                kernels::weights::<L, false>(lanes, chunks, pad, m, weights)
            }
        };
        if total.is_nan() {
            return Err(non_finite_error(input));
        }
        if input == Input::Probs && total < MIN_PROB_SUM {
            return Err(zero_sum_error());
        }
        self.num_symbols = k;
        self.max = m;
        self.scale = scale_of(k, total);
        Ok(())
    }

    /// `(cumulative frequency, frequency)` of `symbol` (< K) in the prepared `row`: one pass
    /// over all quanta (a fixed number of steps, no data-dependent branch) that keeps the
    /// per-lane running sums, and a search for the argmax that stops at the symbol.
    #[inline(always)]
    pub fn locate<L: Lanes>(&mut self, lanes: L, row: &[f32], symbol: usize) -> (u32, u32) {
        let k = self.num_symbols;
        let total = self.quanta_prefix(lanes);
        let (js, ls) = (symbol / LANES, symbol % LANES);
        let scale = lanes.splat(self.scale);
        let own_vector = kernels::quanta(lanes, &self.weights.as_ref()[js], scale);
        let own = lanes.to_iarray(own_vector)[ls] as u32;
        let below = lanes.ihsum(lanes.iadd(
            lanes.iload(&self.prefix.as_ref()[js]),
            lanes.iand(own_vector, lanes.lanes_below(ls as i32)),
        ));
        let leftover = leftover(k, total);
        let argmax = kernels::first_equal(lanes, &row[..=symbol], self.max).unwrap_or(usize::MAX);
        let cum = below + symbol as u32 + if argmax < symbol { leftover } else { 0 };
        let freq = own + 1 + if argmax == symbol { leftover } else { 0 };
        (cum, freq)
    }

    /// Stores the per-lane running sums of the quanta before each vector in `prefix` and
    /// returns the sum of all quanta.
    #[inline(always)]
    fn quanta_prefix<L: Lanes>(&mut self, lanes: L) -> u32 {
        let nv = self.num_symbols.div_ceil(LANES);
        let (w, prefix) = (
            &self.weights.as_ref()[..nv],
            &mut self.prefix.as_mut()[..nv],
        );
        let scale = lanes.splat(self.scale);
        let mut acc = lanes.isplat(0);
        for (c, p) in w.iter().zip(prefix.iter_mut()) {
            lanes.istore(acc, p);
            acc = lanes.iadd(acc, kernels::quanta(lanes, c, scale));
        }
        lanes.ihsum(acc)
    }

    /// The symbol whose interval `[cum, cum + freq)` holds `slot` (< TOTAL) in the prepared
    /// `row`, with `cum`, `freq`: one pass that keeps the per-lane running sums of the quanta, a
    /// binary search over the vectors, then the 8 symbols of the vector found.
    #[inline(always)]
    pub fn find<L: Lanes>(&mut self, lanes: L, row: &[f32], slot: u32) -> (usize, u32, u32) {
        if self.num_symbols <= FIND_TABLE_K {
            return self.find_in_table(lanes, row, slot);
        }
        let k = self.num_symbols;
        let nv = k.div_ceil(LANES);
        let leftover = leftover(k, self.quanta_prefix(lanes));
        let (w, prefix) = (&self.weights.as_ref()[..nv], &self.prefix.as_ref()[..nv]);
        let scale = lanes.splat(self.scale);
        // The maximum is one of the values.
        let argmax = kernels::first_equal(lanes, row, self.max).unwrap_or(0);
        let argmax_vector = argmax / LANES;
        // Cumulative frequency of the first symbol of vector j.
        let start_of = |j: usize| {
            lanes.ihsum(lanes.iload(&prefix[j]))
                + (j * LANES) as u32
                + if j > argmax_vector { leftover } else { 0 }
        };
        // The last vector that starts at or below `slot` (vector 0 starts at 0), by a binary
        // search whose steps depend only on `nv` (selects, not branches).
        let (mut lo, mut len) = (0usize, nv);
        while len > 1 {
            let half = len / 2;
            lo = if start_of(lo + half) <= slot {
                lo + half
            } else {
                lo
            };
            len -= half;
        }
        let start = start_of(lo);
        let rel = slot - start;
        // The 8 symbols of the vector: interval ends relative to its start, in registers.
        let own = if argmax_vector == lo {
            (argmax % LANES) as i32
        } else {
            LANES as i32
        };
        let at_argmax = lanes.iandnot(lanes.lanes_below(own), lanes.lanes_below(own + 1));
        let freqs = lanes.iadd(
            lanes.iadd(kernels::quanta(lanes, &w[lo], scale), lanes.isplat(1)),
            lanes.iand(at_argmax, lanes.isplat(leftover as i32)),
        );
        let ends = lanes.iprefix(freqs);
        // Symbols of this vector whose interval ends at or below `slot`; the frequencies sum to
        // TOTAL > slot, so the count stays below the number of real symbols in the vector.
        let count = lanes.count_le(ends, rel as i32) as usize;
        let ends = lanes.to_iarray(ends);
        let below = if count == 0 {
            0
        } else {
            ends[count - 1] as u32
        };
        (
            lo * LANES + count,
            start + below,
            ends[count] as u32 - below,
        )
    }

    /// [`Quantizer::find`] for small rows: the whole cumulative table first (it does not depend
    /// on `slot`, so it overlaps with the previous symbol's decoding), then one comparison of
    /// every entry with `slot`.
    #[inline(always)]
    fn find_in_table<L: Lanes>(&mut self, lanes: L, row: &[f32], slot: u32) -> (usize, u32, u32) {
        let k = self.num_symbols;
        let nv = k.div_ceil(LANES);
        let (w, table) = (
            &self.weights.as_ref()[..nv],
            &mut self.prefix.as_mut()[..nv],
        );
        let scale = lanes.splat(self.scale);
        let mut total = lanes.isplat(0);
        for (c, t) in w.iter().zip(table.iter_mut()) {
            let ends = lanes.iadd(
                total,
                lanes.iprefix(lanes.iadd(kernels::quanta(lanes, c, scale), lanes.isplat(1))),
            );
            lanes.istore(ends, t);
            total = lanes.ilast(ends);
        }
        // Interval ends before the leftover (the padding's quanta are 0, its frequencies 1);
        // those from the argmax on, the padding's included, move up by it.
        let sum = lanes.to_iarray(total)[0] as u32 - (nv * LANES - k) as u32;
        let leftover = TOTAL.saturating_sub(sum);
        let argmax = kernels::first_equal(lanes, row, self.max).unwrap_or(0);
        // (In registers: rewriting single lanes of the stored vectors would make the vector
        // loads below wait for the stores.)
        let shift = lanes.isplat(leftover as i32);
        let mut symbol = 0;
        for (j, t) in table.iter().enumerate() {
            let before = (argmax as isize - (j * LANES) as isize).clamp(0, LANES as isize);
            let moved = lanes.iadd(
                lanes.iload(t),
                lanes.iandnot(lanes.lanes_below(before as i32), shift),
            );
            symbol += lanes.count_le(moved, slot as i32) as usize;
        }
        let ends = table.as_flattened();
        let end_of = |i: usize| ends[i] as u32 + if i >= argmax { leftover } else { 0 };
        let cum = if symbol == 0 { 0 } else { end_of(symbol - 1) };
        (symbol, cum, end_of(symbol) - cum)
    }

    /// The full frequency table of the prepared `row`, written to `out` (length K).
    pub fn table<L: Lanes>(&self, lanes: L, row: &[f32], out: &mut [u32]) {
        let w = self.weights.as_ref().as_flattened();
        for (f, &wi) in out.iter_mut().zip(&w[..self.num_symbols]) {
            *f = quantum(wi, self.scale) + 1;
        }
        let sum: u32 = out.iter().sum();
        let argmax = kernels::first_equal(lanes, row, self.max).unwrap_or(0);
        // Never negative by the error bound of the module docs; saturate as `leftover` does.
        out[argmax] += TOTAL.saturating_sub(sum);
    }
}

/// Rows up to this size are decoded with the whole cumulative table.
const FIND_TABLE_K: usize = 64;

const MIN_PROB_SUM: f64 = 1.0 / 18_446_744_073_709_551_616.0; // 2^-64

#[inline(always)]
fn quantum(w: f32, scale: f32) -> u32 {
    let y = w * scale;
    debug_assert!((0.0..=(TOTAL as f32) * 1.001).contains(&y));
    // 0 <= w <= S and scale <= (TOTAL - K) / S * (1 + 2^-20) (module docs, step 4), so y is
    // finite and in [0, 2^24 + 16]: it fits an i32, where truncation is the floor. The cast
    // saturates, so a broken bound could never be undefined behaviour, only a wrong table.
    y as i32 as u32
}

#[inline(always)]
fn leftover(num_symbols: usize, quanta_sum: u32) -> u32 {
    // Never negative by the error bound of the module docs; saturate rather than wrap anyway.
    (TOTAL - num_symbols as u32).saturating_sub(quanta_sum)
}

/// Step 2 of the module docs for one value `x = l - m <= 0` (the scalar form of
/// [`kernels::exp_nonpositive`]: the same operations).
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    let t = x * LOG2_E;
    let t = if t < EXP2_FLOOR { EXP2_FLOOR } else { t };
    let r = t + ROUND_MAGIC;
    let n = r - ROUND_MAGIC;
    let g = t - n;
    let p = ((C3 * g + C2) * g + C1) * g + 1.0;
    // r's low mantissa bits hold n + 2^22 with n in [-100, 0]: the biased exponent n + 127
    // is exact, and shifted into place it is 2^n.
    let biased = r.to_bits() as i32 - (ROUND_MAGIC.to_bits() as i32 - 127);
    p * f32::from_bits((biased as u32) << 23)
}

fn check_num_symbols(k: usize) -> CoreResult<()> {
    if k < MIN_SYMBOLS {
        return Err(CoreError::new(format!(
            "need at least {MIN_SYMBOLS} symbols per distribution, got {k}"
        )));
    }
    if k > MAX_SYMBOLS {
        return Err(CoreError::new(format!(
            "at most {MAX_SYMBOLS} symbols per distribution are supported, got {k}"
        )));
    }
    Ok(())
}

simd_dispatch! {
    /// Frequency tables of `rows` (row-major, `num_symbols` per row) as one flat vector.
    pub fn quantize(rows: &[f32], num_symbols: usize, input: Input) -> CoreResult<Vec<u32>>
        => quantize_rows
}

#[inline(always)]
pub(crate) fn quantize_rows<L: Lanes>(
    lanes: L,
    rows: &[f32],
    num_symbols: usize,
    input: Input,
) -> CoreResult<Vec<u32>> {
    check_num_symbols(num_symbols)?;
    if !rows.len().is_multiple_of(num_symbols) {
        return Err(CoreError::new(format!(
            "{} values do not split into rows of {num_symbols}",
            rows.len()
        )));
    }
    let mut out = vec![0u32; rows.len()];
    if num_symbols <= SMALL_K {
        with_small_k!(num_symbols, K => {
            let (rows, _) = rows.as_chunks::<K>();
            let (tables, _) = out.as_chunks_mut::<K>();
            for (row, table) in rows.iter().zip(tables) {
                *table = small_freqs(row, input)?;
            }
        });
        return Ok(out);
    }
    let mut quantizer = Quantizer::new();
    quantizer.reserve(num_symbols);
    for (row, table) in rows
        .chunks_exact(num_symbols)
        .zip(out.chunks_exact_mut(num_symbols))
    {
        quantizer.prepare(lanes, row, input)?;
        quantizer.table(lanes, row, table);
    }
    Ok(out)
}

/// Frequency tables of rows of logits; see the module docs for the exact algorithm.
///
/// ```
/// let freqs = ardm_core::quantize::quantize_logits(&[0.0, 1.0, -1.0], 3).unwrap();
/// assert_eq!(freqs.iter().sum::<u32>(), ardm_core::quantize::TOTAL);
/// assert!(freqs[1] > freqs[0] && freqs[0] > freqs[2]);
/// ```
pub fn quantize_logits(logits: &[f32], num_symbols: usize) -> CoreResult<Vec<u32>> {
    quantize(logits, num_symbols, Input::Logits)
}

/// Frequency tables of rows of probabilities (zero probabilities still get frequency 1).
pub fn quantize_probs(probs: &[f32], num_symbols: usize) -> CoreResult<Vec<u32>> {
    quantize(probs, num_symbols, Input::Probs)
}

/// Bits that a symbol of frequency `freq` costs: `PRECISION - log2(freq)`.
/// For tests and reports only (it uses the platform's `log2`; coding never does).
pub fn symbol_bits(freq: u32) -> f64 {
    PRECISION as f64 - (freq as f64).log2()
}

/// The ideal code length in bits, `sum_n -log2(f_n[x_n] / TOTAL)`, of `symbols` under the
/// quantized tables of `rows` (one row per symbol).
pub fn ideal_bits(
    symbols: &[i64],
    rows: &[f32],
    num_symbols: usize,
    input: Input,
) -> CoreResult<f64> {
    let tables = quantize(rows, num_symbols, input)?;
    if tables.len() != symbols.len() * num_symbols {
        return Err(CoreError::new(format!(
            "{} symbols but {} rows",
            symbols.len(),
            tables.len() / num_symbols
        )));
    }
    let mut bits = 0.0;
    for (&s, table) in symbols.iter().zip(tables.chunks_exact(num_symbols)) {
        let i = usize::try_from(s)
            .ok()
            .filter(|&i| i < num_symbols)
            .ok_or_else(|| CoreError::new(format!("symbol {s} out of range 0..{num_symbols}")))?;
        bits += symbol_bits(table[i]);
    }
    Ok(bits)
}

/// Defines a function whose body, a generic function of a [`Lanes`] implementation, is compiled
/// twice on x86-64: with [`Portable`] lanes for the baseline target and with [`Avx2`] lanes
/// inside an AVX2 function, picked at run time when the CPU has AVX2. Both lane types perform
/// the same IEEE operations in the same order, so both copies give bit-identical results (Rust
/// never fuses multiply-adds on its own).
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty
        => $imp:path) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                fn avx2(lanes: $crate::quantize::Avx2, $($arg: $ty),*) -> $ret {
                    $imp(lanes, $($arg),*)
                }
                if let Some(lanes) = $crate::quantize::Avx2::detect() {
                    // SAFETY: `detect` found AVX2 on this CPU.
                    return unsafe { avx2(lanes, $($arg),*) };
                }
            }
            $imp($crate::quantize::Portable, $($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;

#[cfg(target_arch = "x86_64")]
pub(crate) use lanes::Avx2;
pub(crate) use lanes::{Lanes, Portable};

/// Eight float32 (and int32) lanes, as plain arrays ([`Portable`]) or AVX2 registers
/// ([`Avx2`]). Every float operation is one IEEE operation per lane, so both give the same bits.
mod lanes {
    /// Lane-wise operations on 8 lanes. A value of the implementing type is a token: holding
    /// one means the operations are supported by the CPU.
    pub(crate) trait Lanes: Copy {
        type F: Copy;
        type I: Copy;
        fn load(self, x: &[f32; 8]) -> Self::F;
        fn store(self, v: Self::F, out: &mut [f32; 8]);
        fn splat(self, x: f32) -> Self::F;
        fn add(self, a: Self::F, b: Self::F) -> Self::F;
        fn sub(self, a: Self::F, b: Self::F) -> Self::F;
        fn mul(self, a: Self::F, b: Self::F) -> Self::F;
        /// `if t < floor { floor } else { t }`: a NaN `t` stays NaN.
        fn floor_at(self, t: Self::F, floor: Self::F) -> Self::F;
        /// `if a > b { a } else { b }` (a NaN `a` gives `b`).
        fn fmax(self, a: Self::F, b: Self::F) -> Self::F;
        /// `if a < b { a } else { b }` (a NaN `a` gives `b`).
        fn fmin(self, a: Self::F, b: Self::F) -> Self::F;
        /// Bit `i` set iff `a[i] == b[i]`.
        fn eq_bits(self, a: Self::F, b: Self::F) -> u32;
        fn to_bits(self, a: Self::F) -> Self::I;
        fn bits_to_f(self, a: Self::I) -> Self::F;
        /// Truncation toward zero. Exact for values that fit an i32 (all the kernels produce,
        /// see `quantum`); any other lane gives some i32, never undefined behaviour.
        fn trunc(self, a: Self::F) -> Self::I;
        fn to_farray(self, a: Self::F) -> [f32; 8];
        /// The largest and the smallest lane (NaN-free lanes; any order of comparisons).
        fn hmax(self, a: Self::F) -> f32;
        fn hmin(self, a: Self::F) -> f32;
        fn iload(self, x: &[i32; 8]) -> Self::I;
        fn istore(self, v: Self::I, out: &mut [i32; 8]);
        fn isplat(self, x: i32) -> Self::I;
        fn iadd(self, a: Self::I, b: Self::I) -> Self::I;
        fn isub(self, a: Self::I, b: Self::I) -> Self::I;
        fn iand(self, a: Self::I, b: Self::I) -> Self::I;
        fn shl23(self, a: Self::I) -> Self::I;
        /// All ones in lanes `i < n`, zeros elsewhere.
        fn lanes_below(self, n: i32) -> Self::I;
        /// `!a & b`.
        fn iandnot(self, a: Self::I, b: Self::I) -> Self::I;
        /// Inclusive prefix sums across the lanes (wrapping).
        fn iprefix(self, a: Self::I) -> Self::I;
        /// Lane 7 in every lane.
        fn ilast(self, a: Self::I) -> Self::I;
        /// The number of lanes `<= x` (signed compare).
        fn count_le(self, a: Self::I, x: i32) -> u32;
        fn to_iarray(self, a: Self::I) -> [i32; 8];
        /// The wrapping sum of the lanes as u32.
        fn ihsum(self, a: Self::I) -> u32;
        #[inline(always)]
        fn fand(self, a: Self::F, mask: Self::I) -> Self::F {
            self.bits_to_f(self.iand(self.to_bits(a), mask))
        }
    }

    /// Scalar code over arrays (the compiler may still use SSE2 for it).
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Portable;

    #[inline(always)]
    fn map<T: Copy, U: Copy + Default>(a: [T; 8], f: impl Fn(T) -> U) -> [U; 8] {
        let mut out = [U::default(); 8];
        for (o, x) in out.iter_mut().zip(a) {
            *o = f(x);
        }
        out
    }

    #[inline(always)]
    fn zip<T: Copy, U: Copy + Default>(a: [T; 8], b: [T; 8], f: impl Fn(T, T) -> U) -> [U; 8] {
        let mut out = [U::default(); 8];
        for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
            *o = f(x, y);
        }
        out
    }

    impl Lanes for Portable {
        type F = [f32; 8];
        type I = [i32; 8];
        #[inline(always)]
        fn load(self, x: &[f32; 8]) -> [f32; 8] {
            *x
        }
        #[inline(always)]
        fn store(self, v: [f32; 8], out: &mut [f32; 8]) {
            *out = v;
        }
        #[inline(always)]
        fn splat(self, x: f32) -> [f32; 8] {
            [x; 8]
        }
        #[inline(always)]
        fn add(self, a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
            zip(a, b, |x, y| x + y)
        }
        #[inline(always)]
        fn sub(self, a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
            zip(a, b, |x, y| x - y)
        }
        #[inline(always)]
        fn mul(self, a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
            zip(a, b, |x, y| x * y)
        }
        #[inline(always)]
        fn floor_at(self, t: [f32; 8], floor: [f32; 8]) -> [f32; 8] {
            zip(t, floor, |t, f| if t < f { f } else { t })
        }
        #[inline(always)]
        fn fmax(self, a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
            zip(a, b, |x, y| if x > y { x } else { y })
        }
        #[inline(always)]
        fn fmin(self, a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
            zip(a, b, |x, y| if x < y { x } else { y })
        }
        #[inline(always)]
        fn eq_bits(self, a: [f32; 8], b: [f32; 8]) -> u32 {
            let mut bits = 0;
            for (i, (x, y)) in a.into_iter().zip(b).enumerate() {
                bits |= ((x == y) as u32) << i;
            }
            bits
        }
        #[inline(always)]
        fn to_bits(self, a: [f32; 8]) -> [i32; 8] {
            map(a, |x| x.to_bits() as i32)
        }
        #[inline(always)]
        fn bits_to_f(self, a: [i32; 8]) -> [f32; 8] {
            map(a, |x| f32::from_bits(x as u32))
        }
        #[inline(always)]
        fn trunc(self, a: [f32; 8]) -> [i32; 8] {
            // `cvttps2dq` of SSE2, which every x86-64 CPU has: defined for every input (NaN
            // and out-of-range lanes give i32::MIN), like the AVX2 lanes' `vcvttps2dq`. (The
            // saturating `x as i32` costs extra instructions per lane in this hot loop.)
            #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
            {
                use std::arch::x86_64::{
                    __m128i, _mm_cvttps_epi32, _mm_loadu_ps, _mm_storeu_si128,
                };
                let mut out = [0i32; 8];
                for (a, out) in a.chunks_exact(4).zip(out.chunks_exact_mut(4)) {
                    // SAFETY: SSE2 is enabled at compile time, and the load and the store go
                    // through 4 elements of an array.
                    unsafe {
                        let t = _mm_cvttps_epi32(_mm_loadu_ps(a.as_ptr()));
                        _mm_storeu_si128(out.as_mut_ptr().cast::<__m128i>(), t);
                    }
                }
                out
            }
            #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
            {
                // Saturating: the same as truncation on every value that fits an i32.
                map(a, |x| x as i32)
            }
        }
        #[inline(always)]
        fn to_farray(self, a: [f32; 8]) -> [f32; 8] {
            a
        }
        #[inline(always)]
        fn hmax(self, a: [f32; 8]) -> f32 {
            a.into_iter().fold(f32::NEG_INFINITY, f32::max)
        }
        #[inline(always)]
        fn hmin(self, a: [f32; 8]) -> f32 {
            a.into_iter().fold(f32::INFINITY, f32::min)
        }
        #[inline(always)]
        fn iload(self, x: &[i32; 8]) -> [i32; 8] {
            *x
        }
        #[inline(always)]
        fn istore(self, v: [i32; 8], out: &mut [i32; 8]) {
            *out = v;
        }
        #[inline(always)]
        fn isplat(self, x: i32) -> [i32; 8] {
            [x; 8]
        }
        #[inline(always)]
        fn iadd(self, a: [i32; 8], b: [i32; 8]) -> [i32; 8] {
            zip(a, b, i32::wrapping_add)
        }
        #[inline(always)]
        fn isub(self, a: [i32; 8], b: [i32; 8]) -> [i32; 8] {
            zip(a, b, i32::wrapping_sub)
        }
        #[inline(always)]
        fn iand(self, a: [i32; 8], b: [i32; 8]) -> [i32; 8] {
            zip(a, b, |x, y| x & y)
        }
        #[inline(always)]
        fn shl23(self, a: [i32; 8]) -> [i32; 8] {
            map(a, |x| x << 23)
        }
        #[inline(always)]
        fn lanes_below(self, n: i32) -> [i32; 8] {
            let mut out = [0; 8];
            for (i, o) in out.iter_mut().enumerate() {
                *o = -(((i as i32) < n) as i32);
            }
            out
        }
        #[inline(always)]
        fn iandnot(self, a: [i32; 8], b: [i32; 8]) -> [i32; 8] {
            zip(a, b, |x, y| !x & y)
        }
        #[inline(always)]
        fn iprefix(self, a: [i32; 8]) -> [i32; 8] {
            let mut out = a;
            for i in 1..8 {
                out[i] = out[i].wrapping_add(out[i - 1]);
            }
            out
        }
        #[inline(always)]
        fn ilast(self, a: [i32; 8]) -> [i32; 8] {
            [a[7]; 8]
        }
        #[inline(always)]
        fn count_le(self, a: [i32; 8], x: i32) -> u32 {
            a.iter().map(|&v| (v <= x) as u32).sum()
        }
        #[inline(always)]
        fn to_iarray(self, a: [i32; 8]) -> [i32; 8] {
            a
        }
        #[inline(always)]
        fn ihsum(self, a: [i32; 8]) -> u32 {
            a.iter().fold(0u32, |s, &x| s.wrapping_add(x as u32))
        }
    }

    #[cfg(target_arch = "x86_64")]
    pub(crate) use avx2::Avx2;

    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use super::Lanes;
        use std::arch::x86_64::*;

        /// AVX2 registers; only [`Avx2::detect`] makes one, on a CPU that has AVX2.
        #[derive(Clone, Copy, Debug)]
        pub(crate) struct Avx2(());

        impl Avx2 {
            pub(crate) fn detect() -> Option<Self> {
                std::arch::is_x86_feature_detected!("avx2").then_some(Avx2(()))
            }
        }

        // SAFETY (every `unsafe` below): an `Avx2` value exists only when the CPU has AVX2, and
        // the loads and stores go through references to 8 elements.
        impl Lanes for Avx2 {
            type F = __m256;
            type I = __m256i;
            #[inline(always)]
            fn load(self, x: &[f32; 8]) -> __m256 {
                unsafe { _mm256_loadu_ps(x.as_ptr()) }
            }
            #[inline(always)]
            fn store(self, v: __m256, out: &mut [f32; 8]) {
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) }
            }
            #[inline(always)]
            fn splat(self, x: f32) -> __m256 {
                unsafe { _mm256_set1_ps(x) }
            }
            #[inline(always)]
            fn add(self, a: __m256, b: __m256) -> __m256 {
                unsafe { _mm256_add_ps(a, b) }
            }
            #[inline(always)]
            fn sub(self, a: __m256, b: __m256) -> __m256 {
                unsafe { _mm256_sub_ps(a, b) }
            }
            #[inline(always)]
            fn mul(self, a: __m256, b: __m256) -> __m256 {
                unsafe { _mm256_mul_ps(a, b) }
            }
            #[inline(always)]
            fn floor_at(self, t: __m256, floor: __m256) -> __m256 {
                // maxps(floor, t) is `floor > t ? floor : t`, and `t` when `t` is NaN.
                unsafe { _mm256_max_ps(floor, t) }
            }
            #[inline(always)]
            fn fmax(self, a: __m256, b: __m256) -> __m256 {
                // maxps(a, b) is `a > b ? a : b`.
                unsafe { _mm256_max_ps(a, b) }
            }
            #[inline(always)]
            fn fmin(self, a: __m256, b: __m256) -> __m256 {
                // minps(a, b) is `a < b ? a : b`.
                unsafe { _mm256_min_ps(a, b) }
            }
            #[inline(always)]
            fn eq_bits(self, a: __m256, b: __m256) -> u32 {
                unsafe { _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(a, b)) as u32 }
            }
            #[inline(always)]
            fn to_bits(self, a: __m256) -> __m256i {
                unsafe { _mm256_castps_si256(a) }
            }
            #[inline(always)]
            fn bits_to_f(self, a: __m256i) -> __m256 {
                unsafe { _mm256_castsi256_ps(a) }
            }
            #[inline(always)]
            fn trunc(self, a: __m256) -> __m256i {
                unsafe { _mm256_cvttps_epi32(a) }
            }
            #[inline(always)]
            fn to_farray(self, a: __m256) -> [f32; 8] {
                let mut out = [0.0; 8];
                self.store(a, &mut out);
                out
            }
            #[inline(always)]
            fn hmax(self, a: __m256) -> f32 {
                unsafe {
                    let m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
                    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
                    _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
                }
            }
            #[inline(always)]
            fn hmin(self, a: __m256) -> f32 {
                unsafe {
                    let m = _mm_min_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
                    let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
                    _mm_cvtss_f32(_mm_min_ss(m, _mm_movehdup_ps(m)))
                }
            }
            #[inline(always)]
            fn iload(self, x: &[i32; 8]) -> __m256i {
                unsafe { _mm256_loadu_si256(x.as_ptr().cast()) }
            }
            #[inline(always)]
            fn istore(self, v: __m256i, out: &mut [i32; 8]) {
                unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) }
            }
            #[inline(always)]
            fn isplat(self, x: i32) -> __m256i {
                unsafe { _mm256_set1_epi32(x) }
            }
            #[inline(always)]
            fn iadd(self, a: __m256i, b: __m256i) -> __m256i {
                unsafe { _mm256_add_epi32(a, b) }
            }
            #[inline(always)]
            fn isub(self, a: __m256i, b: __m256i) -> __m256i {
                unsafe { _mm256_sub_epi32(a, b) }
            }
            #[inline(always)]
            fn iand(self, a: __m256i, b: __m256i) -> __m256i {
                unsafe { _mm256_and_si256(a, b) }
            }
            #[inline(always)]
            fn shl23(self, a: __m256i) -> __m256i {
                unsafe { _mm256_slli_epi32::<23>(a) }
            }
            #[inline(always)]
            fn lanes_below(self, n: i32) -> __m256i {
                unsafe {
                    _mm256_cmpgt_epi32(
                        _mm256_set1_epi32(n),
                        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                    )
                }
            }
            #[inline(always)]
            fn iandnot(self, a: __m256i, b: __m256i) -> __m256i {
                unsafe { _mm256_andnot_si256(a, b) }
            }
            #[inline(always)]
            fn iprefix(self, a: __m256i) -> __m256i {
                unsafe {
                    // Prefix sums inside each 128-bit half, then the low half's total is added
                    // to the high half.
                    let x = _mm256_add_epi32(a, _mm256_slli_si256::<4>(a));
                    let x = _mm256_add_epi32(x, _mm256_slli_si256::<8>(x));
                    let low = _mm256_permute2x128_si256::<0x08>(x, x);
                    _mm256_add_epi32(x, _mm256_shuffle_epi32::<0xff>(low))
                }
            }
            #[inline(always)]
            fn ilast(self, a: __m256i) -> __m256i {
                unsafe { _mm256_permutevar8x32_epi32(a, _mm256_set1_epi32(7)) }
            }
            #[inline(always)]
            fn count_le(self, a: __m256i, x: i32) -> u32 {
                unsafe {
                    let gt = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(x));
                    8 - (_mm256_movemask_ps(_mm256_castsi256_ps(gt)) as u32).count_ones()
                }
            }
            #[inline(always)]
            fn to_iarray(self, a: __m256i) -> [i32; 8] {
                let mut out = [0; 8];
                self.istore(a, &mut out);
                out
            }
            #[inline(always)]
            fn ihsum(self, a: __m256i) -> u32 {
                unsafe {
                    let s =
                        _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
                    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
                    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
                    _mm_cvtsi128_si32(s) as u32
                }
            }
        }
    }
}

/// The passes over a row, generic over the lanes; always inlined into a [`simd_dispatch`]ed
/// caller.
mod kernels {
    use super::*;

    /// `(max, min)` of the full vectors and the padded last one, ignoring NaNs (a row of NaNs
    /// gives `(-inf, inf)`). The sign of a zero maximum may differ from the first maximum's, which
    /// changes no weight (`l - (-0.0) == l - 0.0` for every non-zero `l`, and both exponentials
    /// of a zero difference are exactly 1) and no argmax (found by `==`).
    #[inline(always)]
    pub fn max_min<L: Lanes>(
        lanes: L,
        chunks: &[[f32; LANES]],
        pad: Option<(&[f32; LANES], usize)>,
    ) -> (f32, f32) {
        // Four independent accumulators of each, to hide the latency of max and min.
        let mut hi = [lanes.splat(f32::NEG_INFINITY); 4];
        let mut lo = [lanes.splat(f32::INFINITY); 4];
        let (quads, rest) = chunks.as_chunks::<4>();
        for quad in quads {
            for i in 0..4 {
                let x = lanes.load(&quad[i]);
                hi[i] = lanes.fmax(x, hi[i]);
                lo[i] = lanes.fmin(x, lo[i]);
            }
        }
        for c in rest.iter().chain(pad.map(|(p, _)| p)) {
            let x = lanes.load(c);
            hi[0] = lanes.fmax(x, hi[0]);
            lo[0] = lanes.fmin(x, lo[0]);
        }
        let hi = lanes.fmax(lanes.fmax(hi[0], hi[1]), lanes.fmax(hi[2], hi[3]));
        let lo = lanes.fmin(lanes.fmin(lo[0], lo[1]), lanes.fmin(lo[2], lo[3]));
        (lanes.hmax(hi), lanes.hmin(lo))
    }

    /// The lowest index of a value of `x` equal to `m` (by `==`), if any; 32 values a step.
    #[inline(always)]
    pub fn first_equal<L: Lanes>(lanes: L, x: &[f32], m: f32) -> Option<usize> {
        let mv = lanes.splat(m);
        let (chunks, tail) = x.as_chunks::<LANES>();
        let (quads, rest) = chunks.as_chunks::<4>();
        for (q, quad) in quads.iter().enumerate() {
            let eq = [
                lanes.eq_bits(lanes.load(&quad[0]), mv),
                lanes.eq_bits(lanes.load(&quad[1]), mv),
                lanes.eq_bits(lanes.load(&quad[2]), mv),
                lanes.eq_bits(lanes.load(&quad[3]), mv),
            ];
            if eq[0] | eq[1] | eq[2] | eq[3] != 0 {
                let bits = eq[0] | eq[1] << 8 | eq[2] << 16 | eq[3] << 24;
                return Some(q * 4 * LANES + bits.trailing_zeros() as usize);
            }
        }
        let base = quads.len() * 4 * LANES;
        for (j, c) in rest.iter().enumerate() {
            let eq = lanes.eq_bits(lanes.load(c), mv);
            if eq != 0 {
                return Some(base + j * LANES + eq.trailing_zeros() as usize);
            }
        }
        let base = chunks.len() * LANES;
        tail.iter().position(|&v| v == m).map(|i| base + i)
    }

    /// Step 2 of the module docs on 8 lanes of `x = l - m <= 0` (see [`exp_nonpositive`]).
    #[inline(always)]
    pub fn exp_nonpositive<L: Lanes>(lanes: L, x: L::F) -> L::F {
        let s = |v| lanes.splat(v);
        let t = lanes.floor_at(lanes.mul(x, s(LOG2_E)), s(EXP2_FLOOR));
        let r = lanes.add(t, s(ROUND_MAGIC));
        let n = lanes.sub(r, s(ROUND_MAGIC));
        let g = lanes.sub(t, n);
        let p = lanes.add(lanes.mul(s(C3), g), s(C2));
        let p = lanes.add(lanes.mul(p, g), s(C1));
        let p = lanes.add(lanes.mul(p, g), s(1.0));
        let biased = lanes.isub(
            lanes.to_bits(r),
            lanes.isplat(ROUND_MAGIC.to_bits() as i32 - 127),
        );
        lanes.mul(p, lanes.bits_to_f(lanes.shl23(biased)))
    }

    /// Steps 2 and 3 in one pass: writes the weights (`exp(l - m)` for logits, the values for
    /// probabilities; 0 in the padding) and returns their block sum, which is NaN if a value
    /// is NaN (the floor of step 2 keeps NaN). Each block of 256 is 32 vectors whose lane `j`
    /// is lane `i % 8`.
    #[inline(always)]
    pub fn weights<L: Lanes, const LOGITS: bool>(
        lanes: L,
        chunks: &[[f32; LANES]],
        pad: Option<(&[f32; LANES], usize)>,
        m: f32,
        out: &mut [[f32; LANES]],
    ) -> f64 {
        const BLOCK_VECTORS: usize = BLOCK / LANES;
        let mv = lanes.splat(m);
        let weight = |x: L::F| {
            if LOGITS {
                exp_nonpositive(lanes, lanes.sub(x, mv))
            } else {
                x
            }
        };
        let nfull = chunks.len();
        let mut total = 0.0f64;
        let mut start = 0;
        while start < out.len() {
            let end = (start + BLOCK_VECTORS).min(out.len());
            let full_end = end.min(nfull);
            let mut acc = lanes.splat(0.0);
            for (c, o) in chunks[start..full_end]
                .iter()
                .zip(&mut out[start..full_end])
            {
                let w = weight(lanes.load(c));
                lanes.store(w, o);
                acc = lanes.add(acc, w);
            }
            if let (Some((p, len)), true) = (pad, end > nfull) {
                let w = lanes.fand(weight(lanes.load(p)), lanes.lanes_below(len as i32));
                lanes.store(w, &mut out[nfull]);
                acc = lanes.add(acc, w);
            }
            // Lanes to float64 in lane order (`0.0 + a_0` is `a_0`).
            let mut block_total = 0.0f64;
            for a in lanes.to_farray(acc) {
                block_total += a as f64;
            }
            total += block_total;
            start = end;
        }
        total
    }

    /// `trunc(w_i * scale)` of 8 weights (step 5).
    #[inline(always)]
    pub fn quanta<L: Lanes>(lanes: L, w: &[f32; LANES], scale: L::F) -> L::I {
        lanes.trunc(lanes.mul(lanes.load(w), scale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exp_ref(x: f32) -> f64 {
        (x as f64).exp()
    }

    #[test]
    fn exp_is_accurate_and_exact_at_zero() {
        for i in 0..=2000 {
            let l = -(i as f32) * 0.01;
            let w = exp_nonpositive(l);
            if i == 0 {
                assert_eq!(w, 1.0);
            }
            let rel = (w as f64 - exp_ref(l)).abs() / exp_ref(l);
            assert!(rel < 1e-3, "exp({l}) = {w}, rel error {rel}");
        }
    }

    #[test]
    fn tables_sum_to_total_with_positive_entries() {
        for k in [2usize, 3, 7, 8, 9, 255, 256, 257, 1000, 65536] {
            let logits: Vec<f32> = (0..k)
                .map(|i| ((i * 7919) % 97) as f32 * 0.37 - 20.0)
                .collect();
            let t = quantize_logits(&logits, k).unwrap();
            assert_eq!(t.iter().map(|&f| f as u64).sum::<u64>(), TOTAL as u64);
            assert!(t.iter().all(|&f| f >= 1));
        }
    }

    fn random_rows(seed: u64, n: usize, k: usize) -> Vec<f32> {
        let mut s = seed;
        let mut rows: Vec<f32> = (0..n * k)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                match (s >> 20) % 4 {
                    0 => u * 60.0,
                    1 => u * 1e-3,
                    2 => u * 400.0,
                    _ => (u * 8.0).round(), // ties
                }
            })
            .collect();
        for (i, row) in rows.chunks_exact_mut(k).enumerate() {
            if i % 3 == 0 {
                row[k / 2] = row[0]; // ties with the first value
            }
            if i % 5 == 1 {
                row[k - 1] = -0.0;
                row[0] = 0.0;
            }
        }
        rows
    }

    /// Every path against every other: the table, `locate` and `find` of each row, with both
    /// lane types, for many sizes (full vectors, partial ones, several blocks) and positions.
    fn check_paths<L: Lanes>(lanes: L) {
        let mut q = Quantizer::new();
        q.reserve(5000);
        for k in (2..=40).chain([63, 64, 65, 255, 256, 257, 300, 513, 1000, 4099]) {
            let rows = random_rows(k as u64, 40, k);
            for input in [Input::Logits, Input::Probs] {
                let rows: Vec<f32> = match input {
                    Input::Logits => rows.clone(),
                    Input::Probs => rows
                        .iter()
                        .enumerate()
                        .map(|(i, v)| v.abs() + if i % k == 1 { 0.25 } else { 0.0 })
                        .collect(),
                };
                let portable = quantize_rows(Portable, &rows, k, input).unwrap();
                assert_eq!(quantize_rows(lanes, &rows, k, input).unwrap(), portable);
                for (row, table) in rows.chunks_exact(k).zip(portable.chunks_exact(k)) {
                    assert_eq!(table.iter().sum::<u32>(), TOTAL);
                    q.prepare(lanes, row, input).unwrap();
                    let mut own = vec![0; k];
                    q.table(lanes, row, &mut own);
                    assert_eq!(own, table, "k={k}");
                    let mut cum = 0;
                    for (s, &f) in table.iter().enumerate() {
                        if k > 300 && s % 29 != 0 && s != k - 1 {
                            cum += f; // a sample of the symbols of long rows
                            continue;
                        }
                        assert_eq!(q.locate(lanes, row, s), (cum, f), "k={k} s={s}");
                        assert_eq!(q.find(lanes, row, cum), (s, cum, f));
                        assert_eq!(q.find(lanes, row, cum + f - 1), (s, cum, f));
                        cum += f;
                    }
                    if k <= SMALL_K {
                        with_small_k!(k, K => {
                            let small = small_freqs::<K>(row.try_into().unwrap(), input).unwrap();
                            assert_eq!(&small[..], table);
                            let mut cum = 0;
                            for (s, &f) in table.iter().enumerate() {
                                assert_eq!(small_locate(&small, s), (cum, f));
                                assert_eq!(small_find(&small, cum), (s, cum, f));
                                assert_eq!(small_find(&small, cum + f - 1), (s, cum, f));
                                cum += f;
                            }
                        });
                    }
                }
            }
        }
    }

    #[test]
    fn all_paths_agree_portable() {
        check_paths(Portable);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn all_paths_agree_avx2() {
        if let Some(lanes) = Avx2::detect() {
            // The kernels are inlined into an AVX2 function, as in the coder.
            #[target_feature(enable = "avx2")]
            fn run(lanes: Avx2) {
                check_paths(lanes)
            }
            // SAFETY: `detect` found AVX2.
            unsafe { run(lanes) }
        }
    }

    #[test]
    fn trunc_is_defined_for_every_input() {
        let a = [
            0.0f32,
            0.99,
            16_777_232.0,
            -2.5,
            f32::NAN,
            f32::INFINITY,
            3e9,
            -3e9,
        ];
        let t = Portable.trunc(a);
        assert_eq!(t[..4], [0, 0, 16_777_232, -2]);
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(t[4..], [i32::MIN; 4]);
            if let Some(lanes) = Avx2::detect() {
                assert_eq!(lanes.to_iarray(lanes.trunc(lanes.load(&a))), t);
            }
        }
    }

    #[test]
    fn results_do_not_depend_on_row_position() {
        // The same row alone and at several positions in a batch: the same table.
        let k = 300;
        let rows = random_rows(9, 7, k);
        let all = quantize_logits(&rows, k).unwrap();
        for (i, row) in rows.chunks_exact(k).enumerate() {
            let alone = quantize_logits(row, k).unwrap();
            assert_eq!(&all[i * k..(i + 1) * k], &alone[..]);
        }
    }

    #[test]
    fn peaky_and_extreme_rows() {
        let mut logits = vec![0.0f32; 16];
        logits[3] = 50.0;
        let t = quantize_logits(&logits, 16).unwrap();
        assert_eq!(t[3], TOTAL - 15);
        let t = quantize_logits(&[-3e38, 3e38], 2).unwrap();
        assert_eq!(t, vec![1, TOTAL - 1]);
        // Ties go to the lowest index.
        let t = quantize_logits(&[1.0, 1.0, 1.0], 3).unwrap();
        assert!(t[0] >= t[1] && t[1] == t[2]);
    }

    #[test]
    fn probs_path() {
        let t = quantize_probs(&[0.0, 0.25, 0.75, 0.0], 4).unwrap();
        assert_eq!(t[0], 1);
        assert_eq!(t[3], 1);
        assert_eq!(t.iter().sum::<u32>(), TOTAL);
        assert!((t[2] as f64 / t[1] as f64 - 3.0).abs() < 1e-4);
        assert!(quantize_probs(&[0.0, 0.0], 2).is_err());
        assert!(quantize_probs(&[-0.5, 1.5], 2).is_err());
    }

    #[test]
    fn bad_rows_are_errors() {
        assert!(quantize_logits(&[1.0], 1).is_err());
        assert!(quantize_logits(&[1.0, f32::NAN], 2).is_err());
        assert!(quantize_logits(&[1.0, f32::INFINITY], 2).is_err());
        assert!(quantize_logits(&[1.0, 2.0, 3.0], 2).is_err());
        assert!(quantize_logits(&vec![0.0; MAX_SYMBOLS + 1], MAX_SYMBOLS + 1).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Tables of rows of arbitrary float bits: an error for NaN, infinity, negative or
        /// all-zero probabilities; otherwise entries >= 1 that sum to TOTAL.
        #[test]
        fn quantize_arbitrary_bits(
            bits in proptest::collection::vec(any::<u32>(), 2..600),
            k in 2usize..40,
            probs in any::<bool>(),
        ) {
            let rows: Vec<f32> = bits.iter().map(|&b| f32::from_bits(b)).collect();
            let rows = &rows[..rows.len() / k * k];
            let rows: Vec<f32> = if probs {
                rows.iter().map(|v| v.abs()).collect()
            } else {
                rows.to_vec()
            };
            let input = if probs { Input::Probs } else { Input::Logits };
            match quantize(&rows, k, input) {
                Ok(tables) => {
                    prop_assert!(rows.iter().all(|v| v.is_finite()));
                    for table in tables.chunks_exact(k) {
                        prop_assert!(table.iter().all(|&f| f >= 1));
                        let sum: u64 = table.iter().map(|&f| f as u64).sum();
                        prop_assert_eq!(sum, TOTAL as u64);
                    }
                }
                // Logits fail only for NaN or infinity; probabilities also for a zero row.
                Err(_) => prop_assert!(probs || !rows.iter().all(|v| v.is_finite())),
            }
        }
    }

    #[test]
    fn ideal_bits_of_uniform() {
        let bits = ideal_bits(&[0, 1, 2, 3], &[0.0; 16], 4, Input::Logits).unwrap();
        assert!((bits - 8.0).abs() < 1e-3);
    }
}
