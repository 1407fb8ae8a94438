//! The flat token shards that llm.c and nanoGPT-style trainers stream in file order: a header
//! of 256 little-endian int32 (magic 20240520, version, token count, then zeros) followed by
//! the tokens, uint16 (version 1) or uint32 (version 2), little-endian.

use super::TokenType;

/// The first header field.
pub const MAGIC: i32 = 20240520;

/// Bytes before the first token.
pub const HEADER_BYTES: usize = 256 * 4;

/// The header of a shard of `tokens` tokens of type `kind`.
pub fn header(kind: TokenType, tokens: u64) -> Vec<u8> {
    let version: i32 = match kind {
        TokenType::U16 => 1,
        TokenType::U32 => 2,
        TokenType::I32 => unreachable!("flat token shards have no int32 tokens; options reject it"),
    };
    let mut fields = [0i32; 256];
    fields[0] = MAGIC;
    fields[1] = version;
    fields[2] = i32::try_from(tokens).expect("shards are closed below 2^31 tokens");
    fields.iter().flat_map(|f| f.to_le_bytes()).collect()
}

/// The most tokens a shard can hold: the header counts them in an int32.
pub const MAX_TOKENS: u64 = i32::MAX as u64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout() {
        let h = header(TokenType::U32, 70_000);
        assert_eq!(h.len(), HEADER_BYTES);
        let field = |i: usize| i32::from_le_bytes(h[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(
            (field(0), field(1), field(2), field(3)),
            (MAGIC, 2, 70_000, 0)
        );
        assert_eq!(header(TokenType::U16, 5)[4], 1);
    }
}
