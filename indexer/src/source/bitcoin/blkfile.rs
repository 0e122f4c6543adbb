//! Reading `blk*.dat` files as Bitcoin Core writes them.
//!
//! A file is a sequence of records `magic (4) | length (4, LE) | block`. Core preallocates
//! files, so a file may end in zero bytes; Core ≥ 28 XORs every byte with
//! `key[offset % 8]` where the 8-byte key is in `xor.dat` (an all-zero key means none).
//! Blocks are stored in arrival order, not height order, and stale blocks are kept.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bitcoin::block::Header;
use bitcoin::consensus::Decodable;
use bitcoin::p2p::Magic;
use bitcoin::{Block, BlockHash, Network};

use crate::{Error, Result};

/// Consensus limit on a serialized block (Core's MAX_BLOCK_SERIALIZED_SIZE).
pub const MAX_BLOCK_SERIALIZED_SIZE: u64 = 4_000_000;

/// Where one block record lies.
#[derive(Clone, Debug)]
pub struct BlockLocation {
    /// Index into [`BlkDir::files`].
    pub file: u32,
    /// Offset of the record's magic in the file.
    pub offset: u64,
    /// Length of the serialized block.
    pub len: u32,
    /// The decoded header.
    pub header: Header,
    /// The block hash.
    pub hash: BlockHash,
}

/// What earlier scans of a blocks directory found, for [`BlkDir::scan_with`]: following a
/// node's growing directory rescans only what can have changed.
#[derive(Debug, Default)]
pub struct ScanCache {
    files: HashMap<PathBuf, ScannedFile>,
    /// The newest file of the last scan.
    newest: Option<PathBuf>,
}

#[derive(Debug)]
struct ScannedFile {
    len: u64,
    /// Where the scan stopped: the end of the last whole record.
    end: u64,
    locs: Vec<BlockLocation>,
}

/// A Bitcoin Core blocks directory.
#[derive(Debug)]
pub struct BlkDir {
    dir: PathBuf,
    files: Vec<PathBuf>,
    handles: Vec<File>,
    key: [u8; 8],
    network: Network,
}

