//! The Postgres wire side: pgwire's protocol and datafusion-postgres's SQL dialect,
//! catalog and Arrow encoding, with Ferret's own accept loop, authentication,
//! read-only guard, limits and cancel.
//!
//! Each connection gets fresh handlers (SCRAM keeps per-handshake state), its own
//! DataFusion context and memory pool, and its own pinned catalog. Every startup error
//! is FATAL: pgwire lets a connection continue after a non-FATAL error during startup,
//! which would skip authentication.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use datafusion::common::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, Parser};
use futures::{Sink, StreamExt};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::send_execution_response;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::FieldInfo;
use pgwire::api::results::Response;
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::Entry;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ErrorHandler, PgWireConnectionState, PgWireServerHandlers,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::extendedquery::{Execute, PortalSuspended};
use pgwire::messages::response::EmptyQueryResponse;
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;
use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::guard::{self, KERNEL_FUNCTIONS, Refusal};
use crate::users::Role;

/// How long past its deadline a statement may stay stuck in a socket before the
/// connection is closed.
const STUCK_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
use crate::Shared;
use crate::limits::{Bounds, Stop, statement_context};

fn error(severity: &str, code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        severity.to_string(),
        code.to_string(),
        message.into(),
    )))
}

fn refused(r: Refusal) -> PgWireError {
    error("ERROR", r.code, r.message)
}

fn stopped(s: Stop) -> PgWireError {
    error("ERROR", s.code(), s.message())
}

fn df_error(e: DataFusionError) -> PgWireError {
    if let Some(k) = crate::limits::kernel_refusal(&e) {
        return error("ERROR", "42501", k.to_string());
    }
    let root = e.find_root();
    let code = match root {
        DataFusionError::SQL(..) => Some("42601"),
        DataFusionError::Plan(m) if m.contains("not found") => Some("42P01"),
        DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => Some("42000"),
        _ => None,
    };
    if let Some(code) = code {
        return error("ERROR", code, root.to_string());
    }
    if matches!(root, DataFusionError::ResourcesExhausted(_)) {
        return error(
            "ERROR",
            "53200",
            format!("out of memory for this query (the server's per-query limit): {root}"),
        );
    }
    PgWireError::ApiError(Box::new(e))
}

/// Maps errors from inside datafusion-postgres to SQLSTATEs clients can act on.
fn map_error(e: PgWireError) -> PgWireError {
    match e {
        PgWireError::ApiError(inner) => match inner.downcast::<DataFusionError>() {
            Ok(df) => df_error(*df),
            Err(other) => {
                match other.downcast::<datafusion::sql::sqlparser::parser::ParserError>() {
                    Ok(p) => error("ERROR", "42601", format!("syntax error: {p}")),
                    Err(other) => PgWireError::ApiError(other),
                }
            }
        },
        other => other,
    }
}

/// Who a connection authenticated as.
#[derive(Clone, Debug)]
struct Authenticated {
    user: String,
    role: Role,
    /// The stored credential it logged in with (a reload that changes it ends the
    /// connection).
    salted: Vec<u8>,
}

/// A cancel key in one form whatever the protocol version wrote it as.
type CancelKey = (i32, Vec<u8>);

fn cancel_key(pid: i32, secret: &SecretKey) -> CancelKey {
    match secret {
        SecretKey::I32(v) => (pid, v.to_be_bytes().to_vec()),
        SecretKey::Bytes(b) => (pid, b.to_vec()),
    }
}

/// Cancel tokens of the authenticated connections, by (pid, secret key).
#[derive(Default)]
pub(crate) struct CancelRegistry {
    map: Mutex<HashMap<CancelKey, Arc<Mutex<CancellationToken>>>>,
}

impl CancelRegistry {
    fn insert(&self, key: CancelKey, token: Arc<Mutex<CancellationToken>>) {
        if let Ok(mut m) = self.map.lock() {
            m.insert(key, token);
        }
    }
    fn remove(&self, key: &CancelKey) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(key);
        }
    }
    fn cancel(&self, key: &CancelKey) -> bool {
        let token = self.map.lock().ok().and_then(|m| m.get(key).cloned());
        match token {
            Some(t) => {
                if let Ok(t) = t.lock() {
                    t.cancel();
                }
                true
            }
            None => false,
        }
    }
}

