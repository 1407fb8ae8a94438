//! The flat token shards that llm.c and nanoGPT-style trainers stream in file order: a header
//! of 256 little-endian int32 (magic, version, token count, then zeros) followed by the tokens,
//! little-endian. llm.c's two kinds: GPT-2's uint16 tokens (magic 20240520, version 1, read by
//! `train_gpt2`) and Llama 3's uint32 tokens (magic 20240801, version 7, read by
//! `train_llama3.py`).

use super::TokenType;

/// Bytes before the first token.
pub const HEADER_BYTES: usize = 256 * 4;

/// The header of a shard of `tokens` tokens of type `kind`.
pub fn header(kind: TokenType, tokens: u64) -> Vec<u8> {
    let (magic, version): (i32, i32) = match kind {
        TokenType::U16 => (20240520, 1),
        TokenType::U32 => (20240801, 7),
        TokenType::I32 => unreachable!("flat token shards have no int32 tokens; options reject it"),
    };
    let mut fields = [0i32; 256];
    fields[0] = magic;
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
            (20240801, 7, 70_000, 0)
        );
        let h = header(TokenType::U16, 5);
        // 20240520 = 0x0134d888.
        assert_eq!(h[..12], [0x88, 0xd8, 0x34, 0x01, 1, 0, 0, 0, 5, 0, 0, 0]);
    }
}
