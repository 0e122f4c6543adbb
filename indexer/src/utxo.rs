//! The spent-output store used to enrich inputs: a hash map in memory that spills its
//! oldest entries to disk when it outgrows its memory budget.
//!
//! Spilled entries go to immutable *runs*: files of fixed-size records sorted by outpoint.
//! In memory each run keeps only every [`STRIDE`]th key (to find the stretch a key would be
//! in, then one positioned read) and a bitmap of the entries spent since, under a byte per
//! 64 entries together. Runs of similar size are merged (dropping what was spent), so
//! there are few of them and a look-up reads at most one stretch of each, newest first.
//!
//! The store is scratch state: it lives in a temporary directory, is never trusted across
//! runs, and is rebuilt from the committed `outputs` and `inputs` tables on resume. That is
//! why its disk writes need no durability.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

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
    /// Dense ids (`btc.outputs.output_id`, `btc.addresses.address_id`; [`NO_ID`] for none).
    pub output_id: u64,
    pub address_id: u64,
}

/// "No address id" in [`Utxo::address_id`].
pub const NO_ID: u64 = u64::MAX;

impl Utxo {
    /// The address id, if the output has an address.
    pub fn address_id(&self) -> Option<u64> {
        (self.address_id != NO_ID).then_some(self.address_id)
    }
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

/// Longest address a record holds: BIP173 caps a bech32 string at 90 characters, and
/// base58 addresses are shorter.
const MAX_ADDRESS: usize = 90;
/// Bytes of a record's fixed part: key (36), value (8), tx_index (8), height (4), kind (1),
/// output id (8), address id (8), address length or 0xff for none (1); the address follows.
const HEADER: usize = 74;
/// Where the address length byte is.
const LEN_AT: usize = HEADER - 1;
/// Bytes of the longest record.
const MAX_RECORD: usize = HEADER + MAX_ADDRESS;
/// Every `STRIDE`th key of a run stays in memory; a look-up reads one stretch of
/// `STRIDE` records.
const STRIDE: usize = 64;
/// Runs are merged when a newer one is at least half the size of the one before it.
const MERGE_RATIO: u64 = 2;

/// The sort key of an outpoint: txid bytes, then vout big-endian.
fn encode_key(k: &OutKey) -> [u8; 36] {
    let mut out = [0u8; 36];
    out[..32].copy_from_slice(&k.0);
    out[32..].copy_from_slice(&k.1.to_be_bytes());
    out
}

/// Encodes a record into `out`; returns its length.
fn encode_record(k: &[u8; 36], u: &Utxo, out: &mut [u8; MAX_RECORD]) -> std::io::Result<usize> {
    out[..36].copy_from_slice(k);
    out[36..44].copy_from_slice(&u.value.to_le_bytes());
    out[44..52].copy_from_slice(&u.tx_index.to_le_bytes());
    out[52..56].copy_from_slice(&u.height.to_le_bytes());
    out[56] = u.kind as u8;
    out[57..65].copy_from_slice(&u.output_id.to_le_bytes());
    out[65..73].copy_from_slice(&u.address_id.to_le_bytes());
    match u.address.as_deref() {
        None => {
            out[LEN_AT] = 0xff;
            Ok(HEADER)
        }
        Some(a) if a.len() <= MAX_ADDRESS => {
            out[LEN_AT] = a.len() as u8;
            out[HEADER..HEADER + a.len()].copy_from_slice(a.as_bytes());
            Ok(HEADER + a.len())
        }
        Some(a) => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("address of {} characters: {a}", a.len()),
        )),
    }
}

/// The length of the record whose fixed part starts `header`.
fn record_len(header: &[u8]) -> usize {
    match header[LEN_AT] {
        0xff => HEADER,
        n => HEADER + usize::from(n),
    }
}

fn decode_record(v: &[u8]) -> Option<Utxo> {
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
    let value = u64::from_le_bytes(v.get(36..44)?.try_into().ok()?);
    let tx_index = u64::from_le_bytes(v.get(44..52)?.try_into().ok()?);
    let height = u32::from_le_bytes(v.get(52..56)?.try_into().ok()?);
    let kind = *KINDS.get(usize::from(*v.get(56)?))?;
    let output_id = u64::from_le_bytes(v.get(57..65)?.try_into().ok()?);
    let address_id = u64::from_le_bytes(v.get(65..73)?.try_into().ok()?);
    let address = match *v.get(LEN_AT)? {
        0xff => None,
        n => Some(
            std::str::from_utf8(v.get(HEADER..HEADER + usize::from(n))?)
                .ok()?
                .into(),
        ),
    };
    Some(Utxo {
        value,
        tx_index,
        height,
        kind,
        address,
        output_id,
        address_id,
    })
}

