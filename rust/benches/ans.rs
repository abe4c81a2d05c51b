//! Throughput of the rANS coder from float32 logits (quantization included), single stream and
//! a batch of 64 streams. `cargo bench --bench ans`.

use std::time::Duration;

use ardm_core::ans::{AnsBatch, AnsCoder};
use ardm_core::quantize::quantize_logits;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Deterministic pseudo-random logits in [-4, 4) and symbols drawn from their tables.
fn data(n: usize, k: usize, seed: u64) -> (Vec<i64>, Vec<f32>) {
    let mut s = seed;
    let mut next = move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 33
    };
    let logits: Vec<f32> = (0..n * k)
        .map(|_| (next() % (1 << 20)) as f32 / (1 << 17) as f32 - 4.0)
        .collect();
    let tables = quantize_logits(&logits, k).unwrap();
    let symbols = tables
        .chunks_exact(k)
        .map(|t| {
            let slot = (next() % (1 << 24)) as u32;
            let mut cum = 0;
            t.iter()
                .position(|&f| {
                    cum += f;
                    slot < cum
                })
                .unwrap() as i64
        })
        .collect();
    (symbols, logits)
}

fn single(c: &mut Criterion) {
    let mut group = c.benchmark_group("ans");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (k, n) in [
        (2usize, 100_000usize),
        (16, 100_000),
        (256, 2_000),
        (1000, 500),
        (65536, 100),
    ] {
        let (symbols, logits) = data(n, k, k as u64);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("encode", k), &k, |b, &k| {
            b.iter(|| {
                let mut coder = AnsCoder::new();
                coder.push(&symbols, &logits, k).unwrap();
                coder
            })
        });
        let mut coder = AnsCoder::new();
        coder.push(&symbols, &logits, k).unwrap();
        group.bench_with_input(BenchmarkId::new("decode", k), &k, |b, &k| {
            b.iter(|| coder.clone().pop(&logits, k).unwrap())
        });
    }
    group.finish();
}

fn batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("ans_batch64");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let (streams, n, k) = (64usize, 500usize, 256usize);
    let (symbols, logits) = data(streams * n, k, 5);
    group.throughput(Throughput::Elements((streams * n) as u64));
    group.bench_function(BenchmarkId::new("encode", k), |b| {
        b.iter(|| {
            let mut coders = AnsBatch::new(streams);
            coders.push(&symbols, &logits, n, k).unwrap();
            coders
        })
    });
    let mut coders = AnsBatch::new(streams);
    coders.push(&symbols, &logits, n, k).unwrap();
    group.bench_function(BenchmarkId::new("decode", k), |b| {
        b.iter(|| coders.clone().pop(&logits, n, k).unwrap())
    });
    group.finish();
}

criterion_group!(benches, single, batch);
criterion_main!(benches);
