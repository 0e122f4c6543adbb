//! `ferret`: the command line. Thin: parses arguments and calls the crates.

mod demo;

// Ingest allocates and frees large column buffers all the time; glibc's malloc returns
// them to the kernel and faults them back in (measured: a third of ingest time in the
// kernel). mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_query::output::Format;
use ferret_schemas::Warehouse;

#[derive(Parser)]
#[command(
    name = "ferret",
    version,
    about = "Follow scam money on public blockchains"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Index a chain into the warehouse.
    #[command(subcommand)]
    Index(IndexCmd),
    /// Generate a synthetic chain with planted scam flows.
    #[command(subcommand)]
    Synth(SynthCmd),
    /// Cluster addresses by common-input ownership (results table `clusters`).
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Run SQL over the warehouse.
    Sql(SqlArgs),
    /// Generate a chain, index it, and show what SQL finds.
    Demo(demo::DemoArgs),
}

#[derive(Subcommand)]
enum IndexCmd {
    /// Bitcoin Core's blocks directory (blk*.dat, xor.dat).
    Btc(IndexBtcArgs),
}

#[derive(Args)]
struct IndexBtcArgs {
    /// Bitcoin Core's blocks directory (e.g. ~/.bitcoin/blocks).
    #[arg(long)]
    blocks_dir: PathBuf,
    /// Warehouse URL: a path, file://, s3://, gs://, az:// or memory://.
    #[arg(long, default_value = "./warehouse", env = "FERRET_WAREHOUSE")]
    warehouse: String,
    /// Stop after this height.
    #[arg(long)]
    to_height: Option<u64>,
    /// Memory for the spent-output store before it spills to disk, in MiB.
    #[arg(long, default_value_t = 1024)]
    utxo_mem_mb: usize,
    /// Network (bitcoin, testnet, testnet4, signet, regtest) when the magic cannot tell.
    #[arg(long)]
    network: Option<String>,
    /// Commit at least every this many blocks.
    #[arg(long, default_value_t = 10_000)]
    commit_blocks: u64,
    /// Commit at least every this many MiB of block data.
    #[arg(long, default_value_t = 512)]
    commit_mb: u64,
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Bitcoin: all input addresses of a transaction are one entity, CoinJoins excepted.
    Btc(ClusterBtcArgs),
}

#[derive(Args)]
struct ClusterBtcArgs {
    /// Warehouse URL.
    #[arg(long, default_value = "./warehouse", env = "FERRET_WAREHOUSE")]
    warehouse: String,
    /// Where the kernel runs: auto (a hardware GPU if any, else CPU), gpu (any adapter,
    /// lavapipe included), cpu.
    #[arg(long, default_value = "auto")]
    device: ferret_kernels::device::DeviceChoice,
    /// Link the inputs of CoinJoin-like transactions too (off by default: BlockSci's rule).
    #[arg(long)]
    no_coinjoin_rule: bool,
}

#[derive(Subcommand)]
enum SynthCmd {
    /// A Bitcoin Core blocks directory with a realistic economy and planted scams.
    Btc(SynthBtcArgs),
}

#[derive(Args)]
struct SynthBtcArgs {
    /// Output directory: blocks/ and truth/ are written inside.
    #[arg(long)]
    out: PathBuf,
    /// Blocks on the best chain after genesis.
    #[arg(long)]
    blocks: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 50)]
    txs_per_block: u32,
    /// Obfuscate the blk files with a random key in xor.dat, as Core ≥ 28 does.
    #[arg(long)]
    xor: bool,
}

#[derive(Args)]
struct SqlArgs {
    /// Warehouse URL.
    #[arg(long, default_value = "./warehouse", env = "FERRET_WAREHOUSE")]
    warehouse: String,
    /// Output format: table, csv, json (one object per line) or parquet.
    #[arg(long, default_value = "table")]
    format: Format,
    /// Write to this file instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Read the SQL from this file.
    #[arg(long, short = 'f', conflicts_with = "sql")]
    file: Option<PathBuf>,
    /// The SQL; read from stdin when neither it nor --file is given.
    sql: Option<String>,
}

fn parse_network(s: &str) -> Result<ferret_indexer::source::bitcoin::Network> {
    use ferret_indexer::source::bitcoin::Network;
    Ok(match s {
        "bitcoin" | "mainnet" | "main" => Network::Bitcoin,
        "testnet" | "testnet3" | "test" => Network::Testnet,
        "testnet4" => Network::Testnet4,
        "signet" => Network::Signet,
        "regtest" => Network::Regtest,
        other => bail!("unknown network `{other}` (bitcoin, testnet, testnet4, signet, regtest)"),
    })
}

