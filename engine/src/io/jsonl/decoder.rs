//! A JSON lines decoder for flat rows: one object per line, whose values are strings, numbers,
//! booleans or null.
//!
//! arrow-json decodes any JSON into any Arrow type by way of a tape: every string is copied into
//! the tape, then again into its array. LM training data is mostly flat lines of a few scalars
//! and one long text, and on such data those copies and the tape are most of what reading costs.
//! This decoder parses such lines straight into Arrow builders, copying each string once.
//! A string without escapes that goes to a `Utf8View` column is not copied at all where its
//! line came in a large chunk (a local file's mapped piece): its view points into the chunk,
//! which the batch then shares.
//!
//! A line it does not handle itself goes to arrow-json's decoder, and its rows are appended from
//! there, so values and errors are arrow-json's: an object or array in a projected column, an
//! integer that does not fit 64 bits, a key given twice,
//! several values on one line, escaped keys, a missing or null value of a column declared
//! `NOT NULL`, a line that is not valid JSON. Values of columns
//! that are not read (unknown keys) are skipped without being checked, as arrow-json ignores
//! unknown fields.
//!
//! Unlike arrow-json, it does not read a quoted value into a number or boolean column
//! (`"score": "0.9"`): that is an error, so that text never turns into numbers unnoticed. Read
//! such a column as text and `CAST` it in SQL where that is meant.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder, MAX_INLINE_VIEW_LEN,
    NullBuilder, StringBuilder, StringViewBuilder,
};
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::ReaderBuilder;
use datafusion::arrow::json::reader::Decoder as ArrowJsonDecoder;
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion_datasource::decoder::{BatchDeserializer, DeserializerOutput};

/// Decodes newline-delimited JSON objects of a flat schema into record batches.
pub struct FlatJsonDecoder {
    schema: SchemaRef,
    batch_size: usize,
    columns: Vec<Column>,
    /// Column names, matched against keys byte for byte.
    names: Vec<Box<[u8]>>,
    /// Columns declared `NOT NULL`.
    required: Vec<usize>,
    /// The values of the line being parsed, one per column; appended once the line parsed.
    cells: Vec<Cell>,
    /// The unescaped text of the line's strings that held escapes.
    unescaped: String,
    /// Rows appended since the last flush.
    rows: usize,
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The chunk being decoded, when strings are to be views into it rather than copies.
    shared: Option<Buffer>,
    /// Per column: the index of `shared` among its view builder's blocks, once a string of
    /// the batch points into it.
    shared_blocks: Vec<Option<u32>>,
    /// Per column: bytes of strings longer than a view copied into its view builder since
    /// the last flush (the size of the next batch's block).
    copied: Vec<usize>,
    /// arrow-json's decoder for the lines this one does not handle; made on first use.
    fallback: Option<ArrowJsonDecoder>,
    /// The column whose value the line being parsed quotes, where the column is not text.
    quoted: Option<usize>,
}

impl std::fmt::Debug for FlatJsonDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlatJsonDecoder")
            .field("schema", &self.schema)
            .field("rows", &self.rows)
            .finish()
    }
}

/// One column's builder.
enum Column {
    Null(NullBuilder),
    Boolean(BooleanBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    Utf8View(StringViewBuilder),
}

impl Column {
    /// An empty builder for `data_type`, if it is one this decoder builds.
    fn of(data_type: &DataType) -> Option<Self> {
        Some(match data_type {
            DataType::Null => Self::Null(NullBuilder::new()),
            DataType::Boolean => Self::Boolean(BooleanBuilder::new()),
            DataType::Int64 => Self::Int64(Int64Builder::new()),
            DataType::Float64 => Self::Float64(Float64Builder::new()),
            DataType::Utf8 => Self::Utf8(StringBuilder::new()),
            DataType::Utf8View => Self::Utf8View(StringViewBuilder::new()),
            _ => return None,
        })
    }
}

/// One value of the line being parsed.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    /// The key did not occur (so far).
    Absent,
    Null,
    Boolean(bool),
    Int64(i64),
    Float64(f64),
    /// A string without escapes: its bytes in the line.
    Text(Range<usize>),
    /// A string with escapes: its unescaped bytes in `unescaped`.
    Unescaped(Range<usize>),
}

impl FlatJsonDecoder {
    /// A decoder of rows of `schema` in batches of `batch_size`, or `None` when a column has a
    /// type this decoder does not build (nested, dates, other widths): read those with
    /// arrow-json.
    pub fn try_new(schema: SchemaRef, batch_size: usize) -> Option<Self> {
        let columns = schema
            .fields()
            .iter()
            .map(|field| Column::of(field.data_type()))
            .collect::<Option<Vec<_>>>()?;
        Some(Self {
            names: schema
                .fields()
                .iter()
                .map(|f| f.name().as_bytes().into())
                .collect(),
            required: (0..columns.len())
                .filter(|&c| !schema.field(c).is_nullable())
                .collect(),
            cells: vec![Cell::Absent; columns.len()],
            shared_blocks: vec![None; columns.len()],
            copied: vec![0; columns.len()],
            columns,
            schema,
            batch_size,
            unescaped: String::new(),
            rows: 0,
            partial: Vec::new(),
            shared: None,
            fallback: None,
            quoted: None,
        })
    }

