//! Label importers: any bytes as a CSV file, a TagPack (YAML) or a plain address list
//! parse with errors naming the line, never a panic or unbounded memory (aliases
//! included).
#![no_main]

use std::sync::LazyLock;

use ferret_indexer::labels::{Defaults, parse_file};
use libfuzzer_sys::fuzz_target;

static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .expect("tmp")
});

fuzz_target!(|data: &[u8]| {
    let Some((kind, rest)) = data.split_first() else {
        return;
    };
    let ext = ["csv", "yaml", "txt"][usize::from(*kind) % 3];
    let path = DIR.path().join(format!("labels.{ext}"));
    std::fs::write(&path, rest).expect("write");
    let d = Defaults {
        chain: None,
        category: (kind & 4 != 0).then(|| "scam".to_string()),
        label: (kind & 8 != 0).then(|| "x".to_string()),
        source: None,
    };
    let _ = parse_file(&path, &d);
});
