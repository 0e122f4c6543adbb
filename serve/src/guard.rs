//! Read-only, whatever the client sends: an allow-list of statement kinds, then the
//! logical plan checked again (no DDL, DML, `COPY`, or statements that change the session).
//!
//! The allow-list fails closed: a statement kind this code does not name is refused,
//! so a parser upgrade that adds kinds cannot open a write path.

use datafusion::common::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::sqlparser::ast::{Expr, ObjectName, Set, Statement, Value};

/// Why a statement is refused, with the SQLSTATE a Postgres client expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `25006` (read-only transaction) for writes, `0A000` (not supported) otherwise,
    /// `42501` (insufficient privilege) for the kernel functions without the role.
    pub code: &'static str,
    /// What and why.
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn read_only(what: &str) -> Refusal {
    Refusal {
        code: "25006",
        message: format!("{what} is not allowed: this server is read-only"),
    }
}

fn unsupported(what: &str) -> Refusal {
    Refusal {
        code: "0A000",
        message: format!("{what} is not supported by this server"),
    }
}

/// Session settings a client may change: formatting, names and its own statement
/// timeout (which can only lower the server's). Everything else (DataFusion's
/// `datafusion.*` options among them, which would replace the memory pool or the spill
/// directory) is refused.
const SETTABLE: &[&str] = &[
    "statement_timeout",
    "datestyle",
    "intervalstyle",
    "bytea_output",
    "application_name",
    "extra_float_digits",
    "search_path",
    "client_encoding",
    "client_min_messages",
    "timezone",
    "time zone",
    "standard_conforming_strings",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "idle_in_transaction_session_timeout",
    "lock_timeout",
    "default_transaction_read_only",
    "transaction_read_only",
    "default_transaction_isolation",
    "jit",
    "geqo",
];

fn settable(name: &ObjectName) -> bool {
    let name = name.to_string().to_ascii_lowercase();
    let name = name.trim_matches('"');
    SETTABLE.contains(&name)
}

/// Whether `SET name = value` would lower the read-only flag.
fn turns_off_read_only(name: &ObjectName, values: &[Expr]) -> bool {
    let n = name.to_string().to_ascii_lowercase();
    if !n.ends_with("read_only") {
        return false;
    }
    values.iter().any(|v| {
        let s = match v {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                Value::Boolean(b) => b.to_string(),
                other => other.to_string(),
            },
            other => other.to_string(),
        };
        matches!(
            s.to_ascii_lowercase().as_str(),
            "off" | "false" | "0" | "no"
        )
    })
}

/// Checks one parsed statement against the allow-list.
pub fn check_statement(s: &Statement) -> Result<(), Refusal> {
    match s {
        Statement::Query(q) => {
            // `SELECT … INTO t` creates a table.
            if query_has_into(q) {
                return Err(read_only("SELECT … INTO"));
            }
            Ok(())
        }
        Statement::Explain { statement, .. } => match statement.as_ref() {
            Statement::Query(_) => check_statement(statement),
            other => Err(read_only(&format!("EXPLAIN of {}", kind(other)))),
        },
        Statement::ExplainTable { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowCatalogs { .. } => Ok(()),
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => Ok(()),
        Statement::Set(set) => match set {
            Set::SingleAssignment {
                variable, values, ..
            } => {
                if turns_off_read_only(variable, values) {
                    Err(read_only("turning read-only off"))
                } else if settable(variable) {
                    Ok(())
                } else {
                    Err(Refusal {
                        code: "42501",
                        message: format!(
                            "SET {variable} is not allowed: clients may set only {}",
                            SETTABLE.join(", ")
                        ),
                    })
                }
            }
            Set::SetTimeZone { .. } => Ok(()),
            Set::SetTransaction { modes, .. } => {
                if modes.iter().any(|m| {
                    matches!(
                        m,
                        datafusion::sql::sqlparser::ast::TransactionMode::AccessMode(
                            datafusion::sql::sqlparser::ast::TransactionAccessMode::ReadWrite
                        )
                    )
                }) {
                    Err(read_only("READ WRITE"))
                } else {
                    Ok(())
                }
            }
            Set::MultipleAssignments { assignments } => {
                for a in assignments {
                    check_statement(&Statement::Set(Set::SingleAssignment {
                        scope: None,
                        hivevar: false,
                        variable: a.name.clone(),
                        values: vec![a.value.clone()],
                    }))?;
                }
                Ok(())
            }
            _ => Err(unsupported(&format!("`{s}`"))),
        },
        other => match write_kind(other) {
            Some(w) => Err(read_only(w)),
            None => Err(unsupported(kind(other))),
        },
    }
}

fn query_has_into(q: &datafusion::sql::sqlparser::ast::Query) -> bool {
    use datafusion::sql::sqlparser::ast::SetExpr;
    fn body(b: &SetExpr) -> bool {
        match b {
            SetExpr::Select(s) => s.into.is_some(),
            SetExpr::Query(q) => query_has_into(q),
            SetExpr::SetOperation { left, right, .. } => body(left) || body(right),
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => {
                true
            }
            _ => false,
        }
    }
    body(&q.body)
}

/// The name of a statement that writes or changes the database (its first words), or
/// None for every other kind.
fn write_kind(s: &Statement) -> Option<&'static str> {
    Some(match s {
        Statement::Insert(_) => "INSERT",
        Statement::Update(_) => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Merge(_) => "MERGE",
        Statement::Copy { .. } | Statement::CopyIntoSnowflake { .. } => "COPY",
        Statement::Truncate(_) => "TRUNCATE",
        Statement::CreateTable(_) => "CREATE TABLE",
        Statement::CreateView(_) => "CREATE VIEW",
        Statement::CreateIndex(_) => "CREATE INDEX",
        Statement::CreateSchema { .. } => "CREATE SCHEMA",
        Statement::CreateDatabase { .. } => "CREATE DATABASE",
        Statement::CreateFunction(_) => "CREATE FUNCTION",
        Statement::CreateRole(_) => "CREATE ROLE",
        Statement::CreateExtension(_) => "CREATE EXTENSION",
        Statement::AlterTable(_) => "ALTER TABLE",
        Statement::AlterRole { .. } => "ALTER ROLE",
        Statement::Drop { .. } | Statement::DropFunction(_) => "DROP",
        Statement::Grant(_) => "GRANT",
        Statement::Revoke(_) => "REVOKE",
        Statement::Unload { .. } => "UNLOAD",
        Statement::Install { .. } => "INSTALL",
        Statement::Load { .. } | Statement::LoadData { .. } => "LOAD",
        Statement::Directory { .. } => "INSERT OVERWRITE DIRECTORY",
        Statement::Vacuum(_) => "VACUUM",
        Statement::Analyze(_) => "ANALYZE",
        _ => return None,
    })
}

