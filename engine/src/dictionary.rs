//! Which Parquet columns get dictionary encoding.
//!
//! A dictionary pays off when values repeat (a score with 1,000 levels, a domain label), and
//! is pure cost when they do not (ids, document texts): the Parquet writer hashes every value
//! into the dictionary until it outgrows its page limit (1 MB), and for a column of 8-byte ids
//! that is all 128Ki rows of a row group, written out as a dictionary plus indices that are
//! larger than the plain values. On the 10M-row fold benchmark the dictionaries of the id and
//! text columns cost 1.2 s of CPU time. So the writer looks at the first values of a file and
//! turns the dictionary off for the columns whose values are mostly distinct; it never turns
//! one on, and a column whose dictionary encoding COPY's options set keeps it.

use std::borrow::Cow;
use std::collections::HashSet;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;

/// Values of a column looked at before choosing (the first ones of the file).
const SAMPLE: usize = 16 * 1024;

/// Who chooses each column's dictionary encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dictionaries {
    /// The user set it for every column (`'format.dictionary_enabled'`).
    Given,
    /// The writer chooses from the data, except for the columns the user set
    /// (`'format.dictionary_enabled::column'`).
    FromData {
        /// Columns whose setting the user gave.
        given: HashSet<String>,
    },
}

impl Dictionaries {
    /// Who chooses, from the keys of a COPY's options.
    pub fn from_options<'a>(keys: impl IntoIterator<Item = &'a String>) -> Self {
        let mut given = HashSet::new();
        for key in keys {
            let Some(rest) = key.strip_prefix("format.dictionary_enabled") else {
                continue;
            };
            match rest.strip_prefix("::") {
                Some(column) => {
                    given.insert(column.to_string());
                }
                None if rest.is_empty() => return Self::Given,
                None => {}
            }
        }
        Self::FromData { given }
    }

    /// `props` with the dictionary turned off for the top-level columns of `schema` that the
    /// writer chooses and whose first values in `rows` are mostly (more than half) distinct.
    pub fn choose(
        &self,
        props: WriterProperties,
        schema: &SchemaRef,
        rows: &[RecordBatch],
    ) -> WriterProperties {
        let Self::FromData { given } = self else {
            return props;
        };
        let plain: Vec<ColumnPath> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, field)| !given.contains(field.name()))
            .filter(|(index, _)| mostly_distinct(rows, *index))
            .map(|(_, field)| ColumnPath::from(field.name().as_str()))
            .filter(|path| props.dictionary_enabled(path))
            .collect();
        if plain.is_empty() {
            return props;
        }
        plain
            .into_iter()
            .fold(props.into_builder(), |builder, path| {
                builder.set_column_dictionary_enabled(path, false)
            })
            .build()
    }
}

/// Whether more than half of the first [`SAMPLE`] non-null values of column `index` are
/// distinct. Only strings, binaries and fixed-width values are looked at; other columns keep
/// their dictionary.
fn mostly_distinct(rows: &[RecordBatch], index: usize) -> bool {
    let mut seen: HashSet<Cow<[u8]>> = HashSet::new();
    let mut values = 0;
    for batch in rows {
        let column = batch.column(index);
        let room = SAMPLE - values;
        let taken: Vec<Cow<[u8]>> = match column.data_type() {
            DataType::Utf8 => borrowed(column.as_string::<i32>().iter(), room),
            DataType::LargeUtf8 => borrowed(column.as_string::<i64>().iter(), room),
            DataType::Utf8View => borrowed(column.as_string_view().iter(), room),
            DataType::Binary => borrowed(column.as_binary::<i32>().iter(), room),
            DataType::LargeBinary => borrowed(column.as_binary::<i64>().iter(), room),
            DataType::BinaryView => borrowed(column.as_binary_view().iter(), room),
            other => match other.primitive_width() {
                Some(width) => fixed_width_values(column.as_ref(), width, room),
                None => return false,
            },
        };
        values += taken.len();
        seen.extend(taken);
        if values == SAMPLE {
            break;
        }
    }
    values > 0 && seen.len() * 2 > values
}

/// Up to `limit` non-null values of a string or binary column, as they are.
fn borrowed<'a, V: AsRef<[u8]> + ?Sized + 'a>(
    values: impl Iterator<Item = Option<&'a V>>,
    limit: usize,
) -> Vec<Cow<'a, [u8]>> {
    values
        .flatten()
        .map(|value| Cow::Borrowed(value.as_ref()))
        .take(limit)
        .collect()
}

/// Up to `limit` non-null values of a fixed-width column, copied.
fn fixed_width_values(column: &dyn Array, width: usize, limit: usize) -> Vec<Cow<'static, [u8]>> {
    let data = column.to_data();
    let Some(buffer) = data.buffers().first() else {
        return Vec::new();
    };
    let start = data.offset() * width;
    buffer.as_slice()[start..start + data.len() * width]
        .chunks_exact(width)
        .enumerate()
        .filter(|(row, _)| data.is_valid(*row))
        .map(|(_, value)| Cow::Owned(value.to_vec()))
        .take(limit)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, StringViewArray};
    use datafusion::arrow::datatypes::{Field, Schema};

    use super::*;

    fn batch() -> RecordBatch {
        let rows = 20_000;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(0..rows)),
            Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|i| (i % 100) as f64),
            )),
            Arc::new(StringViewArray::from_iter_values(
                (0..rows).map(|i| format!("document number {i} of a corpus")),
            )),
            Arc::new(StringViewArray::from_iter((0..rows).map(|i| {
                (i % 3 != 0).then(|| ["web", "code", "books"][i as usize % 3])
            }))),
        ];
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("score", DataType::Float64, false),
            Field::new("text", DataType::Utf8View, false),
            Field::new("domain", DataType::Utf8View, true),
        ]);
        RecordBatch::try_new(Arc::new(schema), columns).unwrap()
    }

    fn dictionary(props: &WriterProperties, column: &str) -> bool {
        props.dictionary_enabled(&ColumnPath::from(column))
    }

    #[test]
    fn mostly_distinct_columns_lose_the_dictionary() {
        let batch = batch();
        let (head, tail) = (batch.slice(0, 5_000), batch.slice(5_000, 15_000));
        let props = Dictionaries::from_options(&[]).choose(
            WriterProperties::default(),
            &batch.schema(),
            &[head, tail],
        );
        assert!(!dictionary(&props, "id"));
        assert!(!dictionary(&props, "text"));
        assert!(dictionary(&props, "score"));
        assert!(dictionary(&props, "domain"));
    }

    #[test]
    fn options_keep_the_users_choice() {
        let batch = batch();
        let rows = [batch.clone()];
        let keys = ["format.dictionary_enabled::id".to_string()];
        let props = Dictionaries::from_options(&keys).choose(
            WriterProperties::default(),
            &batch.schema(),
            &rows,
        );
        assert!(dictionary(&props, "id"));
        assert!(!dictionary(&props, "text"));
        let keys = ["format.dictionary_enabled".to_string()];
        assert_eq!(Dictionaries::from_options(&keys), Dictionaries::Given);
        let props = Dictionaries::Given.choose(WriterProperties::default(), &batch.schema(), &rows);
        assert!(dictionary(&props, "id") && dictionary(&props, "text"));
        // Never turned on where the properties have it off.
        let off = WriterProperties::builder()
            .set_dictionary_enabled(false)
            .build();
        let props = Dictionaries::from_options(&[]).choose(off, &batch.schema(), &rows);
        assert!(!dictionary(&props, "score"));
    }
}
