//! Throughput of the portable evaluation's Rust parts: the elementwise functions, the grid, and
//! the fused layers (a product's scaling back, softmax with the grid of its probabilities,
//! layer normalization), at the sizes of one coding call of the shipped `kjv` transformer
//! (8 records of 256 bytes, width 256, 4 heads). `cargo bench --bench portable`.

use std::time::Duration;

use ardm_core::portable::{apply, grid_in_place, PortableFn};
use ardm_core::portable_layers::{normalize, rescale, softmax};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Deterministic pseudo-random values in [-scale, scale).
fn values(n: usize, scale: f64, seed: u64) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn configure<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    group
}

fn math(c: &mut Criterion) {
    let mut group = configure(c, "portable_math");
    let n = 1 << 16;
    let input = values(n, 6.0, 1);
    group.throughput(Throughput::Elements(n as u64));
    for func in PortableFn::ALL {
        group.bench_function(BenchmarkId::from_parameter(func.name()), |b| {
            let mut data = input.clone();
            b.iter(|| {
                data.copy_from_slice(&input);
                apply(func, &mut data);
            })
        });
    }
    group.finish();
}

fn layers(c: &mut Criterion) {
    let mut group = configure(c, "portable_layers");
    // One kjv coding call: 2048 tokens; scores of 8 x 4 heads x 256 x 256.
    let (tokens, width, hidden) = (2048usize, 256usize, 1024usize);
    let products = values(tokens * hidden, 2f64.powi(40), 2)
        .iter()
        .map(|v| v.round())
        .collect::<Vec<_>>();
    let row_scales = vec![2f64.powi(20); tokens];
    let col_scales = vec![2f64.powi(-3); hidden];
    let bias = values(hidden, 0.1, 3);
    group.throughput(Throughput::Elements(products.len() as u64));
    group.bench_function("rescale 2048x1024 +bias", |b| {
        let mut y = products.clone();
        b.iter(|| {
            y.copy_from_slice(&products);
            rescale(
                &mut y,
                1,
                tokens,
                hidden,
                &row_scales,
                &col_scales,
                None,
                Some(&bias),
            )
            .unwrap();
        })
    });
    let scores = values(32 * 256 * 256, 8.0, 4);
    let mut scales = vec![0.0; 32 * 256];
    group.throughput(Throughput::Elements(scores.len() as u64));
    group.bench_function("softmax+grid 8192x256", |b| {
        let mut x = scores.clone();
        b.iter(|| {
            x.copy_from_slice(&scores);
            softmax(&mut x, 256, 44, Some(22), &mut scales).unwrap();
        })
    });
    let activations = values(tokens * width, 3.0, 5);
    let (weight, norm_bias) = (values(width, 1.0, 6), values(width, 1.0, 7));
    group.throughput(Throughput::Elements(activations.len() as u64));
    group.bench_function("layer norm 2048x256", |b| {
        let mut x = activations.clone();
        b.iter(|| {
            x.copy_from_slice(&activations);
            normalize(&mut x, width, 1e-5, 44, Some(&weight), Some(&norm_bias)).unwrap();
        })
    });
    group.bench_function("grid 2048x256", |b| {
        let mut x = activations.clone();
        let mut grid_scales = vec![0.0; tokens];
        b.iter(|| {
            x.copy_from_slice(&activations);
            grid_in_place(&mut x, &mut grid_scales, tokens, width, 1, 22).unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, math, layers);
criterion_main!(benches);
