//! The spent-output store used to enrich inputs: a hash map in memory that spills its
//! oldest entries to an on-disk B-tree (redb) when it outgrows its memory budget.
//!
//! The store is scratch state: it lives in a temporary directory, is never trusted across
//! runs, and is rebuilt from the committed `outputs` and `inputs` tables on resume. That is
//! why its disk writes need no durability.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::PathBuf;

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use crate::source::bitcoin::ScriptKind;
use crate::{Error, Result};

/// What an input needs to know about the output it spends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Utxo {
    pub value: u64,
    pub tx_index: u64,
    pub height: u32,
    pub kind: ScriptKind,
    pub address: Option<Box<str>>,
}

/// An outpoint: txid bytes (internal order) and output index.
pub type OutKey = ([u8; 32], u32);

/// Txids are already uniformly random: their first 8 bytes (mixed with vout) are the hash.
#[derive(Default)]
pub struct OutKeyHasher(u64);

impl Hasher for OutKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
        self.0 = h;
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (self.0 ^ u64::from(i)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, _: usize) {
        // Array length prefix: constant for [u8; 32], adds nothing.
    }
}

type Map = HashMap<OutKey, Utxo, BuildHasherDefault<OutKeyHasher>>;

const TABLE: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("utxo");

/// Bytes of one slot of the hash table: the key, the value and hashbrown's control byte.
/// The table's memory is its capacity (spare slots included) times this.
const SLOT_BYTES: usize = std::mem::size_of::<(OutKey, Utxo)>() + 1;

/// Heap bytes an entry owns outside its slot: the address allocation (with allocator
/// rounding).
fn heap_bytes(u: &Utxo) -> usize {
    u.address
        .as_ref()
        .map_or(0, |a| a.len().next_multiple_of(16))
}

fn encode_key(k: &OutKey) -> [u8; 36] {
    let mut out = [0u8; 36];
    out[..32].copy_from_slice(&k.0);
    out[32..].copy_from_slice(&k.1.to_be_bytes());
    out
}

fn encode_value(u: &Utxo) -> Vec<u8> {
    let addr = u.address.as_deref().unwrap_or("");
    let mut v = Vec::with_capacity(22 + addr.len());
    v.extend_from_slice(&u.value.to_le_bytes());
    v.extend_from_slice(&u.tx_index.to_le_bytes());
    v.extend_from_slice(&u.height.to_le_bytes());
    v.push(u.kind as u8);
    v.push(u8::from(u.address.is_some()));
    v.extend_from_slice(addr.as_bytes());
    v
}

fn decode_value(v: &[u8]) -> Option<Utxo> {
    const KINDS: [ScriptKind; 11] = [
        ScriptKind::P2pk,
        ScriptKind::P2pkh,
        ScriptKind::P2sh,
        ScriptKind::P2wpkh,
        ScriptKind::P2wsh,
        ScriptKind::P2tr,
        ScriptKind::P2a,
        ScriptKind::WitnessUnknown,
        ScriptKind::Multisig,
        ScriptKind::Nulldata,
        ScriptKind::Nonstandard,
    ];
    let value = u64::from_le_bytes(v.get(0..8)?.try_into().ok()?);
    let tx_index = u64::from_le_bytes(v.get(8..16)?.try_into().ok()?);
    let height = u32::from_le_bytes(v.get(16..20)?.try_into().ok()?);
    let kind = *KINDS.get(usize::from(*v.get(20)?))?;
    let address = match v.get(21)? {
        0 => None,
        _ => Some(std::str::from_utf8(v.get(22..)?).ok()?.into()),
    };
    Some(Utxo {
        value,
        tx_index,
        height,
        kind,
        address,
    })
}

/// Counters for the run summary and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct UtxoStats {
    pub spills: u64,
    pub spilled_entries: u64,
    pub disk_hits: u64,
    pub peak_mem_bytes: usize,
}

/// The spent-output store.
pub struct UtxoStore {
    map: Map,
    /// Sum of [`heap_bytes`] over the map's entries.
    heap_bytes: usize,
    budget: usize,
    disk: Option<(tempfile::TempDir, Database)>,
    disk_entries: u64,
    pending: Option<redb::WriteTransaction>,
    pub stats: UtxoStats,
}

