//! Byte counts as users write them.

/// A byte count as users write it: digits with an optional binary `K`, `M` or `G` suffix,
/// optionally followed by `B` or `iB`, in any case (`4096`, `64K`, `256M`, `1GiB`, `512B`).
/// `None` if malformed or too large. Shared by `zcprof workload` and `cargo xtask`.
pub fn parse_size(s: &str) -> Option<u64> {
    let b = s.trim().as_bytes();
    let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = core::str::from_utf8(&b[..digits]).ok()?.parse().ok()?;
    let suffix = &b[digits..];
    let (shift, used) = match suffix.first().map(u8::to_ascii_lowercase) {
        Some(b'k') => (10, 1),
        Some(b'm') => (20, 1),
        Some(b'g') => (30, 1),
        _ => (0, 0),
    };
    let tail = &suffix[used..];
    let tail_ok = match tail {
        [] => true,
        [b] => b.eq_ignore_ascii_case(&b'b'),
        [i, b] => used == 1 && i.eq_ignore_ascii_case(&b'i') && b.eq_ignore_ascii_case(&b'b'),
        _ => false,
    };
    if !tail_ok {
        return None;
    }
    n.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("2GiB"), Some(2 << 30));
        assert_eq!(parse_size("3MB"), Some(3 << 20));
        assert_eq!(parse_size("512B"), Some(512));
        assert_eq!(parse_size(" 4096 "), Some(4096));
        assert_eq!(parse_size("0"), Some(0));
        for bad in ["", "lots", "-1M", "1.5M", "4iB", "4KiBs", "99999999999G"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    /// Every string of up to 4 characters from the characters a size is made of, and a few
    /// long ones: an answer each time (no panic, no overflow), and whatever is accepted as
    /// plain digits reads back as the same number.
    #[test]
    fn any_input_gets_an_answer() {
        const CHARS: &[u8] = b"0179kKmMgGbBiI -";
        let mut checked = 0u32;
        for len in 0..=4u32 {
            for mut n in 0..(CHARS.len() as u64).pow(len) {
                let mut s = [0u8; 4];
                for b in s.iter_mut().take(len as usize) {
                    *b = CHARS[(n % CHARS.len() as u64) as usize];
                    n /= CHARS.len() as u64;
                }
                let text = core::str::from_utf8(&s[..len as usize]).unwrap();
                let parsed = parse_size(text);
                if text.bytes().all(|c| c.is_ascii_digit()) && !text.is_empty() {
                    assert_eq!(parsed, text.parse::<u64>().ok(), "{text}");
                }
                checked += 1;
            }
        }
        assert!(checked > 60_000);
        assert_eq!(parse_size("99999999999999999999999"), None);
        assert_eq!(parse_size("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_size("17179869184G"), None, "2^34 GiB overflows");
    }
}
