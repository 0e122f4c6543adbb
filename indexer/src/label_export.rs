//! Exporting labels for other teams and tools: CSV, GraphSense TagPack YAML, a MISP event
//! (`coin-address` objects) and a STIX 2.1 bundle (`cryptocurrency-wallet` objects of the
//! community stix2extensions' Cryptocurrency Wallet extension). Every entry carries its
//! provenance (source, confidence) and the file its TLP marking; `labels import` reads
//! each of them back to the same rows (chain, address, label, category, source,
//! confidence).
//!
//! Fields a format has no place for travel in its own extension points: MISP machine tags
//! (`ferret:category="…"`), STIX custom properties (`x_ferret_*`).

use std::fmt::Write as _;
use std::str::FromStr;

use crate::labels::Label;

/// An export format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `address,label,category,source,confidence` with a header.
    Csv,
    /// GraphSense TagPack YAML.
    Tagpack,
    /// A MISP event (JSON).
    Misp,
    /// A STIX 2.1 bundle (JSON).
    Stix,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Ok(Format::Csv),
            "tagpack" | "yaml" => Ok(Format::Tagpack),
            "misp" => Ok(Format::Misp),
            "stix" => Ok(Format::Stix),
            other => Err(format!(
                "unknown format `{other}` (csv, tagpack, misp or stix)"
            )),
        }
    }
}

impl Format {
    /// The file extension `labels import` reads this format by.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Tagpack => "yaml",
            Format::Misp => "misp.json",
            Format::Stix => "stix.json",
        }
    }
}

/// Traffic Light Protocol marking of an export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tlp {
    Clear,
    Green,
    Amber,
    Red,
}

impl FromStr for Tlp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s
            .to_ascii_lowercase()
            .trim_start_matches("tlp:")
            .trim_start_matches("tlp-")
        {
            "clear" | "white" => Ok(Tlp::Clear),
            "green" => Ok(Tlp::Green),
            "amber" => Ok(Tlp::Amber),
            "red" => Ok(Tlp::Red),
            other => Err(format!(
                "unknown TLP `{other}` (clear, green, amber or red)"
            )),
        }
    }
}

impl Tlp {
    /// The MISP tag (`tlp:amber`).
    pub fn misp_tag(self) -> &'static str {
        match self {
            Tlp::Clear => "tlp:clear",
            Tlp::Green => "tlp:green",
            Tlp::Amber => "tlp:amber",
            Tlp::Red => "tlp:red",
        }
    }

    /// STIX 2.1's predefined TLP marking definitions (STIX 2.1, section 7.2.1.4).
    fn stix_marking(self) -> &'static str {
        match self {
            Tlp::Clear => "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
            Tlp::Green => "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
            Tlp::Amber => "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
            Tlp::Red => "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
        }
    }
}

/// What an export says about itself.
#[derive(Clone, Debug)]
pub struct Options {
    /// TagPack title, MISP event info, STIX identity's report name.
    pub title: String,
    /// Who made it (TagPack creator, MISP org, STIX identity).
    pub creator: String,
    pub tlp: Tlp,
    /// When, RFC 3339 (`2026-12-07T12:00:00Z`).
    pub created: String,
}

/// The community extension that defines the `cryptocurrency-wallet` SCO
/// (muchdogesec/stix2extensions, "Cryptocurrency Wallet").
pub const STIX_WALLET_EXTENSION: &str =
    "extension-definition--be78509e-6958-51b1-8b26-d17ee0eba2d7";

/// The ticker a label's chain is written as (TagPack currency, MISP symbol).
fn currency(chain: &str) -> &str {
    match chain {
        "btc" => "BTC",
        "eth" => "ETH",
        other => other,
    }
}

fn network(chain: &str) -> &str {
    match chain {
        "btc" => "bitcoin",
        "eth" => "ethereum",
        other => other,
    }
}

/// A stable UUID (version 5 layout) from `parts`: the same label gives the same id in
/// every export, so re-shared entries merge in MISP and STIX stores.
fn uuid_of(parts: &[&str]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let mut b: [u8; 16] = h.finalize()[..16].try_into().unwrap_or([0; 16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    )
}

fn key(l: &Label) -> [&str; 5] {
    [&l.chain, &l.address, &l.label, &l.category, &l.source]
}

/// A YAML scalar that reads back as exactly `s` (a JSON string is valid YAML).
fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Renders `labels` in `format`.
pub fn render(labels: &[Label], format: Format, o: &Options) -> Result<String, String> {
    render_with(labels, &[], format, o)
}

/// Where an exported entry came from, beyond its `source`: the case and run that found
/// it, by which heuristic, when, and the transaction that shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Provenance {
    pub case: String,
    pub run: String,
    /// `seed`, `co-spend cluster`, `deposit-address cluster`, `taint haircut`, `exit`, …
    pub heuristic: String,
    /// RFC 3339: when the run that found it finished.
    pub lastmod: String,
    pub txid: Option<String>,
}

