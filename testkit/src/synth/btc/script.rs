//! Deterministic address material, output scripts and spending scripts.
//!
//! Keys are never real: every address id is mapped to pseudo-random bytes by a
//! seeded bijective mixer, so no per-address key material has to be stored. The
//! scripts built from them have the shapes the real chain has (hash160 of the
//! "public key" for p2pkh/p2wpkh, hash160 of the redeem script for p2sh, sha256 of
//! the witness script for p2wsh, an x-only key for p2tr), and the spending inputs
//! reveal matching public keys and scripts. Public keys are `02`/`03` followed by 32
//! random bytes (not necessarily points on the curve) and signatures are 71-byte
//! DER-shaped ECDSA signatures or 64-byte Schnorr signatures; nothing verifies them.

use bitcoin::hashes::Hash as _;
use bitcoin::opcodes::all::{OP_CHECKMULTISIG, OP_CHECKSIG, OP_PUSHNUM_1, OP_PUSHNUM_2};
use bitcoin::script::{Builder, PushBytes};
use bitcoin::{
    Address, Network, PubkeyHash, ScriptBuf, WPubkeyHash, Witness, WitnessProgram, WitnessVersion,
};
use rand::RngCore;

/// The script template of a synthetic address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Kind {
    /// Pay to public key hash.
    P2pkh,
    /// Pay to script hash wrapping a p2wpkh program (nested segwit).
    P2shP2wpkh,
    /// Pay to script hash of a legacy 2-of-3 multisig redeem script.
    P2shMultisig,
    /// Native segwit v0 key hash.
    P2wpkh,
    /// Native segwit v0 script hash of a 2-of-3 multisig witness script.
    P2wsh,
    /// Taproot, spent through the key path.
    P2tr,
    /// Bare pay to (compressed) public key.
    P2pk,
    /// Bare 1-of-2 multisig.
    BareMultisig,
}

impl Kind {
    /// Draws a kind with a mix roughly like today's chain: p2wpkh most common, then
    /// p2pkh, p2tr, p2sh, p2wsh, with rare bare p2pk and bare multisig.
    pub(crate) fn draw(rng: &mut impl RngCore) -> Kind {
        match rng.next_u32() % 1000 {
            0..450 => Kind::P2wpkh,
            450..650 => Kind::P2pkh,
            650..790 => Kind::P2tr,
            790..880 => Kind::P2shP2wpkh,
            880..910 => Kind::P2shMultisig,
            910..970 => Kind::P2wsh,
            970..985 => Kind::P2pk,
            _ => Kind::BareMultisig,
        }
    }

    /// Whether spending this kind puts data in the witness.
    pub(crate) fn is_segwit(self) -> bool {
        matches!(
            self,
            Kind::P2shP2wpkh | Kind::P2wpkh | Kind::P2wsh | Kind::P2tr
        )
    }

    /// Whether outputs of this kind have a standard address encoding.
    pub(crate) fn has_address(self) -> bool {
        !matches!(self, Kind::P2pk | Kind::BareMultisig)
    }
}

/// Maps `(address id, word index)` to pseudo-random words, deterministically per seed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Material {
    key: u64,
}

/// splitmix64's finaliser: a bijection on `u64`.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

impl Material {
    pub(crate) fn new(seed: u64) -> Self {
        Material {
            key: mix(seed ^ 0x5eed_f0e7_7e70_0001),
        }
    }

    /// Word `k` (< 16) of address `addr`. Distinct `(addr, k)` give distinct words
    /// because the counter is injective and both the multiply and `mix` are bijections.
    fn word(&self, addr: u32, k: u32) -> u64 {
        let counter = (u64::from(addr) << 4) | u64::from(k & 0xf);
        mix(self.key.wrapping_add(counter.wrapping_mul(GOLDEN)))
    }

