//! Case files: any bytes as a case file load or fail with an error naming the line,
//! never a panic. The harness is `ferret_testkit::fuzz::case_parse`, shared with the
//! stable smoke test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferret_testkit::fuzz::case_parse(data));
