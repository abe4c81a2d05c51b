//! A bounded fuzz target for the rANS decoder (`ardm_core::ans`): arbitrary bytes, and valid
//! streams with bit flips, cuts and appended junk, are read with `from_bytes` /
//! `from_compact_bytes` (one stream or a batch) and then popped with random rows of logits or
//! probabilities, NaN and infinity included. Nothing may panic, a failed pop changes nothing,
//! and no step may allocate more than a small multiple of its input: nothing in a stream is a
//! count that the reader trusts.
//!
//! A counting global allocator measures the peak bytes live during each step. Every test here
//! holds one lock for its whole run, so the counts are not disturbed by other tests.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use ardm_core::ans::{AnsBatch, AnsCoder, STATE_LOW};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

static LOCK: Mutex<()> = Mutex::new(());

/// Serializes the tests of this file (a failed one must not poison the others).
fn exclusive() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `f()` and the most bytes it had live at once beyond those live before it.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// Slack for the rayon pool's own bookkeeping and the quantizer's scratch of one row.
const SLACK: usize = 64 << 10;

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 16
    }

    fn unit(&mut self) -> f32 {
        (self.next() % (1 << 24)) as f32 / (1 << 24) as f32
    }
}

/// `rows` rows of `k` floats in one of several styles: ordinary logits, a peak, huge values of
/// both signs, all equal, non-negative (probabilities), or arbitrary bits (NaN and infinity).
fn rows_of(rng: &mut Rng, rows: usize, k: usize, style: u8) -> Vec<f32> {
    (0..rows * k)
        .map(|i| match style % 6 {
            0 => rng.unit() * 16.0 - 8.0,
            1 => rng.unit() + if i % k == 3 % k { 60.0 } else { 0.0 },
            2 => (rng.unit() - 0.5) * 2.0 * f32::MAX,
            3 => 1.5,
            4 => rng.unit() * rng.unit(),
            _ => f32::from_bits(rng.next() as u32),
        })
        .collect()
}

/// A stream that decodes cleanly (random symbols pushed under random logits), as written by
/// `to_bytes` or `to_compact_bytes`, then damaged by `damage`.
fn damaged_stream(seed: u64, compact: bool, damage: u8) -> Vec<u8> {
    let mut rng = Rng(seed);
    let k = 2 + (rng.next() % 300) as usize;
    let n = (rng.next() % 200) as usize;
    let logits = rows_of(&mut rng, n, k, (seed % 2) as u8);
    let symbols: Vec<i64> = (0..n).map(|_| (rng.next() % k as u64) as i64).collect();
    let start = STATE_LOW + rng.next() % (1 << 40);
    let mut coder = AnsCoder::with_initial_state(start).unwrap();
    coder.push(&symbols, &logits, k).unwrap();
    let mut bytes = if compact {
        coder.to_compact_bytes()
    } else {
        coder.to_bytes()
    };
    let len = bytes.len();
    match damage % 5 {
        0 => {}
        1 => {
            let bit = (rng.next() as usize) % (8 * len);
            bytes[bit / 8] ^= 1 << (bit % 8);
        }
        2 => bytes.truncate((rng.next() as usize) % (len + 1)),
        3 => bytes
            .drain(..(rng.next() as usize) % (len + 1))
            .for_each(drop),
        _ => bytes.extend((0..rng.next() % 64).map(|_| rng.next() as u8)),
    }
    bytes
}

/// Bytes to read: arbitrary (short or long) or a damaged valid stream.
fn any_stream() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..4096),
        (any::<u64>(), any::<bool>(), any::<u8>())
            .prop_map(|(seed, compact, damage)| damaged_stream(seed, compact, damage)),
    ]
}

fn any_k() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(2usize),
        Just(3),
        Just(8),
        Just(16),
        Just(256),
        2usize..1100
    ]
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Pops `pops` times from `coder` and checks the contract of each pop.
fn pop_and_check(
    coder: &mut AnsCoder,
    rng: &mut Rng,
    pops: &[(usize, usize, u8)],
) -> Result<(), TestCaseError> {
    for &(rows, k, style) in pops {
        let floats = rows_of(rng, rows, k, style);
        let before = coder.clone();
        let probs = style % 6 == 4;
        let (result, peak) = peak_during(|| {
            if probs {
                coder.pop_probs(&floats, k)
            } else {
                coder.pop(&floats, k)
            }
        });
        let input = 4 * floats.len() + 4 * coder.num_words();
        prop_assert!(peak <= 2 * input + SLACK, "pop: {peak} bytes for {input}");
        match result {
            Ok(symbols) => {
                prop_assert_eq!(symbols.len(), rows);
                prop_assert!(symbols.iter().all(|&s| (0..k as i64).contains(&s)));
                prop_assert!((STATE_LOW..1 << 63).contains(&coder.state()));
                prop_assert!(coder.num_words() <= before.num_words());
            }
            Err(_) => prop_assert_eq!(&*coder, &before),
        }
    }
    Ok(())
}

