//! `ferret demo`: generate a chain with planted scam flows, index it into the embedded
//! default warehouse, and show what SQL finds.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ferret_indexer::btc::{IndexOptions, index_btc};
use ferret_query::output::Format;
use ferret_schemas::Warehouse;

#[derive(Args)]
pub struct DemoArgs {
    /// Where the generated blocks dir and truth files go.
    #[arg(long, default_value = "./demo")]
    dir: PathBuf,
    /// Warehouse URL.
    #[arg(long, default_value = "./warehouse", env = "FERRET_WAREHOUSE")]
    warehouse: String,
    /// Blocks to generate.
    #[arg(long, default_value_t = 300)]
    blocks: u32,
    /// Transactions per block.
    #[arg(long, default_value_t = 60)]
    txs_per_block: u32,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where the kernels run: auto (a hardware GPU if any, else CPU), gpu, cpu.
    #[arg(long, default_value = "auto")]
    device: ferret_kernels::device::DeviceChoice,
    /// Skip the Ethereum part (it runs when anvil is installed: see FERRET_ANVIL).
    #[arg(long)]
    no_eth: bool,
}

const QUERIES: &[(&str, &str)] = &[
    (
        "The warehouse: rows per table",
        "SELECT 'blocks' AS table_name, count(*) AS row_count FROM btc.blocks
         UNION ALL SELECT 'transactions', count(*) FROM btc.transactions
         UNION ALL SELECT 'inputs', count(*) FROM btc.inputs
         UNION ALL SELECT 'outputs', count(*) FROM btc.outputs
         ORDER BY table_name",
    ),
    (
        "Top receiving addresses (sats received)",
        "SELECT address, count(*) AS payments, sum(value) AS received
         FROM btc.outputs WHERE address IS NOT NULL
         GROUP BY address ORDER BY received DESC LIMIT 5",
    ),
    (
        "Fees per 50 blocks",
        "SELECT height / 50 * 50 AS from_height, count(*) AS txs, sum(fee) AS fees,
                approx_median(fee) AS median_fee
         FROM btc.transactions WHERE NOT is_coinbase
         GROUP BY 1 ORDER BY 1",
    ),
    (
        "Scam money reaching exchanges: known scam addresses followed hop by hop with SQL",
        "SELECT l.label AS exchange, count(DISTINCT o.txid) AS cashout_txs,
                sum(o.value) AS sats_received, min(f.hop) AS min_hops
         FROM scam_flow f
         JOIN btc.outputs o ON o.tx_index = f.tx_index
         JOIN truth_labels l ON o.address = l.address AND l.category = 'exchange'
         GROUP BY l.label ORDER BY sats_received DESC",
    ),
    (
        "Planted cash-outs (truth/cashouts.csv) that the SQL trace reached",
        "SELECT count(*) AS planted, count(f.txid) AS found_by_sql,
                sum(c.amount) AS planted_sats
         FROM truth_cashouts c LEFT JOIN scam_flow f ON f.txid = c.txid",
    ),
];

const SCAM_FLOW_VIEW: &str = "CREATE VIEW scam_flow AS
    WITH RECURSIVE flow(tx_index, txid, hop) AS (
        SELECT i.tx_index, i.txid, 1 FROM btc.inputs i
        JOIN truth_labels l ON i.address = l.address WHERE l.category = 'scam'
      UNION ALL
        SELECT i.tx_index, i.txid, f.hop + 1 FROM flow f
        JOIN btc.outputs o ON o.tx_index = f.tx_index
        JOIN btc.inputs i ON i.spent_tx_index = o.tx_index AND i.spent_vout = o.vout
        WHERE f.hop < 8 AND (o.address IS NULL OR o.address NOT IN
          (SELECT address FROM truth_labels WHERE category = 'exchange'))
          AND f.txid NOT IN (SELECT txid FROM truth_coinjoins WHERE protocol <> 'whirlpool_tx0')
    )
    SELECT tx_index, txid, min(hop) AS hop FROM flow GROUP BY tx_index, txid";

