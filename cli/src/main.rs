//! `ferret`: the command line. Thin: parses arguments and calls the crates.

mod cases;
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
use ferret_indexer::btc::IndexOptions;
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
    /// Object store (s3://, gs://, az://) timeouts, seconds: per request (connect: a
    /// fifth of it, at most 10 s); retries give up after three times this.
    #[arg(long, global = true, value_name = "SECS", env = "FERRET_STORE_TIMEOUT")]
    store_timeout: Option<u64>,
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
    /// Trace tainted funds from seeds (results tables `taint` and `exits`).
    #[command(subcommand)]
    Taint(TaintCmd),
    /// Find scam typologies (peel chains, victim collection, pass-through, structuring,
    /// CoinJoin use) on a whole chain (results table `typologies`).
    #[command(subcommand)]
    Typologies(TypologiesCmd),
    /// Draw the flow from seeds to exits (SVG, self-contained HTML, DOT).
    #[command(subcommand)]
    Trace(TraceCmd),
    /// Address labels (table `labels`).
    #[command(subcommand)]
    Labels(LabelsCmd),
    /// Run SQL over the warehouse.
    Sql(SqlArgs),
    /// Check every committed file against the manifest: present, same size, same SHA-256
    /// (reads every file whole).
    Verify(VerifyArgs),
    /// Generate a chain, index it, and show what SQL finds.
    Demo(demo::DemoArgs),
    /// Serve the warehouse over Postgres wire and Arrow Flight SQL (authenticated,
    /// read-only, bounded).
    Serve(ServeArgs),
    /// The users file of `ferret serve`.
    #[command(subcommand)]
    Users(UsersCmd),
    /// Cases: an investigation as a file, run and kept run by run, with alerts.
    #[command(subcommand)]
    Case(cases::CaseCmd),
    /// Scheduled jobs: every case of a directory whose cron schedule is due.
    #[command(subcommand)]
    Jobs(cases::JobsCmd),
    /// One run of a case as partitioned Parquet (transactions, flows, addresses, exits,
    /// paths) for notebooks, committed by `_extract.json`.
    Extract(cases::ExtractArgs),
    /// One run of a case as a self-contained HTML report (and PDF with --pdf).
    Report(cases::ReportArgs),
}

#[derive(Subcommand)]
enum UsersCmd {
    /// Add a user (or, with --force, replace its password); the password is read from
    /// standard input (its first line), and only a salted hash is written.
    Add(UsersAddArgs),
    /// Remove a user.
    Remove(UsersNameArgs),
    /// List users and roles.
    List(UsersFileArgs),
}

#[derive(Args)]
struct UsersFileArgs {
    /// The users file.
    #[arg(long, env = "FERRET_USERS")]
    file: PathBuf,
}

#[derive(Args)]
struct UsersNameArgs {
    #[command(flatten)]
    file: UsersFileArgs,
    /// The user name (1–63 of A-Z a-z 0-9 _ . -).
    name: String,
}

#[derive(Args)]
struct UsersAddArgs {
    #[command(flatten)]
    user: UsersNameArgs,
    /// `reader` (SQL over tables and results) or `analyst` (also the kernel table
    /// functions taint, eth_taint, clusters).
    #[arg(long, default_value = "reader")]
    role: ferret_serve::Role,
    /// Replace an existing user's password and role.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct ServeArgs {
    /// Warehouse URL.
    #[arg(long, default_value = "./warehouse", env = "FERRET_WAREHOUSE")]
    warehouse: String,
    /// The users file (`ferret users add`).
    #[arg(long, env = "FERRET_USERS")]
    users: PathBuf,
    /// Postgres wire address (`off` to disable).
    #[arg(long, default_value = "127.0.0.1:5433", env = "FERRET_PG_LISTEN")]
    pg_listen: String,
    /// Arrow Flight SQL address (`off` to disable).
    #[arg(long, default_value = "127.0.0.1:50051", env = "FERRET_FLIGHT_LISTEN")]
    flight_listen: String,
    /// TLS certificate chain (PEM); with --tls-key, both protocols use TLS and pg
    /// clients without it are refused.
    #[arg(long, requires = "tls_key", env = "FERRET_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert", env = "FERRET_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Serve without TLS on a non-loopback address, or accept plaintext pg clients
    /// beside TLS ones.
    #[arg(long)]
    allow_plaintext: bool,
    /// The longest a statement may run, rows streamed included, in milliseconds
    /// (a client's `SET statement_timeout` can only lower it).
    #[arg(long, default_value_t = 300_000, env = "FERRET_STATEMENT_TIMEOUT_MS")]
    statement_timeout_ms: u64,
    /// Memory one query's operators may reserve, MiB (sorts and aggregates spill beyond).
    #[arg(long, default_value_t = 1024, env = "FERRET_QUERY_MEMORY_MB")]
    query_memory_mb: usize,
    /// Connections at once, both protocols together; more are refused.
    #[arg(long, default_value_t = 128)]
    max_connections: usize,
    /// Queries running at once; more wait within their statement timeout.
    #[arg(long, default_value_t = 8)]
    max_concurrent_queries: usize,
    /// Reload the users file when it changes, checked this often (0: only on SIGHUP).
    #[arg(long, default_value_t = 10)]
    users_reload_secs: u64,
    /// The kernel table functions run out of core within this budget.
    #[command(flatten)]
    budget: BudgetArgs,
}

#[derive(Subcommand)]
enum IndexCmd {
    /// Bitcoin Core's blocks directory (blk*.dat, xor.dat).
    Btc(IndexBtcArgs),
    /// An Ethereum JSON-RPC endpoint (HTTP or WebSocket).
    Eth(IndexEthArgs),
}

#[derive(Args)]
struct IndexEthArgs {
    /// JSON-RPC endpoint: http(s):// or ws(s)://.
    #[arg(long, env = "FERRET_ETH_RPC")]
    rpc: String,
    /// Warehouse URL: a path, file://, s3://, gs://, az:// or memory://.
    #[arg(long, default_value = "./warehouse", env = "FERRET_WAREHOUSE")]
    warehouse: String,
    /// First block of a new warehouse (a rerun continues after the last committed block).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Last block to index (default: the node's head less the confirmations).
    #[arg(long, conflicts_with = "follow")]
    to: Option<u64>,
    /// Keep indexing new blocks until interrupted (Ctrl-C finishes the current commit).
    #[arg(long)]
    follow: bool,
    /// Index only blocks at least this many blocks below the head.
    #[arg(long, default_value_t = 0)]
    confirmations: u64,
    /// Batches of requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Blocks per JSON-RPC batch.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    /// Internal calls from: auto, callTracer (debug_traceBlockByNumber), parity (trace_block), off.
    #[arg(long, default_value = "auto")]
    traces: ferret_indexer::eth::TraceMode,
    /// Commit at least every this many blocks.
    #[arg(long, default_value_t = 1000)]
    commit_blocks: u64,
    /// The chain id the node must have (refuse another chain).
    #[arg(long)]
    chain_id: Option<u64>,
    /// Follow mode: seconds between looks at the head.
    #[arg(long, default_value_t = 2.0)]
    poll_secs: f64,
    /// Seconds one request (or batch) may take before it is retried.
    #[arg(long, default_value_t = 60.0)]
    timeout_secs: f64,
    /// Retries of a failed request (rate limits, timeouts, garbled answers).
    #[arg(long, default_value_t = 8)]
    retries: u32,
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
    /// Memory for the address-id store (address → `address_id`) before it spills to disk,
    /// in MiB.
    #[arg(long, default_value_t = 512)]
    address_mem_mb: usize,
    /// The spend graph's blocks hold 2^N transactions (a new warehouse only; default 20).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=28))]
    graph_block_bits: Option<u32>,
    /// Network (bitcoin, testnet, testnet4, signet, regtest) when the magic cannot tell.
    #[arg(long)]
    network: Option<String>,
    /// Commit at least every this many blocks.
    #[arg(long, default_value_t = 10_000)]
    commit_blocks: u64,
    /// Commit at least every this many MiB of block data.
    #[arg(long, default_value_t = 512)]
    commit_mb: u64,
    /// Threads that read, decode, verify and prepare blocks (default: one per core).
    #[arg(long)]
    read_threads: Option<usize>,
    /// The deepest reorganisation to unwind (committed blocks no longer on the best
    /// chain); deeper is an error.
    #[arg(long, default_value_t = 1_000)]
    max_unwind: u64,
    /// Keep indexing as the node appends blocks, until interrupted (Ctrl-C or SIGTERM
    /// finishes the current commit).
    #[arg(long, conflicts_with = "to_height")]
    follow: bool,
    /// Follow mode: seconds between looks at the blocks dir.
    #[arg(long, default_value_t = 5.0)]
    poll_secs: f64,
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Bitcoin: all input addresses of a transaction are one entity, CoinJoins excepted.
    Btc(ClusterBtcArgs),
    /// Ethereum: the senders to one exchange deposit address are one entity (table
    /// `eth_clusters`).
    Eth(ClusterEthArgs),
    /// Why are two Bitcoin addresses in one cluster: the co-spends that join them (from
    /// the latest `ferret cluster btc` run).
    Why(ClusterWhyArgs),
}

