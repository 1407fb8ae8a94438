//! A JSON lines encoder for flat rows: columns of strings, numbers, booleans or nulls.
//!
//! It writes byte for byte what arrow-json's `LineDelimitedWriter` writes (keys in column
//! order, null values left out, NaN and infinities as `null`, numbers formatted by the same
//! `lexical-core`, strings escaped as serde_json escapes them), only faster on LM training data:
//! - a string is copied whole, then scanned where it landed for the bytes JSON must escape,
//!   16 bytes at a time on x86-64, 8 elsewhere (serde_json looks each byte up on its own);
//!   only a string that has one is rewritten from there;
//! - string views that a sort or fold left pointing all over the input are gathered in row
//!   order, a few hundred rows at a time, just before those rows are written
//!   ([`crate::io::jsonl::view_text`]);
//! - the output is reserved once per batch and written in place, where arrow-json writes each
//!   row through an 8 KiB staging buffer into a growing one.
//!
//! Batches with any other column type (lists, structs, dates, ...) are written by arrow-json.

use std::ops::Range;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, GenericStringArray, OffsetSizeTrait, PrimitiveArray,
    StringViewArray,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::arrow::record_batch::RecordBatch;

use super::view_text::{self, Gathered};

/// Rows written at a time: their scattered strings are gathered first, and are still in the
/// cache when the rows are written (256 rows of 220-byte texts take 55 KiB).
const GATHER_ROWS: usize = 256;

/// Appends `batch` to `out` as JSON lines, one object per row.
pub fn write_json_lines(batch: &RecordBatch, out: &mut Vec<u8>) -> Result<(), ArrowError> {
    let schema = batch.schema();
    let columns: Option<Vec<Column>> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(field, array)| Column::of(field.name(), array))
        .collect();
    let Some(mut columns) = columns else {
        let mut writer = LineDelimitedWriter::new(out);
        writer.write(batch)?;
        return writer.finish();
    };
    out.reserve(
        columns
            .iter()
            .map(|c| c.size_hint(batch.num_rows()))
            .sum::<usize>()
            + 3 * batch.num_rows(),
    );
    for start in (0..batch.num_rows()).step_by(GATHER_ROWS) {
        let rows = start..(start + GATHER_ROWS).min(batch.num_rows());
        for column in &mut columns {
            column.values.prepare(rows.clone());
        }
        for row in rows {
            write_row(&columns, row, out);
        }
    }
    Ok(())
}

/// Appends one row as a JSON object and a newline.
fn write_row(columns: &[Column], row: usize, out: &mut Vec<u8>) {
    out.push(b'{');
    let mut first = true;
    for column in columns {
        if column.nulls.as_ref().is_some_and(|n| n.is_null(row)) {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(&column.key);
        column.values.write(row, out);
    }
    out.extend_from_slice(b"}\n");
}

/// One column of the batch being written.
struct Column<'a> {
    /// The quoted, escaped name and its colon.
    key: Vec<u8>,
    nulls: Option<NullBuffer>,
    values: Box<dyn Values + 'a>,
}

impl<'a> Column<'a> {
    /// The column's writer, if its type is one this encoder writes.
    fn of(name: &str, array: &'a ArrayRef) -> Option<Self> {
        let values: Box<dyn Values + 'a> = match array.data_type() {
            DataType::Null => Box::new(NoValues),
            DataType::Boolean => Box::new(array.as_boolean()),
            DataType::Int8 => Box::new(array.as_primitive::<Int8Type>()),
            DataType::Int16 => Box::new(array.as_primitive::<Int16Type>()),
            DataType::Int32 => Box::new(array.as_primitive::<Int32Type>()),
            DataType::Int64 => Box::new(array.as_primitive::<Int64Type>()),
            DataType::UInt8 => Box::new(array.as_primitive::<UInt8Type>()),
            DataType::UInt16 => Box::new(array.as_primitive::<UInt16Type>()),
            DataType::UInt32 => Box::new(array.as_primitive::<UInt32Type>()),
            DataType::UInt64 => Box::new(array.as_primitive::<UInt64Type>()),
            DataType::Float32 => Box::new(array.as_primitive::<Float32Type>()),
            DataType::Float64 => Box::new(array.as_primitive::<Float64Type>()),
            DataType::Utf8 => Box::new(array.as_string::<i32>()),
            DataType::LargeUtf8 => Box::new(array.as_string::<i64>()),
            DataType::Utf8View => {
                let views = array.as_string_view();
                if view_text::in_order(views) {
                    Box::new(views)
                } else {
                    Box::new(ScatteredViews {
                        views,
                        gathered: Gathered::new(views),
                    })
                }
            }
            _ => return None,
        };
        let mut key = Vec::with_capacity(name.len() + 3);
        write_string(name.as_bytes(), &mut key);
        key.push(b':');
        Some(Self {
            key,
            // A null-typed column's values are all null; for the others these are its nulls.
            nulls: array.logical_nulls(),
            values,
        })
    }

    /// About how many bytes the column's keys and values take in `rows` rows.
    fn size_hint(&self, rows: usize) -> usize {
        rows * (self.key.len() + 1) + self.values.size_hint()
    }
}

