//! The host's time zone, as the C library reads it (`TZ`, else
//! `/etc/localtime`): the UTC offset at an instant, and a name to show.
//!
//! Owns: the two `localtime_r` calls and the zone's name. Must not touch:
//! schedules (the parent's).

/// The broken-down local time of epoch second `t`, when the C library
/// can give it.
#[allow(unsafe_code)]
fn local(t: i64) -> Option<libc::tm> {
    let tt: libc::time_t = t;
    // SAFETY: `tm` is plain data (integers and a pointer that may be
    // null); all zeroes is a valid value of it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; `localtime_r` is the
    // reentrant form and keeps no pointer to them.
    let r = unsafe { libc::localtime_r(&tt, &mut tm) };
    (!r.is_null()).then_some(tm)
}

/// The host's UTC offset at epoch second `t`, in seconds (0 when unknown).
pub fn offset_at(t: i64) -> i64 {
    local(t).map_or(0, |tm| tm.tm_gmtoff)
}

/// The zone's abbreviation at `t` (`CEST`, `UTC`).
#[allow(unsafe_code)]
fn abbreviation(t: i64) -> Option<String> {
    let tm = local(t)?;
    if tm.tm_zone.is_null() {
        return None;
    }
    // SAFETY: a non-null `tm_zone` from `localtime_r` points at a
    // NUL-terminated name the C library keeps for the life of the process.
    let name = unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) };
    Some(name.to_string_lossy().into_owned())
}

/// The zone's name: `TZ`, `/etc/timezone`, the `/etc/localtime` link's
/// target below `zoneinfo/`, else its abbreviation.
fn name(t: i64) -> String {
    if let Some(tz) = std::env::var("TZ").ok().filter(|s| !s.is_empty()) {
        return tz.trim_start_matches(':').to_string();
    }
    if let Ok(s) = std::fs::read_to_string("/etc/timezone") {
        let s = s.trim();
        if !s.is_empty() {
            return s.to_string();
        }
    }
    if let Ok(target) = std::fs::read_link("/etc/localtime") {
        let t = target.display().to_string();
        if let Some((_, zone)) = t.split_once("zoneinfo/") {
            return zone.to_string();
        }
    }
    abbreviation(t).unwrap_or_else(|| "UTC".into())
}

/// The zone as `status` says it: `Europe/Paris (+02:00)`.
pub fn describe(t: i64) -> String {
    format!("{} ({})", name(t), offset_text(offset_at(t)))
}

/// An offset in seconds as `+02:00`.
pub fn offset_text(offset: i64) -> String {
    let sign = if offset < 0 { '-' } else { '+' };
    let a = offset.abs();
    format!("{sign}{:02}:{:02}", a / 3600, (a % 3600) / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_written_as_rfc_3339_wants() {
        assert_eq!(offset_text(0), "+00:00");
        assert_eq!(offset_text(7200), "+02:00");
        assert_eq!(offset_text(-(3 * 3600 + 1800)), "-03:30");
        // The host's offset is whole minutes, within a day.
        let o = offset_at(1_779_000_000);
        assert!(o.abs() < 86_400 && o % 60 == 0, "{o}");
        assert!(describe(1_779_000_000).ends_with(')'));
    }
}
