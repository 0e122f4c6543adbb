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

/// The size of a generated account chain.
#[derive(Clone, Debug)]
pub struct AccountConfig {
    pub seed: u64,
    pub blocks: i64,
    /// Values near 2^255 now and then.
    pub huge: bool,
    /// Plain accounts (ids 10 to `accounts − 1`; 0–5 are exchange hubs, 6–9 scams).
    pub accounts: usize,
    /// Exchange deposit addresses (ids `accounts` to `accounts + deposits − 1`).
    pub deposits: usize,
}

impl AccountConfig {
    /// The test chains' size: 400 accounts, 150 deposit addresses.
    pub fn small(seed: u64, blocks: i64, huge: bool) -> Self {
        Self {
            seed,
            blocks,
            huge,
            accounts: 400,
            deposits: 150,
        }
    }
}

/// Generates an account chain a block at a time (see [`chain`] for its shapes).
pub struct AccountChain {
    cfg: AccountConfig,
    rng: ChaCha8Rng,
    fresh: usize,
    pending: Vec<(i64, usize)>,
    deposits: usize,
    block: i64,
}

const HUBS: [usize; 6] = [0, 1, 2, 3, 4, 5];
const SCAMS: [usize; 4] = [6, 7, 8, 9];

impl AccountChain {
    pub fn new(cfg: AccountConfig) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            fresh: 10,
            pending: Vec::new(),
            deposits: 0,
            block: 0,
        }
    }

    /// The labels (address, label, category): the hubs `exchange` (hub 0 twice: the
    /// first label in table order names the exit), two scams `scam`.
    pub fn labels(&self) -> Vec<(String, String, String)> {
        let mut labels = Vec::new();
        for h in HUBS {
            labels.push((addr(h), format!("Exchange {h}"), "exchange".to_string()));
        }
        for s in &SCAMS[..2] {
            labels.push((addr(*s), format!("Scam {s}"), "scam".to_string()));
        }
        labels.push((addr(0), "Exchange 0 hot".into(), "exchange".into()));
        labels
    }

    /// The transfers of the next block, or None after the last.
    pub fn next_block(&mut self) -> Option<Vec<T>> {
        if self.block >= self.cfg.blocks {
            return None;
        }
        self.block += 1;
        let block = self.block;
        let n = self.cfg.accounts;
        let rng = &mut self.rng;
        let mut out = Vec::new();
        let txs = rng.random_range(1..6);
        let wei = |rng: &mut ChaCha8Rng| {
            (rng.random_range(1u128..10_000) * 100_000_000_000_000).to_string()
        };
        let mut extra: Vec<(usize, usize, String)> = Vec::new();
        if self.cfg.deposits > 0 && rng.random_range(0..3) == 0 {
            let d = n + self.deposits % self.cfg.deposits;
            self.deposits += 1;
            let payers = if rng.random_range(0..10) == 0 {
                10
            } else {
                rng.random_range(1..4)
            };
            for _ in 0..payers {
                extra.push((rng.random_range(10..n), d, wei(rng)));
            }
            self.pending.push((block + rng.random_range(1..5), d));
        }
        let due: Vec<usize> = self
            .pending
            .iter()
            .filter(|p| p.0 == block)
            .map(|p| p.1)
            .collect();
        self.pending.retain(|p| p.0 != block);
        for d in due {
            extra.push((d, HUBS[rng.random_range(0..HUBS.len())], wei(rng)));
            if rng.random_range(0..10) == 0 {
                extra.push((d, rng.random_range(10..n), wei(rng)));
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
                        0..=2 => HUBS[rng.random_range(0..HUBS.len())],
                        3 => SCAMS[rng.random_range(0..SCAMS.len())],
                        _ => rng.random_range(10..n),
                    }
                };
                let from = pick(rng);
                let to = match rng.random_range(0..20) {
                    0 => from,
                    1 => {
                        // A peel to a fresh address.
                        self.fresh = (self.fresh + 1) % n;
                        self.fresh.max(10)
                    }
                    _ => pick(rng),
                };
                let value: u128 = match rng.random_range(0..10) {
                    0 => 0,
                    1..=3 => rng.random_range(1..1_000),
                    4..=7 => rng.random_range(1..5_000_000) * 1_000_000_000_000,
                    _ => rng.random_range(1u128..u128::MAX / 4),
                };
                let value = if self.cfg.huge && rng.random_range(0..50) == 0 {
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
        Some(out)
    }
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
    let mut g = AccountChain::new(AccountConfig::small(seed, blocks, huge));
    let mut out = Vec::new();
    while let Some(b) = g.next_block() {
        out.extend(b);
    }
    (out, g.labels())
}