/// A column's values, written as JSON.
trait Values {
    /// Readies the values of `rows`, the rows written next.
    fn prepare(&mut self, _rows: Range<usize>) {}

    /// Appends the (non-null) value at `row`, one of the rows last readied.
    fn write(&self, row: usize, out: &mut Vec<u8>);

    /// About how many bytes the values take, without keys.
    fn size_hint(&self) -> usize;
}

/// The values of a null-typed column: never written.
struct NoValues;

impl Values for NoValues {
    fn write(&self, _row: usize, _out: &mut Vec<u8>) {}

    fn size_hint(&self) -> usize {
        0
    }
}

impl Values for &BooleanArray {
    fn write(&self, row: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.value(row) { b"true" } else { b"false" });
    }

    fn size_hint(&self) -> usize {
        5 * self.len()
    }
}

/// A number as arrow-json writes it: JSON has no NaN or infinity, so those are written `null`.
trait JsonNumber: lexical_core::ToLexical + Copy {
    fn is_json(self) -> bool {
        true
    }
}

impl JsonNumber for i8 {}
impl JsonNumber for i16 {}
impl JsonNumber for i32 {}
impl JsonNumber for i64 {}
impl JsonNumber for u8 {}
impl JsonNumber for u16 {}
impl JsonNumber for u32 {}
impl JsonNumber for u64 {}
impl JsonNumber for f32 {
    fn is_json(self) -> bool {
        self.is_finite()
    }
}
impl JsonNumber for f64 {
    fn is_json(self) -> bool {
        self.is_finite()
    }
}

impl<T> Values for &PrimitiveArray<T>
where
    T: ArrowPrimitiveType,
    T::Native: JsonNumber,
{
    fn write(&self, row: usize, out: &mut Vec<u8>) {
        let value = self.value(row);
        if value.is_json() {
            let mut digits = [0u8; lexical_core::BUFFER_SIZE];
            out.extend_from_slice(lexical_core::write(value, &mut digits));
        } else {
            out.extend_from_slice(b"null");
        }
    }

    fn size_hint(&self) -> usize {
        // Most scores and ids print in under 20 characters.
        20 * self.len()
    }
}

impl<O: OffsetSizeTrait> Values for &GenericStringArray<O> {
    fn write(&self, row: usize, out: &mut Vec<u8>) {
        write_string(self.value(row).as_bytes(), out);
    }

    fn size_hint(&self) -> usize {
        let offsets = self.value_offsets();
        2 * self.len() + (offsets[self.len()] - offsets[0]).as_usize()
    }
}

impl Values for &StringViewArray {
    fn write(&self, row: usize, out: &mut Vec<u8>) {
        write_string(self.value(row).as_bytes(), out);
    }

    fn size_hint(&self) -> usize {
        2 * self.len() + self.total_bytes_len()
    }
}

/// Views into strings that lie out of row order, gathered before they are written.
struct ScatteredViews<'a> {
    views: &'a StringViewArray,
    gathered: Gathered<'a>,
}

impl Values for ScatteredViews<'_> {
    fn prepare(&mut self, rows: Range<usize>) {
        self.gathered.gather(rows);
    }

    fn write(&self, row: usize, out: &mut Vec<u8>) {
        write_string(self.gathered.value(row), out);
    }

    fn size_hint(&self) -> usize {
        self.views.size_hint()
    }
}

/// Appends `text` as a quoted JSON string, escaped as serde_json escapes it: `"` and `\` with a
/// backslash, the control characters with their short escape or as `\u00xx`, all else as is.
fn write_string(text: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    // Copied first and scanned where it landed: a plain copy reads text scattered in memory
    // (rows in a new order) fastest, and the scan then reads it from the cache.
    let copied = out.len();
    out.extend_from_slice(text);
    if let Some(first) = next_escape(&out[copied..], 0) {
        out.truncate(copied + first);
        let mut start = first;
        while let Some(at) = next_escape(text, start) {
            out.extend_from_slice(&text[start..at]);
            match text[at] {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                0x08 => out.extend_from_slice(b"\\b"),
                0x0c => out.extend_from_slice(b"\\f"),
                control => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[usize::from(control >> 4)]);
                    out.push(HEX[usize::from(control & 0xf)]);
                }
            }
            start = at + 1;
        }
        out.extend_from_slice(&text[start..]);
    }
    out.push(b'"');
}

fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// The position of the first byte at or after `from` that JSON must escape.
fn next_escape(text: &[u8], from: usize) -> Option<usize> {
    let rest = &text[from..];
    let checked = clean_prefix(rest);
    rest[checked..]
        .iter()
        .position(|&b| needs_escape(b))
        .map(|at| from + checked + at)
}

/// How many bytes at the start of `text` need no escape, 16 at a time (SSE2, which every
/// x86-64 CPU has): a whole multiple of 16, or the exact count when the escape falls in a block.
#[cfg(target_arch = "x86_64")]
fn clean_prefix(text: &[u8]) -> usize {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    let mut checked = 0;
    for block in text.chunks_exact(16) {
        // SAFETY: `block` is 16 readable bytes; SSE2 is part of the x86-64 baseline.
        let found = unsafe {
            let bytes = _mm_loadu_si128(block.as_ptr().cast::<__m128i>());
            let quote = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(bytes, _mm_set1_epi8(b'\\' as i8));
            // Bytes below 0x20: unchanged by an unsigned min with 0x1f.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(bytes, _mm_set1_epi8(0x1f)), bytes);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control))
        };
        if found != 0 {
            return checked + found.trailing_zeros() as usize;
        }
        checked += 16;
    }
    checked
}

/// How many bytes at the start of `text` need no escape, 8 at a time: a whole multiple of 8.
#[cfg(not(target_arch = "x86_64"))]
fn clean_prefix(text: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    /// Whether any byte of `word` is zero (the classic bit trick: exact as a yes/no).
    fn has_zero(word: u64) -> bool {
        word.wrapping_sub(ONES) & !word & HIGHS != 0
    }
    let mut checked = 0;
    for chunk in text.chunks_exact(8) {
        let word = u64::from_ne_bytes(chunk.try_into().expect("chunks of 8"));
        // A byte below 0x20 borrows into its high bit when 0x20 is subtracted, unless that bit
        // was set (bytes of 0x80 and above); quotes and backslashes are zero after an xor.
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
        if control || has_zero(word ^ (ONES * u64::from(b'"'))) || has_zero(word ^ (ONES * 0x5c)) {
            break;
        }
        checked += 8;
    }
    checked
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use datafusion::arrow::array::{
        BooleanArray, Float32Array, Float64Array, Int8Array, Int64Array, LargeStringArray,
        ListArray, NullArray, StringArray, UInt64Array,
    };
    use datafusion::arrow::compute::interleave;
    use datafusion::arrow::datatypes::{Field, Schema};

    /// What arrow-json's writer makes of `batch`.
    fn arrow_json(batch: &RecordBatch) -> Vec<u8> {
        let mut out = Vec::new();
        let mut writer = LineDelimitedWriter::new(&mut out);
        writer.write(batch).unwrap();
        writer.finish().unwrap();
        out
    }

    fn ours(batch: &RecordBatch) -> Vec<u8> {
        let mut out = b"kept ".to_vec();
        write_json_lines(batch, &mut out).unwrap();
        assert!(out.starts_with(b"kept "), "appends");
        out.split_off(5)
    }

    /// Every byte value that needs escaping, at every offset around the 8-byte words, with
    /// quotes, backslashes, multi-byte UTF-8 and DEL beside them.
    fn strings() -> Vec<String> {
        let mut strings = vec![
            String::new(),
            "plain text".into(),
            "q\"b\\s/ é 😀 \u{7f} \u{80}\u{ff}".into(),
        ];
        for byte in (0u8..0x20).chain([b'"', b'\\']) {
            for at in 0..18 {
                let mut s = "abcdefghijklmnopq".to_string();
                s.insert(at, char::from(byte));
                strings.push(s);
            }
        }
        strings.push("é".repeat(40) + "\n" + &"\u{2028}".repeat(9));
        strings
    }

    fn check(columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter_with_nullable(
            columns.into_iter().map(|(name, array)| (name, array, true)),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(ours(&batch)).unwrap(),
            String::from_utf8(arrow_json(&batch)).unwrap()
        );
        let n = batch.num_rows();
        for (offset, len) in [(1, n - 1), (n / 2, n - n / 2), (0, 0)] {
            let slice = batch.slice(offset, len);
            assert_eq!(ours(&slice), arrow_json(&slice), "slice {offset}+{len}");
        }
    }

    #[test]
    fn same_bytes_as_arrow_json() {
        let strings = strings();
        let n = strings.len();
        let nullable = |i: usize| (i % 7 != 3).then(|| strings[i].clone());
        let floats = [
            0.0,
            -0.0,
            1.0,
            0.1,
            -2.5e-300,
            1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            123456789.125,
        ];
        check(vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(
                    (0..n as i64).map(|i| i * 7919 - 40_000),
                )) as ArrayRef,
            ),
            (
                "score",
                Arc::new(Float64Array::from_iter(
                    (0..n).map(|i| (i % 5 != 1).then_some(floats[i % floats.len()])),
                )),
            ),
            (
                "text",
                Arc::new(StringArray::from_iter(strings.iter().map(Some))),
            ),
            (
                "maybe \"text\"\n",
                Arc::new(StringArray::from_iter((0..n).map(nullable))),
            ),
            (
                "large",
                Arc::new(LargeStringArray::from_iter((0..n).map(nullable))),
            ),
            (
                "view",
                Arc::new(StringViewArray::from_iter((0..n).map(nullable))),
            ),
            // Views in reverse order: gathered before they are written.
            ("reordered", {
                let views = StringViewArray::from_iter((0..n).map(nullable));
                let reversed: Vec<(usize, usize)> = (0..n).rev().map(|i| (0, i)).collect();
                let reordered = interleave(&[&views as &dyn Array], &reversed).unwrap();
                assert!(!view_text::in_order(reordered.as_string_view()));
                reordered
            }),
            (
                "é",
                Arc::new(BooleanArray::from_iter(
                    (0..n).map(|i| (i % 3 != 0).then_some(i % 2 == 0)),
                )),
            ),
            ("nothing", Arc::new(NullArray::new(n))),
            (
                "small",
                Arc::new(Int8Array::from_iter(
                    (0..n).map(|i| (i % 4 != 0).then_some((i % 256) as u8 as i8)),
                )),
            ),
            (
                "big",
                Arc::new(UInt64Array::from_iter_values(
                    (0..n as u64).map(|i| u64::MAX - i),
                )),
            ),
            (
                "f32",
                Arc::new(Float32Array::from_iter_values(
                    (0..n).map(|i| floats[i % floats.len()] as f32),
                )),
            ),
        ]);
        // All columns null in some rows: those rows are `{}`.
        check(vec![
            (
                "a",
                Arc::new(Int64Array::from(vec![None, Some(1), None, None, Some(2)])) as ArrayRef,
            ),
            (
                "b",
                Arc::new(StringArray::from(vec![
                    None,
                    None,
                    None,
                    Some("x"),
                    Some("y"),
                ])),
            ),
        ]);
    }

    #[test]
    fn scattered_views_over_several_gathers() {
        // More rows than one gather takes, reordered, with nulls, short strings kept in their
        // views and strings to escape; `check` writes slices too, whose gathers start mid-array.
        let n = 3 * GATHER_ROWS + 17;
        let views = StringViewArray::from_iter(
            (0..n).map(|i| (i % 11 != 5).then(|| format!("{i} {}", "a\"b\n".repeat(i % 9)))),
        );
        let order: Vec<(usize, usize)> = (0..n).map(|i| (0, i * 7 % n)).collect();
        let reordered = interleave(&[&views as &dyn Array], &order).unwrap();
        assert!(!view_text::in_order(reordered.as_string_view()));
        check(vec![
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef,
            ),
            ("text", reordered),
        ]);
    }

    #[test]
    fn other_types_go_to_arrow_json() {
        let list = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
            Some(vec![Some(4)]),
        ]);
        check(vec![
            ("list", Arc::new(list) as ArrayRef),
            (
                "text",
                Arc::new(StringArray::from(vec!["a\"", "b", "c", "d"])),
            ),
        ]);
    }

    #[test]
    fn no_columns() {
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(Vec::<Field>::new())),
            vec![],
            &datafusion::arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(2)),
        )
        .unwrap();
        assert_eq!(ours(&batch), arrow_json(&batch));
    }

    #[test]
    fn escape_scan_finds_every_byte() {
        for byte in 0..=255u8 {
            for len in 1..40 {
                for at in 0..len {
                    let mut text = vec![b'a'; len];
                    text[at] = byte;
                    let expected = needs_escape(byte).then_some(at);
                    assert_eq!(
                        next_escape(&text, 0),
                        expected,
                        "byte {byte:#x} at {at} of {len}"
                    );
                }
            }
        }
    }
}
