//! Writes `blkNNNNN.dat` files the way Bitcoin Core lays them out.
//!
//! Each record is the 4-byte network magic, the block's length as a 4-byte
//! little-endian integer, then the consensus-encoded block. A new file is started
//! when the next record would make the current one reach `max_blockfile_size`
//! (Core's `FindNextBlockPos` rolls on `size + record >= MAX_BLOCKFILE_SIZE`); a
//! record larger than the limit on its own still goes into a file of its own.
//!
//! Core preallocates block files in 16 MiB chunks, so a finished file ends in zero
//! bytes. We pad every file (the last one included) with zeros up to the next
//! multiple of 16 MiB strictly above its data, except that a file holding less than
//! 16 MiB of data is only padded to the next multiple of 1 MiB strictly above its
//! data, so that small test chains do not write 16 MiB files. "Strictly above"
//! means every file ends in at least one zero byte.
//!
//! With an obfuscation key (Core >= 28, `xor.dat`), every byte of a file, padding
//! included, is XORed with `key[offset % 8]`, where `offset` counts from the start
//! of that file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::error::{Error, Result};

/// Core's preallocation chunk for block files.
pub(crate) const BLOCKFILE_CHUNK_SIZE: u64 = 0x100_0000;
/// Padding unit used instead of [`BLOCKFILE_CHUNK_SIZE`] for files below 16 MiB.
pub(crate) const SMALL_PAD_UNIT: u64 = 0x10_0000;

/// Where a record was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecordPos {
    pub(crate) file: u32,
    pub(crate) offset: u64,
}

pub(crate) struct BlkWriter {
    dir: PathBuf,
    magic: [u8; 4],
    max_size: u64,
    key: Option<[u8; 8]>,
    current: Option<Current>,
    next_file: u32,
    total_bytes: u64,
    scratch: Vec<u8>,
}

struct Current {
    no: u32,
    path: PathBuf,
    out: BufWriter<File>,
    offset: u64,
}

impl BlkWriter {
    pub(crate) fn new(dir: &Path, magic: [u8; 4], max_size: u64, key: Option<[u8; 8]>) -> Self {
        BlkWriter {
            dir: dir.to_path_buf(),
            magic,
            max_size,
            key,
            current: None,
            next_file: 0,
            total_bytes: 0,
            scratch: Vec::new(),
        }
    }

    /// Appends one block record, rolling to a new file first when needed.
    pub(crate) fn write_record(&mut self, block: &[u8], height: u32) -> Result<RecordPos> {
        let len = u32::try_from(block.len()).map_err(|_| Error::BlockTooLarge {
            height,
            size: block.len(),
        })?;
        let add = 8 + u64::from(len);
        let roll = self
            .current
            .as_ref()
            .is_some_and(|c| c.offset > 0 && c.offset + add >= self.max_size);
        if roll {
            self.finish_file()?;
        }
        if self.current.is_none() {
            let no = self.next_file;
            self.next_file += 1;
            let path = self.dir.join(format!("blk{no:05}.dat"));
            let file = File::create(&path).map_err(|source| Error::io(&path, source))?;
            self.current = Some(Current {
                no,
                path,
                out: BufWriter::with_capacity(1 << 20, file),
                offset: 0,
            });
        }
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&self.magic);
        header[4..].copy_from_slice(&len.to_le_bytes());
        let pos = {
            let c = self.current.as_ref().expect("a file was opened above");
            RecordPos {
                file: c.no,
                offset: c.offset,
            }
        };
        self.write_bytes(&header)?;
        self.write_bytes(block)?;
        Ok(pos)
    }

    fn write_bytes(&mut self, data: &[u8]) -> Result<()> {
        let c = self
            .current
            .as_mut()
            .expect("write_bytes is only called with an open file");
        let result = match self.key {
            None => c.out.write_all(data),
            Some(key) => {
                self.scratch.clear();
                self.scratch.extend_from_slice(data);
                // usize -> u64 is lossless; the mask keeps the index below 8.
                let start = (c.offset % 8) as usize;
                for (i, b) in self.scratch.iter_mut().enumerate() {
                    *b ^= key[(start + i) & 7];
                }
                c.out.write_all(&self.scratch)
            }
        };
        result.map_err(|source| Error::io(&c.path, source))?;
        c.offset += data.len() as u64;
        self.total_bytes += data.len() as u64;
        Ok(())
    }

    fn finish_file(&mut self) -> Result<()> {
        let Some(offset) = self.current.as_ref().map(|c| c.offset) else {
            return Ok(());
        };
        let unit = if offset < BLOCKFILE_CHUNK_SIZE {
            SMALL_PAD_UNIT
        } else {
            BLOCKFILE_CHUNK_SIZE
        };
        let padded = (offset / unit + 1) * unit;
        let zeros = vec![0u8; 1 << 16];
        let mut left = padded - offset;
        while left > 0 {
            let n = left.min(zeros.len() as u64);
            // n <= 65536, so the narrowing cannot truncate.
            self.write_bytes(&zeros[..n as usize])?;
            left -= n;
        }
        let mut c = self.current.take().expect("checked above");
        c.out.flush().map_err(|source| Error::io(&c.path, source))?;
        Ok(())
    }

    /// Pads and closes the last file; returns (files written, bytes written).
    pub(crate) fn finish(mut self) -> Result<(u32, u64)> {
        self.finish_file()?;
        Ok((self.next_file, self.total_bytes))
    }
}
