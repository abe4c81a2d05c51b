//! A rANS stack coder: 64-bit state, 32-bit words, frequencies of [`PRECISION`] = 24 bits.
//!
//! # The coder
//!
//! Range ANS as in Duda (arXiv:1311.2540) and ryg_rans' `rans64`. The state `x` always lies in
//! `[L, 2^63)` with `L = 2^31`; a new coder starts at `x = L` with no words. To push symbol `s`
//! with cumulative frequency `c` and frequency `f` (out of `2^24`):
//!
//! ```text
//! if x >= 2^39 * f { words.push(x mod 2^32); x = x >> 32 }   // renormalize
//! x = (x / f) * 2^24 + (x mod f) + c
//! ```
//!
//! To pop: `slot = x mod 2^24` selects the symbol `s` with `c <= slot < c + f`;
//! `x = f * (x >> 24) + slot - c`, and if then `x < L`, `x = x * 2^32 + words.pop()`. A pop that
//! needs a word when none is left reads past the end of the stream: that is an error, never a
//! panic. The coder is a stack: [`AnsCoder::push`] of N symbols encodes them last to first, so a
//! later [`AnsCoder::pop`] with the same distributions returns them first to last; separate
//! pushes pop in reverse order.
//!
//! Distributions arrive as float32 rows (logits or probabilities) and are quantized by
//! [`crate::quantize`] (a pure function of the float bits), one row per symbol. Pushes and pops
//! are atomic: a batch with any bad symbol or row changes nothing.
//!
//! # The byte format
//!
//! [`AnsCoder::to_bytes`]: the words in the order they were written, then the state as two
//! words (low, high), every word little endian: `4 * (num_words + 2)` bytes, the empty coder
//! being the 8 bytes of `L`. [`AnsCoder::from_bytes`] checks that the length is a multiple of 4
//! (at least 8) and that the state lies in `[L, 2^63)`. The size is at most 64 bits above the
//! ideal `sum -log2 p(x)` under the quantized tables (32 of them are the initial state).
//!
//! # The compact byte format
//!
//! [`AnsCoder::to_compact_bytes`] ends on a byte boundary instead of a word boundary:
//!
//! ```text
//! state (k bytes, big endian, top byte non-zero) | word | word | ...   (each word little endian)
//! ```
//!
//! The words come in the order the decoder consumes them, the most recently written first.
//! `k` is the smallest number of bytes that holds the state, one of 4, 5, 6, 7, so a reader
//! knows it from the total length `n` alone: `k = 4 + n mod 4` (a stream that started below `L`
//! can also be a state alone in `n < 4` bytes: `k = n`, see below). A state of 8 bytes
//! (`x >= 2^56`) first flushes one more word, its low 32 bits, which becomes the first word the
//! decoder consumes, and writes `x >> 32`, which lies in `[2^24, 2^31)`, in `k = 4` bytes.
//! [`AnsCoder::from_compact_bytes`] reads `k` bytes; a zero top byte is rejected (not
//! canonical); a value below `2^31` (only possible with `k = 4`) takes the first word back,
//! `x = value << 32 | word`; any other value is the state itself. Every accepted input is
//! what the writer writes for exactly one coder, so the reader is the writer's inverse.
//!
//! The state thus costs its bit length rounded up to whole bytes (at most 7 bits more, about 4
//! on average) instead of the fixed 64 bits of [`AnsCoder::to_bytes`]. A coder may start from
//! any state in `[L, 2^63)` ([`AnsCoder::with_initial_state`]), for example `L` plus a
//! checksum of the data: the decoder that pops every symbol must end exactly at that state
//! with no words left, so the check rides in the bits that the initial state occupies anyway.
//!
//! # Streams that start below `L`
//!
//! A stream may also start below `L`, at any state of at least its *floor* `F` (`1 <= F <= L`,
//! [`AnsCoder::with_floor`]), so that a short checksum costs only its own bits: a state
//! `2^16 + crc24` costs about 22.6 bits where any state `>= 2^31` costs at least 31. The encoder
//! needs no change (while `x < L` no push can reach the renormalization threshold, and pushes
//! never lower the state), and once `x >= L` it stays there. So the states below `L` are the
//! bottom of the stack, before the first word: the decoder, when a pop leaves `x < L`, takes a
//! word only while words are left; with none left, `x` must still be at least `F` (a pop never
//! raises the state, and none goes below the initial state), else it popped past the end. The
//! default floor is `L`, which is the strict rule above. In the compact format such a state (no
//! words) takes its minimal number of bytes, 1 to 4, top byte non-zero; a reader is given the
//! floor ([`AnsCoder::from_compact_bytes_with_floor`]) and accepts fewer than 4 bytes, or 4
//! below `2^31` with no word after them, only where they are at least `F`.
//!
//! [`AnsBatch`] holds many independent streams and codes them in parallel with rayon; each
//! stream's bytes are exactly those of a single [`AnsCoder`] fed the same rows.

use rayon::prelude::*;

use crate::error::{try_with_capacity, CoreError, CoreResult};
use crate::quantize::{
    simd_dispatch, small_find, small_freqs, small_locate, with_small_k, Input, Lanes, Quantizer,
    MAX_SYMBOLS, MIN_SYMBOLS, PRECISION, SMALL_K, TOTAL,
};

/// The lower bound of the normalized state interval `[STATE_LOW, 2^63)`.
pub const STATE_LOW: u64 = 1 << 31;
/// The most streams an [`AnsBatch`] may hold (`2^24`, about 1.6 GB of empty coders): a larger
/// count is an error before anything is allocated.
pub const MAX_STREAMS: usize = 1 << 24;
const STATE_HIGH: u64 = 1 << 63;
const WORD_BITS: u32 = 32;

/// A single rANS stream used as a stack.
///
/// ```
/// use ardm_core::ans::AnsCoder;
/// let logits = [0.0f32, 2.0, -1.0, 0.5, 0.5, 0.5]; // two rows of K = 3
/// let mut coder = AnsCoder::new();
/// coder.push(&[1, 2], &logits, 3).unwrap();
/// let bytes = coder.to_bytes();
/// let mut decoder = AnsCoder::from_bytes(&bytes).unwrap();
/// assert_eq!(decoder.pop(&logits, 3).unwrap(), vec![1, 2]);
/// assert!(decoder.is_empty());
/// ```
#[derive(Clone, Debug)]
pub struct AnsCoder {
    state: u64,
    words: Vec<u32>,
    /// The lowest state the stream may reach with no words left (see the module docs).
    floor: u64,
    quantizer: Quantizer,
}

impl Default for AnsCoder {
    fn default() -> Self {
        Self::new()
    }
}

impl PartialEq for AnsCoder {
    fn eq(&self, other: &Self) -> bool {
        self.state == other.state && self.words == other.words && self.floor == other.floor
    }
}

impl AnsCoder {
    /// An empty stack.
    pub fn new() -> Self {
        AnsCoder {
            state: STATE_LOW,
            words: Vec::new(),
            floor: STATE_LOW,
            quantizer: Quantizer::new(),
        }
    }

    /// A stack whose state starts at `state` instead of [`STATE_LOW`]; `state` must lie in
    /// `[STATE_LOW, 2^63)`. A decoder that pops everything pushed onto it ends at that state
    /// with no words left, so the bits of the initial state can carry a checksum.
    ///
    /// ```
    /// use ardm_core::ans::{AnsCoder, STATE_LOW};
    /// let start = STATE_LOW + 0x1234_5678; // e.g. L + crc32 of the data
    /// let logits = [0.0f32, 2.0, -1.0];
    /// let mut coder = AnsCoder::with_initial_state(start).unwrap();
    /// coder.push(&[2], &logits, 3).unwrap();
    /// let mut decoder = AnsCoder::from_compact_bytes(&coder.to_compact_bytes()).unwrap();
    /// assert_eq!(decoder.pop(&logits, 3).unwrap(), vec![2]);
    /// assert_eq!((decoder.state(), decoder.num_words()), (start, 0));
    /// assert!(AnsCoder::with_initial_state(STATE_LOW - 1).is_err());
    /// ```
    pub fn with_initial_state(state: u64) -> CoreResult<Self> {
        check_state(state)?;
        Ok(AnsCoder {
            state,
            ..Self::new()
        })
    }