#[derive(Args)]
struct ClusterEthArgs {
    /// Warehouse URL.
    #[arg(long, default_value = "./warehouse", env = "FERRET_WAREHOUSE")]
    warehouse: String,
    /// Label category of exchange hot wallets (deposit addresses sweep into them).
    #[arg(long, default_value = "exchange")]
    exchange_category: String,
    /// A sweep must follow a transfer into the deposit address within this many blocks.
    #[arg(long, default_value_t = 1000)]
    max_delay_blocks: i64,
    /// A deposit address with more distinct senders than this links none of them (many
    /// unrelated payers are victims or customers of a service, not one person).
    #[arg(long, default_value_t = 8)]
    max_senders: usize,
    /// Where the kernel runs: auto, gpu, cpu.
    #[arg(long, default_value = "auto")]
    device: ferret_kernels::device::DeviceChoice,
    /// Read every transfer, even where the last run's state would let this run read only
    /// the new blocks (in memory; out of core always reads every transfer).
    #[arg(long)]
    full: bool,
    #[command(flatten)]
    budget: BudgetArgs,
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
    /// Link the inputs of CoinJoins too: turns the CoinJoin detectors off (unsafe: a
    /// missed CoinJoin merges strangers).
    #[arg(long)]
    no_coinjoin_rule: bool,
    /// Merge clusters even when their labels conflict (two exchanges, exchange and scam).
    #[arg(long)]
    no_label_guard: bool,
    /// Hold back a transaction joining two clusters that each have at least this many
    /// addresses (cluster collapse); 0 turns the guard off.
    #[arg(long, default_value_t = 1000)]
    collapse_min_size: u32,
    #[command(flatten)]
    budget: BudgetArgs,
    /// With --mem-mb: cluster from the first block even when the last stored run could
    /// be continued (by default only the transactions after it are read).
    #[arg(long)]
    full: bool,
}

#[derive(Subcommand)]
enum TypologiesCmd {
    /// Bitcoin: peel chains, rapid pass-through, fan-out structuring, CoinJoin use (a
    /// chain-order pass) and victim collection (SQL over payments).
    Btc(TypologiesBtcArgs),
    /// Ethereum: approval phishing, address poisoning and victim collection (SQL over
    /// eth.logs, eth.token_transfers and eth.transfers).
    Eth(TypologiesEthArgs),
}

#[derive(Args)]
struct TypologiesEthArgs {
    /// Warehouse URL.
    #[arg(long, default_value = "./warehouse", env = "FERRET_WAREHOUSE")]
    warehouse: String,
    /// Only patterns found in blocks from this one on.
    #[arg(long, value_name = "BLOCK")]
    since: Option<i64>,
    /// Keep only these patterns (repeatable): approval_phishing, address_poisoning,
    /// victim_collection, peel_chain, pass_through, fan_out, stablecoin_swap, coinjoin
    /// (mixer use).
    #[arg(long = "pattern", value_name = "PATTERN")]
    patterns: Vec<String>,
    /// Approval phishing: the fewest owners one spender drains.
    #[arg(long, default_value_t = 3)]
    phishing_min_owners: usize,
    /// Approval phishing: the most blocks from an approval to the drain.
    #[arg(long, default_value_t = 7200)]
    phishing_max_delay: i64,
    /// Address poisoning: leading hex digits the look-alike shares with the real
    /// counterparty.
    #[arg(long, default_value_t = 4)]
    poison_prefix: usize,
    /// Address poisoning: trailing hex digits it shares.
    #[arg(long, default_value_t = 4)]
    poison_suffix: usize,
    /// Victim collection: the fewest distinct payer clusters.
    #[arg(long, default_value_t = 20)]
    victim_min_payers: usize,
    /// Victim collection: the smallest share of the addresses it paid that it was the
    /// first to pay.
    #[arg(long, default_value_t = 0.5)]
    victim_min_new_recipients: f64,
    /// Stablecoin swaps: a stablecoin besides USDT, USDC and DAI, as ADDRESS[:DECIMALS]
    /// (decimals 6 when left out); repeatable.
    #[arg(long = "stablecoin", value_name = "ADDRESS[:DECIMALS]")]
    stablecoins: Vec<String>,
    /// Stablecoin swaps: the most blocks from the scam money's arrival to the swap.
    #[arg(long, default_value_t = 7200)]
    swap_max_delay: i64,
    /// Pass-through: the fewest hops.
    #[arg(long, default_value_t = 3)]
    pass_min_hops: usize,
    /// Pass-through: the most blocks a hop holds the money (7200: a day).
    #[arg(long, default_value_t = 7200)]
    pass_max_wait: i64,
    /// Peel chains: the fewest steps.
    #[arg(long, default_value_t = 5)]
    peel_min_steps: usize,
    /// Pass-through and peel chains: the most ETH (in wei) a hop passing on a token may
    /// receive besides it, for gas (10^17: 0.1 ETH).
    #[arg(long, default_value_t = 100_000_000_000_000_000)]
    hop_max_gas: u128,
    /// Fan-out: the fewest just-under-round payments to fresh addresses.
    #[arg(long, default_value_t = 10)]
    fan_min_outputs: usize,
    /// Read every block, even when the last run's state would let this run read only the
    /// new ones (other rules, patterns, labels or clusters, or a reorganisation below the
    /// last run, start over anyway).
    #[arg(long)]
    full: bool,
    /// Where the peel and pass-through chains are ranked (the `chainrank` kernel): auto
    /// (a hardware GPU when there is one), gpu (any adapter) or cpu (its rayon twin).
    /// The other patterns are SQL (docs/typologies.md, "How it runs").
    #[arg(long, default_value = "auto")]
    device: ferret_kernels::device::DeviceChoice,
}

#[derive(Args)]
struct TypologiesBtcArgs {
    /// Warehouse URL.
    #[arg(long, default_value = "./warehouse", env = "FERRET_WAREHOUSE")]
    warehouse: String,
    /// Only patterns found in blocks from this height on (earlier blocks are read for
    /// the addresses' history).
    #[arg(long, value_name = "HEIGHT")]
    since: Option<i64>,
    /// Keep only these patterns (repeatable): peel_chain, victim_collection,
    /// pass_through, fan_out, coinjoin.
    #[arg(long = "pattern", value_name = "PATTERN")]
    patterns: Vec<String>,
    /// Peel chains: the fewest steps.
    #[arg(long, default_value_t = 5)]
    peel_min_steps: usize,
    /// Pass-through: the fewest hops.
    #[arg(long, default_value_t = 3)]
    pass_min_hops: usize,
    /// Pass-through: the most blocks between receiving and passing on.
    #[arg(long, default_value_t = 144)]
    pass_max_wait: i64,
    /// Fan-out: the fewest just-under-round payments to fresh addresses.
    #[arg(long, default_value_t = 10)]
    fan_min_outputs: usize,
    /// Victim collection: the fewest distinct payer clusters.
    #[arg(long, default_value_t = 20)]
    victim_min_payers: usize,
    /// Victim collection: the smallest median payment, sats.
    #[arg(long, default_value_t = 200_000)]
    victim_min_median: i64,
    /// Read every block, even when the last run's state would let this run read only the
    /// new ones (a reorganisation below the last run, other rules or new labels start
    /// from the first block anyway).
    #[arg(long)]
    full: bool,
    /// How peel chains and pass-through chains are linked: `pass` (in the chain-order
    /// pass, incremental) or `graph` (walked on the spend graph and ranked by a kernel on
    /// `--device`; reads every block). Same findings either way. Default: `graph` with
    /// `--device gpu`, else `pass` (docs/typologies.md, "How it runs").
    #[arg(long, value_name = "pass|graph")]
    walk: Option<String>,
    /// Where the graph walk's kernel runs: auto (a hardware GPU when there is one), gpu
    /// (any adapter; implies `--walk graph`) or cpu (its rayon twin).
    #[arg(long, default_value = "auto")]
    device: ferret_kernels::device::DeviceChoice,
}

#[derive(Args)]
struct ClusterWhyArgs {
    /// Warehouse URL.
    #[arg(long, default_value = "./warehouse", env = "FERRET_WAREHOUSE")]
    warehouse: String,
    /// The first address.
    a: String,
    /// The second address.
    b: String,
}

#[derive(Subcommand)]
enum TaintCmd {
    /// Bitcoin UTXO taint: poison, haircut or fifo, forward or backward.
    Btc(TaintBtcArgs),
    /// Ethereum account taint over eth.transfers: time-respecting poison or haircut pools.
    Eth(TaintEthArgs),
}

