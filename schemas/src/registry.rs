use std::fmt;

use arrow::datatypes::SchemaRef;

use crate::{btc, eth};

/// A chain whose tables live in the warehouse under `{chain}/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Chain {
    /// Bitcoin (any network: mainnet, testnet, signet, regtest).
    Btc,
    /// Ethereum (mainnet or any EVM chain id).
    Eth,
}

impl Chain {
    /// Directory and SQL schema name of the chain.
    pub fn as_str(self) -> &'static str {
        match self {
            Chain::Btc => "btc",
            Chain::Eth => "eth",
        }
    }

    /// Every chain Ferret knows.
    pub fn all() -> &'static [Chain] {
        &[Chain::Btc, Chain::Eth]
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One table of the warehouse: its name, schema and physical layout.
#[derive(Clone, Copy, Debug)]
pub struct TableDef {
    /// Chain the table belongs to.
    pub chain: Chain,
    /// Table name inside the chain's schema.
    pub name: &'static str,
    schema: fn() -> SchemaRef,
    /// Columns the files are sorted by, in order.
    pub sort_key: &'static [&'static str],
    /// Columns that get a Parquet bloom filter (point look-ups by address or hash).
    pub bloom_columns: &'static [&'static str],
    /// The column holding the block height a row belongs to (an unwind drops the rows
    /// above the fork by it).
    pub height_column: &'static str,
    /// Int32 columns whose every change starts a new row group (empty: row groups cut by
    /// size only), so that each row group's statistics name one value of each.
    pub row_groups_by: &'static [&'static str],
}

impl TableDef {
    /// The table's Arrow schema.
    pub fn schema(&self) -> SchemaRef {
        (self.schema)()
    }

    /// `chain.table`, as written in SQL.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.chain, self.name)
    }
}

/// The one list of tables. Writers, readers and docs all iterate this.
static TABLES: &[TableDef] = &[
    TableDef {
        chain: Chain::Btc,
        name: "blocks",
        schema: btc::blocks_schema,
        sort_key: &["height"],
        bloom_columns: &["hash"],
        height_column: "height",
        row_groups_by: &[],
    },
    TableDef {
        chain: Chain::Btc,
        name: "transactions",
        schema: btc::transactions_schema,
        sort_key: &["height", "tx_index"],
        bloom_columns: &["txid"],
        height_column: "height",
        row_groups_by: &[],
    },
    TableDef {
        chain: Chain::Btc,
        name: "inputs",
        schema: btc::inputs_schema,
        sort_key: &["height", "tx_index", "vin"],
        bloom_columns: &["txid", "spent_txid", "address"],
        height_column: "height",
        row_groups_by: &[],
    },
    TableDef {
        chain: Chain::Btc,
        name: "outputs",
        schema: btc::outputs_schema,
        sort_key: &["height", "tx_index", "vout"],
        bloom_columns: &["txid", "address"],
        height_column: "height",
        row_groups_by: &[],
    },
    TableDef {
        chain: Chain::Btc,
        name: "addresses",
        schema: btc::addresses_schema,
        sort_key: &["first_seen_height", "address_id"],
        bloom_columns: &["address"],
        height_column: "first_seen_height",
        row_groups_by: &[],
    },
    TableDef {
        chain: Chain::Btc,
        name: "spends",
        schema: btc::spends_schema,
        sort_key: &["dst_block", "src_block", "tx_index", "vin"],
        bloom_columns: &[],
        height_column: "height",
        row_groups_by: &["dst_block", "src_block"],
    },
    TableDef {
        chain: Chain::Eth,
        name: "blocks",
        schema: eth::blocks_schema,
        sort_key: &["block_number"],
        bloom_columns: &["block_hash"],
        height_column: "block_number",
        row_groups_by: &[],
    },
    TableDef {
        chain: Chain::Eth,
        name: "transactions",
        schema: eth::transactions_schema,
        sort_key: &["block_number", "transaction_index"],
        bloom_columns: &["transaction_hash", "from_address", "to_address"],
        height_column: "block_number",
        row_groups_by: &[],
    },
    TableDef {
        chain: Chain::Eth,
        name: "logs",
        schema: eth::logs_schema,
        sort_key: &["block_number", "log_index"],
        bloom_columns: &["transaction_hash", "address", "topic0"],
        height_column: "block_number",
        row_groups_by: &[],
    },
    TableDef {
        chain: Chain::Eth,
        name: "token_transfers",
        schema: eth::token_transfers_schema,
        sort_key: &["block_number", "log_index"],
        bloom_columns: &["token_address", "from_address", "to_address"],
        height_column: "block_number",
        row_groups_by: &[],
    },
    TableDef {
        chain: Chain::Eth,
        name: "traces",
        schema: eth::traces_schema,
        sort_key: &["block_number", "transaction_index", "trace_index"],
        bloom_columns: &["transaction_hash", "from_address", "to_address"],
        height_column: "block_number",
        row_groups_by: &[],
    },
    TableDef {
        chain: Chain::Eth,
        name: "transfers",
        schema: eth::transfers_schema,
        sort_key: &["block_number", "transaction_index", "ordinal"],
        bloom_columns: &["from_address", "to_address", "asset"],
        height_column: "block_number",
        row_groups_by: &[],
    },
];

/// Every registered table.
pub fn tables() -> &'static [TableDef] {
    TABLES
}

/// The tables of one chain, in registry order.
pub fn tables_of(chain: Chain) -> impl Iterator<Item = &'static TableDef> {
    TABLES.iter().filter(move |t| t.chain == chain)
}

/// Looks a table up by chain and name.
pub fn table(chain: Chain, name: &str) -> Option<&'static TableDef> {
    TABLES.iter().find(|t| t.chain == chain && t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sort_and_bloom_columns_exist_in_schemas() {
        for t in tables() {
            let schema = t.schema();
            for c in t.sort_key.iter().chain(t.bloom_columns) {
                assert!(
                    schema.field_with_name(c).is_ok(),
                    "{} lacks {c}",
                    t.qualified_name()
                );
            }
            let height = schema.field_with_name(t.height_column);
            assert!(
                height.is_ok_and(|f| f.data_type() == &arrow::datatypes::DataType::Int64),
                "{}: height column {} is not Int64",
                t.qualified_name(),
                t.height_column
            );
            for c in t.row_groups_by {
                assert!(
                    schema
                        .field_with_name(c)
                        .is_ok_and(|f| f.data_type() == &arrow::datatypes::DataType::Int32),
                    "{}: row-group column {c} is not Int32",
                    t.qualified_name()
                );
                assert!(
                    t.sort_key.starts_with(t.row_groups_by),
                    "{}",
                    t.qualified_name()
                );
            }
        }
    }
}
