//! Bitcoin Core blk records and block decoding: any bytes as `blk00000.dat` (with and
//! without an `xor.dat` key) scan, read and verify with an error or a result, never a
//! panic, a hang or unbounded memory.
#![no_main]

use std::sync::LazyLock;

use ferret_indexer::source::bitcoin::{BlkDir, Network, hash_and_verify};
use libfuzzer_sys::fuzz_target;

/// One scratch directory per process (in memory where /dev/shm exists), rewritten per input.
static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("tmp")
});

fuzz_target!(|data: &[u8]| {
    // First byte: whether the second to ninth bytes are an xor.dat key.
    let (keyed, rest) = match data.split_first() {
        Some((k, rest)) if k & 1 == 1 && rest.len() >= 8 => (Some(&rest[..8]), &rest[8..]),
        Some((_, rest)) => (None, rest),
        None => return,
    };
    let dir = &*DIR;
    std::fs::write(dir.path().join("blk00000.dat"), rest).expect("write");
    let xor = dir.path().join("xor.dat");
    match keyed {
        Some(key) => std::fs::write(&xor, key).expect("write"),
        None => {
            let _ = std::fs::remove_file(&xor);
        }
    }
    for net in [None, Some(Network::Bitcoin)] {
        let Ok(blk) = BlkDir::open(dir.path(), net) else {
            continue;
        };
        let Ok(locs) = blk.scan() else {
            continue;
        };
        for loc in locs.iter().take(64) {
            if let Ok(block) = blk.read_block(loc) {
                let _ = hash_and_verify(&block);
            }
        }
    }
});
