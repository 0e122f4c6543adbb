//! Which block a warehouse holds at a height: what resumable runs (incremental
//! clustering, case runs) check the tip they stopped at against, to tell new blocks from
//! a reorganisation.

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use ferret_schemas::{Chain, Manifest, Warehouse};

use crate::taint::stored::RowGroups;
use crate::{Error, Result};

/// The hash of the committed block at `height` on `chain`, if the warehouse has it: the
/// manifest's own checkpoints (its tip, the recent blocks it keeps) first, else the row
/// groups of `blocks` whose heights can hold it.
pub async fn block_hash_in(
    wh: &Warehouse,
    m: &Manifest,
    chain: Chain,
    height: u64,
) -> Result<Option<String>> {
    if let Some(c) = m.tip.iter().chain(&m.recent).find(|c| c.height == height) {
        return Ok(Some(c.hash.clone()));
    }
    let cols = match chain {
        Chain::Btc => ["height", "hash"],
        _ => ["block_number", "block_hash"],
    };
    let groups = RowGroups::open(wh, m, "blocks", &cols[..1]).await?;
    let h = i64::try_from(height).unwrap_or(i64::MAX);
    let which: Vec<usize> = (0..groups.groups.len())
        .filter(|&g| groups.groups[g].2[0].0 <= h && groups.groups[g].2[0].1 >= h)
        .collect();
    for b in groups.read(wh, &which, &cols).await? {
        let (Some(hs), Some(hash)) = (
            b.column(0).as_primitive_opt::<Int64Type>(),
            b.column(1).as_string_opt::<i32>(),
        ) else {
            return Err(Error::BadGraph(format!(
                "{}.blocks: {} or {} has the wrong type",
                chain.as_str(),
                cols[0],
                cols[1]
            )));
        };
        for r in 0..b.num_rows() {
            if !hs.is_null(r) && hs.value(r) == h {
                return Ok(Some(hash.value(r).to_string()));
            }
        }
    }
    Ok(None)
}

/// [`block_hash_in`] on the chain's current manifest (None when nothing is indexed).
pub async fn block_hash(wh: &Warehouse, chain: Chain, height: u64) -> Result<Option<String>> {
    match wh
        .load_manifest(chain)
        .await
        .map_err(|e| Error::Warehouse(Box::new(e)))?
    {
        Some(m) => block_hash_in(wh, &m, chain, height).await,
        None => Ok(None),
    }
}