    /// Whether this decoder builds every column of `schema`.
    pub fn reads(schema: &Schema) -> bool {
        schema
            .fields()
            .iter()
            .all(|field| Column::of(field.data_type()).is_some())
    }

    /// Decodes one line (without its newline) into a row, or into as many rows as arrow-json
    /// finds in it when the line is not one this decoder handles. `at` is where the line
    /// starts in the shared chunk, if it lies in one.
    fn line(&mut self, line: &[u8], at: Option<usize>) -> Result<(), ArrowError> {
        if line.iter().all(|b| is_whitespace(*b)) {
            return Ok(());
        }
        match simdutf8::basic::from_utf8(line) {
            Ok(text) if self.parse(text).is_some() => {
                self.append_cells(text, at);
                Ok(())
            }
            _ => match self.quoted.take() {
                Some(c) => Err(ArrowError::JsonError(format!(
                    "field '{}' holds a quoted value where the schema has {}: write the value \
                     unquoted, or read the column as text and CAST it in SQL",
                    String::from_utf8_lossy(&self.names[c]),
                    self.schema.field(c).data_type()
                ))),
                None => self.line_by_arrow_json(line),
            },
        }
    }

    /// Parses a line of one flat JSON object into `cells`; `None` when it is not one.
    fn parse(&mut self, text: &str) -> Option<()> {
        self.cells.fill(Cell::Absent);
        self.quoted = None;
        self.unescaped.clear();
        let mut at = Cursor {
            text,
            bytes: text.as_bytes(),
            pos: 0,
        };
        at.skip_whitespace();
        at.expect(b'{')?;
        at.skip_whitespace();
        if !at.accept(b'}') {
            // Keys usually come in column order: try the column after the last one first.
            let mut next_column = 0;
            loop {
                at.skip_whitespace();
                at.expect(b'"')?;
                let key = at.plain_string()?;
                at.skip_whitespace();
                at.expect(b':')?;
                at.skip_whitespace();
                let key = &at.bytes[key];
                let column = if self.names.get(next_column).is_some_and(|n| **n == *key) {
                    Some(next_column)
                } else {
                    self.names.iter().position(|n| **n == *key)
                };
                match column {
                    Some(c) => {
                        if self.cells[c] != Cell::Absent {
                            return None;
                        }
                        self.cells[c] = self.value(&mut at, c)?;
                        next_column = c + 1;
                    }
                    None => at.skip_value()?,
                }
                at.skip_whitespace();
                if at.accept(b'}') {
                    break;
                }
                at.expect(b',')?;
            }
        }
        at.skip_whitespace();
        let complete = self
            .required
            .iter()
            .all(|&c| !matches!(self.cells[c], Cell::Absent | Cell::Null));
        (at.pos == at.bytes.len() && complete).then_some(())
    }

    /// Parses the value of column `c` at the cursor.
    fn value(&mut self, at: &mut Cursor, c: usize) -> Option<Cell> {
        if at.literal(b"null") {
            return Some(Cell::Null);
        }
        let column = &self.columns[c];
        if at.bytes.get(at.pos) == Some(&b'"')
            && matches!(
                column,
                Column::Boolean(_) | Column::Int64(_) | Column::Float64(_)
            )
        {
            self.quoted = Some(c);
            return None;
        }
        Some(match column {
            Column::Null(_) => return None,
            Column::Boolean(_) => {
                if at.literal(b"true") {
                    Cell::Boolean(true)
                } else if at.literal(b"false") {
                    Cell::Boolean(false)
                } else {
                    return None;
                }
            }
            Column::Int64(_) => Cell::Int64(at.number()?.integer()?),
            Column::Float64(_) => {
                let value = at.number()?.float()?;
                if !value.is_finite() {
                    return None;
                }
                Cell::Float64(value)
            }
            Column::Utf8(_) | Column::Utf8View(_) => {
                at.expect(b'"')?;
                let start = at.pos;
                match at.plain_string() {
                    Some(span) => Cell::Text(span),
                    None => {
                        at.pos = start;
                        let from = self.unescaped.len();
                        at.unescape_string(&mut self.unescaped)?;
                        Cell::Unescaped(from..self.unescaped.len())
                    }
                }
            }
        })
    }

