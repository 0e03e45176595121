//! The actions' arguments: sizes (`64k`, `4m`), `N [CHUNK]`, and the limits some actions put on
//! them.

/// The page size the actions assume (mappings, O_DIRECT alignment).
pub const PAGE: usize = 4096;

/// A size: a number, optionally followed by `k` or `m` (binary multiples).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let (num, mul) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1024),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    num.parse::<usize>()
        .map(|n| n * mul)
        .map_err(|_| format!("bad number {s:?}"))
}

/// The size at position `i`, named `what` in the error when it is missing.
pub fn arg(rest: &[String], i: usize, what: &str) -> Result<usize, String> {
    rest.get(i)
        .ok_or_else(|| format!("missing argument {what}"))
        .and_then(|s| parse_size(s))
}

/// `N [CHUNK]` (CHUNK defaults to 4096).
pub fn n_chunk(rest: &[String]) -> Result<(usize, usize), String> {
    let n = arg(rest, 0, "N")?;
    let chunk = if rest.len() > 1 {
        arg(rest, 1, "CHUNK")?
    } else {
        4096
    };
    if chunk == 0 {
        return Err("CHUNK must be > 0".into());
    }
    Ok((n, chunk))
}

/// A CHUNK that fits in a pipe, so that one write never waits for a reader.
pub fn check_pipe_chunk(chunk: usize) -> Result<(), String> {
    if chunk > 65536 {
        return Err("CHUNK must be <= 65536 (pipe capacity)".into());
    }
    Ok(())
}

/// O_DIRECT transfers: CHUNK a multiple of the page size that divides N.
pub fn direct_sizes(action: &str, n: usize, chunk: usize) -> Result<(), String> {
    if !chunk.is_multiple_of(PAGE) || !n.is_multiple_of(chunk) {
        return Err(format!(
            "{action}: CHUNK must be a multiple of 4096 and divide N"
        ));
    }
    Ok(())
}