async fn index_btc_cmd(a: IndexBtcArgs) -> Result<()> {
    if a.utxo_mem_mb == 0 {
        bail!("--utxo-mem-mb must be at least 1");
    }
    let wh = Warehouse::open(&a.warehouse)?;
    let mut opts = IndexOptions::new(&a.blocks_dir);
    opts.to_height = a.to_height;
    opts.utxo_mem_bytes = a.utxo_mem_mb << 20;
    opts.network = a.network.as_deref().map(parse_network).transpose()?;
    opts.commit_blocks = a.commit_blocks;
    opts.commit_bytes = a.commit_mb.max(1) << 20;
    opts.progress = true;
    let summary = index_btc(&wh, &opts)
        .await
        .with_context(|| format!("indexing {} into {wh}", a.blocks_dir.display()))?;
    println!("{summary}");
    Ok(())
}

fn synth_btc_cmd(a: SynthBtcArgs) -> Result<()> {
    let cfg = ferret_indexer::synth::btc::SynthConfig {
        blocks: a.blocks,
        seed: a.seed,
        txs_per_block: a.txs_per_block,
        xor: a.xor,
        ..Default::default()
    };
    let s = ferret_indexer::synth::btc::generate(&cfg, &a.out)
        .with_context(|| format!("generating a chain in {}", a.out.display()))?;
    println!(
        "wrote {} blocks ({} stale), {} transactions, {} scam flows: {} blk files, {:.1} MB in {}",
        s.blocks,
        s.stale_blocks,
        s.transactions,
        s.scam_flows,
        s.blk_files,
        s.blk_bytes as f64 / 1e6,
        a.out.join("blocks").display()
    );
    Ok(())
}

async fn cluster_btc_cmd(a: ClusterBtcArgs) -> Result<()> {
    use ferret_kernels::cluster::{CoinJoinRule, cluster_btc, write_clusters};
    let wh = Warehouse::open(&a.warehouse)?;
    let backend = ferret_kernels::device::select(a.device)?;
    let rule = CoinJoinRule {
        enabled: !a.no_coinjoin_rule,
        ..Default::default()
    };
    let c = cluster_btc(&wh, &backend, &rule)
        .await
        .context("clustering btc")?;
    let run = write_clusters(&wh, &c).await?;
    let clusters = c
        .cluster_id
        .iter()
        .enumerate()
        .filter(|&(i, &id)| id as usize == i)
        .count();
    let largest = c.cluster_size.iter().max().copied().unwrap_or(0);
    println!(
        "{} addresses in {clusters} clusters (largest {largest}); {} transactions linked, {} CoinJoin-like skipped; run {run} on {}",
        c.addresses.len(),
        c.linked_transactions,
        c.coinjoins_skipped,
        backend.describe()
    );
    Ok(())
}

async fn sql_cmd(a: SqlArgs) -> Result<()> {
    let sql = match (&a.sql, &a.file) {
        (Some(s), _) => s.clone(),
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        (None, None) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading SQL from stdin")?;
            s
        }
    };
    let wh = Warehouse::open(&a.warehouse)?;
    let ctx = ferret_query::session(&wh).await?;
    let results = ferret_query::run_sql(&ctx, &sql).await?;
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None if a.format == Format::Parquet => {
            bail!("--format parquet needs --out FILE")
        }
        None => Box::new(std::io::stdout().lock()),
    };
    if a.format == Format::Parquet && results.len() > 1 {
        bail!("--format parquet takes a single statement");
    }
    for r in &results {
        ferret_query::output::write(a.format, &r.schema, &r.batches, &mut out)?;
    }
    out.flush()?;
    Ok(())
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FERRET_LOG").unwrap_or_else(|_| {
        EnvFilter::new("warn,ferret=info,ferret_indexer=info,ferret_query=info")
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async {
        match cli.command {
            Command::Index(IndexCmd::Btc(a)) => index_btc_cmd(a).await,
            Command::Synth(SynthCmd::Btc(a)) => synth_btc_cmd(a),
            Command::Cluster(ClusterCmd::Btc(a)) => cluster_btc_cmd(a).await,
            Command::Sql(a) => sql_cmd(a).await,
            Command::Demo(a) => demo::run(a).await,
        }
    });
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
