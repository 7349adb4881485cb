//! Hand-offs of one resource through one store take turns.
//!
//! A hand-off is one write when the store noted the released grant (the
//! revision it wrote it at). When the region is behind on a hot resource,
//! several hand-offs of that resource are in the store at once, each releasing
//! the lock the one before it grants: without turns, each found no note yet
//! (the grant it releases was still queued ahead of it) and read the grant key
//! first, a second request on the resource, which goes one per batch like every
//! request on it. A region that fell behind then needed two requests per
//! hand-off while the others needed one, and never caught up. Taking turns,
//! each hand-off starts once the one before it is answered, finds its note and
//! is one write: nothing is lost, since requests on one resource never share a
//! batch anyway. Turns change when a hand-off starts, never what it writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// The turns of each resource with a hand-off in the store.
#[derive(Debug, Default)]
pub(crate) struct Turns {
    lines: Mutex<HashMap<String, Line>>,
}

/// One resource's line: its turn, and how many hand-offs hold it or wait for it.
#[derive(Debug, Default)]
struct Line {
    turn: Arc<tokio::sync::Mutex<()>>,
    users: usize,
}

/// A place in a resource's line: waiting for its turn, then holding it, until
/// dropped (also when its request is cancelled while it waits). The last one
/// to leave forgets the resource.
#[derive(Debug)]
pub(crate) struct Turn<'a> {
    turns: &'a Turns,
    resource: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Turns {
    fn lines(&self) -> std::sync::MutexGuard<'_, HashMap<String, Line>> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait for `resource`'s turn (first come, first served).
    pub(crate) async fn take(&self, resource: &str) -> Turn<'_> {
        let turn = {
            let mut lines = self.lines();
            let line = lines.entry(resource.to_owned()).or_default();
            line.users += 1;
            line.turn.clone()
        };
        // Counted from here on: a wait cancelled below still leaves the line.
        let mut place = Turn {
            turns: self,
            resource: resource.to_owned(),
            guard: None,
        };
        place.guard = Some(turn.lock_owned().await);
        place
    }

    /// Resources with a hand-off waiting or running.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lines().len()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut lines = self.turns.lines();
        drop(self.guard.take());
        if let Some(line) = lines.get_mut(&self.resource) {
            line.users = line.users.saturating_sub(1);
            if line.users == 0 {
                lines.remove(&self.resource);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_turn_at_a_time_per_resource_in_arrival_order() {
        let turns = Turns::default();
        let first = turns.take("r").await;
        let other = turns.take("s").await;
        let order = Mutex::new(Vec::new());
        let second = async {
            let _turn = turns.take("r").await;
            order.lock().unwrap().push(2);
        };
        let third = async {
            let _turn = turns.take("r").await;
            order.lock().unwrap().push(3);
        };
        let release = async {
            tokio::task::yield_now().await;
            assert!(order.lock().unwrap().is_empty(), "r's turn is taken");
            order.lock().unwrap().push(1);
            drop(first);
        };
        tokio::join!(second, third, release);
        assert_eq!(*order.lock().unwrap(), [1, 2, 3]);
        drop(other);
        assert_eq!(turns.len(), 0, "no resource kept once nobody waits");
    }

    #[tokio::test]
    async fn a_cancelled_wait_gives_up_its_place() {
        let turns = Turns::default();
        let first = turns.take("r").await;
        let waiting = turns.take("r");
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(1), waiting).await;
        assert!(timed_out.is_err());
        drop(first);
        let again = turns.take("r").await;
        drop(again);
        assert_eq!(turns.len(), 0);
    }

    #[tokio::test]
    async fn regression_a_wait_cancelled_after_the_turn_was_given_up_leaves_nothing_behind() {
        let turns = Turns::default();
        let first = turns.take("r").await;
        let mut waiting = Box::pin(turns.take("r"));
        assert!(
            futures::poll!(waiting.as_mut()).is_pending(),
            "r's turn is taken"
        );
        drop(first);
        drop(waiting);
        assert_eq!(turns.len(), 0, "the cancelled wait was the last in line");
    }
}
