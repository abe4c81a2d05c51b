//! Logits (or probabilities) -> integer frequency tables, a pure function of the float32 bits.
//!
//! The entropy coder ([`crate::ans`]) needs, for every coded variable, integer frequencies
//! `f_0..f_{K-1}` with `f_i >= 1` (every symbol stays codable) and `sum f_i == TOTAL == 2^24`.
//! Encoder and decoder must compute exactly the same table from the same network outputs, on
//! every platform, so nothing here calls the platform's `exp` (libm results differ between
//! systems). Only IEEE-754 basic operations (`+ - * /`, comparisons, exact conversions and bit
//! moves) are used, each in a fixed order. Rust never contracts `a * b + c` into a fused
//! multiply-add unless asked, so the compiled code performs exactly the roundings written here,
//! whatever the vector width the loops are compiled to (SSE2 or AVX2: the AVX2 copies of the
//! kernels run the same operations, and the summation order is fixed by the algorithm, not by
//! the hardware).
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
//! The frequency tables are what [`quantize_logits`] returns; the coder never builds them in
//! full: [`Quantizer::locate`] gives `(cumulative, frequency)` of one symbol and
//! [`Quantizer::find`] finds the symbol of a slot, both from the weights of step 2.

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

/// What the coder needs to know about one prepared row, besides its weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowModel {
    /// The alphabet size `K`.
    pub num_symbols: usize,
    /// The lowest index of the largest weight; it receives the leftover frequency.
    pub argmax: usize,
    /// Multiplier from weights to frequencies (step 4 of the module docs).
    pub scale: f32,
}

/// Which kind of float rows are being quantized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Unnormalized log-probabilities (softmax inputs).
    Logits,
    /// Non-negative probabilities (any positive sum).
    Probs,
}

/// Reusable scratch for quantizing rows: holds the weights and model of the last prepared row.
#[derive(Clone, Debug, Default)]
pub struct Quantizer {
    weights: Vec<f32>,
    model: RowModel,
    /// For rows of at most `SMALL_K` symbols: the cumulative table (`small_cum[K] == TOTAL`),
    /// built once per row, which makes `locate` and `find` lookups.
    small: bool,
    small_cum: [u32; SMALL_K + 1],
}

/// Rows up to this size take a scalar path that builds the whole table (same results).
const SMALL_K: usize = 8;

impl Default for RowModel {
    /// The model of no row: every quantum is 0 (`scale == 0`).
    fn default() -> Self {
        RowModel {
            num_symbols: 0,
            argmax: 0,
            scale: 0.0,
        }
    }
}