/// One connection's state, shared by its handlers.
struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    ctx: Arc<SessionContext>,
    pinned: Arc<crate::catalog::PinnedCatalog>,
    service: Arc<DfSessionService>,
    parser: Arc<FerretParser>,
    user: OnceLock<Authenticated>,
    token: Arc<Mutex<CancellationToken>>,
    cancel_key: Mutex<Option<CancelKey>>,
    /// Closes the connection (a statement that outlived its deadline because the client
    /// stopped reading its rows).
    kill: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Ok(Some(key)) = self.cancel_key.lock().map(|mut k| k.take()) {
            self.shared.cancels.remove(&key);
        }
    }
}

impl Conn {
    fn authenticated(&self) -> PgWireResult<&Authenticated> {
        let a = self
            .user
            .get()
            .ok_or_else(|| error("FATAL", "28000", "not authenticated"))?;
        if !self.shared.still_valid(&a.user, &a.salted, a.role) {
            tracing::warn!(peer = %self.peer, user = %a.user, "closing: the user was removed or its password or role changed");
            // FATAL closes the connection after the error is sent; the kill is for a
            // client that keeps the socket open regardless.
            let kill = self.kill.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                kill.cancel();
            });
            return Err(error(
                "FATAL",
                "28000",
                "the user was removed or its password or role changed: connect again",
            ));
        }
        Ok(a)
    }

    /// A fresh cancel token for the next statement.
    fn new_token(&self) -> CancellationToken {
        let t = CancellationToken::new();
        if let Ok(mut cur) = self.token.lock() {
            *cur = t.clone();
        }
        t
    }

    /// Pins the warehouse's current snapshot for the statement that starts now.
    async fn pin(&self) -> PgWireResult<()> {
        let snapshot = self.shared.live.current().await.map_err(df_error)?;
        self.pinned.pin(snapshot);
        Ok(())
    }

    /// The statement timeout for this connection: the server's, or the client's
    /// `SET statement_timeout` when that is lower (0 means the server's).
    fn timeout<C: ClientInfo + ?Sized>(&self, client: &C) -> std::time::Duration {
        let server = self.shared.limits.statement_timeout;
        match client
            .metadata()
            .get("statement_timeout_ms")
            .and_then(|v| v.parse::<u64>().ok())
        {
            Some(ms) if ms > 0 => server.min(std::time::Duration::from_millis(ms)),
            _ => server,
        }
    }

    /// Closes the connection if the statement is still holding its place some seconds
    /// after its deadline: its rows are stuck in a socket the client does not read, where
    /// no deadline inside the row stream can fire.
    fn watch(&self, bounds: &Bounds) {
        let released = bounds.released();
        let kill = self.kill.clone();
        let peer = self.peer;
        let at = bounds.deadline + STUCK_GRACE;
        tokio::spawn(async move {
            tokio::select! {
                _ = released.cancelled() => {}
                _ = tokio::time::sleep_until(at) => {
                    tracing::warn!(%peer, "closing a connection whose client stopped reading past the statement timeout");
                    kill.cancel();
                }
            }
        });
    }

    fn bound(&self, bounds: &Bounds, resp: Response) -> Response {
        match resp {
            Response::Query(mut q) => {
                let rows = std::mem::replace(&mut q.data_rows, Box::pin(futures::stream::empty()));
                let rows = rows.map(|r| r.map_err(map_error));
                q.data_rows = Box::pin(bounds.stream(rows, stopped));
                Response::Query(q)
            }
            other => other,
        }
    }
}

/// The read-only guard and snapshot pin, first among the hooks.
struct Guard {
    conn: std::sync::Weak<Conn>,
}

impl Guard {
    fn conn(&self) -> PgWireResult<Arc<Conn>> {
        self.conn
            .upgrade()
            .ok_or_else(|| error("FATAL", "08006", "connection closed"))
    }

    async fn admit(&self, statement: &Statement) -> PgWireResult<Arc<Conn>> {
        let conn = self.conn()?;
        let user = conn.authenticated()?;
        if let Err(r) = guard::check_statement(statement) {
            tracing::warn!(user = %user.user, peer = %conn.peer, code = r.code, statement = %truncate(&statement.to_string()), "refused");
            return Err(refused(r));
        }
        Ok(conn)
    }
}

