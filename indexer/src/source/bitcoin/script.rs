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

const BECH32_CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

fn bech32_polymod(values: impl Iterator<Item = u8>) -> u32 {
    const GEN: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    // The generator terms selected by each value of the top five bits, XORed ahead of time:
    // one look-up per symbol instead of five tests.
    const TABLE: [u32; 32] = {
        let mut t = [0u32; 32];
        let mut top = 0;
        while top < 32 {
            let mut i = 0;
            while i < 5 {
                if (top >> i) & 1 == 1 {
                    t[top] ^= GEN[i];
                }
                i += 1;
            }
            top += 1;
        }
        t
    };
    let mut chk: u32 = 1;
    for v in values {
        let top = (chk >> 25) as usize;
        chk = (((chk & 0x01ff_ffff) << 5) ^ u32::from(v)) ^ TABLE[top];
    }
    chk
}

/// A segwit address (BIP173 bech32 for v0, BIP350 bech32m for v1+) without going through
/// `fmt`; checked against the bitcoin crate in the tests.
fn segwit_address(hrp: &str, version: u8, program: &[u8]) -> String {
    let mut data = Vec::with_capacity(1 + (program.len() * 8).div_ceil(5) + 6);
    data.push(version);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in program {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            data.push(((acc >> bits) & 31) as u8);
        }
    }
    if bits > 0 {
        data.push(((acc << (5 - bits)) & 31) as u8);
    }
    let hrp_expanded = hrp
        .bytes()
        .map(|c| c >> 5)
        .chain(std::iter::once(0))
        .chain(hrp.bytes().map(|c| c & 31));
    let constant = if version == 0 { 1 } else { 0x2bc8_30a3 };
    let polymod = bech32_polymod(
        hrp_expanded
            .chain(data.iter().copied())
            .chain(std::iter::repeat_n(0, 6)),
    ) ^ constant;
    for i in 0..6 {
        data.push(((polymod >> (5 * (5 - i))) & 31) as u8);
    }
    let mut out = String::with_capacity(hrp.len() + 1 + data.len());
    out.push_str(hrp);
    out.push('1');
    out.extend(data.iter().map(|&d| BECH32_CHARSET[usize::from(d)] as char));
    out
}

fn segwit_hrp(network: Network) -> &'static str {
    match network {
        Network::Bitcoin => "bc",
        Network::Regtest => "bcrt",
        _ => "tb",
    }
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
    let fast_segwit = if script.is_p2wpkh() {
        Some((ScriptKind::P2wpkh, 0))
    } else if script.is_p2wsh() {
        Some((ScriptKind::P2wsh, 0))
    } else if script.is_p2tr() {
        Some((ScriptKind::P2tr, 1))
    } else {
        None
    };
    if let Some((kind, version)) = fast_segwit {
        return (
            kind,
            Some(segwit_address(segwit_hrp(network), version, &b[2..])),
        );
    }
    let kind = if b == [0x51, 0x02, 0x4e, 0x73] {
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
    fn fast_bech32_matches_the_bitcoin_crate() {
        use bitcoin::key::TweakedPublicKey;
        use bitcoin::{WPubkeyHash, WScriptHash};
        let mut seed = 0x0fed_cba9_8765_4321u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 56) as u8
        };
        let networks = [
            Network::Bitcoin,
            Network::Testnet,
            Network::Testnet4,
            Network::Signet,
            Network::Regtest,
        ];
        let mut checked = 0;
        for _ in 0..3000 {
            let mut h20 = [0u8; 20];
            let mut h32 = [0u8; 32];
            h20.iter_mut().for_each(|b| *b = next());
            h32.iter_mut().for_each(|b| *b = next());
            let mut scripts = vec![
                ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array(h20)),
                ScriptBuf::new_p2wsh(&WScriptHash::from_byte_array(h32)),
            ];
            if let Ok(x) = bitcoin::XOnlyPublicKey::from_slice(&h32) {
                scripts.push(ScriptBuf::new_p2tr_tweaked(
                    TweakedPublicKey::dangerous_assume_tweaked(x),
                ));
            }
            for network in networks {
                for script in &scripts {
                    let expect = Address::from_script(script, network)
                        .expect("address")
                        .to_string();
                    assert_eq!(
                        classify(script, network).1.as_deref(),
                        Some(expect.as_str())
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 30_000);
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
