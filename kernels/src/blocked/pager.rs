//! A keyed cache of immutable values within a byte budget: the least recently used values
//! beyond it go to files in a scratch directory and come back on the next `get`.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crate::Result;

/// A value the pager can write out and read back.
pub(crate) trait Spill: Sized {
    fn mem_bytes(&self) -> usize;
    fn write_to(&self, w: &mut dyn Write) -> std::io::Result<()>;
    fn read_from(r: &mut dyn Read) -> std::io::Result<Self>;
}

type Key = (u32, u32);

struct Entry<T> {
    value: Option<Arc<T>>,
    on_disk: bool,
    used: u64,
}

pub(crate) struct Pager<T> {
    dir: PathBuf,
    budget: usize,
    entries: HashMap<Key, Entry<T>>,
    /// In-memory entries by last use, oldest first.
    lru: BTreeMap<u64, Key>,
    bytes: usize,
    clock: u64,
    pub spilled: u64,
    pub reloaded: u64,
    _keep: Option<tempfile::TempDir>,
}

use crate::error::io_err;

impl<T: Spill> Pager<T> {
    pub(crate) fn new(dir: PathBuf, budget: usize) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        Ok(Self {
            dir,
            budget,
            entries: HashMap::new(),
            lru: BTreeMap::new(),
            bytes: 0,
            clock: 0,
            spilled: 0,
            reloaded: 0,
            _keep: None,
        })
    }

    /// Keeps `dir` (which holds this pager's directory) alive as long as the pager.
    pub(crate) fn keep_dir(&mut self, dir: tempfile::TempDir) {
        self._keep = Some(dir);
    }

    pub(crate) fn mem_bytes(&self) -> usize {
        self.bytes
    }

    fn path(&self, k: Key) -> PathBuf {
        self.dir.join(format!("{}-{}.bin", k.0, k.1))
    }

    pub(crate) fn get(&mut self, k: Key) -> Result<Option<Arc<T>>> {
        self.clock += 1;
        let clock = self.clock;
        let Some(e) = self.entries.get_mut(&k) else {
            return Ok(None);
        };
        if let Some(v) = &e.value {
            self.lru.remove(&e.used);
            self.lru.insert(clock, k);
            e.used = clock;
            return Ok(Some(Arc::clone(v)));
        }
        e.used = clock;
        let path = self.path(k);
        let f = std::fs::File::open(&path).map_err(|e| io_err(&path, e))?;
        let v = T::read_from(&mut std::io::BufReader::with_capacity(1 << 20, f))
            .map_err(|e| io_err(&path, e))?;
        let v = Arc::new(v);
        self.bytes += v.mem_bytes();
        self.reloaded += 1;
        if let Some(e) = self.entries.get_mut(&k) {
            e.value = Some(Arc::clone(&v));
        }
        self.lru.insert(clock, k);
        self.evict()?;
        Ok(Some(v))
    }

    pub(crate) fn put(&mut self, k: Key, v: Arc<T>) -> Result<()> {
        self.remove(k);
        self.clock += 1;
        self.bytes += v.mem_bytes();
        self.entries.insert(
            k,
            Entry {
                value: Some(v),
                on_disk: false,
                used: self.clock,
            },
        );
        self.lru.insert(self.clock, k);
        self.evict()
    }

    pub(crate) fn remove(&mut self, k: Key) {
        if let Some(e) = self.entries.remove(&k) {
            if let Some(v) = e.value {
                self.bytes -= v.mem_bytes();
                self.lru.remove(&e.used);
            }
            if e.on_disk {
                let _ = std::fs::remove_file(self.path(k));
            }
        }
    }

    /// Writes out the least recently used values nobody else holds until within budget.
    fn evict(&mut self) -> Result<()> {
        if self.bytes <= self.budget {
            return Ok(());
        }
        // Oldest first, past the values someone holds (those stay until released).
        let mut out = Vec::new();
        let mut freed = 0usize;
        for (&used, &k) in &self.lru {
            if self.bytes - freed <= self.budget {
                break;
            }
            let e = &self.entries[&k];
            let v = e.value.as_ref().expect("the lru lists values in memory");
            if Arc::strong_count(v) == 1 {
                freed += v.mem_bytes();
                out.push((used, k));
            }
        }
        for (used, k) in out {
            self.lru.remove(&used);
            let path = self.path(k);
            let e = self.entries.get_mut(&k).expect("listed above");
            let v = e.value.take().expect("listed above");
            if !e.on_disk {
                let f = std::fs::File::create(&path).map_err(|e| io_err(&path, e))?;
                let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
                v.write_to(&mut w)
                    .and_then(|()| w.flush())
                    .map_err(|e| io_err(&path, e))?;
                e.on_disk = true;
                self.spilled += 1;
            }
            self.bytes -= v.mem_bytes();
        }
        Ok(())
    }
}

fn write_u32s(w: &mut dyn Write, v: &[u32]) -> std::io::Result<()> {
    w.write_all(&(v.len() as u64).to_le_bytes())?;
    w.write_all(bytemuck::cast_slice(v))
}

fn read_u32s(r: &mut dyn Read) -> std::io::Result<Vec<u32>> {
    let mut n = [0u8; 8];
    r.read_exact(&mut n)?;
    let n = usize::try_from(u64::from_le_bytes(n))
        .map_err(|_| std::io::Error::other("length beyond usize"))?;
    let mut v = vec![0u32; n];
    r.read_exact(bytemuck::cast_slice_mut(&mut v))?;
    Ok(v)
}

fn write_f32s(w: &mut dyn Write, v: &[f32]) -> std::io::Result<()> {
    write_u32s(w, bytemuck::cast_slice(v))
}

fn read_f32s(r: &mut dyn Read) -> std::io::Result<Vec<f32>> {
    Ok(read_u32s(r)?.into_iter().map(f32::from_bits).collect())
}

impl Spill for super::Chunk {
    fn mem_bytes(&self) -> usize {
        self.bytes()
    }
    fn write_to(&self, w: &mut dyn Write) -> std::io::Result<()> {
        write_u32s(w, &self.dst)?;
        write_u32s(w, &self.src)?;
        write_f32s(w, &self.weight)?;
        write_f32s(w, &self.gate)
    }
    fn read_from(r: &mut dyn Read) -> std::io::Result<Self> {
        Ok(Self {
            dst: read_u32s(r)?,
            src: read_u32s(r)?,
            weight: read_f32s(r)?,
            gate: read_f32s(r)?,
        })
    }
}

impl Spill for super::BlockState {
    fn mem_bytes(&self) -> usize {
        self.bytes()
    }
    fn write_to(&self, w: &mut dyn Write) -> std::io::Result<()> {
        write_f32s(w, &self.fraction)?;
        write_u32s(w, &self.hop)
    }
    fn read_from(r: &mut dyn Read) -> std::io::Result<Self> {
        Ok(Self {
            fraction: read_f32s(r)?,
            hop: read_u32s(r)?,
        })
    }
}
