//! `ferret serve`: the warehouse over Postgres wire (psql, BI tools, psycopg, SQLAlchemy)
//! and Arrow Flight SQL (ADBC, pyarrow, polars), authenticated, read-only and bounded.
//!
//! - Both protocols share one DataFusion base context, built like `ferret sql`'s (every
//!   chain table, the stored results, the kernel table functions and UDFs) plus
//!   Postgres's catalog (`pg_catalog`, `version()`, …) for clients that ask for it.
//! - Each statement sees the latest committed snapshot ([`catalog::Live`]).
//! - Authentication always: SCRAM-SHA-256 on pgwire, basic-then-bearer on Flight, from a
//!   users file of salted hashes ([`users`]).
//! - Read-only whatever the client sends ([`guard`]); limits per statement (time through
//!   the last row, memory, a place among the running queries) and per server
//!   (connections) ([`limits`]).
//!
//! Why these crates: datafusion-postgres 0.19 gives the Postgres dialect, pg_catalog
//! and Arrow→Postgres encoding that BI tools need, and pgwire 0.41 the protocol; its own
//! `serve` is replaced (no auth, one shared SCRAM state, no shutdown, TLS failures fall
//! back to plaintext). For Flight, arrow-flight's `FlightSqlService` is implemented here
//! rather than datafusion-flight-sql-server: that crate has no handshake, runs Substrait
//! plans without its SQL checks, and needs `protoc` to build.

pub mod catalog;
pub mod compat;
pub mod flight;
pub mod guard;
pub mod limits;
mod pg;
pub mod pginfo;
pub mod pgtypes;
pub mod tls;
pub mod users;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::StringArray;
use arrow::datatypes::DataType;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::pgwire::api::auth::DefaultServerParameterProvider;
use ferret_query::KernelOptions;
use ferret_schemas::Warehouse;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use limits::Limits;
pub use users::{Role, User, Users};

/// What can go wrong starting a server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The users file.
    #[error("users: {0}")]
    Users(String),
    /// The certificate or key.
    #[error("TLS: {0}")]
    Tls(String),
    /// A listen address.
    #[error("{0}")]
    Listen(String),
    /// The warehouse or the session.
    #[error("warehouse: {0}")]
    Warehouse(String),
}

/// A `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// How to serve.
#[derive(Clone, Debug)]
pub struct Config {
    /// Postgres wire listen address (None: off).
    pub pg_listen: Option<SocketAddr>,
    /// Flight SQL listen address (None: off).
    pub flight_listen: Option<SocketAddr>,
    /// Certificate chain and key (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Serve plaintext on a non-loopback address (without TLS) or accept plaintext pg
    /// clients beside TLS ones.
    pub allow_plaintext: bool,
    /// The limits.
    pub limits: Limits,
    /// The kernel table functions' options (`mem_mb` runs them out of core).
    pub kernels: KernelOptions,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pg_listen: Some(SocketAddr::from(([127, 0, 0, 1], 5433))),
            flight_listen: Some(SocketAddr::from(([127, 0, 0, 1], 50051))),
            tls: None,
            allow_plaintext: false,
            limits: Limits::default(),
            kernels: KernelOptions::default(),
        }
    }
}

/// What both protocols share.
pub(crate) struct Shared {
    base: SessionContext,
    live: Arc<catalog::Live>,
    users: std::sync::RwLock<Arc<Users>>,
    limits: Limits,
    queries: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    cancels: pg::CancelRegistry,
    require_tls: bool,
    tls: Option<tls::Tls>,
    pg_params: Arc<DefaultServerParameterProvider>,
    secret: [u8; 32],
    /// Cancelled when the server stops.
    stop: CancellationToken,
}

impl Shared {
    /// The users as they are now (replaced by [`Running::reload_users`]).
    pub(crate) fn users(&self) -> Arc<Users> {
        match self.users.read() {
            Ok(u) => Arc::clone(&u),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Whether `name` still holds the credential and role it authenticated with: a user
    /// removed, or given a new password or role, loses the sessions it had.
    pub(crate) fn still_valid(&self, name: &str, salted: &[u8], role: Role) -> bool {
        self.users()
            .get(name)
            .is_some_and(|u| u.role == role && users::constant_time_eq(&u.salted, salted))
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// The `version()` clients parse: PostgreSQL's form first (SQLAlchemy and BI tools read
/// the number), then what is really answering.
pub fn version_string() -> String {
    format!(
        "PostgreSQL 16.6 (Ferret {}, Apache DataFusion 55.2.0) on x86_64-pc-linux-gnu, read-only",
        env!("CARGO_PKG_VERSION")
    )
}

fn version_udf() -> ScalarUDF {
    let v = version_string();
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Array(Arc::new(StringArray::from(vec![
                v.clone(),
            ]))))
        }),
    )
}

