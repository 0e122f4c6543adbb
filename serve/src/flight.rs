//! The Arrow Flight SQL side, on arrow-flight's own `FlightSqlService`.
//!
//! Authentication is basic-then-bearer: a Handshake with `authorization: Basic …`
//! checked against the users file answers with `authorization: Bearer <token>`, and every
//! other call must carry that token. Statements and prepared statements are stateless:
//! tickets and handles carry the SQL text (and bound parameters), and every DoGet parses,
//! checks and plans it again against the snapshot current at that moment.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, ActionCreatePreparedSubstraitPlanRequest,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandPreparedStatementQuery, CommandPreparedStatementUpdate,
    CommandStatementIngest, CommandStatementQuery, CommandStatementSubstraitPlan,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine;
use datafusion::common::{DataFusionError, ParamValues, ScalarValue};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use rand::RngCore;
use tonic::{Request, Response, Status, Streaming};

use crate::Shared;
use crate::guard::{self, Refusal};
use crate::limits::{Bounds, Stop, statement_context};
use crate::users::Role;

const TOKEN_TTL: Duration = Duration::from_secs(12 * 3600);
const MAX_TOKENS: usize = 10_000;
const MAX_SQL_BYTES: usize = 1 << 20;
const HANDLE_MAGIC: &[u8; 4] = b"FRT1";

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

/// A bearer session.
#[derive(Clone, Debug)]
struct Session {
    user: String,
    role: Role,
    /// The stored credential it authenticated with (a reload that changes it ends the
    /// session).
    salted: Vec<u8>,
    expires: Instant,
}

/// Ferret's Flight SQL service.
#[derive(Clone)]
pub struct Flight {
    shared: Arc<Shared>,
    tokens: Arc<Mutex<HashMap<String, Session>>>,
    info: Arc<SqlInfoData>,
}

fn refused(r: Refusal) -> Status {
    match r.code {
        "0A000" => Status::unimplemented(r.message),
        _ => Status::permission_denied(r.message),
    }
}

fn stopped(s: Stop) -> Status {
    match s {
        Stop::Timeout => Status::deadline_exceeded(s.message()),
        Stop::Cancelled => Status::cancelled(s.message()),
        Stop::Busy => Status::resource_exhausted(s.message()),
    }
}

