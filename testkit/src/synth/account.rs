//! Account-model chains written straight into a warehouse's `eth.transfers` (no node):
//! what the out-of-core account kernels are tested and measured on. The shapes of
//! scam money on Ethereum: exchange hot wallets many pay into and that pay out to many,
//! scam addresses collecting from victims and peeling to fresh addresses, self-transfers,
//! zero values, a token beside ETH, and optionally values near 2^255 (so amounts must be
//! scaled into f32's range).

use std::sync::Arc;

use arrow::array::{Array, Int32Array, Int64Array, RecordBatch, StringArray};
use ferret_indexer::sink::TableWriter;
use ferret_schemas::manifest::Manifest;
use ferret_schemas::{Chain, Warehouse};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The token contract of the generated chains.
pub const TOKEN: &str = "0x00000000000000000000000000000000000000aa";

/// The address of account `i`: spread over the hash space, with look-alike prefixes.
pub fn addr(i: usize) -> String {
    format!("0x{:02x}{:038x}", (i * 37) % 256, i * 0x1_0001 + 7)
}

fn tx_hash(block: i64, txi: i32) -> String {
    format!("0x{:032x}{:032x}", block, txi)
}

/// One generated transfer.
#[derive(Clone)]
pub struct T {
    pub block: i64,
    pub txi: i32,
    pub ord: i32,
    pub asset: String,
    pub from: String,
    pub to: String,
    pub value: String,
}

/// Transfers of `blocks` blocks (`seed` fixes them) and labels (address, label,
/// category): exchanges (`exchange`), scams (`scam`). Hubs (exchanges) that many pay
/// into and that pay out to many, scam addresses collecting from victims and peeling to
/// fresh addresses, self-transfers, zero values, token transfers beside ETH, and (with
/// `huge`) values near 2^256 so the poison amounts are scaled. Beside them, exchange
/// deposit addresses (accounts 400 to 549): one to three customers pay one in, and it
/// sweeps into a hub one to four blocks later; some are paid by ten payers (collection,
/// not a customer), some also pay someone else, some are reused by later customers.
pub fn chain(seed: u64, blocks: i64, huge: bool) -> (Vec<T>, Vec<(String, String, String)>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = 400usize;
    let hubs: Vec<usize> = (0..6).collect();
    let scams: Vec<usize> = (6..10).collect();
    let mut out = Vec::new();
    let mut fresh = 10usize;
    let mut pending: Vec<(i64, usize)> = Vec::new();
    let mut deposits = 0usize;
    for block in 1..=blocks {
        let txs = rng.random_range(1..6);
        let wei = |rng: &mut ChaCha8Rng| {
            (rng.random_range(1u128..10_000) * 100_000_000_000_000).to_string()
        };
        let mut extra: Vec<(usize, usize, String)> = Vec::new();
        if rng.random_range(0..3) == 0 {
            let d = 400 + deposits % 150;
            deposits += 1;
            let payers = if rng.random_range(0..10) == 0 {
                10
            } else {
                rng.random_range(1..4)
            };
            for _ in 0..payers {
                extra.push((rng.random_range(10..n), d, wei(&mut rng)));
            }
            pending.push((block + rng.random_range(1..5), d));
        }
        let due: Vec<usize> = pending
            .iter()
            .filter(|p| p.0 == block)
            .map(|p| p.1)
            .collect();
        pending.retain(|p| p.0 != block);
        for d in due {
            extra.push((d, hubs[rng.random_range(0..hubs.len())], wei(&mut rng)));
            if rng.random_range(0..10) == 0 {
                extra.push((d, rng.random_range(10..n), wei(&mut rng)));
            }
        }
        for (i, (from, to, value)) in extra.into_iter().enumerate() {
            out.push(T {
                block,
                txi: 100 + i as i32,
                ord: 0,
                asset: "ETH".to_string(),
                from: addr(from),
                to: addr(to),
                value,
            });
        }
        for txi in 0..txs {
            let k = rng.random_range(1..4);
            for ord in 0..k {
                let pick = |rng: &mut ChaCha8Rng| -> usize {
                    match rng.random_range(0..10) {
                        0..=2 => hubs[rng.random_range(0..hubs.len())],
                        3 => scams[rng.random_range(0..scams.len())],
                        _ => rng.random_range(10..n),
                    }
                };
                let from = pick(&mut rng);
                let to = match rng.random_range(0..20) {
                    0 => from,
                    1 => {
                        // A peel to a fresh address.
                        fresh = (fresh + 1) % n;
                        fresh.max(10)
                    }
                    _ => pick(&mut rng),
                };
                let value: u128 = match rng.random_range(0..10) {
                    0 => 0,
                    1..=3 => rng.random_range(1..1_000),
                    4..=7 => rng.random_range(1..5_000_000) * 1_000_000_000_000,
                    _ => rng.random_range(1u128..u128::MAX / 4),
                };
                let value = if huge && rng.random_range(0..50) == 0 {
                    // About 2^255.
                    "57896044618658097711785492504343953926634992332820282019728792003956564819968"
                        .to_string()
                } else {
                    value.to_string()
                };
                let asset = if rng.random_range(0..4) == 0 {
                    TOKEN.to_string()
                } else {
                    "ETH".to_string()
                };
                out.push(T {
                    block,
                    txi,
                    ord,
                    asset,
                    from: addr(from),
                    to: addr(to),
                    value,
                });
            }
        }
    }
    let mut labels = Vec::new();
    for &h in &hubs {
        labels.push((addr(h), format!("Exchange {h}"), "exchange".to_string()));
    }
    for &s in &scams[..2] {
        labels.push((addr(s), format!("Scam {s}"), "scam".to_string()));
    }
    // A second label for one hub: the first one (in table order) names the exit.
    labels.push((addr(0), "Exchange 0 hot".into(), "exchange".into()));
    (out, labels)
}