#[derive(Args)]
struct EthTaintArgs {
    /// Warehouse URL.
    #[arg(long, default_value = "./warehouse", env = "FERRET_WAREHOUSE")]
    warehouse: String,
    /// A seed address (repeatable; comma-separated lists too).
    #[arg(long, value_delimiter = ',')]
    seed: Vec<String>,
    /// Every address labelled with this category is a seed (repeatable).
    #[arg(long, value_delimiter = ',')]
    seed_category: Vec<String>,
    /// poison (everything a tainted address sends after its first tainted arrival) or
    /// haircut (each address a pool; a transfer carries the pool's tainted share).
    #[arg(long, default_value = "haircut")]
    policy: ferret_kernels::account::job::AccountPolicy,
    /// `ETH`, a token contract address, or `*` (every asset; poison only).
    #[arg(long, default_value = "ETH")]
    asset: String,
    /// Keep paths of at most H transfers.
    #[arg(long)]
    hops: Option<u32>,
    /// forward (where did it go) or backward (where did it come from).
    #[arg(long, default_value = "forward")]
    direction: ferret_kernels::taint::Direction,
    /// Label categories that receive taint but pass none on (e.g. exchange).
    #[arg(long, value_delimiter = ',')]
    stop_at: Vec<String>,
    /// Transfers carrying less than this (in the asset's base unit: wei for ETH) carry
    /// nothing.
    #[arg(long, default_value_t = 0.0)]
    min_value: f64,
    /// Where the kernel runs: auto, gpu, cpu.
    #[arg(long, default_value = "auto")]
    device: ferret_kernels::device::DeviceChoice,
}

#[derive(Args)]
struct TaintEthArgs {
    #[command(flatten)]
    taint: EthTaintArgs,
    /// Rows of the exits report to print.
    #[arg(long, default_value_t = 20)]
    top: usize,
    #[command(flatten)]
    budget: BudgetArgs,
}

#[derive(Args)]
struct TraceEthArgs {
    #[command(flatten)]
    taint: EthTaintArgs,
    /// Output path prefix: writes PREFIX.svg, PREFIX.html and PREFIX.dot.
    #[arg(long, default_value = "trace")]
    out: PathBuf,
    /// Nodes to draw at most; smaller ones are folded per hop.
    #[arg(long, default_value_t = 60)]
    max_nodes: usize,
}

#[derive(Args)]
struct TaintBtcArgs {
    #[command(flatten)]
    taint: TaintArgs,
    /// Rows of the exits report to print.
    #[arg(long, default_value_t = 20)]
    top: usize,
    #[command(flatten)]
    budget: BudgetArgs,
}

/// Out-of-core runs on the committed graph.
#[derive(Args)]
struct BudgetArgs {
    /// Run out of core on the committed graph within this many MiB for node state and
    /// cached graph chunks (plus a fixed overhead; see docs/kernels.md), spilling the rest
    /// to --scratch. Without it the graph is built in memory.
    #[arg(long, env = "FERRET_MEM_MB")]
    mem_mb: Option<usize>,
    /// Where an out-of-core run spills (a temporary directory is made inside it, and
    /// removed after); the system's temporary directory by default.
    #[arg(long, env = "FERRET_SCRATCH")]
    scratch: Option<PathBuf>,
}

impl BudgetArgs {
    /// The budget, when an out-of-core run was asked for.
    fn budget(&self) -> Result<Option<(ferret_kernels::blocked::Budget, tempfile::TempDir)>> {
        // --scratch (FERRET_SCRATCH) alone changes nothing: in-memory runs spill nothing.
        let Some(mb) = self.mem_mb else {
            return Ok(None);
        };
        if mb == 0 {
            bail!("--mem-mb must be at least 1");
        }
        let mem_bytes = mib(mb, "--mem-mb")?;
        let base = self.scratch.clone().unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("ferret-scratch-")
            .tempdir_in(&base)
            .with_context(|| format!("making a scratch directory in {}", base.display()))?;
        Ok(Some((
            ferret_kernels::blocked::Budget {
                mem_bytes,
                scratch: dir.path().to_path_buf(),
            },
            dir,
        )))
    }
}

#[derive(Subcommand)]
enum TraceCmd {
    /// Bitcoin: the taint run's flow, clusters drawn as one node each.
    Btc(TraceBtcArgs),
    /// Ethereum: the account taint run's flow, deposit clusters drawn as one node each.
    Eth(TraceEthArgs),
}

#[derive(Args)]
struct TraceBtcArgs {
    #[command(flatten)]
    taint: TaintArgs,
    /// Output path prefix: writes PREFIX.svg, PREFIX.html and PREFIX.dot.
    #[arg(long, default_value = "trace")]
    out: PathBuf,
    /// Nodes to draw at most; smaller ones are folded per hop.
    #[arg(long, default_value_t = 60)]
    max_nodes: usize,
}

#[derive(Args)]
struct TaintArgs {
    /// Warehouse URL.
    #[arg(long, default_value = "./warehouse", env = "FERRET_WAREHOUSE")]
    warehouse: String,
    /// A seed address or txid (repeatable; comma-separated lists too).
    #[arg(long, value_delimiter = ',')]
    seed: Vec<String>,
    /// Every address labelled with this category is a seed (repeatable).
    #[arg(long, value_delimiter = ',')]
    seed_category: Vec<String>,
    /// How taint divides: poison (any taint taints all), haircut (proportional), fifo
    /// (first in, first out).
    #[arg(long, default_value = "haircut")]
    policy: ferret_kernels::taint::Policy,
    /// Keep hops ≤ H (a spend is one hop). Without it taint goes as far as it goes.
    #[arg(long)]
    hops: Option<u32>,
    /// forward (where did it go) or backward (where did it come from).
    #[arg(long, default_value = "forward")]
    direction: ferret_kernels::taint::Direction,
    /// Label categories that receive taint but pass none on (e.g. exchange).
    #[arg(long, value_delimiter = ',')]
    stop_at: Vec<String>,
    /// Outputs whose tainted value is below this many sats pass nothing on.
    #[arg(long, default_value_t = 0)]
    min_value: i64,
    /// Where the kernel runs: auto, gpu, cpu.
    #[arg(long, default_value = "auto")]
    device: ferret_kernels::device::DeviceChoice,
}

#[derive(Subcommand)]
enum LabelsCmd {
    /// Import CSV (address,label,category[,source,confidence]), TagPack YAML or plain
    /// address lists; re-importing adds nothing.
    Import(LabelsImportArgs),
    /// Export labels to share: CSV, GraphSense TagPack, a MISP event or a STIX 2.1
    /// bundle, each entry with its source and confidence, the file with its TLP marking.
    Export(LabelsExportArgs),
}

#[derive(Args)]
struct LabelsExportArgs {
    /// Warehouse URL.
    #[arg(long, default_value = "./warehouse", env = "FERRET_WAREHOUSE")]
    warehouse: String,
    /// csv, tagpack, misp or stix.
    #[arg(long)]
    format: ferret_indexer::label_export::Format,
    /// The file to write (written whole, then renamed into place).
    #[arg(long)]
    out: PathBuf,
    /// Only these chains (btc, eth); repeatable.
    #[arg(long)]
    chain: Vec<String>,
    /// Only these categories; repeatable.
    #[arg(long)]
    category: Vec<String>,
    /// Only these sources; repeatable.
    #[arg(long)]
    source: Vec<String>,
    /// A case's findings instead of the labels table: its seeds and their clusters, the
    /// exits its money reached, with each entry's provenance (case, run, heuristic,
    /// evidence transaction).
    #[arg(long)]
    case: Option<String>,
    /// With --case: this run (default: the latest).
    #[arg(long, requires = "case")]
    run: Option<String>,
    /// With --case: only exits with at least this tainted value (sats, wei, token units).
    #[arg(long, requires = "case", default_value_t = 0.0)]
    exit_min: f64,
    /// With --case: also the tainted addresses beyond the seeds with at least this
    /// tainted value (category `tainted`).
    #[arg(long, requires = "case")]
    tainted_min: Option<f64>,
    /// With --case: the category of the seeds and their cluster members.
    #[arg(long, requires = "case", default_value = "scam")]
    finding_category: String,
    /// Traffic Light Protocol marking: clear, green, amber or red.
    #[arg(long, default_value = "amber")]
    tlp: ferret_indexer::label_export::Tlp,
    /// Title (TagPack title, MISP event info).
    #[arg(long, default_value = "Ferret labels")]
    title: String,
    /// Who shares it (TagPack creator, MISP organisation, STIX identity).
    #[arg(long, default_value = "Ferret")]
    creator: String,
}

