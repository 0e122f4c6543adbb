//! The case file: TOML, validated on load, every error naming the file, line and column.
//!
//! ```toml
//! name = "pig-butchering-2026-11"      # a-z 0-9 _ - (1-64): names its tables
//! description = "Victim deposits reported through the hotline"
//! chains = ["btc"]                     # btc, eth
//! schedule = "0 6 * * *"               # cron, UTC (`ferret jobs run`); optional
//!
//! [seeds]
//! addresses = ["bc1q…", "0x…"]         # each goes to the chain it belongs to
//! txids = []                           # Bitcoin transactions (every output a seed)
//! categories = ["scam"]                # every address labelled so
//! files = ["seeds.csv"]                # label files (CSV, TagPack, …), relative to this file
//! max_cluster_size = 10000             # larger seed clusters are not expanded (exchanges)
//!
//! [taint]
//! policy = "haircut"                   # poison, haircut, fifo (fifo: Bitcoin only)
//! direction = "forward"
//! hops = 10                            # optional: no limit
//! min_value = 0                        # sats (Bitcoin), base units (Ethereum)
//! stop_at = ["exchange"]
//! asset = "ETH"                        # Ethereum: ETH or a token contract
//!
//! [alerts]
//! jsonl = "alerts.jsonl"               # relative to this file
//! webhook = "https://…"                # POST per alert, retried with backoff
//! watch = ["bc1q…"]                    # watchlisted addresses
//! min_increase = 0                     # smallest new tainted value at a known exit
//! typologies = ["victim_collection"]    # findings of these patterns touching the case
//! ```

use std::ops::Range;
use std::path::{Path, PathBuf};

use ferret_kernels::account::job::AccountPolicy;
use ferret_kernels::taint::{Direction, Policy};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::cron::Cron;
use crate::{Error, Result};

/// Case files and seed files larger than this are refused (a case is typed by people).
pub const MAX_CASE_FILE_BYTES: u64 = 1 << 20;

/// The largest seed cluster expanded into members unless the case says otherwise.
pub const DEFAULT_MAX_CLUSTER_SIZE: i64 = 10_000;

/// Seeds one case may name, all sources together.
pub const MAX_SEEDS: usize = 1_000_000;

/// A validated case.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub description: Option<String>,
    /// `btc`, `eth`; in the file's order, no repeats.
    pub chains: Vec<String>,
    pub schedule: Option<Cron>,
    pub seeds: Seeds,
    pub taint: TaintParams,
    pub alerts: AlertParams,
    /// Where it was read from.
    pub path: PathBuf,
    /// SHA-256 of the file as read.
    pub sha256: String,
}

/// The case's seeds, split by chain.
#[derive(Clone, Debug)]
pub struct Seeds {
    pub btc_addresses: Vec<String>,
    pub eth_addresses: Vec<String>,
    pub txids: Vec<String>,
    pub categories: Vec<String>,
    /// Seed files: path and SHA-256 (their addresses are in the address lists).
    pub files: Vec<(PathBuf, String)>,
    /// A seed's cluster larger than this is not expanded into members (a seed that is in
    /// fact an exchange's or a service's wallet must not put its customers in the case).
    pub max_cluster_size: i64,
}

/// How to trace.
#[derive(Clone, Debug)]
pub struct TaintParams {
    pub btc_policy: Policy,
    pub eth_policy: AccountPolicy,
    pub direction: Direction,
    pub hops: Option<u32>,
    pub min_value: f64,
    pub stop_at: Vec<String>,
    pub asset: String,
}

