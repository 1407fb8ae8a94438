//! The index of a Megatron-LM indexed dataset (`<prefix>.idx`, "MMIDIDX" version 1), as
//! Megatron-LM's and NeMo's `IndexedDataset` read it:
//!
//! | bytes | content |
//! |---|---|
//! | 9 | `MMIDIDX\0\0` |
//! | 8 | version, u64 = 1 |
//! | 1 | dtype code of the tokens in `.bin` (uint16 = 8, int32 = 4) |
//! | 8 | sequence count S, u64 |
//! | 8 | document index entries D + 1, u64 |
//! | 4 S | sequence lengths in tokens, int32 |
//! | 8 S | byte offset of each sequence in `.bin`, int64 |
//! | 8 (D + 1) | document index: 0, then the sequence count after each document, int64 |
//!
//! All little-endian. delt writes one sequence per document, so the document index is
//! 0, 1, ..., S.

use std::path::Path;

use super::TokenType;
use crate::error::{DeltError, Result};

/// The magic that opens an index file.
pub const MAGIC: &[u8; 9] = b"MMIDIDX\0\0";

/// Megatron's code for a token type.
pub fn dtype_code(tokens: TokenType) -> u8 {
    match tokens {
        TokenType::U16 => 8,
        TokenType::I32 => 4,
        TokenType::U32 => unreachable!("Megatron has no uint32 tokens; options reject it"),
    }
}

/// The index of sequences of `lengths` tokens of type `tokens`, one document each.
pub fn index(tokens: TokenType, lengths: &[i32]) -> Vec<u8> {
    let count = lengths.len() as u64;
    let mut out = Vec::with_capacity(34 + lengths.len() * 20 + 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&1u64.to_le_bytes());
    out.push(dtype_code(tokens));
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&(count + 1).to_le_bytes());
    for length in lengths {
        out.extend_from_slice(&length.to_le_bytes());
    }
    let mut offset = 0i64;
    for &length in lengths {
        out.extend_from_slice(&offset.to_le_bytes());
        offset += i64::from(length) * tokens.width() as i64;
    }
    for document in 0..=count as i64 {
        out.extend_from_slice(&document.to_le_bytes());
    }
    out
}

/// The documents of the indexed dataset at `prefix` (`prefix.bin`, `prefix.idx`) as written
/// by [`index`], in order.
pub fn read(prefix: &Path) -> Result<Vec<Vec<u32>>> {
    let file = |extension: &str| {
        let path = prefix.with_extension(extension);
        std::fs::read(&path).map_err(|e| DeltError::io(format!("reading {}", path.display()), e))
    };
    let (idx, bin) = (file("idx")?, file("bin")?);
    let bad = || {
        DeltError::BadInput(format!(
            "{}: not an indexed dataset as delt writes it",
            prefix.with_extension("idx").display()
        ))
    };
    let word = |at: usize| -> Result<u64> {
        let bytes = idx.get(at..at + 8).ok_or_else(bad)?;
        Ok(u64::from_le_bytes(bytes.try_into().expect("8 bytes")))
    };
    if idx.get(..9) != Some(MAGIC.as_slice()) || word(9)? != 1 {
        return Err(bad());
    }
    let width = match idx.get(17) {
        Some(8) => 2,
        Some(4) => 4,
        _ => return Err(bad()),
    };
    let count = word(18)? as usize;
    let lengths = idx.get(34..34 + 4 * count).ok_or_else(bad)?;
    let mut offset = 0;
    let mut documents = Vec::with_capacity(count);
    for length in lengths.chunks_exact(4) {
        let length = i32::from_le_bytes(length.try_into().expect("4 bytes")) as usize;
        let bytes = bin.get(offset..offset + length * width).ok_or_else(bad)?;
        documents.push(match width {
            2 => bytes
                .chunks_exact(2)
                .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
                .collect(),
            _ => bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        });
        offset += length * width;
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_layout() {
        let idx = index(TokenType::U16, &[3, 1]);
        assert_eq!(&idx[..9], MAGIC);
        assert_eq!(u64::from_le_bytes(idx[9..17].try_into().unwrap()), 1);
        assert_eq!(idx[17], 8);
        assert_eq!(u64::from_le_bytes(idx[18..26].try_into().unwrap()), 2);
        assert_eq!(u64::from_le_bytes(idx[26..34].try_into().unwrap()), 3);
        let rest: Vec<i64> = idx[42..]
            .chunks(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(&idx[34..42], &[3, 0, 0, 0, 1, 0, 0, 0]);
        // Byte offsets (2 bytes a token), then the document index.
        assert_eq!(rest, vec![0, 6, 0, 1, 2]);
    }
}
