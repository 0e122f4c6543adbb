//! YAML case files: the keys and values of the TOML form (docs/cases.md), written as YAML.
//! The YAML is read into TOML text, one value a line, with each line's place in the
//! YAML; the TOML is then validated as a TOML case file is, and every error names the
//! YAML's line and column.
//!
//! Only what a case file needs is accepted: a mapping of values, lists of values and
//! mappings of those (the `[seeds]`, `[taint]`, `[alerts]` tables). Anchors, aliases
//! (the "billion laughs"), tags and several documents are refused, so the text read is
//! the text written and its size bounds the work.

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// The TOML text and, per TOML line (from 0), where in the YAML it came from.
pub(crate) struct Converted {
    pub toml: String,
    pub lines: Vec<LinePos>,
}

/// A TOML line's origin: columns before `split` are its key's (YAML `key`), the rest its
/// value's (YAML `value`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinePos {
    pub key: (usize, usize),
    pub value: (usize, usize),
    pub split: usize,
}

impl LinePos {
    /// The YAML line and column of a TOML column (from 1) on this line.
    pub(crate) fn at(&self, column: usize) -> (usize, usize) {
        if column <= self.split {
            self.key
        } else {
            self.value
        }
    }
}

/// An error at a YAML line and column.
pub(crate) type YamlError = (usize, usize, String);

enum Node {
    Scalar(String, TScalarStyle, Marker),
    Seq(Vec<Node>, Marker),
    Map(Vec<(Node, Node)>, Marker),
}

impl Node {
    fn at(&self) -> (usize, usize) {
        let m = match self {
            Node::Scalar(_, _, m) | Node::Seq(_, m) | Node::Map(_, m) => m,
        };
        (m.line(), m.col() + 1)
    }
}

fn err_at(m: &Marker, reason: impl Into<String>) -> YamlError {
    (m.line(), m.col() + 1, reason.into())
}

/// The deepest nesting a case file has (root, table, list).
const MAX_DEPTH: usize = 3;

/// Reads one node from the events.
fn node(
    p: &mut Parser<std::str::Chars<'_>>,
    first: (Event, Marker),
    depth: usize,
) -> Result<Node, YamlError> {
    let (ev, m) = first;
    let no_anchor = |anchor: usize, m: &Marker| {
        if anchor != 0 {
            Err(err_at(m, "anchors are not allowed in a case file"))
        } else {
            Ok(())
        }
    };
    let no_tag = |tag: &Option<yaml_rust2::parser::Tag>, m: &Marker| match tag {
        Some(t) => Err(err_at(
            m,
            format!(
                "tags (`{}{}`) are not allowed in a case file",
                t.handle, t.suffix
            ),
        )),
        None => Ok(()),
    };
    match ev {
        Event::Scalar(v, style, anchor, tag) => {
            no_anchor(anchor, &m)?;
            no_tag(&tag, &m)?;
            Ok(Node::Scalar(v, style, m))
        }
        Event::Alias(_) => Err(err_at(&m, "aliases are not allowed in a case file")),
        Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag)
            if depth >= MAX_DEPTH =>
        {
            let _ = (anchor, tag);
            Err(err_at(
                &m,
                "nested too deep: a case file holds values, lists of values and tables of those",
            ))
        }
        Event::SequenceStart(anchor, tag) => {
            no_anchor(anchor, &m)?;
            no_tag(&tag, &m)?;
            let mut items = Vec::new();
            loop {
                let next = next(p)?;
                if next.0 == Event::SequenceEnd {
                    return Ok(Node::Seq(items, m));
                }
                items.push(node(p, next, depth + 1)?);
            }
        }
        Event::MappingStart(anchor, tag) => {
            no_anchor(anchor, &m)?;
            no_tag(&tag, &m)?;
            let mut entries = Vec::new();
            loop {
                let next = next(p)?;
                if next.0 == Event::MappingEnd {
                    return Ok(Node::Map(entries, m));
                }
                let k = node(p, next, depth + 1)?;
                let first = self::next(p)?;
                let v = node(p, first, depth + 1)?;
                entries.push((k, v));
            }
        }
        other => Err(err_at(&m, format!("unexpected YAML event {other:?}"))),
    }
}

