//! Object paths of the warehouse:
//! `{chain}/{table}/height_range={lo:08}-{hi:08}/part-{first:08}-{last:08}-{attempt}-c{seq}.parquet`,
//! Hive style so DataFusion, DuckDB, Spark and polars read it as a partitioned dataset.

use object_store::path::Path;

use crate::{Chain, TableDef};

/// Blocks per `height_range` partition.
pub const PARTITION_SPAN: u64 = 10_000;

/// First height of the partition holding `height`.
pub fn partition_start(height: u64) -> u64 {
    height - height % PARTITION_SPAN
}

/// The partition directory name of `height`.
pub fn partition_name(height: u64) -> String {
    let lo = partition_start(height);
    format!("height_range={lo:08}-{:08}", lo + PARTITION_SPAN - 1)
}

/// Directory of a table under the warehouse root.
pub fn table_dir(root: &Path, t: &TableDef) -> Path {
    root.clone().join(t.chain.as_str()).join(t.name)
}

/// Path of the data file covering heights `first..=last` (which lie in one partition),
/// written by writer attempt `attempt` for commit `seq`:
/// `part-{first:08}-{last:08}-{attempt}-c{seq}.parquet`. No two writers, and no two commits
/// of one writer, ever share a name, so a writer never overwrites a file another one is
/// writing or a reader of an older manifest is reading (a reorganisation rewrites the file
/// across the fork under a new name).
pub fn data_file(
    root: &Path,
    t: &TableDef,
    first: u64,
    last: u64,
    attempt: &str,
    seq: u64,
) -> Path {
    debug_assert_eq!(partition_start(first), partition_start(last));
    table_dir(root, t).join(partition_name(first)).join(format!(
        "part-{first:08}-{last:08}-{attempt}-c{seq}.parquet"
    ))
}

/// Directory of a chain's commit state.
pub fn state_dir(root: &Path, chain: Chain) -> Path {
    root.clone().join(chain.as_str()).join("_state")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_aligned() {
        assert_eq!(partition_name(0), "height_range=00000000-00009999");
        assert_eq!(partition_name(812_345), "height_range=00810000-00819999");
        let t = crate::table(Chain::Btc, "outputs").expect("registered");
        let p = data_file(&Path::from("wh"), t, 10_000, 10_999, "17-ab", 3);
        assert_eq!(
            p.as_ref(),
            "wh/btc/outputs/height_range=00010000-00019999/part-00010000-00010999-17-ab-c3.parquet"
        );
    }
}
