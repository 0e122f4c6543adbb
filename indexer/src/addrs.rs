//! Dense address ids: the store that gives every distinct address the next id the first
//! time an output pays it, and says which id an address already has.
//!
//! Ids are assigned in chain order (the first output paying an address, by height, block
//! position and vout), so id order is first-seen order and `btc.addresses` is sorted by
//! both. The committed `btc.addresses` table is the truth; this store is scratch state in a
//! temporary directory, rebuilt from that table on resume, like the spent-output store.
//!
//! Newest entries are in a hash map; when it outgrows its budget it is written out as an
//! immutable *run*: records `(length, address bytes, id)` sorted by address. Each run keeps
//! in memory every [`STRIDE`]th key (a look-up then reads one stretch), its id range and a
//! Bloom filter of 10 bits a key (a new address, the common case, then reads nothing from
//! about 99 % of the runs). Runs of similar size are merged, so there are O(log n) of them.
//! A look-up compares whole address bytes: two addresses never share an id, whatever
//! their hashes.
//!
//! An unwind ([`AddressStore::truncate`]) forgets every id at or above the new next id:
//! runs are written in id order, so only the newest runs hold such ids, and only they are
//! rewritten.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Longest address a record holds (BIP173 caps a bech32 string at 90 characters; the
/// length byte allows 255).
const MAX_ADDRESS: usize = 255;
/// Every `STRIDE`th key of a run stays in memory.
const STRIDE: usize = 32;
/// Bloom filter bits per key and probes per look-up (~1 % false positives).
const BLOOM_BITS: usize = 10;
const BLOOM_PROBES: u64 = 7;
/// Runs are merged when a newer one holds at least half as many entries as the one before.
const MERGE_RATIO: usize = 2;

/// Bytes of one hash-map slot (key pointer and length, id, control byte).
const SLOT_BYTES: usize = std::mem::size_of::<(Box<str>, u64)>() + 1;

fn heap_bytes(a: &str) -> usize {
    a.len().next_multiple_of(16)
}

/// 64-bit hash of address bytes (addresses are chosen by their owners, so this decides
/// only Bloom probes, never identity).
fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ bytes.len() as u64;
    for c in bytes.chunks(8) {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
    }
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 29)
}

struct Bloom {
    bits: Vec<u64>,
}

impl Bloom {
    fn new(keys: usize) -> Self {
        let words = (keys.max(1) * BLOOM_BITS).div_ceil(64);
        Self {
            bits: vec![0; words],
        }
    }

    fn probes(&self, key: &[u8]) -> impl Iterator<Item = usize> + use<> {
        let h = hash(key);
        let (h1, h2) = (h, h.rotate_left(32) | 1);
        let m = (self.bits.len() * 64) as u64;
        (0..BLOOM_PROBES).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m) as usize)
    }

    fn insert(&mut self, key: &[u8]) {
        for p in self.probes(key) {
            self.bits[p / 64] |= 1 << (p % 64);
        }
    }

    fn may_contain(&self, key: &[u8]) -> bool {
        self.probes(key)
            .all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }
}

/// One immutable sorted file of entries.
struct Run {
    path: PathBuf,
    file: File,
    len: usize,
    /// Keys of records 0, STRIDE, 2·STRIDE, …
    fences: Vec<Box<[u8]>>,
    /// Byte offsets of those records, and the file's length last.
    offsets: Vec<u64>,
    bloom: Bloom,
    min_id: u64,
    max_id: u64,
    /// Bytes of the in-memory index, counted once: the run never changes, and the store
    /// asks on every insert (summing the fences each time made indexing quadratic in the
    /// number of addresses on disk).
    mem: usize,
}

fn encode(addr: &[u8], id: u64, w: &mut impl Write) -> std::io::Result<usize> {
    let n = u8::try_from(addr.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("an address of {} bytes", addr.len()),
        )
    })?;
    w.write_all(&[n])?;
    w.write_all(addr)?;
    w.write_all(&id.to_le_bytes())?;
    Ok(1 + addr.len() + 8)
}

