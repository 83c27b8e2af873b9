//! Lowercase hex for ids, pubkeys and signatures: every EVENT carries 256
//! hex characters, so these are on the ingest path. Table lookups instead of
//! per-character branches (the `hex` crate's decoder was 0.7 µs of the
//! 3.2 µs a relay socket spent per event, docs/PERFORMANCE.md).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Value of each byte as a lowercase hex digit; `INVALID` otherwise
/// (NIP-01 requires lowercase, so `A`–`F` are invalid too).
const INVALID: u8 = 0xFF;
const VALUES: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 16 {
        table[DIGITS[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Decodes exactly `N` bytes from `2 * N` lowercase hex characters.
pub fn decode<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    let mut bad = 0u8;
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (hi, lo) = (VALUES[pair[0] as usize], VALUES[pair[1] as usize]);
        bad |= hi | lo;
        *slot = (hi << 4) | (lo & 0x0F);
    }
    // Valid digits are below 16; one INVALID anywhere sets the high bits.
    (bad & 0xF0 == 0).then_some(out)
}

/// Writes the lowercase hex of `bytes` into `buf` (at least twice as long)
/// and returns it as text.
pub fn encode_into<'b>(bytes: &[u8], buf: &'b mut [u8]) -> &'b str {
    let out = &mut buf[..bytes.len() * 2];
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[(byte >> 4) as usize];
        pair[1] = DIGITS[(byte & 0x0F) as usize];
    }
    // Only ASCII digits were written.
    std::str::from_utf8(out).unwrap_or_default()
}

/// The lowercase hex of `bytes` as a new string.
pub fn encode(bytes: &[u8]) -> String {
    let mut buf = vec![0u8; bytes.len() * 2];
    encode_into(bytes, &mut buf);
    // Only ASCII digits were written.
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_hex_crate_on_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let text = encode(&all);
        assert_eq!(text, hex::encode(&all));
        let back: [u8; 256] = decode(&text).expect("valid");
        assert_eq!(back.to_vec(), all);
    }

    #[test]
    fn refuses_uppercase_odd_lengths_and_non_hex() {
        assert_eq!(decode::<2>("abcd"), Some([0xab, 0xcd]));
        assert_eq!(decode::<2>("ABCD"), None);
        assert_eq!(decode::<2>("abc"), None);
        assert_eq!(decode::<2>("abcde"), None);
        assert_eq!(decode::<2>("abcg"), None);
        assert_eq!(decode::<2>("ab\u{e9}"), None);
        assert_eq!(decode::<1>(":0"), None);
    }
}