/// Plans a query against the context's pinned snapshot, and checks the plan.
async fn plan_statement(statement: &Statement, ctx: &SessionContext) -> PgWireResult<LogicalPlan> {
    let rewritten;
    let statement = if crate::compat::is_catalog_query(statement) {
        let mut s = statement.clone();
        crate::compat::rewrite_catalog_query(&mut s);
        rewritten = s;
        &rewritten
    } else {
        statement
    };
    let state = ctx.state();
    let mut planned = state
        .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
        .await;
    // Catalog queries are optimized here too, where an unsupported correlated
    // subquery shows (user queries meet that error at execution, unchanged).
    if let Ok(p) = &planned
        && crate::compat::is_catalog_query(statement)
        && let Err(e) = state.optimize(p)
    {
        planned = Err(e);
    }
    let plan = match planned {
        Ok(p) => p,
        Err(e)
            if e.to_string()
                .contains("Correlated scalar subquery must be aggregated") =>
        {
            // BI tools' catalog queries (SQLAlchemy's get_columns) use correlated
            // scalar subqueries DataFusion plans only when aggregated.
            let mut rewritten = statement.clone();
            if !crate::compat::aggregate_scalar_subqueries(&mut rewritten) {
                return Err(df_error(e));
            }
            ctx.state()
                .statement_to_plan(DfStatement::Statement(Box::new(rewritten)))
                .await
                .map_err(df_error)?
        }
        Err(e) => return Err(df_error(e)),
    };
    guard::check_plan(&plan).map_err(refused)?;
    Ok(plan)
}

fn truncate(s: &str) -> String {
    if s.len() <= 200 {
        return s.to_string();
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Savepoints are answered (there is nothing to undo on a read-only server): drivers
/// wrap work in them (psycopg's nested transactions, SQLAlchemy's inspector).
fn savepoint(s: &Statement) -> Option<Response> {
    let tag = match s {
        Statement::Savepoint { .. } => "SAVEPOINT",
        Statement::ReleaseSavepoint { .. } => "RELEASE",
        Statement::Rollback {
            savepoint: Some(_), ..
        } => "ROLLBACK",
        // Isolation levels: every statement reads one snapshot already.
        Statement::Set(datafusion::sql::sqlparser::ast::Set::SetTransaction { .. }) => "SET",
        _ => return None,
    };
    Some(Response::Execution(pgwire::api::results::Tag::new(tag)))
}

fn empty_plan() -> LogicalPlan {
    LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(datafusion::common::DFSchema::empty()),
    })
}

fn is_query(s: &Statement) -> bool {
    match s {
        Statement::Query(_) => true,
        Statement::Explain { statement, .. } => matches!(statement.as_ref(), Statement::Query(_)),
        _ => false,
    }
}

#[async_trait]
impl QueryHook for Guard {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        let conn = match self.admit(statement).await {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        if let Some(r) = savepoint(statement) {
            return Some(Ok(r));
        }
        if !is_query(statement) {
            return None;
        }
        // Plan and check here, then run the checked plan (not the text again).
        let result = async {
            let plan = plan_statement(statement, ctx).await?;
            let df = ctx.execute_logical_plan(plan).await.map_err(df_error)?;
            let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
            let resp = crate::pgtypes::encode(df, &Format::UnifiedText, Some(options))
                .await
                .map_err(map_error)?;
            Ok(Response::Query(resp))
        }
        .await;
        drop(conn);
        Some(result)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let conn = match self.admit(statement).await {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        if savepoint(statement).is_some() {
            return Some(Ok(empty_plan()));
        }
        if !is_query(statement) {
            return None;
        }
        // Planned here for Describe (parameter and result types), against the snapshot
        // the connection already holds (no listing of the warehouse on this path); planned
        // again at each Execute against the snapshot current then.
        if !conn.pinned.has_snapshot()
            && let Err(e) = conn.pin().await
        {
            return Some(Err(e));
        }
        Some(plan_statement(statement, ctx).await)
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        _params: &datafusion::common::ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Err(e) = self.admit(statement).await {
            return Some(Err(e));
        }
        if let Some(r) = savepoint(statement) {
            return Some(Ok(r));
        }
        if let Err(r) = guard::check_plan(plan) {
            return Some(Err(refused(r)));
        }
        None
    }
}

/// Query handlers of one connection: the guard and limits around datafusion-postgres.
pub(crate) struct Queries {
    conn: Arc<Conn>,
}

#[async_trait]
impl SimpleQueryHandler for Queries {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = &self.conn;
        let user = conn.authenticated()?.user.clone();
        let token = conn.new_token();
        let bounds = Bounds::acquire(&conn.shared.queries, conn.timeout(client), token)
            .await
            .map_err(stopped)?;
        conn.watch(&bounds);
        tracing::debug!(%user, peer = %conn.peer, query = %truncate(query), "query");
        let responses = bounds
            .run(async {
                conn.pin().await?;
                SimpleQueryHandler::do_query(conn.service.as_ref(), client, query).await
            })
            .await
            .map_err(stopped)?
            .map_err(map_error)?;
        Ok(responses
            .into_iter()
            .map(|r| conn.bound(&bounds, r))
            .collect())
    }
}

