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

/// Catalog functions this server answers with NULL whatever their arguments (no object
/// has a comment). Replaced before planning, so their arguments (often casts of text to
/// `regclass`, which fail at execution here) are never evaluated.
const NULL_FUNCTIONS: &[&str] = &["col_description", "obj_description", "shobj_description"];

/// Columns of `pg_type` that name a function (`regproc` in PostgreSQL, text here).
const REGPROC_COLUMNS: &[&str] = &["typinput", "typoutput", "typreceive", "typsend"];

/// Rewrites for the catalog queries of drivers and BI tools, applied before planning:
/// - `information_schema.f(...)` → `f(...)` (PgJDBC's `_pg_expandarray`);
/// - `col_description(...)` and the other comment functions → `NULL::text`;
/// - `typinput = 'array_in'::regproc` (PgJDBC's type cache), which datafusion-pg-catalog
///   turns into a pg_proc oid look-up, compares the function's name again, as
///   `pg_type.typinput` holds names here.
///
/// Returns whether anything changed.
pub fn rewrite_catalog_query(statement: &mut Statement) -> bool {
    use datafusion::sql::sqlparser::ast::{
        BinaryOperator, CastKind, DataType, Ident, ObjectNamePart, Value, visit_expressions,
    };
    let mut changed = false;
    let _ = visit_expressions_mut(statement, |e: &mut Expr| {
        match e {
            // `(f(x)).field`: a field of a composite value, which DataFusion takes by
            // name as a string.
            Expr::CompoundFieldAccess { root, access_chain }
                if !matches!(
                    root.as_ref(),
                    Expr::Identifier(_) | Expr::CompoundIdentifier(_)
                ) =>
            {
                for a in access_chain.iter_mut() {
                    if let datafusion::sql::sqlparser::ast::AccessExpr::Dot(Expr::Identifier(i)) = a
                    {
                        let name = i.value.clone();
                        *a = datafusion::sql::sqlparser::ast::AccessExpr::Dot(Expr::Value(
                            Value::SingleQuotedString(name).with_empty_span(),
                        ));
                        changed = true;
                    }
                }
            }
            Expr::Function(f) => {
                let parts = &mut f.name.0;
                if parts.len() == 2
                    && matches!(&parts[0], ObjectNamePart::Identifier(i) if i.value.eq_ignore_ascii_case("information_schema"))
                {
                    parts.remove(0);
                    changed = true;
                }
                let last = f.name.0.last().map(|p| p.to_string().to_ascii_lowercase());
                let last = last
                    .as_deref()
                    .unwrap_or_default()
                    .trim_matches('"')
                    .to_string();
                if NULL_FUNCTIONS.contains(&last.as_str()) {
                    *e = Expr::Cast {
                        kind: CastKind::Cast,
                        expr: Box::new(Expr::Value(Value::Null.with_empty_span())),
                        data_type: DataType::Text,
                        array: false,
                        format: None,
                    };
                    changed = true;
                }
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } => {
                let column = match left.as_ref() {
                    Expr::Identifier(i) => Some(i.value.to_ascii_lowercase()),
                    Expr::CompoundIdentifier(ids) => {
                        ids.last().map(|i: &Ident| i.value.to_ascii_lowercase())
                    }
                    _ => None,
                };
                if let Some(c) = column
                    && REGPROC_COLUMNS.contains(&c.as_str())
                    && let Expr::Subquery(q) = right.as_ref()
                    && q.to_string().to_ascii_lowercase().contains("pg_proc")
                {
                    let mut name = None;
                    let _ = visit_expressions(q.as_ref(), |x: &Expr| {
                        if let Expr::Value(v) = x
                            && let Value::SingleQuotedString(s) = &v.value
                        {
                            name = Some(s.clone());
                            return ControlFlow::Break(());
                        }
                        ControlFlow::Continue(())
                    });
                    if let Some(n) = name {
                        let bare = n.strip_prefix("pg_catalog.").unwrap_or(&n).to_string();
                        **right = Expr::Value(Value::SingleQuotedString(bare).with_empty_span());
                        changed = true;
                    }
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    changed
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0)
    }

    #[test]
    fn catalog_rewrites() {
        let mut s = parse(
            "SELECT (information_schema._pg_expandarray(i.indkey)).n, col_description(CAST('a.b' AS regclass), 1) FROM t WHERE typinput = (SELECT oid FROM pg_catalog.pg_proc WHERE proname = 'pg_catalog.array_in')",
        );
        assert!(rewrite_catalog_query(&mut s));
        assert_eq!(
            s.to_string(),
            "SELECT (_pg_expandarray(i.indkey)).'n', CAST(NULL AS TEXT) FROM t WHERE typinput = 'array_in'"
        );
        let mut plain = parse("SELECT a FROM btc.outputs WHERE address = 'x'");
        assert!(!rewrite_catalog_query(&mut plain));
    }
}

/// PostgreSQL's `quote_ident`: the name as is when it needs no quotes, else in double
/// quotes with inner quotes doubled.
fn quote_ident(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

/// PostgreSQL's `quote_literal`.
fn quote_literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// One row of PostgreSQL's `format(fmt, args...)`: `%s`, `%I`, `%L` and `%%`, arguments
/// in order. Widths and positions are refused with a clear error.
fn pg_format(fmt: &str, args: &[Option<String>]) -> datafusion::common::Result<String> {
    let mut out = String::with_capacity(fmt.len() + 16);
    let mut next = 0usize;
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let spec = chars.next().ok_or_else(|| {
            datafusion::common::DataFusionError::Execution(
                "format: unterminated format specifier".into(),
            )
        })?;
        if spec == '%' {
            out.push('%');
            continue;
        }
        if !matches!(spec, 's' | 'I' | 'L') {
            return datafusion::common::exec_err!(
                "format: unsupported specifier %{spec} (this server supports %s, %I, %L and %%)"
            );
        }
        let arg = args.get(next).ok_or_else(|| {
            datafusion::common::DataFusionError::Execution(
                "format: too few arguments for the format string".into(),
            )
        })?;
        next += 1;
        match (spec, arg) {
            ('s', Some(v)) => out.push_str(v),
            ('s', None) => {}
            ('I', Some(v)) => out.push_str(&quote_ident(v)),
            ('I', None) => {
                return datafusion::common::exec_err!(
                    "format: null values cannot be formatted as an SQL identifier"
                );
            }
            ('L', Some(v)) => out.push_str(&quote_literal(v)),
            _ => out.push_str("NULL"),
        }
    }
    Ok(out)
}

/// Functions drivers and BI tools call in their catalog queries: `format` (Metabase's
/// field sync) and `_pg_expandarray` (PgJDBC's key queries, over `pg_index` and
/// `pg_constraint`, which have no rows here).
pub fn udfs() -> Vec<datafusion::logical_expr::ScalarUDF> {
    use std::sync::Arc;

    use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
    use arrow::datatypes::{DataType, Field, Fields};
    use datafusion::common::{Result, ScalarValue, exec_err};
    use datafusion::logical_expr::{
        ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
    };

    #[derive(Debug, PartialEq, Eq, Hash)]
    struct Format(Signature);
    impl ScalarUDFImpl for Format {
        fn name(&self) -> &str {
            "format"
        }
        fn signature(&self) -> &Signature {
            &self.0
        }
        fn return_type(&self, _: &[DataType]) -> Result<DataType> {
            Ok(DataType::Utf8)
        }
        fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
            let n = args.number_rows;
            let arrays = ColumnarValue::values_to_arrays(&args.args)?;
            let strings: Vec<ArrayRef> = arrays
                .iter()
                .map(|a| arrow::compute::cast(a, &DataType::Utf8))
                .collect::<std::result::Result<_, _>>()?;
            let Some(fmt) = strings.first() else {
                return exec_err!("format needs a format string");
            };
            let fmt = fmt.as_string::<i32>();
            let rest: Vec<_> = strings[1..].iter().map(|a| a.as_string::<i32>()).collect();
            let mut out = StringBuilder::new();
            for row in 0..n {
                if fmt.is_null(row) {
                    out.append_null();
                    continue;
                }
                let vals: Vec<Option<String>> = rest
                    .iter()
                    .map(|a| (!a.is_null(row)).then(|| a.value(row).to_string()))
                    .collect();
                out.append_value(pg_format(fmt.value(row), &vals)?);
            }
            Ok(ColumnarValue::Array(Arc::new(out.finish())))
        }
    }

    #[derive(Debug, PartialEq, Eq, Hash)]
    struct ExpandArray(Signature);
    fn expand_type(arg: &DataType) -> DataType {
        let item = match arg {
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
                f.data_type().clone()
            }
            _ => DataType::Int16,
        };
        DataType::Struct(Fields::from(vec![
            Field::new("x", item, true),
            Field::new("n", DataType::Int32, true),
        ]))
    }
    impl ScalarUDFImpl for ExpandArray {
        fn name(&self) -> &str {
            "_pg_expandarray"
        }
        fn signature(&self) -> &Signature {
            &self.0
        }
        fn return_type(&self, args: &[DataType]) -> Result<DataType> {
            Ok(expand_type(args.first().unwrap_or(&DataType::Null)))
        }
        fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
            // A set-returning function in PostgreSQL; here only over the empty key
            // columns of pg_index and pg_constraint. Anything else is refused, not
            // answered wrongly.
            let arrays = ColumnarValue::values_to_arrays(&args.args)?;
            if let Some(a) = arrays.first()
                && (0..a.len()).any(|i| {
                    a.is_valid(i)
                        && a.as_list_opt::<i32>()
                            .is_none_or(|l| !l.value(i).is_empty())
                })
            {
                return exec_err!(
                    "_pg_expandarray is a set-returning function, supported here only over empty arrays"
                );
            }
            let t = expand_type(
                &args
                    .arg_fields
                    .first()
                    .map_or(DataType::Null, |f| f.data_type().clone()),
            );
            Ok(ColumnarValue::Scalar(ScalarValue::try_from(&t)?))
        }
    }

    vec![
        ScalarUDF::new_from_impl(Format(Signature::variadic_any(Volatility::Immutable))),
        ScalarUDF::new_from_impl(ExpandArray(Signature::any(1, Volatility::Immutable))),
    ]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod format_tests {
    use super::*;

    #[test]
    fn format_as_postgres_does() {
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            pg_format("%I.%I", &[s("btc"), s("My Table")]).unwrap(),
            "btc.\"My Table\""
        );
        assert_eq!(
            pg_format("%s|%L|%L|%%", &[None, s("o'k"), None]).unwrap(),
            "|'o''k'|NULL|%"
        );
        assert!(pg_format("%s %s", &[s("a")]).is_err());
        assert!(pg_format("%5s", &[s("a")]).is_err());
        assert!(pg_format("%I", &[None]).is_err());
    }
}