    fn bytes32(&self, addr: u32, first_word: u32) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
            let i = u32::try_from(i).expect("four chunks");
            chunk.copy_from_slice(&self.word(addr, first_word + i).to_le_bytes());
        }
        out
    }

    /// Compressed-looking public key number `i` (0..3) of `addr`.
    pub(crate) fn pubkey(&self, addr: u32, i: u32) -> [u8; 33] {
        let mut out = [0u8; 33];
        let body = self.bytes32(addr, i * 4);
        out[0] = 2 | (body[31] & 1);
        out[1..].copy_from_slice(&body);
        out
    }

    /// The 32-byte x-only output key of a p2tr address.
    fn xonly(&self, addr: u32) -> [u8; 32] {
        self.bytes32(addr, 12)
    }

    fn multisig(&self, addr: u32, required: u8, keys: u32) -> ScriptBuf {
        let mut b = Builder::new().push_int(i64::from(required));
        for i in 0..keys {
            b = b.push_slice(self.pubkey(addr, i));
        }
        b.push_int(i64::from(keys))
            .push_opcode(OP_CHECKMULTISIG)
            .into_script()
    }

    fn p2wpkh_program(&self, addr: u32) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&WPubkeyHash::hash(&self.pubkey(addr, 0)))
    }

    /// The scriptPubKey of `addr` when it is of `kind`.
    pub(crate) fn script_pubkey(&self, addr: u32, kind: Kind) -> ScriptBuf {
        match kind {
            Kind::P2pkh => ScriptBuf::new_p2pkh(&PubkeyHash::hash(&self.pubkey(addr, 0))),
            Kind::P2wpkh => self.p2wpkh_program(addr),
            Kind::P2shP2wpkh => ScriptBuf::new_p2sh(&self.p2wpkh_program(addr).script_hash()),
            Kind::P2shMultisig => ScriptBuf::new_p2sh(&self.multisig(addr, 2, 3).script_hash()),
            Kind::P2wsh => ScriptBuf::new_p2wsh(&self.multisig(addr, 2, 3).wscript_hash()),
            Kind::P2tr => {
                let program = WitnessProgram::new(WitnessVersion::V1, &self.xonly(addr))
                    .expect("a 32-byte program is a valid witness v1 program");
                ScriptBuf::new_witness_program(&program)
            }
            Kind::P2pk => Builder::new()
                .push_slice(self.pubkey(addr, 0))
                .push_opcode(OP_CHECKSIG)
                .into_script(),
            Kind::BareMultisig => Builder::new()
                .push_opcode(OP_PUSHNUM_1)
                .push_slice(self.pubkey(addr, 0))
                .push_slice(self.pubkey(addr, 1))
                .push_opcode(OP_PUSHNUM_2)
                .push_opcode(OP_CHECKMULTISIG)
                .into_script(),
        }
    }

    /// The standard address string of `addr`, or `None` for kinds without one.
    pub(crate) fn address(&self, addr: u32, kind: Kind, network: Network) -> Option<String> {
        if !kind.has_address() {
            return None;
        }
        Address::from_script(&self.script_pubkey(addr, kind), network)
            .ok()
            .map(|a| a.to_string())
    }

    /// scriptSig and witness of an input spending an output of `addr` (`kind`),
    /// with fresh dummy signatures drawn from `rng`.
    pub(crate) fn spend(
        &self,
        addr: u32,
        kind: Kind,
        rng: &mut impl RngCore,
    ) -> (ScriptBuf, Witness) {
        match kind {
            Kind::P2pkh => {
                let sig = ecdsa_sig(rng);
                let script = Builder::new()
                    .push_slice(sig)
                    .push_slice(self.pubkey(addr, 0))
                    .into_script();
                (script, Witness::new())
            }
            Kind::P2wpkh => {
                let sig = ecdsa_sig(rng);
                (
                    ScriptBuf::new(),
                    Witness::from_slice(&[&sig[..], &self.pubkey(addr, 0)[..]]),
                )
            }
            Kind::P2shP2wpkh => {
                let sig = ecdsa_sig(rng);
                let redeem = self.p2wpkh_program(addr);
                let script = Builder::new().push_slice(push_bytes(&redeem)).into_script();
                (
                    script,
                    Witness::from_slice(&[&sig[..], &self.pubkey(addr, 0)[..]]),
                )
            }
            Kind::P2shMultisig => {
                let redeem = self.multisig(addr, 2, 3);
                let script = Builder::new()
                    .push_int(0)
                    .push_slice(ecdsa_sig(rng))
                    .push_slice(ecdsa_sig(rng))
                    .push_slice(push_bytes(&redeem))
                    .into_script();
                (script, Witness::new())
            }
            Kind::P2wsh => {
                let ws = self.multisig(addr, 2, 3);
                let (s1, s2) = (ecdsa_sig(rng), ecdsa_sig(rng));
                let witness = Witness::from_slice(&[&[][..], &s1[..], &s2[..], ws.as_bytes()]);
                (ScriptBuf::new(), witness)
            }
            Kind::P2tr => {
                let mut sig = [0u8; 64];
                rng.fill_bytes(&mut sig);
                (ScriptBuf::new(), Witness::from_slice(&[&sig[..]]))
            }
            Kind::P2pk => (
                Builder::new().push_slice(ecdsa_sig(rng)).into_script(),
                Witness::new(),
            ),
            Kind::BareMultisig => {
                let script = Builder::new()
                    .push_int(0)
                    .push_slice(ecdsa_sig(rng))
                    .into_script();
                (script, Witness::new())
            }
        }
    }
}

fn push_bytes(script: &ScriptBuf) -> &PushBytes {
    <&PushBytes>::try_from(script.as_bytes())
        .expect("redeem and witness scripts here are at most 105 bytes, far below the push limit")
}

/// A 71-byte DER-shaped ECDSA signature with SIGHASH_ALL: low R and low S, as
/// Core's signer produces (33-byte R values are ground away).
fn ecdsa_sig(rng: &mut impl RngCore) -> [u8; 71] {
    let mut sig = [0u8; 71];
    sig[0] = 0x30;
    sig[1] = 0x44;
    sig[2] = 0x02;
    sig[3] = 0x20;
    rng.fill_bytes(&mut sig[4..36]);
    sig[36] = 0x02;
    sig[37] = 0x20;
    rng.fill_bytes(&mut sig[38..70]);
    for first in [4, 38] {
        sig[first] &= 0x7f;
        if sig[first] == 0 {
            sig[first] = 1;
        }
    }
    sig[70] = 0x01;
    sig
}