#[test]
fn one_stream_of_arbitrary_bytes() {
    let _guard = exclusive();
    let pops = proptest::collection::vec((0usize..40, any_k(), any::<u8>()), 1..5);
    let strategy = (any_stream(), any::<bool>(), any::<u64>(), pops);
    TestRunner::new(config(768))
        .run(&strategy, |(bytes, compact, seed, pops)| {
            let (coder, peak) = peak_during(|| {
                if compact {
                    AnsCoder::from_compact_bytes(&bytes)
                } else {
                    AnsCoder::from_bytes(&bytes)
                }
            });
            prop_assert!(
                peak <= 2 * bytes.len() + 256,
                "read: {peak} bytes for {}",
                bytes.len()
            );
            let Ok(mut coder) = coder else {
                return Ok(());
            };
            if compact {
                // Canonical: the only bytes that read as this coder.
                prop_assert_eq!(&coder.to_compact_bytes(), &bytes);
            } else {
                prop_assert_eq!(&coder.to_bytes(), &bytes);
            }
            pop_and_check(&mut coder, &mut Rng(seed), &pops)?;
            let again = AnsCoder::from_compact_bytes(&coder.to_compact_bytes());
            prop_assert!(again.is_ok_and(|again| again == coder));
            Ok(())
        })
        .unwrap();
}

#[test]
fn batches_of_arbitrary_bytes() {
    let _guard = exclusive();
    // Start the rayon pool outside the measurements.
    AnsBatch::new(2).pop(&[0.0; 4], 1, 2).ok();
    let streams = proptest::collection::vec(any_stream(), 0..6);
    let strategy = (
        streams,
        any::<bool>(),
        any::<u64>(),
        0usize..20,
        any_k(),
        any::<u8>(),
    );
    TestRunner::new(config(192))
        .run(&strategy, |(streams, compact, seed, n, k, style)| {
            let (batch, peak) = peak_during(|| {
                if compact {
                    AnsBatch::from_compact_bytes_list(&streams)
                } else {
                    AnsBatch::from_bytes_list(&streams)
                }
            });
            let total: usize = streams.iter().map(Vec::len).sum();
            let per_stream = std::mem::size_of::<AnsCoder>();
            let bound = 2 * total + per_stream * streams.len() + SLACK;
            prop_assert!(peak <= bound, "read: {peak} bytes for {total}");
            let Ok(mut batch) = batch else {
                return Ok(());
            };
            let floats = rows_of(&mut Rng(seed), batch.len() * n, k, style);
            let before = batch.clone();
            let (result, peak) = peak_during(|| batch.pop(&floats, n, k));
            let input = 4 * floats.len() + 4 * total;
            prop_assert!(peak <= 2 * input + SLACK, "pop: {peak} bytes for {input}");
            match result {
                Ok(symbols) => {
                    prop_assert_eq!(symbols.len(), batch.len() * n);
                    prop_assert!(symbols.iter().all(|&s| (0..k as i64).contains(&s)));
                }
                Err(_) => prop_assert_eq!(&batch, &before),
            }
            // A shape that does not match is an error, never a panic, however large.
            prop_assert!(batch.pop(&floats, usize::MAX, k).is_err() || floats.is_empty());
            Ok(())
        })
        .unwrap();
}

#[test]
fn absurd_shapes_are_errors_without_allocating() {
    let _guard = exclusive();
    let mut batch = AnsBatch::try_new(1 << 16).unwrap();
    // 2^16 streams x 2^40 rows x 256 symbols overflows usize: it cannot describe 0 values.
    let (result, peak) = peak_during(|| batch.pop(&[], 1 << 40, 256));
    assert!(result.is_err());
    let (result, peak_push) = peak_during(|| batch.push(&[], &[], usize::MAX, 2));
    assert!(result.is_err());
    assert!(peak.max(peak_push) < 4096, "{peak} {peak_push}");
    let (result, peak) = peak_during(|| AnsBatch::try_new(usize::MAX));
    assert!(result.is_err());
    assert!(peak < 4096, "{peak}");
}
