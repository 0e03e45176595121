//! Durations: read from the command line (`--interval`, `--duration`, `--collect-interval`)
//! and written for people (`--latency`'s times).

use std::time::Duration;

/// Parses `500ms`, `1s`, `2m`, `1h` or a plain number of seconds; must be positive.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 500ms, 1s, 2m)"))?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    if secs.is_nan() || secs <= 0.0 {
        return Err(format!("`{s}`: must be more than zero"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}`: too long"))
}

/// Human-readable duration of `ns` nanoseconds, three significant digits.
pub fn show(ns: u64) -> String {
    let (v, unit) = match ns {
        0..1_000 => return format!("{ns} ns"),
        1_000..1_000_000 => (ns as f64 / 1e3, "µs"),
        1_000_000..1_000_000_000 => (ns as f64 / 1e6, "ms"),
        _ => (ns as f64 / 1e9, "s"),
    };
    let decimals = if v < 10.0 {
        2
    } else if v < 100.0 {
        1
    } else {
        0
    };
    format!("{v:.decimals$} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_durations_have_three_significant_digits() {
        assert_eq!(show(0), "0 ns");
        assert_eq!(show(999), "999 ns");
        assert_eq!(show(1_500), "1.50 µs");
        assert_eq!(show(27_340_000), "27.3 ms");
        assert_eq!(show(204_279_531), "204 ms");
        assert_eq!(show(3_000_000_000), "3.00 s");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    /// Every string of up to 4 characters from the characters a duration is made of, and a
    /// few long ones: an answer each time (no panic, no hang), and every accepted value is
    /// positive and finite.
    #[test]
    fn any_input_gets_an_answer() {
        const CHARS: &[u8] = b"019.msh -+eE";
        let mut checked = 0;
        for len in 0..=4u32 {
            for mut n in 0..(CHARS.len() as u64).pow(len) {
                let mut s = String::new();
                for _ in 0..len {
                    s.push(CHARS[(n % CHARS.len() as u64) as usize] as char);
                    n /= CHARS.len() as u64;
                }
                if let Ok(d) = parse_duration(&s) {
                    assert!(d > Duration::ZERO, "{s:?} -> {d:?}");
                }
                checked += 1;
            }
        }
        assert!(checked > 20_000);
        for long in [
            "9".repeat(400),
            format!("{}h", "9".repeat(30)),
            "1e308h".into(),
        ] {
            assert!(parse_duration(&long).is_err(), "{long}");
        }
    }
}
