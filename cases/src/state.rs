//! A case run's resume state (Bitcoin forward taint) as its `state` and `state_exits`
//! tables plus a small record in the run's params, and back; and the earlier run's rows
//! a resumed run carries forward (`taint`, `flows`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float32Array, Float32Builder, Int32Array, Int64Array,
    ListBuilder, RecordBatch, StringArray,
};
use arrow::datatypes::{Float32Type, Float64Type, Int32Type, Int64Type};
use ferret_kernels::coinjoin::Protocol;
use ferret_kernels::propagate::UNREACHED;
use ferret_kernels::taint::job::{Flow, TaintedOutput};
use ferret_kernels::taint::resume::{
    ExitSum, NodeState, OpenOutput, ResumeState, STATE_FORMAT, Trajectory,
};
use ferret_schemas::Warehouse;
use ferret_schemas::cases::{case_state_exits_schema, case_state_schema};

use crate::{Error, Result};

fn strs(n: usize, s: &str) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(std::iter::repeat_n(s, n)))
}

fn hop_i32(h: u32) -> Option<i32> {
    (h != UNREACHED && h != u32::MAX).then_some(h as i32)
}

/// The state's tables: `state` (per output) and `state_exits`.
pub fn batches(case: &str, run_id: &str, st: &ResumeState) -> Result<(RecordBatch, RecordBatch)> {
    // One row per output id: the walk's and the open outputs', merged in id order.
    let mut rows: BTreeMap<u64, (Option<Option<u64>>, Option<&OpenOutput>)> = BTreeMap::new();
    for &(o, pred) in &st.walk {
        rows.entry(o).or_default().0 = Some(pred);
    }
    for e in &st.open {
        rows.entry(e.output).or_default().1 = Some(e);
    }
    let n = rows.len();
    let mut steps = ListBuilder::new(Float32Builder::new());
    for (_, open) in rows.values() {
        match open {
            Some(e) if e.state.limited.hop != UNREACHED => {
                steps.values().append_slice(&e.state.limited.values);
                steps.append(true);
            }
            _ => steps.append(false),
        }
    }
    let open = |f: &dyn Fn(&OpenOutput) -> Option<i64>| -> Vec<Option<i64>> {
        rows.values().map(|(_, e)| e.and_then(f)).collect()
    };
    let i32s = |v: Vec<Option<i64>>| -> ArrayRef {
        Arc::new(Int32Array::from_iter(
            v.into_iter().map(|x| x.map(|x| x as i32)),
        ))
    };
    let f32s = |f: &dyn Fn(&NodeState) -> f32| -> ArrayRef {
        Arc::new(Float32Array::from_iter(
            rows.values().map(|(_, e)| e.map(|e| f(&e.state))),
        ))
    };
    let state = RecordBatch::try_new(
        case_state_schema(),
        vec![
            strs(n, case),
            Arc::new(Int64Array::from_iter_values(rows.keys().map(|&o| o as i64))),
            Arc::new(BooleanArray::from_iter(
                rows.values().map(|(w, _)| Some(w.is_some())),
            )),
            Arc::new(Int64Array::from_iter(
                rows.values().map(|(w, _)| w.flatten().map(|p| p as i64)),
            )),
            Arc::new(Int64Array::from_iter(open(&|e| Some(e.node as i64)))),
            i32s(open(&|e| hop_i32(e.state.limited.hop).map(i64::from))),
            Arc::new(steps.finish()),
            f32s(&|s| s.all.0),
            i32s(open(&|e| hop_i32(e.state.all.1).map(i64::from))),
            f32s(&|s| s.open.0),
            i32s(open(&|e| hop_i32(e.state.open.1).map(i64::from))),
            strs(n, run_id),
        ],
    )?;
    let m = st.exit_sums.len();
    let mut cols: Vec<ArrayRef> = vec![
        strs(m, case),
        Arc::new(StringArray::from_iter_values(st.exit_sums.keys())),
    ];
    for k in 0..3 {
        cols.push(Arc::new(Int64Array::from_iter_values(
            st.exit_sums.values().map(|s| s[k].value),
        )));
        cols.push(Arc::new(Int64Array::from_iter_values(
            st.exit_sums.values().map(|s| s[k].outputs as i64),
        )));
        cols.push(Arc::new(Int32Array::from_iter(
            st.exit_sums.values().map(|s| hop_i32(s[k].min_hop)),
        )));
    }
    cols.push(strs(m, run_id));
    let exits = RecordBatch::try_new(case_state_exits_schema(), cols)?;
    Ok((state, exits))
}

