//! Failpoints for crash tests: `FERRET_FAILPOINT=name[:n]` aborts the process (as a
//! SIGKILL would stop it, without unwinding or cleanup) the n-th time (default: first)
//! execution reaches the named point. Several may be given, comma-separated. Points are
//! placed at every step of a commit: after each data file, before and after the manifest
//! PUT, during garbage collection, between a run's files and its results commit.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

static ARMED: LazyLock<Option<HashMap<String, u64>>> = LazyLock::new(|| {
    let spec = std::env::var("FERRET_FAILPOINT").ok()?;
    Some(
        spec.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| match s.split_once(':') {
                Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
                None => (s.to_string(), 1),
            })
            .collect(),
    )
});

static HITS: LazyLock<Mutex<HashMap<String, u64>>> = LazyLock::new(Default::default);

/// Aborts here when `name` is armed and this is its n-th hit.
pub fn hit(name: &str) {
    let Some(armed) = ARMED.as_ref() else {
        return;
    };
    let Some(&at) = armed.get(name) else {
        return;
    };
    let mut hits = HITS.lock().unwrap_or_else(|p| p.into_inner());
    let n = hits.entry(name.to_string()).or_default();
    *n += 1;
    if *n == at {
        eprintln!("failpoint {name}:{at}: aborting");
        std::process::abort();
    }
}

/// Every failpoint, for tests that visit each.
pub const ALL: &[&str] = &[
    "data-file-written",
    "before-manifest-put",
    "after-manifest-put",
    "gc-deleting",
    "run-file-written",
    "before-results-commit",
    "after-results-commit",
];
