//! Arrow → Postgres rows, exact for every decimal.
//!
//! arrow-pg encodes `Decimal128` through rust_decimal (at most 28 digits) and cannot
//! encode `Decimal256` at all, but wei amounts are `Decimal128(38, 0)` and token amounts
//! `Decimal256(76, 0)`. Such "wide" decimals are sent here as Postgres `numeric` from
//! their exact decimal digits, in text and in binary format; every other column is
//! encoded by arrow-pg as before.

use std::error::Error;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Decimal128Type, Decimal256Type, Field, Schema};
use bytes::{BufMut, BytesMut};
use datafusion::prelude::DataFrame;
use datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields;
use datafusion_postgres::arrow_pg::encoder::encode_value;
use datafusion_postgres::pgwire;
use futures::StreamExt;
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldInfo, QueryResponse};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions;
use postgres_types::{IsNull, ToSql, to_sql_checked};

/// Whether arrow-pg would lose or refuse this type's values.
pub fn wide(dt: &DataType) -> bool {
    match dt {
        DataType::Decimal128(p, _) => *p > 28,
        DataType::Decimal256(..) => true,
        _ => false,
    }
}

/// The Postgres fields of `schema` (wide decimals as `numeric`).
pub fn pg_fields(
    schema: &Schema,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<Vec<FieldInfo>> {
    let narrowed = Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                if wide(f.data_type()) {
                    // Only for the field description: numeric, same name.
                    Arc::new(Field::new(
                        f.name(),
                        DataType::Decimal128(28, 0),
                        f.is_nullable(),
                    ))
                } else {
                    Arc::clone(f)
                }
            })
            .collect::<Vec<_>>(),
    );
    arrow_schema_to_pg_fields(&narrowed, format, options)
}

/// A decimal as Postgres `numeric`: the integer digits and the scale.
#[derive(Debug)]
pub struct Numeric {
    /// `-` and the digits of the unscaled integer.
    unscaled: String,
    scale: i8,
}

impl Numeric {
    fn text(&self) -> String {
        let (neg, digits) = match self.unscaled.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, self.unscaled.as_str()),
        };
        let s = self.scale.max(0) as usize;
        let mut out = String::with_capacity(digits.len() + 3);
        if neg {
            out.push('-');
        }
        if s == 0 {
            out.push_str(digits);
            if self.scale < 0 {
                out.extend(std::iter::repeat_n('0', (-self.scale) as usize));
            }
        } else if digits.len() > s {
            out.push_str(&digits[..digits.len() - s]);
            out.push('.');
            out.push_str(&digits[digits.len() - s..]);
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', s - digits.len()));
            out.push_str(digits);
        }
        out
    }
}

impl ToSqlText for Numeric {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _format_options: &FormatOptions,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_slice(self.text().as_bytes());
        Ok(IsNull::No)
    }
}