impl Quantizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Steps 1-4 for one row of logits or probabilities; the weights stay in `self`.
    /// Inlined everywhere: callers run it inside a [`simd_dispatch`]ed function.
    #[inline(always)]
    pub fn prepare(&mut self, row: &[f32], input: Input) -> CoreResult<RowModel> {
        let k = row.len();
        check_num_symbols(k)?;
        // Until this row is fully prepared, the quantizer holds no row.
        self.model = RowModel::default();
        self.small = false;
        if k <= SMALL_K {
            return self.prepare_small(row, input);
        }
        self.prepare_large(row, input)
    }

    /// `prepare` with the vector kernels (any `K`).
    #[inline(always)]
    fn prepare_large(&mut self, row: &[f32], input: Input) -> CoreResult<RowModel> {
        let k = row.len();
        self.weights.resize(k, 0.0);
        let (m, argmax, finite) = kernels::max_finite(row);
        if !finite {
            return Err(CoreError::new(match input {
                Input::Logits => "logits contain NaN or infinity",
                Input::Probs => "probabilities contain NaN or infinity",
            }));
        }
        let total = match input {
            Input::Logits => kernels::exp_weights(row, m, &mut self.weights),
            Input::Probs => {
                if row.iter().any(|&p| p < 0.0) {
                    return Err(CoreError::new("probabilities must be non-negative"));
                }
                self.weights.copy_from_slice(row);
                let total = kernels::block_sum(&self.weights);
                if total < MIN_PROB_SUM {
                    return Err(CoreError::new(
                        "probabilities must have a positive sum (at least 2^-64)",
                    ));
                }
                total
            }
        };
        let scale = ((TOTAL as usize - k) as f64 * SLACK / total) as f32;
        self.model = RowModel {
            num_symbols: k,
            argmax,
            scale,
        };
        Ok(self.model)
    }

    /// `prepare` for `K <= SMALL_K`: the same operations in the same order (one block; lane
    /// `i % 8` sums; a strict `>` scan finds the first maximum), written as plain scalar loops
    /// because the vector loops' set-up costs more than their work at this size.
    #[inline(always)]
    fn prepare_small(&mut self, row: &[f32], input: Input) -> CoreResult<RowModel> {
        let k = row.len();
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
            return Err(CoreError::new(match input {
                Input::Logits => "logits contain NaN or infinity",
                Input::Probs => "probabilities contain NaN or infinity",
            }));
        }
        let mut w = [0.0f32; SMALL_K];
        match input {
            Input::Logits => {
                for (wi, &l) in w.iter_mut().zip(row) {
                    *wi = kernels::exp_nonpositive(l - m);
                }
            }
            Input::Probs => {
                if row.iter().any(|&p| p < 0.0) {
                    return Err(CoreError::new("probabilities must be non-negative"));
                }
                w[..k].copy_from_slice(row);
            }
        }
        let mut acc = [0.0f32; LANES];
        for (i, &wi) in w[..k].iter().enumerate() {
            acc[i % LANES] += wi;
        }
        let mut total = 0.0f64;
        for a in acc {
            total += a as f64;
        }
        if input == Input::Probs && total < MIN_PROB_SUM {
            return Err(CoreError::new(
                "probabilities must have a positive sum (at least 2^-64)",
            ));
        }
        let scale = ((TOTAL as usize - k) as f64 * SLACK / total) as f32;
        let model = RowModel {
            num_symbols: k,
            argmax,
            scale,
        };
        let mut freqs = [0u32; SMALL_K];
        let mut quanta_sum = 0;
        for (f, &wi) in freqs.iter_mut().zip(&w[..k]) {
            let q = quantum(wi, scale);
            quanta_sum += q;
            *f = q + 1;
        }
        freqs[argmax] += leftover(&model, quanta_sum);
        let mut cum = 0;
        for (c, &f) in self.small_cum.iter_mut().zip(&freqs[..k]) {
            *c = cum;
            cum += f;
        }
        self.small_cum[k] = cum;
        self.weights.clear();
        self.weights.extend_from_slice(&w[..k]);
        self.small = true;
        self.model = model;
        Ok(model)
    }

    /// The model of the last successfully prepared row.
    pub fn model(&self) -> RowModel {
        self.model
    }

    /// `(cumulative frequency, frequency)` of `symbol` (< K) in the prepared row (panics if
    /// `symbol >= K`).
    #[inline(always)]
    pub fn locate(&self, symbol: usize) -> (u32, u32) {
        if self.small {
            let cum = self.small_cum[symbol];
            return (cum, self.small_cum[symbol + 1] - cum);
        }
        let model = &self.model;
        let w = &self.weights[..model.num_symbols];
        let below = kernels::sum_quanta(&w[..symbol], model.scale);
        let own = quantum(w[symbol], model.scale);
        let above = kernels::sum_quanta(&w[symbol + 1..], model.scale);
        let leftover = leftover(model, below + own + above);
        let mut cum = below + symbol as u32;
        let mut freq = own + 1;
        if model.argmax < symbol {
            cum += leftover;
        } else if model.argmax == symbol {
            freq += leftover;
        }
        (cum, freq)
    }

    /// The symbol whose interval `[cum, cum + freq)` holds `slot` (< TOTAL), with `cum`, `freq`.
    #[inline(always)]
    pub fn find(&self, slot: u32) -> (usize, u32, u32) {
        if self.small {
            let k = self.model.num_symbols;
            let s = self.small_cum[1..k]
                .iter()
                .take_while(|&&c| c <= slot)
                .count();
            let cum = self.small_cum[s];
            return (s, cum, self.small_cum[s + 1] - cum);
        }
        let model = &self.model;
        let w = &self.weights[..model.num_symbols];
        let leftover = leftover(model, kernels::sum_quanta(w, model.scale));
        let freq_of = |i: usize| {
            quantum(w[i], model.scale) + 1 + if i == model.argmax { leftover } else { 0 }
        };
        // Whole chunks first (vectorized sums), then the symbols of the chunk that holds `slot`.
        let mut cum = 0u32;
        let mut start = 0usize;
        for chunk in w.chunks(FIND_CHUNK) {
            let end = start + chunk.len();
            let mut chunk_total = kernels::sum_quanta(chunk, model.scale) + chunk.len() as u32;
            if (start..end).contains(&model.argmax) {
                chunk_total += leftover;
            }
            if slot - cum < chunk_total {
                break;
            }
            cum += chunk_total;
            start = end;
        }
        let mut symbol = start;
        loop {
            let freq = freq_of(symbol);
            // The frequencies sum to TOTAL > slot, so the last symbol always matches.
            if slot - cum < freq || symbol + 1 == model.num_symbols {
                return (symbol, cum, freq);
            }
            cum += freq;
            symbol += 1;
        }
    }

    /// The full frequency table of the prepared row, written to `out` (length K).
    #[inline(always)]
    pub fn table(&self, out: &mut [u32]) {
        let model = &self.model;
        let w = &self.weights[..model.num_symbols];
        for (f, &wi) in out.iter_mut().zip(w) {
            *f = quantum(wi, model.scale) + 1;
        }
        let sum: u32 = out.iter().sum();
        out[model.argmax] += TOTAL - sum;
    }
}

