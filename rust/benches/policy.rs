//! The budget DP at the sizes the models use: D = 3072 (32x32x3 images), D = 16000 (two seconds
//! of 8 kHz audio) and 8 upscale stages of D = 8000, on sorted realistic step losses.
//! `cargo bench --bench policy` (about two minutes).

use std::time::Duration;

use ardm_core::lagrange::optimal_stage_policies;
use ardm_core::policy::{budget_curve, budget_curve_layers, optimal_policy_with, PolicyMethod};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};

/// A smooth decreasing per-step loss (high when little is known, low near the end) plus a
/// little deterministic noise, sorted descending as the models do before planning.
fn realistic_losses(num_steps: usize, seed: u64) -> Vec<f64> {
    let mut state = 0x2545_F491_4F6C_DD1Du64 ^ seed;
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

fn bench_curve(c: &mut Criterion) {
    let mut group = c.benchmark_group("budget_curve");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for num_steps in [3072usize, 16000] {
        let losses = realistic_losses(num_steps, 0);
        group.bench_with_input(BenchmarkId::from_parameter(num_steps), &losses, |b, l| {
            b.iter(|| budget_curve(black_box(l)).unwrap())
        });
    }
    group.finish();

    // The convex hull trick layers that budget_curve ran on sorted losses before the Knuth
    // ranges (and still runs, as the Li Chao tree, on unsorted ones). About 40 s.
    let mut group = c.benchmark_group("budget_curve_hull_layers");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    let losses = realistic_losses(16000, 0);
    group.bench_with_input(BenchmarkId::from_parameter(16000), &losses, |b, l| {
        b.iter(|| budget_curve_layers(black_box(l)).unwrap())
    });
    group.finish();
}

fn bench_one_policy(c: &mut Criterion) {
    // The price search (the default for sorted losses) at every budget size.
    let mut group = c.benchmark_group("optimal_policy_16000/price");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(1));
    let losses = realistic_losses(16000, 0);
    for budget in [20usize, 100, 1000, 8000] {
        group.bench_with_input(BenchmarkId::from_parameter(budget), &budget, |b, &k| {
            b.iter(|| optimal_policy_with(black_box(&losses), k, PolicyMethod::Price).unwrap())
        });
    }
    group.finish();

    // The layer DP it replaces (O(k D)), at small budgets only: budget 1000 takes seconds.
    let mut group = c.benchmark_group("optimal_policy_16000/layers");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(2));
    for budget in [20usize, 100] {
        group.bench_with_input(BenchmarkId::from_parameter(budget), &budget, |b, &k| {
            b.iter(|| optimal_policy_with(black_box(&losses), k, PolicyMethod::Layers).unwrap())
        });
    }
    group.finish();
}

fn bench_stages(c: &mut Criterion) {
    let mut group = c.benchmark_group("optimal_stage_policies_8x8000");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(2));
    // Coarse stages carry more loss than fine ones.
    let stages: Vec<Vec<f64>> = (0..8)
        .map(|s| {
            let scale = 0.5f64.powi(s);
            realistic_losses(8000, s as u64 + 1)
                .into_iter()
                .map(|l| l * scale)
                .collect()
        })
        .collect();
    let views: Vec<&[f64]> = stages.iter().map(Vec::as_slice).collect();
    for budget in [64usize, 800, 8000] {
        group.bench_with_input(BenchmarkId::from_parameter(budget), &budget, |b, &k| {
            b.iter(|| optimal_stage_policies(black_box(&views), k).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_curve, bench_one_policy, bench_stages);
criterion_main!(benches);
