//! A case's findings as labels to share: the seeds and their clusters, the exits its
//! money reached above a threshold, and (when asked) the tainted addresses, each with its
//! provenance (case, run, heuristic, when, the transaction that shows it).

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type};
use ferret_indexer::label_export::Provenance;
use ferret_indexer::labels::Label;
use ferret_schemas::Warehouse;

use crate::{Error, Result};

/// What to include.
#[derive(Clone, Debug)]
pub struct FindingsOptions {
    /// The run (default: the case's latest).
    pub run: Option<String>,
    /// The category of the seeds and their cluster members (what a receiver blocks).
    pub category: String,
    /// Exits whose tainted value is at least this (sats, wei, token units).
    pub exit_min: f64,
    /// Tainted addresses beyond the seeds whose tainted value is at least this; none
    /// when `None`.
    pub tainted_min: Option<f64>,
}

impl Default for FindingsOptions {
    fn default() -> Self {
        Self {
            run: None,
            category: "scam".into(),
            exit_min: 0.0,
            tainted_min: None,
        }
    }
}

/// The findings of one run of a case, sorted by (chain, address, label).
pub async fn findings(
    wh: &Warehouse,
    case: &str,
    o: &FindingsOptions,
) -> Result<Vec<(Label, Provenance)>> {
    let refused = |reason: String| Error::Refused {
        case: case.to_string(),
        reason,
    };
    let resolved = crate::run::CaseRun::resolve(wh, case, o.run.as_deref()).await?;
    let run = resolved.run_id.clone();
    let files = |table: &str| resolved.files(table);
    let run_files = files("runs");
    if run_files.is_empty() {
        return Err(refused(format!("no run `{run}`")));
    }
    let mut lastmod = String::new();
    for f in &run_files {
        for b in wh.read_columns(f, &["finished_at", "params"]).await? {
            let t = b
                .column(0)
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
            if b.num_rows() > 0 {
                lastmod = chrono::DateTime::from_timestamp_micros(t.value(0))
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
            }
        }
    }
    let source = format!("ferret:case:{case}");
    let prov = |heuristic: &str, txid: Option<String>| Provenance {
        case: case.to_string(),
        run: run.clone(),
        heuristic: heuristic.to_string(),
        lastmod: lastmod.clone(),
        txid,
    };
    let label = |chain: &str, address: &str, label: String, category: &str| Label {
        chain: chain.to_string(),
        address: address.to_string(),
        label,
        category: category.to_string(),
        source: source.clone(),
        confidence: None,
    };
    let mut out = Vec::new();

    // Seeds and their clusters.
    for f in files("members") {
        for b in wh
            .read_columns(&f, &["chain", "address", "cluster_id", "seed"])
            .await?
        {
            let (c, a, s) = (col(&b, 0)?, col(&b, 1)?, col(&b, 3)?);
            let id = b.column(2).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                let (chain, addr, seed) = (c.value(i), a.value(i), s.value(i));
                let (text, how) = if addr == seed {
                    (format!("{case}: seed"), "seed".to_string())
                } else {
                    let how = if chain == "eth" {
                        "deposit-address cluster"
                    } else {
                        "co-spend cluster"
                    };
                    let cl = if id.is_valid(i) {
                        format!(" {}", id.value(i))
                    } else {
                        String::new()
                    };
                    (
                        format!("{case}: cluster{cl} of seed {seed}"),
                        how.to_string(),
                    )
                };
                out.push((label(chain, addr, text, &o.category), prov(&how, None)));
            }
        }
    }

    // One pass over the Bitcoin taint rows: per address, the largest tainted output
    // paying it (the evidence of an exit or a tainted address) and, beyond the seeds, the
    // tainted value and fewest hops.
    let mut evidence: BTreeMap<String, (f64, String)> = BTreeMap::new();
    let mut btc: BTreeMap<String, (f64, i32)> = BTreeMap::new();
    for f in files("taint") {
        for b in wh
            .read_columns(&f, &["address", "txid", "tainted_value", "hop"])
            .await?
        {
            let (a, t) = (col(&b, 0)?, col(&b, 1)?);
            let v = b.column(2).as_primitive::<Int64Type>();
            let h = b.column(3).as_primitive::<Int32Type>();
            for i in 0..b.num_rows() {
                if a.is_valid(i) {
                    let e = evidence
                        .entry(a.value(i).to_string())
                        .or_insert((-1.0, String::new()));
                    if v.value(i) as f64 > e.0 {
                        *e = (v.value(i) as f64, t.value(i).to_string());
                    }
                    if o.tainted_min.is_some() && h.value(i) > 0 {
                        let e = btc.entry(a.value(i).to_string()).or_insert((0.0, i32::MAX));
                        e.0 += v.value(i) as f64;
                        e.1 = e.1.min(h.value(i));
                    }
                }
            }
        }
    }
    for f in files("exits") {
        for b in wh
            .read_columns(&f, &["address", "label", "category", "tainted_value"])
            .await?
        {
            let (a, l, c) = (col(&b, 0)?, col(&b, 1)?, col(&b, 2)?);
            let v = b.column(3).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                if (v.value(i) as f64) >= o.exit_min {
                    let tx = evidence.get(a.value(i)).map(|e| e.1.clone());
                    out.push((
                        label(
                            "btc",
                            a.value(i),
                            format!(
                                "{case}: cash-out at {} ({} sats tainted)",
                                l.value(i),
                                v.value(i)
                            ),
                            c.value(i),
                        ),
                        prov("exit", tx),
                    ));
                }
            }
        }
    }
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    for f in files("eth_taint") {
        for b in wh
            .read_columns(&f, &["address", "first_transaction_hash"])
            .await?
        {
            let (a, t) = (col(&b, 0)?, col(&b, 1)?);
            for i in 0..b.num_rows() {
                if t.is_valid(i) {
                    first.insert(a.value(i).to_string(), t.value(i).to_string());
                }
            }
        }
    }
    for f in files("eth_exits") {
        for b in wh
            .read_columns(
                &f,
                &["address", "label", "category", "tainted_value", "asset"],
            )
            .await?
        {
            let (a, l, c, s) = (col(&b, 0)?, col(&b, 1)?, col(&b, 2)?, col(&b, 4)?);
            let v = b.column(3).as_primitive::<Float64Type>();
            for i in 0..b.num_rows() {
                if v.value(i) >= o.exit_min {
                    out.push((
                        label(
                            "eth",
                            a.value(i),
                            format!(
                                "{case}: cash-out at {} ({} {} tainted)",
                                l.value(i),
                                v.value(i),
                                s.value(i)
                            ),
                            c.value(i),
                        ),
                        prov("exit", first.get(a.value(i)).cloned()),
                    ));
                }
            }
        }
    }

    // Tainted addresses beyond the seeds.
    if let Some(min) = o.tainted_min {
        for (addr, (v, hop)) in btc {
            if v >= min {
                let tx = evidence.get(&addr).map(|e| e.1.clone());
                out.push((
                    label(
                        "btc",
                        &addr,
                        format!("{case}: tainted, hop {hop}"),
                        "tainted",
                    ),
                    prov("taint", tx),
                ));
            }
        }
        for f in files("eth_taint") {
            for b in wh
                .read_columns(
                    &f,
                    &["address", "tainted_value", "hop", "first_transaction_hash"],
                )
                .await?
            {
                let (a, t) = (col(&b, 0)?, col(&b, 3)?);
                let v = b.column(1).as_primitive::<Float64Type>();
                let h = b.column(2).as_primitive::<Int32Type>();
                for i in 0..b.num_rows() {
                    if h.value(i) > 0 && v.value(i) >= min {
                        out.push((
                            label(
                                "eth",
                                a.value(i),
                                format!("{case}: tainted, hop {}", h.value(i)),
                                "tainted",
                            ),
                            prov("taint", t.is_valid(i).then(|| t.value(i).to_string())),
                        ));
                    }
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.dedup_by(|a, b| a.0 == b.0);
    Ok(out)
}

fn col(b: &RecordBatch, i: usize) -> Result<&arrow::array::StringArray> {
    b.column(i)
        .as_string_opt::<i32>()
        .ok_or_else(|| Error::Query(format!("column {i} is not text")))
}
