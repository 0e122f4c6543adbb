//! Tables as datasets: each table is defined once, with [`dataset!`], as its columns in
//! order (name, kind, nullability, doc). The table's Arrow schema and a builder with one
//! named, typed column builder per column both come from that one definition, so the
//! writers fill columns by name and the schema, the builders and the batches cannot drift
//! apart (two columns of one type cannot be swapped by position).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Decimal128Builder,
    Decimal256Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    TimestampSecondBuilder,
};
use arrow::datatypes::{DataType, Field, TimeUnit};

/// A column kind: its Arrow type and the builder that fills it.
pub trait Kind {
    /// The column builder.
    type Builder: ArrayBuilder;
    /// The Arrow type of the column.
    fn data_type() -> DataType;
    /// An empty builder of this kind, with room for `rows`.
    fn builder(rows: usize) -> Self::Builder;
    /// A fresh builder for the batch after `last`: a quarter more room than it took, so
    /// steady batches never grow their buffers.
    fn next(last: &ArrayRef) -> Self::Builder {
        Self::builder(room(last.len()))
    }
}

fn room(n: usize) -> usize {
    n + n / 4
}

/// Finishes `b` into an array and leaves a fresh builder sized for the next batch.
pub fn take<K: Kind>(b: &mut K::Builder) -> ArrayRef {
    let a = b.finish();
    *b = K::next(&a);
    a
}

macro_rules! kinds {
    ($($(#[$m:meta])* $kind:ident => $builder:ty, $dt:expr, $new:expr $(, next: $next:expr)?;)*) => {
        $(
            $(#[$m])*
            #[derive(Debug, Clone, Copy)]
            pub struct $kind;
            impl Kind for $kind {
                type Builder = $builder;
                fn data_type() -> DataType {
                    $dt
                }
                fn builder(rows: usize) -> $builder {
                    ($new)(rows)
                }
                $(
                    fn next(last: &ArrayRef) -> $builder {
                        ($next)(last)
                    }
                )?
            }
        )*
    };
}

kinds! {
    /// 64-bit signed integer.
    Int64 => Int64Builder, DataType::Int64, Int64Builder::with_capacity;
    /// 32-bit signed integer.
    Int32 => Int32Builder, DataType::Int32, Int32Builder::with_capacity;
    /// UTF-8 string.
    Utf8 => StringBuilder, DataType::Utf8, |n| StringBuilder::with_capacity(n, n * 16),
        next: |a: &ArrayRef| StringBuilder::with_capacity(
            room(a.len()),
            room(a.as_string_opt::<i32>().map_or(0, |s| s.value_data().len())),
        );
    /// Bytes.
    Binary => BinaryBuilder, DataType::Binary, |n| BinaryBuilder::with_capacity(n, n * 16),
        next: |a: &ArrayRef| BinaryBuilder::with_capacity(
            room(a.len()),
            room(a.as_binary_opt::<i32>().map_or(0, |s| s.value_data().len())),
        );
    /// Boolean.
    Boolean => BooleanBuilder, DataType::Boolean, BooleanBuilder::with_capacity;
    /// Seconds since the epoch, UTC.
    TimestampUtc => TimestampSecondBuilder,
        DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
        |n| TimestampSecondBuilder::with_capacity(n).with_timezone("UTC");
    /// Wei: `Decimal128(38, 0)` (all ETH ever is ~1.2e26 wei).
    Wei => Decimal128Builder, DataType::Decimal128(38, 0),
        |n| Decimal128Builder::with_capacity(n).with_data_type(DataType::Decimal128(38, 0));
    /// A uint256 amount: `Decimal256(76, 0)`, NULL past 76 digits.
    U256 => Decimal256Builder, DataType::Decimal256(76, 0),
        |n| Decimal256Builder::with_capacity(n).with_data_type(DataType::Decimal256(76, 0));
    /// A list of byte strings (no null items).
    BinaryList => ListBuilder<BinaryBuilder>,
        DataType::List(Arc::new(Field::new_list_field(DataType::Binary, false))),
        |n| ListBuilder::with_capacity(BinaryBuilder::new(), n)
            .with_field(Arc::new(Field::new_list_field(DataType::Binary, false)));
    /// A list of strings (no null items).
    Utf8List => ListBuilder<StringBuilder>,
        DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, false))),
        |n| ListBuilder::with_capacity(StringBuilder::new(), n)
            .with_field(Arc::new(Field::new_list_field(DataType::Utf8, false)));
}

