//! The one duration syntax of every lockctl option (`--ttl`, `--wait`, `--grace`):
//! humantime-style, a number and a unit, repeated: `30s`, `1500ms`, `1.5s`,
//! `1m30s`, `2h`, `1m 30s`. Units are case-insensitive. A bare number is refused
//! (is `10` seconds or milliseconds?), except `0`.

use std::time::Duration;

/// What `--help` says about durations.
pub const SYNTAX: &str = "a number and a unit (ns, us, ms, s, m, h, d; case-insensitive), \
    repeatable: 30s, 1500ms, 1.5s, 1m30s, 2h, or `forever`. A bare number other than 0 is refused";

/// Nanoseconds in one `unit`, or `None` for an unknown unit.
fn unit_nanos(unit: &str) -> Option<u128> {
    const NS_PER_SEC: u128 = 1_000_000_000;
    Some(match unit.to_ascii_lowercase().as_str() {
        "ns" | "nsec" | "nanos" => 1,
        "us" | "µs" | "usec" | "micros" => 1_000,
        "ms" | "msec" | "millis" => 1_000_000,
        "s" | "sec" | "secs" | "second" | "seconds" => NS_PER_SEC,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * NS_PER_SEC,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600 * NS_PER_SEC,
        "d" | "day" | "days" => 86_400 * NS_PER_SEC,
        _ => return None,
    })
}

/// Parse a duration (see the module doc).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("forever") {
        return Ok(Duration::MAX);
    }
    if trimmed.is_empty() {
        return Err("empty duration: give a number and a unit, e.g. 30s".to_owned());
    }
    if trimmed.starts_with('-') {
        return Err(format!("{trimmed:?}: a duration cannot be negative"));
    }
    if trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        if trimmed.bytes().all(|b| b == b'0' || b == b'.') && trimmed.contains('0') {
            return Ok(Duration::ZERO);
        }
        return Err(format!(
            "{trimmed:?} has no unit: add a unit, e.g. {trimmed}s or {trimmed}ms"
        ));
    }
    let mut rest = trimmed;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if number.is_empty() {
            return Err(format!(
                "{trimmed:?} is not a duration: expected a number at {rest:?} ({SYNTAX})"
            ));
        }
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            return Err(format!(
                "{trimmed:?}: {number:?} has no unit: add a unit, e.g. {number}s"
            ));
        }
        let scale = unit_nanos(unit).ok_or_else(|| {
            format!("{trimmed:?}: unknown unit {unit:?} (use ns, us, ms, s, m, h or d)")
        })?;
        total = total
            .checked_add(scaled(number, scale).ok_or_else(|| bad_number(trimmed, number))?)
            .ok_or_else(|| format!("{trimmed:?} is too large"))?;
        rest = after.trim_start();
    }
    let secs =
        u64::try_from(total / 1_000_000_000).map_err(|_| format!("{trimmed:?} is too large"))?;
    let nanos = u32::try_from(total % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}

fn bad_number(text: &str, number: &str) -> String {
    format!("{text:?}: {number:?} is not a number")
}

/// `number` (digits with at most one `.`) times `scale` nanoseconds, exactly
/// (fractions below a nanosecond are dropped).
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut value = whole.checked_mul(scale)?;
    // At most 18 fractional digits matter (scale is at most 8.64e13 ns).
    let fraction = &fraction[..fraction.len().min(18)];
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().ok()?;
        let denominator = 10u128.checked_pow(u32::try_from(fraction.len()).ok()?)?;
        value = value.checked_add(digits.checked_mul(scale)? / denominator)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_syntax_the_readme_promises() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("1500ms"), Ok(ms(1_500)));
        assert_eq!(parse_duration("30s"), Ok(ms(30_000)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("10S"), Ok(ms(10_000)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1m 30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("2m"), Ok(ms(120_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("0.25h"), Ok(ms(900_000)));
        assert_eq!(parse_duration(".5s"), Ok(ms(500)));
        assert_eq!(parse_duration("2 seconds"), Ok(ms(2_000)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn forever_is_a_wait_without_end() {
        assert_eq!(parse_duration("forever"), Ok(Duration::MAX));
        assert_eq!(parse_duration(" Forever "), Ok(Duration::MAX));
    }

    #[test]
    fn a_bare_number_is_refused_with_a_hint() {
        let error = parse_duration("10").unwrap_err();
        assert!(error.contains("add a unit, e.g. 10s"), "{error}");
        let error = parse_duration("1m30").unwrap_err();
        assert!(error.contains("add a unit"), "{error}");
    }

    #[test]
    fn nonsense_is_refused() {
        for bad in [
            "",
            "-1s",
            "3 fortnights",
            "s",
            "1..5s",
            "1.2.3s",
            "ms5",
            "9999999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
