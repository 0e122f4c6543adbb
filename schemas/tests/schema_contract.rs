//! The table contract, frozen: every registered table's columns (name, Arrow type with its
//! nested fields, nullability, in order) must equal `tests/schemas.txt`. Readers (DuckDB,
//! Spark, BI tools, saved SQL) depend on these; a change here is deliberate, with
//! `SCHEMA_VERSION` bumped and the file regenerated (`FERRET_BLESS=1`).

fn render() -> String {
    let mut out = format!("schema_version {}\n", ferret_schemas::SCHEMA_VERSION);
    for t in ferret_schemas::tables() {
        out.push_str(&format!("\n{}\n", t.qualified_name()));
        for f in t.schema().fields() {
            out.push_str(&format!(
                "  {} {:?}{}\n",
                f.name(),
                f.data_type(),
                if f.is_nullable() { "" } else { " NOT NULL" }
            ));
        }
    }
    out
}

#[test]
fn table_schemas_are_the_published_contract() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemas.txt");
    let got = render();
    if std::env::var("FERRET_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &got).expect("write tests/schemas.txt");
    }
    let want = std::fs::read_to_string(&path).expect("tests/schemas.txt");
    assert_eq!(
        got, want,
        "the table schemas changed (see this file's header)"
    );
}
