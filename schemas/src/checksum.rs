//! SHA-256 of every data file, computed while it is written (no second read) and recorded
//! in the manifest, so `ferret verify` can prove each committed file is the one written:
//! bytes flipped without changing the size (which every read already checks) are caught.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use parquet::arrow::async_writer::AsyncFileWriter;
use sha2::{Digest as _, Sha256};

/// Passes bytes to `inner`, hashing them on the way.
pub struct HashingWriter<W> {
    inner: W,
    hash: Arc<Mutex<(Sha256, u64)>>,
}

/// The hash and length of what went through a [`HashingWriter`].
#[derive(Clone)]
pub struct Digest(Arc<Mutex<(Sha256, u64)>>);

impl Digest {
    /// Lowercase hex of the SHA-256 so far.
    pub fn hex(&self) -> String {
        let h = self.0.lock().unwrap_or_else(|p| p.into_inner()).0.clone();
        hex(&h.finalize())
    }

    /// Bytes so far.
    pub fn bytes(&self) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}

/// Lowercase hex of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

impl<W> HashingWriter<W> {
    pub fn new(inner: W) -> (Self, Digest) {
        let hash = Arc::new(Mutex::new((Sha256::new(), 0)));
        (
            Self {
                inner,
                hash: Arc::clone(&hash),
            },
            Digest(hash),
        )
    }
}

impl<W: AsyncFileWriter> AsyncFileWriter for HashingWriter<W> {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, parquet::errors::Result<()>> {
        {
            let mut h = self.hash.lock().unwrap_or_else(|p| p.into_inner());
            h.0.update(&bs);
            h.1 += bs.len() as u64;
        }
        self.inner.write(bs)
    }

    fn complete(&mut self) -> BoxFuture<'_, parquet::errors::Result<()>> {
        self.inner.complete()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_vector() {
        // FIPS 180-2, "abc".
        assert_eq!(
            super::sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
