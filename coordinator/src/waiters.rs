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
//!
//! # Hand-off
//! A release through this coordinator of a resource whose first waiter is
//! about to propose (asleep in its backoff, or just come first while a lock
//! granted here holds the resource) offers that waiter a [`Ride`]: the waiter
//! hands over the proposals it would send, and the release carries each one
//! to its region in the same call (the agent's `HandOff`: release, then grant).
//! The next holder's grant thus takes no round trip of its own after the
//! release. What the waiter hands over is exactly what it would have sent, and
//! each region answers it exactly as a Grant call (the waiter's state machine
//! counts the answers as usual); a proposal the release did not carry is sent
//! by the waiter itself.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use globallock_proto::agent::{GrantRequest, GrantResponse};
use tokio::sync::{Notify, oneshot};
use tonic::Status;

/// A release's offer to carry the first waiter's next proposals.
#[derive(Debug)]
pub struct Ride {
    /// Where the waiter puts the proposal it would send to each region (by
    /// region index; `None`: nothing for that region).
    pub proposals: oneshot::Sender<Vec<Option<GrantRequest>>>,
    /// Each region's answer to the proposal carried to it, by region index. A
    /// sender dropped unanswered means the release did not carry it: the waiter
    /// sends that proposal itself.
    pub answers: Vec<oneshot::Receiver<Result<GrantResponse, Status>>>,
}

#[derive(Debug, Default)]
struct Line {
    /// Places in arrival order (the first is the one that proposes), each with
    /// what wakes it when it becomes first: only that one is woken when the
    /// line moves, not every waiter (64 waiters woke 63 times per hand-off).
    order: VecDeque<(u64, Arc<Notify>)>,
    /// Rung when the resource was released here (cuts the first waiter's backoff).
    changed: Arc<Notify>,
    /// The first waiter, while it accepts a ride: its place, and where to send
    /// the offer.
    rider: Option<(u64, oneshot::Sender<Ride>)>,
    /// A lock granted through this coordinator (and not released through it
    /// since) that holds the resource, and until when.
    held: Option<(String, tokio::time::Instant)>,
}

/// The lines of waiting acquires, per resource.
#[derive(Debug, Default)]
pub struct WaitLines {
    lines: Mutex<HashMap<String, Line>>,
    next: std::sync::atomic::AtomicU64,
    /// How many times a waiter looked whether it is first (for tests).
    looks: std::sync::atomic::AtomicU64,
}

/// A place in a resource's line; leaving (dropping it) lets the next one go.
#[derive(Debug)]
pub struct Place<'a> {
    lines: &'a WaitLines,
    resource: String,
    id: u64,
    /// Rung when this place becomes first in line.
    first: Arc<Notify>,
}

