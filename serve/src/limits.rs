//! What one statement may cost: time (planning, execution and streaming), memory, and a
//! place among the queries running at once; and the context a statement runs in.

use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion::common::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionContext;
use futures::{FutureExt, Stream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, DropGuard, WaitForCancellationFutureOwned};

use crate::catalog::{PinnedCatalog, Snapshot, pinned_catalogs};
use crate::guard::KERNEL_FUNCTIONS;

/// The server's limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The longest a statement may run, planning, execution and streaming its rows
    /// included. A client's `statement_timeout` can only lower it.
    pub statement_timeout: Duration,
    /// Memory one query's operators may reserve (sorts and aggregates spill beyond it
    /// where DataFusion can; elsewhere the query fails with a clear error).
    pub query_memory: usize,
    /// Connections at once (pg connections plus Flight streams in progress); more are
    /// refused.
    pub max_connections: usize,
    /// Queries running at once; more wait (within their timeout) for a place.
    pub max_concurrent_queries: usize,
    /// A connection that stays this long is closed (pg; clients reconnect).
    pub max_connection_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            statement_timeout: Duration::from_secs(300),
            query_memory: 1 << 30,
            max_connections: 128,
            max_concurrent_queries: 8,
            max_connection_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why a statement stopped before its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The statement timeout passed.
    Timeout,
    /// The client cancelled it.
    Cancelled,
    /// No place among the running queries came free in time.
    Busy,
}

impl Stop {
    /// The message a client sees.
    pub fn message(self) -> &'static str {
        match self {
            Stop::Timeout => "canceling statement due to statement timeout",
            Stop::Cancelled => "canceling statement due to user request",
            Stop::Busy => {
                "too many queries running: no place came free within the statement timeout"
            }
        }
    }

    /// The SQLSTATE.
    pub fn code(self) -> &'static str {
        match self {
            Stop::Timeout | Stop::Cancelled => "57014",
            Stop::Busy => "53000",
        }
    }
}

/// One statement's bounds: its deadline, its cancel token and its place.
pub struct Bounds {
    /// When it must have finished.
    pub deadline: Instant,
    /// Cancelled by the client.
    pub token: CancellationToken,
    permit: Arc<Held>,
    released: CancellationToken,
}

/// A place among the running queries, given back when the statement's last stream is
/// dropped (which cancels `released`).
struct Held {
    _permit: OwnedSemaphorePermit,
    _done: DropGuard,
}

impl Bounds {
    /// Waits for a place among the running queries (until the deadline or a cancel).
    pub async fn acquire(
        gate: &Arc<Semaphore>,
        timeout: Duration,
        token: CancellationToken,
    ) -> std::result::Result<Self, Stop> {
        let deadline = Instant::now() + timeout;
        let permit = tokio::select! {
            biased;
            _ = token.cancelled() => return Err(Stop::Cancelled),
            p = tokio::time::timeout_at(deadline, Arc::clone(gate).acquire_owned()) => match p {
                Ok(Ok(p)) => p,
                _ => return Err(Stop::Busy),
            },
        };
        let released = CancellationToken::new();
        Ok(Bounds {
            deadline,
            token,
            permit: Arc::new(Held {
                _permit: permit,
                _done: released.clone().drop_guard(),
            }),
            released,
        })
    }

    /// Cancelled once the statement is over: its place given back, every stream of it
    /// finished or dropped.
    pub fn released(&self) -> CancellationToken {
        self.released.clone()
    }

    /// Runs `fut` (planning, or the start of execution) within the bounds.
    pub async fn run<F: Future>(&self, fut: F) -> std::result::Result<F::Output, Stop> {
        tokio::select! {
            biased;
            _ = self.token.cancelled() => Err(Stop::Cancelled),
            r = tokio::time::timeout_at(self.deadline, fut) => r.map_err(|_| Stop::Timeout),
        }
    }