/// [`render`] with each label's provenance (`provenance[i]` for `labels[i]`; missing
/// entries have none): CSV columns after the five the importer reads, a TagPack tag's
/// `context` (JSON), `lastmod` and `tx_hash`, MISP `ferret:` tags, STIX `x_ferret_`
/// properties. Importers ignore them, so the labels rows round-trip unchanged.
pub fn render_with(
    labels: &[Label],
    provenance: &[Option<Provenance>],
    format: Format,
    o: &Options,
) -> Result<String, String> {
    let prov = |i: usize| provenance.get(i).and_then(Option::as_ref);
    let any = provenance.iter().any(Option::is_some);
    match format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            let err = |e: csv::Error| e.to_string();
            let mut head = vec!["address", "label", "category", "source", "confidence"];
            if any {
                head.extend(["case", "run", "heuristic", "lastmod", "txid"]);
            }
            w.write_record(&head).map_err(err)?;
            for (i, l) in labels.iter().enumerate() {
                let mut rec = vec![
                    l.address.as_str(),
                    &l.label,
                    &l.category,
                    &l.source,
                    l.confidence.as_deref().unwrap_or(""),
                ];
                if any {
                    match prov(i) {
                        Some(p) => rec.extend([
                            p.case.as_str(),
                            &p.run,
                            &p.heuristic,
                            &p.lastmod,
                            p.txid.as_deref().unwrap_or(""),
                        ]),
                        None => rec.extend(["", "", "", "", ""]),
                    }
                }
                w.write_record(&rec).map_err(err)?;
            }
            let bytes = w.into_inner().map_err(|e| e.to_string())?;
            String::from_utf8(bytes).map_err(|e| e.to_string())
        }
        Format::Tagpack => {
            let mut s = String::new();
            let _ = writeln!(s, "title: {}", yaml_str(&o.title));
            let _ = writeln!(s, "creator: {}", yaml_str(&o.creator));
            let _ = writeln!(
                s,
                "description: {}",
                yaml_str(&format!(
                    "Exported by Ferret at {}; {}",
                    o.created,
                    o.tlp.misp_tag().to_ascii_uppercase()
                ))
            );
            let _ = writeln!(s, "is_public: {}", o.tlp == Tlp::Clear);
            s.push_str("tags:\n");
            for (i, l) in labels.iter().enumerate() {
                let _ = writeln!(s, "- address: {}", yaml_str(&l.address));
                let _ = writeln!(s, "  label: {}", yaml_str(&l.label));
                let _ = writeln!(s, "  category: {}", yaml_str(&l.category));
                let _ = writeln!(s, "  source: {}", yaml_str(&l.source));
                let _ = writeln!(s, "  currency: {}", currency(&l.chain));
                let _ = writeln!(s, "  network: {}", network(&l.chain));
                // Mandatory in a TagPack; `unknown` reads back as no confidence.
                let _ = writeln!(
                    s,
                    "  confidence: {}",
                    yaml_str(l.confidence.as_deref().unwrap_or(UNKNOWN_CONFIDENCE))
                );
                let lastmod = prov(i).map_or(o.created.as_str(), |p| p.lastmod.as_str());
                let _ = writeln!(
                    s,
                    "  lastmod: {}",
                    yaml_str(&lastmod[..10.min(lastmod.len())])
                );
                if let Some(p) = prov(i) {
                    // GraphSense keeps extra context as a JSON string.
                    let ctx = serde_json::json!({
                        "case": p.case, "run": p.run, "heuristic": p.heuristic, "lastmod": p.lastmod,
                    });
                    let _ = writeln!(s, "  context: {}", yaml_str(&ctx.to_string()));
                    if let Some(t) = &p.txid {
                        let _ = writeln!(s, "  tx_hash: {}", yaml_str(t));
                    }
                }
            }
            Ok(s)
        }
        Format::Misp => {
            use serde_json::json;
            let objects: Vec<_> = labels
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let mut tags = vec![
                        json!({"name": format!("ferret:category={}", serde_json::Value::String(l.category.clone()))}),
                        json!({"name": format!("ferret:source={}", serde_json::Value::String(l.source.clone()))}),
                    ];
                    if let Some(c) = &l.confidence {
                        tags.push(json!({"name": format!("ferret:confidence={}", serde_json::Value::String(c.clone()))}));
                    }
                    if let Some(p) = prov(i) {
                        for (k, v) in [("case", &p.case), ("run", &p.run), ("heuristic", &p.heuristic), ("lastmod", &p.lastmod)] {
                            tags.push(json!({"name": format!("ferret:{k}={}", serde_json::Value::String(v.clone()))}));
                        }
                        if let Some(t) = &p.txid {
                            tags.push(json!({"name": format!("ferret:txid={}", serde_json::Value::String(t.clone()))}));
                        }
                    }
                    let k = key(l);
                    json!({
                        "name": "coin-address",
                        "meta-category": "financial",
                        "uuid": uuid_of(&k),
                        "comment": l.label,
                        "Attribute": [
                            {"object_relation": "address", "type": "btc", "category": "Financial fraud",
                             "to_ids": true, "uuid": uuid_of(&[k[0], k[1], k[2], k[3], k[4], "address"]),
                             "value": l.address, "Tag": tags},
                            {"object_relation": "symbol", "type": "text", "category": "Other",
                             "to_ids": false, "uuid": uuid_of(&[k[0], k[1], k[2], k[3], k[4], "symbol"]),
                             "value": currency(&l.chain)},
                            {"object_relation": "text", "type": "text", "category": "Other",
                             "to_ids": false, "uuid": uuid_of(&[k[0], k[1], k[2], k[3], k[4], "text"]),
                             "value": l.label},
                        ],
                    })
                })
                .collect();
            let event = json!({"Event": {
                "uuid": uuid_of(&[&o.title, &o.creator, &o.created]),
                "info": o.title,
                "date": &o.created[..10.min(o.created.len())],
                "timestamp": o.created,
                "analysis": "2",
                "threat_level_id": "2",
                "distribution": "0",
                "Orgc": {"name": o.creator},
                "Tag": [{"name": o.tlp.misp_tag()}, {"name": "ferret:export"}],
                "Object": objects,
            }});
            serde_json::to_string_pretty(&event).map_err(|e| e.to_string())
        }
        Format::Stix => {
            use serde_json::json;
            let identity = format!("identity--{}", uuid_of(&[&o.creator]));
            let marking = o.tlp.stix_marking();
            let mut objects = vec![json!({
                "type": "identity", "spec_version": "2.1", "id": identity,
                "created": o.created, "modified": o.created,
                "name": o.creator, "identity_class": "organization",
            })];
            for (i, l) in labels.iter().enumerate() {
                let mut w = json!({
                    "type": "cryptocurrency-wallet",
                    "spec_version": "2.1",
                    "id": format!("cryptocurrency-wallet--{}", uuid_of(&key(l))),
                    "address": l.address,
                    "object_marking_refs": [marking],
                    "extensions": {STIX_WALLET_EXTENSION: {"extension_type": "new-sco"}},
                    "x_ferret_chain": l.chain,
                    "x_ferret_label": l.label,
                    "x_ferret_category": l.category,
                    "x_ferret_source": l.source,
                    "x_ferret_created_by_ref": identity,
                });
                if let Some(c) = &l.confidence {
                    w["x_ferret_confidence"] = json!(c);
                }
                if let Some(p) = prov(i) {
                    w["x_ferret_case"] = json!(p.case);
                    w["x_ferret_run"] = json!(p.run);
                    w["x_ferret_heuristic"] = json!(p.heuristic);
                    w["x_ferret_lastmod"] = json!(p.lastmod);
                    if let Some(t) = &p.txid {
                        w["x_ferret_txid"] = json!(t);
                    }
                }
                objects.push(w);
            }
            let bundle = json!({
                "type": "bundle",
                "id": format!("bundle--{}", uuid_of(&[&o.title, &o.creator, &o.created])),
                "objects": objects,
            });
            serde_json::to_string_pretty(&bundle).map_err(|e| e.to_string())
        }
    }
}