impl WaitLines {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Line>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Join the end of `resource`'s line.
    pub fn join(&self, resource: &str) -> Place<'_> {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let first = Arc::new(Notify::new());
        self.lock()
            .entry(resource.to_owned())
            .or_default()
            .order
            .push_back((id, first.clone()));
        metrics::gauge!("globallock_acquires_in_line").increment(1.0);
        Place {
            lines: self,
            resource: resource.to_owned(),
            id,
            first,
        }
    }

    /// Lock `lock_id` on `resource` was released through this coordinator: the
    /// first in its line (if any) stops sleeping and tries now, unless the
    /// release carried its proposals already (`rode`; its sleep is over then,
    /// and waking it again would only cut short the wait it starts next).
    pub fn released(&self, resource: &str, lock_id: &str, rode: bool) {
        if let Some(line) = self.lock().get_mut(resource) {
            // The next holder may have been granted already (its grant rode on
            // this release): only this lock stops holding.
            if line.held.as_ref().is_some_and(|(held, _)| held == lock_id) {
                line.held = None;
            }
            if !rode {
                line.changed.notify_waiters();
            }
        }
    }

    /// Lock `lock_id` on `resource` was granted through this coordinator and
    /// lives for `validity` (noted only while acquires wait in its line).
    pub fn granted(&self, resource: &str, lock_id: &str, validity: Duration) {
        if let Some(line) = self.lock().get_mut(resource) {
            line.held = Some((lock_id.to_owned(), tokio::time::Instant::now() + validity));
        }
    }

    /// The first waiter of `resource`'s line, if it accepts a ride now.
    pub fn take_rider(&self, resource: &str) -> Option<oneshot::Sender<Ride>> {
        let mut lines = self.lock();
        let line = lines.get_mut(resource)?;
        let (id, rider) = line.rider.take()?;
        (front(&line.order) == Some(id) && !rider.is_closed()).then_some(rider)
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
            .looks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lines
            .lock()
            .get(&self.resource)
            .is_some_and(|l| front(&l.order) == Some(self.id))
    }

    /// Wait until this place is first in line, or `timeout` passed; true when
    /// it is first.
    pub async fn first_in_line(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.is_first() {
                return true;
            }
            // Becoming first rings `first` (a ring before this wait is kept
            // as a permit, so none is missed between the look and the wait).
            if tokio::time::timeout_at(deadline, self.first.notified())
                .await
                .is_err()
            {
                return self.is_first();
            }
        }
    }

    /// Accept a ride from the next release of the resource through this
    /// coordinator (replacing any earlier offer of this place).
    pub fn ready_for_ride(&self) -> oneshot::Receiver<Ride> {
        let (offer, ride) = oneshot::channel();
        if let Some(line) = self.lines.lock().get_mut(&self.resource) {
            line.rider = Some((self.id, offer));
        }
        ride
    }

    /// How long a lock granted through this coordinator still holds the
    /// resource, if one does (as far as this coordinator knows).
    pub fn held_here(&self) -> Option<Duration> {
        let lines = self.lines.lock();
        let (_, until) = lines.get(&self.resource)?.held.as_ref()?;
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        (!left.is_zero()).then_some(left)
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

/// The id of the first place in `order`.
fn front(order: &VecDeque<(u64, Arc<Notify>)>) -> Option<u64> {
    order.front().map(|(id, _)| *id)
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

/// [`sleep_or_released`], or less if a release offers `ride` one: the ride,
/// if one came.
pub async fn sleep_released_or_ride(
    released: Option<Arc<Notify>>,
    ride: Option<oneshot::Receiver<Ride>>,
    delay: Duration,
) -> Option<Ride> {
    let Some(ride) = ride else {
        sleep_or_released(released, delay).await;
        return None;
    };
    tokio::select! {
        () = sleep_or_released(released, delay) => None,
        offered = ride => offered.ok(),
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        metrics::gauge!("globallock_acquires_in_line").decrement(1.0);
        let mut lines = self.lines.lock();
        if let Some(line) = lines.get_mut(&self.resource) {
            let was_first = front(&line.order) == Some(self.id);
            line.order.retain(|(id, _)| *id != self.id);
            if line.rider.as_ref().is_some_and(|(id, _)| *id == self.id) {
                line.rider = None;
            }
            // Only the next first in line has anything to do.
            if was_first && let Some((_, next)) = line.order.front() {
                next.notify_one();
            }
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

    /// Regression (hot-64 cost): every waiter in a line was woken whenever the
    /// line moved, so with 64 waiters each hand-off woke 63 tasks that looked
    /// and went back to sleep. Only the new first is woken now.
    #[tokio::test]
    async fn regression_only_the_new_first_in_line_is_woken_when_the_line_moves() {
        const WAITERS: u64 = 20;
        let lines = Arc::new(WaitLines::default());
        let first = lines.join("r");
        let mut waiters = Vec::new();
        for _ in 0..WAITERS {
            let place_lines = lines.clone();
            let (joined, in_line) = oneshot::channel();
            waiters.push(tokio::spawn(async move {
                let place = place_lines.join("r");
                let _ = joined.send(());
                place.first_in_line(Duration::from_secs(30)).await;
                // Stay first until told to leave.
                std::future::pending::<()>().await;
            }));
            in_line.await.expect("joined");
        }
        let looks = || lines.looks.load(std::sync::atomic::Ordering::Relaxed);
        while looks() < WAITERS {
            tokio::task::yield_now().await;
        }
        let before = looks();
        drop(first);
        while looks() == before {
            tokio::task::yield_now().await;
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(looks() - before, 1, "only the next in line looked again");
        for waiter in waiters {
            waiter.abort();
        }
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
            lines.released("r", "L", false);
            tokio::task::yield_now().await;
        }
        assert!(sleeper.await.expect("task"));
    }
}