    /// Appends the parsed line's cells as a row; absent keys are null. Where the line lies in
    /// the shared chunk (from `at`), its plain strings in view columns point into the chunk.
    fn append_cells(&mut self, text: &str, at: Option<usize>) {
        let shared = at.zip(self.shared.as_ref());
        let columns = self.columns.iter_mut().zip(&self.cells);
        for (((column, cell), block), copied) in
            columns.zip(&mut self.shared_blocks).zip(&mut self.copied)
        {
            match (column, cell) {
                (Column::Null(b), _) => b.append_null(),
                (Column::Boolean(b), Cell::Boolean(v)) => b.append_value(*v),
                (Column::Int64(b), Cell::Int64(v)) => b.append_value(*v),
                (Column::Float64(b), Cell::Float64(v)) => b.append_value(*v),
                (Column::Utf8(b), Cell::Text(span)) => b.append_value(&text[span.clone()]),
                (Column::Utf8(b), Cell::Unescaped(span)) => {
                    b.append_value(&self.unescaped[span.clone()])
                }
                (Column::Utf8View(b), Cell::Text(span)) => match shared {
                    Some((at, chunk)) if span.len() > MAX_INLINE_VIEW_LEN as usize => {
                        let block = *block.get_or_insert_with(|| b.append_block(chunk.clone()));
                        // SAFETY: the block is the chunk the line lies in from `at`, the span
                        // is within the line, and the line is valid UTF-8 split at ASCII
                        // quotes.
                        unsafe {
                            b.append_view_unchecked(
                                block,
                                (at + span.start) as u32,
                                span.len() as u32,
                            )
                        }
                    }
                    _ => {
                        *copied += span.len();
                        b.append_value(&text[span.clone()])
                    }
                },
                (Column::Utf8View(b), Cell::Unescaped(span)) => {
                    *copied += span.len();
                    b.append_value(&self.unescaped[span.clone()])
                }
                (Column::Boolean(b), _) => b.append_null(),
                (Column::Int64(b), _) => b.append_null(),
                (Column::Float64(b), _) => b.append_null(),
                (Column::Utf8(b), _) => b.append_null(),
                (Column::Utf8View(b), _) => b.append_null(),
            }
        }
        self.rows += 1;
    }

    /// Decodes `line` with arrow-json and appends the rows it yields.
    fn line_by_arrow_json(&mut self, line: &[u8]) -> Result<(), ArrowError> {
        let decoder = match &mut self.fallback {
            Some(decoder) => decoder,
            fallback => {
                fallback.insert(ReaderBuilder::new(Arc::clone(&self.schema)).build_decoder()?)
            }
        };
        let mut rest = line;
        loop {
            rest = &rest[decoder.decode(rest)?..];
            if let Some(batch) = decoder.flush()? {
                for row in 0..batch.num_rows() {
                    for (column, array) in self.columns.iter_mut().zip(batch.columns()) {
                        append_from(column, array, row);
                    }
                }
                self.rows += batch.num_rows();
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Decodes the complete lines at the start of `buf` until the batch is full; keeps a last
    /// line without its newline for the next call.
    fn decode_lines(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
        let mut pos = 0;
        if !self.partial.is_empty() {
            let Some(end) = memchr::memchr(b'\n', buf) else {
                self.partial.extend_from_slice(buf);
                return Ok(buf.len());
            };
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&buf[..end]);
            self.line(&line, None)?;
            line.clear();
            self.partial = line;
            pos = end + 1;
        }
        while self.rows < self.batch_size {
            match memchr::memchr(b'\n', &buf[pos..]) {
                Some(end) => {
                    self.line(&buf[pos..pos + end], Some(pos))?;
                    pos += end + 1;
                }
                None => {
                    self.partial.extend_from_slice(&buf[pos..]);
                    return Ok(buf.len());
                }
            }
        }
        Ok(pos)
    }

    /// Decodes whole lines at the start of `chunk` until the batch is full; how many bytes it
    /// used (0 once the batch is full). An empty `chunk` marks the end of the input, where a
    /// last line without a newline ends. Strings of view columns point into a chunk of
    /// `share_from` bytes or more.
    fn decode(&mut self, chunk: &Bytes, share_from: usize) -> Result<usize, ArrowError> {
        if chunk.is_empty() {
            let last = std::mem::take(&mut self.partial);
            self.line(&last, None)?;
            return Ok(0);
        }
        if self.rows >= self.batch_size {
            return Ok(0);
        }
        // Views address their block with 32-bit offsets.
        let shareable = (share_from..u32::MAX as usize).contains(&chunk.len());
        self.shared = shareable.then(|| Buffer::from(chunk.clone()));
        self.shared_blocks.fill(None);
        let used = self.decode_lines(chunk);
        self.shared = None;
        used
    }

    /// The rows decoded since the last flush, as a batch.
    fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
        self.shared_blocks.fill(None);
        if self.rows == 0 {
            return Ok(None);
        }
        let arrays: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .zip(&mut self.copied)
            .map(|(column, copied)| match column {
                // `NullBuilder::finish` leaves its length as it was: start a new one.
                Column::Null(b) => Arc::new(std::mem::take(b).finish()) as ArrayRef,
                Column::Boolean(b) => Arc::new(b.finish()),
                Column::Int64(b) => Arc::new(b.finish()),
                Column::Float64(b) => Arc::new(b.finish()),
                Column::Utf8(b) => {
                    let array = b.finish();
                    // The next batch is likely about as large: reserve a quarter more than
                    // this one's text, so it fits without a doubling (a doubled buffer is held
                    // at twice its size until the batch is dropped; reserved pages that are
                    // never written cost no memory).
                    let text = array.value_data().len();
                    *b = StringBuilder::with_capacity(array.len(), text + text / 4);
                    Arc::new(array)
                }
                Column::Utf8View(b) => {
                    let array = b.finish();
                    // As above: the next batch's copied strings in one block, sized from
                    // this batch's (views of 12 bytes or less hold their string themselves).
                    let text = std::mem::take(copied);
                    let block = (text + text / 4).clamp(8 << 10, u32::MAX as usize);
                    *b = StringViewBuilder::with_capacity(array.len())
                        .with_fixed_block_size(block as u32);
                    Arc::new(array)
                }
            })
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        self.rows = 0;
        RecordBatch::try_new_with_options(Arc::clone(&self.schema), arrays, &options).map(Some)
    }
}

/// Chunks of at least this many bytes are shared by the batches whose strings point into
/// them: a local file's mapped pieces ([`crate::io::local_files::STREAM_CHUNK`]). Smaller ones
/// (network reads, decompressed blocks) are copied, as a batch would otherwise hold many
/// small buffers.
pub const SHARE_FROM: usize = 1 << 20;

/// DataFusion's deserializer interface over [`FlatJsonDecoder`], which needs the input's
/// chunks themselves (to share them) rather than their bytes.
#[derive(Debug)]
pub struct FlatJsonDeserializer {
    decoder: FlatJsonDecoder,
    /// Chunks digested and not yet decoded (the first one maybe in part).
    chunks: VecDeque<Bytes>,
    share_from: usize,
    finished: bool,
}

impl FlatJsonDeserializer {
    /// Decodes with `decoder`, sharing chunks of `share_from` bytes or more.
    pub fn new(decoder: FlatJsonDecoder, share_from: usize) -> Self {
        Self {
            decoder,
            chunks: VecDeque::new(),
            share_from,
            finished: false,
        }
    }
}

impl BatchDeserializer<Bytes> for FlatJsonDeserializer {
    fn digest(&mut self, chunk: Bytes) -> usize {
        let len = chunk.len();
        if len > 0 {
            self.chunks.push_back(chunk);
        }
        len
    }