/// The position (1-based) of a `$n` placeholder.
pub fn placeholder_index(id: &str) -> Option<usize> {
    id.strip_prefix('$')?.parse().ok().filter(|n| *n >= 1)
}

/// The highest `$n` in `statement` (0 when it has none).
pub fn max_placeholder(statement: &Statement) -> usize {
    use datafusion::sql::sqlparser::ast::{Value, visit_expressions};
    let mut max = 0;
    let _ = visit_expressions(statement, |e: &Expr| {
        if let Expr::Value(v) = e
            && let Value::Placeholder(p) = &v.value
            && let Some(n) = placeholder_index(p)
        {
            max = max.max(n);
        }
        ControlFlow::<()>::Continue(())
    });
    max
}

/// The highest `$n` (or the number of `?`) in `sql`, None when it does not parse.
pub fn placeholder_count(sql: &str) -> Option<usize> {
    use datafusion::sql::parser::{DFParser, Statement as DfStatement};
    let mut statements = DFParser::parse_sql(sql).ok()?;
    let DfStatement::Statement(mut s) = statements.pop_front()? else {
        return None;
    };
    number_placeholders(&mut s);
    Some(max_placeholder(&s))
}

/// The type of each parameter `$1` … `$count` (or up to the plan's highest, if more), by
/// position: None for one the plan does not type, such as a table function's argument.
pub fn parameter_slots(
    count: usize,
    plan: &datafusion::logical_expr::LogicalPlan,
) -> datafusion::common::Result<Vec<Option<arrow::datatypes::DataType>>> {
    let typed = plan.get_parameter_types()?;
    let count = typed
        .keys()
        .filter_map(|id| placeholder_index(id))
        .fold(count, usize::max);
    let mut slots = vec![None; count];
    for (id, t) in typed {
        if let Some(n) = placeholder_index(&id) {
            slots[n - 1] = t;
        }
    }
    Ok(slots)
}