impl Run {
    /// Writes `entries` (sorted by address, addresses unique) as a run at `path`.
    fn write(
        path: PathBuf,
        len_hint: usize,
        entries: impl Iterator<Item = std::io::Result<(Vec<u8>, u64)>>,
    ) -> std::io::Result<Self> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut w = BufWriter::with_capacity(1 << 20, &file);
        let mut fences = Vec::new();
        let mut offsets = Vec::new();
        let mut bloom = Bloom::new(len_hint);
        let (mut len, mut at) = (0usize, 0u64);
        let (mut min_id, mut max_id) = (u64::MAX, 0u64);
        let mut last: Option<Vec<u8>> = None;
        for e in entries {
            let (a, id) = e?;
            if last.as_ref().is_some_and(|l| *l >= a) {
                return Err(std::io::Error::other("run entries out of order"));
            }
            if len.is_multiple_of(STRIDE) {
                fences.push(a.clone().into_boxed_slice());
                offsets.push(at);
            }
            bloom.insert(&a);
            at += encode(&a, id, &mut w)? as u64;
            min_id = min_id.min(id);
            max_id = max_id.max(id);
            len += 1;
            last = Some(a);
        }
        w.flush()?;
        drop(w);
        offsets.push(at);
        if len > len_hint {
            // The filter was sized for fewer keys: rebuild it at the right size.
            bloom = Bloom::new(len);
            for r in Self::scan(&file, len) {
                bloom.insert(&r?.0);
            }
        }
        let mem = fences.iter().map(|f| f.len() + 16).sum::<usize>()
            + offsets.capacity() * 8
            + bloom.bits.capacity() * 8;
        Ok(Self {
            path,
            file,
            len,
            fences,
            offsets,
            bloom,
            min_id,
            max_id,
            mem,
        })
    }

    fn mem_bytes(&self) -> usize {
        self.mem
    }

    /// The id of `addr`, if this run holds it.
    fn find(&self, addr: &[u8], buf: &mut Vec<u8>) -> std::io::Result<Option<u64>> {
        if self.len == 0 || !self.bloom.may_contain(addr) {
            return Ok(None);
        }
        let stretch = match self.fences.partition_point(|f| f.as_ref() <= addr) {
            0 => return Ok(None),
            n => n - 1,
        };
        let (from, to) = (self.offsets[stretch], self.offsets[stretch + 1]);
        buf.resize(usize::try_from(to - from).unwrap_or(usize::MAX), 0);
        self.file.read_exact_at(buf, from)?;
        let mut at = 0usize;
        while at < buf.len() {
            let n = usize::from(buf[at]);
            let key = buf
                .get(at + 1..at + 1 + n)
                .ok_or_else(|| std::io::Error::other("a cut record"))?;
            let id = buf
                .get(at + 1 + n..at + 9 + n)
                .ok_or_else(|| std::io::Error::other("a cut record"))?;
            match key.cmp(addr) {
                std::cmp::Ordering::Equal => {
                    return Ok(Some(u64::from_le_bytes(id.try_into().expect("8 bytes"))));
                }
                std::cmp::Ordering::Greater => return Ok(None),
                std::cmp::Ordering::Less => at += 9 + n,
            }
        }
        Ok(None)
    }

    /// Every record in address order.
    fn scan(file: &File, len: usize) -> impl Iterator<Item = std::io::Result<(Vec<u8>, u64)>> + '_ {
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut started = false;
        let mut left = len;
        std::iter::from_fn(move || {
            use std::io::{Seek, SeekFrom};
            if left == 0 {
                return None;
            }
            if !started {
                started = true;
                if let Err(e) = r.seek(SeekFrom::Start(0)) {
                    left = 0;
                    return Some(Err(e));
                }
            }
            left -= 1;
            let mut n = [0u8; 1];
            let mut id = [0u8; 8];
            let res = r.read_exact(&mut n).and_then(|()| {
                let mut a = vec![0u8; usize::from(n[0])];
                r.read_exact(&mut a)?;
                r.read_exact(&mut id)?;
                Ok((a, u64::from_le_bytes(id)))
            });
            if res.is_err() {
                left = 0;
            }
            Some(res)
        })
    }

    fn records(&self) -> impl Iterator<Item = std::io::Result<(Vec<u8>, u64)>> + '_ {
        Self::scan(&self.file, self.len)
    }
}

/// Counters for summaries and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct AddressStats {
    pub spills: u64,
    pub merges: u64,
    /// Look-ups answered from a run.
    pub disk_hits: u64,
    pub peak_mem_bytes: usize,
}

/// The address → id store.
pub struct AddressStore {
    map: HashMap<Box<str>, u64>,
    heap_bytes: usize,
    budget: usize,
    dir: Option<tempfile::TempDir>,
    /// Oldest first; id ranges increase from run to run.
    runs: Vec<Run>,
    next_run: u64,
    disk_entries: u64,
    buf: Vec<u8>,
    pub stats: AddressStats,
}