type DfStmt = <DfSessionService as ExtendedQueryHandler>::Statement;

/// datafusion-postgres's parser, with result descriptions that match what
/// [`crate::pgtypes`] sends (wide decimals as `numeric`).
pub(crate) struct FerretParser {
    inner: Arc<Parser>,
}

#[async_trait]
impl QueryParser for FerretParser {
    type Statement = DfStmt;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<pgwire::api::Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        self.inner.parse_sql(client, sql, types).await
    }

    /// Every parameter, by position: the plan's type, or text for one the plan does not
    /// type (a table function's argument, bound as a literal at execution).
    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<pgwire::api::Type>> {
        match stmt {
            (_, Some((statement, plan))) => parameter_types(statement, plan)?
                .iter()
                .map(|t| match t {
                    Some(t) => datafusion_postgres::arrow_pg::datatypes::into_pg_type(t),
                    None => Ok(pgwire::api::Type::TEXT),
                })
                .collect(),
            _ => self.inner.get_parameter_types(stmt),
        }
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match stmt {
            (_, Some((_, plan))) if !matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Dml(_)) => {
                crate::pgtypes::pg_fields(
                    plan.schema().as_arrow(),
                    column_format.unwrap_or(&Format::UnifiedText),
                    None,
                )
            }
            _ => Ok(vec![]),
        }
    }
}

/// The types of `$1`, `$2`, … by position, for every parameter of `statement` (a
/// parameter the plan does not type, such as a table function's argument, is None).
fn parameter_types(
    statement: &Statement,
    plan: &LogicalPlan,
) -> PgWireResult<Vec<Option<arrow::datatypes::DataType>>> {
    crate::compat::parameter_slots(crate::compat::max_placeholder(statement), plan)
        .map_err(df_error)
}

