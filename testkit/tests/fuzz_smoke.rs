//! A short fuzz smoke run on stable Rust: every harness of `fuzz/` (the coverage-guided
//! libFuzzer targets, run long by `scripts/fuzz.sh`) over its seed corpus from the
//! fixtures and a few thousand random mutations of it. Any panic fails the test and names
//! the input, written under the system temp dir for `cargo fuzz run <target> <file>`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use ferret_testkit::fuzz::{TARGETS, mutate, seeds};

/// Mutated inputs per target (each also runs its seeds unchanged).
const MUTATIONS: usize = 20_000;

fn fixtures() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("FERRET_FIXTURES")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
        });
    if dir.join("btc").is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("FERRET_REQUIRE_ALL").map_or(true, |v| v != "1"),
        "fixtures are required (FERRET_REQUIRE_ALL=1) but {} has none",
        dir.display()
    );
    eprintln!(
        "skipped: no fixtures at {} (set FERRET_FIXTURES)",
        dir.display()
    );
    None
}

#[test]
fn every_harness_survives_its_seeds_and_random_mutations() {
    let Some(fx) = fixtures() else { return };
    // Keep the default panic output quiet: the test reports the failing input itself.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    for (name, harness) in TARGETS {
        let corpus = seeds(name, &fx);
        assert!(!corpus.is_empty(), "{name}: no seeds from {}", fx.display());
        let mut rng = ChaCha8Rng::seed_from_u64(0xf377e7 ^ name.len() as u64);
        let inputs = corpus.iter().cloned().chain((0..MUTATIONS).map(|_| {
            let a = &corpus[rng.random_range(0..corpus.len())];
            let b = &corpus[rng.random_range(0..corpus.len())];
            mutate(&mut rng, a, b)
        }));
        let mut ran = 0;
        for input in inputs {
            ran += 1;
            if std::panic::catch_unwind(|| harness(&input)).is_err() {
                let path = std::env::temp_dir().join(format!("ferret-fuzz-{name}-{ran}"));
                std::fs::write(&path, &input).expect("write the failing input");
                failures.push(format!("{name}: panicked on {}", path.display()));
                break;
            }
        }
        eprintln!("{name}: {ran} inputs");
    }
    std::panic::set_hook(hook);
    assert!(failures.is_empty(), "{failures:#?}");
}
