//! Waiting in line: a coordinator's acquires that wait for one resource take
//! turns in arrival order (FIFO), and a release through this coordinator wakes
//! the first in line at once instead of letting it sleep out its backoff.
//!
//! Only the first in line proposes; the others wait for their turn without
//! sending anything, so waiters no longer compete with each other round after
//! round (and lose to whoever happens to poll at the right moment). A waiter
//! whose wait ends while it is still in line makes one last attempt and reports
//! the resource held. This orders the waiters of one coordinator; waiters at
//! different coordinators still meet at the regions, where one proposal wins
//! and the others back off and try again (fair between coordinators only on
//! average). It changes when attempts are made, never what a grant needs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Line {
    /// Places in arrival order (the first is the one that proposes).
    order: VecDeque<u64>,
    /// Rung when the line moves or the resource was released here.
    changed: Arc<Notify>,
}

/// The lines of waiting acquires, per resource.
#[derive(Debug, Default)]
pub struct WaitLines {
    lines: Mutex<HashMap<String, Line>>,
    next: std::sync::atomic::AtomicU64,
}

/// A place in a resource's line; leaving (dropping it) lets the next one go.
#[derive(Debug)]
pub struct Place<'a> {
    lines: &'a WaitLines,
    resource: String,
    id: u64,
}

impl WaitLines {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Line>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Join the end of `resource`'s line.
    pub fn join(&self, resource: &str) -> Place<'_> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock()
            .entry(resource.to_owned())
            .or_default()
            .order
            .push_back(id);
        metrics::gauge!("globallock_acquires_in_line").increment(1.0);
        Place {
            lines: self,
            resource: resource.to_owned(),
            id,
        }
    }

    /// `resource` was released through this coordinator: the first in its line
    /// (if any) stops sleeping and tries now.
    pub fn released(&self, resource: &str) {
        if let Some(line) = self.lock().get(resource) {
            line.changed.notify_waiters();
        }
    }

    /// How many acquires wait in `resource`'s line.
    pub fn waiting(&self, resource: &str) -> usize {
        self.lock().get(resource).map_or(0, |l| l.order.len())
    }
}

impl Place<'_> {
    /// True when this place is first in line.
    pub fn is_first(&self) -> bool {
        self.lines
            .lock()
            .get(&self.resource)
            .is_some_and(|l| l.order.front() == Some(&self.id))
    }

    /// Wait until this place is first in line, or `timeout` passed; true when
    /// it is first.
    pub async fn first_in_line(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let changed = self.release_signal();
        loop {
            let notified = changed.notified();
            tokio::pin!(notified);
            // Registered before looking, so a change in between is not missed.
            notified.as_mut().enable();
            if self.is_first() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_first();
            }
        }
    }

    /// What a release of this resource here (or the line moving) rings; see
    /// [`sleep_or_released`].
    pub fn release_signal(&self) -> Arc<Notify> {
        self.lines
            .lock()
            .get(&self.resource)
            .map(|l| l.changed.clone())
            .unwrap_or_default()
    }
}

/// Sleep for `delay`, or less if `released` rings meanwhile (a waiting
/// acquire's backoff, cut short by a release through this coordinator).
pub async fn sleep_or_released(released: Option<Arc<Notify>>, delay: std::time::Duration) {
    match released {
        Some(released) => {
            let _ = tokio::time::timeout(delay, released.notified()).await;
        }
        None => tokio::time::sleep(delay).await,
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        metrics::gauge!("globallock_acquires_in_line").decrement(1.0);
        let mut lines = self.lines.lock();
        if let Some(line) = lines.get_mut(&self.resource) {
            line.order.retain(|id| *id != self.id);
            line.changed.notify_waiters();
            if line.order.is_empty() {
                lines.remove(&self.resource);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_take_turns_in_arrival_order() {
        let lines = WaitLines::default();
        let a = lines.join("r");
        let b = lines.join("r");
        let c = lines.join("r");
        let other = lines.join("s");
        assert!(a.is_first() && !b.is_first() && !c.is_first());
        assert!(other.is_first(), "lines are per resource");
        assert_eq!(lines.waiting("r"), 3);
        // b cannot go while a is in line.
        assert!(!b.first_in_line(Duration::from_millis(10)).await);
        drop(a);
        assert!(b.first_in_line(Duration::from_millis(10)).await);
        assert!(!c.is_first());
        // Leaving from the middle keeps the order of the rest.
        let d = lines.join("r");
        drop(c);
        drop(b);
        assert!(d.is_first());
        drop(d);
        assert_eq!(lines.waiting("r"), 0);
    }

    #[tokio::test]
    async fn the_next_in_line_is_woken_when_the_first_leaves() {
        let lines = Arc::new(WaitLines::default());
        let first = lines.join("r");
        let lines2 = lines.clone();
        let second = tokio::spawn(async move {
            let place = lines2.join("r");
            place.first_in_line(Duration::from_secs(30)).await
        });
        // Wait until the second is in line, then leave.
        while lines.waiting("r") < 2 {
            tokio::task::yield_now().await;
        }
        drop(first);
        assert!(second.await.expect("task"), "woken as first in line");
    }

    #[tokio::test]
    async fn a_release_here_cuts_the_first_waiters_sleep() {
        let lines = Arc::new(WaitLines::default());
        let lines2 = lines.clone();
        let sleeper = tokio::spawn(async move {
            let place = lines2.join("r");
            let started = tokio::time::Instant::now();
            sleep_or_released(Some(place.release_signal()), Duration::from_secs(3600)).await;
            started.elapsed() < Duration::from_secs(3600)
        });
        while lines.waiting("r") < 1 {
            tokio::task::yield_now().await;
        }
        // Released repeatedly until the sleeper is woken (it may not have
        // registered yet the first time).
        while !sleeper.is_finished() {
            lines.released("r");
            tokio::task::yield_now().await;
        }
        assert!(sleeper.await.expect("task"));
    }
}
