//! Bitcoin Core blk records and block decoding: any bytes as `blk00000.dat` (with and
//! without an `xor.dat` key) scan, read and verify with an error or a result, never a
//! panic, a hang or unbounded memory.
//! The harness is `ferret_testkit::fuzz::blk_scan`, shared with the stable smoke test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferret_testkit::fuzz::blk_scan(data));