fn next(p: &mut Parser<std::str::Chars<'_>>) -> Result<(Event, Marker), YamlError> {
    p.next_token().map_err(|e| {
        (
            e.marker().line(),
            e.marker().col() + 1,
            e.info().to_string(),
        )
    })
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            '\r' => o.push_str("\\r"),
            c if c.is_control() => o.push_str(&format!("\\u{:04X}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// A plain scalar as YAML 1.2's core schema reads it, written as TOML.
fn scalar(v: &str, style: TScalarStyle, m: &Marker) -> Result<String, YamlError> {
    let quoted = toml_string;
    if style != TScalarStyle::Plain {
        return Ok(quoted(v));
    }
    match v {
        "" | "~" | "null" | "Null" | "NULL" => {
            return Err(err_at(
                m,
                "an empty value (null): leave the key out instead",
            ));
        }
        "true" | "True" | "TRUE" => return Ok("true".into()),
        "false" | "False" | "FALSE" => return Ok("false".into()),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Ok("inf".into()),
        "-.inf" | "-.Inf" | "-.INF" => return Ok("-inf".into()),
        ".nan" | ".NaN" | ".NAN" => return Ok("nan".into()),
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        return Ok(i.to_string());
    }
    for (prefix, radix) in [("0x", 16), ("0o", 8)] {
        if let Some(d) = v.strip_prefix(prefix)
            && let Ok(i) = i64::from_str_radix(d, radix)
        {
            return Ok(i.to_string());
        }
    }
    let numeric = v.bytes().any(|b| b.is_ascii_digit())
        && v.bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    if numeric && let Ok(f) = v.parse::<f64>() {
        return Ok(if f.is_nan() {
            "nan".into()
        } else if f.is_infinite() {
            if f > 0.0 { "inf".into() } else { "-inf".into() }
        } else {
            format!("{f:?}")
        });
    }
    Ok(quoted(v))
}

struct Out {
    toml: String,
    lines: Vec<LinePos>,
}

impl Out {
    fn line(&mut self, text: &str, at: (usize, usize)) {
        self.pair(text, at, at, 0);
    }

    /// A line whose first `split` characters come from `key`, the rest from `value`.
    fn pair(&mut self, text: &str, key: (usize, usize), value: (usize, usize), split: usize) {
        self.toml.push_str(text);
        self.toml.push('\n');
        self.lines.push(LinePos { key, value, split });
    }
}

fn key(k: &Node) -> Result<String, YamlError> {
    match k {
        Node::Scalar(s, _, _) => Ok(toml_string(s)),
        other => {
            let (l, c) = other.at();
            Err((l, c, "a key must be a plain name".into()))
        }
    }
}

/// `key = value` (a list over several lines, one item a line).
fn entry(out: &mut Out, k: &Node, v: &Node) -> Result<(), YamlError> {
    let name = key(k)?;
    match v {
        Node::Scalar(s, style, m) => {
            let text = format!("{name} = {}", scalar(s, *style, m)?);
            out.pair(&text, k.at(), v.at(), name.chars().count() + 2);
        }
        Node::Seq(items, _) => {
            out.line(&format!("{name} = ["), k.at());
            for it in items {
                match it {
                    Node::Scalar(s, style, m) => {
                        let text = format!("{},", scalar(s, *style, m)?);
                        out.line(&text, it.at());
                    }
                    other => {
                        let (l, c) = other.at();
                        return Err((l, c, "a list holds values, not lists or tables".into()));
                    }
                }
            }
            out.line("]", k.at());
        }
        Node::Map(..) => {
            let (l, c) = v.at();
            return Err((
                l,
                c,
                "a table inside a table: a case file has one level of tables".into(),
            ));
        }
    }
    Ok(())
}

/// Converts a YAML case file to TOML text with each line's YAML position.
pub(crate) fn to_toml(src: &str) -> Result<Converted, YamlError> {
    let mut p = Parser::new_from_str(src);
    let mut root = None;
    loop {
        let (ev, m) = next(&mut p)?;
        match ev {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::StreamEnd => break,
            Event::DocumentStart => {
                if root.is_some() {
                    return Err(err_at(&m, "a case file is one YAML document"));
                }
            }
            ev => {
                if root.is_some() {
                    return Err(err_at(&m, "a case file is one YAML document"));
                }
                root = Some(node(&mut p, (ev, m), 0)?);
            }
        }
    }
    let Some(Node::Map(entries, _)) = root else {
        return Err((
            1,
            1,
            "a case file is a mapping of keys (name, chains, seeds, …)".into(),
        ));
    };
    let mut out = Out {
        toml: String::new(),
        lines: Vec::new(),
    };
    // TOML puts the top-level values before the tables.
    for (k, v) in entries.iter().filter(|(_, v)| !matches!(v, Node::Map(..))) {
        entry(&mut out, k, v)?;
    }
    for (k, v) in entries.iter() {
        if let Node::Map(inner, _) = v {
            out.line(&format!("[{}]", key(k)?), k.at());
            for (ik, iv) in inner {
                entry(&mut out, ik, iv)?;
            }
        }
    }
    Ok(Converted {
        toml: out.toml,
        lines: out.lines,
    })
}
