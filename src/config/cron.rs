//! Cron expressions as a stack file writes them in `schedule`: five fields
//! (minute, hour, day of month, month, day of week) or a macro
//! (`@hourly`, `@daily`, …), parsed into sets of values.
//!
//! Owns: the syntax (`*`, `N`, `N-M`, `*/S`, `N-M/S`, `N/S`, lists, month
//! and day names), the ranges, and the Vixie rule for the two day fields
//! (both restricted: either may match). Pure. Must not touch: time, the
//! clock or time zones (when a schedule next fires is
//! `supervisor::schedule`'s).

use std::fmt;

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    /// Bit `m` set: minute `m` (0–59).
    minutes: u64,
    /// Bit `h`: hour `h` (0–23).
    hours: u32,
    /// Bit `d`: day of month `d` (1–31).
    days: u32,
    /// Bit `m`: month `m` (1–12).
    months: u16,
    /// Bit `w`: weekday `w` (0 = Sunday … 6).
    weekdays: u8,
    /// The day-of-month field was written starting with `*`.
    days_star: bool,
    /// The day-of-week field was written starting with `*`.
    weekdays_star: bool,
}

/// Why an expression is not a schedule: which field (0-based; `None`: the
/// whole expression) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronError {
    pub field: Option<usize>,
    /// The field as written (for pointing at it).
    pub text: String,
    pub message: String,
}

/// The fields' names, for messages.
pub const FIELDS: [&str; 5] = ["minute", "hour", "day of month", "month", "day of week"];

const RANGES: [(u32, u32); 5] = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];

const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// What a schedule looks like, for hints.
pub const CRON_HINT: &str = "five fields: minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\" (03:00 every day) or \"*/15 8-18 * * mon-fri\"; or @hourly, @daily, @weekly, @monthly, @yearly";

impl Cron {
    /// Parses `expr`.
    ///
    /// # Errors
    /// The first field that is wrong, and why.
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        let t = expr.trim();
        let expanded = match t.to_ascii_lowercase().as_str() {
            "@hourly" => "0 * * * *".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            m if m.starts_with('@') => {
                return Err(CronError {
                    field: None,
                    text: t.to_string(),
                    message: format!("unknown macro `{t}`"),
                })
            }
            _ => t.to_string(),
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError {
                field: None,
                text: t.to_string(),
                message: format!("{} fields, expected 5", fields.len()),
            });
        }
        let mut sets = [0u64; 5];
        for (i, f) in fields.iter().enumerate() {
            sets[i] = field(i, f).map_err(|message| CronError {
                field: Some(i),
                text: (*f).to_string(),
                message: format!("{} `{f}`: {message}", FIELDS[i]),
            })?;
        }
        // Day 7 is Sunday too.
        let mut weekdays = sets[4];
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        let cron = Cron {
            minutes: sets[0],
            hours: sets[1] as u32,
            days: sets[2] as u32,
            months: sets[3] as u16,
            weekdays: (weekdays & 0x7f) as u8,
            days_star: fields[2].starts_with('*'),
            weekdays_star: fields[4].starts_with('*'),
        };
        if !cron.can_fire() {
            return Err(CronError {
                field: Some(2),
                text: fields[2].to_string(),
                message: format!(
                    "day of month `{}` never comes in month `{}`: this schedule would never run",
                    fields[2], fields[3]
                ),
            });
        }
        Ok(cron)
    }

    /// Whether minute `m` of an hour matches.
    pub fn minute(&self, m: u32) -> bool {
        m < 60 && self.minutes & (1 << m) != 0
    }

    /// Whether hour `h` of a day matches.
    pub fn hour(&self, h: u32) -> bool {
        h < 24 && self.hours & (1 << h) != 0
    }

    /// Whether a day matches: month 1–12, day of month 1–31, weekday
    /// 0 (Sunday) – 6. When both day fields are restricted, either one
    /// matching is enough (as every cron does); otherwise both must.
    pub fn day(&self, month: u32, day: u32, weekday: u32) -> bool {
        if month == 0 || month > 12 || self.months & (1 << month) == 0 {
            return false;
        }
        let by_day = day <= 31 && self.days & (1 << day) != 0;
        let by_weekday = weekday < 7 && self.weekdays & (1 << weekday) != 0;
        // A field written with `*` (even `*/2`) is "unrestricted": both must
        // match then, as in Vixie cron; a plain `*` matches every day anyway.
        if self.days_star || self.weekdays_star {
            by_day && by_weekday
        } else {
            by_day || by_weekday
        }
    }

    /// Whether some day of some year matches (`0 0 30 2 *` never does).
    fn can_fire(&self) -> bool {
        if !self.weekdays_star && self.weekdays != 0 {
            // A weekday comes in every month.
            return self.months != 0;
        }
        const LONGEST: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        (1..=12u32).any(|m| {
            self.months & (1 << m) != 0
                && (1..=LONGEST[m as usize - 1]).any(|d| self.days & (1 << d) != 0)
        })
    }
}

/// One field as a bit set of its values.
fn field(i: usize, text: &str) -> Result<u64, String> {
    let (lo, hi) = RANGES[i];
    let mut set = 0u64;
    for part in text.split(',') {
        if part.is_empty() {
            return Err("an empty list entry".into());
        }
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("step `{s}` is not a number"))?;
                if step == 0 {
                    return Err("a step cannot be 0".into());
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (from, to) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(i, a)?, value(i, b)?)
        } else {
            let v = value(i, range)?;
            // `N/S` runs from N to the end of the range.
            (v, if part.contains('/') { hi } else { v })
        };
        if from > to {
            return Err(format!("range `{range}` goes backwards"));
        }
        let mut v = from;
        while v <= to {
            set |= 1 << v;
            v += step;
        }
    }
    Ok(set)
}

