//! The budget DP at the sizes the models use: D = 3072 (32x32x3 images) and D = 16000 (two
//! seconds of 8 kHz audio), on sorted realistic step losses. `cargo bench --bench policy`.

use std::time::Duration;

use ardm_core::policy::{budget_curve, optimal_policy};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};

/// A smooth decreasing per-step loss (high when little is known, low near the end) plus a
/// little deterministic noise, sorted descending as the models do before planning.
fn realistic_losses(num_steps: usize) -> Vec<f64> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut losses: Vec<f64> = (0..num_steps)
        .map(|t| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 11) as f64 / (1u64 << 53) as f64;
            let known = t as f64 / num_steps as f64;
            0.3 + 4.5 * (1.0 - known).powi(2) + 0.02 * noise
        })
        .collect();
    losses.sort_by(|a, b| b.total_cmp(a));
    losses
}

fn bench_policy(c: &mut Criterion) {
    let mut group = c.benchmark_group("budget_curve");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for num_steps in [3072usize, 16000] {
        let losses = realistic_losses(num_steps);
        group.bench_with_input(BenchmarkId::from_parameter(num_steps), &losses, |b, l| {
            b.iter(|| budget_curve(black_box(l)).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("optimal_policy_3072");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(2));
    let losses = realistic_losses(3072);
    for budget in [50usize, 100] {
        group.bench_with_input(BenchmarkId::from_parameter(budget), &budget, |b, &k| {
            b.iter(|| optimal_policy(black_box(&losses), k).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_policy);
criterion_main!(benches);