fn df_status(e: DataFusionError) -> Status {
    if let Some(k) = crate::limits::kernel_refusal(&e) {
        return Status::permission_denied(k.to_string());
    }
    let root = e.find_root();
    match root {
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(format!(
            "out of memory for this query (the server's per-query limit): {root}"
        )),
        DataFusionError::Plan(_) | DataFusionError::SQL(..) | DataFusionError::SchemaError(..) => {
            Status::invalid_argument(root.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

fn flight_stop(s: Stop) -> FlightError {
    FlightError::Tonic(Box::new(stopped(s)))
}

impl Flight {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "Ferret");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        b.append(SqlInfo::FlightSqlServerCancel, false);
        let info = b.build().map(Arc::new).unwrap_or_else(|e| {
            tracing::error!(error = %e, "SqlInfo could not be built");
            Arc::new(
                SqlInfoDataBuilder::new()
                    .build()
                    .expect("empty SqlInfo builds"),
            )
        });
        Flight {
            shared,
            tokens: Arc::new(Mutex::new(HashMap::new())),
            info,
        }
    }

    fn peer<T>(request: &Request<T>) -> String {
        request
            .remote_addr()
            .map_or_else(|| "?".to_string(), |a| a.to_string())
    }

    /// The session of a request's bearer token.
    fn session<T>(&self, request: &Request<T>) -> Result<Session, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Some(token) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
        else {
            tracing::warn!(peer = %Self::peer(request), "refused (flight): no bearer token");
            return Err(Status::unauthenticated(
                "no bearer token: authenticate with a Handshake (basic user:password) first",
            ));
        };
        let mut tokens = self
            .tokens
            .lock()
            .map_err(|_| Status::internal("token table poisoned"))?;
        match tokens.get(token.trim()) {
            Some(s) if s.expires > Instant::now() => {
                if self.shared.still_valid(&s.user, &s.salted, s.role) {
                    Ok(s.clone())
                } else {
                    let user = s.user.clone();
                    tokens.remove(token.trim());
                    tracing::warn!(peer = %Self::peer(request), %user, "refused (flight): the user was removed or its password or role changed");
                    Err(Status::unauthenticated(
                        "the user was removed or its password or role changed: authenticate again",
                    ))
                }
            }
            Some(_) => {
                tokens.remove(token.trim());
                Err(Status::unauthenticated(
                    "the bearer token expired: authenticate again",
                ))
            }
            None => {
                tracing::warn!(peer = %Self::peer(request), "refused (flight): unknown bearer token");
                Err(Status::unauthenticated("unknown bearer token"))
            }
        }
    }

    fn issue(&self, user: &str, role: Role, salted: Vec<u8>) -> Result<String, Status> {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let mut tokens = self
            .tokens
            .lock()
            .map_err(|_| Status::internal("token table poisoned"))?;
        if tokens.len() >= MAX_TOKENS {
            let now = Instant::now();
            tokens.retain(|_, s| s.expires > now);
        }
        if tokens.len() >= MAX_TOKENS {
            return Err(Status::resource_exhausted(
                "too many sessions: try again later",
            ));
        }
        tokens.insert(
            token.clone(),
            Session {
                user: user.to_string(),
                role,
                salted,
                expires: Instant::now() + TOKEN_TTL,
            },
        );
        Ok(token)
    }

    /// Refuses a write call (after authentication, so strangers learn nothing).
    fn read_only<T, R>(&self, request: &Request<R>, what: &str) -> Result<T, Status> {
        self.session(request)?;
        Err(Status::permission_denied(format!(
            "{what} not allowed: this server is read-only"
        )))
    }

    /// A context for one request, pinned to the snapshot current now.
    async fn context(&self, session: &Session) -> Result<SessionContext, Status> {
        let snapshot = self.shared.live.current().await.map_err(df_status)?;
        let (ctx, _) = statement_context(
            &self.shared.base,
            snapshot,
            self.shared.limits.query_memory,
            session.role.runs_kernels(),
        )
        .map_err(df_status)?;
        Ok(ctx)
    }

    /// Parses, checks and plans one read-only statement.
    async fn plan(&self, ctx: &SessionContext, sql: &str) -> Result<LogicalPlan, Status> {
        self.plan_bound(ctx, sql, None).await
    }

    /// Plans `sql`; bound parameter values go into table functions' arguments as
    /// literals first (table functions read their arguments at planning).
    async fn plan_bound(
        &self,
        ctx: &SessionContext,
        sql: &str,
        params: Option<&ParamValues>,
    ) -> Result<LogicalPlan, Status> {
        if sql.len() > MAX_SQL_BYTES {
            return Err(Status::invalid_argument(format!(
                "the statement is {} bytes; at most {MAX_SQL_BYTES}",
                sql.len()
            )));
        }
        let mut statements =
            DFParser::parse_sql(sql).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if statements.len() != 1 {
            return Err(Status::invalid_argument(format!(
                "expected one statement, got {}",
                statements.len()
            )));
        }
        let mut statement = statements.pop_front().expect("one statement");
        if let DfStatement::Statement(s) = &mut statement {
            crate::compat::number_placeholders(s);
            if let Some(params) = params {
                crate::compat::bind_table_function_args(s, params);
            }
        }
        match &statement {
            DfStatement::Statement(s) => guard::check_statement(s).map_err(refused)?,
            DfStatement::Explain(e) => match e.statement.as_ref() {
                DfStatement::Statement(s)
                    if matches!(**s, datafusion::sql::sqlparser::ast::Statement::Query(_)) =>
                {
                    guard::check_statement(s).map_err(refused)?
                }
                _ => {
                    return Err(Status::permission_denied(
                        "EXPLAIN of this statement is not allowed: this server is read-only",
                    ));
                }
            },
            DfStatement::CreateExternalTable(_) => {
                return Err(Status::permission_denied(
                    "CREATE EXTERNAL TABLE is not allowed: this server is read-only",
                ));
            }
            DfStatement::CopyTo(_) => {
                return Err(Status::permission_denied(
                    "COPY is not allowed: this server is read-only",
                ));
            }
            _ => {
                return Err(Status::unimplemented(
                    "this statement is not supported by this server",
                ));
            }
        }
        let timeout = self.shared.limits.statement_timeout;
        let plan = tokio::time::timeout(timeout, ctx.state().statement_to_plan(statement))
            .await
            .map_err(|_| stopped(Stop::Timeout))?
            .map_err(df_status)?;
        guard::check_plan(&plan).map_err(refused)?;
        Ok(plan)
    }

    fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
        let IpcMessage(b) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
        Ok(b)
    }

    fn info(
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        Ok(FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(descriptor))
    }

    /// Runs a checked plan within the limits and streams it.
    async fn execute(
        &self,
        ctx: SessionContext,
        plan: LogicalPlan,
        session: &Session,
    ) -> Result<Response<DoGetStream>, Status> {
        let limits = &self.shared.limits;
        let bounds = Bounds::acquire(
            &self.shared.queries,
            limits.statement_timeout,
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .map_err(stopped)?;
        tracing::debug!(user = %session.user, "flight query");
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        let stream = bounds
            .run(async {
                let df = ctx.execute_logical_plan(plan).await?;
                df.execute_stream().await
            })
            .await
            .map_err(stopped)?
            .map_err(df_status)?;
        let out_schema = Arc::clone(&schema);
        let batches = stream.map(move |r| match r {
            Ok(b) if b.schema() != out_schema => {
                RecordBatch::try_new(Arc::clone(&out_schema), b.columns().to_vec())
                    .map_err(FlightError::Arrow)
            }
            Ok(b) => Ok(b),
            Err(e) => Err(FlightError::Tonic(Box::new(df_status(e)))),
        });
        let bounded = bounds.stream(batches, flight_stop);
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(bounded)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(encoded)))
    }

    /// The FlightInfo of a catalog command: its result schema, and a ticket that carries
    /// the command back to DoGet.
    fn meta_info(
        &self,
        schema: &Schema,
        command: &impl ProstMessageExt,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.session(&request)?;
        let info = Self::info(
            schema,
            command.as_any().encode_to_vec(),
            request.into_inner(),
        )?;
        Ok(Response::new(info))
    }

    fn meta_stream(schema: SchemaRef, batch: Result<RecordBatch, FlightError>) -> DoGetStream {
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async move { batch }))
            .map_err(Status::from);
        Box::pin(stream)
    }

    /// The tables of the current snapshot.
    async fn tables(&self, session: &Session) -> Result<Vec<(String, String, SchemaRef)>, Status> {
        let ctx = self.context(session).await?;
        let mut out = Vec::new();
        let Some(cat) = ctx.catalog(crate::catalog::CATALOG) else {
            return Ok(out);
        };
        for schema_name in cat.schema_names() {
            let Some(schema) = cat.schema(&schema_name) else {
                continue;
            };
            for table in schema.table_names() {
                if let Ok(Some(t)) = schema.table(&table).await {
                    out.push((schema_name.clone(), table, t.schema()));
                }
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        Ok(out)
    }
}

/// A prepared statement's handle: the SQL and, once bound, its parameters (Arrow IPC).
fn encode_handle(sql: &str, params: Option<&[u8]>) -> Vec<u8> {
    let mut h = HANDLE_MAGIC.to_vec();
    h.extend_from_slice(&(sql.len() as u32).to_le_bytes());
    h.extend_from_slice(sql.as_bytes());
    if let Some(p) = params {
        h.extend_from_slice(p);
    }
    h
}

fn decode_handle(h: &[u8]) -> Result<(String, Option<&[u8]>), Status> {
    let bad = || Status::invalid_argument("not a prepared statement handle of this server");
    let rest = h.strip_prefix(HANDLE_MAGIC.as_slice()).ok_or_else(bad)?;
    if rest.len() < 4 {
        return Err(bad());
    }
    let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let rest = &rest[4..];
    if n > rest.len() || n > MAX_SQL_BYTES {
        return Err(bad());
    }
    let sql = std::str::from_utf8(&rest[..n])
        .map_err(|_| bad())?
        .to_string();
    let params = (rest.len() > n).then(|| &rest[n..]);
    Ok((sql, params))
}

fn params_of(ipc: &[u8]) -> Result<ParamValues, Status> {
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
        .map_err(|e| Status::invalid_argument(format!("bound parameters: {e}")))?;
    let mut values = Vec::new();
    for batch in reader {
        let batch =
            batch.map_err(|e| Status::invalid_argument(format!("bound parameters: {e}")))?;
        if batch.num_rows() != 1 {
            return Err(Status::invalid_argument(format!(
                "bound parameters: {} rows; this server takes one row of parameters",
                batch.num_rows()
            )));
        }
        for col in batch.columns() {
            values.push(
                ScalarValue::try_from_array(col, 0)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            );
        }
    }
    Ok(ParamValues::List(
        values.into_iter().map(Into::into).collect(),
    ))
}

#[tonic::async_trait]
impl FlightSqlService for Flight {
    type FlightService = Flight;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let peer = Self::peer(&request);
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let Some(b64) = header
            .strip_prefix("Basic ")
            .or_else(|| header.strip_prefix("basic "))
        else {
            tracing::warn!(%peer, "refused (flight): handshake without basic credentials");
            return Err(Status::unauthenticated(
                "the handshake needs `authorization: Basic base64(user:password)`",
            ));
        };
        let b64 = b64.trim().trim_end_matches('=');
        let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(b64)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| {
                Status::unauthenticated("the basic credentials are not base64 of user:password")
            })?;
        let (user, password) = decoded.split_once(':').ok_or_else(|| {
            Status::unauthenticated("the basic credentials are not user:password")
        })?;
        let users = self.shared.users();
        let (u, p) = (user.to_string(), password.to_string());
        let checked = tokio::task::spawn_blocking(move || {
            users
                .check(&u, &p)
                .and_then(|role| users.get(&u).map(|s| (role, s.salted.clone())))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        let Some((role, salted)) = checked else {
            tracing::warn!(%peer, %user, "authentication failed (flight)");
            return Err(Status::unauthenticated("authentication failed"));
        };
        let token = self.issue(user, role, salted)?;
        tracing::info!(%peer, %user, %role, "authenticated (flight)");
        let out = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let stream: Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>> =
            Box::pin(futures::stream::once(async move { Ok(out) }));
        let mut response = Response::new(stream);
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token is not a header value"))?;
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let ctx = self.context(&session).await?;
        let plan = self.plan(&ctx, &query.query).await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.clone().into(),
        };
        let info = Self::info(
            plan.schema().as_arrow(),
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let session = self.session(&request)?;
        let sql = std::str::from_utf8(&ticket.statement_handle)
            .map_err(|_| Status::invalid_argument("the ticket is not UTF-8 SQL"))?;
        let ctx = self.context(&session).await?;
        let plan = self.plan(&ctx, sql).await?;
        self.execute(ctx, plan, &session).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let session = self.session(&request)?;
        let ctx = self.context(&session).await?;
        let plan = self.plan(&ctx, &query.query).await?;
        let dataset_schema = Self::schema_bytes(plan.schema().as_arrow())?;
        // Every parameter by position: the plan's type, or text for one it does not type
        // (a table function's argument, bound as a literal at execution).
        let slots = crate::compat::parameter_slots(
            crate::compat::placeholder_count(&query.query).unwrap_or(0),
            &plan,
        )
        .map_err(df_status)?;
        let fields: Vec<arrow::datatypes::Field> = slots
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let t = t.unwrap_or(arrow::datatypes::DataType::Utf8);
                arrow::datatypes::Field::new(format!("${}", i + 1), t, true)
            })
            .collect();
        let parameter_schema = Self::schema_bytes(&Schema::new(fields))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: encode_handle(&query.query, None).into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.session(&request)?;
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.session(&request)?;
        let (sql, _) = decode_handle(&query.prepared_statement_handle)?;
        let flight = request
            .into_inner()
            .into_peekable()
            .map_err(|s| FlightError::Tonic(Box::new(s)));
        let batches: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(flight)
            .take(16)
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("bound parameters: {e}")))?;
        let mut ipc = Vec::new();
        if let Some(first) = batches.first() {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &first.schema())
                .map_err(|e| Status::internal(e.to_string()))?;
            for b in &batches {
                w.write(b)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
            }
            w.finish().map_err(|e| Status::internal(e.to_string()))?;
        }
        if ipc.len() > MAX_SQL_BYTES {
            return Err(Status::invalid_argument("bound parameters are too large"));
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(
                encode_handle(&sql, (!ipc.is_empty()).then_some(&ipc[..])).into(),
            ),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let session = self.session(&request)?;
        let (sql, _) = decode_handle(&cmd.prepared_statement_handle)?;
        let ctx = self.context(&session).await?;
        let plan = self.plan(&ctx, &sql).await?;
        let info = Self::info(
            plan.schema().as_arrow(),
            cmd.as_any().encode_to_vec(),
            request.into_inner(),
        )?;
        Ok(Response::new(info))
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let session = self.session(&request)?;
        let (sql, params) = decode_handle(&cmd.prepared_statement_handle)?;
        let ctx = self.context(&session).await?;
        let params = params.map(params_of).transpose()?;
        let mut plan = self.plan_bound(&ctx, &sql, params.as_ref()).await?;
        if let Some(p) = params {
            plan = plan.with_param_values(p).map_err(df_status)?;
        }
        self.execute(ctx, plan, &session).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.meta_info(&schema, &query, request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.session(&request)?;
        let mut b = query.into_builder();
        b.append(crate::catalog::CATALOG);
        let schema = b.schema();
        Ok(Response::new(Self::meta_stream(schema, b.build())))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.meta_info(&schema, &query, request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let session = self.session(&request)?;
        let ctx = self.context(&session).await?;
        let mut b = query.into_builder();
        if let Some(cat) = ctx.catalog(crate::catalog::CATALOG) {
            let mut names = cat.schema_names();
            names.sort();
            for s in names {
                b.append(crate::catalog::CATALOG, s);
            }
        }
        let schema = b.schema();
        Ok(Response::new(Self::meta_stream(schema, b.build())))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.meta_info(&schema, &query, request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let session = self.session(&request)?;
        let tables = self.tables(&session).await?;
        let mut b = query.into_builder();
        for (schema_name, table, schema) in tables {
            let kind = if schema_name == "pg_catalog" {
                "SYSTEM TABLE"
            } else {
                "TABLE"
            };
            b.append(crate::catalog::CATALOG, schema_name, table, kind, &schema)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        let schema = b.schema();
        Ok(Response::new(Self::meta_stream(schema, b.build())))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.meta_info(&schema, &query, request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.session(&request)?;
        let mut b = query.into_builder();
        b.append("TABLE");
        b.append("SYSTEM TABLE");
        let schema = b.schema();
        Ok(Response::new(Self::meta_stream(schema, b.build())))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.info).schema();
        self.meta_info(&schema, &query, request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.session(&request)?;
        let b = query.into_builder(&self.info);
        let schema = b.schema();
        Ok(Response::new(Self::meta_stream(schema, b.build())))
    }

    async fn get_flight_info_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.session(&request)?;
        Err(Status::unimplemented(
            "Substrait plans are not accepted: send SQL",
        ))
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.read_only(&request, "updates are")
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.read_only(&request, "ingest is")
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.read_only(&request, "updates are")
    }

    async fn do_put_substrait_plan(
        &self,
        _query: CommandStatementSubstraitPlan,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.read_only(&request, "updates are")
    }

    async fn do_action_create_prepared_substrait_plan(
        &self,
        _query: ActionCreatePreparedSubstraitPlanRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.session(&request)?;
        Err(Status::unimplemented(
            "Substrait plans are not accepted: send SQL",
        ))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