/// Defines a table once: `$name::schema()` (its Arrow schema, columns in the order
/// written) and `$name` itself, one public column builder per column, with
/// [`$name::finish`] turning what was appended into a batch of that schema.
///
/// ```
/// ferret_schemas::dataset! {
///     /// Two columns.
///     pub struct Pairs {
///         /// A key.
///         key: Utf8,
///         /// May be missing.
///         value: Int64 (nullable),
///     }
/// }
/// let mut p = Pairs::new();
/// p.key.append_value("a");
/// p.value.append_null();
/// let batch = p.finish().expect("valid");
/// assert_eq!(batch.schema(), Pairs::schema());
/// assert_eq!(batch.num_rows(), 1);
/// ```
#[macro_export]
macro_rules! dataset {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$cmeta:meta])* $col:ident : $kind:ident $( ( $null:ident ) )? ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[allow(missing_debug_implementations)]
        $vis struct $name {
            $( $(#[$cmeta])* pub $col: <$crate::dataset::$kind as $crate::dataset::Kind>::Builder, )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $name {
            /// The table's Arrow schema.
            pub fn schema() -> ::arrow::datatypes::SchemaRef {
                static SCHEMA: ::std::sync::LazyLock<::arrow::datatypes::SchemaRef> =
                    ::std::sync::LazyLock::new(|| {
                        ::std::sync::Arc::new(::arrow::datatypes::Schema::new(vec![
                            $( ::arrow::datatypes::Field::new(
                                stringify!($col),
                                <$crate::dataset::$kind as $crate::dataset::Kind>::data_type(),
                                $crate::dataset!(@nullable $($null)?),
                            ), )*
                        ]))
                    });
                SCHEMA.clone()
            }

            /// Empty column builders.
            pub fn new() -> Self {
                Self {
                    $( $col: <$crate::dataset::$kind as $crate::dataset::Kind>::builder(1024), )*
                }
            }

            /// What was appended, as one batch of [`Self::schema`] (an error when the
            /// columns' lengths differ or a non-nullable column holds a null); the builders
            /// start again empty.
            pub fn finish(
                &mut self,
            ) -> ::std::result::Result<::arrow::array::RecordBatch, ::arrow::error::ArrowError> {
                ::arrow::array::RecordBatch::try_new(
                    Self::schema(),
                    vec![$( $crate::dataset::take::<$crate::dataset::$kind>(&mut self.$col), )*],
                )
            }
        }
    };
    (@nullable nullable) => { true };
    (@nullable) => { false };
}

#[cfg(test)]
mod tests {
    crate::dataset! {
        struct Sample {
            id: Int64,
            name: Utf8 (nullable),
            blobs: BinaryList,
        }
    }

    #[test]
    fn a_short_column_or_a_null_in_a_required_one_is_an_error() {
        let mut s = Sample::new();
        s.id.append_value(1);
        s.name.append_null();
        s.blobs.values().append_value(b"x");
        s.blobs.append(true);
        let b = s.finish().expect("whole row");
        assert_eq!((b.num_rows(), b.schema()), (1, Sample::schema()));
        // A column left behind: refused, not padded.
        s.id.append_value(2);
        s.name.append_value("n");
        assert!(s.finish().is_err());
        // A null where the schema has none.
        let mut s = Sample::new();
        s.id.append_null();
        s.name.append_null();
        s.blobs.append(true);
        assert!(s.finish().is_err());
    }

    #[test]
    fn builders_start_empty_after_finish_with_room_for_the_next_batch() {
        let mut s = Sample::new();
        for i in 0..5000 {
            s.id.append_value(i);
            s.name.append_value("abc");
            s.blobs.append(true);
        }
        assert_eq!(s.finish().expect("batch").num_rows(), 5000);
        assert!(s.id.capacity() >= 6000 && s.name.values_slice().is_empty());
        assert_eq!(s.finish().expect("empty").num_rows(), 0);
    }
}
