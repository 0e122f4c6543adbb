use object_store::path::Path;

/// Errors of the warehouse layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The warehouse URL could not be understood or its store could not be built.
    #[error("invalid warehouse url `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// The object store backing the warehouse failed.
    #[error("object store error at `{path}`: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    /// A manifest exists but cannot be parsed.
    #[error("corrupt manifest `{path}`: {source}")]
    CorruptManifest {
        path: Path,
        #[source]
        source: serde_json::Error,
    },
    /// The manifest was written by an incompatible version of Ferret.
    #[error("manifest `{path}` has schema version {found}, this build reads {expected}")]
    SchemaVersion {
        path: Path,
        found: u32,
        expected: u32,
    },
    /// Another writer committed a manifest with the same sequence number first.
    #[error(
        "commit conflict: manifest `{path}` already exists (another indexer is writing this chain)"
    )]
    CommitConflict { path: Path },
    /// A committed data file cannot be read as the table it should hold.
    #[error("committed file `{path}` is unreadable: {reason}")]
    CorruptFile { path: String, reason: String },
    /// The manifest's format is not one this build reads.
    #[error(
        "manifest `{path}` has format {found}; this build reads formats 1 and 2 (a newer Ferret wrote it?)"
    )]
    ManifestFormat { path: Path, found: u32 },
    /// The warehouse is damaged: a committed file is missing or differs from what the
    /// manifest recorded, or data files exist without a readable manifest.
    #[error("damaged warehouse: {what}")]
    Damaged { what: String },
    /// Another writer holds the lease on this part of the warehouse.
    #[error(
        "{scope}: another writer holds the lease ({holder}); wait for it to finish, or for the lease to expire if it was killed"
    )]
    LeaseHeld { scope: String, holder: String },
    /// This writer's lease was taken over (it was paused past its expiry): it must not
    /// commit.
    #[error("{scope}: this writer lost its lease to {holder}; nothing was committed")]
    LeaseLost { scope: String, holder: String },
    /// No warehouse at the given location (readers do not create one).
    #[error("no warehouse at `{url}`: {reason}")]
    NoWarehouse { url: String, reason: String },
    /// A local filesystem operation failed.
    #[error("io error at `{path}`: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An object store error at `path`.
    pub fn store(path: impl ToString, source: object_store::Error) -> Self {
        Self::Store {
            path: path.to_string(),
            source,
        }
    }
}
