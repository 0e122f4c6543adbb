//! Criterion benches of Bitcoin ingest on a small generated chain (200 blocks × 200
//! transactions, generated once into a temporary directory):
//! - `decode`: every blk record decoded into a `bitcoin::Block` (one thread);
//! - `decode_txid`: the same plus every txid;
//! - `index_btc_memory`: `ferret_indexer::btc::index_btc` into a fresh `memory://` warehouse.
//!
//! Throughput is in bytes of blk records. `cargo bench -p ferret-benches --bench ingest`.

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ferret_benches::{DecodeStats, decode_all};
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_schemas::Warehouse;
use ferret_testkit::synth::btc::{SynthConfig, generate};
use futures::TryStreamExt;
use object_store::ObjectStoreExt as _;

fn ingest(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg = SynthConfig {
        blocks: 200,
        txs_per_block: 200,
        ..SynthConfig::default()
    };
    generate(&cfg, tmp.path()).expect("generate the bench chain");
    let blocks = tmp.path().join("blocks");
    let all: DecodeStats = decode_all(&blocks, false).expect("decode");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // Bytes of the best chain, as index_btc reads them.
    let probe = Warehouse::open("memory://ferret-bench-probe").expect("warehouse");
    let summary = rt
        .block_on(index_btc(&probe, &IndexOptions::new(&blocks)))
        .expect("index_btc");
    let chain_bytes = summary.bytes_read;

    let mut g = c.benchmark_group("ingest");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    g.throughput(Throughput::Bytes(all.record_bytes));
    g.bench_function("decode", |b| {
        b.iter(|| decode_all(&blocks, false).expect("decode"))
    });
    g.bench_function("decode_txid", |b| {
        b.iter(|| decode_all(&blocks, true).expect("decode"))
    });

    g.throughput(Throughput::Bytes(chain_bytes));
    // One index run takes ~0.6 s here: 10 samples need more than 5 s.
    g.measurement_time(Duration::from_secs(8));
    let mut run = 0u64;
    g.bench_function("index_btc_memory", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                run += 1;
                let wh =
                    Warehouse::open(&format!("memory://ferret-bench-{run}")).expect("warehouse");
                let opts = IndexOptions::new(&blocks);
                let t = Instant::now();
                let s = rt.block_on(index_btc(&wh, &opts)).expect("index_btc");
                elapsed += t.elapsed();
                assert_eq!(s.bytes_read, chain_bytes);
                // Free the in-memory objects outside the timed part.
                rt.block_on(async {
                    let paths: Vec<_> = wh
                        .store()
                        .list(None)
                        .map_ok(|m| m.location)
                        .try_collect()
                        .await
                        .expect("list");
                    for p in paths {
                        wh.store().delete(&p).await.expect("delete");
                    }
                });
            }
            elapsed
        });
    });
    g.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