    fn next(&mut self) -> Result<DeserializerOutput, ArrowError> {
        while let Some(chunk) = self.chunks.front_mut() {
            let used = self.decoder.decode(chunk, self.share_from)?;
            chunk.advance(used);
            if chunk.is_empty() {
                self.chunks.pop_front();
            }
            // Nothing used: the batch is full, or the input ended.
            if used == 0
                && let Some(batch) = self.decoder.flush()?
            {
                return Ok(DeserializerOutput::RecordBatch(batch));
            }
        }
        Ok(if self.finished {
            DeserializerOutput::InputExhausted
        } else {
            DeserializerOutput::RequiresMoreData
        })
    }

    fn finish(&mut self) {
        self.finished = true;
        // The empty chunk that tells the decoder the input ended.
        self.chunks.push_back(Bytes::new());
    }
}

/// Appends row `row` of `array` (of the column's type) to `column`.
fn append_from(column: &mut Column, array: &ArrayRef, row: usize) {
    if array.is_null(row) {
        match column {
            Column::Null(b) => b.append_null(),
            Column::Boolean(b) => b.append_null(),
            Column::Int64(b) => b.append_null(),
            Column::Float64(b) => b.append_null(),
            Column::Utf8(b) => b.append_null(),
            Column::Utf8View(b) => b.append_null(),
        }
        return;
    }
    match column {
        Column::Null(b) => b.append_null(),
        Column::Boolean(b) => b.append_value(array.as_boolean().value(row)),
        Column::Int64(b) => b.append_value(array.as_primitive::<Int64Type>().value(row)),
        Column::Float64(b) => b.append_value(array.as_primitive::<Float64Type>().value(row)),
        Column::Utf8(b) => b.append_value(array.as_string::<i32>().value(row)),
        Column::Utf8View(b) => b.append_value(array.as_string_view().value(row)),
    }
}

/// JSON's whitespace, as arrow-json reads it.
fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t')
}

/// A JSON number, read: its text and, for the common short ones, its digits.
struct Number<'a> {
    text: &'a str,
    negative: bool,
    /// The number without sign, point and exponent: its digits as an integer, when there are
    /// at most [`Number::EXACT_DIGITS`] of them.
    digits: u64,
    /// How many digits it has before the exponent (leading zeros of a fraction included).
    count: usize,
    /// The power of ten that `digits` is multiplied by: the exponent less the fraction's digits.
    scale: i64,
    /// Whether it has neither a fraction nor an exponent.
    integer: bool,
}

