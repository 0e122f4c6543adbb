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
    pub(crate) fn store(path: impl ToString, source: object_store::Error) -> Self {
        Self::Store {
            path: path.to_string(),
            source,
        }
    }
}
