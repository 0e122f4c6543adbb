/// Errors of the kernels.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `--device gpu` was asked for and wgpu found no adapter at all.
    #[error(
        "no GPU adapter found (wgpu backend from WGPU_BACKEND or the default set); install a Vulkan driver (e.g. mesa-vulkan-drivers for lavapipe) or use --device cpu"
    )]
    NoAdapter,
    /// The adapter refused a device with its own limits.
    #[error("cannot open a device on {adapter}: {reason}")]
    Device { adapter: String, reason: String },
    /// A graph does not fit the kernel's id space or the adapter's limits.
    #[error("graph too large: {0}")]
    TooLarge(String),
    /// An edge names a node outside the graph.
    #[error("edge {index} ({src} -> {dst}) names a node outside 0..{nodes}")]
    BadEdge {
        index: usize,
        src: u32,
        dst: u32,
        nodes: u32,
    },
    /// A query names something the warehouse does not have, or is malformed.
    #[error("{0}")]
    BadQuery(String),
    /// A graph handed to a kernel is malformed.
    #[error("malformed graph: {0}")]
    BadGraph(String),
    /// Reading the warehouse failed.
    #[error(transparent)]
    Warehouse(Box<ferret_schemas::Error>),
    /// The warehouse has nothing for the job to read.
    #[error("nothing committed for {chain} in the warehouse: run `ferret index {chain}` first")]
    NothingIndexed { chain: &'static str },
    /// Writing results failed.
    #[error("writing {path}: {reason}")]
    Write { path: String, reason: String },
    /// A GPU operation failed (validation, out of memory, lost device, mapping).
    #[error("gpu {what}: {reason}")]
    Gpu { what: &'static str, reason: String },
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A scratch or local file operation on `path` that failed.
pub(crate) fn io_err(path: &std::path::Path, e: std::io::Error) -> Error {
    Error::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}