impl Number<'_> {
    /// Digits that a `u64` always holds.
    const EXACT_DIGITS: usize = 19;

    /// The number as an `i64`: `None` with a fraction or an exponent, or out of range.
    fn integer(&self) -> Option<i64> {
        if !self.integer || self.count > Self::EXACT_DIGITS {
            return None;
        }
        let magnitude = i128::from(self.digits);
        i64::try_from(if self.negative { -magnitude } else { magnitude }).ok()
    }

    /// The number as the nearest `f64`, as `str::parse` rounds it. Where the digits are an
    /// integer of at most 53 bits and the scale at most 22 either way, both are exact doubles
    /// and one multiplication or division rounds correctly (Clinger's fast path); otherwise
    /// the text is parsed.
    fn float(&self) -> Option<f64> {
        /// The powers of ten that a double holds exactly.
        const POWERS: [f64; 23] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
            1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
        ];
        let fast = self.count <= Self::EXACT_DIGITS
            && self.digits < 1 << 53
            && self.scale.unsigned_abs() < POWERS.len() as u64;
        if !fast {
            return self.text.parse().ok();
        }
        let power = POWERS[self.scale.unsigned_abs() as usize];
        let magnitude = if self.scale < 0 {
            self.digits as f64 / power
        } else {
            self.digits as f64 * power
        };
        Some(if self.negative { -magnitude } else { magnitude })
    }
}

