//! Criterion benches of the graph kernels' CPU paths on a small generated spend graph
//! (200k nodes, 600k edges, 1000 seeds; `ferret_benches::graph`, seed 1):
//! - `cc_cpu`: `cc::cpu::connected_components` on the undirected edge list;
//! - `poison_cpu`: `propagate_cpu` with unit weights to the fixpoint (BFS levels; the CPU
//!   path walks the frontier, one visit per edge);
//! - `poison_jacobi_cpu`: the same through `propagate_jacobi_cpu` (a pass over every edge
//!   per step);
//! - `haircut5_cpu`: `propagate_cpu` with weights 1 / indegree, 5 hops (Jacobi steps).
//! - `chainrank_cpu` (and `chainrank_gpu` where `--device auto` finds a hardware GPU):
//!   `chainrank::rank_chains` over 1 M nodes in chains of 1–64 links over shuffled ids
//!   (the shape of peel chains; throughput in nodes).
//!
//! Throughput is in edges visited: edges × passes over the edges.
//! `cargo bench -p ferret-benches --bench kernels`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferret_benches::graph::{GraphParams, generate};
use ferret_kernels::device::{Backend, DeviceChoice, select};
use ferret_kernels::propagate::{Options, propagate_cpu, propagate_jacobi_cpu};
use ferret_kernels::{cc, chainrank};

fn kernels(c: &mut Criterion) {
    let g = generate(&GraphParams::new(200_000, 600_000, 1)).expect("generate the bench graph");
    let n = g.nodes;
    let m = g.src.len() as u64;
    let pairs = g.pairs();
    let poison = g.poison();
    let haircut = g.haircut();
    let poison_opts = Options {
        max_hops: None,
        min_value: 0.0,
    };
    let haircut_opts = Options {
        max_hops: Some(5),
        min_value: 0.0,
    };
    let poison_steps = propagate_jacobi_cpu(&poison, &poison_opts).steps;
    let haircut_steps = propagate_cpu(&haircut, &haircut_opts).steps;

    let mut grp = c.benchmark_group("kernels");
    grp.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));

    grp.throughput(Throughput::Elements(m));
    grp.bench_function("cc_cpu", |b| {
        b.iter(|| cc::cpu::connected_components(n, &pairs))
    });
    grp.bench_function("poison_cpu", |b| {
        b.iter(|| propagate_cpu(&poison, &poison_opts))
    });
    grp.throughput(Throughput::Elements(m * u64::from(poison_steps)));
    grp.bench_function("poison_jacobi_cpu", |b| {
        b.iter(|| propagate_jacobi_cpu(&poison, &poison_opts))
    });
    grp.throughput(Throughput::Elements(m * u64::from(haircut_steps)));
    grp.bench_function("haircut5_cpu", |b| {
        b.iter(|| propagate_cpu(&haircut, &haircut_opts))
    });

    // Chain ranking: 1 M nodes in chains of 1..=64, ids shuffled.
    let pred = {
        use rand::seq::SliceRandom;
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let n = 1_000_000usize;
        let mut ids: Vec<u32> = (0..n as u32).collect();
        ids.shuffle(&mut rng);
        let mut pred = vec![chainrank::NONE; n];
        let mut at = 0;
        while at < n {
            let len = rng.random_range(1..=64).min(n - at);
            for k in 1..len {
                pred[ids[at + k] as usize] = ids[at + k - 1];
            }
            at += len;
        }
        pred
    };
    grp.throughput(Throughput::Elements(pred.len() as u64));
    grp.bench_function("chainrank_cpu", |b| {
        b.iter(|| chainrank::rank_chains(&Backend::Cpu, &pred).expect("ranks"))
    });
    if let Ok(gpu @ Backend::Gpu(_)) = select(DeviceChoice::Auto) {
        grp.bench_function("chainrank_gpu", |b| {
            b.iter(|| chainrank::rank_chains(&gpu, &pred).expect("ranks"))
        });
    }
    grp.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
