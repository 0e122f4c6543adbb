//! Runs `query/tests/slt/*.slt` through the same session factory as the CLI, over a
//! warehouse indexed from the real mainnet fixtures (heights 0..=255).
//! Run one file: `cargo test -p ferret-query --test sqllogictests -- history`.

use std::path::{Path, PathBuf};

use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use sqllogictest::{DBOutput, DefaultColumnType};

#[derive(Debug)]
struct SqlError(String);

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SqlError {}

struct Db {
    ctx: SessionContext,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let results = ferret_query::run_sql(&self.ctx, sql)
            .await
            .map_err(|e| SqlError(e.to_string()))?;
        let Some(last) = results.last() else {
            return Ok(DBOutput::StatementComplete(0));
        };
        if last.schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        let opts = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for b in &last.batches {
            let fmts: Vec<_> = b
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
                .collect::<Result<_, _>>()
                .map_err(|e| SqlError(e.to_string()))?;
            for i in 0..b.num_rows() {
                rows.push(
                    fmts.iter()
                        .map(|f| {
                            let s = f.value(i).to_string();
                            if s.is_empty() {
                                "(empty)".to_string()
                            } else {
                                s
                            }
                        })
                        .collect(),
                );
            }
        }
        let types = vec![DefaultColumnType::Any; last.schema.fields().len()];
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "ferret"
    }
}

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("FERRET_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    if dir.join("btc").is_dir() {
        return Some(dir);
    }
    let hint = format!(
        "fixtures not found at {}: set FERRET_FIXTURES",
        dir.display()
    );
    if std::env::var("FERRET_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("{hint}");
    }
    eprintln!("skipping sqllogictests: {hint}");
    None
}

fn records(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn mainnet_warehouse(fx: &Path, tmp: &Path) -> ferret_schemas::Warehouse {
    // Genesis (first record of the 0–4 file) followed by heights 1..=255.
    let zero_four = records(&fx.join("btc/mainnet-blocks-0-4.blk"));
    let len = u32::from_le_bytes(zero_four[4..8].try_into().expect("4 bytes")) as usize;
    let mut blk = zero_four[..8 + len].to_vec();
    blk.extend(records(&fx.join("btc/mainnet-blocks-1-255.blk")));
    let blocks = tmp.join("blocks");
    std::fs::create_dir_all(&blocks).expect("mkdir");
    std::fs::write(blocks.join("blk00000.dat"), blk).expect("write");
    let wh = ferret_schemas::Warehouse::open(tmp.join("wh").to_str().expect("utf8")).expect("open");
    let mut opts = ferret_indexer::btc::IndexOptions::new(&blocks);
    opts.commit_blocks = 100;
    ferret_indexer::btc::index_btc(&wh, &opts)
        .await
        .expect("index");
    // A stored clusters run, for the `clusters` table and cluster_of().
    let c = ferret_kernels::cluster::cluster_btc(
        &wh,
        &ferret_kernels::device::Backend::Cpu,
        &Default::default(),
    )
    .await
    .expect("cluster");
    ferret_kernels::cluster::write_btc_clusters(&wh, &c, serde_json::Value::Null)
        .await
        .expect("write clusters");
    wh
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let Some(fx) = fixtures() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (passed, failed) = rt.block_on(async {
        let wh = mainnet_warehouse(&fx, tmp.path()).await;
        let ctx = ferret_query::session(&wh).await.expect("session");
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("slt dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "slt"))
            .filter(|p| {
                filter.is_empty()
                    || filter
                        .iter()
                        .any(|f| p.to_string_lossy().contains(f.as_str()))
            })
            .collect();
        files.sort();
        let (mut passed, mut failed) = (0, 0);
        for f in files {
            let ctx = ctx.clone();
            let mut runner = sqllogictest::Runner::new(move || {
                let ctx = ctx.clone();
                async move { Ok::<_, SqlError>(Db { ctx }) }
            });
            match runner.run_file_async(&f).await {
                Ok(()) => {
                    println!("ok   {}", f.display());
                    passed += 1;
                }
                Err(e) => {
                    println!("FAIL {}\n{e}", f.display());
                    failed += 1;
                }
            }
        }
        (passed, failed)
    });
    println!("{passed} passed, {failed} failed");
    if failed > 0 || passed == 0 {
        std::process::exit(1);
    }
}
