//! Errors of the synthetic Bitcoin chain generator.

use std::path::{Path, PathBuf};

/// Result type of the generator.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while generating a synthetic chain.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file or directory failed.
    #[error("i/o error on {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value is out of range.
    #[error("invalid synth config: {field} {reason}")]
    InvalidConfig {
        /// The offending field of `SynthConfig`.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The blocks directory already holds files.
    #[error("output directory {} is not empty", path.display())]
    OutputNotEmpty {
        /// The blocks directory.
        path: PathBuf,
    },
    /// A block does not fit a blk record's 32-bit length field.
    #[error("block at height {height} is {size} bytes, too large for a blk record")]
    BlockTooLarge {
        /// Height of the block.
        height: u32,
        /// Its serialized size.
        size: usize,
    },
    /// Block timestamps ran past what a header's 32-bit time can hold.
    #[error("block time overflows u32 at height {height}")]
    TimeOverflow {
        /// Height of the block.
        height: u32,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