pub async fn run(a: DemoArgs) -> Result<()> {
    let blocks_dir = a.dir.join("blocks");
    if !blocks_dir.join("blk00000.dat").exists() {
        let cfg = ferret_testkit::synth::btc::SynthConfig {
            blocks: a.blocks,
            seed: a.seed,
            txs_per_block: a.txs_per_block,
            ..Default::default()
        };
        let s = ferret_testkit::synth::btc::generate(&cfg, &a.dir)
            .with_context(|| format!("generating a chain in {}", a.dir.display()))?;
        println!(
            "generated {} blocks, {} transactions, {} planted scam flows in {}",
            s.blocks,
            s.transactions,
            s.scam_flows,
            blocks_dir.display()
        );
    }
    let wh = Warehouse::open(&a.warehouse)?;
    let mut opts = IndexOptions::new(&blocks_dir);
    opts.progress = true;
    opts.commit_blocks = 100;
    let summary = index_btc(&wh, &opts)
        .await
        .context("indexing the generated chain")?;
    println!("{summary}\n");

    let ctx = ferret_query::session(&wh).await?;
    // The truth files stand in for what an investigator knows (labels, the CoinJoins, not
    // followed: paths through them multiply past any use) and for checking what SQL
    // finds (the planted cash-outs).
    for (table, file) in [
        ("truth_labels", "labels.csv"),
        ("truth_cashouts", "cashouts.csv"),
        ("truth_coinjoins", "coinjoins.csv"),
    ] {
        let path = a.dir.join("truth").join(file);
        let url = path.to_str().context("demo dir is not valid UTF-8")?;
        ctx.register_csv(table, url, datafusion_csv_options())
            .await
            .with_context(|| format!("reading {}", path.display()))?;
    }
    // Transactions reached from the labelled scam addresses, hop by hop, stopping at
    // exchanges (where money is cashed out), with the smallest hop count of each.
    ctx.sql(SCAM_FLOW_VIEW).await?;
    for (title, sql) in QUERIES {
        println!("-- {title}");
        let results = ferret_query::run_sql(&ctx, sql).await?;
        let mut out = std::io::stdout().lock();
        for r in &results {
            ferret_query::output::write(Format::Table, &r.schema, &r.batches, &mut out)?;
        }
        println!();
    }
    kernels(&a, &wh).await?;
    case(&a, &wh).await?;
    if a.no_eth {
        println!("-- Ethereum: skipped (--no-eth)\n");
    } else if ferret_testkit::anvil::find_anvil().is_none() {
        println!(
            "-- Ethereum: skipped (anvil not found: scripts/test.sh installs it; or set FERRET_ANVIL)\n"
        );
    } else {
        ethereum(&a, &wh).await?;
    }
    println!(
        "Try your own: ferret sql --warehouse {} \"SELECT * FROM exits ORDER BY tainted_value DESC LIMIT 5\"",
        a.warehouse
    );
    Ok(())
}

