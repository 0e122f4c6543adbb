//! OFAC's SDN list in its published XML form (`sdn.xml`): the digital currency addresses
//! of each entry (`<id>` with `<idType>Digital Currency Address - XBT</idType>`).
//!
//! Streaming (quick-xml, no DTD or entity expansion beyond XML's five), depth-bounded;
//! a damaged file is an error naming the line, never fewer rows.

use quick_xml::events::Event;

/// One address of one SDN entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdnAddress {
    /// The asset as OFAC writes it (`XBT`, `ETH`, `USDT`, `XMR`, …).
    pub asset: String,
    pub address: String,
    /// The entry's name (`lastName`, or `firstName lastName` for people).
    pub name: String,
    /// The entry's uid.
    pub uid: String,
    /// Its sanctions programs (`CYBER2`, `DPRK3`, …).
    pub programs: Vec<String>,
}

const PREFIX: &str = "Digital Currency Address - ";
const MAX_DEPTH: usize = 64;
/// The most addresses one list may give (OFAC's whole list has about a thousand).
pub const MAX_ADDRESSES: usize = 5_000_000;

fn line_at(text: &str, pos: u64) -> usize {
    let pos = usize::try_from(pos).unwrap_or(usize::MAX).min(text.len());
    text.as_bytes()[..pos]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The digital currency addresses of `text` (an `sdnList`), or (line, what is wrong).
pub fn parse_sdn_xml(text: &str) -> Result<Vec<SdnAddress>, (usize, String)> {
    let mut r = quick_xml::Reader::from_str(text);
    r.config_mut().trim_text(false);
    let mut path: Vec<String> = Vec::new();
    let mut out = Vec::new();
    let mut seen_root = false;
    // The current entry, and the current id.
    let (mut uid, mut first, mut last, mut programs) = (
        String::new(),
        String::new(),
        String::new(),
        Vec::<String>::new(),
    );
    let mut entry_ids: Vec<(String, String)> = Vec::new();
    let (mut id_type, mut id_number) = (String::new(), String::new());
    let mut text_buf = String::new();
    loop {
        let pos = r.buffer_position();
        let ev = r
            .read_event()
            .map_err(|e| (line_at(text, r.error_position()), format!("not XML: {e}")))?;
        match ev {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                if path.is_empty() {
                    if name != "sdnList" {
                        return Err((
                            line_at(text, pos),
                            format!("the root element is <{name}>, not OFAC's <sdnList>"),
                        ));
                    }
                    seen_root = true;
                }
                if path.len() >= MAX_DEPTH {
                    return Err((
                        line_at(text, pos),
                        format!("nested deeper than {MAX_DEPTH} elements"),
                    ));
                }
                match name.as_str() {
                    "sdnEntry" => {
                        uid.clear();
                        first.clear();
                        last.clear();
                        programs.clear();
                        entry_ids.clear();
                    }
                    "id" => {
                        id_type.clear();
                        id_number.clear();
                    }
                    _ => {}
                }
                text_buf.clear();
                path.push(name);
            }
            Event::Empty(_) => {}
            Event::Text(t) => {
                let s = t
                    .decode()
                    .map_err(|e| (line_at(text, pos), format!("text: {e}")))?;
                text_buf.push_str(&s);
            }
            Event::CData(t) => {
                let s = t
                    .decode()
                    .map_err(|e| (line_at(text, pos), format!("CDATA: {e}")))?;
                text_buf.push_str(&s);
            }
            Event::GeneralRef(g) => {
                let c = if g.is_char_ref() {
                    g.resolve_char_ref()
                        .map_err(|e| (line_at(text, pos), format!("character reference: {e}")))?
                } else {
                    // The name as bytes, whatever `AsRef` impls other crates bring.
                    let name: &[u8] = &g;
                    match name {
                        b"amp" => Some('&'),
                        b"lt" => Some('<'),
                        b"gt" => Some('>'),
                        b"quot" => Some('"'),
                        b"apos" => Some('\''),
                        other => {
                            return Err((
                                line_at(text, pos),
                                format!("unknown entity &{};", String::from_utf8_lossy(other)),
                            ));
                        }
                    }
                };
                if let Some(c) = c {
                    text_buf.push(c);
                }
            }
            Event::End(_) => {
                let Some(name) = path.pop() else {
                    return Err((
                        line_at(text, pos),
                        "a closing tag without its opening".into(),
                    ));
                };
                let parent = path.last().map(String::as_str).unwrap_or("");
                let value = text_buf.trim().to_string();
                text_buf.clear();
                match (parent, name.as_str()) {
                    ("sdnEntry", "uid") => uid = value,
                    ("sdnEntry", "firstName") => first = value,
                    ("sdnEntry", "lastName") => last = value,
                    ("programList", "program") => programs.push(value),
                    ("id", "idType") => id_type = value,
                    ("id", "idNumber") => id_number = value,
                    ("idList", "id") => {
                        if let Some(asset) = id_type.strip_prefix(PREFIX) {
                            if id_number.is_empty() {
                                return Err((
                                    line_at(text, pos),
                                    format!("a `{id_type}` id without its idNumber"),
                                ));
                            }
                            if entry_ids.len() >= MAX_ADDRESSES {
                                return Err((
                                    line_at(text, pos),
                                    format!(
                                        "more than {MAX_ADDRESSES} addresses in one entry: refused"
                                    ),
                                ));
                            }
                            entry_ids.push((asset.trim().to_string(), id_number.clone()));
                        }
                    }
                    (_, "sdnEntry") => {
                        let name = match (first.is_empty(), last.is_empty()) {
                            (true, _) => last.clone(),
                            (false, true) => first.clone(),
                            (false, false) => format!("{first} {last}"),
                        };
                        if out.len() + entry_ids.len() > MAX_ADDRESSES {
                            return Err((
                                line_at(text, pos),
                                format!("more than {MAX_ADDRESSES} addresses: refused"),
                            ));
                        }
                        for (asset, address) in entry_ids.drain(..) {
                            out.push(SdnAddress {
                                asset,
                                address,
                                name: name.clone(),
                                uid: uid.clone(),
                                programs: programs.clone(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            Event::Eof => {
                if !path.is_empty() {
                    return Err((
                        line_at(text, pos),
                        format!("the file ends inside <{}>: truncated", path.join("><")),
                    ));
                }
                if !seen_root {
                    return Err((1, "no <sdnList> element".into()));
                }
                return Ok(out);
            }
            Event::DocType(_) => {
                return Err((
                    line_at(text, pos),
                    "a DOCTYPE is not allowed in an SDN list".into(),
                ));
            }
            _ => {}
        }
    }
}

/// The chain a sanctioned address is on, by OFAC's asset code and, for stablecoins, the
/// address's shape (USDT and USDC on Ethereum are `0x…`; on TRON `T…`, not indexed here).
/// None: a chain Ferret does not index.
pub fn chain_of(asset: &str, address: &str) -> Option<&'static str> {
    match asset.to_ascii_uppercase().as_str() {
        "XBT" | "BTC" => Some("btc"),
        "ETH" => Some("eth"),
        "USDT" | "USDC" if address.starts_with("0x") => Some("eth"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDN: &str = r#"<?xml version="1.0" standalone="yes"?>
<sdnList xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns="http://tempuri.org/sdnList.xsd">
  <publshInformation><Publish_Date>12/01/2026</Publish_Date><Record_Count>2</Record_Count></publshInformation>
  <sdnEntry>
    <uid>36216</uid>
    <lastName>EXAMPLE EXCHANGE &amp; CO</lastName>
    <sdnType>Entity</sdnType>
    <programList><program>CYBER2</program><program>RUSSIA-EO14024</program></programList>
    <idList>
      <id><uid>1</uid><idType>Digital Currency Address - XBT</idType><idNumber>bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq</idNumber></id>
      <id><uid>2</uid><idType>Registration Number</idType><idNumber>14532901</idNumber></id>
      <id><uid>3</uid><idType>Digital Currency Address - USDT</idType><idNumber>0xd90e2f925da726b50c4ed8d0fb90ad053324f31b</idNumber></id>
      <id><uid>4</uid><idType>Digital Currency Address - USDT</idType><idNumber>TXbTLwsyBAbSrLo5jo4RZEjRrqW5iZyQWd</idNumber></id>
      <id><uid>5</uid><idType>Digital Currency Address - XMR</idType><idNumber>46hy5zUxWLW</idNumber></id>
    </idList>
  </sdnEntry>
  <sdnEntry>
    <uid>40000</uid><firstName>Ivan</firstName><lastName>PETROV</lastName><sdnType>Individual</sdnType>
    <programList><program>CYBER2</program></programList>
    <idList><id><uid>9</uid><idType>Digital Currency Address - ETH</idType><idNumber>0x00000000219ab540356cbb839cbe05303d7705fa</idNumber></id></idList>
  </sdnEntry>
</sdnList>"#;

    #[test]
    fn addresses_names_and_programs() {
        let got = parse_sdn_xml(SDN).unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(got[0].asset, "XBT");
        assert_eq!(got[0].name, "EXAMPLE EXCHANGE & CO");
        assert_eq!(got[0].programs, ["CYBER2", "RUSSIA-EO14024"]);
        assert_eq!(got[4].name, "Ivan PETROV");
        let chains: Vec<_> = got.iter().map(|a| chain_of(&a.asset, &a.address)).collect();
        assert_eq!(
            chains,
            [Some("btc"), Some("eth"), None, None, Some("eth")],
            "XBT→btc, USDT by shape, XMR not indexed"
        );
    }

    #[test]
    fn damage_is_an_error_with_a_line() {
        let cut = &SDN[..SDN.len() / 2];
        let (line, why) = parse_sdn_xml(cut).unwrap_err();
        assert!(
            why.contains("truncated") || why.contains("not XML"),
            "{why}"
        );
        assert!(line > 1);
        let (_, why) = parse_sdn_xml("<html><body/></html>").unwrap_err();
        assert!(why.contains("sdnList"), "{why}");
        let bomb = "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><sdnList>&lol2;</sdnList>";
        assert!(parse_sdn_xml(bomb).is_err());
        let deep = format!(
            "<sdnList>{}{}</sdnList>",
            "<a>".repeat(1000),
            "</a>".repeat(1000)
        );
        assert!(parse_sdn_xml(&deep).unwrap_err().1.contains("deeper"));
        let unknown = "<sdnList><sdnEntry><lastName>&foo;</lastName></sdnEntry></sdnList>";
        assert!(parse_sdn_xml(unknown).unwrap_err().1.contains("entity"));
    }
}