/// The last block of the file starting at `lo`: `per_file` blocks, within one
/// `height_range` partition of the layout.
fn file_end(lo: i64, per_file: i64) -> i64 {
    let span = ferret_schemas::layout::PARTITION_SPAN as i64;
    (lo + per_file - 1).min(lo / span * span + span - 1)
}

/// Writes one `eth.transfers` file of blocks `lo..=hi` (its rows reversed: readers must
/// sort them).
async fn write_file(wh: &Warehouse, part: &[T], lo: i64, hi: i64) -> ferret_schemas::FileEntry {
    let table = ferret_schemas::table(Chain::Eth, "transfers").expect("table");
    let part: Vec<&T> = part.iter().rev().collect();
    let path = ferret_schemas::layout::data_file(wh.root(), table, lo as u64, hi as u64, "t", 1);
    let mut w = TableWriter::create_at(wh, table, path, lo as u64, hi as u64).expect("writer");
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
    w.close(wh).await.expect("close")
}

/// Commits `files` as the chain's manifest with tip `last`, and `labels`.
async fn commit(
    wh: &Warehouse,
    files: Vec<ferret_schemas::FileEntry>,
    last: i64,
    labels: &[(String, String, String)],
) {
    let lease = wh.writer_lease(Chain::Eth).await.expect("lease");
    let mut manifest = Manifest::empty("eth", "anvil");
    manifest.files = files;
    manifest.tip = Some(ferret_schemas::manifest::Checkpoint {
        height: last as u64,
        hash: format!("0x{:064x}", last),
    });
    wh.commit_manifest(Chain::Eth, &mut manifest, &lease)
        .await
        .expect("commit");
    let schema = ferret_schemas::results::labels_schema();
    let col = |f: &dyn Fn(&(String, String, String)) -> String| {
        Arc::new(StringArray::from(labels.iter().map(f).collect::<Vec<_>>())) as Arc<dyn Array>
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
    let last = rows.iter().map(|r| r.block).max().unwrap_or(0);
    let mut files = Vec::new();
    let mut lo = 1;
    while lo <= last {
        let hi = file_end(lo, per_file).min(last);
        let part: Vec<T> = rows
            .iter()
            .filter(|r| r.block >= lo && r.block <= hi)
            .cloned()
            .collect();
        files.push(write_file(&wh, &part, lo, hi).await);
        lo = hi + 1;
    }
    commit(&wh, files, last, labels).await;
    wh
}

/// Generates the chain `cfg` describes straight into the warehouse at `url`, a file of
/// `per_file` blocks at a time (memory: one file's rows); returns the transfers written.
pub async fn write_chain(url: &str, cfg: &AccountConfig, per_file: i64) -> u64 {
    let wh = Warehouse::open(url).expect("open");
    let mut g = AccountChain::new(cfg.clone());
    let mut files = Vec::new();
    let mut rows = 0u64;
    let mut lo = 1;
    while lo <= cfg.blocks {
        let hi = file_end(lo, per_file).min(cfg.blocks);
        let mut part = Vec::new();
        for _ in lo..=hi {
            part.extend(g.next_block().expect("a block"));
        }
        rows += part.len() as u64;
        files.push(write_file(&wh, &part, lo, hi).await);
        lo = hi + 1;
    }
    commit(&wh, files, cfg.blocks, &g.labels()).await;
    rows
}