/// The Ethereum part: a local anvil node driven through an economy with planted scams,
/// indexed into the same warehouse, deposit-address clusters, and taint from the scam
/// labels to the exchanges in ETH and in the stablecoin, checked against the truth.
async fn ethereum(a: &DemoArgs, wh: &Warehouse) -> Result<()> {
    use ferret_indexer::eth::{EthOptions, index_eth};
    use ferret_kernels::account::deposit::{DepositRule, cluster_eth};
    use ferret_kernels::account::job::{EthTaintJob, taint_eth, write_eth_taint};

    // A fixed genesis time: the same seed gives the same chain on every run.
    let node = ferret_testkit::anvil::Anvil::start(&["--timestamp", "1700000000"])
        .await
        .context("starting anvil")?;
    let dir = a.dir.join("eth");
    let cfg = ferret_testkit::synth::eth::EthSynthConfig {
        seed: a.seed,
        ..Default::default()
    };
    let s = ferret_testkit::synth::eth::generate(node.url(), &cfg, &dir)
        .await
        .context("driving anvil through the Ethereum scenario")?;
    println!(
        "-- Ethereum: anvil at {} mined {} blocks, {} transactions ({} reverted), {} planted cash-outs",
        node.url(),
        s.blocks,
        s.transactions,
        s.reverted,
        s.cashouts
    );
    let mut opts = EthOptions::new(node.url());
    opts.progress = true;
    let summary = index_eth(wh, &opts, None)
        .await
        .context("indexing the Ethereum scenario")?;
    println!("{summary}\n");
    let labels = dir.join("truth").join("labels.csv");
    ferret_indexer::labels::import(wh, &[labels], &Default::default(), false)
        .await
        .context("importing the Ethereum labels")?;
    let backend = ferret_kernels::device::select(a.device)?;
    let d = cluster_eth(wh, &backend, &DepositRule::default())
        .await
        .context("deposit-address clustering")?;
    let run = ferret_kernels::cluster::write_clusters(wh, &d.clusters).await?;
    println!(
        "-- Deposit-address clusters: {} deposit addresses, {} addresses in {} clusters; run {run}\n",
        d.deposit_addresses.len(),
        d.clusters.addresses.len(),
        d.clusters.count()
    );
    let ctx = ferret_query::session(wh).await?;
    let path = dir.join("truth").join("cashouts.csv");
    let url = path.to_str().context("demo dir is not valid UTF-8")?;
    ctx.register_csv("truth_eth_cashouts", url, datafusion_csv_options())
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    let assets = ferret_query::run_sql(
        &ctx,
        "SELECT DISTINCT asset FROM truth_eth_cashouts ORDER BY asset",
    )
    .await?;
    let mut names = Vec::new();
    for r in &assets {
        for b in &r.batches {
            let col = arrow::array::AsArray::as_string::<i32>(b.column(0));
            names.extend(col.iter().flatten().map(str::to_string));
        }
    }
    for asset in names {
        let job = EthTaintJob {
            asset: asset.clone(),
            seed_categories: vec!["scam".into()],
            stop_categories: vec!["exchange".into()],
            ..Default::default()
        };
        let run = taint_eth(wh, &backend, &job).await.context("eth taint")?;
        let run_id = write_eth_taint(wh, &run).await?;
        let unit = if asset == "ETH" { "ETH" } else { "fUSD" };
        let scale = if asset == "ETH" { 1e18 } else { 1e6 };
        println!(
            "-- Taint (haircut pools) of {unit} from every `scam` address, stopping at `exchange` addresses; run {run_id}"
        );
        for e in &run.exits {
            println!(
                "   {:<44} {:<16} {:>14.2} {unit}  min hop {}",
                e.address,
                e.label,
                e.tainted_value / scale,
                e.min_hop
            );
        }
        let ctx = ferret_query::session(wh).await?;
        ctx.register_csv("truth_eth_cashouts", url, datafusion_csv_options())
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        println!(
            "-- Planted {unit} cash-outs found (same deposit address, same hop, amount within 1%)"
        );
        let sql = format!(
            "SELECT count(*) AS planted, count(t.address) AS found_by_taint,
                    count(*) FILTER (WHERE t.hop = c.hops) AS at_planted_hop,
                    count(*) FILTER (WHERE abs(t.tainted_value - CAST(c.amount AS DOUBLE)) <= 0.01 * CAST(c.amount AS DOUBLE)) AS amount_within_1pct
             FROM truth_eth_cashouts c LEFT JOIN eth_taint t ON t.address = c.exit
             WHERE c.asset = '{asset}'"
        );
        let results = ferret_query::run_sql(&ctx, &sql).await?;
        let mut out = std::io::stdout().lock();
        for r in &results {
            ferret_query::output::write(Format::Table, &r.schema, &r.batches, &mut out)?;
        }
        println!();
    }
    Ok(())
}

