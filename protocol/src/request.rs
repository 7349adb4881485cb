//! The rules every input field must follow, checked before any region is touched.
//!
//! Each violation names the field, what was wrong, and the bounds, so a caller can
//! fix the request without reading our code. Nothing is ever clamped silently.

use std::time::Duration;

/// Longest resource name, in characters (Unicode scalar values, as JSON Schema's
/// `maxLength` counts them, so the OpenAPI document can state the rule exactly).
pub const MAX_RESOURCE_CHARS: usize = 256;
/// Longest owner, in characters.
pub const MAX_OWNER_CHARS: usize = 128;
/// Longest request id, in bytes (printable ASCII).
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// Locks per page of a listing when the caller names no page size.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Most locks per page of a listing (and grants per page a region lists).
pub const MAX_PAGE_SIZE: usize = 1_000;

/// A field that broke its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidInput {
    /// The API field name, as spelled in the proto and JSON.
    pub field: &'static str,
    /// What is wrong, including the bounds.
    pub problem: String,
}

impl InvalidInput {
    /// A violation of `field`.
    pub fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

/// Server-wide bounds on durations, from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Shortest TTL a lock may ask for.
    pub min_ttl: Duration,
    /// Longest TTL a lock may ask for. Also bounds how long a lock can outlive a
    /// crashed holder, and how long a region that lost its data must stay silent.
    pub max_ttl: Duration,
    /// Longest `wait_ms` an acquire may ask for.
    pub max_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_millis(1_000),
            max_ttl: Duration::from_millis(300_000),
            max_wait: Duration::from_millis(60_000),
        }
    }
}

impl Limits {
    /// Check a TTL in milliseconds against the bounds.
    pub fn ttl(&self, ttl_ms: u64) -> Result<Duration, InvalidInput> {
        let (min, max) = (millis(self.min_ttl), millis(self.max_ttl));
        if ttl_ms < min || ttl_ms > max {
            return Err(InvalidInput::new(
                "ttl_ms",
                format!("{ttl_ms} is out of bounds: must be between {min} and {max} milliseconds"),
            ));
        }
        Ok(Duration::from_millis(ttl_ms))
    }

    /// Check a wait in milliseconds against the bounds (0 means "try once").
    pub fn wait(&self, wait_ms: u64) -> Result<Duration, InvalidInput> {
        let max = millis(self.max_wait);
        if wait_ms > max {
            return Err(InvalidInput::new(
                "wait_ms",
                format!("{wait_ms} is out of bounds: must be between 0 and {max} milliseconds"),
            ));
        }
        Ok(Duration::from_millis(wait_ms))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Check a resource name: 1..=256 characters, no control characters, no `.`/`..`
/// path segment.
pub fn resource(name: &str) -> Result<(), InvalidInput> {
    const FIELD: &str = "resource";
    text(FIELD, name, MAX_RESOURCE_CHARS)?;
    if name
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(InvalidInput::new(
            FIELD,
            "must not contain a \".\" or \"..\" path segment",
        ));
    }
    Ok(())
}

/// Check an owner: 1..=128 characters, no control characters.
pub fn owner(owner: &str) -> Result<(), InvalidInput> {
    text("owner", owner, MAX_OWNER_CHARS)
}

/// Check a request id: empty (none given) or 1..=128 printable ASCII bytes.
pub fn request_id(id: &str) -> Result<(), InvalidInput> {
    if id.len() > MAX_REQUEST_ID_BYTES {
        return Err(InvalidInput::new(
            "request_id",
            format!(
                "is {} bytes long; at most {MAX_REQUEST_ID_BYTES} allowed",
                id.len()
            ),
        ));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InvalidInput::new(
            "request_id",
            "must be printable ASCII without spaces",
        ));
    }
    Ok(())
}

/// Check a listing prefix: empty (every resource), or up to 256 characters
/// without control characters (any start of a resource name, `.` included).
pub fn prefix(prefix: &str) -> Result<(), InvalidInput> {
    bound("prefix", prefix)
}

/// Check where a region's listing starts: empty (from the first resource), or
/// up to 256 characters without control characters.
pub fn start_after(start_after: &str) -> Result<(), InvalidInput> {
    bound("start_after", start_after)
}

/// Check a listing's page size: 0 means [`DEFAULT_PAGE_SIZE`], and at most
/// [`MAX_PAGE_SIZE`] (never clamped).
pub fn page_size(page_size: u64) -> Result<usize, InvalidInput> {
    match usize::try_from(page_size) {
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) if size <= MAX_PAGE_SIZE => Ok(size),
        _ => Err(InvalidInput::new(
            "page_size",
            format!(
                "{page_size} is out of bounds: must be between 1 and {MAX_PAGE_SIZE} \
                 (0: {DEFAULT_PAGE_SIZE})"
            ),
        )),
    }
}

