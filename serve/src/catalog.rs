//! A live, read-only catalog: each statement sees the warehouse's latest committed
//! manifests and result runs at the moment it starts, one snapshot for the whole
//! statement.
//!
//! [`Live`] keeps the newest snapshot (the chains' tables and the result tables) and
//! rebuilds it only when [`Warehouse::heads`] changed: a listing per chain and one for
//! the results, cheap next to a query. Each connection (pg) or request (Flight) has its
//! own [`PinnedCatalog`], pinned to a snapshot before a statement is planned; a plan holds
//! the tables (and so the files) it was planned with, so a commit during a long query
//! does not disturb it, and the next statement sees the commit.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use datafusion::catalog::{CatalogProvider, CatalogProviderList, MemoryCatalogProviderList};
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, Result, exec_err};
use datafusion::prelude::{SessionConfig, SessionContext};
use ferret_schemas::{Heads, Warehouse};

/// The name of the catalog every table is in (and the Postgres database name).
pub const CATALOG: &str = "ferret";

/// One committed state of the warehouse's tables.
pub struct Snapshot {
    heads: Heads,
    schemas: BTreeMap<String, Arc<dyn SchemaProvider>>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("heads", &self.heads)
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// No tables: what a connection holds before its first statement.
    pub fn empty() -> Arc<Self> {
        Arc::new(Snapshot {
            heads: Heads::default(),
            schemas: BTreeMap::new(),
        })
    }

    /// The heads it was read at.
    pub fn heads(&self) -> &Heads {
        &self.heads
    }
}

/// The newest snapshot of a warehouse, reloaded when a commit lands.
pub struct Live {
    wh: Warehouse,
    current: tokio::sync::Mutex<Option<Arc<Snapshot>>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Live {
    /// Over `wh` (nothing is read until [`Live::current`]).
    pub fn new(wh: Warehouse) -> Self {
        Live {
            wh,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The warehouse.
    pub fn warehouse(&self) -> &Warehouse {
        &self.wh
    }

    /// The snapshot a statement starting now reads.
    pub async fn current(&self) -> Result<Arc<Snapshot>> {
        let heads = self
            .wh
            .heads()
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut current = self.current.lock().await;
        if let Some(s) = current.as_ref()
            && s.heads == heads
        {
            return Ok(Arc::clone(s));
        }
        let snapshot = Arc::new(self.load(heads).await?);
        tracing::info!(heads = ?snapshot.heads, "catalog snapshot loaded");
        *current = Some(Arc::clone(&snapshot));
        Ok(snapshot)
    }

    async fn load(&self, heads: Heads) -> Result<Snapshot> {
        // The manifests and results head are read (and their files checked) by the same
        // code as `ferret sql`, into a scratch context whose schemas are then kept.
        let scratch = SessionContext::new_with_config(
            SessionConfig::new()
                .with_default_catalog_and_schema(CATALOG, "public")
                .with_create_default_catalog_and_schema(true),
        );
        ferret_query::register_warehouse(&scratch, &self.wh).await?;
        let catalog = scratch
            .catalog(CATALOG)
            .ok_or_else(|| DataFusionError::Internal("scratch catalog missing".into()))?;
        let mut schemas = BTreeMap::new();
        for name in catalog.schema_names() {
            if let Some(s) = catalog.schema(&name) {
                schemas.insert(name, s);
            }
        }
        Ok(Snapshot { heads, schemas })
    }
}

/// A schema that refuses changes.
#[derive(Debug)]
struct ReadOnlySchema(Arc<dyn SchemaProvider>);

#[async_trait::async_trait]
impl SchemaProvider for ReadOnlySchema {
    fn table_names(&self) -> Vec<String> {
        self.0.table_names()
    }
    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        self.0.table(name).await
    }
    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        exec_err!("cannot create table {name}: this server is read-only")
    }
    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        exec_err!("cannot drop table {name}: this server is read-only")
    }
    fn table_exist(&self, name: &str) -> bool {
        self.0.table_exist(name)
    }
}

/// The `ferret` catalog of one connection or request: the pinned snapshot's schemas
/// plus fixed ones (`pg_catalog`), all read-only.
#[derive(Debug)]
pub struct PinnedCatalog {
    fixed: BTreeMap<String, Arc<dyn SchemaProvider>>,
    pinned: RwLock<Arc<Snapshot>>,
}

