//! Column encodings that the data chooses: dictionaries and statistics.
//!
//! A dictionary pays off when values repeat (a score with 1,000 levels, a domain label), and
//! is pure cost when they do not (ids, document texts): the Parquet writer hashes every value
//! into the dictionary until it outgrows its page limit (1 MB), and for a column of 8-byte ids
//! that is all 128Ki rows of a row group, written out as a dictionary plus indices that are
//! larger than the plain values. Minimum and maximum statistics of long texts are cut to their
//! first bytes (64 by default), which says nothing about documents, and computing them compares
//! every value. On the 10M-row fold benchmark the dictionaries of the id and text columns cost
//! 1.2 s of CPU time and the text's statistics 0.3 to 0.7 s.
//!
//! So the writer looks at the first values of a file: columns whose values are mostly distinct
//! lose the dictionary, and string and binary columns whose values are on average longer than
//! the statistics' truncation length lose the statistics. Neither is ever turned on, and a
//! column whose setting COPY's options give keeps it.

use std::borrow::Cow;
use std::collections::HashSet;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;

/// Values of a column looked at before choosing (the first ones of the file).
const SAMPLE: usize = 16 * 1024;

/// The column settings that a COPY's options give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodingChoices {
    dictionary: Given,
    statistics: Given,
}

/// For which columns the user gave a setting.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Given {
    /// All of them (the option without a column).
    All,
    /// These (`'format.option::column'`).
    Columns(HashSet<String>),
}

impl Given {
    fn from_options<'a>(keys: impl IntoIterator<Item = &'a String>, option: &str) -> Self {
        let mut columns = HashSet::new();
        for key in keys {
            let Some(rest) = key.strip_prefix(option) else {
                continue;
            };
            match rest.strip_prefix("::") {
                Some(column) => {
                    columns.insert(column.to_string());
                }
                None if rest.is_empty() => return Self::All,
                None => {}
            }
        }
        Self::Columns(columns)
    }

    fn includes(&self, column: &str) -> bool {
        match self {
            Self::All => true,
            Self::Columns(columns) => columns.contains(column),
        }
    }
}

impl EncodingChoices {
    /// The settings given by the keys of a COPY's options.
    pub fn from_options<'a>(keys: impl IntoIterator<Item = &'a String> + Clone) -> Self {
        Self {
            dictionary: Given::from_options(keys.clone(), "format.dictionary_enabled"),
            statistics: Given::from_options(keys, "format.statistics_enabled"),
        }
    }

    /// `props` with the dictionary and the statistics turned off for the top-level columns of
    /// `schema` whose settings were not given and whose first values in `rows` call for it.
    pub fn choose(
        &self,
        props: WriterProperties,
        schema: &SchemaRef,
        rows: &[RecordBatch],
    ) -> WriterProperties {
        let mut builder = None;
        for (index, field) in schema.fields().iter().enumerate() {
            let path = ColumnPath::from(field.name().as_str());
            let plain = !self.dictionary.includes(field.name())
                && props.dictionary_enabled(&path)
                && mostly_distinct(rows, index);
            let unsummarised = !self.statistics.includes(field.name())
                && props.statistics_enabled(&path) != EnabledStatistics::None
                && props
                    .statistics_truncate_length()
                    .is_some_and(|length| longer_on_average(rows, index, length));
            if plain || unsummarised {
                let mut b = builder
                    .take()
                    .unwrap_or_else(|| props.clone().into_builder());
                if plain {
                    b = b.set_column_dictionary_enabled(path.clone(), false);
                }
                if unsummarised {
                    b = b.set_column_statistics_enabled(path, EnabledStatistics::None);
                }
                builder = Some(b);
            }
        }
        builder.map_or(props, |b| b.build())
    }
}

/// Whether more than half of the first [`SAMPLE`] non-null values of column `index` are
/// distinct. Only strings, binaries and fixed-width values are looked at; other columns keep
/// their dictionary.
fn mostly_distinct(rows: &[RecordBatch], index: usize) -> bool {
    let Some(values) = sample(rows, index, true) else {
        return false;
    };
    let distinct: HashSet<&Cow<[u8]>> = values.iter().collect();
    !values.is_empty() && distinct.len() * 2 > values.len()
}

