//! Fixed-size records on scratch files, for the out-of-core account kernels: buffered
//! appends to one file per partition, a reader, and an external sort (sorted runs within
//! a memory bound, then k-way merges) ordering records by their bytes, so a record's
//! leading fields are its key.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{Error, Result};

/// Buffer of one open reader or writer.
const IO_BUF: usize = 64 << 10;

pub(super) use crate::error::io_err;

/// Reads records of `N` bytes in order; a missing file reads as empty.
pub(super) struct Records<const N: usize> {
    r: Option<BufReader<File>>,
    path: PathBuf,
    next: Option<[u8; N]>,
}

impl<const N: usize> Records<N> {
    pub(super) fn open(path: &Path) -> Result<Self> {
        let r = match File::open(path) {
            Ok(f) => Some(BufReader::with_capacity(IO_BUF, f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(path, e)),
        };
        let mut me = Self {
            r,
            path: path.to_path_buf(),
            next: None,
        };
        me.advance()?;
        Ok(me)
    }

    fn advance(&mut self) -> Result<()> {
        self.next = None;
        let Some(r) = self.r.as_mut() else {
            return Ok(());
        };
        let mut buf = [0u8; N];
        let mut got = 0;
        while got < N {
            match r.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(&self.path, e)),
            }
        }
        if got == N {
            self.next = Some(buf);
        } else if got != 0 {
            return Err(Error::Write {
                path: self.path.display().to_string(),
                reason: format!("scratch file ends inside a record ({got} of {N} bytes): damaged"),
            });
        }
        Ok(())
    }

    /// The next record, without taking it.
    pub(super) fn peek(&self) -> Option<&[u8; N]> {
        self.next.as_ref()
    }

    /// Takes the next record.
    pub(super) fn pop(&mut self) -> Result<Option<[u8; N]>> {
        let r = self.next.take();
        if r.is_some() {
            self.advance()?;
        }
        Ok(r)
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

/// Appends records to one file per partition, through buffers of at most `cap` bytes
/// each (a full buffer is written out at once), safe to share between threads.
pub(super) struct Spill {
    paths: Vec<PathBuf>,
    bufs: Vec<Mutex<Vec<u8>>>,
    cap: usize,
}

impl Spill {
    pub(super) fn new(paths: Vec<PathBuf>, cap: usize) -> Self {
        let bufs = paths.iter().map(|_| Mutex::new(Vec::new())).collect();
        Self { paths, bufs, cap }
    }

    pub(super) fn push(&self, part: usize, rec: &[u8]) -> Result<()> {
        let mut b = self.bufs[part].lock().unwrap_or_else(|p| p.into_inner());
        if b.capacity() == 0 {
            // At most `cap` plus one record, allocated once.
            b.reserve_exact(self.cap + rec.len());
        }
        b.extend_from_slice(rec);
        if b.len() >= self.cap {
            append(&self.paths[part], &b)?;
            b.clear();
        }
        Ok(())
    }

    /// Writes out every buffer.
    pub(super) fn flush(&self) -> Result<()> {
        for (p, b) in self.paths.iter().zip(&self.bufs) {
            let mut b = b.lock().unwrap_or_else(|p| p.into_inner());
            if !b.is_empty() {
                append(p, &b)?;
                b.clear();
            }
        }
        Ok(())
    }
}

fn append(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    f.write_all(bytes).map_err(|e| io_err(path, e))
}

/// Removes `path` if it exists.
pub(super) fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Writes sorted records, keeping only the first of each run of equal `dedup`-byte
/// prefixes when asked.
struct SortedOut<const N: usize> {
    w: BufWriter<File>,
    path: PathBuf,
    dedup: Option<usize>,
    last: Option<[u8; N]>,
    written: u64,
}

impl<const N: usize> SortedOut<N> {
    fn create(path: &Path, dedup: Option<usize>) -> Result<Self> {
        let f = File::create(path).map_err(|e| io_err(path, e))?;
        Ok(Self {
            w: BufWriter::with_capacity(IO_BUF, f),
            path: path.to_path_buf(),
            dedup,
            last: None,
            written: 0,
        })
    }

    fn put(&mut self, rec: &[u8; N]) -> Result<()> {
        if let (Some(k), Some(last)) = (self.dedup, &self.last)
            && last[..k] == rec[..k]
        {
            return Ok(());
        }
        self.w.write_all(rec).map_err(|e| io_err(&self.path, e))?;
        self.last = Some(*rec);
        self.written += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<u64> {
        self.w.flush().map_err(|e| io_err(&self.path, e))?;
        Ok(self.written)
    }
}

/// Sorts the records of `input` by their bytes into `output` (replacing it), holding at
/// most about `mem` bytes of records at once, `map` applied to each record first; with
/// `dedup`, only the first record of each run of equal `dedup`-byte prefixes is kept.
/// A missing input sorts to an empty output. Returns the records written; removes the
/// input and its runs.
pub(super) fn sort_file<const N: usize>(
    input: &Path,
    output: &Path,
    dedup: Option<usize>,
    mem: usize,
    map: &(dyn Fn(&mut [u8; N]) + Sync),
) -> Result<u64> {
    let chunk = (mem / N).max(1024);
    let mut reader = Records::<N>::open(input)?;
    let mut runs: Vec<PathBuf> = Vec::new();
    // Sized once (never past the input), so growing by doubling never overshoots.
    let len = match std::fs::metadata(input) {
        Ok(m) => m.len() / N as u64,
        Err(_) => 0,
    };
    let mut buf: Vec<[u8; N]> = Vec::with_capacity(chunk.min(len as usize));
    loop {
        buf.clear();
        while buf.len() < chunk {
            let Some(mut r) = reader.pop()? else { break };
            map(&mut r);
            buf.push(r);
        }
        let last = reader.peek().is_none();
        buf.sort_unstable();
        if last && runs.is_empty() {
            // Everything fitted: no runs.
            let mut out = SortedOut::<N>::create(output, dedup)?;
            for r in &buf {
                out.put(r)?;
            }
            drop(reader);
            remove(input)?;
            return out.finish();
        }
        if !buf.is_empty() {
            let run = run_path(output, runs.len());
            let mut out = SortedOut::<N>::create(&run, None)?;
            for r in &buf {
                out.put(r)?;
            }
            out.finish()?;
            runs.push(run);
        }
        if last {
            break;
        }
    }
    drop(buf);
    drop(reader);
    remove(input)?;
    // Merge at most `fan` runs at a time, each through a reader's buffer.
    let fan = (mem / IO_BUF).max(2);
    let mut level = 0usize;
    while runs.len() > fan {
        let mut next = Vec::new();
        for (i, group) in runs.chunks(fan).enumerate() {
            let path = output.with_extension(format!("m{level}-{i}"));
            merge::<N>(group, &path, None)?;
            next.push(path);
        }
        runs = next;
        level += 1;
    }
    merge::<N>(&runs, output, dedup)
}

fn run_path(output: &Path, i: usize) -> PathBuf {
    output.with_extension(format!("run{i}"))
}

/// Merges sorted runs into `output`, removing them.
fn merge<const N: usize>(runs: &[PathBuf], output: &Path, dedup: Option<usize>) -> Result<u64> {
    let mut readers = runs
        .iter()
        .map(|p| Records::<N>::open(p))
        .collect::<Result<Vec<_>>>()?;
    let mut heap = BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some(x) = r.pop()? {
            heap.push(Reverse((x, i)));
        }
    }
    let mut out = SortedOut::<N>::create(output, dedup)?;
    while let Some(Reverse((x, i))) = heap.pop() {
        out.put(&x)?;
        if let Some(y) = readers[i].pop()? {
            heap.push(Reverse((y, i)));
        }
    }
    let n = out.finish()?;
    drop(readers);
    for p in runs {
        remove(p)?;
    }
    Ok(n)
}

/// Whether two record files hold the same bytes (a missing file is empty).
pub(super) fn same_files(a: &Path, b: &Path) -> Result<bool> {
    let len = |p: &Path| match std::fs::metadata(p) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_err(p, e)),
    };
    let (la, lb) = (len(a)?, len(b)?);
    if la != lb {
        return Ok(false);
    }
    if la == 0 {
        return Ok(true);
    }
    let mut ra = BufReader::with_capacity(IO_BUF, File::open(a).map_err(|e| io_err(a, e))?);
    let mut rb = BufReader::with_capacity(IO_BUF, File::open(b).map_err(|e| io_err(b, e))?);
    let mut xa = vec![0u8; IO_BUF];
    let mut xb = vec![0u8; IO_BUF];
    let mut left = la;
    while left > 0 {
        let n = left.min(IO_BUF as u64) as usize;
        ra.read_exact(&mut xa[..n]).map_err(|e| io_err(a, e))?;
        rb.read_exact(&mut xb[..n]).map_err(|e| io_err(b, e))?;
        if xa[..n] != xb[..n] {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_sort_equals_an_in_memory_sort() {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("in");
        let output = dir.path().join("out");
        // 20 000 records of 8 bytes, sorted with room for 1 024 at a time (20 runs) and
        // merged 2 at a time (mem below two reader buffers).
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut recs: Vec<[u8; 8]> = Vec::new();
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Few distinct first bytes, so dedup on the first byte has work to do.
            let mut r = (state % 50_000).to_be_bytes();
            r[0] = (state >> 60) as u8;
            recs.push(r);
        }
        let bytes: Vec<u8> = recs.iter().flatten().copied().collect();
        for (mem, dedup) in [
            (0usize, None),
            (1 << 20, None),
            (0, Some(1)),
            (1 << 30, Some(1)),
        ] {
            std::fs::write(&input, &bytes).expect("write");
            let n = sort_file::<8>(&input, &output, dedup, mem, &|_| {}).expect("sort");
            let got = std::fs::read(&output).expect("read");
            let mut want = recs.clone();
            want.sort_unstable();
            if dedup.is_some() {
                want.dedup_by_key(|r| r[0]);
            }
            let want: Vec<u8> = want.iter().flatten().copied().collect();
            assert_eq!(n as usize * 8, want.len());
            assert!(got == want, "mem {mem} dedup {dedup:?}");
            assert!(!input.exists());
            let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
            assert_eq!(left.len(), 1, "runs left behind: {left:?}");
        }
        // A torn record is an error, never a shorter file.
        std::fs::write(&input, [1u8; 12]).expect("write");
        let e = sort_file::<8>(&input, &output, None, 0, &|_| {}).expect_err("torn");
        assert!(e.to_string().contains("ends inside a record"), "{e}");
    }
}