/// Puts bound parameter values into the arguments of table functions (`taint($1, …)`) as
/// literals: table functions read their arguments when the statement is planned, where
/// a parameter has no value yet. Other parameters are left to the planner. Returns
/// whether anything changed.
pub fn bind_table_function_args(
    statement: &mut Statement,
    params: &datafusion::common::ParamValues,
) -> bool {
    use datafusion::common::ParamValues;
    use datafusion::sql::sqlparser::ast::{
        FunctionArg, FunctionArgExpr, TableFactor, Value, VisitMut, VisitorMut,
    };
    struct Binder<'a> {
        values: &'a [datafusion::common::metadata::ScalarAndMetadata],
        changed: bool,
    }
    impl Binder<'_> {
        fn bind(&mut self, args: &mut [FunctionArg]) {
            for a in args {
                let e = match a {
                    FunctionArg::Named { arg, .. }
                    | FunctionArg::ExprNamed { arg, .. }
                    | FunctionArg::Unnamed(arg) => arg,
                };
                if let FunctionArgExpr::Expr(x) = e
                    && let Expr::Value(v) = x
                    && let Value::Placeholder(p) = &v.value
                    && let Some(n) = placeholder_index(p)
                    && let Some(value) = self.values.get(n - 1)
                {
                    *x = literal(value.value());
                    self.changed = true;
                }
            }
        }
    }
    impl VisitorMut for Binder<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, t: &mut TableFactor) -> ControlFlow<()> {
            match t {
                TableFactor::Table {
                    args: Some(args), ..
                } => self.bind(&mut args.args),
                TableFactor::Function { args, .. } => self.bind(args),
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let ParamValues::List(values) = params else {
        return false;
    };
    let mut b = Binder {
        values,
        changed: false,
    };
    let _ = statement.visit(&mut b);
    b.changed
}

/// A bound value as an SQL literal for [`bind_table_function_args`].
fn literal(v: &datafusion::common::ScalarValue) -> Expr {
    use datafusion::common::ScalarValue;
    use datafusion::sql::sqlparser::ast::Value;
    let value = match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Value::SingleQuotedString(s.clone()),
        ScalarValue::Boolean(Some(b)) => Value::Boolean(*b),
        v if v.is_null() => Value::Null,
        v if v.data_type().is_numeric() => Value::Number(v.to_string(), false),
        v => Value::SingleQuotedString(v.to_string()),
    };
    Expr::Value(value.with_empty_span())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod bind_tests {
    use super::*;

    #[test]
    fn parameters_of_table_functions_become_literals() {
        let mut s = Parser::parse_sql(
            &PostgreSqlDialect {},
            "SELECT * FROM taint($2, 'poison', $3) t WHERE t.value > $1",
        )
        .unwrap()
        .remove(0);
        let vals = [
            datafusion::common::ScalarValue::Int64(Some(5)),
            datafusion::common::ScalarValue::Utf8(Some("bc1q'x".into())),
            datafusion::common::ScalarValue::Int64(Some(2)),
        ];
        let params =
            datafusion::common::ParamValues::List(vals.into_iter().map(Into::into).collect());
        assert!(bind_table_function_args(&mut s, &params));
        assert_eq!(
            s.to_string(),
            "SELECT * FROM taint('bc1q''x', 'poison', 2) t WHERE t.value > $1"
        );
    }
}
