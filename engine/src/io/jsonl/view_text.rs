//! The strings of a string view array, read in row order.
//!
//! After a sort or fold, consecutive rows' views point anywhere in the input: each string read
//! is a cache miss, and on the 4 KiB pages of a mapped file a TLB miss too. A loop that does
//! much work per row (the JSON encoder) has too few of those misses in flight at once, and
//! pays each one's full latency. [`Gathered`] first copies the strings of a few hundred rows into
//! one buffer in a loop that does nothing else, asking for each string some rows ahead, so that
//! many misses overlap; the writer then reads them in order, from the cache.

use std::ops::Range;

use datafusion::arrow::array::{Array, ByteView, MAX_INLINE_VIEW_LEN, StringViewArray};

/// How many rows ahead [`Gathered::gather`] asks for a string.
const PREFETCH_ROWS: usize = 16;

/// Whether the strings of `array` that lie in its buffers come in the order they lie in
/// (decoded input, not yet reordered): then they are read in order where they are.
pub fn in_order(array: &StringViewArray) -> bool {
    let mut last = (0, 0);
    array.views().iter().all(|&view| {
        if view as u32 <= MAX_INLINE_VIEW_LEN {
            return true;
        }
        let view = ByteView::from(view);
        let at = (view.buffer_index, view.offset);
        let ordered = at >= last;
        last = at;
        ordered
    })
}

/// The strings of a few rows of a string view array at a time, copied in row order into a
/// buffer that each next range of rows reuses: small ranges keep the copy in the cache for
/// the writer that reads it next.
pub struct Gathered<'a> {
    array: &'a StringViewArray,
    values: Vec<u8>,
    /// Where the string of each gathered row ends in `values`.
    ends: Vec<usize>,
    /// The first gathered row.
    first: usize,
}

impl<'a> Gathered<'a> {
    /// Nothing gathered yet.
    pub fn new(array: &'a StringViewArray) -> Self {
        Self {
            array,
            values: Vec::new(),
            ends: Vec::new(),
            first: 0,
        }
    }

    /// Gathers the strings of `rows` (null rows as empty strings) in place of the last ones,
    /// asking for each string some rows ahead, past the end of `rows` too.
    pub fn gather(&mut self, rows: Range<usize>) {
        let array = self.array;
        let long = |row: usize| {
            let view = array.views()[row];
            (view as u32 > MAX_INLINE_VIEW_LEN && array.is_valid(row)).then(|| ByteView::from(view))
        };
        let text = |view: ByteView| {
            let buffer = &array.data_buffers()[view.buffer_index as usize];
            &buffer[view.offset as usize..][..view.length as usize]
        };
        self.values.clear();
        self.ends.clear();
        self.first = rows.start;
        for row in rows {
            if row + PREFETCH_ROWS < array.len()
                && let Some(ahead) = long(row + PREFETCH_ROWS)
            {
                for line in text(ahead).chunks(64) {
                    prefetch(line.as_ptr());
                }
            }
            match long(row) {
                Some(view) => self.values.extend_from_slice(text(view)),
                None if array.is_valid(row) => {
                    self.values.extend_from_slice(array.value(row).as_bytes());
                }
                None => {}
            }
            self.ends.push(self.values.len());
        }
    }

    /// The string of `row`, which must be one of the rows gathered last.
    pub fn value(&self, row: usize) -> &[u8] {
        let at = row - self.first;
        let start = if at == 0 { 0 } else { self.ends[at - 1] };
        &self.values[start..self.ends[at]]
    }
}

/// Asks the processor to load the cache line at `at` (a hint: nothing is read).
fn prefetch(at: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch does not access memory: it cannot fault, whatever the address.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(at.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{StringViewBuilder, cast::AsArray};
    use datafusion::arrow::compute::interleave;

    use super::*;

    /// Views from several buffers, short, long and null, in a new order: interleave numbers
    /// the buffers in the order of their first use, so a buffer is gone back to.
    fn scattered() -> StringViewArray {
        let mut b = StringViewBuilder::new().with_fixed_block_size(64);
        for s in [
            "first long string, in block 0",
            "short",
            "second long string, block 0",
            "third long string, in block 1",
        ] {
            b.append_value(s);
        }
        b.append_null();
        let array = b.finish();
        assert_eq!(array.data_buffers().len(), 2);
        let order = [(0, 2), (0, 1), (0, 4), (0, 3), (0, 0)];
        let reordered = interleave(&[&array as &dyn Array], &order).unwrap();
        reordered.as_string_view().clone()
    }

    #[test]
    fn gathered_strings_equal_the_views() {
        let array = scattered();
        for array in [array.clone(), array.slice(1, 3)] {
            // Ranges of every size, in turn, reusing one buffer.
            for size in 1..=array.len() {
                let mut gathered = Gathered::new(&array);
                for start in (0..array.len()).step_by(size) {
                    let rows = start..(start + size).min(array.len());
                    gathered.gather(rows.clone());
                    for row in rows {
                        let expected = if array.is_valid(row) {
                            array.value(row)
                        } else {
                            ""
                        };
                        assert_eq!(gathered.value(row), expected.as_bytes(), "row {row}");
                    }
                }
            }
        }
    }

    #[test]
    fn order_is_where_the_strings_lie() {
        let array = scattered();
        assert!(!in_order(&array));
        assert!(in_order(&array.slice(0, 4)));
        assert!(in_order(&StringViewArray::from(vec![
            "a",
            "b",
            "long enough to lie in a buffer"
        ])));
    }
}