/// A short name of the statement's kind for messages (its first words).
fn kind(s: &Statement) -> &'static str {
    if let Some(w) = write_kind(s) {
        return w;
    }
    match s {
        Statement::Prepare { .. } => "PREPARE",
        Statement::Execute { .. } => "EXECUTE",
        Statement::Deallocate { .. } => "DEALLOCATE",
        Statement::Declare { .. } => "DECLARE",
        Statement::Fetch { .. } => "FETCH",
        Statement::Close { .. } => "CLOSE",
        Statement::Discard { .. } => "DISCARD",
        Statement::Set(_) => "SET",
        Statement::Call(_) => "CALL",
        Statement::Kill { .. } => "KILL",
        Statement::AttachDatabase { .. } | Statement::AttachDuckDBDatabase { .. } => "ATTACH",
        _ => "this statement",
    }
}

/// Plans are checked too: no DDL, no DML (`COPY … TO` is DML), no statements.
pub fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Checks a logical plan (and its subqueries) with [`read_only_options`].
pub fn check_plan(plan: &LogicalPlan) -> Result<(), Refusal> {
    read_only_options().verify_plan(plan).map_err(|e| {
        let msg = match e {
            DataFusionError::Plan(m) => m,
            other => other.to_string(),
        };
        Refusal {
            code: "25006",
            message: format!("{msg}: this server is read-only"),
        }
    })
}

/// The kernel table functions, which run a whole job per query.
pub const KERNEL_FUNCTIONS: &[&str] = &["taint", "eth_taint", "clusters"];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn check(sql: &str) -> Result<(), Refusal> {
        let stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        assert_eq!(stmts.len(), 1, "{sql}");
        check_statement(&stmts[0])
    }

    #[test]
    fn reads_pass_and_writes_are_refused() {
        for sql in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT 1",
            "SHOW statement_timeout",
            "SET statement_timeout = 100",
            "SET application_name = 'x'",
            "SET TIME ZONE 'UTC'",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
        ] {
            assert_eq!(check(sql), Ok(()), "{sql}");
        }
        for (sql, code) in [
            ("CREATE TABLE t (a INT)", "25006"),
            ("INSERT INTO t VALUES (1)", "25006"),
            ("UPDATE t SET a = 1", "25006"),
            ("DELETE FROM t", "25006"),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "25006"),
            ("COPY t TO STDOUT", "25006"),
            ("DROP TABLE btc.blocks", "25006"),
            ("SELECT * INTO t2 FROM t", "25006"),
            ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", "25006"),
            ("SET datafusion.runtime.memory_limit = '1T'", "42501"),
            ("SET datafusion.execution.target_partitions = 1", "42501"),
            ("SET default_transaction_read_only = off", "25006"),
            ("RESET ALL", "0A000"),
            ("PREPARE p AS SELECT 1", "0A000"),
            ("DECLARE c CURSOR FOR SELECT 1", "0A000"),
        ] {
            let r = check(sql);
            assert_eq!(r.as_ref().map_err(|r| r.code), Err(code), "{sql}: {r:?}");
        }
    }
}