    /// A stack that starts at `state`, which may lie below [`STATE_LOW`]: `floor` must lie in
    /// `[1, STATE_LOW]` and `state` in `[floor, 2^63)`. A decoder of its stream is given the
    /// same floor ([`AnsCoder::from_compact_bytes_with_floor`]).
    ///
    /// ```
    /// use ardm_core::ans::AnsCoder;
    /// let start = (1 << 16) + 0x12_3456; // e.g. 2^16 + a 24-bit checksum
    /// let logits = [0.0f32, 2.0, -1.0];
    /// let mut coder = AnsCoder::with_floor(start, 1 << 16).unwrap();
    /// coder.push(&[2, 1], &logits.repeat(2), 3).unwrap();
    /// let bytes = coder.to_compact_bytes();
    /// assert_eq!(bytes.len(), 4); // the state never reached 2^31: no word
    /// let mut decoder = AnsCoder::from_compact_bytes_with_floor(&bytes, 1 << 16).unwrap();
    /// assert_eq!(decoder.pop(&logits.repeat(2), 3).unwrap(), vec![2, 1]);
    /// assert_eq!((decoder.state(), decoder.num_words()), (start, 0));
    /// assert!(AnsCoder::from_compact_bytes(&bytes).is_err()); // the default floor is 2^31
    /// assert!(AnsCoder::with_floor(start, start + 1).is_err());
    /// ```
    pub fn with_floor(state: u64, floor: u64) -> CoreResult<Self> {
        check_floor(floor)?;
        if !(floor..STATE_HIGH).contains(&state) {
            return Err(CoreError::new(format!(
                "an initial ANS state must lie in [{floor:#x}, 2^63), got {state:#x}"
            )));
        }
        Ok(AnsCoder {
            state,
            floor,
            ..Self::new()
        })
    }

    /// The stream's floor: the lowest state it may reach with no words left.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The current state, in `[STATE_LOW, 2^63)`, or in `[floor, STATE_LOW)` with no words
    /// for a stream that started below `STATE_LOW`.
    ///
    /// ```
    /// use ardm_core::ans::{AnsCoder, STATE_LOW};
    /// assert_eq!(AnsCoder::new().state(), STATE_LOW);
    /// ```
    pub fn state(&self) -> u64 {
        self.state
    }

    /// The number of 32-bit words written besides the state.
    ///
    /// ```
    /// use ardm_core::ans::AnsCoder;
    /// let mut coder = AnsCoder::new();
    /// assert_eq!(coder.num_words(), 0);
    /// coder.push(&[0; 100], &[0.0f32; 200], 2).unwrap(); // 100 bits
    /// assert_eq!(coder.num_words(), 3);
    /// ```
    pub fn num_words(&self) -> usize {
        self.words.len()
    }

    /// True when the state is [`STATE_LOW`] with no words: nothing (or only symbols of
    /// probability one) has been pushed onto a [`AnsCoder::new`] coder.
    pub fn is_empty(&self) -> bool {
        self.state == STATE_LOW && self.words.is_empty()
    }

    /// Size of [`AnsCoder::to_bytes`] in bits.
    pub fn num_bits(&self) -> u64 {
        WORD_BITS as u64 * (self.words.len() as u64 + 2)
    }

    /// Encodes `symbols[n]` under row `n` of `logits` (`symbols.len()` rows of `num_symbols`).
    pub fn push(&mut self, symbols: &[i64], logits: &[f32], num_symbols: usize) -> CoreResult<()> {
        self.push_rows(symbols, logits, num_symbols, Input::Logits)
    }

    /// Decodes `logits.len() / num_symbols` symbols, the first row first.
    pub fn pop(&mut self, logits: &[f32], num_symbols: usize) -> CoreResult<Vec<i64>> {
        self.pop_rows(logits, num_symbols, Input::Logits)
    }

    /// [`AnsCoder::push`] with probability rows instead of logits.
    pub fn push_probs(
        &mut self,
        symbols: &[i64],
        probs: &[f32],
        num_symbols: usize,
    ) -> CoreResult<()> {
        self.push_rows(symbols, probs, num_symbols, Input::Probs)
    }

    /// [`AnsCoder::pop`] with probability rows instead of logits.
    pub fn pop_probs(&mut self, probs: &[f32], num_symbols: usize) -> CoreResult<Vec<i64>> {
        self.pop_rows(probs, num_symbols, Input::Probs)
    }

    /// Pushes with rows of either kind; on error the coder is unchanged.
    pub fn push_rows(
        &mut self,
        symbols: &[i64],
        rows: &[f32],
        num_symbols: usize,
        input: Input,
    ) -> CoreResult<()> {
        check_rows(rows.len(), num_symbols, Some(symbols.len()))?;
        check_symbols(symbols, num_symbols)?;
        let (state, len) = (self.state, self.words.len());
        let result = encode(
            &mut self.quantizer,
            &mut self.state,
            &mut self.words,
            symbols,
            rows,
            num_symbols,
            input,
        );
        if result.is_err() {
            self.state = state;
            self.words.truncate(len);
        }
        result
    }

    /// Pops one symbol per row of either kind; on error the coder is unchanged.
    pub fn pop_rows(
        &mut self,
        rows: &[f32],
        num_symbols: usize,
        input: Input,
    ) -> CoreResult<Vec<i64>> {
        let n = check_rows(rows.len(), num_symbols, None)?;
        let mut out = vec![0i64; n];
        let (state, len) = decode(
            &mut self.quantizer,
            self.state,
            self.floor,
            &self.words,
            rows,
            num_symbols,
            input,
            &mut out,
        )?;
        self.state = state;
        self.words.truncate(len);
        Ok(out)
    }