impl UtxoStore {
    /// A store keeping at most about `budget_bytes` in memory (the disk cache included).
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            map: Map::default(),
            heap_bytes: 0,
            budget: budget_bytes,
            disk: None,
            disk_entries: 0,
            pending: None,
            stats: UtxoStats::default(),
        }
    }

    /// Entries in memory and on disk.
    pub fn len(&self) -> u64 {
        self.map.len() as u64 + self.disk_entries
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate bytes held in memory.
    pub fn mem_bytes(&self) -> usize {
        self.heap_bytes + self.map.capacity() * SLOT_BYTES
    }

    fn disk_cache_bytes(budget: usize) -> usize {
        (budget / 8).clamp(1 << 20, 256 << 20)
    }

    fn err(&self, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        let path = self
            .disk
            .as_ref()
            .map_or_else(PathBuf::new, |(d, _)| d.path().to_path_buf());
        Error::Utxo {
            path,
            source: Box::new(source),
        }
    }

    /// Adds an unspent output.
    pub fn insert(&mut self, key: OutKey, utxo: Utxo) -> Result<()> {
        // An insert into a full table doubles it (and holds both tables while rehashing):
        // spill first if the doubled table would not fit.
        if self.map.len() == self.map.capacity() && !self.map.is_empty() {
            let grown = self.heap_bytes + (self.map.capacity() * 2) * SLOT_BYTES;
            if grown > self.budget {
                self.spill()?;
            }
        }
        self.heap_bytes += heap_bytes(&utxo);
        if let Some(old) = self.map.insert(key, utxo) {
            // A duplicate txid (BIP30, mainnet blocks 91842/91880): the newer output wins.
            self.heap_bytes -= heap_bytes(&old);
        }
        self.stats.peak_mem_bytes = self.stats.peak_mem_bytes.max(self.mem_bytes());
        if self.mem_bytes() > self.budget {
            self.spill()?;
        }
        Ok(())
    }

    /// Removes and returns the output `key` spends, if the store has it.
    pub fn spend(&mut self, key: &OutKey) -> Result<Option<Utxo>> {
        if let Some(u) = self.map.remove(key) {
            self.heap_bytes -= heap_bytes(&u);
            return Ok(Some(u));
        }
        if self.disk_entries == 0 {
            return Ok(None);
        }
        if self.pending.is_none() {
            let (_, db) = self.disk.as_ref().expect("disk entries imply a database");
            let mut txn = db.begin_write().map_err(|e| self.err(e))?;
            txn.set_durability(Durability::None)
                .map_err(|e| self.err(e))?;
            self.pending = Some(txn);
        }
        let txn = self.pending.as_ref().expect("just set");
        let found = {
            let mut table = txn.open_table(TABLE).map_err(|e| self.err(e))?;
            let removed = table
                .remove(encode_key(key).as_slice())
                .map_err(|e| self.err(e))?;
            removed.map(|g| decode_value(g.value()))
        };
        match found {
            None => Ok(None),
            Some(Some(u)) => {
                self.disk_entries -= 1;
                self.stats.disk_hits += 1;
                Ok(Some(u))
            }
            Some(None) => Err(self.err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "undecodable spilled entry",
            ))),
        }
    }

    /// Ends a batch of spends (call once per block): commits pending disk removals.
    pub fn flush(&mut self) -> Result<()> {
        if let Some(txn) = self.pending.take() {
            txn.commit().map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Moves the oldest entries (about half the memory) to disk.
    fn spill(&mut self) -> Result<()> {
        self.flush()?;
        if self.disk.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("ferret-utxo-")
                .tempdir()
                .map_err(|e| Error::Utxo {
                    path: std::env::temp_dir(),
                    source: Box::new(e),
                })?;
            let cache = Self::disk_cache_bytes(self.budget);
            let db = Database::builder()
                .set_cache_size(cache)
                .create(dir.path().join("utxo.redb"))
                .map_err(|e| Error::Utxo {
                    path: dir.path().to_path_buf(),
                    source: Box::new(e),
                })?;
            // The disk cache is memory too: keep the map within what is left of the budget.
            self.budget = self.budget.saturating_sub(cache).max(1 << 20);
            self.disk = Some((dir, db));
        }
        // Heights histogram → the threshold below which entries go to disk.
        let mut by_height: BTreeMap<u32, usize> = BTreeMap::new();
        for u in self.map.values() {
            *by_height.entry(u.height).or_default() += SLOT_BYTES + heap_bytes(u);
        }
        let mut acc = 0;
        let mut threshold = u32::MAX;
        for (&h, &bytes) in &by_height {
            acc += bytes;
            if acc >= self.mem_bytes() / 2 {
                threshold = h;
                break;
            }
        }
        let (_, db) = self.disk.as_ref().expect("created above");
        let mut txn = db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(Durability::None)
            .map_err(|e| self.err(e))?;
        let mut moved = 0u64;
        {
            let mut table = txn.open_table(TABLE).map_err(|e| self.err(e))?;
            for (k, u) in self.map.iter().filter(|(_, u)| u.height <= threshold) {
                let prev = table
                    .insert(encode_key(k).as_slice(), encode_value(u).as_slice())
                    .map_err(|e| self.err(e))?;
                if prev.is_none() {
                    moved += 1;
                }
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        let before = self.map.len();
        self.map.retain(|_, u| u.height > threshold);
        self.map.shrink_to_fit();
        self.heap_bytes = self.map.values().map(heap_bytes).sum();
        self.disk_entries += moved;
        self.stats.spills += 1;
        self.stats.spilled_entries += (before - self.map.len()) as u64;
        tracing::debug!(
            moved,
            threshold,
            in_memory = self.map.len(),
            on_disk = self.disk_entries,
            "spilled spent-output store"
        );
        Ok(())
    }

    /// Reads one entry without removing it (tests and diagnostics).
    pub fn get(&self, key: &OutKey) -> Result<Option<Utxo>> {
        if let Some(u) = self.map.get(key) {
            return Ok(Some(u.clone()));
        }
        let Some((_, db)) = &self.disk else {
            return Ok(None);
        };
        let txn = db.begin_read().map_err(|e| self.err(e))?;
        let table = match txn.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let v = table
            .get(encode_key(key).as_slice())
            .map_err(|e| self.err(e))?;
        Ok(v.and_then(|g| decode_value(g.value())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utxo(i: u32) -> Utxo {
        Utxo {
            value: u64::from(i) * 1000,
            tx_index: u64::from(i),
            height: i / 10,
            kind: if i.is_multiple_of(3) {
                ScriptKind::Multisig
            } else {
                ScriptKind::P2wpkh
            },
            address: (!i.is_multiple_of(3)).then(|| format!("bcrt1q{i:038}").into()),
        }
    }

    fn key(i: u32) -> OutKey {
        let mut t = [0u8; 32];
        t[..4].copy_from_slice(&i.to_le_bytes());
        t[31] = 7;
        (t, i % 4)
    }

    #[test]
    fn spills_past_budget_and_finds_everything_once() {
        let mut s = UtxoStore::new(64 << 10);
        for i in 0..20_000 {
            s.insert(key(i), utxo(i)).expect("insert");
        }
        assert!(s.stats.spills > 0, "a 64 KiB budget must spill 20k entries");
        // The map's budget is at least 1 MiB once the disk cache is set aside.
        assert!(s.mem_bytes() <= 1 << 20, "{}", s.mem_bytes());
        assert_eq!(s.len(), 20_000);
        assert_eq!(s.get(&key(5)).expect("get"), Some(utxo(5)));
        for i in (0..20_000).rev() {
            assert_eq!(s.spend(&key(i)).expect("spend"), Some(utxo(i)), "entry {i}");
            if i % 100 == 0 {
                s.flush().expect("flush");
            }
        }
        s.flush().expect("flush");
        assert!(s.is_empty());
        assert_eq!(s.spend(&key(1)).expect("spend"), None);
    }
}
