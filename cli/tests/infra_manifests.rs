//! The deployment manifests under infra/ name real commands: every container's `args`
//! (Kubernetes) and `command` (compose) that starts with a ferret subcommand parses with
//! this build's `ferret` (its flags and values accepted, then `--help`), so a renamed
//! flag breaks this test, not a production CronJob.

mod common;

use yaml_rust2::{Yaml, YamlLoader};

const SUBCOMMANDS: &[&str] = &[
    "index", "synth", "cluster", "taint", "trace", "labels", "sql", "verify", "demo", "serve",
    "users", "case", "jobs",
];

fn commands(y: &Yaml, out: &mut Vec<Vec<String>>) {
    match y {
        Yaml::Hash(h) => {
            for (k, v) in h {
                if let (Some("args" | "command"), Yaml::Array(a)) = (k.as_str(), v) {
                    let words: Vec<String> = a
                        .iter()
                        .filter_map(|w| w.as_str().map(str::to_string))
                        .collect();
                    if words.len() == a.len()
                        && words
                            .first()
                            .is_some_and(|w| SUBCOMMANDS.contains(&w.as_str()))
                    {
                        out.push(words);
                    }
                }
                commands(v, out);
            }
        }
        Yaml::Array(a) => a.iter().for_each(|v| commands(v, out)),
        _ => {}
    }
}

#[test]
fn every_manifest_command_parses() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra");
    let mut files = common::walk(&root);
    files.retain(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"));
    files.sort();
    let mut checked = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        let docs = YamlLoader::load_from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}", f.display()));
        let mut found = Vec::new();
        for d in &docs {
            commands(d, &mut found);
        }
        for words in found {
            let mut args: Vec<&str> = words.iter().map(String::as_str).collect();
            args.push("--help");
            let out = common::ferret(&args);
            assert!(
                out.status.success(),
                "{}: `ferret {}` does not parse: {}",
                f.display(),
                words.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            checked.push(format!(
                "{}: {}",
                f.display(),
                words[..2.min(words.len())].join(" ")
            ));
        }
    }
    // The scheduler of cases is deployed both ways; the server and indexers too.
    for want in [
        "cases-cronjob.yaml: jobs run",
        "compose.yaml: jobs run",
        "compose.yaml: serve --warehouse",
        "serve.yaml: serve",
    ] {
        assert!(
            checked.iter().any(|c| c.contains(want)),
            "{want} not checked: {checked:#?}"
        );
    }
}