#[async_trait]
impl ExtendedQueryHandler for Queries {
    type Statement = DfStmt;
    type QueryParser = FerretParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.conn.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = &self.conn;
        conn.authenticated()?;
        let token = conn.new_token();
        let bounds = Bounds::acquire(&conn.shared.queries, conn.timeout(client), token)
            .await
            .map_err(stopped)?;
        conn.watch(&bounds);
        let resp = match &portal.statement.statement {
            (_, Some((statement, prepared))) if is_query(statement) => {
                // Planned again against the snapshot current now (a statement prepared
                // before a commit sees the commit, like a simple query), checked, then
                // run and encoded here (exact decimals), with the client's result
                // formats.
                let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                let format = &portal.result_column_format;
                bounds
                    .run(async {
                        conn.pin().await?;
                        // Table functions read their arguments at planning: bound values
                        // go in as literals first.
                        let known = parameter_types(statement, prepared)?;
                        let refs: Vec<Option<&arrow::datatypes::DataType>> =
                            known.iter().map(Option::as_ref).collect();
                        let params = deserialize_parameters(portal, &refs)?;
                        let mut bound = statement.clone();
                        crate::compat::bind_table_function_args(&mut bound, &params);
                        let plan = plan_statement(&bound, &conn.ctx).await?;
                        let types_of = |p: &LogicalPlan| -> Vec<arrow::datatypes::DataType> {
                            p.schema().fields().iter().map(|f| f.data_type().clone()).collect()
                        };
                        if types_of(&plan) != types_of(prepared) {
                            return Err(error(
                                "ERROR",
                                "0A000",
                                "cached plan must not change result type: the warehouse's tables changed since this statement was prepared; prepare it again",
                            ));
                        }
                        let plan = plan
                            .replace_params_with_values(&params)
                            .map_err(df_error)?;
                        let df = conn
                            .ctx
                            .execute_logical_plan(plan)
                            .await
                            .map_err(df_error)?;
                        crate::pgtypes::encode(df, format, Some(options)).await
                    })
                    .await
                    .map_err(stopped)?
                    .map(Response::Query)
                    .map_err(map_error)?
            }
            _ => bounds
                .run(ExtendedQueryHandler::do_query(
                    conn.service.as_ref(),
                    client,
                    portal,
                    max_rows,
                ))
                .await
                .map_err(stopped)?
                .map_err(map_error)?,
        };
        Ok(conn.bound(&bounds, resp))
    }

    /// pgwire's own Execute collects every row of the portal in memory before sending
    /// the first (unbounded for a large result); this one streams them to the socket as
    /// they come, and keeps the rest of the stream in the portal when the client asked
    /// for `max_rows`.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use futures::SinkExt;
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let mut status = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
        let max_rows = usize::try_from(message.max_rows.max(0)).unwrap_or(0);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(p)) => p,
            Some(Entry::Empty) => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return Ok(());
            }
            None => return Err(PgWireError::PortalNotFound(name.to_owned())),
        };
        let state = portal.state();
        let taken = std::mem::take(&mut *state.lock().await);
        let response = match taken {
            PortalExecutionState::Initial => {
                match ExtendedQueryHandler::do_query(self, client, portal.as_ref(), max_rows)
                    .await?
                {
                    Response::Query(q) => Some(q),
                    Response::EmptyQuery => {
                        client
                            .feed(PgWireBackendMessage::EmptyQueryResponse(
                                EmptyQueryResponse::new(),
                            ))
                            .await?;
                        None
                    }
                    Response::Execution(tag) => {
                        send_execution_response(client, tag).await?;
                        None
                    }
                    Response::TransactionStart(tag) => {
                        send_execution_response(client, tag).await?;
                        status = status.to_in_transaction_state();
                        None
                    }
                    Response::TransactionEnd(tag) => {
                        send_execution_response(client, tag).await?;
                        status = status.to_idle_state();
                        client.portal_store().rm_portal(pgwire::api::DEFAULT_NAME);
                        None
                    }
                    Response::Error(e) => {
                        client
                            .send(PgWireBackendMessage::ErrorResponse((*e).into()))
                            .await?;
                        status = status.to_error_state();
                        None
                    }
                    Response::CopyIn(_) | Response::CopyOut(_) | Response::CopyBoth(_) => {
                        return Err(error(
                            "ERROR",
                            "25006",
                            "COPY is not allowed: this server is read-only",
                        ));
                    }
                }
            }
            PortalExecutionState::Suspended(q) => Some(q),
            PortalExecutionState::Finished => {
                *state.lock().await = PortalExecutionState::Finished;
                send_execution_response(
                    client,
                    pgwire::api::results::Tag::new("SELECT").with_rows(0),
                )
                .await?;
                None
            }
        };
        if let Some(mut q) = response {
            let mut rows = 0usize;
            let mut more = true;
            while max_rows == 0 || rows < max_rows {
                match q.data_rows.next().await {
                    Some(row) => {
                        client.feed(PgWireBackendMessage::DataRow(row?)).await?;
                        rows += 1;
                    }
                    None => {
                        more = false;
                        break;
                    }
                }
            }
            if more {
                *state.lock().await = PortalExecutionState::Suspended(q);
                client
                    .send(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
                    .await?;
            } else {
                *state.lock().await = PortalExecutionState::Finished;
                let tag = pgwire::api::results::Tag::new(&q.command_tag).with_rows(rows);
                client
                    .send(PgWireBackendMessage::CommandComplete(tag.into()))
                    .await?;
            }
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        Ok(())
    }
}

/// Looks users up for SCRAM. An unknown user gets a made-up salt (the same for the
/// same name) and a random key, so the exchange fails exactly like a wrong password.
#[derive(Debug)]
struct Source {
    shared: Arc<Shared>,
}

