//! Importing address labels: CSV (`address,label,category[,source,confidence]`, header
//! optional), GraphSense TagPack YAML (header fields inherited by each tag unless the tag
//! sets its own) and plain address lists (one address a line, `#` comments). Addresses are
//! checked and normalised (Bitcoin: parsed, any network, bech32 lower-cased; Ethereum:
//! `0x` + 40 hex digits, lower-cased), so a label matches the address as the tables spell
//! it.
//!
//! The `labels` table is rewritten whole on each import: the current rows plus the new
//! ones, deduplicated on (chain, address, label, category, source), committed as one new
//! run. Importing a file twice adds nothing. Two imports at the same moment: the last
//! commit wins (run imports one after another).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use ferret_schemas::Warehouse;
use ferret_schemas::results::labels_schema;
use yaml_rust2::{Yaml, YamlLoader};

/// One label.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Label {
    pub chain: String,
    pub address: String,
    pub label: String,
    pub category: String,
    pub source: String,
    pub confidence: Option<String>,
}

impl Label {
    fn key(&self) -> (&str, &str, &str, &str, &str) {
        (
            &self.chain,
            &self.address,
            &self.label,
            &self.category,
            &self.source,
        )
    }
}

/// Errors of label import.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Something wrong at a place in a file.
    #[error("{path}:{line}: {reason}")]
    Bad {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(transparent)]
    Warehouse(#[from] ferret_schemas::Error),
}

/// Values for fields a file does not give (`--chain`, `--category`, `--label`, `--source`).
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    pub chain: Option<String>,
    pub category: Option<String>,
    pub label: Option<String>,
    pub source: Option<String>,
}

impl Defaults {
    /// The file's category for a label, else `--category`, else `unknown` (TagPack, MISP
    /// and STIX entries need not say).
    fn category_or_unknown(&self, found: Option<String>) -> String {
        found
            .or_else(|| self.category.clone())
            .unwrap_or_else(|| "unknown".into())
    }
}

/// An address that was not imported, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub line: usize,
    pub address: String,
    pub reason: String,
}

/// The labels of one file, and the invalid addresses in it.
#[derive(Debug, Default)]
pub struct Parsed {
    pub labels: Vec<Label>,
    pub skipped: Vec<Skipped>,
}

/// Normalises an address for `chain` (`btc` or `eth`), or says why it is not one.
pub fn normalise(chain: &str, address: &str) -> Result<String, String> {
    match chain {
        "btc" => {
            let parsed = bitcoin::Address::from_str(address)
                .map_err(|e| format!("`{address}` is not a Bitcoin address: {e}"))?;
            // Any network's encoding is accepted (test chains are labelled too); the
            // address is matched against the tables as text.
            Ok(parsed.assume_checked().to_string())
        }
        "eth" => {
            let hex = address
                .strip_prefix("0x")
                .or_else(|| address.strip_prefix("0X"))
                .unwrap_or("");
            if hex.len() == 40 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(format!("0x{}", hex.to_ascii_lowercase()))
            } else {
                Err(format!(
                    "`{address}` is not an Ethereum address (0x + 40 hex digits)"
                ))
            }
        }
        other => Err(format!("unknown chain `{other}` (btc, eth)")),
    }
}

/// The chain of an address when none is given: `0x` + 40 hex digits is Ethereum.
fn guess_chain(address: &str) -> &'static str {
    if address.len() == 42 && address.starts_with("0x") {
        "eth"
    } else {
        "btc"
    }
}

fn chain_of_currency(currency: &str) -> Option<&'static str> {
    match currency.to_ascii_lowercase().as_str() {
        "btc" | "xbt" | "bitcoin" => Some("btc"),
        "eth" | "ethereum" => Some("eth"),
        _ => None,
    }
}

/// A file's format, from its extension: `.csv`, `.yaml`/`.yml` (TagPack), else a list.
fn format_of(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("csv") => "csv",
        Some("yaml" | "yml") => "tagpack",
        Some("json") => "json",
        Some("xml") => "ofac",
        _ => "list",
    }
}

struct Sink<'a> {
    path: &'a Path,
    out: Parsed,
}

impl Sink<'_> {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        line: usize,
        chain: Option<&str>,
        address: &str,
        label: String,
        category: String,
        source: String,
        confidence: Option<String>,
    ) {
        let address = address.trim();
        let chain = chain.unwrap_or_else(|| guess_chain(address)).to_string();
        match normalise(&chain, address) {
            Ok(address) => self.out.labels.push(Label {
                chain,
                address,
                label,
                category,
                source,
                confidence,
            }),
            Err(reason) => self.out.skipped.push(Skipped {
                path: self.path.to_path_buf(),
                line,
                address: address.to_string(),
                reason,
            }),
        }
    }
}

