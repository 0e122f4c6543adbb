//! PostgreSQL's `information_schema`, as BI tools read it, over the pinned snapshot; and
//! the `pg_catalog` tables whose array columns clients index.
//!
//! DataFusion's own `information_schema` has Arrow type names (`Int64`, `Utf8`) and no
//! `udt_name`, `is_identity`, `table_constraints` or `key_column_usage`, which Metabase's
//! field sync and other tools select. This one has PostgreSQL's columns and type names,
//! is computed from the connection's pinned catalog when a statement reads it (so it
//! lists exactly the tables that statement can query), and answers the constraint views
//! with no rows: Ferret's tables have no keys or constraints.
//!
//! `pg_constraint` and `pg_index` from datafusion-pg-catalog hold PostgreSQL's own system
//! rows with key columns as text (`'{1,2}'`), so `attnum = ANY(conkey)` (Metabase) and
//! `con.conkey[pos.n]` (PgJDBC) do not plan. Here they have PostgreSQL's array types and
//! no rows: no table in this server has constraints or indexes.

use std::sync::{Arc, OnceLock, Weak};

use arrow::array::{ArrayRef, BooleanArray, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{CatalogProvider, MemTable, SchemaProvider, TableProvider};
use datafusion::common::Result;
use datafusion::datasource::TableType;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::{
    PgCatalogSchemaProvider, PgCatalogStaticTables,
};

use crate::catalog::{CATALOG, PinnedCatalog};

/// The schema name.
pub const INFORMATION_SCHEMA: &str = "information_schema";

const TABLES: &[&str] = &[
    "tables",
    "columns",
    "schemata",
    "views",
    "table_constraints",
    "key_column_usage",
    "referential_constraints",
    "constraint_column_usage",
    "df_settings",
];

/// PostgreSQL's name for an Arrow type in `information_schema.columns`: (`data_type`,
/// `udt_name`, numeric precision, numeric scale, datetime precision).
pub fn pg_type_names(t: &DataType) -> (String, String, Option<i32>, Option<i32>, Option<i32>) {
    let s = |a: &str, b: &str| (a.to_string(), b.to_string());
    let ((data_type, udt), prec, scale, dt) = match t {
        DataType::Boolean => (s("boolean", "bool"), None, None, None),
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => {
            (s("smallint", "int2"), Some(16), Some(0), None)
        }
        DataType::Int32 | DataType::UInt16 => (s("integer", "int4"), Some(32), Some(0), None),
        DataType::Int64 | DataType::UInt32 => (s("bigint", "int8"), Some(64), Some(0), None),
        DataType::UInt64 => (s("numeric", "numeric"), Some(20), Some(0), None),
        DataType::Float16 | DataType::Float32 => (s("real", "float4"), Some(24), None, None),
        DataType::Float64 => (s("double precision", "float8"), Some(53), None, None),
        DataType::Decimal32(p, sc)
        | DataType::Decimal64(p, sc)
        | DataType::Decimal128(p, sc)
        | DataType::Decimal256(p, sc) => (
            s("numeric", "numeric"),
            Some(i32::from(*p)),
            Some(i32::from(*sc)),
            None,
        ),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            (s("text", "text"), None, None, None)
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => (s("bytea", "bytea"), None, None, None),
        DataType::Date32 | DataType::Date64 => (s("date", "date"), None, None, Some(0)),
        DataType::Timestamp(unit, tz) => {
            let p = match unit {
                TimeUnit::Second => 0,
                TimeUnit::Millisecond => 3,
                TimeUnit::Microsecond | TimeUnit::Nanosecond => 6,
            };
            if tz.is_some() {
                (
                    s("timestamp with time zone", "timestamptz"),
                    None,
                    None,
                    Some(p),
                )
            } else {
                (
                    s("timestamp without time zone", "timestamp"),
                    None,
                    None,
                    Some(p),
                )
            }
        }
        DataType::Time32(_) | DataType::Time64(_) => {
            (s("time without time zone", "time"), None, None, Some(6))
        }
        DataType::Interval(_) | DataType::Duration(_) => {
            (s("interval", "interval"), None, None, Some(6))
        }
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f)
        | DataType::FixedSizeList(f, _) => {
            let (_, inner, ..) = pg_type_names(f.data_type());
            (("ARRAY".to_string(), format!("_{inner}")), None, None, None)
        }
        DataType::Dictionary(_, v) => return pg_type_names(v),
        DataType::Struct(_) | DataType::Map(..) | DataType::Union(..) => {
            (s("json", "json"), None, None, None)
        }
        _ => (s("text", "text"), None, None, None),
    };
    (data_type, udt, prec, scale, dt)
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn int(name: &str) -> Field {
    Field::new(name, DataType::Int32, true)
}

fn schema_of(table: &str) -> SchemaRef {
    let f = match table {
        "tables" => vec![
            utf8("table_catalog", false),
            utf8("table_schema", false),
            utf8("table_name", false),
            utf8("table_type", false),
            utf8("self_referencing_column_name", true),
            utf8("reference_generation", true),
            utf8("user_defined_type_catalog", true),
            utf8("user_defined_type_schema", true),
            utf8("user_defined_type_name", true),
            utf8("is_insertable_into", false),
            utf8("is_typed", false),
            utf8("commit_action", true),
        ],
        "columns" => vec![
            utf8("table_catalog", false),
            utf8("table_schema", false),
            utf8("table_name", false),
            utf8("column_name", false),
            int("ordinal_position"),
            utf8("column_default", true),
            utf8("is_nullable", false),
            utf8("data_type", false),
            int("character_maximum_length"),
            int("character_octet_length"),
            int("numeric_precision"),
            int("numeric_precision_radix"),
            int("numeric_scale"),
            int("datetime_precision"),
            utf8("interval_type", true),
            utf8("udt_catalog", false),
            utf8("udt_schema", false),
            utf8("udt_name", false),
            utf8("is_identity", false),
            utf8("identity_generation", true),
            utf8("is_generated", false),
            utf8("generation_expression", true),
            utf8("is_updatable", false),
        ],
        "schemata" => vec![
            utf8("catalog_name", false),
            utf8("schema_name", false),
            utf8("schema_owner", false),
            utf8("default_character_set_catalog", true),
            utf8("default_character_set_schema", true),
            utf8("default_character_set_name", true),
            utf8("sql_path", true),
        ],
        "views" => vec![
            utf8("table_catalog", false),
            utf8("table_schema", false),
            utf8("table_name", false),
            utf8("view_definition", true),
            utf8("check_option", false),
            utf8("is_updatable", false),
            utf8("is_insertable_into", false),
            utf8("is_trigger_updatable", false),
            utf8("is_trigger_deletable", false),
            utf8("is_trigger_insertable_into", false),
        ],
        "table_constraints" => vec![
            utf8("constraint_catalog", false),
            utf8("constraint_schema", false),
            utf8("constraint_name", false),
            utf8("table_catalog", false),
            utf8("table_schema", false),
            utf8("table_name", false),
            utf8("constraint_type", false),
            utf8("is_deferrable", false),
            utf8("initially_deferred", false),
            utf8("enforced", false),
            utf8("nulls_distinct", true),
        ],
        "key_column_usage" => vec![
            utf8("constraint_catalog", false),
            utf8("constraint_schema", false),
            utf8("constraint_name", false),
            utf8("table_catalog", false),
            utf8("table_schema", false),
            utf8("table_name", false),
            utf8("column_name", false),
            int("ordinal_position"),
            int("position_in_unique_constraint"),
        ],
        "referential_constraints" => vec![
            utf8("constraint_catalog", false),
            utf8("constraint_schema", false),
            utf8("constraint_name", false),
            utf8("unique_constraint_catalog", true),
            utf8("unique_constraint_schema", true),
            utf8("unique_constraint_name", true),
            utf8("match_option", false),
            utf8("update_rule", false),
            utf8("delete_rule", false),
        ],
        "constraint_column_usage" => vec![
            utf8("table_catalog", false),
            utf8("table_schema", false),
            utf8("table_name", false),
            utf8("column_name", false),
            utf8("constraint_catalog", false),
            utf8("constraint_schema", false),
            utf8("constraint_name", false),
        ],
        // DataFusion's, which its SHOW reads.
        "df_settings" => vec![
            utf8("name", false),
            utf8("value", true),
            utf8("description", true),
        ],
        _ => vec![],
    };
    Arc::new(Schema::new(f))
}

/// Column-wise rows of one table.
struct Rows {
    schema: SchemaRef,
    cols: Vec<Vec<Option<String>>>,
}

impl Rows {
    fn new(table: &str) -> Self {
        let schema = schema_of(table);
        let cols = vec![Vec::new(); schema.fields().len()];
        Rows { schema, cols }
    }

    fn push(&mut self, row: Vec<Option<String>>) {
        for (c, v) in self.cols.iter_mut().zip(row) {
            c.push(v);
        }
    }

    fn batch(self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self
            .schema
            .fields()
            .iter()
            .zip(self.cols)
            .map(|(f, vals)| -> ArrayRef {
                match f.data_type() {
                    DataType::Int32 => Arc::new(
                        vals.iter()
                            .map(|v| v.as_deref().and_then(|s| s.parse::<i32>().ok()))
                            .collect::<Int32Array>(),
                    ),
                    DataType::Boolean => Arc::new(
                        vals.iter()
                            .map(|v| v.as_deref().map(|s| s == "true"))
                            .collect::<BooleanArray>(),
                    ),
                    _ => Arc::new(StringArray::from(vals)),
                }
            })
            .collect();
        Ok(RecordBatch::try_new(self.schema, arrays)?)
    }
}

/// A table as listed: its schema, its name and (when opened) its provider.
type Listed = (String, String, Option<Arc<dyn TableProvider>>);

/// PostgreSQL's `information_schema` over one connection's pinned catalog.
#[derive(Debug)]
pub struct InformationSchema {
    catalog: Weak<PinnedCatalog>,
    settings: Vec<(String, Option<String>, String)>,
}

impl InformationSchema {
    /// Over `catalog`, with DataFusion's settings for `df_settings`.
    pub fn new(
        catalog: Weak<PinnedCatalog>,
        settings: Vec<(String, Option<String>, String)>,
    ) -> Self {
        InformationSchema { catalog, settings }
    }

    async fn build(&self, table: &str) -> Result<RecordBatch> {
        let mut rows = Rows::new(table);
        let o = |s: &str| Some(s.to_string());
        let catalog = self.catalog.upgrade();
        // Every (schema, table, provider) the statement can read, in name order.
        let mut all: Vec<Listed> = Vec::new();
        if let Some(cat) = &catalog
            && matches!(table, "tables" | "columns" | "views")
        {
            let mut schemas = cat.schema_names();
            schemas.sort();
            for s in schemas {
                if s == INFORMATION_SCHEMA {
                    continue;
                }
                let Some(provider) = cat.schema(&s) else {
                    continue;
                };
                let mut names = provider.table_names();
                names.sort();
                for t in names {
                    let p = if table == "tables" && s == "pg_catalog" {
                        None // the type is enough; no need to open each
                    } else {
                        provider.table(&t).await.ok().flatten()
                    };
                    all.push((s.clone(), t, p));
                }
            }
            for t in TABLES {
                all.push((INFORMATION_SCHEMA.to_string(), t.to_string(), None));
            }
        }
        match table {
            "tables" => {
                for (s, t, p) in &all {
                    let kind = match p.as_ref().map(|p| p.table_type()) {
                        Some(TableType::View) => "VIEW",
                        _ if s == INFORMATION_SCHEMA => "VIEW",
                        _ => "BASE TABLE",
                    };
                    rows.push(vec![
                        o(CATALOG),
                        o(s),
                        o(t),
                        o(kind),
                        None,
                        None,
                        None,
                        None,
                        None,
                        o("NO"),
                        o("NO"),
                        None,
                    ]);
                }
            }
            "columns" => {
                for (s, t, p) in &all {
                    let schema = match p {
                        Some(p) => p.schema(),
                        None if s == INFORMATION_SCHEMA => schema_of(t),
                        None => continue,
                    };
                    for (i, f) in schema.fields().iter().enumerate() {
                        let (data_type, udt, prec, scale, dt) = pg_type_names(f.data_type());
                        let radix = match (prec, f.data_type()) {
                            (
                                Some(_),
                                DataType::Float16 | DataType::Float32 | DataType::Float64,
                            ) => Some(2),
                            (Some(_), d) if d.is_integer() => Some(2),
                            (Some(_), _) => Some(10),
                            _ => None,
                        };
                        let n = |v: Option<i32>| v.map(|x| x.to_string());
                        rows.push(vec![
                            o(CATALOG),
                            o(s),
                            o(t),
                            o(f.name()),
                            Some((i + 1).to_string()),
                            None,
                            o(if f.is_nullable() { "YES" } else { "NO" }),
                            Some(data_type),
                            None,
                            None,
                            n(prec),
                            n(radix),
                            n(scale),
                            n(dt),
                            None,
                            o(CATALOG),
                            o("pg_catalog"),
                            Some(udt),
                            o("NO"),
                            None,
                            o("NEVER"),
                            None,
                            o("NO"),
                        ]);
                    }
                }
            }
            "views" => {
                for (s, t, p) in &all {
                    if let Some(p) = p
                        && p.table_type() == TableType::View
                    {
                        rows.push(vec![
                            o(CATALOG),
                            o(s),
                            o(t),
                            p.get_table_definition().map(str::to_string),
                            o("NONE"),
                            o("NO"),
                            o("NO"),
                            o("NO"),
                            o("NO"),
                            o("NO"),
                        ]);
                    }
                }
            }
            "schemata" => {
                if let Some(cat) = &catalog {
                    let mut schemas = cat.schema_names();
                    schemas.sort();
                    for s in schemas {
                        rows.push(vec![o(CATALOG), o(&s), o("ferret"), None, None, None, None]);
                    }
                }
            }
            "df_settings" => {
                for (name, value, description) in &self.settings {
                    rows.push(vec![o(name), value.clone(), o(description)]);
                }
            }
            // No keys, constraints or references on any table.
            _ => {}
        }
        rows.batch()
    }
}

#[async_trait::async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let name = name.to_ascii_lowercase();
        if !TABLES.contains(&name.as_str()) {
            return Ok(None);
        }
        let batch = self.build(&name).await?;
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name.to_ascii_lowercase().as_str())
    }
}