impl AddressStore {
    /// A store keeping about `budget_bytes` in memory (run indexes and filters included).
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            map: HashMap::new(),
            heap_bytes: 0,
            budget: budget_bytes,
            dir: None,
            runs: Vec::new(),
            next_run: 0,
            disk_entries: 0,
            buf: Vec::new(),
            stats: AddressStats::default(),
        }
    }

    /// Entries in memory and on disk.
    pub fn len(&self) -> u64 {
        self.map.len() as u64 + self.disk_entries
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate bytes held in memory.
    pub fn mem_bytes(&self) -> usize {
        self.map_bytes() + self.runs.iter().map(Run::mem_bytes).sum::<usize>()
    }

    fn map_bytes(&self) -> usize {
        self.heap_bytes + self.map.capacity() * SLOT_BYTES
    }

    fn map_budget(&self) -> usize {
        crate::utxo::map_budget(self.budget, self.runs.iter().map(Run::mem_bytes).sum())
    }

    fn err(path: &Path, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Addresses {
            path: path.to_path_buf(),
            source: Box::new(source),
        }
    }

    /// The id of `address`, if it has one.
    pub fn get(&mut self, address: &str) -> Result<Option<u64>> {
        if let Some(&id) = self.map.get(address) {
            return Ok(Some(id));
        }
        for run in self.runs.iter().rev() {
            if let Some(id) = run
                .find(address.as_bytes(), &mut self.buf)
                .map_err(|e| Self::err(&run.path, e))?
            {
                self.stats.disk_hits += 1;
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    /// The id of `address`: its own, or `*next` (then incremented) when it has none yet;
    /// `true` when the id is new.
    pub fn get_or_assign(&mut self, address: &str, next: &mut u64) -> Result<(u64, bool)> {
        if let Some(id) = self.get(address)? {
            return Ok((id, false));
        }
        let id = *next;
        self.insert(address, id)?;
        *next += 1;
        Ok((id, true))
    }

    /// Records `address` → `id` (the address must have no id yet; ids must grow).
    pub fn insert(&mut self, address: &str, id: u64) -> Result<()> {
        if address.len() > MAX_ADDRESS {
            return Err(Error::Internal {
                what: format!("an address of {} bytes: {address:.40}…", address.len()),
            });
        }
        if self.map.len() == self.map.capacity() && !self.map.is_empty() {
            let grown = self.map_bytes() + self.map.capacity() * SLOT_BYTES;
            if grown > self.map_budget() {
                self.spill()?;
            }
        }
        self.heap_bytes += heap_bytes(address);
        if self.map.insert(address.into(), id).is_some() {
            return Err(Error::Internal {
                what: format!("address {address} given a second id"),
            });
        }
        self.stats.peak_mem_bytes = self.stats.peak_mem_bytes.max(self.mem_bytes());
        if self.map_bytes() > self.map_budget() {
            self.spill()?;
        }
        Ok(())
    }

    fn new_run_path(&mut self) -> Result<PathBuf> {
        if self.dir.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("ferret-addrs-")
                .tempdir()
                .map_err(|e| Self::err(&std::env::temp_dir(), e))?;
            self.dir = Some(dir);
        }
        self.next_run += 1;
        let dir = self.dir.as_ref().expect("made above").path();
        Ok(dir.join(format!("run-{:06}.bin", self.next_run)))
    }

    /// Writes the whole map out as a new run.
    fn spill(&mut self) -> Result<()> {
        if self.map.is_empty() {
            return Ok(());
        }
        let mut moved: Vec<(Box<str>, u64)> = self.map.drain().collect();
        self.map.shrink_to_fit();
        self.heap_bytes = 0;
        moved.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let path = self.new_run_path()?;
        let n = moved.len();
        let run = Run::write(
            path.clone(),
            n,
            moved
                .into_iter()
                .map(|(a, id)| Ok((a.into_boxed_bytes().into_vec(), id))),
        )
        .map_err(|e| Self::err(&path, e))?;
        self.runs.push(run);
        self.disk_entries += n as u64;
        self.stats.spills += 1;
        self.merge_runs()?;
        tracing::debug!(
            moved = n,
            on_disk = self.disk_entries,
            runs = self.runs.len(),
            "spilled address store"
        );
        Ok(())
    }

    fn merge_runs(&mut self) -> Result<()> {
        while self.runs.len() >= 2 {
            let n = self.runs.len();
            if self.runs[n - 1].len * MERGE_RATIO < self.runs[n - 2].len {
                break;
            }
            let newer = self.runs.pop().expect("two runs");
            let older = self.runs.pop().expect("two runs");
            let path = self.new_run_path()?;
            let merged = merge(&older, &newer, path.clone()).map_err(|e| Self::err(&path, e))?;
            for r in [older, newer] {
                let _ = std::fs::remove_file(&r.path);
            }
            self.runs.push(merged);
            self.stats.merges += 1;
        }
        Ok(())
    }

    /// Forgets every id at or above `next_id` (an unwind).
    pub fn truncate(&mut self, next_id: u64) -> Result<()> {
        self.map.retain(|_, id| *id < next_id);
        self.heap_bytes = self.map.keys().map(|a| heap_bytes(a)).sum();
        let mut kept = Vec::with_capacity(self.runs.len());
        for run in std::mem::take(&mut self.runs) {
            if run.max_id < next_id {
                kept.push(run);
                continue;
            }
            self.disk_entries -= run.len as u64;
            if run.min_id < next_id {
                let path = self.new_run_path()?;
                let filtered = Run::write(
                    path.clone(),
                    run.len,
                    run.records()
                        .filter(|r| r.as_ref().map_or(true, |(_, id)| *id < next_id)),
                )
                .map_err(|e| Self::err(&path, e))?;
                self.disk_entries += filtered.len as u64;
                if filtered.len > 0 {
                    kept.push(filtered);
                } else {
                    let _ = std::fs::remove_file(&filtered.path);
                }
            }
            let _ = std::fs::remove_file(&run.path);
        }
        self.runs = kept;
        Ok(())
    }
}

/// Two runs as one (their addresses are disjoint: an address has one id).
fn merge(older: &Run, newer: &Run, path: PathBuf) -> std::io::Result<Run> {
    let mut a = older.records().peekable();
    let mut b = newer.records().peekable();
    let merged = std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (None, None) => None,
        (Some(Err(_)), _) | (Some(_), None) => a.next(),
        (_, Some(Err(_))) | (None, Some(_)) => b.next(),
        (Some(Ok((ka, _))), Some(Ok((kb, _)))) => match ka.cmp(kb) {
            std::cmp::Ordering::Less => a.next(),
            std::cmp::Ordering::Greater => b.next(),
            std::cmp::Ordering::Equal => {
                Some(Err(std::io::Error::other("one address in two runs")))
            }
        },
    });
    Run::write(path, older.len + newer.len, merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn addr(rng: &mut impl Rng, universe: u32) -> String {
        // Shared prefixes and varied lengths, as real encodings have.
        let n = rng.random_range(0..universe);
        let kind = n % 3;
        match kind {
            0 => format!("1{n:x}"),
            1 => format!("bc1q{n:040x}"),
            _ => format!("3{:x}{}", n, "z".repeat((n % 7) as usize)),
        }
    }

    /// The store against a plain map through inserts, spills, merges and unwinds, with a
    /// spill every few rounds (the budget's 1 MiB floor is never reached here).
    #[test]
    fn equals_a_map_through_spills_merges_and_unwinds() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut store = AddressStore::new(0);
        let mut oracle: HashMap<String, u64> = HashMap::new();
        let mut next = 0u64;
        let mut order: Vec<String> = Vec::new();
        for round in 0..40 {
            for _ in 0..rng.random_range(50..400) {
                let a = addr(&mut rng, 20_000);
                let (id, new) = store.get_or_assign(&a, &mut next).expect("assign");
                match oracle.get(&a) {
                    Some(&o) => assert_eq!((id, new), (o, false), "{a}"),
                    None => {
                        assert!(new, "{a} reported as known");
                        assert_eq!(id as usize, order.len());
                        oracle.insert(a.clone(), id);
                        order.push(a);
                    }
                }
            }
            if round % 3 == 0 {
                store.spill().expect("spill");
            }
            if round % 7 == 6 {
                let cut = rng.random_range(0..=next);
                store.truncate(cut).expect("truncate");
                for a in order.drain(cut as usize..) {
                    oracle.remove(&a);
                }
                next = cut;
            }
            assert_eq!(store.len(), oracle.len() as u64, "round {round}");
        }
        assert!(
            store.stats.spills > 5 && store.stats.merges > 0,
            "{:?}",
            store.stats
        );
        for a in &order {
            assert_eq!(store.get(a).expect("get"), oracle.get(a).copied());
        }
        for _ in 0..2000 {
            let a = addr(&mut rng, 40_000);
            assert_eq!(store.get(&a).expect("get"), oracle.get(&a).copied(), "{a}");
        }
    }

    #[test]
    fn a_prefix_is_not_its_extension() {
        let mut store = AddressStore::new(0);
        let mut next = 0;
        for a in ["1ab", "1abc", "1a", "1abd"] {
            store.get_or_assign(a, &mut next).expect("assign");
        }
        store.spill().expect("spill");
        assert_eq!(store.get("1abc").expect("get"), Some(1));
        assert_eq!(store.get("1a").expect("get"), Some(2));
        assert_eq!(store.get("1ab").expect("get"), Some(0));
        assert_eq!(store.get("1abcd").expect("get"), None);
        assert_eq!(store.get("1").expect("get"), None);
    }
}