#[async_trait]
impl AuthSource for Source {
    #[allow(elided_lifetimes_in_paths)]
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let name = login.user().unwrap_or_default();
        if let Some(u) = self.shared.users().get(name) {
            return Ok(Password::new(Some(u.salt.clone()), u.salted.clone()));
        }
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.shared.secret);
        h.update(name.as_bytes());
        let salt = h.finalize()[..16].to_vec();
        let mut key = vec![0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
        Ok(Password::new(Some(salt), key))
    }
}

/// SCRAM startup with Ferret's checks around it.
pub(crate) struct Startup {
    conn: Arc<Conn>,
    inner: SASLAuthStartupHandler<DefaultServerParameterProvider>,
}

fn fatal(e: PgWireError) -> PgWireError {
    let mut info: ErrorInfo = e.into();
    info.severity = "FATAL".to_string();
    PgWireError::UserError(Box::new(info))
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = &self.conn;
        if let PgWireFrontendMessage::Startup(ref startup) = message {
            if conn.shared.require_tls && !client.is_secure() {
                tracing::warn!(peer = %conn.peer, "refused: plaintext connection, TLS required");
                return Err(error(
                    "FATAL",
                    "28000",
                    "this server requires TLS (sslmode=require)",
                ));
            }
            let user = startup.parameters.get("user").cloned().unwrap_or_default();
            let db = startup
                .parameters
                .get("database")
                .cloned()
                .unwrap_or_else(|| user.clone());
            if db != crate::catalog::CATALOG {
                tracing::warn!(peer = %conn.peer, %user, database = %db, "refused: unknown database");
                return Err(error(
                    "FATAL",
                    "3D000",
                    format!("database \"{db}\" does not exist (the database is \"ferret\")"),
                ));
            }
        }
        let was_ready = matches!(client.state(), PgWireConnectionState::ReadyForQuery);
        let result = self.inner.on_startup(client, message).await;
        if let Err(e) = result {
            let user = client.metadata().get("user").cloned().unwrap_or_default();
            if matches!(e, PgWireError::InvalidPassword(_)) {
                tracing::warn!(peer = %conn.peer, %user, "authentication failed");
            } else {
                tracing::warn!(peer = %conn.peer, %user, error = %e, "startup failed");
            }
            return Err(fatal(e));
        }
        if !was_ready && matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            let name = client.metadata().get("user").cloned().unwrap_or_default();
            let users = conn.shared.users();
            let Some(user) = users.get(&name) else {
                return Err(error("FATAL", "28P01", "authentication failed"));
            };
            if user.role.runs_kernels() {
                for f in KERNEL_FUNCTIONS {
                    if let Ok(t) = conn.shared.base.table_function(f) {
                        conn.ctx.register_udtf(f, Arc::clone(t.function()));
                    }
                }
            }
            let (pid, secret) = client.pid_and_secret_key();
            let key = cancel_key(pid, &secret);
            conn.shared
                .cancels
                .insert(key.clone(), Arc::clone(&conn.token));
            if let Ok(mut k) = conn.cancel_key.lock() {
                *k = Some(key);
            }
            tracing::info!(peer = %conn.peer, user = %name, role = %user.role, "authenticated (pg)");
            let _ = conn.user.set(Authenticated {
                user: name,
                role: user.role,
                salted: user.salted.clone(),
            });
        }
        Ok(())
    }
}

pub(crate) struct Cancels {
    shared: Arc<Shared>,
}

#[async_trait]
impl CancelHandler for Cancels {
    async fn on_cancel_request(&self, req: CancelRequest) {
        let found = self
            .shared
            .cancels
            .cancel(&cancel_key(req.pid, &req.secret_key));
        tracing::info!(pid = req.pid, found, "cancel request");
    }
}

/// Gives every error a SQLSTATE a client can act on (parse errors from the extended
/// protocol's Parse included) and logs it.
pub(crate) struct Errors {
    peer: SocketAddr,
}

impl ErrorHandler for Errors {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        let e = std::mem::replace(error, PgWireError::NotReadyForQuery);
        *error = map_error(e);
        let user = client.metadata().get("user").cloned().unwrap_or_default();
        tracing::debug!(peer = %self.peer, %user, error = %error, "error sent");
    }
}