/// What the run's record keeps of the state (the rest is in its tables).
pub fn meta(st: &ResumeState) -> serde_json::Value {
    serde_json::json!({
        "format": STATE_FORMAT,
        "height": st.height,
        "next_tx": st.next_tx,
        "next_output": st.next_output,
        "seeds_found": st.seeds_found,
        "seed_addresses": st.seed_addresses,
        "seed_outputs": st.seed_outputs,
        "coinjoins_passed": st.coinjoins_passed,
        "walk": st.walk.len(),
        "open": st.open.len(),
        "exits": st.exit_sums.len(),
    })
}

/// Reads a state back: `meta` from the earlier run's record, its `state` and
/// `state_exits` files. Anything that does not add up is damage, never a smaller state.
pub async fn load(
    wh: &Warehouse,
    case: &str,
    meta: &serde_json::Value,
    state_files: &[String],
    exit_files: &[String],
) -> Result<ResumeState> {
    let damaged = |reason: String| Error::Damaged {
        case: case.to_string(),
        reason: format!("resume state: {reason}"),
    };
    let num = |k: &str| {
        meta.get(k)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| damaged(format!("the run's record has no `{k}`")))
    };
    if num("format")? != u64::from(STATE_FORMAT) {
        return Err(damaged(format!(
            "format {} (this build reads {STATE_FORMAT})",
            num("format")?
        )));
    }
    let names = |k: &str| -> Result<BTreeSet<String>> {
        meta.get(k)
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| damaged(format!("the run's record has no `{k}`")))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| damaged(format!("`{k}` holds a non-string")))
            })
            .collect()
    };
    let mut st = ResumeState {
        height: meta.get("height").and_then(serde_json::Value::as_u64),
        next_tx: num("next_tx")?,
        next_output: num("next_output")?,
        seeds_found: names("seeds_found")?,
        seed_addresses: names("seed_addresses")?,
        seed_outputs: num("seed_outputs")?,
        coinjoins_passed: num("coinjoins_passed")?,
        ..Default::default()
    };
    let hop = |a: &Int32Array, i: usize| -> u32 {
        if a.is_null(i) {
            UNREACHED
        } else {
            a.value(i) as u32
        }
    };
    let mut last: Option<i64> = None;
    for f in state_files {
        for b in wh.read_file(f).await? {
            let c = |name: &str| {
                b.column_by_name(name)
                    .ok_or_else(|| damaged(format!("{f}: no column `{name}`")))
            };
            let bad_type = |name: &str| damaged(format!("{f}: column `{name}` has the wrong type"));
            let out = c("output_id")?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| bad_type("output_id"))?;
            let in_taint = c("in_taint")?
                .as_boolean_opt()
                .ok_or_else(|| bad_type("in_taint"))?;
            let pred = c("pred_output_id")?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| bad_type("pred_output_id"))?;
            let node = c("node")?
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(|| bad_type("node"))?;
            let lh = c("limited_hop")?
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(|| bad_type("limited_hop"))?;
            let ls = c("limited_steps")?
                .as_list_opt::<i32>()
                .ok_or_else(|| bad_type("limited_steps"))?;
            let af = c("all_fraction")?
                .as_primitive_opt::<Float32Type>()
                .ok_or_else(|| bad_type("all_fraction"))?;
            let ah = c("all_hop")?
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(|| bad_type("all_hop"))?;
            let of = c("open_fraction")?
                .as_primitive_opt::<Float32Type>()
                .ok_or_else(|| bad_type("open_fraction"))?;
            let oh = c("open_hop")?
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(|| bad_type("open_hop"))?;
            for i in 0..b.num_rows() {
                let o = out.value(i);
                if last.is_some_and(|l| l >= o) || o < 0 || o as u64 >= st.next_output {
                    return Err(damaged(format!(
                        "{f}: output {o} out of order or beyond the state's tip"
                    )));
                }
                last = Some(o);
                if in_taint.value(i) {
                    st.walk
                        .push((o as u64, (!pred.is_null(i)).then(|| pred.value(i) as u64)));
                }
                if node.is_null(i) {
                    continue;
                }
                let limited = if lh.is_null(i) {
                    Trajectory::unreached()
                } else {
                    let v = ls.value(i);
                    let v = v
                        .as_primitive_opt::<Float32Type>()
                        .ok_or_else(|| bad_type("limited_steps"))?;
                    if v.is_empty() || v.null_count() > 0 {
                        return Err(damaged(format!(
                            "{f}: output {o} has a reached trajectory without steps"
                        )));
                    }
                    Trajectory {
                        hop: lh.value(i) as u32,
                        values: v.values().to_vec(),
                    }
                };
                if af.is_null(i) || ah.is_null(i) {
                    return Err(damaged(format!("{f}: open output {o} has no fraction")));
                }
                let frac = |a: &Float32Array| -> Result<f32> {
                    let x = if a.is_null(i) { 0.0 } else { a.value(i) };
                    if (0.0..=1.0).contains(&x) {
                        Ok(x)
                    } else {
                        Err(damaged(format!("{f}: output {o} has fraction {x}")))
                    }
                };
                st.open.push(OpenOutput {
                    output: o as u64,
                    node: node.value(i) as u64,
                    state: NodeState {
                        limited,
                        all: (frac(af)?, hop(ah, i)),
                        open: (frac(of)?, hop(oh, i)),
                    },
                });
            }
        }
    }
    for f in exit_files {
        for b in wh.read_file(f).await? {
            let addr = b
                .column_by_name("address")
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| damaged(format!("{f}: no text column `address`")))?;
            let mut sums = vec![[ExitSum::default(); 3]; b.num_rows()];
            for (k, pass) in ["limited", "all", "open"].iter().enumerate() {
                let get64 = |n: String| {
                    b.column_by_name(&n)
                        .and_then(|c| c.as_primitive_opt::<Int64Type>())
                        .ok_or_else(|| damaged(format!("{f}: no column `{n}`")))
                };
                let v = get64(format!("{pass}_value"))?;
                let n = get64(format!("{pass}_outputs"))?;
                let h = b
                    .column_by_name(&format!("{pass}_min_hop"))
                    .and_then(|c| c.as_primitive_opt::<Int32Type>())
                    .ok_or_else(|| damaged(format!("{f}: no column `{pass}_min_hop`")))?;
                for (i, s) in sums.iter_mut().enumerate() {
                    s[k] = ExitSum {
                        value: v.value(i),
                        outputs: n.value(i) as u64,
                        min_hop: if h.is_null(i) {
                            u32::MAX
                        } else {
                            h.value(i) as u32
                        },
                    };
                }
            }
            for (i, s) in sums.into_iter().enumerate() {
                st.exit_sums.insert(addr.value(i).to_string(), s);
            }
        }
    }
    for (k, want) in [
        ("walk", st.walk.len()),
        ("open", st.open.len()),
        ("exits", st.exit_sums.len()),
    ] {
        if num(k)? != want as u64 {
            return Err(damaged(format!(
                "the record counts {} `{k}` entries, the files hold {want}",
                num(k)?
            )));
        }
    }
    Ok(st)
}

