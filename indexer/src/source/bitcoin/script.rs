//! Output script classification and addresses.

use bitcoin::hashes::{Hash, hash160};
use bitcoin::{Address, Network, Script};

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

const BASE58_ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// Base58Check of `version || hash` (a legacy address), without the generic big-number
/// loop: the 25 bytes are converted in base 58^5 limbs. Address encoding is the costliest
/// per-output step of ingest, so this matters; a test checks it against the bitcoin crate.
fn base58check(version: u8, hash: &[u8; 20]) -> String {
    const LIMB: u64 = 58 * 58 * 58 * 58 * 58; // 656_356_768 < 2^32
    let mut data = [0u8; 25];
    data[0] = version;
    data[1..21].copy_from_slice(hash);
    let check = bitcoin::hashes::sha256d::Hash::hash(&data[..21]);
    data[21..].copy_from_slice(&check.as_byte_array()[..4]);
    // 25 bytes < 58^35: 7 limbs of 5 digits each suffice.
    let mut limbs = [0u32; 7];
    let mut used = 0;
    for &byte in &data {
        let mut carry = u64::from(byte);
        for limb in limbs.iter_mut().take(used) {
            let x = (u64::from(*limb) << 8) + carry;
            *limb = (x % LIMB) as u32; // < LIMB < 2^32
            carry = x / LIMB;
        }
        while carry > 0 {
            limbs[used] = (carry % LIMB) as u32;
            carry /= LIMB;
            used += 1;
        }
    }
    let mut digits = [0u8; 35];
    for (i, limb) in limbs.iter().enumerate() {
        let mut l = *limb;
        for j in 0..5 {
            digits[i * 5 + j] = (l % 58) as u8;
            l /= 58;
        }
    }
    // digits are little-endian; drop high zero digits, then one '1' per leading zero byte.
    let mut n = digits.len();
    while n > 0 && digits[n - 1] == 0 {
        n -= 1;
    }
    let zeros = data.iter().take_while(|&&b| b == 0).count();
    let mut out = String::with_capacity(zeros + n);
    out.extend(std::iter::repeat_n('1', zeros));
    out.extend(
        digits[..n]
            .iter()
            .rev()
            .map(|&d| BASE58_ALPHABET[usize::from(d)] as char),
    );
    out
}

fn legacy_prefixes(network: Network) -> (u8, u8) {
    match network {
        Network::Bitcoin => (0x00, 0x05),
        _ => (0x6f, 0xc4),
    }
}

/// Classifies a script and gives its address for `network` where it has one. P2PK gets
/// the P2PKH address of its key (hash160 of the key bytes, as explorers show it).
pub fn classify(script: &Script, network: Network) -> (ScriptKind, Option<String>) {
    let b = script.as_bytes();
    let (pkh_prefix, sh_prefix) = legacy_prefixes(network);
    if let Some(key) = p2pk_key(b) {
        let pkh = hash160::Hash::hash(key);
        return (
            ScriptKind::P2pk,
            Some(base58check(pkh_prefix, pkh.as_byte_array())),
        );
    }
    if script.is_p2pkh() {
        let hash: &[u8; 20] = b[3..23].try_into().expect("p2pkh holds 20 bytes");
        return (ScriptKind::P2pkh, Some(base58check(pkh_prefix, hash)));
    }
    if script.is_p2sh() {
        let hash: &[u8; 20] = b[2..22].try_into().expect("p2sh holds 20 bytes");
        return (ScriptKind::P2sh, Some(base58check(sh_prefix, hash)));
    }
    let kind = if script.is_p2wpkh() {
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
    fn fast_base58_matches_the_bitcoin_crate() {
        use bitcoin::{PubkeyHash, ScriptHash};
        let mut seed = 0x1234_5678_9abc_def0u64;
        for i in 0..5000u32 {
            let mut h = [0u8; 20];
            for b in h.iter_mut() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *b = (seed >> 56) as u8;
            }
            // Leading zero bytes exercise the '1' prefix.
            for b in h.iter_mut().take((i % 4) as usize) {
                *b = 0;
            }
            for network in [Network::Bitcoin, Network::Testnet, Network::Regtest] {
                let pkh = ScriptBuf::new_p2pkh(&PubkeyHash::from_byte_array(h));
                let sh = ScriptBuf::new_p2sh(&ScriptHash::from_byte_array(h));
                for script in [pkh, sh] {
                    let expect = Address::from_script(&script, network)
                        .expect("address")
                        .to_string();
                    assert_eq!(
                        classify(&script, network).1.as_deref(),
                        Some(expect.as_str())
                    );
                }
            }
        }
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
