//! The strings of a string view array, read in row order.
//!
//! After a sort or fold, consecutive rows' views point anywhere in the input: each string read
//! is a cache miss, and on the 4 KiB pages of a mapped file a TLB miss too. A loop that does
//! much work per row (the JSON encoder) has too few of those misses in flight at once, and
//! pays each one's full latency. [`gather`] first copies the strings into one buffer in a
//! loop that does nothing else, asking for each string some rows ahead, so that many misses
//! overlap; the writer then reads them in order.

use datafusion::arrow::array::{
    Array, ByteView, LargeStringArray, MAX_INLINE_VIEW_LEN, StringViewArray,
};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer};

/// How many rows ahead [`gather`] asks for a string.
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

/// The strings of `array`, copied in row order into one buffer.
pub fn gather(array: &StringViewArray) -> LargeStringArray {
    let long = |row: usize| {
        let view = array.views()[row];
        (view as u32 > MAX_INLINE_VIEW_LEN && array.is_valid(row)).then(|| ByteView::from(view))
    };
    let text = |view: ByteView| {
        let buffer = &array.data_buffers()[view.buffer_index as usize];
        &buffer[view.offset as usize..][..view.length as usize]
    };
    let mut values: Vec<u8> = Vec::with_capacity(array.total_bytes_len());
    let mut offsets: Vec<i64> = Vec::with_capacity(array.len() + 1);
    offsets.push(0);
    for row in 0..array.len() {
        if row + PREFETCH_ROWS < array.len()
            && let Some(ahead) = long(row + PREFETCH_ROWS)
        {
            for line in text(ahead).chunks(64) {
                prefetch(line.as_ptr());
            }
        }
        match long(row) {
            Some(view) => values.extend_from_slice(text(view)),
            None => values.extend_from_slice(array.value(row).as_bytes()),
        }
        offsets.push(values.len() as i64);
    }
    // SAFETY: the offsets start at 0 and grow to the length of `values`, which holds whole
    // strings of a string array.
    unsafe {
        LargeStringArray::new_unchecked(
            OffsetBuffer::new_unchecked(offsets.into()),
            Buffer::from(values),
            array.nulls().cloned(),
        )
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
        let gathered = gather(&array);
        assert_eq!(
            gathered.iter().collect::<Vec<_>>(),
            array.iter().collect::<Vec<_>>()
        );
        assert_eq!(gathered.null_count(), 1);
        let sliced = array.slice(1, 3);
        assert_eq!(
            gather(&sliced).iter().collect::<Vec<_>>(),
            sliced.iter().collect::<Vec<_>>()
        );
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