/// `to_regtype(name)`: the oid of a built-in type by name, NULL for others (psycopg and
/// SQLAlchemy look types up this way on connect, e.g. `hstore`, which this server has not).
fn to_regtype_udf() -> ScalarUDF {
    fn oid(name: &str) -> Option<i32> {
        let n = name
            .trim()
            .trim_start_matches("pg_catalog.")
            .trim_matches('"')
            .to_ascii_lowercase();
        Some(match n.as_str() {
            "bool" | "boolean" => 16,
            "bytea" => 17,
            "int8" | "bigint" => 20,
            "int2" | "smallint" => 21,
            "int4" | "int" | "integer" => 23,
            "text" => 25,
            "oid" => 26,
            "json" => 114,
            "float4" | "real" => 700,
            "float8" | "double precision" => 701,
            "varchar" | "character varying" => 1043,
            "date" => 1082,
            "timestamp" | "timestamp without time zone" => 1114,
            "timestamptz" | "timestamp with time zone" => 1184,
            "numeric" | "decimal" => 1700,
            "uuid" => 2950,
            "jsonb" => 3802,
            _ => return None,
        })
    }
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = arrow::array::AsArray::as_string::<i32>(&arrays[0]);
            let out: arrow::array::Int32Array = names.iter().map(|n| n.and_then(oid)).collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    )
}

/// Catalog functions BI tools and drivers call that this server answers with a constant:
/// every type visible, no serial sequences, no partition keys or constraint definitions.
fn compat_udfs() -> Vec<ScalarUDF> {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{ScalarFunctionArgs, ScalarUDFImpl, Signature};
    #[derive(Debug, PartialEq, Eq, Hash)]
    struct Constant {
        name: &'static str,
        value: ScalarValue,
        signature: Signature,
    }
    impl ScalarUDFImpl for Constant {
        fn name(&self) -> &str {
            self.name
        }
        fn signature(&self) -> &Signature {
            &self.signature
        }
        fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
            Ok(self.value.data_type())
        }
        fn invoke_with_args(
            &self,
            _args: ScalarFunctionArgs,
        ) -> datafusion::common::Result<ColumnarValue> {
            Ok(ColumnarValue::Scalar(self.value.clone()))
        }
    }
    let c = |name: &'static str, value: ScalarValue| {
        ScalarUDF::new_from_impl(Constant {
            name,
            value,
            signature: Signature::variadic_any(Volatility::Stable),
        })
    };
    vec![
        c("pg_type_is_visible", ScalarValue::Boolean(Some(true))),
        c("pg_function_is_visible", ScalarValue::Boolean(Some(true))),
        c("pg_get_serial_sequence", ScalarValue::Utf8(None)),
        c("pg_get_partkeydef", ScalarValue::Utf8(None)),
        c("pg_get_constraintdef", ScalarValue::Utf8(None)),
        c("pg_get_indexdef", ScalarValue::Utf8(None)),
        c("pg_get_viewdef", ScalarValue::Utf8(None)),
        c("pg_get_triggerdef", ScalarValue::Utf8(None)),
        c("col_description", ScalarValue::Utf8(None)),
        c("pg_backend_pid", ScalarValue::Int32(Some(0))),
        c("pg_is_in_recovery", ScalarValue::Boolean(Some(false))),
        c("inet_server_addr", ScalarValue::Utf8(None)),
        c("pg_postmaster_start_time", ScalarValue::Utf8(None)),
    ]
}

/// The base context: `ferret sql`'s session plus Postgres's catalog and `version()`.
pub async fn base_context(wh: &Warehouse, kernels: KernelOptions) -> Result<SessionContext> {
    let ctx = ferret_query::session_with(wh, kernels)
        .await
        .map_err(|e| Error::Warehouse(e.to_string()))?;
    setup_pg_catalog(&ctx, catalog::CATALOG, EmptyContextProvider)
        .map_err(|e| Error::Warehouse(format!("pg_catalog: {e}")))?;
    ctx.register_udf(version_udf());
    ctx.register_udf(to_regtype_udf());
    for f in compat::udfs() {
        ctx.register_udf(f);
    }
    for f in compat_udfs() {
        if datafusion::execution::FunctionRegistry::udf(&ctx, f.name()).is_err() {
            ctx.register_udf(f);
        }
    }
    Ok(ctx)
}