/// Whether the first [`SAMPLE`] non-null values of string or binary column `index` are longer
/// than `length` bytes on average.
fn longer_on_average(rows: &[RecordBatch], index: usize, length: usize) -> bool {
    let Some(values) = sample(rows, index, false) else {
        return false;
    };
    let total: usize = values.iter().map(|v| v.len()).sum();
    !values.is_empty() && total > length * values.len()
}

/// The first [`SAMPLE`] non-null values of column `index` as bytes: strings and binaries, and
/// fixed-width values when `fixed_width`; `None` for other types.
fn sample(rows: &[RecordBatch], index: usize, fixed_width: bool) -> Option<Vec<Cow<'_, [u8]>>> {
    let mut values = Vec::new();
    for batch in rows {
        let column = batch.column(index);
        let room = SAMPLE - values.len();
        values.extend(match column.data_type() {
            DataType::Utf8 => borrowed(column.as_string::<i32>().iter(), room),
            DataType::LargeUtf8 => borrowed(column.as_string::<i64>().iter(), room),
            DataType::Utf8View => borrowed(column.as_string_view().iter(), room),
            DataType::Binary => borrowed(column.as_binary::<i32>().iter(), room),
            DataType::LargeBinary => borrowed(column.as_binary::<i64>().iter(), room),
            DataType::BinaryView => borrowed(column.as_binary_view().iter(), room),
            other => match other.primitive_width() {
                Some(width) if fixed_width => fixed_width_values(column.as_ref(), width, room),
                _ => return None,
            },
        });
        if values.len() == SAMPLE {
            break;
        }
    }
    Some(values)
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

    /// Unique ids, 100 scores, unique texts of about 100 bytes, 3 domains (and nulls).
    fn batch() -> RecordBatch {
        let rows = 20_000;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(0..rows)),
            Arc::new(Float64Array::from_iter_values(
                (0..rows).map(|i| (i % 100) as f64),
            )),
            Arc::new(StringViewArray::from_iter_values((0..rows).map(|i| {
                format!("document number {i} of a corpus, {}", "text ".repeat(14))
            }))),
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

    fn statistics(props: &WriterProperties, column: &str) -> bool {
        props.statistics_enabled(&ColumnPath::from(column)) != EnabledStatistics::None
    }

    fn choose(keys: &[&str], props: WriterProperties, rows: &[RecordBatch]) -> WriterProperties {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        EncodingChoices::from_options(&keys).choose(props, &rows[0].schema(), rows)
    }

    #[test]
    fn distinct_values_lose_the_dictionary_long_texts_the_statistics() {
        let batch = batch();
        let rows = [batch.slice(0, 5_000), batch.slice(5_000, 15_000)];
        let props = choose(&[], WriterProperties::default(), &rows);
        assert!(!dictionary(&props, "id") && !dictionary(&props, "text"));
        assert!(dictionary(&props, "score") && dictionary(&props, "domain"));
        assert!(!statistics(&props, "text"));
        assert!(statistics(&props, "id") && statistics(&props, "score"));
        assert!(statistics(&props, "domain"));
    }

    #[test]
    fn options_keep_the_users_choice() {
        let rows = [batch()];
        let given = [
            "format.dictionary_enabled::id",
            "format.statistics_enabled::text",
        ];
        let props = choose(&given, WriterProperties::default(), &rows);
        assert!(dictionary(&props, "id") && statistics(&props, "text"));
        assert!(!dictionary(&props, "text"));
        let props = choose(
            &["format.dictionary_enabled"],
            WriterProperties::default(),
            &rows,
        );
        assert!(dictionary(&props, "id") && dictionary(&props, "text"));
        assert!(!statistics(&props, "text"));
        // Never turned on where the properties have them off.
        let off = WriterProperties::builder()
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::None)
            .build();
        let props = choose(&[], off, &rows);
        assert!(!dictionary(&props, "score") && !statistics(&props, "score"));
    }
}