/// A `taint` table's rows (a case's, one run) as tainted outputs.
pub async fn taint_rows(wh: &Warehouse, files: &[String]) -> Result<Vec<TaintedOutput>> {
    let mut out = Vec::new();
    for f in files {
        for b in wh
            .read_columns(
                f,
                &[
                    "txid",
                    "vout",
                    "address",
                    "value",
                    "hop",
                    "fraction",
                    "tainted_value",
                    "coinjoin",
                ],
            )
            .await?
        {
            let bad = || Error::Query(format!("{f}: not a taint table"));
            let txid = b.column(0).as_string_opt::<i32>().ok_or_else(bad)?;
            let vout = b
                .column(1)
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(bad)?;
            let addr = b.column(2).as_string_opt::<i32>().ok_or_else(bad)?;
            let value = b
                .column(3)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(bad)?;
            let hop = b
                .column(4)
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(bad)?;
            let frac = b
                .column(5)
                .as_primitive_opt::<Float64Type>()
                .ok_or_else(bad)?;
            let tv = b
                .column(6)
                .as_primitive_opt::<Int64Type>()
                .ok_or_else(bad)?;
            let cj = b.column(7).as_string_opt::<i32>().ok_or_else(bad)?;
            for i in 0..b.num_rows() {
                out.push(TaintedOutput {
                    txid: txid.value(i).to_string(),
                    vout: vout.value(i) as u32,
                    address: (!addr.is_null(i)).then(|| addr.value(i).to_string()),
                    value: value.value(i),
                    hop: hop.value(i) as u32,
                    fraction: frac.value(i),
                    tainted_value: tv.value(i),
                    coinjoin: if cj.is_null(i) {
                        None
                    } else {
                        Some(
                            Protocol::from_name(cj.value(i))
                                .ok_or_else(|| {
                                    Error::Query(format!("{f}: unknown CoinJoin `{}`", cj.value(i)))
                                })?
                                .name(),
                        )
                    },
                });
            }
        }
    }
    Ok(out)
}

