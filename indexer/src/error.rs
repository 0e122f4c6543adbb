use std::path::PathBuf;

/// Errors of the indexer. Each says where (file and offset, block height or hash, object
/// path) and what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("io error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no blk*.dat files in {dir}")]
    NoBlockFiles { dir: PathBuf },
    #[error("{path}: obfuscation key must be 8 bytes, found {len}")]
    BadXorKey { path: PathBuf, len: u64 },
    #[error("{file} at offset {offset}: expected network magic {expected}, found {found}{hint}")]
    BadMagic {
        file: PathBuf,
        offset: u64,
        expected: String,
        found: String,
        hint: &'static str,
    },
    #[error("{file} at offset {offset}: unknown network magic {found}{hint}")]
    UnknownMagic {
        file: PathBuf,
        offset: u64,
        found: String,
        hint: &'static str,
    },
    #[error(
        "{file} at offset {offset}: block record length {len} is outside 80..={max} bytes{hint}"
    )]
    BadLength {
        file: PathBuf,
        offset: u64,
        len: u64,
        max: u64,
        hint: &'static str,
    },
    #[error(
        "{file} at offset {offset}: truncated record: {needed} bytes needed, {available} left in the file"
    )]
    Truncated {
        file: PathBuf,
        offset: u64,
        needed: u64,
        available: u64,
    },
    #[error("{file} at offset {offset}: non-zero bytes after the end-of-data padding began")]
    GarbageAfterPadding { file: PathBuf, offset: u64 },
    #[error("{file} at offset {offset}: cannot decode block {what}: {source}")]
    Decode {
        file: PathBuf,
        offset: u64,
        what: String,
        #[source]
        source: bitcoin::consensus::encode::Error,
    },
    #[error(
        "{file} at offset {offset}: block record holds {extra} bytes after the block (length field says {len})"
    )]
    TrailingBytes {
        file: PathBuf,
        offset: u64,
        len: u64,
        extra: u64,
    },
    #[error("{file} at offset {offset}: block {hash} at height {height}: merkle root mismatch")]
    MerkleMismatch {
        file: PathBuf,
        offset: u64,
        hash: String,
        height: u64,
    },
    #[error(
        "{file} at offset {offset}: block {hash} at height {height}: witness commitment mismatch"
    )]
    WitnessCommitment {
        file: PathBuf,
        offset: u64,
        hash: String,
        height: u64,
    },
    #[error(
        "cannot tell the height of block {hash} ({file} at offset {offset}), the first stored block of a pruned blocks dir: {reason}"
    )]
    UnknownHeight {
        hash: String,
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("the blocks dir holds {found} blocks but the warehouse holds {warehouse} blocks")]
    NetworkMismatch { warehouse: String, found: String },
    #[error(
        "the committed tip {hash} at height {height} is not on the best chain of the blocks dir (a reorganisation below the committed height, or another chain); refusing to mix chains"
    )]
    Reorg { height: u64, hash: String },
    #[error(
        "the blocks dir's best chain starts at height {start} but the warehouse is committed up to {committed}: the blocks after it are missing (pruned?)"
    )]
    Gap { start: u64, committed: u64 },
    #[error("{url}: {what}: {reason}")]
    Rpc {
        url: String,
        what: String,
        reason: String,
    },
    #[error("{url} does not serve {method} ({reason})")]
    RpcUnsupported {
        url: String,
        method: String,
        reason: String,
    },
    #[error("{url}: block {block}: {what}")]
    RpcData {
        url: String,
        block: u64,
        what: String,
    },
    #[error("block {block}: {what}")]
    BlockValue { block: u64, what: String },
    /// What the node answered does not fit together because its chain changed while it was
    /// read (a reorganisation at the tip): reading again is the cure.
    #[error("{url}: block {block}: {what}")]
    ChainMoved {
        url: String,
        block: u64,
        what: String,
    },
    #[error("the node at {url} is on chain id {found} but the warehouse holds chain id {expected}")]
    ChainIdMismatch {
        url: String,
        expected: String,
        found: u64,
    },
    #[error(
        "reorganisation deeper than the {kept} block hashes kept: the committed block {height} ({hash}) is no longer on the node's chain and no kept ancestor is; reindex into a new warehouse"
    )]
    DeepReorg {
        height: u64,
        hash: String,
        kept: usize,
    },
    #[error("bad arguments: {what}")]
    BadArguments { what: String },
    #[error(transparent)]
    Warehouse(#[from] ferret_schemas::Error),
    #[error("parquet error writing {path}: {source}")]
    Parquet {
        path: String,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("arrow error building {table}: {source}")]
    Arrow {
        table: String,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("object store error at {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("spent-output store at {path}: {source}")]
    Utxo {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("address-id store at {path}: {source}")]
    Addresses {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("committed data in {path} is unreadable: {reason}")]
    CorruptCommitted { path: String, reason: String },
    #[error("{0}")]
    Config(String),
    #[error("internal error: {what}")]
    Internal { what: String },
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
