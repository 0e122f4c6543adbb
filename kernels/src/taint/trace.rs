//! Pictures of a taint run: the flow from the seeds to the exits as SVG, a
//! self-contained HTML page (the SVG, a summary and the exits table; no scripts, no
//! network) and Graphviz DOT. Addresses of one cluster are drawn as one node; edge width
//! grows with the tainted amount; nodes sit in columns by the hop at which taint reached
//! them. Large runs keep the `max_nodes` heaviest nodes and fold the rest of each column
//! into one "N more" node.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

use super::job::{Flow, TaintRun};

/// An amount unit: integer amounts with `decimals` decimal places shown as `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    pub name: String,
    pub decimals: u32,
}

impl Unit {
    /// Satoshis as BTC.
    pub fn btc() -> Self {
        Self {
            name: "BTC".into(),
            decimals: 8,
        }
    }

    /// `v` with its decimals.
    pub fn fmt(&self, v: i64) -> String {
        if self.decimals == 0 {
            return v.to_string();
        }
        let sign = if v < 0 { "-" } else { "" };
        let p = 10u64.pow(self.decimals);
        let a = v.unsigned_abs();
        format!("{sign}{}.{:0w$}", a / p, a % p, w = self.decimals as usize)
    }
}

/// One exit of a run, as pictures show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceExit {
    pub address: String,
    pub label: String,
    pub category: String,
    /// In the run's unit.
    pub value: i64,
    /// Outputs (Bitcoin) or transfers (Ethereum) that brought taint.
    pub count: u64,
    pub min_hop: u32,
    /// Along every path, however long (Bitcoin).
    pub all_paths: Option<i64>,
    /// The part of `all_paths` that arrived only through CoinJoin mixes (Bitcoin).
    pub coinjoin: Option<i64>,
}

/// What a picture shows, from a run of either chain.
#[derive(Clone, Debug)]
pub struct TraceRun {
    pub title: String,
    pub backward: bool,
    pub seeds: Vec<String>,
    pub exits: Vec<TraceExit>,
    /// Tainted amounts between addresses, in `unit`; a flow's hop is its far end's.
    pub flows: Vec<Flow>,
    pub unit: Unit,
    /// What the run reached, e.g. "1234 tainted outputs".
    pub reached: String,
    /// What `TraceExit::count` counts.
    pub count_name: &'static str,
}

impl From<&TaintRun> for TraceRun {
    fn from(run: &TaintRun) -> Self {
        Self {
            title: format!(
                "Ferret trace: {} {} from {} seed output(s)",
                run.job.policy.as_str(),
                run.job.direction.as_str(),
                run.seed_outputs
            ),
            backward: run.job.direction == super::Direction::Backward,
            seeds: run.seed_addresses.clone(),
            exits: run
                .exits
                .iter()
                .map(|e| TraceExit {
                    address: e.address.clone(),
                    label: e.label.clone(),
                    category: e.category.clone(),
                    value: e.tainted_value,
                    count: e.outputs,
                    min_hop: e.min_hop,
                    all_paths: Some(e.all_paths_value),
                    coinjoin: Some(e.coinjoin_value),
                })
                .collect(),
            flows: run.flows.clone(),
            unit: Unit::btc(),
            reached: format!("{} tainted outputs", run.outputs.len()),
            count_name: "outputs",
        }
    }
}

/// How to group and name addresses.
#[derive(Clone, Debug, Default)]
pub struct TraceInput {
    /// address → (cluster id, cluster size), from the stored `clusters` table.
    pub clusters: HashMap<String, (i64, i64)>,
    /// address → label, from the `labels` table.
    pub labels: HashMap<String, String>,
    /// Nodes to draw at most.
    pub max_nodes: usize,
}

