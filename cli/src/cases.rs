//! `ferret case …` and `ferret jobs run`: thin wrappers over `ferret_cases`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use ferret_cases::deliver::{Delivered, Retry, deliver};
use ferret_cases::schedule::{Outcome, load_dir, run_due, until_next};
use ferret_schemas::Warehouse;

#[derive(Subcommand)]
pub enum CaseCmd {
    /// Run a case file now: taint, the seeds' clusters, alerts against its previous run;
    /// kept under the case (tables case_runs, case_taint, case_exits, case_alerts, …),
    /// then its alerts delivered.
    Run(CaseRunArgs),
    /// The cases of the warehouse and their latest runs.
    List(WarehouseArgs),
    /// One case: its runs, and the exits and alerts of its latest run (or --run).
    Show(CaseShowArgs),
    /// Deliver a case's undelivered alerts to the sinks its file names.
    Deliver(CaseFileArgs),
}

#[derive(Subcommand)]
pub enum JobsCmd {
    /// Run every case of a directory whose schedule is due, deliver its alerts, and exit
    /// (or, with --watch, keep doing so).
    Run(JobsRunArgs),
}

#[derive(Args)]
pub struct ExtractArgs {
    #[command(flatten)]
    wh: WarehouseArgs,
    /// The case.
    #[arg(long)]
    case: String,
    /// A run id (default: the case's latest).
    #[arg(long)]
    run: Option<String>,
    /// Where to write: a directory or an object-store URL (s3://, gs://, az://) that holds
    /// no extract yet.
    #[arg(long)]
    out: String,
}

pub async fn extract_cmd(a: ExtractArgs) -> Result<()> {
    let wh = Warehouse::open_existing(&a.wh.warehouse)?;
    let m = ferret_cases::extract::extract(&wh, &a.case, a.run.as_deref(), &a.out)
        .await
        .with_context(|| format!("extracting case `{}`", a.case))?;
    for f in &m.files {
        println!(
            "{:<12} {:<4} {:>9} rows  {}",
            f.table, f.chain, f.rows, f.path
        );
    }
    println!(
        "extracted case {} run {} to {} ({} files; committed by {})",
        m.case,
        m.run_id,
        a.out,
        m.files.len(),
        ferret_cases::extract::COMMIT
    );
    Ok(())
}

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    wh: WarehouseArgs,
    /// The case.
    #[arg(long)]
    case: String,
    /// A run id (default: the case's latest).
    #[arg(long)]
    run: Option<String>,
    /// The HTML file to write (whole, then renamed into place).
    #[arg(long)]
    out: PathBuf,
    /// Also print it to this PDF with headless Chromium (`FERRET_CHROMIUM`, or chromium
    /// on the PATH).
    #[arg(long)]
    pdf: Option<PathBuf>,
}

pub async fn report_cmd(a: ReportArgs) -> Result<()> {
    let wh = Warehouse::open_existing(&a.wh.warehouse)?;
    let html = ferret_cases::report::report(&wh, &a.case, a.run.as_deref())
        .await
        .with_context(|| format!("the report of case `{}`", a.case))?;
    let tmp = a.out.with_extension("ferret-tmp");
    std::fs::write(&tmp, &html).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.out).with_context(|| format!("renaming into {}", a.out.display()))?;
    println!("wrote {} ({} bytes)", a.out.display(), html.len());
    if let Some(pdf) = &a.pdf {
        ferret_cases::report::print_pdf(&a.out, pdf)?;
        println!("wrote {}", pdf.display());
    }
    Ok(())
}

#[derive(Args)]
pub struct WarehouseArgs {
    /// Warehouse URL.
    #[arg(long, default_value = "./warehouse", env = "FERRET_WAREHOUSE")]
    warehouse: String,
}

#[derive(Args)]
pub struct CaseFileArgs {
    #[command(flatten)]
    wh: WarehouseArgs,
    /// The case file (TOML; docs/cases.md).
    file: PathBuf,
}

#[derive(Args)]
pub struct CaseRunArgs {
    #[command(flatten)]
    case: CaseFileArgs,
    /// Where the kernels run: auto, gpu, cpu.
    #[arg(long, default_value = "auto")]
    device: ferret_kernels::device::DeviceChoice,
    /// Commit the run and its alerts, but deliver nothing now (`ferret case deliver`
    /// later).
    #[arg(long)]
    no_deliver: bool,
    /// Trace Bitcoin from the first block even where the previous run's state would let
    /// this run read only the new blocks.
    #[arg(long)]
    full: bool,
}