/// One value of field `i`: a number in range, or a month or day name.
fn value(i: usize, text: &str) -> Result<u32, String> {
    let (lo, hi) = RANGES[i];
    let lower = text.to_ascii_lowercase();
    let named = match i {
        3 => MONTHS
            .iter()
            .position(|m| *m == lower)
            .map(|p| p as u32 + 1),
        4 => WEEKDAYS.iter().position(|d| *d == lower).map(|p| p as u32),
        _ => None,
    };
    if let Some(v) = named {
        return Ok(v);
    }
    let v: u32 = text.parse().map_err(|_| match i {
        3 => format!("`{text}` is not a month (1-12 or jan-dec)"),
        4 => format!("`{text}` is not a day of the week (0-7 or sun-sat)"),
        _ => format!("`{text}` is not a number"),
    })?;
    if v < lo || v > hi {
        return Err(format!("{v} is out of range {lo}-{hi}"));
    }
    Ok(v)
}

impl fmt::Display for CronError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_become_sets() {
        let c = Cron::parse("*/15 8-18/5 1,15 jan-mar mon-fri").unwrap();
        let minutes: Vec<u32> = (0..60).filter(|m| c.minute(*m)).collect();
        assert_eq!(minutes, [0, 15, 30, 45]);
        let hours: Vec<u32> = (0..24).filter(|h| c.hour(*h)).collect();
        assert_eq!(hours, [8, 13, 18]);
        assert!(c.day(1, 1, 3), "the 1st, a Wednesday in January");
        assert!(c.day(2, 7, 1), "a Monday: either day field may match");
        assert!(!c.day(2, 7, 0), "a Sunday the 7th");
        assert!(!c.day(4, 1, 3), "April is not in the set");
        let every = Cron::parse("* * * * *").unwrap();
        assert!((0..60).all(|m| every.minute(m)));
        assert!(every.day(2, 29, 4));
    }

    #[test]
    fn one_restricted_day_field_decides_alone() {
        let dom = Cron::parse("0 0 13 * *").unwrap();
        assert!(dom.day(5, 13, 3));
        assert!(!dom.day(5, 14, 5));
        let dow = Cron::parse("0 0 * * 5").unwrap();
        assert!(dow.day(5, 14, 5));
        assert!(!dow.day(5, 13, 4));
        let sunday7 = Cron::parse("0 0 * * 7").unwrap();
        assert!(sunday7.day(5, 17, 0));
        let starred = Cron::parse("0 0 */2 * 1").unwrap();
        // `*/2` counts as unrestricted (Vixie cron): both fields must match.
        assert!(starred.day(5, 3, 1));
        assert!(!starred.day(5, 4, 1));
        assert!(!starred.day(5, 5, 3));
    }

    #[test]
    fn macros_and_n_slash_step() {
        assert_eq!(
            Cron::parse("@daily").unwrap(),
            Cron::parse("0 0 * * *").unwrap()
        );
        assert_eq!(
            Cron::parse("@HOURLY").unwrap(),
            Cron::parse("0 * * * *").unwrap()
        );
        let c = Cron::parse("5/20 * * * *").unwrap();
        let minutes: Vec<u32> = (0..60).filter(|m| c.minute(*m)).collect();
        assert_eq!(minutes, [5, 25, 45]);
    }

    #[test]
    fn every_mistake_names_its_field() {
        let cases: &[(&str, Option<usize>, &str)] = &[
            ("0 3 * *", None, "4 fields, expected 5"),
            ("0 3 * * * *", None, "6 fields, expected 5"),
            (
                "60 3 * * *",
                Some(0),
                "minute `60`: 60 is out of range 0-59",
            ),
            ("0 25 * * *", Some(1), "hour `25`: 25 is out of range 0-23"),
            (
                "0 3 0 * *",
                Some(2),
                "day of month `0`: 0 is out of range 1-31",
            ),
            (
                "0 3 * foo *",
                Some(3),
                "month `foo`: `foo` is not a month (1-12 or jan-dec)",
            ),
            (
                "0 3 * * 8",
                Some(4),
                "day of week `8`: 8 is out of range 0-7",
            ),
            ("*/0 * * * *", Some(0), "minute `*/0`: a step cannot be 0"),
            (
                "0 5-3 * * *",
                Some(1),
                "hour `5-3`: range `5-3` goes backwards",
            ),
            ("0 1,,2 * * *", Some(1), "hour `1,,2`: an empty list entry"),
            ("x * * * *", Some(0), "minute `x`: `x` is not a number"),
            ("@reboot", None, "unknown macro `@reboot`"),
            (
                "0 0 30 2 *",
                Some(2),
                "day of month `30` never comes in month `2`: this schedule would never run",
            ),
        ];
        for (expr, field, message) in cases {
            let e = Cron::parse(expr).unwrap_err();
            assert_eq!((e.field, e.message.as_str()), (*field, *message), "{expr}");
        }
        assert!(Cron::parse("0 0 29 2 *").is_ok(), "a leap day comes");
        assert!(
            Cron::parse("0 0 30 2 1").is_ok(),
            "Mondays come in February"
        );
    }
}
