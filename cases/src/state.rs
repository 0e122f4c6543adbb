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

/// The rest of a Bitcoin state, kept in its `state_meta` row (the bulk is in its tables).
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
                    if let Some(x) = v.values().iter().find(|x| !(0.0..=1.0).contains(*x)) {
                        return Err(damaged(format!("{f}: output {o} has a step fraction {x}")));
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

/// The `state_meta` row of a chain's state: what it depends on, and `state` (the rest of
/// it, as JSON).
pub fn meta_batch(
    case: &str,
    run_id: &str,
    chain: &str,
    tip: (Option<u64>, Option<&str>),
    labels_run: Option<&str>,
    case_sha256: &str,
    state: &serde_json::Value,
) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        ferret_schemas::cases::case_state_meta_schema(),
        vec![
            strs(1, case),
            strs(1, chain),
            Arc::new(Int64Array::from(vec![tip.0.map(|h| h as i64)])),
            Arc::new(StringArray::from(vec![tip.1])),
            Arc::new(StringArray::from(vec![labels_run])),
            strs(1, case_sha256),
            strs(1, &state.to_string()),
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

/// A 256-bit integer as 64 hex digits, most significant first.
fn u256_hex(a: &ferret_kernels::account::frac::U256) -> String {
    a.iter().rev().map(|l| format!("{l:08x}")).collect()
}

fn u256_of_hex(s: &str) -> Option<ferret_kernels::account::frac::U256> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut a = [0u32; 8];
    for (i, l) in a.iter_mut().enumerate() {
        let at = (7 - i) * 8;
        *l = u32::from_str_radix(&s[at..at + 8], 16).ok()?;
    }
    Some(a)
}

fn pack(f: ferret_kernels::account::frac::Frac) -> i64 {
    (u64::from(f.m) | (u64::from(f.e as u32) << 32)) as i64
}

fn unpack(w: i64) -> ferret_kernels::account::frac::Frac {
    let w = w as u64;
    ferret_kernels::account::frac::Frac {
        m: w as u32,
        e: (w >> 32) as u32 as i32,
    }
}

/// An Ethereum state's tables (`eth_state`, `eth_state_edges`) and its `state_meta` row.
pub fn eth_batches(
    case: &str,
    run_id: &str,
    st: &ferret_kernels::account::resume::EthResumeState,
    tip: (Option<u64>, Option<&str>),
    labels_run: Option<&str>,
    case_sha256: &str,
) -> Result<[RecordBatch; 3]> {
    use ferret_kernels::account::UNREACHED as ETH_UNREACHED;
    use ferret_kernels::account::resume::NO_ARRIVAL;
    let a = &st.addresses;
    let n = a.len();
    let mut shares = arrow::array::ListBuilder::new(arrow::array::Int64Builder::new());
    for s in a.values() {
        if s.shares.vals.is_empty() {
            shares.append(false);
        } else {
            shares
                .values()
                .append_slice(&s.shares.vals.iter().map(|&f| pack(f)).collect::<Vec<_>>());
            shares.append(true);
        }
    }
    let state = RecordBatch::try_new(
        ferret_schemas::cases::case_eth_state_schema(),
        vec![
            strs(n, case),
            Arc::new(StringArray::from_iter_values(a.keys())),
            Arc::new(Int32Array::from_iter(
                a.values()
                    .map(|s| (s.hop != ETH_UNREACHED).then_some(s.hop as i32)),
            )),
            Arc::new(Int64Array::from_iter(
                a.values()
                    .map(|s| (s.arrival != NO_ARRIVAL).then_some(s.arrival as i64)),
            )),
            Arc::new(StringArray::from_iter_values(
                a.values().map(|s| u256_hex(&s.balance)),
            )),
            Arc::new(Int64Array::from_iter(a.values().map(|s| {
                (!s.shares.vals.is_empty()).then_some(i64::from(s.shares.start))
            }))),
            Arc::new(shares.finish()),
            Arc::new(arrow::array::Float64Array::from_iter_values(
                a.values().map(|s| s.value),
            )),
            Arc::new(Int64Array::from_iter_values(
                a.values().map(|s| s.transfers as i64),
            )),
            Arc::new(Int64Array::from_iter(
                a.values().map(|s| s.first.map(|i| i as i64)),
            )),
            strs(n, run_id),
        ],
    )?;
    let e = &st.edges;
    let m = e.len();
    let edges = RecordBatch::try_new(
        ferret_schemas::cases::case_eth_state_edges_schema(),
        vec![
            strs(m, case),
            Arc::new(Int64Array::from_iter_values(0..m as i64)),
            Arc::new(StringArray::from_iter_values(
                e.iter().map(|x| x.from.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                e.iter().map(|x| x.to.as_str()),
            )),
            Arc::new(Int64Array::from_iter_values(e.iter().map(|x| x.block))),
            Arc::new(Int32Array::from_iter_values(e.iter().map(|x| x.tx_index))),
            Arc::new(StringArray::from_iter_values(
                e.iter().map(|x| x.tx_hash.as_str()),
            )),
            Arc::new(arrow::array::Float64Array::from_iter_values(
                e.iter().map(|x| x.value),
            )),
            strs(m, run_id),
        ],
    )?;
    let meta_json = serde_json::json!({
        "format": ferret_kernels::account::resume::ETH_STATE_FORMAT,
        "height": st.height,
        "transfers": st.transfers,
        "max_amount": st.max_amount,
        "seeds_found": st.seeds_found,
        "addresses": n,
        "edges": m,
    });
    let meta = meta_batch(
        case,
        run_id,
        "eth",
        tip,
        labels_run,
        case_sha256,
        &meta_json,
    )?;
    Ok([state, edges, meta])
}

/// Reads an Ethereum state back (`meta` from its `state_meta` row). Anything that does
/// not add up is damage.
pub async fn load_eth(
    wh: &Warehouse,
    case: &str,
    meta: &serde_json::Value,
    state_files: &[String],
    edge_files: &[String],
) -> Result<ferret_kernels::account::resume::EthResumeState> {
    use ferret_kernels::account::UNREACHED as ETH_UNREACHED;
    use ferret_kernels::account::resume::{
        AddrState, ETH_STATE_FORMAT, EthResumeState, NO_ARRIVAL, Shares, TaintedEdge,
    };
    let damaged = |reason: String| Error::Damaged {
        case: case.to_string(),
        reason: format!("Ethereum resume state: {reason}"),
    };
    let num = |k: &str| {
        meta.get(k)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| damaged(format!("state_meta has no `{k}`")))
    };
    if num("format")? != u64::from(ETH_STATE_FORMAT) {
        return Err(damaged(format!("format {}", num("format")?)));
    }
    let mut st = EthResumeState {
        height: meta.get("height").and_then(serde_json::Value::as_i64),
        transfers: num("transfers")?,
        max_amount: meta
            .get("max_amount")
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| damaged("state_meta has no `max_amount`".into()))?,
        seeds_found: meta
            .get("seeds_found")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| damaged("state_meta has no `seeds_found`".into()))?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        ..Default::default()
    };
    for f in edge_files {
        for b in wh.read_file(f).await? {
            let bad = |c: &str| damaged(format!("{f}: column `{c}`"));
            let t = |c: &str| {
                b.column_by_name(c)
                    .and_then(|x| x.as_string_opt::<i32>())
                    .ok_or_else(|| bad(c))
            };
            let (from, to, hash) = (t("from_address")?, t("to_address")?, t("transaction_hash")?);
            let seq = b
                .column_by_name("seq")
                .and_then(|x| x.as_primitive_opt::<Int64Type>())
                .ok_or_else(|| bad("seq"))?;
            let block = b
                .column_by_name("block_number")
                .and_then(|x| x.as_primitive_opt::<Int64Type>())
                .ok_or_else(|| bad("block_number"))?;
            let txi = b
                .column_by_name("transaction_index")
                .and_then(|x| x.as_primitive_opt::<Int32Type>())
                .ok_or_else(|| bad("transaction_index"))?;
            let v = b
                .column_by_name("tainted_value")
                .and_then(|x| x.as_primitive_opt::<Float64Type>())
                .ok_or_else(|| bad("tainted_value"))?;
            for i in 0..b.num_rows() {
                if seq.value(i) != st.edges.len() as i64 {
                    return Err(damaged(format!("{f}: edge {} out of order", seq.value(i))));
                }
                st.edges.push(TaintedEdge {
                    from: from.value(i).to_string(),
                    to: to.value(i).to_string(),
                    block: block.value(i),
                    tx_index: txi.value(i),
                    tx_hash: hash.value(i).to_string(),
                    value: v.value(i),
                });
            }
        }
    }
    for f in state_files {
        for b in wh.read_file(f).await? {
            let bad = |c: &str| damaged(format!("{f}: column `{c}`"));
            let t = |c: &str| {
                b.column_by_name(c)
                    .and_then(|x| x.as_string_opt::<i32>())
                    .ok_or_else(|| bad(c))
            };
            let i64c = |c: &str| {
                b.column_by_name(c)
                    .and_then(|x| x.as_primitive_opt::<Int64Type>())
                    .ok_or_else(|| bad(c))
            };
            let (addr, balance) = (t("address")?, t("balance")?);
            let hop = b
                .column_by_name("hop")
                .and_then(|x| x.as_primitive_opt::<Int32Type>())
                .ok_or_else(|| bad("hop"))?;
            let (arrival, start, n, first) = (
                i64c("arrival")?,
                i64c("shares_start")?,
                i64c("tainted_transfers")?,
                i64c("first_edge")?,
            );
            let shares = b
                .column_by_name("shares")
                .and_then(|x| x.as_list_opt::<i32>())
                .ok_or_else(|| bad("shares"))?;
            let v = b
                .column_by_name("tainted_value")
                .and_then(|x| x.as_primitive_opt::<Float64Type>())
                .ok_or_else(|| bad("tainted_value"))?;
            for i in 0..b.num_rows() {
                let a = addr.value(i);
                let vals = if shares.is_null(i) {
                    Vec::new()
                } else {
                    let l = shares.value(i);
                    let l = l
                        .as_primitive_opt::<Int64Type>()
                        .ok_or_else(|| bad("shares"))?;
                    l.values().iter().map(|&w| unpack(w)).collect::<Vec<_>>()
                };
                // The kernels' fractions: zero, or a normalised mantissa with an exponent
                // of at most 1 (1.0 is the largest share); a damaged exponent would
                // overflow their arithmetic.
                if let Some(x) = vals.iter().find(|x| {
                    !((x.m == 0 && x.e == 0)
                        || (x.m >= 0x8000_0000 && (-(1 << 29)..=1).contains(&x.e)))
                }) {
                    return Err(damaged(format!("{f}: {a}: share {x:?} is not a fraction")));
                }
                if vals.is_empty() != start.is_null(i) {
                    return Err(damaged(format!(
                        "{f}: {a}: shares and their start disagree"
                    )));
                }
                let first_edge = (!first.is_null(i)).then(|| first.value(i) as usize);
                if first_edge.is_some_and(|e| e >= st.edges.len()) {
                    return Err(damaged(format!("{f}: {a}: first edge beyond the edges")));
                }
                st.addresses.insert(
                    a.to_string(),
                    AddrState {
                        hop: if hop.is_null(i) {
                            ETH_UNREACHED
                        } else {
                            hop.value(i) as u32
                        },
                        arrival: if arrival.is_null(i) {
                            NO_ARRIVAL
                        } else {
                            arrival.value(i) as u64
                        },
                        balance: u256_of_hex(balance.value(i)).ok_or_else(|| {
                            damaged(format!("{f}: {a}: balance `{}`", balance.value(i)))
                        })?,
                        shares: Shares {
                            start: if start.is_null(i) {
                                0
                            } else {
                                start.value(i) as u32
                            },
                            vals,
                        },
                        value: v.value(i),
                        transfers: n.value(i) as u64,
                        first: first_edge,
                    },
                );
            }
        }
    }
    for (k, want) in [("addresses", st.addresses.len()), ("edges", st.edges.len())] {
        if num(k)? != want as u64 {
            return Err(damaged(format!(
                "state_meta counts {} {k}, the files hold {want}",
                num(k)?
            )));
        }
    }
    Ok(st)
}