fn hex4(b: [u8; 4]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl BlkDir {
    /// Opens a blocks directory. The network comes from the first record's magic unless
    /// given (custom signets have their own magic: pass the network then).
    pub fn open(dir: &Path, network: Option<Network>) -> Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_blk = name.len() == 12
                && name.starts_with("blk")
                && name.ends_with(".dat")
                && name[3..8].bytes().all(|b| b.is_ascii_digit());
            if is_blk {
                files.push(entry.path());
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(Error::NoBlockFiles {
                dir: dir.to_path_buf(),
            });
        }
        let xor_path = dir.join("xor.dat");
        let key = match std::fs::read(&xor_path) {
            Ok(bytes) => <[u8; 8]>::try_from(bytes.as_slice()).map_err(|_| Error::BadXorKey {
                path: xor_path.clone(),
                len: bytes.len() as u64,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => [0; 8],
            Err(e) => return Err(Error::io(&xor_path, e)),
        };
        let handles = files
            .iter()
            .map(|p| File::open(p).map_err(|e| Error::io(p, e)))
            .collect::<Result<Vec<_>>>()?;
        let mut this = Self {
            dir: dir.to_path_buf(),
            files,
            handles,
            key,
            network: network.unwrap_or(Network::Bitcoin),
        };
        if network.is_none() {
            let mut magic = [0u8; 4];
            let available = this.file_len(0)?;
            if available < 4 {
                return Err(Error::Truncated {
                    file: this.files[0].clone(),
                    offset: 0,
                    needed: 4,
                    available,
                });
            }
            this.read_at(0, 0, &mut magic)?;
            this.network = Network::from_magic(Magic::from_bytes(magic)).ok_or_else(|| {
                Error::UnknownMagic {
                    file: this.files[0].clone(),
                    offset: 0,
                    found: hex4(magic),
                    hint: this.magic_hint(),
                }
            })?;
        }
        Ok(this)
    }

    fn magic_hint(&self) -> &'static str {
        if self.key != [0; 8] {
            " (is xor.dat the key these files were written with?)"
        } else {
            " (obfuscated files without their xor.dat, or not a blocks dir?)"
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The network of the blocks.
    pub fn network(&self) -> Network {
        self.network
    }

    /// The blk files, in name order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Whether the files are obfuscated.
    pub fn is_obfuscated(&self) -> bool {
        self.key != [0; 8]
    }

    fn file_len(&self, file: usize) -> Result<u64> {
        self.handles[file]
            .metadata()
            .map(|m| m.len())
            .map_err(|e| Error::io(&self.files[file], e))
    }

    /// Reads `buf.len()` bytes at `offset` of file `file` as stored (not de-obfuscated).
    fn read_raw_at(&self, file: usize, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.handles[file]
            .read_exact_at(buf, offset)
            .map_err(|e| Error::io(&self.files[file], e))
    }

    /// Reads and de-obfuscates `buf.len()` bytes at `offset` of file `file`.
    fn read_at(&self, file: usize, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_raw_at(file, offset, buf)?;
        if self.key != [0; 8] {
            for (i, b) in buf.iter_mut().enumerate() {
                // Core XORs with key[(position in file) % 8].
                *b ^= self.key[((offset + i as u64) % 8) as usize];
            }
        }
        Ok(())
    }

    /// Scans every file and returns the location and header of every block record, in
    /// storage order. Reads only the 88 bytes of record and block headers per block.
    ///
    /// Core preallocates the current file (`FlatFileSeq::Allocate`, in 16 MiB chunks) with
    /// raw zeros that are never obfuscated: zeros as stored end a file's records, whatever
    /// the key. The newest file may end in a record the node is still writing (cut short,
    /// or its header not yet written): the scan stops before it, and the run indexes up to
    /// the last whole block; in any older file that is corruption.
    pub fn scan(&self) -> Result<Vec<BlockLocation>> {
        let mut out = Vec::new();
        for file in 0..self.files.len() {
            self.scan_file(file, 0, &mut out)?;
        }
        Ok(out)
    }

    /// [`BlkDir::scan`] for a directory scanned before with the same `cache`: a file
    /// older than the newest of the last scan whose length has not changed is not read
    /// again (the node only appends to its newest file, inside space it preallocated, so
    /// that one and any newer one are scanned again from where the last scan stopped). A
    /// file that shrank below what was scanned is scanned again from its start.
    pub fn scan_with(&self, cache: &mut ScanCache) -> Result<Vec<BlockLocation>> {
        let mut out = Vec::new();
        let mut next = HashMap::with_capacity(self.files.len());
        for file in 0..self.files.len() {
            let path = &self.files[file];
            let len = self.file_len(file)?;
            let index = u32::try_from(file).expect("fewer than 2^32 blk files");
            let older = cache.newest.as_ref().is_some_and(|n| path < n);
            let (start, mut locs) = match cache.files.remove(path) {
                Some(c) if older && c.len == len => (None, c.locs),
                Some(c) if len >= c.end => (Some(c.end), c.locs),
                _ => (Some(0), Vec::new()),
            };
            for l in &mut locs {
                l.file = index;
            }
            let end = match start {
                // Unchanged: what the last scan found, and where it stopped.
                None => locs.last().map_or(0, |l| l.offset + 8 + u64::from(l.len)),
                Some(from) => {
                    if from == 0 {
                        locs.clear();
                    }
                    self.scan_file(file, from, &mut locs)?
                }
            };
            out.extend_from_slice(&locs);
            next.insert(path.clone(), ScannedFile { len, end, locs });
        }
        cache.files = next;
        cache.newest = self.files.last().cloned();
        Ok(out)
    }

    /// Scans file `file` from `offset` (a record boundary), appending its records to
    /// `out`; returns where the scan stopped (the end of the last whole record).
    fn scan_file(&self, file: usize, mut offset: u64, out: &mut Vec<BlockLocation>) -> Result<u64> {
        let expected = self.network.magic().to_bytes();
        let newest = self.files.len().saturating_sub(1);
        let path = &self.files[file];
        let len = self.file_len(file)?;
        let growing = file == newest;
        while offset < len {
            let available = len - offset;
            let mut head = [0u8; 8];
            let n = available.min(8) as usize;
            self.read_raw_at(file, offset, &mut head[..n])?;
            if head[..4.min(n)].iter().all(|&b| b == 0) {
                self.padding_or_in_progress(file, offset, len, false, growing)?;
                break;
            }
            for (i, b) in head[..n].iter_mut().enumerate() {
                *b ^= self.key[((offset + i as u64) % 8) as usize];
            }
            if head[..4.min(n)].iter().all(|&b| b == 0) {
                // Padding written through the key (not Core's way, but harmless).
                self.padding_or_in_progress(file, offset, len, true, growing)?;
                break;
            }
            if n < 8 {
                if growing {
                    self.warn_partial(file, offset, available);
                    break;
                }
                return Err(Error::Truncated {
                    file: path.clone(),
                    offset,
                    needed: 8,
                    available,
                });
            }
            let magic: [u8; 4] = head[..4].try_into().expect("4 bytes");
            if magic != expected {
                return Err(Error::BadMagic {
                    file: path.clone(),
                    offset,
                    expected: hex4(expected),
                    found: hex4(magic),
                    hint: self.magic_hint(),
                });
            }
            let rec_len = u64::from(u32::from_le_bytes(head[4..].try_into().expect("4 bytes")));
            if !(80..=MAX_BLOCK_SERIALIZED_SIZE).contains(&rec_len) {
                return Err(Error::BadLength {
                    file: path.clone(),
                    offset,
                    len: rec_len,
                    max: MAX_BLOCK_SERIALIZED_SIZE,
                    hint: if self.is_obfuscated() {
                        " (is xor.dat the key these files were written with?)"
                    } else {
                        ""
                    },
                });
            }
            if rec_len > available - 8 {
                if growing {
                    self.warn_partial(file, offset, available);
                    break;
                }
                return Err(Error::Truncated {
                    file: path.clone(),
                    offset,
                    needed: rec_len + 8,
                    available,
                });
            }
            let mut raw_hdr = [0u8; 80];
            self.read_raw_at(file, offset + 8, &mut raw_hdr)?;
            if growing && raw_hdr.iter().all(|&b| b == 0) {
                // The record's length is written, its block not yet.
                self.warn_partial(file, offset, available);
                break;
            }
            let mut hdr = raw_hdr;
            for (i, b) in hdr.iter_mut().enumerate() {
                *b ^= self.key[((offset + 8 + i as u64) % 8) as usize];
            }
            let header =
                Header::consensus_decode(&mut &hdr[..]).map_err(|source| Error::Decode {
                    file: path.clone(),
                    offset,
                    what: "header".into(),
                    source,
                })?;
            out.push(BlockLocation {
                file: u32::try_from(file).expect("fewer than 2^32 blk files"),
                offset,
                len: u32::try_from(rec_len).expect("bounded by MAX_BLOCK_SERIALIZED_SIZE"),
                hash: header.block_hash(),
                header,
            });
            offset += 8 + rec_len;
        }
        Ok(offset)
    }

    fn warn_partial(&self, file: usize, offset: u64, available: u64) {
        tracing::warn!(
            file = %self.files[file].display(),
            offset,
            available,
            "the newest blk file ends in a partial record (the node is still writing it): indexing up to the last whole block"
        );
    }

    /// [`BlkDir::check_padding`], except that in the newest file (`growing`) bytes after the
    /// zeros are the node writing its next block while we read (its record begins where
    /// the zeros did): the scan stops there and the next one reads it. In any older file
    /// they are corruption.
    fn padding_or_in_progress(
        &self,
        file: usize,
        start: u64,
        len: u64,
        keyed: bool,
        growing: bool,
    ) -> Result<()> {
        match self.check_padding(file, start, len, keyed) {
            Err(Error::GarbageAfterPadding { .. }) if growing => {
                self.warn_partial(file, start, len - start);
                Ok(())
            }
            r => r,
        }
    }

    /// Zero padding (as stored, or through the key when `keyed`) must run to the end of the
    /// file; anything else is corruption.
    fn check_padding(&self, file: usize, start: u64, len: u64, keyed: bool) -> Result<()> {
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = start;
        while offset < len {
            let n = (len - offset).min(buf.len() as u64) as usize;
            if keyed {
                self.read_at(file, offset, &mut buf[..n])?;
            } else {
                self.read_raw_at(file, offset, &mut buf[..n])?;
            }
            if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
                return Err(Error::GarbageAfterPadding {
                    file: self.files[file].clone(),
                    offset: offset + i as u64,
                });
            }
            offset += n as u64;
        }
        Ok(())
    }

    /// Reads and decodes the whole block at `loc`.
    pub fn read_block(&self, loc: &BlockLocation) -> Result<Block> {
        self.read_block_with(loc, &mut Vec::new())
    }

    /// [`BlkDir::read_block`] reusing `buf` for the raw bytes (no fresh zeroed allocation
    /// per block on the ingest path).
    pub fn read_block_with(&self, loc: &BlockLocation, buf: &mut Vec<u8>) -> Result<Block> {
        let file = loc.file as usize;
        buf.resize(loc.len as usize, 0);
        self.read_at(file, loc.offset + 8, buf)?;
        let mut cursor = &buf[..];
        let block = Block::consensus_decode(&mut cursor).map_err(|source| Error::Decode {
            file: self.files[file].clone(),
            offset: loc.offset,
            what: loc.hash.to_string(),
            source,
        })?;
        if !cursor.is_empty() {
            return Err(Error::TrailingBytes {
                file: self.files[file].clone(),
                offset: loc.offset,
                len: u64::from(loc.len),
                extra: cursor.len() as u64,
            });
        }
        Ok(block)
    }

    /// The path of file `file`.
    pub fn file_path(&self, file: u32) -> &Path {
        &self.files[file as usize]
    }
}
