//! Manifests and results heads: any bytes as the newest manifest or results head load with
//! an error or a manifest, never a panic.
#![no_main]

use std::sync::LazyLock;

use ferret_schemas::{Chain, Warehouse};
use libfuzzer_sys::fuzz_target;
use object_store::{ObjectStoreExt, PutPayload};

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<ferret_schemas::Manifest>(data);
    RT.block_on(async {
        // One store per process (named memory stores live as long as the process), the
        // same two objects overwritten by each input.
        let wh = Warehouse::open("memory://fuzz-manifest").expect("open");
        let manifest = ferret_schemas::layout::state_dir(wh.root(), Chain::Btc)
            .join(ferret_schemas::manifest::manifest_name(3));
        let head = ferret_schemas::results::head_dir(wh.root())
            .join(ferret_schemas::results::head_name(1));
        for p in [&manifest, &head] {
            wh.store()
                .put(p, PutPayload::from(data.to_vec()))
                .await
                .expect("put");
        }
        let _ = wh.load_manifest(Chain::Btc).await;
        let _ = wh.latest_runs().await;
        let _ = wh.read_latest("taint").await;
    });
});
