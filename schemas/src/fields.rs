//! Field constructors shared by the chain schemas.

use arrow::datatypes::{DataType, Field};

pub(crate) fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}
pub(crate) fn i64(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Int64, nullable)
}
pub(crate) fn i32(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Int32, nullable)
}