/// The handlers of one connection.
pub(crate) struct Handlers {
    startup: Arc<Startup>,
    queries: Arc<Queries>,
    cancels: Arc<Cancels>,
    errors: Arc<Errors>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.queries)
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.queries)
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.startup)
    }
    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.cancels)
    }
    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::clone(&self.errors)
    }
}

fn handlers(
    shared: &Arc<Shared>,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    kill: CancellationToken,
) -> PgWireResult<Handlers> {
    let (ctx, pinned) = statement_context(
        &shared.base,
        crate::catalog::Snapshot::empty(),
        shared.limits.query_memory,
        false,
    )
    .map_err(df_error)?;
    let ctx = Arc::new(ctx);
    let conn = Arc::new_cyclic(|weak: &std::sync::Weak<Conn>| {
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(Guard { conn: weak.clone() }),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
        ];
        let service = Arc::new(DfSessionService::new_with_hooks(Arc::clone(&ctx), hooks));
        Conn {
            shared: Arc::clone(shared),
            peer,
            parser: Arc::new(FerretParser {
                inner: service.query_parser(),
            }),
            service,
            ctx,
            pinned,
            user: OnceLock::new(),
            token: Arc::new(Mutex::new(CancellationToken::new())),
            cancel_key: Mutex::new(None),
            kill,
            _permit: permit,
        }
    });
    let mut scram = ScramAuth::new(Arc::new(Source {
        shared: Arc::clone(shared),
    }));
    scram.set_iterations(shared.users().iterations());
    if let Some(tls) = &shared.tls {
        // SCRAM-SHA-256-PLUS (channel binding) where the certificate allows it.
        let _ = scram.configure_certificate(&tls.cert_pem);
    }
    let inner = SASLAuthStartupHandler::new(Arc::clone(&shared.pg_params)).with_scram(scram);
    Ok(Handlers {
        startup: Arc::new(Startup {
            conn: Arc::clone(&conn),
            inner,
        }),
        queries: Arc::new(Queries { conn }),
        cancels: Arc::new(Cancels {
            shared: Arc::clone(shared),
        }),
        errors: Arc::new(Errors { peer }),
    })
}

/// Sends a FATAL error before the startup exchange and closes (used when a connection
/// is over the limit; the client reads it as a normal error).
async fn refuse_connection(mut socket: tokio::net::TcpStream, code: &str, message: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Read the first packet (SSLRequest or Startup) so the client sees our answer.
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), socket.read(&mut buf)).await;
    let ssl_request = matches!(read, Ok(Ok(8))) && buf[4..8] == [0x04, 0xd2, 0x16, 0x2f];
    if ssl_request {
        let _ = socket.write_all(b"N").await;
    }
    let mut body = Vec::new();
    for (t, v) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(t);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = vec![b'E'];
    msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    msg.extend_from_slice(&body);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), socket.write_all(&msg)).await;
    let _ = socket.shutdown().await;
}

/// Accepts connections until `shutdown`.
pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener, shutdown: CancellationToken) {
    let tls = shared
        .tls
        .as_ref()
        .map(|t| pgwire::tokio::TlsAcceptor::from(Arc::clone(&t.server)));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let Ok(permit) = Arc::clone(&shared.connections).try_acquire_owned() else {
            tracing::warn!(%peer, "refused: too many connections");
            tasks.spawn(refuse_connection(
                socket,
                "53300",
                "sorry, too many clients already",
            ));
            continue;
        };
        let kill = shutdown.child_token();
        let handlers = match handlers(&shared, peer, permit, kill.clone()) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(%peer, error = %e, "could not set up a connection");
                continue;
            }
        };
        let tls = tls.clone();
        let age = shared.limits.max_connection_age;
        tasks.spawn(async move {
            let served = tokio::time::timeout(age, pgwire::tokio::process_socket(socket, tls, handlers));
            tokio::select! {
                r = served => match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
                    Err(_) => tracing::info!(%peer, "connection closed at its maximum age"),
                },
                _ = kill.cancelled() => tracing::debug!(%peer, "connection closed by the server"),
            }
        });
    }
    tasks.shutdown().await;
}