/// Replaces a running server's users (`ferret serve` does on SIGHUP).
#[derive(Clone, Debug)]
pub struct UsersHandle {
    shared: Arc<Shared>,
}

impl UsersHandle {
    /// Replaces the users. New logins use them at once; a session whose user was removed,
    /// or whose password or role changed, is refused at its next statement (pg: FATAL
    /// 28000, and the connection closes; Flight: UNAUTHENTICATED, authenticate again).
    /// An empty set is refused and the old one kept.
    pub fn replace(&self, users: Users) -> Result<()> {
        if users.is_empty() {
            return Err(Error::Users(
                "the new users file has no users: keeping the old one".into(),
            ));
        }
        let n = users.len();
        match self.shared.users.write() {
            Ok(mut u) => *u = Arc::new(users),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(users),
        }
        tracing::info!(users = n, "users replaced");
        Ok(())
    }

    /// Loads `path` and replaces the users with it; on any error the old users are kept.
    pub fn reload_from(&self, path: &std::path::Path) -> Result<()> {
        let users = Users::load(path)?;
        self.replace(users)
    }

    /// Reloads `path` whenever it changes (its modification time, size or inode), checked
    /// every `every`: a Kubernetes Secret mounted as a directory is updated in place, and
    /// nothing sends the server a signal. Errors are logged and the old users kept.
    pub fn watch(&self, path: std::path::PathBuf, every: std::time::Duration) {
        fn stamp(p: &std::path::Path) -> Option<(std::time::SystemTime, u64, u64)> {
            // Follows links: a Secret volume swaps a `..data` link under the file.
            let m = std::fs::metadata(p).ok()?;
            #[cfg(unix)]
            let ino = std::os::unix::fs::MetadataExt::ino(&m);
            #[cfg(not(unix))]
            let ino = 0;
            Some((m.modified().ok()?, m.len(), ino))
        }
        let handle = self.clone();
        let stop = self.shared.stop.clone();
        tokio::spawn(async move {
            let mut last = stamp(&path);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let now = stamp(&path);
                if now.is_some() && now != last {
                    last = now;
                    match handle.reload_from(&path) {
                        Ok(()) => {
                            tracing::info!(file = %path.display(), "users file changed: reloaded")
                        }
                        Err(e) => {
                            tracing::error!(error = %e, file = %path.display(), "users file changed but not reloaded: keeping the old users")
                        }
                    }
                }
            }
        });
    }
}

/// A running server.
pub struct Running {
    /// Where the Postgres side listens.
    pub pg_addr: Option<SocketAddr>,
    /// Where the Flight side listens.
    pub flight_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
    shared: Arc<Shared>,
}