/// What the in-memory map of a spilling store may take: `budget` less what its runs'
/// indexes hold, never under half the budget or 1 MiB (spilling a small map would only
/// make small runs). Shared with the address store.
pub(crate) fn map_budget(budget: usize, run_index_bytes: usize) -> usize {
    budget
        .saturating_sub(run_index_bytes)
        .max(budget / 2)
        .max(1 << 20)
}

/// One immutable sorted file of spilled entries.
struct Run {
    path: PathBuf,
    file: File,
    len: usize,
    /// Keys of records 0, STRIDE, 2·STRIDE, …
    fences: Vec<[u8; 36]>,
    /// Byte offsets of those records, and the file's length last.
    offsets: Vec<u64>,
    /// Bit i: record i was spent (or superseded) since the run was written.
    spent: Vec<u64>,
    live: u64,
}

impl Run {
    /// Writes `entries` (sorted by key, keys unique) as a run at `path`.
    fn write(
        path: PathBuf,
        entries: impl Iterator<Item = ([u8; 36], Utxo)>,
    ) -> std::io::Result<Self> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut w = BufWriter::with_capacity(1 << 20, &file);
        let mut fences = Vec::new();
        let mut offsets = Vec::new();
        let mut rec = [0u8; MAX_RECORD];
        let (mut len, mut at) = (0usize, 0u64);
        for (k, u) in entries {
            if len.is_multiple_of(STRIDE) {
                fences.push(k);
                offsets.push(at);
            }
            let n = encode_record(&k, &u, &mut rec)?;
            w.write_all(&rec[..n])?;
            len += 1;
            at += n as u64;
        }
        w.flush()?;
        drop(w);
        offsets.push(at);
        Ok(Self {
            path,
            file,
            len,
            fences,
            offsets,
            spent: vec![0; len.div_ceil(64)],
            live: len as u64,
        })
    }

    /// Memory this run keeps.
    fn mem_bytes(&self) -> usize {
        self.fences.capacity() * 36 + self.offsets.capacity() * 8 + self.spent.capacity() * 8
    }

    fn is_spent(&self, i: usize) -> bool {
        self.spent[i / 64] & (1 << (i % 64)) != 0
    }

    fn mark_spent(&mut self, i: usize) {
        self.spent[i / 64] |= 1 << (i % 64);
        self.live -= 1;
    }

    /// Finds `key`, spent or not: its record index, and where its record starts in `buf`
    /// (which then holds the stretch it is in).
    fn find(&self, key: &[u8; 36], buf: &mut Vec<u8>) -> std::io::Result<Option<(usize, usize)>> {
        // The last stretch whose first key is <= key.
        let stretch = match self.fences.partition_point(|f| f <= key) {
            0 => return Ok(None),
            n => n - 1,
        };
        let (from, to) = (self.offsets[stretch], self.offsets[stretch + 1]);
        buf.resize(usize::try_from(to - from).unwrap_or(usize::MAX), 0);
        self.file.read_exact_at(buf, from)?;
        let mut at = 0;
        let mut i = stretch * STRIDE;
        // (A damaged file cannot send the index past the run: it only fails to find.)
        while at + HEADER <= buf.len() && i < self.len {
            if buf[at..at + 36] == key[..] {
                return Ok(Some((i, at)));
            }
            at += record_len(&buf[at..]);
            i += 1;
        }
        Ok(None)
    }

    /// The live records in key order.
    fn live_records(&self) -> impl Iterator<Item = std::io::Result<([u8; 36], Vec<u8>)>> + '_ {
        let mut reader = std::io::BufReader::with_capacity(1 << 20, &self.file);
        let mut pos = 0usize;
        let mut started = false;
        std::iter::from_fn(move || {
            use std::io::{Read, Seek, SeekFrom};
            if !started {
                started = true;
                if let Err(e) = reader.seek(SeekFrom::Start(0)) {
                    return Some(Err(e));
                }
            }
            while pos < self.len {
                let mut rec = vec![0u8; HEADER];
                if let Err(e) = reader.read_exact(&mut rec) {
                    return Some(Err(e));
                }
                rec.resize(record_len(&rec), 0);
                if let Err(e) = reader.read_exact(&mut rec[HEADER..]) {
                    return Some(Err(e));
                }
                pos += 1;
                if self.is_spent(pos - 1) {
                    continue;
                }
                let key: [u8; 36] = rec[..36].try_into().expect("36 bytes");
                return Some(Ok((key, rec)));
            }
            None
        })
    }
}