/// The tables of one pinned catalog, as datafusion-pg-catalog's `pg_class`,
/// `pg_attribute`, … read them. Weak: the catalog holds the pg_catalog schema that holds
/// this.
#[derive(Clone, Debug)]
pub struct SnapshotInfo(Weak<PinnedCatalog>);

impl SnapshotInfo {
    fn catalog(&self, name: &str) -> Option<Arc<PinnedCatalog>> {
        (name == CATALOG).then(|| self.0.upgrade()).flatten()
    }

    async fn table(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        match self.catalog(catalog).and_then(|c| c.schema(schema)) {
            Some(s) => s.table(table).await,
            None => Ok(None),
        }
    }
}

#[async_trait::async_trait]
impl CatalogInfo for SnapshotInfo {
    async fn catalog_names(&self) -> Result<Vec<String>> {
        Ok(vec![CATALOG.to_string()])
    }

    async fn schema_names(&self, catalog: &str) -> Result<Option<Vec<String>>> {
        Ok(self.catalog(catalog).map(|c| c.schema_names()))
    }

    async fn table_names(&self, catalog: &str, schema: &str) -> Result<Option<Vec<String>>> {
        Ok(self
            .catalog(catalog)
            .and_then(|c| c.schema(schema))
            .map(|s| s.table_names()))
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<SchemaRef>> {
        if let Some(own) = own_table(catalog, schema, table) {
            return Ok(own.map(|t| schema_of(&t)));
        }
        Ok(self
            .table(catalog, schema, table)
            .await?
            .map(|t| t.schema()))
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<TableType>> {
        if let Some(own) = own_table(catalog, schema, table) {
            return Ok(own.map(|_| TableType::View));
        }
        Ok(self
            .table(catalog, schema, table)
            .await?
            .map(|t| t.table_type()))
    }
}

/// For a table in information_schema: its name when it is one of ours (its columns are
/// fixed, so they are known without computing its rows, which would read every other
/// table); None for a table in any other schema.
fn own_table(catalog: &str, schema: &str, table: &str) -> Option<Option<String>> {
    (schema == INFORMATION_SCHEMA && catalog == CATALOG).then(|| {
        let t = table.to_ascii_lowercase();
        TABLES.contains(&t.as_str()).then_some(t)
    })
}

/// datafusion-pg-catalog's tables read once (PostgreSQL's own catalog rows).
fn static_tables() -> Option<Arc<PgCatalogStaticTables>> {
    static TABLES: OnceLock<Option<Arc<PgCatalogStaticTables>>> = OnceLock::new();
    TABLES
        .get_or_init(|| match PgCatalogStaticTables::try_new() {
            Ok(t) => Some(Arc::new(t)),
            Err(e) => {
                tracing::error!(error = %e, "pg_catalog's static tables did not load");
                None
            }
        })
        .clone()
}

/// A `pg_catalog` schema over one pinned catalog (None when its static tables did not
/// load; the caller keeps the base's).
pub fn pg_catalog_over(catalog: Weak<PinnedCatalog>) -> Option<Arc<dyn SchemaProvider>> {
    let provider = PgCatalogSchemaProvider::try_new(
        SnapshotInfo(catalog),
        static_tables()?,
        EmptyContextProvider,
    )
    .ok()?;
    Some(Arc::new(provider))
}

/// `pg_catalog` with `pg_constraint` and `pg_index` in PostgreSQL's array types, empty.
#[derive(Debug)]
pub struct PgCatalog(pub Arc<dyn SchemaProvider>);

fn list(name: &str, item: DataType) -> Field {
    Field::new(
        name,
        DataType::List(Arc::new(Field::new("item", item, true))),
        true,
    )
}

/// The overridden tables' schemas: the columns of datafusion-pg-catalog's, with the
/// arrays (`int2vector`, `oidvector`, `int2[]`, `oid[]`) as lists.
fn override_schema(name: &str) -> Option<SchemaRef> {
    let i32n = |n: &str| Field::new(n, DataType::Int32, false);
    let b = |n: &str| Field::new(n, DataType::Boolean, false);
    let u = |n: &str| Field::new(n, DataType::Utf8, false);
    let i16n = |n: &str| Field::new(n, DataType::Int16, false);
    let fields = match name {
        "pg_constraint" => vec![
            i32n("oid"),
            u("conname"),
            i32n("connamespace"),
            u("contype"),
            b("condeferrable"),
            b("condeferred"),
            b("convalidated"),
            i32n("conrelid"),
            i32n("contypid"),
            i32n("conindid"),
            i32n("conparentid"),
            i32n("confrelid"),
            u("confupdtype"),
            u("confdeltype"),
            u("confmatchtype"),
            b("conislocal"),
            i16n("coninhcount"),
            b("connoinherit"),
            list("conkey", DataType::Int16),
            list("confkey", DataType::Int16),
            list("conpfeqop", DataType::Int32),
            list("conppeqop", DataType::Int32),
            list("conffeqop", DataType::Int32),
            list("confdelsetcols", DataType::Int16),
            list("conexclop", DataType::Int32),
            Field::new("conbin", DataType::Utf8, true),
        ],
        "pg_index" => vec![
            i32n("indexrelid"),
            i32n("indrelid"),
            i16n("indnatts"),
            i16n("indnkeyatts"),
            b("indisunique"),
            b("indnullsnotdistinct"),
            b("indisprimary"),
            b("indisexclusion"),
            b("indimmediate"),
            b("indisclustered"),
            b("indisvalid"),
            b("indcheckxmin"),
            b("indisready"),
            b("indislive"),
            b("indisreplident"),
            list("indkey", DataType::Int16),
            list("indcollation", DataType::Int32),
            list("indclass", DataType::Int32),
            list("indoption", DataType::Int16),
            Field::new("indexprs", DataType::Utf8, true),
            Field::new("indpred", DataType::Utf8, true),
        ],
        _ => return None,
    };
    Some(Arc::new(Schema::new(fields)))
}

#[async_trait::async_trait]
impl SchemaProvider for PgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.0.table_names()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(schema) = override_schema(name) {
            return Ok(Some(Arc::new(MemTable::try_new(schema, vec![vec![]])?)));
        }
        self.0.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.0.table_exist(name)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ferret_types_get_postgres_names() {
        let n = |t: DataType| {
            let (d, u, p, s, _) = pg_type_names(&t);
            (d, u, p, s)
        };
        assert_eq!(
            n(DataType::Int64),
            ("bigint".into(), "int8".into(), Some(64), Some(0))
        );
        assert_eq!(n(DataType::Utf8View).1, "text");
        assert_eq!(
            n(DataType::Decimal256(76, 0)),
            ("numeric".into(), "numeric".into(), Some(76), Some(0))
        );
        assert_eq!(
            n(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into())
            ))
            .1,
            "timestamptz"
        );
        assert_eq!(
            n(DataType::List(Arc::new(Field::new(
                "item",
                DataType::Int64,
                true
            )))),
            ("ARRAY".into(), "_int8".into(), None, None)
        );
    }
}