impl Running {
    /// A handle that replaces the users while the server runs.
    pub fn users_handle(&self) -> UsersHandle {
        UsersHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stops accepting, closes connections and waits for both sides.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits until the server stops (after [`Running::shutdown_token`] is cancelled or a
    /// side fails).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

fn check_plaintext(addr: SocketAddr, tls: bool, allow: bool, what: &str) -> Result<()> {
    if !tls && !allow && !addr.ip().is_loopback() {
        return Err(Error::Listen(format!(
            "{what} {addr} is not a loopback address and no certificate was given: pass --tls-cert and --tls-key, or --allow-plaintext to serve passwords in the clear"
        )));
    }
    Ok(())
}

/// Binds both listeners and starts serving `wh` to `users`.
pub async fn start(wh: Warehouse, users: Users, config: Config) -> Result<Running> {
    if users.is_empty() {
        return Err(Error::Users(
            "no users: add one with `ferret users add --file USERS NAME`".into(),
        ));
    }
    if config.pg_listen.is_none() && config.flight_listen.is_none() {
        return Err(Error::Listen(
            "neither a pg nor a flight address to listen on".into(),
        ));
    }
    tls::install_provider();
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls::Tls::load(cert, key)?),
        None => None,
    };
    for (addr, what) in [
        (config.pg_listen, "pg address"),
        (config.flight_listen, "flight address"),
    ] {
        if let Some(a) = addr {
            check_plaintext(a, tls.is_some(), config.allow_plaintext, what)?;
        }
    }
    let base = base_context(&wh, config.kernels.clone()).await?;
    let live = Arc::new(catalog::Live::new(wh));
    // Fail at start, not at the first query, when the warehouse cannot be read.
    live.current()
        .await
        .map_err(|e| Error::Warehouse(e.to_string()))?;
    let mut params = DefaultServerParameterProvider::default();
    params.server_version = "16.6 (Ferret)".to_string();
    params.is_superuser = false;
    params.default_transaction_read_only = true;
    params.scram_iterations = users.iterations();
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
    let limits = config.limits.clone();
    let shutdown = CancellationToken::new();
    let shared = Arc::new(Shared {
        base,
        live,
        users: std::sync::RwLock::new(Arc::new(users)),
        queries: Arc::new(Semaphore::new(limits.max_concurrent_queries.max(1))),
        connections: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        limits,
        cancels: pg::CancelRegistry::default(),
        require_tls: tls.is_some() && !config.allow_plaintext,
        tls,
        pg_params: Arc::new(params),
        secret,
        stop: shutdown.clone(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut pg_addr = None;
    if let Some(addr) = config.pg_listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Listen(format!("pg address {addr}: {e}")))?;
        pg_addr = listener.local_addr().ok();
        tracing::info!(addr = ?pg_addr, tls = shared.tls.is_some(), "Postgres wire listening");
        tasks.spawn(pg::serve(Arc::clone(&shared), listener, shutdown.clone()));
    }
    let mut flight_addr = None;
    if let Some(addr) = config.flight_listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Listen(format!("flight address {addr}: {e}")))?;
        flight_addr = listener.local_addr().ok();
        tracing::info!(addr = ?flight_addr, tls = shared.tls.is_some(), "Flight SQL listening");
        let mut server = flight_server(&shared)?;
        let incoming = conn::limited(listener, Arc::clone(&shared.connections));
        let stop = shutdown.clone();
        let svc = arrow_flight::flight_service_server::FlightServiceServer::new(
            flight::Flight::new(Arc::clone(&shared)),
        )
        .max_decoding_message_size(16 << 20);
        tasks.spawn(async move {
            if let Err(e) = server
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "Flight SQL server stopped");
            }
        });
    }
    Ok(Running {
        pg_addr,
        flight_addr,
        shutdown,
        tasks,
        shared,
    })
}

fn flight_server(shared: &Shared) -> Result<tonic::transport::Server> {
    let mut b = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .max_concurrent_streams(Some(64))
        .concurrency_limit_per_connection(64);
    if let Some(t) = &shared.tls {
        let identity = tonic::transport::Identity::from_pem(&t.cert_pem, &t.key_pem);
        b = b
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| Error::Tls(format!("Flight TLS: {e}")))?;
    }
    Ok(b)
}

mod conn {
    //! Flight connections counted against the server's connection limit.

    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use futures::Stream;
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{OwnedSemaphorePermit, Semaphore};
    use tonic::transport::server::{Connected, TcpConnectInfo};

    /// A TCP stream holding a place among the server's connections.
    pub struct Limited {
        inner: TcpStream,
        _permit: OwnedSemaphorePermit,
    }

    impl Connected for Limited {
        type ConnectInfo = TcpConnectInfo;
        fn connect_info(&self) -> Self::ConnectInfo {
            self.inner.connect_info()
        }
    }

    impl AsyncRead for Limited {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Limited {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_shutdown(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    /// Accepted connections; one over the limit is closed at once.
    pub fn limited(
        listener: TcpListener,
        places: Arc<Semaphore>,
    ) -> impl Stream<Item = std::io::Result<Limited>> {
        futures::stream::unfold((listener, places), |(listener, places)| async move {
            loop {
                match listener.accept().await {
                    Ok((socket, peer)) => {
                        let _ = socket.set_nodelay(true);
                        match Arc::clone(&places).try_acquire_owned() {
                            Ok(permit) => {
                                return Some((
                                    Ok(Limited {
                                        inner: socket,
                                        _permit: permit,
                                    }),
                                    (listener, places),
                                ));
                            }
                            Err(_) => {
                                tracing::warn!(%peer, "refused (flight): too many connections");
                                drop(socket);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed (flight)");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        })
    }
}