/// What a TagPack's mandatory `confidence` says for a label without one.
pub const UNKNOWN_CONFIDENCE: &str = "unknown";

/// `t` in RFC 3339, UTC, to the second (`2026-12-07T12:00:00Z`).
pub fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // The civil date of a day count since 1970-01-01 (the proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Keeps the labels of the given chains, categories and sources (empty: all).
pub fn filter(
    labels: Vec<Label>,
    chains: &[String],
    categories: &[String],
    sources: &[String],
) -> Vec<Label> {
    let keep = |v: &str, want: &[String]| want.is_empty() || want.iter().any(|w| w == v);
    labels
        .into_iter()
        .filter(|l| {
            keep(&l.chain, chains) && keep(&l.category, categories) && keep(&l.source, sources)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{Defaults, parse_file};

    /// Labels as teams hold them: both chains, every Bitcoin address kind, text that
    /// needs quoting in each format, with and without a confidence.
    fn labels() -> Vec<Label> {
        let l = |chain: &str,
                 address: &str,
                 label: &str,
                 category: &str,
                 source: &str,
                 conf: Option<&str>| Label {
            chain: chain.into(),
            address: address.into(),
            label: label.into(),
            category: category.into(),
            source: source.into(),
            confidence: conf.map(str::to_string),
        };
        vec![
            l(
                "btc",
                "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
                "genesis",
                "other",
                "public",
                None,
            ),
            l(
                "btc",
                "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
                "Scam, \"Ltd\"",
                "scam",
                "case 7: victim report",
                Some("forensic"),
            ),
            l(
                "btc",
                "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
                "exchange: hot wallet\nline 2",
                "exchange",
                "osint",
                Some("0.9"),
            ),
            l(
                "btc",
                "bc1p5d7rjq7g6rdk2yhzks9smlaqtedr4dekq08ge8ztwac72sfr9rusxg3297",
                "taproot ✓",
                "mixer",
                "ferret:case=1",
                Some("web_crawl"),
            ),
            l(
                "eth",
                "0x00000000219ab540356cbb839cbe05303d7705fa",
                "deposit contract",
                "other",
                "public",
                None,
            ),
            l(
                "eth",
                "0xd90e2f925da726b50c4ed8d0fb90ad053324f31b",
                "tornado 'cash'",
                "mixer",
                "OFAC SDN",
                Some("authority"),
            ),
        ]
    }

    fn opts() -> Options {
        Options {
            title: "Ferret test export".into(),
            creator: "Ferret tests".into(),
            tlp: Tlp::Amber,
            created: "2026-12-07T12:00:00Z".into(),
        }
    }

    #[test]
    fn rfc3339_dates() {
        let at = |s: u64| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_644_800), "2026-12-07T12:00:00Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn every_format_reads_back_to_the_same_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut want = labels();
        want.sort();
        for f in [Format::Csv, Format::Tagpack, Format::Misp, Format::Stix] {
            let text = render(&want, f, &opts()).unwrap();
            let path = dir.path().join(format!("export.{}", f.extension()));
            std::fs::write(&path, &text).unwrap();
            let parsed = parse_file(&path, &Defaults::default()).unwrap();
            assert!(parsed.skipped.is_empty(), "{f:?}: {:?}", parsed.skipped);
            let mut got = parsed.labels;
            got.sort();
            assert_eq!(got, want, "{f:?} round trip:\n{text}");
        }
    }

    #[test]
    fn a_tagpack_export_has_every_field_the_schema_requires() {
        use yaml_rust2::{Yaml, YamlLoader};
        let fixtures =
            std::env::var("FERRET_FIXTURES").unwrap_or_else(|_| "../../shared/fixtures".into());
        let schema_path =
            std::path::Path::new(&fixtures).join("labels/tagpacks/tagpack_schema.yaml");
        let schema = match std::fs::read_to_string(&schema_path) {
            Ok(s) => YamlLoader::load_from_str(&s).unwrap().remove(0),
            Err(e) => {
                assert!(
                    std::env::var("FERRET_REQUIRE_ALL").is_err(),
                    "{}: {e}",
                    schema_path.display()
                );
                eprintln!("skipped: {}: {e}", schema_path.display());
                return;
            }
        };
        let pack = YamlLoader::load_from_str(&render(&labels(), Format::Tagpack, &opts()).unwrap())
            .unwrap()
            .remove(0);
        let mandatory = |section: &str| -> Vec<String> {
            schema[section]
                .as_hash()
                .unwrap()
                .iter()
                .filter(|(_, v)| v["mandatory"].as_bool() == Some(true))
                .map(|(k, _)| k.as_str().unwrap().to_string())
                .collect()
        };
        let header = mandatory("header");
        assert!(header.contains(&"tags".to_string()), "{header:?}");
        for k in &header {
            assert!(!pack[k.as_str()].is_badvalue(), "header field {k} missing");
        }
        let tag_fields = mandatory("tag");
        assert!(tag_fields.len() >= 5, "{tag_fields:?}");
        for (i, tag) in pack["tags"].as_vec().unwrap().iter().enumerate() {
            for k in &tag_fields {
                let v = &tag[k.as_str()];
                assert!(
                    matches!(v, Yaml::String(s) if !s.is_empty())
                        || !pack[k.as_str()].is_badvalue(),
                    "tag {i}: mandatory `{k}` missing"
                );
            }
        }
    }

    #[test]
    fn misp_and_stix_exports_are_marked_and_named_as_their_specs_say() {
        let misp: serde_json::Value =
            serde_json::from_str(&render(&labels(), Format::Misp, &opts()).unwrap()).unwrap();
        let ev = &misp["Event"];
        assert!(
            ev["Tag"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "tlp:amber")
        );
        let objs = ev["Object"].as_array().unwrap();
        assert_eq!(objs.len(), 6);
        assert!(objs.iter().all(|o| o["name"] == "coin-address"));
        let stix: serde_json::Value =
            serde_json::from_str(&render(&labels(), Format::Stix, &opts()).unwrap()).unwrap();
        assert_eq!(stix["type"], "bundle");
        let wallets: Vec<_> = stix["objects"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["type"] == "cryptocurrency-wallet")
            .collect();
        assert_eq!(wallets.len(), 6);
        for w in &wallets {
            assert!(
                w["id"]
                    .as_str()
                    .unwrap()
                    .starts_with("cryptocurrency-wallet--")
            );
            assert_eq!(w["object_marking_refs"][0], Tlp::Amber.stix_marking());
            assert_eq!(
                w["extensions"][STIX_WALLET_EXTENSION]["extension_type"],
                "new-sco"
            );
        }
        // Stable ids: the same label, the same id.
        let again: serde_json::Value =
            serde_json::from_str(&render(&labels(), Format::Stix, &opts()).unwrap()).unwrap();
        assert_eq!(stix, again);
    }

    #[test]
    fn foreign_misp_and_stix_files_import_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let misp = dir.path().join("feed.json");
        std::fs::write(
            &misp,
            r#"{"response": [{"Event": {"info": "Pig butchering wallets", "Orgc": {"name": "CERT-X"},
                "Object": [{"name": "coin-address", "Attribute": [
                    {"object_relation": "address", "type": "btc", "value": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"},
                    {"object_relation": "symbol", "type": "text", "value": "XBT"}]},
                  {"name": "file", "Attribute": []}]}}]}"#,
        )
        .unwrap();
        let d = Defaults {
            category: Some("scam".into()),
            ..Default::default()
        };
        let got = parse_file(&misp, &d).unwrap().labels;
        assert_eq!(got.len(), 1);
        assert_eq!(
            (
                got[0].chain.as_str(),
                got[0].label.as_str(),
                got[0].category.as_str(),
                got[0].source.as_str()
            ),
            ("btc", "Pig butchering wallets", "scam", "CERT-X")
        );
        let stix = dir.path().join("bundle.json");
        std::fs::write(
            &stix,
            r#"{"type": "bundle", "id": "bundle--1", "objects": [
                {"type": "cryptocurrency-wallet", "id": "cryptocurrency-wallet--1", "address": "0xD90E2F925DA726B50C4ED8D0FB90AD053324F31B"},
                {"type": "indicator", "id": "indicator--1"}]}"#,
        )
        .unwrap();
        let got = parse_file(&stix, &Defaults::default()).unwrap().labels;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].address, "0xd90e2f925da726b50c4ed8d0fb90ad053324f31b");
        assert_eq!(got[0].category, "unknown");
        // Neither format, and damaged JSON: errors naming the file.
        let other = dir.path().join("x.json");
        std::fs::write(&other, r#"{"hello": 1}"#).unwrap();
        assert!(
            parse_file(&other, &Defaults::default())
                .unwrap_err()
                .to_string()
                .contains("neither")
        );
        std::fs::write(&other, r#"{"type": "bundle", "objects": ["#).unwrap();
        let e = parse_file(&other, &Defaults::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.json") && e.contains("not JSON"), "{e}");
        // A wide array of many values is refused before it is built.
        let wide = format!(
            "{{\"type\": \"bundle\", \"objects\": [{}0]}}",
            "0,".repeat(5_000_001)
        );
        std::fs::write(&other, wide).unwrap();
        let e = parse_file(&other, &Defaults::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 5000000 values"), "{e}");
        std::fs::write(
            &other,
            format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)),
        )
        .unwrap();
        assert!(
            parse_file(&other, &Defaults::default()).is_err(),
            "deep nesting is refused"
        );
    }
}
