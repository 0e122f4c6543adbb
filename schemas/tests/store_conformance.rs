//! One object-store conformance suite for the commit protocol (docs/warehouse.md), run on
//! every store Ferret supports: memory, the local filesystem, SeaweedFS (S3) and Azurite
//! (Azure Blob), the last two started by scripts/test.sh. Under `FERRET_REQUIRE_ALL=1` a
//! missing emulator is a failure, not a skip.

use ferret_schemas::layout;
use ferret_schemas::manifest::manifest_name;
use ferret_schemas::{Chain, Error, Manifest, Warehouse};
use object_store::{ObjectStoreExt, PutPayload};

fn require_all() -> bool {
    std::env::var("FERRET_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

/// The emulator's bucket or container from scripts/test.sh, or a skip (a failure in CI).
fn started(var: &str, what: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            assert!(
                !require_all(),
                "{what} is required (FERRET_REQUIRE_ALL=1) but {var} is unset: run scripts/test.sh"
            );
            eprintln!("skipped: {var} unset ({what} not started; scripts/test.sh starts it)");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ferret_schemas::results::new_run_id())
}

#[tokio::test]
async fn memory() {
    conformance(
        Warehouse::open(&format!("memory://{}", unique("conf"))).expect("open"),
        0,
    )
    .await;
}

#[tokio::test]
async fn local() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wh = Warehouse::open(dir.path().to_str().expect("utf8")).expect("open");
    assert!(wh.base_url().as_str().starts_with("file:///"));
    let staging = dir.path().join("btc/outputs/part-1-2.parquet#7");
    std::fs::create_dir_all(staging.parent().expect("parent")).expect("mkdir");
    std::fs::write(&staging, b"half an upload").expect("write");
    conformance(wh, 1).await;
    assert!(
        !staging.exists(),
        "staging file of a killed upload is collected"
    );
}

#[tokio::test]
async fn seaweedfs_s3() {
    let Some(bucket) = started("FERRET_S3_BUCKET", "SeaweedFS") else {
        return;
    };
    let wh = Warehouse::open(&format!("s3://{bucket}/{}", unique("conf"))).expect("open");
    conformance(wh, 0).await;
}

#[tokio::test]
async fn azurite_blob() {
    let Some(container) = started("FERRET_AZ_CONTAINER", "Azurite") else {
        return;
    };
    let wh = Warehouse::open(&format!("az://{container}/{}", unique("conf"))).expect("open");
    conformance(wh, 0).await;
}

/// The commit protocol on one store: leases, commits, conflicts, garbage, fail-closed
/// reads, legacy manifests.
async fn conformance(wh: Warehouse, extra_garbage: usize) {
    assert!(wh.load_manifest(Chain::Btc).await.expect("load").is_none());
    let lease = wh.writer_lease(Chain::Btc).await.expect("lease");
    // A second writer is refused while the first holds the lease.
    let err = wh.writer_lease(Chain::Btc).await.expect_err("held");
    assert!(matches!(err, Error::LeaseHeld { .. }), "{err}");
    assert!(err.to_string().contains(lease.attempt()), "{err}");
    // Another chain has its own lease.
    drop(wh.writer_lease(Chain::Eth).await.expect("eth lease"));
    let mut m = Manifest::empty("btc", "regtest");
    let data = wh
        .resolve("btc/blocks/part-0-0-a-c1.parquet")
        .expect("path");
    let junk = wh
        .resolve("btc/blocks/part-1-1-b-c1.parquet")
        .expect("path");
    for p in [&data, &junk] {
        wh.store()
            .put(p, PutPayload::from_static(b"x"))
            .await
            .expect("put");
    }
    assert_eq!(wh.relative(&data), "btc/blocks/part-0-0-a-c1.parquet");
    m.files.push(ferret_schemas::FileEntry {
        table: "blocks".into(),
        path: wh.relative(&data),
        first_height: 0,
        last_height: 0,
        rows: 1,
        bytes: 1,
        sha256: None,
    });
    wh.commit_manifest(Chain::Btc, &mut m, &lease)
        .await
        .expect("commit 1");
    wh.commit_manifest(Chain::Btc, &mut m, &lease)
        .await
        .expect("commit 2");
    let loaded = wh
        .load_manifest(Chain::Btc)
        .await
        .expect("load")
        .expect("committed");
    assert_eq!(loaded, m);
    assert_eq!(loaded.seq, 2);
    // A second writer holding the old sequence number conflicts instead of overwriting.
    let mut stale = m.clone();
    stale.seq = 1;
    let err = wh
        .commit_manifest(Chain::Btc, &mut stale, &lease)
        .await
        .expect_err("conflict");
    assert!(matches!(err, Error::CommitConflict { .. }), "{err}");
    assert_eq!(
        wh.collect_garbage(Chain::Btc, &m, &lease)
            .await
            .expect("gc"),
        1 + extra_garbage
    );
    assert!(wh.store().head(&junk).await.is_err());
    assert!(wh.store().head(&data).await.is_ok());
    lease.release().await;
    drop(wh.writer_lease(Chain::Btc).await.expect("free again"));

    // Reads fail closed. A committed file of another size:
    wh.store()
        .put(&data, PutPayload::from_static(b"xy"))
        .await
        .expect("put");
    let err = wh.load_manifest(Chain::Btc).await.expect_err("resized");
    assert!(
        err.to_string()
            .contains("is 2 bytes; the manifest recorded 1"),
        "{err}"
    );
    // A committed file deleted:
    wh.store().delete(&data).await.expect("delete");
    let err = wh.load_manifest(Chain::Btc).await.expect_err("missing");
    assert!(
        err.to_string().contains("part-0-0-a-c1.parquet") && err.to_string().contains("missing"),
        "{err}"
    );
    // The manifest deleted after a commit: damage, not an empty chain.
    let newest = layout::state_dir(wh.root(), Chain::Btc).join(manifest_name(2));
    let body = wh
        .store()
        .get(&newest)
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    wh.store().delete(&newest).await.expect("delete");
    let err = wh.load_manifest(Chain::Btc).await.expect_err("no manifest");
    assert!(matches!(err, Error::Damaged { .. }), "{err}");
    // An unknown format is refused.
    let mut future: serde_json::Value = serde_json::from_slice(&body).expect("json");
    future["format"] = 99.into();
    wh.store()
        .put(
            &newest,
            PutPayload::from(serde_json::to_vec(&future).expect("json")),
        )
        .await
        .expect("put");
    let err = wh.load_manifest(Chain::Btc).await.expect_err("format");
    assert!(
        matches!(err, Error::ManifestFormat { found: 99, .. }),
        "{err}"
    );
    // A format-1 manifest (object paths, maybe of where the warehouse used to be) reads
    // as relative paths.
    wh.store()
        .put(&data, PutPayload::from_static(b"x"))
        .await
        .expect("put");
    let mut legacy = future;
    legacy["format"] = 1.into();
    legacy["files"][0]["path"] = format!("old/place/{}", wh.relative(&data)).into();
    wh.store()
        .put(
            &newest,
            PutPayload::from(serde_json::to_vec(&legacy).expect("json")),
        )
        .await
        .expect("put");
    let loaded = wh
        .load_manifest(Chain::Btc)
        .await
        .expect("legacy")
        .expect("some");
    assert_eq!(loaded.files[0].path, "btc/blocks/part-0-0-a-c1.parquet");
    assert_eq!(loaded.format, ferret_schemas::manifest::MANIFEST_FORMAT);
}
