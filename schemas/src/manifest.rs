//! The commit manifest: the only source of truth about what a warehouse holds.
//!
//! Writers put data files first and then a new manifest object
//! `{chain}/_state/manifest-{seq:020}.json` with a create-only PUT (atomic on every object
//! store, and a conflict if another writer got there first). Readers take the manifest with
//! the highest sequence number and trust only the files it lists.

use serde::{Deserialize, Serialize};

/// The last committed block of a chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Height of the last committed block.
    pub height: u64,
    /// Its hash, lowercase hex as the chain displays it.
    pub hash: String,
}

/// One committed data file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Table name inside the chain (`outputs`, …).
    pub table: String,
    /// Path relative to the warehouse root (`btc/outputs/height_range=…/part-….parquet`),
    /// so a moved or copied warehouse reads its own files (format 1 held object paths).
    pub path: String,
    /// First block height with rows in the file's range.
    pub first_height: u64,
    /// Last block height of the file's range.
    pub last_height: u64,
    /// Rows in the file.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// SHA-256 of the file as written, lowercase hex (files written before checksums
    /// were recorded have none); checked by `ferret verify`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Running totals over everything committed, for summaries and cheap checks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub blocks: u64,
    pub transactions: u64,
    pub inputs: u64,
    pub outputs: u64,
    /// Inputs whose spent output lies before the indexed range (their enrichment is null).
    pub unresolved_inputs: u64,
    /// Distinct addresses (`btc.addresses` rows).
    #[serde(default)]
    pub addresses: u64,
}

impl Totals {
    /// Adds `other` to these totals.
    pub fn add(&mut self, other: &Totals) {
        self.blocks += other.blocks;
        self.transactions += other.transactions;
        self.inputs += other.inputs;
        self.outputs += other.outputs;
        self.unresolved_inputs += other.unresolved_inputs;
        self.addresses += other.addresses;
    }
}

/// Everything committed for one chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Version of the manifest format.
    pub format: u32,
    /// Version of the table schemas ([`crate::SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// Chain directory name (`btc`).
    pub chain: String,
    /// Network of the chain (`bitcoin`, `testnet`, `signet`, `regtest`, …).
    pub network: String,
    /// Sequence number of this commit; 0 for a manifest never committed.
    pub seq: u64,
    /// Height of the first indexed block (0 unless the source was pruned).
    pub first_height: Option<u64>,
    /// Hash of the first indexed block.
    pub first_hash: Option<String>,
    /// The last committed block.
    pub tip: Option<Checkpoint>,
    /// `tx_index` of the next transaction to be indexed.
    pub next_tx_index: u64,
    /// `output_id` of the next output to be indexed (Bitcoin).
    #[serde(default)]
    pub next_output_id: u64,
    /// `address_id` the next new address gets (Bitcoin).
    #[serde(default)]
    pub next_address_id: u64,
    /// Bitcoin: the spend graph's nodes (transactions) are cut into blocks of 2^this
    /// (`btc.spends`); fixed at the first commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph_block_bits: Option<u32>,
    /// Totals over the committed blocks.
    pub totals: Totals,
    /// Every committed data file, in commit order.
    pub files: Vec<FileEntry>,
    /// Hashes of the last committed blocks, oldest first, for finding the common ancestor
    /// after a reorganisation (chains indexed near their tip: Ethereum).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<Checkpoint>,
}

/// Current manifest format: 2, warehouse-relative file paths (1: object paths, still read).
pub const MANIFEST_FORMAT: u32 = 2;

impl Manifest {
    /// An empty manifest for a chain that has nothing committed.
    pub fn empty(chain: &str, network: &str) -> Self {
        Self {
            format: MANIFEST_FORMAT,
            schema_version: crate::SCHEMA_VERSION,
            chain: chain.to_string(),
            network: network.to_string(),
            seq: 0,
            first_height: None,
            first_hash: None,
            tip: None,
            next_tx_index: 0,
            next_output_id: 0,
            next_address_id: 0,
            graph_block_bits: None,
            totals: Totals::default(),
            files: Vec::new(),
            recent: Vec::new(),
        }
    }

    /// The committed files of one table, in height order.
    pub fn files_of<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a FileEntry> + 'a {
        self.files.iter().filter(move |f| f.table == table)
    }

    /// The height the next run starts from.
    pub fn next_height(&self) -> Option<u64> {
        self.tip.as_ref().map(|t| t.height + 1)
    }
}

/// Object name of the manifest with sequence number `seq`.
pub fn manifest_name(seq: u64) -> String {
    format!("manifest-{seq:020}.json")
}

/// Parses a manifest object name back to its sequence number.
pub fn parse_manifest_name(name: &str) -> Option<u64> {
    name.strip_prefix("manifest-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(parse_manifest_name(&manifest_name(42)), Some(42));
        assert!(manifest_name(9) < manifest_name(10));
        assert_eq!(parse_manifest_name("manifest-x.json"), None);
        assert_eq!(parse_manifest_name("other.json"), None);
    }
}