/// A case `flows` table's Bitcoin rows (one run) as flows.
pub async fn btc_flows(wh: &Warehouse, files: &[String]) -> Result<Vec<Flow>> {
    let mut out = Vec::new();
    for f in files {
        for b in wh
            .read_columns(
                f,
                &[
                    "chain",
                    "from_address",
                    "to_address",
                    "tainted_value",
                    "hop",
                    "coinjoin",
                ],
            )
            .await?
        {
            let bad = || Error::Query(format!("{f}: not a flows table"));
            let chain = b.column(0).as_string_opt::<i32>().ok_or_else(bad)?;
            let from = b.column(1).as_string_opt::<i32>().ok_or_else(bad)?;
            let to = b.column(2).as_string_opt::<i32>().ok_or_else(bad)?;
            let v = b
                .column(3)
                .as_primitive_opt::<Float64Type>()
                .ok_or_else(bad)?;
            let hop = b
                .column(4)
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(bad)?;
            let cj = b.column(5).as_string_opt::<i32>().ok_or_else(bad)?;
            for i in 0..b.num_rows() {
                if chain.value(i) != "btc" {
                    continue;
                }
                out.push(Flow {
                    from: from.value(i).to_string(),
                    to: to.value(i).to_string(),
                    tainted_value: v.value(i) as i64,
                    hop: hop.value(i) as u32,
                    coinjoin: if cj.is_null(i) {
                        None
                    } else {
                        Protocol::from_name(cj.value(i)).map(Protocol::name)
                    },
                });
            }
        }
    }
    Ok(out)
}

/// The `state_meta` row of a run's state.
pub fn meta_batch(
    case: &str,
    run_id: &str,
    tip: (Option<u64>, Option<&str>),
    labels_run: Option<&str>,
    case_sha256: &str,
    st: &ResumeState,
) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        ferret_schemas::cases::case_state_meta_schema(),
        vec![
            strs(1, case),
            strs(1, "btc"),
            Arc::new(Int64Array::from(vec![tip.0.map(|h| h as i64)])),
            Arc::new(StringArray::from(vec![tip.1])),
            Arc::new(StringArray::from(vec![labels_run])),
            strs(1, case_sha256),
            strs(1, &meta(st).to_string()),
            strs(1, run_id),
        ],
    )?)
}

/// One `state_meta` row.
pub struct MetaRow {
    pub chain: String,
    pub height: Option<u64>,
    pub hash: Option<String>,
    pub labels_run: Option<String>,
    pub case_sha256: String,
    pub state: serde_json::Value,
    pub run_id: String,
}

/// The `state_meta` rows of one file.
pub async fn read_meta(wh: &Warehouse, case: &str, file: &str) -> Result<Vec<MetaRow>> {
    let damaged = |reason: String| Error::Damaged {
        case: case.to_string(),
        reason: format!("{file}: {reason}"),
    };
    let mut out = Vec::new();
    for b in wh.read_file(file).await? {
        let t = |n: &str| {
            b.column_by_name(n)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| damaged(format!("no text column `{n}`")))
        };
        let (chain, hash, labels, sha, state, run) = (
            t("chain")?,
            t("hash")?,
            t("labels_run")?,
            t("case_sha256")?,
            t("state")?,
            t("run_id")?,
        );
        let height = b
            .column_by_name("height")
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| damaged("no column `height`".into()))?;
        for i in 0..b.num_rows() {
            let text = |a: &StringArray| (!a.is_null(i)).then(|| a.value(i).to_string());
            out.push(MetaRow {
                chain: chain.value(i).to_string(),
                height: (!height.is_null(i)).then(|| height.value(i) as u64),
                hash: text(hash),
                labels_run: text(labels),
                case_sha256: sha.value(i).to_string(),
                state: serde_json::from_str(state.value(i))
                    .map_err(|e| damaged(format!("state of run {}: {e}", run.value(i))))?,
                run_id: run.value(i).to_string(),
            });
        }
    }
    Ok(out)
}
