//! `ferret report`: one run of a case as a self-contained HTML file for the record of an
//! investigation — no scripts, no network, styles inline. It holds the parameters and
//! what the run read, the flow picture, the exits with amounts and hops and the
//! transactions that prove each path, the seeds' clusters with the co-spends that joined
//! them, and the run's alerts. `--pdf` prints it with headless Chromium when installed.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use ferret_kernels::taint::job::Flow;
use ferret_kernels::taint::trace::{Picture, TraceExit, TraceInput, TraceRun, Unit, esc};
use ferret_schemas::Warehouse;

use crate::{Error, Result};

/// Rows of a query as strings (NULL as "").
async fn rows(ctx: &SessionContext, sql: &str) -> Result<Vec<Vec<String>>> {
    let batches = ctx.sql(sql).await?.collect().await?;
    let mut out = Vec::new();
    let opts = FormatOptions::default().with_null("");
    for b in &batches {
        let fmts = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for r in 0..b.num_rows() {
            out.push(fmts.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    Ok(out)
}

fn table(s: &mut String, head: &[&str], body: &[Vec<String>], numeric: &[usize]) {
    s.push_str("<table><tr>");
    for h in head {
        let _ = write!(s, "<th>{}</th>", esc(h));
    }
    s.push_str("</tr>\n");
    for r in body {
        s.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let class = if numeric.contains(&i) {
                " class=\"n\""
            } else {
                ""
            };
            let _ = write!(s, "<td{class}>{}</td>", esc(c));
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
}

/// The CoinJoin protocol names the kernels use (a flow keeps a static name).
fn protocol(name: &str) -> Option<&'static str> {
    [
        "whirlpool",
        "whirlpool_tx0",
        "wasabi1",
        "wasabi2",
        "joinmarket",
        "generic",
    ]
    .into_iter()
    .find(|p| *p == name)
}

/// The flow picture of one chain of the run (SVG), from its stored flows and exits.
async fn picture(
    wh: &Warehouse,
    ctx: &SessionContext,
    chain: &str,
    w: &str,
    backward: bool,
) -> Result<String> {
    let (unit, div) = if chain == "btc" {
        (Unit::btc(), 1.0)
    } else {
        (
            Unit {
                name: "ETH".into(),
                decimals: 9,
            },
            1e9,
        )
    };
    let flows = rows(
        ctx,
        &format!("SELECT from_address, to_address, tainted_value, hop, coalesce(coinjoin, '') FROM case_flows WHERE {w} AND chain = '{chain}'"),
    )
    .await?;
    let table = if chain == "btc" {
        "case_exits"
    } else {
        "case_eth_exits"
    };
    let count = if chain == "btc" {
        "outputs"
    } else {
        "tainted_transfers"
    };
    let exits = rows(
        ctx,
        &format!("SELECT address, label, category, tainted_value, {count}, min_hop FROM {table} WHERE {w} ORDER BY tainted_value DESC"),
    )
    .await?;
    let seeds = rows(
        ctx,
        &format!(
            "SELECT address FROM case_members WHERE {w} AND chain = '{chain}' AND address = seed"
        ),
    )
    .await?;
    let num = |s: &str| s.parse::<f64>().unwrap_or(0.0);
    let run = TraceRun {
        title: String::new(),
        backward,
        seeds: seeds.into_iter().map(|r| r[0].clone()).collect(),
        exits: exits
            .iter()
            .map(|r| TraceExit {
                address: r[0].clone(),
                label: r[1].clone(),
                category: r[2].clone(),
                value: (num(&r[3]) / div).round() as i64,
                count: num(&r[4]) as u64,
                min_hop: num(&r[5]) as u32,
                all_paths: None,
                coinjoin: None,
            })
            .collect(),
        flows: flows
            .iter()
            .map(|r| Flow {
                from: r[0].clone(),
                to: r[1].clone(),
                tainted_value: (num(&r[2]) / div).round() as i64,
                hop: num(&r[3]) as u32,
                coinjoin: protocol(&r[4]),
            })
            .collect(),
        unit,
        reached: format!("{} flows", flows.len()),
        count_name: "outputs",
    };
    let input = TraceInput::load(wh, chain, 60).await?;
    Ok(Picture::new(&run, &input).svg())
}

/// The report of one run of `case` (default: its latest), as HTML.
pub async fn report(wh: &Warehouse, case: &str, run: Option<&str>) -> Result<String> {
    let run_id = crate::run::CaseRun::resolve(wh, case, run).await?.run_id;
    let ctx = ferret_query::session(wh).await?;
    let w = format!("\"case\" = '{case}' AND run_id = '{run_id}'");
    let rec = ctx
        .sql(&format!("SELECT * FROM case_runs WHERE {w}"))
        .await?
        .collect()
        .await?;
    let mut read: Vec<(String, String)> = Vec::new();
    let mut params = String::new();
    let mut chains: Vec<String> = Vec::new();
    let opts = FormatOptions::default().with_null("—");
    for b in &rec {
        for (i, f) in b.schema().fields().iter().enumerate() {
            if b.num_rows() == 0 {
                continue;
            }
            let v = ArrayFormatter::try_new(b.column(i).as_ref(), &opts)?
                .value(0)
                .to_string();
            match f.name().as_str() {
                "params" => params = v,
                "chains" => {
                    chains = v.split(',').map(str::to_string).collect();
                    read.push((f.name().clone(), v));
                }
                _ => read.push((f.name().clone(), v)),
            }
        }
    }
    let pretty = serde_json::from_str::<serde_json::Value>(&params)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(params);
    let backward = pretty.contains("\"direction\": \"backward\"");

    let mut s = String::new();
    let title = format!("Ferret case report: {case}, run {run_id}");
    let _ = write!(
        s,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse;margin:8px 0 16px}}\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}}td.n{{text-align:right}}\
         th{{background:#f3f3f3}}code,pre{{font-size:12px}}.svg{{overflow:auto;border:1px solid #eee;margin-bottom:16px}}\
         h2{{border-bottom:2px solid #c0392b;padding-bottom:4px;margin-top:32px}}.proof{{margin:4px 0 14px}}</style></head><body>\n\
         <h1>{t}</h1>\n<p>Generated by Ferret {v}. Every figure below comes from the run's committed tables \
         (<code>case_runs</code>, <code>case_exits</code>, <code>case_paths</code>, <code>case_members</code>, \
         <code>case_alerts</code>); each proof path can be checked transaction by transaction on the chain.</p>\n",
        t = esc(&title),
        v = env!("CARGO_PKG_VERSION")
    );

    s.push_str("<h2 id=\"read\">Parameters and what the run read</h2>\n");
    table(
        &mut s,
        &["field", "value"],
        &read
            .iter()
            .map(|(k, v)| vec![k.clone(), v.clone()])
            .collect::<Vec<_>>(),
        &[],
    );
    let _ = writeln!(
        s,
        "<p>The case file's parameters:</p>\n<pre>{}</pre>",
        esc(&pretty)
    );

    for chain in &chains {
        let _ = writeln!(s, "<h2 id=\"flow-{c}\">The flow ({c})</h2>", c = esc(chain));
        let svg = picture(wh, &ctx, chain, &w, backward).await?;
        let _ = writeln!(s, "<div class=\"svg\">\n{svg}</div>");
    }

    s.push_str("<h2 id=\"exits\">Exits</h2>\n");
    let exits = rows(
        &ctx,
        &format!(
            "SELECT chain, address, label, category, 'BTC' AS asset, CAST(tainted_value AS VARCHAR), min_hop, outputs FROM case_exits WHERE {w} \
             UNION ALL SELECT chain, address, label, category, asset, CAST(tainted_value AS VARCHAR), min_hop, tainted_transfers FROM case_eth_exits WHERE {w} \
             ORDER BY 1, 2"
        ),
    )
    .await?;
    if exits.is_empty() {
        s.push_str("<p>No labelled exit received taint in this run.</p>\n");
    } else {
        let _ = writeln!(
            s,
            "<p>{} labelled addresses received taint. Amounts are in sats (BTC) or the asset's base unit (wei for ETH).</p>",
            exits.len()
        );
        table(
            &mut s,
            &[
                "chain",
                "address",
                "label",
                "category",
                "asset",
                "tainted value",
                "min hop",
                "outputs / transfers",
            ],
            &exits,
            &[5, 6, 7],
        );
    }

    s.push_str("<h2 id=\"proofs\">Proof paths</h2>\n<p>For each exit, one chain of transactions from a seed in which every step moved taint: each step spends (Bitcoin) or is a transfer from (Ethereum) what the step before paid.</p>\n");
    let steps = rows(
        &ctx,
        &format!("SELECT exit, step, txid, coalesce(from_address, ''), to_address, CAST(tainted_value AS VARCHAR), hop, coalesce(CAST(height AS VARCHAR), '') FROM case_paths WHERE {w} ORDER BY exit, step"),
    )
    .await?;
    let mut by_exit: BTreeMap<&str, Vec<Vec<String>>> = BTreeMap::new();
    for r in &steps {
        by_exit.entry(&r[0]).or_default().push(r[1..].to_vec());
    }
    for (exit, path) in &by_exit {
        let _ = writeln!(s, "<h3>{}</h3><div class=\"proof\">", esc(exit));
        table(
            &mut s,
            &[
                "step",
                "txid",
                "from",
                "to",
                "tainted value",
                "hop",
                "height",
            ],
            path,
            &[0, 4, 5, 6],
        );
        s.push_str("</div>\n");
    }
    if by_exit.is_empty() {
        s.push_str("<p>No paths (a backward run, or no exits).</p>\n");
    }

    s.push_str("<h2 id=\"clusters\">The seeds' clusters</h2>\n");
    let members = rows(
        &ctx,
        &format!("SELECT chain, seed, coalesce(CAST(cluster_id AS VARCHAR), 'not clustered'), address FROM case_members WHERE {w} ORDER BY 1, 2, 3, 4"),
    )
    .await?;
    table(
        &mut s,
        &["chain", "seed", "cluster", "member"],
        &members,
        &[],
    );
    // Why they were joined: the co-spends of the clustering run (Bitcoin).
    let why = rows(
        &ctx,
        &format!(
            "SELECT l.cluster_id, l.address, l.linked_address, l.txid, l.height FROM cluster_links l \
             WHERE l.cluster_id IN (SELECT cluster_id FROM case_members WHERE {w} AND chain = 'btc' AND cluster_id IS NOT NULL) \
             ORDER BY l.cluster_id, l.height, l.txid, l.linked_address LIMIT 500"
        ),
    )
    .await
    .unwrap_or_default();
    if !why.is_empty() {
        s.push_str("<p>Why they were joined (Bitcoin): the addresses were spent together as inputs of one transaction (co-spend), CoinJoins excepted. The first 500 links:</p>\n");
        table(
            &mut s,
            &["cluster", "address", "spent with", "txid", "height"],
            &why,
            &[4],
        );
    }

    s.push_str("<h2 id=\"alerts\">Alerts of this run</h2>\n");
    let alerts = rows(
        &ctx,
        &format!("SELECT kind, chain, address, coalesce(CAST(amount AS VARCHAR), ''), coalesce(asset, ''), coalesce(txid, ''), detail FROM case_alerts WHERE {w} ORDER BY seq LIMIT 1000"),
    )
    .await?;
    if alerts.is_empty() {
        s.push_str("<p>None: nothing new against the previous run.</p>\n");
    } else {
        table(
            &mut s,
            &[
                "kind", "chain", "address", "amount", "asset", "txid", "detail",
            ],
            &alerts,
            &[3],
        );
    }
    s.push_str("</body></html>\n");
    Ok(s)
}

/// A headless Chromium to print with: `FERRET_CHROMIUM`, else `chromium`,
/// `chromium-browser` or `google-chrome` on the PATH.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FERRET_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Prints `html` (a file) to `pdf` with headless Chromium.
pub fn print_pdf(html: &Path, pdf: &Path) -> Result<()> {
    let chromium = find_chromium().ok_or_else(|| Error::Query(
        "no PDF converter: install Chromium (Debian: apt install chromium) or set FERRET_CHROMIUM".into(),
    ))?;
    let abs = std::path::absolute(html).map_err(|source| Error::Io {
        path: html.to_path_buf(),
        source,
    })?;
    // A file URL with its path percent-encoded (`#`, `?`, `%` in a name).
    let url = reqwest::Url::from_file_path(&abs)
        .map_err(|()| Error::Query(format!("{} cannot be a file URL", abs.display())))?;
    // A PDF left from before must not pass for this one.
    match std::fs::remove_file(pdf) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Io {
                path: pdf.to_path_buf(),
                source,
            });
        }
    }
    let profile = tempfile_dir()?;
    let out = std::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-pdf-header-footer",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(url.as_str())
        .output()
        .map_err(|source| Error::Io {
            path: chromium.clone(),
            source,
        })?;
    let _ = std::fs::remove_dir_all(&profile);
    let ok = std::fs::read(pdf).is_ok_and(|b| b.starts_with(b"%PDF"));
    if !out.status.success() || !ok {
        return Err(Error::Query(format!(
            "{} did not print the PDF: {}",
            chromium.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )));
    }
    Ok(())
}

fn tempfile_dir() -> Result<PathBuf> {
    let p = std::env::temp_dir().join(format!(
        "ferret-chromium-{}",
        ferret_schemas::results::new_run_id()
    ));
    std::fs::create_dir_all(&p).map_err(|source| Error::Io {
        path: p.clone(),
        source,
    })?;
    Ok(p)
}