#[derive(Args)]
pub struct CaseShowArgs {
    #[command(flatten)]
    wh: WarehouseArgs,
    /// The case's name.
    name: String,
    /// A run id (default: the latest).
    #[arg(long)]
    run: Option<String>,
}

#[derive(Args)]
pub struct JobsRunArgs {
    #[command(flatten)]
    wh: WarehouseArgs,
    /// A directory of case files (`*.toml`); cases without a `schedule` are skipped.
    #[arg(long)]
    config: PathBuf,
    /// Where the kernels run: auto, gpu, cpu.
    #[arg(long, default_value = "auto")]
    device: ferret_kernels::device::DeviceChoice,
    /// Keep running: after each pass, sleep until the next case is due (reading the
    /// directory again each pass), until Ctrl-C or SIGTERM.
    #[arg(long)]
    watch: bool,
    /// With --watch: the longest sleep between passes, in seconds.
    #[arg(long, default_value_t = 60)]
    max_sleep_secs: u64,
}

fn print_delivered(d: &[Delivered]) {
    for x in d {
        println!(
            "delivered {} alerts to {} ({} in all{})",
            x.sent,
            x.sink,
            x.total,
            if x.retries > 0 {
                format!(", {} retries", x.retries)
            } else {
                String::new()
            }
        );
    }
}

pub async fn case_cmd(c: CaseCmd) -> Result<()> {
    match c {
        CaseCmd::Run(a) => {
            let case = ferret_cases::load(&a.case.file)?;
            let wh = Warehouse::open_existing(&a.case.wh.warehouse)?;
            let backend = ferret_kernels::device::select(a.device)?;
            let r = ferret_cases::run::run_case_with(&wh, &case, &backend, a.full)
                .await
                .with_context(|| format!("running case `{}`", case.name))?;
            let tips: Vec<String> = r
                .tips
                .iter()
                .map(|(c, (h, _))| {
                    format!("{c} to height {}", h.map_or("-".into(), |h| h.to_string()))
                })
                .collect();
            println!(
                "case {} run {}: read {}; {} tainted rows, {} exits, {} cluster members; {} alerts{}",
                r.case,
                r.run_id,
                tips.join(", "),
                r.taint_rows,
                r.exits,
                r.members,
                r.alerts.len(),
                r.previous_run
                    .as_ref()
                    .map_or(" (first run)".to_string(), |p| format!(" against run {p}"))
            );
            for (chain, mode) in &r.taint_modes {
                println!("{chain} taint: {mode}");
            }
            for h in &r.held_clusters {
                println!(
                    "not expanded: seed {} is in {} cluster {} of {} addresses (above max_cluster_size: an exchange's or a service's?)",
                    h.seed, h.chain, h.cluster_id, h.size
                );
            }
            if !r.unknown_seeds.is_empty() {
                println!("not on the indexed chains: {}", r.unknown_seeds.join(", "));
            }
            for al in r.alerts.iter().take(20) {
                println!(
                    "  {:<13} {} {} {}{}",
                    al.kind,
                    al.chain,
                    al.address,
                    al.amount.map_or(String::new(), |v| format!(
                        "{v} {} ",
                        al.asset.as_deref().unwrap_or("")
                    )),
                    al.detail
                );
            }
            if r.alerts.len() > 20 {
                println!("  … {} more (table case_alerts)", r.alerts.len() - 20);
            }
            if !a.no_deliver {
                let d = deliver(&wh, &case, &Retry::default()).await?;
                print_delivered(&d);
            }
            Ok(())
        }
        CaseCmd::Deliver(a) => {
            let case = ferret_cases::load(&a.file)?;
            let wh = Warehouse::open_existing(&a.wh.warehouse)?;
            let d = deliver(&wh, &case, &Retry::default()).await?;
            if d.is_empty() {
                bail!(
                    "case `{}` names no jsonl file nor webhook under [alerts]",
                    case.name
                );
            }
            print_delivered(&d);
            Ok(())
        }
        CaseCmd::List(a) => {
            let wh = Warehouse::open_existing(&a.warehouse)?;
            let ctx = ferret_query::session(&wh).await?;
            sql_print(&ctx, "SELECT \"case\", runs, latest_run, chains, finished_at, exits, alerts, schedule FROM cases ORDER BY \"case\"").await
        }
        CaseCmd::Show(a) => {
            if !ferret_schemas::cases::valid_case_name(&a.name) {
                bail!("`{}` is not a case name", a.name);
            }
            let wh = Warehouse::open_existing(&a.wh.warehouse)?;
            let ctx = ferret_query::session(&wh).await?;
            let n = &a.name;
            let run = match &a.run {
                Some(r) => {
                    if !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                        bail!("`{r}` is not a run id");
                    }
                    r.clone()
                }
                None => {
                    let Some(r) = wh
                        .latest_run(&ferret_schemas::cases::case_job(n, "runs"))
                        .await?
                    else {
                        bail!("no case `{n}` in this warehouse (`ferret case list`)");
                    };
                    r.run_id
                }
            };
            println!("runs of case {n}:");
            sql_print(&ctx, &format!("SELECT run_id, started_at, btc_tip_height, eth_tip_height, labels_run, taint_rows, exits, members, alerts FROM case_runs WHERE \"case\" = '{n}' ORDER BY started_at")).await?;
            println!("\nexits of run {run}:");
            sql_print(&ctx, &format!("SELECT chain, address, label, category, tainted_value, min_hop FROM case_exits WHERE \"case\" = '{n}' AND run_id = '{run}' UNION ALL SELECT chain, address, label, category, tainted_value, min_hop FROM case_eth_exits WHERE \"case\" = '{n}' AND run_id = '{run}' ORDER BY tainted_value DESC")).await?;
            println!(
                "\nresume states (a rerun reads only the blocks above the newest that still holds):"
            );
            sql_print(&ctx, &format!("SELECT run_id, chain, height, hash FROM case_state_meta WHERE \"case\" = '{n}' ORDER BY run_id, chain")).await?;
            println!("\nalerts of run {run}:");
            sql_print(&ctx, &format!("SELECT kind, chain, address, amount, asset, txid, detail FROM case_alerts WHERE \"case\" = '{n}' AND run_id = '{run}' ORDER BY seq")).await
        }
    }
}

