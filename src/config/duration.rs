//! Durations (`"500ms"`, `"5s"`, `"2m"`, `"1h"`) and sizes (`"50MB"`, `"1GiB"`)
//! as written in the stack file.
//!
//! Owns: turning those strings into `Duration` and bytes, with a message
//! that says what is allowed. Must not touch: anything else (pure functions).

use std::time::Duration;

/// What a duration looks like, for hints.
pub const DURATION_HINT: &str =
    "write a number and a unit, e.g. \"500ms\", \"5s\", \"2m\", \"1h\" (units: ms, s, m, h, d)";

/// What a size looks like, for hints.
pub const SIZE_HINT: &str =
    "write a number and a unit, e.g. \"50MB\" or \"1GiB\" (units: B, KB, MB, GB, KiB, MiB, GiB)";

/// Parses a duration such as `"500ms"`, `"5s"`, `"2m"`, `"1h"` or `"1h 30m"`.
///
/// # Errors
/// A short lowercase reason when `s` is not a duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("`{t}` has no unit"));
    }
    if t.starts_with('-') {
        return Err("a duration cannot be negative".into());
    }
    humantime::parse_duration(t).map_err(|e| match e {
        humantime::DurationError::UnknownUnit { unit, .. } => {
            format!("unknown unit `{unit}`")
        }
        humantime::DurationError::NumberOverflow => "number too large".into(),
        _ => format!("`{t}` is not a duration"),
    })
}

/// Parses a size such as `"50MB"`, `"512KiB"` or `"1024"` (bytes).
///
/// # Errors
/// A short lowercase reason when `s` is not a size.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    if num.is_empty() {
        if t.starts_with('-') {
            return Err("a size cannot be negative".into());
        }
        return Err(format!("`{t}` is not a size"));
    }
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(format!("unknown unit `{unit}`")),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{num}` is not a number"))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err("size too large".into());
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 10s "), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn bad_durations() {
        assert_eq!(parse_duration("10"), Err("`10` has no unit".into()));
        assert_eq!(
            parse_duration("5 parsecs"),
            Err("unknown unit `parsecs`".into())
        );
        assert_eq!(parse_duration(""), Err("empty duration".into()));
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50MB"), Ok(50_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512 KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("10kb"), Ok(10_000));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1.5MB"), Ok(1_500_000));
        assert_eq!(parse_size("7B"), Ok(7));
    }

    #[test]
    fn bad_sizes() {
        assert_eq!(parse_size("50XB"), Err("unknown unit `XB`".into()));
        assert_eq!(parse_size("-5MB"), Err("a size cannot be negative".into()));
        assert_eq!(parse_size("MB"), Err("`MB` is not a size".into()));
        assert!(parse_size("1.2.3MB").is_err());
    }
}