/// Counters for the run summary and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct UtxoStats {
    pub spills: u64,
    pub spilled_entries: u64,
    pub disk_hits: u64,
    /// Runs merged into bigger ones.
    pub merges: u64,
    pub peak_mem_bytes: usize,
}

/// The spent-output store.
pub struct UtxoStore {
    map: Map,
    /// Sum of [`heap_bytes`] over the map's entries.
    heap_bytes: usize,
    budget: usize,
    dir: Option<tempfile::TempDir>,
    /// Oldest first.
    runs: Vec<Run>,
    next_run: u64,
    disk_entries: u64,
    buf: Vec<u8>,
    pub stats: UtxoStats,
}

impl UtxoStore {
    /// A store keeping at most about `budget_bytes` in memory (run indexes included).
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            map: Map::default(),
            heap_bytes: 0,
            budget: budget_bytes,
            dir: None,
            runs: Vec::new(),
            next_run: 0,
            disk_entries: 0,
            buf: Vec::new(),
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
        self.map_bytes() + self.runs.iter().map(Run::mem_bytes).sum::<usize>()
    }

    fn map_bytes(&self) -> usize {
        self.heap_bytes + self.map.capacity() * SLOT_BYTES
    }

    /// What the hash map may take: the budget less the runs' indexes, but never less than
    /// half the budget (or 1 MiB): spilling a small map would only make small runs. The
    /// indexes take under a byte per spilled entry.
    fn map_budget(&self) -> usize {
        map_budget(self.budget, self.runs.iter().map(Run::mem_bytes).sum())
    }

    fn dir_path(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map_or_else(std::env::temp_dir, |d| d.path().to_path_buf())
    }

    fn err(path: &Path, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Utxo {
            path: path.to_path_buf(),
            source: Box::new(source),
        }
    }

    /// Adds an unspent output.
    pub fn insert(&mut self, key: OutKey, utxo: Utxo) -> Result<()> {
        // An insert into a full table doubles it (and holds both tables while rehashing):
        // spill first if the doubled table would not fit.
        if self.map.len() == self.map.capacity() && !self.map.is_empty() {
            let grown = self.map_bytes() + self.map.capacity() * SLOT_BYTES;
            if grown > self.map_budget() {
                self.spill()?;
            }
        }
        self.heap_bytes += heap_bytes(&utxo);
        if let Some(old) = self.map.insert(key, utxo) {
            // A duplicate txid (BIP30, mainnet blocks 91842/91880): the newer output wins.
            self.heap_bytes -= heap_bytes(&old);
        }
        self.stats.peak_mem_bytes = self.stats.peak_mem_bytes.max(self.mem_bytes());
        if self.map_bytes() > self.map_budget() {
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
        let k = encode_key(key);
        // Newest run first: recent outputs are the likeliest to be spent.
        for r in (0..self.runs.len()).rev() {
            let run = &self.runs[r];
            let Some((i, at)) = run
                .find(&k, &mut self.buf)
                .map_err(|e| Self::err(&run.path, e))?
            else {
                continue;
            };
            if run.is_spent(i) {
                continue;
            }
            let u = decode_record(&self.buf[at..]).ok_or_else(|| {
                Self::err(
                    &run.path,
                    std::io::Error::new(std::io::ErrorKind::InvalidData, "undecodable record"),
                )
            })?;
            self.runs[r].mark_spent(i);
            self.disk_entries -= 1;
            self.stats.disk_hits += 1;
            return Ok(Some(u));
        }
        Ok(None)
    }

    /// Ends a batch of spends (call once per block). Spends take effect at once; this is
    /// where a drained store gives its runs back.
    pub fn flush(&mut self) -> Result<()> {
        if !self.runs.is_empty() && self.disk_entries == 0 {
            for run in self.runs.drain(..) {
                let _ = std::fs::remove_file(&run.path);
            }
        }
        Ok(())
    }

    fn new_run_path(&mut self) -> Result<PathBuf> {
        if self.dir.is_none() {
            let dir = tempfile::Builder::new()
                .prefix("ferret-utxo-")
                .tempdir()
                .map_err(|e| Self::err(&std::env::temp_dir(), e))?;
            self.dir = Some(dir);
        }
        self.next_run += 1;
        Ok(self
            .dir_path()
            .join(format!("run-{:06}.bin", self.next_run)))
    }

    /// Moves the oldest entries (about half the memory) to a new run.
    fn spill(&mut self) -> Result<()> {
        // Heights histogram → the threshold below which entries go to disk.
        let mut by_height: BTreeMap<u32, usize> = BTreeMap::new();
        for u in self.map.values() {
            *by_height.entry(u.height).or_default() += SLOT_BYTES + heap_bytes(u);
        }
        let mut acc = 0;
        let mut threshold = u32::MAX;
        let half = (self.heap_bytes + self.map.len() * SLOT_BYTES) / 2;
        for (&h, &bytes) in &by_height {
            acc += bytes;
            if acc >= half {
                threshold = h;
                break;
            }
        }
        let mut moved: Vec<([u8; 36], Utxo)> = self
            .map
            .extract_if(|_, u| u.height <= threshold)
            .map(|(k, u)| (encode_key(&k), u))
            .collect();
        moved.sort_unstable_by_key(|e| e.0);
        self.map.shrink_to_fit();
        self.heap_bytes -= moved.iter().map(|(_, u)| heap_bytes(u)).sum::<usize>();
        let path = self.new_run_path()?;
        let n = moved.len() as u64;
        let run = Run::write(path.clone(), moved.into_iter()).map_err(|e| Self::err(&path, e))?;
        self.runs.push(run);
        self.disk_entries += n;
        self.stats.spills += 1;
        self.stats.spilled_entries += n;
        self.merge_runs()?;
        tracing::debug!(
            moved = n,
            threshold,
            in_memory = self.map.len(),
            on_disk = self.disk_entries,
            runs = self.runs.len(),
            "spilled spent-output store"
        );
        Ok(())
    }

    /// Merges the two newest runs while the newer holds at least 1/[`MERGE_RATIO`] of the
    /// older's live entries: sizes grow geometrically, so there are O(log n) runs.
    fn merge_runs(&mut self) -> Result<()> {
        while self.runs.len() >= 2 {
            let n = self.runs.len();
            if self.runs[n - 1].live * MERGE_RATIO < self.runs[n - 2].live {
                break;
            }
            let newer = self.runs.pop().expect("two runs");
            let older = self.runs.pop().expect("two runs");
            let path = self.new_run_path()?;
            let merged =
                merge_two(&older, &newer, path.clone()).map_err(|e| Self::err(&path, e))?;
            for r in [older, newer] {
                let _ = std::fs::remove_file(&r.path);
            }
            self.disk_entries = self.runs.iter().map(|r| r.live).sum::<u64>() + merged.live;
            self.runs.push(merged);
            self.stats.merges += 1;
        }
        Ok(())
    }

    /// Reads one entry without removing it (tests and diagnostics).
    pub fn get(&self, key: &OutKey) -> Result<Option<Utxo>> {
        if let Some(u) = self.map.get(key) {
            return Ok(Some(u.clone()));
        }
        let k = encode_key(key);
        let mut buf = Vec::new();
        for run in self.runs.iter().rev() {
            if let Some((i, at)) = run
                .find(&k, &mut buf)
                .map_err(|e| Self::err(&run.path, e))?
            {
                if run.is_spent(i) {
                    continue;
                }
                return Ok(decode_record(&buf[at..]));
            }
        }
        Ok(None)
    }
}

