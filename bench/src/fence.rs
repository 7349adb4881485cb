//! The fenced check that no two holders of a resource overlap.
//!
//! Each resource has one slot in this process. A worker that got the lock
//! takes the slot before doing anything else and frees it before it asks for
//! the release, so a second worker finding the slot taken means two holders
//! at once. For systems that issue fencing tokens, each holder's token must
//! also be above every earlier holder's.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// One resource's slot.
#[derive(Debug, Default)]
pub struct Slot {
    /// The worker inside (its id + 1), or 0.
    holder: AtomicUsize,
    /// The highest fencing token a holder has shown.
    last_token: AtomicU64,
}

/// The slots of one system in one cell, and the violations they saw.
#[derive(Debug)]
pub struct Fence {
    /// Who is measured (for messages).
    label: String,
    /// One slot per resource.
    slots: Vec<Slot>,
    /// Every violation, as printed.
    violations: Mutex<Vec<String>>,
}

impl Fence {
    /// `resources` slots, for messages about `label`.
    pub fn new(label: String, resources: usize) -> Self {
        Self {
            label,
            slots: (0..resources).map(|_| Slot::default()).collect(),
            violations: Mutex::new(Vec::new()),
        }
    }

    /// Worker `worker` got resource `resource` (named `name`) with `token`:
    /// take its slot. False (and a violation recorded and printed) when
    /// another worker is inside; the token is checked either way.
    pub fn enter(&self, resource: usize, name: &str, worker: usize, token: Option<u64>) -> bool {
        let slot = &self.slots[resource];
        let entered =
            match slot
                .holder
                .compare_exchange(0, worker + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => true,
                Err(other) => {
                    self.violation(format!(
                        "{name}: worker {worker} got the lock while worker {} still held it",
                        other - 1
                    ));
                    false
                }
            };
        if let Some(token) = token {
            let previous = slot.last_token.fetch_max(token, Ordering::AcqRel);
            if previous >= token {
                self.violation(format!(
                    "{name}: worker {worker} got fencing token {token}, not above the earlier {previous}"
                ));
            }
        }
        entered
    }

    /// Worker `worker` leaves resource `resource` (after a successful `enter`).
    pub fn exit(&self, resource: usize, worker: usize) {
        let _ = self.slots[resource].holder.compare_exchange(
            worker + 1,
            0,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    fn violation(&self, what: String) {
        let line = format!("VIOLATION [{}] {what}", self.label);
        eprintln!("{line}");
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    /// Every violation seen.
    pub fn violations(&self) -> Vec<String> {
        self.violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_inside_is_a_violation() {
        let fence = Fence::new("t".into(), 1);
        assert!(fence.enter(0, "r", 1, None));
        assert!(!fence.enter(0, "r", 2, None));
        fence.exit(0, 1);
        assert!(fence.enter(0, "r", 2, None));
        assert_eq!(fence.violations().len(), 1);
    }

    #[test]
    fn tokens_must_increase_across_holders() {
        let fence = Fence::new("t".into(), 1);
        assert!(fence.enter(0, "r", 0, Some(5)));
        fence.exit(0, 0);
        assert!(fence.enter(0, "r", 1, Some(5)));
        fence.exit(0, 1);
        assert!(fence.enter(0, "r", 0, Some(6)));
        let violations = fence.violations();
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert!(
            violations[0].contains("not above the earlier 5"),
            "{violations:?}"
        );
    }
}