    /// The words, then the state as (low, high) words, little endian. A state below
    /// [`STATE_LOW`] is written too, but [`AnsCoder::from_bytes`] rejects it: such streams
    /// travel in the compact format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 * (self.words.len() + 2));
        for &w in &self.words {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&(self.state as u32).to_le_bytes());
        out.extend_from_slice(&((self.state >> WORD_BITS) as u32).to_le_bytes());
        out
    }

    /// Reads what [`AnsCoder::to_bytes`] wrote, checking length and state.
    pub fn from_bytes(bytes: &[u8]) -> CoreResult<Self> {
        if !bytes.len().is_multiple_of(4) || bytes.len() < 8 {
            return Err(CoreError::new(format!(
                "an ANS stream is a whole number of 4-byte words, at least 2, got {} bytes",
                bytes.len()
            )));
        }
        let mut words: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let high = words.pop().unwrap_or(0) as u64;
        let low = words.pop().unwrap_or(0) as u64;
        let state = (high << WORD_BITS) | low;
        if !(STATE_LOW..STATE_HIGH).contains(&state) {
            return Err(CoreError::new(format!(
                "corrupted ANS stream: final state {state:#x} outside [2^31, 2^63)"
            )));
        }
        Ok(AnsCoder {
            state,
            words,
            floor: STATE_LOW,
            quantizer: Quantizer::new(),
        })
    }

    /// The stream in the compact format of the module docs: the state in its minimal 4 to 7
    /// bytes (big endian), then the words, the next one the decoder needs first.
    ///
    /// ```
    /// use ardm_core::ans::AnsCoder;
    /// assert_eq!(AnsCoder::new().to_compact_bytes(), vec![0x80, 0, 0, 0]);
    /// let coder = AnsCoder::with_initial_state(1 << 40).unwrap();
    /// assert_eq!(coder.to_compact_bytes(), vec![1, 0, 0, 0, 0, 0]);
    /// ```
    pub fn to_compact_bytes(&self) -> Vec<u8> {
        let (head, flushed) = if self.state >> 56 != 0 {
            (self.state >> WORD_BITS, Some(self.state as u32))
        } else {
            (self.state, None)
        };
        // head >= 2^24: a state >= 2^31, or a flushed one >= 2^56; only a state below the
        // default floor (no words) can be smaller, and then takes 1 to 3 bytes.
        let k = (64 - head.leading_zeros()).div_ceil(8) as usize;
        let mut out = Vec::with_capacity(k + 4 * (self.words.len() + 1));
        out.extend_from_slice(&head.to_be_bytes()[8 - k..]);
        for w in flushed.into_iter().chain(self.words.iter().rev().copied()) {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out
    }

    /// Reads what [`AnsCoder::to_compact_bytes`] wrote; every input that it cannot have
    /// written is an error.
    ///
    /// ```
    /// use ardm_core::ans::AnsCoder;
    /// let logits = [0.0f32, 2.0, -1.0, 0.5, 0.5, 0.5];
    /// let mut coder = AnsCoder::new();
    /// coder.push(&[1, 2], &logits, 3).unwrap();
    /// let bytes = coder.to_compact_bytes();
    /// assert!(bytes.len() < coder.to_bytes().len());
    /// let mut decoder = AnsCoder::from_compact_bytes(&bytes).unwrap();
    /// assert_eq!(decoder.pop(&logits, 3).unwrap(), vec![1, 2]);
    /// assert!(decoder.is_empty());
    /// assert!(AnsCoder::from_compact_bytes(&[0, 0x80, 0, 0, 0]).is_err()); // zero top byte
    /// ```
    pub fn from_compact_bytes(bytes: &[u8]) -> CoreResult<Self> {
        Self::from_compact_bytes_with_floor(bytes, STATE_LOW)
    }

    /// [`AnsCoder::from_compact_bytes`] of a stream whose floor is `floor` (see
    /// [`AnsCoder::with_floor`]): 4 bytes below `2^31` are also a state, if at least `floor`.
    pub fn from_compact_bytes_with_floor(bytes: &[u8], floor: u64) -> CoreResult<Self> {
        check_floor(floor)?;
        // Below 4 bytes: a state below 2^24 alone, only in a stream of a floor that low.
        if bytes.len() < 4 && (bytes.is_empty() || floor >= 1 << 24) {
            return Err(compact_error(format!(
                "{} bytes, at least 4 are needed",
                bytes.len()
            )));
        }
        let k = if bytes.len() < 4 {
            bytes.len()
        } else {
            4 + bytes.len() % 4
        };
        let (head, rest) = bytes.split_at(k);
        if head[0] == 0 {
            return Err(compact_error(
                "the state's top byte is zero (not canonical)",
            ));
        }
        let value = head.iter().fold(0u64, |v, &b| (v << 8) | b as u64);
        let (words, rest) = rest.as_chunks::<4>();
        debug_assert!(rest.is_empty());
        let mut words = words.iter().map(|&w| u32::from_le_bytes(w));
        let state = if value < STATE_LOW {
            let Some(low) = words.next() else {
                // a stream that started below 2^31 and never reached it
                if value < floor {
                    return Err(compact_error(format!(
                        "the state {value:#x} is below {floor:#x} and no flushed word follows"
                    )));
                }
                return Ok(AnsCoder {
                    state: value,
                    words: Vec::new(),
                    floor,
                    quantizer: Quantizer::new(),
                });
            };
            let state = (value << WORD_BITS) | low as u64;
            if state >> 56 == 0 {
                return Err(compact_error(format!(
                    "the flushed state {state:#x} is below 2^56 (not canonical)"
                )));
            }
            state
        } else {
            value
        };
        if !(STATE_LOW..STATE_HIGH).contains(&state) {
            return Err(compact_error(format!(
                "final state {state:#x} outside [2^31, 2^63)"
            )));
        }
        let mut words: Vec<u32> = words.collect();
        words.reverse();
        Ok(AnsCoder {
            state,
            words,
            floor,
            quantizer: Quantizer::new(),
        })
    }
}

fn check_state(state: u64) -> CoreResult<()> {
    if !(STATE_LOW..STATE_HIGH).contains(&state) {
        return Err(CoreError::new(format!(
            "an initial ANS state must lie in [2^31, 2^63), got {state:#x}"
        )));
    }
    Ok(())
}

fn check_floor(floor: u64) -> CoreResult<()> {
    if !(1..=STATE_LOW).contains(&floor) {
        return Err(CoreError::new(format!(
            "an ANS stream's floor must lie in [1, 2^31], got {floor:#x}"
        )));
    }
    Ok(())
}

fn compact_error(msg: impl std::fmt::Display) -> CoreError {
    CoreError::new(format!("corrupted compact ANS stream: {msg}"))
}

/// Checks that `len` floats form rows of `num_symbols` (and `expected` rows, if given);
/// returns the number of rows.
fn check_rows(len: usize, num_symbols: usize, expected: Option<usize>) -> CoreResult<usize> {
    if !(MIN_SYMBOLS..=MAX_SYMBOLS).contains(&num_symbols) {
        return Err(CoreError::new(format!(
            "distributions need {MIN_SYMBOLS} to {MAX_SYMBOLS} symbols, got K = {num_symbols}"
        )));
    }
    if !len.is_multiple_of(num_symbols) {
        return Err(CoreError::new(format!(
            "{len} values do not split into rows of {num_symbols}"
        )));
    }
    let n = len / num_symbols;
    if let Some(expected) = expected {
        if expected != n {
            return Err(CoreError::new(format!(
                "{expected} symbols but {n} rows of distributions"
            )));
        }
    }
    Ok(n)
}

fn check_symbols(symbols: &[i64], num_symbols: usize) -> CoreResult<()> {
    let k = num_symbols as i64;
    if let Some((i, &s)) = symbols
        .iter()
        .enumerate()
        .find(|(_, &s)| !(0..k).contains(&s))
    {
        return Err(CoreError::new(format!(
            "symbol {s} at position {i} is out of range 0..{num_symbols}"
        )));
    }
    Ok(())
}

simd_dispatch! {
    /// Encodes validated symbols, the last row first. On error `state` and `words` hold a
    /// consistent partial result that the caller undoes.
    fn encode(
        quantizer: &mut Quantizer,
        state: &mut u64,
        words: &mut Vec<u32>,
        symbols: &[i64],
        rows: &[f32],
        num_symbols: usize,
        input: Input,
    ) -> CoreResult<()> => encode_rows
}

/// One encoder step: pushes the interval `[cum, cum + freq)`.
#[inline(always)]
fn encode_step(x: u64, words: &mut Vec<u32>, cum: u32, freq: u32) -> u64 {
    let freq = freq as u64;
    let mut x = x;
    if x >= ((STATE_LOW >> PRECISION) << WORD_BITS) * freq {
        words.push(x as u32);
        x >>= WORD_BITS;
    }
    ((x / freq) << PRECISION) + (x % freq) + cum as u64
}

/// [`encode`] with the given lanes; small alphabets take a loop unrolled for their `K`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn encode_rows<L: Lanes>(
    lanes: L,
    quantizer: &mut Quantizer,
    state: &mut u64,
    words: &mut Vec<u32>,
    symbols: &[i64],
    rows: &[f32],
    num_symbols: usize,
    input: Input,
) -> CoreResult<()> {
    let mut x = *state;
    if num_symbols <= SMALL_K {
        with_small_k!(num_symbols, K => {
            let (rows, _) = rows.as_chunks::<K>();
            for (&symbol, row) in symbols.iter().zip(rows).rev() {
                let freqs = small_freqs(row, input)?;
                let (cum, freq) = small_locate(&freqs, symbol as usize);
                x = encode_step(x, words, cum, freq);
                *state = x;
            }
        });
        return Ok(());
    }
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn run<L: Lanes, W, P>(
        lanes: L,
        quantizer: &mut Quantizer<W, P>,
        state: &mut u64,
        words: &mut Vec<u32>,
        symbols: &[i64],
        rows: &[f32],
        k: usize,
        input: Input,
    ) -> CoreResult<()>
    where
        W: AsRef<[[f32; 8]]> + AsMut<[[f32; 8]]>,
        P: AsRef<[[i32; 8]]> + AsMut<[[i32; 8]]>,
    {
        let mut x = *state;
        for (&symbol, row) in symbols.iter().zip(rows.chunks_exact(k)).rev() {
            quantizer.prepare(lanes, row, input)?;
            let (cum, freq) = quantizer.locate(lanes, row, symbol as usize);
            x = encode_step(x, words, cum, freq);
            *state = x;
        }
        Ok(())
    }
    with_vector_k!(num_symbols, K => {
        // `K` is 0 for sizes without a loop of their own.
        if K == 0 {
            quantizer.reserve(num_symbols);
            run(lanes, quantizer, state, words, symbols, rows, num_symbols, input)
        } else {
            let mut fixed = Quantizer::<[[f32; 8]; K / 8], [[i32; 8]; K / 8]>::fixed();
            run(lanes, &mut fixed, state, words, symbols, rows, K, input)
        }
    })
}