    /// `inner` ended at the deadline or on cancel with `stop(Stop)`; the place is held
    /// until the stream ends or is dropped. Dropping the inner stream stops DataFusion's
    /// execution.
    pub fn stream<S, T, E>(&self, inner: S, stop: fn(Stop) -> E) -> Bounded<S, E>
    where
        S: Stream<Item = std::result::Result<T, E>> + Unpin,
    {
        Bounded {
            inner: Some(inner),
            sleep: Box::pin(tokio::time::sleep_until(self.deadline)),
            cancelled: Box::pin(self.token.clone().cancelled_owned()),
            stop,
            _permit: Some(Arc::clone(&self.permit)),
        }
    }
}

/// A stream ended by a deadline or a cancel token.
pub struct Bounded<S, E> {
    inner: Option<S>,
    sleep: Pin<Box<Sleep>>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    stop: fn(Stop) -> E,
    _permit: Option<Arc<Held>>,
}

impl<S, T, E> Stream for Bounded<S, E>
where
    S: Stream<Item = std::result::Result<T, E>> + Unpin,
{
    type Item = std::result::Result<T, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.inner.is_none() {
            return Poll::Ready(None);
        }
        let stop = if this.cancelled.poll_unpin(cx).is_ready() {
            Some(Stop::Cancelled)
        } else if this.sleep.poll_unpin(cx).is_ready() {
            Some(Stop::Timeout)
        } else {
            None
        };
        if let Some(s) = stop {
            this.inner = None;
            this._permit = None;
            return Poll::Ready(Some(Err((this.stop)(s))));
        }
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_next(cx) {
            Poll::Ready(None) => {
                this.inner = None;
                this._permit = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                this.inner = None;
                this._permit = None;
                Poll::Ready(Some(Err(e)))
            }
            other => other,
        }
    }
}

/// A kernel table function called without the analyst role.
#[derive(Debug, Clone, Copy)]
pub struct KernelRefused(pub &'static str);

impl std::fmt::Display for KernelRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "permission denied: {}(...) runs a kernel job per query and needs the analyst role (`ferret users add --role analyst`)",
            self.0
        )
    }
}

impl std::error::Error for KernelRefused {}

impl datafusion::catalog::TableFunctionImpl for KernelRefused {
    fn call(
        &self,
        _args: &[datafusion::logical_expr::Expr],
    ) -> Result<Arc<dyn datafusion::catalog::TableProvider>> {
        Err(datafusion::common::DataFusionError::External(Box::new(
            *self,
        )))
    }
}

/// The [`KernelRefused`] inside `e`, if any.
pub fn kernel_refusal(e: &datafusion::common::DataFusionError) -> Option<KernelRefused> {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    loop {
        if let Some(k) = cur.downcast_ref::<KernelRefused>() {
            return Some(*k);
        }
        cur = cur.source()?;
    }
}

/// A context for one connection (pg) or request (Flight): the base's functions and
/// settings, its own memory pool, the warehouse pinned at `snapshot`, and the kernel
/// table functions only when `kernels`.
pub fn statement_context(
    base: &SessionContext,
    snapshot: Arc<Snapshot>,
    query_memory: usize,
    kernels: bool,
) -> Result<(SessionContext, Arc<PinnedCatalog>)> {
    let pool: Arc<dyn MemoryPool> = Arc::new(TrackConsumersPool::new(
        GreedyMemoryPool::new(query_memory),
        NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
    ));
    let runtime = RuntimeEnvBuilder::from_runtime_env(base.runtime_env().as_ref())
        .with_memory_pool(pool)
        .build_arc()?;
    let (catalogs, pinned) = pinned_catalogs(base, snapshot);
    // PostgreSQL's information_schema comes from the pinned catalog
    // ([`crate::pginfo`]); DataFusion's would shadow it.
    let mut config = base.state().config().clone();
    config.options_mut().catalog.information_schema = false;
    let state = SessionStateBuilder::new_from_existing(base.state())
        .with_config(config)
        .with_catalog_list(catalogs)
        .with_runtime_env(runtime)
        .build();
    let ctx = SessionContext::new_with_state(state);
    if !kernels {
        for f in KERNEL_FUNCTIONS {
            ctx.register_udtf(f, Arc::new(KernelRefused(f)));
        }
    }
    Ok((ctx, pinned))
}
