//! Failpoints for crash tests: `FERRET_FAILPOINT=name[:n]` aborts the process (as a
//! SIGKILL would stop it, without unwinding or cleanup) the n-th time (default: first)
//! execution reaches the named point; `name[:n]=stop` instead freezes the whole process
//! there with SIGSTOP (as a paused VM or a long GC pause would) until it gets SIGCONT, for
//! interleaving two writers deterministically. Several may be given, comma-separated.
//! Points are placed at every step of a commit: after each data file, before and after
//! the manifest PUT, before garbage collection lists and as it deletes, after an unwind's
//! rewritten files, between a run's files and its results commit.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// What an armed point does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Abort,
    Stop,
}

static ARMED: LazyLock<Option<HashMap<String, (u64, Action)>>> = LazyLock::new(|| {
    let spec = std::env::var("FERRET_FAILPOINT").ok()?;
    Some(
        spec.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                let (point, action) = match s.split_once('=') {
                    Some((p, "stop")) => (p, Action::Stop),
                    Some((p, _)) => (p, Action::Abort),
                    None => (s, Action::Abort),
                };
                match point.split_once(':') {
                    Some((name, n)) => (name.to_string(), (n.parse().unwrap_or(1), action)),
                    None => (point.to_string(), (1, action)),
                }
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
    let Some(&(at, action)) = armed.get(name) else {
        return;
    };
    let n = {
        let mut hits = HITS.lock().unwrap_or_else(|p| p.into_inner());
        let n = hits.entry(name.to_string()).or_default();
        *n += 1;
        *n
    };
    if n != at {
        return;
    }
    match action {
        Action::Abort => {
            eprintln!("failpoint {name}:{at}: aborting");
            std::process::abort();
        }
        Action::Stop => {
            eprintln!("failpoint {name}:{at}: stopping (SIGSTOP) until SIGCONT");
            // `kill` stops this whole process, its lease renewals included; it returns
            // once the process is continued.
            let _ = std::process::Command::new("kill")
                .args(["-STOP", &std::process::id().to_string()])
                .status();
        }
    }
}

/// Every failpoint, for tests that visit each.
pub const ALL: &[&str] = &[
    "data-file-written",
    "before-manifest-put",
    "after-manifest-put",
    "gc-listing",
    "gc-deleting",
    "run-file-written",
    "before-results-commit",
    "after-results-commit",
];
