//! Manifests and results heads: any bytes as the newest manifest or results head load with
//! an error or a manifest, never a panic.
//! The harness is `ferret_testkit::fuzz::manifest_load`, shared with the stable smoke test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferret_testkit::fuzz::manifest_load(data));