/// Calls `$body` with `$K` a constant: `$k` for the common alphabet sizes that get a loop
/// compiled for their size (the row length then is a constant), 0 for the others.
macro_rules! with_vector_k {
    ($k:expr, $K:ident => $body:expr) => {
        match $k {
            16 => {
                const $K: usize = 16;
                $body
            }
            32 => {
                const $K: usize = 32;
                $body
            }
            64 => {
                const $K: usize = 64;
                $body
            }
            256 => {
                const $K: usize = 256;
                $body
            }
            _ => {
                const $K: usize = 0;
                $body
            }
        }
    };
}
use with_vector_k;

simd_dispatch! {
    /// Decodes one symbol per row into `out` from `(state, words)` without changing them;
    /// returns the new state and the number of words left.
    #[allow(clippy::too_many_arguments)]
    fn decode(
        quantizer: &mut Quantizer,
        state: u64,
        floor: u64,
        words: &[u32],
        rows: &[f32],
        num_symbols: usize,
        input: Input,
        out: &mut [i64],
    ) -> CoreResult<(u64, usize)> => decode_rows
}

/// One decoder step: the state after popping the symbol of `slot` in `[cum, cum + freq)`.
/// Below `STATE_LOW` it takes a word while there are any; with none left the state may go
/// down to `floor` (a stream that started below `STATE_LOW`, see the module docs).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn decode_step(
    x: u64,
    floor: u64,
    words: &[u32],
    len: &mut usize,
    slot: u32,
    cum: u32,
    freq: u32,
) -> CoreResult<u64> {
    let mut x = freq as u64 * (x >> PRECISION) + (slot - cum) as u64;
    if x < STATE_LOW {
        if *len == 0 {
            if x >= floor {
                return Ok(x);
            }
            return Err(CoreError::new(
                "popped past the end of the ANS stream (truncated or corrupted data, \
                 or different distributions than when pushed)",
            ));
        }
        *len -= 1;
        x = (x << WORD_BITS) | words[*len] as u64;
    }
    Ok(x)
}

/// [`decode`] with the given lanes; small alphabets take a loop unrolled for their `K`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn decode_rows<L: Lanes>(
    lanes: L,
    quantizer: &mut Quantizer,
    state: u64,
    floor: u64,
    words: &[u32],
    rows: &[f32],
    num_symbols: usize,
    input: Input,
    out: &mut [i64],
) -> CoreResult<(u64, usize)> {
    let mut x = state;
    let mut len = words.len();
    if num_symbols <= SMALL_K {
        with_small_k!(num_symbols, K => {
            let (rows, _) = rows.as_chunks::<K>();
            for (row, symbol) in rows.iter().zip(out.iter_mut()) {
                let freqs = small_freqs(row, input)?;
                let slot = (x & (TOTAL as u64 - 1)) as u32;
                let (s, cum, freq) = small_find(&freqs, slot);
                x = decode_step(x, floor, words, &mut len, slot, cum, freq)?;
                *symbol = s as i64;
            }
        });
        return Ok((x, len));
    }
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn run<L: Lanes, W, P>(
        lanes: L,
        quantizer: &mut Quantizer<W, P>,
        state: u64,
        floor: u64,
        words: &[u32],
        rows: &[f32],
        k: usize,
        input: Input,
        out: &mut [i64],
    ) -> CoreResult<(u64, usize)>
    where
        W: AsRef<[[f32; 8]]> + AsMut<[[f32; 8]]>,
        P: AsRef<[[i32; 8]]> + AsMut<[[i32; 8]]>,
    {
        let (mut x, mut len) = (state, words.len());
        for (row, symbol) in rows.chunks_exact(k).zip(out.iter_mut()) {
            quantizer.prepare(lanes, row, input)?;
            let slot = (x & (TOTAL as u64 - 1)) as u32;
            let (s, cum, freq) = quantizer.find(lanes, row, slot);
            x = decode_step(x, floor, words, &mut len, slot, cum, freq)?;
            *symbol = s as i64;
        }
        Ok((x, len))
    }
    with_vector_k!(num_symbols, K => {
        if K == 0 {
            quantizer.reserve(num_symbols);
            run(lanes, quantizer, x, floor, words, rows, num_symbols, input, out)
        } else {
            let mut fixed = Quantizer::<[[f32; 8]; K / 8], [[i32; 8]; K / 8]>::fixed();
            run(lanes, &mut fixed, x, floor, words, rows, K, input, out)
        }
    })
}

/// Many independent [`AnsCoder`] streams, coded in parallel (one rayon task per stream).
///
/// ```
/// use ardm_core::ans::AnsBatch;
/// let mut batch = AnsBatch::new(2);
/// let logits = vec![0.0f32; 2 * 3 * 4]; // B = 2 streams, N = 3 symbols, K = 4
/// batch.push(&[0, 1, 2, 3, 2, 1], &logits, 3, 4).unwrap();
/// assert_eq!(batch.pop(&logits, 3, 4).unwrap(), vec![0, 1, 2, 3, 2, 1]);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnsBatch {
    coders: Vec<AnsCoder>,
}

/// Checks a number of streams against [`MAX_STREAMS`].
pub fn check_num_streams(num_streams: usize) -> CoreResult<()> {
    if num_streams > MAX_STREAMS {
        return Err(CoreError::new(format!(
            "num_streams must lie in 0..={MAX_STREAMS} (2^24), got {num_streams}"
        )));
    }
    Ok(())
}

impl AnsBatch {
    /// `num_streams` empty streams.
    ///
    /// # Panics
    ///
    /// If `num_streams` exceeds [`MAX_STREAMS`] or the streams do not fit in memory; for a
    /// count that comes from outside, use [`AnsBatch::try_new`].
    pub fn new(num_streams: usize) -> Self {
        match Self::try_new(num_streams) {
            Ok(batch) => batch,
            Err(err) => panic!("{err}"),
        }
    }

    /// `num_streams` empty streams, or an error if `num_streams` exceeds [`MAX_STREAMS`] (checked
    /// before any allocation) or the streams do not fit in memory.
    ///
    /// ```
    /// use ardm_core::ans::{AnsBatch, MAX_STREAMS};
    /// assert_eq!(AnsBatch::try_new(3).unwrap().len(), 3);
    /// assert!(AnsBatch::try_new(MAX_STREAMS + 1).is_err());
    /// ```
    pub fn try_new(num_streams: usize) -> CoreResult<Self> {
        check_num_streams(num_streams)?;
        let mut coders = try_with_capacity(num_streams, "the streams")?;
        coders.resize(num_streams, AnsCoder::new());
        Ok(AnsBatch { coders })
    }

    /// One stream per initial state ([`AnsCoder::with_initial_state`]); an error names the
    /// first state outside `[STATE_LOW, 2^63)`.
    ///
    /// ```
    /// use ardm_core::ans::{AnsBatch, STATE_LOW};
    /// let batch = AnsBatch::with_initial_states(&[STATE_LOW, STATE_LOW + 7]).unwrap();
    /// assert_eq!(batch.states(), vec![STATE_LOW, STATE_LOW + 7]);
    /// assert!(AnsBatch::with_initial_states(&[STATE_LOW, 0]).is_err());
    /// ```
    pub fn with_initial_states(states: &[u64]) -> CoreResult<Self> {
        check_num_streams(states.len())?;
        let coders = states
            .iter()
            .enumerate()
            .map(|(b, &state)| {
                AnsCoder::with_initial_state(state)
                    .map_err(|e| CoreError::new(format!("stream {b}: {e}")))
            })
            .collect::<CoreResult<Vec<_>>>()?;
        Ok(AnsBatch { coders })
    }