impl ToSql for Numeric {
    /// Postgres's binary `numeric`: base-10000 digits with a weight, a sign and the
    /// display scale.
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let text = self.text();
        let (neg, body) = match text.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, text.as_str()),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let int = int.trim_start_matches('0');
        // Integer part grouped from the right, fraction from the left, in 4 digits.
        let int_pad = (4 - int.len() % 4) % 4;
        let int_digits: String = "0".repeat(int_pad) + int;
        let frac_pad = (4 - frac.len() % 4) % 4;
        let frac_digits: String = frac.to_string() + &"0".repeat(frac_pad);
        let mut groups: Vec<i16> = Vec::new();
        for chunk in int_digits
            .as_bytes()
            .chunks(4)
            .chain(frac_digits.as_bytes().chunks(4))
        {
            let mut g = 0i16;
            for &c in chunk {
                g = g * 10 + i16::from(c - b'0');
            }
            groups.push(g);
        }
        let int_groups = int_digits.len() / 4;
        let mut weight = int_groups as i32 - 1;
        // Strip leading and trailing zero groups.
        let mut start = 0;
        while start < groups.len() && groups[start] == 0 {
            start += 1;
            weight -= 1;
        }
        let mut end = groups.len();
        while end > start && groups[end - 1] == 0 {
            end -= 1;
        }
        let groups = &groups[start..end];
        let dscale = frac.len() as u16;
        if groups.is_empty() {
            weight = 0;
        }
        out.put_i16(i16::try_from(groups.len())?);
        out.put_i16(i16::try_from(weight)?);
        out.put_u16(if neg && !groups.is_empty() { 0x4000 } else { 0 });
        out.put_u16(dscale);
        for g in groups {
            out.put_i16(*g);
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

fn numeric_at(arr: &dyn Array, idx: usize) -> Option<Numeric> {
    if arr.is_null(idx) {
        return None;
    }
    match arr.data_type() {
        DataType::Decimal128(_, s) => Some(Numeric {
            unscaled: arr.as_primitive::<Decimal128Type>().value(idx).to_string(),
            scale: *s,
        }),
        DataType::Decimal256(_, s) => Some(Numeric {
            unscaled: arr.as_primitive::<Decimal256Type>().value(idx).to_string(),
            scale: *s,
        }),
        _ => None,
    }
}

fn encode_batch(fields: &Arc<Vec<FieldInfo>>, batch: &RecordBatch) -> Vec<PgWireResult<DataRow>> {
    let schema = batch.schema();
    let mut rows = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        let mut enc = DataRowEncoder::new(Arc::clone(fields));
        let mut result = Ok(());
        for (c, col) in batch.columns().iter().enumerate() {
            let field = schema.field(c);
            result = if wide(field.data_type()) {
                pgwire::api::results::DataRowEncoder::encode_field(
                    &mut enc,
                    &numeric_at(col.as_ref(), r),
                )
            } else {
                encode_value(&mut enc, col, r, field, &fields[c])
            };
            if result.is_err() {
                break;
            }
        }
        rows.push(result.map(|_| enc.take_row()));
    }
    rows
}

/// Runs `df` and encodes its rows as they come.
pub async fn encode(
    df: DataFrame,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(pg_fields(df.schema().as_arrow(), format, options)?);
    let stream = df
        .execute_stream()
        .await
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let f = Arc::clone(&fields);
    let rows = stream
        .map(move |b| match b {
            Ok(b) => futures::stream::iter(encode_batch(&f, &b)),
            Err(e) => futures::stream::iter(vec![Err(PgWireError::ApiError(Box::new(e)))]),
        })
        .flatten();
    Ok(QueryResponse::new(fields, rows))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn binary(unscaled: &str, scale: i8) -> Vec<u8> {
        let mut out = BytesMut::new();
        Numeric {
            unscaled: unscaled.into(),
            scale,
        }
        .to_sql(&Type::NUMERIC, &mut out)
        .unwrap();
        out.to_vec()
    }

    fn words(v: &[i16]) -> Vec<u8> {
        v.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    #[test]
    fn numeric_text_and_binary_are_exact() {
        let n = |u: &str, s| {
            Numeric {
                unscaled: u.into(),
                scale: s,
            }
            .text()
        };
        assert_eq!(
            n("123456789012345678901234567890123456789", 0),
            "123456789012345678901234567890123456789"
        );
        assert_eq!(n("-12345", 2), "-123.45");
        assert_eq!(n("5", 3), "0.005");
        assert_eq!(n("0", 0), "0");
        // 12345678 = 1234 5678, weight 1.
        assert_eq!(binary("12345678", 0), words(&[2, 1, 0, 0, 1234, 5678]));
        // 10000 = 1 0000: trailing zero group dropped, weight 1.
        assert_eq!(binary("10000", 0), words(&[1, 1, 0, 0, 1]));
        // -123.45: 0123 . 4500, dscale 2, negative.
        assert_eq!(binary("-12345", 2), words(&[2, 0, 0x4000, 2, 123, 4500]));
        // 0.005: weight -1, group 0050, dscale 3.
        assert_eq!(binary("5", 3), words(&[1, -1, 0, 3, 50]));
        assert_eq!(binary("0", 0), words(&[0, 0, 0, 0]));
    }
}