async fn sql_print(ctx: &datafusion::prelude::SessionContext, sql: &str) -> Result<()> {
    let batches = ctx.sql(sql).await?.collect().await?;
    println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
    Ok(())
}

pub async fn jobs_cmd(c: JobsCmd) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let JobsCmd::Run(a) = c;
    let wh = Warehouse::open_existing(&a.wh.warehouse)?;
    let backend = ferret_kernels::device::select(a.device)?;
    let retry = Retry::default();
    let mut backoff = ferret_cases::schedule::Backoff::default();
    // Installed before the first pass: a SIGTERM or Ctrl-C during a run is kept, and the
    // loop stops after that run instead of the process dying in it.
    let (mut term, mut int) = if a.watch {
        (
            Some(signal(SignalKind::terminate())?),
            Some(signal(SignalKind::interrupt())?),
        )
    } else {
        (None, None)
    };
    let max = Duration::from_secs(a.max_sleep_secs.max(1));
    let mut failed = 0;
    loop {
        let pass = async {
            let cases = load_dir(&a.config)?;
            let outcomes = run_due(
                &wh,
                &cases,
                &backend,
                &retry,
                chrono::Utc::now(),
                &mut backoff,
            )
            .await?;
            Ok::<_, anyhow::Error>((cases, outcomes))
        }
        .await;
        let cases = match pass {
            Ok((cases, outcomes)) => {
                for o in outcomes {
                    match o {
                        Outcome::Ran {
                            case,
                            run_id,
                            alerts,
                            delivered,
                        } => {
                            println!("{case}: run {run_id}, {alerts} alerts");
                            print_delivered(&delivered);
                        }
                        Outcome::Delivered { case, delivered } => {
                            println!("{case}: not due; undelivered alerts sent");
                            print_delivered(&delivered);
                        }
                        Outcome::Busy { case, reason } => println!("{case}: skipped, {reason}"),
                        Outcome::Failed { case, error } => {
                            failed += 1;
                            eprintln!("{case}: failed: {error}");
                            tracing::error!(case, error = %error, "case run failed");
                        }
                    }
                }
                cases
            }
            // Once: the error is the answer. Watching: a broken case file or a store
            // that is down for a moment must not stop the scheduler; log, wait, retry.
            Err(e) if !a.watch => return Err(e),
            Err(e) => {
                eprintln!("error: {e:#}");
                tracing::error!(error = %e, "a scheduler pass failed");
                Vec::new()
            }
        };
        if !a.watch {
            break;
        }
        let wait = until_next(&wh, &cases, chrono::Utc::now(), max, &backoff)
            .await
            .unwrap_or(max);
        tracing::debug!(?wait, "sleeping until the next due case");
        let (Some(t), Some(i)) = (term.as_mut(), int.as_mut()) else {
            break;
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = t.recv() => {
                tracing::info!("SIGTERM: stopping the scheduler");
                break;
            }
            _ = i.recv() => {
                tracing::info!("interrupted: stopping the scheduler");
                break;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} case runs failed");
    }
    Ok(())
}