/// A bound of a listing: empty, or text a resource name could start with.
fn bound(field: &'static str, value: &str) -> Result<(), InvalidInput> {
    if value.is_empty() {
        return Ok(());
    }
    text(field, value, MAX_RESOURCE_CHARS)
}

fn text(field: &'static str, value: &str, max_chars: usize) -> Result<(), InvalidInput> {
    if value.is_empty() {
        return Err(InvalidInput::new(
            field,
            format!("must not be empty (1 to {max_chars} characters)"),
        ));
    }
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(InvalidInput::new(
            field,
            format!("is {chars} characters long; at most {max_chars} allowed"),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(InvalidInput::new(
            field,
            format!(
                "must not contain control characters (found U+{:04X})",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "orders/42",
            "a",
            "with space",
            "naïve/ünïcødé",
            "x".repeat(256).as_str(),
        ] {
            assert_eq!(resource(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn rejects_bad_names_naming_the_field() {
        for name in [
            "",
            &"x".repeat(257),
            "nul\0byte",
            "tab\there",
            "a/../b",
            "..",
            "./a",
        ] {
            let err = resource(name).expect_err(name);
            assert_eq!(err.field, "resource");
        }
    }

    #[test]
    fn ttl_bounds_are_named_and_never_clamped() {
        let limits = Limits::default();
        assert_eq!(limits.ttl(1_000), Ok(Duration::from_secs(1)));
        assert_eq!(limits.ttl(300_000), Ok(Duration::from_secs(300)));
        for bad in [0, 999, 300_001, u64::MAX] {
            let err = limits.ttl(bad).expect_err("out of bounds");
            assert_eq!(err.field, "ttl_ms");
            assert!(
                err.problem.contains("1000") && err.problem.contains("300000"),
                "{err}"
            );
        }
    }

    #[test]
    fn wait_zero_means_try_once_and_has_a_ceiling() {
        let limits = Limits::default();
        assert_eq!(limits.wait(0), Ok(Duration::ZERO));
        assert!(limits.wait(60_001).is_err());
    }

    #[test]
    fn request_ids_are_printable_ascii() {
        assert_eq!(request_id(""), Ok(()));
        assert_eq!(request_id("abc-123_X"), Ok(()));
        assert!(request_id("has space").is_err());
        assert!(request_id("ünï").is_err());
        assert!(request_id(&"r".repeat(129)).is_err());
    }

    #[test]
    fn wait_of_exactly_the_maximum_is_allowed() {
        let limits = Limits::default();
        assert_eq!(limits.wait(60_000), Ok(Duration::from_secs(60)));
        let err = limits.wait(60_001).expect_err("above the maximum");
        assert_eq!(err.field, "wait_ms");
        assert!(err.problem.contains("60000"), "{err}");
    }

    #[test]
    fn owners_are_1_to_128_characters_without_control_characters() {
        for good in ["alice", "a", "naïve owner", "ü".repeat(128).as_str()] {
            assert_eq!(owner(good), Ok(()), "{good}");
        }
        for bad in ["", &"o".repeat(129), "new\nline", "nul\0"] {
            let err = owner(bad).expect_err(bad);
            assert_eq!(err.field, "owner", "{bad:?}");
        }
    }

    #[test]
    fn a_prefix_is_empty_or_the_start_of_a_name() {
        for good in ["", "orders/", "a", ".", "orders/.", &"x".repeat(256)] {
            assert_eq!(prefix(good), Ok(()), "{good:?}");
            assert_eq!(start_after(good), Ok(()), "{good:?}");
        }
        for bad in [&"x".repeat(257), "tab\there", "nul\0"] {
            assert_eq!(prefix(bad).expect_err(bad).field, "prefix", "{bad:?}");
            assert_eq!(
                start_after(bad).expect_err(bad).field,
                "start_after",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_page_size_of_0_is_the_default_and_above_the_maximum_is_refused() {
        assert_eq!(page_size(0), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(page_size(1), Ok(1));
        assert_eq!(page_size(1_000), Ok(MAX_PAGE_SIZE));
        for bad in [1_001, u64::MAX] {
            let err = page_size(bad).expect_err("above the maximum");
            assert_eq!(err.field, "page_size");
            assert!(err.problem.contains("1000"), "{err}");
        }
    }

    #[test]
    fn a_request_id_of_exactly_128_bytes_is_allowed_and_129_is_not() {
        assert_eq!(request_id(&"r".repeat(128)), Ok(()));
        let err = request_id(&"r".repeat(129)).expect_err("too long");
        assert_eq!(err.field, "request_id");
        assert!(
            err.problem.contains("129") && err.problem.contains("128"),
            "{err}"
        );
    }
}