/// The kernels on the demo chain: labels in, clusters, taint from the scam labels to the
/// exchanges, the exits report, the picture, and a check against the planted truth.
async fn kernels(a: &DemoArgs, wh: &Warehouse) -> Result<()> {
    use ferret_kernels::cluster::accuracy::{Truth, evaluate};
    use ferret_kernels::cluster::{ClusterOptions, write_btc_clusters};
    use ferret_kernels::taint::job::{TaintJob, taint_btc, write_taint};

    let labels = a.dir.join("truth").join("labels.csv");
    let s = ferret_indexer::labels::import(wh, &[labels], &Default::default(), false)
        .await
        .context("importing the demo labels")?;
    println!(
        "-- Labels: {} read from truth/labels.csv, {} new; the labels table has {} rows\n",
        s.read, s.added, s.total
    );
    let backend = ferret_kernels::device::select(a.device)?;
    let truth = Truth::from_dir(&a.dir.join("truth")).context("reading the demo's truth")?;
    let opts = ClusterOptions::default();
    let (run, accuracy) = evaluate(wh, &backend, &opts, &truth)
        .await
        .context("clustering")?;
    let id = write_btc_clusters(wh, &run, serde_json::json!({"demo": true})).await?;
    let c = &run.clusters;
    println!(
        "-- Clusters (common-input ownership, CoinJoins skipped): {} addresses in {} clusters, {} CoinJoins skipped; run {id}",
        c.addresses.len(),
        c.count(),
        c.coinjoins_skipped
    );
    print!("{}", ferret_kernels::cluster::summary(&run));
    println!("-- Clusters against the planted owners and CoinJoins:");
    println!("{accuracy}");
    // Haircut, forward, as far as the money goes.
    let job = TaintJob {
        seed_categories: vec!["scam".into()],
        stop_categories: vec!["exchange".into()],
        // The trace below draws the flows.
        with_flows: true,
        ..Default::default()
    };
    let taint = taint_btc(wh, &backend, &job).await.context("taint")?;
    let run_id = write_taint(wh, &taint).await?;
    println!("-- Taint (haircut) from every `scam` address, stopping at `exchange` addresses");
    crate::print_taint_report(
        &taint,
        &ferret_kernels::taint::stored_job::TaintTotals::of(&taint),
        &run_id,
        10,
    );
    println!();
    let line = crate::write_trace(wh, &taint, &a.dir.join("trace"), 60).await?;
    println!("-- The picture: {line}\n");

    let ctx = ferret_query::session(wh).await?;
    let path = a.dir.join("truth").join("cashouts.csv");
    let url = path.to_str().context("demo dir is not valid UTF-8")?;
    ctx.register_csv("truth_cashouts", url, datafusion_csv_options())
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    println!("-- Planted cash-outs the taint kernel found (same transaction and exit, same hop)");
    let sql = "WITH planted AS (
            SELECT txid, exit_address, min(hops) AS hops, sum(amount) AS amount
            FROM truth_cashouts GROUP BY txid, exit_address),
        found AS (
            SELECT txid, address, min(hop) AS hop, sum(tainted_value) AS tainted
            FROM taint GROUP BY txid, address)
        SELECT count(*) AS planted, count(f.txid) AS found_by_taint,
               count(*) FILTER (WHERE f.hop = p.hops) AS at_planted_hop,
               sum(p.amount) AS planted_sats, sum(f.tainted) AS tainted_sats
        FROM planted p LEFT JOIN found f ON f.txid = p.txid AND f.address = p.exit_address";
    let results = ferret_query::run_sql(&ctx, sql).await?;
    let mut out = std::io::stdout().lock();
    for r in &results {
        ferret_query::output::write(Format::Table, &r.schema, &r.batches, &mut out)?;
    }
    println!();
    Ok(())
}

/// The same investigation as a case: a file, a run kept with what it read, its alerts
/// as JSON lines, and the report to file (docs/cases.md).
async fn case(a: &DemoArgs, wh: &Warehouse) -> Result<()> {
    let dir = a.dir.join("cases");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let file = dir.join("scam-flows.toml");
    std::fs::write(
        &file,
        "# The demo's investigation: money from every `scam` address, to the exchanges.\n\
         name = \"scam-flows\"\nchains = [\"btc\"]\nschedule = \"@daily\"\n\n\
         [seeds]\ncategories = [\"scam\"]\n\n\
         [taint]\npolicy = \"haircut\"\nstop_at = [\"exchange\"]\n\n\
         [alerts]\njsonl = \"alerts.jsonl\"\n",
    )
    .with_context(|| format!("writing {}", file.display()))?;
    let case = ferret_cases::load(&file)?;
    let backend = ferret_kernels::device::select(a.device)?;
    let r = ferret_cases::run_case(wh, &case, &backend)
        .await
        .context("running the demo case")?;
    ferret_cases::deliver::deliver(wh, &case, &Default::default()).await?;
    let html = ferret_cases::report::report(wh, &case.name, None).await?;
    let report = a.dir.join("case-report.html");
    std::fs::write(&report, html).with_context(|| format!("writing {}", report.display()))?;
    println!(
        "-- A case: {} run {}: {} exits, {} cluster members, {} alerts (in {}); report {}\n   \
         SQL: SELECT * FROM cases; SELECT kind, count(*) FROM case_alerts GROUP BY 1\n",
        r.case,
        r.run_id,
        r.exits,
        r.members,
        r.alerts.len(),
        dir.join("alerts.jsonl").display(),
        report.display()
    );
    Ok(())
}

fn datafusion_csv_options() -> ferret_query::CsvReadOptions<'static> {
    ferret_query::CsvReadOptions::new().has_header(true)
}