    /// One stream per initial state, all of floor `floor` ([`AnsCoder::with_floor`]).
    pub fn with_initial_states_and_floor(states: &[u64], floor: u64) -> CoreResult<Self> {
        check_num_streams(states.len())?;
        let coders = states
            .iter()
            .enumerate()
            .map(|(b, &state)| {
                AnsCoder::with_floor(state, floor)
                    .map_err(|e| CoreError::new(format!("stream {b}: {e}")))
            })
            .collect::<CoreResult<Vec<_>>>()?;
        Ok(AnsBatch { coders })
    }

    /// Wraps existing streams.
    pub fn from_coders(coders: Vec<AnsCoder>) -> Self {
        AnsBatch { coders }
    }

    pub fn len(&self) -> usize {
        self.coders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.coders.is_empty()
    }

    pub fn coders(&self) -> &[AnsCoder] {
        &self.coders
    }

    /// Checks that `len` values are `B x n` rows of `num_symbols`, without overflow: a product
    /// that does not fit in usize cannot be the length of a slice.
    fn check_shape(&self, len: usize, n: usize, num_symbols: usize) -> CoreResult<()> {
        let streams = self.coders.len();
        let expected = streams
            .checked_mul(n)
            .and_then(|rows| rows.checked_mul(num_symbols));
        if expected != Some(len) {
            let expected = expected.map_or_else(|| "more than 2^64".to_string(), |e| e.to_string());
            return Err(CoreError::new(format!(
                "expected {streams} streams x {n} rows x {num_symbols} symbols = {expected} values, got {len}"
            )));
        }
        Ok(())
    }

    /// Pushes `symbols[b][n]` (flat, `B * N`) under rows `logits[b][n]` (flat, `B * N * K`) onto
    /// stream `b`. All or nothing: on any error no stream changes.
    pub fn push(
        &mut self,
        symbols: &[i64],
        logits: &[f32],
        n: usize,
        num_symbols: usize,
    ) -> CoreResult<()> {
        self.push_rows(symbols, logits, n, num_symbols, Input::Logits)
    }

    /// Pops `N` symbols from every stream; returns them flat (`B * N`). All or nothing.
    pub fn pop(&mut self, logits: &[f32], n: usize, num_symbols: usize) -> CoreResult<Vec<i64>> {
        self.pop_rows(logits, n, num_symbols, Input::Logits)
    }

    pub fn push_rows(
        &mut self,
        symbols: &[i64],
        rows: &[f32],
        n: usize,
        num_symbols: usize,
        input: Input,
    ) -> CoreResult<()> {
        check_rows(rows.len(), num_symbols, Some(symbols.len()))?;
        self.check_shape(rows.len(), n, num_symbols)?;
        check_symbols(symbols, num_symbols)?;
        if n == 0 {
            return Ok(());
        }
        let saved: Vec<(u64, usize)> = self
            .coders
            .iter()
            .map(|c| (c.state, c.words.len()))
            .collect();
        let results: Vec<CoreResult<()>> = self
            .coders
            .par_iter_mut()
            .zip(symbols.par_chunks(n))
            .zip(rows.par_chunks(n * num_symbols))
            .map(|((coder, s), r)| coder.push_rows(s, r, num_symbols, input))
            .collect();
        if let Some(err) = results.into_iter().find_map(Result::err) {
            for (coder, (state, len)) in self.coders.iter_mut().zip(saved) {
                coder.state = state;
                coder.words.truncate(len);
            }
            return Err(err);
        }
        Ok(())
    }

    pub fn pop_rows(
        &mut self,
        rows: &[f32],
        n: usize,
        num_symbols: usize,
        input: Input,
    ) -> CoreResult<Vec<i64>> {
        check_rows(rows.len(), num_symbols, None)?;
        self.check_shape(rows.len(), n, num_symbols)?;
        let mut out = vec![0i64; self.coders.len() * n];
        if n == 0 {
            return Ok(out);
        }
        let results: Vec<CoreResult<(u64, usize)>> = self
            .coders
            .par_iter_mut()
            .zip(rows.par_chunks(n * num_symbols))
            .zip(out.par_chunks_mut(n))
            .map(|((coder, r), o)| {
                decode(
                    &mut coder.quantizer,
                    coder.state,
                    coder.floor,
                    &coder.words,
                    r,
                    num_symbols,
                    input,
                    o,
                )
            })
            .collect();
        let mut new_states = Vec::with_capacity(results.len());
        for (b, result) in results.into_iter().enumerate() {
            match result {
                Ok(s) => new_states.push(s),
                Err(e) => return Err(CoreError::new(format!("stream {b}: {e}"))),
            }
        }
        for (coder, (state, len)) in self.coders.iter_mut().zip(new_states) {
            coder.state = state;
            coder.words.truncate(len);
        }
        Ok(out)
    }

    /// [`AnsCoder::to_bytes`] of every stream.
    pub fn to_bytes_list(&self) -> Vec<Vec<u8>> {
        self.coders.iter().map(AnsCoder::to_bytes).collect()
    }

    /// Streams from [`AnsBatch::to_bytes_list`].
    pub fn from_bytes_list<B: AsRef<[u8]>>(streams: &[B]) -> CoreResult<Self> {
        check_num_streams(streams.len())?;
        let coders = streams
            .iter()
            .enumerate()
            .map(|(b, bytes)| {
                AnsCoder::from_bytes(bytes.as_ref())
                    .map_err(|e| CoreError::new(format!("stream {b}: {e}")))
            })
            .collect::<CoreResult<Vec<_>>>()?;
        Ok(AnsBatch { coders })
    }

    /// [`AnsCoder::num_bits`] of every stream.
    pub fn num_bits(&self) -> Vec<u64> {
        self.coders.iter().map(AnsCoder::num_bits).collect()
    }

    /// [`AnsCoder::state`] of every stream.
    ///
    /// ```
    /// use ardm_core::ans::{AnsBatch, STATE_LOW};
    /// assert_eq!(AnsBatch::new(2).states(), vec![STATE_LOW; 2]);
    /// ```
    pub fn states(&self) -> Vec<u64> {
        self.coders.iter().map(AnsCoder::state).collect()
    }

    /// [`AnsCoder::num_words`] of every stream.
    ///
    /// ```
    /// use ardm_core::ans::AnsBatch;
    /// assert_eq!(AnsBatch::new(3).num_words(), vec![0; 3]);
    /// ```
    pub fn num_words(&self) -> Vec<usize> {
        self.coders.iter().map(AnsCoder::num_words).collect()
    }

    /// [`AnsCoder::to_compact_bytes`] of every stream.
    ///
    /// ```
    /// use ardm_core::ans::AnsBatch;
    /// let mut batch = AnsBatch::new(2);
    /// let logits = vec![0.0f32; 2 * 3 * 4];
    /// batch.push(&[0, 1, 2, 3, 2, 1], &logits, 3, 4).unwrap();
    /// let streams = batch.to_compact_bytes_list();
    /// let mut back = AnsBatch::from_compact_bytes_list(&streams).unwrap();
    /// assert_eq!(back.pop(&logits, 3, 4).unwrap(), vec![0, 1, 2, 3, 2, 1]);
    /// ```
    pub fn to_compact_bytes_list(&self) -> Vec<Vec<u8>> {
        self.coders.iter().map(AnsCoder::to_compact_bytes).collect()
    }

    /// Streams from [`AnsBatch::to_compact_bytes_list`]; an error names the first bad stream.
    ///
    /// ```
    /// use ardm_core::ans::AnsBatch;
    /// let batch = AnsBatch::from_compact_bytes_list(&[vec![0x80, 0, 0, 0]]).unwrap();
    /// assert_eq!(batch, AnsBatch::new(1));
    /// assert!(AnsBatch::from_compact_bytes_list(&[&[0x80, 0, 0][..]]).is_err());
    /// ```
    pub fn from_compact_bytes_list<B: AsRef<[u8]>>(streams: &[B]) -> CoreResult<Self> {
        Self::from_compact_bytes_list_with_floor(streams, STATE_LOW)
    }