impl PinnedCatalog {
    /// Pins `snapshot` for the statements that follow.
    pub fn pin(&self, snapshot: Arc<Snapshot>) {
        match self.pinned.write() {
            Ok(mut p) => *p = snapshot,
            Err(poisoned) => *poisoned.into_inner() = snapshot,
        }
    }

    /// Whether a warehouse snapshot was pinned yet (a new connection holds none).
    pub fn has_snapshot(&self) -> bool {
        !self.snapshot().schemas.is_empty()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        match self.pinned.read() {
            Ok(p) => Arc::clone(&p),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

impl CatalogProvider for PinnedCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.snapshot().schemas.keys().cloned().collect();
        names.extend(self.fixed.keys().cloned());
        names
    }
    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(s) = self.snapshot().schemas.get(name) {
            return Some(Arc::new(ReadOnlySchema(Arc::clone(s))));
        }
        self.fixed.get(name).cloned()
    }
    fn register_schema(
        &self,
        name: &str,
        _schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        exec_err!("cannot create schema {name}: this server is read-only")
    }
    fn deregister_schema(
        &self,
        name: &str,
        _cascade: bool,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        exec_err!("cannot drop schema {name}: this server is read-only")
    }
}

/// A catalog list holding only [`PinnedCatalog`], refusing new catalogs.
#[derive(Debug)]
struct ReadOnlyCatalogs(MemoryCatalogProviderList);

impl CatalogProviderList for ReadOnlyCatalogs {
    fn register_catalog(
        &self,
        name: String,
        _catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        tracing::warn!(catalog = %name, "refused to register a catalog: read-only server");
        None
    }
    fn catalog_names(&self) -> Vec<String> {
        self.0.catalog_names()
    }
    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        self.0.catalog(name)
    }
}

/// A catalog list for one connection or request: [`CATALOG`] with `fixed` schemas
/// taken from `base` (pg_catalog), pinned to `snapshot`.
pub fn pinned_catalogs(
    base: &SessionContext,
    snapshot: Arc<Snapshot>,
) -> (Arc<dyn CatalogProviderList>, Arc<PinnedCatalog>) {
    // The warehouse's own schemas always come from the pinned snapshot, never from the
    // base (which holds the tables of the moment the server started).
    let warehouse: Vec<&str> = ferret_schemas::Chain::all()
        .iter()
        .map(|c| c.as_str())
        .chain(["public"])
        .collect();
    let settings: Vec<(String, Option<String>, String)> = base
        .state()
        .config()
        .options()
        .entries()
        .into_iter()
        .map(|e| (e.key, e.value, e.description.to_string()))
        .collect();
    let catalog = Arc::new_cyclic(|me: &std::sync::Weak<PinnedCatalog>| {
        let mut fixed: BTreeMap<String, Arc<dyn SchemaProvider>> = BTreeMap::new();
        if let Some(cat) = base.catalog(CATALOG) {
            for name in cat.schema_names() {
                if !warehouse.contains(&name.as_str())
                    && let Some(s) = cat.schema(&name)
                {
                    let s: Arc<dyn SchemaProvider> = if name == "pg_catalog" {
                        // Over this connection's snapshot, so pg_class and the rest list
                        // the tables of the pinned snapshot (a result table that first
                        // appears after the start included), not those of the start.
                        let inner = crate::pginfo::pg_catalog_over(me.clone()).unwrap_or(s);
                        Arc::new(crate::pginfo::PgCatalog(inner))
                    } else {
                        s
                    };
                    fixed.insert(name, s);
                }
            }
        }
        // PostgreSQL's information_schema, not DataFusion's (which is off in the
        // statement contexts).
        fixed.insert(
            crate::pginfo::INFORMATION_SCHEMA.to_string(),
            Arc::new(crate::pginfo::InformationSchema::new(me.clone(), settings)),
        );
        PinnedCatalog {
            fixed,
            pinned: RwLock::new(snapshot),
        }
    });
    let list = MemoryCatalogProviderList::new();
    list.register_catalog(
        CATALOG.to_string(),
        Arc::clone(&catalog) as Arc<dyn CatalogProvider>,
    );
    (Arc::new(ReadOnlyCatalogs(list)), catalog)
}
