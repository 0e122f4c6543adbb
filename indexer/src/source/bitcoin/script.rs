//! Output script classification and addresses.

use bitcoin::hashes::{Hash, hash160};
use bitcoin::{Address, Network, PubkeyHash, Script};

/// The kind of an output script, as stored in `script_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ScriptKind {
    P2pk,
    P2pkh,
    P2sh,
    P2wpkh,
    P2wsh,
    P2tr,
    P2a,
    WitnessUnknown,
    Multisig,
    Nulldata,
    Nonstandard,
}

impl ScriptKind {
    /// The `script_type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            ScriptKind::P2pk => "p2pk",
            ScriptKind::P2pkh => "p2pkh",
            ScriptKind::P2sh => "p2sh",
            ScriptKind::P2wpkh => "p2wpkh",
            ScriptKind::P2wsh => "p2wsh",
            ScriptKind::P2tr => "p2tr",
            ScriptKind::P2a => "p2a",
            ScriptKind::WitnessUnknown => "witness_unknown",
            ScriptKind::Multisig => "multisig",
            ScriptKind::Nulldata => "nulldata",
            ScriptKind::Nonstandard => "nonstandard",
        }
    }

    /// Parses a `script_type` string.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "p2pk" => ScriptKind::P2pk,
            "p2pkh" => ScriptKind::P2pkh,
            "p2sh" => ScriptKind::P2sh,
            "p2wpkh" => ScriptKind::P2wpkh,
            "p2wsh" => ScriptKind::P2wsh,
            "p2tr" => ScriptKind::P2tr,
            "p2a" => ScriptKind::P2a,
            "witness_unknown" => ScriptKind::WitnessUnknown,
            "multisig" => ScriptKind::Multisig,
            "nulldata" => ScriptKind::Nulldata,
            "nonstandard" => ScriptKind::Nonstandard,
            _ => return None,
        })
    }
}

fn p2pk_key(b: &[u8]) -> Option<&[u8]> {
    match (b.len(), b.first(), b.last()) {
        (35, Some(33), Some(0xac)) => Some(&b[1..34]),
        (67, Some(65), Some(0xac)) => Some(&b[1..66]),
        _ => None,
    }
}

/// Classifies a script and gives its address for `network` where it has one. P2PK gets
/// the P2PKH address of its key (hash160 of the key bytes, as explorers show it).
pub fn classify(script: &Script, network: Network) -> (ScriptKind, Option<String>) {
    let b = script.as_bytes();
    if let Some(key) = p2pk_key(b) {
        let pkh = PubkeyHash::from_raw_hash(hash160::Hash::hash(key));
        return (
            ScriptKind::P2pk,
            Some(Address::p2pkh(pkh, network).to_string()),
        );
    }
    let kind = if script.is_p2pkh() {
        ScriptKind::P2pkh
    } else if script.is_p2sh() {
        ScriptKind::P2sh
    } else if script.is_p2wpkh() {
        ScriptKind::P2wpkh
    } else if script.is_p2wsh() {
        ScriptKind::P2wsh
    } else if script.is_p2tr() {
        ScriptKind::P2tr
    } else if b == [0x51, 0x02, 0x4e, 0x73] {
        ScriptKind::P2a
    } else if script.is_witness_program() {
        ScriptKind::WitnessUnknown
    } else if script.is_op_return() {
        return (ScriptKind::Nulldata, None);
    } else if script.is_multisig() {
        return (ScriptKind::Multisig, None);
    } else {
        return (ScriptKind::Nonstandard, None);
    };
    match Address::from_script(script, network) {
        Ok(a) => (kind, Some(a.to_string())),
        Err(_) => (ScriptKind::Nonstandard, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::ScriptBuf;

    #[test]
    fn genesis_p2pk_gets_satoshis_address() {
        let block = bitcoin::constants::genesis_block(Network::Bitcoin);
        let (kind, addr) = classify(&block.txdata[0].output[0].script_pubkey, Network::Bitcoin);
        assert_eq!(kind, ScriptKind::P2pk);
        assert_eq!(addr.as_deref(), Some("1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"));
    }

    #[test]
    fn anchors_op_return_and_garbage() {
        let anchor = ScriptBuf::from_bytes(vec![0x51, 0x02, 0x4e, 0x73]);
        assert_eq!(classify(&anchor, Network::Bitcoin).0, ScriptKind::P2a);
        let op_return = ScriptBuf::new_op_return([1u8, 2, 3]);
        assert_eq!(
            classify(&op_return, Network::Bitcoin),
            (ScriptKind::Nulldata, None)
        );
        let junk = ScriptBuf::from_bytes(vec![0xff, 0x00]);
        assert_eq!(
            classify(&junk, Network::Bitcoin),
            (ScriptKind::Nonstandard, None)
        );
        for k in [
            ScriptKind::P2pk,
            ScriptKind::Nulldata,
            ScriptKind::WitnessUnknown,
        ] {
            assert_eq!(ScriptKind::parse(k.as_str()), Some(k));
        }
    }
}
