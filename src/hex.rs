//! Lowercase hexadecimal, for the few secrets and ids written as text (the admin token, the
//! cluster key's file and id, the fleet's ticket keys).

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lowercase hex, two digits a byte.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 * bytes.len());
    encode_into(&mut s, bytes);
    s
}

/// Appends `bytes` to `out` as lowercase hex.
pub(crate) fn encode_into(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
}

/// The 32 bytes that exactly 64 hex digits (either case) stand for; None for anything else.
pub(crate) fn decode_32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_two_bytes_go_there_and_back() {
        let bytes: [u8; 32] = std::array::from_fn(|i| (i * 37) as u8);
        let text = encode(&bytes);
        assert_eq!(text.len(), 64);
        assert_eq!(&text[..6], "00254a");
        assert_eq!(decode_32(&text), Some(bytes));
        assert_eq!(decode_32(&text.to_uppercase()), Some(bytes));
        for bad in [
            "",
            "00",
            &"0".repeat(63),
            &"0".repeat(65),
            &"zz".repeat(32),
            &"é".repeat(32),
        ] {
            assert_eq!(decode_32(bad), None, "{bad:?}");
        }
    }
}