#[derive(Args)]
struct LabelsImportArgs {
    /// Warehouse URL.
    #[arg(long, default_value = "./warehouse", env = "FERRET_WAREHOUSE")]
    warehouse: String,
    /// Files: .csv, .yaml/.yml (TagPack), anything else is a list of addresses.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Chain of the addresses (btc, eth); by default from the TagPack currency or the
    /// address itself.
    #[arg(long)]
    chain: Option<String>,
    /// Category for rows that have none (required for plain lists).
    #[arg(long)]
    category: Option<String>,
    /// Label for rows that have none (plain lists: the file name).
    #[arg(long)]
    label: Option<String>,
    /// Source for rows that have none (default: the file name).
    #[arg(long)]
    source: Option<String>,
    /// Import the valid addresses and report the invalid ones instead of failing.
    #[arg(long)]
    skip_invalid: bool,
}

#[derive(Subcommand)]
enum SynthCmd {
    /// A Bitcoin Core blocks directory with a realistic economy and planted scams.
    Btc(SynthBtcArgs),
    /// Drive a local anvil node through an Ethereum economy with planted scams.
    Eth(SynthEthArgs),
}

#[derive(Args)]
struct SynthEthArgs {
    /// The node (anvil: it uses anvil_setBalance and impersonation).
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    rpc: String,
    /// Where the truth files go (DIR/truth/).
    #[arg(long)]
    out: PathBuf,
    /// Random seed: the same seed on a fresh node gives the same economy.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Blocks of everyday activity.
    #[arg(long, default_value_t = 40)]
    blocks: usize,
    /// Transactions per block.
    #[arg(long, default_value_t = 30)]
    txs_per_block: usize,
    /// Users (a quarter of them with two wallets).
    #[arg(long, default_value_t = 120)]
    users: usize,
    /// Exchanges.
    #[arg(long, default_value_t = 3)]
    exchanges: usize,
    /// Scam operations.
    #[arg(long, default_value_t = 2)]
    scams: usize,
    /// Victims paying each scam operation.
    #[arg(long, default_value_t = 12)]
    victims: usize,
    /// Plant approval phishing and address poisoning with their look-alikes;
    /// truth/typologies.csv lists them and every scam address victims paid.
    #[arg(long)]
    typologies: bool,
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
    /// Plant scam typologies (relays, structuring, repeat victims) and their
    /// look-alikes (merchants, salaries); truth/typologies.csv lists them.
    #[arg(long)]
    typologies: bool,
}

#[derive(Args)]
struct VerifyArgs {
    /// Warehouse URL.
    #[arg(long, default_value = "./warehouse", env = "FERRET_WAREHOUSE")]
    warehouse: String,
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
    /// The kernel functions (taint, clusters) run out of core within this budget.
    #[command(flatten)]
    budget: BudgetArgs,
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

/// `v` MiB in bytes; an error (never an overflow) past what a `usize` holds.
fn mib(v: usize, flag: &str) -> Result<usize> {
    v.checked_mul(1 << 20)
        .ok_or_else(|| anyhow::anyhow!("{flag} {v}: more MiB than this machine can address"))
}

async fn index_btc_cmd(a: IndexBtcArgs) -> Result<()> {
    if a.utxo_mem_mb == 0 {
        bail!("--utxo-mem-mb must be at least 1");
    }
    if a.address_mem_mb == 0 {
        bail!("--address-mem-mb must be at least 1");
    }
    let wh = Warehouse::open(&a.warehouse)?;
    let mut opts = IndexOptions::new(&a.blocks_dir);
    opts.to_height = a.to_height;
    opts.utxo_mem_bytes = mib(a.utxo_mem_mb, "--utxo-mem-mb")?;
    opts.address_mem_bytes = mib(a.address_mem_mb, "--address-mem-mb")?;
    opts.graph_block_bits = a.graph_block_bits;
    opts.network = a.network.as_deref().map(parse_network).transpose()?;
    opts.commit_blocks = a.commit_blocks;
    opts.commit_bytes = a
        .commit_mb
        .max(1)
        .checked_mul(1 << 20)
        .ok_or_else(|| anyhow::anyhow!("--commit-mb {}: too large", a.commit_mb))?;
    opts.max_unwind = a.max_unwind;
    if let Some(n) = a.read_threads {
        if n == 0 {
            bail!("--read-threads must be at least 1");
        }
        opts.read_threads = n;
    }
    opts.follow = a.follow;
    opts.poll = seconds(a.poll_secs, "--poll-secs")?;
    opts.progress = true;
    let summary = ferret_indexer::btc::index_btc_until(&wh, &opts, Some(stop_on_signal()))
        .await
        .with_context(|| format!("indexing {} into {wh}", a.blocks_dir.display()))?;
    println!("{summary}");
    Ok(())
}

fn seconds(v: f64, what: &str) -> Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("{what} must be a positive number of seconds, not {v}"))
}

