//! Rewrites that let the catalog queries of BI tools and drivers plan on DataFusion.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, SelectItem, SetExpr, Statement, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "first_value",
    "bool_and",
    "bool_or",
];

/// Wraps the single output of each non-aggregated scalar subquery in `first_value(...)`,
/// so DataFusion can decorrelate it. Used only after planning failed for that reason:
/// PostgreSQL would raise an error if such a subquery returned more than one row; the
/// catalog queries that need this return at most one. Returns whether anything changed.
pub fn aggregate_scalar_subqueries(statement: &mut Statement) -> bool {
    let mut changed = false;
    let _ = visit_expressions_mut(statement, |e: &mut Expr| {
        if let Expr::Subquery(q) = e
            && let SetExpr::Select(select) = q.body.as_mut()
            && select.projection.len() == 1
            && matches!(
                &select.group_by,
                datafusion::sql::sqlparser::ast::GroupByExpr::Expressions(g, _) if g.is_empty()
            )
        {
            let item = &mut select.projection[0];
            let expr = match item {
                SelectItem::UnnamedExpr(x) => Some(x),
                SelectItem::ExprWithAlias { expr, .. } => Some(expr),
                _ => None,
            };
            if let Some(x) = expr {
                let text = x.to_string();
                let lower = text.to_ascii_lowercase();
                let aggregated = AGGREGATES
                    .iter()
                    .any(|a| lower.starts_with(&format!("{a}(")));
                if !aggregated
                    && let Ok(mut p) = Parser::new(&PostgreSqlDialect {})
                        .try_with_sql(&format!("first_value({text})"))
                    && let Ok(wrapped) = p.parse_expr()
                {
                    *x = wrapped;
                    changed = true;
                }
            }
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

/// Whether a statement reads the Postgres catalogs (BI tools' introspection).
pub fn is_catalog_query(statement: &Statement) -> bool {
    let text = statement.to_string().to_ascii_lowercase();
    text.contains("pg_") || text.contains("information_schema")
}

/// Numbers `?` placeholders (JDBC/ODBC/ADBC style) as `$1`, `$2`, … in the order they
/// appear, which is how DataFusion binds parameters.
pub fn number_placeholders(statement: &mut Statement) {
    use datafusion::sql::sqlparser::ast::Value;
    let mut n = 0;
    let _ = visit_expressions_mut(statement, |e: &mut Expr| {
        if let Expr::Value(v) = e
            && let Value::Placeholder(p) = &mut v.value
            && p == "?"
        {
            n += 1;
            *p = format!("${n}");
        }
        ControlFlow::<()>::Continue(())
    });
}
