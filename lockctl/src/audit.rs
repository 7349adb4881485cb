//! `lockctl audit`: who held a resource, when, from audit trail files.

use std::path::PathBuf;
use std::process::ExitCode;

use globallock_protocol::audit::{Tenure, holder_at, tenures};

use crate::Output;
use crate::failure::{EXIT_NO_INPUT, Failure};

/// Print every tenure of `resource` (or only the one covering `at`). A log that
/// cannot be read fails with exit 66 (EX_NOINPUT), naming the file.
pub fn audit(resource: &str, logs: &[PathBuf], at: Option<u64>, output: Output) -> ExitCode {
    let json = output == Output::Json;
    let mut records = Vec::new();
    for log in logs {
        match globallock_telemetry::audit::read(std::slice::from_ref(log)) {
            Ok(read) => records.extend(read),
            Err(error) => {
                return Failure::new(
                    "audit-log-unreadable",
                    EXIT_NO_INPUT,
                    format!("cannot read audit log {}: {error}", log.display()),
                )
                .with("path", log.display().to_string())
                .hint(
                    "audit logs are the files named by `audit_log` in the coordinator's and \
                     agents' configs (with `make dev`: .dev-cluster/coordinator-audit.jsonl and \
                     .dev-cluster/<region>/audit.jsonl)",
                )
                .report(output);
            }
        }
    }
    let all = tenures(&records, resource);
    let shown: Vec<&Tenure> = match at {
        Some(at) => holder_at(&all, at).into_iter().collect(),
        None => all.iter().collect(),
    };
    if json {
        println!("{}", serde_json::to_string(&shown).unwrap_or_default());
    } else if shown.is_empty() {
        match at {
            Some(at) => println!("nobody held {resource:?} at {}", format_time(at)),
            None => println!("no holder of {resource:?} in the audit trail"),
        }
    } else {
        println!(
            "{:<26} {:<26} {:<9} {:<18} {:<24} LOCK ID",
            "FROM", "UNTIL", "ENDED BY", "TOKEN", "OWNER"
        );
        for t in shown {
            let until = t
                .until_unix_ms
                .map_or_else(|| "(still held)".to_owned(), format_time);
            let ended = t
                .ended_by
                .map_or_else(String::new, |e| format!("{e:?}").to_lowercase());
            println!(
                "{:<26} {:<26} {:<9} {:<18} {:<24} {}",
                format_time(t.from_unix_ms),
                until,
                ended,
                t.token,
                t.owner,
                t.lock_id
            );
        }
    }
    ExitCode::SUCCESS
}

/// Parse `--at`: milliseconds since the epoch, or RFC 3339 UTC like
/// `2026-11-26T08:15:00Z` (fractional seconds allowed).
pub fn parse_time(text: &str) -> Result<u64, String> {
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    let bad = || format!("{text:?} is not a time: use ms since the epoch or 2026-11-26T08:15:00Z");
    let text = text.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = text.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3 || t.len() != 3 {
        return Err(bad());
    }
    let millis: i64 = format!("{frac:0<3}")[..3].parse().map_err(|_| bad())?;
    let days = days_from_civil(d[0], d[1], d[2]);
    let ms = ((days * 86_400 + t[0] * 3_600 + t[1] * 60 + t[2]) * 1_000) + millis;
    u64::try_from(ms).map_err(|_| bad())
}

/// Milliseconds since the epoch as RFC 3339 UTC.
pub fn format_time(ms: u64) -> String {
    let secs = i64::try_from(ms / 1_000).unwrap_or(i64::MAX);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        ms % 1_000
    )
}

// Howard Hinnant's civil-date algorithms.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(parse_time("0"), Ok(0));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        let t = parse_time("2026-11-26T08:15:30.250Z").expect("valid");
        assert_eq!(format_time(t), "2026-11-26T08:15:30.250Z");
        assert_eq!(format_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert!(parse_time("yesterday").is_err());
    }
}