/// The largest label file read (`FERRET_MAX_INPUT_BYTES`, default 1 GiB): a file beyond
/// it (or an endless one, like `/dev/zero`) is refused, never read without bound.
pub fn max_input_bytes() -> u64 {
    std::env::var("FERRET_MAX_INPUT_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1 << 30)
}

/// The most YAML nodes a TagPack may expand to, aliases expanded ("billion laughs").
pub const MAX_YAML_NODES: u64 = 5_000_000;

/// Reads a whole file as UTF-8, refusing one larger than `cap` bytes (checked as it is
/// read, so special files that never end are refused too).
fn read_capped(path: &Path, cap: u64) -> Result<String, LabelError> {
    use std::io::Read;
    let io = |source| LabelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let too_large = || LabelError::Bad {
        path: path.to_path_buf(),
        line: 0,
        reason: format!(
            "larger than the {cap}-byte limit for label files (FERRET_MAX_INPUT_BYTES)"
        ),
    };
    let f = std::fs::File::open(path).map_err(io)?;
    if f.metadata().map_err(io)?.len() > cap {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    f.take(cap + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|e| LabelError::Bad {
        path: path.to_path_buf(),
        line: 0,
        reason: format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
    })
}

/// Counts the nodes a YAML text expands to, aliases expanded, without expanding them;
/// refuses more than `max` (line, reason).
fn check_yaml_expansion(text: &str, max: u64) -> Result<(), (usize, String)> {
    use yaml_rust2::parser::{Event, Parser};
    let mut parser = Parser::new_from_str(text);
    let mut sizes: std::collections::HashMap<usize, u64> = std::collections::HashMap::new();
    // Open collections: (anchor, nodes so far).
    let mut open: Vec<(usize, u64)> = Vec::new();
    let mut total = 0u64;
    loop {
        let (ev, mark) = parser
            .next_token()
            .map_err(|e| (e.marker().line() + 1, format!("not YAML: {e}")))?;
        let add = |n: u64, open: &mut Vec<(usize, u64)>, total: &mut u64| match open.last_mut() {
            Some(top) => top.1 = top.1.saturating_add(n),
            None => *total = total.saturating_add(n),
        };
        match ev {
            Event::StreamEnd => return Ok(()),
            Event::Scalar(_, _, anchor, _) => {
                if anchor > 0 {
                    sizes.insert(anchor, 1);
                }
                add(1, &mut open, &mut total);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                open.push((anchor, 1));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((anchor, n)) = open.pop() {
                    if anchor > 0 {
                        sizes.insert(anchor, n);
                    }
                    add(n, &mut open, &mut total);
                }
            }
            Event::Alias(id) => {
                let n = sizes.get(&id).copied().unwrap_or(1);
                add(n, &mut open, &mut total);
            }
            _ => {}
        }
        let pending: u64 = open.iter().map(|o| o.1).fold(total, u64::saturating_add);
        if pending > max {
            return Err((
                mark.line() + 1,
                format!("the YAML expands to more than {max} nodes (aliases expanded): refused"),
            ));
        }
    }
}

/// Counts the values a JSON text holds (objects, arrays and their members, outside
/// strings) and refuses more than `max`, before anything is built from it: a 1 GiB file of
/// `[0,0,0,…]` would otherwise become many GiB of values.
fn check_json_size(text: &str, max: u64) -> Result<(), (usize, String)> {
    let (mut n, mut line, mut in_str, mut esc) = (0u64, 1usize, false, false);
    for b in text.bytes() {
        if b == b'\n' {
            line += 1;
        }
        if in_str {
            match (esc, b) {
                (true, _) => esc = false,
                (false, b'\\') => esc = true,
                (false, b'"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'{' | b'[' | b',' | b':' => {
                n += 1;
                if n > max {
                    return Err((
                        line,
                        format!("the JSON holds more than {max} values: refused"),
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parses one file.
pub fn parse_file(path: &Path, d: &Defaults) -> Result<Parsed, LabelError> {
    let text = read_capped(path, max_input_bytes())?;
    let bad = |line: usize, reason: String| LabelError::Bad {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let file_name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let stem = path
        .file_stem()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut sink = Sink {
        path,
        out: Parsed::default(),
    };
    let chain = d.chain.as_deref();
    match format_of(path) {
        "csv" => {
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .trim(csv::Trim::All)
                .comment(Some(b'#'))
                .from_reader(text.as_bytes());
            for (i, rec) in r.records().enumerate() {
                let rec = rec.map_err(|e| bad(i + 1, e.to_string()))?;
                let line = rec.position().map_or(i + 1, |p| p.line() as usize);
                let get = |k: usize| rec.get(k).filter(|s| !s.is_empty()).map(str::to_string);
                if i == 0
                    && rec
                        .get(0)
                        .is_some_and(|h| h.eq_ignore_ascii_case("address"))
                {
                    continue;
                }
                let missing_label = rec.get(1).is_none_or(str::is_empty) && d.label.is_none();
                let missing_category = rec.get(2).is_none_or(str::is_empty) && d.category.is_none();
                if missing_label || missing_category {
                    return Err(bad(
                        line,
                        format!(
                            "{} fields; expected address,label,category[,source,confidence]",
                            rec.len()
                        ),
                    ));
                }
                let address = get(0).ok_or_else(|| bad(line, "empty address".into()))?;
                let label = get(1)
                    .or_else(|| d.label.clone())
                    .ok_or_else(|| bad(line, "empty label".into()))?;
                let category = get(2)
                    .or_else(|| d.category.clone())
                    .ok_or_else(|| bad(line, "empty category".into()))?;
                let source = get(3)
                    .or_else(|| d.source.clone())
                    .unwrap_or_else(|| file_name.clone());
                sink.push(line, chain, &address, label, category, source, get(4));
            }
        }
        "tagpack" => {
            check_yaml_expansion(&text, MAX_YAML_NODES).map_err(|(line, r)| bad(line, r))?;
            let docs = YamlLoader::load_from_str(&text)
                .map_err(|e| bad(e.marker().line() + 1, format!("not YAML: {e}")))?;
            let doc = docs.first().ok_or_else(|| bad(1, "empty TagPack".into()))?;
            let field = |y: &Yaml, k: &str| -> Option<String> {
                match &y[k] {
                    Yaml::String(s) => Some(s.clone()),
                    Yaml::Integer(i) => Some(i.to_string()),
                    Yaml::Real(r) => Some(r.clone()),
                    Yaml::Boolean(b) => Some(b.to_string()),
                    _ => None,
                }
            };
            let tags = doc["tags"]
                .as_vec()
                .ok_or_else(|| bad(1, "a TagPack needs a `tags` list".into()))?;
            for (i, tag) in tags.iter().enumerate() {
                // Line numbers are not kept by the loader: report the tag's position.
                let at = i + 1;
                let inherit = |k: &str| field(tag, k).or_else(|| field(doc, k));
                let address = field(tag, "address")
                    .ok_or_else(|| bad(at, format!("tag {at} has no address")))?;
                let label = inherit("label")
                    .or_else(|| d.label.clone())
                    .ok_or_else(|| bad(at, format!("tag {at} ({address}) has no label")))?;
                let category = d.category_or_unknown(inherit("category"));
                let source = inherit("source")
                    .or_else(|| d.source.clone())
                    .unwrap_or_else(|| file_name.clone());
                let tag_chain = match chain {
                    Some(c) => Some(c),
                    None => match inherit("currency") {
                        Some(c) => Some(chain_of_currency(&c).ok_or_else(|| {
                            bad(at, format!("tag {at}: unsupported currency `{c}`"))
                        })?),
                        None => None,
                    },
                };
                sink.push(
                    at,
                    tag_chain,
                    &address,
                    label,
                    category,
                    source,
                    inherit("confidence").filter(|c| c != crate::label_export::UNKNOWN_CONFIDENCE),
                );
            }
        }
        "json" => {
            check_json_size(&text, MAX_YAML_NODES).map_err(|(line, r)| bad(line, r))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| bad(e.line(), format!("not JSON: {e}")))?;
            let text_of = |v: &serde_json::Value| v.as_str().map(str::to_string);
            if v["type"] == "bundle" {
                // STIX 2.1: cryptocurrency-wallet objects.
                let objects = v["objects"]
                    .as_array()
                    .ok_or_else(|| bad(1, "a STIX bundle needs an `objects` list".into()))?;
                for (i, o) in objects.iter().enumerate() {
                    if o["type"] != "cryptocurrency-wallet" {
                        continue;
                    }
                    let at = i + 1;
                    let address = text_of(&o["address"]).ok_or_else(|| {
                        bad(
                            at,
                            format!("object {at}: a cryptocurrency-wallet without an address"),
                        )
                    })?;
                    let x_chain = text_of(&o["x_ferret_chain"]);
                    let chain = chain.or(x_chain.as_deref());
                    sink.push(
                        at,
                        chain,
                        &address,
                        text_of(&o["x_ferret_label"])
                            .or_else(|| d.label.clone())
                            .unwrap_or_else(|| stem.clone()),
                        d.category_or_unknown(text_of(&o["x_ferret_category"])),
                        text_of(&o["x_ferret_source"])
                            .or_else(|| d.source.clone())
                            .unwrap_or_else(|| file_name.clone()),
                        text_of(&o["x_ferret_confidence"]),
                    );
                }
            } else if v.get("Event").is_some() || v.get("response").is_some() {
                // MISP: one event, or a search response of events.
                let events: Vec<&serde_json::Value> = match v.get("response") {
                    Some(r) => r
                        .as_array()
                        .map(|a| a.iter().map(|e| &e["Event"]).collect())
                        .unwrap_or_default(),
                    None => vec![&v["Event"]],
                };
                let mut at = 0usize;
                for ev in events {
                    let org = text_of(&ev["Orgc"]["name"]);
                    let info = text_of(&ev["info"]);
                    for o in ev["Object"].as_array().into_iter().flatten() {
                        if o["name"] != "coin-address" {
                            continue;
                        }
                        at += 1;
                        let attrs = o["Attribute"].as_array().cloned().unwrap_or_default();
                        let rel = |r: &str| {
                            attrs
                                .iter()
                                .find(|a| a["object_relation"] == r)
                                .and_then(|a| text_of(&a["value"]))
                        };
                        let Some(address) = rel("address") else {
                            return Err(bad(
                                at,
                                format!("coin-address object {at} has no address"),
                            ));
                        };
                        // ferret:key="value" machine tags on the address or the object.
                        let mut tags = std::collections::HashMap::new();
                        let addr_tags = attrs
                            .iter()
                            .find(|a| a["object_relation"] == "address")
                            .map(|a| a["Tag"].clone());
                        for t in addr_tags
                            .iter()
                            .chain(std::iter::once(&o["Tag"]))
                            .filter_map(|t| t.as_array())
                            .flatten()
                        {
                            if let Some(name) = t["name"].as_str()
                                && let Some(rest) = name.strip_prefix("ferret:")
                                && let Some((k, val)) = rest.split_once('=')
                                && let Ok(val) = serde_json::from_str::<String>(val)
                            {
                                tags.insert(k.to_string(), val);
                            }
                        }
                        let tag_chain = match (chain, rel("symbol")) {
                            (Some(c), _) => Some(c),
                            (None, Some(sym)) => {
                                Some(chain_of_currency(&sym).ok_or_else(|| {
                                    bad(
                                        at,
                                        format!(
                                            "coin-address object {at}: unsupported symbol `{sym}`"
                                        ),
                                    )
                                })?)
                            }
                            (None, None) => None,
                        };
                        sink.push(
                            at,
                            tag_chain,
                            &address,
                            rel("text")
                                .or_else(|| text_of(&o["comment"]).filter(|c| !c.is_empty()))
                                .or_else(|| d.label.clone())
                                .or_else(|| info.clone())
                                .unwrap_or_else(|| stem.clone()),
                            d.category_or_unknown(tags.remove("category")),
                            tags.remove("source")
                                .or_else(|| d.source.clone())
                                .or_else(|| org.clone())
                                .unwrap_or_else(|| file_name.clone()),
                            tags.remove("confidence"),
                        );
                    }
                }
            } else {
                return Err(bad(
                    1,
                    "JSON that is neither a MISP event (`Event`, `response`) nor a STIX bundle (`\"type\": \"bundle\"`)".into(),
                ));
            }
        }
        "ofac" => {
            // OFAC's SDN list: each digital currency address, its chain from the asset
            // code (and, for stablecoins, the address's shape).
            let found = crate::ofac::parse_sdn_xml(&text).map_err(|(line, r)| bad(line, r))?;
            let mut ignored = 0usize;
            for (i, a) in found.iter().enumerate() {
                let Some(c) = crate::ofac::chain_of(&a.asset, &a.address) else {
                    ignored += 1;
                    continue;
                };
                sink.push(
                    i + 1,
                    chain.or(Some(c)),
                    &a.address,
                    d.label.clone().unwrap_or_else(|| a.name.clone()),
                    d.category.clone().unwrap_or_else(|| "sanctioned".into()),
                    d.source.clone().unwrap_or_else(|| {
                        format!("OFAC SDN {} ({})", a.uid, a.programs.join(", "))
                    }),
                    None,
                );
            }
            if ignored > 0 {
                tracing::info!(file = %path.display(), ignored, "OFAC addresses on chains Ferret does not index (XMR, TRON, …) left out");
            }
        }
        _ => {
            let category = d.category.clone().ok_or_else(|| {
                bad(
                    0,
                    "a plain address list needs --category (and may take --label, --source)".into(),
                )
            })?;
            for (i, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
                let a = line.split('#').next().unwrap_or("").trim();
                if a.is_empty() {
                    continue;
                }
                sink.push(
                    i + 1,
                    chain,
                    a,
                    d.label.clone().unwrap_or_else(|| stem.clone()),
                    category.clone(),
                    d.source.clone().unwrap_or_else(|| file_name.clone()),
                    None,
                );
            }
        }
    }
    Ok(sink.out)
}

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Labels read from the files.
    pub read: usize,
    /// Labels that were not in the table before.
    pub added: usize,
    /// Rows in the table now.
    pub total: usize,
    pub skipped: Vec<Skipped>,
    /// The new run, or None when nothing changed.
    pub run_id: Option<String>,
}

/// Reads the current `labels` table.
pub async fn load_labels(wh: &Warehouse) -> Result<Vec<Label>, LabelError> {
    let mut out = Vec::new();
    for b in wh.read_latest("labels").await? {
        let col = |name: &str| {
            b.column_by_name(name)
                .and_then(|c| c.as_string_opt::<i32>())
                .ok_or_else(|| LabelError::Bad {
                    path: PathBuf::from("labels"),
                    line: 0,
                    reason: format!("the labels table has no text column `{name}`"),
                })
        };
        let (chain, address, label, category, source, confidence) = (
            col("chain")?,
            col("address")?,
            col("label")?,
            col("category")?,
            col("source")?,
            col("confidence")?,
        );
        for r in 0..b.num_rows() {
            out.push(Label {
                chain: chain.value(r).to_string(),
                address: address.value(r).to_string(),
                label: label.value(r).to_string(),
                category: category.value(r).to_string(),
                source: source.value(r).to_string(),
                confidence: (!confidence.is_null(r)).then(|| confidence.value(r).to_string()),
            });
        }
    }
    Ok(out)
}

/// Imports files into the `labels` table. With `skip_invalid` false, any invalid address
/// fails the import (naming file and line) and nothing is written.
pub async fn import(
    wh: &Warehouse,
    files: &[PathBuf],
    d: &Defaults,
    skip_invalid: bool,
) -> Result<ImportSummary, LabelError> {
    let mut summary = ImportSummary::default();
    let mut new = Vec::new();
    for f in files {
        let parsed = parse_file(f, d)?;
        if let Some(s) = parsed.skipped.first().filter(|_| !skip_invalid) {
            return Err(LabelError::Bad {
                path: s.path.clone(),
                line: s.line,
                reason: format!(
                    "{} ({} invalid in this file; --skip-invalid imports the rest)",
                    s.reason,
                    parsed.skipped.len()
                ),
            });
        }
        summary.read += parsed.labels.len();
        summary.skipped.extend(parsed.skipped);
        new.extend(parsed.labels);
    }
    let current = load_labels(wh).await?;
    let mut seen: BTreeSet<(String, String, String, String, String)> = BTreeSet::new();
    let own = |l: &Label| {
        let k = l.key();
        (k.0.into(), k.1.into(), k.2.into(), k.3.into(), k.4.into())
    };
    let mut rows = Vec::with_capacity(current.len() + new.len());
    for l in current {
        if seen.insert(own(&l)) {
            rows.push(l);
        }
    }
    let before = rows.len();
    for l in new {
        if seen.insert(own(&l)) {
            rows.push(l);
        }
    }
    summary.added = rows.len() - before;
    summary.total = rows.len();
    if summary.added == 0 {
        return Ok(summary);
    }
    let strings = |f: fn(&Label) -> &str| {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f))) as Arc<dyn Array>
    };
    let batch = RecordBatch::try_new(
        labels_schema(),
        vec![
            strings(|l| &l.chain),
            strings(|l| &l.address),
            strings(|l| &l.label),
            strings(|l| &l.category),
            strings(|l| &l.source),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|l| l.confidence.as_deref()),
            )),
        ],
    )
    .map_err(|e| LabelError::Bad {
        path: PathBuf::from("labels"),
        line: 0,
        reason: e.to_string(),
    })?;
    let params = serde_json::json!({
        "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "added": summary.added,
    });
    summary.run_id = Some(
        wh.write_run("labels", labels_schema(), &[batch], Some(params))
            .await?,
    );
    Ok(summary)
}
