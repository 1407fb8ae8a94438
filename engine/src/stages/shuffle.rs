//! The key behind `ORDER BY shuffle_order(seed)`.
//!
//! A reproducible shuffle must not depend on how rows are split into files, partitions or
//! threads, so the sort key is a seeded hash of each row's *content*. Rows with equal content
//! get equal keys, and since such rows are indistinguishable the output bytes are the same
//! whatever order they come in. The key is 128 bits, so distinct rows practically never tie.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, FixedSizeBinaryBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::{ScalarValue, exec_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// Name of the internal function computing shuffle keys.
pub const SHUFFLE_KEY: &str = "delt_shuffle_key";

/// `delt_shuffle_key(seed, col, ...)`: a 16-byte seeded hash of the row's values, whose
/// byte order is a uniformly random permutation of the distinct rows.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ShuffleKey {
    signature: Signature,
}

impl ShuffleKey {
    /// The function as registered in a delt session.
    pub fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl Default for ShuffleKey {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for ShuffleKey {
    fn name(&self) -> &str {
        SHUFFLE_KEY
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::FixedSizeBinary(16))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some((seed, columns)) = args.args.split_first() else {
            return exec_err!("{SHUFFLE_KEY} needs a seed");
        };
        let seed = match seed {
            ColumnarValue::Scalar(ScalarValue::Int64(Some(seed))) => *seed as u64,
            other => {
                return exec_err!("{SHUFFLE_KEY}: seed must be an integer literal, got {other:?}");
            }
        };
        let arrays = columns
            .iter()
            .map(|c| c.to_array(args.number_rows))
            .collect::<Result<Vec<_>>>()?;
        Ok(ColumnarValue::Array(row_keys(
            seed,
            &arrays,
            args.number_rows,
        )?))
    }
}

/// Computes the 16-byte key of every row of `columns`.
pub fn row_keys(seed: u64, columns: &[ArrayRef], rows: usize) -> Result<ArrayRef> {
    let mut lanes: Vec<[u64; 2]> = vec![[mix(seed), mix(seed ^ 0xA076_1D64_78BD_642F)]; rows];
    for column in columns {
        absorb_column(&mut lanes, column.as_ref())?;
    }
    let mut keys = FixedSizeBinaryBuilder::with_capacity(rows, 16);
    for [a, b] in lanes {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_be_bytes());
        bytes[8..].copy_from_slice(&b.to_be_bytes());
        keys.append_value(bytes)?;
    }
    Ok(Arc::new(keys.finish()))
}

fn absorb_column(lanes: &mut [[u64; 2]], column: &dyn Array) -> Result<()> {
    let row_bytes = |lanes: &mut [[u64; 2]], value: &mut dyn FnMut(usize) -> Option<Vec<u8>>| {
        for (row, lane) in lanes.iter_mut().enumerate() {
            match value(row) {
                Some(bytes) => absorb(lane, &bytes),
                // NULL differs from every value, including the empty string.
                None => absorb_word(lane, u64::MAX),
            }
        }
    };
    match column.data_type() {
        DataType::Utf8 => {
            let a = column.as_string::<i32>();
            row_bytes(lanes, &mut |i| {
                a.is_valid(i).then(|| a.value(i).as_bytes().to_vec())
            })
        }
        DataType::LargeUtf8 => {
            let a = column.as_string::<i64>();
            row_bytes(lanes, &mut |i| {
                a.is_valid(i).then(|| a.value(i).as_bytes().to_vec())
            })
        }
        DataType::Utf8View => {
            let a = column.as_string_view();
            row_bytes(lanes, &mut |i| {
                a.is_valid(i).then(|| a.value(i).as_bytes().to_vec())
            })
        }
        _ => {
            let formatter = ArrayFormatter::try_new(column, &FormatOptions::default())?;
            row_bytes(lanes, &mut |i| {
                column
                    .is_valid(i)
                    .then(|| formatter.value(i).to_string().into_bytes())
            })
        }
    }
    Ok(())
}

fn absorb(lane: &mut [u64; 2], bytes: &[u8]) {
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        absorb_word(
            lane,
            u64::from_le_bytes(chunk.try_into().expect("8-byte chunk")),
        );
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    absorb_word(lane, u64::from_le_bytes(tail));
    absorb_word(lane, bytes.len() as u64);
}

fn absorb_word(lane: &mut [u64; 2], word: u64) {
    lane[0] = mix(lane[0] ^ word);
    lane[1] = mix(lane[1] ^ word.rotate_left(32) ^ 0x9E37_79B9_7F4A_7C15);
}

/// The splitmix64 finaliser: a bijective, well-avalanching 64-bit mix.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};

    fn keys(seed: u64, ids: Vec<Option<i64>>, texts: Vec<Option<&str>>) -> Vec<Vec<u8>> {
        let rows = ids.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(texts)),
        ];
        let keys = row_keys(seed, &columns, rows).unwrap();
        let keys = keys.as_fixed_size_binary();
        (0..rows).map(|i| keys.value(i).to_vec()).collect()
    }

    #[test]
    fn key_depends_on_content_and_seed_only() {
        let a = keys(
            7,
            vec![Some(1), Some(2), None],
            vec![Some("x"), Some(""), None],
        );
        let b = keys(7, vec![Some(2), Some(1)], vec![Some(""), Some("x")]);
        assert_eq!(a[0], b[1]);
        assert_eq!(a[1], b[0]);
        assert_ne!(a[1], a[2], "NULL must differ from the empty string");
        let c = keys(8, vec![Some(1)], vec![Some("x")]);
        assert_ne!(a[0], c[0]);
    }

    #[test]
    fn permutations_look_uniform() {
        // Position of row 0 among 4 rows over many seeds: each of the 4 places about equally often.
        let mut counts = [0usize; 4];
        for seed in 0..4000 {
            let k = keys(seed, (0..4).map(Some).collect(), vec![Some("a"); 4]);
            let rank = k.iter().filter(|other| *other < &k[0]).count();
            counts[rank] += 1;
        }
        for c in counts {
            assert!((850..1150).contains(&c), "{counts:?}");
        }
    }
}