/// Opens the warehouse at `url` and commits `rows` as `eth.transfers`, one file per
/// `per_file` blocks (each file's rows in reverse order: readers must sort them), and
/// `labels` as the `labels` table.
pub async fn warehouse(
    url: &str,
    rows: &[T],
    labels: &[(String, String, String)],
    per_file: i64,
) -> Warehouse {
    let wh = Warehouse::open(url).expect("open");
    let table = ferret_schemas::table(Chain::Eth, "transfers").expect("table");
    let lease = wh.writer_lease(Chain::Eth).await.expect("lease");
    let mut manifest = Manifest::empty("eth", "anvil");
    let last = rows.iter().map(|r| r.block).max().unwrap_or(0);
    let mut lo = 1;
    while lo <= last {
        let hi = (lo + per_file - 1).min(last);
        let part: Vec<&T> = rows
            .iter()
            .filter(|r| r.block >= lo && r.block <= hi)
            .collect();
        // Rows of a file in a shuffled order: the readers sort them.
        let mut part = part;
        part.reverse();
        let path =
            ferret_schemas::layout::data_file(wh.root(), table, lo as u64, hi as u64, "t", 1);
        let mut w = TableWriter::create_at(&wh, table, path, lo as u64, hi as u64).expect("writer");
        let s = |f: &dyn Fn(&T) -> String| {
            Arc::new(StringArray::from(
                part.iter().map(|r| f(r)).collect::<Vec<_>>(),
            )) as Arc<dyn Array>
        };
        let batch = RecordBatch::try_new(
            table.schema(),
            vec![
                Arc::new(Int64Array::from(
                    part.iter().map(|r| r.block).collect::<Vec<_>>(),
                )),
                Arc::new(Int32Array::from(
                    part.iter().map(|r| r.txi).collect::<Vec<_>>(),
                )),
                Arc::new(Int32Array::from(
                    part.iter().map(|r| r.ord).collect::<Vec<_>>(),
                )),
                s(&|r| tx_hash(r.block, r.txi)),
                s(&|r| {
                    if r.asset == "ETH" {
                        "transaction".into()
                    } else {
                        "token".into()
                    }
                }),
                s(&|r| r.asset.clone()),
                s(&|r| r.from.clone()),
                s(&|r| r.to.clone()),
                Arc::new(arrow::array::new_null_array(
                    table.schema().field(8).data_type(),
                    part.len(),
                )),
                s(&|r| r.value.clone()),
            ],
        )
        .expect("batch");
        w.write(&batch).await.expect("write");
        manifest.files.push(w.close(&wh).await.expect("close"));
        lo = hi + 1;
    }
    manifest.tip = Some(ferret_schemas::manifest::Checkpoint {
        height: last as u64,
        hash: format!("0x{:064x}", last),
    });
    wh.commit_manifest(Chain::Eth, &mut manifest, &lease)
        .await
        .expect("commit");
    let schema = ferret_schemas::results::labels_schema();
    let col = |f: &dyn Fn(&(String, String, String)) -> String| {
        Arc::new(StringArray::from(
            labels.iter().map(|l| f(l)).collect::<Vec<_>>(),
        )) as Arc<dyn Array>
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            col(&|_| "eth".into()),
            col(&|l| l.0.clone()),
            col(&|l| l.1.clone()),
            col(&|l| l.2.clone()),
            col(&|_| "test".into()),
            Arc::new(StringArray::from(vec![None::<String>; labels.len()])),
        ],
    )
    .expect("labels batch");
    wh.write_run("labels", schema, &[batch], None)
        .await
        .expect("labels");
    wh
}
