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

use super::TokenType;

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
