//! Label importers: any bytes as a CSV file, a TagPack (YAML) or a plain address list
//! parse with errors naming the line, never a panic or unbounded memory (aliases
//! included).
//! The harness is `ferret_testkit::fuzz::labels_parse`, shared with the stable smoke test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferret_testkit::fuzz::labels_parse(data));