/// A position in a line being parsed.
struct Cursor<'a> {
    text: &'a str,
    /// `text` as bytes; positions step over ASCII bytes only, so each is a char boundary.
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn skip_whitespace(&mut self) {
        while self.bytes.get(self.pos).is_some_and(|b| is_whitespace(*b)) {
            self.pos += 1;
        }
    }

    /// Steps over `b` if it is next.
    fn accept(&mut self, b: u8) -> bool {
        let found = self.bytes.get(self.pos) == Some(&b);
        self.pos += usize::from(found);
        found
    }

    fn expect(&mut self, b: u8) -> Option<()> {
        self.accept(b).then_some(())
    }

    /// Steps over `word` if it comes next and is not followed by more of a word.
    fn literal(&mut self, word: &[u8]) -> bool {
        let found = self.bytes[self.pos..].starts_with(word)
            && !self
                .bytes
                .get(self.pos + word.len())
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if found {
            self.pos += word.len();
        }
        found
    }

    /// The rest of a string whose opening quote was read, when it holds no escape: its span,
    /// with the cursor after the closing quote.
    fn plain_string(&mut self) -> Option<Range<usize>> {
        let end = self.pos + memchr::memchr2(b'"', b'\\', &self.bytes[self.pos..])?;
        if self.bytes[end] != b'"' {
            return None;
        }
        let span = self.pos..end;
        self.pos = end + 1;
        Some(span)
    }

    /// Appends the unescaped rest of a string whose opening quote was read to `out`.
    fn unescape_string(&mut self, out: &mut String) -> Option<()> {
        loop {
            let stop = self.pos + memchr::memchr2(b'"', b'\\', &self.bytes[self.pos..])?;
            out.push_str(&self.text[self.pos..stop]);
            self.pos = stop + 1;
            if self.bytes[stop] == b'"' {
                return Some(());
            }
            let escaped = *self.bytes.get(self.pos)?;
            self.pos += 1;
            out.push(match escaped {
                b'"' => '"',
                b'\\' => '\\',
                b'/' => '/',
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                b'u' => self.unicode_escape()?,
                _ => return None,
            });
        }
    }

    /// The character of a `\u` escape whose `\u` was read; a surrogate pair takes two.
    fn unicode_escape(&mut self) -> Option<char> {
        let high = self.hex4()?;
        if let Some(c) = char::from_u32(high) {
            return Some(c);
        }
        if !(0xD800..=0xDBFF).contains(&high) || !self.bytes[self.pos..].starts_with(b"\\u") {
            return None;
        }
        self.pos += 2;
        let low = self.hex4()?;
        if !(0xDC00..=0xDFFF).contains(&low) {
            return None;
        }
        char::from_u32((((high - 0xD800) << 10) | (low - 0xDC00)) + 0x1_0000)
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.pos..self.pos + 4)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        self.pos += 4;
        u32::from_str_radix(&self.text[self.pos - 4..self.pos], 16).ok()
    }

    /// A number in JSON's grammar: `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`, its
    /// digits read as it is stepped over.
    fn number(&mut self) -> Option<Number<'a>> {
        let start = self.pos;
        let mut number = Number {
            text: "",
            negative: self.accept(b'-'),
            digits: 0,
            count: 0,
            scale: 0,
            integer: true,
        };
        if self.accept(b'0') {
            number.count = 1;
        } else if self.digits(&mut number) == 0 {
            return None;
        }
        if self.accept(b'.') {
            number.integer = false;
            let fraction = self.digits(&mut number);
            if fraction == 0 {
                return None;
            }
            number.scale = -(fraction as i64);
        }
        if self.accept(b'e') || self.accept(b'E') {
            number.integer = false;
            let negative = !self.accept(b'+') && self.accept(b'-');
            let start = self.pos;
            let mut exponent = 0i64;
            while let Some(&b) = self.bytes.get(self.pos)
                && b.is_ascii_digit()
            {
                // Saturates far beyond any exponent a double can take.
                exponent = (exponent * 10 + i64::from(b - b'0')).min(1 << 32);
                self.pos += 1;
            }
            if self.pos == start {
                return None;
            }
            number.scale += if negative { -exponent } else { exponent };
        }
        number.text = &self.text[start..self.pos];
        Some(number)
    }

    /// Steps over ASCII digits into `number`; how many.
    fn digits(&mut self, number: &mut Number) -> usize {
        let start = self.pos;
        while let Some(&b) = self.bytes.get(self.pos)
            && b.is_ascii_digit()
        {
            if number.count < Number::EXACT_DIGITS {
                number.digits = number.digits * 10 + u64::from(b - b'0');
            }
            number.count += 1;
            self.pos += 1;
        }
        self.pos - start
    }

    /// Steps over a value of a column that is not read. Objects and arrays are skipped by
    /// their brackets, strings by their quotes; the rest up to the next `,` or `}`.
    fn skip_value(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            match *self.bytes.get(self.pos)? {
                b'"' => {
                    self.pos += 1;
                    loop {
                        let stop =
                            self.pos + memchr::memchr2(b'"', b'\\', &self.bytes[self.pos..])?;
                        self.pos = stop + if self.bytes[stop] == b'"' { 1 } else { 2 };
                        if self.bytes[stop] == b'"' {
                            break;
                        }
                    }
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.pos += 1;
                }
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    self.pos += 1;
                }
                b',' | b'}' if depth == 0 => return Some(()),
                _ => self.pos += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion_datasource::decoder::{Decoder, DecoderDeserializer};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("score", DataType::Float64, true),
            Field::new("text", DataType::Utf8, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("nothing", DataType::Null, true),
            Field::new("view", DataType::Utf8View, true),
        ]))
    }

    /// Lines this decoder parses itself and lines it hands to arrow-json, mixed.
    const LINES: &str = concat!(
        r#"{"id": 1, "score": 0.5, "text": "plain", "ok": true, "view": "short"}"#,
        "\n",
        r#"{"text":"esc \"q\" \\ \/ \b\f\n\r\t \u00e9 \ud83d\ude00 é","id":-2,"score":1e-3,"view":"past twelve \"bytes\" é"}"#,
        "\r\n",
        "\n   \t\n",
        r#"  { "score" : -0 , "id" : 0 , "extra" : {"a": [1, {"b": "}]"}], "c": "x\"}"}, "ok": false }  "#,
        "\n",
        r#"{"id": null, "score": null, "text": null, "ok": null, "nothing": null}"#,
        "\n",
        r#"{}"#,
        "\n",
        r#"{"id": 3, "score": 17, "text": ""}"#,
        "\n",
        // Handed to arrow-json: a float for an integer, a key twice, two objects on a line, a
        // number too large for 64 bits, a trailing comma (which arrow-json lets pass).
        r#"{"id": 4.0, "score": 2.5, "view": "handed to arrow-json"}"#,
        "\n",
        r#"{"id": 5, "id": 6}"#,
        "\n",
        r#"{"id": 7} {"id": 8}"#,
        "\n",
        r#"{"id": 9, "score": 1e400}"#,
        "\n",
        r#"{"id": 11,}"#,
        "\n",
        r#"{"id": 10, "text": "no newline at the end"}"#,
    );

    /// Decodes `input` fed in pieces of `piece` bytes, as DataFusion's scan feeds it.
    fn decode_in_pieces(
        deserializer: &mut dyn BatchDeserializer<Bytes>,
        input: &[u8],
        piece: usize,
    ) -> Result<Vec<RecordBatch>, ArrowError> {
        let mut batches = Vec::new();
        let mut take = |deserializer: &mut dyn BatchDeserializer<Bytes>| loop {
            match deserializer.next()? {
                DeserializerOutput::RecordBatch(batch) => batches.push(batch),
                _ => return Ok::<_, ArrowError>(()),
            }
        };
        for chunk in input.chunks(piece) {
            deserializer.digest(Bytes::copy_from_slice(chunk));
            take(deserializer)?;
        }
        deserializer.finish();
        take(deserializer)?;
        Ok(batches)
    }

    /// [`FlatJsonDecoder`] over `input` in pieces of `piece` bytes, sharing pieces of
    /// `share_from` bytes or more.
    fn flat(
        schema: SchemaRef,
        batch_size: usize,
        input: &[u8],
        piece: usize,
        share_from: usize,
    ) -> Result<Vec<RecordBatch>, ArrowError> {
        let decoder = FlatJsonDecoder::try_new(schema, batch_size).unwrap();
        let mut deserializer = FlatJsonDeserializer::new(decoder, share_from);
        decode_in_pieces(&mut deserializer, input, piece)
    }

    fn arrow_json_batches(schema: SchemaRef, input: &[u8]) -> Result<Vec<RecordBatch>, ArrowError> {
        let decoder = ArrowJson(ReaderBuilder::new(schema).build_decoder().unwrap());
        decode_in_pieces(&mut DecoderDeserializer::new(decoder), input, input.len())
    }

    fn arrow_json(input: &[u8]) -> RecordBatch {
        let batches = arrow_json_batches(schema(), input).unwrap();
        concat_batches(&schema(), &batches).unwrap()
    }

    /// arrow-json's decoder over the whole input, as DataFusion's JSON reader runs it.
    #[derive(Debug)]
    struct ArrowJson(ArrowJsonDecoder);

    impl Decoder for ArrowJson {
        fn decode(&mut self, buf: &[u8]) -> Result<usize, ArrowError> {
            self.0.decode(buf)
        }
        fn flush(&mut self) -> Result<Option<RecordBatch>, ArrowError> {
            self.0.flush()
        }
        fn can_flush_early(&self) -> bool {
            false
        }
    }

    /// Numbers read on the fast path are those `str::parse` makes of their text, bit for bit;
    /// those it leaves alone (long, large, not integers) are read as the text says.
    #[test]
    fn numbers_read_as_parse_reads_them() {
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1",
            "-1",
            "73.3",
            "0.05",
            "1e22",
            "1e23",
            "1E-22",
            "1e-23",
            "9007199254740991",
            "9007199254740992",
            "9007199254740993",
            "123456789012345678",
            "1234567890123456789",
            "12345678901234567890",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "0.1e1",
            "2.5E+3",
            "5e-324",
            "1.7976931348623157e308",
            "1e400",
            "-1e400",
            "0.0000000000000000000000001",
            "3.141592653589793238462643383279",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        // Pseudo-random digits, points and exponents around the fast path's limits.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for _ in 0..20_000 {
            let mut t = String::new();
            if next(3) == 0 {
                t.push('-');
            }
            let digits = 1 + next(22);
            t.push(char::from(b'1' + next(9) as u8));
            for _ in 1..digits {
                t.push(char::from(b'0' + next(10) as u8));
            }
            if next(2) == 0 {
                let at = 1 + next(digits) as usize;
                t.insert(
                    at.min(t.len() - 1).max(usize::from(t.starts_with('-')) + 1),
                    '.',
                );
                if t.ends_with('.') {
                    t.push('5');
                }
            }
            if next(3) == 0 {
                t.push_str(&format!("e{}", next(60) as i64 - 30));
            }
            texts.push(t);
        }
        for text in &texts {
            let mut at = Cursor {
                text,
                bytes: text.as_bytes(),
                pos: 0,
            };
            let number = at
                .number()
                .unwrap_or_else(|| panic!("{text} is a JSON number"));
            assert_eq!(at.pos, text.len(), "{text}");
            let expected: f64 = text.parse().unwrap();
            assert_eq!(
                number.float().map(f64::to_bits),
                Some(expected.to_bits()),
                "{text}"
            );
            let integral = !text.contains(['.', 'e', 'E']);
            assert_eq!(
                number.integer(),
                text.parse::<i64>().ok().filter(|_| integral),
                "{text}"
            );
        }
        for bad in ["-", "01", "1.", ".5", "1e", "1e+", "-a"] {
            let mut at = Cursor {
                text: bad,
                bytes: bad.as_bytes(),
                pos: 0,
            };
            let read = at.number().map(|n| n.text.len());
            assert!(read.is_none_or(|len| len < bad.len()), "{bad}");
        }
    }

    #[test]
    fn rows_match_arrow_json_whatever_the_pieces_and_batch_size() {
        let expected = arrow_json(LINES.as_bytes());
        assert_eq!(expected.num_rows(), 13);
        for batch_size in [1, 3, 8192] {
            for piece in [1, 2, 7, 64, LINES.len()] {
                // Pieces copied, and pieces shared by the views that point into them.
                for share_from in [usize::MAX, 0] {
                    let batches =
                        flat(schema(), batch_size, LINES.as_bytes(), piece, share_from).unwrap();
                    // A line of two objects adds two rows at once.
                    assert!(batches.iter().all(|b| b.num_rows() <= batch_size + 1));
                    let got = concat_batches(&schema(), &batches).unwrap();
                    assert_eq!(
                        got, expected,
                        "batch size {batch_size}, pieces of {piece}, shared from {share_from}"
                    );
                }
            }
        }
    }

    /// Long plain strings of a shared piece are views into it; the rest are copies.
    #[test]
    fn views_point_into_shared_pieces() {
        let schema = Arc::new(Schema::new(vec![Field::new("t", DataType::Utf8View, true)]));
        let input = concat!(
            r#"{"t": "a string longer than twelve bytes"}"#,
            "\n",
            r#"{"t": "short"}"#,
            "\n",
            r#"{"t": "escaped \"quotes\" are copied"}"#,
            "\n",
        );
        let batches = flat(Arc::clone(&schema), 8192, input.as_bytes(), input.len(), 0).unwrap();
        let array = batches[0].column(0).as_string_view();
        let expected = [
            "a string longer than twelve bytes",
            "short",
            "escaped \"quotes\" are copied",
        ];
        assert_eq!(array.iter().collect::<Vec<_>>(), expected.map(Some));
        // The first buffer is the piece itself, the second holds the unescaped copy.
        assert_eq!(array.data_buffers()[0].as_slice(), input.as_bytes());
        assert_eq!(array.data_buffers()[1].as_slice(), expected[2].as_bytes());
        let copied = flat(schema, 8192, input.as_bytes(), input.len(), usize::MAX).unwrap();
        let array = copied[0].column(0).as_string_view();
        assert_eq!(array.data_buffers().len(), 1);
        assert_ne!(array.data_buffers()[0].as_slice(), input.as_bytes());
    }

    #[test]
    fn bad_lines_fail_as_in_arrow_json() {
        // arrow-json reads a string cut off at its line's end on into the next line, so there
        // its message differs; elsewhere it is the same.
        let cut_off = r#"{"id": 1, "text": "cut off"#;
        for bad in [
            cut_off,
            r#"{"id": [1]}"#,
            r#"{"text": "\x"}"#,
            r#"{"text": "\ud800 lone"}"#,
            r#"{"id": 99999999999999999999999}"#,
            r#"{"ok": 1}"#,
            r#"{"nothing": 1}"#,
        ] {
            let input = format!("{{\"id\": 1}}\n{bad}\n{{\"id\": 2}}\n");
            let ours = flat(schema(), 8192, input.as_bytes(), 5, 0);
            let theirs = arrow_json_batches(schema(), input.as_bytes());
            match (ours, theirs) {
                (Err(ours), Err(theirs)) => assert!(
                    matches!(ours, ArrowError::JsonError(_))
                        && (bad == cut_off || ours.to_string() == theirs.to_string()),
                    "{bad}: {ours} against {theirs}"
                ),
                (ours, theirs) => panic!("{bad}: {ours:?} against {theirs:?}"),
            }
        }
    }

    #[test]
    fn a_missing_required_value_fails_as_in_arrow_json() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("text", DataType::Utf8, true),
        ]));
        let input = b"{\"id\": 1}\n{\"text\": \"no id\"}\n";
        let ours = flat(Arc::clone(&schema), 8192, input, input.len(), 0).unwrap_err();
        let theirs = arrow_json_batches(schema, input).unwrap_err();
        assert_eq!(ours.to_string(), theirs.to_string());
    }

    #[test]
    fn a_quoted_value_in_a_number_or_boolean_column_fails() {
        for (line, field, data_type) in [
            (r#"{"id": 1, "score": "0.9"}"#, "score", "Float64"),
            (r#"{"id": "2"}"#, "id", "Int64"),
            (r#"{"ok": "true", "id": 3}"#, "ok", "Boolean"),
        ] {
            let input = format!("{{\"id\": 1}}\n{line}\n");
            let error = flat(schema(), 8192, input.as_bytes(), input.len(), 0).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "Json error: field '{field}' holds a quoted value where the schema has \
                     {data_type}: write the value unquoted, or read the column as text and \
                     CAST it in SQL"
                ),
                "{line}"
            );
        }
        // arrow-json parses the text instead.
        let input = br#"{"score": "0.9"}"#;
        assert!(arrow_json_batches(schema(), input).is_ok());
    }

    #[test]
    fn invalid_utf8_fails() {
        let mut input = br#"{"text": "ok"}"#.to_vec();
        input.extend_from_slice(b"\n{\"text\": \"\xff\"}\n");
        assert!(flat(schema(), 8192, &input, input.len(), 0).is_err());
    }

    #[test]
    fn reads_only_flat_columns() {
        assert!(FlatJsonDecoder::reads(&schema()));
        let nested = Schema::new(vec![Field::new_list(
            "tags",
            Field::new_list_field(DataType::Utf8, true),
            true,
        )]);
        assert!(!FlatJsonDecoder::reads(&nested));
        assert!(!FlatJsonDecoder::reads(&Schema::new(vec![Field::new(
            "n",
            DataType::Int32,
            true
        )])));
    }
}