/// A stop signal that turns true at Ctrl-C or SIGTERM (a container stop): an index run
/// finishes its current commit, then exits.
fn stop_on_signal() -> ferret_indexer::eth::Stop {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        #[cfg(unix)]
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut signal = async || {
            #[cfg(unix)]
            let term = async {
                match term.as_mut() {
                    Some(t) => {
                        t.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let term = std::future::pending::<()>();
            let int = async {
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = int => {}
                _ = term => {}
            }
        };
        signal().await;
        tracing::info!("interrupted: finishing the current commit (again to stop at once)");
        let _ = stop_tx.send(true);
        // A second signal stops at once: nothing committed is touched, and the next run
        // collects what was not committed.
        signal().await;
        std::process::exit(130);
    });
    stop_rx
}

async fn index_eth_cmd(a: IndexEthArgs) -> Result<()> {
    use ferret_indexer::eth::{EthOptions, index_eth};
    if a.concurrency == 0 || a.batch == 0 || a.commit_blocks == 0 {
        bail!("--concurrency, --batch and --commit-blocks must be at least 1");
    }
    let wh = Warehouse::open(&a.warehouse)?;
    let mut opts = EthOptions::new(&a.rpc);
    opts.from = a.from;
    opts.to = a.to;
    opts.follow = a.follow;
    opts.confirmations = a.confirmations;
    opts.concurrency = a.concurrency;
    opts.batch_blocks = a.batch;
    opts.traces = a.traces;
    opts.commit_blocks = a.commit_blocks;
    opts.chain_id = a.chain_id;
    opts.poll = seconds(a.poll_secs, "--poll-secs")?;
    opts.retry.timeout = seconds(a.timeout_secs, "--timeout-secs")?;
    opts.retry.max_retries = a.retries;
    opts.progress = true;
    let summary = index_eth(&wh, &opts, Some(stop_on_signal()))
        .await
        .with_context(|| format!("indexing {} into {wh}", a.rpc))?;
    println!("{summary}");
    Ok(())
}

async fn synth_eth_cmd(a: SynthEthArgs) -> Result<()> {
    use ferret_testkit::synth::eth::{EthSynthConfig, generate};
    let cfg = EthSynthConfig {
        seed: a.seed,
        blocks: a.blocks,
        txs_per_block: a.txs_per_block,
        users: a.users,
        exchanges: a.exchanges,
        scam_operations: a.scams,
        victims: a.victims,
        typologies: a.typologies,
        ..Default::default()
    };
    let s = generate(&a.rpc, &cfg, &a.out)
        .await
        .with_context(|| format!("driving {}", a.rpc))?;
    println!(
        "mined blocks {}..={} ({} blocks): {} transactions, {} reverted, {} planted cash-outs; truth in {}",
        s.first_block,
        s.last_block,
        s.blocks,
        s.transactions,
        s.reverted,
        s.cashouts,
        a.out.join("truth").display()
    );
    Ok(())
}

fn synth_btc_cmd(a: SynthBtcArgs) -> Result<()> {
    let cfg = ferret_testkit::synth::btc::SynthConfig {
        blocks: a.blocks,
        seed: a.seed,
        txs_per_block: a.txs_per_block,
        xor: a.xor,
        typologies: a.typologies,
        ..Default::default()
    };
    let s = ferret_testkit::synth::btc::generate(&cfg, &a.out)
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

async fn cluster_eth_cmd(a: ClusterEthArgs) -> Result<()> {
    use ferret_kernels::account::deposit::DepositRule;
    if a.max_delay_blocks < 0 {
        bail!("--max-delay-blocks must be ≥ 0");
    }
    let wh = Warehouse::open_existing(&a.warehouse)?;
    let rule = DepositRule {
        exchange_category: a.exchange_category,
        max_delay_blocks: a.max_delay_blocks,
        max_senders: a.max_senders,
    };
    if let Some((budget, _dir)) = a.budget.budget()? {
        use ferret_kernels::account::stored_deposit::cluster_eth_stored;
        if a.device == ferret_kernels::device::DeviceChoice::Gpu {
            bail!(
                "--mem-mb clusters eth on the CPU (its walks stream sorted files): drop --device gpu"
            );
        }
        let c = tokio::task::spawn_blocking(move || cluster_eth_stored(&wh, &rule, &budget, None))
            .await
            .context("the out-of-core clustering stopped")?
            .context("clustering eth by deposit addresses out of core")?;
        println!(
            "{} deposit addresses; {} linked addresses in {} clusters (largest {}); run {} on the CPU, out of core ({} partitions)",
            c.deposit_addresses, c.addresses, c.clusters, c.largest, c.run_id, c.partitions
        );
        return Ok(());
    }
    let backend = ferret_kernels::device::select(a.device)?;
    let job =
        ferret_kernels::account::deposit_resume::cluster_eth_job(&wh, &backend, &rule, a.full)
            .await
            .context("clustering eth by deposit addresses")?;
    let (d, run) = (&job.clusters, &job.run_id);
    let c = &d.clusters;
    println!(
        "{} deposit addresses; {} linked addresses in {} clusters (largest {}); run {run} on {} ({})",
        d.deposit_addresses.len(),
        c.addresses.len(),
        c.count(),
        c.cluster_size.iter().max().copied().unwrap_or(0),
        backend.describe(),
        job.mode
    );
    Ok(())
}

async fn typologies_btc_cmd(a: TypologiesBtcArgs) -> Result<()> {
    use ferret_kernels::device::DeviceChoice;
    use ferret_kernels::typology::Pattern;
    use ferret_query::typologies::{TypologyOptions, run_btc};
    let graph = match a.walk.as_deref() {
        None => a.device == DeviceChoice::Gpu,
        Some("graph") => true,
        Some("pass") if a.device == DeviceChoice::Gpu => bail!(
            "--walk pass runs on the CPU, in chain order; --device gpu runs the graph walk (--walk graph)"
        ),
        Some("pass") => false,
        Some(other) => bail!("--walk {other}: pass or graph"),
    };
    let wh = Warehouse::open_existing(&a.warehouse)?;
    let mut opts = TypologyOptions {
        patterns: patterns_of(
            &a.patterns,
            &[
                Pattern::PeelChain,
                Pattern::VictimCollection,
                Pattern::PassThrough,
                Pattern::FanOut,
                Pattern::CoinJoin,
            ],
            "an Ethereum pattern, not found on Bitcoin",
        )?,
        ..TypologyOptions::default()
    };
    opts.btc.since = a.since;
    opts.btc.peel_min_steps = a.peel_min_steps;
    opts.btc.pass_min_hops = a.pass_min_hops;
    opts.btc.pass_max_wait = a.pass_max_wait;
    opts.btc.fan_min_outputs = a.fan_min_outputs;
    opts.victim.min_payers = a.victim_min_payers;
    opts.victim.min_median = a.victim_min_median;
    opts.full = a.full;
    opts.walk = graph.then_some(a.device);
    let run = run_btc(&wh, &opts)
        .await
        .with_context(|| format!("typologies over {wh}"))?;
    println!(
        "typologies run {}: {} transactions read ({}), {} findings",
        run.run_id,
        run.transactions,
        run.mode,
        run.findings.len()
    );
    print_counts(&run.counts);
    Ok(())
}

/// The patterns named by `--pattern`, each one of `allowed` (`other`: why another is
/// refused).
fn patterns_of(
    names: &[String],
    allowed: &[ferret_kernels::typology::Pattern],
    other: &str,
) -> Result<Vec<ferret_kernels::typology::Pattern>> {
    use ferret_kernels::typology::Pattern;
    names
        .iter()
        .map(|p| {
            let pattern = Pattern::from_name(p).with_context(|| {
                format!(
                    "--pattern {p}: unknown; the patterns are {}",
                    Pattern::ALL.map(|p| p.name()).join(", ")
                )
            })?;
            if !allowed.contains(&pattern) {
                bail!("--pattern {p}: {other}");
            }
            Ok(pattern)
        })
        .collect()
}

/// Findings per pattern, in the table's order.
fn print_counts(counts: &std::collections::BTreeMap<&'static str, usize>) {
    for p in ferret_kernels::typology::Pattern::ALL {
        if let Some(n) = counts.get(p.name()) {
            println!("  {:<18} {n}", p.name());
        }
    }
}

async fn typologies_eth_cmd(a: TypologiesEthArgs) -> Result<()> {
    use ferret_kernels::typology::Pattern;
    use ferret_query::typologies::{EthRules, run_eth};
    let wh = Warehouse::open_existing(&a.warehouse)?;
    let patterns = patterns_of(
        &a.patterns,
        &[
            Pattern::ApprovalPhishing,
            Pattern::AddressPoisoning,
            Pattern::VictimCollection,
            Pattern::PeelChain,
            Pattern::PassThrough,
            Pattern::FanOut,
            Pattern::StablecoinSwap,
            Pattern::CoinJoin,
        ],
        "a Bitcoin pattern, not found on Ethereum",
    )?;
    let mut stablecoins: Vec<(String, u32)> = ferret_query::typologies::MAINNET_STABLECOINS
        .iter()
        .map(|(a, d)| (a.to_string(), *d))
        .collect();
    for spec in &a.stablecoins {
        let (addr, dec) = match spec.split_once(':') {
            Some((addr, d)) => (
                addr,
                d.parse::<u32>().with_context(|| {
                    format!("--stablecoin {spec}: decimals {d:?} are no number")
                })?,
            ),
            None => (spec.as_str(), 6),
        };
        stablecoins.push((addr.to_lowercase(), dec));
    }
    let rules = EthRules {
        stablecoins,
        swap_max_delay: a.swap_max_delay,
        pass_min_hops: a.pass_min_hops,
        pass_max_wait: a.pass_max_wait,
        peel_min_steps: a.peel_min_steps,
        hop_max_gas: a.hop_max_gas,
        fan_min_outputs: a.fan_min_outputs,
        since: a.since,
        phishing_min_owners: a.phishing_min_owners,
        phishing_max_delay: a.phishing_max_delay,
        poison_prefix: a.poison_prefix,
        poison_suffix: a.poison_suffix,
        victim_min_payers: a.victim_min_payers,
        victim_min_new_recipients: a.victim_min_new_recipients,
        ..EthRules::default()
    };
    let walk = ferret_kernels::device::select(a.device)?;
    let run = run_eth(&wh, &rules, &patterns, a.full, &walk)
        .await
        .with_context(|| format!("typologies over {wh}"))?;
    println!(
        "typologies run {}: {} findings on Ethereum ({})",
        run.run_id,
        run.findings.len(),
        run.mode
    );
    print_counts(&run.counts);
    Ok(())
}

async fn cluster_btc_cmd(a: ClusterBtcArgs) -> Result<()> {
    use ferret_kernels::cluster::{ClusterOptions, cluster_btc, write_btc_clusters};
    let wh = Warehouse::open_existing(&a.warehouse)?;
    let backend = ferret_kernels::device::select(a.device)?;
    let mut opts = ClusterOptions {
        label_guard: !a.no_label_guard,
        collapse_min_size: a.collapse_min_size,
        ..Default::default()
    };
    opts.detectors.enabled = !a.no_coinjoin_rule;
    let params = serde_json::json!({
        "coinjoin_detectors": opts.detectors.enabled,
        "label_guard": opts.label_guard,
        "collapse_min_size": opts.collapse_min_size,
    });
    if let Some((budget, _dir)) = a.budget.budget()? {
        if a.device == ferret_kernels::device::DeviceChoice::Gpu {
            bail!(
                "--mem-mb clusters on the CPU (its guards take the transactions one by one in chain order): drop --device gpu"
            );
        }
        let mem = budget.mem_bytes >> 20;
        let full = a.full;
        let c = tokio::task::spawn_blocking(move || {
            ferret_kernels::cluster::stored::cluster_btc_stored(&wh, &opts, &budget, params, !full)
        })
        .await
        .context("the out-of-core clustering stopped")?
        .context("clustering btc out of core")?;
        println!(
            "{} addresses in {} clusters (largest {}); {} transactions linked, {} CoinJoins skipped; run {} on cpu, out of core within {mem} MiB",
            c.addresses,
            c.clusters,
            c.largest,
            c.linked_transactions,
            c.coinjoins_skipped,
            c.run_id
        );
        match c.continued_from {
            Some(t) => println!(
                "continued the last run from transaction {t}: only the transactions after it were read"
            ),
            None => println!("clustered from the first block"),
        }
        print!("{}", c.summary);
        return Ok(());
    }
    if a.full {
        bail!(
            "--full is for out-of-core runs (--mem-mb); an in-memory run always starts from the first block"
        );
    }
    let run = cluster_btc(&wh, &backend, &opts)
        .await
        .context("clustering btc")?;
    let id = write_btc_clusters(&wh, &run, params).await?;
    let c = &run.clusters;
    println!(
        "{} addresses in {} clusters (largest {}); {} transactions linked, {} CoinJoins skipped; run {id} on {}",
        c.addresses.len(),
        c.count(),
        c.cluster_size.iter().max().copied().unwrap_or(0),
        c.linked_transactions,
        c.coinjoins_skipped,
        backend.describe()
    );
    print!("{}", ferret_kernels::cluster::summary(&run));
    Ok(())
}

async fn cluster_why_cmd(a: ClusterWhyArgs) -> Result<()> {
    let wh = Warehouse::open_existing(&a.warehouse)?;
    match ferret_kernels::cluster::cluster_path(&wh, &a.a, &a.b).await? {
        None => {
            println!(
                "{} and {} are not in one cluster (latest clusters run)",
                a.a, a.b
            );
        }
        Some(steps) => {
            println!(
                "{} and {} are in one cluster, joined by {} co-spend{}:",
                a.a,
                a.b,
                steps.len(),
                if steps.len() == 1 { "" } else { "s" }
            );
            for (i, (x, y, txid, height)) in steps.iter().enumerate() {
                println!(
                    "{:>3}. {x} and {y} spent together in {txid} (height {height})",
                    i + 1
                );
            }
        }
    }
    Ok(())
}

use ferret_kernels::taint::trace::btc;

/// The taint job the arguments describe.
fn taint_job(a: &TaintArgs) -> Result<ferret_kernels::taint::job::TaintJob> {
    use ferret_kernels::taint::job::TaintJob;
    if a.seed.is_empty() && a.seed_category.is_empty() {
        bail!("give seeds: --seed ADDRESS|TXID (repeatable) or --seed-category CATEGORY");
    }
    if a.min_value < 0 {
        bail!("--min-value must be ≥ 0 sats");
    }
    // 64 hex digits are a txid; anything else an address.
    let is_txid = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let (txids, addresses): (Vec<String>, Vec<String>) =
        a.seed.iter().cloned().partition(|s| is_txid(s));
    let job = TaintJob {
        policy: a.policy,
        direction: a.direction,
        max_hops: a.hops,
        min_value: a.min_value,
        seed_addresses: addresses,
        seed_txids: txids.into_iter().map(|t| t.to_ascii_lowercase()).collect(),
        seed_categories: a.seed_category.clone(),
        stop_categories: a.stop_at.clone(),
        with_flows: false,
    };
    Ok(job)
}

/// Runs the taint job the arguments describe.
async fn taint_run(a: &TaintArgs) -> Result<(Warehouse, ferret_kernels::taint::job::TaintRun)> {
    taint_run_with(a, false).await
}

/// [`taint_run`], with the address-to-address flows when `flows` (a trace draws them).
async fn taint_run_with(
    a: &TaintArgs,
    flows: bool,
) -> Result<(Warehouse, ferret_kernels::taint::job::TaintRun)> {
    use ferret_kernels::taint::job::taint_btc;
    let mut job = taint_job(a)?;
    job.with_flows = flows;
    let wh = Warehouse::open_existing(&a.warehouse)?;
    let backend = ferret_kernels::device::select(a.device)?;
    let run = taint_btc(&wh, &backend, &job)
        .await
        .context("tracing btc taint")?;
    Ok((wh, run))
}

/// The Ethereum taint job the arguments describe.
fn eth_taint_job(a: &EthTaintArgs) -> Result<ferret_kernels::account::job::EthTaintJob> {
    if a.seed.is_empty() && a.seed_category.is_empty() {
        bail!("give seeds: --seed ADDRESS (repeatable) or --seed-category CATEGORY");
    }
    if !(a.min_value >= 0.0 && a.min_value.is_finite()) {
        bail!("--min-value must be a number ≥ 0");
    }
    Ok(ferret_kernels::account::job::EthTaintJob {
        policy: a.policy,
        direction: a.direction,
        asset: if a.asset == "*" || a.asset.eq_ignore_ascii_case("eth") {
            a.asset.to_ascii_uppercase()
        } else {
            a.asset.to_ascii_lowercase()
        },
        max_hops: a.hops,
        min_value: a.min_value,
        seed_addresses: a.seed.iter().map(|s| s.to_ascii_lowercase()).collect(),
        seed_categories: a.seed_category.clone(),
        stop_categories: a.stop_at.clone(),
    })
}

/// Runs the Ethereum taint job the arguments describe.
async fn eth_taint_run(
    a: &EthTaintArgs,
) -> Result<(Warehouse, ferret_kernels::account::job::EthTaintRun)> {
    use ferret_kernels::account::job::taint_eth;
    let job = eth_taint_job(a)?;
    let wh = Warehouse::open_existing(&a.warehouse)?;
    let backend = ferret_kernels::device::select(a.device)?;
    let run = taint_eth(&wh, &backend, &job)
        .await
        .context("tracing eth taint")?;
    Ok((wh, run))
}

async fn trace_eth_cmd(a: TraceEthArgs) -> Result<()> {
    let (wh, run) = eth_taint_run(&a.taint).await?;
    let line = draw_trace(&wh, "eth", &run.trace_run(), &a.out, a.max_nodes).await?;
    println!("{line}");
    Ok(())
}

async fn taint_eth_cmd(a: TaintEthArgs) -> Result<()> {
    use ferret_kernels::account::job::write_eth_taint;
    if let Some((budget, _dir)) = a.budget.budget()? {
        use ferret_kernels::account::stored::taint_eth_stored;
        if a.taint.device == ferret_kernels::device::DeviceChoice::Gpu {
            bail!(
                "--mem-mb runs eth taint on the CPU (its steps stream sorted files): drop --device gpu"
            );
        }
        let job = eth_taint_job(&a.taint)?;
        let wh = Warehouse::open_existing(&a.taint.warehouse)?;
        let (r, run_id) = tokio::task::spawn_blocking(move || taint_eth_stored(&wh, &job, &budget))
            .await
            .context("the out-of-core taint run stopped")?
            .context("tracing eth taint out of core")?;
        let device = format!(
            "the CPU, out of core ({} partitions, {} partition walks)",
            r.stats.partitions, r.stats.walks
        );
        let summary = EthSummary {
            job: &r.job,
            transfers: r.transfers,
            reached: r.reached,
            max_hop: r.max_hop,
            beyond: r.beyond,
            steps: r.steps,
            device: &device,
            unknown_seeds: &r.unknown_seeds,
            exits: &r.exits,
        };
        print_eth_report(&summary, &run_id, a.top);
        return Ok(());
    }
    let (wh, run) = eth_taint_run(&a.taint).await?;
    let run_id = write_eth_taint(&wh, &run).await?;
    let beyond: f64 = run
        .addresses
        .iter()
        .filter(|x| x.hop > 0)
        .map(|x| x.tainted_value)
        .sum();
    let summary = EthSummary {
        job: &run.job,
        transfers: run.transfers.graph.src.len() as u64,
        reached: run.addresses.len() as u64,
        max_hop: run.addresses.iter().map(|x| x.hop).max().unwrap_or(0),
        beyond,
        steps: run.steps,
        device: &run.device,
        unknown_seeds: &run.unknown_seeds,
        exits: &run.exits,
    };
    print_eth_report(&summary, &run_id, a.top);
    Ok(())
}

/// What the Ethereum taint report prints, from either path.
struct EthSummary<'a> {
    job: &'a ferret_kernels::account::job::EthTaintJob,
    transfers: u64,
    reached: u64,
    max_hop: u32,
    beyond: f64,
    steps: u32,
    device: &'a str,
    unknown_seeds: &'a [String],
    exits: &'a [ferret_kernels::account::job::EthExit],
}

fn print_eth_report(s: &EthSummary<'_>, run_id: &str, top: usize) {
    let job = s.job;
    let unit = if job.asset == "ETH" { 1e18 } else { 1.0 };
    let unit_name = if job.asset == "ETH" {
        "ETH".to_string()
    } else {
        format!("units of {}", job.asset)
    };
    println!(
        "{} {} over {} transfers of {}: {} addresses reached up to hop {}, {:.6} {unit_name} tainted beyond the seeds; {} steps on {}; run {run_id}",
        job.policy.as_str(),
        job.direction.as_str(),
        s.transfers,
        job.asset,
        s.reached,
        s.max_hop,
        s.beyond / unit,
        s.steps,
        s.device,
    );
    if !s.unknown_seeds.is_empty() {
        println!(
            "without transfers of {}: {}",
            job.asset,
            s.unknown_seeds.join(", ")
        );
    }
    if s.exits.is_empty() {
        println!("no labelled exit received taint");
    } else {
        println!(
            "\n{} exits received taint (table `eth_exits`; top {}):",
            s.exits.len(),
            top.min(s.exits.len())
        );
        println!(
            "{:<44} {:<18} {:<10} {:>22} {:>9} {:>7}",
            "address", "label", "category", unit_name, "transfers", "min hop"
        );
        for e in s.exits.iter().take(top) {
            println!(
                "{:<44} {:<18} {:<10} {:>22.6} {:>9} {:>7}",
                e.address,
                e.label,
                e.category,
                e.tainted_value / unit,
                e.tainted_transfers,
                e.min_hop
            );
        }
    }
}

async fn taint_btc_cmd(a: TaintBtcArgs) -> Result<()> {
    use ferret_kernels::taint::job::write_taint;
    use ferret_kernels::taint::stored_job::{TaintTotals, taint_btc_stored};
    if let Some((budget, _dir)) = a.budget.budget()? {
        let job = taint_job(&a.taint)?;
        let wh = Warehouse::open_existing(&a.taint.warehouse)?;
        let backend = ferret_kernels::device::select(a.taint.device)?;
        let r = tokio::task::spawn_blocking(move || taint_btc_stored(&backend, &wh, &job, &budget))
            .await
            .context("the out-of-core taint run stopped")?
            .context("tracing btc taint out of core")?;
        print_taint_report(&r.run, &r.totals, &r.run_id, a.top);
        return Ok(());
    }
    let (wh, run) = taint_run(&a.taint).await?;
    let run_id = write_taint(&wh, &run).await?;
    print_taint_report(&run, &TaintTotals::of(&run), &run_id, a.top);
    Ok(())
}

/// The summary line and the exits report of a taint run.
pub(crate) fn print_taint_report(
    run: &ferret_kernels::taint::job::TaintRun,
    totals: &ferret_kernels::taint::stored_job::TaintTotals,
    run_id: &str,
    top: usize,
) {
    let job = &run.job;
    let tainted = totals.tainted_beyond_seeds;
    let max_hop = totals.max_hop;
    // Without a hop limit the fixpoint is one pass in chain order, on the CPU.
    let how = match job.max_hops {
        Some(_) => format!("{} steps over", run.steps),
        None => "the fixpoint in one pass in chain order over".to_string(),
    };
    let device = if job.max_hops.is_none() && run.device.starts_with("gpu") {
        "the CPU (the pass does not use the GPU)".to_string()
    } else {
        run.device.clone()
    };
    println!(
        "{} {} from {} seed outputs: {} tainted outputs up to hop {max_hop}, {} BTC tainted beyond the seeds; {how} {} nodes / {} edges on {device}; run {run_id}",
        job.policy.as_str(),
        job.direction.as_str(),
        run.seed_outputs,
        totals.outputs,
        btc(tainted),
        run.nodes,
        run.edges,
    );
    if !run.unknown_seeds.is_empty() {
        println!("not on the indexed chain: {}", run.unknown_seeds.join(", "));
    }
    if run.exits.is_empty() {
        println!("no labelled exit received taint");
    } else {
        let total: i64 = run.exits.iter().map(|e| e.tainted_value).sum();
        let all: i64 = run.exits.iter().map(|e| e.all_paths_value).sum();
        let mixed: i64 = run.exits.iter().map(|e| e.coinjoin_value).sum();
        let within = match job.max_hops {
            Some(h) => format!(" within {h} hops"),
            None => String::new(),
        };
        println!(
            "\n{} exits received {} BTC{within} (table `exits`; top {}):",
            run.exits.len(),
            btc(total),
            top.min(run.exits.len())
        );
        // The summary adds up the hop-limited amounts (the `taint` table's definition);
        // say when every path brings more, and how much came only through CoinJoins.
        let differ = run
            .exits
            .iter()
            .filter(|e| e.all_paths_value != e.tainted_value)
            .count();
        if differ > 0 {
            println!(
                "along every path, however long, they received {} BTC: {differ} exit(s) received more than{within} (column all_paths_value)",
                btc(all)
            );
        }
        if mixed > 0 {
            println!(
                "{} BTC of that arrived only through CoinJoins ({} mixes moved taint; column coinjoin_value)",
                btc(mixed),
                run.coinjoins_passed
            );
        }
        println!(
            "{:<44} {:<18} {:<10} {:>18} {:>18} {:>18} {:>7} {:>7}",
            "address",
            "label",
            "category",
            "tainted BTC",
            "all paths BTC",
            "via CoinJoin BTC",
            "outputs",
            "min hop"
        );
        for e in run.exits.iter().take(top) {
            println!(
                "{:<44} {:<18} {:<10} {:>18} {:>18} {:>18} {:>7} {:>7}",
                e.address,
                e.label,
                e.category,
                btc(e.tainted_value),
                btc(e.all_paths_value),
                btc(e.coinjoin_value),
                e.outputs,
                e.min_hop
            );
        }
    }
}

async fn trace_btc_cmd(a: TraceBtcArgs) -> Result<()> {
    let (wh, run) = taint_run_with(&a.taint, true).await?;
    let line = write_trace(&wh, &run, &a.out, a.max_nodes).await?;
    println!("{line}");
    Ok(())
}

/// Draws a taint run (clusters and labels from the warehouse) into PREFIX.svg, .html and
/// .dot; returns a one-line summary.
pub(crate) async fn write_trace(
    wh: &Warehouse,
    run: &ferret_kernels::taint::job::TaintRun,
    prefix: &std::path::Path,
    max_nodes: usize,
) -> Result<String> {
    draw_trace(wh, "btc", &run.into(), prefix, max_nodes).await
}

/// Draws a run of `chain` (clusters and labels from the warehouse) into PREFIX.svg, .html
/// and .dot; returns a one-line summary.
pub(crate) async fn draw_trace(
    wh: &Warehouse,
    chain: &str,
    run: &ferret_kernels::taint::trace::TraceRun,
    prefix: &std::path::Path,
    max_nodes: usize,
) -> Result<String> {
    use ferret_kernels::taint::trace::{Picture, TraceInput};
    let input = TraceInput::load(wh, chain, max_nodes).await?;
    let pic = Picture::new(run, &input);
    let mut written = Vec::new();
    for (ext, body) in [
        ("svg", pic.svg()),
        ("html", pic.html(run)),
        ("dot", pic.dot()),
    ] {
        let path = prefix.with_extension(ext);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&path, body).with_context(|| format!("writing {}", path.display()))?;
        written.push(path.display().to_string());
    }
    Ok(format!(
        "{} nodes, {} edges ({} folded) from {} and {} exits: {}",
        pic.nodes(),
        pic.edges(),
        pic.hidden(),
        run.reached,
        run.exits.len(),
        written.join(", ")
    ))
}