    /// [`AnsBatch::from_compact_bytes_list`] of streams of floor `floor`.
    pub fn from_compact_bytes_list_with_floor<B: AsRef<[u8]>>(
        streams: &[B],
        floor: u64,
    ) -> CoreResult<Self> {
        check_num_streams(streams.len())?;
        let coders = streams
            .iter()
            .enumerate()
            .map(|(b, bytes)| {
                AnsCoder::from_compact_bytes_with_floor(bytes.as_ref(), floor)
                    .map_err(|e| CoreError::new(format!("stream {b}: {e}")))
            })
            .collect::<CoreResult<Vec<_>>>()?;
        Ok(AnsBatch { coders })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::ideal_bits;
    use proptest::prelude::*;

    /// A small deterministic generator (tests only).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn unit(&mut self) -> f32 {
            (self.next() % (1 << 24)) as f32 / (1 << 24) as f32
        }
    }

    fn sample(freqs: &[u32], slot: u32) -> i64 {
        let mut cum = 0;
        for (i, &f) in freqs.iter().enumerate() {
            cum += f;
            if slot < cum {
                return i as i64;
            }
        }
        unreachable!()
    }

    /// Rows of logits of the given style and symbols drawn from their quantized tables.
    fn data(rng: &mut Lcg, n: usize, k: usize, style: u8) -> (Vec<i64>, Vec<f32>) {
        let mut logits = vec![0f32; n * k];
        for row in logits.chunks_exact_mut(k) {
            let hot = (rng.next() as usize) % k;
            for (i, l) in row.iter_mut().enumerate() {
                *l = match style {
                    0 => rng.unit() * 8.0 - 4.0,
                    1 => rng.unit() * 0.01 + if i == hot { 50.0 } else { 0.0 },
                    2 => rng.unit() * 1e-3,
                    _ => rng.unit() * 200.0 - 100.0,
                };
            }
        }
        let tables = crate::quantize::quantize_logits(&logits, k).unwrap();
        let symbols = tables
            .chunks_exact(k)
            .map(|t| {
                if rng.next().is_multiple_of(8) {
                    (rng.next() % k as u64) as i64 // sometimes an improbable symbol
                } else {
                    sample(t, (rng.next() % TOTAL as u64) as u32)
                }
            })
            .collect();
        (symbols, logits)
    }

    #[test]
    fn empty_coder_round_trips() {
        let coder = AnsCoder::new();
        let bytes = coder.to_bytes();
        assert_eq!(bytes.len(), 8);
        let back = AnsCoder::from_bytes(&bytes).unwrap();
        assert!(back.is_empty());
        assert_eq!(back, coder);
    }

    #[test]
    fn pop_from_empty_is_an_error() {
        let mut coder = AnsCoder::new();
        assert!(coder.pop(&[0.0, 0.0, 0.0, 0.0], 2).is_err());
        assert!(coder.is_empty());
    }

    #[test]
    fn truncated_streams_error_without_panicking() {
        let mut rng = Lcg(7);
        let (symbols, logits) = data(&mut rng, 2000, 16, 0);
        let mut coder = AnsCoder::new();
        coder.push(&symbols, &logits, 16).unwrap();
        let bytes = coder.to_bytes();
        for cut in [4usize, 40, 400, bytes.len() - 8] {
            // Dropping leading words makes the decoder run out of words.
            let Ok(mut dec) = AnsCoder::from_bytes(&bytes[cut..]) else {
                continue;
            };
            assert!(dec.pop(&logits, 16).is_err());
        }
    }

    #[test]
    fn bad_input_changes_nothing() {
        let mut coder = AnsCoder::new();
        coder.push(&[1, 0], &[0.0, 1.0, 1.0, 0.0], 2).unwrap();
        let before = coder.clone();
        assert!(coder.push(&[0, 2], &[0.0, 1.0, 1.0, 0.0], 2).is_err());
        assert!(coder.push(&[0, 1], &[0.0, 1.0, f32::NAN, 0.0], 2).is_err());
        assert!(coder.push(&[0], &[0.0, 1.0, 1.0, 0.0], 2).is_err());
        assert!(coder.pop(&[0.0, 1.0, f32::INFINITY, 0.0], 2).is_err());
        assert_eq!(coder, before);
        assert_eq!(coder.pop(&[0.0, 1.0, 1.0, 0.0], 2).unwrap(), vec![1, 0]);
    }

    #[test]
    fn size_is_close_to_ideal() {
        let mut rng = Lcg(3);
        for (k, style) in [
            (2usize, 0u8),
            (16, 0),
            (256, 0),
            (256, 1),
            (256, 2),
            (1000, 3),
        ] {
            let (symbols, logits) = data(&mut rng, 3000, k, style);
            let mut coder = AnsCoder::new();
            coder.push(&symbols, &logits, k).unwrap();
            let ideal = ideal_bits(&symbols, &logits, k, Input::Logits).unwrap();
            let bits = coder.num_bits() as f64;
            assert!(
                bits <= ideal * 1.001 + 64.0,
                "k={k}: {bits} vs ideal {ideal}"
            );
            assert!(bits >= ideal, "k={k}: {bits} below ideal {ideal}");
        }
    }

    #[test]
    fn batch_matches_single_streams() {
        let mut rng = Lcg(11);
        let (b, n, k) = (5usize, 40usize, 7usize);
        let (symbols, logits) = data(&mut rng, b * n, k, 0);
        let mut batch = AnsBatch::new(b);
        batch.push(&symbols, &logits, n, k).unwrap();
        for i in 0..b {
            let mut single = AnsCoder::new();
            single
                .push(
                    &symbols[i * n..(i + 1) * n],
                    &logits[i * n * k..(i + 1) * n * k],
                    k,
                )
                .unwrap();
            assert_eq!(batch.to_bytes_list()[i], single.to_bytes());
        }
        let mut back = AnsBatch::from_bytes_list(&batch.to_bytes_list()).unwrap();
        let mut bad = logits.clone();
        bad[3 * n * k] = f32::NAN;
        assert!(back.push(&symbols, &bad, n, k).is_err());
        assert!(back.pop(&bad, n, k).is_err());
        assert_eq!(back, batch);
        assert_eq!(back.pop(&logits, n, k).unwrap(), symbols);
        assert!(back.coders().iter().all(AnsCoder::is_empty));
    }

    #[test]
    fn corrupted_state_is_rejected() {
        assert!(AnsCoder::from_bytes(&[0; 8]).is_err());
        assert!(AnsCoder::from_bytes(&[0xff; 8]).is_err());
        assert!(AnsCoder::from_bytes(&[0; 6]).is_err());
        assert!(AnsCoder::from_bytes(&[]).is_err());
    }

    #[test]
    fn probs_round_trip() {
        let probs = [0.5f32, 0.5, 0.0, 0.9, 0.1, 0.0, 0.0, 0.0, 1.0];
        let mut coder = AnsCoder::new();
        coder.push_probs(&[1, 2, 0], &probs, 3).unwrap();
        assert_eq!(coder.pop_probs(&probs, 3).unwrap(), vec![1, 2, 0]);
        assert!(coder.is_empty());
    }

    /// The size `to_compact_bytes` must have: the state in its minimal 4 to 7 bytes, or a
    /// state of 8 bytes as one flushed word plus 4 bytes.
    fn compact_len(coder: &AnsCoder) -> usize {
        let state_bits = 64 - coder.state().leading_zeros() as usize;
        let head = if state_bits > 56 {
            8
        } else {
            state_bits.div_ceil(8).max(4)
        };
        head + 4 * coder.num_words()
    }

    /// Checks the compact bytes of `coder` (size, canonical round trip) and returns them.
    fn check_compact(coder: &AnsCoder) -> Vec<u8> {
        let bytes = coder.to_compact_bytes();
        assert_eq!(bytes.len(), compact_len(coder));
        let state_bits = 64 - coder.state().leading_zeros() as u64;
        let bits = 8 * bytes.len() as u64;
        let words_bits = 32 * coder.num_words() as u64;
        assert!(bits >= state_bits + words_bits);
        assert!(bits <= coder.state().ilog2() as u64 + 8 + words_bits);
        assert_ne!(bytes[0], 0);
        let back = AnsCoder::from_compact_bytes(&bytes).unwrap();
        assert_eq!(&back, coder);
        bytes
    }

    #[test]
    fn initial_state_bounds() {
        for bad in [0, 1, STATE_LOW - 1, STATE_HIGH, u64::MAX] {
            assert!(AnsCoder::with_initial_state(bad).is_err(), "{bad:#x}");
            assert!(AnsBatch::with_initial_states(&[STATE_LOW, bad]).is_err());
        }
        for good in [
            STATE_LOW,
            STATE_LOW + 1,
            (1 << 56) - 1,
            1 << 56,
            STATE_HIGH - 1,
        ] {
            let coder = AnsCoder::with_initial_state(good).unwrap();
            assert_eq!((coder.state(), coder.num_words()), (good, 0));
            assert_eq!(coder.is_empty(), good == STATE_LOW);
            check_compact(&coder);
            assert_eq!(AnsCoder::from_bytes(&coder.to_bytes()).unwrap(), coder);
        }
        assert_eq!(
            AnsCoder::with_initial_state(STATE_LOW).unwrap(),
            AnsCoder::new()
        );
        assert!(AnsBatch::with_initial_states(&[]).unwrap().is_empty());
    }

    #[test]
    fn initial_state_round_trips() {
        let mut rng = Lcg(5);
        for k in [2usize, 16, 256, 1000, 65536] {
            let lengths: &[usize] = if k == 65536 {
                &[0, 1, 2, 7, 20]
            } else {
                &[0, 1, 2, 3, 10, 100, 1000]
            };
            for &n in lengths {
                for start in [
                    STATE_LOW,
                    STATE_LOW + 0xdead_beef,
                    (1 << 56) - 1,
                    1 << 56,
                    STATE_HIGH - 1,
                    STATE_LOW + (rng.next() << 20 | rng.next()) % (STATE_HIGH - STATE_LOW),
                ] {
                    let style = (rng.next() % 4) as u8;
                    let (symbols, logits) = data(&mut rng, n, k, style);
                    let mut coder = AnsCoder::with_initial_state(start).unwrap();
                    coder.push(&symbols, &logits, k).unwrap();
                    let bytes = check_compact(&coder);
                    for mut decoder in [
                        AnsCoder::from_compact_bytes(&bytes).unwrap(),
                        AnsCoder::from_bytes(&coder.to_bytes()).unwrap(),
                    ] {
                        assert_eq!(decoder.pop(&logits, k).unwrap(), symbols, "k={k} n={n}");
                        assert_eq!((decoder.state(), decoder.num_words()), (start, 0));
                    }
                }
            }
        }
    }

    #[test]
    fn streams_below_the_default_floor_round_trip() {
        let mut rng = Lcg(29);
        for floor in [1u64, 1 << 16, 1 << 24, STATE_LOW - 1, STATE_LOW] {
            for k in [2usize, 16, 256, 1000] {
                for n in [0usize, 1, 2, 3, 10, 100, 1000] {
                    let start = floor + rng.next() % (1 << 24);
                    let style = (rng.next() % 4) as u8;
                    let (symbols, logits) = data(&mut rng, n, k, style);
                    let mut coder = AnsCoder::with_floor(start, floor).unwrap();
                    coder.push(&symbols, &logits, k).unwrap();
                    let bytes = coder.to_compact_bytes();
                    // below 2^31 nothing has been flushed: the state alone, in its minimal bytes
                    if coder.state() < STATE_LOW {
                        let k = (64 - coder.state().leading_zeros()).div_ceil(8) as usize;
                        assert!(bytes.len() == k && coder.num_words() == 0 && bytes[0] != 0);
                    }
                    let mut decoder =
                        AnsCoder::from_compact_bytes_with_floor(&bytes, floor).unwrap();
                    assert_eq!(decoder, coder);
                    assert_eq!(decoder.to_compact_bytes(), bytes);
                    assert_eq!(
                        decoder.pop(&logits, k).unwrap(),
                        symbols,
                        "floor={floor} k={k} n={n}"
                    );
                    assert_eq!((decoder.state(), decoder.num_words()), (start, 0));
                }
            }
        }
        for (state, floor) in [
            (0, 1),
            (5, 6),
            (STATE_HIGH, 1),
            (1 << 20, 0),
            (STATE_LOW, STATE_LOW + 1),
        ] {
            assert!(
                AnsCoder::with_floor(state, floor).is_err(),
                "{state:#x} {floor:#x}"
            );
        }
    }

    #[test]
    fn compact_states_below_the_default_floor() {
        // below 2^31 and no word: a state only where the floor allows it, in 4 bytes or fewer
        for (bytes, state) in [
            (&[0x7f, 0xff, 0xff, 0xff][..], STATE_LOW - 1),
            (&[1, 0, 0, 0][..], 1 << 24),
            (&[1, 0, 0][..], 1 << 16),
            (&[5][..], 5),
        ] {
            assert!(AnsCoder::from_compact_bytes(bytes).is_err());
            assert!(AnsCoder::from_compact_bytes_with_floor(bytes, state + 1).is_err());
            let coder = AnsCoder::from_compact_bytes_with_floor(bytes, state).unwrap();
            assert_eq!(
                (coder.state(), coder.num_words(), coder.floor()),
                (state, 0, state)
            );
            assert_eq!(coder.to_compact_bytes(), bytes);
        }
        // a zero top byte is never canonical, whatever the floor
        for bytes in [
            &[0, 1, 0, 0][..],
            &[0, 1, 0],
            &[0],
            &[0, 1, 0, 0, 0],
            &[0, 0, 1, 0, 1, 2, 3, 4],
        ] {
            assert!(
                AnsCoder::from_compact_bytes_with_floor(bytes, 1).is_err(),
                "{bytes:?}"
            );
        }
        assert!(AnsCoder::from_compact_bytes_with_floor(&[0x80, 0, 0, 0], 0).is_err());
        assert!(AnsCoder::from_compact_bytes_with_floor(&[0x80, 0, 0, 0], STATE_LOW + 1).is_err());
        let batch = AnsBatch::with_initial_states_and_floor(&[1 << 16, 5 << 16], 1 << 16).unwrap();
        let streams = batch.to_compact_bytes_list();
        assert_eq!(
            AnsBatch::from_compact_bytes_list_with_floor(&streams, 1 << 16).unwrap(),
            batch
        );
        assert!(AnsBatch::from_compact_bytes_list(&streams).is_err());
    }

    #[test]
    fn compact_flushes_a_state_of_eight_bytes() {
        // Uniform bits: every push of K = 2 doubles the state until it renormalizes at 2^62.
        let row = [0.0f32, 0.0];
        let mut coder = AnsCoder::new();
        let mut pushed = Vec::new();
        let mut flushed = 0;
        while flushed < 3 || coder.num_words() < 2 {
            let s = (pushed.len() % 3 == 0) as i64;
            coder.push(&[s], &row, 2).unwrap();
            pushed.push(s);
            if coder.state() >> 56 != 0 {
                flushed += 1;
                let bytes = check_compact(&coder);
                assert_eq!(bytes.len(), 8 + 4 * coder.num_words());
                let head = u32::from_be_bytes(bytes[..4].try_into().unwrap());
                assert_eq!(head as u64, coder.state() >> 32);
                assert!((1 << 24..1 << 31).contains(&head));
                let first = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
                assert_eq!(first, coder.state() as u32);
                let mut decoder = AnsCoder::from_compact_bytes(&bytes).unwrap();
                let mut popped = Vec::new();
                for _ in 0..pushed.len() {
                    popped.extend(decoder.pop(&row, 2).unwrap());
                }
                popped.reverse();
                assert_eq!(popped, pushed);
                assert!(decoder.is_empty());
            }
        }
        // Every byte length 4 + 4w + j, j in 0..4, occurs on the way.
        let mut coder = AnsCoder::new();
        let mut seen = [false; 4];
        for _ in 0..200 {
            coder.push(&[1], &row, 2).unwrap();
            seen[check_compact(&coder).len() % 4] = true;
        }
        assert_eq!(seen, [true; 4]);
    }

    #[test]
    fn malformed_compact_inputs_are_errors() {
        let bad: &[&[u8]] = &[
            &[],
            &[0x80],
            &[0x80, 0, 0],
            &[0, 0x80, 0, 0],                   // zero top byte
            &[0, 0, 0, 0],                      // zero state
            &[0, 1, 0, 0, 0],                   // k = 5, zero top byte
            &[0, 0, 0, 0, 0x80, 0, 0],          // k = 7, zero top byte
            &[0, 0, 0, 0, 0, 0, 0, 0],          // zero flushed value, non-canonical
            &[0, 0xff, 0xff, 0xff, 1, 2, 3, 4], // flushed state below 2^56, non-canonical
            &[0x7f, 0xff, 0xff, 0xff],          // a flushed value without its word
            &[0x01, 0, 0, 0],                   // the same, smallest top byte
        ];
        for bytes in bad {
            assert!(AnsCoder::from_compact_bytes(bytes).is_err(), "{bytes:?}");
        }
        let err = AnsBatch::from_compact_bytes_list(&[&[0x80, 0, 0, 0][..], &[0x80]]).unwrap_err();
        assert!(err.0.starts_with("stream 1:"), "{err}");
        // The smallest and largest states of each length are fine.
        let good: &[(&[u8], u64)] = &[
            (&[0x80, 0, 0, 0], STATE_LOW),
            (&[0xff, 0xff, 0xff, 0xff], u32::MAX as u64),
            (&[1, 0, 0, 0, 0], 1 << 32),
            (&[0xff; 7], (1 << 56) - 1),
            (&[1, 0, 0, 0, 0, 0, 0, 0], 1 << 56),
            (
                &[0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                STATE_HIGH - 1,
            ),
        ];
        for &(bytes, state) in good {
            let coder = AnsCoder::from_compact_bytes(bytes).unwrap();
            assert_eq!((coder.state(), coder.num_words()), (state, 0));
            assert_eq!(coder.to_compact_bytes(), bytes);
        }
    }

    #[test]
    fn batch_with_initial_states_matches_single_streams() {
        let mut rng = Lcg(13);
        let (b, n, k) = (6usize, 50usize, 300usize);
        let (symbols, logits) = data(&mut rng, b * n, k, 0);
        let starts: Vec<u64> = (0..b as u64)
            .map(|i| STATE_LOW + (i * 0x9e37_79b9) % (1 << 32))
            .chain([(1 << 56) + 3])
            .take(b)
            .collect();
        let mut batch = AnsBatch::with_initial_states(&starts).unwrap();
        assert_eq!(batch.states(), starts);
        batch.push(&symbols, &logits, n, k).unwrap();
        let streams = batch.to_compact_bytes_list();
        for i in 0..b {
            let mut single = AnsCoder::with_initial_state(starts[i]).unwrap();
            single
                .push(
                    &symbols[i * n..(i + 1) * n],
                    &logits[i * n * k..(i + 1) * n * k],
                    k,
                )
                .unwrap();
            assert_eq!(streams[i], single.to_compact_bytes());
            assert_eq!(batch.states()[i], single.state());
            assert_eq!(batch.num_words()[i], single.num_words());
        }
        let mut back = AnsBatch::from_compact_bytes_list(&streams).unwrap();
        assert_eq!(back, batch);
        assert_eq!(back.pop(&logits, n, k).unwrap(), symbols);
        assert_eq!(back.states(), starts);
        assert_eq!(back.num_words(), vec![0; b]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_compact_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            seed in any::<u64>(),
            k in 2usize..300,
            rows in 0usize..40,
        ) {
            let Ok(mut coder) = AnsCoder::from_compact_bytes(&bytes) else {
                return Ok(());
            };
            // Canonical: the only bytes that read as this coder.
            prop_assert_eq!(coder.to_compact_bytes(), bytes);
            let mut rng = Lcg(seed);
            let (_, logits) = data(&mut rng, rows, k, (seed % 4) as u8);
            let before = coder.clone();
            match coder.pop(&logits, k) {
                Ok(symbols) => prop_assert_eq!(symbols.len(), rows),
                Err(_) => prop_assert_eq!(coder, before),
            }
        }

        #[test]
        fn arbitrary_streams_pop_without_panicking(
            words in proptest::collection::vec(any::<u32>(), 0..8),
            state in any::<u64>(),
            seed in any::<u64>(),
            k in prop_oneof![Just(2usize), Just(16), Just(256), 2usize..1100],
            rows in 1usize..30,
        ) {
            let mut coder = AnsCoder {
                state: STATE_LOW + state % (STATE_HIGH - STATE_LOW),
                words,
                floor: STATE_LOW,
                quantizer: Quantizer::new(),
            };
            let mut rng = Lcg(seed);
            for _ in 0..4 {
                let style = (rng.next() % 4) as u8;
                let (_, logits) = data(&mut rng, rows, k, style);
                if coder.pop(&logits, k).is_err() {
                    break;
                }
                prop_assert!((STATE_LOW..STATE_HIGH).contains(&coder.state()));
            }
            let bytes = coder.to_compact_bytes();
            prop_assert_eq!(AnsCoder::from_compact_bytes(&bytes).unwrap(), coder);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        // Shapes whose product overflows usize are errors, never a wrapped length.
        #[test]
        fn batch_shapes_that_overflow_are_errors(
            streams in 1usize..300,
            n in prop_oneof![
                Just(usize::MAX),
                Just(1usize << 40),
                Just(usize::MAX / 2 + 1),
                0usize..8,
            ],
            k in prop_oneof![Just(2usize), Just(256), Just(MAX_SYMBOLS)],
        ) {
            let mut batch = AnsBatch::try_new(streams).unwrap();
            let popped = batch.pop(&[], n, k);
            let pushed = batch.push(&[], &[], n, k);
            if n == 0 {
                prop_assert_eq!(popped.unwrap().len(), 0);
                prop_assert!(pushed.is_ok());
            } else {
                prop_assert!(popped.is_err());
                prop_assert!(pushed.is_err());
            }
            prop_assert_eq!(batch, AnsBatch::try_new(streams).unwrap());
        }

        #[test]
        fn stream_counts_are_bounded(extra in 1usize..=usize::MAX - MAX_STREAMS) {
            let count = MAX_STREAMS + extra;
            prop_assert!(AnsBatch::try_new(count).unwrap_err().0.contains("2^24"));
            prop_assert!(check_num_streams(count).is_err());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn stack_round_trips(
            seed in any::<u64>(),
            k in 2usize..600,
            style in 0u8..4,
            sizes in proptest::collection::vec(0usize..60, 1..6),
            start in prop_oneof![Just(STATE_LOW), STATE_LOW..STATE_HIGH],
            compact in any::<bool>(),
        ) {
            let mut rng = Lcg(seed);
            let mut coder = AnsCoder::with_initial_state(start).unwrap();
            let mut pushed = Vec::new();
            for &n in &sizes {
                let (symbols, logits) = data(&mut rng, n, k, style);
                coder.push(&symbols, &logits, k).unwrap();
                pushed.push((symbols, logits));
            }
            let mut coder = if compact {
                AnsCoder::from_compact_bytes(&check_compact(&coder)).unwrap()
            } else {
                AnsCoder::from_bytes(&coder.to_bytes()).unwrap()
            };
            for (symbols, logits) in pushed.iter().rev() {
                prop_assert_eq!(&coder.pop(logits, k).unwrap(), symbols);
            }
            prop_assert_eq!((coder.state(), coder.num_words()), (start, 0));
            prop_assert_eq!(coder.is_empty(), start == STATE_LOW);
        }
    }
}