const FIND_CHUNK: usize = 64;
const MIN_PROB_SUM: f64 = 1.0 / 18_446_744_073_709_551_616.0; // 2^-64

#[inline(always)]
fn quantum(w: f32, scale: f32) -> u32 {
    let y = w * scale;
    debug_assert!((0.0..=(TOTAL as f32) * 1.001).contains(&y));
    // SAFETY: 0 <= w <= S and scale <= (TOTAL - K) / S * (1 + 2^-20) (module docs, step 4), so
    // y is finite and in [0, 2^24 + 16]: it fits an i32, where truncation is the floor. The
    // unchecked conversion is one vector instruction; `as` would add saturation fix-ups.
    unsafe { y.to_int_unchecked::<i32>() as u32 }
}

#[inline(always)]
fn leftover(model: &RowModel, quanta_sum: u32) -> u32 {
    // Never negative by the error bound of the module docs; saturate rather than wrap anyway.
    (TOTAL - model.num_symbols as u32).saturating_sub(quanta_sum)
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
    pub fn quantize(rows: &[f32], num_symbols: usize, input: Input) -> CoreResult<Vec<u32>> {
        quantize_rows(rows, num_symbols, input)
    }
}

#[inline(always)]
fn quantize_rows(rows: &[f32], num_symbols: usize, input: Input) -> CoreResult<Vec<u32>> {
    check_num_symbols(num_symbols)?;
    if !rows.len().is_multiple_of(num_symbols) {
        return Err(CoreError::new(format!(
            "{} values do not split into rows of {num_symbols}",
            rows.len()
        )));
    }
    let mut quantizer = Quantizer::new();
    let mut out = vec![0u32; rows.len()];
    for (row, table) in rows
        .chunks_exact(num_symbols)
        .zip(out.chunks_exact_mut(num_symbols))
    {
        quantizer.prepare(row, input)?;
        quantizer.table(table);
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

/// Defines a function whose body is compiled twice on x86-64, for the baseline target and for
/// AVX2, and picks the AVX2 copy at run time when the CPU has it. The hot loops are inlined into
/// both copies; they perform the same IEEE operations in the same order, so both copies give
/// bit-identical results (Rust never fuses multiply-adds on its own).
macro_rules! simd_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn inner($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) -> $ret {
                    inner($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            inner($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;

/// The hot loops, written so that they vectorize; always inlined into a [`simd_dispatch`]ed
/// caller.
mod kernels {
    use super::*;

    /// Maps float bits to integers with the same order (for non-NaN values; -0 sorts below +0).
    #[inline(always)]
    fn order_key(v: f32) -> i32 {
        let b = v.to_bits() as i32;
        b ^ ((b >> 31) & 0x7fff_ffff)
    }

    /// `(max, lowest index i with x[i] == max, all finite)`; max and index are meaningful only
    /// when all values are finite. Integer min/max of order keys: exact, order-free, and
    /// vectorizable (NaN and infinities have keys outside those of the finite floats).
    #[inline(always)]
    pub fn max_finite(x: &[f32]) -> (f32, usize, bool) {
        let (mut lo, mut hi) = (i32::MAX, i32::MIN);
        for &v in x {
            let key = order_key(v);
            lo = lo.min(key);
            hi = hi.max(key);
        }
        let finite = lo >= order_key(-f32::MAX) && hi <= order_key(f32::MAX);
        // The key map is an involution on the bits.
        let m = f32::from_bits(order_key(f32::from_bits(hi as u32)) as u32);
        // First index holding the max, as a vectorizable min-reduction over indices.
        let mut argmax = u32::MAX;
        for (i, &v) in x.iter().enumerate() {
            argmax = argmax.min(if v == m { i as u32 } else { u32::MAX });
        }
        let argmax = if argmax == u32::MAX {
            0
        } else {
            argmax as usize
        };
        (m, argmax, finite)
    }

    /// Step 2 of the module docs for one value `x = l - m <= 0`.
    #[inline(always)]
    pub fn exp_nonpositive(x: f32) -> f32 {
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

    /// Step 2 for a whole row, then the sum of step 3.
    #[inline(always)]
    pub fn exp_weights(logits: &[f32], m: f32, out: &mut [f32]) -> f64 {
        for (o, &l) in out.iter_mut().zip(logits) {
            *o = exp_nonpositive(l - m);
        }
        block_sum(out)
    }

    /// Step 3: blocks of 256, lanes `i % 8` summed in float32, lanes then blocks in float64.
    #[inline(always)]
    pub fn block_sum(w: &[f32]) -> f64 {
        let mut total = 0.0f64;
        for block in w.chunks(BLOCK) {
            let mut acc = [0.0f32; LANES];
            let mut chunks = block.chunks_exact(LANES);
            for c in &mut chunks {
                for j in 0..LANES {
                    acc[j] += c[j];
                }
            }
            for (j, &v) in chunks.remainder().iter().enumerate() {
                acc[j] += v;
            }
            let mut block_total = 0.0f64;
            for a in acc {
                block_total += a as f64;
            }
            total += block_total;
        }
        total
    }

    /// `sum_i trunc(w_i * scale)`: integer sums are exact in any order.
    #[inline(always)]
    pub fn sum_quanta(w: &[f32], scale: f32) -> u32 {
        w.iter().map(|&v| quantum(v, scale)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp_ref(x: f32) -> f64 {
        (x as f64).exp()
    }

    #[test]
    fn exp_is_accurate_and_exact_at_zero() {
        let mut out = vec![0.0f32; 2001];
        let logits: Vec<f32> = (0..=2000).map(|i| -(i as f32) * 0.01).collect();
        kernels::exp_weights(&logits, 0.0, &mut out);
        assert_eq!(out[0], 1.0);
        for (&l, &w) in logits.iter().zip(&out) {
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

    #[test]
    fn locate_and_find_agree_with_table() {
        let mut q = Quantizer::new();
        for k in [2usize, 5, 64, 300] {
            let logits: Vec<f32> = (0..k).map(|i| ((i * 31) % 17) as f32 - 8.0).collect();
            q.prepare(&logits, Input::Logits).unwrap();
            let mut table = vec![0; k];
            q.table(&mut table);
            let mut cum = 0;
            for (s, &f) in table.iter().enumerate() {
                assert_eq!(q.locate(s), (cum, f));
                assert_eq!(q.find(cum), (s, cum, f));
                assert_eq!(q.find(cum + f - 1), (s, cum, f));
                cum += f;
            }
        }
    }

    #[test]
    fn small_path_equals_vector_path() {
        let mut seed = 12345u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 60.0
        };
        let (mut a, mut b) = (Quantizer::new(), Quantizer::new());
        for k in 2..=SMALL_K {
            for _ in 0..200 {
                let mut row: Vec<f32> = (0..k).map(|_| next()).collect();
                row[k / 2] = row[0]; // ties
                for input in [Input::Logits, Input::Probs] {
                    if input == Input::Probs {
                        row.iter_mut().for_each(|v| *v = v.abs());
                    }
                    let (ma, mb) = (
                        a.prepare_small(&row, input).unwrap(),
                        b.prepare_large(&row, input).unwrap(),
                    );
                    assert_eq!(ma, mb);
                    b.small = false;
                    let (mut ta, mut tb) = (vec![0; k], vec![0; k]);
                    a.table(&mut ta);
                    b.table(&mut tb);
                    assert_eq!(ta, tb);
                    for s in 0..k {
                        assert_eq!(a.locate(s), b.locate(s));
                        let (cum, f) = a.locate(s);
                        assert_eq!(a.find(cum + f - 1), b.find(cum + f - 1));
                    }
                }
            }
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

    #[test]
    fn ideal_bits_of_uniform() {
        let bits = ideal_bits(&[0, 1, 2, 3], &[0.0; 16], 4, Input::Logits).unwrap();
        assert!((bits - 8.0).abs() < 1e-3);
    }
}