impl TraceInput {
    /// Clusters and labels of `chain` (`btc`, `eth`) from the warehouse's stored tables.
    pub async fn load(
        wh: &ferret_schemas::Warehouse,
        chain: &str,
        max_nodes: usize,
    ) -> crate::Result<Self> {
        let mut labels = HashMap::new();
        for (address, label, _) in super::job::chain_labels(wh, chain).await? {
            labels.entry(address).or_insert(label);
        }
        Ok(Self {
            clusters: crate::cluster::load_clusters_of(wh, crate::cluster::clusters_job(chain))
                .await?,
            labels,
            max_nodes,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Seed,
    Hop,
    Exit,
}

#[derive(Clone, Debug)]
struct Node {
    name: String,
    detail: String,
    role: Role,
    hop: u32,
    /// Tainted value in and out.
    through: i64,
}

/// The drawn graph.
#[derive(Clone, Debug)]
pub struct Picture {
    unit: Unit,
    nodes: Vec<Node>,
    /// (from node, to node) → (tainted value, min hop).
    /// (from, to) → (amount, the CoinJoin protocol a flow passed through).
    edges: BTreeMap<(usize, usize), (i64, Option<&'static str>)>,
    hidden: usize,
    /// Backward runs draw the highest hop on the left, so money flows left to right.
    backward: bool,
    title: String,
    summary: String,
}

/// Sats as BTC with 8 decimals.
pub fn btc(sats: i64) -> String {
    Unit::btc().fmt(sats)
}

fn short(a: &str) -> String {
    if a.chars().count() <= 16 {
        a.to_string()
    } else {
        let head: String = a.chars().take(8).collect();
        let tail: String = a
            .chars()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("{head}…{tail}")
    }
}

/// `s` escaped for HTML and XML text and attributes.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

impl Picture {
    /// Groups the run's flows into nodes (clusters or addresses) and edges.
    pub fn new(run: &TraceRun, input: &TraceInput) -> Self {
        let key = |a: &str| match input.clusters.get(a) {
            Some(&(id, size)) if size > 1 => format!("cluster:{id}"),
            _ => a.to_string(),
        };
        let seeds: HashSet<String> = run.seeds.iter().map(|a| key(a)).collect();
        let exits: HashMap<String, (&str, &str)> = run
            .exits
            .iter()
            .map(|e| (key(&e.address), (e.label.as_str(), e.address.as_str())))
            .collect();
        // Aggregate flows per node pair, dropping flows inside one node.
        let mut members: BTreeMap<String, (String, u32)> = BTreeMap::new();
        let mut pair: BTreeMap<(String, String), (i64, Option<&'static str>)> = BTreeMap::new();
        let backward = run.backward;
        for f in &run.flows {
            let (a, b) = (key(&f.from), key(&f.to));
            // A flow's hop is its far end's: the receiver forward, the source backward.
            let (from_hop, to_hop) = if backward {
                (f.hop, f.hop.saturating_sub(1))
            } else {
                (f.hop.saturating_sub(1), f.hop)
            };
            for (k, addr, hop) in [(&a, &f.from, from_hop), (&b, &f.to, to_hop)] {
                let e = members.entry(k.clone()).or_insert((addr.clone(), hop));
                e.1 = e.1.min(hop);
            }
            if a != b {
                let e = pair.entry((a, b)).or_default();
                e.0 += f.tainted_value;
                e.1 = e.1.or(f.coinjoin);
            }
        }
        let mut through: HashMap<&str, i64> = HashMap::new();
        for ((a, b), (v, _)) in &pair {
            *through.entry(a).or_default() += v;
            *through.entry(b).or_default() += v;
        }
        let all: Vec<Node> = members
            .iter()
            .map(|(k, (addr, hop))| {
                let role = if seeds.contains(k) {
                    Role::Seed
                } else if exits.contains_key(k) {
                    Role::Exit
                } else {
                    Role::Hop
                };
                let size = input.clusters.get(addr).map_or(1, |c| c.1);
                let label = exits
                    .get(k)
                    .map(|(l, _)| l.to_string())
                    .or_else(|| input.labels.get(addr).cloned());
                let mut name = label.unwrap_or_else(|| short(addr));
                if size > 1 {
                    name = format!("{name} (+{} addr)", size - 1);
                }
                let detail = if size > 1 {
                    format!("cluster {} of {size} addresses, e.g. {addr}", &k[8..])
                } else {
                    addr.clone()
                };
                Node {
                    name,
                    detail,
                    role,
                    hop: if role == Role::Seed { 0 } else { *hop },
                    through: through.get(k.as_str()).copied().unwrap_or(0),
                }
            })
            .collect();
        let keys: Vec<String> = members.keys().cloned().collect();
        // Keep the heaviest nodes (seeds and exits first); fold the rest per column.
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.sort_by_key(|&i| {
            (
                all[i].role == Role::Hop,
                std::cmp::Reverse(all[i].through),
                i,
            )
        });
        let max = input.max_nodes.max(2);
        let kept: HashSet<usize> = order.iter().copied().take(max).collect();
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut nodes = Vec::new();
        // hop → (folded node, how many it stands for).
        let mut folded: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
        let mut hidden = 0;
        for (i, k) in keys.iter().enumerate() {
            if kept.contains(&i) {
                index.insert(k, nodes.len());
                nodes.push(all[i].clone());
            }
        }
        for (i, k) in keys.iter().enumerate() {
            if kept.contains(&i) {
                continue;
            }
            hidden += 1;
            let hop = all[i].hop;
            let (at, count) = folded.entry(hop).or_insert_with(|| {
                nodes.push(Node {
                    name: String::new(),
                    detail: String::new(),
                    role: Role::Hop,
                    hop,
                    through: 0,
                });
                (nodes.len() - 1, 0)
            });
            *count += 1;
            nodes[*at].through += all[i].through;
            index.insert(k, *at);
        }
        for (hop, &(at, n)) in &folded {
            nodes[at].name = format!("{n} more");
            nodes[at].detail = format!("{n} smaller nodes at hop {hop}, folded");
        }
        let mut edges: BTreeMap<(usize, usize), (i64, Option<&'static str>)> = BTreeMap::new();
        for ((a, b), (v, mix)) in pair {
            let (x, y) = (index[a.as_str()], index[b.as_str()]);
            if x != y {
                let e = edges.entry((x, y)).or_default();
                e.0 += v;
                e.1 = e.1.or(mix);
            }
        }
        let exited: i64 = run.exits.iter().map(|e| e.value).sum();
        let mut summary = format!(
            "{}; {} exits received {} {}",
            run.reached,
            run.exits.len(),
            run.unit.fmt(exited),
            run.unit.name,
        );
        let all: i64 = run
            .exits
            .iter()
            .map(|e| e.all_paths.unwrap_or(e.value))
            .sum();
        let mixed: i64 = run.exits.iter().filter_map(|e| e.coinjoin).sum();
        if all != exited {
            let _ = write!(
                summary,
                " within the hop limit, {} {} along every path",
                run.unit.fmt(all),
                run.unit.name
            );
        }
        if mixed > 0 {
            let _ = write!(
                summary,
                " ({} {} of it only through CoinJoins)",
                run.unit.fmt(mixed),
                run.unit.name
            );
        }
        let _ = write!(summary, "; {} nodes drawn", nodes.len());
        if hidden > 0 {
            let _ = write!(summary, " ({hidden} smaller ones folded)");
        }
        Self {
            unit: run.unit.clone(),
            nodes,
            edges,
            hidden,
            backward,
            title: run.title.clone(),
            summary,
        }
    }

    /// Nodes folded into "N more" nodes.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    pub fn edges(&self) -> usize {
        self.edges.len()
    }

    /// Positions: columns by hop, rows by weight.
    fn layout(&self) -> (Vec<(f64, f64)>, f64, f64) {
        let mut cols: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            cols.entry(n.hop).or_default().push(i);
        }
        let mut pos = vec![(0.0, 0.0); self.nodes.len()];
        let (col_w, row_h, margin) = (250.0, 44.0, 30.0);
        let mut height: f64 = 0.0;
        let n_cols = cols.len();
        for (i, (_, members)) in cols.iter_mut().enumerate() {
            let c = if self.backward { n_cols - 1 - i } else { i };
            members
                .sort_by_key(|&i| (self.nodes[i].role, std::cmp::Reverse(self.nodes[i].through)));
            for (r, &i) in members.iter().enumerate() {
                pos[i] = (margin + c as f64 * col_w, margin + 40.0 + r as f64 * row_h);
            }
            height = height.max(margin * 2.0 + 40.0 + members.len() as f64 * row_h);
        }
        let width = margin * 2.0 + cols.len().max(1) as f64 * col_w;
        (pos, width, height)
    }

    /// The picture as SVG.
    pub fn svg(&self) -> String {
        let (pos, width, height) = self.layout();
        let (node_w, node_h) = (190.0, 28.0);
        let max = self.edges.values().map(|e| e.0).max().unwrap_or(1).max(1) as f64;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
        );
        let _ = writeln!(s, "<title>{}</title>", esc(&self.title));
        let _ = writeln!(
            s,
            r#"<text x="30" y="24" font-size="14" font-weight="bold">{}</text>"#,
            esc(&self.title)
        );
        let mut hops: Vec<(u32, f64)> = self
            .nodes
            .iter()
            .zip(&pos)
            .map(|(n, p)| (n.hop, p.0))
            .collect();
        hops.sort_by_key(|h| h.0);
        hops.dedup_by_key(|h| h.0);
        for (hop, x) in hops {
            let _ = writeln!(
                s,
                r##"<text x="{x:.0}" y="52" fill="#666">hop {hop}</text>"##
            );
        }
        for (&(a, b), &(v, mix)) in &self.edges {
            let (x1, y1) = (pos[a].0 + node_w, pos[a].1 + node_h / 2.0);
            let (x2, y2) = (pos[b].0, pos[b].1 + node_h / 2.0);
            let w = 1.0 + 13.0 * (v as f64 / max).sqrt();
            let dx = ((x2 - x1).abs() / 2.0).max(40.0);
            // Flows through a CoinJoin are dashed and say so.
            let (dash, via) = match mix {
                Some(p) => (r#" stroke-dasharray="6 4""#, format!(" via CoinJoin ({p})")),
                None => ("", String::new()),
            };
            let _ = writeln!(
                s,
                r##"<path d="M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}" fill="none" stroke="#c0392b" stroke-opacity="0.45" stroke-width="{w:.2}"{dash}><title>{} → {}: {} {}{}</title></path>"##,
                x1 + dx,
                x2 - dx,
                esc(&self.nodes[a].name),
                esc(&self.nodes[b].name),
                self.unit.fmt(v),
                esc(&self.unit.name),
                esc(&via)
            );
        }
        for (n, &(x, y)) in self.nodes.iter().zip(&pos) {
            let fill = match n.role {
                Role::Seed => "#f5b7b1",
                Role::Exit => "#aed6f1",
                Role::Hop => "#f4f6f6",
            };
            let _ = writeln!(
                s,
                r##"<g><title>{} ({}): {} {} through</title><rect x="{x:.1}" y="{y:.1}" width="{node_w}" height="{node_h}" rx="5" fill="{fill}" stroke="#555"/><text x="{:.1}" y="{:.1}">{}</text></g>"##,
                esc(&n.detail),
                match n.role {
                    Role::Seed => "seed",
                    Role::Exit => "exit",
                    Role::Hop => "hop",
                },
                self.unit.fmt(n.through),
                esc(&self.unit.name),
                x + 6.0,
                y + 18.0,
                esc(&n.name)
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="30" y="{:.0}" fill="#666">{}</text>"##,
            height - 8.0,
            esc(&self.summary)
        );
        s.push_str("</svg>\n");
        s
    }

    /// A self-contained HTML page: the SVG, the summary and the exits table.
    pub fn html(&self, run: &TraceRun) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
             <style>body{{font-family:sans-serif;margin:24px}}table{{border-collapse:collapse}}\
             td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}td.n{{text-align:right}}\
             .svg{{overflow:auto;border:1px solid #eee}}</style></head><body>\n<h1>{t}</h1>\n<p>{sum}</p>\n\
             <p>Seeds: {seeds}</p>\n<div class=\"svg\">\n{svg}</div>\n",
            t = esc(&self.title),
            sum = esc(&self.summary),
            seeds = esc(&run.seeds.join(", ")),
            svg = self.svg()
        );
        let extra = run.exits.iter().any(|e| e.all_paths.is_some());
        let _ = writeln!(
            s,
            "<h2>Exits</h2>\n<table><tr><th>address</th><th>label</th><th>category</th><th>tainted {}</th>{}<th>{}</th><th>min hop</th></tr>",
            esc(&run.unit.name),
            if extra {
                "<th>along every path</th><th>of it only through CoinJoins</th>"
            } else {
                ""
            },
            run.count_name
        );
        for e in &run.exits {
            let more = match (extra, e.all_paths, e.coinjoin) {
                (true, a, c) => format!(
                    "<td class=\"n\">{}</td><td class=\"n\">{}</td>",
                    a.map(|v| run.unit.fmt(v)).unwrap_or_default(),
                    c.map(|v| run.unit.fmt(v)).unwrap_or_default()
                ),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>{more}<td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                esc(&e.address),
                esc(&e.label),
                esc(&e.category),
                run.unit.fmt(e.value),
                e.count,
                e.min_hop
            );
        }
        s.push_str("</table>\n</body></html>\n");
        s
    }

    /// Graphviz DOT.
    pub fn dot(&self) -> String {
        let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let max = self.edges.values().map(|e| e.0).max().unwrap_or(1).max(1) as f64;
        let mut s = String::from(
            "digraph ferret_trace {\n  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"sans-serif\"];\n",
        );
        let _ = writeln!(s, "  label=\"{}\";", q(&self.title));
        for (i, n) in self.nodes.iter().enumerate() {
            let fill = match n.role {
                Role::Seed => "#f5b7b1",
                Role::Exit => "#aed6f1",
                Role::Hop => "#f4f6f6",
            };
            let _ = writeln!(
                s,
                "  n{i} [label=\"{}\", tooltip=\"{}\", fillcolor=\"{fill}\"];",
                q(&n.name),
                q(&n.detail)
            );
        }
        for (&(a, b), &(v, mix)) in &self.edges {
            let _ = writeln!(
                s,
                "  n{a} -> n{b} [penwidth={:.2}, label=\"{}{}\"{}];",
                1.0 + 9.0 * (v as f64 / max).sqrt(),
                self.unit.fmt(v),
                mix.map(|p| format!(" via CoinJoin ({p})"))
                    .unwrap_or_default(),
                if mix.is_some() { ", style=dashed" } else { "" }
            );
        }
        s.push_str("}\n");
        s
    }
}