async fn labels_import_cmd(a: LabelsImportArgs) -> Result<()> {
    use ferret_indexer::labels::{Defaults, import};
    let wh = Warehouse::open(&a.warehouse)?;
    let d = Defaults {
        chain: a.chain,
        category: a.category,
        label: a.label,
        source: a.source,
    };
    let s = import(&wh, &a.files, &d, a.skip_invalid).await?;
    for k in &s.skipped {
        eprintln!("skipped {}:{}: {}", k.path.display(), k.line, k.reason);
    }
    println!(
        "read {} labels, {} new, {} skipped as invalid; the labels table has {} rows{}",
        s.read,
        s.added,
        s.skipped.len(),
        s.total,
        s.run_id
            .map(|r| format!(" (run {r})"))
            .unwrap_or_else(|| " (unchanged)".into())
    );
    Ok(())
}

async fn labels_export_cmd(a: LabelsExportArgs) -> Result<()> {
    use ferret_indexer::label_export::{Options, filter, render_with};
    let wh = Warehouse::open_existing(&a.warehouse)?;
    let (labels, provenance) = match &a.case {
        None => {
            let mut labels = ferret_indexer::labels::load_labels(&wh).await?;
            labels.sort();
            (filter(labels, &a.chain, &a.category, &a.source), Vec::new())
        }
        Some(case) => {
            if !(a.exit_min.is_finite() && a.exit_min >= 0.0)
                || a.tainted_min.is_some_and(|t| !(t.is_finite() && t >= 0.0))
            {
                bail!("--exit-min and --tainted-min take a number ≥ 0");
            }
            let o = ferret_cases::findings::FindingsOptions {
                run: a.run.clone(),
                category: a.finding_category.clone(),
                exit_min: a.exit_min,
                tainted_min: a.tainted_min,
            };
            let rows = ferret_cases::findings::findings(&wh, case, &o).await?;
            let keep = |l: &ferret_indexer::labels::Label| {
                (a.chain.is_empty() || a.chain.contains(&l.chain))
                    && (a.category.is_empty() || a.category.contains(&l.category))
            };
            rows.into_iter()
                .filter(|(l, _)| keep(l))
                .map(|(l, p)| (l, Some(p)))
                .unzip()
        }
    };
    let created = ferret_indexer::label_export::rfc3339(std::time::SystemTime::now());
    let text = render_with(
        &labels,
        &provenance,
        a.format,
        &Options {
            title: a.title,
            creator: a.creator,
            tlp: a.tlp,
            created,
        },
    )
    .map_err(|e| anyhow::anyhow!("rendering {:?}: {e}", a.format))?;
    let tmp = a.out.with_extension("ferret-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.out).with_context(|| format!("renaming into {}", a.out.display()))?;
    println!("exported {} labels to {}", labels.len(), a.out.display());
    Ok(())
}

async fn verify_cmd(a: VerifyArgs) -> Result<()> {
    let wh = Warehouse::open_existing(&a.warehouse)?;
    let report = |what: &str, r: ferret_schemas::warehouse::VerifyReport, before: &str| {
        if r.files + r.unchecked == 0 {
            return;
        }
        println!(
            "{what}: {} files ({:.1} MiB) match their SHA-256{}",
            r.files,
            r.bytes as f64 / (1 << 20) as f64,
            if r.unchecked > 0 {
                format!(
                    "; {} written before checksums were recorded ({before} checked)",
                    r.unchecked
                )
            } else {
                String::new()
            }
        );
    };
    for &chain in ferret_schemas::Chain::all() {
        report(chain.as_str(), wh.verify_checksums(chain).await?, "sizes");
    }
    report("results", wh.verify_results().await?, "presence");
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
    let wh = Warehouse::open_existing(&a.warehouse)?;
    if a.budget.mem_mb == Some(0) {
        bail!("--mem-mb must be at least 1");
    }
    if let Some(mb) = a.budget.mem_mb {
        mib(mb, "--mem-mb")?;
    }
    let kernels = ferret_query::KernelOptions {
        mem_mb: a.budget.mem_mb,
        scratch: a.budget.scratch.clone(),
    };
    let ctx = ferret_query::session_with(&wh, kernels).await?;
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
        EnvFilter::new("warn,ferret=info,ferret_indexer=info,ferret_query=info,ferret_kernels=info")
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// mimalloc holds freed memory for its purge delay (1 s by default) before returning it
/// to the system; under the churn of row groups decoded and dropped, that is 100+ MB of
/// a budgeted run's peak. A run given a memory budget (`--mem-mb`, `FERRET_MEM_MB`)
/// asks for 100 ms instead (benches/README.md, "Where the fixed overhead of an
/// out-of-core Bitcoin run goes": the poison job at `--mem-mb 256` peaks at 358-376 MB
/// instead of 430-516, ~15 % slower). The allocator reads its options from the
/// environment before `main`, so the process starts itself again once with the option
/// set; a value the user set is kept, and where the executable cannot be found again the
/// run goes on with the defaults. Runs without a budget (indexing) keep the defaults.
const PURGE_DELAY: (&str, &str) = ("MIMALLOC_PURGE_DELAY", "100");

fn allocator_options() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(PURGE_DELAY.0).is_some() {
        return;
    }
    let budgeted = std::env::var_os("FERRET_MEM_MB").is_some()
        || std::env::args_os().any(|a| {
            let a = a.to_string_lossy();
            a == "--mem-mb" || a.starts_with("--mem-mb=")
        });
    if !budgeted {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // `exec` returns only when it failed: then carry on in this process.
    let _failed = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env(PURGE_DELAY.0, PURGE_DELAY.1)
        .exec();
}

fn listen_addr(s: &str, what: &str) -> Result<Option<std::net::SocketAddr>> {
    if s == "off" {
        return Ok(None);
    }
    use std::net::ToSocketAddrs;
    let addr = s
        .to_socket_addrs()
        .with_context(|| format!("{what} `{s}` is not HOST:PORT"))?
        .next()
        .with_context(|| format!("{what} `{s}` resolves to no address"))?;
    Ok(Some(addr))
}

async fn serve_cmd(a: ServeArgs) -> Result<()> {
    let users = ferret_serve::Users::load(&a.users)?;
    let wh = Warehouse::open_existing(&a.warehouse)?;
    if let Some(mb) = a.budget.mem_mb {
        mib(mb, "--mem-mb")?;
    }
    if a.query_memory_mb == 0 {
        bail!("--query-memory-mb must be at least 1");
    }
    if a.statement_timeout_ms == 0 {
        bail!("--statement-timeout-ms must be at least 1");
    }
    let config = ferret_serve::Config {
        pg_listen: listen_addr(&a.pg_listen, "--pg-listen")?,
        flight_listen: listen_addr(&a.flight_listen, "--flight-listen")?,
        tls: a.tls_cert.clone().zip(a.tls_key.clone()),
        allow_plaintext: a.allow_plaintext,
        limits: ferret_serve::Limits {
            statement_timeout: std::time::Duration::from_millis(a.statement_timeout_ms),
            query_memory: mib(a.query_memory_mb, "--query-memory-mb")?,
            max_connections: a.max_connections.max(1),
            max_concurrent_queries: a.max_concurrent_queries.max(1),
            ..Default::default()
        },
        kernels: ferret_query::KernelOptions {
            mem_mb: a.budget.mem_mb,
            scratch: a.budget.scratch.clone(),
        },
    };
    let running = ferret_serve::start(wh, users, config).await?;
    // Tests and scripts read the bound ports from these lines (port 0 picks one).
    if let Some(p) = running.pg_addr {
        println!("pg listening on {p}");
    }
    if let Some(f) = running.flight_addr {
        println!("flight listening on {f}");
    }
    std::io::stdout().flush().ok();
    #[cfg(unix)]
    {
        // SIGHUP reloads the users file, and so does a change to it (a mounted Secret);
        // a file that does not load is logged and the old users kept.
        let handle = running.users_handle();
        if a.users_reload_secs > 0 {
            handle.watch(
                a.users.clone(),
                std::time::Duration::from_secs(a.users_reload_secs),
            );
        }
        let path = a.users.clone();
        if let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    if let Err(e) = handle.reload_from(&path) {
                        tracing::error!(error = %e, file = %path.display(), "users not reloaded: keeping the old ones");
                    }
                }
            });
        }
    }
    let stop = running.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        stop.cancel();
    });
    running.wait().await;
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn users_cmd(c: UsersCmd) -> Result<()> {
    use ferret_serve::{User, Users};
    let load_or_new = |f: &std::path::Path| -> Result<Users> {
        if f.exists() {
            Ok(Users::load(f)?)
        } else {
            Ok(Users::default())
        }
    };
    match c {
        UsersCmd::Add(a) => {
            let path = &a.user.file.file;
            let mut users = load_or_new(path)?;
            let mut line = String::new();
            std::io::stdin()
                .take(4096)
                .read_to_string(&mut line)
                .context("reading the password from standard input")?;
            let password = line.lines().next().unwrap_or_default();
            let user = User::new(a.role, password)?;
            users.add(&a.user.name, user, a.force)?;
            users.save(path)?;
            eprintln!(
                "{} {} ({}) in {}",
                if a.force { "set" } else { "added" },
                a.user.name,
                a.role,
                path.display()
            );
        }
        UsersCmd::Remove(a) => {
            let mut users = Users::load(&a.file.file)?;
            if !users.remove(&a.name) {
                bail!("no user `{}` in {}", a.name, a.file.file.display());
            }
            users.save(&a.file.file)?;
            eprintln!("removed {}", a.name);
        }
        UsersCmd::List(a) => {
            for (name, role) in Users::load(&a.file)?.list() {
                println!("{name}\t{role}");
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    allocator_options();
    let cli = Cli::parse();
    if let Some(t) = cli.store_timeout {
        ferret_schemas::warehouse::set_store_timeout(std::time::Duration::from_secs(t.max(1)));
    }
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
            Command::Index(IndexCmd::Eth(a)) => index_eth_cmd(a).await,
            Command::Synth(SynthCmd::Btc(a)) => synth_btc_cmd(a),
            Command::Synth(SynthCmd::Eth(a)) => synth_eth_cmd(a).await,
            Command::Cluster(ClusterCmd::Btc(a)) => cluster_btc_cmd(a).await,
            Command::Typologies(TypologiesCmd::Btc(a)) => typologies_btc_cmd(a).await,
            Command::Typologies(TypologiesCmd::Eth(a)) => typologies_eth_cmd(a).await,
            Command::Cluster(ClusterCmd::Eth(a)) => cluster_eth_cmd(a).await,
            Command::Cluster(ClusterCmd::Why(a)) => cluster_why_cmd(a).await,
            Command::Taint(TaintCmd::Btc(a)) => taint_btc_cmd(a).await,
            Command::Taint(TaintCmd::Eth(a)) => taint_eth_cmd(a).await,
            Command::Trace(TraceCmd::Btc(a)) => trace_btc_cmd(a).await,
            Command::Trace(TraceCmd::Eth(a)) => trace_eth_cmd(a).await,
            Command::Labels(LabelsCmd::Import(a)) => labels_import_cmd(a).await,
            Command::Labels(LabelsCmd::Export(a)) => labels_export_cmd(a).await,
            Command::Sql(a) => sql_cmd(a).await,
            Command::Verify(a) => verify_cmd(a).await,
            Command::Demo(a) => demo::run(a).await,
            Command::Serve(a) => serve_cmd(a).await,
            Command::Users(c) => users_cmd(c),
            Command::Case(c) => cases::case_cmd(c).await,
            Command::Jobs(c) => cases::jobs_cmd(c).await,
            Command::Extract(a) => cases::extract_cmd(a).await,
            Command::Report(a) => cases::report_cmd(a).await,
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