/// Where alerts go, and what else raises them.
#[derive(Clone, Debug, Default)]
pub struct AlertParams {
    pub jsonl: Option<PathBuf>,
    pub webhook: Option<String>,
    pub watch_btc: Vec<String>,
    pub watch_eth: Vec<String>,
    pub min_increase: f64,
    /// Typology patterns whose findings raise an alert when they touch the case (the
    /// finding's address is a member, an exit or tainted).
    pub typologies: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Spanned<String>,
    description: Option<String>,
    chains: Spanned<Vec<Spanned<String>>>,
    schedule: Option<Spanned<String>>,
    seeds: Spanned<RawSeeds>,
    #[serde(default)]
    taint: RawTaint,
    #[serde(default)]
    alerts: RawAlerts,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSeeds {
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    #[serde(default)]
    txids: Vec<Spanned<String>>,
    #[serde(default)]
    categories: Vec<Spanned<String>>,
    #[serde(default)]
    files: Vec<Spanned<String>>,
    max_cluster_size: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTaint {
    policy: Option<Spanned<String>>,
    direction: Option<Spanned<String>>,
    hops: Option<Spanned<i64>>,
    min_value: Option<Spanned<f64>>,
    #[serde(default)]
    stop_at: Vec<Spanned<String>>,
    asset: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAlerts {
    jsonl: Option<Spanned<String>>,
    webhook: Option<Spanned<String>>,
    #[serde(default)]
    watch: Vec<Spanned<String>>,
    min_increase: Option<Spanned<f64>>,
    #[serde(default)]
    typologies: Vec<Spanned<String>>,
}

/// Line and column (from 1) of a byte offset.
fn line_col(src: &str, offset: usize) -> (usize, usize) {
    // A span inside a multi-byte character (never from the parser, but cheap to guard)
    // counts from the character's start.
    let mut end = offset.min(src.len());
    while !src.is_char_boundary(end) {
        end -= 1;
    }
    let before = &src[..end];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

struct Ctx<'a> {
    path: &'a Path,
    /// The TOML text validated (for a YAML file, its TOML form).
    src: &'a str,
    /// A YAML file's line and column per line of `src`.
    lines: Option<&'a [crate::yaml::LinePos]>,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, reason: impl Into<String>) -> Error {
        let (mut line, mut column) = line_col(self.src, span.start);
        if let Some(map) = self.lines {
            (line, column) = map
                .get(line.saturating_sub(1))
                .map_or((1, 1), |p| p.at(column));
        }
        Error::CaseFile {
            path: self.path.to_path_buf(),
            line,
            column,
            reason: reason.into(),
        }
    }
}

/// A 64-digit transaction id.
fn is_txid(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads and validates a case file.
pub fn load(path: &Path) -> Result<Case> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() > MAX_CASE_FILE_BYTES {
        return Err(Error::CaseFile {
            path: path.to_path_buf(),
            line: 1,
            column: 1,
            reason: format!(
                "{} bytes: a case file is at most {MAX_CASE_FILE_BYTES} (put long seed lists in seed files)",
                meta.len()
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let src = std::str::from_utf8(&bytes).map_err(|e| {
        let (line, column) = line_col(
            std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
            e.valid_up_to(),
        );
        Error::CaseFile {
            path: path.to_path_buf(),
            line,
            column,
            reason: "not UTF-8".into(),
        }
    })?;
    parse(path, src)
}

/// Whether `path` names a YAML case file (`.yaml`, `.yml`); others are TOML.
pub fn is_yaml(path: &Path) -> bool {
    path.extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| x.eq_ignore_ascii_case("yaml") || x.eq_ignore_ascii_case("yml"))
}

/// Validates a case file's text (`path` names it in errors, anchors seed files and says
/// whether it is YAML or TOML).
pub fn parse(path: &Path, src: &str) -> Result<Case> {
    if is_yaml(path) {
        let c = crate::yaml::to_toml(src).map_err(|(line, column, reason)| Error::CaseFile {
            path: path.to_path_buf(),
            line,
            column,
            reason,
        })?;
        let cx = Ctx {
            path,
            src: &c.toml,
            lines: Some(&c.lines),
        };
        return parse_in(&cx, src);
    }
    parse_in(
        &Ctx {
            path,
            src,
            lines: None,
        },
        src,
    )
}

/// Validates `cx`'s TOML; `original` is the file's text (its SHA-256 is the case's).
fn parse_in(cx: &Ctx<'_>, original: &str) -> Result<Case> {
    let (path, src) = (cx.path, cx.src);
    let raw: RawCase = toml::from_str(src).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        cx.err(span, e.message().to_string())
    })?;
    let name = raw.name.get_ref().clone();
    if !ferret_schemas::cases::valid_case_name(&name) {
        return Err(cx.err(
            raw.name.span(),
            format!("case name `{name}`: 1 to 64 of a-z, 0-9, `_` and `-`, starting with a letter or digit"),
        ));
    }
    let mut chains = Vec::new();
    for c in raw.chains.get_ref() {
        let v = c.get_ref().as_str();
        if v != "btc" && v != "eth" {
            return Err(cx.err(c.span(), format!("unknown chain `{v}` (btc, eth)")));
        }
        if chains.iter().any(|x| x == v) {
            return Err(cx.err(c.span(), format!("chain `{v}` is named twice")));
        }
        chains.push(v.to_string());
    }
    if chains.is_empty() {
        return Err(cx.err(raw.chains.span(), "name at least one chain (btc, eth)"));
    }
    let schedule = match &raw.schedule {
        Some(s) => Some(
            s.get_ref()
                .parse::<Cron>()
                .map_err(|e| cx.err(s.span(), format!("schedule: {e}")))?,
        ),
        None => None,
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let seeds = seeds(cx, &raw.seeds, &chains, base)?;
    let taint = taint(cx, &raw.taint, &chains)?;
    let alerts = alerts(cx, &raw.alerts, &chains, base)?;
    Ok(Case {
        name,
        description: raw.description,
        chains,
        schedule,
        seeds,
        taint,
        alerts,
        path: path.to_path_buf(),
        sha256: hex(&Sha256::digest(original.as_bytes())),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which of the case's chains an address belongs to, normalised.
fn address_chain(
    cx: &Ctx<'_>,
    a: &Spanned<String>,
    chains: &[String],
    what: &str,
) -> Result<(String, String)> {
    let text = a.get_ref().trim();
    let chain = if text.starts_with("0x") || text.starts_with("0X") {
        "eth"
    } else {
        "btc"
    };
    let norm = ferret_indexer::labels::normalise(chain, text)
        .map_err(|e| cx.err(a.span(), format!("{what}: {e}")))?;
    if !chains.iter().any(|c| c == chain) {
        return Err(cx.err(
            a.span(),
            format!(
                "{what} `{text}` is a {chain} address, and the case's chains are {}",
                chains.join(", ")
            ),
        ));
    }
    Ok((chain.to_string(), norm))
}

fn seeds(cx: &Ctx<'_>, raw: &Spanned<RawSeeds>, chains: &[String], base: &Path) -> Result<Seeds> {
    let r = raw.get_ref();
    let mut s = Seeds {
        btc_addresses: Vec::new(),
        eth_addresses: Vec::new(),
        txids: Vec::new(),
        categories: Vec::new(),
        files: Vec::new(),
        max_cluster_size: DEFAULT_MAX_CLUSTER_SIZE,
    };
    if let Some(m) = &r.max_cluster_size {
        let v = *m.get_ref();
        if !(1..=1_000_000_000).contains(&v) {
            return Err(cx.err(
                m.span(),
                format!("max_cluster_size {v}: give 1 to 1000000000"),
            ));
        }
        s.max_cluster_size = v;
    }
    for a in &r.addresses {
        let (chain, addr) = address_chain(cx, a, chains, "seed address")?;
        if chain == "btc" {
            s.btc_addresses.push(addr);
        } else {
            s.eth_addresses.push(addr);
        }
    }
    for t in &r.txids {
        let v = t.get_ref().trim();
        if !is_txid(v) {
            return Err(cx.err(
                t.span(),
                format!("`{v}` is not a transaction id (64 hex digits)"),
            ));
        }
        if !chains.iter().any(|c| c == "btc") {
            return Err(cx.err(
                t.span(),
                "seed txids are Bitcoin transactions, and the case does not trace btc",
            ));
        }
        s.txids.push(v.to_ascii_lowercase());
    }
    for c in &r.categories {
        let v = c.get_ref().trim();
        if v.is_empty() {
            return Err(cx.err(c.span(), "empty category"));
        }
        s.categories.push(v.to_string());
    }
    for f in &r.files {
        let p = base.join(f.get_ref());
        let meta = std::fs::metadata(&p)
            .map_err(|e| cx.err(f.span(), format!("seed file `{}`: {e}", p.display())))?;
        if meta.len() > ferret_indexer::labels::max_input_bytes() {
            return Err(cx.err(
                f.span(),
                format!("seed file `{}` is too large", p.display()),
            ));
        }
        let bytes = std::fs::read(&p)
            .map_err(|e| cx.err(f.span(), format!("seed file `{}`: {e}", p.display())))?;
        let defaults = ferret_indexer::labels::Defaults {
            chain: None,
            category: Some("seed".into()),
            label: Some("seed".into()),
            source: Some(format!("case:{}", raw_name(cx))),
        };
        let parsed = ferret_indexer::labels::parse_file(&p, &defaults)
            .map_err(|e| cx.err(f.span(), format!("seed file: {e}")))?;
        if let Some(bad) = parsed.skipped.first() {
            return Err(cx.err(
                f.span(),
                format!(
                    "seed file {}:{}: `{}`: {} ({} invalid addresses in all)",
                    bad.path.display(),
                    bad.line,
                    bad.address,
                    bad.reason,
                    parsed.skipped.len()
                ),
            ));
        }
        for l in parsed.labels {
            if !chains.contains(&l.chain) {
                return Err(cx.err(
                    f.span(),
                    format!(
                        "seed file `{}` has {} address `{}`, and the case's chains are {}",
                        p.display(),
                        l.chain,
                        l.address,
                        chains.join(", ")
                    ),
                ));
            }
            if l.chain == "btc" {
                s.btc_addresses.push(l.address);
            } else {
                s.eth_addresses.push(l.address);
            }
        }
        s.files.push((p, hex(&Sha256::digest(&bytes))));
    }
    for v in [
        &mut s.btc_addresses,
        &mut s.eth_addresses,
        &mut s.txids,
        &mut s.categories,
    ] {
        v.sort();
        v.dedup();
    }
    let total = s.btc_addresses.len() + s.eth_addresses.len() + s.txids.len();
    if total > MAX_SEEDS {
        return Err(cx.err(
            raw.span(),
            format!("{total} seeds: a case takes at most {MAX_SEEDS}"),
        ));
    }
    if total == 0 && s.categories.is_empty() {
        return Err(cx.err(
            raw.span(),
            "no seeds: give addresses, txids, categories or files",
        ));
    }
    Ok(s)
}

/// The case's name as written (for seed files' source), before validation succeeded.
fn raw_name(cx: &Ctx<'_>) -> String {
    toml::from_str::<toml::Table>(cx.src)
        .ok()
        .and_then(|t| t.get("name").and_then(|n| n.as_str().map(str::to_string)))
        .unwrap_or_default()
}

fn taint(cx: &Ctx<'_>, r: &RawTaint, chains: &[String]) -> Result<TaintParams> {
    let policy = r
        .policy
        .as_ref()
        .map_or("haircut", |p| p.get_ref().as_str());
    let span = r.policy.as_ref().map_or(0..0, Spanned::span);
    let btc_policy: Policy = policy
        .parse()
        .map_err(|e: String| cx.err(span.clone(), e))?;
    let eth_policy = if chains.iter().any(|c| c == "eth") {
        policy
            .parse::<AccountPolicy>()
            .map_err(|e| cx.err(span, e))?
    } else {
        AccountPolicy::Haircut
    };
    let direction = match &r.direction {
        Some(d) => d
            .get_ref()
            .parse()
            .map_err(|e: String| cx.err(d.span(), e))?,
        None => Direction::Forward,
    };
    let hops = match &r.hops {
        Some(h) => {
            let v = *h.get_ref();
            if !(0..=1_000_000).contains(&v) {
                return Err(cx.err(
                    h.span(),
                    format!("hops {v}: give 0 to 1000000, or leave it out for no limit"),
                ));
            }
            Some(v as u32)
        }
        None => None,
    };
    let min_value = match &r.min_value {
        Some(m) => {
            let v = *m.get_ref();
            if !(v.is_finite() && v >= 0.0) {
                return Err(cx.err(m.span(), "min_value must be a number ≥ 0"));
            }
            if chains.iter().any(|c| c == "btc") && v.fract() != 0.0 {
                return Err(cx.err(m.span(), "min_value is in sats on Bitcoin: a whole number"));
            }
            v
        }
        None => 0.0,
    };
    let asset = match &r.asset {
        Some(a) => {
            let v = a.get_ref().trim();
            if !chains.iter().any(|c| c == "eth") {
                return Err(cx.err(
                    a.span(),
                    "asset is for Ethereum, and the case does not trace eth",
                ));
            }
            if v.eq_ignore_ascii_case("eth") || v == "*" {
                v.to_ascii_uppercase()
            } else {
                ferret_indexer::labels::normalise("eth", v).map_err(|e| {
                    cx.err(
                        a.span(),
                        format!("asset: ETH, `*` or a token contract: {e}"),
                    )
                })?
            }
        }
        None => "ETH".into(),
    };
    let mut stop_at = Vec::new();
    for c in &r.stop_at {
        let v = c.get_ref().trim();
        if v.is_empty() {
            return Err(cx.err(c.span(), "empty category"));
        }
        stop_at.push(v.to_string());
    }
    Ok(TaintParams {
        btc_policy,
        eth_policy,
        direction,
        hops,
        min_value,
        stop_at,
        asset,
    })
}

fn alerts(cx: &Ctx<'_>, r: &RawAlerts, chains: &[String], base: &Path) -> Result<AlertParams> {
    let mut a = AlertParams {
        jsonl: r.jsonl.as_ref().map(|p| base.join(p.get_ref())),
        ..Default::default()
    };
    if let Some(w) = &r.webhook {
        let v = w.get_ref().trim();
        if !(v.starts_with("http://") || v.starts_with("https://")) || v.len() > 2048 {
            return Err(cx.err(
                w.span(),
                format!("webhook `{v}`: an http:// or https:// URL"),
            ));
        }
        reqwest::Url::parse(v).map_err(|e| cx.err(w.span(), format!("webhook `{v}`: {e}")))?;
        a.webhook = Some(v.to_string());
    }
    for w in &r.watch {
        let (chain, addr) = address_chain(cx, w, chains, "watched address")?;
        if chain == "btc" {
            a.watch_btc.push(addr);
        } else {
            a.watch_eth.push(addr);
        }
    }
    a.watch_btc.sort();
    a.watch_btc.dedup();
    a.watch_eth.sort();
    a.watch_eth.dedup();
    if let Some(m) = &r.min_increase {
        let v = *m.get_ref();
        if !(v.is_finite() && v >= 0.0) {
            return Err(cx.err(m.span(), "min_increase must be a number ≥ 0"));
        }
        a.min_increase = v;
    }
    for t in &r.typologies {
        let name = t.get_ref().trim();
        if ferret_kernels::typology::Pattern::from_name(name).is_none() {
            return Err(cx.err(
                t.span(),
                format!(
                    "typology `{name}`: not a pattern (the patterns are {})",
                    ferret_kernels::typology::Pattern::ALL
                        .map(|p| p.name())
                        .join(", ")
                ),
            ));
        }
        a.typologies.push(name.to_string());
    }
    a.typologies.sort();
    a.typologies.dedup();
    Ok(a)
}

impl Case {
    /// The parameters as recorded with each run.
    pub fn params(&self) -> serde_json::Value {
        let mut v = self.base_params();
        // Only when set: the params of cases written before subscriptions stay the same.
        if !self.alerts.typologies.is_empty() {
            v["alerts"]["typologies"] = serde_json::json!(self.alerts.typologies);
        }
        v
    }

    fn base_params(&self) -> serde_json::Value {
        let t = &self.taint;
        serde_json::json!({
            "name": self.name,
            "description": self.description,
            "chains": self.chains,
            "schedule": self.schedule.as_ref().map(ToString::to_string),
            "seeds": {
                "btc_addresses": self.seeds.btc_addresses.len(),
                "eth_addresses": self.seeds.eth_addresses.len(),
                "txids": self.seeds.txids,
                "categories": self.seeds.categories,
                "max_cluster_size": self.seeds.max_cluster_size,
                "files": self.seeds.files.iter().map(|(p, h)| serde_json::json!({"path": p.display().to_string(), "sha256": h})).collect::<Vec<_>>(),
            },
            "taint": {
                "policy": if self.chains.iter().any(|c| c == "btc") { t.btc_policy.as_str() } else { t.eth_policy.as_str() },
                "direction": t.direction.as_str(),
                "hops": t.hops,
                "min_value": t.min_value,
                "stop_at": t.stop_at,
                "asset": self.chains.iter().any(|c| c == "eth").then_some(&t.asset),
            },
            "alerts": {
                "jsonl": self.alerts.jsonl.as_ref().map(|p| p.display().to_string()),
                "webhook": self.alerts.webhook.is_some(),
                "watch": self.alerts.watch_btc.len() + self.alerts.watch_eth.len(),
                "min_increase": self.alerts.min_increase,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BTC: &str = "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa";
    const ETH: &str = "0xde0b295669a9fd93d5f28d9ec85e40f4cb697bae";

    fn case(src: &str) -> Result<Case> {
        parse(Path::new("/cases/x.toml"), src)
    }

    fn error(src: &str) -> (usize, String) {
        match case(src) {
            Err(Error::CaseFile { line, reason, .. }) => (line, reason),
            Err(e) => panic!("not a case file error: {e}"),
            Ok(_) => panic!("accepted:\n{src}"),
        }
    }

    fn yaml(src: &str) -> Result<Case> {
        parse(Path::new("/cases/x.yaml"), src)
    }

    fn yaml_error(src: &str) -> (usize, usize, String) {
        match yaml(src) {
            Err(Error::CaseFile {
                line,
                column,
                reason,
                ..
            }) => (line, column, reason),
            Err(e) => panic!("not a case file error: {e}"),
            Ok(_) => panic!("accepted:\n{src}"),
        }
    }

    #[test]
    fn a_yaml_case_is_the_toml_case() {
        let txid = "Ab".repeat(32);
        let toml = case(&format!(
            r#"
name = "pig-1"
description = "hotline: \"quoted\" \\ and more"
chains = ["btc", "eth"]
schedule = "0 6 * * *"

[seeds]
addresses = ["{BTC}", "{ETH}"]
txids = ["{txid}"]
categories = ["scam"]

[taint]
policy = "poison"
hops = 4
min_value = 1000
stop_at = ["exchange"]

[alerts]
jsonl = "out/alerts.jsonl"
watch = ["{ETH}"]
min_increase = 5
"#
        ))
        .expect("toml");
        // The same in YAML: tables before values, flow and block lists, quoting styles.
        let y = yaml(&format!(
            r#"# the hotline case
seeds:
  addresses:
    - {BTC}
    - "{ETH}"
  txids: ['{txid}']
  categories: [scam]
name: pig-1
description: 'hotline: "quoted" \ and more'
chains: [btc, eth]
schedule: "0 6 * * *"
taint:
  policy: poison
  hops: 4
  min_value: 1000
  stop_at:
    - exchange
alerts:
  jsonl: out/alerts.jsonl
  watch: [{ETH}]
  min_increase: 5
"#
        ))
        .expect("yaml");
        assert_eq!(y.params(), toml.params());
        assert_eq!(y.name, "pig-1");
        assert_eq!(y.description, toml.description);
        assert_ne!(y.sha256, toml.sha256, "the hash is the YAML file's");
    }

    #[test]
    fn yaml_errors_name_the_yaml_line_and_column() {
        // An unknown key in a table.
        let (l, c, r) = yaml_error(
            "name: a\nchains: [btc]\nseeds:\n  categories: [scam]\ntaint:\n  polcy: poison\n",
        );
        assert_eq!((l, c), (6, 3), "{r}");
        assert!(r.contains("polcy"), "{r}");
        // A bad address inside a block list: the item's own line and column.
        let (l, c, r) = yaml_error(&format!(
            "name: a\nchains: [btc]\nseeds:\n  addresses:\n    - {BTC}\n    - 1NotAnAddress\n"
        ));
        assert_eq!((l, c), (6, 7), "{r}");
        // A bad value type.
        let (l, _, r) = yaml_error(
            "name: a\nchains: [btc]\nseeds:\n  categories: [scam]\ntaint:\n  hops: many\n",
        );
        assert_eq!(l, 6, "{r}");
        // Syntax.
        let (l, _, r) = yaml_error("name: a\nchains: [btc\n");
        assert!(l >= 2, "{l}: {r}");
        // Duplicate keys.
        let (l, _, r) =
            yaml_error("name: a\nchains: [btc]\nname: b\nseeds:\n  categories: [scam]\n");
        assert_eq!(l, 3, "{r}");
    }

    #[test]
    fn hostile_yaml_is_refused_before_it_costs_anything() {
        // The billion laughs: aliases and anchors are refused outright.
        let laughs = "a: &a [\"lol\",\"lol\"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n";
        let (l, _, r) = yaml_error(laughs);
        assert_eq!(l, 1, "{r}");
        assert!(r.contains("anchors"), "{r}");
        let (_, _, r) = yaml_error("name: *x\n");
        assert!(!r.is_empty());
        for (src, want) in [
            ("name: !!binary aGVsbG8=\n", "tags"),
            ("name: a\n---\nname: b\n", "one YAML document"),
            ("- a\n- b\n", "mapping"),
            (
                "name: a\nseeds:\n  deep:\n    deeper: [x]\n",
                "nested too deep",
            ),
            (
                "name: a\nseeds:\n  deep:\n    deeper: x\n",
                "table inside a table",
            ),
            ("name: a\nchains: [[btc]]\n", "a list holds values"),
            ("name: ~\n", "empty value"),
            ("", "mapping"),
        ] {
            let (_, _, r) = yaml_error(src);
            assert!(r.contains(want), "{src:?}: {r}");
        }
        // Nesting is bounded before recursion goes deep.
        let deep = format!("a: {}x{}\n", "[".repeat(10_000), "]".repeat(10_000));
        let (_, _, r) = yaml_error(&deep);
        assert!(
            r.contains("nested too deep") || r.contains("recursion limit"),
            "{r}"
        );
    }

    #[test]
    fn a_full_case_loads() {
        let c = case(&format!(
            r#"
name = "pig-1"
description = "hotline"
chains = ["btc", "eth"]
schedule = "0 6 * * *"

[seeds]
addresses = ["{BTC}", "{ETH}", "{BTC}"]
txids = ["{}"]
categories = ["scam"]

[taint]
policy = "poison"
direction = "forward"
hops = 4
min_value = 1000
stop_at = ["exchange"]
asset = "eth"

[alerts]
jsonl = "out/alerts.jsonl"
webhook = "http://127.0.0.1:9/hook"
watch = ["{ETH}"]
min_increase = 5
"#,
            "Ab".repeat(32)
        ))
        .expect("loads");
        assert_eq!(c.name, "pig-1");
        assert_eq!(c.chains, ["btc", "eth"]);
        assert_eq!(c.seeds.btc_addresses, [BTC]);
        assert_eq!(c.seeds.eth_addresses, [ETH]);
        assert_eq!(c.seeds.txids, ["ab".repeat(32)]);
        assert_eq!(c.taint.hops, Some(4));
        assert_eq!(c.taint.asset, "ETH");
        assert_eq!(c.taint.eth_policy, AccountPolicy::Poison);
        assert_eq!(
            c.alerts.jsonl.as_deref(),
            Some(Path::new("/cases/out/alerts.jsonl"))
        );
        assert_eq!(c.alerts.watch_eth, [ETH]);
        assert_eq!(
            c.schedule.map(|s| s.to_string()).as_deref(),
            Some("0 6 * * *")
        );
        assert_eq!(c.sha256.len(), 64);
    }

    #[test]
    fn errors_name_the_line() {
        let head = "name = \"c\"\nchains = [\"btc\"]\n";
        let cases: Vec<(String, usize, &str)> = vec![
            (
                format!("{head}[seeds]\naddresses = [\"nope\"]\n"),
                4,
                "not a Bitcoin address",
            ),
            (
                format!("{head}[seeds]\naddresses = [\"{ETH}\"]\n"),
                4,
                "is a eth address",
            ),
            (
                format!("{head}[seeds]\naddresses = [\"{BTC}\"]\n[taint]\npolicy = \"lifo\"\n"),
                6,
                "unknown policy `lifo`",
            ),
            (
                format!("{head}[seeds]\naddresses = [\"{BTC}\"]\n[taint]\ndirection = \"up\"\n"),
                6,
                "unknown direction",
            ),
            (
                format!("{head}[seeds]\naddresses = [\"{BTC}\"]\n[taint]\nhops = -1\n"),
                6,
                "hops -1",
            ),
            (
                format!("{head}[seeds]\naddresses = [\"{BTC}\"]\n[taint]\nmin_value = 1.5\n"),
                6,
                "whole number",
            ),
            (
                format!("{head}[seeds]\naddresses = [\"{BTC}\"]\n[taint]\nasset = \"ETH\"\n"),
                6,
                "does not trace eth",
            ),
            (
                format!("{head}[seeds]\naddresses = [\"{BTC}\"]\nfrobnicate = 1\n"),
                5,
                "unknown field `frobnicate`",
            ),
            (
                format!("{head}schedule = \"61 * * * *\"\n[seeds]\ncategories = [\"scam\"]\n"),
                3,
                "minute 61",
            ),
            (
                format!("{head}[seeds]\ntxids = [\"abc\"]\n"),
                4,
                "not a transaction id",
            ),
            (
                format!("{head}[seeds]\nfiles = [\"missing.csv\"]\n"),
                4,
                "seed file",
            ),
            (format!("{head}[seeds]\n"), 3, "no seeds"),
            (
                format!("{head}[seeds]\ncategories = [\"s\"]\nmax_cluster_size = 0\n"),
                5,
                "max_cluster_size 0",
            ),
            (
                format!("{head}[seeds]\ncategories = [\"s\"]\n[alerts]\nwebhook = \"ftp://x\"\n"),
                6,
                "http:// or https://",
            ),
            (
                format!("{head}[seeds]\ncategories = [\"s\"]\n[alerts]\nwatch = [\"{ETH}\"]\n"),
                6,
                "watched address",
            ),
            (
                "name = \"Bad Name\"\nchains = [\"btc\"]\n[seeds]\ncategories = [\"s\"]\n".into(),
                1,
                "case name",
            ),
            (
                "name = \"c\"\nchains = [\"btc\", \"tron\"]\n[seeds]\ncategories = [\"s\"]\n"
                    .into(),
                2,
                "unknown chain `tron`",
            ),
            (
                "name = \"c\"\nchains = []\n[seeds]\ncategories = [\"s\"]\n".into(),
                2,
                "at least one chain",
            ),
            ("name = \"c\"\n\nchains = [\"btc\"\n".into(), 3, ""),
            (
                "chains = [\"btc\"]\n[seeds]\ncategories = [\"s\"]\n".into(),
                1,
                "missing field `name`",
            ),
        ];
        for (src, line, says) in cases {
            let (got_line, reason) = error(&src);
            assert!(reason.contains(says), "{src}\n→ {reason}");
            assert_eq!(got_line, line, "{src}\n→ {reason}");
        }
    }

    #[test]
    fn line_and_column_of_any_offset() {
        let src = "ab\néé\nx";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 3), (2, 1));
        // Inside `é` (2 bytes): its start.
        assert_eq!(line_col(src, 4), (2, 1));
        assert_eq!(line_col(src, 5), (2, 2));
        assert_eq!(line_col(src, 999), (3, 2));
    }

    #[test]
    fn seed_files_are_read_relative_to_the_case() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("seeds.txt"), format!("{BTC}\n")).expect("write");
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "name = \"c\"\nchains = [\"btc\"]\n[seeds]\nfiles = [\"seeds.txt\"]\n",
        )
        .expect("write");
        let c = load(&p).expect("loads");
        assert_eq!(c.seeds.btc_addresses, [BTC]);
        assert_eq!(c.seeds.files.len(), 1);
        // A bad address in a seed file is an error naming the case line and the seed line.
        std::fs::write(
            dir.path().join("seeds.txt"),
            format!("{BTC}\nnot-an-address\n"),
        )
        .expect("write");
        let err = load(&p).expect_err("bad seed").to_string();
        assert!(
            err.contains("c.toml:4:") && err.contains("seeds.txt:2"),
            "{err}"
        );
        // Not UTF-8, and too large.
        std::fs::write(&p, b"name = \"\xff\"\n").expect("write");
        assert!(
            load(&p)
                .expect_err("utf8")
                .to_string()
                .contains("not UTF-8")
        );
        std::fs::write(&p, vec![b'#'; (MAX_CASE_FILE_BYTES + 1) as usize]).expect("write");
        assert!(load(&p).expect_err("big").to_string().contains("at most"));
    }
}