/// The live records of two runs as one run; on equal keys (BIP30 duplicates) the newer wins.
fn merge_two(older: &Run, newer: &Run, path: PathBuf) -> std::io::Result<Run> {
    let bad = |e: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string());
    let mut a = older.live_records().peekable();
    let mut b = newer.live_records().peekable();
    let mut failed = None;
    let merged = std::iter::from_fn(|| {
        let next = match (a.peek(), b.peek()) {
            (None, None) => return None,
            (Some(Err(_)), _) => a.next(),
            (_, Some(Err(_))) => b.next(),
            (Some(Ok((ka, _))), Some(Ok((kb, _)))) => match ka.cmp(kb) {
                std::cmp::Ordering::Less => a.next(),
                std::cmp::Ordering::Greater => b.next(),
                std::cmp::Ordering::Equal => {
                    a.next();
                    b.next()
                }
            },
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
        };
        match next? {
            Ok((k, rec)) => match decode_record(&rec) {
                Some(u) => Some((k, u)),
                None => {
                    failed = Some(bad("undecodable record"));
                    None
                }
            },
            Err(e) => {
                failed = Some(e);
                None
            }
        }
    });
    let run = Run::write(path, merged)?;
    match failed {
        Some(e) => Err(e),
        None => Ok(run),
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
            output_id: u64::from(i) * 3 + 1,
            address_id: if i.is_multiple_of(3) {
                NO_ID
            } else {
                u64::from(i) / 2
            },
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
        // The map keeps to its 1 MiB floor; the runs' indexes take under a byte per entry.
        assert!(s.mem_bytes() <= (1 << 20) + 20_000, "{}", s.mem_bytes());
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

    /// Random inserts and spends against a plain map, through many spills and merges.
    #[test]
    fn matches_a_plain_map_through_spills_and_merges() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut s = UtxoStore::new(256 << 10);
        let mut model: HashMap<OutKey, Utxo> = HashMap::new();
        let mut live: Vec<OutKey> = Vec::new();
        let longest = "bcrt1p".to_string() + &"q".repeat(MAX_ADDRESS - 6);
        for step in 0..200_000u32 {
            let r = rnd();
            if r % 10 < 6 || live.is_empty() {
                let mut txid = [0u8; 32];
                for c in txid.chunks_mut(8) {
                    c.copy_from_slice(&rnd().to_le_bytes());
                }
                let k = (txid, (r >> 8) as u32 % 3);
                let u = Utxo {
                    value: r >> 20,
                    tx_index: u64::from(step),
                    height: step / 100,
                    kind: if r % 7 == 0 {
                        ScriptKind::Multisig
                    } else {
                        ScriptKind::P2tr
                    },
                    address: match r % 7 {
                        0 => None,
                        1 => Some(longest.clone().into()),
                        _ => Some(format!("bcrt1p{:x}", r >> 4).into()),
                    },
                    output_id: r >> 3,
                    address_id: if r % 7 == 0 { NO_ID } else { r >> 5 },
                };
                s.insert(k, u.clone()).expect("insert");
                model.insert(k, u);
                live.push(k);
            } else if r % 10 < 9 {
                let k = live.swap_remove((r >> 4) as usize % live.len());
                let want = model.remove(&k);
                assert_eq!(s.spend(&k).expect("spend"), want, "step {step}");
            } else {
                // An outpoint the store never had.
                let mut txid = [0u8; 32];
                txid[..8].copy_from_slice(&rnd().to_le_bytes());
                assert_eq!(s.spend(&(txid, 9)).expect("spend"), None);
            }
            if step % 500 == 0 {
                s.flush().expect("flush");
            }
        }
        assert!(s.stats.spills >= 5, "{:?}", s.stats);
        assert!(s.stats.merges >= 1, "{:?}", s.stats);
        assert!(s.stats.disk_hits > 1000, "{:?}", s.stats);
        assert_eq!(s.len(), model.len() as u64);
        for (k, u) in &model {
            assert_eq!(s.get(k).expect("get").as_ref(), Some(u));
        }
        for (k, u) in model {
            assert_eq!(s.spend(&k).expect("spend"), Some(u));
        }
        s.flush().expect("flush");
        assert!(s.is_empty());
        assert!(s.runs.is_empty(), "a drained store gives its runs back");
    }

    #[test]
    fn an_address_too_long_for_a_record_is_an_error_not_a_truncation() {
        let mut s = UtxoStore::new(1);
        let mut u = utxo(1);
        u.address = Some("x".repeat(MAX_ADDRESS + 1).into());
        let mut res = Ok(());
        for i in 0..20_000 {
            res = s.insert(key(i), if i == 0 { u.clone() } else { utxo(i) });
            if res.is_err() {
                break;
            }
        }
        let err = res.expect_err("spilling it fails").to_string();
        assert!(err.contains("address of 91 characters"), "{err}");
    }
}
